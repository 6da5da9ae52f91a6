"""SMC driver (tokensieve.smc) on exact table LMs.

Exactness is checked against brute force: every token sequence of a small
table LM is enumerated (bounded length), the ones whose bytes fully match
the regex (Python's ``regex`` module, independent of tokensieve) are kept,
and the exact conditional distribution over *strings* (token sequences with
the same bytes summed) is compared with SMC's posterior.

Tolerances. For an empirical distribution of ``N_eff`` i.i.d. draws over
strings with probabilities ``p_k``, ``E[TV] ~= 0.5 * sum_k sqrt(2 p_k (1 - p_k)
/ (pi N_eff))``; for the problems below (a handful of strings carry almost
all the mass) and ``N = 2000`` this is 0.005-0.012, so the issue's bound of
0.03 is 2.5-6 times the expected error (seeds are fixed, so the tests are
deterministic anyway). For ``Z``, the mean of ``R`` independent estimates
``Z_hat`` (unbiased) is compared with the exact ``P(constraint)`` within 3
standard errors ``std(Z_hat) / sqrt(R)``.
"""

from __future__ import annotations

import io
import math
from typing import Dict, Tuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")
regex = pytest.importorskip("regex")

import tokensieve as ts  # noqa: E402
from tokensieve import smc  # noqa: E402
from tokensieve.models import LanguageModel, TableLM  # noqa: E402

N = 2000
TV_BOUND = 0.03


# --------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------


def why_smc_lm() -> TableLM:
    """The README example: p(a) = 0.9, p(b | a) = 0.01, language {ab, b}.

    Bigram over [a, b, EOS]: the first token is a (0.9) or b (0.1); after a:
    a 0.49, b 0.01, EOS 0.5; after b: EOS. P("ab") = 0.009, P("b") = 0.1,
    P(constraint) = 0.109, exact conditional P("ab" | L) = 0.0826; masked
    decoding gives "ab" 0.9 (it must take b after a).
    """
    init = [0.9, 0.1, 0.0]
    trans = [[0.49, 0.01, 0.5], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]
    return TableLM.bigram([b"a", b"b", None], init, trans, eos_token_id=2, max_len=6)


BIGRAM_TOKENS = (b"a", b"b", b"c", b"ab", b"bc", b"ca")


def bigram_lm(seed: int = 1234, max_len: int = 8, tokens=BIGRAM_TOKENS, p_eos: float = 0.35) -> TableLM:
    """Random bigram over overlapping multi-byte tokens (so most strings have
    several tokenizations): Dirichlet(1) rows over ``tokens`` (by default
    [a, b, c, ab, bc, ca]), EOS with probability ``p_eos`` after every token
    (never first), and a forced EOS after ``max_len - 1`` tokens so the
    support is finite."""
    toks = [*tokens, None]
    v = len(toks)
    rng = np.random.default_rng(seed)
    init = np.append(rng.dirichlet(np.ones(v - 1)), 0.0)
    trans = np.hstack([rng.dirichlet(np.ones(v - 1), size=v) * (1 - p_eos), np.full((v, 1), p_eos)])
    return TableLM.bigram(toks, init, trans, eos_token_id=v - 1, max_len=max_len)


def exact_posterior(lm: TableLM, pattern: str) -> Tuple[Dict[bytes, float], float]:
    """Brute force: (conditional distribution over matching strings, P(constraint))."""
    rx = regex.compile(pattern.encode())

    def viable(text: bytes) -> bool:
        return rx.fullmatch(text, partial=True) is not None

    dist: Dict[bytes, float] = {}
    for seq, p in lm.sequences(prefix_ok=viable):
        text = lm.text(seq)
        if rx.fullmatch(text) is not None:
            dist[text] = dist.get(text, 0.0) + p
    z = sum(dist.values())
    return {k: v / z for k, v in dist.items()}, z


def tv(p: Dict, q: Dict) -> float:
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)


def expected_tv(p: Dict, n_eff: float) -> float:
    return 0.5 * sum(math.sqrt(2 * v * (1 - v) / (math.pi * n_eff)) for v in p.values())


# --------------------------------------------------------------------------
# The example that motivates SMC
# --------------------------------------------------------------------------


def test_why_smc_example_numbers():
    lm = why_smc_lm()
    exact, z = exact_posterior(lm, "ab|b")
    assert z == pytest.approx(0.109)
    assert exact[b"ab"] == pytest.approx(0.009 / 0.109)
    assert exact[b"b"] == pytest.approx(0.1 / 0.109)


