"""Grammar masks are exact: property tests against an independent reference.

For every test grammar (the Lark and GBNF fixtures in ``tests/grammars``, the
built-in ``ts.compile_json`` in both whitespace modes and with a small depth
bound, and a grammar with non-ASCII literals), on the GPT-2 and Llama 3
vocabularies, the bitmask written by ``Matcher.fill_next_token_bitmask`` must
equal the one computed by ``grammar_ref.RefMatcher`` -- a brute-force
recognizer that implements the documented lexing/parsing semantics without
tokensieve (see its docstring) -- at every state visited:

* random viable prefixes: a random (non-canonical) tokenization of a random
  prefix of a valid sample string, then random steps with tokens drawn from
  the matcher's own mask (hypothesis, derandomized, picks the sample, the
  prefix and a seed), comparing at each step;
* canonical tokenizations of valid sample strings (``tokenizers``, no special
  tokens), comparing at up to SAMPLE_CHECKS positions of each.

At each state the test also compares ``is_accepting``, ``is_terminated`` and
``forced_bytes`` with the reference, and checks that a rejected token leaves
the state unchanged; after each walk it checks ``rollback`` (every mask of the
walk is restored exactly) and ``copy`` independence.

The number of (grammar, state) comparisons is counted and printed by the last
test of this file (run with ``-s`` to see it).
"""

from __future__ import annotations

import collections
import functools
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
pytest.importorskip("regex")
pytest.importorskip("tokenizers")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as hst  # noqa: E402

import tokensieve as ts  # noqa: E402

import grammar_ref as R  # noqa: E402
from conftest import load_tokenizer_json, load_vocab, tokenizer_path  # noqa: E402

GRAMMARS_DIR = Path(__file__).resolve().parent / "grammars"
VOCABS = ("gpt2", "llama-3-8b-instruct")

#: (grammar case, state) comparisons made, per case name.
CASES: collections.Counter = collections.Counter()


# ---------------------------------------------------------------------------
# Test grammars


@dataclass(frozen=True)
class Case:
    name: str
    engine: Callable[[ts.Vocabulary], ts.Constraint]
    ref: Callable[[], R.RefGrammar]
    samples: Tuple[str, ...]


def _read(name: str) -> str:
    return (GRAMMARS_DIR / name).read_text(encoding="utf-8")


def _lark(fname: str, samples) -> Case:
    text = _read(fname)
    return Case(fname, lambda v: ts.compile_grammar(text, v), lambda: R.from_lark(text), tuple(samples))


def _gbnf(fname: str, samples) -> Case:
    text = _read(fname)
    return Case(fname, lambda v: ts.compile_grammar(text, v, syntax="gbnf"), lambda: R.from_gbnf(text), tuple(samples))


def _json(ws: str, depth: int, samples) -> Case:
    name = f"compile_json({ws},max_depth={depth})"
    return Case(name, lambda v: ts.compile_json(v, whitespace=ws, max_depth=depth), lambda: R.json_ref(ws, depth), tuple(samples))


JSON_SAMPLES = (
    '{"a": [1, -2.5e+3, true, null], "b": {"c": "x\\"y \\u00e9 é ☃"}}',
    " [ 0 , {} , [ ] ] ",
    '{"k": [[{"x": [true, false, null, -0.0, 1E+2]}], "\\ud83d\\ude00", "tab\\tnew\\nline"], "e": {}}',
)

# Non-ASCII literals and a non-ASCII class range (the reference's UTF-8
# handling: partial sequences must be judged by the characters they can
# still become).
GUILLEMETS = r"""
start: "«" item ("·" item)* "»"
item: WORD | ACCENTED
ACCENTED: /[à-ÿ]+/
%import common.WORD
%ignore " "
"""

# Lexing corners: a terminal that starts with an ignored character (" x" vs
# %ignore " "), literal prefixes ("a" / "ab"), keyword vs NAME, "=" then "=="
# (maximal munch only among the terminals expected).
CORNERS = r"""
start: stmt+
stmt: "a" | "ab" "c" | "if" NAME | NAME "=" "==" | SP_X | "x" "y"
NAME: /[a-z]+/
SP_X: " x"
%ignore " "
"""

