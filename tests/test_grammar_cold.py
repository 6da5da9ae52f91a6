"""Grammar engine corners found by fuzzing (issue 11): rules that can never
finish a text, and ambiguous grammars whose parser sets grow with the text.

Masks must stay exact: a token is allowed iff some complete text of the
language starts with the text so far plus the token. The per-mask cost of
these cases is measured in ``benches/pathological_grammars.py`` (never timed
here).
"""

from __future__ import annotations

import itertools
from typing import List

import pytest

import tokensieve as ts
from conftest import load_vocab

SMALL = [b"a", b"(", b"b", b")", b"ab", b"(b", b"x"]


def _small_vocab() -> ts.Vocabulary:
    return ts.Vocabulary(token_bytes=SMALL + [b"<eos>"], eos_token_ids=[len(SMALL)])


def _completes(c: ts.Constraint, prefix: List[int], depth: int) -> bool:
    """Some sequence of at most ``depth`` more tokens ends in an accepting state."""
    m = ts.Matcher(c)
    assert m.consume_tokens(prefix) == len(prefix)
    if m.is_accepting():
        return True
    if depth == 0:
        return False
    return any(_completes(c, prefix + [t], depth - 1) for t in m.allowed_tokens() if t < len(SMALL))


# (grammar, syntax, whether "(" starts some complete text)
UNPRODUCTIVE = [
    ('root ::= "a" | "(" r1\nr1 ::= r1\n', "gbnf", False),
    ('root ::= "a" | "(" r1\nr1 ::= "b" r1\n', "gbnf", False),
    ('root ::= "a" | "(" r1 | "(" "b" ")"\nr1 ::= "b" r1 | r1 "x"\n', "gbnf", True),
    ('start: "a" | "(" r1\nr1: r1\n', "lark", False),
    ('start: "a" | "(" r1\nr1: "b" r1\n', "lark", False),
]


@pytest.mark.parametrize("src,syntax,paren", UNPRODUCTIVE)
def test_unproductive_rules_are_pruned(src: str, syntax: str, paren: bool) -> None:
    c = ts.compile_grammar(src, _small_vocab(), syntax=syntax)
    # Brute force over every token sequence of up to three tokens: each
    # allowed token leads to some complete text (within four more tokens).
    frontier: List[List[int]] = [[]]
    for _ in range(3):
        nxt = []
        for prefix in frontier:
            m = ts.Matcher(c)
            m.consume_tokens(prefix)
            for t in m.allowed_tokens():
                if t >= len(SMALL):
                    continue
                assert _completes(c, prefix + [t], 4), (src, [SMALL[i] for i in prefix + [t]])
                nxt.append(prefix + [t])
        frontier = nxt
    start = ts.Matcher(c).allowed_tokens()
    assert (SMALL.index(b"(") in start) == paren
    assert SMALL.index(b"a") in start


