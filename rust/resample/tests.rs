//! Unit and property tests of the resampling kernels (every ISA build).

use super::*;
use proptest::prelude::*;

const INF: f64 = f64::INFINITY;
/// The largest double below 1.
const ONE_MINUS: f64 = 1.0 - f64::EPSILON / 2.0;

fn logs(w: &[f64]) -> Vec<f64> {
    w.iter().map(|&x| x.ln()).collect()
}

fn counts(anc: &[i64], big_n: usize) -> Vec<usize> {
    let mut c = vec![0usize; big_n];
    for &a in anc {
        c[a as usize] += 1;
    }
    c
}

fn normalised(lw: &[f64]) -> Vec<f64> {
    let m = lw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = lw.iter().map(|&v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|&x| x / s).collect()
}

fn given(scheme: Scheme, lw: &[f64], n: usize, u: &[f64]) -> Vec<i64> {
    let mut out = vec![-1i64; n];
    resample_into(scheme, lw, &mut out, Uniforms::Given(u)).unwrap();
    out
}

fn seeded(scheme: Scheme, lw: &[f64], n: usize, seed: u64) -> Vec<i64> {
    resample(scheme, lw, n, &mut rng_from_seed(seed)).unwrap()
}

/// Structural invariants every output must satisfy.
fn check_output(lw: &[f64], out: &[i64]) {
    assert!(out.windows(2).all(|w| w[0] <= w[1]), "not sorted: {out:?}");
    for &a in out {
        assert!(a >= 0 && (a as usize) < lw.len(), "index {a} out of range");
        assert!(lw[a as usize] > f64::NEG_INFINITY, "picked zero-weight particle {a}");
    }
}

/// Reference inverse CDF for one normalised point p in [0, 1): plain
/// linear scan over the normalised cumulative weights, no clamping
/// tricks (only used with points well inside the intervals).
fn naive_pick(w: &[f64], p: f64) -> i64 {
    let mut c = 0.0;
    for (i, &x) in w.iter().enumerate() {
        c += x;
        if p < c {
            return i as i64;
        }
    }
    unreachable!("point {p} beyond total")
}

// ---------------------------------------------------------------- exp

#[test]
fn exp_nonpos_matches_libm() {
    let mut rng = rng_from_seed(1);
    let mut worst = 0.0f64;
    for i in 0..200_000 {
        let x = if i < 1000 {
            -(i as f64) * 0.708
        } else {
            -708.0 * next_uniform(&mut rng)
        };
        let want = x.exp();
        let got = exp_nonpos(x);
        worst = worst.max(((got - want) / want).abs());
    }
    assert!(worst < 6e-16, "max relative error {worst:e}");
    assert_eq!(exp_nonpos(0.0), 1.0);
    assert_eq!(exp_nonpos(-0.0), 1.0);
    assert_eq!(exp_nonpos(f64::NEG_INFINITY), 0.0);
    assert_eq!(exp_nonpos(-708.5), 0.0);
    assert!(exp_nonpos(-707.9) > 0.0);
}

#[test]
fn neg_ln_unit_matches_libm() {
    let mut rng = rng_from_seed(2);
    let mut worst = 0.0f64;
    for i in 0..200_000 {
        // 1 - u for u on a grid near 0 and near 1, and random u.
        let y = match i % 3 {
            0 => 1.0 - (i as f64) * f64::EPSILON / 2.0,
            1 => 1.0 - next_uniform(&mut rng),
            _ => next_uniform(&mut rng).max(1e-300),
        };
        let want = -y.ln();
        let got = neg_ln_unit(y);
        let err = if want == 0.0 { got.abs() } else { ((got - want) / want).abs() };
        worst = worst.max(err);
    }
    assert!(worst < 1e-15, "max relative error {worst:e}");
    assert_eq!(neg_ln_unit(1.0), 0.0);
    assert!((neg_ln_unit(f64::EPSILON / 2.0) - 53.0 * std::f64::consts::LN_2).abs() < 1e-13);
}

#[test]
fn scheme_names_and_codes_round_trip() {
    for k in Scheme::ALL {
        assert_eq!(k.name().parse::<Scheme>().unwrap(), k);
        assert_eq!(Scheme::from_code(k.code()), Some(k));
    }
    assert!(matches!("bogus".parse::<Scheme>(), Err(ResampleError::UnknownScheme(_))));
    assert_eq!(Scheme::from_code(4), None);
}

// ------------------------------------------------------- bad inputs

#[test]
fn bad_log_weights_are_errors() {
    let mut rng = rng_from_seed(0);
    for k in Scheme::ALL {
        let mut out = vec![0i64; 3];
        let mut run = |lw: &[f64]| resample_into(k, lw, &mut out, Uniforms::Rng(&mut rng));
        assert_eq!(run(&[]), Err(ResampleError::Empty));
        assert_eq!(run(&[0.0, f64::NAN, 1.0]), Err(ResampleError::NaN { index: 1 }));
        assert_eq!(run(&[0.0, 1.0, INF]), Err(ResampleError::PosInf { index: 2 }));
        assert_eq!(run(&[-INF, -INF]), Err(ResampleError::AllZero));
        // The bad value deep inside a later block is still found.
        let mut long = vec![0.0; 3 * BLOCK + 5];
        long[2 * BLOCK + 7] = f64::NAN;
        assert_eq!(run(&long), Err(ResampleError::NaN { index: 2 * BLOCK + 7 }));
        long[2 * BLOCK + 7] = INF;
        long[2 * BLOCK + 9] = f64::NAN;
        assert_eq!(run(&long), Err(ResampleError::PosInf { index: 2 * BLOCK + 7 }));
        let mut empty: [i64; 0] = [];
        assert_eq!(resample_into(k, &[0.0], &mut empty, Uniforms::Rng(&mut rng)), Err(ResampleError::NoDraws));
    }
    assert_eq!(ess(&[]), Err(ResampleError::Empty));
    assert_eq!(ess(&[f64::NAN]), Err(ResampleError::NaN { index: 0 }));
    assert_eq!(log_sum_exp(&[-INF]), Err(ResampleError::AllZero));
    assert_eq!(log_sum_exp(&[INF]), Err(ResampleError::PosInf { index: 0 }));
    assert_eq!(
        log_normalize_into(&[0.0, 1.0], &mut [0.0; 3]),
        Err(ResampleError::OutputLength { expected: 2, got: 3 })
    );
}

