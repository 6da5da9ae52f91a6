"""Resampling for sequential Monte Carlo, with the kernels in Rust.

Every kernel takes *unnormalised* log weights (a 1-D array-like: numpy array,
torch tensor on any device, or sequence) and returns ``n`` ancestor indices as
an ``int64`` numpy array **in increasing order**, such that particle ``i``
appears ``N_i`` times with ``E[N_i] = n * w_i`` (``w = softmax(log_weights)``).

==============  ======================================  =====================
kernel          offspring counts ``N_i``                 ``uniforms=`` takes
==============  ======================================  =====================
``systematic``  ``floor(n w_i)`` or ``ceil(n w_i)``       1 value
``stratified``  within one of ``floor`` / ``ceil``        ``n`` values
``residual``    ``floor(n w_i)`` or ``ceil(n w_i)``       1 value
``multinomial`` ``Binomial(n, w_i)``                      ``n`` values
==============  ======================================  =====================

Systematic is the usual choice: cheapest, and lowest variance in practice.
Stratified, systematic and residual counts never have more variance than
multinomial counts. ``residual`` is residual-*systematic* (see
:func:`residual`): in exact arithmetic it is the same resampler as
``systematic``, giving the same output for the same uniform.

Weights: ``-inf`` means weight zero, and zero-weight particles are never
selected. ``NaN``, ``+inf``, an empty array and all ``-inf`` raise
``ValueError``. Everything is O(N + n), in one or two passes, and
round-off can never produce an index past the end.

Randomness: ``seed`` is ``None`` (fresh entropy), an int in ``[0, 2**64)`` or
a ``numpy.random.Generator`` (one seed is drawn from it with
``integers(0, 2**63)``, so the Generator advances). A given seed, input and
``n`` always give the same output, on any machine. Tests can bypass the
generator with ``uniforms=`` (see each function).

The SMC driver (:mod:`tokensieve.smc`) keeps its particle weights in an
internal Rust population (``tokensieve._core.Population``, not part of the
public API).
"""

from __future__ import annotations

import operator
import os
import random as _random
import sys
from typing import Any, Optional

import numpy as np

from tokensieve import _core
from tokensieve._bitmask import _positive_int

__all__ = [
    "ess",
    "log_normalize",
    "multinomial",
    "residual",
    "stratified",
    "systematic",
]

_KIND = {name: code for code, name in enumerate(_core.RESAMPLE_SCHEMES)}
_MULTINOMIAL = _KIND["multinomial"]
_SYSTEMATIC = _KIND["systematic"]
_STRATIFIED = _KIND["stratified"]
_RESIDUAL = _KIND["residual"]

_F64 = np.dtype(np.float64)
_I64 = np.dtype(np.int64)
_ndarray = np.ndarray
_empty = np.empty
_ascontiguousarray = np.ascontiguousarray
_Generator = np.random.Generator
_resample_into = _core.resample_into

# Seeds for seed=None: a private Mersenne Twister seeded from the OS, ~20x
# cheaper per call than os.urandom. Reseeded in fork children so that
# forked workers do not repeat each other's draws.
_entropy = _random.Random(int.from_bytes(os.urandom(32), "little"))
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _entropy.seed(int.from_bytes(os.urandom(32), "little")))


def _as_vector(x: Any, what: str) -> np.ndarray:
    """``x`` as a C-contiguous, aligned 1-D float64 numpy array (no copy if
    it already is one). Torch tensors go through
    ``.detach().cpu().double().numpy()``. The Rust kernels check the result
    again (dtype, shape, contiguity, alignment) through rust-numpy."""
    if type(x) is not _ndarray:
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(x, torch.Tensor):
            x = x.detach().cpu().double().numpy()
        else:
            x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{what} must be 1-dimensional, got shape {x.shape}")
    if x.dtype is not _F64 and x.dtype.kind not in "fiu":
        raise ValueError(f"{what} must be real numbers, got dtype {x.dtype}")
    a = _ascontiguousarray(x, _F64)
    if not a.flags.aligned:  # a misaligned view (np.frombuffer at an odd offset)
        a = a.copy()
    return a


