"""Sequential Monte Carlo over constrained generation.

Why: masking disallowed tokens step by step and renormalising (what a
logits processor does) does *not* sample from the model conditioned on the
constraint. Each step divides a string's probability by the allowed mass
``Z_t`` of that step, so strings that pass through low-mass steps are
over-sampled. With ``p(a) = 0.9``, ``p(b | a) = 0.01`` and the language
``{ab, b}``, the exact conditional gives ``"ab"`` probability
``0.009 / 0.109 = 0.083``; masked decoding gives it ``0.9``.

SMC fixes this: ``n_particles`` sequences are extended with the masked
proposal ``q(t) = p(t) 1[t allowed] / Z_t``, and each carries the importance
weight ``prod_t Z_t = p(string) / q(string)``. Whenever the effective sample
size drops below ``ess_threshold * n_particles`` the population is
resampled (particles copied in proportion to their weights), which keeps
the computation on the strings that matter. The weighted particles
estimate the conditional distribution, and the mean weight estimates
``P(constraint)`` under the model (unbiased for ``Z``, not for ``log Z``).

Entry point: :func:`generate`. Models follow the small protocol of
:mod:`tokensieve.models` (Hugging Face causal LMs are wrapped
automatically).

One step, for the ``L`` live particles (all in one batched forward):

1. ``lm.next_logprobs`` -> ``(L, V)`` log-probs;
2. the particles' matchers fill a packed bitmask (Rust, in parallel);
3. ``log Z_t`` = logsumexp of the allowed log-probs (EOS included when the
   text so far is in the language), with the running sums that serve as
   each row's CDF (on CPU one pass of the Rust kernel behind
   ``_core.masked_rows_into``, rows in parallel; on other devices dense
   torch tensors);
4. the weights get ``+ log Z_t`` (the Rust :class:`tokensieve._core.Population`
   keeps them); a row whose allowed mass is 0 is dead (weight 0);
5. if ``ESS < ess_threshold * N`` and some particle is live, the population
   is resampled *before* the tokens are drawn: ``Z_t`` depends only on the
   prefix, so this is the "fully adapted" order, and copies of one ancestor
   then draw independent tokens. Token histories, matchers (copied for
   duplicates) and statuses are reordered;
6. each live particle draws its token from its (ancestor's) allowed,
   renormalised distribution by inverse CDF, and its matcher consumes it; a
   particle that drew EOS, or reached ``max_new_tokens``, is finished: it
   stops extending and keeps its weight;
7. the model's rows (its KV cache) are index-selected once for the next
   step: resampled ancestors in, finished particles out; never recomputed.

The model's batch holds the live particles only (see
:mod:`tokensieve.models`), so all its rows have the same length.

**Python potentials** (``generate(..., potentials=[...])``, see
:func:`generate` and :mod:`tokensieve.potentials`) use a second driver: the
compiled constraint (if any) masks each row first (the same Rust kernel
gives each row's allowed mass ``Z_t``), then each live particle draws its
token by AWRS (:func:`tokensieve._core.awrs_sample` on the raw row with the
packed mask and the kernel's maximum and block sums, so that it needs no
O(V) pass of its own; the potential as accept function), rejection, direct
evaluation or the plain mask, and its weight gets ``log Z_t`` + the
sampler's log weight + the change of the potentials' prefix log weight
(the twist, replaced by the complete log weight at EOS). Since the weight
depends on the draw, resampling follows the draws (the usual order), and
the model's rows are reordered once per step as above.

For the CLI: :func:`print_result` / :func:`format_result`.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple, Union

import numpy as np

from . import _core
from .models import as_language_model
from .potentials import FunctionPotential, Mask, Potential, Product, _as_log_weight, score

__all__ = [
    "RESAMPLERS",
    "SAMPLERS",
    "SMCResult",
    "format_result",
    "generate",
    "masked_decode",
    "print_result",
]

#: Accepted values of ``resampler``.
RESAMPLERS = ("systematic", "multinomial", "stratified", "residual")

#: Accepted values of ``sampler`` (how a step's token is proposed when there
#: are Python potentials; see :func:`generate`).
SAMPLERS = ("awrs", "rejection", "mask", "direct")

#: Particle status codes (``SMCResult.status``).
LIVE, EOS, MAX_TOKENS, DEAD = 0, 1, 2, 3
_STATUS_NAMES = {LIVE: "live", EOS: "eos", MAX_TOKENS: "max_new_tokens", DEAD: "dead"}

#: Rows per call of ``_core.awrs_sample_rows`` (each row holds an O(V)
#: sum tree while it waits for its answers: this bounds that memory, and
#: the threads, to ``_AWRS_CHUNK`` rows at a time).
_AWRS_CHUNK = 32

#: Clock of ``SMCResult.timings`` (benchmarks may swap in ``time.process_time``).
_clock = time.perf_counter

_TIMING_KEYS = ("forward", "mask", "weights", "resample", "sample", "advance", "reorder")


# --------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------


@dataclass
class SMCResult:
    """The weighted particle population at the end of :func:`generate`.

    Per particle (index ``i`` in ``0..n_particles``):

    * ``token_ids[i]``: generated token ids (EOS not included);
    * ``text_bytes[i]`` / ``texts[i]``: their bytes as the constraint sees
      them (UTF-8-decoded with replacement for ``texts``);
    * ``status[i]``: ``"eos"`` (complete: the string is in the language),
      ``"max_new_tokens"`` (a viable prefix cut at the token limit) or
      ``"dead"`` (every allowed token had probability 0, or every one was
      rejected by a potential; weight 0);
    * ``log_weights[i]`` and ``weights[i]`` (normalised, sum 1).

    Population-level:

    * ``log_z``: estimate of ``log P(constraint)`` under the model (more
      exactly, of the probability of drawing a string that is complete in the
      language within ``max_new_tokens`` tokens *or* a viable prefix of
      ``max_new_tokens`` tokens; equal to ``log P(constraint)`` when every
      particle finished with EOS). Its exponential is unbiased for ``Z``.
    * ``log_z_complete``: the same restricted to complete particles (an
      estimate of ``log P(string in language, <= max_new_tokens tokens)``).
    * ``ess``: effective sample size after each step's weight update (before
      any resampling); ``resampled[t]``: whether step ``t`` resampled.
    * ``timings``: seconds spent per phase (``forward`` is the model;
      everything else is SMC overhead); ``num_steps``.
    """

    token_ids: List[List[int]]
    text_bytes: List[bytes]
    texts: List[str]
    status: List[str]
    log_weights: np.ndarray
    weights: np.ndarray
    log_z: float
    log_z_complete: float
    ess: List[float]
    resampled: List[bool]
    num_steps: int
    n_particles: int
    timings: Dict[str, float] = field(default_factory=dict)
    #: Texts passed to the potentials by the token sampler (AWRS /
    #: rejection / direct; 0 on the compiled-constraint-only path).
    potential_calls: int = 0
    #: Particle-steps that drew a token with potentials (the denominator of
    #: :meth:`calls_per_step`).
    particle_steps: int = 0
    #: Particle-steps on which AWRS / rejection hit ``max_calls`` and
    #: evaluated the remaining tokens at once.
    fell_back: int = 0

    @property
    def complete(self) -> np.ndarray:
        """Boolean array: particle ended with EOS (its text is in the language)."""
        return np.array([s == "eos" for s in self.status], dtype=bool)

    @property
    def z(self) -> float:
        """``exp(log_z)``."""
        return math.exp(self.log_z)

    def posterior(self, *, complete_only: bool = False, as_bytes: bool = False) -> Dict[Any, float]:
        """Distinct strings with their summed normalised weights, heaviest first.

        Keys are ``texts`` (``str``) or, with ``as_bytes=True``, ``text_bytes``
        (distinct byte strings can decode to the same ``str`` when one ends in
        a cut UTF-8 sequence). ``complete_only=True`` keeps complete particles
        only and renormalises over them (the estimate of the conditional
        distribution over complete strings); empty if there are none.
        """
        keys = self.text_bytes if as_bytes else self.texts
        acc: Dict[Any, float] = {}
        for k, w, s in zip(keys, self.weights, self.status):
            if w <= 0.0 or (complete_only and s != "eos"):
                continue
            acc[k] = acc.get(k, 0.0) + float(w)
        total = sum(acc.values())
        if complete_only and total > 0:
            acc = {k: v / total for k, v in acc.items()}
        return dict(sorted(acc.items(), key=lambda kv: (-kv[1], str(kv[0]))))

    def best(self) -> Optional[str]:
        """The string with the largest posterior weight (``None`` if none)."""
        post = self.posterior()
        return next(iter(post), None)

    def calls_per_step(self) -> float:
        """Mean potential evaluations per particle and step (compare with |V|)."""
        return self.potential_calls / self.particle_steps if self.particle_steps else 0.0

    def overhead_per_step(self) -> float:
        """Mean seconds per step outside the model forward."""
        if not self.num_steps:
            return 0.0
        return sum(v for k, v in self.timings.items() if k != "forward") / self.num_steps


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _encode_prompt(tokenizer: Any, prompt: Any) -> List[int]:
    if prompt is None:
        return []
    if isinstance(prompt, str):
        if tokenizer is None:
            if prompt == "":
                return []
            raise ValueError("a text prompt needs a tokenizer (or pass token ids)")
        enc = tokenizer.encode(prompt)
        ids = getattr(enc, "ids", enc)  # tokenizers.Tokenizer returns an Encoding
        return [int(t) for t in ids]
    return [int(t) for t in prompt]


def _vocab_from_tokenizer(tokenizer: Any) -> Any:
    if hasattr(tokenizer, "to_str") and not hasattr(tokenizer, "backend_tokenizer"):
        return _core.Vocabulary(tokenizer_json=tokenizer.to_str())  # tokenizers.Tokenizer
    return _core.Vocabulary.from_huggingface(tokenizer)


def _resolve_vocab(vocab: Any, lm: Any, tokenizer: Any) -> Any:
    if vocab is not None:
        return vocab
    v = getattr(lm, "vocabulary", None)
    if v is not None:
        return v
    if tokenizer is not None:
        return _vocab_from_tokenizer(tokenizer)
    return None


def _unpack_bits(bitmask: np.ndarray, vocab: int) -> np.ndarray:
    """``(rows, vocab)`` uint8 0/1 array of allowed tokens from a packed
    int32 bitmask (little-endian hosts: bit ``t % 32`` of word ``t // 32`` is
    bit ``t % 8`` of byte ``t // 8``)."""
    bits = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little")
    if bits.shape[1] >= vocab:
        return bits[:, :vocab]
    return np.pad(bits, ((0, 0), (0, vocab - bits.shape[1])))


def _allowed_mask(bitmask: np.ndarray, vocab: int, device: Any) -> Any:
    """Boolean ``(rows, vocab)`` tensor on ``device`` from a packed int32 bitmask."""
    import torch

    if device.type == "cpu" and sys.byteorder == "little":
        return torch.from_numpy(_unpack_bits(bitmask, vocab)).view(torch.bool)
    from ._bitmask import unpack_bitmask

    return unpack_bitmask(torch.from_numpy(bitmask).to(device), vocab)


def _masked_cdf(logp: Any, allowed: Any, out: Any = None) -> Tuple[Any, Any]:
    """Per row, the allowed part of ``softmax(logp)``: returns ``(cdf, log_z)``.

    ``allowed`` is a bool or 0/1 tensor of ``logp``'s shape. ``cdf`` is the
    running sum over the row of ``exp(logp - m) * allowed`` (written to
    ``out`` if given, else a new tensor),
    ``m`` the row's largest log-prob; ``log_z = m + log(sum)`` is the log of
    the row's allowed probability mass (``-inf`` when no allowed token has
    positive probability). Shifting by the row's overall maximum avoids a
    masked copy of ``logp`` (a masked ``-inf`` fill and ``exp(-inf)`` are the
    slow operations on CPU); rows whose allowed mass underflows (below
    ``1e-30`` of the top token's) are redone with the allowed maximum.
    """
    import torch

    mx = logp.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    mask = allowed if allowed.dtype in (logp.dtype, torch.uint8) else allowed.to(logp.dtype)
    e = torch.sub(logp, mx, out=out) if out is not None else logp - mx
    e.exp_().mul_(mask)
    total = e.sum(dim=-1, keepdim=True)
    tiny = (total < 1e-30).squeeze(1)
    if bool(tiny.any()):
        rows = tiny.nonzero().squeeze(1)
        sub = torch.where(mask[rows] != 0, logp[rows], torch.tensor(float("-inf"), dtype=logp.dtype, device=logp.device))
        smx = sub.amax(dim=-1, keepdim=True)
        smx = torch.where(torch.isfinite(smx), smx, torch.zeros_like(smx))
        e[rows] = (sub - smx).exp_()
        mx[rows] = smx
        total[rows] = e[rows].sum(dim=-1, keepdim=True)
    log_z = (mx + torch.log(total)).squeeze(1)
    return e.cumsum_(dim=-1), log_z


def _sample_rows(cdf: Any, generator: Any) -> Any:
    """One token per row of ``cdf`` (from :func:`_masked_cdf`), by inverse CDF.

    Disallowed tokens own zero-width intervals, and ``right=True`` search
    never lands on one. Rows with total 0 must not be passed.
    """
    import torch

    total = cdf[:, -1:]
    u = torch.rand(total.shape, generator=generator, dtype=cdf.dtype, device=cdf.device) * total
    tok = torch.searchsorted(cdf, u, right=True).squeeze(1)
    over = tok >= cdf.shape[1]
    if bool(over.any()):  # u rounded up to the total: take the last allowed token
        rows = over.nonzero().squeeze(1)
        tok[rows] = (cdf[rows] < total[rows]).sum(dim=-1)
    return tok


def _masked_sample(logp: Any, allowed: Any, generator: Any) -> Tuple[Any, Any]:
    """Draw one token per row from ``softmax(logp)`` restricted to ``allowed``.

    Returns ``(tokens, log_z)`` (see :func:`_masked_cdf`); a row whose
    ``log_z`` is ``-inf`` gets a meaningless token.
    """
    import torch

    cdf, log_z = _masked_cdf(logp, allowed)
    ok = torch.isfinite(log_z)
    tok = torch.zeros(cdf.shape[0], dtype=torch.long, device=cdf.device)
    if bool(ok.all()):
        return _sample_rows(cdf, generator), log_z
    idx = ok.nonzero().squeeze(1)
    if idx.numel():
        tok[idx] = _sample_rows(cdf.index_select(0, idx), generator)
    return tok, log_z


class _DenseMasked:
    """The masked next-token distributions of all rows, in torch, on the
    logits' device (the path for GPUs): one full-width CDF per row, from
    :func:`_masked_cdf`, and draws by ``searchsorted``."""

    def __init__(self, logp: Any, bitmask: np.ndarray):
        self.vocab = logp.shape[1]
        self.cdf, lz = _masked_cdf(logp, _allowed_mask(bitmask, self.vocab, logp.device))
        self.log_z = lz.double().cpu().numpy()

    def sample(self, src: np.ndarray, generator: Any) -> np.ndarray:
        import torch

        cdf = self.cdf
        rows, vocab = cdf.shape
        total = cdf[:, -1]
        u01 = torch.rand(src.size, generator=generator, dtype=cdf.dtype, device=cdf.device)
        if src.size == rows and np.array_equal(src, np.arange(rows)):
            sel, tot = cdf, total
        else:
            src_t = torch.from_numpy(src).to(cdf.device)
            sel, tot = cdf.index_select(0, src_t), total[src_t]
        tok = torch.searchsorted(sel, (u01 * tot).unsqueeze(1), right=True).squeeze(1).cpu().numpy()
        for j in np.flatnonzero(tok >= vocab):  # u rounded up to the total
            row = cdf[int(src[j])]
            tok[j] = int((row < row[-1]).sum())  # the last token with positive mass
        return tok


class _CpuMasked:
    """The masked next-token distributions of all rows of CPU log-probs, by
    the Rust kernel (``tokensieve._core.masked_rows_into``; semantics in the
    crate's ``masked`` module): one pass over the ``rows x V`` log-probs, rows
    in parallel with the GIL released, gives per row ``log Z`` (shifted by
    the row's *allowed* maximum, so it never underflows), that maximum and
    cumulative sums over blocks of ``_core.MASKED_BLOCK`` tokens; a draw
    finds its block and recomputes that block's weights only. float32
    log-probs are exponentiated in float32 (their own precision), float64
    in float64. Allowed positions holding NaN or ``+inf`` raise
    ``ValueError``. Keeps references
    to the log-probs and bitmask it was built on (the draws read them).

    One row repeated (the first step: ``HFModel`` hands out the prompt's
    row expanded to ``n`` rows, stride 0) under one mask is computed once
    and broadcast, instead of copied to ``n`` rows and passed over ``n``
    times; ``_lp`` and the outputs are then read-only broadcast views."""

    cdf = None

    def __init__(self, logp: Any, bitmask: np.ndarray):
        import torch

        lp = logp.detach()
        if lp.dtype not in (torch.float32, torch.float64):
            lp = lp.float()
        bm = np.ascontiguousarray(bitmask, dtype=np.int32)
        rows, vocab = lp.shape
        if bm.ndim != 2 or bm.shape[0] != rows:
            raise ValueError(f"bitmask of shape {bm.shape} for {rows} rows of log-probs")
        self._one = rows > 1 and lp.stride(0) == 0 and bool((bm == bm[:1]).all())
        if self._one:  # one row, repeated: compute it once
            lp, bm = lp[:1], bm[:1]
        lp = lp.contiguous().numpy()
        nb = -(-vocab // _core.MASKED_BLOCK)
        k = lp.shape[0]
        self.log_z = np.empty(k)
        self._max = np.empty(k)
        self._cum = np.empty((k, nb))
        self._lp1, self._bm1 = lp, bm  # what the kernels read
        _core.masked_rows_into(lp, bm, self.log_z, self._max, self._cum)
        if self._one:
            self.log_z = np.broadcast_to(self.log_z, (rows,))
            self._max = np.broadcast_to(self._max, (rows,))
            self._cum = np.broadcast_to(self._cum, (rows, nb))
            lp, bm = np.broadcast_to(lp, (rows, vocab)), np.broadcast_to(bm, (rows, bm.shape[1]))
        self._lp, self._bm = lp, bm  # (rows, ...) views: row k is C-contiguous

    def sample(self, src: np.ndarray, generator: Any) -> np.ndarray:
        import torch

        u01 = torch.rand(src.size, generator=generator, dtype=torch.float64).numpy()
        src = np.ascontiguousarray(src, dtype=np.int64)
        out = np.empty(src.size, dtype=np.int64)
        k = (0 * src) if self._one else src
        _core.masked_draw_into(self._lp1, self._bm1, self._max[: self._lp1.shape[0]],
                               np.ascontiguousarray(self._cum[: self._lp1.shape[0]]), k, u01, out)
        return out

    def row_log_norms(self, ones: List[np.ndarray]) -> np.ndarray:
        """:func:`_row_log_norms` of the log-probs (once for a repeated row)."""
        out = _row_log_norms(self._lp1, ones)
        return np.broadcast_to(out, (self._lp.shape[0],)) if self._one else out


def _masked_dist(logp: Any, bitmask: np.ndarray) -> Any:
    """The masked distributions of all rows (``log_z`` and ``sample``): the
    Rust kernel on CPU, torch on other devices."""
    import torch

    if logp.dtype not in (torch.float32, torch.float64):
        logp = logp.float()  # half-precision running sums would be too coarse
    if logp.device.type == "cpu":
        return _CpuMasked(logp, bitmask)
    return _DenseMasked(logp, bitmask)


def _uses_logits(lm: Any) -> bool:
    """Whether ``lm`` hands out raw logits (``next_logits``, e.g.
    :class:`~tokensieve.models.HFModel`) on the CPU: the drivers then
    normalise them with the Rust kernel instead of a ``log_softmax``."""
    dev = getattr(lm, "device", None)
    return callable(getattr(lm, "next_logits", None)) and getattr(dev, "type", "cpu") == "cpu"


def _row_log_norms(lp: np.ndarray, ones: List[np.ndarray]) -> np.ndarray:
    """``logsumexp`` of every row of the contiguous float32/float64 ``lp``,
    by the masked kernel with an all-ones mask (one read of each row, in
    its own precision, rows in parallel: about half of a ``log_softmax``
    over the same rows, which also writes them). ``ones`` caches the mask."""
    rows, width = lp.shape
    words = _core.bitmask_words(width)
    if not ones or ones[0].shape[0] < rows or ones[0].shape[1] != words:
        ones[:] = [np.full((rows, words), -1, dtype=np.int32)]
    out = np.empty(rows)
    _core.masked_rows_into(lp, ones[0][:rows], out, np.empty(rows), np.empty((rows, -(-width // _core.MASKED_BLOCK))))
    return out


def _full_norms(dist: "_CpuMasked", ones: List[np.ndarray], step: int) -> np.ndarray:
    """Every row's ``logsumexp`` (:meth:`_CpuMasked.row_log_norms`); NaN or
    ``+inf`` anywhere in the logits is a ``ValueError`` naming the step."""
    try:
        return dist.row_log_norms(ones)
    except ValueError as e:
        raise ValueError(f"step {step}: {e}") from None


def _normalised(lz_mask: np.ndarray, norm: np.ndarray, step: int) -> np.ndarray:
    """Log allowed mass of the log-probs from that of the logits
    (``lz_mask``) and each row's log normaliser; ``-inf`` stays ``-inf``.
    A NaN normaliser (NaN in the logits) is a ``ValueError``, as NaN in
    log-probs is."""
    if np.isnan(norm).any():
        raise ValueError(f"step {step}: the model's logits hold NaN")
    with np.errstate(invalid="ignore"):
        out: np.ndarray = np.where(np.isfinite(lz_mask), lz_mask - norm, -math.inf)
    return out


def _seeds(seed: Optional[int]) -> Tuple[int, int]:
    ss = np.random.SeedSequence(seed)
    a, b = ss.generate_state(2, dtype=np.uint64)
    return int(a) & (2**63 - 1), int(b) & (2**63 - 1)


def _check_args(n_particles: int, ess_threshold: float, resampler: str, max_new_tokens: int) -> None:
    if not isinstance(n_particles, (int, np.integer)) or n_particles < 1:
        raise ValueError(f"n_particles must be a positive int, got {n_particles!r}")
    if not (0.0 <= float(ess_threshold) <= 1.0):
        raise ValueError(f"ess_threshold must be in [0, 1], got {ess_threshold!r}")
    if resampler not in RESAMPLERS:
        raise ValueError(f"resampler must be one of {RESAMPLERS}, got {resampler!r}")
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")


# --------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------


def generate(
    model: Any,
    tokenizer: Any,
    prompt: Union[str, Sequence[int], None],
    constraint: Any = None,
    *,
    potentials: Optional[Sequence[Any]] = None,
    sampler: str = "awrs",
    critic: Any = None,
    n_particles: int = 32,
    ess_threshold: float = 0.5,
    resampler: str = "systematic",
    resampling: Optional[str] = None,
    max_new_tokens: int = 64,
    seed: Optional[int] = None,
    vocab: Any = None,
    profile: bool = False,
    max_calls: int = 1000,
    batch_potentials: Optional[bool] = None,
) -> SMCResult:
    """Sample ``n_particles`` weighted continuations of ``prompt`` under ``constraint``.

    ``model``: a :class:`tokensieve.models.LanguageModel` (e.g.
    :class:`~tokensieve.models.TableLM`, :class:`~tokensieve.models.HFModel`)
    or a Hugging Face causal LM, wrapped in ``HFModel``.
    ``tokenizer``: a ``transformers`` tokenizer or ``tokenizers.Tokenizer``;
    encodes a text ``prompt`` and provides the vocabulary (``None`` is fine
    with token-id prompts and a model that has a ``vocabulary``).
    ``prompt``: text, token ids, or ``None``/``""`` (a Hugging Face model then
    starts from its BOS token). It is not constrained.
    ``constraint``: a :class:`tokensieve.Constraint`, or a regex string
    compiled against the vocabulary. The model's logits must be indexed by
    the same token ids; columns beyond the constraint's vocabulary are never
    allowed.
    ``ess_threshold``: resample when ``ESS < ess_threshold * n_particles``
    (0 never resamples: plain importance sampling; 1 resamples at every step
    with unequal weights). ``resampler``: one of :data:`RESAMPLERS`.
    ``seed``: makes the run deterministic (token draws and resampling).
    ``vocab``: the :class:`tokensieve.Vocabulary` used for texts (default: the
    model's ``vocabulary`` attribute, else built from ``tokenizer``).
    ``profile``: synchronise the device between phases so that
    ``SMCResult.timings`` are exact on GPUs (slower).

    **Python potentials.** ``potentials``: a list of
    :class:`tokensieve.potentials.Potential` objects or plain functions of
    the decoded bytes (``bool`` or a log weight; see
    :mod:`tokensieve.potentials`), and at most one compiled
    :class:`tokensieve.Constraint` (or ``constraint=``). The target is then
    ``p(text) x prod_k complete_k(text)`` over texts in the constraint's
    language ending with EOS. The compiled constraint always acts first, as
    a mask: the Python functions are only asked about tokens it allows, and
    each step's weight includes the mask's allowed mass. A potential's
    ``prefix`` is evaluated on the decoded bytes so far plus the candidate
    token's bytes (``complete`` on the bytes so far for EOS); ``-inf``
    rejects the token, a finite value twists the weights (the potential
    also acts as an SMC critic), and the twist is undone when the particle
    ends with EOS, so the target is unchanged (a particle cut at
    ``max_new_tokens`` keeps its prefix weight: it is a prefix, not a text
    of the target). ``sampler`` chooses how a token is
    proposed under the potentials:

    * ``"awrs"`` (default): adaptive weighted rejection sampling
      (:func:`tokensieve._core.awrs_sample`): tokens are asked in the
      model's order without replacement until one is accepted, plus a
      second round for an unbiased weight, so a potential the model mostly
      respects costs a handful of calls per step rather than ``|V|``;
      ``max_calls`` bounds them (then the rest are evaluated at once);
    * ``"rejection"``: the same with replacement (Haldane weight);
    * ``"direct"``: every mask-allowed token is scored and the token is drawn
      exactly from ``p x exp(prefix)`` (the locally optimal proposal; ``|V|``
      calls per step);
    * ``"mask"``: draw from the masked model only; the potentials weight the
      particle afterwards (a rejected token kills it).

    ``batch_potentials`` (AWRS / rejection): ask the potential about all
    particles' candidates in one ``batch_prefix`` call per round (the rows'
    samplers run in parallel threads, :func:`tokensieve._core.awrs_sample_rows`,
    ``_AWRS_CHUNK`` rows at a time), rather than one particle after the
    other. Default: when the potential has its own ``batch_prefix`` /
    ``batch_complete`` (a model, a process pool, a database round trip);
    for plain functions the row-by-row path costs less. Both give the same
    result for a seed.

    ``critic``: a further potential used only on the drawn token: its prefix
    log weight twists the weights (``-inf`` kills the particle) and its
    complete log weight joins the target.

    With neither ``potentials`` nor ``critic`` the compiled constraint is
    sampled by the fully adapted driver described in the module doc
    (``sampler`` is ignored). ``resampling`` is an alias of ``resampler``.

    Particles that every token was rejected for end with weight 0
    (``"dead"``); if all do, the result has an empty posterior and
    ``log_z = -inf`` and a ``RuntimeWarning`` is issued. An exception raised
    by a potential propagates with the particle and step added to its
    message; a potential returning NaN or a non-number raises ``TypeError``.

    Raises ``ValueError`` for bad arguments, and when the model returns NaN
    or ``+inf`` for a token the constraint allows (on CPU, or always with
    potentials); ``TypeError`` / ``ValueError`` for log-probs that are not a
    ``(rows, V)`` floating-point tensor.
    """
    import torch

    if resampling is not None:
        resampler = resampling
    _check_args(n_particles, ess_threshold, resampler, max_new_tokens)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if isinstance(max_calls, bool) or not isinstance(max_calls, (int, np.integer)) or max_calls < 1:
        raise ValueError(f"max_calls must be a positive int, got {max_calls!r}")
    lm = as_language_model(model)
    vocab = _resolve_vocab(vocab, lm, tokenizer)
    if potentials is not None or critic is not None or constraint is None:
        constraint, pot, crit = _split_potentials(constraint, potentials, critic)
        if isinstance(constraint, str):
            if vocab is None:
                raise ValueError("a regex constraint needs a tokenizer or vocab to compile against")
            constraint = _core.compile_regex(constraint, vocab)
        if vocab is None:
            raise ValueError("no vocabulary: pass a tokenizer or vocab=")
        return _generate_potentials(
            lm, vocab, _encode_prompt(tokenizer, prompt), constraint, pot, crit,
            sampler=sampler, n=int(n_particles), ess_threshold=float(ess_threshold), resampler=resampler,
            max_new_tokens=int(max_new_tokens), seed=seed, max_calls=int(max_calls),
            batch_rows=_has_batch(pot) if batch_potentials is None else bool(batch_potentials),
        )
    if isinstance(constraint, str):
        if vocab is None:
            raise ValueError("a regex constraint needs a tokenizer or vocab to compile against")
        constraint = _core.compile_regex(constraint, vocab)
    if vocab is None:
        raise ValueError("no vocabulary: pass a tokenizer or vocab=")
    prompt_ids = _encode_prompt(tokenizer, prompt)

    n = int(n_particles)
    token_seed, pop_seed = _seeds(seed)
    # Weights, ESS, resampling and the running log Z: the Rust Population
    # (resampling resets every log weight to log_z, so log_z is invariant).
    pop = _core.Population(n, ess_threshold=float(ess_threshold), resampler=resampler, seed=pop_seed)
    generators: Dict[Any, Any] = {}

    timings = {k: 0.0 for k in _TIMING_KEYS}
    clock = _clock
    sync: Any = lambda: None

    proto = _core.Matcher(constraint)
    matchers = [proto] + [proto.copy() for _ in range(n - 1)]
    tokens: List[List[int]] = [[] for _ in range(n)]
    status = np.zeros(n, dtype=np.int8)
    live = np.arange(n)  # particle index of each model row
    bitmask = np.zeros((n, _core.bitmask_words(constraint.vocab_size)), dtype=np.int32)
    ess_hist: List[float] = []
    resampled: List[bool] = []

    raw = _uses_logits(lm)  # logits in, normalised by the kernel (see _row_log_norms)
    ones: List[np.ndarray] = []
    state = lm.start(prompt_ids, n)
    last: Optional[Any] = None
    steps = 0
    for step in range(int(max_new_tokens)):
        if live.size == 0:
            break
        steps += 1
        rows = live.size
        t0 = clock()
        logp = lm.next_logits(state, last) if raw else lm.next_logprobs(state, last)
        if profile and logp.device.type == "cuda":
            sync = torch.cuda.synchronize
        sync()
        t1 = clock()
        _check_logp(logp, rows, 0)
        bm = bitmask[:rows]
        _core.fill_next_token_bitmasks([matchers[i] for i in live], bm)
        sync()
        t1b = clock()
        if logp.dim() == 2 and logp.device.type != "cpu" and not logp.is_contiguous():
            logp = logp.contiguous()  # (on the CPU the kernel's class handles a repeated row itself)
        dist = _masked_dist(logp, bm)
        del logp
        lz_np = dist.log_z
        if raw and isinstance(dist, _CpuMasked):  # log allowed mass of the logits -> of the log-probs
            lz_np = _normalised(lz_np, _full_norms(dist, ones, step), step)
        sync()
        t2 = clock()

        # Weights first: Z_t depends only on the prefix, not on the token
        # about to be drawn, so the population can be resampled *before*
        # sampling ("fully adapted" SMC): copies of one ancestor then draw
        # independent tokens, which keeps more distinct paths alive than
        # resampling after the draw.
        inc = np.zeros(n)
        inc[live] = lz_np
        status[live[~np.isfinite(lz_np)]] = DEAD  # nothing allowed is possible
        pop.add_log_weights(inc)
        ess_hist.append(float(pop.ess))
        anc: Optional[np.ndarray] = None
        if np.any(status == LIVE):
            anc = pop.maybe_resample()
        resampled.append(anc is not None)
        # Model row of each particle that is live before resampling (-1 otherwise).
        row_of = np.full(n, -1, dtype=np.int64)
        row_of[live] = np.arange(rows)
        if anc is not None:
            anc = np.asarray(anc, dtype=np.int64)
            seen = np.zeros(n, dtype=bool)
            new_m = []
            for a in anc:
                if seen[a]:
                    new_m.append(matchers[a].copy())
                else:
                    seen[a] = True
                    new_m.append(matchers[a])
            matchers = new_m
            tokens = [list(tokens[a]) for a in anc]
            status = status[anc]
            row_of = row_of[anc]
        extend = np.flatnonzero(status == LIVE)  # particles drawing a token now
        src = row_of[extend]  # their rows in cdf / the model state
        t3 = clock()

        if extend.size == 0:
            live = extend
            timings["forward"] += t1 - t0
            timings["mask"] += t1b - t1
            timings["weights"] += t2 - t1b
            timings["resample"] += t3 - t2
            break
        dev = dist.cdf.device if dist.cdf is not None else torch.device("cpu")
        generator = generators.get(dev)
        if generator is None:
            generator = generators[dev] = torch.Generator(device=dev)
            generator.manual_seed(token_seed)
        tok_np = dist.sample(src, generator)
        del dist
        t4 = clock()

        at_limit = step + 1 >= max_new_tokens
        still = np.ones(extend.size, dtype=bool)
        for r, i in enumerate(extend):
            t = int(tok_np[r])
            m = matchers[i]
            if not m.consume_token(t):  # pragma: no cover - the mask forbids this
                raise RuntimeError(f"sampled token {t} is not allowed by the constraint")
            if m.eos_consumed or (m.is_terminated() and not m.allowed_tokens()):
                status[i] = EOS  # EOS consumed
                still[r] = False
            else:
                tokens[i].append(t)
                if at_limit:
                    status[i] = MAX_TOKENS
                    still[r] = False
        t5 = clock()

        live = extend[still]
        keep = src[still]
        if live.size and not (keep.size == rows and np.array_equal(keep, np.arange(rows))):
            state = lm.reorder(state, torch.from_numpy(keep))
        last = torch.from_numpy(tok_np[still])
        sync()
        t6 = clock()
        timings["forward"] += t1 - t0
        timings["mask"] += t1b - t1
        timings["weights"] += t2 - t1b
        timings["resample"] += t3 - t2
        timings["sample"] += t4 - t3
        timings["advance"] += t5 - t4
        timings["reorder"] += t6 - t5

    return _finish(pop, status, tokens, vocab, ess_hist, resampled, steps, n, timings)


def _split_potentials(
    constraint: Any, potentials: Optional[Sequence[Any]], critic: Any
) -> Tuple[Any, Optional[Potential], Optional[Potential]]:
    """``(mask constraint or None, product of the Python potentials or None,
    critic or None)`` from :func:`generate`'s arguments: compiled
    constraints in ``potentials`` become the mask (at most one in all),
    plain callables become :func:`tokensieve.potentials.potential`."""
    mask = constraint
    factors: List[Potential] = []
    for item in list(potentials or []):
        for f in item.factors if isinstance(item, Product) else [item]:
            if isinstance(f, (_core.Constraint, str, Mask)):
                if mask is not None:
                    raise ValueError("at most one compiled constraint (regex / grammar / JSON) per generate() call")
                mask = f.constraint if isinstance(f, Mask) else f
            elif isinstance(f, Potential):
                factors.append(f)
            elif callable(f):
                factors.append(FunctionPotential(f))
            else:
                raise TypeError(f"potentials: expected a Potential, a callable or a compiled Constraint, got {type(f).__name__}")
    pot: Optional[Potential] = None
    if len(factors) == 1:
        pot = factors[0]
    elif factors:
        pot = Product(factors)
    crit: Optional[Potential] = None
    if critic is not None:
        if isinstance(critic, Potential):
            crit = critic
        elif callable(critic):
            crit = FunctionPotential(critic)
        else:
            raise TypeError(f"critic: expected a Potential or a callable, got {type(critic).__name__}")
    return mask, pot, crit


def _has_batch(pot: Optional[Potential]) -> bool:
    """Whether ``pot`` (or a factor of it) has its own batch methods."""
    if pot is None:
        return False
    if isinstance(pot, Product):
        return any(_has_batch(f) for f in pot.factors)
    return (type(pot).batch_prefix is not Potential.batch_prefix
            or type(pot).batch_complete is not Potential.batch_complete)


def _check_logp(logp: Any, rows: int, width: int) -> None:
    """A clear error for log-probs that are not a ``(rows, >= width)``
    floating-point tensor."""
    import torch

    if not isinstance(logp, torch.Tensor):
        raise TypeError(f"model returned {type(logp).__name__} log-probs (expected a torch.Tensor of shape ({rows}, V))")
    if logp.dim() != 2 or logp.shape[0] != rows:
        raise ValueError(f"model returned log-probs of shape {tuple(logp.shape)} for {rows} live particles "
                         f"(expected ({rows}, V))")
    if not logp.is_floating_point():
        raise TypeError(f"model returned log-probs of dtype {logp.dtype} (expected a floating-point dtype)")
    if logp.shape[1] < width:
        raise ValueError(f"model returned {logp.shape[1]} log-probs per row for a vocabulary of {width} tokens")


def _logsumexp_rows(x: np.ndarray) -> np.ndarray:
    mx = x.max(axis=1)
    safe = np.where(np.isfinite(mx), mx, 0.0)
    with np.errstate(divide="ignore"):
        out: np.ndarray = safe + np.log(np.exp(x - safe[:, None]).sum(axis=1))
    return out


def _draw(logq: np.ndarray, rng: np.random.Generator) -> int:
    """Index drawn from ``softmax(logq)`` (at least one finite entry)."""
    w = np.exp(logq - logq.max())
    c = np.cumsum(w)
    i = int(np.searchsorted(c, rng.random() * c[-1], side="right"))
    if i >= c.size:
        i = int(np.flatnonzero(w > 0)[-1])
    return i


def _one_at_a_time(
    pot: Potential,
    text: bytes,
    cache: Dict[int, float],
    eos_set: "frozenset[int]",
    tb: Callable[[int], bytes],
    general: Callable[[List[int]], List[bool]],
) -> Callable[[List[int]], List[bool]]:
    """The accept callable of one particle (text so far ``text``) for a
    potential without batch methods: a question about one token calls its
    ``prefix`` (``complete`` for EOS) directly and stores the log weight in
    ``cache`` (shared by the particles with the same text: a token already
    in it is not asked again); several tokens at once, or an exception (raised again, with
    the particle and step, by :func:`tokensieve.potentials.score`), go to
    ``general``."""
    prefix, complete = pot.prefix, pot.complete
    where = f"potential {pot.name!r}"
    ninf = -math.inf

    def accept(tokens: List[int]) -> List[bool]:
        if len(tokens) != 1:
            return general(tokens)
        t = tokens[0]
        known = cache.get(t)
        if known is not None:  # asked for another particle with this text
            return [known > ninf]
        try:
            v = _as_log_weight(complete(text) if t in eos_set else prefix(text + tb(t)), where)
        except Exception:
            return general(tokens)
        cache[t] = v
        return [v > ninf]

    return accept


#: The last vocabulary's static mask row (see :func:`_static_mask_row`).
_STATIC_MASK: List[Tuple[Any, int, np.ndarray]] = []


def _static_mask_row(vocab: Any, eos_set: "frozenset[int]", words: int) -> np.ndarray:
    """The packed int32 mask row of every non-special token and EOS (the
    mask when there is no compiled constraint); O(V) Python calls, so the
    last vocabulary's row is kept."""
    for v, w, row in _STATIC_MASK:
        if v is vocab and w == words:
            return row
    allowed = np.array([not vocab.is_special(t) or t in eos_set for t in range(vocab.vocab_size)], dtype=bool)
    packed = np.packbits(allowed, bitorder="little")
    packed = np.pad(packed, (0, words * 4 - packed.size))
    row = packed.view("<i4").astype(np.int32)
    _STATIC_MASK[:] = [(vocab, words, row)]
    return row


def _generate_potentials(
    lm: Any,
    vocab: Any,
    prompt_ids: List[int],
    mask: Any,
    pot: Optional[Potential],
    crit: Optional[Potential],
    *,
    sampler: str,
    n: int,
    ess_threshold: float,
    resampler: str,
    max_new_tokens: int,
    seed: Optional[int],
    max_calls: int,
    batch_rows: bool,
) -> SMCResult:
    """The driver of :func:`generate` with Python potentials (see there)."""
    import torch

    token_seed, pop_seed = _seeds(seed)
    rng = np.random.default_rng(token_seed)
    pop = _core.Population(n, ess_threshold=float(ess_threshold), resampler=resampler, seed=pop_seed)
    vsize = int(mask.vocab_size) if mask is not None else int(vocab.vocab_size)
    tb = vocab.token_bytes  # looked up per asked / drawn token (a full list costs O(V) per call)
    # Without batch methods of its own, one text at a time through
    # ``prefix`` / ``complete`` is the same as a batch of one, for less.
    plain = pot if pot is not None and not _has_batch(pot) else None
    eos_ids = sorted(int(e) for e in vocab.eos_token_ids)
    eos_set = frozenset(eos_ids)
    matchers: List[Any] = []
    bitmask = np.zeros((n, _core.bitmask_words(vsize)), dtype=np.int32)
    if mask is None:
        bitmask[:] = _static_mask_row(vocab, eos_set, bitmask.shape[1])[None, :]
    else:
        proto = _core.Matcher(mask)
        matchers = [proto] + [proto.copy() for _ in range(n - 1)]
    generator = torch.Generator().manual_seed(token_seed)
    # Without a compiled constraint the mask is static (every token but the
    # special ones that are not EOS): the masked kernel's pass over the
    # model's raw logits then gives the allowed log mass, and the few
    # excluded columns give the rest of the normaliser, so a model with
    # ``next_logits`` (HFModel) spares its ``log_softmax`` over (rows, V).
    # With a compiled constraint, a second pass of the kernel with an
    # all-ones mask gives the normaliser (:func:`_row_log_norms`).
    raw = _uses_logits(lm)
    excluded: Optional[Any] = None
    ones: List[np.ndarray] = []
    if raw and mask is None:
        static = _unpack_bits(bitmask[:1], vsize)[0]
        excluded = torch.from_numpy(np.flatnonzero(static == 0))

    tokens: List[List[int]] = [[] for _ in range(n)]
    texts: List[bytes] = [b""] * n
    phi = np.zeros(n)  # the product potential's last prefix log weight per particle
    phic = np.zeros(n)  # the critic's
    status = np.zeros(n, dtype=np.int8)
    live = np.arange(n)
    ess_hist: List[float] = []
    resampled: List[bool] = []
    timings = {k: 0.0 for k in _TIMING_KEYS}
    calls_total = 0
    particle_steps = 0
    fell_back = 0

    state = lm.start(prompt_ids, n)
    last: Optional[Any] = None
    steps = 0
    for step in range(int(max_new_tokens)):
        if live.size == 0:
            break
        steps += 1
        rows = live.size
        t0 = _clock()
        logp = lm.next_logits(state, last) if raw else lm.next_logprobs(state, last)
        t1 = _clock()
        _check_logp(logp, rows, vsize)
        lpt = logp.detach()
        if lpt.device.type != "cpu":
            lpt = lpt.cpu()
        if raw and lpt.dtype not in (torch.float32, torch.float64):
            lpt = lpt.float()
        if mask is not None:
            bm = bitmask[:rows]
            _core.fill_next_token_bitmasks([matchers[i] for i in live], bm)
        else:
            bm = bitmask[:rows]  # the static mask: every non-special token and EOS
        # log Z of each row's allowed mass (and what the "mask" sampler's
        # draws need): the Rust kernel, in the log-probs' own precision;
        # NaN / +inf on an allowed token is a ValueError.
        try:
            dist = _CpuMasked(lpt, bm)
        except ValueError as e:
            raise ValueError(f"step {step}: {e}") from None
        lp = dist._lp  # (rows, width) float32/float64, contiguous
        lz = lz_mask = dist.log_z  # log allowed mass (of ``lp``'s unnormalised weights for logits)
        if raw:
            if excluded is not None:
                # Log of all the row's mass = allowed (the kernel's) + the
                # excluded columns' (specials; columns past the vocabulary).
                width = lpt.shape[1]
                cols = excluded if width == vsize else torch.cat([excluded, torch.arange(vsize, width)])
                rest = torch.logsumexp(lpt.index_select(1, cols).double(), dim=1).numpy() if cols.numel() else None
                with np.errstate(invalid="ignore"):
                    norm = lz_mask if rest is None else np.logaddexp(lz_mask, rest)
            else:
                norm = _full_norms(dist, ones, step)
            lz = _normalised(lz_mask, norm, step)
        t2 = _clock()

        inc = np.zeros(n)
        drawn = np.full(rows, -1, dtype=np.int64)
        new_phi = np.zeros(rows)
        fin = np.isfinite(lz)
        inc[live[~fin]] = -math.inf
        ok_rows: List[int] = np.flatnonzero(fin).tolist()
        if pot is not None and sampler in ("awrs", "rejection"):
            # All rows at once: one batched potential call per round for
            # every particle still drawing (rows in parallel in Rust).
            # The potential's answers per token, shared by the particles
            # with the same text (copies after resampling, and every
            # particle at the first step): a potential is a function of the
            # text, so each (text, token) is asked once per step.
            by_text: Dict[bytes, Dict[int, float]] = {}
            live_l: List[int] = live.tolist()
            caches = [by_text.setdefault(texts[live_l[r]], {}) for r in ok_rows]

            def accept_rows(ks: List[int], toks: List[List[int]]) -> List[List[bool]]:
                # Each (text, token) not yet known, once (rows with the same
                # text share their cache).
                ask: Dict[Tuple[int, int], int] = {}
                for k, ts_ in zip(ks, toks):
                    for t in ts_:
                        if t not in caches[k]:
                            ask.setdefault((id(caches[k]), t), k)
                body = [(k, t) for (_, t), k in ask.items() if t not in eos_set]
                ends = [(k, t) for (_, t), k in ask.items() if t in eos_set]
                if body:
                    who = [int(live[ok_rows[k]]) for k, _ in body]
                    vals = score(pot, [texts[i] + tb(t) for i, (_, t) in zip(who, body)], particles=who, step=step)
                    for (k, t), v in zip(body, vals):
                        caches[k][t] = v
                if ends:
                    who = [int(live[ok_rows[k]]) for k, _ in ends]
                    vals = score(pot, [texts[i] for i in who], complete=True, particles=who, step=step)
                    for (k, t), v in zip(ends, vals):
                        caches[k][t] = v
                return [[caches[k][t] > -math.inf for t in ts_] for k, ts_ in zip(ks, toks)]

            if ok_rows:
                seeds = rng.integers(2**63, size=len(ok_rows)).tolist()  # the same stream as one by one
                # The masked kernel's pass (``dist``) gives each row's
                # maximum and block sums: the samplers start from them.
                if len(ok_rows) == rows:
                    sub_lp, sub_bm, sub_max, sub_cum = lp, bm, dist._max, dist._cum
                else:
                    sel = np.asarray(ok_rows, dtype=np.int64)
                    sub_lp, sub_bm = np.ascontiguousarray(lp[sel]), np.ascontiguousarray(bm[sel])
                    sub_max, sub_cum = dist._max[sel], np.ascontiguousarray(dist._cum[sel])
                draws = []
                if not batch_rows:  # row by row in this thread: least overhead for cheap potentials
                    max_l = sub_max.tolist()
                    for k, r in enumerate(ok_rows):
                        def general(ts_: List[int], k: int = k) -> List[bool]:
                            return accept_rows([k], [ts_])[0]

                        acc = general if plain is None else _one_at_a_time(
                            plain, texts[live_l[r]], caches[k], eos_set, tb, general)
                        draws.append(_core.awrs_sample(sub_lp[k], acc, sampler, max_calls, seeds[k],
                                                       sub_bm[k], max_l[k], sub_cum[k], caches[k]))
                for c0 in range(0, len(ok_rows) if batch_rows else 0, _AWRS_CHUNK):
                    c1 = min(c0 + _AWRS_CHUNK, len(ok_rows))

                    def acc_chunk(ks: List[int], toks: List[List[int]], c0: int = c0) -> List[List[bool]]:
                        return accept_rows([k + c0 for k in ks], toks)

                    cc = [np.ascontiguousarray(a[c0:c1]) for a in (sub_lp, sub_bm, sub_max, sub_cum)]
                    draws += _core.awrs_sample_rows(cc[0], acc_chunk, seeds[c0:c1], sampler, max_calls, *cc[1:])
                for k, (tok, lw, c, fb) in enumerate(draws):
                    r = ok_rows[k]
                    i = int(live[r])
                    calls_total += c
                    fell_back += int(fb)
                    particle_steps += 1
                    if tok is None:
                        inc[i] = -math.inf
                        continue
                    drawn[r] = tok
                    new_phi[r] = caches[k][tok]
                    inc[i] = lz[r] + lw + new_phi[r] - phi[i]
        elif pot is not None and sampler == "direct":
            width = lp.shape[1]
            cand = {}
            for r in ok_rows:
                idx = np.flatnonzero(_unpack_bits(bm[r:r + 1], width)[0])
                cand[r] = idx[np.isfinite(lp[r, idx])]
            items = [(r, int(t)) for r in ok_rows for t in cand[r]]
            dbody = [(r, t) for r, t in items if t not in eos_set]
            dends = [(r, t) for r, t in items if t in eos_set]
            sc: Dict[Tuple[int, int], float] = {}
            vals = score(pot, [texts[live[r]] + tb(t) for r, t in dbody], particles=[int(live[r]) for r, _ in dbody], step=step)
            sc.update(zip(dbody, vals))
            vals = score(pot, [texts[live[r]] for r, _ in dends], complete=True, particles=[int(live[r]) for r, _ in dends], step=step)
            sc.update(zip(dends, vals))
            calls_total += len(items)
            for r in ok_rows:
                i = int(live[r])
                particle_steps += 1
                s_r = np.array([sc[(r, int(t))] for t in cand[r]])
                lq = lp[r, cand[r]].astype(np.float64) - lz_mask[r] + s_r
                lzq = float(_logsumexp_rows(lq[None, :])[0])
                if not math.isfinite(lzq):
                    inc[i] = -math.inf
                    continue
                k = _draw(lq, rng)
                drawn[r] = int(cand[r][k])
                new_phi[r] = s_r[k]
                inc[i] = lz[r] + lzq - phi[i]
        else:  # "mask" (or no potential): draw from the masked model, score after
            if ok_rows:
                drawn[ok_rows] = dist.sample(np.asarray(ok_rows, dtype=np.int64), generator)
            if pot is not None:
                particle_steps += len(ok_rows)
                calls_total += len(ok_rows)
                body = [r for r in ok_rows if int(drawn[r]) not in eos_set]
                ends = [r for r in ok_rows if int(drawn[r]) in eos_set]
                for rs, comp in ((body, False), (ends, True)):
                    ts_ = [texts[live[r]] + (b"" if comp else tb(int(drawn[r]))) for r in rs]
                    for r, v in zip(rs, score(pot, ts_, complete=comp, particles=[int(live[r]) for r in rs], step=step)):
                        new_phi[r] = v
            for r in ok_rows:
                i = int(live[r])
                inc[i] = lz[r] + new_phi[r] - phi[i]
        new_phic = np.zeros(rows)
        if crit is not None:
            got = [r for r in ok_rows if drawn[r] >= 0 and math.isfinite(inc[live[r]])]
            body = [r for r in got if int(drawn[r]) not in eos_set]
            ends = [r for r in got if int(drawn[r]) in eos_set]
            for rs, comp in ((body, False), (ends, True)):
                ts_ = [texts[live[r]] + (b"" if comp else tb(int(drawn[r]))) for r in rs]
                for r, v in zip(rs, score(crit, ts_, complete=comp, particles=[int(live[r]) for r in rs], step=step)):
                    new_phic[r] = v
                    inc[live[r]] += v - phic[live[r]]
        t3 = _clock()

        # Advance the particles that drew a token.
        at_limit = step + 1 >= max_new_tokens
        last_tok = np.full(n, -1, dtype=np.int64)
        for r in range(rows):
            i = int(live[r])
            t = int(drawn[r])
            if t < 0 or not math.isfinite(inc[i]):
                status[i] = DEAD
                continue
            phi[i] = new_phi[r]
            phic[i] = new_phic[r]
            if mask is not None:
                m = matchers[i]
                if not m.consume_token(t):  # pragma: no cover - the mask forbids this
                    raise RuntimeError(f"sampled token {t} is not allowed by the constraint")
                done = m.eos_consumed or (m.is_terminated() and not m.allowed_tokens())
            else:
                done = t in eos_set
            if done:
                status[i] = EOS
                continue
            tokens[i].append(t)
            texts[i] = texts[i] + tb(t)
            last_tok[i] = t
            if at_limit:
                status[i] = MAX_TOKENS
        t4 = _clock()

        pop.add_log_weights(inc)
        ess_hist.append(float(pop.ess))
        anc: Optional[np.ndarray] = None
        row_of = np.full(n, -1, dtype=np.int64)
        row_of[live] = np.arange(rows)
        if np.any(status == LIVE) and np.isfinite(np.asarray(pop.log_weights)).any():
            anc = pop.maybe_resample()
        resampled.append(anc is not None)
        if anc is not None:
            anc = np.asarray(anc, dtype=np.int64)
            if mask is not None:
                seen = np.zeros(n, dtype=bool)
                new_m = []
                for a in anc:
                    new_m.append(matchers[a].copy() if seen[a] else matchers[a])
                    seen[a] = True
                matchers = new_m
            tokens = [list(tokens[a]) for a in anc]
            texts = [texts[a] for a in anc]
            phi, phic, status, row_of, last_tok = phi[anc], phic[anc], status[anc], row_of[anc], last_tok[anc]
        t5 = _clock()
        live = np.flatnonzero(status == LIVE)
        if live.size:
            keep = row_of[live]
            if not (keep.size == rows and np.array_equal(keep, np.arange(rows))):
                state = lm.reorder(state, torch.from_numpy(keep))
            last = torch.from_numpy(last_tok[live])
        t6 = _clock()
        timings["forward"] += t1 - t0
        timings["mask"] += t2 - t1
        timings["sample"] += t3 - t2
        timings["advance"] += t4 - t3
        timings["resample"] += t5 - t4
        timings["reorder"] += t6 - t5

    return _finish(pop, status, tokens, vocab, ess_hist, resampled, steps, n, timings, stacklevel=4,
                   potential_calls=calls_total, particle_steps=particle_steps, fell_back=fell_back)


def _finish(
    pop: Any,
    status: np.ndarray,
    tokens: List[List[int]],
    vocab: Any,
    ess_hist: List[float],
    resampled: List[bool],
    steps: int,
    n: int,
    timings: Dict[str, float],
    stacklevel: int = 3,
    **extra: int,
) -> SMCResult:
    """The :class:`SMCResult` of a finished run; warns when every particle
    ended with weight 0."""
    lw = np.asarray(pop.log_weights, dtype=np.float64)
    if np.isfinite(lw).any():
        weights = np.asarray(pop.normalized_weights(), dtype=np.float64)
        log_z = float(pop.log_z)
    else:
        weights = np.zeros(n)
        log_z = -math.inf
        warnings.warn(
            "SMC: every particle ended with weight 0 (the constraint or a potential rejected every "
            "continuation the model could produce): the posterior is empty and log Z = -inf",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
    complete_mass = float(weights[status == EOS].sum())
    log_z_complete = log_z + math.log(complete_mass) if complete_mass > 0 else -math.inf
    text_bytes = [b"".join(vocab.token_bytes(t) for t in ts) for ts in tokens]
    return SMCResult(
        token_ids=tokens,
        text_bytes=text_bytes,
        texts=[b.decode("utf-8", errors="replace") for b in text_bytes],
        status=[_STATUS_NAMES[int(s)] for s in status],
        log_weights=lw,
        weights=weights,
        log_z=log_z,
        log_z_complete=log_z_complete,
        ess=ess_hist,
        resampled=resampled,
        num_steps=steps,
        n_particles=n,
        timings=timings,
        **extra,
    )


def masked_decode(
    model: Any,
    tokenizer: Any,
    prompt: Union[str, Sequence[int], None],
    constraint: Any,
    *,
    n_samples: int = 32,
    max_new_tokens: int = 64,
    seed: Optional[int] = None,
    vocab: Any = None,
) -> SMCResult:
    """Plain masked decoding (what a logits processor does), for comparison:
    the same sampler as :func:`generate` without weights or resampling.

    The returned ``weights`` are uniform (``1 / n_samples``), so
    ``posterior()`` is the empirical distribution of masked decoding, which
    is *not* the conditional distribution; ``log_z`` is the
    importance-sampling estimate from the same draws (valid, just noisy).
    """
    res = generate(
        model,
        tokenizer,
        prompt,
        constraint,
        n_particles=n_samples,
        ess_threshold=0.0,
        max_new_tokens=max_new_tokens,
        seed=seed,
        vocab=vocab,
    )
    alive = np.isfinite(res.log_weights)
    res.weights = alive / max(int(alive.sum()), 1)
    return res


# --------------------------------------------------------------------------
# Printing (for the CLI)
# --------------------------------------------------------------------------


def format_result(result: SMCResult, *, top: int = 10) -> str:
    """A human-readable summary: the ``top`` strings of the posterior with
    their weights, the ``log Z`` estimate, ESS and resampling counts."""
    lines = []
    post = result.posterior()
    lines.append(f"SMC: {result.n_particles} particles, {result.num_steps} steps, "
                 f"{sum(result.resampled)} resampling steps")
    counts = {k: result.status.count(k) for k in ("eos", "max_new_tokens", "dead")}
    lines.append("particles: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    lz = result.log_z
    lines.append(f"log Z estimate (log P(constraint)): {lz:.4f}" + (f"  (Z = {math.exp(lz):.4g})" if math.isfinite(lz) else ""))
    if result.ess:
        lines.append(f"ESS after each step's weight update: min {min(result.ess):.1f}, last {result.ess[-1]:.1f}")
    if result.particle_steps:
        lines.append(f"potential calls per particle and step: {result.calls_per_step():.2f}"
                     + (f" ({result.fell_back} fell back to full evaluation)" if result.fell_back else ""))
    lines.append(f"posterior ({len(post)} distinct strings):")
    if not post:
        lines.append("  (none)")
    status_of: Dict[str, str] = {}
    for t, s in zip(result.texts, result.status):
        status_of.setdefault(t, s)
    for i, (text, w) in enumerate(post.items()):
        if i >= top:
            lines.append(f"  ... {len(post) - top} more")
            break
        mark = "" if status_of.get(text) == "eos" else "  [cut at max_new_tokens]"
        lines.append(f"  {w:8.4f}  {text!r}{mark}")
    return "\n".join(lines)


def print_result(result: SMCResult, *, top: int = 10, file: Optional[TextIO] = None) -> None:
    """Print :func:`format_result` to ``file`` (default stdout)."""
    print(format_result(result, top=top), file=file if file is not None else sys.stdout)