def test_why_smc_smc_is_exact_and_masking_is_biased():
    lm = why_smc_lm()
    c = ts.compile_regex("ab|b", lm.vocabulary)
    exact, z = exact_posterior(lm, "ab|b")

    res = smc.generate(lm, None, None, c, n_particles=N, seed=0, max_new_tokens=8)
    assert all(s == "eos" for s in res.status)
    post = res.posterior(as_bytes=True)
    assert tv(post, exact) < TV_BOUND
    assert math.exp(res.log_z) == pytest.approx(z, rel=0.1)

    masked = smc.masked_decode(lm, None, None, c, n_samples=N, seed=0, max_new_tokens=8)
    mpost = masked.posterior(as_bytes=True)
    assert mpost[b"ab"] == pytest.approx(0.9, abs=0.03)
    assert tv(mpost, exact) >= 0.3  # 0.82 in expectation


# --------------------------------------------------------------------------
# Exactness on enumerable problems
# --------------------------------------------------------------------------

# (bigram seed, pattern): small supports (3-5 strings, 5-84 token paths),
# where the TV of even an exact i.i.d. sampler at N = 2000 is 0.005-0.011 in
# expectation; the 0.03 bound holds with a margin of about 3x.
SMALL_CASES = [
    (1234, r"(a|b)(c|ab)"),
    (1234, r"a(bc|cb)?"),
    (1234, r"(abc)+"),
    (99, r"bca?b?"),
    (99, r"a[bc]?c?"),
]
# Large supports (hundreds to thousands of strings): the TV between any
# N = 2000 sample and the exact distribution is dominated by the many rare
# strings (0.03-0.45 even for an exact i.i.d. sampler), so these are compared
# on coarsenings (the 8 likeliest strings plus "other"; the length), within
# 3 times the expected TV of an i.i.d. sample of size N / 2 (the ESS the
# default threshold maintains) on the same coarsening: 0.08-0.1 here, while
# the observed values over 30 seeds are 0.02-0.06.
LARGE_CASES = [
    (1234, r"(ab|c)+"),
    (1234, r"ca(b|c)*"),
    (1234, r"[abc]*cab[abc]*"),
]


def coarsen(dist: Dict[bytes, float], top) -> Tuple[Dict, Dict]:
    by_top: Dict = {}
    by_len: Dict = {}
    for k, v in dist.items():
        key = k if k in top else "other"
        by_top[key] = by_top.get(key, 0.0) + v
        by_len[len(k)] = by_len.get(len(k), 0.0) + v
    return by_top, by_len


@pytest.mark.parametrize("case", SMALL_CASES, ids=[f"{s}-{p}" for s, p in SMALL_CASES])
def test_posterior_matches_brute_force(case):
    seed, pattern = case
    lm = bigram_lm(seed)
    exact, z = exact_posterior(lm, pattern)
    assert len(exact) >= 3 and 0 < z < 1
    c = ts.compile_regex(pattern, lm.vocabulary)
    res = smc.generate(lm, None, None, c, n_particles=N, seed=42, max_new_tokens=20)
    # Forced EOS at max_len: every particle is complete, or dead (its text
    # was not in the language when only EOS had positive probability).
    assert all(s in ("eos", "dead") for s in res.status)
    post = res.posterior(as_bytes=True)
    for text in post:
        assert regex.fullmatch(pattern.encode(), text) is not None
    d = tv(post, exact)
    assert d < TV_BOUND, (pattern, d, expected_tv(exact, N))
    # A single estimate is within a generous factor; the unbiasedness test
    # below is the sharp check.
    assert math.exp(res.log_z) == pytest.approx(z, rel=0.25)


@pytest.mark.parametrize("case", LARGE_CASES, ids=[f"{s}-{p}" for s, p in LARGE_CASES])
def test_posterior_matches_brute_force_large_support(case):
    seed, pattern = case
    lm = bigram_lm(seed, max_len=7)
    exact, _ = exact_posterior(lm, pattern)
    assert len(exact) > 100
    c = ts.compile_regex(pattern, lm.vocabulary)
    res = smc.generate(lm, None, None, c, n_particles=N, seed=42, max_new_tokens=20)
    post = res.posterior(as_bytes=True)
    assert all(regex.fullmatch(pattern.encode(), t) is not None for t in post)
    top = set(sorted(exact, key=exact.get, reverse=True)[:8])
    (e_top, e_len), (p_top, p_len) = coarsen(exact, top), coarsen(post, top)
    assert tv(p_top, e_top) < 3 * expected_tv(e_top, N / 2)
    assert tv(p_len, e_len) < 3 * expected_tv(e_len, N / 2)