# GBNF features the fixtures lack: ".", bounded/unbounded counted
# repetition, a negated class with a non-ASCII member, a non-ASCII literal.
MISC_GBNF = r"""root ::= line+
line ::= ( "say " quote | "raw:" .{1,3} "!" | [a-c]{2,} "." | "é"+ ) "\n"
quote ::= "\"" [^"\\\n\u00e9]* "\""
"""


def _inline(name: str, text: str, syntax: str, samples) -> Case:
    ref = R.from_lark if syntax == "lark" else R.from_gbnf
    return Case(name, lambda v: ts.compile_grammar(text, v, syntax=syntax), lambda: ref(text), tuple(samples))


CASES_LIST: List[Case] = [
    _lark("brackets.lark", ["", "([]{})", "{[()()]}[]", "(((([[[{{{}}}]]]))))()"]),
    _lark("arithmetic.lark", ["1 + 2 * (3 - x)", "-(a_1 / 2.5e3)", "foo*bar - -1", "((1 + 2) * (3 - -(4 / x2))) - 7.5e-3"]),
    _lark("json.lark", JSON_SAMPLES),
    _lark("sql.lark", [
        "SELECT name, COUNT(*) AS n FROM users AS u WHERE age >= 18 AND name LIKE 'A%' ORDER BY n DESC LIMIT 10;",
        "select distinct t.b from t where not x is not null or (y <> 'z')",
    ]),
    _lark("list.lark", ["1, two, 3.5,four", "a", "1,2 , 3.0e5,abc , de"]),
    _lark("nullable.lark", ["", "a x d e e d", "ax", "e"]),
    _json("flexible", 64, JSON_SAMPLES),
    _json("compact", 64, ('{"a":[1,2.5e-3,"x\\"y",true],"b":{"c":null}}', '"é"')),
    _json("flexible", 3, ('[[[1]], {"a": [2]}]', "3")),
    _gbnf("json.gbnf", ['{"a": [1, 2.5], "b": "x\\ny"}', "{}", '{"a": {"b": [true, null, {"c": -1.5e3}]}, "d": "\\u00e9"}']),
    _gbnf("arithmetic.gbnf", ["1+2= 3\n", "(a1 *b)=x\n(2)/3=4\n"]),
    _gbnf("list.gbnf", ["- item one\n- é ☃ two\n"]),
    _gbnf("chess.gbnf", ["1. e4 e5\n2. Nf3 Nc6\n3. Bb5 a6\n"]),
    _inline("guillemets.lark", GUILLEMETS, "lark", ("«abc · éèà»", "«ÿ·x»")),
    _inline("corners.lark", CORNERS, "lark", (" x ab c", "abc=== x", "x y x", "x===x===", "a  x")),
    _inline("misc.gbnf", MISC_GBNF, "gbnf", ('say "hi ☃"\nraw:☃ab!\nabcab.\néé\n', "raw:\n\n\n!\n")),
]
CASE_BY_NAME: Dict[str, Case] = {c.name: c for c in CASES_LIST}


def test_every_fixture_is_covered():
    files = sorted(p.name for p in GRAMMARS_DIR.iterdir() if p.suffix in (".lark", ".gbnf"))
    assert files, GRAMMARS_DIR
    missing = [f for f in files if f not in CASE_BY_NAME]
    assert not missing, f"fixtures without a mask test: {missing}"


# ---------------------------------------------------------------------------
# Shared, cached setup


@functools.lru_cache(maxsize=None)
def _env(vname: str):
    v = load_vocab(vname)
    rv = R.RefVocab(load_tokenizer_json(vname))
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path(vname)))
    eos = frozenset(v.eos_token_ids)
    assert eos <= rv.special
    return v, rv, tok, eos


@functools.lru_cache(maxsize=None)
def _compiled_cached(cname: str, vname: str):
    case = CASE_BY_NAME[cname]
    v = _env(vname)[0]
    return case.engine(v), R.RefMatcher(case.ref())


