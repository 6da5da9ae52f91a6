"""MaskBench (JSON Schema) on ``../shared/maskbench-dev``: tokensieve, llguidance, XGrammar.

The protocol of that folder's README, all engines side by side in one run:
for each file and engine, one forked child (nothing shared between files but
the per-vocabulary setup done before the fork -- loading the tokenizer, each
engine's token trie, warmed by compiling one trivial schema: :func:`warm`),
single thread, Llama 3 tokenizer:

* TTFM: schema text -> compiled constraint -> first mask (ms);
* for every test instance (``json.dumps(data, ensure_ascii=False)``, default
  separators, ``add_special_tokens=False``): a fresh matcher, then per token
  the time of one mask plus committing the token (TBM, µs); after the last
  token the matcher must be accepting;
* each file ends as ``passing`` (every instance classified right),
  ``compile_error`` (schema refused), ``invalidation_error`` (an invalid
  instance accepted: a correctness bug; takes precedence), ``validation_error``
  (a valid instance rejected), or ``crash_or_timeout`` (the child died or ran
  past ``--timeout``, default 30 s).

TBM percentiles pool every timed token of every file the engine compiled;
TTFM percentiles every compiled file. A token whose mask bit disagrees with
``consume`` is counted (``mask_disagrees``; should be 0). Every engine uses
flexible whitespace and the default separators (llguidance
``whitespace_flexible``; XGrammar ``any_whitespace=True, strict_mode=False``;
tokensieve ``whitespace="flexible"``), see ``json_schema_suite.make_engine``.

Ratios ("A / B" > 1: B is faster) are computed on the files both engines
passed, so that they compare the same tokens.

Usage::

    python benches/maskbench_schema.py [--limit N] [--engines tokensieve,llguidance,xgrammar]
        [--timeout 30] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import array
import collections
import gc
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from json_maskbench import fmt, pct  # noqa: E402  (house percentile / number format)
from json_schema_suite import ENGINES, EOS, SHARED, TOKENIZER, Engine, first_line, llama3_tokenize, make_engine, mask_bit  # noqa: E402

DATA = SHARED / "maskbench-dev"
STATUSES = ("passing", "compile_error", "validation_error", "invalidation_error", "crash_or_timeout")


def load_files(data_dir: Path, limit: Optional[int], tokenize) -> List[Tuple[str, str, List[Tuple[bool, List[int]]]]]:
    """``[(file name, schema JSON text, [(valid, token ids)])]``, sorted by name."""
    files = sorted(data_dir.glob("*.json"))
    if limit:
        files = files[:limit]
    out = []
    for p in files:
        d = json.loads(p.read_text(encoding="utf-8"))
        tests = [(bool(t["valid"]), tokenize(json.dumps(t["data"], ensure_ascii=False))) for t in d.get("tests", [])]
        out.append((p.name, json.dumps(d["schema"], ensure_ascii=False), tests))
    return out


# ---------------------------------------------------------------------------
# Child: one engine, one file.


def bench_file(engine: Engine, schema: str, tests: List[Tuple[bool, List[int]]], slow_us: float = float("inf")) -> Dict[str, Any]:
    """Runs one file through ``engine`` (in the current process); returns the
    status, TTFM, per-token times, the tokens slower than ``slow_us`` (as
    ``slow``: ``(µs, instance, token)``) and what went wrong."""
    bm = engine.allocate_mask()
    res: Dict[str, Any] = {"tbm_us": array.array("d"), "mask_disagrees": 0, "valid_rejected": 0, "invalid_accepted": 0}
    gc.disable()  # no collector pauses inside the timed steps
    try:
        _bench_file_body(engine, schema, tests, res, bm, slow_us)
    finally:
        gc.enable()
    return res


def _bench_file_body(engine: Engine, schema: str, tests: List[Tuple[bool, List[int]]], res: Dict[str, Any], bm: Any, slow_us: float) -> None:
    """The body of :func:`bench_file`: fills ``res`` in place."""
    pc = time.perf_counter_ns
    t0 = pc()
    try:
        c = engine.compile(schema)
        engine.fill_mask(engine.matcher(c), bm)
    except Exception as e:  # noqa: BLE001 - a refusal is a result
        res["status"] = "compile_error"
        res["reason"] = first_line(e)
        return
    res["ttfm_ms"] = (pc() - t0) / 1e6
    tbm = res["tbm_us"]
    for i, (valid, ids) in enumerate(tests):
        m = engine.matcher(c)
        ok = True
        for k, t in enumerate(ids):
            s = pc()
            engine.fill_mask(m, bm)
            ok = engine.consume(m, t)
            tbm.append((pc() - s) / 1e3)
            if tbm[-1] > slow_us:
                res.setdefault("slow", []).append((round(tbm[-1], 1), i, k))
            if tbm[-1] > res.get("slowest_us", -1.0):
                res["slowest_us"], res["slowest_at"] = tbm[-1], (i, k)
            if mask_bit(bm, t) != ok:
                res["mask_disagrees"] += 1
            if not ok:
                break
        accepted = ok and engine.accepting(m)
        if valid and not accepted:
            res["valid_rejected"] += 1
            res.setdefault("reason", f"valid instance {i} rejected at token {k} of {len(ids)}" if not ok else f"valid instance {i} not accepting at the end")
        elif accepted and not valid:
            res["invalid_accepted"] += 1
            res.setdefault("reason", f"invalid instance {i} accepted")
    res["status"] = "invalidation_error" if res["invalid_accepted"] else "validation_error" if res["valid_rejected"] else "passing"


def warm(engine: Engine) -> None:
    """Builds the per-vocabulary data (token tries, ...) before the children
    fork, as ``grammar_bench.py`` does: compiles a trivial schema and
    computes one mask, so TTFM measures the schema's own cost."""
    engine.fill_mask(engine.matcher(engine.compile('{"type": "object", "properties": {"a": {"type": "string"}}}')), engine.allocate_mask())


