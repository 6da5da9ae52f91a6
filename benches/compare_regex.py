#!/usr/bin/env python3
"""Side-by-side regex-constraint benchmark: tokensieve vs outlines-core vs llguidance.

All three engines get the same regexes, the same Llama 3 tokenizer and the
same token sequences (matching strings tokenized by `tokenizers` with
add_special_tokens=False). For every engine and regex we measure

* compile: regex -> compiled constraint (median of several compiles). One-time
  per-tokenizer setup (vocabulary parsing, token trie) is excluded and
  reported separately.
* cold mask: the first mask of a state, taken by a freshly compiled constraint
  after consuming a prefix of a sequence (untimed). tokensieve's per-state
  mask cache starts empty per compile, so this is its uncached trie walk.
  llguidance builds its lexer lazily, so this also includes lexer-state
  construction. outlines-core computes every state's token set at compile
  time, so its "cold" mask is the same lookup as its warm one.
* warm mask: masks along the same sequences with one constraint per engine
  after one untimed pass, i.e. every state has been seen before.

p50/p99 are taken over the positions of all sequences (masks per regex: one
per token plus one after the last), where each position's time is the median
of several repetitions (cold: fresh compiles; warm: passes). That filters
scheduler preemption, so the p99 is the cost of the slowest states, not
noise from other processes.

Each engine uses its fastest Python mask API writing into a preallocated
int32 bitmask (tokensieve: Matcher.fill_next_token_bitmask; llguidance:
LLMatcher.unsafe_compute_mask_ptr; outlines-core: Guide.write_mask_into).
Times are wall-clock (time.perf_counter_ns; `--clock thread` for this
thread's CPU time) around one Python call, in one thread, so they include
the Python->native call overhead of each engine.

The script also checks correctness: every engine must accept every token
sequence and end in an accepting state, and the masks of all engines are
compared bit for bit at every position. Where they differ, the `regex`
module (partial full-match) decides which engine is wrong. The exit status
is 1 only if tokensieve is wrong; peers' problems are reported.

Run:  python benches/compare_regex.py            (about 2-4 minutes)
      python benches/compare_regex.py --quick    (fewer repetitions)
Needs: pip install -e . ; pip install llguidance outlines-core tokenizers
"""

from __future__ import annotations

import os

# Single thread everywhere (must precede the native imports).
for _v in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM"):
    os.environ.setdefault(_v, "1" if _v != "TOKENIZERS_PARALLELISM" else "false")

import argparse
import gc
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TOKENIZER = ROOT.parent / "shared" / "tokenizers" / "llama-3-8b-instruct" / "tokenizer.json"
EOS_ID = 128009  # <|eot_id|>, Llama 3 instruct's end of turn; the one EOS given to every engine

WORDS50 = (
    "apple|banana|cherry|date|elderberry|fig|grape|honeydew|kiwi|lemon|mango|nectarine|orange|papaya|"
    "quince|raspberry|strawberry|tangerine|ugli|vanilla|watermelon|xigua|yam|zucchini|apricot|"
    "blueberry|cantaloupe|dragonfruit|eggplant|feijoa|guava|huckleberry|jackfruit|kumquat|lime|"
    "mulberry|nutmeg|olive|peach|pear|plum|pineapple|pomegranate|radish|spinach|tomato|turnip|"
    "walnut|almond|cashew"
)