def _compiled(cname: str, vname: str):
    try:
        return _compiled_cached(cname, vname)
    except ModuleNotFoundError as e:  # the reference reads Lark grammars with the lark package's loader
        if e.name == "lark":
            pytest.skip("the lark package is needed for the Lark reference grammars")
        raise


def _env_or_skip(vname: str):
    tokenizer_path(vname)  # skips when the shared tokenizer is missing
    return _env(vname)


def _engine_mask(m: ts.Matcher, vsize: int) -> np.ndarray:
    bm = ts.allocate_token_bitmask(1, vsize)
    m.fill_next_token_bitmask(bm)
    return bm[0].copy()


def _ids(mask: np.ndarray, vsize: int) -> List[int]:
    bits = np.unpackbits(mask.view(np.uint8), bitorder="little")
    assert not bits[vsize:].any(), "bits set beyond the vocabulary"
    return np.nonzero(bits[:vsize])[0].tolist()


def _ref_forced(rm: R.RefMatcher, state) -> bytes:
    """Bytes every continuation shares: while the text cannot end and exactly
    one byte can follow, take it."""
    out = b""
    while len(out) < 4096 and not rm.accepts(state):
        nxt = [(b, s) for b in range(256) if (s := rm.push_byte(state, b)) is not None]
        if len(nxt) != 1:
            break
        out += bytes((nxt[0][0],))
        state = nxt[0][1]
    return out


def _ref_terminated(rm: R.RefMatcher, state) -> bool:
    return all(rm.push_byte(state, b) is None for b in range(256))


def _describe(rv: R.RefVocab, ids) -> str:
    return ", ".join(f"{i}:{rv.bytes_of.get(i, b'<special>')!r}" for i in list(ids)[:12]) + (" ..." if len(ids) > 12 else "")


def _compare(cname: str, vname: str, m: ts.Matcher, state, consumed: List[int]) -> np.ndarray:
    """Compare everything at one state; returns the engine's mask row."""
    v, rv, _, eos = _env(vname)
    c, rm = _compiled(cname, vname)
    mask = _engine_mask(m, v.size)
    got = set(_ids(mask, v.size))
    want = set(rm.allowed_tokens(state, rv))
    acc = rm.accepts(state)
    if acc:
        want |= eos
    CASES[cname] += 1
    where = f"grammar {cname}, vocab {vname}, after tokens {consumed} = {b''.join(rv.bytes_of[t] for t in consumed)!r}"
    if got != want:
        extra, missing = sorted(got - want), sorted(want - got)
        pytest.fail(f"mask mismatch: {where}\n engine-only ({len(extra)}): {_describe(rv, extra)}\n reference-only ({len(missing)}): {_describe(rv, missing)}")
    assert m.is_accepting() == acc, where
    assert m.is_terminated() == _ref_terminated(rm, state), where
    assert m.forced_bytes() == _ref_forced(rm, state), where
    assert sorted(m.allowed_tokens()) == sorted(got), where
    return mask


def _check_rejection(cname, vname, m, mask, rng_token):
    """A disallowed token is refused and changes nothing."""
    v = _env(vname)[0]
    allowed = set(_ids(mask, v.size))
    if rng_token in allowed:
        return
    n = m.num_consumed
    assert not m.is_allowed(rng_token)
    assert m.consume_token(rng_token) is False
    assert m.num_consumed == n
    assert np.array_equal(_engine_mask(m, v.size), mask)