def _child_main(conn, engine: Engine, schema: str, tests, slow_us: float) -> None:
    try:
        res = bench_file(engine, schema, tests, slow_us)
        res["tbm_us"] = res["tbm_us"].tobytes()
        conn.send(res)
    except BaseException as e:  # noqa: BLE001 - reported as a crash
        conn.send({"status": "crash_or_timeout", "reason": f"crash: {first_line(e)}"})
    finally:
        conn.close()


def run_forked(engine: Engine, schema: str, tests, timeout: float, slow_us: float = float("inf")) -> Dict[str, Any]:
    """:func:`bench_file` in a forked child with a time limit."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child_main, args=(send, engine, schema, tests, slow_us), daemon=True)
    p.start()
    send.close()
    res: Optional[Dict[str, Any]] = None
    if recv.poll(timeout):
        try:
            res = recv.recv()
        except EOFError:
            res = None
    p.join(1.0)
    if p.is_alive():
        p.kill()
        p.join()
        if res is None:
            return {"status": "crash_or_timeout", "reason": f"timeout after {timeout:g} s"}
    recv.close()
    if res is None:
        return {"status": "crash_or_timeout", "reason": f"crash (exit code {p.exitcode})"}
    res["tbm_us"] = array.array("d", res.get("tbm_us", b""))
    return res


# ---------------------------------------------------------------------------
# Parent: summaries and tables.


def summarize(per_file: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Status counts, pooled TBM / TTFM percentiles and grouped reasons."""
    counts = collections.Counter(r["status"] for r in per_file.values())
    tbm: List[float] = []
    for r in per_file.values():
        tbm.extend(r.get("tbm_us", ()))
    ttfm = [r["ttfm_ms"] for r in per_file.values() if "ttfm_ms" in r]
    reasons = collections.Counter(r["reason"] for r in per_file.values() if r["status"] == "compile_error")
    other = collections.Counter(r["status"] + ": " + r.get("reason", "?").split(" instance ")[0]
                                for r in per_file.values() if r["status"] in ("crash_or_timeout",))
    return {
        "files": len(per_file),
        **{s: counts.get(s, 0) for s in STATUSES},
        "tokens": len(tbm),
        "tbm_p50_us": pct(tbm, 50), "tbm_p90_us": pct(tbm, 90), "tbm_p99_us": pct(tbm, 99), "tbm_p999_us": pct(tbm, 99.9),
        "tbm_max_us": max(tbm) if tbm else float("nan"),
        "ttfm_p50_ms": pct(ttfm, 50), "ttfm_p90_ms": pct(ttfm, 90), "ttfm_p99_ms": pct(ttfm, 99),
        "mask_disagrees": sum(r.get("mask_disagrees", 0) for r in per_file.values()),
        "top_compile_errors": reasons.most_common(12),
        "slowest_files": sorted(((r["slowest_us"], f, r["slowest_at"]) for f, r in per_file.items() if "slowest_us" in r), reverse=True)[:5],
        "crashes": other.most_common(5),
    }


def pair_ratios(results: Dict[str, Dict[str, Dict[str, Any]]], a: str, b: str) -> Dict[str, float]:
    """``a / b`` of TBM p50/p99 and TTFM p50/p99 over the files both passed."""
    both = [f for f in results[a] if results[a][f]["status"] == "passing" and results[b].get(f, {}).get("status") == "passing"]
    out: Dict[str, float] = {"files": len(both)}
    if not both:
        return out
    for key, unit in (("tbm_us", "tbm"), ("ttfm_ms", "ttfm")):
        xs: Dict[str, List[float]] = {}
        for e in (a, b):
            v: List[float] = []
            for f in both:
                r = results[e][f][key]
                v.extend(r) if key == "tbm_us" else v.append(r)
            xs[e] = v
        for q in (50, 99):
            pb = pct(xs[b], q)
            out[f"{unit}_p{q}"] = pct(xs[a], q) / pb if pb else float("nan")
    return out


