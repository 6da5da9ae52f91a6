"""JSON Schema constraints: :func:`compile_json_schema`.

The compiler itself is in Rust (``rust/json_schema``); this module turns
the accepted schema forms into JSON text and the compiler's notes on
ignored keywords into Python warnings.
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Mapping, Optional, Tuple, Union

from . import _core
from ._core import Constraint, Vocabulary

__all__ = ["JsonSchemaWarning", "compile_json_schema"]

_DEFAULT_MASK_CACHE_BYTES = 256 << 20
_MAX_DEPTH = 2_000  # rust/json_schema: MAX_MAX_DEPTH


class JsonSchemaWarning(UserWarning):
    """A schema keyword was ignored (``strict=False``): the constraint
    accepts more than the schema does."""


SchemaLike = Union[str, bytes, bool, Mapping[str, Any], type]


def _schema_text(schema: Any) -> str:
    if isinstance(schema, (str, bytes)):
        # Parsed (and refused when malformed: "not valid JSON") by the
        # compiler itself; parsing it here as well cost as much as 2% of a
        # large schema's compile.
        return schema.decode("utf-8") if isinstance(schema, bytes) else schema
    if isinstance(schema, (bool, Mapping)):
        try:
            return json.dumps(schema, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(f"schema: a dict must hold JSON values only ({e})") from None
    to_schema = getattr(schema, "model_json_schema", None)
    if callable(to_schema):  # a pydantic model class
        return json.dumps(to_schema(), ensure_ascii=False)
    raise TypeError(
        "schema must be JSON text, a dict, a bool or a pydantic model class, "
        f"got {type(schema).__name__}"
    )


def compile_json_schema(
    schema: SchemaLike,
    vocab: Vocabulary,
    *,
    whitespace: str = "flexible",
    separators: Optional[Tuple[str, str]] = None,
    strict: bool = True,
    max_depth: int = 128,
    mask_cache_bytes: int = _DEFAULT_MASK_CACHE_BYTES,
) -> Constraint:
    """Compile a JSON Schema (draft 2020-12; draft-07 spellings accepted).

    ``schema``: JSON text, a dict, ``True``/``False``, or a pydantic model
    class (anything with ``model_json_schema()``).

    ``whitespace``: ``"flexible"`` (any JSON whitespace between tokens) or
    ``"compact"`` (none); ``separators=(item_sep, key_sep)`` instead fixes
    them exactly as ``json.dumps`` does (e.g. ``(", ", ": ")``).

    The language: texts as ``json.dumps(value, ensure_ascii=False)`` writes
    them (one escape per character: ``\\n``, ``\\"``, ``\\u001f``; other
    characters raw), properties in the order the schema lists them,
    bounded numbers without exponent.

    ``strict=True`` raises ``ValueError`` naming any keyword that cannot be
    enforced exactly (``uniqueItems``, ``if``/``then``, ...) and its JSON
    pointer; ``strict=False`` ignores such keywords and warns
    (:class:`JsonSchemaWarning`) for each. ``max_depth`` (at most 2,000)
    bounds subschema nesting and ``$ref``/``allOf`` chains. Malformed schemas, unknown or remote ``$ref`` and schemas that
    admit no value raise ``ValueError``.
    """
    if not isinstance(vocab, Vocabulary):
        raise TypeError(f"vocab must be a tokensieve.Vocabulary, got {type(vocab).__name__}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {type(strict).__name__}")
    for name, value in (("max_depth", max_depth), ("mask_cache_bytes", mask_cache_bytes)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 0:
            raise ValueError(f"{name} must not be negative, got {value}")
    if max_depth > _MAX_DEPTH:
        raise ValueError(f"max_depth {max_depth} is too large (limit {_MAX_DEPTH})")
    if mask_cache_bytes >= 2**63:
        raise ValueError(f"mask_cache_bytes {mask_cache_bytes} is too large")
    if not isinstance(whitespace, str):
        raise TypeError(f"whitespace must be a str, got {type(whitespace).__name__}")
    if separators is not None:
        if (
            not isinstance(separators, (tuple, list))
            or len(separators) != 2
            or not all(isinstance(s, str) for s in separators)
        ):
            raise TypeError("separators must be a pair of strings (item_sep, key_sep)")
        separators = (separators[0], separators[1])
    text = _schema_text(schema)
    constraint, notes = _core._compile_json_schema(
        text,
        vocab,
        whitespace=whitespace,
        separators=separators,
        strict=strict,
        max_depth=max_depth,
        mask_cache_bytes=mask_cache_bytes,
    )
    for note in notes:
        warnings.warn(note, JsonSchemaWarning, stacklevel=2)
    return constraint
