"""Type stubs for the Rust extension ``tokensieve._core``."""

from os import PathLike
import numpy as np
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union, final

from typing_extensions import Self

__all__ = [
    "Vocabulary",
    "Constraint",
    "Matcher",
    "compile_regex",
    "compile_json",
    "compile_grammar",
    "_compile_json_schema",
    "fill_next_token_bitmasks",
    "bitmask_words",
    "_apply_bitmask_cpu",
    "_vocabulary_from_parts",
    "_constraint_from_recipe",
    "resample_into",
    "ess",
    "log_normalize_into",
    "masked_rows_into",
    "masked_draw_into",
    "MASKED_BLOCK",
    "Population",
    "RESAMPLE_SCHEMES",
    "awrs_sample",
    "awrs_sample_rows",
]

@final
class Vocabulary:
    """A tokenizer's vocabulary: for every token id, the exact bytes it adds."""

    def __new__(
        cls,
        tokenizer_json: Optional[str] = None,
        *,
        token_bytes: Optional[Sequence[Optional[bytes]]] = None,
        eos_token_ids: Optional[Sequence[int]] = None,
        vocab_size: Optional[int] = None,
    ) -> Self: ...
    @staticmethod
    def from_tokenizer_file(
        path: Union[str, "PathLike[str]"],
        *,
        eos_token_ids: Optional[Sequence[int]] = None,
        vocab_size: Optional[int] = None,
    ) -> "Vocabulary":
        """Load ``tokenizer.json`` (or ``.json.gz``, or a directory holding one)."""
    @staticmethod
    def from_huggingface(
        tokenizer: Any,
        *,
        eos_token_ids: Optional[Sequence[int]] = None,
        vocab_size: Optional[int] = None,
    ) -> "Vocabulary":
        """From a ``transformers`` fast tokenizer or a ``tokenizers.Tokenizer``; ``vocab_size``: model embedding width."""
    @property
    def vocab_size(self) -> int:
        """Number of token ids a bitmask covers (as on Constraint and Matcher)."""
    @property
    def size(self) -> int:
        """Number of token ids a bitmask covers."""
    def __len__(self) -> int: ...
    def token_bytes(self, token_id: int) -> bytes:
        """Bytes token ``token_id`` adds to the text (``b""`` for special/unused ids)."""
    def is_special(self, token_id: int) -> bool:
        """Whether ``token_id`` is special or unused (never allowed by a constraint)."""
    @property
    def eos_token_ids(self) -> List[int]:
        """EOS ids: allowed exactly when the text so far is complete."""
    @property
    def adds_prefix_space(self) -> bool:
        """SentencePiece tokenizers that prepend ``▁`` to the input text."""
    @property
    def spelling(self) -> str:
        """``"byte_level"``, ``"sentencepiece"`` or ``"plain"``."""

@final
class Constraint:
    """A compiled constraint; immutable, shared by matchers and threads.
    Pickles (for multiprocessing and serving frameworks) as the compile call
    that made it: unpickling compiles it again."""

    @property
    def vocab_size(self) -> int: ...
    @property
    def eos_token_ids(self) -> List[int]:
        """EOS ids of the vocabulary the constraint was compiled against."""
    @property
    def num_states(self) -> int:
        """Automaton states (regex) or lexer states (grammar)."""

def compile_regex(
    pattern: str,
    vocab: Vocabulary,
    *,
    max_states: Optional[int] = None,
    max_nfa_bytes: Optional[int] = None,
    max_dfa_bytes: Optional[int] = None,
) -> Constraint:
    """Compile a regex (Rust syntax, full match over UTF-8 bytes)."""

def compile_json(
    vocab: Vocabulary, *, whitespace: str = "flexible", max_depth: int = 64, mask_cache_bytes: int = 268435456
) -> Constraint:
    """The built-in any-JSON grammar. It has no source, so unlike the other
    ``compile_*`` (source first, vocabulary second) the vocabulary is its only
    positional argument. ``whitespace`` is "flexible" or "compact";
    ``max_depth`` at most 10,000.
    ``mask_cache_bytes`` bounds the memory of memoised masks."""

