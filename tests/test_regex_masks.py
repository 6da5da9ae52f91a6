"""Regex masks are exact: property tests against an independent reference.

For random regexes and random reachable states, the bitmask written by
``Matcher.fill_next_token_bitmask`` must equal a brute-force reference
computed with the Python ``regex`` package's partial matching and nothing
from tokensieve but the vocabulary's token bytes:

* token ``t`` is allowed iff ``regex.fullmatch(pattern, text + token_text,
  partial=True)`` is not None (some continuation of the text + token is a
  full match), with the UTF-8 rule below for byte strings that are not whole
  characters;
* EOS is allowed iff ``regex.fullmatch(pattern, text)`` (the text so far is a
  full match);
* special tokens are never allowed.

UTF-8 rule (exact). Let ``B = text_bytes + token_bytes``.

* ``B`` valid UTF-8: partial fullmatch on ``B.decode()``.
* ``B`` = valid head + an incomplete but so-far valid sequence ``tail`` (1-3
  bytes of a 2-4 byte character): allowed iff SOME character ``c`` whose
  encoding starts with ``tail`` makes ``head + c`` a partial match. Any
  continuation of ``B`` must first complete that character, so this is
  exactly "some continuation of ``B`` can still match". The generated regexes
  only tell non-ASCII characters apart when they occur literally in the
  pattern (``.``, negated classes and ``(?s:.)`` treat all other non-ASCII
  characters alike, and positive classes are ASCII or list literals), so it
  suffices to try every literal of the pattern with that prefix plus ONE
  representative valid scalar value (not a surrogate) with that prefix that is
  not a literal of the pattern: if any non-literal ``c`` works, the
  representative works too, by the same match.
* anything else (a stray continuation byte, an invalid lead byte, an overlong
  or surrogate prefix such as ``ED A0``) can never become valid: not allowed.

Speed (the reference must cover ~150k tokens per state). The same argument
extends to ASCII: two characters that every atom of the pattern (literal,
class, ``.``) accepts or rejects alike are interchangeable in any match. So
per regex each token's text is mapped to a canonical text (each character
replaced by the first character of its equivalence class) and tokens with the
same canonical text share one ``regex`` call. Canonical texts are walked in
sorted order and every text extending a known dead prefix is skipped (if
``text + p`` cannot be completed, neither can ``text + p + q``). Every state
also spot-checks a sample of tokens with the plain, uncanonicalised rule, so
the shortcut itself is tested.

Regex generator: a small AST rendered to a pattern that means the same thing
to Rust's ``regex`` crate and to Python's ``regex`` module (version 0). It
deliberately avoids constructs on which they differ or that the DFA does not
support:

* ``\\d``, ``\\w``, ``\\s``, ``\\p{..}``: Unicode tables (and their versions)
  differ; explicit ASCII classes like ``[a-z0-9_]`` are used instead;
* ``\\b``, ``^``, ``$``, look-around, back-references: anchors/look-around are
  meaningless or unsupported under full-match DFA semantics (``a$b`` is empty
  in Rust), back-references don't exist in Rust;
* case-insensitive flags: Rust uses simple case folding, ``regex`` can use full
  folding (``(?f)``), and they disagree on characters like the Kelvin sign;
* lazy/possessive quantifiers, atomic groups: same language or unsupported;
* class set operations ``&&``, ``--``, ``~~`` and nested ``[``: Rust syntax
  only; ``&``, ``~``, ``-``, ``[``, ``]``, ``^`` and ``\\`` are always
  escaped inside classes;
* ``{,n}``: Python only; ``\\<``/``\\>``: word boundaries in Rust;
* an unbounded repetition inside a repetition of variable count
  (``(?:a+){1,3}``, ``(?:a*)+``): legal in both, but the reference, a
  backtracking engine, takes exponential time on failing texts; the inner
  one is rendered bounded (``{m,m+2}``) instead.

Ambiguous alternations under a repetition (``(?:a|ab|b)*``) can still make the
reference exponential in the text length. Each state's reference runs under a
time limit (SIGALRM); a walk that hits it ends there, is not counted, and the
number of such walks is reported and bounded.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import re
import signal
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pytest

import tokensieve as ts
from conftest import load_vocab

regex = pytest.importorskip("regex")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

VOCABS = ("gpt2", "llama-3-8b-instruct", "mistral-7b-v0.1")

# Hypothesis examples (regexes) per vocabulary; each walks 5-20 states.
# TOKENSIEVE_MASK_EXAMPLES scales it (e.g. for a longer soak run).
EXAMPLES = int(os.environ.get("TOKENSIEVE_MASK_EXAMPLES", "150"))
MIN_CASES = EXAMPLES * 6  # ~10 states per regex on average; fail if far fewer
SPOT_CHECKS = 24  # tokens per state re-checked with the uncanonicalised rule

# ---------------------------------------------------------------------------
# Non-ASCII characters the generator may put in a pattern. é/ñ/ü share the
# lead byte C3, 日/本 share E6, 🦊/😀 share F0 9F: tokens ending inside one of
# them are ambiguous until the next byte.
NON_ASCII_POOL = "éñü日本€🦊😀"
# Stand-in for every other non-ASCII character (never in a pattern).
OTHER = "Ж"
_OTHER_RE = re.compile("[^\x00-\x7f" + NON_ASCII_POOL + "]")

CASES: Counter = Counter()  # (regex, state) pairs compared, per vocabulary
SLOW: Counter = Counter()  # walks cut short because the reference was too slow
STATE_TIME_LIMIT = 2.0  # seconds of reference work per state


class ReferenceTooSlow(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    """Interrupt pure-Python/`regex` work after ``seconds`` (main thread, POSIX)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):
        raise ReferenceTooSlow()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------


