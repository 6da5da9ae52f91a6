"""AWRS and SMC-with-potentials benchmarks (the tables of benches/README_smc.md).

    python benches/awrs_bench.py sampler [--vocab 1024 32768 128256] [--rejections 10] [--reps 2000]
    python benches/awrs_bench.py driver [--particles 16 64 256] [--steps 6]
    python benches/awrs_bench.py genlm

``sampler``: time of one ``tokensieve._core.awrs_sample`` call (AWRS and
rejection) on float32 log-probs of |V| tokens, with an accept callable that
rejects the first ``--rejections`` tokens it is asked about and accepts the
rest. The callable times itself; its own time is subtracted, so the figure
is the sampler's (binding, O(V) set-up, draws, the Rust -> Python calls).
Median over ``--reps`` calls. Times are the thread's CPU time
(``time.thread_time``): the machine this was written on is shared and
wall-clock figures there mostly measure the other processes.

``driver``: per-step time of ``smc.generate(..., potentials=[no_e])`` outside
the model forward (masking, masked log-probs, AWRS per particle, potential
calls, weights, resampling, bookkeeping) on the Llama 3 vocabulary (128,256
tokens), with a "model" that returns fixed random log-probs (no forward
cost) and a lipogram potential; compared with one ``torch.logsumexp`` over
the same ``N x V`` float32 log-probs (the least any exact method must do).
CPU time of the process (one torch thread), as in ``smc_bench.py``.

``genlm``: the ``sampler`` measurement side by side with genlm-control's
``AWRS`` (when genlm-control is importable; else whether pip can install it).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import tokensieve as ts  # noqa: E402
from tokensieve import _core, smc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "tokenizers"


def bench_sampler(vocabs: Sequence[int], rejections: int, reps: int) -> None:
    rng = np.random.default_rng(0)
    print(f"| sampler | |V| | calls per draw | total us | in callback us | sampler us (total - callback) |")
    print("|---|---:|---:|---:|---:|---:|")
    for v in vocabs:
        x = rng.standard_normal(v).astype(np.float32) * 3
        logp = (x - np.log(np.exp(x.astype(np.float64)).sum())).astype(np.float32)
        for sampler in ("awrs", "rejection"):
            tot: List[float] = []
            inside: List[float] = []
            calls: List[int] = []
            for r in range(reps):
                asked = [0]
                spent = [0.0]

                def accept(toks: List[int]) -> List[bool]:
                    t0 = time.thread_time()
                    out = []
                    for _ in toks:
                        out.append(asked[0] >= rejections)
                        asked[0] += 1
                    spent[0] += time.thread_time() - t0
                    return out

                t0 = time.thread_time()
                tok, lw, c, fb = _core.awrs_sample(logp, accept, sampler, 1000, r)
                tot.append(time.thread_time() - t0)
                inside.append(spent[0])
                calls.append(c)
            med = statistics.median(tot) * 1e6
            medin = statistics.median(inside) * 1e6
            diff = statistics.median([a - b for a, b in zip(tot, inside)]) * 1e6
            print(f"| {sampler} | {v:,} | {statistics.mean(calls):.1f} | {med:.0f} | {medin:.0f} | {diff:.0f} |")


class FixedLM:
    """Returns row ``i % K`` of a fixed table of random float32 log-probs:
    no forward cost, so the driver's own time is what is measured."""

    def __init__(self, vocab: Any, k: int = 64, seed: int = 0) -> None:
        self.vocabulary = vocab
        g = torch.Generator().manual_seed(seed)
        self.table = torch.log_softmax(torch.randn(k, vocab.vocab_size, generator=g) * 3, dim=-1)

    def start(self, prompt_ids: Sequence[int], n: int) -> int:
        return n

    def next_logprobs(self, state: int, last: Any) -> Any:
        idx = torch.arange(state) % self.table.shape[0]
        return self.table.index_select(0, idx)

    def reorder(self, state: int, rows: Any) -> int:
        return int(len(rows))


def llama3_vocab() -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import load_vocab  # type: ignore[import-not-found]

    return load_vocab("llama-3-8b-instruct")


def bench_driver(particles: Sequence[int], steps: int) -> None:
    vocab = llama3_vocab()
    v = vocab.vocab_size
    no_e = ts.potential(lambda s: b"e" not in s)
    print(f"|V| = {v:,}; {steps} steps; per step, ms (median of 3 runs)")
    print("| N | sampler | driver overhead ms/step | potential calls per particle-step | "
          "torch.logsumexp(N x V) ms | ratio |")
    print("|---:|---|---:|---:|---:|---:|")
    for n in particles:
        lm = FixedLM(vocab)
        x = lm.next_logprobs(n, None)
        lse = []
        for _ in range(5):
            t0 = time.thread_time()
            torch.logsumexp(x, dim=-1)
            lse.append(time.thread_time() - t0)
        lse_ms = statistics.median(lse) * 1e3
        for label in ("awrs", "awrs, batched", "mask"):
            sampler = label.split(",")[0]
            per: List[float] = []
            cps = 0.0
            for rep in range(3):
                res = smc.generate(lm, None, None, potentials=[no_e], sampler=sampler, n_particles=n,
                                   max_new_tokens=steps, seed=rep, vocab=vocab,
                                   batch_potentials=label.endswith("batched"))
                t = sum(val for k, val in res.timings.items() if k != "forward")
                per.append(t / res.num_steps)
                cps = res.calls_per_step()
            ms = statistics.median(per) * 1e3
            print(f"| {n} | {label} | {ms:.1f} | {cps:.2f} | {lse_ms:.2f} | {ms / lse_ms:.1f} |")


