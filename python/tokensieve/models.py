"""Language models for the SMC driver (:mod:`tokensieve.smc`).

The driver needs very little from a model, described by :class:`LanguageModel`:

* ``start(prompt_ids, n)`` returns a *state* holding ``n`` identical copies
  of the prompt (the rows of a batch);
* ``next_logprobs(state, last_tokens)`` returns a ``(rows, V)`` tensor of
  next-token log-probabilities, one row per row of the state. The first call
  after ``start`` passes ``last_tokens=None`` (the prompt alone is the
  context); every later call appends ``last_tokens[i]`` to row ``i`` first;
* optional, ``next_logits(state, last_tokens)``: the same step as
  ``next_logprobs`` but unnormalised (log-probs up to a constant per row);
  on the CPU the SMC drivers then normalise with the pass over the rows
  they make anyway, sparing a ``log_softmax`` per step;
* ``reorder(state, rows)`` makes row ``i`` of the new state a copy of row
  ``rows[i]`` of the old one. ``rows`` may repeat indices (resampling) and
  may be shorter than the batch (finished particles leave it), so all rows
  in a state always have the same length and no padding is ever needed.

Finished particles are *dropped* from the model's batch rather than kept and
ignored: the forward pass costs time proportional to the rows, and a row
that only waits for the others would be wasted work.

Two implementations ship here:

* :class:`HFModel` wraps a Hugging Face causal LM. It runs the prompt once
  (batch 1), copies its KV cache to the ``n`` rows, then feeds one token per
  row and step; ``reorder`` index-selects the KV cache in place of
  recomputing it (``Cache.reorder_cache`` for ``transformers`` Cache objects,
  ``index_select`` on every tensor for legacy tuples). A ``transformers``
  model always gets a ``DynamicCache`` (created empty for the prompt and
  passed as ``cache=``, or ``past_key_values=`` on versions before that
  keyword), never legacy tuples; tuples are kept only for other modules
  that produce them.
* :class:`TableLM` is an exact, tiny LM given by an explicit next-token
  table (bigram or any function of the prefix) over tokens with known byte
  strings. It can enumerate every complete sequence with its probability,
  which is what the exactness tests and the docs compare SMC against.

On a CPU, :func:`keep_large_allocations` stops glibc's ``malloc`` from
mapping and unmapping every large tensor (the ``(rows, V)`` logits of each
step), which on a 128k vocabulary is a large share of a step's time.
"""

from __future__ import annotations

import ctypes
import inspect
import math
import os
import platform
import sys
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Protocol,
    Sequence,
    cast,
    Tuple,
    runtime_checkable,
)

import numpy as np

from . import _core

__all__ = [
    "HFModel",
    "LanguageModel",
    "TableLM",
    "as_language_model",
    "keep_large_allocations",
    "reorder_past_key_values",
]


@runtime_checkable
class LanguageModel(Protocol):
    """What :func:`tokensieve.smc.generate` needs from a model (see the module doc)."""

    def start(self, prompt_ids: Sequence[int], n: int) -> Any:
        ...

    def next_logprobs(self, state: Any, last_tokens: Optional[Any]) -> Any:
        ...

    def reorder(self, state: Any, rows: Any) -> Any:
        ...


# --------------------------------------------------------------------------
# Hugging Face causal LMs
# --------------------------------------------------------------------------


def reorder_past_key_values(past: Any, rows: Any) -> Any:
    """Row ``i`` of the result is row ``rows[i]`` of ``past`` (batch dim 0).

    ``past`` is a ``transformers`` Cache object (reordered in place through
    ``reorder_cache``, which every Cache class implements by index-selecting
    its layers, and returned), or a legacy nested tuple/list of tensors
    (a new structure is returned). ``rows`` is an int64 tensor, possibly with
    repeats and possibly shorter than the batch. ``None`` passes through.
    """
    import torch

    if past is None:
        return None
    if isinstance(past, torch.Tensor):
        return past.index_select(0, rows.to(past.device))
    if isinstance(past, (tuple, list)):
        return type(past)(reorder_past_key_values(p, rows) for p in past)
    reorder = getattr(past, "reorder_cache", None)
    if reorder is None:
        raise TypeError(f"cannot reorder a KV cache of type {type(past).__name__}")
    reorder(rows)
    return past


