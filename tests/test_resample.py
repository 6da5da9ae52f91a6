"""Tests for tokensieve.resample (Rust kernels) and tokensieve._core.Population.

Statistical tests use fixed seeds, so they are deterministic; their
tolerances are nevertheless derived from the sample sizes so that a correct
implementation would pass for essentially any seed (see ``Z_BOUND``).
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tokensieve import _core
from tokensieve import resample as rs

KERNELS = {
    "multinomial": rs.multinomial,
    "systematic": rs.systematic,
    "stratified": rs.stratified,
    "residual": rs.residual,
}
ONE_MINUS = np.nextafter(1.0, 0.0)  # largest double below 1

# z-score bound for every z-test in this file. A two-sided normal tail
# beyond 5 sigma has probability 5.7e-7. The statistical tests below run
# fewer than 500 z-tests in total (4 kernels x 3 weight vectors x 2 values
# of n x at most 12 particles = 288 for unbiasedness, plus a few), so by
# Bonferroni a correct kernel fails any of them with probability below
# 500 * 5.7e-7 ~ 3e-4, whatever the seeds.
Z_BOUND = 5.0


def counts_matrix(draws: np.ndarray, n_particles: int) -> np.ndarray:
    """Offspring counts per repetition: draws is (reps, n) -> (reps, N)."""
    reps = draws.shape[0]
    flat = (draws + n_particles * np.arange(reps)[:, None]).ravel()
    return np.bincount(flat, minlength=reps * n_particles).reshape(reps, n_particles)


def normalised(lw: np.ndarray) -> np.ndarray:
    w = np.exp(lw - lw.max())
    return w / w.sum()


def exact_var(kind: str, w: np.ndarray, n: int) -> np.ndarray:
    """Exact per-particle variance of the offspring count.

    multinomial: n w (1 - w). systematic: the count is floor(nw) or
    ceil(nw) with mean nw, so f (1 - f) with f = frac(nw). stratified: a
    sum of independent Bernoullis, one per stratum s, with success
    probability |[s, s+1) & [n C_{i-1}, n C_i)|. residual (residual-
    systematic): floor(nw) plus one extra copy iff a systematic point of
    the residual stage falls in the particle's remainder interval, of
    length f < 1, i.e. floor(nw) + Bernoulli(f): f (1 - f) as well.
    """
    nw = n * w
    f = nw - np.floor(nw)
    if kind == "multinomial":
        return nw * (1 - w)
    if kind in ("systematic", "residual"):
        return f * (1 - f)
    cum = np.concatenate([[0.0], np.cumsum(w)]) * n
    out = np.zeros_like(w)
    for i in range(len(w)):
        a, b = cum[i], cum[i + 1]
        for s in range(int(math.floor(a)), int(math.ceil(b))):
            p = max(0.0, min(b, s + 1) - max(a, s))
            out[i] += p * (1 - p)
    return out


def naive_pick(w: np.ndarray, p: float) -> int:
    """Reference inverse CDF: first i with p < cumsum(w)[i]."""
    return int(np.searchsorted(np.cumsum(w), p, side="right"))


def residual_reference(w: np.ndarray, n: int, u: float) -> np.ndarray:
    """Residual-systematic from its definition: floor(n w_i) copies, then
    the R = n - sum floor(n w_i) points k + u, k < R, on the cumulative
    remainders r_i = n w_i - floor(n w_i) (normalised to total R)."""
    nw = n * w
    floors = np.floor(nw).astype(int)
    r = n - int(floors.sum())
    rem = nw - floors
    extra = np.zeros(len(w), dtype=int)
    for k in range(r):
        extra[naive_pick(rem / rem.sum(), (k + u) / r)] += 1
    return np.repeat(np.arange(len(w)), floors + extra)


def residual_breakpoints(w: np.ndarray, n: int) -> np.ndarray:
    """Values of u where the residual output changes: frac of the
    cumulative remainders, plus 0 and 1, sorted and deduplicated."""
    nw = n * w
    br = np.sort(np.concatenate([[0.0, 1.0], np.mod(np.cumsum(nw - np.floor(nw)), 1.0)]))
    return br[np.concatenate([[True], np.diff(br) > 1e-12])]


WEIGHTS = [
    np.log([0.1, 0.2, 0.3, 0.4]),
    np.array([0.0, -1.0, -np.inf, 2.5, -0.3, -3.0, 1.0, -2.0]),
    np.linspace(0.0, -3.0, 12),
]


# --------------------------------------------------------------- contract


@pytest.mark.parametrize("kind", KERNELS)
@pytest.mark.parametrize("size,n", [(1, 1), (1, 5), (7, None), (300, 17), (300, 1000), (5000, None)])
def test_output_contract(kind, size, n):
    rng = np.random.default_rng(size)
    lw = rng.normal(scale=3.0, size=size)
    lw[rng.random(size) < 0.2] = -np.inf
    lw[0] = 0.0
    out = KERNELS[kind](lw, n, seed=123)
    assert out.dtype == np.int64
    assert out.shape == ((size if n is None else n),)
    assert out.flags.c_contiguous and out.flags.writeable
    assert np.all(np.diff(out) >= 0)
    assert out.min() >= 0 and out.max() < size
    assert np.all(np.isfinite(lw[out])), "picked a zero-weight particle"


@pytest.mark.parametrize("kind", KERNELS)
def test_bad_log_weights_raise_value_error(kind):
    f = KERNELS[kind]
    bad = [
        [],
        np.array([]),
        [0.0, np.nan],
        [0.0, np.inf],
        [-np.inf, -np.inf],
        np.zeros((2, 3)),
        np.float64(1.0),
        5.0,
        np.array([1 + 1j, 2.0]),
        ["a", "b"],
    ]
    for lw in bad:
        with pytest.raises(ValueError):
            f(lw, seed=0)
    for n in [0, -1]:
        with pytest.raises(ValueError):
            f([0.0, 1.0], n, seed=0)
    with pytest.raises(TypeError):
        f([0.0, 1.0], 2.5, seed=0)


def test_error_messages_are_specific():
    with pytest.raises(ValueError, match="index 3 is NaN"):
        rs.systematic([0.0, 1.0, 2.0, np.nan], seed=0)
    with pytest.raises(ValueError, match=r"index 1 is \+inf"):
        rs.stratified([0.0, np.inf], seed=0)
    with pytest.raises(ValueError, match="all log weights are -inf"):
        rs.residual([-np.inf], seed=0)
    with pytest.raises(ValueError, match="1-dimensional"):
        rs.multinomial(np.zeros((1, 1)), seed=0)


def test_seed_forms():
    lw = np.linspace(0, -2, 50)
    a = rs.systematic(lw, seed=7)
    assert np.array_equal(a, rs.systematic(lw, seed=7))
    assert np.array_equal(a, rs.systematic(lw, seed=np.uint64(7)))
    assert not np.array_equal(rs.multinomial(lw, seed=7), rs.multinomial(lw, seed=8))
    # A Generator draws one seed: same Generator state, same result; and
    # it advances.
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    x = rs.multinomial(lw, seed=g1)
    assert np.array_equal(x, rs.multinomial(lw, seed=g2))
    assert not np.array_equal(rs.multinomial(lw, seed=g1), x)
    # seed=None: fresh entropy each call (multinomial on 50 particles
    # repeating exactly is a ~1e-30 event).
    assert not np.array_equal(rs.multinomial(lw), rs.multinomial(lw))
    for bad in [-1, 2**64]:
        with pytest.raises(ValueError):
            rs.systematic(lw, seed=bad)
    for bad in [1.5, "3", True]:
        with pytest.raises(TypeError):
            rs.systematic(lw, seed=bad)


def test_sequences_and_dtypes_accepted():
    lw64 = np.log(np.array([0.2, 0.3, 0.5]))
    ref = rs.stratified(lw64, 10, seed=3)
    assert np.array_equal(rs.stratified(list(lw64), 10, seed=3), ref)
    # Non-contiguous and big-endian views are converted, not rejected.
    strided = np.repeat(lw64, 2)[::2]
    assert np.array_equal(rs.stratified(strided, 10, seed=3), ref)
    assert np.array_equal(rs.stratified(lw64.astype(">f8"), 10, seed=3), ref)
    assert np.array_equal(rs.systematic(np.zeros(4, dtype=np.int32), seed=1), np.arange(4))
    # A misaligned view (np.frombuffer at an odd offset) is copied, not rejected.
    buf = bytearray(8 * 3 + 1)
    odd = np.frombuffer(buf, dtype=np.float64, offset=1, count=3)
    odd[:] = lw64  # (frombuffer of a bytearray is writable)
    assert not odd.flags.aligned
    assert np.array_equal(rs.stratified(odd, 10, seed=3), ref)
    assert rs.ess(odd) == pytest.approx(rs.ess(lw64))


def test_torch_tensor_input():
    torch = pytest.importorskip("torch")
    lw = np.linspace(0.0, -4.0, 64)
    for kind, f in KERNELS.items():
        ref = f(lw, 100, seed=11)
        t = torch.tensor(lw, dtype=torch.float64, requires_grad=True)
        assert np.array_equal(f(t, 100, seed=11), ref), kind
    # float32 tensors are widened exactly like float32 numpy arrays.
    t32 = torch.tensor(lw, dtype=torch.float32)
    assert np.array_equal(rs.systematic(t32, seed=2), rs.systematic(lw.astype(np.float32), seed=2))
    assert rs.ess(torch.zeros(5)) == 5.0
    assert np.allclose(rs.log_normalize(torch.zeros(4)), np.log(0.25))
    with pytest.raises(ValueError):
        rs.systematic(torch.zeros((2, 2)), seed=0)


# ------------------------------------------------------- supplied uniforms


def test_bad_uniforms():
    lw = np.zeros(3)
    with pytest.raises(ValueError, match="exactly 1"):
        rs.systematic(lw, uniforms=[0.1, 0.2])
    with pytest.raises(ValueError, match="exactly 3"):
        rs.stratified(lw, uniforms=[0.1, 0.2])
    with pytest.raises(ValueError, match="exactly 3"):
        rs.multinomial(lw, uniforms=[0.1] * 4)
    for bad in [1.0, -1e-9, np.nan, np.inf]:
        with pytest.raises(ValueError, match=r"not in \[0, 1\)"):
            rs.stratified(lw, uniforms=[0.1, bad, 0.2])
    with pytest.raises(ValueError, match="not both"):
        rs.systematic(lw, seed=1, uniforms=0.5)
    with pytest.raises(ValueError):
        rs.stratified(lw, uniforms=np.zeros((3, 1)))
    # Residual takes one uniform; none is an error, and every supplied
    # value is validated even though only the first is used.
    lw = np.log([0.5, 0.25, 0.25])
    for empty in ([], np.array([])):
        with pytest.raises(ValueError, match="at least 1 uniform"):
            rs.residual(lw, uniforms=empty)
    with pytest.raises(ValueError, match=r"index 2 is 1, not in \[0, 1\)"):
        rs.residual(lw, uniforms=[0.5, 0.5, 1.0])


def test_residual_uniforms_semantics():
    """Residual takes one uniform, the offset of its systematic stage, as
    a float or a length-1 array; a longer sequence (the former
    residual-multinomial interface took R <= n values) is accepted and
    only its first value is used."""
    rng = np.random.default_rng(7)
    for _ in range(20):
        lw = rng.normal(size=int(rng.integers(1, 40))) * 2
        n = int(rng.integers(1, 60))
        for u in [0.0, float(rng.random()), ONE_MINUS]:
            ref = rs.residual(lw, n, uniforms=u)
            assert np.array_equal(rs.residual(lw, n, uniforms=[u]), ref)
            assert np.array_equal(rs.residual(lw, n, uniforms=np.array([u])), ref)
            longer = np.concatenate([[u], rng.random(n + 3)])
            assert np.array_equal(rs.residual(lw, n, uniforms=longer), ref)
            assert np.array_equal(rs.residual(lw, n, uniforms=list(longer[:2])), ref)


def test_systematic_uniform_forms_and_identity():
    lw = np.full(100, -2.0)
    for u in [0.0, 0.5, ONE_MINUS]:
        assert np.array_equal(rs.systematic(lw, uniforms=u), np.arange(100))
        assert np.array_equal(rs.systematic(lw, uniforms=[u]), np.arange(100))
        assert np.array_equal(rs.systematic(lw, uniforms=np.array([u])), np.arange(100))


def test_multinomial_enumeration_is_exact():
    """Uniforms at the midpoint of each particle's interval, each
    combination weighted by the product of interval lengths: the enumerated
    law of the counts must be Multinomial(n, w) exactly."""
    w = np.array([0.2, 0.5, 0.3])
    lw = np.log(w)
    mids = np.cumsum(w) - w / 2
    n = 3
    law = {}
    for combo in itertools.product(range(3), repeat=n):
        u = mids[list(combo)]
        out = rs.multinomial(lw, uniforms=u)
        assert np.array_equal(out, np.sort([naive_pick(w, p) for p in u]))
        key = tuple(np.bincount(out, minlength=3))
        law[key] = law.get(key, 0.0) + float(np.prod(w[list(combo)]))
    assert len(law) == 10
    for key, p in law.items():
        coef = math.factorial(n) / np.prod([math.factorial(k) for k in key])
        assert p == pytest.approx(coef * np.prod(w ** np.array(key)), abs=1e-12)


def test_systematic_enumeration_is_exact():
    """The output is a step function of u with steps at frac(n C_i):
    integrate it exactly over u."""
    w = np.array([0.05, 0.3, 0.0, 0.15, 0.27, 0.23])
    lw = np.log(np.where(w > 0, w, 1e-300))
    lw[w == 0] = -np.inf
    for n in [1, 4, 6, 9, 13]:
        br = np.sort(np.concatenate([[0.0, 1.0], np.mod(np.cumsum(w) * n, 1.0)]))
        br = br[np.concatenate([[True], np.diff(br) > 1e-12])]
        mean = np.zeros_like(w)
        for lo, hi in zip(br[:-1], br[1:]):
            u = (lo + hi) / 2
            out = rs.systematic(lw, n, uniforms=u)
            want = [naive_pick(w, (k + u) / n) for k in range(n)]
            assert np.array_equal(out, want)
            c = np.bincount(out, minlength=len(w))
            assert np.all((c >= np.floor(n * w - 1e-9)) & (c <= np.ceil(n * w + 1e-9)))
            mean += (hi - lo) * c
        np.testing.assert_allclose(mean, n * w, atol=1e-9)


def test_stratified_and_residual_match_definitions():
    rng = np.random.default_rng(0)
    for _ in range(50):
        size = int(rng.integers(1, 30))
        lw = rng.normal(size=size) * 2
        w = normalised(lw)
        n = int(rng.integers(1, 40))
        u = rng.random(n)
        pts = (np.arange(n) + u) / n
        # Skip draws within 1e-9 of an interval boundary (either side is right).
        if np.min(np.abs(pts[:, None] - np.cumsum(w)[None, :])) < 1e-9:
            continue
        assert np.array_equal(rs.stratified(lw, n, uniforms=u), [naive_pick(w, p) for p in pts])
        # Residual = floors, then systematic on the remainders with u[0];
        # skip u[0] within 1e-9 of a breakpoint of the residual stage.
        if np.min(np.abs(residual_breakpoints(w, n) - u[0])) < 1e-9:
            continue
        want = residual_reference(w, n, u[0])
        assert np.array_equal(rs.residual(lw, n, uniforms=u[0]), want)
        assert np.array_equal(rs.residual(lw, n, uniforms=u), want)  # only u[0] is used


def test_residual_enumeration_is_exact():
    """The residual output is a step function of its single uniform u,
    with steps at frac(c_i), c_i the cumulative remainders: integrate over
    u exactly. Hand-derived law for one case; for the others, every output
    must match the definition (and systematic with the same u, which
    residual-systematic equals in exact arithmetic), every count must be
    floor or ceil of n w, and the mean and variance must be exactly n w
    and f (1 - f)."""
    w = np.array([0.45, 0.1, 0.3, 0.15])
    lw = np.log(w)
    # n w = (1.8, 0.4, 1.2, 0.6): floors (1, 0, 1, 0), R = 2, cumulative
    # remainders (0.8, 1.2, 1.4, 2.0), points u and 1 + u.
    want_law = {(2, 1, 1, 0): 0.2, (2, 0, 2, 0): 0.2, (2, 0, 1, 1): 0.4, (1, 1, 1, 1): 0.2}
    br = residual_breakpoints(w, 4)
    np.testing.assert_allclose(br, [0.0, 0.2, 0.4, 0.8, 1.0], atol=1e-12)
    law = {}
    for lo, hi in zip(br[:-1], br[1:]):
        out = rs.residual(lw, 4, uniforms=(lo + hi) / 2)
        key = tuple(int(k) for k in np.bincount(out, minlength=4))
        law[key] = law.get(key, 0.0) + (hi - lo)
    assert law.keys() == want_law.keys()
    for key, p in want_law.items():
        assert law[key] == pytest.approx(p, abs=1e-12)

    for w in [np.array([0.05, 0.3, 0.0, 0.15, 0.27, 0.23]), np.array([0.25, 0.25, 0.125, 0.375]),
              np.array([0.7, 0.1, 0.1, 0.1]), np.linspace(1.0, 2.0, 9) / np.linspace(1.0, 2.0, 9).sum()]:
        lw = np.log(np.where(w > 0, w, 1.0))
        lw[w == 0] = -np.inf
        for n in [1, 3, 4, 6, 8, 9, 13, 20]:
            nw = n * w
            br = residual_breakpoints(w, n)
            mean = np.zeros_like(w)
            sq = np.zeros_like(w)
            for lo, hi in zip(br[:-1], br[1:]):
                u = (lo + hi) / 2
                out = rs.residual(lw, n, uniforms=u)
                assert np.array_equal(out, residual_reference(w, n, u)), (w, n, u)
                assert np.array_equal(out, rs.systematic(lw, n, uniforms=u)), (w, n, u)
                c = np.bincount(out, minlength=len(w))
                assert np.all((c == np.floor(nw)) | (c == np.ceil(nw))), (w, n, u, c)
                mean += (hi - lo) * c
                sq += (hi - lo) * c**2
            np.testing.assert_allclose(mean, nw, atol=1e-9)
            np.testing.assert_allclose(sq - mean**2, exact_var("residual", w, n), atol=1e-9)


def test_residual_counts_within_floor_and_ceil():
    """Every residual count is floor(n w_i) or ceil(n w_i), on every draw:
    random weights (with zeros), weights with n w_i integer or a hair off
    one, and extreme uniforms. The slack of 1e-9 only covers the difference
    between numpy's n w_i and the kernel's; the kernel's own bound is exact
    (tested in Rust)."""
    rng = np.random.default_rng(3)
    cases = [
        np.log([0.25, 0.25, 0.125, 0.375]),
        np.zeros(64),
        np.array([0.0, -700.0, -np.inf, 3.0, 3.0, -1e-16, 1e-16]),
        -0.1 * (np.arange(4097) % 97),
    ]
    for _ in range(30):
        lw = rng.normal(size=int(rng.integers(1, 500))) * 3
        lw[rng.random(lw.size) < 0.2] = -np.inf
        lw[0] = 0.0
        cases.append(lw)
    for lw in cases:
        w = normalised(lw)
        size = len(lw)
        for n in [1, 2, 7, size, 3 * size + 1]:
            nw = n * w
            lo, hi = np.floor(nw - 1e-9), np.ceil(nw + 1e-9)
            for u in [0.0, 0.5, ONE_MINUS]:
                c = np.bincount(rs.residual(lw, n, uniforms=u), minlength=size)
                assert np.all((c >= lo) & (c <= hi)), (size, n, u)
                assert np.all(c[w == 0] == 0)
            for seed in range(5):
                c = np.bincount(rs.residual(lw, n, seed=seed), minlength=size)
                assert np.all((c >= lo) & (c <= hi)), (size, n, seed)


def test_round_off_never_indexes_past_the_end():
    size = 1000
    lw = np.zeros(size)
    lw[-2] = -700.0  # negligible mass just before the end ...
    lw[-1] = -np.inf  # ... and a zero-weight particle after it
    for kind, f in KERNELS.items():
        for u in [0.0, 0.5, ONE_MINUS]:
            uni = u if kind == "systematic" else np.full(size, u)
            out = f(lw, uniforms=uni)
            assert out.max() <= size - 2 and np.all(np.diff(out) >= 0), kind
        for seed in range(10):
            assert f(lw, seed=seed).max() <= size - 2
    # A single draw with u just below 1 and a tiny last weight.
    lw = np.array([0.0, -745.0, -np.inf])
    for kind, f in KERNELS.items():
        assert f(lw, 1, uniforms=[ONE_MINUS])[0] in (0, 1), kind


# ------------------------------------------------ large N (thread pool)

# Systematic and residual resampling of N >= 262,144 particles run on rayon's
# thread pool; their output must not depend on the number of threads (nor
# differ from the sequential path, which RAYON_NUM_THREADS=1 selects).
LARGE_N = 300_007


def large_cases(size: int) -> list[np.ndarray]:
    rng = np.random.default_rng(size)
    cases = [rng.normal(scale=3.0, size=size)]
    lw = rng.normal(scale=200.0, size=size) + 1e5  # extreme range, huge shift
    lw[rng.random(size) < 0.3] = -np.inf
    cases.append(lw)
    lw = np.full(size, -np.inf)  # long zero tail
    lw[: size // 3] = rng.normal(size=size // 3)
    cases.append(lw)
    lw = np.full(size, -700.0)  # one dominant particle: output full early
    lw[0] = 0.0
    lw[1::7] = -np.inf
    cases.append(lw)
    return cases


_THREADS_SCRIPT = f"""
import hashlib
import numpy as np
from tokensieve import resample as rs
from test_resample import LARGE_N, large_cases
h = hashlib.sha256()
for lw in large_cases(LARGE_N):
    for kind in ("systematic", "stratified", "multinomial", "residual"):
        for n, seed in ((LARGE_N, 1), (LARGE_N // 3 + 1, 2), (2 * LARGE_N + 5, 3)):
            h.update(getattr(rs, kind)(lw, n, seed=seed).tobytes())
    for u in (0.0, 0.5, {ONE_MINUS!r}):
        h.update(rs.systematic(lw, uniforms=u).tobytes())
        h.update(rs.residual(lw, uniforms=u).tobytes())
print(h.hexdigest())
"""


def test_large_outputs_do_not_depend_on_thread_count():
    digests = {}
    for threads in (1, 2, 4):
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(__file__), env.get("PYTHONPATH")]))
        r = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        digests[threads] = r.stdout.strip()
    assert len(set(digests.values())) == 1, digests


@pytest.mark.parametrize("kind", ["systematic", "residual"])
def test_large_outputs_valid_and_within_floor_and_ceil(kind):
    """The (parallel) large-N path keeps every guarantee: sorted, complete,
    no zero-weight particle, every count floor(n w_i) or ceil(n w_i)."""
    f = KERNELS[kind]
    for lw in large_cases(LARGE_N):
        w = normalised(lw)
        for n in (LARGE_N, LARGE_N // 3 + 1, 2 * LARGE_N + 5):
            nw = n * w
            lo, hi = np.floor(nw - 1e-9), np.ceil(nw + 1e-9)
            for kw in ({"seed": 11}, {"uniforms": 0.0}, {"uniforms": ONE_MINUS}):
                out = f(lw, n, **kw)
                assert out.shape == (n,)
                assert np.all(np.diff(out) >= 0)
                assert out.min() >= 0 and out.max() < LARGE_N
                c = np.bincount(out, minlength=LARGE_N)
                assert np.all((c >= lo) & (c <= hi)), (kind, n, kw)
                assert np.all(c[w == 0] == 0)


# ----------------------------------------------------------- statistics


@pytest.mark.parametrize("kind", KERNELS)
def test_offspring_counts_unbiased_and_bounded(kind):
    """E[N_i] = n w_i by z-tests with the exact standard error
    sqrt(Var / reps) (see ``exact_var``); plus each scheme's hard bounds on
    every single draw."""
    reps = 4000
    f = KERNELS[kind]
    for wi, lw in enumerate(WEIGHTS):
        w = normalised(lw)
        size = len(lw)
        for n in [size, 2 * size + 1]:
            draws = np.stack([f(lw, n, seed=1000 * wi + 10 * n + r) for r in range(reps)])
            c = counts_matrix(draws, size)
            nw = n * w
            lo, hi = np.floor(nw - 1e-9), np.ceil(nw + 1e-9)
            if kind in ("systematic", "residual"):
                assert np.all((c >= lo) & (c <= hi))
            elif kind == "stratified":
                # |N_i - n w_i| < 2, i.e. within one of floor / ceil.
                assert np.all((c >= lo - 1) & (c <= hi + 1))
            assert np.all(c[:, w == 0] == 0)
            var = exact_var(kind, w, n)
            mean = c.mean(axis=0)
            det = var < 1e-12
            np.testing.assert_allclose(mean[det], nw[det], atol=1e-6)
            z = (mean[~det] - nw[~det]) / np.sqrt(var[~det] / reps)
            assert np.all(np.abs(z) < Z_BOUND), (kind, wi, n, z)


def test_low_variance_schemes_not_above_multinomial():
    """Per-particle count variance of systematic / stratified / residual is
    at most multinomial's n w (1 - w): analytically, and empirically
    within 5 standard errors of the sample variance (se estimated from the
    sample fourth central moment, se^2 = (m4 - s^4) / reps)."""
    rng = np.random.default_rng(1)
    for _ in range(200):
        size = int(rng.integers(1, 15))
        w = normalised(rng.normal(size=size) * 2)
        n = int(rng.integers(1, 30))
        mv = exact_var("multinomial", w, n)
        for kind in ["systematic", "stratified", "residual"]:
            assert np.all(exact_var(kind, w, n) <= mv + 1e-12)
    reps = 4000
    lw = WEIGHTS[2]
    w = normalised(lw)
    n = len(lw)
    mv = exact_var("multinomial", w, n)
    for kind in ["systematic", "stratified", "residual"]:
        c = counts_matrix(np.stack([KERNELS[kind](lw, seed=r) for r in range(reps)]), n)
        s2 = c.var(axis=0, ddof=1)
        m4 = ((c - c.mean(axis=0)) ** 4).mean(axis=0)
        se = np.sqrt(np.maximum(m4 - s2**2, 0) / reps)
        assert np.all(s2 <= mv + Z_BOUND * se + 1e-3), kind
        np.testing.assert_array_less(np.abs(s2 - exact_var(kind, w, n)), Z_BOUND * se + 1e-3)


# ---------------------------------------------------- ess / log_normalize


def test_ess_and_log_normalize():
    w = np.array([0.1, 0.2, 0.3, 0.4])
    assert rs.ess(np.log(w)) == pytest.approx(1 / np.sum(w**2), rel=1e-12)
    assert rs.ess(np.log(w) + 1e4) == pytest.approx(1 / np.sum(w**2), rel=1e-9)
    assert rs.ess(np.zeros(10)) == 10.0
    assert rs.ess([3.0, -np.inf]) == 1.0
    ln = rs.log_normalize(np.log(w) + 50.0)
    np.testing.assert_allclose(np.exp(ln), w, rtol=1e-12)
    assert rs.log_normalize([0.0, -np.inf])[1] == -np.inf
    rng = np.random.default_rng(0)
    big = rng.normal(size=100_000) * 10
    ref = big - (big.max() + np.log(np.exp(big - big.max()).sum()))
    np.testing.assert_allclose(rs.log_normalize(big), ref, rtol=1e-12, atol=1e-10)
    wb = normalised(big)
    assert rs.ess(big) == pytest.approx(1 / np.sum(wb**2), rel=1e-10)
    for f in (rs.ess, rs.log_normalize):
        for bad in ([], [np.nan], [np.inf, 0.0], [-np.inf], np.zeros((2, 2))):
            with pytest.raises(ValueError):
                f(bad)


# ------------------------------------------------------------ Population


def test_population_construction():
    p = _core.Population(4)
    assert (p.n, len(p), p.ess_threshold, p.resampler) == (4, 4, 0.5, "systematic")
    assert p.log_z == 0.0 and p.ess == 4.0 and p.ess_history == []
    np.testing.assert_array_equal(p.log_weights, np.zeros(4))
    assert not hasattr(rs, "Population")  # internal to the SMC driver
    for kind in KERNELS:
        assert _core.Population(3, resampler=kind, seed=1).resampler == kind
    _core.Population(3, seed=np.random.default_rng(0))
    _core.Population(3, seed=2**64 - 1)
    for kwargs in [dict(n=0), dict(n=-2), dict(n=3, ess_threshold=1.5),
                   dict(n=3, ess_threshold=-0.1), dict(n=3, ess_threshold=float("nan")),
                   dict(n=3, resampler="bogus"), dict(n=3, seed=-1), dict(n=3, seed=2**64)]:
        with pytest.raises(ValueError):
            _core.Population(**kwargs)
    for bad in [1.5, "x", True]:
        with pytest.raises(TypeError):
            _core.Population(3, seed=bad)
    assert "Population(n=4" in repr(p)


def test_population_add_log_weights_validation():
    p = _core.Population(3, seed=0)
    p.add_log_weights([1.0, -np.inf, 0.5])
    before = p.log_weights
    for bad in [[0.0, 0.0], np.zeros((3, 1)), [0.0, np.nan, 0.0], [np.inf, 0.0, 0.0]]:
        with pytest.raises(ValueError):
            p.add_log_weights(bad)
    np.testing.assert_array_equal(p.log_weights, before)  # unchanged
    # log_weights is a copy.
    lw = p.log_weights
    lw[:] = 7.0
    np.testing.assert_array_equal(p.log_weights, before)


def test_population_accepts_misaligned_and_sequences():
    p = _core.Population(3, ess_threshold=0.0, seed=0)
    buf = bytearray(8 * 3 + 1)
    odd = np.frombuffer(buf, dtype=np.float64, offset=1, count=3)
    odd[:] = [0.5, -1.0, 0.0]
    p.add_log_weights(odd)
    p.add_log_weights((0.5, 0, 1))
    np.testing.assert_array_equal(p.log_weights, [1.0, -1.0, 1.0])


def test_population_accepts_torch():
    torch = pytest.importorskip("torch")
    p = _core.Population(3, ess_threshold=0.0, seed=0)
    p.add_log_weights(torch.tensor([0.5, -1.0, 0.0], dtype=torch.float32, requires_grad=True))
    np.testing.assert_allclose(p.log_weights, np.float32([0.5, -1.0, 0.0]))


def test_log_z_without_resampling_is_log_mean_of_products():
    rng = np.random.default_rng(3)
    n, steps = 16, 6
    inc = rng.normal(size=(steps, n))
    inc[2, 5] = -np.inf  # one particle dies
    inc[3, :4] = 0.0  # finished particles
    p = _core.Population(n, ess_threshold=0.0, seed=1)
    for t in range(steps):
        p.add_log_weights(inc[t])
        assert p.maybe_resample() is None
    want = np.log(np.mean(np.exp(inc.sum(axis=0))))
    assert p.log_z == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert len(p.ess_history) == steps
    np.testing.assert_allclose(p.normalized_weights(), normalised(inc.sum(axis=0)), rtol=1e-12)


def test_ess_triggered_resampling_resets_to_log_mean():
    n = 8
    p = _core.Population(n, ess_threshold=0.5, seed=5)
    # Mild imbalance: ESS above n/2, no resampling.
    mild = np.linspace(0.0, -0.5, n)
    p.add_log_weights(mild)
    ess0 = rs.ess(mild)
    assert ess0 >= 0.5 * n and p.ess == pytest.approx(ess0)
    assert p.maybe_resample() is None
    # Strong imbalance: ESS below n/2, resample.
    strong = np.array([4.0, 0.0, -1.0, -np.inf, 0.0, -2.0, -3.0, -0.5])
    p.add_log_weights(strong)
    total = mild + strong
    log_z = float(np.log(np.mean(np.exp(total))))
    assert p.log_z == pytest.approx(log_z, rel=1e-12)
    ess1 = p.ess
    assert ess1 < 0.5 * n
    anc = p.maybe_resample()
    assert anc is not None and anc.dtype == np.int64 and anc.shape == (n,)
    assert np.all(np.diff(anc) >= 0) and 3 not in anc
    # Every log weight is now the log-mean, so log_z is unchanged.
    np.testing.assert_allclose(p.log_weights, np.full(n, log_z), rtol=1e-12)
    assert p.log_z == pytest.approx(log_z, rel=1e-12)
    assert p.ess == n
    assert p.ess_history == pytest.approx([ess0, ess1])
    assert p.maybe_resample() is None  # balanced now


def test_threshold_boundary():
    # Weights (1, 1, 1, 0): ESS is exactly 3 of 4.
    inc = [0.0, 0.0, 0.0, -np.inf]
    at = _core.Population(4, ess_threshold=0.75, seed=0)
    at.add_log_weights(inc)
    assert at.ess == 3.0 and at.maybe_resample() is None
    above = _core.Population(4, ess_threshold=0.76, seed=0)
    above.add_log_weights(inc)
    assert 3 not in above.maybe_resample()


def test_extinct_population():
    p = _core.Population(3, seed=0)
    p.add_log_weights([-np.inf] * 3)
    assert p.ess == 0.0 and p.log_z == -np.inf
    with pytest.raises(ValueError, match="weight zero"):
        p.maybe_resample()
    with pytest.raises(ValueError):
        p.normalized_weights()
    q = _core.Population(3, ess_threshold=0.0, seed=0)
    q.add_log_weights([-np.inf] * 3)
    assert q.maybe_resample() is None


def test_population_reproducible():
    def run(seed):
        p = _core.Population(50, ess_threshold=1.0, resampler="multinomial", seed=seed)
        inc = np.linspace(0, -3, 50)
        return [p.add_log_weights(inc) or p.maybe_resample() for _ in range(4)]

    a, b, c = run(9), run(9), run(10)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("kind", KERNELS)
def test_smc_estimate_unbiased_in_z(kind):
    """Toy Feynman-Kac model: state i in 0..3, increment G(i) = exp(-0.3 i)
    at each of 3 steps, resampling at every step (threshold 1). E[hat Z] =
    Z = mean_i G(i)^3 for any unbiased resampler; a single z-test."""
    g = np.exp(-0.3 * np.arange(4))
    z_true = np.mean(g**3)
    reps = 5000
    est = np.empty(reps)
    for r in range(reps):
        p = _core.Population(4, ess_threshold=1.0, resampler=kind, seed=r)
        states = np.arange(4)
        for _ in range(3):
            p.add_log_weights(np.log(g[states]))
            anc = p.maybe_resample()
            if anc is not None:
                states = states[anc]
        est[r] = math.exp(p.log_z)
    z = (est.mean() - z_true) / (est.std(ddof=1) / math.sqrt(reps))
    assert abs(z) < Z_BOUND