@pytest.mark.parametrize("resampler", smc.RESAMPLERS)
def test_posterior_exact_every_resampler(resampler):
    # ess_threshold=1: resample at every step where the weights differ.
    lm = bigram_lm(99)
    pattern = r"a[bc]?c?"
    exact, _ = exact_posterior(lm, pattern)
    c = ts.compile_regex(pattern, lm.vocabulary)
    res = smc.generate(lm, None, None, c, n_particles=N, seed=7, resampler=resampler, ess_threshold=1.0)
    assert sum(res.resampled) >= 2
    assert tv(res.posterior(as_bytes=True), exact) < TV_BOUND


@pytest.mark.parametrize("ess_threshold", [0.0, 0.5, 1.0])
def test_posterior_exact_resampling_thresholds(ess_threshold):
    lm = bigram_lm(1234)
    pattern = r"(a|b)(c|ab)"
    exact, _ = exact_posterior(lm, pattern)
    c = ts.compile_regex(pattern, lm.vocabulary)
    # (Over 200 seeds at the default threshold, P(TV > 0.03) was 0.5% for
    # this case; seed 0 is not in that tail for any threshold.)
    res = smc.generate(lm, None, None, c, n_particles=N, seed=0, ess_threshold=ess_threshold)
    if ess_threshold == 0.0:
        assert not any(res.resampled)
    if ess_threshold == 1.0:
        assert sum(res.resampled) >= 2
    assert tv(res.posterior(as_bytes=True), exact) < TV_BOUND


@pytest.mark.parametrize(
    "case",
    [(None, "ab|b"), (1234, r"(ab|c)+"), (1234, r"[abc]*cab[abc]*"), (99, r"bca?b?")],
    ids=["why-smc", "ab-or-c", "contains-cab", "bca"],
)
def test_z_estimate_unbiased(case):
    seed, pattern = case
    lm = why_smc_lm() if seed is None else bigram_lm(seed, max_len=7)
    _, z = exact_posterior(lm, pattern)
    c = ts.compile_regex(pattern, lm.vocabulary)
    reps = 40
    zs = np.array([
        math.exp(smc.generate(lm, None, None, c, n_particles=200, seed=1000 + r, max_new_tokens=10).log_z)
        for r in range(reps)
    ])
    se = zs.std(ddof=1) / math.sqrt(reps)
    assert se > 0
    assert abs(zs.mean() - z) <= 3 * se, (zs.mean(), z, se)


@pytest.mark.parametrize("case", [(1234, r"(a|b)(c|ab)"), (1234, r"(abc)+")])
def test_masked_decoding_is_biased(case):
    seed, pattern = case
    lm = bigram_lm(seed)
    exact, _ = exact_posterior(lm, pattern)
    c = ts.compile_regex(pattern, lm.vocabulary)
    masked = smc.masked_decode(lm, None, None, c, n_samples=N, seed=1)
    assert tv(masked.posterior(as_bytes=True), exact) >= 0.3


# --------------------------------------------------------------------------
# Driver behaviour
# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# A context-free constraint: the same driver over a grammar's Matcher
# --------------------------------------------------------------------------

#: a^n c b^n: not regular, so the Earley engine's matchers drive SMC.
NESTED_GRAMMAR = 'start: "a" start "b" | "c"'


def nested_lm(seed: int = 8) -> TableLM:
    """A bigram (:func:`bigram_lm`) over tokens that cut a^n c b^n in several
    ways (aa, bb, cb), EOS with probability 0.1. Seed 8 puts 0.57 / 0.32 /
    0.08 / 0.01 on c / aacbb / acb / aaacbbb given the language."""
    return bigram_lm(seed, tokens=(b"a", b"b", b"c", b"aa", b"bb", b"cb"), p_eos=0.1)


def in_nested(text: bytes) -> bool:
    m = regex.fullmatch(rb"(a*)c(b*)", text)
    return m is not None and len(m.group(1)) == len(m.group(2))


