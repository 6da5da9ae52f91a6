"""Cold grammar masks on real third-party grammars: tokensieve, llguidance, XGrammar.

What a user hits: one generation visits most parser states once. So for each
grammar and engine, in a fresh child process (nothing warm, nothing shared),
single thread, with the Llama 3 tokenizer:

* TTFM: grammar text -> compiled constraint -> first mask (per-vocabulary
  setup -- loading the tokenizer, each engine's token trie -- is done
  before the clock starts);
* then, token by token over a realistic valid sample (a plain encode, no
  BOS): the time of each mask; the token is then committed (not timed);
* total mask time, p50 / p99 / max per token; peak RSS of the child.

An engine that rejects the valid sample (or fails to compile, or runs out
of time) is recorded with how far it got; ratios are computed on the token
positions every engine processed.

Masks are compared too: after each timed mask the child records (untimed)
how many of the vocabulary's regular tokens it allows and a hash of which.
For each peer the table notes at how many positions its mask differs from
tokensieve's (whose masks are the exact ones, checked against brute force
in the tests), the first such position, and the largest difference in
allowed tokens. Ratios are also given on the positions where every
engine's mask agrees: elsewhere the engines answer different questions.
Example: llguidance reads SynCode C's lazy block comment `/*(.|\n)*?*/`
greedily, so it allows `/**/*.` at every statement start, and after the
sample's first `/*` it allows nearly every token to the end of the file
(inside its comment), at 3 us a mask.

With ``--repeat N`` every engine makes N such cold passes, each in a
fresh child, the engines taking turns (each round starts with the next
engine), and each position's time is the median of its N cold times (TTFM
likewise; RSS is the largest). Why: this VM's speed drifts between runs of
one binary -- the second-slowest mask of japanese.gbnf took 135 to 249 us
in six runs in a row -- so one pass per engine, minutes apart from the
other engine's, can turn a p99 or max either way. Each time is still a
first visit in a fresh process; the median only drops the machine's
slow (or fast) moments.

Grammars: ``benches/grammars/`` (sources and licenses in SOURCES.md there)
plus ``../shared/grammars/``; each ``NAME.gbnf`` / ``NAME.lark`` comes with
``NAME.1.txt``. XGrammar reads GBNF-style EBNF, so it runs the GBNF ones.

Usage::

    python benches/grammar_bench.py [--engines tokensieve,llguidance,xgrammar]
        [--grammar SUBSTRING[,SUBSTRING...]] [--timeout 120] [--repeat 1]
        [--json OUT.json] [--out TABLE.md]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, cast

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TOKENIZER = SHARED / "tokenizers" / "llama-3-8b-instruct" / "tokenizer.json"
DIRS = [ROOT / "benches" / "grammars", SHARED / "grammars"]
ENGINES = ("tokensieve", "llguidance", "xgrammar")
# Llama 3's regular tokens (ids from 128,000 on are special).
REGULAR = 128_000


def grammars(filt: Optional[str]) -> List[Path]:
    out = []
    for d in DIRS:
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if p.suffix in (".gbnf", ".lark") and p.with_suffix(".1.txt").is_file():
                    if filt is None or any(f in p.name for f in filt.split(",")):
                        out.append(p)
    return out


# --------------------------------------------------------------------------
# Child: one engine, one grammar, cold.


def _child(engine: str, path: Path) -> Dict[str, object]:
    # Single thread, for every engine and for the libraries they import:
    # numpy's OpenBLAS starts a worker per core that spins for a while
    # after import (10-14% of a child's CPU samples under perf, on a 2-vCPU
    # VM).
    for var in ("RAYON_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    from tokenizers import Tokenizer

    text = path.read_text(encoding="utf-8")
    sample = path.with_suffix(".1.txt").read_text(encoding="utf-8")
    syntax = "gbnf" if path.suffix == ".gbnf" else "lark"
    ids = Tokenizer.from_file(str(TOKENIZER)).encode(sample, add_special_tokens=False).ids
    res: Dict[str, object] = {"tokens": len(ids)}

    if engine == "tokensieve":
        import tokensieve as ts

        vocab = ts.Vocabulary.from_tokenizer_file(TOKENIZER)
        bm = ts.allocate_token_bitmask(1, vocab.size)
        # Per-vocabulary data (token trie, subtree shapes) is built once per
        # vocabulary and shared by every constraint over it, as llguidance's
        # tokenizer and XGrammar's TokenizerInfo are: build it before the clock.
        ts.compile_grammar('start: "a"', vocab)

        def start():
            m = ts.Matcher(ts.compile_grammar(text, vocab, syntax=syntax))
            m.fill_next_token_bitmask(bm)
            return m

        def mask(m):
            m.fill_next_token_bitmask(bm)

        def commit(m, t: int) -> bool:
            return m.consume_token(t)

    elif engine == "llguidance":
        import llguidance
        import llguidance.hf
        import llguidance.numpy as lnp
        from transformers import PreTrainedTokenizerFast

        lt = llguidance.hf.from_tokenizer(PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER)))
        bm = lnp.allocate_token_bitmask(1, lt.vocab_size)

        def start():
            m = llguidance.LLMatcher(lt, llguidance.grammar_from(syntax, text))
            if m.is_error():
                raise RuntimeError(m.get_error())
            lnp.fill_next_token_bitmask(m, bm, 0)
            return m

        def mask(m):
            lnp.fill_next_token_bitmask(m, bm, 0)

        def commit(m, t: int) -> bool:
            return bool(m.consume_token(t))

    elif engine == "xgrammar":
        if syntax != "gbnf":
            return {"tokens": len(ids), "error": "n/a (XGrammar reads EBNF, not Lark)"}
        import torch
        import xgrammar as xgr
        from transformers import PreTrainedTokenizerFast

        torch.set_num_threads(1)
        info = xgr.TokenizerInfo.from_huggingface(PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER)))
        bm = xgr.allocate_token_bitmask(1, info.vocab_size)

        def start():
            compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
            m = xgr.GrammarMatcher(compiler.compile_grammar(text))
            m.fill_next_token_bitmask(bm)
            return m

        def mask(m):
            m.fill_next_token_bitmask(bm)

        def commit(m, t: int) -> bool:
            return bool(m.accept_token(t))

    else:
        raise ValueError(engine)

    def allowed(t: int) -> bool:
        # Every engine fills an int32 (1, ceil(V / 32)) bitmask, bit t % 32 of word t // 32.
        return bool((int(bm[0, t >> 5]) >> (t & 31)) & 1)

    import hashlib

    import numpy as np

    def digest() -> List[object]:
        # The regular tokens only (special tokens such as EOS differ in
        # meaning between engines): how many are allowed, and which.
        words = np.asarray(bm)[0, : REGULAR // 32].astype(np.int32)
        bits = np.unpackbits(words.view(np.uint8))
        return [int(bits.sum()), hashlib.blake2b(words.tobytes(), digest_size=8).hexdigest()]

    t0 = time.perf_counter()
    try:
        m = start()
    except Exception as e:  # noqa: BLE001 - a peer's refusal is a result
        res["error"] = f"compile: {type(e).__name__}: {str(e)[:160]}"
        return res
    res["ttfm_ms"] = (time.perf_counter() - t0) * 1e3
    times: List[float] = []
    digests: List[List[object]] = []
    done = 0
    for i, t in enumerate(ids):
        if i > 0:
            s = time.perf_counter()
            mask(m)
            times.append(time.perf_counter() - s)
            digests.append(digest())
        if not allowed(t) or not commit(m, t):
            res["error"] = f"rejected token {i} of {len(ids)}"
            break
        done = i + 1
    res["done"] = done
    res["mask_us"] = [x * 1e6 for x in times]
    res["masks"] = digests
    res["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


# --------------------------------------------------------------------------
# Parent: run the children, print the table.


def run_one(engine: str, path: Path, timeout: float) -> Dict[str, object]:
    cmd = [sys.executable, __file__, "--child", engine, str(path)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        err = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"crash (exit {out.returncode}): {err[:160]}"}
    return json.loads(lines[-1])


def merge_runs(runs: List[Dict[str, object]]) -> Dict[str, object]:
    """One engine's cold passes over one grammar as one result: per position
    the median time, the median TTFM, the largest RSS. Passes that did not
    all get as far (a timeout in one of them) are not merged: the first is
    kept, with the others' outcomes noted."""
    first = runs[0]
    if len(runs) == 1:
        return first
    lens = {len(cast(List[float], r.get("mask_us", []))) for r in runs}
    same_end = len(lens) == 1 and len({str(r.get("error", "")) for r in runs}) == 1
    if same_end and not any("ttfm_ms" in r for r in runs):
        return first  # failed alike every time (a compile error, n/a)
    if not same_end or any("ttfm_ms" not in r for r in runs):
        out = dict(first)
        out["error"] = (str(first.get("error", "")) + f" (runs differ: {[r.get('error', 'ok') for r in runs]})").strip()
        return out
    out = dict(first)
    series = [cast(List[float], r["mask_us"]) for r in runs]
    out["mask_us"] = [statistics.median(col) for col in zip(*series)]
    out["ttfm_ms"] = statistics.median(cast(float, r["ttfm_ms"]) for r in runs)
    out["rss_mb"] = max(cast(float, r.get("rss_mb", 0)) for r in runs)
    if any(masks_of(r) != masks_of(first) for r in runs):
        out["error"] = (str(first.get("error", "")) + " (masks differ between runs)").strip()
    return out