# (name, pattern, strings the pattern matches in full). Kept in sync with
# benches/mask.rs (same names and patterns, first string shared).
REGEXES: list[tuple[str, str, list[str]]] = [
    ("iso_date", r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
     ["2024-02-29", "1999-12-31", "2000-01-01", "2023-07-15"]),
    ("email", r"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}",
     ["jane.doe+news@mail.example.com", "bob@example.org", "first_last123@sub.domain.co.uk"]),
    ("phone", r"\+?1? ?\(?[0-9]{3}\)?[ .-]?[0-9]{3}[ .-]?[0-9]{4}",
     ["+1 (555) 123-4567", "555.123.4567", "5551234567", "(212) 555-0100"]),
    ("ipv4", r"((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])",
     ["192.168.100.254", "10.0.0.1", "255.255.255.0", "8.8.4.4"]),
    ("number", r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?",
     ["-12345.678e-9", "0", "3.14159", "42", "6.022E+23"]),
    ("json_obj", r'\{"name": "[a-zA-Z ]{1,20}", "age": [0-9]{1,3}\}',
     ['{"name": "Ada Lovelace", "age": 36}', '{"name": "Bob", "age": 7}', '{"name": "Grace Hopper", "age": 85}']),
    ("uuid", r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
     ["123e4567-e89b-12d3-a456-426614174000", "550e8400-e29b-41d4-a716-446655440000",
      "f47ac10b-58cc-4372-a567-0e02b2c3d479"]),
    ("words50", f"({WORDS50})", ["pomegranate", "strawberry", "kiwi", "dragonfruit", "cashew"]),
    ("free_text", r"[a-z]+( [a-z]+)*",
     ["the quick brown fox jumps over the lazy dog", "hello world", "constrained decoding makes masks"]),
    ("url", r"https?://[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)+(:[0-9]{1,5})?(/[a-zA-Z0-9._~%-]*)*(\?[a-zA-Z0-9._~%=&-]*)?",
     ["https://www.example.com:8080/path/to/page.html?query=1&lang=en", "http://localhost.localdomain/",
      "https://docs.rs/regex/latest/regex/index.html"]),
]

# Wall clock by default; --clock thread switches to this thread's CPU time,
# which leaves out time spent preempted by other processes (coarser overhead,
# about 0.3 us per reading, but robust on a loaded machine).
clock = time.perf_counter_ns

TARGET_WARM_US = 2.0
TARGET_COLD_US = 1000.0
TARGET_COMPILE_RATIO = 5.0


# --------------------------------------------------------------------------
# Engines. Each wraps one library behind the same small interface.
# --------------------------------------------------------------------------


class Engine:
    name = "?"
    cold_is_lookup = False  # masks are precomputed at compile time

    def compile(self, pattern):
        raise NotImplementedError

    def matcher(self, compiled):
        raise NotImplementedError

    def fill(self, m, buf):
        raise NotImplementedError

    def consume(self, m, tok) -> bool:
        raise NotImplementedError

    def is_accepting(self, m) -> bool:
        raise NotImplementedError

    def reset(self, m):
        raise NotImplementedError


class TokensieveEngine(Engine):
    name = "tokensieve"

    def __init__(self, path: Path):
        import tokensieve as ts

        self.ts = ts
        t = time.perf_counter()
        self.vocab = ts.Vocabulary.from_tokenizer_file(str(path), eos_token_ids=[EOS_ID])
        t1 = time.perf_counter()
        ts.compile_regex("a", self.vocab)  # builds and caches the token trie
        t2 = time.perf_counter()
        self.setup = f"vocabulary {1e3 * (t1 - t):.0f} ms + token trie {1e3 * (t2 - t1):.0f} ms"
        self.vocab_size = self.vocab.size

    def compile(self, pattern):
        return self.ts.compile_regex(pattern, self.vocab)

    def matcher(self, compiled):
        return self.ts.Matcher(compiled)

    def fill(self, m, buf):
        m.fill_next_token_bitmask(buf)

    def consume(self, m, tok):
        return m.consume_token(tok)

    def is_accepting(self, m):
        return m.is_accepting()

    def reset(self, m):
        m.reset()

    def bound_fill(self, m, buf):
        f = m.fill_next_token_bitmask
        return lambda: f(buf)