#[test]
fn bad_uniforms_are_errors() {
    let lw = [0.0, 0.0, 0.0];
    let mut out = [0i64; 3];
    let mut run = |k, u: &[f64]| resample_into(k, &lw, &mut out, Uniforms::Given(u));
    assert!(matches!(
        run(Scheme::Systematic, &[0.1, 0.2]),
        Err(ResampleError::UniformCount { expected: 1, got: 2, .. })
    ));
    assert!(matches!(run(Scheme::Systematic, &[]), Err(ResampleError::UniformCount { .. })));
    assert!(matches!(
        run(Scheme::Stratified, &[0.1, 0.2]),
        Err(ResampleError::UniformCount { expected: 3, got: 2, .. })
    ));
    assert!(matches!(
        run(Scheme::Multinomial, &[0.1; 4]),
        Err(ResampleError::UniformCount { expected: 3, got: 4, .. })
    ));
    for bad in [1.0, -0.0001, f64::NAN, INF, 1.5] {
        assert!(matches!(
            run(Scheme::Stratified, &[0.1, bad, 0.2]),
            Err(ResampleError::BadUniform { index: 1, .. })
        ));
    }
    // -0.0 is in [0, 1).
    assert!(run(Scheme::Systematic, &[-0.0]).is_ok());
    // Residual takes one uniform (R = 2 residual draws here: weights
    // (0.5, 0.25, 0.25), n = 3, floors (1, 0, 0)); a longer slice is
    // accepted and only its first value used; none is an error.
    let lw = logs(&[0.5, 0.25, 0.25]);
    let mut out = [0i64; 3];
    assert_eq!(
        resample_into(Scheme::Residual, &lw, &mut out, Uniforms::Given(&[])),
        Err(ResampleError::TooFewUniforms { needed: 1, got: 0 })
    );
    let msg = ResampleError::TooFewUniforms { needed: 1, got: 0 }.to_string();
    assert!(msg.contains("at least 1 uniform") && msg.contains("got 0"), "{msg}");
    resample_into(Scheme::Residual, &lw, &mut out, Uniforms::Given(&[0.5])).unwrap();
    let one = out;
    for longer in [&[0.5, 0.1][..], &[0.5, 0.9, 0.0], &[0.5; 7]] {
        resample_into(Scheme::Residual, &lw, &mut out, Uniforms::Given(longer)).unwrap();
        assert_eq!(out, one, "{longer:?}");
    }
    // Uniforms are checked even when residual would not use them.
    assert!(matches!(
        resample_into(Scheme::Residual, &lw, &mut out, Uniforms::Given(&[0.5, 0.5, 2.0])),
        Err(ResampleError::BadUniform { index: 2, .. })
    ));
    assert!(matches!(
        resample_into(Scheme::Residual, &lw, &mut out, Uniforms::Given(&[1.0])),
        Err(ResampleError::BadUniform { index: 0, .. })
    ));
}

// ----------------------------------------------- deterministic cases

#[test]
fn single_particle_and_degenerate_weights() {
    for k in Scheme::ALL {
        assert_eq!(seeded(k, &[3.7], 5, 1), vec![0; 5]);
        // All mass on one particle among zeros.
        let lw = [-INF, -INF, 2.0, -INF];
        assert_eq!(seeded(k, &lw, 4, 2), vec![2; 4]);
        // Mass so lopsided that the others underflow to weight zero.
        let lw = [0.0, -800.0, -INF, -1e300];
        assert_eq!(seeded(k, &lw, 3, 3), vec![0; 3]);
    }
}

#[test]
fn equal_weights_systematic_is_identity() {
    for big_n in [1usize, 2, 7, 256, 1000] {
        let lw = vec![-3.5; big_n];
        for u in [0.0, 0.5, ONE_MINUS] {
            let out = given(Scheme::Systematic, &lw, big_n, &[u]);
            assert_eq!(out, (0..big_n as i64).collect::<Vec<_>>(), "N={big_n} u={u}");
        }
        let out = seeded(Scheme::Residual, &lw, big_n, 9);
        assert_eq!(out, (0..big_n as i64).collect::<Vec<_>>());
    }
}

#[test]
fn ess_and_log_normalize() {
    assert_eq!(ess(&[0.0; 10]).unwrap(), 10.0);
    assert_eq!(ess(&[5.0, -INF, -INF]).unwrap(), 1.0);
    let lw = logs(&[0.1, 0.2, 0.3, 0.4]);
    let want = 1.0 / (0.01 + 0.04 + 0.09 + 0.16);
    assert!((ess(&lw).unwrap() - want).abs() < 1e-12);
    // Shift invariance, including huge offsets.
    let shifted: Vec<f64> = lw.iter().map(|v| v + 1e5).collect();
    assert!((ess(&shifted).unwrap() - want).abs() < 1e-9);
    let mut out = vec![0.0; 4];
    let lse = log_normalize_into(&shifted, &mut out).unwrap();
    assert!((lse - 1e5).abs() < 1e-9);
    // (ln w + 1e5 is only stored to ~1.5e-11 absolute.)
    for (o, w) in out.iter().zip([0.1, 0.2, 0.3, 0.4]) {
        assert!((o.exp() - w).abs() < 1e-10);
    }
    let mut out = vec![0.0; 3];
    log_normalize_into(&[0.0, -INF, 0.0], &mut out).unwrap();
    assert_eq!(out[1], -INF);
    assert!((out[0] - (0.5f64).ln()).abs() < 1e-15);
    // Online rescaling across blocks with an increasing maximum.
    let lw: Vec<f64> = (0..5 * BLOCK).map(|i| i as f64 * 0.01).collect();
    let direct = {
        let m = lw[lw.len() - 1];
        m + lw.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
    };
    assert!((log_sum_exp(&lw).unwrap() - direct).abs() < 1e-12);
}

// --------------------------------------------------------- round-off

#[test]
fn round_off_never_indexes_past_the_end() {
    let n = 1000;
    // Last particle with (relatively) negligible mass, and a trailing
    // zero-weight particle after it.
    let mut lw = vec![0.0; n];
    lw[n - 2] = -700.0;
    lw[n - 1] = -INF;
    for k in Scheme::ALL {
        for u in [0.0, 0.5, ONE_MINUS] {
            let uniforms = match k {
                Scheme::Systematic => vec![u],
                _ => vec![u; n],
            };
            let out = given(k, &lw, n, &uniforms);
            check_output(&lw, &out);
        }
        for seed in 0..20 {
            check_output(&lw, &seeded(k, &lw, n, seed));
        }
    }
    // Uniforms at the very top: every point near the end of the ruler.
    let lw = logs(&[0.3, 0.7, 1e-300]);
    for k in [Scheme::Multinomial, Scheme::Stratified] {
        let out = given(k, &lw, 3, &[ONE_MINUS; 3]);
        check_output(&lw, &out);
    }
    // Weights whose cumulative sum is inexact in the last bits.
    let lw: Vec<f64> = (0..4097).map(|i| -((i % 97) as f64) * 0.1).collect();
    for k in Scheme::ALL {
        for n in [1, 2, 4097, 10_000] {
            let u: Vec<f64> = vec![ONE_MINUS; if k == Scheme::Systematic { 1 } else { n }];
            check_output(&lw, &given(k, &lw, n, &u));
        }
    }
    // n = 1 with u near 1 and a tiny last weight: the single point may
    // round to the very top of the ruler; it must go to a positive one.
    let lw = [0.0, -745.0, -INF];
    for k in Scheme::ALL {
        let u = [ONE_MINUS];
        let out = given(k, &lw, 1, &u);
        check_output(&lw, &out);
    }
}

// ------------------------------------------ exact enumeration tests