def _utf8_len(lead: int) -> int:
    """Length of the sequence a lead byte starts (0: not a valid lead byte)."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def split_incomplete(b: bytes):
    """``(head_str, tail_bytes)`` if ``b`` is valid UTF-8 followed by an
    incomplete but so-far well-formed sequence; ``None`` if ``b`` is invalid.
    (Only called when ``b.decode()`` failed.)"""
    j = len(b)
    while j > 0 and len(b) - j < 3 and 0x80 <= b[j - 1] <= 0xBF:
        j -= 1
    lead_pos = j - 1
    if lead_pos < 0:
        return None
    n = _utf8_len(b[lead_pos])
    if n < 2 or len(b) - lead_pos >= n:
        return None
    try:
        head = b[:lead_pos].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return head, b[lead_pos:]


@functools.lru_cache(maxsize=None)
def completions(tail: bytes, literals: frozenset) -> tuple:
    """Characters to try after an incomplete ``tail``: the pattern's literals
    with that prefix, plus one valid non-literal scalar with that prefix."""
    n = _utf8_len(tail[0])
    out = [c for c in sorted(literals) if c.encode("utf-8").startswith(tail)]
    # Code points whose encoding starts with `tail`: fill the rest with
    # continuation bytes 0x80..0xBF; intersect with the valid range.
    lo_b = tail + b"\x80" * (n - len(tail))
    hi_b = tail + b"\xbf" * (n - len(tail))

    def raw_cp(bs):
        cp = bs[0] & (0x7F >> n)
        for x in bs[1:]:
            cp = (cp << 6) | (x & 0x3F)
        return cp

    lo, hi = raw_cp(lo_b), raw_cp(hi_b)
    lo = max(lo, {2: 0x80, 3: 0x800, 4: 0x10000}[n])
    hi = min(hi, {2: 0x7FF, 3: 0xFFFF, 4: 0x10FFFF}[n])
    cp = lo
    while cp <= hi:
        if 0xD800 <= cp <= 0xDFFF:
            cp = 0xE000
            continue
        c = chr(cp)
        if c not in literals:
            enc = c.encode("utf-8")
            assert enc.startswith(tail) and len(enc) == n
            out.append(c)
            break
        cp += 1
    return tuple(out)


def _sig_atoms(node, out):
    """Atom patterns (literals, classes, dots) of an AST."""
    kind = node[0]
    if kind in ("lit", "cls", "dot"):
        out.add(render(node)[0])
    elif kind in ("cat", "alt"):
        for ch in node[1]:
            _sig_atoms(ch, out)
    elif kind in ("rep", "grp"):
        _sig_atoms(node[1], out)
    return out


@dataclass
class VocabRef:
    """Per-vocabulary data for the reference (computed once)."""

    name: str
    vocab: ts.Vocabulary
    size: int = 0
    tok: list = field(default_factory=list)  # token bytes
    eos: tuple = ()
    valid_ids: np.ndarray = None  # non-special tokens that are whole UTF-8
    pre_idx: np.ndarray = None  # index into pre_uniq per valid id
    pre_uniq: list = None  # distinct pre-reduced texts (UTF-8 bytes)
    partial_ids: list = None  # non-special tokens that are not valid UTF-8
    non_special: np.ndarray = None

    def __post_init__(self):
        v = self.vocab
        self.size = v.size
        self.tok = [v.token_bytes(i) for i in range(self.size)]
        self.eos = tuple(v.eos_token_ids)
        valid, pre, partial = [], [], []
        index = {}
        non_special = []
        for i, b in enumerate(self.tok):
            if v.is_special(i):
                assert b == b""
                continue
            assert b != b""
            non_special.append(i)
            try:
                s = b.decode("utf-8")
            except UnicodeDecodeError:
                partial.append(i)
                continue
            p = _OTHER_RE.sub(OTHER, s).encode("utf-8")
            valid.append(i)
            pre.append(index.setdefault(p, len(index)))
        self.valid_ids = np.array(valid, dtype=np.int64)
        self.pre_idx = np.array(pre, dtype=np.int64)
        self.pre_uniq = list(index)
        self.partial_ids = partial
        self.non_special = np.array(non_special, dtype=np.int64)


@functools.lru_cache(maxsize=None)
def vocab_ref(name: str) -> VocabRef:
    return VocabRef(name, load_vocab(name))


class RegexRef:
    """Reference masks of one pattern over one vocabulary."""

    def __init__(self, pattern: str, atoms, vr: VocabRef):
        self.pattern = pattern
        self.vr = vr
        self.rx = regex.compile(pattern)
        self.literals = frozenset(c for c in pattern if ord(c) > 0x7F)
        assert self.literals <= set(NON_ASCII_POOL), pattern
        atoms = sorted(atoms)
        atom_rx = [regex.compile(a) for a in atoms]

        def sig(c):
            return tuple(r.fullmatch(c) is not None for r in atom_rx)

        # Non-literal non-ASCII characters are indistinguishable (see module doc).
        other_sig = sig(OTHER)
        for c in ("\u00a0", "Ω", "ж", "中", "\ufffd", "\U0001f600" if "😀" not in self.literals else "\U0001f601", "\U0010fffd"):
            assert sig(c) == other_sig, (pattern, c)
        # ASCII: map each character to the first one with the same signature.
        first = {}
        table = bytearray(range(256))
        for b in range(128):
            table[b] = first.setdefault(sig(chr(b)), b)
        self.table = bytes(table)
        # Canonical texts of the whole-UTF-8 tokens, deduplicated.
        canon = [p.translate(self.table) for p in vr.pre_uniq]
        gindex = {}
        gid_of_pre = np.array([gindex.setdefault(c, len(gindex)) for c in canon], dtype=np.int64)
        self.groups = list(gindex)  # canonical bytes per group
        self.token_gid = gid_of_pre[vr.pre_idx]  # per valid id
        order = sorted(range(len(self.groups)), key=self.groups.__getitem__)
        self.sorted_groups = [self.groups[g] for g in order]
        self.sorted_gid = np.array(order, dtype=np.int64)

    # -- the rule ----------------------------------------------------------

    def canon(self, s: str) -> str:
        return _OTHER_RE.sub(OTHER, s).encode("utf-8").translate(self.table).decode("utf-8")

    def pf(self, s: str) -> bool:
        return self.rx.fullmatch(s, partial=True) is not None

    def allowed_bytes(self, b: bytes, canonical: bool = True) -> bool:
        """The exact rule for ``B = text + token``; ``canonical=False`` uses the
        raw text (the plain rule, for spot checks)."""
        f = self.canon if canonical else (lambda s: s)
        try:
            return self.pf(f(b.decode("utf-8")))
        except UnicodeDecodeError:
            pass
        split = split_incomplete(b)
        if split is None:
            return False
        head, tail = split
        h = f(head)
        return any(self.pf(h + f(c)) for c in completions(tail, self.literals))

    def eos_allowed(self, text: bytes) -> bool:
        try:
            s = text.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return self.rx.fullmatch(s) is not None

    # -- whole masks -------------------------------------------------------

    def mask(self, text: bytes) -> np.ndarray:
        vr = self.vr
        out = np.zeros(vr.size, dtype=bool)
        try:
            ct = self.canon(text.decode("utf-8"))
            complete = True
        except UnicodeDecodeError:
            complete = False
        if complete:
            gres = np.zeros(len(self.groups), dtype=bool)
            first_alive = {}
            dead = None
            for k, g in enumerate(self.sorted_groups):
                b0 = g[0]
                if b0 < 0x80:
                    a = first_alive.get(b0)
                    if a is None:
                        a = first_alive[b0] = self.pf(ct + chr(b0))
                    if not a:
                        continue
                if dead is not None and g.startswith(dead):
                    continue
                if self.pf(ct + g.decode("utf-8")):
                    gres[self.sorted_gid[k]] = True
                else:
                    dead = g
            out[vr.valid_ids] = gres[self.token_gid]
        # else: every whole-UTF-8 token starts with a non-continuation byte,
        # which cannot follow an incomplete character: none is allowed.
        for t in vr.partial_ids:
            out[t] = self.allowed_bytes(text + vr.tok[t])
        for e in vr.eos:
            out[e] = self.eos_allowed(text)
        return out


# ---------------------------------------------------------------------------
# Random regexes
# ---------------------------------------------------------------------------

_ESCAPE_OUTSIDE = set("\\.+*?()[]{}|^$")
_ESCAPE_IN_CLASS = set("\\]][^-&~")
_NAMED = {"\n": "\\n", "\t": "\\t"}


def _lit(c: str, in_class: bool = False) -> str:
    if c in _NAMED:
        return _NAMED[c]
    if c in (_ESCAPE_IN_CLASS if in_class else _ESCAPE_OUTSIDE):
        return "\\" + c
    return c


def render(node, in_variable_rep: bool = False):
    """``(pattern, kind)``; kind: 'atom', 'rep', 'cat' or 'alt'.

    ``in_variable_rep``: inside a repetition with a variable count, where an
    unbounded repetition is rendered bounded (see the module doc)."""
    kind = node[0]
    r = functools.partial(render, in_variable_rep=in_variable_rep)
    if kind == "lit":
        return _lit(node[1]), "atom"
    if kind == "dot":
        return node[1], "atom"
    if kind == "cls":
        _, items, negated = node
        body = "".join(i if len(i) == 3 and i[1] == "-" else _lit(i, True) for i in items)
        return "[" + ("^" if negated else "") + body + "]", "atom"
    if kind == "grp":
        inner, _ = r(node[1])
        return ("(" if node[2] else "(?:") + inner + ")", "atom"
    if kind == "cat":
        parts = []
        for ch in node[1]:
            s, k = r(ch)
            parts.append("(?:" + s + ")" if k == "alt" else s)
        return "".join(parts), "cat"
    if kind == "alt":
        return "|".join(r(ch)[0] for ch in node[1]), "alt"
    if kind == "rep":
        _, child, lo, hi = node
        if hi is None and in_variable_rep:
            hi = lo + 2  # see module doc: no unbounded inside a variable repetition
        s, k = render(child, in_variable_rep or lo != hi)
        if k != "atom":
            s = "(?:" + s + ")"
        q = {(0, None): "*", (1, None): "+", (0, 1): "?"}.get((lo, hi))
        if q is None:
            q = "{%d}" % lo if lo == hi else "{%d,}" % lo if hi is None else "{%d,%d}" % (lo, hi)
        return s + q, "rep"
    raise AssertionError(node)


_ASCII_LITS = list("abcxyz019 ,:;\"'@/_=#&~%!<>-") + list(".+*?()[]{}|^$\\") + ["\n", "\t"]
_CLASS_CHARS = list("abcxyz0129 ._-,:@\"'\\]^&~[\n\t") + list("éñ日🦊")
_NAMED_CLASSES = [
    (("a-z",), False),
    (("a-z", "0-9", "_"), False),
    (("0-9",), False),
    (("A-Z", "a-f"), False),
    (("a", "b", "c"), True),
    (("0-9",), True),
    (("a-z", " "), True),
    (("\n",), True),
    ((" ", "\t"), False),
    (('"', "\\"), True),
]

lit_st = st.one_of(
    st.sampled_from(list("abcxyz ")),  # frequent, overlapping with classes
    st.sampled_from(_ASCII_LITS),
    st.sampled_from(list(NON_ASCII_POOL)),
).map(lambda c: ("lit", c))
cls_st = st.one_of(
    st.sampled_from(_NAMED_CLASSES),
    st.tuples(st.lists(st.sampled_from(_CLASS_CHARS), min_size=1, max_size=4, unique=True).map(tuple), st.booleans()),
).map(lambda x: ("cls", x[0], x[1]))
dot_st = st.sampled_from([("dot", "."), ("dot", "(?s:.)")])
leaf_st = st.one_of(lit_st, lit_st, cls_st, dot_st)
quant_st = st.sampled_from([(0, None), (1, None), (0, 1), (2, 2), (0, 2), (1, 3), (2, None), (3, 3)])


def _extend(children):
    return st.one_of(
        st.lists(children, min_size=2, max_size=4).map(lambda xs: ("cat", tuple(xs))),
        st.lists(children, min_size=2, max_size=3).map(lambda xs: ("alt", tuple(xs))),
        st.tuples(children, quant_st).map(lambda x: ("rep", x[0], x[1][0], x[1][1])),
        st.tuples(children, st.booleans()).map(lambda x: ("grp", x[0], x[1])),
    )


_sub_st = st.recursive(leaf_st, _extend, max_leaves=6)
# Top level: a concatenation of 1-4 random parts, often repeated as a whole,
# so that walks are long and pass through many states.
ast_st = st.tuples(st.lists(_sub_st, min_size=1, max_size=4), st.sampled_from([None, None, (1, None), (0, None), (1, 3)])).map(
    lambda x: ("cat", tuple(x[0])) if x[1] is None else ("rep", ("grp", ("cat", tuple(x[0])), False), x[1][0], x[1][1])
)


# ---------------------------------------------------------------------------
# Comparison along a walk
# ---------------------------------------------------------------------------


def rust_mask(m: ts.Matcher, bm: np.ndarray, size: int) -> np.ndarray:
    bm.fill(-1)  # make sure every word is written
    m.fill_next_token_bitmask(bm)
    bits = np.unpackbits(bm.view(np.uint8), bitorder="little").astype(bool)
    assert not bits[size:].any()  # bits past the vocabulary in the last word stay clear
    return bits[:size]


def _describe(vr: VocabRef, rr: RegexRef, text: bytes, path, got, want) -> str:
    bad = np.flatnonzero(got != want)
    lines = [
        f"vocab={vr.name} pattern={rr.pattern!r}",
        f"text={text!r} path={path}",
        f"{len(bad)} mismatching tokens; first ones (id, bytes, rust, reference):",
    ]
    for t in bad[:12]:
        lines.append(f"  {int(t)} {vr.tok[t]!r} rust={bool(got[t])} ref={bool(want[t])}")
    return "\n".join(lines)


def check_state(vr: VocabRef, rr: RegexRef, m: ts.Matcher, bm, text: bytes, path, rng: random.Random, limit=None):
    got = rust_mask(m, bm, vr.size)
    # Spot check the canonicalised reference against the plain rule.
    sample = [int(vr.non_special[rng.randrange(len(vr.non_special))]) for _ in range(SPOT_CHECKS // 2)]
    sample += rng.sample(vr.partial_ids, min(4, len(vr.partial_ids)))
    with time_limit(limit) if limit else contextlib.nullcontext():
        want = rr.mask(text)
        allowed = np.flatnonzero(want)
        sample += [int(allowed[rng.randrange(len(allowed))]) for _ in range(SPOT_CHECKS // 2) if len(allowed)]
        plain = {t: rr.allowed_bytes(text + vr.tok[t], canonical=False) for t in sample if t not in vr.eos}
        eos_ok = rr.eos_allowed(text)
    if not np.array_equal(got, want):
        raise AssertionError(_describe(vr, rr, text, path, got, want))
    for t, p in plain.items():
        assert p == want[t], ("canonical reference != plain rule", rr.pattern, text, t, vr.tok[t], p)
        assert m.is_allowed(t) == p
    assert m.is_accepting() == eos_ok
    CASES[vr.name] += 1
    return got


def walk(vr: VocabRef, rr: RegexRef, m: ts.Matcher, choose, n_steps: int, rng: random.Random):
    """Compare masks along a path of ``n_steps`` tokens picked by ``choose``."""
    bm = ts.allocate_token_bitmask(1, vr.size)
    eos = np.zeros(vr.size, dtype=bool)
    eos[list(vr.eos)] = True
    text = b""
    path = []
    for _ in range(n_steps):
        try:
            got = check_state(vr, rr, m, bm, text, path, rng, limit=STATE_TIME_LIMIT)
        except ReferenceTooSlow:
            SLOW[vr.name] += 1
            break
        cand = np.flatnonzero(got & ~eos)
        if len(cand) == 0:
            break
        t = choose(cand, rr)
        assert m.consume_token(t)
        path.append(t)
        text += vr.tok[t]
    return text, path


def _group_uniform_choice(vr: VocabRef, draw_index):
    """Pick an allowed token: first a canonical class of tokens uniformly,
    then a token in it (so rare but meaningful tokens like "@" get picked,
    not only the thousands of letter tokens)."""

    def choose(cand, rr):
        key = {}
        gid = np.full(vr.size, -1, dtype=np.int64)
        gid[vr.valid_ids] = rr.token_gid
        for t in cand.tolist():
            g = gid[t]
            key.setdefault(("g", g) if g >= 0 else ("t", t), []).append(t)
        classes = sorted(key.values())
        members = classes[draw_index(len(classes))]
        return members[draw_index(len(members))]

    return choose


# ---------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------


def _property(name: str):
    vr = vocab_ref(name)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(ast=ast_st, data=st.data())
    def prop(ast, data):
        pattern, _ = render(ast)
        atoms = _sig_atoms(ast, set())
        c = ts.compile_regex(pattern, vr.vocab)
        rr = RegexRef(pattern, atoms, vr)
        m = ts.Matcher(c)
        n_steps = data.draw(st.integers(5, 20), label="steps")
        seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
        rng = random.Random(seed)
        choose = _group_uniform_choice(vr, lambda n: data.draw(st.integers(0, n - 1)))
        walk(vr, rr, m, choose, n_steps, rng)

    before, slow_before = CASES[name], SLOW[name]
    t0 = time.monotonic()
    prop()
    n, slow = CASES[name] - before, SLOW[name] - slow_before
    print(
        f"\n{name}: {n} (regex, state) mask cases checked, 0 mismatches, in {time.monotonic() - t0:.1f} s; "
        f"{slow} walks cut short by the reference time limit"
    )
    assert n >= MIN_CASES
    assert slow <= EXAMPLES // 10


@pytest.mark.parametrize("name", VOCABS)
def test_random_regex_masks_exact(name):
    _property(name)


# ---------------------------------------------------------------------------
# Deterministic regression tests
# ---------------------------------------------------------------------------


def _compare_along(name: str, pattern: str, target: str, atoms):
    """Drive the matcher along ``target`` (longest allowed token at each step),
    comparing masks with the reference at every state. ``atoms``: every
    literal/class of the pattern, as the reference's canonicalisation needs."""
    vr = vocab_ref(name)
    rr = RegexRef(pattern, atoms, vr)
    m = ts.Matcher(ts.compile_regex(pattern, vr.vocab))
    bm = ts.allocate_token_bitmask(1, vr.size)
    rng = random.Random(0)
    goal = target.encode("utf-8")
    text = b""
    by_len = sorted(range(vr.size), key=lambda t: -len(vr.tok[t]))
    while True:
        got = check_state(vr, rr, m, bm, text, [], rng)
        if text == goal:
            break
        rest = goal[len(text):]
        t = next(t for t in by_len if got[t] and vr.tok[t] and rest.startswith(vr.tok[t]))
        assert m.consume_token(t)
        text += vr.tok[t]
    return m, vr, rr


