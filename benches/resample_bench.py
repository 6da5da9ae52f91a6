"""Benchmark tokensieve's resampling kernels against numpy and `particles`.

Every implementation starts from the same *unnormalised* log weights and
returns N ancestor indices, so normalisation is timed for everyone:

* tokensieve: ``tokensieve.resample.<kernel>(lw, seed=s)``.
* numpy: hand-written, vectorised: ``w = exp(lw - max); w /= sum``, then
  ``searchsorted`` of the points in ``cumsum(w)`` (sorting the uniforms
  for multinomial; residual with ``floor`` / ``repeat`` and a multinomial
  stage).
* particles (optional; ``pip install particles``):
  ``particles.resampling.<kernel>(exp_and_normalise(lw))``; its
  ``inverse_cdf`` is numba-compiled.

Times are medians over interleaved rounds (every implementation runs one
batch of at least ``--min-calls`` calls per round, after ``--warmup``
untimed calls, so slow drifts in machine load hit all of them alike but
each is timed in its own steady state). Two
clocks: wall time (``perf_counter``) and the process's CPU time
(``process_time``: user + system of *all* threads, so page faults and the
work of tokensieve's worker threads count). numpy and particles are
single-threaded. tokensieve's systematic and residual kernels run on
rayon's thread pool (one thread per CPU, or ``RAYON_NUM_THREADS``;
``--threads`` sets it) from N = 262,144 on, with output bit-identical
whatever the thread count; its other two kernels are single-threaded. So
for those two at large N, wall time is the latency and CPU time the total
work (idle pool threads spinning included); with one thread
(``--threads 1``) the two agree. On a shared or loaded machine, wall time
of a multi-threaded call also measures the scheduler (a pool thread
descheduled mid-task holds up the whole pass).

Usage::

    python benches/resample_bench.py                  # all sizes, markdown to stdout
    python benches/resample_bench.py --sizes 256 4096 --kernels systematic
    python benches/resample_bench.py --markdown benches/README_resample.md
    python benches/resample_bench.py --threads 1      # tokensieve single-threaded
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

from tokensieve import resample as ts
from tokensieve.models import keep_large_allocations

try:
    import particles.resampling as pr
except ImportError:  # pragma: no cover - optional
    pr = None

KERNELS = ("systematic", "stratified", "multinomial", "residual")
SIZES = (256, 4096, 65536, 1048576)


# --------------------------------------------------------------- numpy


def _np_weights(lw):
    w = np.exp(lw - lw.max())
    return w / w.sum()


def _np_inverse_cdf(w, u):
    # side="right": point p goes to the first i with p < cumsum(w)[i];
    # clamp in case round-off leaves cumsum(w)[-1] < p.
    return np.minimum(np.searchsorted(np.cumsum(w), u, side="right"), len(w) - 1)


def np_systematic(lw, rng):
    w = _np_weights(lw)
    n = len(w)
    return _np_inverse_cdf(w, (rng.random() + np.arange(n)) / n)


def np_stratified(lw, rng):
    w = _np_weights(lw)
    n = len(w)
    return _np_inverse_cdf(w, (rng.random(n) + np.arange(n)) / n)


def np_multinomial(lw, rng):
    w = _np_weights(lw)
    return _np_inverse_cdf(w, np.sort(rng.random(len(w))))


def np_residual(lw, rng):
    w = _np_weights(lw)
    n = len(w)
    nw = n * w
    floors = np.floor(nw).astype(np.int64)
    r = n - int(floors.sum())
    counts = floors
    if r > 0:
        rem = (nw - floors) / r
        extra = np.bincount(_np_inverse_cdf(rem, np.sort(rng.random(r))), minlength=n)
        counts = floors + extra
    return np.repeat(np.arange(n), counts)


NUMPY = {
    "systematic": np_systematic,
    "stratified": np_stratified,
    "multinomial": np_multinomial,
    "residual": np_residual,
}


# ------------------------------------------------------------- harness


def implementations(kernel):
    """name -> f(lw, i). Each implementation draws its randomness the way a
    user would: tokensieve from a per-call int seed (a cheap SplitMix64
    seeding), numpy from one long-lived Generator, particles from numpy's
    global RandomState (seeded once here). Re-creating a numpy Generator
    per call would cost more than the whole resampling at small N."""
    ours = getattr(ts, kernel)
    gen = np.random.default_rng(12345)
    ref = NUMPY[kernel]
    impls = {
        "tokensieve": lambda lw, i: ours(lw, seed=i),
        "numpy": lambda lw, i: ref(lw, gen),
    }
    if pr is not None:
        np.random.seed(12345)
        theirs = getattr(pr, kernel)
        impls["particles"] = lambda lw, i: theirs(pr.exp_and_normalise(lw))
    return impls


def check(name, out, lw):
    out = np.asarray(out)
    ok = out.shape == lw.shape and out.min() >= 0 and out.max() < len(lw) and np.all(np.isfinite(lw[out]))
    if not ok:
        raise AssertionError(f"{name}: invalid output")


def bench_one(impls, lw, rounds, target_s, min_calls=3, warmup=2):
    # Calls per timed batch, so that a batch lasts about target_s.
    batch = {}
    for name, f in impls.items():
        check(name, f(lw, 0), lw)
        k, t = 1, 0.0
        while True:
            t0 = time.perf_counter()
            for i in range(k):
                f(lw, i)
            t = time.perf_counter() - t0
            if t >= target_s / 4 or k >= 1 << 20:
                break
            k *= 4
        batch[name] = max(min_calls, int(k * target_s / max(t, 1e-9)))
    wall = {name: [] for name in impls}
    cpu = {name: [] for name in impls}
    seed = 1
    for _ in range(rounds):
        for name, f in impls.items():
            k = batch[name]
            # Untimed calls first: the previous implementation's large
            # temporaries can leave the allocator handing out fresh pages,
            # and the first calls would pay their page faults (at N = 2**20
            # particles' second call after numpy's still took ~2x its
            # steady-state time, so one warm-up call and one-call batches
            # measured it at ~20 ms or ~10 ms depending on what ran
            # before). Each batch is then timed in its own steady state, as
            # if run alone, and has at least `min_calls` calls.
            for _ in range(warmup):
                f(lw, seed)
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(k):
                f(lw, seed)
                seed += 1
            w1, c1 = time.perf_counter(), time.process_time()
            wall[name].append((w1 - w0) / k)
            cpu[name].append((c1 - c0) / k)
    return {n: statistics.median(v) for n, v in wall.items()}, {n: statistics.median(v) for n, v in cpu.items()}


def _dist_version(name):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # pragma: no cover
        return "?"


def fmt_time(t):
    if t < 1e-3:
        return f"{t * 1e6:.1f} µs"
    return f"{t * 1e3:.2f} ms"


def table(results, clock, names):
    ref = "particles" if "particles" in names else None
    head = ["N", "kernel"] + names
    if ref:
        head += [f"{n} speed-up vs particles" for n in names if n != ref]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (size, kernel), res in results.items():
        t = res[clock]
        row = [f"{size:,}", kernel] + [fmt_time(t[n]) for n in names]
        if ref:
            row += [f"{t[ref] / t[n]:.1f}x" for n in names if n != ref]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=KERNELS)
    ap.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (median taken)")
    ap.add_argument("--target", type=float, default=0.02, help="seconds per timed batch")
    ap.add_argument("--min-calls", type=int, default=3, help="fewest timed calls per batch")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls before each batch")
    ap.add_argument("--markdown", help="also write the tables to this file")
    ap.add_argument(
        "--threads",
        type=int,
        help="size of tokensieve's rayon pool (sets RAYON_NUM_THREADS; must come before its first parallel call)",
    )
    ap.add_argument(
        "--malloc-defaults",
        action="store_true",
        help="leave glibc's malloc as it is (by default the bench calls "
        "tokensieve.models.keep_large_allocations() first, see below)",
    )
    args = ap.parse_args(argv)
    # With glibc's defaults, whether an 8 MiB temporary comes from pages the
    # process already has or is mapped (and page-faulted) afresh depends on
    # what the process allocated and freed before, and particles' time at
    # N = 2^20 is bimodal (9-11 ms or 15-22 ms a call, ~3,000 page faults).
    # Keeping large blocks in the heap pins every implementation to its
    # fault-free steady state: the comparison is with the peers at their best.
    kept = not args.malloc_defaults and keep_large_allocations()
    if args.threads is not None:
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    threads = os.environ.get("RAYON_NUM_THREADS") or str(os.cpu_count())

    results = {}
    names = None
    for size in args.sizes:
        lw = np.random.default_rng(size).normal(scale=3.0, size=size)
        for kernel in args.kernels:
            impls = implementations(kernel)
            names = list(impls)
            wall, cpu = bench_one(impls, lw, args.rounds, args.target, args.min_calls, args.warmup)
            results[(size, kernel)] = {"wall": wall, "cpu": cpu}
            print(f"N={size:>8} {kernel:<12} " + "  ".join(f"{n}: {fmt_time(cpu[n])} cpu / {fmt_time(wall[n])} wall" for n in names),
                  file=sys.stderr, flush=True)

    try:
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        load = "n/a"
    env = (
        f"Python {platform.python_version()}, numpy {np.__version__}"
        + (f", particles {_dist_version('particles')}" if pr is not None else ", particles not installed")
        + f"; {platform.machine()}, {os.cpu_count()} logical CPUs, tokensieve rayon threads: {threads}, load average {load}; "
        + f"median of {args.rounds} interleaved rounds (batches of >= {args.min_calls} calls after {args.warmup} warm-up calls); "
        + ("large allocations kept in glibc's heap; " if kept else "glibc malloc defaults; ")
        + "log weights ~ N(0, 3^2), n = N draws."
    )
    out = [
        "### Process CPU time (user + system, all threads) per call",
        "",
        table(results, "cpu", names),
        "",
        "### Wall-clock time per call",
        "",
        table(results, "wall", names),
        "",
        env,
    ]
    text = "\n".join(out)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