@dataclass
class HFState:
    """The batch state of :class:`HFModel`: the KV cache of the ``rows`` rows,
    and the first step's log-probs until they are handed out."""

    past_key_values: Any
    rows: int
    length: int
    pending: Any = None  # the first step's logits


def _device_of(model: Any) -> Any:
    """The device of ``model``'s first parameter; the CPU for a model without
    parameters (or without ``parameters()``)."""
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        import torch

        return torch.device("cpu")


def _keep_last_logits_kwargs(model: Any) -> Dict[str, int]:
    """The keyword that makes ``model``'s forward compute the logits of the
    last position only, if it has one: ``logits_to_keep`` (transformers >=
    4.48) or ``num_logits_to_keep`` (4.45-4.47). Only the prompt's forward
    has more than one position; without it, a prompt of P tokens costs a
    (P, V) logits tensor (a 1,000-token prompt and a 128k vocabulary: 513
    MB in float32) and the matching part of the output projection."""
    forward = getattr(model, "forward", None)
    try:
        params = inspect.signature(forward).parameters if forward is not None else {}
    except (TypeError, ValueError):
        return {}
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return {name: 1}
    return {}


def _cache_keyword(model: Any) -> str:
    """The name under which ``model``'s forward takes (and its output
    returns) the KV cache: ``cache`` (``transformers`` >= 5.2x, where
    ``past_key_values`` is deprecated) or ``past_key_values``."""
    forward = getattr(model, "forward", None)
    try:
        params = inspect.signature(forward).parameters if forward is not None else {}
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