/// Multinomial: draw each uniform at the midpoint of each particle's
/// interval, weighting the combination by the product of interval
/// lengths. The enumerated law of the counts must be the multinomial
/// law, and every output must match the naive inverse CDF.
#[test]
fn multinomial_enumeration_is_exact() {
    let w = [0.2, 0.5, 0.3];
    let lw = logs(&w);
    let mids: Vec<f64> = {
        let mut c = 0.0;
        w.iter()
            .map(|&x| {
                let m = c + x / 2.0;
                c += x;
                m
            })
            .collect()
    };
    let n = 3;
    let mut law = std::collections::HashMap::<Vec<usize>, f64>::new();
    for a in 0..3 {
        for b in 0..3 {
            for c in 0..3 {
                let u = [mids[a], mids[b], mids[c]];
                let out = given(Scheme::Multinomial, &lw, n, &u);
                let mut want: Vec<i64> = u.iter().map(|&p| naive_pick(&w, p)).collect();
                want.sort();
                assert_eq!(out, want);
                *law.entry(counts(&out, 3)).or_default() += w[a] * w[b] * w[c];
            }
        }
    }
    let fact = |k: usize| (1..=k).product::<usize>() as f64;
    for (cnt, p) in &law {
        let coef = fact(n) / cnt.iter().map(|&k| fact(k)).product::<f64>();
        let want = coef * cnt.iter().zip(&w).map(|(&k, &x)| x.powi(k as i32)).product::<f64>();
        assert!((p - want).abs() < 1e-12, "{cnt:?}: {p} vs {want}");
    }
    assert_eq!(law.len(), 10); // all compositions of 3 into 3 parts
}

/// Breakpoints of a piecewise-constant function of one uniform in
/// [0, 1): sorted, deduplicated, with 0 and 1 added.
fn pieces(mut b: Vec<f64>) -> Vec<(f64, f64)> {
    b.push(0.0);
    b.push(1.0);
    b.retain(|x| (0.0..=1.0).contains(x));
    b.sort_by(f64::total_cmp);
    b.dedup_by(|a, b| (*a - *b).abs() < 1e-12);
    b.windows(2).map(|p| ((p[0] + p[1]) / 2.0, p[1] - p[0])).collect()
}

/// Systematic: the output is a step function of u with steps at
/// frac(n C_i); enumerate the steps exactly.
#[test]
fn systematic_enumeration_is_exact() {
    let w = [0.05, 0.3, 0.0, 0.15, 0.27, 0.23];
    let lw = logs(&w);
    for n in [1usize, 4, 6, 9, 13] {
        let mut c = 0.0;
        let mut br = vec![];
        for &x in &w {
            c += x;
            let y = c * n as f64;
            br.push(y - y.floor());
        }
        let mut mean = vec![0.0; w.len()];
        for (u, len) in pieces(br) {
            let out = given(Scheme::Systematic, &lw, n, &[u]);
            let want: Vec<i64> = (0..n).map(|k| naive_pick(&w, (k as f64 + u) / n as f64)).collect();
            assert_eq!(out, want, "n={n} u={u}");
            for (i, &k) in counts(&out, w.len()).iter().enumerate() {
                let nw = n as f64 * w[i];
                assert!(k as f64 >= nw.floor() - 1e-9 && k as f64 <= nw.ceil() + 1e-9);
                mean[i] += len * k as f64;
            }
        }
        for i in 0..w.len() {
            assert!((mean[i] - n as f64 * w[i]).abs() < 1e-9, "n={n} i={i}");
        }
    }
}

/// Stratified: independent uniforms per stratum; each stratum's
/// uniform has breakpoints where the stratum crosses a cumulative
/// weight. Enumerate the product of the per-stratum steps.
#[test]
fn stratified_enumeration_is_exact() {
    let w = [0.3, 0.1, 0.45, 0.15];
    let lw = logs(&w);
    let n = 3;
    let cum: Vec<f64> = w
        .iter()
        .scan(0.0, |c, &x| {
            *c += x;
            Some(*c)
        })
        .collect();
    let steps: Vec<Vec<(f64, f64)>> = (0..n).map(|k| pieces(cum.iter().map(|&c| c * n as f64 - k as f64).collect())).collect();
    let mut mean = vec![0.0; w.len()];
    let mut total = 0.0;
    for &(u0, l0) in &steps[0] {
        for &(u1, l1) in &steps[1] {
            for &(u2, l2) in &steps[2] {
                let u = [u0, u1, u2];
                let out = given(Scheme::Stratified, &lw, n, &u);
                let want: Vec<i64> = (0..n).map(|k| naive_pick(&w, (k as f64 + u[k]) / n as f64)).collect();
                assert_eq!(out, want);
                let p = l0 * l1 * l2;
                total += p;
                for (i, &k) in counts(&out, w.len()).iter().enumerate() {
                    mean[i] += p * k as f64;
                }
            }
        }
    }
    assert!((total - 1.0).abs() < 1e-12);
    for i in 0..w.len() {
        assert!((mean[i] - n as f64 * w[i]).abs() < 1e-9, "i={i}: {} vs {}", mean[i], n as f64 * w[i]);
    }
}

/// Reference residual-systematic resampling, written from the
/// definition with plain loops: `floor(n w_i)` copies, then points
/// `k + u`, `k < R`, against the cumulative remainders (normalised to
/// total `R`). Returns the sorted output.
fn residual_reference(w: &[f64], n: usize, u: f64) -> Vec<i64> {
    let nw: Vec<f64> = w.iter().map(|&x| n as f64 * x).collect();
    let floors: Vec<usize> = nw.iter().map(|x| x.floor() as usize).collect();
    let r_total = n - floors.iter().sum::<usize>();
    let rem: Vec<f64> = nw.iter().zip(&floors).map(|(x, &f)| x - f as f64).collect();
    let rem_sum: f64 = rem.iter().sum();
    let mut cnt = floors.clone();
    for k in 0..r_total {
        // Inverse CDF of the point k + u on the residual ruler.
        let p = (k as f64 + u) / r_total as f64 * rem_sum;
        let mut c = 0.0;
        let i = rem
            .iter()
            .position(|&r| {
                c += r;
                p < c
            })
            .expect("point beyond total");
        cnt[i] += 1;
    }
    cnt.iter().enumerate().flat_map(|(i, &c)| std::iter::repeat_n(i as i64, c)).collect()
}

