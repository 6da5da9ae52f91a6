"""Reading a ``transformers`` tokenizer for :class:`tokensieve.Vocabulary`
(``tokenizer.json`` files are read and parsed in Rust)."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple


def read_hf_tokenizer(tokenizer: Any, eos_token_ids: Optional[List[int]]) -> Tuple[str, Optional[List[int]]]:
    """Return (tokenizer.json text, EOS ids) for a ``transformers`` fast tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(
            f"{type(tokenizer).__name__} is not a fast (Rust-backed) tokenizer; "
            "load it with use_fast=True or pass its tokenizer.json to Vocabulary.from_tokenizer_file"
        )
    text = backend.to_str()
    if eos_token_ids is None:
        eos = getattr(tokenizer, "eos_token_id", None)
        if isinstance(eos, int):
            eos_token_ids = [eos]
        elif isinstance(eos, (list, tuple)):
            eos_token_ids = [int(e) for e in eos]
    return text, eos_token_ids