def _check_history(cname, vname, m: ts.Matcher, tokens: List[int], masks: List[np.ndarray]):
    """rollback restores every earlier mask exactly; copies are independent."""
    v = _env(vname)[0]
    # copy(): the copy replays the same masks; advancing the original does
    # not move the copy and vice versa.
    if tokens:
        half = len(tokens) // 2
        m2 = ts.Matcher(_compiled(cname, vname)[0])
        assert m2.consume_tokens(tokens[:half]) == half
        cp = m2.copy()
        assert np.array_equal(_engine_mask(cp, v.size), masks[half])
        assert m2.consume_tokens(tokens[half:]) == len(tokens) - half
        assert np.array_equal(_engine_mask(cp, v.size), masks[half])
        assert cp.num_consumed == half
        assert cp.consume_tokens(tokens[half:]) == len(tokens) - half
        assert np.array_equal(_engine_mask(cp, v.size), _engine_mask(m2, v.size))
    # rollback(): one token at a time, then all at once after a replay.
    for k in range(len(tokens), 0, -1):
        m.rollback(1)
        assert m.num_consumed == k - 1
        assert np.array_equal(_engine_mask(m, v.size), masks[k - 1]), f"rollback to {k - 1} tokens: {cname} {vname} {tokens}"
    assert m.consume_tokens(tokens) == len(tokens)
    m.rollback(len(tokens))
    assert np.array_equal(_engine_mask(m, v.size), masks[0])
    m.reset()
    assert np.array_equal(_engine_mask(m, v.size), masks[0])


def _finish_with_eos(cname, vname, m: ts.Matcher, state, mask):
    """If EOS is allowed, consume it: only EOS is allowed afterwards (never an
    all-zero row), and rolling it back restores the mask."""
    v, _, _, eos = _env(vname)
    c, rm = _compiled(cname, vname)
    if not rm.accepts(state):
        assert not any(m.is_allowed(e) for e in eos)
        return
    e = min(eos)
    assert m.consume_token(e)
    assert m.is_terminated() and m.is_accepting()
    assert _ids(_engine_mask(m, v.size), v.size) == sorted(eos)
    assert m.allowed_tokens() == sorted(eos)
    m.rollback(1)
    assert np.array_equal(_engine_mask(m, v.size), mask)


# ---------------------------------------------------------------------------
# Random viable prefixes


WALK_STEPS = 7
#: Walks per (grammar, vocabulary); raise it for a longer bug hunt, e.g.
#: ``TOKENSIEVE_GRAMMAR_WALKS=30 pytest tests/test_grammar_masks.py -k gpt2``.
WALKS = int(os.environ.get("TOKENSIEVE_GRAMMAR_WALKS", "3"))


@functools.lru_cache(maxsize=None)
def _ids_by_bytes(vname: str) -> Dict[bytes, int]:
    return {b: i for i, b in _env(vname)[1].bytes_of.items()}


def _on_road(vname: str, target: bytes, pos: int) -> List[int]:
    """Tokens whose bytes are a prefix of ``target[pos:]`` (any tokenization
    of a valid text is viable)."""
    rev = _ids_by_bytes(vname)
    out = []
    for n in range(1, min(64, len(target) - pos) + 1):
        t = rev.get(target[pos:pos + n])
        if t is not None:
            out.append(t)
    return out


@pytest.mark.parametrize("vname", VOCABS)
@pytest.mark.parametrize("cname", list(CASE_BY_NAME))
@settings(max_examples=WALKS, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=hst.data())
def test_random_walk_masks(cname, vname, data):
    """A random (non-canonical) tokenization of a random prefix of a sample,
    then WALK_STEPS random steps comparing at each: tokens drawn from the
    engine's own mask -- short ones, ones continuing the sample, or any."""
    v, rv, _, eos = _env_or_skip(vname)
    c, rm = _compiled(cname, vname)
    case = CASE_BY_NAME[cname]
    target = data.draw(hst.sampled_from(case.samples), label="sample").encode("utf-8")
    cut = data.draw(hst.integers(0, len(target)), label="follow bytes")
    rnd = random.Random(data.draw(hst.integers(0, 2**32 - 1), label="seed"))
    m = ts.Matcher(c)
    state = rm.initial()
    tokens: List[int] = []
    masks = []
    pos = 0
    while pos < cut:  # on the road: no reference masks, engine masks for the history checks
        masks.append(_engine_mask(m, v.size))
        t = rnd.choice(_on_road(vname, target, pos))
        assert m.consume_token(t), (cname, vname, tokens + [t])
        state = rm.push_bytes(state, rv.bytes_of[t])
        assert state is not None, (cname, vname, tokens + [t])
        tokens.append(t)
        pos += len(rv.bytes_of[t])
    for _ in range(WALK_STEPS):
        mask = _compare(cname, vname, m, state, tokens)
        masks.append(mask)
        choices = [t for t in _ids(mask, v.size) if t not in eos]
        _check_rejection(cname, vname, m, mask, rnd.randrange(v.size))
        if not choices:
            break
        r = rnd.random()
        on_road = [t for t in _on_road(vname, target, pos) if t in set(choices)] if pos < len(target) else []
        short = [t for t in choices if len(rv.bytes_of[t]) <= 2]
        if r < 0.3 and on_road:
            t = rnd.choice(on_road)
            pos += len(rv.bytes_of[t])
        else:
            t = rnd.choice(short if r < 0.65 and short else choices)
            pos = len(target)  # off the road for good
        assert m.consume_token(t)
        state = rm.push_bytes(state, rv.bytes_of[t])
        assert state is not None
        tokens.append(t)
    else:
        masks.append(_compare(cname, vname, m, state, tokens))
    _finish_with_eos(cname, vname, m, state, masks[-1])
    _check_history(cname, vname, m, tokens, masks)


