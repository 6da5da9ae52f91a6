"""Negations, overlapping ``oneOf`` and dependencies, exact against ``jsonschema``.

The compiler rewrites ``not`` (of ``type``, ``enum``/``const`` scalars,
``required``, length / count / numeric bounds, ``properties``, ``allOf``,
``anyOf``, ``oneOf``, ``not``, ``$ref``, ``additionalProperties``, ``items``,
simple ``pattern`` shapes), ``oneOf`` whose branches may
overlap (branch i and the negation of every other branch) and
``dependentRequired`` / ``dependentSchemas`` (trigger absent, or trigger
and dependents present) into unions of positive constraints. Hypothesis
draws schemas from those forms; each is checked on a fixed pool of
instances: the serialised instance is accepted **iff**
``jsonschema.Draft202012Validator`` says it is valid. Refusals
(``ValueError``) are allowed and counted, but most schemas must compile.

Key order: every schema lists ``a``, ``b``, ``c`` (in that order) in a
leading ``allOf``, and the object instances put their keys in that order
with the extra key ``z`` last, so every instance is in the compiler's key
order and the oracle's verdict is the expected one.
"""

from __future__ import annotations

import collections
import itertools
import json
import random
import re
from typing import Any, Dict, List

import pytest

hypothesis = pytest.importorskip("hypothesis")
jsonschema = pytest.importorskip("jsonschema")
tokenizers = pytest.importorskip("tokenizers")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import tokensieve as ts  # noqa: E402
from conftest import load_vocab, real_tokenizer, tokenizer_path  # noqa: E402

LLAMA3 = real_tokenizer("llama-3-8b-instruct")  # the shipped GPT-2 without ../shared
STATS: Dict[str, int] = collections.Counter()

LEAVES: List[Any] = [
    {},
    False,
    {"type": "string"},
    {"type": "integer"},
    {"type": ["null", "boolean"]},
    {"enum": [1, "x", None]},
    {"const": 2},
    {"not": {"const": "x"}},
    {"minLength": 2},
    {"maxLength": 1},
    {"minimum": 1},
    {"maximum": 0},
    {"exclusiveMinimum": 1.5},
    {"minItems": 1},
    {"maxItems": 1},
    {"required": ["a"]},
    {"required": ["a", "b"]},
    {"properties": {"a": {"type": "string"}}},
    {"properties": {"b": {"not": {"type": "null"}}, "c": {"maximum": 2}}},
    {"minProperties": 2},
    {"maxProperties": 1},
    {"type": "object", "required": ["b"]},
    {"not": {"type": "integer"}},
    {"not": {"required": ["c"]}},
    {"anyOf": [{"type": "string"}, {"minimum": 3}]},
    {"oneOf": [{"type": "string"}, {"maxLength": 1}]},
    {"allOf": [{"required": ["c"]}, {"maxProperties": 2}]},
    {"dependentRequired": {"a": ["c"]}},
    {"properties": {"a": {}, "b": {}}, "additionalProperties": False},
    {"properties": {"c": {}}, "additionalProperties": {"type": "integer"}},
    {"type": "object", "properties": {"b": {}}, "required": ["b"], "additionalProperties": False},
    {"pattern": "^[a-c]+$"},
    {"type": "string", "pattern": "^x"},
    {"items": {"type": "integer"}},
    {"type": "string", "minLength": 1, "not": {"pattern": "^[ab]+$"}},
]
leaf = st.sampled_from(LEAVES)


@st.composite
def schemas(draw) -> Dict[str, Any]:
    s: Dict[str, Any] = {"allOf": [{"properties": {k: draw(leaf) for k in "abc"}}]}
    for kw in draw(st.lists(st.sampled_from(["not", "oneOf", "dependentRequired", "dependentSchemas", "type", "additionalProperties"]), unique=True, min_size=1, max_size=3)):
        if kw == "not":
            s["not"] = draw(st.one_of(leaf, st.lists(leaf, min_size=2, max_size=3).map(lambda xs: {"allOf": xs}), st.lists(leaf, min_size=2, max_size=2).map(lambda xs: {"anyOf": xs})))
        elif kw == "oneOf":
            s["oneOf"] = draw(st.lists(leaf, min_size=2, max_size=3))
        elif kw == "dependentRequired":
            s["dependentRequired"] = draw(st.dictionaries(st.sampled_from("abc"), st.lists(st.sampled_from("abc"), max_size=2, unique=True), min_size=1, max_size=2))
        elif kw == "dependentSchemas":
            s["dependentSchemas"] = draw(st.dictionaries(st.sampled_from("abc"), leaf, min_size=1, max_size=2))
        elif kw == "type":
            s["type"] = draw(st.sampled_from(["object", ["object", "integer"], ["string", "number", "null"]]))
        else:
            s["additionalProperties"] = draw(st.sampled_from([False, {"type": "integer"}]))
    return s


def instances() -> List[Any]:
    """Scalars, arrays, and objects over every subset of a, b, c, z (keys in
    that order) with a few value assignments each."""
    r = random.Random(12)
    values = [None, True, 0, 2, 3, 2.5, -1, "", "x", "ab", "xa", [1], [1, "x"], {}]
    out: List[Any] = [None, True, False, 0, 1, 2, 3, 2.5, -1, "", "x", "ab", "abc", [], [1], [1, "x"]]
    for n in range(5):
        for keys in itertools.combinations("abcz", n):
            for _ in range(3 if keys else 1):
                out.append({k: r.choice(values) for k in keys})
    return out