def exact_nested(lm: TableLM) -> Tuple[Dict[bytes, float], float]:
    """Brute force over token sequences (pruned to prefixes a^i or
    a^i c b^j with j <= i), independent of tokensieve's grammar engine."""

    def viable(text: bytes) -> bool:
        m = regex.fullmatch(rb"(a*)(c(b*))?", text)
        return m is not None and (m.group(2) is None or len(m.group(3)) <= len(m.group(1)))

    dist: Dict[bytes, float] = {}
    for seq, p in lm.sequences(prefix_ok=viable):
        text = lm.text(seq)
        if in_nested(text):
            dist[text] = dist.get(text, 0.0) + p
    z = sum(dist.values())
    return {k: v / z for k, v in dist.items()}, z


def test_grammar_constraint_posterior_and_z_exact():
    lm = nested_lm()
    exact, z = exact_nested(lm)
    assert sum(p > 0.05 for p in exact.values()) >= 3 and 0 < z < 1
    g = ts.compile_grammar(NESTED_GRAMMAR, lm.vocabulary)
    n = 4000
    res = smc.generate(lm, None, None, g, n_particles=n, seed=0, max_new_tokens=20)
    post = res.posterior(as_bytes=True)
    assert all(in_nested(t) for t in post)
    # Three times an i.i.d. sample's expected TV at half the particles
    # (the weights cost effective sample size): 0.039 here; over 40 seeds
    # SMC's TV averaged 0.015, at most 0.034.
    assert tv(post, exact) < 3 * expected_tv(exact, n / 2)
    masked = smc.masked_decode(lm, None, None, g, n_samples=n, seed=0, max_new_tokens=20)
    assert tv(masked.posterior(as_bytes=True), exact) > 0.3
    reps = 40
    zs = np.array([
        math.exp(smc.generate(lm, None, None, g, n_particles=200, seed=1000 + r, max_new_tokens=10).log_z)
        for r in range(reps)
    ])
    se = zs.std(ddof=1) / math.sqrt(reps)
    assert se > 0 and abs(zs.mean() - z) <= 3 * se, (zs.mean(), z, se)


def test_deterministic_with_seed():
    lm = bigram_lm()
    c = ts.compile_regex(r"(ab|c)+", lm.vocabulary)
    a = smc.generate(lm, None, None, c, n_particles=64, seed=5)
    b = smc.generate(lm, None, None, c, n_particles=64, seed=5)
    d = smc.generate(lm, None, None, c, n_particles=64, seed=6)
    assert a.token_ids == b.token_ids and a.log_z == b.log_z and a.ess == b.ess
    assert np.array_equal(a.log_weights, b.log_weights)
    assert a.token_ids != d.token_ids


def test_result_fields_and_posterior():
    lm = bigram_lm()
    pattern = r"(ab|c)+"
    c = ts.compile_regex(pattern, lm.vocabulary)
    res = smc.generate(lm, None, None, c, n_particles=100, seed=1)
    assert res.n_particles == 100
    assert len(res.token_ids) == len(res.texts) == len(res.text_bytes) == len(res.status) == 100
    assert res.weights.shape == (100,) and res.weights.sum() == pytest.approx(1.0)
    assert len(res.ess) == res.num_steps == len(res.resampled)
    assert all(0 < e <= 100 + 1e-9 for e in res.ess)
    for ids, tb, text in zip(res.token_ids, res.text_bytes, res.texts):
        assert tb == lm.text(ids) and text == tb.decode()
        assert lm.eos_token_id not in ids
    post = res.posterior()
    assert sum(post.values()) == pytest.approx(1.0)
    assert list(post.values()) == sorted(post.values(), reverse=True)
    assert res.best() == next(iter(post))
    assert res.log_z_complete == pytest.approx(res.log_z)  # all complete
    assert set(res.timings) == set(smc._TIMING_KEYS)
    assert res.overhead_per_step() >= 0


def test_max_new_tokens_cuts_viable_prefixes():
    lm = bigram_lm(max_len=50)
    pattern = r"(ab|c)+"
    c = ts.compile_regex(pattern, lm.vocabulary)
    res = smc.generate(lm, None, None, c, n_particles=200, seed=2, max_new_tokens=3)
    assert res.num_steps <= 3
    assert "max_new_tokens" in res.status
    rx = regex.compile(pattern.encode())
    for ids, tb, st in zip(res.token_ids, res.text_bytes, res.status):
        if st == "eos":
            assert rx.fullmatch(tb) is not None and len(ids) <= 2
        elif st == "max_new_tokens":
            assert len(ids) == 3 and rx.fullmatch(tb, partial=True) is not None
    # log_z counts the cut particles; log_z_complete only the complete ones.
    assert res.log_z_complete < res.log_z
    post = res.posterior(complete_only=True, as_bytes=True)
    assert all(rx.fullmatch(k) for k in post) and sum(post.values()) == pytest.approx(1.0)