class LLGuidanceEngine(Engine):
    name = "llguidance"

    def __init__(self, path: Path):
        import llguidance

        self.llg = llguidance
        t = time.perf_counter()
        self.tok = llguidance.LLTokenizer(path.read_text(encoding="utf-8"), eos_token=EOS_ID)
        self.setup = f"LLTokenizer {1e3 * (time.perf_counter() - t):.0f} ms"
        self.vocab_size = self.tok.vocab_size

    def compile(self, pattern):
        m = self.llg.LLMatcher(self.tok, self.llg.LLMatcher.grammar_from_regex(pattern), log_level=0)
        if m.is_error():
            raise ValueError(m.get_error())
        return m

    def matcher(self, compiled):
        # A compiled LLMatcher *is* the matcher; copies share the lexer cache.
        return compiled.deep_copy()

    def fill(self, m, buf):
        m.unsafe_compute_mask_ptr(buf.ctypes.data, buf.nbytes)

    def consume(self, m, tok):
        return m.consume_token(tok) and not m.is_error()

    def is_accepting(self, m):
        return m.is_accepting()

    def reset(self, m):
        m.reset()

    def bound_fill(self, m, buf):
        f, ptr, n = m.unsafe_compute_mask_ptr, buf.ctypes.data, buf.nbytes
        return lambda: f(ptr, n)


class OutlinesEngine(Engine):
    name = "outlines-core"
    cold_is_lookup = True

    def __init__(self, path: Path):
        import outlines_core

        self.oc = outlines_core
        t = time.perf_counter()
        tok_bytes = token_bytes_from_tokenizer_json(path)
        token_map: dict[bytes, list[int]] = {}
        for i, b in tok_bytes.items():
            if b is not None and i != EOS_ID:
                token_map.setdefault(b, []).append(i)
        self.vocab = outlines_core.Vocabulary(EOS_ID, token_map)
        self.setup = f"Vocabulary (incl. decoding tokenizer.json in Python) {1e3 * (time.perf_counter() - t):.0f} ms"
        self.tok_bytes = tok_bytes

    def compile(self, pattern):
        return self.oc.Index(pattern, self.vocab)

    def matcher(self, compiled):
        return self.oc.Guide(compiled)

    def fill(self, m, buf):
        m.write_mask_into(buf.ctypes.data, buf.size, 4)

    def consume(self, m, tok):
        try:
            m.advance(tok, return_tokens=False)
            return True
        except ValueError:
            return False

    def is_accepting(self, m):
        return m.is_finished()

    def reset(self, m):
        m.reset()

    def bound_fill(self, m, buf):
        f, ptr, n = m.write_mask_into, buf.ctypes.data, buf.size
        return lambda: f(ptr, n, 4)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (byte-level BPE spelling)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def token_bytes_from_tokenizer_json(path: Path) -> dict[int, bytes | None]:
    """Token id -> bytes for a byte-level BPE tokenizer.json (None: special)."""
    j = json.loads(path.read_text(encoding="utf-8"))
    dec = {c: b for b, c in bytes_to_unicode().items()}
    out: dict[int, bytes | None] = {i: bytes(dec[c] for c in s) for s, i in j["model"]["vocab"].items()}
    for a in j.get("added_tokens", []):
        out[a["id"]] = None if a.get("special") else a["content"].encode()
    return out


# --------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def time_compile(engine: Engine, pattern: str, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t = clock()
        c = engine.compile(pattern)
        ts.append(clock() - t)
        del c
    return statistics.median(ts) / 1e6


def cold_masks(engine: Engine, pattern: str, seqs: list[list[int]], words: int, reps: int, compiled=None) -> list[float]:
    """First mask at every position of every sequence, each from a fresh
    compile (us). Each position is measured `reps` times (a fresh compile
    each time) and its median kept, which filters scheduler preemption."""
    buf = np.zeros(words, dtype=np.int32)
    out = []
    for seq in seqs:
        for k in range(len(seq) + 1):
            samples = []
            for _ in range(reps):
                c = compiled if engine.cold_is_lookup else engine.compile(pattern)
                m = engine.matcher(c)
                for tok in seq[:k]:
                    engine.consume(m, tok)
                f = engine.bound_fill(m, buf)
                t = clock()
                f()
                samples.append((clock() - t) / 1e3)
                del m, c
            out.append(statistics.median(samples))
    return out


