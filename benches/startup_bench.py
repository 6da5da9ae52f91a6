"""Start-up costs a newcomer meets first (issue 14's targets): loading a
large vocabulary, ``tokensieve --help`` and ``tokensieve demo``, and the
regex whose determinization once took 22 s of CPU before a limit said no.

Usage::

    python benches/startup_bench.py [--tokenizer PATH] [--runs 5]

``--tokenizer`` defaults to ``../shared/tokenizers/llama-3-8b-instruct``
(targets: Llama 3 vocabulary < 100 ms, ``--help`` < 0.5 s, ``demo`` < 3 s).
The CLI is the ``tokensieve`` console script when one is on ``PATH`` (an
installed package), else ``python -m tokensieve``. Wall-clock times; the
minimum and median of ``--runs`` fresh processes.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List

import tokensieve as ts

ROOT = Path(__file__).resolve().parents[1]


def times(fn: Callable[[], object], runs: int) -> List[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def row(name: str, xs: List[float], target: str) -> None:
    print(f"{name:45s} min {min(xs) * 1e3:8.1f} ms   median {statistics.median(xs) * 1e3:8.1f} ms   target {target}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", default=str(ROOT.parent / "shared" / "tokenizers" / "llama-3-8b-instruct"))
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()

    ts.Vocabulary.from_tokenizer_file(a.tokenizer)  # warm the file cache
    v = ts.Vocabulary.from_tokenizer_file(a.tokenizer)
    row(f"Vocabulary.from_tokenizer_file ({v.vocab_size} ids)",
        times(lambda: ts.Vocabulary.from_tokenizer_file(a.tokenizer), a.runs), "< 100 ms")

    def refused() -> None:
        try:
            ts.compile_regex(r"\d(?:(?-u:é??)){65535}", v)
        except ValueError:
            return
        raise AssertionError("the regex compiled")

    row("compile_regex(r'\\d(?:(?-u:é??)){65535}') refused", times(refused, 1), "(22 s of CPU before the bound)")

    exe = shutil.which("tokensieve")
    cli = [exe] if exe else [sys.executable, "-m", "tokensieve"]
    print(f"CLI: {' '.join(cli)}")
    for args, target in ((["--help"], "< 0.5 s"), (["demo"], "< 3 s")):
        subprocess.run(cli + args, check=True, capture_output=True)  # compile .pyc files once
        xs = times(lambda: subprocess.run(cli + args, check=True, capture_output=True), a.runs)
        row(f"tokensieve {' '.join(args)}", xs, target)


if __name__ == "__main__":
    main()
