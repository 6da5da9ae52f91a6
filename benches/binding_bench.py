"""Per-call cost of the checked array bindings (the paths a decoding loop
calls every step): filling a bitmask row, masking CPU logits, resampling
and ESS at small N, and the SMC masked-distribution kernel.

Usage::

    python benches/binding_bench.py            # microseconds per call, median of rounds
"""

from __future__ import annotations

import time

import numpy as np

import tokensieve as ts
from tokensieve import resample


def per_call_us(fn, calls: int = 2000, rounds: int = 7) -> float:
    """Median over ``rounds`` of the mean wall time of ``calls`` calls, in us."""
    fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t) / calls * 1e6)
    return float(np.median(times))


def main() -> None:
    vocab = ts.Vocabulary(token_bytes=[bytes([97 + i % 26]) * (1 + i // 26) for i in range(4096)], eos_token_ids=[0])
    m = ts.Matcher(ts.compile_regex("[a-z]*", vocab))
    bm = ts.allocate_token_bitmask(1, vocab.size)
    m.fill_next_token_bitmask(bm)
    rows = {"fill_next_token_bitmask (V=4096, cached state)": per_call_us(lambda: m.fill_next_token_bitmask(bm))}
    lw = np.random.default_rng(0).normal(size=256)
    rows["resample.systematic (N=256)"] = per_call_us(lambda: resample.systematic(lw, seed=1))
    rows["resample.ess (N=256)"] = per_call_us(lambda: resample.ess(lw))
    rows["resample.log_normalize (N=256)"] = per_call_us(lambda: resample.log_normalize(lw))
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        V = 128 * 1024
        logits = torch.zeros(1, V)
        big = ts.allocate_token_bitmask(1, V)
        big[:] = -1
        rows["apply_token_bitmask_inplace (CPU f32, V=131072)"] = per_call_us(
            lambda: ts.apply_token_bitmask_inplace(logits, big), calls=500
        )
        small = torch.zeros(1, 4096)
        rows["apply_token_bitmask_inplace (CPU f32, V=4096)"] = per_call_us(
            lambda: ts.apply_token_bitmask_inplace(small, bm)
        )
    for name, us in rows.items():
        print(f"{name:55s} {us:8.2f} us")


if __name__ == "__main__":
    main()