/// Residual-systematic: floors are deterministic, and the R residual
/// draws are systematic on the remainders, so the output is a step
/// function of the single uniform u with steps at frac(c_i), c_i the
/// cumulative remainders. Enumerate the steps exactly; the law must be
/// the one derived by hand, each count floor or ceil of n w, the mean
/// n w and the variance f (1 - f) exactly. Every output also equals
/// systematic's for the same u (see the module docs), and extra
/// uniforms are ignored.
#[test]
fn residual_enumeration_is_exact() {
    let w = [0.45, 0.1, 0.3, 0.15];
    let lw = logs(&w);
    let n = 4; // n w = (1.8, 0.4, 1.2, 0.6): floors (1, 0, 1, 0), R = 2
               // Cumulative remainders (0.8, 1.2, 1.4, 2.0): breakpoints of u at
               // 0.2, 0.4, 0.8; points u and 1 + u.
    let want_law: [(&[usize], f64); 4] = [
        (&[2, 1, 1, 0], 0.2), // u in [0, 0.2): u -> 0, 1 + u -> 1
        (&[2, 0, 2, 0], 0.2), // u in [0.2, 0.4): 1 + u -> 2
        (&[2, 0, 1, 1], 0.4), // u in [0.4, 0.8): 1 + u -> 3
        (&[1, 1, 1, 1], 0.2), // u in [0.8, 1): u -> 1, 1 + u -> 3
    ];
    let mut law = std::collections::HashMap::<Vec<usize>, f64>::new();
    for (u, len) in pieces(vec![0.2, 0.4, 0.8]) {
        let out = given(Scheme::Residual, &lw, n, &[u]);
        check_output(&lw, &out);
        assert_eq!(out, residual_reference(&w, n, u), "u={u}");
        assert_eq!(out, given(Scheme::Systematic, &lw, n, &[u]), "u={u}");
        assert_eq!(out, given(Scheme::Residual, &lw, n, &[u, 0.3, 0.7]), "u={u}");
        *law.entry(counts(&out, 4)).or_default() += len;
    }
    assert_eq!(law.len(), want_law.len());
    for (cnt, p) in want_law {
        assert!((law[cnt] - p).abs() < 1e-12, "{cnt:?}: {} vs {p}", law[cnt]);
    }

    // The same, for several weight vectors (with a zero weight and
    // integer n w_i) and n, against the reference and the exact moments.
    for w in [
        &[0.05, 0.3, 0.0, 0.15, 0.27, 0.23][..],
        &[0.25, 0.25, 0.125, 0.375],
        &[0.7, 0.1, 0.1, 0.1],
    ] {
        let lw = logs(w);
        for n in [1usize, 3, 4, 6, 8, 9, 13] {
            let nw: Vec<f64> = w.iter().map(|&x| n as f64 * x).collect();
            let mut c = 0.0;
            let br: Vec<f64> = nw
                .iter()
                .map(|&x| {
                    c += x - x.floor();
                    c - c.floor()
                })
                .collect();
            let mut mean = vec![0.0; w.len()];
            let mut sq = vec![0.0; w.len()];
            for (u, len) in pieces(br) {
                let out = given(Scheme::Residual, &lw, n, &[u]);
                check_output(&lw, &out);
                assert_eq!(out, residual_reference(w, n, u), "w={w:?} n={n} u={u}");
                assert_eq!(out, given(Scheme::Systematic, &lw, n, &[u]), "w={w:?} n={n} u={u}");
                for (i, &k) in counts(&out, w.len()).iter().enumerate() {
                    let k = k as f64;
                    assert!(k == nw[i].floor() || k == nw[i].ceil(), "w={w:?} n={n} i={i}: {k}");
                    mean[i] += len * k;
                    sq[i] += len * k * k;
                }
            }
            let var = exact_var(Scheme::Residual, w, n);
            for i in 0..w.len() {
                assert!((mean[i] - nw[i]).abs() < 1e-9, "w={w:?} n={n} i={i}: mean {}", mean[i]);
                let v = sq[i] - mean[i] * mean[i];
                assert!((v - var[i]).abs() < 1e-9, "w={w:?} n={n} i={i}: var {v} vs {}", var[i]);
            }
        }
    }
}

/// The repair path of the residual walk, forced by handing it a wrong
/// scaling factor (too small: points fall off the top of the ruler;
/// too large: more points than draws, and intervals holding two), and
/// `x` values at the edges (integers, fractions a hair below 1, zeros).
/// Whatever happens, the output is sorted, complete, made of particles
/// with positive `x`, and every count is `floor(x)` or, for a
/// non-integer `x`, `floor(x) + 1`.
#[test]
fn residual_walk_is_safe_under_any_rounding() {
    let near1 = 1.0 - 1e-15;
    let cases: Vec<Vec<f64>> = vec![
        vec![1.8, 0.4, 1.2, 0.6],
        vec![0.0, 2.0 + near1, 0.0, 1.0, near1, 0.0, 0.1 + 2.0 * (1.0 - near1)],
        vec![near1, near1, near1, 3.0 * (1.0 - near1) + 1.0],
        vec![0.5; 10],
        vec![0.0, 0.3, 0.0, 0.7, 0.0],
        (0..300).map(|i| ((i * 37) % 101) as f64 / 50.5).collect(),
    ];
    for x in &cases {
        let total: f64 = x.iter().sum();
        let n = total.round() as usize;
        let floors: usize = x.iter().map(|&v| v as usize).sum();
        let draws = n - floors;
        let rem_sum: f64 = x.iter().map(|&v| v - v.floor()).sum();
        let exact = if draws > 0 { draws as f64 / rem_sum } else { 0.0 };
        for factor in [exact, exact * (1.0 - 1e-12), exact * (1.0 + 1e-12), exact * 0.5, exact * 1.7, 0.0, 1e6] {
            for u in [0.0, 0.3, 0.999, ONE_MINUS] {
                for walk in 0..3 {
                    let mut out = vec![-1i64; n];
                    match walk {
                        0 => residual_walk_scalar(x, 1.0, &mut out, draws, factor, u),
                        1 => residual_walk_blocked(Isa { avx2: false, avx512: false }, x, 1.0, &mut out, draws, factor, u),
                        _ => residual_walk_blocked(Isa::detect(), x, 1.0, &mut out, draws, factor, u),
                    }
                    assert!(out.windows(2).all(|p| p[0] <= p[1]), "{x:?} {factor} {u}: {out:?}");
                    let c = counts(&out, x.len());
                    for (i, &v) in x.iter().enumerate() {
                        let f = v.floor() as usize;
                        let hi = if v > v.floor() { f + 1 } else { f };
                        assert!(
                            c[i] >= f && c[i] <= hi,
                            "walk {walk} {x:?} factor={factor} u={u} i={i}: {} not in [{f}, {hi}]",
                            c[i]
                        );
                    }
                }
            }
        }
    }
    // Not enough positive remainders for the draws (only reachable if
    // the floors were wildly off): still sorted, complete and valid.
    let x = [0.0, 2.0, 1.0, 0.0];
    let mut out = vec![-1i64; 5];
    residual_walk_scalar(&x, 1.0, &mut out, 2, 1.0, 0.5);
    assert_eq!(out, vec![1, 1, 1, 1, 2]);
    let mut out = vec![-1i64; 5];
    residual_walk_blocked(Isa::detect(), &x, 1.0, &mut out, 2, 1.0, 0.5);
    assert_eq!(out, vec![1, 1, 1, 1, 2]);
}

