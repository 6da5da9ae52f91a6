"""Cost of copying a grammar matcher mid-document, as SMC does per resampled
particle (``Matcher.copy()``), and of the copy's next mask.

For each grammar: compile, take masks and tokens over its whole sample but
the last token (Llama 3 tokenizer), then time ``m.copy()`` and ``m.copy()``
followed by the copy's ``fill_next_token_bitmask`` (a mask-cache hit after
the first, so mostly the copy's mask key). A copy keeps the Earley chart
and leaves its memos behind; see ``README_grammar.md``.

Usage::

    python benches/copy_bench.py [--copies 2000]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")

import tokensieve as ts  # noqa: E402

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared"
TOKENIZER = SHARED / "tokenizers" / "llama-3-8b-instruct" / "tokenizer.json"
GRAMMARS = [
    SHARED / "grammars" / "llamacpp-json.gbnf",
    HERE / "grammars" / "llamacpp-poc-javascript.gbnf",
    HERE / "grammars" / "syncode-java_grammar.lark",
]


def per_call_us(n: int, f: Callable[[], object]) -> float:
    """Mean microseconds of ``n`` calls of ``f``."""
    s = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - s) / n * 1e6


def main() -> None:
    """Print copy and copy-plus-mask times per grammar."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, default=2000)
    args = ap.parse_args()
    from tokenizers import Tokenizer

    vocab = ts.Vocabulary.from_tokenizer_file(str(TOKENIZER))
    tok = Tokenizer.from_file(str(TOKENIZER))
    bm = ts.allocate_token_bitmask(1, vocab.size)
    for path in GRAMMARS:
        syntax = "gbnf" if path.suffix == ".gbnf" else "lark"
        m = ts.Matcher(ts.compile_grammar(path.read_text(), vocab, syntax=syntax))
        sample = path.with_name(path.stem + ".1.txt").read_text()
        ids = tok.encode(sample, add_special_tokens=False).ids
        for t in ids[:-1]:
            m.fill_next_token_bitmask(bm)
            if not m.consume_token(t):
                raise SystemExit(f"{path.name}: sample rejected")
        copy = per_call_us(args.copies, m.copy)
        with_mask = per_call_us(max(1, args.copies // 10), lambda: m.copy().fill_next_token_bitmask(bm))
        print(f"{path.stem:32s} {len(ids):5d} tokens: copy {copy:9.1f} us, copy + next mask {with_mask:9.1f} us")


if __name__ == "__main__":
    main()
