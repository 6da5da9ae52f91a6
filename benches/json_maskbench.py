"""Generic JSON grammar on MaskBench token streams: per-token mask time.

Drives a generic (schema-less) JSON grammar with the token streams of every
*valid* instance in ``../shared/maskbench-dev`` and times, per token, one
mask computation plus committing the token (MaskBench's TBM), single thread.
Protocol (from that folder's README): each instance is serialised with
``json.dumps(data, ensure_ascii=False)`` (default separators ``", "`` and
``": "``) and tokenized with the Llama 3 ``tokenizer.json`` via
``tokenizers``, ``add_special_tokens=False``. After the last token, one more
step computes the mask and commits EOS.

Engines and modes:

* tokensieve ``ts.compile_json`` (flexible whitespace, default depth bound):
  (a) one compiled grammar shared by all files (a new ``Matcher`` per
  instance; the constraint's mask caches stay warm), and (b) a fresh compile
  per file (cold caches). Mode (b) also gives compile + first mask time
  (TTFM) per file.
* llguidance with a plain generic JSON grammar in its Lark syntax (the same
  text is also compiled by ``ts.compile_grammar`` as an extra row):
  ``LLMatcher`` per instance, mask via ``llguidance.numpy.fill_next_token_bitmask``.
  llguidance keeps no compiled state across matchers, so its TTFM is matcher
  construction + first mask.

Both engines see the same token ids; an instance that an engine rejects
(a token refused, or EOS not allowed at the end) is counted and its timings
up to that point are kept.

Usage::

    python benches/json_maskbench.py [--limit N] [--write-readme]

``--write-readme`` replaces the results table in ``benches/README_json.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # single thread
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# A plain generic JSON grammar (RFC 8259) in Lark syntax, for llguidance
# (and tokensieve's Lark front end, for comparison).
JSON_LARK = r"""
start: value
value: object | array | STRING | NUMBER | "true" | "false" | "null"
object: "{" [pair ("," pair)*] "}"
pair: STRING ":" value
array: "[" [value ("," value)*] "]"
STRING: /"(?:[^"\\\x00-\x1f]|\\(?:["\\\/bfnrt]|u[0-9a-fA-F]{4}))*"/
NUMBER: /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/
%ignore /[ \t\n\r]+/
"""


def load_streams(data_dir: Path, tokenizer_file: Path, limit: int | None):
    """[(file name, [token id lists of its valid instances])]."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    files = sorted(p for p in data_dir.glob("*.json"))
    if limit:
        files = files[:limit]
    out = []
    for p in files:
        d = json.loads(p.read_text(encoding="utf-8"))
        streams = []
        for t in d.get("tests", []):
            if t.get("valid"):
                text = json.dumps(t["data"], ensure_ascii=False)
                streams.append(tok.encode(text, add_special_tokens=False).ids)
        if streams:
            out.append((p.name, streams))
    return out


def pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(q / 100 * (len(xs) - 1)))))
    return xs[k]


class Stats:
    def __init__(self, name):
        self.name = name
        self.tok_ns = []  # per step: fill mask + consume
        self.ttfm_ns = []  # per file: compile + first mask
        self.compile_ns = []  # the compile part of it
        self.rejected = 0
        self.instances = 0
        self.mask_disagrees = 0  # the token was consumed but its mask bit was clear (or vice versa)
        self.max_at = None  # (file, instance, step) of the slowest step
        self._max = -1

    def summary(self):
        us = [x / 1e3 for x in self.tok_ns]
        ms = [x / 1e6 for x in self.ttfm_ns]
        return {
            "steps": len(us),
            "p50_us": pct(us, 50), "p90_us": pct(us, 90), "p99_us": pct(us, 99), "max_us": max(us) if us else float("nan"),
            "mean_us": statistics.fmean(us) if us else float("nan"),
            "ttfm_p50_ms": pct(ms, 50), "ttfm_p99_ms": pct(ms, 99), "ttfm_max_ms": max(ms) if ms else float("nan"),
            "compile_p50_ms": pct([x / 1e6 for x in self.compile_ns], 50),
            "instances": self.instances, "rejected": self.rejected, "mask_disagrees": self.mask_disagrees,
            "max_at": self.max_at,
        }

    def note_max(self, fname, inst, step):
        """Called after a step: remembers where the slowest one was."""
        if self.tok_ns[-1] > self._max:
            self._max = self.tok_ns[-1]
            self.max_at = (fname, inst, step)