/// The blocked residual loops give bit-identical totals and output
/// whether compiled for the baseline target, for AVX2 + FMA or for
/// AVX-512 (those of them this CPU runs).
#[test]
fn residual_blocked_is_isa_independent() {
    let mut rng = rng_from_seed(23);
    for len in [1usize, 7, 255, 256, 257, 1000, 5000] {
        let w: Vec<f64> = (0..len).map(|_| exp_nonpos(-6.0 * next_uniform(&mut rng))).collect();
        let sum: f64 = w.iter().sum();
        for n in [1, len, 2 * len + 3] {
            let scale = n as f64 / sum;
            let u = next_uniform(&mut rng);
            let run = |isa: Isa| {
                let (floors, rem_sum) = residual_totals_blocked(isa, &w, scale);
                let draws = n.saturating_sub(floors);
                let factor = if draws > 0 { draws as f64 / rem_sum } else { 0.0 };
                let mut out = vec![-1i64; n];
                residual_walk_blocked(isa, &w, scale, &mut out, draws, factor, u);
                (floors, rem_sum.to_bits(), out)
            };
            let want = run(Isa { avx2: false, avx512: false });
            for isa in Isa::all() {
                assert_eq!(run(isa), want, "len={len} n={n} {isa:?}");
            }
        }
    }
}

/// Exactly {floor, ceil} of the kernel's own `n w_i` (no tolerance),
/// for weights whose `n w_i` are integers or within an ulp of one, and
/// huge / tiny dynamic ranges.
#[test]
fn residual_counts_are_exactly_floor_or_ceil() {
    let isa = Isa::detect();
    let mut rng = rng_from_seed(17);
    let mut cases: Vec<Vec<f64>> = vec![
        logs(&[0.25, 0.25, 0.125, 0.375]),
        vec![0.0; 1000],
        vec![0.0, -700.0, -INF, 3.0, 3.0, -1e-16, 1e-16],
        (0..4097).map(|i| -((i % 97) as f64) * 0.1).collect(),
    ];
    for _ in 0..40 {
        let len = 1 + (next_uniform(&mut rng) * 3000.0) as usize;
        cases.push((0..len).map(|_| -8.0 * next_uniform(&mut rng)).collect());
    }
    for lw in &cases {
        let ws = weights(isa, lw, None, false).unwrap();
        for n in [1, 2, 7, lw.len(), 3 * lw.len() + 1] {
            let scale = n as f64 / ws.sum;
            for u in [0.0, 0.5, ONE_MINUS, next_uniform(&mut rng)] {
                let out = given(Scheme::Residual, lw, n, &[u]);
                check_output(lw, &out);
                let c = counts(&out, lw.len());
                for (i, &w) in ws.w.iter().enumerate() {
                    let x = if i <= ws.last { w * scale } else { 0.0 };
                    assert!(
                        c[i] as f64 == x.floor() || c[i] as f64 == x.ceil(),
                        "N={} n={n} u={u} i={i}: {} vs x={x}",
                        lw.len(),
                        c[i]
                    );
                }
            }
        }
    }
}

// -------------------------------------------------- statistical tests

/// Exact per-particle variance of the offspring count under each
/// scheme (normalised weights `w`, `n` draws), from the structure of
/// the points:
/// * multinomial: `Binomial(n, w_i)`, variance `n w (1 - w)`;
/// * systematic: the count is `floor(n w)` or `ceil(n w)` with mean
///   `n w`, so the variance is `f (1 - f)`, `f = frac(n w)`;
/// * stratified: a sum of independent Bernoullis, one per stratum `s`,
///   with success probability `p_s = |[s, s+1) ∩ [n C_{i-1}, n C_i)|`;
/// * residual (residual-systematic): `floor(n w)` plus one extra copy
///   iff a systematic point of the residual stage falls in the
///   particle's remainder interval, of length `f < 1`: a Bernoulli(`f`),
///   so again `f (1 - f)` (the same as systematic, as it must be: the
///   two are the same resampler, see the module docs).
fn exact_var(k: Scheme, w: &[f64], n: usize) -> Vec<f64> {
    let nf = n as f64;
    let mut c = 0.0;
    w.iter()
        .map(|&x| {
            let a = c * nf;
            c += x;
            let b = c * nf;
            let nw = nf * x;
            let f = nw - nw.floor();
            match k {
                Scheme::Multinomial => nw * (1.0 - x),
                Scheme::Systematic | Scheme::Residual => f * (1.0 - f),
                Scheme::Stratified => (a.floor() as usize..b.ceil() as usize)
                    .map(|s| {
                        let p = (b.min(s as f64 + 1.0) - a.max(s as f64)).max(0.0);
                        p * (1.0 - p)
                    })
                    .sum(),
            }
        })
        .collect()
}

/// Run `reps` seeded draws; per-particle sample mean, variance and
/// fourth central moment of the offspring counts.
fn count_moments(k: Scheme, lw: &[f64], n: usize, reps: usize, seed: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut rng = rng_from_seed(seed);
    let big_n = lw.len();
    let mut all = vec![Vec::with_capacity(reps); big_n];
    let mut out = vec![0i64; n];
    for _ in 0..reps {
        resample_into(k, lw, &mut out, Uniforms::Rng(&mut rng)).unwrap();
        check_output(lw, &out);
        for (i, &c) in counts(&out, big_n).iter().enumerate() {
            all[i].push(c as f64);
        }
    }
    let rf = reps as f64;
    let mean: Vec<f64> = all.iter().map(|v| v.iter().sum::<f64>() / rf).collect();
    let var = all
        .iter()
        .zip(&mean)
        .map(|(v, m)| v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (rf - 1.0))
        .collect();
    let m4 = all
        .iter()
        .zip(&mean)
        .map(|(v, m)| v.iter().map(|x| (x - m).powi(4)).sum::<f64>() / rf)
        .collect();
    (mean, var, m4)
}

fn test_weights() -> Vec<Vec<f64>> {
    vec![
        logs(&[0.1, 0.2, 0.3, 0.4]),
        // Uneven, with a zero and one dominant particle.
        vec![0.0, -1.0, -INF, 2.5, -0.3, -3.0, 1.0, -2.0],
        // 40 log weights with a wide spread.
        (0..40).map(|i| ((i * 7919) % 101) as f64 * -0.04).collect(),
    ]
}

/// Unbiasedness: E[N_i] = n w_i, by z-tests z = (mean - n w) / se with
/// the exact standard error sqrt(Var / reps) of each scheme (see
/// `exact_var`; with an estimated variance, a rare particle that
/// happens to be drawn too seldom also looks too certain).
///
/// Tolerance |z| < 5: 4 schemes x 3 weight vectors x 3 values of n x
/// at most 40 particles = at most 1440 z-tests; at a two-sided normal
/// tail of 5.7e-7 a correct kernel fails the family with probability
/// < 1440 * 5.7e-7 ~ 1e-3 (Bonferroni), for any seed. The rarest
/// expected count here is ~ 20000 * 3 * 0.0027 ~ 160 draws, where the
/// normal approximation of the mean is good. Seeds are fixed, so the
/// test is deterministic anyway; the bound says it is not tuned to them.
#[test]
fn offspring_counts_are_unbiased() {
    let reps = 20_000;
    for (wi, lw) in test_weights().iter().enumerate() {
        let w = normalised(lw);
        for n in [lw.len(), 3, 2 * lw.len() + 1] {
            for (ki, k) in Scheme::ALL.into_iter().enumerate() {
                let seed = (wi * 100 + n * 10 + ki) as u64;
                let (mean, _, _) = count_moments(k, lw, n, reps, seed);
                let var = exact_var(k, &w, n);
                for i in 0..lw.len() {
                    let target = n as f64 * w[i];
                    if var[i] < 1e-12 {
                        assert!((mean[i] - target).abs() < 1e-6, "{k} i={i}: deterministic count {} vs {target}", mean[i]);
                    } else {
                        let z = (mean[i] - target) / (var[i] / reps as f64).sqrt();
                        assert!(z.abs() < 5.0, "{k} weights#{wi} n={n} i={i}: z={z:.2}");
                    }
                }
            }
        }
    }
}