def _seed(seed: Any) -> int:
    if seed is None:
        return _entropy.getrandbits(64)
    if type(seed) is int and 0 <= seed < 18446744073709551616:  # fast path
        return seed
    if isinstance(seed, _Generator):
        return int(seed.integers(0, 2**63))
    if isinstance(seed, bool):
        raise TypeError("seed must be None, a non-negative int or a numpy.random.Generator")
    try:
        s = operator.index(seed)
    except TypeError:
        raise TypeError(
            f"seed must be None, a non-negative int or a numpy.random.Generator, got {type(seed).__name__}"
        ) from None
    if not 0 <= s < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {s}")
    return s


def _draws(n: Any, size: int) -> int:
    return size if n is None else _positive_int(n, "n")


def _resample(kind: int, log_weights: Any, n: Any, seed: Any, uniforms: Any) -> np.ndarray:
    lw = _as_vector(log_weights, "log_weights")
    size = lw.shape[0]
    if size == 0:
        raise ValueError("log_weights is empty")
    n = _draws(n, size)
    out = _empty(n, _I64)
    if uniforms is None:
        _resample_into(kind, lw, out, _seed(seed))
    else:
        if seed is not None:
            raise ValueError("pass either seed or uniforms, not both")
        u = _as_vector(np.reshape(uniforms, -1) if np.ndim(uniforms) == 0 else uniforms, "uniforms")
        _resample_into(kind, lw, out, 0, u)
    return out


def systematic(log_weights: Any, n: Optional[int] = None, seed: Any = None, *, uniforms: Any = None) -> np.ndarray:
    """Systematic resampling: ``n`` ancestor indices, sorted.

    One uniform ``u`` places the points ``(k + u) / n``, ``k = 0..n-1``, on
    the cumulative normalised weights; each offspring count is
    ``floor(n w_i)`` or ``ceil(n w_i)``.

    Args:
        log_weights: unnormalised log weights, 1-D (numpy array, torch tensor
            or sequence). ``-inf`` is weight zero.
        n: number of draws; defaults to the number of particles.
        seed: ``None``, an int in ``[0, 2**64)`` or a ``numpy.random.Generator``.
        uniforms: for tests, bypass the generator with exactly **one** value
            ``u`` in ``[0, 1)`` (a float or a length-1 array). Incompatible
            with ``seed``.

    Returns:
        ``int64`` numpy array of length ``n``, non-decreasing.

    Raises:
        ValueError: empty, NaN, ``+inf`` or all ``-inf`` log weights; not
            1-D; ``n <= 0``; wrong number of uniforms or one outside ``[0, 1)``.
    """
    return _resample(_SYSTEMATIC, log_weights, n, seed, uniforms)


def stratified(log_weights: Any, n: Optional[int] = None, seed: Any = None, *, uniforms: Any = None) -> np.ndarray:
    """Stratified resampling: ``n`` ancestor indices, sorted.

    One uniform per stratum places the points ``(k + u_k) / n``; each
    offspring count is within one of ``floor(n w_i)`` / ``ceil(n w_i)`` (so
    ``|N_i - n w_i| < 2``), with variance never above multinomial's.

    Args:
        log_weights: unnormalised log weights, 1-D. ``-inf`` is weight zero.
        n: number of draws; defaults to the number of particles.
        seed: ``None``, an int in ``[0, 2**64)`` or a ``numpy.random.Generator``.
        uniforms: for tests, exactly ``n`` values in ``[0, 1)``; value ``k``
            is the offset of stratum ``k``. Incompatible with ``seed``.

    Returns:
        ``int64`` numpy array of length ``n``, non-decreasing.

    Raises:
        ValueError: as :func:`systematic`.
    """
    return _resample(_STRATIFIED, log_weights, n, seed, uniforms)


