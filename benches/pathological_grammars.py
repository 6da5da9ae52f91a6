"""Per-mask time on grammars whose Earley sets grow with the text.

The fuzzing cases of issue 11, timed (tests/test_grammar_cold.py checks the
same masks for exactness, without timing):

* GBNF ``root ::= (. .+)*`` on GPT-2 after 0..320 bytes of ``x``: every
  earlier position can start a group, so each set holds an item per
  position; a mask must still cost what the grammar costs, not the text.
* Lark ``start: ["a"]~1..1000`` after 0..1000 ``a``: desugared as 1,000
  optional copies it was ambiguous; it now reads as ``"a"{0,1000}``.

Usage::

    python benches/pathological_grammars.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")

import tokensieve as ts  # noqa: E402

TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "tokenizers" / "gpt2" / "tokenizer.json"


def run(vocab: ts.Vocabulary, src: str, syntax: str, byte: bytes, n: int, every: int) -> None:
    c = ts.compile_grammar(src, vocab, syntax=syntax)
    m = ts.Matcher(c)
    bm = ts.allocate_token_bitmask(1, vocab.size)
    tok = next(t for t in range(vocab.size) if vocab.token_bytes(t) == byte)
    worst = 0.0
    for i in range(n + 1):
        s = time.perf_counter()
        m.fill_next_token_bitmask(bm)
        dt = time.perf_counter() - s
        worst = max(worst, dt)
        if i % every == 0:
            print(f"  {syntax:4s} {src!r:28s} after {i:5d} bytes: mask {dt * 1e3:7.2f} ms")
        if i < n:
            assert m.consume_token(tok), i
    print(f"  worst mask over all {n + 1} positions: {worst * 1e3:.2f} ms")


def main() -> None:
    vocab = ts.Vocabulary.from_tokenizer_file(TOKENIZER)
    run(vocab, "root ::= (. .+)*", "gbnf", b"x", 320, 80)
    run(vocab, 'start: ["a"]~1..1000', "lark", b"a", 1000, 250)


if __name__ == "__main__":
    main()