def bit(mask_row, t):
    return (int(mask_row[t >> 5]) >> (t & 31)) & 1


# ---------------------------------------------------------------------------
# tokensieve


def run_tokensieve(vocab, streams, eos, *, shared: bool, make, name):
    import tokensieve as ts

    st = Stats(name)
    pc = time.perf_counter_ns
    bm = ts.allocate_token_bitmask(1, vocab.size)
    row = bm[0]
    c = make() if shared else None
    if shared:
        # TTFM of the shared grammar: compile + first mask, once.
        t0 = pc()
        c0 = make()
        t1 = pc()
        ts.Matcher(c0).fill_next_token_bitmask(bm)
        st.ttfm_ns.append(pc() - t0)
        st.compile_ns.append(t1 - t0)
    gc.disable()
    try:
        for fname, insts in streams:
            if not shared:
                t0 = pc()
                c = make()
                t1 = pc()
                m = ts.Matcher(c)
                m.fill_next_token_bitmask(bm)
                st.ttfm_ns.append(pc() - t0)
                st.compile_ns.append(t1 - t0)
            for ii, ids in enumerate(insts):
                st.instances += 1
                m = ts.Matcher(c)
                ok = True
                for k, t in enumerate(ids + [eos]):
                    t0 = pc()
                    m.fill_next_token_bitmask(bm)
                    ok = m.consume_token(t)
                    st.tok_ns.append(pc() - t0)
                    st.note_max(fname, ii, k)
                    if bit(row, t) != ok:
                        st.mask_disagrees += 1
                    if not ok:
                        break
                if not ok:
                    st.rejected += 1
    finally:
        gc.enable()
    return st


# ---------------------------------------------------------------------------
# llguidance


def make_llg_tokenizer(tokenizer_file: Path, eos: int):
    import llguidance

    try:
        import llguidance.hf
        from transformers import PreTrainedTokenizerFast

        hf = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file))
        return llguidance.hf.from_tokenizer(hf, eos_token=eos), "llguidance.hf.from_tokenizer(PreTrainedTokenizerFast)"
    except Exception:  # pragma: no cover - older/newer APIs
        return llguidance.LLTokenizer(tokenizer_file.read_text(encoding="utf-8"), eos_token=eos), "llguidance.LLTokenizer(tokenizer.json)"


def run_llguidance(lltok, streams, eos, name):
    import llguidance
    import llguidance.numpy as lln

    grammar = llguidance.LLMatcher.grammar_from_lark(JSON_LARK)
    err = llguidance.LLMatcher.validate_grammar(grammar, lltok)
    assert not err, err
    st = Stats(name)
    pc = time.perf_counter_ns
    bm = lln.allocate_token_bitmask(1, lltok.vocab_size)
    row = bm[0]
    gc.disable()
    try:
        for fname, insts in streams:
            for ii, ids in enumerate(insts):
                st.instances += 1
                t0 = pc()
                m = llguidance.LLMatcher(lltok, grammar)
                if ii == 0:
                    t1 = pc()
                    lln.fill_next_token_bitmask(m, bm)
                    st.ttfm_ns.append(pc() - t0)
                    st.compile_ns.append(t1 - t0)
                    m = llguidance.LLMatcher(lltok, grammar)
                good = True
                for k, t in enumerate(ids + [eos]):
                    t0 = pc()
                    lln.fill_next_token_bitmask(m, bm)
                    good = m.consume_token(t)
                    st.tok_ns.append(pc() - t0)
                    st.note_max(fname, ii, k)
                    if bit(row, t) != good:
                        st.mask_disagrees += 1
                    if not good or m.is_error():
                        good = False
                        break
                if not good:
                    st.rejected += 1
    finally:
        gc.enable()
    return st


# ---------------------------------------------------------------------------
# Report


def fmt(x, nd=1):
    return "n/a" if x != x else f"{x:,.{nd}f}"