class HFModel:
    """A Hugging Face causal LM (``AutoModelForCausalLM``-like) behind the
    :class:`LanguageModel` protocol.

    ``model(input_ids=..., past_key_values=..., use_cache=True)`` must return
    ``logits`` and ``past_key_values``. Log-probs are returned in float32 on
    the model's device. Rows always have equal lengths (finished particles
    leave the batch), so no attention mask or padding is used. Caches with
    a fixed batch size (``StaticCache``) are not supported: reordering changes
    the number of rows.
    """

    def __init__(self, model: Any, *, bos_token_id: Optional[int] = None):
        self.model = model
        config = getattr(model, "config", None)
        if bos_token_id is None and config is not None:
            bos_token_id = getattr(config, "bos_token_id", None)
        self.bos_token_id = bos_token_id
        self.device = _device_of(model)
        self._keep_last = _keep_last_logits_kwargs(model)
        self._cache_kw = _cache_keyword(model)

    def _new_cache(self) -> Any:
        """An empty ``transformers.DynamicCache`` for a ``transformers``
        model (``None`` for other modules: they make their own)."""
        try:
            import transformers
        except ImportError:  # pragma: no cover - HFModel without transformers
            return None
        if not isinstance(self.model, transformers.PreTrainedModel):
            return None
        if not getattr(type(self.model), "_supports_cache_class", True):
            return None  # transformers < 4.4x: this architecture takes legacy tuples only
        try:
            return transformers.DynamicCache(config=self.model.config)
        except TypeError:  # pragma: no cover - transformers < 4.56: no config argument
            return transformers.DynamicCache()

    def _forward(self, input_ids: Any, past: Any) -> Tuple[Any, Any]:
        import torch

        kw = self._cache_kw
        with torch.no_grad():
            out = self.model(input_ids=input_ids, use_cache=True, **{kw: past}, **self._keep_last)
        logits = out.logits[:, -1, :].float()
        cache = getattr(out, kw, None)
        if cache is None:  # outputs that keep the other name
            cache = getattr(out, "past_key_values" if kw == "cache" else "cache", None)
        return logits, cache

    def start(self, prompt_ids: Sequence[int], n: int) -> HFState:
        import torch

        ids = [int(t) for t in prompt_ids]
        if not ids:
            if self.bos_token_id is None:
                raise ValueError("empty prompt and the model config has no bos_token_id")
            ids = [int(self.bos_token_id)]
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        logits, past = self._forward(torch.tensor([ids], dtype=torch.long, device=self.device), self._new_cache())
        rows = torch.zeros(n, dtype=torch.long, device=self.device)
        past = reorder_past_key_values(past, rows)
        return HFState(past_key_values=past, rows=n, length=len(ids), pending=logits.expand(n, -1))

    def next_logprobs(self, state: HFState, last_tokens: Optional[Any]) -> Any:
        """``(rows, V)`` float32 log-probs (the protocol's method):
        ``log_softmax`` of :meth:`next_logits`."""
        import torch

        return torch.log_softmax(self.next_logits(state, last_tokens), dim=-1)

    def next_logits(self, state: HFState, last_tokens: Optional[Any]) -> Any:
        """The same step as :meth:`next_logprobs`, unnormalised: the model's
        float32 logits (log-probs up to a constant per row). The SMC driver
        with Python potentials and no compiled constraint uses this and
        normalises with the masked kernel's pass, which it makes anyway,
        saving a ``log_softmax`` over the ``(rows, V)`` logits per step."""
        import torch

        if last_tokens is None:
            if state.pending is None:
                raise RuntimeError("next_logprobs(state, None) is only valid right after start()")
            out, state.pending = state.pending, None
            return out
        tokens = torch.as_tensor(last_tokens, dtype=torch.long).to(self.device).reshape(-1, 1)
        if tokens.shape[0] != state.rows:
            raise ValueError(f"{tokens.shape[0]} tokens for a batch of {state.rows} rows")
        state.pending = None
        logits, state.past_key_values = self._forward(tokens, state.past_key_values)
        state.length += 1
        return logits

    def reorder(self, state: HFState, rows: Any) -> HFState:
        import torch

        rows = torch.as_tensor(rows, dtype=torch.long).to(self.device)
        state.past_key_values = reorder_past_key_values(state.past_key_values, rows)
        if state.pending is not None:
            state.pending = state.pending.index_select(0, rows)
        state.rows = int(rows.shape[0])
        return state


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Environment variables by which a user configures glibc's malloc; when one
#: is set, :func:`keep_large_allocations` leaves the allocator alone.
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def keep_large_allocations(threshold_bytes: int = 1 << 30) -> bool:
    """Make glibc's ``malloc`` serve blocks below ``threshold_bytes`` from
    its heap and keep freed memory there, instead of mapping each large
    block afresh from the OS and unmapping it when freed. Process-wide;
    returns whether it was applied.

    By default glibc maps every block above its mmap threshold (128 KiB,
    raised as such blocks are freed, but never above 32 MiB) with ``mmap``
    and unmaps it on ``free``, so every such tensor is page-faulted in and
    zeroed by the kernel again. A CPU decoding loop allocates several per
    step: at 128 rows of a 128k vocabulary the logits alone are 65 MiB.
    Measured on 2 vCPUs with a tiny random Llama and the Llama 3
    vocabulary (``benches/README_smc.md``): the forward pass 120-130 ->
    60-65 ms per step and SMC's overhead outside it 20-22 -> 12-13 ms at
    N = 128. The cost is memory: freed blocks stay in the process (up to
    its peak use).
    The ``tokensieve generate`` command calls this for models on the CPU.

    Does nothing and returns ``False`` when the C library is not glibc,
    when another allocator is preloaded (``LD_PRELOAD``), or when the user
    has configured glibc's malloc through its environment variables
    (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
    ``MALLOC_TOP_PAD_``, ``GLIBC_TUNABLES``).

    Raises ``TypeError`` if ``threshold_bytes`` is not an int and
    ``ValueError`` unless ``0 < threshold_bytes < 2**31``.
    """
    if isinstance(threshold_bytes, bool) or not isinstance(threshold_bytes, int):
        raise TypeError(f"threshold_bytes must be an int, got {type(threshold_bytes).__name__}")
    if not 0 < threshold_bytes < 2**31:
        raise ValueError(f"threshold_bytes must be in (0, 2**31), got {threshold_bytes}")
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    if os.environ.get("LD_PRELOAD") or any(os.environ.get(k) for k in _MALLOC_ENV):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # The trim threshold too: otherwise a large block freed at the top of
    # the heap is handed back to the OS at once.
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold_bytes)) and bool(mallopt(_M_TRIM_THRESHOLD, threshold_bytes))