def test_dead_particles_and_all_dead():
    # After "a" the model never emits "b", so "ab" is impossible:
    # particles that take "a" die (weight 0), the others carry the posterior.
    toks = [b"a", b"b", None]
    init = [0.5, 0.5, 0.0]
    trans = [[0.5, 0.0, 0.5], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]
    lm = TableLM.bigram(toks, init, trans, eos_token_id=2, max_len=5)
    c = ts.compile_regex("ab|b", lm.vocabulary)
    res = smc.generate(lm, None, None, c, n_particles=50, seed=0, ess_threshold=0.0)
    assert "dead" in res.status
    assert res.posterior() == {"b": pytest.approx(1.0)}
    assert math.exp(res.log_z) == pytest.approx(0.5, abs=0.2)
    # Nothing in the language has positive probability.
    c2 = ts.compile_regex("ab", lm.vocabulary)
    with pytest.warns(RuntimeWarning, match="posterior is empty"):
        res2 = smc.generate(lm, None, None, c2, n_particles=20, seed=0)
    assert all(s == "dead" for s in res2.status)
    assert res2.log_z == -math.inf and res2.posterior() == {} and res2.best() is None
    assert not res2.weights.any()


def test_prompt_conditions_the_table_model():
    # The prompt (token ids) is context for the model and is not constrained.
    toks = [b"x", b"y", None]

    def nxt(prefix):
        if prefix and prefix[0] == 0:  # prompt "x": continuation y then EOS
            return [0.0, 1.0, 0.0] if len(prefix) == 1 else [0.0, 0.0, 1.0]
        return [0.5, 0.0, 0.5]

    lm = TableLM(toks, nxt, eos_token_id=2, max_len=6)
    c = ts.compile_regex("x*y?", lm.vocabulary)
    res = smc.generate(lm, None, [0], c, n_particles=10, seed=0)
    assert set(res.texts) == {"y"}
    res2 = smc.generate(lm, None, [1], c, n_particles=200, seed=0)
    assert "y" not in res2.texts and "" in res2.texts


def test_generate_accepts_regex_string_and_vocab():
    lm = bigram_lm()
    res = smc.generate(lm, None, None, r"(ab|c)+", n_particles=32, seed=0)
    assert all(regex.fullmatch(rb"(ab|c)+", t) for t, s in zip(res.text_bytes, res.status) if s == "eos")
    assert "eos" in res.status


def test_argument_validation():
    lm = why_smc_lm()
    c = ts.compile_regex("ab|b", lm.vocabulary)
    with pytest.raises(ValueError, match="n_particles"):
        smc.generate(lm, None, None, c, n_particles=0)
    with pytest.raises(ValueError, match="ess_threshold"):
        smc.generate(lm, None, None, c, ess_threshold=1.5)
    with pytest.raises(ValueError, match="resampler"):
        smc.generate(lm, None, None, c, resampler="bogus")
    with pytest.raises(ValueError, match="max_new_tokens"):
        smc.generate(lm, None, None, c, max_new_tokens=0)
    with pytest.raises(ValueError, match="tokenizer"):
        smc.generate(lm, None, "text prompt", c)


def test_format_and_print_result():
    lm = why_smc_lm()
    res = smc.generate(lm, None, None, "ab|b", n_particles=100, seed=0)
    s = smc.format_result(res, top=1)
    assert "log Z" in s and "'b'" in s and "1 more" in s
    buf = io.StringIO()
    smc.print_result(res, file=buf)
    assert "'ab'" in buf.getvalue()


# --------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------


def test_masked_sample_only_allowed_and_log_z():
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    rows, v = 64, 300
    logp = torch.log_softmax(torch.from_numpy(rng.normal(size=(rows, v)) * 3), dim=-1)
    logp[:, :5] = float("-inf")  # impossible tokens
    allowed = torch.from_numpy(rng.random((rows, v)) < 0.05)
    allowed[:, 0] = True  # allowed but impossible
    allowed[1] = False
    allowed[1, 3] = True  # only an impossible token: dead row
    allowed[2] = False
    allowed[2, 7] = True  # exactly one possible token
    for _ in range(20):
        tok, lz = smc._masked_sample(logp.clone(), allowed, g)
        ok = [r for r in range(rows) if r != 1]
        assert all(bool(allowed[r, tok[r]]) and math.isfinite(float(logp[r, tok[r]])) for r in ok)
        assert int(tok[2]) == 7
    want = torch.logsumexp(torch.where(allowed, logp, torch.tensor(float("-inf"), dtype=logp.dtype)), dim=-1)
    assert lz[1] == -math.inf
    assert torch.allclose(lz[ok], want[ok])


