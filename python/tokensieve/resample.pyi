"""Type stubs for tokensieve.resample (SMC resampling kernels in Rust)."""

from typing import Any, List, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

__all__ = [
    "Population",
    "ess",
    "log_normalize",
    "multinomial",
    "residual",
    "stratified",
    "systematic",
]

# A 1-D array-like of real numbers: numpy array, torch tensor (any device;
# copied to the CPU as float64), or a sequence of floats.
LogWeights = Union[npt.ArrayLike, Any]
# None (fresh OS entropy), an int in [0, 2**64), or a Generator (one seed is
# drawn from it with integers(0, 2**63)).
Seed = Union[None, int, np.integer, np.random.Generator]
Uniforms = Union[float, Sequence[float], npt.NDArray[np.floating]]

def systematic(
    log_weights: LogWeights,
    n: Optional[int] = None,
    seed: Seed = None,
    *,
    uniforms: Optional[Uniforms] = None,
) -> npt.NDArray[np.int64]:
    """Systematic resampling: ``n`` sorted ancestor indices (default: one per
    particle); counts are ``floor(n w_i)`` or ``ceil(n w_i)``. ``uniforms``:
    exactly one value ``u`` in ``[0, 1)``; points ``(k + u) / n``."""

def stratified(
    log_weights: LogWeights,
    n: Optional[int] = None,
    seed: Seed = None,
    *,
    uniforms: Optional[Uniforms] = None,
) -> npt.NDArray[np.int64]:
    """Stratified resampling: ``n`` sorted ancestor indices; ``|N_i - n w_i| <
    2``. ``uniforms``: exactly ``n`` values in ``[0, 1)``; points
    ``(k + u_k) / n``."""

def multinomial(
    log_weights: LogWeights,
    n: Optional[int] = None,
    seed: Seed = None,
    *,
    uniforms: Optional[Uniforms] = None,
) -> npt.NDArray[np.int64]:
    """Multinomial resampling: ``n`` i.i.d. draws, returned sorted.
    ``uniforms``: exactly ``n`` values in ``[0, 1)``, any order, each an
    inverse-CDF draw."""

def residual(
    log_weights: LogWeights,
    n: Optional[int] = None,
    seed: Seed = None,
    *,
    uniforms: Optional[Uniforms] = None,
) -> npt.NDArray[np.int64]:
    """Residual-systematic resampling: ``floor(n w_i)`` copies, then the
    ``R = n - sum floor(n w_i)`` remaining draws by systematic resampling on
    the remainders ``n w_i - floor(n w_i)``; sorted. Counts are
    ``floor(n w_i)`` or ``ceil(n w_i)`` (same law as :func:`systematic`).
    ``uniforms``: one value ``u`` in ``[0, 1)``, the systematic stage's
    offset (points ``k + u`` on the cumulative remainders); a longer
    sequence is accepted for backwards compatibility and only its first
    value is used (the rest are validated, then ignored)."""

def ess(log_weights: LogWeights) -> float:
    """Effective sample size ``(sum w)^2 / sum w^2`` of unnormalised log
    weights, in ``[1, N]``."""

def log_normalize(log_weights: LogWeights) -> npt.NDArray[np.float64]:
    """``log_weights - logsumexp(log_weights)`` as a new float64 array."""

class Population:
    """SMC population weights with ESS-triggered resampling (defined in
    ``tokensieve._core``, re-exported here).

    Holds N unnormalised log weights (initially 0). Resamples in
    ``maybe_resample`` when ``ess < ess_threshold * n``, then resets every
    log weight to ``log_z`` (so ``log_z`` is unchanged by resampling).
    """

    def __init__(
        self,
        n: int,
        ess_threshold: float = 0.5,
        resampler: str = "systematic",
        seed: Seed = None,
    ) -> None:
        """``resampler``: "systematic", "stratified", "residual" or
        "multinomial". ValueError for ``n < 1``, ``ess_threshold`` outside
        ``[0, 1]``, an unknown resampler or a bad seed value."""
    def add_log_weights(self, increments: LogWeights) -> None:
        """``log_w += increments`` (length n; 0 for finished particles,
        -inf kills one). ValueError for the wrong shape, NaN or +inf; the
        weights are then unchanged."""
    def maybe_resample(self) -> Optional[npt.NDArray[np.int64]]:
        """Record the ESS; if ``ess < ess_threshold * n`` resample and return
        the n sorted ancestor indices, else None. ValueError if every weight
        is zero and ``ess_threshold > 0``."""
    @property
    def log_weights(self) -> npt.NDArray[np.float64]:
        """A copy of the current unnormalised log weights."""
    @property
    def log_z(self) -> float:
        """``logsumexp(log_weights) - log(n)``: running log marginal
        likelihood estimate (-inf if every particle is dead)."""
    @property
    def ess(self) -> float:
        """Effective sample size of the current weights (0.0 if all dead)."""
    @property
    def ess_history(self) -> List[float]:
        """ESS seen by each ``maybe_resample`` call, before resampling."""
    def normalized_weights(self) -> npt.NDArray[np.float64]:
        """Weights normalised to sum to 1. ValueError if every particle is dead."""
    @property
    def n(self) -> int:
        """Number of particles."""
    @property
    def ess_threshold(self) -> float:
        """The ESS threshold tau."""
    @property
    def resampler(self) -> str:
        """The resampling scheme's name."""
    def __len__(self) -> int: ...