def table(results, refs, llg_name):
    """Markdown table; one ratio column (llguidance / X) per (name, label) in refs."""
    rows = [
        ("per-token p50 (µs)", "p50_us", 1),
        ("per-token p90 (µs)", "p90_us", 1),
        ("per-token p99 (µs)", "p99_us", 1),
        ("per-token max (µs)", "max_us", 0),
        ("per-token mean (µs)", "mean_us", 1),
        ("compile p50 (ms)", "compile_p50_ms", 3),
        ("compile + first mask p50 (ms)", "ttfm_p50_ms", 3),
        ("compile + first mask p99 (ms)", "ttfm_p99_ms", 3),
        ("compile + first mask max (ms)", "ttfm_max_ms", 3),
    ]
    names = list(results)
    head = "| metric | " + " | ".join(names) + " | " + " | ".join(f"llguidance / {label}" for _, label in refs) + " |"
    lines = [head, "|" + "---|" * (len(names) + len(refs) + 1)]
    for label, key, nd in rows:
        vals = [results[n][key] for n in names]
        ratios = [results[llg_name][key] / results[r][key] if results[r][key] else float("nan") for r, _ in refs]
        lines.append(f"| {label} | " + " | ".join(fmt(v, nd) for v in vals) + " | " + " | ".join(f"{fmt(x, 1)}×" for x in ratios) + " |")
    for label, key in (("mask steps timed", "steps"), ("valid instances", "instances"), ("instances rejected", "rejected"), ("mask/consume disagreements", "mask_disagrees")):
        lines.append(f"| {label} | " + " | ".join(f"{results[n][key]:,}" for n in names) + " |" + " |" * len(refs))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED / "maskbench-dev")
    ap.add_argument("--tokenizer", type=Path, default=SHARED / "tokenizers" / "llama-3-8b-instruct" / "tokenizer.json")
    ap.add_argument("--eos", type=int, default=128009, help="EOS id (Llama 3 <|eot_id|>)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N files")
    ap.add_argument("--no-llguidance", action="store_true")
    ap.add_argument("--write-readme", action="store_true", help="write the table into benches/README_json.md")
    args = ap.parse_args(argv)

    import tokensieve as ts

    streams = load_streams(args.data, args.tokenizer, args.limit)
    n_inst = sum(len(s) for _, s in streams)
    n_tok = sum(len(i) for _, s in streams for i in s)
    print(f"{len(streams)} files, {n_inst} valid instances, {n_tok} tokens", flush=True)
    vocab = ts.Vocabulary.from_tokenizer_file(args.tokenizer, eos_token_ids=[args.eos])

    results = {}
    ts_a = "tokensieve compile_json (a) shared"
    ts_b = "tokensieve compile_json (b) per file"
    ts_l = "tokensieve Lark JSON (shared)"
    llg = "llguidance Lark JSON"
    for name, shared, make in (
        (ts_a, True, lambda: ts.compile_json(vocab)),
        (ts_b, False, lambda: ts.compile_json(vocab)),
        (ts_l, True, lambda: ts.compile_grammar(JSON_LARK, vocab)),
    ):
        t0 = time.monotonic()
        results[name] = run_tokensieve(vocab, streams, args.eos, shared=shared, make=make, name=name).summary()
        print(f"{name}: {results[name]}  ({time.monotonic() - t0:.1f} s)", flush=True)
    how = None
    if not args.no_llguidance:
        import llguidance

        lltok, how = make_llg_tokenizer(args.tokenizer, args.eos)
        t0 = time.monotonic()
        results[llg] = run_llguidance(lltok, streams, args.eos, llg).summary()
        print(f"{llg} {llguidance.__version__ if hasattr(llguidance, '__version__') else ''}: {results[llg]}  ({time.monotonic() - t0:.1f} s)", flush=True)

    md = table(results, [(ts_a, "(a)"), (ts_b, "(b)")], llg) if llg in results else ""
    print()
    print(md)
    meta = {
        "files": len(streams), "instances": n_inst, "tokens": n_tok,
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "llguidance_tokenizer": how,
    }
    try:
        import importlib.metadata as im

        meta["llguidance"] = im.version("llguidance")
        meta["tokensieve"] = im.version("tokensieve")
    except Exception:
        pass
    print(json.dumps(meta))
    if args.write_readme and md:
        write_readme(md, meta, argv if argv is not None else sys.argv[1:])
    return results


def write_readme(md, meta, argv):
    path = Path(__file__).resolve().parent / "README_json.md"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    cmd = "python benches/json_maskbench.py " + " ".join(a for a in argv if a != "--write-readme")
    block = (
        f"{begin}\n\nCommand: `{cmd.strip()} --write-readme` (from the repository root; "
        f"{meta['files']} files, {meta['instances']} valid instances, {meta['tokens']:,} tokens; "
        f"tokensieve {meta.get('tokensieve', '?')}, llguidance {meta.get('llguidance', '?')}, "
        f"Python {meta['python']}, {meta['machine']}, {meta['cpus']} CPUs, single thread).\n\n{md}\n\n{end}"
    )
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
