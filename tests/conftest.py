"""Shared test helpers.

The real tokenizer files live outside the repository, in ``../shared/tokenizers``
(the CI clones the repository with ``shared`` beside it). Without it, GPT-2
falls back to the tokenizer the package ships
(``python/tokensieve/data/gpt2_tokenizer.json``, the same file), so most
tests still run on a fresh clone; tests that need another tokenizer skip.

Two ways to use the helpers:

* import them: ``from conftest import load_vocab, tokenizers_dir, tokenizer_path``
  (``real_tokenizer()`` names Llama 3, or the shipped GPT-2 without
  ``../shared``, for tests that need a real tokenizer but not a given one)
* or take the fixtures of the same names: ``def test_x(load_vocab): v = load_vocab("gpt2")``

``load_vocab(name)`` is cached for the whole test session (one load per
tokenizer per process); the returned :class:`tokensieve.Vocabulary` is
immutable, so sharing it is safe.
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path
from typing import Optional, Tuple

import pytest

import tokensieve as ts

#: Every tokenizer folder in the shared directory (see its README.md).
SHARED_TOKENIZERS = (
    "gpt2",
    "llama-3-8b-instruct",
    "qwen3",
    "mistral-7b-v0.1",
    "phi-3-mini",
    "gemma-3",
    "deepseek-v3",
    "t5-small",
)


def tokenizers_dir() -> Path:
    """``<repo>/../shared/tokenizers`` (may not exist), or
    ``$TOKENSIEVE_TEST_TOKENIZERS`` (set it to a missing path to run the
    suite as on a fresh clone without ``shared``)."""
    override = os.environ.get("TOKENSIEVE_TEST_TOKENIZERS")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1].parent / "shared" / "tokenizers"


#: Tokenizers the package itself ships, used when ``../shared`` is absent.
SHIPPED = {"gpt2": Path(ts.__file__).parent / "data" / "gpt2_tokenizer.json"}


@functools.lru_cache(maxsize=None)
def _shipped_as_shared(name: str) -> Path:
    """The shipped copy laid out as in ``../shared`` (a folder holding
    ``tokenizer.json`` and ``tokenizer_config.json``), so tests that load
    the folder with ``transformers.AutoTokenizer`` work on a fresh clone."""
    import atexit
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix=f"tokensieve-{name}-"))
    atexit.register(shutil.rmtree, d, True)
    shutil.copyfile(SHIPPED[name], d / "tokenizer.json")
    (d / "tokenizer_config.json").write_text('{"model_max_length": 1024}')
    return d / "tokenizer.json"


def tokenizer_path(name: str) -> Path:
    """The tokenizer file (``tokenizer.json`` or ``tokenizer.json.gz``) of a
    shared tokenizer, else the shipped copy; skips the calling test if
    neither exists."""
    d = tokenizers_dir() / name
    for fname in ("tokenizer.json", "tokenizer.json.gz"):
        p = d / fname
        if p.is_file():
            return p
    if name in SHIPPED and SHIPPED[name].is_file():
        return _shipped_as_shared(name)
    pytest.skip(f"shared tokenizer {name!r} not found under {tokenizers_dir()}")


def real_tokenizer(preferred: str = "llama-3-8b-instruct") -> str:
    """The name of a real tokenizer for tests that need one but not that
    one: ``preferred`` when the shared folder holds it, else ``"gpt2"``
    (shipped with the package), so those tests run on a fresh clone."""
    d = tokenizers_dir() / preferred
    if any((d / f).is_file() for f in ("tokenizer.json", "tokenizer.json.gz")):
        return preferred
    return "gpt2"


@functools.lru_cache(maxsize=None)
def _load_vocab_cached(name: str, vocab_size: Optional[int], eos: Optional[Tuple[int, ...]]) -> ts.Vocabulary:
    return ts.Vocabulary.from_tokenizer_file(
        tokenizer_path(name),
        vocab_size=vocab_size,
        eos_token_ids=None if eos is None else list(eos),
    )


def load_vocab(name: str, *, vocab_size: Optional[int] = None, eos_token_ids=None) -> ts.Vocabulary:
    """Session-cached ``Vocabulary.from_tokenizer_file`` of a shared tokenizer
    (skips the calling test if the file is missing)."""
    tokenizer_path(name)  # skip (uncached) when missing
    eos = None if eos_token_ids is None else tuple(int(e) for e in eos_token_ids)
    return _load_vocab_cached(name, vocab_size, eos)


@functools.lru_cache(maxsize=None)
def load_tokenizer_json(name: str) -> str:
    """Text of a shared tokenizer's JSON (decompressed if gzipped), cached."""
    p = tokenizer_path(name)
    raw = p.read_bytes()
    if p.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")


@pytest.fixture(name="tokenizers_dir", scope="session")
def _tokenizers_dir_fixture() -> Path:
    d = tokenizers_dir()
    if not d.is_dir():
        pytest.skip(f"shared tokenizers directory not found: {d}")
    return d


@pytest.fixture(name="load_vocab", scope="session")
def _load_vocab_fixture():
    return load_vocab


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tests with one torch thread, restored afterwards.

    Tiny models gain nothing from intra-op threads; on a busy CI machine
    their hand-offs dominate the run time. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
