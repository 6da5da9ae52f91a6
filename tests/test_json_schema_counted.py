"""Length bounds beside ``pattern`` / ``format``, and ``enum``/``const``
values beside other keywords, exact against ``jsonschema``.

``minLength``/``maxLength`` next to a pattern or format compile to the
product of the pattern's character automaton with a length counter (or to
the plain pattern when every match already has an allowed length); an
``enum`` or ``const`` of objects or arrays next to structural keywords keeps
exactly the members that validate. Each schema is checked on a pool of
strings (drawn from the pattern's own alphabet, so that many match) or of
values: accepted, token by token with Llama 3 tokens, **iff**
``jsonschema.Draft202012Validator`` says valid; and on random prefixes the
mask equals a brute-force ``consume_token`` over the whole vocabulary.
"""

from __future__ import annotations

import json
import random
from typing import Any, List

import numpy as np
import pytest

import tokensieve as ts
from conftest import load_vocab, real_tokenizer, tokenizer_path
from test_json_schema import accepts

tokenizers = pytest.importorskip("tokenizers")
jsonschema = pytest.importorskip("jsonschema")

LLAMA3 = real_tokenizer("llama-3-8b-instruct")  # the shipped GPT-2 without ../shared


@pytest.fixture(scope="module")
def env():
    vocab = load_vocab(LLAMA3)
    tok = tokenizers.Tokenizer.from_file(str(tokenizer_path(LLAMA3)))
    return vocab, tok


def strings(alphabet: str, seeds: List[str], n: int, seed: int) -> List[str]:
    """Random strings over ``alphabet`` (0-14 characters), the matching
    ``seeds``, and mutants of the seeds (a character dropped, replaced or
    inserted; a seed repeated), so that both sides of each bound are hit."""
    r = random.Random(seed)
    out = [""] + list(seeds)
    out += ["".join(r.choice(alphabet) for _ in range(r.choice([1, 2, 3, 4, 5, 6, 8, 10, 14]))) for _ in range(n)]
    for _ in range(n):
        s = r.choice(seeds)
        i = r.randrange(len(s) + 1)
        op = r.randrange(4)
        if op == 0 and s:
            s = s[:i] + s[i + 1 :]
        elif op == 1 and i < len(s):
            s = s[:i] + r.choice(alphabet) + s[i + 1 :]
        elif op == 2:
            s = s[:i] + r.choice(alphabet) + s[i:]
        else:
            s = s + r.choice(alphabet) * r.randrange(6)
        out.append(s)
    return out


#: (pattern or format, alphabet of the test strings, matching seeds,
#: [(minLength, maxLength)]).
COUNTED = [
    ("^([a-z0-9-]+):([a-z0-9\\.-]+):([a-z0-9-]+)?:([a-z0-9-]+)$", "ab1-.:", ["a:b::c", "ab:c.d:e:f", "a-1:..:x:y"], [(0, 8), (5, 9), (7, None)]),
    ("^([\\w\\/-]|[\\w-][\\w\\/-]*[\\w-])$", "a_/-.", ["a", "a/b", "ab-/cd", "_"], [(0, 5), (2, 4)]),
    ("^(?:\\S+\\s+){0,3}\\S+$", "ab \t", ["a", "ab cd", "a b\tc d", "a b c d e"], [(0, 6), (3, 7)]),
    ("^(\\d+\\.\\d+\\.\\d+.*)$", "12.x-", ["1.2.3", "12.1.2-x", "1.22.333"], [(0, 7), (6, None)]),
    ("[a-z]{2}", "ab1\"\\", ["ab", "1ab1", "\"ab\\"], [(3, 5), (0, 3)]),
    ("^$|(^x+y$)", "xy", ["", "xy", "xxxy"], [(0, 4), (1, 3)]),
    ("^\\$\\{?([^:}]+).*\\}?$", "${a:}", ["$a", "${a}", "${ab:c}"], [(3, None), (0, 5)]),
    ("format:date-time", "0123456789-:TZ.", ["2020-01-01T00:00:00Z", "2020-01-01T00:00:00.5Z", "2020-01-01T00:00:00.123+01:00"], [(0, 22), (21, 30)]),
    ("format:ipv4", "0129.", ["1.2.3.4", "192.168.10.1", "255.255.255.255", "10.0.0.10"], [(0, 9), (8, 11)]),
]


