"""JSON-Schema-Test-Suite (draft 2020-12) through a constrained-generation engine.

For every test group of the official suite (``../shared/json-schema-test-suite/
draft2020-12``: all top-level files plus ``optional/format/*.json``), the
group's schema is compiled once; each case's instance is serialised with
``json.dumps(data, ensure_ascii=False)`` (default separators), tokenized with
the Llama 3 tokenizer (``add_special_tokens=False``) and fed token by token.
Each case ends as one of:

* ``passed``: a valid instance accepted in full and accepting at the end, or
  an invalid one rejected (a token refused, or not accepting at the end);
* ``refused``: the group's schema did not compile (unsupported keyword, ...);
* ``wrongly_accepted``: an invalid instance accepted in full and accepting at
  the end (a correctness bug: the engine lets the model produce it);
* ``wrongly_rejected``: a valid instance rejected;
* ``error``: the engine raised while matching (should not happen).

Files that need remote references (``refRemote.json``) are not run; their
cases are counted as ``skipped``.

Engines (``--engine``): ``tokensieve`` (``tokensieve.compile_json_schema``,
flexible whitespace, strict), ``llguidance`` (``grammar_from_json_schema`` with
``whitespace_flexible``) and ``xgrammar`` (``compile_json_schema``,
``any_whitespace=True``, ``strict_mode=False``). The engine adapters
(:func:`make_engine`) are shared with ``maskbench_schema.py`` and
``tests/test_json_schema_suite.py``.

Usage::

    python benches/json_schema_suite.py [--engine tokensieve|llguidance|xgrammar]
        [--json OUT.json] [--update-ratchet] [--file SUBSTRING] [--verbose]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TOKENIZER = SHARED / "tokenizers" / "llama-3-8b-instruct" / "tokenizer.json"
SUITE_DIR = SHARED / "json-schema-test-suite" / "draft2020-12"
RATCHET = ROOT / "tests" / "data" / "json_schema_suite_ratchet.json"
EOS = 128009  # Llama 3 <|eot_id|>
#: Files whose cases need remote references; counted as skipped.
REMOTE_FILES = ("refRemote.json",)
OUTCOMES = ("passed", "refused", "wrongly_accepted", "wrongly_rejected", "error", "skipped")
ENGINES = ("tokensieve", "llguidance", "xgrammar")


# ---------------------------------------------------------------------------
# Engine adapters: one small interface over the three libraries.


@dataclass
class Engine:
    """A JSON Schema engine over one vocabulary.

    ``compile(schema_json_text)`` returns a compiled object or raises (a
    refusal); ``matcher(compiled)`` a fresh matcher at the start;
    ``consume(m, token) -> bool`` commits one token (False = rejected);
    ``accepting(m)`` whether the text so far is a complete instance;
    ``fill_mask(m, bm)`` writes the next-token mask into ``bm`` (an int32
    ``(1, ceil(V / 32))`` array from ``allocate_mask()``, bit ``t % 32`` of
    word ``t // 32``); ``copy(m)`` an independent matcher in the same state.
    """

    name: str
    vocab_size: int
    compile: Callable[[str], Any]
    matcher: Callable[[Any], Any]
    consume: Callable[[Any, int], bool]
    accepting: Callable[[Any], bool]
    fill_mask: Callable[[Any, Any], None]
    allocate_mask: Callable[[], Any]
    copy: Callable[[Any], Any] = lambda m: m.copy()
    version: str = "?"
    extra: Dict[str, Any] = field(default_factory=dict)


def mask_bit(bm: Any, t: int) -> bool:
    """Whether token ``t`` is allowed in row 0 of an int32 token bitmask."""
    return bool((int(bm[0, t >> 5]) >> (t & 31)) & 1)


def _version(dist: str) -> str:
    try:
        import importlib.metadata as im

        return im.version(dist)
    except Exception:  # noqa: BLE001
        return "?"


def tokensieve_engine(tokenizer_file: Path = TOKENIZER, *, vocab: Any = None, whitespace: str = "flexible") -> Engine:
    """``tokensieve.compile_json_schema`` (strict, flexible whitespace by default)."""
    import tokensieve as ts

    if vocab is None:
        vocab = ts.Vocabulary.from_tokenizer_file(tokenizer_file)
    if not hasattr(ts, "compile_json_schema"):
        raise ImportError("this tokensieve build has no compile_json_schema")

    def compile_(schema: str) -> Any:
        return ts.compile_json_schema(schema, vocab, whitespace=whitespace)

    return Engine(
        name="tokensieve",
        vocab_size=vocab.vocab_size,
        compile=compile_,
        matcher=ts.Matcher,
        consume=lambda m, t: bool(m.consume_token(t)),
        accepting=lambda m: bool(m.is_accepting()),
        fill_mask=lambda m, bm: m.fill_next_token_bitmask(bm),
        allocate_mask=lambda: ts.allocate_token_bitmask(1, vocab.vocab_size),
        version=_version("tokensieve"),
        extra={"vocab": vocab},
    )


def llguidance_engine(tokenizer_file: Path = TOKENIZER, eos: int = EOS) -> Engine:
    """llguidance ``grammar_from_json_schema`` with ``whitespace_flexible``.

    (llguidance refuses options on a boolean schema, so the suite's two
    ``boolean_schema.json`` groups count as refused; with its default
    options it compiles them.)

    llguidance has no compiled object separate from the matcher: ``compile``
    builds (and checks) one matcher, and each ``matcher()`` is a deep copy of it.
    """
    import llguidance
    import llguidance.hf
    import llguidance.numpy as lnp
    from transformers import PreTrainedTokenizerFast

    lt = llguidance.hf.from_tokenizer(PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file)), eos_token=eos)

    def compile_(schema: str) -> Any:
        g = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": True})
        m = llguidance.LLMatcher(lt, g, log_level=0)  # no stderr warnings on rejected tokens
        if m.is_error():
            raise ValueError(m.get_error())
        return m

    def consume(m: Any, t: int) -> bool:
        return bool(m.consume_token(t)) and not m.is_error()

    return Engine(
        name="llguidance",
        vocab_size=lt.vocab_size,
        compile=compile_,
        matcher=lambda c: c.deep_copy(),
        copy=lambda m: m.deep_copy(),
        consume=consume,
        accepting=lambda m: bool(m.is_accepting()) and not m.is_error(),
        fill_mask=lambda m, bm: lnp.fill_next_token_bitmask(m, bm, 0),
        allocate_mask=lambda: lnp.allocate_token_bitmask(1, lt.vocab_size),
        version=_version("llguidance"),
    )


def xgrammar_engine(tokenizer_file: Path = TOKENIZER, eos: int = EOS) -> Engine:
    """XGrammar ``compile_json_schema`` with ``any_whitespace=True`` and
    ``strict_mode=False`` (its strict mode forbids properties and items the
    schema does not list, which is not JSON Schema's meaning)."""
    import torch
    import xgrammar as xgr
    from transformers import PreTrainedTokenizerFast

    torch.set_num_threads(1)
    info = xgr.TokenizerInfo.from_huggingface(PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file)), stop_token_ids=[eos])
    compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)

    def compile_(schema: str) -> Any:
        return compiler.compile_json_schema(schema, any_whitespace=True, strict_mode=False)

    return Engine(
        name="xgrammar",
        vocab_size=info.vocab_size,
        compile=compile_,
        matcher=xgr.GrammarMatcher,
        copy=lambda m: m.fork(),
        consume=lambda m, t: bool(m.accept_token(t)),
        accepting=lambda m: bool(m.is_completed()),
        fill_mask=lambda m, bm: m.fill_next_token_bitmask(bm),
        allocate_mask=lambda: xgr.allocate_token_bitmask(1, info.vocab_size),
        version=_version("xgrammar"),
    )


