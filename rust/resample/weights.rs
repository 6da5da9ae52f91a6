//! From log weights to normalised weights (checks, scratch buffers, block
//! summaries) and the scalar walk helpers every kernel shares.

use super::*;

/// The first NaN or `+inf` (cold path, only after a pass reported one).
pub(super) fn first_bad(lw: &[f64]) -> ResampleError {
    for (index, &v) in lw.iter().enumerate() {
        if v.is_nan() {
            return ResampleError::NaN { index };
        }
        if v == f64::INFINITY {
            return ResampleError::PosInf { index };
        }
    }
    unreachable!("first_bad called on valid log weights")
}

/// Pass 1 validates and finds the max (no `exp`: cheap); pass 2 stores
/// `w_i = exp(lw_i - max)` and sums them, block by block.
///
/// In parallel, pass 2's tasks store each block's sum, and the calling
/// thread then adds them up in block order: the same additions, in the
/// same order, as the sequential `sum += block sum`, so the same bits.
///
/// In parallel and with `quarters`, the tasks also store the
/// [`quarter_sums`] of every full block, for the parallel systematic walk
/// (cheaper while the block is in L1 than re-reading every weight later).
pub(super) fn weights(isa: Isa, lw: &[f64], par: Par, quarters: bool) -> Result<Weights, ResampleError> {
    let m = max_checked(isa, lw, par)?;
    let mut w = scratch::take(0, lw.len());
    let mut sum = 0.0;
    let mut qs = Vec::new();
    let last = match par {
        None => {
            for (chunk, dst) in lw.chunks(BLOCK).zip(w.chunks_mut(BLOCK)) {
                sum += exp_store(isa, chunk, m, dst);
            }
            w.iter().rposition(|&x| x > 0.0)
        }
        Some(t) => {
            let span = t * BLOCK;
            // Per block: its sum and (with `quarters`, full blocks only)
            // its quarter sums.
            let mut stats = vec![(0.0f64, [0.0f64; 4]); lw.len().div_ceil(BLOCK)];
            lw.par_chunks(span)
                .zip(w.par_chunks_mut(span))
                .zip(stats.par_chunks_mut(t))
                .with_max_len(1)
                .for_each(|((l, d), st)| {
                    dispatch!(
                        isa,
                        fn generic(l: &[f64], m: f64, d: &mut [f64], st: &mut [(f64, [f64; 4])], quarters: bool) -> () {
                            for ((lc, dc), (sv, qv)) in l.chunks(BLOCK).zip(d.chunks_mut(BLOCK)).zip(st.iter_mut()) {
                                *sv = exp_store_body(lc, m, dc);
                                if quarters && dc.len() == BLOCK {
                                    *qv = quarter_sums(dc);
                                }
                            }
                        }
                    )
                });
            for &(b, _) in &stats {
                sum += b;
            }
            if quarters {
                qs = stats[..lw.len() / BLOCK].iter().map(|&(_, q)| q).collect();
            }
            // Usually the very last weight; a long zero tail is searched
            // in parallel.
            match w.last() {
                Some(&x) if x > 0.0 => Some(w.len() - 1),
                _ => w
                    .par_chunks(span)
                    .enumerate()
                    .with_max_len(1)
                    .filter_map(|(i, c)| c.iter().rposition(|&x| x > 0.0).map(|j| i * span + j))
                    .max(),
            }
        }
    };
    let last = last.expect("the maximum has weight 1");
    Ok(Weights { w, sum, last, quarters: qs })
}

/// Validate, and compute max / sum / (sum of squares) in one read of the
/// data: per block, first the block max (from memory), then the sums
/// relative to the running max (from L1). When a block raises the max, the
/// running sums are rescaled by `exp(old - new)` (the online logsumexp).
pub(super) fn summarize<const SQ: bool>(isa: Isa, lw: &[f64]) -> Result<Summary, ResampleError> {
    if lw.is_empty() {
        return Err(ResampleError::Empty);
    }
    let mut m = f64::NEG_INFINITY;
    let mut s = 0.0;
    let mut q = 0.0;
    for chunk in lw.chunks(BLOCK) {
        let (bm, ok) = dispatch!(
            isa,
            fn generic(chunk: &[f64]) -> (f64, bool) {
                max_body(chunk)
            }
        );
        if !ok {
            return Err(first_bad(lw));
        }
        if bm > m {
            // m - bm is -inf on the first finite block: e = 0 and s = q = 0.
            let e = exp_nonpos(m - bm);
            s *= e;
            q *= e * e;
            m = bm;
        }
        if m == f64::NEG_INFINITY {
            continue;
        }
        let (bs, bq) = block_sums::<SQ>(isa, chunk, m);
        s += bs;
        q += bq;
    }
    if m == f64::NEG_INFINITY {
        return Err(ResampleError::AllZero);
    }
    Ok(Summary { max: m, sum: s, sumsq: q })
}