def as_language_model(model: Any) -> Any:
    """``model`` itself if it implements :class:`LanguageModel`, else an
    :class:`HFModel` around it."""
    if isinstance(model, LanguageModel):
        return model
    return HFModel(model)


# --------------------------------------------------------------------------
# Exact table LM
# --------------------------------------------------------------------------


@dataclass
class TableState:
    """Token prefixes (prompt included) of the rows of a :class:`TableLM` batch."""

    prefixes: List[Tuple[int, ...]]
    started: bool = False


NextProbs = Callable[[Tuple[int, ...]], Sequence[float]]


class TableLM:
    """An exact LM over a handful of tokens with explicit byte strings.

    ``next_probs(prefix)`` gives the next-token distribution (length ``V``,
    summing to 1) after the token tuple ``prefix``; results are memoised per
    prefix. ``eos_token_id`` ends a sequence; its byte string must be
    ``None`` (a special token). If ``max_len`` is given, a prefix of
    ``max_len - 1`` tokens is followed by EOS with probability 1, so every
    sequence has at most ``max_len`` tokens, EOS included, and the model's
    distribution over complete sequences is finite and exactly enumerable
    with :meth:`sequences`.

    ``vocabulary`` is the matching :class:`tokensieve.Vocabulary`, for
    compiling constraints.
    """

    def __init__(
        self,
        token_bytes: Sequence[Optional[bytes]],
        next_probs: NextProbs,
        eos_token_id: int,
        *,
        max_len: Optional[int] = None,
        dtype: Any = None,
    ):
        self.token_bytes: List[Optional[bytes]] = list(token_bytes)
        self.vocab_size = len(self.token_bytes)
        if not 0 <= eos_token_id < self.vocab_size:
            raise ValueError(f"eos_token_id {eos_token_id} out of range")
        if self.token_bytes[eos_token_id] is not None:
            raise ValueError("the EOS token's bytes must be None (a special token)")
        if max_len is not None and max_len < 1:
            raise ValueError("max_len must be at least 1")
        self.eos_token_id = int(eos_token_id)
        self.max_len = max_len
        self._next = next_probs
        self._memo: Dict[Tuple[int, ...], np.ndarray] = {}
        self._memo_lp: Dict[Tuple[int, ...], np.ndarray] = {}
        self.vocabulary = _core.Vocabulary(token_bytes=self.token_bytes, eos_token_ids=[self.eos_token_id])
        self._dtype = dtype

    # -- construction helpers -------------------------------------------------

    @classmethod
    def bigram(
        cls,
        token_bytes: Sequence[Optional[bytes]],
        initial: Sequence[float],
        transition: Any,
        eos_token_id: int,
        *,
        max_len: Optional[int] = None,
    ) -> "TableLM":
        """A bigram model: ``initial[t]`` for the first token,
        ``transition[prev][t]`` afterwards (rows summing to 1)."""
        init = np.asarray(initial, dtype=np.float64)
        trans = np.asarray(transition, dtype=np.float64)
        v = len(token_bytes)
        if init.shape != (v,) or trans.shape != (v, v):
            raise ValueError(f"initial must have shape ({v},) and transition ({v}, {v})")

        def next_probs(prefix: Tuple[int, ...]) -> Sequence[float]:
            row = init if not prefix else trans[prefix[-1]]
            return cast("Sequence[float]", row)  # a float64 row: indexable floats

        return cls(token_bytes, next_probs, eos_token_id, max_len=max_len)

    # -- exact distribution ---------------------------------------------------

    def probs(self, prefix: Sequence[int]) -> np.ndarray:
        """The next-token distribution after ``prefix`` (float64, length V)."""
        key = tuple(int(t) for t in prefix)
        p = self._memo.get(key)
        if p is None:
            if self.max_len is not None and len(key) >= self.max_len - 1:
                p = np.zeros(self.vocab_size)
                p[self.eos_token_id] = 1.0
            else:
                p = np.array(self._next(key), dtype=np.float64)
                if p.shape != (self.vocab_size,):
                    raise ValueError(f"next_probs{key} has shape {p.shape}, expected ({self.vocab_size},)")
                if np.any(p < 0) or not math.isclose(float(p.sum()), 1.0, rel_tol=0, abs_tol=1e-9):
                    raise ValueError(f"next_probs{key} is not a probability vector: {p}")
            self._memo[key] = p
        return p

    def _logprobs(self, prefix: Tuple[int, ...]) -> np.ndarray:
        lp = self._memo_lp.get(prefix)
        if lp is None:
            with np.errstate(divide="ignore"):
                lp = np.log(self.probs(prefix))
            self._memo_lp[prefix] = lp
        return lp

    def text(self, tokens: Sequence[int]) -> bytes:
        """Concatenated bytes of ``tokens`` (EOS and other specials add nothing)."""
        return b"".join(self.token_bytes[t] or b"" for t in tokens)

    def sequences(
        self,
        *,
        max_len: Optional[int] = None,
        prefix_ok: Optional[Callable[[bytes], bool]] = None,
        min_prob: float = 0.0,
    ) -> Iterator[Tuple[Tuple[int, ...], float]]:
        """Every complete sequence (ending with EOS, EOS included) of at most
        ``max_len`` tokens (default: the model's ``max_len``, required if
        neither is set) with its probability, by depth-first enumeration.

        ``prefix_ok(bytes)`` prunes prefixes whose text can no longer lead
        anywhere useful (e.g. not a viable regex prefix); ``min_prob`` drops
        branches of probability at most ``min_prob`` (0: only impossible ones).
        """
        limit = max_len if max_len is not None else self.max_len
        if limit is None:
            raise ValueError("sequences() needs max_len (or a TableLM built with max_len)")
        eos = self.eos_token_id

        def walk(prefix: Tuple[int, ...], prob: float, text: bytes) -> Iterator[Tuple[Tuple[int, ...], float]]:
            p = self.probs(prefix)
            for t in range(self.vocab_size):
                q = prob * float(p[t])
                if q <= min_prob:
                    continue
                seq = prefix + (t,)
                if t == eos:
                    yield seq, q
                    continue
                if len(seq) >= limit:
                    continue
                tb = self.token_bytes[t]
                if tb is None:
                    continue  # other special tokens never appear in constrained text
                nt = text + tb
                if prefix_ok is not None and not prefix_ok(nt):
                    continue
                yield from walk(seq, q, nt)

        yield from walk((), 1.0, b"")

    # -- LanguageModel protocol -------------------------------------------

    def start(self, prompt_ids: Sequence[int], n: int) -> TableState:
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        p = tuple(int(t) for t in prompt_ids)
        return TableState(prefixes=[p] * n)

    def next_logprobs(self, state: TableState, last_tokens: Optional[Any]) -> Any:
        import torch

        if last_tokens is not None:
            toks = [int(t) for t in np.asarray(torch.as_tensor(last_tokens).cpu()).reshape(-1)]
            if len(toks) != len(state.prefixes):
                raise ValueError(f"{len(toks)} tokens for a batch of {len(state.prefixes)} rows")
            state.prefixes = [p + (t,) for p, t in zip(state.prefixes, toks)]
        elif state.started:
            raise RuntimeError("next_logprobs(state, None) is only valid right after start()")
        state.started = True
        rows = np.stack([self._logprobs(p) for p in state.prefixes])
        return torch.from_numpy(rows) if self._dtype is None else torch.from_numpy(rows).to(self._dtype)

    def reorder(self, state: TableState, rows: Any) -> TableState:
        import torch

        idx = np.asarray(torch.as_tensor(rows).cpu(), dtype=np.int64).reshape(-1)
        state.prefixes = [state.prefixes[i] for i in idx]
        return state