def warm_masks(engine: Engine, compiled, seqs: list[list[int]], words: int, passes: int) -> list[float]:
    """Masks along the sequences after an untimed pass (us): per position,
    the median over `passes` timed passes. One matcher, reset between
    sequences, so that whatever an engine caches is kept."""
    buf = np.zeros(words, dtype=np.int32)
    per_pos: list[list[float]] = []
    m = engine.matcher(compiled)
    for p in range(passes + 1):
        i = 0
        for seq in seqs:
            engine.reset(m)
            for k in range(len(seq) + 1):
                f = engine.bound_fill(m, buf)
                t = clock()
                f()
                dt = (clock() - t) / 1e3
                if p == 1:
                    per_pos.append([dt])
                elif p > 1:
                    per_pos[i].append(dt)
                i += 1
                if k < len(seq):
                    engine.consume(m, seq[k])
    return [statistics.median(x) for x in per_pos]


def mask_bits(buf: np.ndarray) -> set[int]:
    return set(np.flatnonzero(np.unpackbits(buf.view(np.uint8), bitorder="little")).tolist())


class Oracle:
    """Independent judge of a disputed token: can the text so far plus the
    token's bytes still be completed to a full match? (`regex` module with
    partial matching; the benchmark patterns mean the same in its syntax.)"""

    def __init__(self, pattern: str):
        import regex

        self.rx = regex.compile(pattern)

    def allows(self, prefix: bytes, tok: bytes | None) -> bool | None:
        try:
            if tok is None:  # EOS: the text so far must match in full
                return self.rx.fullmatch(prefix.decode()) is not None
            return self.rx.fullmatch((prefix + tok).decode(), partial=True) is not None
        except UnicodeDecodeError:
            return None  # a partial UTF-8 character: no verdict


def check_agreement(engines: list[Engine], compiled: dict, pattern: str, seqs, texts, words: int,
                    tok_bytes) -> list[tuple[str, str]]:
    """Checks that every engine accepts every sequence (EOS allowed at the
    end) and compares the masks bit for bit at every position. A token on
    which the engines disagree is judged by the Oracle, and the engine that
    got it wrong is blamed. Returns (engine, problem) pairs."""
    problems: list[tuple[str, str]] = []
    oracle = Oracle(pattern)
    bufs = {e.name: np.zeros(words, dtype=np.int32) for e in engines}
    for seq, text in zip(seqs, texts):
        ms = {e.name: e.matcher(compiled[e.name]) for e in engines}
        alive = {e.name: True for e in engines}  # not yet derailed by a rejected token
        prefix = b""
        for k in range(len(seq) + 1):
            masks = {}
            for e in engines:
                e.fill(ms[e.name], bufs[e.name])
                masks[e.name] = mask_bits(bufs[e.name])
            live = [e.name for e in engines if alive[e.name]]
            disputed = set().union(*(masks[n] for n in live)) - set.intersection(*(masks[n] for n in live))
            verdict = {t: oracle.allows(prefix, None if t == EOS_ID else tok_bytes.get(t)) for t in disputed}
            for n in live:
                fn = sorted(t for t in disputed if verdict[t] is True and t not in masks[n])
                fp = sorted(t for t in disputed if verdict[t] is False and t in masks[n])
                unk = sorted(t for t in disputed if verdict[t] is None)
                show = lambda ids: ", ".join(f"{tok_bytes.get(i) if i != EOS_ID else 'EOS'!r}" for i in ids[:6])
                where = f"{text!r} after {prefix.decode(errors='replace')!r}"
                if fn:
                    problems.append((n, f"{where}: disallows {len(fn)} valid token(s): {show(fn)}"))
                if fp:
                    problems.append((n, f"{where}: allows {len(fp)} invalid token(s): {show(fp)}"))
                if unk and n == live[0]:
                    problems.append(("?", f"{where}: engines disagree on {len(unk)} token(s) with partial UTF-8"))
            if k == len(seq):
                break
            for e in engines:
                if alive[e.name] and not e.consume(ms[e.name], seq[k]):
                    alive[e.name] = False
                    problems.append((e.name, f"rejects token {k} ({tok_bytes.get(seq[k])!r}) of {text!r}"))
            prefix += tok_bytes.get(seq[k]) or b""
        for e in engines:
            if not alive[e.name]:
                continue
            if not e.is_accepting(ms[e.name]):
                problems.append((e.name, f"does not accept the complete {text!r}"))
            if EOS_ID not in masks[e.name]:
                problems.append((e.name, f"does not allow EOS after the complete {text!r}"))
    return problems