@pytest.mark.parametrize("name", VOCABS)
def test_date(name):
    m, vr, rr = _compare_along(name, "[0-9]{4}-[0-9]{2}-[0-9]{2}", "2024-01-15", atoms={"[0-9]", "-"})
    assert m.is_accepting() and m.is_terminated()
    assert m.allowed_tokens() == list(vr.eos)
    assert m.consume_token(vr.eos[0]) and m.allowed_tokens() == list(vr.eos)  # EOS again, never nothing


@pytest.mark.parametrize("name", VOCABS)
def test_email(name):
    pattern = r"[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}"
    atoms = {"[a-z0-9._%+-]", "@", "[a-z0-9.-]", r"\.", "[a-z]"}
    m, vr, rr = _compare_along(name, pattern, "john.doe+x@example.com", atoms=atoms)
    assert m.is_accepting() and not m.is_terminated()


@pytest.mark.parametrize("name", VOCABS)
def test_a_or_ab(name):
    vr = vocab_ref(name)
    ids = {b: i for i, b in reversed(list(enumerate(vr.tok)))}
    m, _, _ = _compare_along(name, "a|ab", "a", atoms={"a", "b"})
    allowed = set(m.allowed_tokens())
    assert ids[b"b"] in allowed and set(vr.eos) <= allowed
    assert allowed == {i for i, b in enumerate(vr.tok) if b == b"b"} | set(vr.eos)
    m.reset()
    start = set(m.allowed_tokens())
    assert start == {i for i, b in enumerate(vr.tok) if b in (b"a", b"ab")}
    _compare_along(name, "a|ab", "ab", atoms={"a", "b"})