def test_masked_sample_frequencies():
    g = torch.Generator().manual_seed(1)
    p = torch.tensor([0.5, 0.2, 0.2, 0.1], dtype=torch.float64)
    allowed = torch.tensor([False, True, True, True])
    tok, _ = smc._masked_sample(p.log().expand(20000, -1).clone(), allowed.expand(20000, -1), g)
    freq = np.bincount(tok.numpy(), minlength=4) / 20000
    assert freq[0] == 0
    assert np.allclose(freq[1:], [0.4, 0.4, 0.2], atol=0.015)


def test_table_lm_protocol_and_enumeration():
    lm = bigram_lm(max_len=5)
    assert isinstance(lm, LanguageModel)
    total = sum(p for _, p in lm.sequences())
    assert total == pytest.approx(1.0)
    st = lm.start([], 3)
    lp = lm.next_logprobs(st, None)
    assert lp.shape == (3, lm.vocab_size)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(3, dtype=lp.dtype))
    lp = lm.next_logprobs(st, torch.tensor([0, 1, 2]))
    st = lm.reorder(st, torch.tensor([2, 2]))
    assert st.prefixes == [(2,), (2,)]
    with pytest.raises(RuntimeError):
        lm.next_logprobs(st, None)
    with pytest.raises(ValueError):
        TableLM([b"a", b"b"], lambda p: [0.5, 0.5], eos_token_id=1)  # EOS must be special
    bad = TableLM([b"a", None], lambda p: [0.7, 0.7], eos_token_id=1)
    with pytest.raises(ValueError, match="probability"):
        bad.probs(())


