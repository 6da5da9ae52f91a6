"""A fuzz campaign of random and hostile input against every door of
tokensieve: regexes, Lark and GBNF grammars, token ids, bitmask shapes and
dtypes, resampling inputs, AWRS draws with odd accept callbacks, logits
masking and mutated tokenizer.json files. Run by tests/test_fuzz.py in a subprocess (so a crash is a failed
test, not a dead test run); also runnable by hand::

    python tests/fuzz_campaign.py --scale 1.0

Pass criteria: no crash (the process survives), no panic (pyo3's
PanicException, or any exception other than the documented TypeError /
ValueError / IndexError / OverflowError / MemoryError), no hang (every
call returns within HANG_GUARD_S; a guard, not a benchmark). Seeds are
fixed (hypothesis ``derandomize``) so a failure reproduces. Prints one
line per category and the total number of generated inputs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from typing import Any, Callable, Dict, List

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokensieve as ts
from tokensieve import _core, resample

HANG_GUARD_S = 20.0
CLEAN = (TypeError, ValueError, IndexError, OverflowError, MemoryError)
COUNTS: Dict[str, int] = {}

TINY = ts.Vocabulary(
    token_bytes=[bytes([i]) for i in range(1, 128)] + [b"ab", b"\xc3\xa9", b"\xe2\x82", b"  ", None],
    eos_token_ids=[131],
)


def guarded(category: str, fn: Callable[[], Any]) -> Any:
    """Call ``fn``: a clean exception is fine, anything else (a panic) or a
    call past the hang guard fails the campaign."""
    COUNTS[category] = COUNTS.get(category, 0) + 1
    t = time.perf_counter()
    try:
        return fn()
    except CLEAN:
        return None
    finally:
        took = time.perf_counter() - t
        if took > HANG_GUARD_S:
            raise AssertionError(f"{category}: a call took {took:.1f} s")


def run(test: Callable[[], None], examples: int) -> None:
    settings(
        max_examples=max(1, examples),
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )(test)()


# ------------------------------------------------------------------ regexes

REGEX_ATOMS = ["a", "b", "é", ".", "\\d", "\\w", "\\s", "\\b", "(?-u:\\b)", "[a-z]", "[^a]", "\\x00", "\\", "(", ")",
               "|", "*", "+", "?", "??", "{2}", "{1,3}", "{1000}", "{,", "[", "]", "^", "$", "(?i)", "(?:", "\\p{L}", "\\u00e9"]
regexes = st.lists(st.sampled_from(REGEX_ATOMS), max_size=12).map("".join) | st.text(max_size=12)


def exercise_matcher(category: str, c: Any, tokens: List[int]) -> None:
    m = ts.Matcher(c)
    bm = ts.allocate_token_bitmask(2, c.vocab_size)
    for t in tokens:
        guarded(category, lambda: m.fill_next_token_bitmask(bm, 1))
        guarded(category, lambda: m.is_allowed(t))
        guarded(category, lambda: m.consume_token(t))
    guarded(category, lambda: m.rollback(len(tokens)))
    guarded(category, m.forced_tokens)


@given(st.lists(regexes, min_size=8, max_size=8), st.lists(st.integers(-2, 140), max_size=4))
def fuzz_regex(patterns: List[str], tokens: List[int]) -> None:
    for p in patterns:
        c = guarded("regex", lambda: ts.compile_regex(p, TINY, max_states=2000))
        if c is not None:
            exercise_matcher("regex", c, tokens)


# ------------------------------------------------------------------ grammars

LARK_ATOMS = ["start", ":", "a", "b", "\"x\"", "\"\"", "/[0-9]+/", "/(/", "|", "*", "+", "?", "(", ")", "[", "]", "\n",
              "%ignore", "%import common.WS", "A", "B", ":", "->", "~", "3", "..", "\"y\"i", "_x", "?a", "!b", "."]
GBNF_ATOMS = ["root", "::=", "a", "b", "\"x\"", "\"\"", "[0-9]", "[^a]", "[", "]", "|", "*", "+", "?", "(", ")", "\n",
              "{2}", "{1,}", "{,3}", "\\", "#", "\"\\u00e9\"", "ws", ".", "-"]


def lark_text(draw_atoms: List[str]) -> str:
    return "start: " + " ".join(draw_atoms)


@given(st.lists(st.lists(st.sampled_from(LARK_ATOMS), max_size=14), min_size=4, max_size=4),
       st.lists(st.lists(st.sampled_from(GBNF_ATOMS), max_size=14), min_size=4, max_size=4),
       st.lists(st.integers(0, 131), max_size=3))
def fuzz_grammar(lark: List[List[str]], gbnf: List[List[str]], tokens: List[int]) -> None:
    for atoms in lark:
        for text in (lark_text(atoms), " ".join(atoms)):
            c = guarded("lark", lambda: ts.compile_grammar(text, TINY))
            if c is not None:
                exercise_matcher("lark", c, tokens)
    for atoms in gbnf:
        for text in ("root ::= " + " ".join(atoms), " ".join(atoms)):
            c = guarded("gbnf", lambda: ts.compile_grammar(text, TINY, syntax="gbnf"))
            if c is not None:
                exercise_matcher("gbnf", c, tokens)


# ------------------------------------------------------------------ token ids

ODD_IDS = [True, False, np.bool_(True), 1.0, "1", None, b"1", 2**31, 2**32, 2**63, 2**64, -2**63, np.int8(3),
           np.uint64(2**63), np.int64(-1), np.float32(2), [1], object()]
token_ids = st.integers(-(2**70), 2**70) | st.integers(-3, 140) | st.sampled_from(ODD_IDS)
JSON = ts.compile_json(TINY)


@given(st.lists(token_ids, min_size=25, max_size=25))
def fuzz_token_ids(ids: List[Any]) -> None:
    m = ts.Matcher(JSON)
    for t in ids:
        guarded("token ids", lambda: m.consume_token(t))
        guarded("token ids", lambda: m.is_allowed(t))
        guarded("token ids", lambda: TINY.token_bytes(t))
        guarded("token ids", lambda: m.rollback(t))
    guarded("token ids", lambda: m.consume_tokens(ids))


# ------------------------------------------------------------------ bitmasks and logits

try:
    import torch as TORCH
except ImportError:  # numpy-only install: no tensor inputs
    TORCH = None

DTYPES = [np.int32, np.int64, np.uint32, np.int16, np.float32, np.float64, np.float16, bool, np.uint8]
W = -(-TINY.size // 32)


def odd_array(kind: int, shape: List[int], dtype: Any) -> Any:
    a = np.zeros(shape, dtype=dtype)
    if kind == 1:
        a.flags.writeable = False
    elif kind == 2 and a.ndim >= 1 and a.shape[-1] > 1:
        a = a[..., ::2]
    elif kind == 3:
        a = np.asfortranarray(a)
    elif kind == 4:
        a = np.frombuffer(bytes(a.nbytes + 1), dtype=np.uint8)[1:].view(np.uint8)  # misaligned bytes
    elif kind == 5:
        return a.tolist()
    elif kind >= 6 and TORCH is not None:  # torch tensors: dense, transposed, sparse, negated view, meta
        t = TORCH.from_numpy(a)
        if kind == 7 and t.dim() == 2:
            t = t.T
        elif kind == 8 and t.dim() >= 1 and t.dtype != TORCH.uint32:  # (no sparse uint32 in torch)
            t = t.to_sparse()
        elif kind == 9 and not t.dtype.is_floating_point and t.dtype != TORCH.bool:
            t = t._neg_view()
        elif kind == 10:
            t = t.to("meta")
        return t
    return a


shapes = st.lists(st.sampled_from([0, 1, 2, W - 1, W, W + 1, 3]), max_size=3)


@given(st.lists(st.tuples(st.integers(0, 10), shapes, st.sampled_from(DTYPES), st.integers(-3, 3)), min_size=10, max_size=10))
def fuzz_bitmasks(cases: List[Any]) -> None:
    m = ts.Matcher(JSON)
    for kind, shape, dtype, index in cases:
        bm = odd_array(kind, shape, dtype)
        guarded("bitmasks", lambda: m.fill_next_token_bitmask(bm, index))
        guarded("bitmasks", lambda: ts.fill_next_token_bitmasks([m, m.copy()], bm, [index, index + 1]))
        logits = odd_array(kind, shape[:-1] + [(shape[-1] if shape else 1) * 32], np.float32)
        guarded("bitmasks", lambda: ts.apply_token_bitmask_inplace(logits, bm))
        guarded("bitmasks", lambda: _core._apply_bitmask_cpu(logits, bm, "float32"))
        guarded("bitmasks", lambda: _core.masked_rows_into(logits, bm, np.empty(1), np.empty(1), np.empty((1, 1))))


# ------------------------------------------------------------------ resampling

floats = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.sampled_from([-np.inf, 0.0, -745.0, 709.0])
odd_n = st.none() | st.integers(-2, 2**70) | st.sampled_from([True, 1.5, np.int64(3), "3"])


@given(st.lists(st.tuples(st.lists(floats, max_size=40), odd_n, st.integers(0, 3), st.integers(0, 5)), min_size=5, max_size=5))
def fuzz_resampling(cases: List[Any]) -> None:
    kernels = [resample.systematic, resample.stratified, resample.residual, resample.multinomial]
    for lw, n, k, kind in cases:
        x = odd_array(0, [len(lw)], np.float64)
        x[:] = lw
        if kind == 1:
            x = x.astype(np.float32)
        elif kind == 2:
            x = x.reshape(1, -1)
        if isinstance(n, int) and not isinstance(n, bool) and n > 10**6:
            n = 2**62  # a huge request is a clean MemoryError/ValueError, not a 10**21-byte attempt
        guarded("resampling", lambda: kernels[k](x, n=n, seed=k))
        guarded("resampling", lambda: kernels[k](x, n=n, uniforms=[0.5] * (n if isinstance(n, int) and 0 < n < 50 else 1)))
        guarded("resampling", lambda: resample.ess(x))
        guarded("resampling", lambda: resample.log_normalize(x))
        guarded("resampling", lambda: _core.resample_into(k, x, np.empty(3, np.int64), 1))
        guarded("resampling", lambda: _core.Population(n if isinstance(n, int) else 3).add_log_weights(x))


# ------------------------------------------------------------------ AWRS (accept callbacks)

ACCEPTS: List[Any] = [
    lambda ids: [True] * len(ids),
    lambda ids: [False] * len(ids),
    lambda ids: [],
    lambda ids: None,
    lambda ids: ["x"] * len(ids),
    lambda ids: [True] * (len(ids) + 3),
    lambda ids: np.ones(len(ids), bool),
    3,
]
ROW_ACCEPTS: List[Any] = [lambda rows, ids: [True] * len(ids), lambda rows, ids: [[True]] * len(ids), lambda rows, ids: 0]


@given(st.lists(st.tuples(st.lists(floats, min_size=0, max_size=40), st.integers(0, 7), st.sampled_from(["awrs", "mask", "x"]),
                          st.integers(-1, 3), st.integers(0, 5), st.integers(0, 3)), min_size=4, max_size=4))
def fuzz_awrs(cases: List[Any]) -> None:
    for lw, a, sampler, max_calls, kind, rows in cases:
        x: Any = np.array(lw, np.float64)
        if kind == 1:
            x.flags.writeable = False
        elif kind == 2:
            x = x[::2]
        elif kind == 3:
            x = x.astype(np.float32)
        elif kind == 5:
            x = lw
        mask = None if kind % 2 else np.full(max(1, -(-len(lw) // 32)), -1 if kind < 3 else 0x55555555, np.int32)
        guarded("awrs", lambda: _core.awrs_sample(x, ACCEPTS[a], sampler=sampler, max_calls=max_calls, seed=a, mask=mask))
        guarded("awrs", lambda: _core.awrs_sample(x, ACCEPTS[a], max=0.0, cum=np.zeros(1), mask=mask, known={a: 0.5}))
        if rows and isinstance(x, np.ndarray) and x.size % rows == 0:
            x2 = x.reshape(rows, -1)
            m2 = None if mask is None else np.tile(mask[:1], (rows, max(1, -(-x2.shape[1] // 32))))
            guarded("awrs", lambda: _core.awrs_sample_rows(x2, ROW_ACCEPTS[a % 3], list(range(rows)), sampler=sampler,
                                                           max_calls=max_calls, mask=m2))


# ------------------------------------------------------------------ tokenizer.json

BASE = {
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3}, "merges": ["a b"]},
    "added_tokens": [{"id": 4, "content": "<|endoftext|>", "special": True}],
    "decoder": {"type": "ByteLevel"},
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
paths = st.lists(st.sampled_from(["model", "vocab", "added_tokens", "decoder", "type", "id", "content", "special",
                                  "normalizer", "pre_tokenizer", "a", 0, "merges"]), min_size=1, max_size=3)


def mutate(doc: Any, path: List[Any], value: Any) -> Any:
    doc = json.loads(json.dumps(doc))
    node = doc
    for key in path[:-1]:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            break
    if isinstance(node, dict):
        node[str(path[-1])] = value
    elif isinstance(node, list) and node:
        node[0] = value
    return doc


@given(st.lists(st.tuples(paths, json_values, st.integers(0, 200)), min_size=8, max_size=8))
def fuzz_tokenizer_json(cases: List[Any]) -> None:
    for path, value, cut in cases:
        text = json.dumps(mutate(BASE, path, value))
        guarded("tokenizer.json", lambda: ts.Vocabulary(text))
        guarded("tokenizer.json", lambda: ts.Vocabulary(text[:cut]))
        guarded("tokenizer.json", lambda: ts.Vocabulary(text, eos_token_ids=[cut], vocab_size=cut))


CATEGORIES = {
    "regex": (fuzz_regex, 300),
    "grammar": (fuzz_grammar, 300),
    "token ids": (fuzz_token_ids, 250),
    "bitmasks": (fuzz_bitmasks, 250),
    "resampling": (fuzz_resampling, 400),
    "awrs": (fuzz_awrs, 300),
    "tokenizer.json": (fuzz_tokenizer_json, 400),
}


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every category's number of examples")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    for name, (test, examples) in CATEGORIES.items():
        t = time.perf_counter()
        before = sum(COUNTS.values())
        run(test, int(examples * args.scale))
        print(f"{name:15s} {sum(COUNTS.values()) - before:8d} inputs  {time.perf_counter() - t:6.1f} s", flush=True)
    print(f"TOTAL {sum(COUNTS.values())} inputs in {time.perf_counter() - t0:.1f} s: no crash, panic or hang")
    return 0


if __name__ == "__main__":
    sys.exit(main())