/// Systematic, stratified and residual counts have per-particle
/// variance at most multinomial's: analytically (for the exact
/// variances, over many weight vectors and n) and empirically (the
/// sample variances match the exact ones).
///
/// Empirical tolerance: 5 standard errors of the sample variance,
/// se = sqrt((m4 - s^4) / reps) from the sample fourth central moment,
/// plus 1e-3 absolute for particles whose count is nearly constant.
#[test]
fn low_variance_schemes_beat_multinomial() {
    let mut rng = rng_from_seed(11);
    for trial in 0..500 {
        let big_n = 1 + trial % 17;
        let lw: Vec<f64> = (0..big_n).map(|_| -6.0 * next_uniform(&mut rng)).collect();
        let w = normalised(&lw);
        let n = 1 + (trial * 7) % 40;
        let mv = exact_var(Scheme::Multinomial, &w, n);
        for k in [Scheme::Systematic, Scheme::Stratified, Scheme::Residual] {
            for (i, v) in exact_var(k, &w, n).iter().enumerate() {
                assert!(*v <= mv[i] + 1e-12, "{k} N={big_n} n={n} i={i}: {v} > {}", mv[i]);
            }
        }
    }
    let reps = 20_000;
    for lw in test_weights() {
        let w = normalised(&lw);
        let n = lw.len();
        let mv = exact_var(Scheme::Multinomial, &w, n);
        for k in Scheme::ALL {
            let (_, var, m4) = count_moments(k, &lw, n, reps, 78);
            let exact = exact_var(k, &w, n);
            for i in 0..n {
                let se = ((m4[i] - var[i] * var[i]).max(0.0) / reps as f64).sqrt();
                assert!(
                    (var[i] - exact[i]).abs() <= 5.0 * se + 1e-3,
                    "{k} i={i}: sample var {} vs exact {}",
                    var[i],
                    exact[i]
                );
                assert!(var[i] <= mv[i] + 5.0 * se + 1e-3, "{k} i={i}: {} > multinomial {}", var[i], mv[i]);
            }
        }
    }
}

// ------------------------------------------------------ parallel paths

fn seeded_par(scheme: Scheme, lw: &[f64], n: usize, seed: u64, par: Par) -> Vec<i64> {
    let mut out = vec![-1i64; n];
    resample_with(Isa::detect(), scheme, lw, &mut out, Uniforms::Rng(&mut rng_from_seed(seed)), par).unwrap();
    out
}

fn given_par(scheme: Scheme, lw: &[f64], n: usize, u: &[f64], par: Par) -> Vec<i64> {
    let mut out = vec![-1i64; n];
    resample_with(Isa::detect(), scheme, lw, &mut out, Uniforms::Given(u), par).unwrap();
    out
}

/// A standard normal (Box-Muller), for test data.
fn normal(rng: &mut ResampleRng) -> f64 {
    let (a, b) = (next_uniform(rng), next_uniform(rng));
    (-2.0 * (1.0 - a).ln()).sqrt() * (std::f64::consts::TAU * b).cos()
}

/// Log weights of length `len` that stress the parallel paths: random
/// spreads, `-inf` entries, extreme dynamic range (weights flushed to
/// zero, huge shifts), long zero tails, one dominant particle at
/// either end (so the output fills up early or late), equal weights.
fn par_cases(len: usize, rng: &mut ResampleRng) -> Vec<(&'static str, Vec<f64>)> {
    let mut v: Vec<(&'static str, Vec<f64>)> = Vec::new();
    v.push(("normal", (0..len).map(|_| 3.0 * normal(rng)).collect()));
    v.push((
        "wide-inf-shifted",
        (0..len)
            .map(|_| {
                if next_uniform(rng) < 0.3 {
                    -INF
                } else {
                    1e6 - 800.0 * next_uniform(rng)
                }
            })
            .collect(),
    ));
    v.push(("underflow", (0..len).map(|_| -720.0 * next_uniform(rng).sqrt()).collect()));
    let mut tail: Vec<f64> = (0..len).map(|_| normal(rng)).collect();
    tail[len / 3..].fill(-INF);
    v.push(("zero-tail", tail));
    let mut first: Vec<f64> = (0..len).map(|i| if i % 5 == 0 { -INF } else { -700.0 + normal(rng) }).collect();
    first[0] = 0.0;
    v.push(("dominant-first", first));
    let mut lastw: Vec<f64> = (0..len).map(|_| 3.0 * normal(rng)).collect();
    lastw[len - 1] = 50.0;
    v.push(("dominant-last", lastw));
    v.push(("equal", vec![-3.5; len]));
    v.push((
        "sparse",
        (0..len).map(|_| if next_uniform(rng) < 0.99 { -INF } else { normal(rng) }).collect(),
    ));
    v
}

/// Every kernel gives the same output, bit for bit, sequentially and
/// in parallel with any task size (tasks of 1 and 3 blocks put task
/// boundaries everywhere; 64 is the real plan), seeded and with given
/// uniforms, on large inputs.
#[test]
fn parallel_paths_are_bit_identical() {
    let mut rng = rng_from_seed(2024);
    for len in [20_000usize, (1 << 16) + 77] {
        for (name, lw) in par_cases(len, &mut rng) {
            for n in [1, 7, len / 3 + 1, len, 2 * len + 5] {
                for k in Scheme::ALL {
                    for seed in [0u64, 1] {
                        let want = seeded_par(k, &lw, n, seed, None);
                        check_output(&lw, &want);
                        for t in [1, 3, PAR_TASK_BLOCKS] {
                            assert!(
                                seeded_par(k, &lw, n, seed, Some(t)) == want,
                                "{name} len={len} n={n} {k} seed={seed} t={t}"
                            );
                        }
                    }
                }
                for k in [Scheme::Systematic, Scheme::Residual] {
                    for u in [0.0, 0.5, ONE_MINUS] {
                        let want = given_par(k, &lw, n, &[u], None);
                        for t in [1, 3, PAR_TASK_BLOCKS] {
                            assert!(given_par(k, &lw, n, &[u], Some(t)) == want, "{name} len={len} n={n} {k} u={u} t={t}");
                        }
                    }
                }
            }
        }
    }
}

/// The number of threads never changes the output: the same call on
/// pools of 1 (the sequential path), 2 and 4 threads.
#[test]
fn thread_count_does_not_change_output() {
    let mut rng = rng_from_seed(77);
    let len = PAR_MIN + 5;
    let some = ["normal", "wide-inf-shifted", "zero-tail", "dominant-first"];
    for (name, lw) in par_cases(len, &mut rng).into_iter().filter(|(name, _)| some.contains(name)) {
        let run = || {
            let mut outs = Vec::new();
            for k in Scheme::ALL {
                for (seed, n) in [(3u64, len), (4, len / 2 + 3)] {
                    outs.push(resample(k, &lw, n, &mut rng_from_seed(seed)).unwrap());
                }
            }
            outs
        };
        let want: Vec<Vec<i64>> = {
            let mut outs = Vec::new();
            for k in Scheme::ALL {
                for (seed, n) in [(3u64, len), (4, len / 2 + 3)] {
                    outs.push(seeded_par(k, &lw, n, seed, None));
                }
            }
            outs
        };
        for threads in [1, 2, 4] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let (plan, got) = pool.install(|| (par_plan(len), run()));
            assert_eq!(plan.is_some(), threads > 1);
            assert!(got == want, "{name}: {threads} threads");
        }
    }
}