def compile_grammar(
    text: str,
    vocab: Vocabulary,
    *,
    syntax: str = "lark",
    start: Optional[str] = None,
    mask_cache_bytes: int = 268435456,
) -> Constraint:
    """Compile a Lark (``syntax="lark"``) or GBNF (``syntax="gbnf"``) grammar.
    ``mask_cache_bytes`` bounds the memory of memoised masks (once spent,
    masks are recomputed each time)."""

@final
class Matcher:
    """Follows one sequence through a constraint."""

    def __new__(cls, constraint: Constraint) -> Self: ...
    def fill_next_token_bitmask(self, bitmask: Any, index: int = 0) -> None:
        """Fill row ``index`` of an int32 bitmask (numpy or CPU torch)."""
    def allowed_tokens(self) -> List[int]:
        """Allowed next token ids (for debugging)."""
    def consume_token(self, token_id: int) -> bool:
        """Consume a token; False (state unchanged) if not allowed."""
    def consume_tokens(self, token_ids: Sequence[int]) -> int:
        """Consume tokens until the first disallowed one; returns how many."""
    def is_allowed(self, token_id: int) -> bool: ...
    def is_accepting(self) -> bool:
        """The text so far is a complete string of the language."""
    def is_terminated(self) -> bool:
        """EOS consumed, or nothing but EOS can follow."""
    def rollback(self, n: int) -> None:
        """Undo the last ``n`` consumed tokens."""
    def reset(self) -> None: ...
    def copy(self) -> "Matcher": ...
    def __copy__(self) -> "Matcher": ...
    def __deepcopy__(self, memo: Any) -> "Matcher": ...
    def forced_bytes(self) -> bytes:
        """Bytes every allowed continuation starts with."""
    def forced_tokens(self) -> List[int]:
        """Token ids spelling the forced continuation, consumable without sampling."""
    @property
    def eos_consumed(self) -> bool:
        """True once EOS has been consumed."""
    @property
    def num_consumed(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...

def fill_next_token_bitmasks(matchers: List[Matcher], bitmask: Any, indices: Optional[Sequence[int]] = None) -> None:
    """Fill many rows in parallel with the GIL released."""

def bitmask_words(vocab_size: int) -> int:
    """Words per bitmask row: ceil(vocab_size / 32)."""

# ---- resampling back end (used by tokensieve.resample / tokensieve.smc) ----

RESAMPLE_SCHEMES: tuple[str, ...]

def resample_into(
    kind: int, log_weights: np.ndarray, out: np.ndarray, seed: int, uniforms: Optional[np.ndarray] = None
) -> None:
    """Write ``len(out)`` sorted ancestor indices (scheme code ``kind``) into ``out`` (int64)."""

def ess(log_weights: np.ndarray) -> float:
    """Effective sample size of unnormalised float64 log weights."""

def log_normalize_into(log_weights: np.ndarray, out: np.ndarray) -> float:
    """Write normalised log weights into ``out``; returns the log normaliser."""

# ---- masked distributions back end (used by tokensieve.smc's CPU path) ----

MASKED_BLOCK: int

def masked_rows_into(
    logits: np.ndarray, bitmask: np.ndarray, log_z: np.ndarray, max: np.ndarray, cum: np.ndarray
) -> None:
    """Per row: log of the allowed probability mass, the allowed maximum and the
    cumulative block sums (``ceil(vocab / MASKED_BLOCK)`` per row)."""

def masked_draw_into(
    logits: np.ndarray, bitmask: np.ndarray, max: np.ndarray, cum: np.ndarray,
    rows: np.ndarray, u: np.ndarray, out: np.ndarray,
) -> None:
    """``out[j]``: a token of row ``rows[j]`` drawn by inverse CDF at ``u[j]``."""

def _vocabulary_from_parts(
    token_bytes: Sequence[Optional[bytes]], eos_token_ids: Sequence[int], spelling: str, adds_prefix_space: bool
) -> Vocabulary:
    """Unpickle a Vocabulary."""

def _constraint_from_recipe(func: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Constraint:
    """Unpickle a Constraint: compile it again (``func`` names a compile function)."""

def _apply_bitmask_cpu(logits: np.ndarray, bitmask: Any, dtype: str) -> None:
    """Mask CPU logits (float32, or int16 bit patterns of float16/bfloat16) in place."""

@final
class Population:
    """Particle weights, ESS-triggered resampling and the running log Z estimate."""

    def __new__(cls, n: int, ess_threshold: float = 0.5, resampler: str = "systematic", seed: Optional[Any] = None) -> Self: ...
    def add_log_weights(self, increments: Any) -> None:
        """Add per-particle log-weight increments (length n)."""
    def maybe_resample(self) -> Optional[Any]:
        """Resample if ESS < ess_threshold * n; returns the int64 ancestors or None."""
    def normalized_weights(self) -> Any: ...
    @property
    def log_weights(self) -> Any: ...
    @property
    def log_z(self) -> float:
        """Estimate of the log marginal likelihood."""
    @property
    def ess(self) -> float: ...
    @property
    def ess_history(self) -> List[float]: ...
    @property
    def n(self) -> int: ...
    @property
    def ess_threshold(self) -> float: ...
    @property
    def resampler(self) -> str: ...
    def __len__(self) -> int: ...

def awrs_sample_rows(
    logp: Any,
    accept: Any,
    seeds: Sequence[int],
    sampler: str = "awrs",
    max_calls: int = 1000,
    mask: Optional[Any] = None,
    max: Optional[Any] = None,
    cum: Optional[Any] = None,
) -> List[tuple[Optional[int], float, int, bool]]:
    """:func:`awrs_sample` for every row of a 2-D C-contiguous float32/float64
    array ``logp`` (one seed per row, optional 2-D int32 ``mask``, optional
    1-D ``max`` and 2-D ``cum`` from :func:`masked_rows_into`), with one
    call ``accept(rows, tokens) -> one list of bools per row`` per round for
    all rows still drawing. Rows run in parallel threads (GIL released except
    during ``accept``); row ``r``'s result equals
    ``awrs_sample(logp[r], ..., seed=seeds[r], mask=mask[r], max=max[r], cum=cum[r])``."""

def awrs_sample(
    logp: Any,
    accept: Any,
    sampler: str = "awrs",
    max_calls: int = 1000,
    seed: int = 0,
    mask: Optional[Any] = None,
    max: Optional[float] = None,
    cum: Optional[Any] = None,
    known: Optional[dict[int, float]] = None,
) -> tuple[Optional[int], float, int, bool]:
    """One draw from softmax(logp) (1-D float32/float64 numpy array) restricted
    to the tokens ``accept(list_of_ids) -> list_of_bools`` allows.

    ``sampler``: "awrs" (without replacement, adaptive), "rejection" (with
    replacement) or "full" (every token evaluated, exact). Returns
    ``(token or None, log_weight, calls, fell_back)``; ``exp(log_weight)`` is
    an unbiased estimate of the allowed mass. After ``max_calls`` evaluations
    the remaining tokens are evaluated at once (weights stay unbiased).
    The GIL is released except while ``accept`` runs; its exceptions propagate.
    ``mask``: a packed int32 bitmask row (bit ``t % 32`` of word ``t // 32``;
    tokens past its end excluded) applied first: ``accept`` is never asked
    about a masked-out token, and the weight is relative to the masked,
    renormalised distribution.
    ``max`` and ``cum``: this row's allowed maximum and cumulative block sums
    from :func:`masked_rows_into` for the same log-probs and mask (both or
    neither). With them the sampler skips its own O(V) set-up (widening,
    NaN check, maximum, the ``exp`` of every token, a sum tree): draws start
    from the kernel's block masses and compute the weights of the blocks
    they land in; the log-probs are trusted to be those the kernel checked.
    ``known``: a dict of token id -> log weight (what ``accept`` found for
    earlier questions, e.g. of another particle with the same text): a
    question whose tokens are all in it is answered from it (accepted when
    the value is above ``-inf``) without calling ``accept``.
    """

def _compile_json_schema(
    schema: str,
    vocab: Vocabulary,
    *,
    whitespace: str = "flexible",
    separators: Optional[Tuple[str, str]] = None,
    strict: bool = True,
    max_depth: int = 128,
    mask_cache_bytes: int = 268435456,
) -> Tuple[Constraint, List[str]]:
    """Compile a JSON Schema given as JSON text: ``(constraint, warnings)``
    (what ``strict=False`` ignored). Use :func:`tokensieve.compile_json_schema`."""