@pytest.mark.parametrize("pattern,alphabet,seeds,bounds", COUNTED, ids=[c[0][:24] for c in COUNTED])
def test_counted_strings_match_oracle(env, pattern, alphabet, seeds, bounds):
    vocab, tok = env
    pool = strings(alphabet, seeds, 200, len(pattern))
    for lo, hi in bounds:
        schema: dict = {"type": "string", "minLength": lo}
        if hi is not None:
            schema["maxLength"] = hi
        if pattern.startswith("format:"):
            schema["format"] = pattern[len("format:") :]
            oracle = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        else:
            schema["pattern"] = pattern
            oracle = jsonschema.Draft202012Validator(schema)
        c = ts.compile_json_schema(schema, vocab)
        seen = [0, 0]
        for s in pool:
            want = oracle.is_valid(s)
            seen[want] += 1
            text = json.dumps(s, ensure_ascii=False)
            assert accepts(c, tok, text) == want, f"{'rejected valid' if want else 'accepted invalid'} {text} for {json.dumps(schema)}"
        assert min(seen) > 0, f"the pool has only {'valid' if seen[1] else 'invalid'} strings for {json.dumps(schema)}"


#: Several string constraints at once, as one automaton: (schema, alphabet,
#: matching seeds). Formats are checked by the oracle too.
COMBINED = [
    ({"type": "string", "maxLength": 4, "not": {"pattern": "^a"}}, "ab-", ["b", "ba-", ""]),
    ({"type": "string", "pattern": "^[a-z]+$", "not": {"anyOf": [{"pattern": "x"}, {"enum": ["ab", "b"]}]}}, "abx", ["a", "aab", "ba"]),
    ({"type": "string", "allOf": [{"pattern": "^a"}, {"pattern": "b$"}], "minLength": 3}, "abc", ["acb", "abab"]),
    ({"type": "string", "pattern": "^[0-9.]+$", "not": {"format": "ipv4"}}, "0129.", ["1.2", "1.2.3.4.5", "300.1.1.1"]),
    ({"type": "string", "format": "ipv4", "pattern": "^10\\."}, "0129.", ["10.0.0.1", "10.2.9.1"]),
    ({"oneOf": [{"type": "string", "pattern": "a"}, {"type": "string", "pattern": "b"}], "maxLength": 3}, "abc", ["a", "cb", "aca"]),
    ({"type": "string", "minLength": 2, "not": {"enum": ["ab", "ba"]}, "pattern": "^[ab]*$"}, "ab", ["aa", "abb", "bab"]),
]


@pytest.mark.parametrize("schema,alphabet,seeds", COMBINED, ids=[str(i) for i in range(len(COMBINED))])
def test_combined_string_constraints_match_oracle(env, schema, alphabet, seeds):
    vocab, tok = env
    oracle = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    c = ts.compile_json_schema(schema, vocab)
    seen = [0, 0]
    for v in strings(alphabet, seeds, 200, len(alphabet)) + [1, None]:
        want = oracle.is_valid(v)
        seen[want] += 1
        text = json.dumps(v, ensure_ascii=False)
        assert accepts(c, tok, text) == want, f"{'rejected valid' if want else 'accepted invalid'} {text} for {json.dumps(schema)}"
    assert min(seen) > 0, f"the pool has only {'valid' if seen[1] else 'invalid'} values for {json.dumps(schema)}"