/// Every build of the block loops (baseline, AVX2, AVX-512: those this
/// CPU runs) gives the same bits: all kernels, sequential and parallel,
/// and the one-pass sums behind `ess` and `log_sum_exp`.
#[test]
fn kernels_are_isa_independent() {
    let isas = Isa::all();
    let mut rng = rng_from_seed(31);
    for len in [1usize, 7, 300, 5_000] {
        for (name, lw) in par_cases(len, &mut rng) {
            let lw = &lw[..];
            if lw.iter().all(|&x| x == -INF) {
                continue;
            }
            let sums = |isa: Isa| {
                let (a, b) = (summarize::<true>(isa, lw).unwrap(), summarize::<false>(isa, lw).unwrap());
                [a.max, a.sum, a.sumsq, b.sum].map(f64::to_bits)
            };
            let want_sums = sums(isas[0]);
            for &isa in &isas[1..] {
                assert_eq!(sums(isa), want_sums, "{name} len={len} {isa:?}");
            }
            for n in [1, len / 2 + 1, len + 3] {
                for k in Scheme::ALL {
                    for par in [None, Some(3)] {
                        let run = |isa: Isa| {
                            let mut out = vec![-1i64; n];
                            resample_with(isa, k, lw, &mut out, Uniforms::Rng(&mut rng_from_seed(9)), par).unwrap();
                            out
                        };
                        let want = run(isas[0]);
                        for &isa in &isas[1..] {
                            assert!(run(isa) == want, "{name} len={len} n={n} {k} {par:?} {isa:?}");
                        }
                    }
                }
            }
        }
    }
}

/// The AVX-512 run writer writes exactly what the scalar one does:
/// every slot it owns, and the same end position, for blocks of every
/// shape (all counts 0, all 1, small mixed counts, long runs, partial
/// blocks) and wherever the block sits relative to the end of `out`.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_run_writer_matches_scalar() {
    if !Isa::detect().avx512 {
        return;
    }
    let mut rng = rng_from_seed(41);
    let mut draw = |max: u64| (next_uniform(&mut rng) * (max + 1) as f64) as i32;
    for case in 0..4000 {
        let len = if case % 5 == 0 { 1 + draw(BLOCK as u64 - 1) as usize } else { BLOCK };
        let shape = case % 6;
        let start = draw(40);
        let mut k = Vec::with_capacity(len);
        let mut e = start;
        for _ in 0..len {
            e += match shape {
                0 => 0,
                1 => 1,
                2 => draw(3),
                3 => (draw(20) == 0) as i32 * draw(40),
                4 => draw(2) * draw(9),
                _ => (draw(3) == 0) as i32 * draw(4),
            };
            k.push(e);
        }
        let owned = (e - start) as usize;
        // Room after the block's end: none, a few slots, or plenty.
        let tail = [0usize, 3, 15, 16, 17, 64][draw(5) as usize];
        let n = e as usize + tail;
        let first = draw(1000) as i64;
        let mut a = vec![-1i64; n];
        let mut b = vec![-1i64; n];
        let pa = fill_block(&mut a, &k, start as usize, first);
        // SAFETY: the CPU has AVX-512 (checked above).
        let pb = unsafe { fill_block_avx512(&mut b, &k, start as usize, first) };
        assert_eq!(pa, pb, "case {case}");
        let r = start as usize..start as usize + owned;
        assert_eq!(a[r.clone()], b[r], "case {case}: shape {shape}, len {len}, tail {tail}");
    }
}

/// The parallel sums' building blocks reproduce the sequential ones
/// bit for bit, and a zero max of either sign gives the same weights.
#[test]
fn quarter_sums_match_block_prefix() {
    let mut rng = rng_from_seed(5);
    for _ in 0..200 {
        let w: Vec<f64> = (0..BLOCK).map(|_| exp_nonpos(-30.0 * next_uniform(&mut rng))).collect();
        let base = 1e3 * next_uniform(&mut rng);
        let mut c = w.clone();
        let end = block_prefix(&mut c, base);
        assert_eq!(end.to_bits(), block_end(base, &quarter_sums(&w)).to_bits());
        assert_eq!(c[BLOCK - 1].to_bits(), end.to_bits());
    }
    assert_eq!(exp_nonpos(-0.0 - 0.0).to_bits(), 1.0f64.to_bits());
    assert_eq!(exp_nonpos(-0.0 + 0.0).to_bits(), 1.0f64.to_bits());
    let lw = [0.0, -0.0, -1.0];
    assert_eq!(max_checked(Isa::detect(), &lw, None).unwrap(), 0.0);
}

/// The parallel residual walk speculates each task's starting state;
/// factors off by round-off-like and by gross amounts (which put two
/// points in one interval, breaking the speculation) must still give
/// exactly the sequential walk's output.
#[test]
fn residual_walk_par_recovers_from_misspeculation() {
    let isa = Isa::detect();
    let mut rng = rng_from_seed(29);
    let near1 = 1.0 - 1e-15;
    let mut missed = 0usize;
    for len in [700usize, 3000] {
        let cases: Vec<Vec<f64>> = vec![
            (0..len).map(|_| 2.0 * next_uniform(&mut rng)).collect(),
            (0..len).map(|i| [near1, 0.0, 1.0 + near1, 0.3, 2.0][i % 5]).collect(),
            (0..len).map(|i| ((i * 37) % 101) as f64 / 50.5).collect(),
        ];
        for x in &cases {
            let n = x.iter().sum::<f64>().round() as usize;
            let (floors, rem_sum) = residual_totals_blocked(isa, x, 1.0);
            let draws = n.saturating_sub(floors);
            let exact = if draws > 0 { draws as f64 / rem_sum } else { 0.0 };
            for t in [1, 2] {
                let mut starts = Vec::new();
                let totals = residual_totals_par(isa, x, 1.0, t, &mut starts);
                assert_eq!((totals.0, totals.1.to_bits()), (floors, rem_sum.to_bits()));
                for factor in [exact, exact * (1.0 - 1e-12), exact * (1.0 + 1e-12), exact * 0.5, exact * 1.7, 0.0, 1e6] {
                    for u in [0.0, 0.3, ONE_MINUS] {
                        let mut want = vec![-1i64; n];
                        residual_walk_blocked(isa, x, 1.0, &mut want, draws, factor, u);
                        let mut got = vec![-1i64; n];
                        residual_walk_par(isa, x, 1.0, &mut got, draws, factor, u, t, &starts);
                        assert!(got == want, "len={len} t={t} factor={factor} u={u}");
                        // Count the task starts where speculation fails.
                        for task in 1..starts.len() {
                            let mut scratch = vec![0i64; n];
                            let head = &x[..task * t * BLOCK];
                            let (_, _, k) = residual_blocks(isa, head, 0, 1.0, factor, u, 0.0, &mut scratch, 0, 0, draws);
                            let spec = (residual_count(starts[task].0, factor, u).max(0) as usize).min(draws);
                            missed += (k != spec) as usize;
                        }
                    }
                }
            }
        }
    }
    assert!(missed > 0, "no case exercised the redo path");
}