def multinomial(log_weights: Any, n: Optional[int] = None, seed: Any = None, *, uniforms: Any = None) -> np.ndarray:
    """Multinomial resampling: ``n`` i.i.d. draws from the weights, returned
    sorted (counts are ``Multinomial(n, w)``).

    Sorted uniforms are generated directly in O(n) (exponential spacings)
    and merged with the cumulative weights, so there is no O(n log n) sort.
    If you need the draws in random order, permute the result.

    Args:
        log_weights: unnormalised log weights, 1-D. ``-inf`` is weight zero.
        n: number of draws; defaults to the number of particles.
        seed: ``None``, an int in ``[0, 2**64)`` or a ``numpy.random.Generator``.
        uniforms: for tests, exactly ``n`` values in ``[0, 1)``, in any
            order; each is one inverse-CDF draw (``u`` selects the particle
            whose cumulative-weight interval contains it). These are sorted
            internally. Incompatible with ``seed``.

    Returns:
        ``int64`` numpy array of length ``n``, non-decreasing.

    Raises:
        ValueError: as :func:`systematic`.
    """
    return _resample(_MULTINOMIAL, log_weights, n, seed, uniforms)


def residual(log_weights: Any, n: Optional[int] = None, seed: Any = None, *, uniforms: Any = None) -> np.ndarray:
    """Residual(-systematic) resampling: ``n`` ancestor indices, sorted.

    Particle ``i`` first gets ``floor(n w_i)`` copies; the remaining
    ``R = n - sum_i floor(n w_i)`` draws are placed by *systematic*
    resampling on the remainders ``r_i = n w_i - floor(n w_i)`` (which sum
    to ``R``): one uniform ``u``, points ``k + u`` for ``k = 0..R-1``
    against the cumulative remainders, in index order. Each ``r_i < 1``
    holds at most one point, so every offspring count is ``floor(n w_i)``
    or ``ceil(n w_i)`` (the latter with probability ``r_i``): unbiased,
    with variance ``r_i (1 - r_i)``. The bound holds exactly, whatever the
    rounding, and particles with ``r_i = 0`` never get an extra copy.

    (The textbook residual resampler draws the ``R`` remainders
    multinomially, so its counts can exceed ``ceil(n w_i)``; this one does
    not. In exact arithmetic residual-systematic coincides with
    :func:`systematic`, output for output, given the same ``u``.)

    Args:
        log_weights: unnormalised log weights, 1-D. ``-inf`` is weight zero.
        n: number of draws; defaults to the number of particles.
        seed: ``None``, an int in ``[0, 2**64)`` or a ``numpy.random.Generator``.
        uniforms: for tests, the offset ``u`` of the systematic stage: one
            value in ``[0, 1)`` (a float or a length-1 array). For
            backwards compatibility (the second stage used to be
            multinomial and took one uniform per residual draw) a longer
            sequence is accepted: only its **first** value is used, the
            others are checked to lie in ``[0, 1)`` and otherwise ignored.
            Incompatible with ``seed``.

    Returns:
        ``int64`` numpy array of length ``n``, non-decreasing.

    Raises:
        ValueError: as :func:`systematic`, or an empty ``uniforms``.
    """
    return _resample(_RESIDUAL, log_weights, n, seed, uniforms)


def ess(log_weights: Any) -> float:
    """Effective sample size ``(sum w)^2 / sum w^2`` of unnormalised log
    weights, in ``[1, N]``; one stable pass.

    Raises:
        ValueError: empty, NaN, ``+inf`` or all ``-inf`` log weights; not 1-D.
    """
    return _core.ess(_as_vector(log_weights, "log_weights"))


def log_normalize(log_weights: Any) -> np.ndarray:
    """``log_weights - logsumexp(log_weights)`` as a new float64 numpy array
    (so its ``exp`` sums to 1; ``-inf`` stays ``-inf``).

    Raises:
        ValueError: empty, NaN, ``+inf`` or all ``-inf`` log weights; not 1-D.
    """
    lw = _as_vector(log_weights, "log_weights")
    out = _empty(lw.shape[0], _F64)
    _core.log_normalize_into(lw, out)
    return out
