"""Reading tokenizer descriptions for :class:`tokensieve.Vocabulary` (I/O glue only)."""

from __future__ import annotations

import gzip
import json
import os
from typing import Any, List, Optional, Tuple


def _eos_from_config(config: dict, vocab: dict) -> Optional[List[int]]:
    eos = config.get("eos_token")
    if isinstance(eos, dict):
        eos = eos.get("content")
    if isinstance(eos, str) and eos in vocab:
        return [vocab[eos]]
    return None


def read_tokenizer_file(path: Any, eos_token_ids: Optional[List[int]]) -> Tuple[str, Optional[List[int]]]:
    """Return (tokenizer.json text, EOS ids or None) for ``path``.

    ``path`` may name the JSON file, a gzipped ``.json.gz``, or a directory
    holding one. EOS ids come from the argument, else from a
    ``tokenizer_config.json`` beside the file, else ``None`` (the Rust side
    then recognises well-known end-of-text special tokens).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("tokenizer.json", "tokenizer.json.gz"):
            if os.path.exists(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise ValueError(f"no tokenizer.json in directory {path!r}")
    if not os.path.exists(path):
        raise ValueError(f"tokenizer file not found: {path!r}")
    raw = open(path, "rb").read()
    try:
        if path.endswith(".gz"):
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read tokenizer file {path!r}: {e}") from None
    if eos_token_ids is None:
        cfg_path = os.path.join(os.path.dirname(path), "tokenizer_config.json")
        if os.path.exists(cfg_path):
            try:
                cfg = json.load(open(cfg_path, encoding="utf-8"))
                tok = json.loads(text)
                vocab = dict(tok.get("model", {}).get("vocab", {})) if isinstance(tok.get("model", {}).get("vocab"), dict) else {}
                for a in tok.get("added_tokens", []):
                    vocab[a["content"]] = a["id"]
                eos_token_ids = _eos_from_config(cfg, vocab)
            except (ValueError, KeyError, TypeError):
                eos_token_ids = None
    return text, eos_token_ids


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