def table(summ: Dict[str, Dict[str, Any]]) -> str:
    """Markdown: one column per engine."""
    names = list(summ)
    rows = [(s.replace("_", " "), s, None) for s in STATUSES] + [
        ("TBM p50 (µs)", "tbm_p50_us", 1), ("TBM p90 (µs)", "tbm_p90_us", 1), ("TBM p99 (µs)", "tbm_p99_us", 1),
        ("TBM p99.9 (µs)", "tbm_p999_us", 1), ("TBM max (µs)", "tbm_max_us", 0),
        ("TTFM p50 (ms)", "ttfm_p50_ms", 2), ("TTFM p90 (ms)", "ttfm_p90_ms", 2), ("TTFM p99 (ms)", "ttfm_p99_ms", 2),
        ("tokens timed", "tokens", None), ("mask/consume disagreements", "mask_disagrees", None),
    ]
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, key, nd in rows:
        lines.append(f"| {label} | " + " | ".join(f"{summ[n][key]:,}" if nd is None else fmt(summ[n][key], nd) for n in names) + " |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--tokenizer", type=Path, default=TOKENIZER)
    ap.add_argument("--eos", type=int, default=EOS)
    ap.add_argument("--limit", type=int, default=None, help="only the first N files (sorted by name)")
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated; unavailable ones are reported and skipped")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per file and engine")
    ap.add_argument("--json", type=Path, default=None, help="write summaries, ratios and per-file statuses here")
    ap.add_argument("--slow-us", type=float, default=float("inf"),
                    help="record each token slower than this (µs) per file in the JSON, as `slow`: [µs, instance, token]")
    args = ap.parse_args(argv)

    t_all = time.monotonic()
    files = load_files(args.data, args.limit, llama3_tokenize(args.tokenizer))
    n_tests = sum(len(t) for _, _, t in files)
    print(f"{len(files)} files, {n_tests} instances, {sum(len(ids) for _, _, t in files for _, ids in t):,} tokens", flush=True)
    engines: Dict[str, Engine] = {}
    for name in [e.strip() for e in args.engines.split(",") if e.strip()]:
        try:
            engines[name] = make_engine(name, args.tokenizer, args.eos)
        except ImportError as e:
            print(f"engine {name} unavailable: {e}", flush=True)
    for eng in engines.values():
        warm(eng)
    results: Dict[str, Dict[str, Dict[str, Any]]] = {n: {} for n in engines}
    wall = collections.Counter()
    for i, (fname, schema, tests) in enumerate(files):
        for name, eng in engines.items():
            t0 = time.monotonic()
            results[name][fname] = run_forked(eng, schema, tests, args.timeout, args.slow_us)
            wall[name] += time.monotonic() - t0
        if (i + 1) % 100 == 0:
            print(f"  {i + 1} files ({time.monotonic() - t_all:.0f} s)", flush=True)

    summ = {n: summarize(r) for n, r in results.items()}
    names = list(engines)
    ratios = {f"{a} / {b}": pair_ratios(results, a, b) for a in names for b in names if a != b and b == names[0]}
    print()
    print(table(summ))
    for n in names:
        print(f"\n{n} {engines[n].version}: wall {wall[n]:.1f} s; top compile errors:")
        for reason, k in summ[n]["top_compile_errors"]:
            print(f"  {k:5d}  {reason}")
        for reason, k in summ[n]["crashes"]:
            print(f"  {k:5d}  {reason}")
        print("  slowest tokens (µs, file, (instance, token)): " + "; ".join(f"{us:,.0f} {f} {at}" for us, f, at in summ[n]["slowest_files"]))
    if ratios:
        print("\nratios on files both engines passed (> 1: the second engine is faster):")
        for k, r in ratios.items():
            print(f"  {k}: " + ", ".join(f"{m} {fmt(v, 2)}" + ("" if m == "files" else "x") for m, v in r.items()))
    meta = {
        "files": len(files), "instances": n_tests, "timeout_s": args.timeout,
        "versions": {n: e.version for n, e in engines.items()}, "wall_s": dict(wall),
        "total_wall_s": time.monotonic() - t_all,
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
    }
    print(json.dumps(meta))
    out = {"meta": meta, "summary": summ, "ratios": ratios,
           "files": {n: {f: {k: v for k, v in r.items() if k != "tbm_us"} for f, r in res.items()} for n, res in results.items()}}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, ensure_ascii=False), encoding="utf-8")
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
