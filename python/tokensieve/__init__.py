"""tokensieve: exact token masks for constrained generation, and SMC
resampling that turns masked decoding into correctly weighted samples.

Quick start::

    import tokensieve as ts
    vocab = ts.Vocabulary.from_tokenizer_file("tokenizer.json")
    constraint = ts.compile_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", vocab)
    # or ts.compile_json_schema({"type": "object", ...}, vocab)
    m = ts.Matcher(constraint)
    bitmask = ts.allocate_token_bitmask(1, vocab.vocab_size)
    m.fill_next_token_bitmask(bitmask)      # row 0: allowed next tokens
    ts.apply_token_bitmask_inplace(logits, bitmask)

Submodules: :mod:`tokensieve.resample` (SMC resampling kernels),
:mod:`tokensieve.smc` (sequential Monte Carlo generation), and, with the
``hf`` extra, :mod:`tokensieve.hf` (a transformers logits processor).
"""

from ._core import (
    Constraint,
    Matcher,
    Vocabulary,
    compile_grammar,
    compile_json,
    compile_regex,
    fill_next_token_bitmasks,
)
from ._bitmask import allocate_token_bitmask, apply_token_bitmask_inplace
from .json_schema import JsonSchemaWarning, compile_json_schema
from .potentials import Potential, complete_only, potential
from . import resample, smc  # documented submodules (neither imports torch)

__all__ = [
    "Constraint",
    "JsonSchemaWarning",
    "Matcher",
    "Potential",
    "Vocabulary",
    "allocate_token_bitmask",
    "apply_token_bitmask_inplace",
    "compile_grammar",
    "compile_json",
    "compile_json_schema",
    "compile_regex",
    "complete_only",
    "fill_next_token_bitmasks",
    "potential",
    "resample",
    "smc",
]
__version__ = "0.1.0"