def geomean(xs):
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--only", nargs="*", help="regex names to run")
    ap.add_argument("--engines", nargs="*", default=["tokensieve", "outlines-core", "llguidance"])
    ap.add_argument("--json", type=Path, help="also write raw results here")
    ap.add_argument("--clock", choices=["wall", "thread"], default="wall",
                    help="wall: time.perf_counter_ns (default); thread: time.thread_time_ns (CPU time)")
    args = ap.parse_args()
    global clock
    clock = time.perf_counter_ns if args.clock == "wall" else time.thread_time_ns

    if not args.tokenizer.exists():
        print(f"skipping: tokenizer not found at {args.tokenizer}")
        return 0
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(args.tokenizer))
    passes = 3 if args.quick else 15
    cold_reps = 1 if args.quick else 5
    compile_reps = {"tokensieve": 5 if args.quick else 21, "llguidance": 5 if args.quick else 21,
                    "outlines-core": 1 if args.quick else 3}

    makers = {"tokensieve": TokensieveEngine, "llguidance": LLGuidanceEngine, "outlines-core": OutlinesEngine}
    engines: list[Engine] = []
    for name in args.engines:
        try:
            engines.append(makers[name](args.tokenizer))
        except ImportError as e:
            print(f"skipping {name}: {e}")
    words = (max(getattr(e, "vocab_size", 0) for e in engines) + 31) // 32
    tok_bytes = token_bytes_from_tokenizer_json(args.tokenizer)
    if "tokensieve" in {e.name for e in engines}:
        tse = next(e for e in engines if e.name == "tokensieve")
        bad = [i for i, b in tok_bytes.items() if (b or b"") != tse.vocab.token_bytes(i)]
        if bad:
            print(f"WARNING: {len(bad)} tokens decode differently in tokensieve and in this script, e.g. {bad[:5]}")

    floor = []
    for _ in range(10000):
        f = lambda: None
        t = clock()
        f()
        floor.append(clock() - t)
    print(f"tokenizer: {args.tokenizer}  (mask width {words} x 32 bits)")
    print(f"clock: {args.clock}; timer + empty Python call floor: p50 {pct(floor, 50) / 1e3:.2f} us (included in every mask time)")
    for e in engines:
        print(f"one-time setup, {e.name}: {e.setup}")
    print()

    results = {}
    all_problems = []
    gc.disable()
    for name, pattern, texts in REGEXES:
        if args.only and name not in args.only:
            continue
        seqs = [hf.encode(t, add_special_tokens=False).ids for t in texts]
        ntok = sum(map(len, seqs))
        compiled = {e.name: e.compile(pattern) for e in engines}
        all_problems += [(n, f"[{name}] {p}") for n, p in
                         check_agreement(engines, compiled, pattern, seqs, texts, words, tok_bytes)]
        r = results[name] = {"tokens": ntok}
        for e in engines:
            comp = time_compile(e, pattern, compile_reps[e.name])
            # Engines without mutable caches (outlines-core) reuse their index.
            fresh = (lambda: compiled[e.name]) if e.cold_is_lookup else (lambda: e.compile(pattern))
            cold = cold_masks(e, pattern, seqs, words, cold_reps, compiled=compiled[e.name])
            warm = warm_masks(e, fresh(), seqs, words, passes)
            r[e.name] = {
                "compile_ms": comp,
                "cold_p50_us": pct(cold, 50), "cold_p99_us": pct(cold, 99), "cold_max_us": max(cold),
                "warm_p50_us": pct(warm, 50), "warm_p99_us": pct(warm, 99),
            }
            gc.collect()
        print(f"{name}: {len(seqs)} sequences, {ntok} tokens, {ntok + len(seqs)} masks per pass", file=sys.stderr)
    gc.enable()

    names = [e.name for e in engines]
    print("| regex | engine | compile ms | cold mask p50 / p99 us | warm mask p50 / p99 us |")
    print("|---|---|---:|---:|---:|")
    for rx, r in results.items():
        for n in names:
            x = r[n]
            cold = "= warm (precomputed)" if n == "outlines-core" else f"{x['cold_p50_us']:.1f} / {x['cold_p99_us']:.1f}"
            print(f"| {rx} | {n} | {x['compile_ms']:.2f} | {cold} | {x['warm_p50_us']:.2f} / {x['warm_p99_us']:.2f} |")

    if "tokensieve" in names and len(names) > 1:
        print()
        print("Geometric mean over regexes of (engine / tokensieve); > 1 means tokensieve is faster:")
        print()
        print("| engine | compile | cold mask p50 | cold mask p99 | warm mask p50 | warm mask p99 |")
        print("|---|---:|---:|---:|---:|---:|")
        for n in names:
            if n == "tokensieve":
                continue
            cols = []
            for key in ("compile_ms", "cold_p50_us", "cold_p99_us", "warm_p50_us", "warm_p99_us"):
                if n == "outlines-core" and key.startswith("cold"):
                    key = key.replace("cold", "warm")
                cols.append(geomean([r[n][key] / r["tokensieve"][key] for r in results.values()]))
            print(f"| {n} / tokensieve | " + " | ".join(f"{c:.2f}x" for c in cols) + " |")

    if "tokensieve" in names and results:
        print()
        t = {rx: r["tokensieve"] for rx, r in results.items()}
        worst_warm = max(t.items(), key=lambda kv: kv[1]["warm_p50_us"])
        worst_warm99 = max(t.items(), key=lambda kv: kv[1]["warm_p99_us"])
        worst_cold = max(t.items(), key=lambda kv: kv[1]["cold_max_us"])
        print("Targets (tokensieve):")
        ok = worst_warm[1]["warm_p50_us"] <= TARGET_WARM_US
        print(f"- warm mask p50 <= {TARGET_WARM_US} us: {'MET' if ok else 'MISSED'} "
              f"(worst p50 {worst_warm[1]['warm_p50_us']:.2f} us on {worst_warm[0]}; "
              f"worst p99 {worst_warm99[1]['warm_p99_us']:.2f} us on {worst_warm99[0]})")
        ok = worst_cold[1]["cold_max_us"] <= TARGET_COLD_US
        print(f"- first mask of a new state <= {TARGET_COLD_US:.0f} us: {'MET' if ok else 'MISSED'} "
              f"(worst {worst_cold[1]['cold_max_us']:.0f} us on {worst_cold[0]})")
        if "outlines-core" in names:
            ratios = {rx: r["outlines-core"]["compile_ms"] / r["tokensieve"]["compile_ms"] for rx, r in results.items()}
            g = geomean(list(ratios.values()))
            lo = min(ratios.items(), key=lambda kv: kv[1])
            ok = lo[1] >= TARGET_COMPILE_RATIO
            print(f"- compile >= {TARGET_COMPILE_RATIO:.0f}x faster than outlines-core on every regex: "
                  f"{'MET' if ok else 'MISSED'} (geomean {g:.1f}x, lowest {lo[1]:.1f}x on {lo[0]})")

    print()
    if all_problems:
        print(f"Correctness: {len(all_problems)} problem(s), each judged against the `regex` module "
              "(partial full-match of the text so far plus the token):")
        for n in sorted({n for n, _ in all_problems}):
            print(f"- {n}: {sum(1 for m, _ in all_problems if m == n)}")
            for m, p in all_problems:
                if m == n:
                    print(f"  - {p}")
    else:
        print("Correctness: every engine accepts every sequence (EOS allowed at the end), "
              "and all masks agree bit for bit at every position.")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "problems": all_problems}, indent=1))
    # Peers' problems are reported, not failures; tokensieve's are.
    return 1 if any(n in ("tokensieve", "?") for n, _ in all_problems) else 0


if __name__ == "__main__":
    sys.exit(main())
