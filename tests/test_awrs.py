"""AWRS through the Python binding, and Python potentials: exactness on a
5-token vocabulary (fixed seeds, tolerances from the number of draws) and
bad input."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from tokensieve import _core
from tokensieve.potentials import accept_function, complete_only, potential

P = np.array([0.4, 0.25, 0.2, 0.1, 0.05])
ALLOWED = [False, True, True, False, True]
Z = float(P[ALLOWED].sum())


def _accept(tokens: list) -> list:
    return [ALLOWED[t] for t in tokens]


@pytest.mark.parametrize("sampler", ["awrs", "rejection", "full"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_distribution_and_unbiased_weight(sampler: str, dtype: type) -> None:
    n = 6000
    logp = np.log(P).astype(dtype)
    counts = np.zeros(5)
    w = np.empty(n)
    calls = 0
    for seed in range(n):
        tok, lw, c, _ = _core.awrs_sample(logp, _accept, sampler, 1000, seed)
        counts[tok] += 1
        w[seed] = math.exp(lw)
        calls += c
    p32 = np.exp(logp.astype(np.float64))
    z = float(p32[ALLOWED].sum() / p32.sum())
    assert abs(w.mean() - z) <= 3 * w.std() / math.sqrt(n) + 1e-12
    exp = n * p32 / p32.sum() / z
    idx = [i for i in range(5) if ALLOWED[i]]
    assert counts[[i for i in range(5) if not ALLOWED[i]]].sum() == 0
    chi2 = float((((counts[idx] - exp[idx]) ** 2) / exp[idx]).sum())
    assert chi2 < 16.3  # chi-square df=2, p = 0.0003
    print(f"{sampler}: mean calls per step {calls / n:.2f} vs |V| = 5")


@pytest.mark.parametrize("sampler,bound", [("awrs", lambda z: 2 / z + 1), ("rejection", lambda z: 2 / z)])
@pytest.mark.parametrize("allowed_frac", [0.9, 0.5, 0.1])
def test_calls_within_the_1_over_z_bound(sampler: str, bound: Any, allowed_frac: float) -> None:
    """Calls per draw against theory, at |V| = 4,096: AWRS's first round
    (without replacement, so no worse than geometric) needs at most
    ``1 / Z_c`` questions on average and its second round, which stops one
    draw after its first acceptance, at most ``1 / Z_c + 1``; rejection
    sampling's two rounds (up to the second acceptance, with replacement)
    ``2 / Z_c`` draws, a repeated token being asked once. Mean over 3,000
    seeded draws within 3 standard errors of the bound."""
    v, n = 4096, 3000
    rng = np.random.default_rng(11)
    logp = rng.standard_normal(v) * 2
    allowed = rng.random(v) < allowed_frac
    p = np.exp(logp - logp.max())
    z = float(p[allowed].sum() / p.sum())
    calls = np.empty(n)
    for seed in range(n):
        tok, _, calls[seed], _ = _core.awrs_sample(logp, lambda t: [bool(allowed[i]) for i in t], sampler, 1000, seed)
        assert tok is not None and allowed[tok]
    mean, se = float(calls.mean()), float(calls.std() / math.sqrt(n))
    print(f"{sampler}: Z_c = {z:.3f}, mean calls {mean:.2f} (bound {bound(z):.2f}) vs |V| = {v}")
    assert mean <= bound(z) + 3 * se


def test_nothing_allowed_and_bad_input() -> None:
    tok, lw, _, _ = _core.awrs_sample(np.log(P), lambda t: [False] * len(t))
    assert tok is None and lw == -math.inf
    with pytest.raises(ValueError, match="token 1"):
        _core.awrs_sample(np.array([0.0, np.nan]), _accept)
    with pytest.raises(TypeError, match="float32 or float64"):
        _core.awrs_sample(np.zeros(3, dtype=np.int64), _accept)
    with pytest.raises(ValueError, match="unknown sampler"):
        _core.awrs_sample(np.log(P), _accept, "nope")

    def boom(tokens: list) -> list:
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        _core.awrs_sample(np.log(P), boom)


def test_potentials_and_accept_function() -> None:
    no_e = potential(lambda s: b"e" not in s)
    short = potential(lambda s: -0.5 * len(s))
    prod = no_e * short
    assert prod.prefix(b"abc") == -1.5
    assert prod.prefix(b"abe") == -math.inf
    final = complete_only(lambda s: s.endswith(b"."))
    assert final.prefix(b"abc") == 0.0 and final.complete(b"abc") == -math.inf
    toks = [b"a", b"e", b"x", b"ee", b"."]
    acc = accept_function(no_e, b"th", toks, particle=3, step=7)
    assert acc([0, 1, 2, 3]) == [True, False, True, False]
    tok, lw, _, _ = _core.awrs_sample(np.log(P), acc, "awrs", 1000, 1)
    assert tok in (0, 2, 4) and lw > -math.inf


def test_potential_errors_name_particle_and_step() -> None:
    def bad(s: bytes) -> bool:
        raise ValueError("db down")

    acc = accept_function(potential(bad), b"", [b"a"], particle=3, step=7)
    with pytest.raises(ValueError, match="particle 3, step 7"):
        _core.awrs_sample(np.zeros(1), acc)
    with pytest.raises(TypeError, match="NaN"):
        potential(lambda s: float("nan")).prefix(b"x")
    with pytest.raises(TypeError, match="str"):
        potential(lambda s: "yes").prefix(b"x")  # type: ignore[arg-type, return-value]


@pytest.mark.parametrize("sampler", ["awrs", "rejection", "full"])
def test_mask_argument(sampler: str) -> None:
    """``mask``: a packed int32 bitmask row applied before the accept
    function, which is never asked about masked-out tokens; the weight is
    relative to the masked distribution."""
    mask = np.array([0b10110], dtype=np.int32)  # tokens 1, 2, 4
    asked = set()

    def acc(tokens: list) -> list:
        asked.update(tokens)
        return [t != 1 for t in tokens]

    n = 4000
    w = np.empty(n)
    for seed in range(n):
        tok, lw, _, _ = _core.awrs_sample(np.log(P), acc, sampler, 1000, seed, mask)
        assert tok in (2, 4)
        w[seed] = math.exp(lw)
    assert asked <= {1, 2, 4}
    z = (P[2] + P[4]) / (P[1] + P[2] + P[4])
    assert abs(w.mean() - z) <= 3 * w.std() / math.sqrt(n) + 1e-12
    tok, lw, _, _ = _core.awrs_sample(np.log(P), acc, sampler, 1000, 0, np.zeros(1, dtype=np.int32))
    assert tok is None and lw == -math.inf


def test_product_batches_per_factor_and_short_circuits() -> None:
    from tokensieve.potentials import Potential

    seen = {"a": 0, "b": 0}

    class Counting(Potential):
        def __init__(self, key: str, bad: bytes) -> None:
            self.key, self.bad, self.name = key, bad, key

        def batch_prefix(self, texts):  # type: ignore[no-untyped-def]
            seen[self.key] += 1
            return [-math.inf if self.bad in t else -1.0 for t in texts]

    prod = Counting("a", b"x") * Counting("b", b"y")
    assert prod.batch_prefix([b"ab", b"ax", b"ay"]) == [-2.0, -math.inf, -math.inf]
    assert seen == {"a": 1, "b": 1}  # one batch call per factor
    with pytest.raises(TypeError, match="NaN"):
        (potential(lambda s: True) * potential(lambda s: float("nan"))).batch_prefix([b"a"])


@pytest.mark.parametrize("sampler", ["awrs", "rejection", "full"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rows_equal_row_by_row_with_one_call_per_round(sampler: str, dtype: type) -> None:
    rng = np.random.default_rng(1)
    rows, v = 9, 200
    logp = (rng.standard_normal((rows, v)) * 2).astype(dtype)
    mask = np.full((rows, (v + 31) // 32), -1, dtype=np.int32)
    mask[4, :3] = 0  # row 4: tokens 0..95 masked out
    ok = lambda r, t: (t * 7 + r) % 3 != 0 and r != 8  # noqa: E731
    seeds = [3 * r + 1 for r in range(rows)]
    rounds = []

    def acc_rows(rs: list, toks: list) -> list:
        rounds.append(len(rs))
        return [[ok(r, t) for t in ts] for r, ts in zip(rs, toks)]

    got = _core.awrs_sample_rows(logp, acc_rows, seeds, sampler, 1000, mask)
    for r in range(rows):
        one = _core.awrs_sample(logp[r], lambda ts: [ok(r, t) for t in ts], sampler, 1000, seeds[r], mask[r])
        assert got[r] == one
    assert got[8][0] is None and got[8][1] == -math.inf
    assert len(rounds) <= max(g[2] for g in got) + 1 and max(rounds) > 1  # batched across rows


def test_rows_errors_and_bad_input() -> None:
    logp = np.log(np.tile(P, (3, 1)))

    def boom(rs: list, toks: list) -> list:
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        _core.awrs_sample_rows(logp, boom, [1, 2, 3])
    with pytest.raises(ValueError, match="wrong number"):
        _core.awrs_sample_rows(logp, lambda rs, toks: [[True]], [1, 2, 3])
    bad = logp.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="row 1"):
        _core.awrs_sample_rows(bad, lambda rs, toks: [[True] * len(t) for t in toks], [1, 2, 3])
    with pytest.raises(TypeError, match="2-D"):
        _core.awrs_sample_rows(np.zeros((2, 3), dtype=np.int64), lambda rs, toks: [], [1, 2])
    with pytest.raises(ValueError, match="rows"):
        _core.awrs_sample_rows(logp, lambda rs, toks: [], [1, 2])
    assert _core.awrs_sample_rows(np.zeros((0, 5)), lambda rs, toks: [], []) == []


@pytest.mark.parametrize("sampler", ["awrs", "rejection"])
def test_known_answers_are_not_asked_again(sampler: str) -> None:
    """``known`` (token -> log weight, what ``accept`` stored, possibly for
    another particle with the same text) answers a question without calling
    ``accept``: same draws and weights as asking, and each token asked once
    over many draws that share the dict."""
    rng = np.random.default_rng(5)
    row = (rng.standard_normal(3000) * 3).astype(np.float32)
    nb = -(-row.size // _core.MASKED_BLOCK)
    mask = np.full((1, _core.bitmask_words(row.size)), -1, dtype=np.int32)
    lz, mx, cum = np.empty(1), np.empty(1), np.empty((1, nb))
    _core.masked_rows_into(row[None, :], mask, lz, mx, cum)
    known: dict = {}
    asked: list = []

    def store(ts: list) -> list:
        asked.extend(ts)
        for t in ts:
            known[t] = 0.0 if t % 3 == 0 else -math.inf
        return [known[t] > -math.inf for t in ts]

    questions = 0
    for seed in range(200):
        a = _core.awrs_sample(row, store, sampler, 1000, seed, mask[0], float(mx[0]), cum[0], known)
        questions += a[2]
        b = _core.awrs_sample(row, lambda ts: [t % 3 == 0 for t in ts], sampler, 1000, seed, mask[0],
                              float(mx[0]), cum[0])
        assert a == b
    assert len(asked) == len(set(asked)) and len(asked) < questions / 2, (len(asked), questions)


@pytest.mark.parametrize("sampler", ["awrs", "rejection", "full"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_blocks_arguments(sampler: str, dtype: type) -> None:
    """``max`` / ``cum`` (the masked kernel's outputs for the same rows and
    masks) give the same law without the sampler's own O(V) pass: P spread
    over three blocks of a 2,500-token vocabulary, the rest masked out;
    row by row and all rows at once agree."""
    v, ids = 2500, [3, 1030, 1500, 2100, 2499]
    row = np.full(v, 5.0, dtype=dtype)  # masked out, so never drawn
    row[ids] = np.log(P)
    allowed = np.zeros(v, dtype=bool)
    allowed[ids] = True
    packed = np.packbits(allowed, bitorder="little")
    packed = np.pad(packed, (0, -packed.size % 4))
    mask = packed.view("<i4").astype(np.int32)[None, :]
    nb = -(-v // _core.MASKED_BLOCK)
    lz, mx, cum = np.empty(1), np.empty(1), np.empty((1, nb))
    _core.masked_rows_into(row[None, :], mask, lz, mx, cum)
    ok = {t for t, a in zip(ids, ALLOWED) if a}
    n = 4000
    w = np.empty(n)
    counts = dict.fromkeys(ids, 0)
    for seed in range(n):
        tok, lw, _, _ = _core.awrs_sample(row, lambda ts: [t in ok for t in ts], sampler, 1000, seed, mask[0],
                                          float(mx[0]), cum[0])
        counts[tok] += 1
        w[seed] = math.exp(lw)
    p = np.exp(np.log(P).astype(dtype).astype(np.float64))
    z = float(p[ALLOWED].sum() / p.sum())
    assert abs(w.mean() - z) <= 3 * w.std() / math.sqrt(n) + 1e-6
    assert all(counts[t] == 0 for t in ids if t not in ok)
    exp = {t: n * p[k] / p.sum() / z for k, t in enumerate(ids) if t in ok}
    assert sum((counts[t] - e) ** 2 / e for t, e in exp.items()) < 16.3
    rows = np.repeat(row[None, :], 3, axis=0)
    masks = np.repeat(mask, 3, axis=0)
    got = _core.awrs_sample_rows(rows, lambda rs, toks: [[t in ok for t in ts] for ts in toks], [1, 2, 3], sampler,
                                 1000, masks, np.repeat(mx, 3), np.repeat(cum, 3, axis=0))
    for r, seed in enumerate([1, 2, 3]):
        assert got[r] == _core.awrs_sample(row, lambda ts: [t in ok for t in ts], sampler, 1000, seed, mask[0],
                                           float(mx[0]), cum[0])
    with pytest.raises(ValueError, match="both"):
        _core.awrs_sample(row, lambda ts: [True] * len(ts), sampler, 1000, 0, mask[0], float(mx[0]))
    with pytest.raises(ValueError, match="block sums"):
        _core.awrs_sample(row, lambda ts: [True] * len(ts), sampler, 1000, 0, mask[0], float(mx[0]), cum[0, :2])


def test_kernel_blocks_inconsistent_with_the_row_still_ends() -> None:
    """``max`` / ``cum`` that disagree with the log-probs (here a total of
    1e-300 for a row whose mass is ~1) give meaningless weights but never
    hang or crash (the rejection sampler's fallback series once did not
    end for an allowed mass above 1)."""
    row = np.log(P)
    for sampler in ("awrs", "rejection", "full"):
        for cum in ([1e-300], [float("nan")], [float("inf")], [-1.0]):
            tok, lw, _, _ = _core.awrs_sample(row, lambda ts: [t == 4 for t in ts], sampler, 3, 0, None,
                                              float(row.max()), np.array(cum))
            assert tok in (None, 4)
