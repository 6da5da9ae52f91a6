"""SMC benchmarks and the exactness table for benches/README_smc.md.

    python benches/smc_bench.py overhead [--particles 16 128] [--steps 32] [--reps 5]
    python benches/smc_bench.py kv [--particles 16 128] [--seq-len 128]
    python benches/smc_bench.py exactness

``overhead``: per-step CPU time of ``tokensieve.smc.generate`` outside the model
forward (bitmask fill, mask unpacking, allowed-mass/CDF, weights and
resampling, token draws, matcher updates, KV-cache reorder) on the Llama 3
vocabulary (128,256 tokens), with a tiny random-weight Llama (the forward is
timed separately and excluded). The driver's own per-phase timers are used
(``SMCResult.timings``), switched to process CPU time with one torch thread
(``--wall`` for wall-clock with torch's default threads): the machine this
was written on is shared, and CPU time does not count the time other
processes hold the cores. Each configuration is run ``--reps`` times after a
warm-up and the median per-step figure is reported.

``kv``: the cost of reordering a KV cache of Llama-3-8B's shape (32 layers,
8 KV heads, head dim 128, bf16) for N rows (``DynamicCache.reorder_cache``),
which the tiny model of ``overhead`` does not show.

``exactness``: the table-LM problems of tests/test_smc.py: exact conditional
by brute force vs SMC (N = 2000) vs masked decoding, and the Z estimate.

Needs the shared tokenizers (``../shared/tokenizers``) for ``overhead``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import tokensieve as ts  # noqa: E402
from tokensieve import smc  # noqa: E402
from tokensieve.models import TableLM, keep_large_allocations  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "tokenizers"

PHASES = ("mask", "weights", "resample", "sample", "advance", "reorder")


def tiny_llama(vocab_size: int, hidden: int = 64, layers: int = 2):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.05,
        bos_token_id=128000,
        eos_token_id=128009,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


# --------------------------------------------------------------------------


def bench_overhead(args) -> None:
    tok_dir = SHARED / "llama-3-8b-instruct"
    if not tok_dir.is_dir():
        sys.exit(f"missing {tok_dir}")
    if not args.wall:
        torch.set_num_threads(1)
        smc._clock = time.process_time
    kept = args.keep_large_allocations and keep_large_allocations()
    vocab = ts.Vocabulary.from_tokenizer_file(tok_dir)
    model = tiny_llama(vocab.size)
    prompt = [128000, 791, 4320, 374, 25]  # "<|begin_of_text|>The answer is:"
    constraints = {
        # Free text: 77,566 allowed tokens (60%) at every step, no particle
        # finishes before the step limit.
        "`[A-Za-z ,.']+`": r"[A-Za-z ,.']+",
        # Lowercase text: 43,763 allowed tokens (34%).
        "`[a-z ]+`": r"[a-z ]+",
        # Narrow: digits only (1,110 allowed tokens; most mask bytes zero).
        "`[0-9]+`": r"[0-9]+",
    }
    clock = "wall-clock" if args.wall else "CPU time"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {clock}, vocab {vocab.size}, "
          f"steps {args.steps}, reps {args.reps}, load avg {os.getloadavg()[0]:.1f}, "
          f"large allocations {'kept in the heap' if kept else 'malloc defaults'}")
    header = "| constraint | N | resampling | forward ms/step | overhead ms/step | " + " | ".join(PHASES) + " |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, pattern in constraints.items():
        c = ts.compile_regex(pattern, vocab)
        for n in args.particles:
            for thr, label in ((0.5, "ESS < N/2"), (1.0, "every step")):
                kw = dict(n_particles=n, ess_threshold=thr, max_new_tokens=args.steps, vocab=vocab)
                smc.generate(model, None, prompt, c, seed=0, **kw)  # warm-up (mask memo, allocator)
                rows = []
                for r in range(args.reps):
                    res = smc.generate(model, None, prompt, c, seed=r + 1, **kw)
                    steps = res.num_steps
                    rows.append({k: v / steps * 1e3 for k, v in res.timings.items()} | {"resampled": sum(res.resampled) / steps})
                med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
                overhead = sum(med[k] for k in PHASES)
                phases = " | ".join(f"{med[k]:.2f}" for k in PHASES)
                print(f"| {name} | {n} | {label} ({med['resampled']:.0%} of steps) | {med['forward']:.1f} | "
                      f"**{overhead:.1f}** | {phases} |", flush=True)


def bench_kv(args) -> None:
    import transformers

    layers, heads, dim = 32, 8, 128
    torch.set_num_threads(1)  # a shared machine: OpenMP waits on descheduled threads
    print(f"KV cache of Llama-3-8B shape ({layers} layers x {heads} KV heads x {dim}), bf16, seq {args.seq_len}")
    print("| N | cache MiB | reorder ms (median of 5, 1 thread, wall) |")
    print("|---|---|---|")
    for n in args.particles:
        cache = transformers.DynamicCache()
        for layer in range(layers):
            k = torch.randn(n, heads, args.seq_len, dim, dtype=torch.bfloat16)
            cache.update(k, k.clone(), layer)
        mib = 2 * layers * n * heads * args.seq_len * dim * 2 / 2**20
        rng = np.random.default_rng(0)
        times = []
        for _ in range(5):
            anc = torch.from_numpy(np.sort(rng.integers(0, n, n)))
            t = time.perf_counter()
            cache.reorder_cache(anc)
            times.append(time.perf_counter() - t)
        print(f"| {n} | {mib:.0f} | {statistics.median(times) * 1e3:.1f} |", flush=True)
        del cache


# --------------------------------------------------------------------------


def bigram_lm(seed: int, max_len: int = 8) -> TableLM:
    """Same construction as tests/test_smc.py::bigram_lm."""
    toks = [b"a", b"b", b"c", b"ab", b"bc", b"ca", None]
    v = len(toks)
    rng = np.random.default_rng(seed)
    init = np.append(rng.dirichlet(np.ones(v - 1)), 0.0)
    trans = np.hstack([rng.dirichlet(np.ones(v - 1), size=v) * 0.65, np.full((v, 1), 0.35)])
    return TableLM.bigram(toks, init, trans, eos_token_id=v - 1, max_len=max_len)


def why_smc_lm() -> TableLM:
    trans = [[0.49, 0.01, 0.5], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]
    return TableLM.bigram([b"a", b"b", None], [0.9, 0.1, 0.0], trans, eos_token_id=2, max_len=6)


def exact_posterior(lm: TableLM, pattern: str):
    import regex

    rx = regex.compile(pattern.encode())
    dist = {}
    for seq, p in lm.sequences(prefix_ok=lambda t: rx.fullmatch(t, partial=True) is not None):
        text = lm.text(seq)
        if rx.fullmatch(text) is not None:
            dist[text] = dist.get(text, 0.0) + p
    z = sum(dist.values())
    return {k: v / z for k, v in dist.items()}, z


def tv(p, q) -> float:
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def bench_exactness(args) -> None:
    cases = [
        ("why-smc", None, 6, "ab|b"),
        ("bigram 1234", 1234, 8, r"(a|b)(c|ab)"),
        ("bigram 1234", 1234, 8, r"a(bc|cb)?"),
        ("bigram 1234", 1234, 8, r"(abc)+"),
        ("bigram 99", 99, 8, r"bca?b?"),
        ("bigram 99", 99, 8, r"a[bc]?c?"),
        ("bigram 1234", 1234, 7, r"(ab|c)+"),
        ("bigram 1234", 1234, 7, r"[abc]*cab[abc]*"),
    ]
    n = 2000
    print("| model | regex | strings | exact P(constraint) | mean Z-hat ± SE (40 x N=200) | TV SMC (N=2000) | TV masked (N=2000) |")
    print("|---|---|---|---|---|---|---|")
    for label, seed, max_len, pattern in cases:
        lm = why_smc_lm() if seed is None else bigram_lm(seed, max_len)
        exact, z = exact_posterior(lm, pattern)
        c = ts.compile_regex(pattern, lm.vocabulary)
        res = smc.generate(lm, None, None, c, n_particles=n, seed=42, max_new_tokens=20)
        masked = smc.masked_decode(lm, None, None, c, n_samples=n, seed=42, max_new_tokens=20)
        zs = np.array([math.exp(smc.generate(lm, None, None, c, n_particles=200, seed=1000 + r).log_z) for r in range(40)])
        print(f"| {label} | `{pattern}` | {len(exact)} | {z:.4f} | {zs.mean():.4f} ± {zs.std(ddof=1) / math.sqrt(40):.4f} | "
              f"{tv(res.posterior(as_bytes=True), exact):.3f} | {tv(masked.posterior(as_bytes=True), exact):.3f} |", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("overhead")
    o.add_argument("--particles", type=int, nargs="+", default=[16, 128])
    o.add_argument("--steps", type=int, default=32)
    o.add_argument("--reps", type=int, default=5)
    o.add_argument("--wall", action="store_true", help="wall-clock time, default torch threads")
    o.add_argument("--keep-large-allocations", action="store_true",
                   help="tokensieve.models.keep_large_allocations() first (glibc: no mmap/munmap per step)")
    k = sub.add_parser("kv")
    k.add_argument("--particles", type=int, nargs="+", default=[16, 128])
    k.add_argument("--seq-len", type=int, default=128)
    sub.add_parser("exactness")
    args = ap.parse_args(argv)
    {"overhead": bench_overhead, "kv": bench_kv, "exactness": bench_exactness}[args.cmd](args)


if __name__ == "__main__":
    main()
