"""One meaning for an EOS id: end of sequence, even when the tokenizer also
gives it a spelling (``Vocabulary(token_bytes=[b"a", b"b"], eos_token_ids=[0])``,
or GPT-2 loaded with a custom EOS id). The mask, ``is_allowed`` and
``consume_token`` must agree on it at every state."""

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