# ---------------------------------------------------------------------------
# Tokenizations of valid sample strings

SAMPLE_CHECKS = 12


@pytest.mark.parametrize("vname", VOCABS)
@pytest.mark.parametrize("cname", list(CASE_BY_NAME))
def test_sample_tokenizations(cname, vname):
    v, rv, tok, eos = _env_or_skip(vname)
    c, rm = _compiled(cname, vname)
    case = CASE_BY_NAME[cname]
    for text in case.samples:
        assert rm.accepts_text(text), f"sample not in the reference language: {text!r}"
        ids = tok.encode(text, add_special_tokens=False).ids
        assert b"".join(rv.bytes_of[t] for t in ids) == text.encode("utf-8")
        m = ts.Matcher(c)
        state = rm.initial()
        masks = []
        # Reference masks at up to SAMPLE_CHECKS evenly spaced positions (the
        # first and the last included); the engine's masks at all of them.
        step = max(1, -(-len(ids) // SAMPLE_CHECKS))
        for k, t in enumerate(ids):
            if k % step == 0:
                masks.append(_compare(cname, vname, m, state, ids[:k]))
            else:
                masks.append(_engine_mask(m, v.size))
            assert m.consume_token(t), (cname, text, ids[:k + 1])
            state = rm.push_bytes(state, rv.bytes_of[t])
        masks.append(_compare(cname, vname, m, state, ids))
        assert m.is_accepting(), (cname, text)
        _finish_with_eos(cname, vname, m, state, masks[-1])
        _check_history(cname, vname, m, ids, masks)


# ---------------------------------------------------------------------------
# Matcher behaviour on grammars


FORCED = r"""
start: "{\"name\": \"" NAME "\"}"
NAME: /[a-z]+/
"""


def _tokens_for(vname: str, text: str) -> List[int]:
    return _env_or_skip(vname)[2].encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("vname", VOCABS)
def test_forced_bytes(vname):
    v = _env_or_skip(vname)[0]
    c = ts.compile_grammar(FORCED, v)
    m = ts.Matcher(c)
    assert m.forced_bytes() == b'{"name": "'
    assert not m.is_accepting() and not m.is_terminated()
    # Drive byte-exactly through the forced prefix, then into the name.
    ids = _tokens_for(vname, '{"name": "bob')
    for k, t in enumerate(ids):
        assert m.consume_token(t)
    assert m.forced_bytes() == b""  # more letters or the closing quote
    ids2 = _tokens_for(vname, '"')
    assert m.consume_tokens(ids2) == len(ids2)
    assert m.forced_bytes() == b"}"
    ids3 = _tokens_for(vname, "}")
    assert m.consume_tokens(ids3) == len(ids3)
    assert m.forced_bytes() == b"" and m.is_accepting() and m.is_terminated()
    # Inside the forced literal, the rest of it is forced.
    m.reset()
    part = [t for t in _tokens_for(vname, '{"na')]
    if m.consume_tokens(part) == len(part):
        assert m.forced_bytes() == b'me": "'


@pytest.mark.parametrize("vname", VOCABS)
def test_rollback_copy_and_flags(vname):
    v, rv, tok, eos = _env_or_skip(vname)
    c = ts.compile_json(v)
    ids = tok.encode('{"a": [1, 2], "b": "x"}', add_special_tokens=False).ids
    m = ts.Matcher(c)
    masks = [_engine_mask(m, v.size)]
    flags = [(m.is_accepting(), m.is_terminated())]
    for t in ids:
        assert m.consume_token(t)
        masks.append(_engine_mask(m, v.size))
        flags.append((m.is_accepting(), m.is_terminated()))
    assert flags[-1] == (True, False)  # trailing whitespace may follow
    assert not any(a for a, _ in flags[:-1])
    e = min(eos)
    assert m.consume_token(e) and m.is_terminated() and m.num_consumed == len(ids) + 1
    assert not m.consume_token(ids[0])
    m.rollback(3)  # EOS counts as one
    assert m.num_consumed == len(ids) - 2
    assert np.array_equal(_engine_mask(m, v.size), masks[len(ids) - 2])
    assert (m.is_accepting(), m.is_terminated()) == flags[len(ids) - 2]
    with pytest.raises(ValueError):
        m.rollback(len(ids))
    cp = m.copy()
    m.rollback(len(ids) - 2)
    assert np.array_equal(_engine_mask(m, v.size), masks[0])
    assert np.array_equal(_engine_mask(cp, v.size), masks[len(ids) - 2])
    assert cp.consume_tokens(ids[len(ids) - 2:]) == 2 and cp.is_accepting()
    assert np.array_equal(_engine_mask(m, v.size), masks[0])
    # compact JSON: a complete value is terminated (nothing may follow)
    mc = ts.Matcher(ts.compile_json(v, whitespace="compact"))
    ids = tok.encode('{"a":1}', add_special_tokens=False).ids
    assert mc.consume_tokens(ids) == len(ids)
    assert mc.is_accepting() and mc.is_terminated()
    assert _ids(_engine_mask(mc, v.size), v.size) == sorted(eos)


IGNORE_VS_EXPECTED = 'start: "a" " " "b" | "a"\n%ignore " "\n'
CASE_BY_NAME["ignore_vs_expected.lark"] = _inline("ignore_vs_expected.lark", IGNORE_VS_EXPECTED, "lark", ("a", "a b", "a  "))


def test_ignore_vs_expected_at_end():
    """A lexeme matching both an expected terminal and an %ignore one is the
    expected terminal -- also when deciding whether the text may end.
    Regression: push_byte did this, is_accepting did not: after "a " it
    allowed EOS, although "a " continues only with "b" and "a  " (two
    spaces) is not accepted. Reproducer (GPT-2): tokens 64 "a", 220 " ";
    engine mask has EOS 50256, the reference does not."""
    cname, vname = "ignore_vs_expected.lark", "gpt2"
    v, rv, _, _ = _env_or_skip(vname)
    c, rm = _compiled(cname, vname)
    ids = _ids_by_bytes(vname)
    m = ts.Matcher(c)
    state = rm.initial()
    tokens = []
    for piece in (b"a", b" "):
        _compare(cname, vname, m, state, tokens)
        assert m.consume_token(ids[piece])
        state = rm.push_bytes(state, piece)
        tokens.append(ids[piece])
    assert rm.accepts(state) is False
    assert rm.accepts(rm.push_bytes(state, b" ")) is False
    _compare(cname, vname, m, state, tokens)  # fails: EOS allowed by the engine only


# ---------------------------------------------------------------------------


def test_zz_report_case_counts():
    """Prints how many (grammar, state) masks were compared (run with -s)."""
    total = sum(CASES.values())
    print(f"\n[grammar masks] {total} (grammar, state) comparisons over {len(CASES)} grammars:")
    for name, n in sorted(CASES.items()):
        print(f"  {name}: {n}")
