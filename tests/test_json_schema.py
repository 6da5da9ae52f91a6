"""compile_json_schema: the API, the accepted schema forms, token-level
acceptance of real instances with real tokenizers, strict/lax modes and
bad input. (The official test suite and the randomized differential test
live in test_json_schema_suite.py / test_json_schema_differential.py.)"""

from __future__ import annotations

import json
import warnings
from typing import Any, List, Optional

import pytest

import tokensieve as ts
from conftest import load_vocab, real_tokenizer, tokenizer_path

tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def llama():
    name = real_tokenizer("llama-3-8b-instruct")  # the shipped GPT-2 without ../shared
    return load_vocab(name), tokenizers.Tokenizer.from_file(str(tokenizer_path(name)))


def accepts(c: ts.Constraint, tok: Any, text: str) -> bool:
    m = ts.Matcher(c)
    for t in tok.encode(text, add_special_tokens=False).ids:
        if not m.consume_token(t):
            return False
    return m.is_accepting()


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}, "maxItems": 3},
        "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    "inst,ok",
    [
        ({"name": "Ada", "age": 36}, True),
        ({"name": "Ada", "age": 36, "email": "ada@example.com", "tags": ["a", "c"], "score": 0.25}, True),
        ({"name": "Zoë \"Z\" \n", "age": 0, "score": 1}, True),
        ({"name": "", "age": 36}, False),
        ({"name": "Ada", "age": 151}, False),
        ({"name": "Ada", "age": 36.5}, False),
        ({"name": "Ada"}, False),
        ({"name": "Ada", "age": 1, "tags": ["a", "b", "c", "a"]}, False),
        ({"name": "Ada", "age": 1, "score": 0}, False),
        ({"name": "Ada", "age": 1, "extra": 1}, False),
        ({"name": "Ada", "age": 1, "email": "not an email"}, False),
    ],
)
def test_person_instances(llama, inst, ok):
    vocab, tok = llama
    c = ts.compile_json_schema(PERSON, vocab)
    assert accepts(c, tok, json.dumps(inst, ensure_ascii=False)) is ok


def test_schema_forms(llama):
    vocab, tok = llama
    pydantic = pytest.importorskip("pydantic")

    class Point(pydantic.BaseModel):
        x: int
        y: float
        label: Optional[str] = None

    for schema in (Point, json.dumps(Point.model_json_schema()), Point.model_json_schema()):
        c = ts.compile_json_schema(schema, vocab)
        assert accepts(c, tok, '{"x": 1, "y": 2.5, "label": null}')
        assert accepts(c, tok, '{"x": 1, "y": 2}')
        assert not accepts(c, tok, '{"x": 1.5, "y": 2}')
    assert accepts(ts.compile_json_schema(True, vocab), tok, '[1, {"a": null}]')
    with pytest.raises(ValueError, match="no JSON value"):
        ts.compile_json_schema(False, vocab)


def test_whitespace_modes(llama):
    vocab, tok = llama
    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}}}}
    flexible = ts.compile_json_schema(schema, vocab)
    compact = ts.compile_json_schema(schema, vocab, whitespace="compact")
    dumps = ts.compile_json_schema(schema, vocab, separators=(", ", ": "))
    for text, f, c, d in [
        ('{"a": [1, 2]}', True, False, True),
        ('{"a":[1,2]}', True, True, False),
        ('\n{ "a" :\t[ 1 ,2 ] }\n', True, False, False),
    ]:
        assert (accepts(flexible, tok, text), accepts(compact, tok, text), accepts(dumps, tok, text)) == (f, c, d), text


def test_recursive_schema_masks_are_exact(llama):
    """Every token the mask allows is consumable, and vice versa, along a
    real instance of a recursive schema."""
    vocab, tok = llama
    schema = {
        "$defs": {
            "tree": {
                "type": "object",
                "properties": {"value": {"type": "integer"}, "children": {"type": "array", "items": {"$ref": "#/$defs/tree"}}},
                "required": ["value"],
                "additionalProperties": False,
            }
        },
        "$ref": "#/$defs/tree",
    }
    c = ts.compile_json_schema(schema, vocab)
    text = json.dumps({"value": 1, "children": [{"value": 2, "children": []}, {"value": 3}]})
    ids = tok.encode(text, add_special_tokens=False).ids
    m = ts.Matcher(c)
    bm = ts.allocate_token_bitmask(1, vocab.vocab_size)
    import numpy as np

    for step, t in enumerate(ids[:12]):
        m.fill_next_token_bitmask(bm)
        bits = np.unpackbits(bm[0].view(np.uint8), bitorder="little")[: vocab.vocab_size]
        allowed = set(np.flatnonzero(bits).tolist())
        # Brute force over a sample of tokens (every allowed one, and 2000 others).
        sample = sorted(allowed)[:2000] + list(range(step, vocab.vocab_size, 61))
        for cand in sample:
            mm = m.copy()
            assert mm.consume_token(cand) == (cand in allowed), (step, cand)
        assert m.consume_token(t)