/// Write `v` into `out[pos..end]`. Runs are short when `n ~ N` (mostly 0,
/// 1 or 2), where a variable-length loop costs a branch miss per particle;
/// so when there is room we store four copies unconditionally. That is
/// safe because the runs tile `out` left to right: whatever lands beyond
/// `end` is overwritten by the next runs (the last run reaches `n`).
#[inline(always)]
pub(super) fn fill_run(out: &mut [i64], pos: usize, end: usize, v: i64) {
    if end - pos <= 4 && pos + 4 <= out.len() {
        out[pos..pos + 4].copy_from_slice(&[v; 4]);
    } else {
        out[pos..end].fill(v);
    }
}

/// The walk shared by the systematic, stratified and multinomial kernels.
/// `count(c)` must return the number of points below the (unnormalised)
/// cumulative weight `c`; it is called with non-decreasing `c`. Whatever it
/// returns is clamped into `[previous, n]`, and particle `ws.last` takes
/// every remaining slot, so `out` is always fully and monotonically written
/// with indices of positive-weight particles.
#[inline(always)]
pub(super) fn walk<F: FnMut(f64) -> i64>(ws: &Weights, out: &mut [i64], mut count: F) {
    let n = out.len();
    let mut c = 0.0;
    let mut pos = 0usize;
    for (i, &x) in ws.w[..ws.last].iter().enumerate() {
        c += x;
        // pos <= n always, so max-then-min keeps pos <= end <= n.
        let end = (count(c).max(pos as i64) as usize).min(n);
        fill_run(out, pos, end, i as i64);
        pos = end;
        if pos == n {
            break;
        }
    }
    out[pos..].fill(ws.last as i64);
}

/// Points below `x`, for points `k + u_k` (`k` = stratum): with
/// `f = floor(x)`, strata below `f` lie wholly below `x`, strata above
/// wholly above, and stratum `f` is below iff `u_f < x - f`. (`x - f` is
/// exact; computing `ceil(x - u)` instead would round `x - u` and misplace
/// points when `u` is within an ulp of 1.) `x >= 0`.
#[inline(always)]
pub(super) fn strata_below(x: f64, u_at: impl FnOnce(i64) -> f64) -> i64 {
    let f = x as i64; // x >= 0: truncation is floor (saturating if huge)
    f + (u_at(f) < x - f as f64) as i64
}

/// Check supplied uniforms: each in `[0, 1)`.
pub(super) fn check_uniforms(u: &[f64]) -> Result<(), ResampleError> {
    match u.iter().position(|&v| !(0.0..1.0).contains(&v)) {
        Some(index) => Err(ResampleError::BadUniform { index, value: u[index] }),
        None => Ok(()),
    }
}

pub(super) fn exact_count(scheme: Scheme, u: &[f64], expected: usize) -> Result<(), ResampleError> {
    if u.len() != expected {
        return Err(ResampleError::UniformCount {
            scheme,
            expected,
            got: u.len(),
        });
    }
    Ok(())
}

/// `k` sorted uniforms in O(k), as exponential spacings: returns the partial
/// sums `T_1..T_k` of `k + 1` standard exponentials and `T_{k+1}`; the
/// sorted uniforms are `T_j / T_{k+1}`. (The caller folds `1 / T_{k+1}`
/// into its comparison instead of dividing every point.) The uniforms are
/// drawn first, then turned into exponentials in place by a vectorised
/// pass, then summed.
pub(super) fn sorted_spacings(isa: Isa, rng: &mut ResampleRng, k: usize) -> (Vec<f64>, f64) {
    let mut t = scratch::take(1, k + 1);
    for v in t.iter_mut() {
        *v = next_uniform(rng);
    }
    exponentials(isa, &mut t);
    let mut acc = 0.0f64;
    for v in t.iter_mut() {
        acc += *v;
        *v = acc;
    }
    let total = t.pop().expect("k + 1 >= 1 values");
    (t, total)
}

/// A copy of supplied uniforms, sorted.
pub(super) fn sorted_copy(u: &[f64]) -> Vec<f64> {
    let mut v = u.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    v
}
