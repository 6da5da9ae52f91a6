"""Python code that parses as it is written and passes a test when done.

The body of ``def add(a, b):`` is generated under two factors:

1. a regex, compiled to exact token masks: one ``return`` expression over
   ``a``, ``b``, ``0``-``2``, parentheses and ``+ - *``, each after a space,
   ending with a newline (the parser, not the regex, balances parentheses);
2. ``PythonFunction`` (a :class:`tokensieve.potentials.Potential`):
   ``prefix`` asks the standard library's parser (:func:`ast.parse`) about
   the code so far, tolerating errors that only say the input ended early
   (an open parenthesis, a dangling operator); ``complete`` executes the
   finished function and runs ``check_add`` on it (already when the body's
   final newline is proposed, so that a failing body is rejected while it
   can still be continued).

SMC with AWRS then samples function bodies from the model conditioned on
"parses, and passes the test". Offline by default (tiny random GPT-2);
``--model PATH`` for a real model.

    python examples/python_code.py [--model PATH] [--particles N]
"""

from __future__ import annotations

import ast
import os
import sys
import warnings
from typing import Any, Callable, Dict, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import load_model, parser, report  # noqa: E402

import tokensieve as ts  # noqa: E402
from tokensieve import smc  # noqa: E402
from tokensieve.potentials import Potential  # noqa: E402

PROMPT = "def add(a, b):\n    return"
BODY = r"( (a|b|0|1|2|\(|\)|[-+*])){1,12}\n"

#: Syntax errors that only mean "the text is not finished yet".
_UNFINISHED = ("unexpected EOF", "incomplete input", "expected an indented block")
_CLOSE = {"(": ")", "[": "]", "{": "}"}


def check_add(add: Callable[[Any, Any], Any]) -> bool:
    return bool(add(2, 3) == 5 and add(-1, 7) == 6 and add(0, 0) == 0)


def parses_as_prefix(source: str) -> bool:
    """Whether ``source`` parses, or fails only at its very end (so that a
    continuation might parse). Open brackets are closed first (a naive scan
    that does not skip string literals: this example's bodies have none),
    so an error inside them is still found."""
    stack = []
    for ch in source:
        if ch in _CLOSE:
            stack.append(_CLOSE[ch])
        elif ch in ")]}":
            if not stack or stack.pop() != ch:
                return False
    lines = source.split("\n")
    last = len(lines)
    while last > 1 and not lines[last - 1].strip():
        last -= 1
    end = len(lines[last - 1].rstrip())
    closed = source.rstrip("\n") + "".join(reversed(stack)) + source[len(source.rstrip("\n")):]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            ast.parse(closed)
        return True
    except SyntaxError as e:
        if any(s in str(e.msg) for s in _UNFINISHED):
            return True
        # Reported past the last character of ``source``: at the end of the input.
        return e.lineno is not None and e.lineno >= last and (e.offset or 0) > end


class PythonFunction(Potential):
    """``prefix``: the code so far parses as a prefix; ``complete``: it
    parses, defines the function and passes ``test``. ``**`` is rejected
    (``9 ** 9 ** 9`` would not finish)."""

    def __init__(self, prompt: str, func: str, test: Callable[[Any], bool]) -> None:
        self.prompt, self.func, self.test = prompt, func, test
        self.name = "python_function"

    def _parses(self, text: bytes) -> bool:
        try:
            src = self.prompt + text.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return "**" not in src and parses_as_prefix(src)

    def prefix(self, text: bytes) -> float:
        if text.endswith(b"\n"):  # the regex ends the body here: check it now
            return self.complete(text)
        return 0.0 if self._parses(text) else float("-inf")

    def complete(self, text: bytes) -> float:
        if not self._parses(text):
            return float("-inf")
        src = self.prompt + text.decode("utf-8")
        env: Dict[str, Any] = {}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SyntaxWarning)
                exec(compile(src, "<generated>", "exec"), env)  # noqa: S102 - the example's point
            return 0.0 if self.test(env[self.func]) else float("-inf")
        except Exception:
            return float("-inf")


def main(argv: Optional[Sequence[str]] = None) -> smc.SMCResult:
    args = parser("Python code that parses and passes a test", max_new_tokens=16).parse_args(argv)
    model, tok, vocab = load_model(args.model, args.seed, args.layers)
    body = ts.compile_regex(BODY, vocab)
    res = smc.generate(
        model, tok, PROMPT,
        potentials=[body, PythonFunction(PROMPT, "add", check_add)],
        sampler=args.sampler, n_particles=args.particles, max_new_tokens=args.max_new_tokens,
        seed=args.seed, vocab=vocab,
    )
    report(res)
    return res


if __name__ == "__main__":
    main()