def test_strict_and_lax(llama):
    vocab, _ = llama
    schema = {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}
    with pytest.raises(ValueError, match=r"uniqueItems.*#/uniqueItems"):
        ts.compile_json_schema(schema, vocab)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ts.compile_json_schema(schema, vocab, strict=False)
    assert [x.category for x in w] == [ts.JsonSchemaWarning]
    assert "uniqueItems" in str(w[0].message)


@pytest.mark.parametrize(
    "schema,match",
    [
        ("{not json", "not valid JSON"),
        ({"type": "string", "minLength": "a"}, "minLength"),
        ({"$ref": "#/$defs/nope"}, "nope"),
        ({"$ref": "#"}, "cycle"),
        ({"$ref": "https://example.com/schema.json"}, "remote"),
        ({"type": "string", "pattern": "(?<=a)b"}, "lookaround"),
        ({"type": "string", "pattern": r"(a)\1"}, "backreference"),
        ({"type": "number", "minimum": 5, "maximum": 1}, "no JSON value"),
        ({"enum": []}, "no JSON value"),
        ({"type": "strnig"}, "unknown type"),
        ([1, 2], "object or a boolean"),
    ],
)
def test_bad_schemas(llama, schema, match):
    vocab, _ = llama
    with pytest.raises((ValueError, TypeError), match=match):
        ts.compile_json_schema(schema if not isinstance(schema, list) else json.dumps(schema), vocab)


def test_bad_arguments(llama):
    vocab, _ = llama
    with pytest.raises(TypeError, match="schema"):
        ts.compile_json_schema(3.5, vocab)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="vocab"):
        ts.compile_json_schema({}, "gpt2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="whitespace"):
        ts.compile_json_schema({}, vocab, whitespace="loose")
    with pytest.raises(TypeError, match="separators"):
        ts.compile_json_schema({}, vocab, separators=(",",))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="max_depth"):
        ts.compile_json_schema({}, vocab, max_depth=True)
    with pytest.raises(ValueError, match="max_depth"):
        ts.compile_json_schema({}, vocab, max_depth=-1)
    with pytest.raises(ValueError, match="max_depth"):
        ts.compile_json_schema({}, vocab, max_depth=10**30)


@pytest.mark.parametrize(
    "schema,text,ok",
    [
        ({"type": "string", "maxLength": 100000}, json.dumps("x" * 3000), True),
        ({"type": "string", "minLength": 2000}, json.dumps("y" * 1999), False),
        ({"type": "array", "maxItems": 10000, "items": {"type": "integer"}}, json.dumps(list(range(300))), True),
        ({"type": "array", "items": {"type": "array", "minItems": 500}}, json.dumps([list(range(500))]), True),
        ({"type": "array", "items": {"type": "array", "minItems": 500}}, json.dumps([list(range(499))]), False),
        ({"enum": [f"value-{i}" for i in range(10000)]}, '"value-9999"', True),
        ({"enum": [f"value-{i}" for i in range(10000)]}, '"value-10000"', False),
    ],
)
def test_large_counts_are_bounded(llama, schema, text, ok):
    vocab, tok = llama
    assert accepts(ts.compile_json_schema(schema, vocab), tok, text) is ok


def test_long_strings_fall_back_to_chunks_where_the_lexer_grows_too_large(llama):
    """A long string's first 32 characters are counted in the lexer; where
    that makes the lexer too large (bower.json from MaskBench, beside many
    other strings and patterns) the schema still compiles, every string
    counted in chunks, and its valid instances are accepted."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "maskbench-dev" / "JsonSchemaStore---bower.json"
    if not path.exists():
        pytest.skip(f"{path} not found")
    vocab, tok = llama
    data = json.loads(path.read_text())
    c = ts.compile_json_schema(data["schema"], vocab)
    valid = [t["data"] for t in data["tests"] if t.get("valid", True)]
    assert valid
    for inst in valid:
        assert accepts(c, tok, json.dumps(inst, ensure_ascii=False))