def pct(xs: List[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(math.ceil(q / 100 * len(s))) - 1)]


def masks_of(r: Dict[str, object]) -> List[List[Any]]:
    """A child's per-position mask digests: [allowed count, hash]."""
    return cast(List[List[Any]], r.get("masks", []))


def geomean(xs: List[float]) -> float:
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--grammar", default=None, help="only grammars whose file name contains this (or one of these, comma-separated)")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--repeat", type=int, default=1, help="cold passes per engine (fresh processes, engines taking turns); per position the median time")
    ap.add_argument("--json", default=None, help="write raw results here")
    ap.add_argument("--out", default=None, help="write the markdown table here")
    ap.add_argument("--child", nargs=2, metavar=("ENGINE", "GRAMMAR"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(_child(a.child[0], Path(a.child[1]))))
        return
    engines = [e for e in a.engines.split(",") if e]
    raw: Dict[str, Dict[str, Dict[str, object]]] = {}
    if a.repeat < 1:
        ap.error("--repeat must be at least 1")
    for p in grammars(a.grammar):
        runs: Dict[str, List[Dict[str, object]]] = {e: [] for e in engines}
        for k in range(a.repeat):
            for e in engines[k % len(engines) :] + engines[: k % len(engines)]:
                runs[e].append(run_one(e, p, a.timeout))
        raw[p.name] = {e: merge_runs(runs[e]) for e in engines}
        print(p.name, {e: raw[p.name][e].get("error", "ok") for e in engines}, file=sys.stderr, flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(raw))

    head = "| grammar | tokens | engine | TTFM ms | total ms | p50 us | p99 us | max ms | RSS MB | note |"
    rows = [head, "|" + "---|" * 10]
    ratios: Dict[str, List[float]] = {
        "total vs llguidance": [],
        "total vs faster peer": [],
        "ttfm vs llguidance": [],
        "agreeing total vs llguidance": [],
        "agreeing total vs faster peer": [],
    }
    names: Dict[str, List[str]] = {k: [] for k in ratios}
    for name, per in raw.items():
        # Positions every engine that ran processed (ratios are taken on these).
        common = min((len(r.get("mask_us", [])) for r in per.values() if "ttfm_ms" in r), default=0)
        # ... and of those, the ones where every peer's mask equals tokensieve's.
        ours = masks_of(per.get("tokensieve", {}))
        differs: Dict[str, List[int]] = {}
        for e, r in per.items():
            theirs = masks_of(r)
            if e != "tokensieve" and theirs and ours:
                differs[e] = [j for j in range(min(common, len(ours), len(theirs))) if ours[j] != theirs[j]]
        differ_somewhere = set().union(*differs.values())
        agreeing = [j for j in range(common) if j not in differ_somewhere]
        totals, agreed = {}, {}
        for e, r in per.items():
            xs = cast(List[float], r.get("mask_us", []))
            note = " ".join(str(r.get("error", "")).split())[:110].replace("|", "/")
            if differs.get(e):
                d, theirs = differs[e], masks_of(r)
                gap = max(d, key=lambda j: abs(ours[j][0] - theirs[j][0]))
                note = (note + "; " if note else "") + (
                    f"mask differs at {len(d)} of {common} positions, first token {d[0] + 1} "
                    f"(tokensieve allows {ours[d[0]][0]}, {e} {theirs[d[0]][0]}); "
                    f"most at token {gap + 1} ({ours[gap][0]} vs {theirs[gap][0]})"
                )
            if "ttfm_ms" not in r:
                rows.append(f"| {name} | {r.get('tokens', '')} | {e} | | | | | | | {note} |")
                continue
            totals[e] = sum(xs[:common]) / 1e3
            agreed[e] = sum(xs[j] for j in agreeing) / 1e3
            rows.append(
                f"| {name} | {r['tokens']} | {e} | {r['ttfm_ms']:.2f} | {sum(xs) / 1e3:.1f} | {statistics.median(xs) if xs else float('nan'):.1f} "
                f"| {pct(xs, 99):.0f} | {max(xs) / 1e3 if xs else float('nan'):.2f} | {r.get('rss_mb', 0):.0f} | {note} |"
            )
        ts_r = per.get("tokensieve", {})
        if "tokensieve" in totals and "llguidance" in totals and totals["llguidance"] > 0:
            ratios["total vs llguidance"].append(totals["tokensieve"] / totals["llguidance"])
            ratios["ttfm vs llguidance"].append(ts_r["ttfm_ms"] / per["llguidance"]["ttfm_ms"])
            names["total vs llguidance"].append(name)
            names["ttfm vs llguidance"].append(name)
        peers = [v for k, v in totals.items() if k != "tokensieve" and v > 0]
        if "tokensieve" in totals and peers:
            ratios["total vs faster peer"].append(totals["tokensieve"] / min(peers))
            names["total vs faster peer"].append(name)
        if "tokensieve" in agreed and agreed.get("llguidance", 0) > 0:
            ratios["agreeing total vs llguidance"].append(agreed["tokensieve"] / agreed["llguidance"])
            names["agreeing total vs llguidance"].append(name)
        peers = [v for k, v in agreed.items() if k != "tokensieve" and v > 0]
        if "tokensieve" in agreed and peers:
            ratios["agreeing total vs faster peer"].append(agreed["tokensieve"] / min(peers))
            names["agreeing total vs faster peer"].append(name)
    table = "\n".join(rows)
    def where(k: str) -> str:
        return "on positions where all masks agree" if k.startswith("agreeing") else "on common positions"

    summary = "\n".join(
        f"- tokensieve / {k.split(' vs ')[1]}, {k.split(' vs ')[0].replace('agreeing ', '')} ({where(k)}), geometric mean over {len(v)} grammars: "
        f"**{geomean(v):.2f}x** (below 1 = tokensieve faster; per grammar: "
        f"{', '.join(f'{n.rsplit(chr(46), 1)[0]} {x:.2f}' for n, x in zip(names[k], v))})"
        for k, v in ratios.items()
        if v
    )
    if a.repeat > 1:
        summary += f"\n- Each time is the median of {a.repeat} cold passes per engine (fresh processes, engines taking turns)."
    print(table)
    print()
    print(summary)
    if a.out:
        Path(a.out).write_text(table + "\n\n" + summary + "\n")


if __name__ == "__main__":
    main()