def make_engine(name: str, tokenizer_file: Path = TOKENIZER, eos: int = EOS) -> Engine:
    """The adapter for engine ``name`` (one of :data:`ENGINES`)."""
    if name == "tokensieve":
        return tokensieve_engine(tokenizer_file)
    if name == "llguidance":
        return llguidance_engine(tokenizer_file, eos)
    if name == "xgrammar":
        return xgrammar_engine(tokenizer_file, eos)
    raise ValueError(f"unknown engine {name!r}; expected one of {ENGINES}")


_LOG_PREFIX = re.compile(r"^\[\d\d:\d\d:\d\d\] \S+:\d+: ")


def first_line(e: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message`` (for grouping refusal reasons;
    XGrammar's ``[hh:mm:ss] file.cc:line:`` prefix is dropped)."""
    msg = str(e).strip().splitlines()
    line = _LOG_PREFIX.sub("", msg[0] if msg else "")
    return f"{type(e).__name__}: {line[:limit]}"


# ---------------------------------------------------------------------------
# The suite.


def suite_files(suite_dir: Path = SUITE_DIR) -> List[Path]:
    """Top-level ``*.json`` files plus ``optional/format/*.json``, sorted."""
    return sorted(suite_dir.glob("*.json")) + sorted((suite_dir / "optional" / "format").glob("*.json"))


def feed(engine: Engine, m: Any, ids: List[int]) -> bool:
    """Feeds ``ids`` one by one; True iff every token is accepted and the
    matcher is accepting at the end."""
    for t in ids:
        if not engine.consume(m, t):
            return False
    return engine.accepting(m)


def classify(valid: bool, accepted: bool) -> str:
    """The outcome of one compiled case."""
    if accepted == valid:
        return "passed"
    return "wrongly_accepted" if accepted else "wrongly_rejected"


@dataclass
class SuiteResult:
    """Per-file outcome counts, the cases that went wrong, refusal reasons."""

    engine: str
    counts: Dict[str, Dict[str, int]]
    failures: List[Dict[str, Any]]
    refusals: Dict[str, int]
    seconds: float

    def totals(self) -> Dict[str, int]:
        tot = {k: 0 for k in OUTCOMES}
        for c in self.counts.values():
            for k, v in c.items():
                tot[k] += v
        tot["cases"] = sum(tot[k] for k in OUTCOMES)
        return tot

    def to_json(self) -> Dict[str, Any]:
        return {
            "engine": self.engine,
            "totals": self.totals(),
            "files": self.counts,
            "failures": self.failures,
            "refusal_reasons": dict(sorted(self.refusals.items(), key=lambda kv: -kv[1])),
            "seconds": self.seconds,
        }


def run_suite(
    engine: Engine,
    tokenize: Callable[[str], List[int]],
    suite_dir: Path = SUITE_DIR,
    file_filter: Optional[str] = None,
) -> SuiteResult:
    """Runs every case of the suite through ``engine``; see the module docstring."""
    t_start = time.perf_counter()
    counts: Dict[str, Dict[str, int]] = {}
    failures: List[Dict[str, Any]] = []
    refusals: collections.Counter = collections.Counter()
    for path in suite_files(suite_dir):
        rel = path.relative_to(suite_dir).as_posix()
        if file_filter and file_filter not in rel:
            continue
        c = {k: 0 for k in OUTCOMES}
        counts[rel] = c
        groups = json.loads(path.read_text(encoding="utf-8"))
        if path.name in REMOTE_FILES:
            c["skipped"] = sum(len(g["tests"]) for g in groups)
            continue
        for gi, group in enumerate(groups):
            try:
                compiled = engine.compile(json.dumps(group["schema"], ensure_ascii=False))
            except Exception as e:  # noqa: BLE001 - a refusal is a result
                c["refused"] += len(group["tests"])
                refusals[first_line(e)] += len(group["tests"])
                continue
            for ci, case in enumerate(group["tests"]):
                text = json.dumps(case["data"], ensure_ascii=False)
                try:
                    accepted = feed(engine, engine.matcher(compiled), tokenize(text))
                    outcome = classify(bool(case["valid"]), accepted)
                except Exception as e:  # noqa: BLE001
                    outcome = "error"
                    refusals[f"(while matching) {first_line(e)}"] += 1
                c[outcome] += 1
                if outcome not in ("passed",):
                    failures.append({
                        "file": rel, "group": gi, "case": ci, "outcome": outcome,
                        "group_description": group.get("description"), "description": case.get("description"),
                        "schema": group["schema"], "instance": text, "valid": case["valid"],
                    })
    return SuiteResult(engine.name, counts, failures, dict(refusals), time.perf_counter() - t_start)


def llama3_tokenize(tokenizer_file: Path = TOKENIZER) -> Callable[[str], List[int]]:
    """``text -> ids`` with the ``tokenizers`` library, no special tokens."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    return lambda text: tok.encode(text, add_special_tokens=False).ids


def ratchet_of(result: SuiteResult) -> Dict[str, Dict[str, int]]:
    """The ratchet file's content: per-file counts (``passed`` is what the test holds)."""
    return {f: {k: v for k, v in c.items() if v} or {"passed": 0} for f, c in sorted(result.counts.items())}


def format_table(result: SuiteResult) -> str:
    """Per-file and total counts as a plain-text table."""
    cols = ("passed", "refused", "wrongly_accepted", "wrongly_rejected", "error", "skipped")
    head = f"{'file':38s} " + " ".join(f"{c[:10]:>10s}" for c in cols)
    lines = [head, "-" * len(head)]
    for f, c in sorted(result.counts.items()):
        lines.append(f"{f:38s} " + " ".join(f"{c[k]:10d}" for k in cols))
    tot = result.totals()
    lines.append("-" * len(head))
    lines.append(f"{'TOTAL (' + str(tot['cases']) + ' cases)':38s} " + " ".join(f"{tot[k]:10d}" for k in cols))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> SuiteResult:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", choices=ENGINES, default="tokensieve")
    ap.add_argument("--suite", type=Path, default=SUITE_DIR)
    ap.add_argument("--tokenizer", type=Path, default=TOKENIZER)
    ap.add_argument("--file", default=None, help="only files whose path contains this")
    ap.add_argument("--json", type=Path, default=None, help="write counts, failures and refusal reasons here")
    ap.add_argument("--update-ratchet", action="store_true", help=f"write {RATCHET.relative_to(ROOT)} (tokensieve only)")
    ap.add_argument("--verbose", action="store_true", help="print every wrongly accepted / rejected case")
    args = ap.parse_args(argv)

    engine = make_engine(args.engine, args.tokenizer)
    result = run_suite(engine, llama3_tokenize(args.tokenizer), args.suite, args.file)
    print(f"engine {engine.name} {engine.version}; {result.seconds:.1f} s")
    print(format_table(result))
    print("\ntop refusal reasons:")
    for reason, n in sorted(result.refusals.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {n:5d}  {reason}")
    if args.verbose:
        for f in result.failures:
            if f["outcome"] in ("wrongly_accepted", "wrongly_rejected", "error"):
                print(f"{f['outcome']}: {f['file']} #{f['group']}.{f['case']} {f['description']!r}: "
                      f"schema={json.dumps(f['schema'])[:200]} instance={f['instance'][:120]}")
    if args.json:
        out = result.to_json()
        out["version"] = engine.version
        args.json.write_text(json.dumps(out, indent=1, ensure_ascii=False), encoding="utf-8")
        print(f"wrote {args.json}")
    if args.update_ratchet:
        if engine.name != "tokensieve":
            ap.error("--update-ratchet is for the tokensieve engine")
        if args.file:
            ap.error("--update-ratchet needs the whole suite (no --file)")
        RATCHET.parent.mkdir(parents=True, exist_ok=True)
        RATCHET.write_text(json.dumps(ratchet_of(result), indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {RATCHET}")
    return result


if __name__ == "__main__":
    main()