@pytest.mark.parametrize("name", VOCABS)
def test_unicode_literal_cafe(name):
    m, vr, rr = _compare_along(name, "café", "café", atoms=set("café"))
    assert m.is_accepting()
    # Byte by byte through the é: C3 alone is a live prefix, then only A9.
    m = ts.Matcher(ts.compile_regex("café", vr.vocab))
    ids = {b: i for i, b in reversed(list(enumerate(vr.tok)))}
    if all(bytes([x]) in ids for x in b"caf\xc3\xa9"):
        for x in b"caf\xc3":
            assert m.consume_token(ids[bytes([x])])
        assert m.allowed_tokens() == [i for i, b in enumerate(vr.tok) if b == b"\xa9"]
        assert not m.is_allowed(ids[b"\xb1"])  # C3 B1 is ñ
        assert m.consume_token(ids[b"\xa9"]) and m.is_accepting()


def _is_utf8_prefix(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return split_incomplete(b) is not None


@pytest.mark.parametrize("name", VOCABS)
def test_dot_star_allows_every_token(name):
    vr = vocab_ref(name)
    m = ts.Matcher(ts.compile_regex(r"(?s:.*)", vr.vocab))
    bm = ts.allocate_token_bitmask(1, vr.size)
    got = rust_mask(m, bm, vr.size)
    # Every non-special token whose bytes can begin valid UTF-8 (i.e. all
    # but lone continuation bytes and the like), plus EOS.
    want = np.zeros(vr.size, dtype=bool)
    for t in vr.non_special.tolist():
        want[t] = _is_utf8_prefix(vr.tok[t])
    want[list(vr.eos)] = True
    assert np.array_equal(got, want)
    assert want.sum() > 0.97 * len(vr.non_special)
    rr = RegexRef(r"(?s:.*)", {"(?s:.)"}, vr)
    assert np.array_equal(rr.mask(b""), want)
    # After a lead byte only continuation tokens fit.
    lead = next(i for i, b in enumerate(vr.tok) if b == b"\xe6")
    assert m.consume_token(lead)
    got = rust_mask(m, bm, vr.size)
    assert np.array_equal(got, rr.mask(b"\xe6"))
    assert got.sum() > 0 and all(0x80 <= vr.tok[t][0] <= 0xBF for t in np.flatnonzero(got))


def test_reference_utf8_rule():
    """The reference's UTF-8 handling on hand-made cases."""
    assert split_incomplete(b"ab\xc3") == ("ab", b"\xc3")
    assert split_incomplete(b"\xf0\x9f\xa6") == ("", b"\xf0\x9f\xa6")
    assert split_incomplete(b"\xa9") is None  # stray continuation
    assert split_incomplete(b"\xc0") is None  # invalid lead
    assert split_incomplete(b"\xc3\xa9\xa9") is None
    assert split_incomplete(b"\xff\xc3") is None  # invalid head
    lits = frozenset("é")
    assert completions(b"\xc3", lits)[0] == "é" and len(completions(b"\xc3", lits)) == 2
    assert completions(b"\xed\xa0", frozenset()) == ()  # surrogate range
    assert completions(b"\xe0\x80", frozenset()) == ()  # overlong
    assert completions(b"\xf4\x90", frozenset()) == ()  # > U+10FFFF
    assert completions(b"\xf0\x9f", frozenset())[0].encode().startswith(b"\xf0\x9f")