def test_weights_follow_population_semantics():
    # log_z = logsumexp(log_weights) - log N at the end, with or without
    # resampling along the way; normalised weights sum to 1.
    lm = bigram_lm()
    c = ts.compile_regex(r"(ab|c)+", lm.vocabulary)
    for thr in (0.0, 0.5, 1.0):
        res = smc.generate(lm, None, None, c, n_particles=300, seed=9, ess_threshold=thr)
        lw = res.log_weights
        m = lw.max()
        assert res.log_z == pytest.approx(m + math.log(np.exp(lw - m).sum()) - math.log(300))
        assert np.allclose(res.weights, np.exp(lw - m) / np.exp(lw - m).sum())
    # The driver resamples exactly when ESS < threshold * N and some particle is live.
    res = smc.generate(lm, None, None, c, n_particles=300, seed=9, ess_threshold=0.5)
    for e, r in zip(res.ess[:-1], res.resampled[:-1]):
        assert r == (e < 150)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Packed int32 bitmask of a boolean (rows, V) array (bit t % 32 of word t // 32)."""
    bm = ts.allocate_token_bitmask(bits.shape[0], bits.shape[1])
    words = bm.view(np.uint32)
    for r, t in zip(*np.nonzero(bits)):
        words[r, t // 32] |= np.uint32(1 << (t % 32))
    return bm


def _random_case(rows, v, density, seed):
    rng = np.random.default_rng(seed)
    logp = torch.log_softmax(torch.from_numpy(rng.normal(size=(rows, v)) * 4), dim=-1).float()
    bits = rng.random((rows, v)) < density
    bits[:, 0] = True  # every row allows something
    logp[0, :] = float("-inf")  # row 0: nothing possible
    logp[0, 5] = 0.0
    bits[0, 5] = False
    return logp, bits, pack_bits(bits)


@pytest.mark.parametrize("density", [0.001, 0.01, 0.3, 0.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_and_torch_paths_agree(density, dtype):
    # 6 rows of 3000 tokens: three blocks of the Rust kernel, the last one partial.
    rows, v = 6, 3000
    logp, bits, bm = _random_case(rows, v, density, seed=int(density * 1000))
    logp = logp.to(dtype)
    cpu = smc._masked_dist(logp.clone(), bm)
    assert isinstance(cpu, smc._CpuMasked)
    torch_path = smc._DenseMasked(logp.clone(), bm)  # the GPU code, on CPU
    assert np.array_equal(smc._unpack_bits(bm, v).astype(bool), bits)
    want = torch.logsumexp(torch.where(torch.from_numpy(bits), logp.double(), torch.tensor(-math.inf, dtype=torch.float64)), -1)
    # float64 log-probs: f64 arithmetic; float32: the f32 exp (the inputs
    # carry ~1e-7 relative error themselves).
    tol = dict(rtol=1e-12, atol=0) if dtype == torch.float64 else dict(rtol=0, atol=2e-6)
    assert np.allclose(cpu.log_z, want.numpy(), **tol) and cpu.log_z[0] == -math.inf
    assert np.allclose(torch_path.log_z, want.numpy(), rtol=1e-5) and torch_path.log_z[0] == -math.inf
    # Row 3 drawn 20000 times by each path: only allowed tokens, right frequencies.
    src = np.full(20000, 3)
    p = torch.softmax(torch.where(torch.from_numpy(bits[3]), logp[3].double(), torch.tensor(-math.inf, dtype=torch.float64)), -1).numpy()
    for dist in (cpu, torch_path):
        g = torch.Generator().manual_seed(0)
        tok = dist.sample(src, g)
        assert bits[3, tok].all()
        freq = np.bincount(tok, minlength=v) / src.size
        assert 0.5 * np.abs(freq - p).sum() < 0.05
    # Mixed rows, repeated and reordered.
    src = np.array([5, 1, 1, 2, 4, 3])
    for dist in (cpu, torch_path):
        tok = dist.sample(src, torch.Generator().manual_seed(1))
        assert all(bits[r, t] for r, t in zip(src, tok))
    # Drawing from the dead row is an error, not a token.
    with pytest.raises(ValueError, match="row 0 has no allowed token"):
        cpu.sample(np.array([0]), torch.Generator().manual_seed(0))


def test_cpu_path_rejects_nan_where_allowed():
    logp, bits, bm = _random_case(3, 100, 0.5, seed=7)
    t = int(np.flatnonzero(bits[2])[1])
    bad = logp.clone()
    bad[2, t] = float("nan")
    with pytest.raises(ValueError, match=f"allowed token {t} in row 2 is NaN"):
        smc._masked_dist(bad, bm)
    bad = logp.clone()
    off = int(np.flatnonzero(~bits[2])[0])
    bad[2, off] = float("nan")  # not allowed: ignored
    assert np.allclose(smc._masked_dist(bad, bm).log_z[1:], smc._masked_dist(logp, bm).log_z[1:])


def test_cpu_path_bitmask_narrower_or_wider_than_logits():
    # Logits wider than the constraint's vocabulary (a model whose vocab_size
    # is padded): columns past the bitmask are never allowed; bits past the
    # logits are ignored.
    rng = np.random.default_rng(3)
    logp = torch.log_softmax(torch.from_numpy(rng.normal(size=(2, 70))), -1)
    bits = np.zeros((2, 64), dtype=bool)
    bits[:, [3, 40, 63]] = True
    narrow = pack_bits(bits)  # 2 words: tokens 64..69 not covered
    d = smc._masked_dist(logp, narrow)
    want = torch.logsumexp(logp[:, [3, 40, 63]], -1).numpy()
    assert np.allclose(d.log_z, want)
    tok = d.sample(np.zeros(2000, dtype=np.int64), torch.Generator().manual_seed(0))
    assert set(tok) == {3, 40, 63}
    wide = np.zeros((2, 4), dtype=np.int32)  # 128 bits for 70 logits
    wide[:, :2] = narrow
    wide.view(np.uint32)[:, 2] = 0xFFFFFFFF  # tokens 64..95: only 64..69 exist
    d = smc._masked_dist(logp, wide)
    want = torch.logsumexp(logp[:, [3, 40, 63, 64, 65, 66, 67, 68, 69]], -1).numpy()
    assert np.allclose(d.log_z, want)
    assert max(d.sample(np.ones(2000, dtype=np.int64), torch.Generator().manual_seed(0))) <= 69


@pytest.mark.parametrize("path", ["cpu", "torch"])
def test_generate_exact_on_every_path(path, monkeypatch):
    if path == "torch":  # the code that runs on GPUs, here on CPU
        monkeypatch.setattr(smc, "_masked_dist", lambda lp, bm: smc._DenseMasked(lp, bm))
    lm = why_smc_lm()
    exact, _ = exact_posterior(lm, "ab|b")
    res = smc.generate(lm, None, None, "ab|b", n_particles=N, seed=11)
    assert tv(res.posterior(as_bytes=True), exact) < TV_BOUND
    lm = bigram_lm(1234)
    exact, _ = exact_posterior(lm, r"(a|b)(c|ab)")
    res = smc.generate(lm, None, None, r"(a|b)(c|ab)", n_particles=N, seed=11)
    assert tv(res.posterior(as_bytes=True), exact) < TV_BOUND


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_cdf_allowed_mass_far_below_the_top(dtype):
    # The allowed tokens are 200-400 nats below the row's best token: shifting
    # by the overall maximum would underflow, the fallback must not.
    v = 300
    logp = torch.full((3, v), -500.0, dtype=dtype)
    logp[:, 0] = 0.0
    logp[0, 10] = -200.0
    logp[0, 11] = -201.0
    logp[1, 20] = -400.0
    logp[2, 5] = -1.0
    allowed = torch.zeros(3, v, dtype=torch.bool)
    allowed[0, 10:12] = True
    allowed[1, 20] = True
    allowed[2, 5] = True
    allowed[2, 6] = True
    cdf, lz = smc._masked_cdf(logp, allowed)
    want = torch.logsumexp(torch.where(allowed, logp, torch.tensor(-math.inf, dtype=dtype)), -1)
    assert torch.allclose(lz.double(), want.double(), rtol=1e-6)
    g = torch.Generator().manual_seed(0)
    for dist in (smc._masked_dist(logp, pack_bits(allowed.numpy())), smc._DenseMasked(logp, pack_bits(allowed.numpy()))):
        assert np.allclose(dist.log_z, want.double().numpy(), rtol=1e-6)
        tok = dist.sample(np.array([0] * 4000 + [1, 2]), g)
        assert set(tok[:4000]) == {10, 11} and tok[4000] == 20 and tok[4001] in (5, 6)
        assert np.mean(tok[:4000] == 10) == pytest.approx(1 / (1 + math.exp(-1)), abs=0.03)


# --------------------------------------------------------------------------
# keep_large_allocations (glibc malloc for CPU decoding loops)
# --------------------------------------------------------------------------

_MALLINFO_SCRIPT = """
import ctypes, sys
import numpy as np
if sys.argv[1] == "keep":
    from tokensieve.models import keep_large_allocations
    assert keep_large_allocations()
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
for _ in range(3):
    a = np.ones(8 << 20)  # 64 MiB
    mapped = mallinfo2().hblkhd  # bytes in blocks mmap-ed on their own
    del a
    print(mapped, mallinfo2().fordblks)  # free bytes kept in the heap
"""


def _glibc_with_mallinfo2() -> bool:
    import ctypes
    import platform
    import sys

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    return hasattr(ctypes.CDLL(None), "mallinfo2")  # glibc >= 2.33


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc's malloc (>= 2.33) only")
def test_keep_large_allocations_serves_and_keeps_large_blocks_in_the_heap():
    """By default a 64 MiB array is a block mapped on its own and handed
    back to the OS when freed (so the next one is page-faulted and zeroed
    again); once kept, it comes from the heap and stays there, free for the
    next one. Read from glibc's own counters, in fresh interpreters (the
    setting is process-wide)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD"))}

    def rounds(mode: str):
        out = subprocess.run([sys.executable, "-c", _MALLINFO_SCRIPT, mode], env=env, capture_output=True,
                             text=True, timeout=120, check=True)
        return [tuple(int(v) for v in line.split()) for line in out.stdout.split("\n") if line.strip()]

    mib = 1 << 20
    for mapped, kept in rounds("default"):
        assert mapped >= 64 * mib and kept < 64 * mib
    for mapped, kept in rounds("keep"):
        assert mapped < 64 * mib and kept >= 64 * mib


def test_keep_large_allocations_arguments_and_user_settings(monkeypatch):
    from tokensieve.models import keep_large_allocations

    for bad in ("1", 1.5, True, None):
        with pytest.raises(TypeError, match="threshold_bytes"):
            keep_large_allocations(bad)  # type: ignore[arg-type]
    for bad in (0, -1, 2**31):
        with pytest.raises(ValueError, match="threshold_bytes"):
            keep_large_allocations(bad)
    # A user who configured glibc's malloc keeps their settings.
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_large_allocations() is False
