"""What a token id means at the API: an EOS id is end of sequence, even when
the tokenizer also gives it a spelling (``Vocabulary(token_bytes=[b"a", b"b"],
eos_token_ids=[0])``, or GPT-2 loaded with a custom EOS id), and the mask,
``is_allowed`` and ``consume_token`` agree on it at every state; ids and
sizes are integers (numpy's included), never bools."""

from __future__ import annotations

from typing import List

import pytest

import tokensieve as ts
from conftest import load_vocab

SPELLED_EOS = ts.Vocabulary(token_bytes=[b"a", b"b", b"ab"], eos_token_ids=[0])


def _agree(c: ts.Constraint, prefixes: List[List[int]]) -> None:
    for prefix in prefixes:
        m = ts.Matcher(c)
        if m.consume_tokens(prefix) != len(prefix):
            continue
        allowed = set(m.allowed_tokens())
        for t in range(c.vocab_size):
            probe = m.copy()
            assert (t in allowed) == probe.is_allowed(t), (prefix, t)
            assert (t in allowed) == probe.consume_token(t), (prefix, t)
        assert (0 in allowed) == m.is_accepting(), prefix


@pytest.mark.parametrize(
    "make",
    [
        lambda v: ts.compile_regex("a", v),
        lambda v: ts.compile_regex("(ab)*", v),
        lambda v: ts.compile_regex("b|a", v),
        lambda v: ts.compile_grammar('start: "a" "b"?', v),
        lambda v: ts.compile_grammar('root ::= "a"* "b"', v, syntax="gbnf"),
    ],
)
def test_spelled_eos_id_means_end_of_sequence_everywhere(make) -> None:
    c = make(SPELLED_EOS)
    _agree(c, [[], [1], [2], [1, 1], [2, 2], [2, 1]])


def test_gpt2_with_a_text_token_as_eos() -> None:
    v0 = load_vocab("gpt2")
    a = next(t for t in range(v0.size) if v0.token_bytes(t) == b"a")
    from conftest import tokenizer_path

    v = ts.Vocabulary.from_tokenizer_file(tokenizer_path("gpt2"), eos_token_ids=[a])
    m = ts.Matcher(ts.compile_regex("a+", v))
    assert a not in m.allowed_tokens() and not m.is_allowed(a)
    aa = next(t for t in range(v.size) if v.token_bytes(t) == b"aa")
    assert m.consume_token(aa)
    assert a in m.allowed_tokens() and m.is_allowed(a) and m.consume_token(a)
    assert m.eos_consumed


def test_token_ids_and_sizes_take_integers_not_bools() -> None:
    """``consume_token(True)`` is a bug in the caller, not token 1; numpy
    integers are integers (``allocate_token_bitmask(np.int64(2), V)``)."""
    import numpy as np

    m = ts.Matcher(ts.compile_regex("b", SPELLED_EOS))
    for bad in (True, False, np.bool_(True)):
        with pytest.raises(TypeError, match="int"):
            m.consume_token(bad)
        with pytest.raises(TypeError, match="int"):
            m.is_allowed(bad)
    assert m.consume_token(np.int64(1))
    bm = ts.allocate_token_bitmask(np.int64(2), np.int32(40))
    assert bm.shape == (2, 2) and bm.dtype == np.int32
    with pytest.raises(TypeError, match="batch_size"):
        ts.allocate_token_bitmask(True, 40)
    with pytest.raises(TypeError, match="vocab_size"):
        ts.allocate_token_bitmask(1, 40.0)
    with pytest.raises(ValueError, match="batch_size"):
        ts.allocate_token_bitmask(np.int64(0), 40)


def test_compile_json_depth_limit_is_the_documented_one() -> None:
    v = SPELLED_EOS
    ts.compile_json(v, max_depth=10_000)
    with pytest.raises(ValueError, match="limit 10000"):
        ts.compile_json(v, max_depth=10_001)


def test_reprs_read_as_python() -> None:
    import ast

    c = ts.compile_regex("b", SPELLED_EOS)
    m = ts.Matcher(c)
    for obj in (SPELLED_EOS, c, m):
        call = ast.parse(repr(obj), mode="eval").body
        assert isinstance(call, ast.Call), repr(obj)
        for kw in call.keywords:
            ast.literal_eval(kw.value)  # every field is a Python literal
    assert "accepting=False" in repr(m)