#[test]
fn seeded_runs_are_reproducible_and_seed_dependent() {
    let lw: Vec<f64> = (0..500).map(|i| ((i * 31) % 17) as f64 * -0.3).collect();
    for k in Scheme::ALL {
        let a = seeded(k, &lw, 500, 42);
        assert_eq!(a, seeded(k, &lw, 500, 42));
        assert_ne!(a, seeded(k, &lw, 500, 43), "{k}");
    }
}

// ------------------------------------------------------ property tests

/// Log weights with some -inf entries and a wide dynamic range; at
/// least one finite.
fn log_weights_strategy() -> impl Strategy<Value = Vec<f64>> {
    (
        prop::collection::vec(prop_oneof![9 => -50.0f64..50.0, 1 => Just(f64::NEG_INFINITY)], 1..300),
        -1e6f64..1e6,
    )
        .prop_map(|(mut v, shift)| {
            if v.iter().all(|x| x.is_infinite()) {
                v[0] = 0.0;
            }
            v.iter_mut().for_each(|x| *x += shift);
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn counts_respect_scheme_bounds(lw in log_weights_strategy(), n in 1usize..700, seed in any::<u64>()) {
        let w = normalised(&lw);
        for k in Scheme::ALL {
            let out = seeded(k, &lw, n, seed);
            prop_assert_eq!(out.len(), n);
            check_output(&lw, &out);
            let c = counts(&out, lw.len());
            for i in 0..lw.len() {
                let nw = n as f64 * w[i];
                let (lo, hi) = match k {
                    // floor/ceil, with slack for 1e-9 rounding of n w
                    // (for residual the bound is exact in the kernel's
                    // own n w: see residual_counts_are_exactly_floor_or_ceil).
                    Scheme::Systematic | Scheme::Residual => ((nw - 1e-9).floor(), (nw + 1e-9).ceil()),
                    // |N - n w| < 2, i.e. within one of floor / ceil.
                    Scheme::Stratified => ((nw - 1e-9).floor() - 1.0, (nw + 1e-9).ceil() + 1.0),
                    Scheme::Multinomial => (0.0, n as f64),
                };
                prop_assert!((c[i] as f64) >= lo && (c[i] as f64) <= hi,
                    "{} i={} count={} nw={}", k, i, c[i], nw);
                if w[i] == 0.0 {
                    prop_assert_eq!(c[i], 0);
                }
            }
        }
    }

    #[test]
    fn given_uniforms_match_naive_inverse_cdf(
        lw in log_weights_strategy(),
        us in prop::collection::vec(0.0f64..1.0, 1..200),
    ) {
        let w = normalised(&lw);
        let n = us.len();
        // A point within 1e-9 of an interval boundary may legitimately
        // go either way; skip those (vanishingly rare).
        let near_edge = |p: f64| {
            let mut c = 0.0;
            w.iter().any(|&x| { c += x; (p - c).abs() < 1e-9 })
        };
        let sys: Vec<f64> = (0..n).map(|k| (k as f64 + us[0]) / n as f64).collect();
        let strat: Vec<f64> = (0..n).map(|k| (k as f64 + us[k]) / n as f64).collect();
        let mut multi = us.clone();
        multi.sort_by(f64::total_cmp);
        for (k, pts, u) in [
            (Scheme::Systematic, sys, &us[..1]),
            (Scheme::Stratified, strat, &us[..]),
            (Scheme::Multinomial, multi, &us[..]),
        ] {
            if pts.iter().any(|&p| near_edge(p)) {
                continue;
            }
            let out = given(k, &lw, n, u);
            let want: Vec<i64> = pts.iter().map(|&p| naive_pick(&w, p)).collect();
            prop_assert_eq!(out, want);
        }
    }

    /// Residual-systematic against its definition (floors, then
    /// systematic on the remainders, `residual_reference`) and against
    /// systematic with the same uniform, which it equals in exact
    /// arithmetic. A `u` within 1e-9 of a breakpoint (`frac(n C_i)`)
    /// may legitimately go either way; such cases are skipped.
    #[test]
    fn residual_matches_definition_and_systematic(
        lw in log_weights_strategy(),
        n in 1usize..400,
        u in 0.0f64..1.0,
    ) {
        let w = normalised(&lw);
        let mut c = 0.0;
        let mut cr = 0.0;
        let near_edge = w.iter().any(|&x| {
            c += x;
            cr += n as f64 * x - (n as f64 * x).floor();
            let d = |y: f64| { let f = y - y.floor() - u; f.abs() < 1e-9 || (f.abs() - 1.0).abs() < 1e-9 };
            d(c * n as f64) || d(cr)
        });
        prop_assume!(!near_edge);
        let out = given(Scheme::Residual, &lw, n, &[u]);
        check_output(&lw, &out);
        prop_assert_eq!(&out, &residual_reference(&w, n, u));
        prop_assert_eq!(&out, &given(Scheme::Systematic, &lw, n, &[u]));
    }

    /// Parallel (tasks of 1 or 2 blocks, so several tasks even for
    /// short inputs) equals sequential, bit for bit, for every kernel.
    #[test]
    fn parallel_matches_sequential(
        parts in prop::collection::vec(log_weights_strategy(), 1..8),
        n in 1usize..3000,
        seed in any::<u64>(),
        t in 1usize..3,
    ) {
        let lw: Vec<f64> = parts.concat();
        for k in Scheme::ALL {
            prop_assert_eq!(seeded_par(k, &lw, n, seed, Some(t)), seeded_par(k, &lw, n, seed, None), "{}", k);
        }
    }

    #[test]
    fn ess_is_between_one_and_n(lw in log_weights_strategy()) {
        let e = ess(&lw).unwrap();
        let finite = lw.iter().filter(|x| x.is_finite()).count() as f64;
        prop_assert!(e >= 1.0 - 1e-12 && e <= finite * (1.0 + 1e-12));
        let w = normalised(&lw);
        let want = 1.0 / w.iter().map(|x| x * x).sum::<f64>();
        prop_assert!((e - want).abs() <= 1e-9 * want);
    }
}