@pytest.mark.parametrize(
    "src,syntax",
    [('root ::= r1\nr1 ::= "b" r1\n', "gbnf"), ("start: r1\nr1: r1 \"b\"\n", "lark")],
)
def test_unproductive_start_is_a_clear_error(src: str, syntax: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        ts.compile_grammar(src, _small_vocab(), syntax=syntax)


def _byte_token(v: ts.Vocabulary, b: bytes) -> int:
    return next(t for t in range(v.size) if v.token_bytes(t) == b)


def test_ambiguous_star_masks_stay_exact_after_320_bytes() -> None:
    """``root ::= (. .+)*`` accepts every text except one character: after
    two or more characters every continuation is viable, so the mask after
    320 bytes equals the mask after 2 (the sets grow with the text; the
    masks must not change)."""
    v = load_vocab("gpt2")
    c = ts.compile_grammar("root ::= (. .+)*", v, syntax="gbnf")
    x = _byte_token(v, b"x")
    m = ts.Matcher(c)
    masks = {}
    for i in range(1, 321):
        assert m.consume_token(x), i
        if i in (2, 3, 80, 320):
            masks[i] = m.allowed_tokens()
            assert m.is_accepting()
    assert masks[2] == masks[3] == masks[80] == masks[320]
    assert len(masks[320]) > v.size // 2


def test_lark_repeated_optional_is_not_ambiguous() -> None:
    """``["a"]~1..1000`` is ``"a"{0,1000}``: 1,000 a's are accepted (this
    used to exhaust the Earley set limit), the 1,001st is not."""
    v = load_vocab("gpt2")
    c = ts.compile_grammar('start: ["a"]~1..1000', v)
    a = _byte_token(v, b"a")
    m = ts.Matcher(c)
    assert m.is_accepting()
    for i in range(1000):
        assert m.consume_token(a), i
        if i % 250 == 0:
            assert a in m.allowed_tokens()
    assert m.is_accepting()
    assert a not in m.allowed_tokens()
    assert not m.consume_token(a)


@pytest.mark.parametrize(
    "src,texts_ok,texts_bad",
    [
        ('start: ["a"]~2..3 "b"', ["b", "ab", "aab", "aaab"], ["aaaab", "a"]),
        ('start: ("a"*)~2..3 "b"', ["b", "aaaaab"], ["ba"]),
        ('start: ["a" "c"]~1..2 "b"', ["b", "acb", "acacb"], ["acacacb", "ab"]),
    ],
)
def test_repeated_optional_language(src: str, texts_ok: List[str], texts_bad: List[str]) -> None:
    v = _text_vocab()
    c = ts.compile_grammar(src, v)
    for text in texts_ok + texts_bad:
        m = ts.Matcher(c)
        ok = m.consume_tokens([ord(ch) - ord("a") for ch in text]) == len(text) and m.is_accepting()
        assert ok == (text in texts_ok), (src, text)


def _text_vocab() -> ts.Vocabulary:
    return ts.Vocabulary(token_bytes=[bytes([ord("a") + i]) for i in range(26)] + [b"<eos>"], eos_token_ids=[26])


LAZY = [
    'start: STR ")"\nSTR: /".*?"/\n',
    'start: (C | W)+\nC: /\\/\\*(.|\\n)*?\\*\\//\nW: /[a-z ]+/\n',
    "start: X \"b\"\nX: /a+?/\n",
    # Only the lazy alternative ends at its first match (SynCode's JavaScript
    # COMMENT: /\/\/.*/ | /\/\*.*?\*\//s used to end `// it's` at `//`).
    'start: "a"+\nC: /#.*/ | /<.*?>/\n%ignore C\n',
]
ALPHABET = {LAZY[0]: '"a)', LAZY[1]: "/*a ", LAZY[2]: "ab", LAZY[3]: "a#<>b"}


@pytest.mark.parametrize("src", LAZY)
def test_lazy_terminals_end_at_their_first_match_as_in_lark(src: str) -> None:
    """A terminal with a lazy quantifier ends at its first complete match,
    as Lark's lexer (Python ``re``) does: ``/".*?"/`` then ``")"`` accepts
    ``"a")``. Every string up to length 6 over a small alphabet is accepted
    by tokensieve iff Lark parses it."""
    lark = pytest.importorskip("lark")
    parser = lark.Lark(src, parser="lalr")
    alphabet = ALPHABET[src]
    v = ts.Vocabulary(token_bytes=[c.encode() for c in alphabet] + [b"<eos>"], eos_token_ids=[len(alphabet)])
    c = ts.compile_grammar(src, v)
    disagreements = []
    for n in range(1, 7):
        for chars in itertools.product(range(len(alphabet)), repeat=n):
            text = "".join(alphabet[i] for i in chars)
            try:
                parser.parse(text)
                ok = True
            except lark.exceptions.LarkError:
                ok = False
            m = ts.Matcher(c)
            mine = m.consume_tokens(list(chars)) == n and m.is_accepting()
            if mine != ok:
                disagreements.append((text, ok))
    assert not disagreements, disagreements[:10]


def test_mask_cache_budget_bounds_memory_not_masks() -> None:
    """With no memory for memoised masks every mask is computed afresh; the
    masks along a real grammar's sample are the same as with the cache."""
    from conftest import tokenizer_path

    v = load_vocab("gpt2")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path("gpt2")))
    root = __import__("pathlib").Path(__file__).resolve().parents[1] / "benches" / "grammars"
    text = (root / "llamacpp-json_arr.gbnf").read_text(encoding="utf-8")
    sample = (root / "llamacpp-json_arr.1.txt").read_text(encoding="utf-8")
    doc = sample[: sample.index(",\n", 400)] + "]"
    ids = tok.encode(doc, add_special_tokens=False).ids
    cached = ts.Matcher(ts.compile_grammar(text, v, syntax="gbnf"))
    uncached = ts.Matcher(ts.compile_grammar(text, v, syntax="gbnf", mask_cache_bytes=0))
    for t in ids:
        assert cached.allowed_tokens() == uncached.allowed_tokens()
        assert cached.consume_token(t) and uncached.consume_token(t)
    assert cached.is_accepting() and uncached.is_accepting()
    with pytest.raises((OverflowError, TypeError, ValueError)):
        ts.compile_grammar(text, v, syntax="gbnf", mask_cache_bytes=-1)
