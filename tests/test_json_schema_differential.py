"""Differential exactness of ``compile_json_schema`` against ``jsonschema``.

Hypothesis draws random schemas from the subset the compiler supports
(``type`` single and arrays, ``enum``/``const`` of any JSON values,
``properties``/``required``/``additionalProperties`` false/true/schema,
``minProperties``/``maxProperties``, ``items``/``prefixItems``/``minItems``/
``maxItems``, string ``minLength``/``maxLength``/``pattern``/``format`` (date,
ipv4, uuid), ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``
with integer and decimal bounds, integer ``multipleOf``, ``anyOf``, ``allOf``
of object schemas, ``$defs`` + ``$ref`` including recursive linked-list and
tree schemas, boolean schemas). For each schema it generates instances that
are meant to be valid (:func:`gen_valid`) and mutations of them meant to be
invalid (:func:`mutate`: change a type, drop a key, add a key, break a bound,
truncate the text). The oracle is ``jsonschema.Draft202012Validator`` with a
``FormatChecker``; whatever the generator meant, the oracle decides.

The compiler's language is documented narrower than "every valid JSON
text": texts as ``json.dumps(value, ensure_ascii=False)`` writes them (all
our instances are), bounded numbers without exponent (we write none), and
object keys in the order the schema lists them (``properties``, then
``required`` names not listed, then any further keys; ``allOf`` parts and
``$ref`` targets in document order; for ``anyOf`` the order of a branch the
value is valid for; objects inside ``const`` / ``enum`` in the member's own
key order; the generated schemas never put ``properties`` beside ``$ref``
or ``allOf``, whose relative order follows the keywords' order in the
schema text). :func:`key_order_ok` checks the last rule, so the
expected verdict is ``valid and key_order_ok``; most generated instances are
put in that order by :func:`canonical_order`, the rest keep a random order
(which the compiler must then reject).

Checks, on the GPT-2 and Llama 3 vocabularies:

* ``test_instances_match_oracle``: the serialised instance
  (``json.dumps(..., ensure_ascii=False)``, default and compact separators)
  is accepted token by token and the matcher is accepting at the end **iff**
  the oracle says valid. A schema that the compiler refuses with
  ``ValueError`` is counted (``hypothesis.event``, and the summary printed at
  the end of the module) and skipped; any other exception fails, and so do
  internal errors (``grammar error: ...``) and an "admits no JSON value"
  refusal of a schema for which :func:`find_valid` finds a valid value.
* ``test_mask_matches_consume``: at random reachable states (a random-length
  prefix of a valid instance's tokens), bit ``t`` of the mask equals whether a
  copy of the matcher accepts ``consume_token(t)``, for every token ``t``;
  then for a few allowed tokens, a random walk over allowed tokens looks for
  an accepting state (best effort, bounded). Definite failures: a state that
  is neither accepting nor allows any token (a dead end the mask led to), or
  an accepting state whose text is not valid JSON or not valid for the schema.

Known divergences found in the compiler are listed in :data:`KNOWN_BUGS`
(each an ``xfail(strict=True)`` reproducer) and are not re-reported by the
random tests.

Engine: tokensieve; set ``TOKENSIEVE_DIFF_ENGINE=llguidance`` (or
``xgrammar``) to run the same test against a peer (a harness check). To
survey divergences instead of stopping at the first, set
``TOKENSIEVE_DIFF_LOG=path.jsonl``: mismatches of the instance test are
appended there (one JSON object a line) instead of failing.
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import uuid
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
jsonschema = pytest.importorskip("jsonschema")
tokenizers = pytest.importorskip("tokenizers")

from hypothesis import HealthCheck, Phase, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import json_schema_suite_lib  # noqa: E402
from conftest import load_vocab, tokenizer_path  # noqa: E402

S = json_schema_suite_lib.load()
ENGINE = os.environ.get("TOKENSIEVE_DIFF_ENGINE", "tokensieve")
MISMATCH_LOG = os.environ.get("TOKENSIEVE_DIFF_LOG")
VOCABS = ("gpt2", "llama-3-8b-instruct")
EOS = {"gpt2": 50256, "llama-3-8b-instruct": 128009}
STATS: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

COMMON = dict(
    deadline=None,
    derandomize=True,  # fixed seed: the same examples on every run
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# ---------------------------------------------------------------------------
# Engines, tokenizers, oracle


_ENGINES: Dict[str, Any] = {}


def engine(vocab_name: str):
    """The engine adapter (``benches/json_schema_suite.py``) for a vocabulary."""
    if vocab_name not in _ENGINES:
        if ENGINE == "tokensieve":
            _ENGINES[vocab_name] = S.tokensieve_engine(vocab=load_vocab(vocab_name))
        else:
            _ENGINES[vocab_name] = S.make_engine(ENGINE, tokenizer_path(vocab_name), EOS[vocab_name])
    return _ENGINES[vocab_name]


_TOKENIZERS: Dict[str, Any] = {}


def tokenize(vocab_name: str, text: str) -> List[int]:
    if vocab_name not in _TOKENIZERS:
        _TOKENIZERS[vocab_name] = tokenizers.Tokenizer.from_file(str(tokenizer_path(vocab_name)))
    return _TOKENIZERS[vocab_name].encode(text, add_special_tokens=False).ids


def oracle(schema: Any):
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def _no_constant(name: str):
    raise ValueError(f"not JSON: {name}")


def strict_loads(text: str) -> Any:
    """``json.loads`` that refuses ``NaN`` / ``Infinity`` (not JSON)."""
    return json.loads(text, parse_constant=_no_constant)


def compile_or_refuse(vocab_name: str, schema: Any):
    """The compiled schema, or None when the compiler refuses it with
    ``ValueError`` (counted); other exceptions propagate."""
    eng = engine(vocab_name)
    try:
        c = eng.compile(json.dumps(schema, ensure_ascii=False))
    except ValueError as e:
        reason = S.first_line(e, 80)
        bug = known_refusal_bug(str(e))
        if bug is None:
            assert "grammar error" not in str(e), f"internal compiler error on {json.dumps(schema)}: {e}"
        else:
            reason = f"known bug: {bug}"
        if "admits no JSON value" in str(e):
            witness = find_valid(schema)
            assert witness is None, (
                f"refused as unsatisfiable, but {json.dumps(witness, ensure_ascii=False)} is valid for {json.dumps(schema, ensure_ascii=False)}"
            )
        event(f"refused: {reason}")
        if MISMATCH_LOG:
            with open(MISMATCH_LOG, "a", encoding="utf-8") as f:
                f.write(json.dumps({"engine": ENGINE, "vocab": vocab_name, "schema": schema, "refused": str(e)}, ensure_ascii=False) + "\n")
        STATS["refused"][reason] += 1
        return None
    STATS["compiled"]["schemas"] += 1
    return c


# ---------------------------------------------------------------------------
# Schema strategy

KEYS = ("a", "b", "c", "d")
TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")
#: (pattern, generator of a matching string) -- JSON Schema patterns are unanchored.
PATTERNS = {
    "^[a-c]+$": lambda r: "".join(r.choice("abc") for _ in range(r.randint(1, 4))),
    "[0-9]{2}": lambda r: r.choice(["", "x", "é"]) + f"{r.randint(0, 99):02d}" + r.choice(["", "z"]),
    "^x[yz]*$": lambda r: "x" + "".join(r.choice("yz") for _ in range(r.randint(0, 3))),
    "^(ab|cd)?$": lambda r: r.choice(["", "ab", "cd"]),
}
FORMATS = ("date", "ipv4", "uuid")
STR_ALPHABET = "abz09 é\"\\\n🦊"

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-20, 20),
    st.sampled_from([0.5, -1.25, 2.0, 1000.0, 3.75]),
    st.text(alphabet="abé\"\\ \n", max_size=4),
)
json_values = st.recursive(
    json_scalars,
    lambda ch: st.lists(ch, max_size=3) | st.dictionaries(st.sampled_from(KEYS + ("é", "x y")), ch, max_size=3),
    max_leaves=6,
)
bounds = st.one_of(st.integers(-10, 10), st.sampled_from([-2.5, -0.5, 0.25, 1.5, 3.75]))
small = st.integers(0, 3)


def maybe(draw, strategy, p_none: float = 0.5):
    """``draw(strategy)`` or None (about ``p_none`` of the time)."""
    return draw(strategy) if draw(st.floats(0, 1)) >= p_none else None


@st.composite
def string_schema(draw):
    s: Dict[str, Any] = {"type": "string"} if draw(st.integers(0, 4)) else {}
    kind = draw(st.sampled_from(["length", "pattern", "format", "plain"]))
    if kind == "length":
        lo, hi = maybe(draw, small), maybe(draw, st.integers(0, 5))
        if lo is not None:
            s["minLength"] = lo
        if hi is not None:
            s["maxLength"] = hi
    elif kind == "pattern":
        s["pattern"] = draw(st.sampled_from(sorted(PATTERNS)))
    elif kind == "format":
        s["format"] = draw(st.sampled_from(FORMATS))
    return s or {"type": "string"}


@st.composite
def number_schema(draw):
    t = draw(st.sampled_from(["integer", "number"]))
    s: Dict[str, Any] = {"type": t}
    for kw in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        v = maybe(draw, bounds, 0.6)
        if v is not None:
            s[kw] = v
    if t == "integer" and draw(st.booleans()):
        s["multipleOf"] = draw(st.sampled_from([2, 3, 4, 5, 10]))
        if draw(st.integers(0, 3)):  # the compiler needs a bounded range (or a power of 2 / 5 / 10)
            s.setdefault("minimum", draw(st.integers(-30, 0)))
            s.setdefault("maximum", draw(st.integers(0, 40)))
    return s


type_schema = st.one_of(
    st.sampled_from(TYPES).map(lambda t: {"type": t}),
    st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True).map(lambda ts: {"type": ts}),
)
enum_schema = st.lists(json_values, min_size=1, max_size=4).map(lambda vs: {"enum": vs})
const_schema = json_values.map(lambda v: {"const": v})
leaf_schema = st.one_of(
    string_schema(), number_schema(), type_schema, enum_schema, const_schema,
    st.booleans(), st.just({}),
)


@st.composite
def object_schema(draw, sub, typed: bool = True):
    props = draw(st.dictionaries(st.sampled_from(KEYS), sub, max_size=3))
    s: Dict[str, Any] = {"type": "object"} if typed or draw(st.booleans()) else {}
    if props or draw(st.booleans()):
        s["properties"] = props
    req = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=2))
    if req:
        s["required"] = req
    ap = draw(st.sampled_from(["absent", "false", "true", "schema"]))
    if ap != "absent":
        s["additionalProperties"] = {"false": False, "true": True}.get(ap) if ap != "schema" else draw(sub)
    lo, hi = maybe(draw, small, 0.7), maybe(draw, st.integers(0, 4), 0.7)
    if lo is not None:
        s["minProperties"] = lo
    if hi is not None:
        s["maxProperties"] = hi
    return s


@st.composite
def array_schema(draw, sub):
    s: Dict[str, Any] = {"type": "array"}
    if draw(st.booleans()):
        s["prefixItems"] = draw(st.lists(sub, min_size=1, max_size=2))
    items = draw(st.sampled_from(["absent", "schema", "false"]))
    if items == "schema":
        s["items"] = draw(sub)
    elif items == "false":
        s["items"] = False
    lo, hi = maybe(draw, small, 0.6), maybe(draw, st.integers(0, 4), 0.6)
    if lo is not None:
        s["minItems"] = lo
    if hi is not None:
        s["maxItems"] = hi
    return s


def schemas(depth: int):
    """Schemas nested up to ``depth`` levels of object / array / anyOf / allOf."""
    if depth == 0:
        return leaf_schema
    sub = schemas(depth - 1)
    return st.one_of(
        leaf_schema,
        object_schema(sub),
        array_schema(sub),
        st.lists(sub, min_size=2, max_size=3).map(lambda xs: {"anyOf": xs}),
        st.lists(object_schema(sub, typed=False), min_size=2, max_size=2).map(lambda xs: {"type": "object", "allOf": xs}),
    )


NESTED = schemas(2)


@st.composite
def ref_schema(draw):
    """``$defs`` + ``$ref`` at the root: plain references, a recursive linked
    list and a recursive tree."""
    kind = draw(st.sampled_from(["props", "root", "list", "tree"]))
    if kind == "props":
        return {
            "$defs": {"x": draw(schemas(1)), "y": draw(leaf_schema)},
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/x"}, "b": {"$ref": "#/$defs/y"},
                           "c": {"type": "array", "items": {"$ref": "#/$defs/y"}, "maxItems": 3}},
            "required": draw(st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=2)),
            "additionalProperties": False,
        }
    if kind == "root":
        return {"$defs": {"x": draw(schemas(1))}, "$ref": "#/$defs/x"}
    leaf = draw(leaf_schema)
    if kind == "list":
        return {
            "$defs": {"node": {"type": "object",
                               "properties": {"v": leaf, "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}},
                               "required": ["v", "next"], "additionalProperties": False}},
            "$ref": "#/$defs/node",
        }
    return {
        "$defs": {"t": {"type": "object",
                        "properties": {"v": leaf, "kids": {"type": "array", "items": {"$ref": "#/$defs/t"}, "maxItems": 2}},
                        "required": ["v"]}},
        "$ref": "#/$defs/t",
    }


SCHEMAS = st.one_of(NESTED, NESTED, ref_schema())


# ---------------------------------------------------------------------------
# Instance generation (best effort: the oracle decides)


def _random_value(r, depth: int = 0) -> Any:
    k = r.randrange(7 if depth < 2 else 5)
    if k == 0:
        return None
    if k == 1:
        return r.random() < 0.5
    if k == 2:
        return r.randint(-30, 30)
    if k == 3:
        return r.choice([0.5, -2.25, 1e-3, 12.75])
    if k == 4:
        return "".join(r.choice(STR_ALPHABET) for _ in range(r.randint(0, 4)))
    if k == 5:
        return [_random_value(r, depth + 1) for _ in range(r.randint(0, 2))]
    return {r.choice(KEYS + ("zz",)): _random_value(r, depth + 1) for _ in range(r.randint(0, 2))}


def _resolve(ref: str, root: Any) -> Any:
    node = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def _int_range(s: Dict[str, Any]) -> Tuple[int, int]:
    import math

    lo, hi = -40, 40
    if "minimum" in s:
        lo = max(lo, math.ceil(s["minimum"])) if s["minimum"] > -40 else math.ceil(s["minimum"])
    if "exclusiveMinimum" in s:
        lo = max(lo, math.floor(s["exclusiveMinimum"]) + 1)
    if "maximum" in s:
        hi = min(hi, math.floor(s["maximum"]))
    if "exclusiveMaximum" in s:
        hi = min(hi, math.ceil(s["exclusiveMaximum"]) - 1)
    return lo, hi


def _guess_type(s: Dict[str, Any], r) -> Optional[str]:
    t = s.get("type")
    if isinstance(t, list):
        return r.choice(t) if t else None
    if t:
        return t
    if {"properties", "required", "additionalProperties", "minProperties", "maxProperties"} & s.keys():
        return "object"
    if {"items", "prefixItems", "minItems", "maxItems"} & s.keys():
        return "array"
    if {"minLength", "maxLength", "pattern", "format"} & s.keys():
        return "string"
    if {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"} & s.keys():
        return "number"
    return None


def gen_valid(s: Any, r, root: Any, depth: int = 0) -> Any:
    """A value meant to be valid for schema ``s`` (``root`` resolves ``$ref``)."""
    if s is True or s == {} or depth > 6:
        return _random_value(r, 1)
    if s is False:
        return None
    if "$ref" in s:
        return gen_valid(_resolve(s["$ref"], root), r, root, depth + 1)
    if "enum" in s:
        return r.choice(s["enum"])
    if "const" in s:
        return s["const"]
    if "anyOf" in s:
        return gen_valid(r.choice(s["anyOf"]), r, root, depth + 1)
    if "allOf" in s:
        out: Dict[str, Any] = {}
        for part in s["allOf"]:
            v = gen_valid(dict(part, type="object"), r, root, depth + 1)
            if isinstance(v, dict):
                out.update(v)
        return out
    t = _guess_type(s, r)
    if t is None:
        return _random_value(r, 1)
    if t == "null":
        return None
    if t == "boolean":
        return r.random() < 0.5
    if t == "integer" or (t == "number" and r.random() < 0.4):
        lo, hi = _int_range(s)
        m = s.get("multipleOf", 1)
        cands = [x for x in range(lo, hi + 1) if x % m == 0] if hi >= lo else []
        return r.choice(cands) if cands else lo
    if t == "number":
        lo, hi = _int_range(s)
        for _ in range(20):
            x = r.randint(4 * lo, 4 * hi + 3) / 4 if hi >= lo else lo + 0.25
            if oracle({k: v for k, v in s.items() if k != "type"}).is_valid(x):
                return x
        return float(lo)
    if t == "string":
        if "format" in s:
            f = s["format"]
            if f == "date":
                d = datetime.date(2000, 1, 1) + datetime.timedelta(days=r.randint(0, 12000))
                return d.isoformat()
            if f == "ipv4":
                return ".".join(str(r.randint(0, 255)) for _ in range(4))
            if f == "uuid":
                return str(uuid.UUID(int=r.getrandbits(128)))
        if "pattern" in s:
            return PATTERNS[s["pattern"]](r)
        lo = s.get("minLength", 0)
        hi = max(lo, s.get("maxLength", lo + 4))
        return "".join(r.choice(STR_ALPHABET) for _ in range(r.randint(lo, hi)))
    if t == "array":
        prefix = s.get("prefixItems", [])
        items = s.get("items", True)
        lo = s.get("minItems", 0)
        hi = max(lo, s.get("maxItems", lo + 3))
        n = r.randint(lo, hi)
        if items is False:
            n = min(n, len(prefix))
        return [gen_valid(prefix[i] if i < len(prefix) else items, r, root, depth + 1) for i in range(n)]
    if t == "object":
        props = s.get("properties", {})
        ap = s.get("additionalProperties", True)
        keys = list(dict.fromkeys(list(s.get("required", [])) + [k for k in props if r.random() < 0.6]))
        if ap is not False and r.random() < 0.3:
            keys.append(r.choice(["zz", "é", "b"]))
        need = s.get("minProperties", 0) - len(keys)
        spare = [k for k in (list(props) + ([] if ap is False else ["e1", "e2", "e3"])) if k not in keys]
        keys += spare[: max(0, need)]
        if "maxProperties" in s:
            req = set(s.get("required", []))
            keys = [k for k in keys if k in req] + [k for k in keys if k not in req]
            keys = keys[: max(s["maxProperties"], len(req))]
        out = {}
        for k in dict.fromkeys(keys):
            sub = props[k] if k in props else (ap if not isinstance(ap, bool) else True)
            out[k] = gen_valid(sub, r, root, depth + 1)
        return out
    return _random_value(r, 1)


def _paths(v: Any, path: Tuple = ()) -> List[Tuple]:
    out = [path]
    if isinstance(v, dict):
        for k, x in v.items():
            out += _paths(x, path + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += _paths(x, path + (i,))
    return out


def _get(v: Any, path: Tuple) -> Any:
    for p in path:
        v = v[p]
    return v


def _replace(v: Any, path: Tuple, new: Any) -> Any:
    if not path:
        return new
    v = json.loads(json.dumps(v))  # deep copy
    _get(v, path[:-1])[path[-1]] = new
    return v


def mutate(value: Any, r) -> Tuple[str, str]:
    """``(kind, text)``: a mutation of ``value`` meant to be invalid (or,
    for ``reorder``, outside the compiler's key order), serialised."""
    kind = r.choice(["type", "drop_key", "add_key", "bound", "truncate", "reorder"])
    paths = _paths(value)
    if kind == "reorder":  # keys out of the compiler's order (still valid JSON Schema-wise)
        objs = [p for p in paths if isinstance(_get(value, p), dict) and len(_get(value, p)) > 1]
        if objs:
            p = r.choice(objs)
            d = _get(value, p)
            return kind, json.dumps(_replace(value, p, dict(reversed(list(d.items())))), ensure_ascii=False)
        kind = "type"
    if kind == "type":
        p = r.choice(paths)
        old = _get(value, p)
        new = r.choice([x for x in (None, True, 0, 1.5, "x", [], {}) if type(x) is not type(old)])
        return kind, json.dumps(_replace(value, p, new), ensure_ascii=False)
    if kind in ("drop_key", "add_key"):
        objs = [p for p in paths if isinstance(_get(value, p), dict)]
        if objs:
            p = r.choice(objs)
            d = dict(_get(value, p))
            if kind == "drop_key" and d:
                d.pop(r.choice(list(d)))
            else:
                d[r.choice(KEYS + ("zz",))] = r.choice([1, "s", None])
            return kind, json.dumps(_replace(value, p, d), ensure_ascii=False)
        kind = "bound"
    if kind == "bound":
        p = r.choice(paths)
        old = _get(value, p)
        if isinstance(old, bool) or old is None:
            new = not old
        elif isinstance(old, (int, float)):
            new = old + r.choice([-1000, -1, 1, 1000, 0.5, -0.25])
        elif isinstance(old, str):
            new = r.choice(["", old * 5 + "q", old[:-1]])
        elif isinstance(old, list):
            new = r.choice([[], old + old + [1], old[:-1]])
        else:
            new = {} if old else {"zz": 0}
        return kind, json.dumps(_replace(value, p, new), ensure_ascii=False)
    text = json.dumps(value, ensure_ascii=False)
    return "truncate", text[: r.randint(0, max(0, len(text) - 1))]


# ---------------------------------------------------------------------------
# The compiler's key order (see the module docstring)


def _expand(conj: List[Any], root: Any) -> List[Dict[str, Any]]:
    """The object schemas of a conjunction with ``$ref`` and ``allOf``
    replaced by their targets / parts, in document order (the schema's own
    keywords first); boolean schemas dropped (they list no keys)."""
    out: List[Dict[str, Any]] = []
    todo = list(conj)
    guard = 0
    while todo and guard < 200:
        guard += 1
        s = todo.pop(0)
        if not isinstance(s, dict):
            continue
        inner: List[Any] = []
        if "$ref" in s:
            inner.append(_resolve(s["$ref"], root))
        inner.extend(s.get("allOf", []))
        out.append({k: v for k, v in s.items() if k not in ("$ref", "allOf")})
        todo[0:0] = inner
    return out


def _valid_for(validator, schema: Any, value: Any) -> bool:
    """``value`` valid for a subschema of the validator's root (``$ref`` resolves)."""
    return validator.evolve(schema=schema).is_valid(value)


def _order_walk(conj: List[Any], value: Any, root: Any, validator, fix: bool, depth: int = 0):
    """``(ok, value')``: whether ``value``'s keys are in the compiler's
    order under the conjunction ``conj``; with ``fix``, ``value'`` is
    ``value`` reordered so (the same value, a new object)."""
    if depth > 40:
        return True, value
    shapes = _expand(conj, root)
    for i, s in enumerate(shapes):
        if "anyOf" in s:
            rest = shapes[:i] + [{k: v for k, v in s.items() if k != "anyOf"}] + shapes[i + 1:]
            first = None
            for b in s["anyOf"]:
                if _valid_for(validator, b, value):
                    ok, fixed = _order_walk(rest + [b], value, root, validator, fix, depth + 1)
                    if ok:
                        return True, fixed
                    first = first or fixed
            return False, (first if first is not None else value)
    consts = [[sh["const"]] if "const" in sh else sh["enum"] for sh in shapes if "const" in sh or "enum" in sh]
    if consts and isinstance(value, (dict, list)):
        # An object inside const / enum is written in the member's key order.
        for members in consts:
            same = [m for m in members if _valid_for(validator, {"const": m}, value)]
            for m in same:
                if _same_order(m, value):
                    return True, value
            if same:
                return False, (_reorder_like(same[0], value) if fix else value)
        return True, value
    if isinstance(value, dict):
        listed: List[str] = []
        for s in shapes:
            listed += [k for k in s.get("properties", {}) if k not in listed]
        for s in shapes:
            listed += [k for k in s.get("required", []) if k not in listed]
        keys = list(value)
        ranks = [listed.index(k) if k in listed else len(listed) for k in keys]
        ok = ranks == sorted(ranks)
        if fix:
            keys = sorted(keys, key=lambda k: listed.index(k) if k in listed else len(listed))
        out = {}
        for k in keys:
            child = [s["properties"][k] for s in shapes if k in s.get("properties", {})]
            child += [s["additionalProperties"] for s in shapes if k not in s.get("properties", {}) and "additionalProperties" in s]
            sub_ok, out[k] = _order_walk(child, value[k], root, validator, fix, depth + 1)
            ok = ok and sub_ok
        return ok, out
    if isinstance(value, list):
        ok, out = True, []
        for i, x in enumerate(value):
            child = []
            for s in shapes:
                pre = s.get("prefixItems", [])
                child.append(pre[i] if i < len(pre) else s.get("items", True))
            sub_ok, fx = _order_walk(child, x, root, validator, fix, depth + 1)
            ok = ok and sub_ok
            out.append(fx)
        return ok, out
    return True, value


def find_valid(schema: Any, tries: int = 30) -> Any:
    """A value valid for ``schema`` (keys in the compiler's order) found by
    the generator or among a few simple values, or None (best effort)."""
    import random

    v = oracle(schema)
    r = random.Random(0)
    for x in [None, True, 0, 1, 0.5, "", "a", [], {}]:
        if v.is_valid(x):
            return x
    for _ in range(tries):
        x = canonical_order(schema, gen_valid(schema, r, schema), v)
        if v.is_valid(x) and key_order_ok(schema, x, v):
            return x
    return None


def _same_order(member: Any, value: Any) -> bool:
    """Whether ``value`` (equal to ``member``) lists every object's keys as ``member`` does."""
    if isinstance(member, dict) and isinstance(value, dict):
        return list(member) == list(value) and all(_same_order(member[k], value[k]) for k in member)
    if isinstance(member, list) and isinstance(value, list):
        return all(_same_order(a, b) for a, b in zip(member, value))
    return True


def _reorder_like(member: Any, value: Any) -> Any:
    """``value`` (equal to ``member``) with ``member``'s key order."""
    if isinstance(member, dict) and isinstance(value, dict):
        return {k: _reorder_like(member[k], value[k]) for k in member}
    if isinstance(member, list) and isinstance(value, list):
        return [_reorder_like(a, b) for a, b in zip(member, value)]
    return value


def key_order_ok(schema: Any, value: Any, validator) -> bool:
    """Whether ``value``'s object keys are in the compiler's order."""
    return _order_walk([schema], value, schema, validator, False)[0]


def canonical_order(schema: Any, value: Any, validator) -> Any:
    """``value`` with its object keys in the compiler's order."""
    return _order_walk([schema], value, schema, validator, True)[1]


# ---------------------------------------------------------------------------
# Known compiler bugs: minimal reproducers, each run as xfail(strict=True)
# by test_known_bug_reproducers, and a predicate (schema, text) -> bool that
# keeps the random tests from re-reporting the same divergence.
# (id, schema, instance text, oracle's verdict, reason, predicate)

_INTERNAL = "undefined symbol"  # the compiler's own grammar was inconsistent

# Fixed bugs stay as regression tests (same shape, run without xfail).
FIXED_BUGS: List[Tuple[str, Any, str, bool, str, Any]] = [
    (
        "count-bound-excludes-listed-property",
        {"type": "object", "required": ["c"], "properties": {"a": {}}, "maxProperties": 1},
        '{"c": 1}', True,
        "compile_json_schema raises ValueError('grammar error: undefined symbol \"__obj_N\"') when maxProperties "
        "leaves no room for a listed optional property",
        lambda schema, text: False,  # a compile-time bug: see known_refusal_bug
    ),
    (
        "minProperties-with-additionalProperties-false",
        {"additionalProperties": False, "minProperties": 1},
        "1", True,
        "compile_json_schema raises ValueError('grammar error: undefined symbol \"__obj_N\"') when minProperties "
        "cannot be met by the listed properties (the schema still admits every non-object)",
        lambda schema, text: False,
    ),
]

KNOWN_BUGS: List[Tuple[str, Any, str, bool, str, Any]] = []


def known_bug(schema: Any, text: str) -> Optional[str]:
    """The id of a known bug this example hits, or None."""
    for bug_id, _schema, _text, _exp, _reason, pred in KNOWN_BUGS:
        if pred(schema, text):
            return bug_id
    return None


def known_refusal_bug(message: str) -> Optional[str]:
    """The known bug a compile error comes from, or None (a refusal).
    Both bugs above fail the same way: an internal grammar error."""
    return "count-bound-excludes-listed-property / minProperties-with-additionalProperties-false" if _INTERNAL in message else None


def accepts(vocab_name: str, compiled: Any, text: str) -> bool:
    eng = engine(vocab_name)
    return S.feed(eng, eng.matcher(compiled), tokenize(vocab_name, text))


def expected_valid(validator, text: str, schema: Any = None) -> bool:
    """The oracle's verdict on ``text``: valid JSON, valid for the schema
    and (given ``schema``) keys in the compiler's order."""
    try:
        value = strict_loads(text)
    except ValueError:
        return False
    if not validator.is_valid(value):
        return False
    if schema is not None and not key_order_ok(schema, value, validator):
        STATS["instances"]["valid but keys out of the compiler's order"] += 1
        return False
    return True


@pytest.mark.parametrize("vocab_name", VOCABS)
@settings(max_examples=200, **COMMON)
@given(schema=SCHEMAS, rnd=st.randoms(use_true_random=False))
def test_instances_match_oracle(vocab_name, schema, rnd):
    """Accepted token by token and accepting at the end iff the oracle says valid."""
    compiled = compile_or_refuse(vocab_name, schema)
    if compiled is None:
        return
    v = oracle(schema)
    cases = []
    for _ in range(3):
        value = gen_valid(schema, rnd, schema)
        if rnd.random() < 0.85:
            value = canonical_order(schema, value, v)
        cases.append(("generated", json.dumps(value, ensure_ascii=False)))
        if rnd.random() < 0.3:
            cases.append(("compact", json.dumps(value, ensure_ascii=False, separators=(",", ":"))))
        cases.append(mutate(value, rnd))
    for kind, text in cases:
        exp = expected_valid(v, text, schema)
        event(f"{kind}: {'valid' if exp else 'invalid'}")
        STATS["instances"][f"{kind} {'valid' if exp else 'invalid'}"] += 1
        bug = known_bug(schema, text)
        if bug:
            event(f"known bug {bug}")
            continue
        got = accepts(vocab_name, compiled, text)
        if MISMATCH_LOG and got != exp:
            with open(MISMATCH_LOG, "a", encoding="utf-8") as f:
                f.write(json.dumps({"engine": ENGINE, "vocab": vocab_name, "schema": schema, "instance": text,
                                    "kind": kind, "expected": exp, "got": got}, ensure_ascii=False) + "\n")
            continue
        assert got == exp, (
            f"{ENGINE} on {vocab_name}: schema={json.dumps(schema, ensure_ascii=False)} "
            f"instance={text!r} ({kind}): oracle says {'valid' if exp else 'invalid'}, engine {'accepted' if got else 'rejected'}"
        )


def _allowed_ids(bm: Any, vocab_size: int) -> np.ndarray:
    words = np.ascontiguousarray(np.asarray(bm)[0]).view(np.uint8)
    return np.nonzero(np.unpackbits(words, bitorder="little")[:vocab_size])[0]


def _walk_to_accepting(eng, m, vocab, validator, text: bytes, r, bm, max_steps: int = 120) -> Optional[bool]:
    """From matcher ``m`` (text so far ``text``), follow random allowed
    tokens (short ones, closing characters preferred) until accepting.
    Returns True when an accepting state was reached (and its text checked),
    None when none was found within ``max_steps``; fails on a dead end or an
    accepting text the oracle rejects."""
    for _ in range(max_steps):
        if eng.accepting(m) and (r.random() < 0.6 or not text):
            try:
                value = strict_loads(text.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise AssertionError(f"accepting state on text that is not JSON: {text!r} ({e})")
            assert validator.is_valid(value), f"accepting state on an invalid instance: {text!r}"
            assert key_order_ok(validator.schema, value, validator), f"accepting state with keys out of order: {text!r}"
            return True
        eng.fill_mask(m, bm)
        ids = [int(t) for t in _allowed_ids(bm, eng.vocab_size) if vocab.token_bytes(int(t))]
        if not ids:
            assert eng.accepting(m), f"dead end: nothing allowed and not accepting after {text!r}"
            continue
        short = [t for t in ids if len(vocab.token_bytes(t)) == 1]
        closing = [t for t in short if vocab.token_bytes(t) in (b'"', b"}", b"]", b"0", b"1", b"a")]
        t = r.choice(closing if closing and r.random() < 0.7 else short or ids)
        assert eng.consume(m, t), f"token {t} allowed by the mask but refused after {text!r}"
        text += vocab.token_bytes(t)
    return None


@pytest.mark.parametrize("vocab_name", VOCABS)
@settings(max_examples=16, phases=[Phase.explicit, Phase.reuse, Phase.generate], **COMMON)  # no shrinking: each example is a full-vocabulary sweep
@given(schema=SCHEMAS, rnd=st.randoms(use_true_random=False))
def test_mask_matches_consume(vocab_name, schema, rnd):
    """Mask bit t == a copy accepts consume_token(t), for every token t, at a
    random reachable state; allowed tokens lead on to valid instances."""
    compiled = compile_or_refuse(vocab_name, schema)
    if compiled is None:
        return
    v = oracle(schema)
    value = canonical_order(schema, gen_valid(schema, rnd, schema), v)
    if not (v.is_valid(value) and key_order_ok(schema, value, v)):
        event("mask test: generated instance not valid, skipped")
        return
    text = json.dumps(value, ensure_ascii=False)
    if known_bug(schema, text):
        return
    eng = engine(vocab_name)
    vocab = load_vocab(vocab_name)
    ids = tokenize(vocab_name, text)
    k = rnd.randint(0, len(ids))
    m = eng.matcher(compiled)
    for t in ids[:k]:
        assert eng.consume(m, t), f"valid instance {text!r} rejected at token {t}; schema={schema}"
    bm = eng.allocate_mask()
    eng.fill_mask(m, bm)
    allowed = set(int(t) for t in _allowed_ids(bm, eng.vocab_size))
    bad = []
    if ENGINE == "tokensieve":
        tokens = range(eng.vocab_size)  # every token (about 1 µs each)
    else:  # peers' copy + consume is ~100x slower: allowed tokens plus a sample
        tokens = sorted(allowed | set(rnd.sample(range(eng.vocab_size), 2000)))
    for t in tokens:
        ok = eng.consume(eng.copy(m), t)
        if ok != (t in allowed):
            bad.append((t, vocab.token_bytes(t), ok))
    prefix = b"".join(vocab.token_bytes(t) for t in ids[:k])
    assert not bad, f"mask/consume disagree after {prefix!r}: (token, bytes, consumed) {bad[:10]}; schema={schema}"
    STATS["mask"]["states checked"] += 1
    nonspecial = [t for t in sorted(allowed) if vocab.token_bytes(t)]
    for t in rnd.sample(nonspecial, min(3, len(nonspecial))):
        m2 = eng.copy(m)
        assert eng.consume(m2, t)
        found = _walk_to_accepting(eng, m2, vocab, v, prefix + vocab.token_bytes(t), rnd, bm)
        STATS["mask"]["completions found" if found else "completions not found (best effort)"] += 1
        event("completion found" if found else "completion not found")


@pytest.mark.parametrize(
    "schema,text,expected",
    [pytest.param(b[1], b[2], b[3], id=b[0], marks=pytest.mark.xfail(strict=True, reason=b[4])) for b in KNOWN_BUGS]
    + [pytest.param(b[1], b[2], b[3], id=b[0]) for b in FIXED_BUGS],
)
def test_known_bug_reproducers(schema, text, expected):
    """Minimal reproducers of divergences found by the random tests: open
    ones xfail strict (move an entry to FIXED_BUGS when fixed), fixed ones
    as regression tests."""
    compiled = compile_or_refuse("gpt2", schema)  # gpt2: the shipped fallback, runs on a fresh clone
    assert compiled is not None, "refused"
    assert expected_valid(oracle(schema), text, schema) == expected
    assert accepts("gpt2", compiled, text) == expected


def test_differential_summary():
    """Prints what the random tests did (refusals, instance kinds); checks
    that they were not vacuous (most schemas compiled, both valid and invalid
    instances seen). Runs after the random tests (file order)."""
    if not STATS["instances"]:
        pytest.skip("the random tests did not run in this session")
    print("\n[json-schema differential]", ENGINE, {k: dict(c) for k, c in STATS.items()})
    compiled = STATS["compiled"]["schemas"]
    refused = sum(STATS["refused"].values())
    assert compiled >= refused, f"most schemas should compile: {compiled} compiled, {refused} refused ({dict(STATS['refused'])})"
    valid = sum(n for k, n in STATS["instances"].items() if k.endswith(" valid"))
    invalid = sum(n for k, n in STATS["instances"].items() if k.endswith(" invalid"))
    assert valid > 50 and invalid > 50, dict(STATS["instances"])
