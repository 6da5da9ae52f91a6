"""Reading a ``transformers`` tokenizer for :class:`tokensieve.Vocabulary`
(``tokenizer.json`` files are read and parsed in Rust)."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple


def read_hf_tokenizer(tokenizer: Any, eos_token_ids: Optional[List[int]]) -> Tuple[str, Optional[List[int]]]:
    """Return (tokenizer.json text, EOS ids) for a ``transformers`` fast
    tokenizer or a ``tokenizers.Tokenizer`` (which knows no EOS: without
    ``eos_token_ids`` the well-known end-of-text tokens are looked up)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None and _is_tokenizers_tokenizer(tokenizer):
        backend = tokenizer
    if backend is None:
        raise TypeError(
            f"tokenizer must be a transformers fast (Rust-backed) tokenizer or a tokenizers.Tokenizer, got "
            f"{type(tokenizer).__name__}; load it with use_fast=True or pass its tokenizer.json to "
            "Vocabulary.from_tokenizer_file"
        )
    text = backend.to_str()
    if eos_token_ids is None:
        eos = getattr(tokenizer, "eos_token_id", None)
        if isinstance(eos, int):
            eos_token_ids = [eos]
        elif isinstance(eos, (list, tuple)):
            eos_token_ids = [int(e) for e in eos]
    return text, eos_token_ids


def _is_tokenizers_tokenizer(obj: Any) -> bool:
    """Whether ``obj`` is a ``tokenizers.Tokenizer`` (tokenizers imported)."""
    import sys

    tokenizers = sys.modules.get("tokenizers")
    return tokenizers is not None and isinstance(obj, tokenizers.Tokenizer)