INSTANCES = instances()


@pytest.fixture(scope="module")
def env():
    vocab = load_vocab(LLAMA3)
    tok = tokenizers.Tokenizer.from_file(str(tokenizer_path(LLAMA3)))
    texts = [json.dumps(v, ensure_ascii=False) for v in INSTANCES]
    ids = [tok.encode(t, add_special_tokens=False).ids for t in texts]
    yield vocab, texts, ids
    print(f"\nnegation differential: {dict(STATS)}")


def accepts(c: ts.Constraint, ids: List[int]) -> bool:
    m = ts.Matcher(c)
    for t in ids:
        if not m.consume_token(t):
            return False
    return m.is_accepting()


@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(schemas())
def test_rewritten_forms_match_oracle(env, schema):
    vocab, texts, ids = env
    try:
        c = ts.compile_json_schema(schema, vocab)
    except ValueError as e:
        if "admits no JSON value" in str(e):
            valid = [v for v in INSTANCES if jsonschema.Draft202012Validator(schema).is_valid(v)]
            assert not valid, f"refused as unsatisfiable, but {valid[0]!r} is valid for {json.dumps(schema)}"
            STATS["empty"] += 1
        else:
            STATS["refused"] += 1
        return
    STATS["compiled"] += 1
    oracle = jsonschema.Draft202012Validator(schema)
    for v, text, toks in zip(INSTANCES, texts, ids):
        want = oracle.is_valid(v)
        assert accepts(c, toks) == want, f"{'rejected valid' if want else 'accepted invalid'} {text} for {json.dumps(schema)}"


def test_most_schemas_compile(env):
    """Runs after the random test: the forms above are meant to compile."""
    if STATS["compiled"] + STATS["refused"] == 0:
        pytest.skip("the random test did not run")
    assert STATS["compiled"] >= 3 * STATS["refused"], dict(STATS)


#: Patterns whose complement the compiler builds (fixed prefix; prefix and
#: one final repetition, anchored; unanchored class), and two it refuses.
KEY_PATTERNS = [
    "^x-", "^_", "^[a-z_]+$", "^[a-zA-Z0-9._-]+$", "^[a-z][a-z0-9_]*$", "^[0-9a-z]*$", "^[a-z]{2}$",
    "^abc.+$", "^test_[a-z_]+$", "^[0-9a-zA-Z_-]{1,5}$", "\\w+", "[a-zA-Z0-9_-]", ".{1,}", "^\\d+$", "^a.c",
]
KEYS_POOL = [
    "", "a", "b", "ab", "abc", "abcd", "x", "x-", "x-y", "y-x", "X-", "_", "_a", "a_", "a_b", "A1", "a1", "9", "99", "12345", "123456",
    "é", "aé", "a b", "\n", "a\nb", "\"", "x\\", "test_", "test_a", "test_A", "aa", "aaa", "a.c", "azc", "-", "a-b", "1a", "🦊",
]


@pytest.mark.parametrize("pattern", KEY_PATTERNS)
@pytest.mark.parametrize("additional", [None, {"type": "boolean"}])
def test_additional_properties_beside_one_pattern(env, pattern, additional):
    """``additionalProperties`` (absent or a schema) next to one
    ``patternProperties`` entry: keys matching the pattern take its schema,
    the others (listed names excepted) take additionalProperties; listed
    names take their own schema and the pattern's if it matches. Keys with
    non-ASCII characters, ``\\n`` or ``\\r`` may be refused when they do not
    match the pattern (ECMA-262 and Python's ``re`` disagree there)."""
    vocab, _, _ = env
    tok = tokenizers.Tokenizer.from_file(str(tokenizer_path(LLAMA3)))
    props = {"a": {"type": "string"}, "x-": {"type": "null"}, "é": {"type": "string"}}
    schema: Dict[str, Any] = {"type": "object", "properties": props, "patternProperties": {pattern: {"type": "integer"}}}
    if additional is not None:
        schema["additionalProperties"] = additional
    try:
        c = ts.compile_json_schema(schema, vocab)
    except ValueError as e:
        # "é" against \w, \d, \s: Python's re and ECMA-262 disagree.
        assert "differs between ECMA-262 and Python" in str(e) and re.search(r"\\[wds]", pattern), e
        return
    oracle = jsonschema.Draft202012Validator(schema)
    for key in KEYS_POOL:
        for value in (1, True, "s", None):
            inst = {key: value}
            text = json.dumps(inst, ensure_ascii=False)
            want = oracle.is_valid(inst)
            got = accepts(c, tok.encode(text, add_special_tokens=False).ids)
            if any(ord(ch) > 0x7F or ch in "\n\r" for ch in key) and not got:
                continue  # outside the complement's alphabet: refusing is allowed
            assert got == want, f"{'rejected valid' if want else 'accepted invalid'} {text} for {json.dumps(schema)}"


@pytest.mark.parametrize("pattern", ["^a+b", "[a-z]+$", "ab", "^(a|bc)$"])
def test_other_pattern_shapes_are_refused(env, pattern):
    vocab, _, _ = env
    with pytest.raises(ValueError, match="patternProperties"):
        ts.compile_json_schema({"patternProperties": {pattern: {"type": "integer"}}}, vocab)