def genlm(vocabs: Sequence[int], rejections: int, reps: int) -> None:
    """The same measurement as ``sampler`` with genlm-control's ``AWRS``
    (a fake LM potential returning the fixed log-probs, a Boolean condition
    rejecting the first ``rejections`` tokens it is asked about; the time in
    both is subtracted). Needs ``genlm-control`` importable; otherwise says
    whether pip can install it."""
    try:
        import asyncio

        from genlm.control import AWRS  # type: ignore[import-not-found]
        from genlm.control.potential import Potential  # type: ignore[import-not-found]
    except ImportError:
        r = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "genlm-control"],
                           capture_output=True, text=True)
        print("genlm-control is not importable here.", (r.stdout + r.stderr).strip())
        return
    import importlib.metadata

    print(f"genlm-control {importlib.metadata.version('genlm-control')}, AWRS(autobatch=False), "
          f"{rejections} rejections, median of {reps}, CPU time")
    print("| |V| | genlm-control calls | total us | in LM + condition us | sampler us | tokensieve sampler us |")
    print("|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for v in vocabs:
        x = rng.standard_normal(v + 1) * 3
        x[-1] = -30.0  # EOS: negligible mass
        logw = x - np.log(np.exp(x).sum())
        vocab = [i.to_bytes(3, "little") for i in range(v)]
        spent = [0.0]
        asked = [0]

        class FixedLM(Potential):  # type: ignore[misc]
            async def complete(self, context: Any) -> float:
                return 0.0

            async def prefix(self, context: Any) -> float:
                return 0.0

            async def logw_next(self, context: Any) -> Any:
                t0 = time.thread_time()
                out = self.make_lazy_weights(torch.from_numpy(logw))
                spent[0] += time.thread_time() - t0
                return out

        class RejectFirst(Potential):  # type: ignore[misc]
            async def _ans(self) -> float:
                t0 = time.thread_time()
                ok = asked[0] >= rejections
                asked[0] += 1
                spent[0] += time.thread_time() - t0
                return 0.0 if ok else float("-inf")

            async def complete(self, context: Any) -> float:
                return await self._ans()

            async def prefix(self, context: Any) -> float:
                return await self._ans() if context else 0.0

        lm, cond = FixedLM(vocab), RejectFirst(vocab)
        sampler = AWRS(lm, cond, seed=0, autobatch=False)
        ncalls: List[int] = []

        async def run() -> List[Tuple[float, float]]:
            out = []
            for _ in range(reps):
                spent[0], asked[0] = 0.0, 0
                t0 = time.thread_time()
                await sampler.sample([])
                out.append((time.thread_time() - t0, spent[0]))
                ncalls.append(asked[0])
            return out

        res = asyncio.run(run())
        tot = statistics.median(a for a, _ in res) * 1e6
        inside = statistics.median(b for _, b in res) * 1e6
        diff = statistics.median(a - b for a, b in res) * 1e6
        ours = []
        lp32 = logw[:v].astype(np.float32)
        for r in range(reps):
            cnt = [0]
            sp = [0.0]

            def accept(toks: List[int]) -> List[bool]:
                t1 = time.thread_time()
                o = []
                for _ in toks:
                    o.append(cnt[0] >= rejections)
                    cnt[0] += 1
                sp[0] += time.thread_time() - t1
                return o

            t0 = time.thread_time()
            _core.awrs_sample(lp32, accept, "awrs", 1000, r)
            ours.append(time.thread_time() - t0 - sp[0])
        print(f"| {v:,} | {statistics.mean(ncalls):.1f} | {tot:.0f} | {inside:.0f} | {diff:.0f} | "
              f"{statistics.median(ours) * 1e6:.0f} |")


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sampler")
    s.add_argument("--vocab", type=int, nargs="+", default=[1024, 32768, 128256])
    s.add_argument("--rejections", type=int, default=10)
    s.add_argument("--reps", type=int, default=2000)
    d = sub.add_parser("driver")
    d.add_argument("--particles", type=int, nargs="+", default=[16, 64, 256])
    d.add_argument("--steps", type=int, default=6)
    gl = sub.add_parser("genlm")
    gl.add_argument("--vocab", type=int, nargs="+", default=[1024, 32768, 128256])
    gl.add_argument("--rejections", type=int, default=10)
    gl.add_argument("--reps", type=int, default=200)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    smc._clock = time.process_time  # CPU time: the machine may be shared
    if a.cmd == "sampler":
        bench_sampler(a.vocab, a.rejections, a.reps)
    elif a.cmd == "driver":
        bench_driver(a.particles, a.steps)
    else:
        genlm(a.vocab, a.rejections, a.reps)


if __name__ == "__main__":
    main()