def test_counted_masks_are_exact(env):
    """On prefixes of valid and invalid strings, the mask is exactly the set
    of tokens ``consume_token`` takes."""
    vocab, tok = env
    schema = {"type": "string", "pattern": "^([a-z0-9-]+):([a-z0-9\\.-]+):([a-z0-9-]+)?:([a-z0-9-]+)$", "maxLength": 12}
    c = ts.compile_json_schema(schema, vocab)
    n = vocab.vocab_size
    bm = ts.allocate_token_bitmask(1, n)
    checked = 0
    for text in ['"ab:c.d:e:f"', '"a:b::c"', '"abc:de:f:gh"']:
        m = ts.Matcher(c)
        for i, t in enumerate(tok.encode(text, add_special_tokens=False).ids):
            if i % 2 == 0:
                m.fill_next_token_bitmask(bm)
                bits = np.unpackbits(np.ascontiguousarray(np.asarray(bm)[0]).view(np.uint8), bitorder="little")[:n]
                bad = [cand for cand in range(n) if bool(bits[cand]) != bool(m.copy().consume_token(cand))]
                assert not bad, f"mask/consume disagree at token {i} of {text}: {[tok.decode([b]) for b in bad[:10]]}"
                checked += 1
            if not m.consume_token(t):
                break
    assert checked >= 4


#: (schema, values): enum/const members of objects or arrays beside other keywords.
ENUMS = [
    (
        {"enum": [{"a": 1}, {"a": "x"}, [1, 2], [1], "s", 3], "properties": {"a": {"type": "integer"}}, "minItems": 2},
        [{"a": 1}, {"a": "x"}, [1, 2], [1], "s", 3, {"a": 2}, [1, 2, 3]],
    ),
    (
        {"allOf": [{"enum": [{"foo": 1}, {"foo": 1, "v": 2}, {"bar": 1}]}, {"not": {"not": {"additionalProperties": False, "patternProperties": {"^v": {}}, "properties": {"bar": {}, "foo": {}}}}}]},
        [{"foo": 1}, {"foo": 1, "v": 2}, {"bar": 1}, {"foo": 1, "w": 2}],
    ),
    (
        {"const": [1, 1], "uniqueItems": False, "items": {"type": "integer"}},
        [[1, 1], [1], [1, 1, 1]],
    ),
    (
        {"enum": [[1, 2], [2, 2], [3, 1]], "contains": {"const": 2}, "items": {"maximum": 2}},
        [[1, 2], [2, 2], [3, 1], [2]],
    ),
    (
        {"type": "object", "enum": [{"k": [1, 2]}, {"k": []}, {"k": [1]}], "properties": {"k": {"oneOf": [{"minItems": 1}, {"contains": {"const": 2}}]}}},
        [{"k": [1, 2]}, {"k": []}, {"k": [1]}, {"k": [2, 1]}],
    ),
]


@pytest.mark.parametrize("schema,values", ENUMS, ids=[str(i) for i in range(len(ENUMS))])
def test_structured_enums_match_oracle(env, schema, values):
    vocab, tok = env
    c = ts.compile_json_schema(schema, vocab)
    oracle = jsonschema.Draft202012Validator(schema)
    for v in values:
        want = oracle.is_valid(v)
        text = json.dumps(v, ensure_ascii=False)
        assert accepts(c, tok, text) == want, f"{'rejected valid' if want else 'accepted invalid'} {text} for {json.dumps(schema)}"


def test_refused_when_too_large(env):
    """A product past the pair limit is refused by name, not built."""
    vocab, _ = env
    with pytest.raises(ValueError, match="maxLength"):
        ts.compile_json_schema({"type": "string", "format": "email", "maxLength": 1024}, vocab)
    with pytest.raises(ValueError, match="maxLength"):
        ts.compile_json_schema({"type": "string", "pattern": "^(?:\\S+\\s+){0,99}\\S+$", "maxLength": 5000}, vocab)
