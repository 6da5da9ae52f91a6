//! Block loops built once per instruction set (via `dispatch!`): maxima,
//! sums, exponentials, with `tree8` reductions so that they vectorise.

use super::*;

/// Combine eight accumulator lanes in a fixed order.
#[inline(always)]
pub(super) fn tree8(a: [f64; 8]) -> f64 {
    ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
}

/// Max of a slice, and whether every value is `< +inf` (not NaN, not +inf).
/// Eight independent lanes so that the compiler vectorises the reduction
/// (a single `if v > m` chain would not be reassociated). `!(v < inf)` is
/// deliberate: one compare that is true for both NaN and `+inf`.
#[inline(always)]
#[allow(clippy::neg_cmp_op_on_partial_ord)]
pub(super) fn max_body(lw: &[f64]) -> (f64, bool) {
    let mut mx = [f64::NEG_INFINITY; 8];
    let mut bad = [0u64; 8];
    let mut chunks = lw.chunks_exact(8);
    for c in &mut chunks {
        for j in 0..8 {
            let v = c[j];
            mx[j] = if v > mx[j] { v } else { mx[j] };
            bad[j] |= (!(v < f64::INFINITY)) as u64;
        }
    }
    for (j, &v) in chunks.remainder().iter().enumerate() {
        mx[j] = if v > mx[j] { v } else { mx[j] };
        bad[j] |= (!(v < f64::INFINITY)) as u64;
    }
    let mut m = mx[0];
    for &v in &mx[1..] {
        m = if v > m { v } else { m };
    }
    (m, bad.iter().all(|&b| b == 0))
}

/// `(sum_j exp(lw_j - m), sum_j exp(lw_j - m)^2)` over a block, the second
/// only if `SQ`. Eight fixed accumulator lanes, combined in a fixed tree, so
/// the result does not depend on the vector width the compiler picks.
#[inline(always)]
pub(super) fn sums_body<const SQ: bool>(lw: &[f64], m: f64) -> (f64, f64) {
    let mut s = [0.0f64; 8];
    let mut q = [0.0f64; 8];
    let mut chunks = lw.chunks_exact(8);
    for c in &mut chunks {
        for j in 0..8 {
            let x = exp_nonpos(c[j] - m);
            s[j] += x;
            if SQ {
                q[j] += x * x;
            }
        }
    }
    for (j, &v) in chunks.remainder().iter().enumerate() {
        let x = exp_nonpos(v - m);
        s[j] += x;
        if SQ {
            q[j] += x * x;
        }
    }
    (tree8(s), if SQ { tree8(q) } else { 0.0 })
}

/// `dst[j] = exp(lw[j] - m)`, returning their sum (eight lanes, as above).
#[inline(always)]
pub(super) fn exp_store_body(lw: &[f64], m: f64, dst: &mut [f64]) -> f64 {
    let mut s = [0.0f64; 8];
    let mut src = lw.chunks_exact(8);
    let mut out = dst.chunks_exact_mut(8);
    for (c, d) in (&mut src).zip(&mut out) {
        for j in 0..8 {
            let x = exp_nonpos(c[j] - m);
            d[j] = x;
            s[j] += x;
        }
    }
    for (j, (&v, d)) in src.remainder().iter().zip(out.into_remainder()).enumerate() {
        let x = exp_nonpos(v - m);
        *d = x;
        s[j] += x;
    }
    tree8(s)
}

/// `dst[j] = -ln(1 - u_j)`: standard exponentials from uniforms in `[0, 1)`.
#[inline(always)]
pub(super) fn exponentials_body(u: &mut [f64]) {
    for v in u.iter_mut() {
        *v = neg_ln_unit(1.0 - *v);
    }
}

pub(super) fn block_sums<const SQ: bool>(isa: Isa, lw: &[f64], m: f64) -> (f64, f64) {
    if SQ {
        dispatch!(
            isa,
            fn generic(lw: &[f64], m: f64) -> (f64, f64) {
                sums_body::<true>(lw, m)
            }
        )
    } else {
        dispatch!(
            isa,
            fn generic(lw: &[f64], m: f64) -> (f64, f64) {
                sums_body::<false>(lw, m)
            }
        )
    }
}

pub(super) fn exp_store(isa: Isa, lw: &[f64], m: f64, dst: &mut [f64]) -> f64 {
    dispatch!(
        isa,
        fn generic(lw: &[f64], m: f64, dst: &mut [f64]) -> f64 {
            exp_store_body(lw, m, dst)
        }
    )
}

/// Validate and find the max. In parallel, tasks' maxima are combined in
/// a different order from the lanes of one sequential pass, which can only
/// change the result's sign when the max is zero: `lw - (+0)` and
/// `lw - (-0)` then differ only for `lw = -0`, giving `exp(-0)` and
/// `exp(+0)`, both exactly 1. So the weights never depend on the order.
pub(super) fn max_checked(isa: Isa, lw: &[f64], par: Par) -> Result<f64, ResampleError> {
    if lw.is_empty() {
        return Err(ResampleError::Empty);
    }
    let max = |c: &[f64]| {
        dispatch!(
            isa,
            fn generic(c: &[f64]) -> (f64, bool) {
                max_body(c)
            }
        )
    };
    let (m, ok) = match par {
        None => max(lw),
        Some(t) => lw
            .par_chunks(t * BLOCK)
            .with_max_len(1)
            .map(max)
            .reduce(|| (f64::NEG_INFINITY, true), |(a, oa), (b, ob)| (if b > a { b } else { a }, oa & ob)),
    };
    if !ok {
        return Err(first_bad(lw));
    }
    if m == f64::NEG_INFINITY {
        return Err(ResampleError::AllZero);
    }
    Ok(m)
}

pub(super) fn exponentials(isa: Isa, u: &mut [f64]) {
    dispatch!(
        isa,
        fn generic(u: &mut [f64]) -> () {
            exponentials_body(u)
        }
    )
}
