//! Residual-systematic resampling: integer parts, then a systematic walk
//! over the remainders.

use super::*;

/// Residual-systematic resampling. Stage 1 gives particle `i` its
/// `F_i = floor(x_i)` deterministic copies, `x_i = n w_i` (computed, every
/// time it is needed, as the single product `w_i * (n / S)`); stage 2
/// places the `R = n - sum_i F_i` remaining draws by systematic resampling
/// on the fractional parts `r_i = x_i - F_i`, laid out on a "residual
/// ruler" in index order: points `k + u`, `k = 0..R`, against the
/// cumulative remainders `c_i = r_0 + ... + r_i` scaled by
/// `R / sum_j r_j` (exactly 1 in exact arithmetic, where `sum_j r_j = R`).
///
/// Particle `i` receives an extra copy iff a point falls in its scaled
/// remainder interval; that interval is shorter than 1 (`r_i < 1`), so it
/// holds at most one point, and `N_i` is `F_i` or `F_i + 1 = ceil(x_i)`,
/// the latter with probability `r_i` (so `E[N_i] = x_i` and
/// `Var[N_i] = r_i (1 - r_i)`).
///
/// Two passes over the weights after [`weights`]: `sum F_i` and `sum r_i`
/// (the latter summed exactly as the walk will, so that the walk's last
/// cumulative remainder is exactly `sum r_i`), then the walk. Both are
/// blocked and vectorised like the systematic walk, for `n` up to
/// [`BLOCKED_MAX_N`]; above that, plain scalar loops.
pub(super) fn residual_kernel(isa: Isa, ws: &Weights, out: &mut [i64], src: Uniforms<'_>, par: Par) -> Result<(), ResampleError> {
    let u = match src {
        Uniforms::Rng(rng) => next_uniform(rng),
        // One value, or (backwards compatibility with the former
        // residual-multinomial interface, which took R <= n values) a
        // longer sequence of which only the first is used.
        Uniforms::Given(g) => match g.first() {
            Some(&u) => u,
            None => return Err(ResampleError::TooFewUniforms { needed: 1, got: 0 }),
        },
    };
    let n = out.len();
    let scale = n as f64 / ws.sum;
    let w = &ws.w[..=ws.last];
    let blocked = n <= BLOCKED_MAX_N;
    let tasks = match par {
        Some(t) if blocked && w.len() > t * BLOCK => Some(t),
        _ => None,
    };
    let mut starts = Vec::new();
    let (floors, rem_sum) = match tasks {
        Some(t) => residual_totals_par(isa, w, scale, t, &mut starts),
        None if blocked => residual_totals_blocked(isa, w, scale),
        None => residual_totals_scalar(w, scale),
    };
    // Round-off cannot push the floors past n for any realistic n (their
    // sum is at most n (1 + N eps)), but saturate so it could not matter.
    let draws = n.saturating_sub(floors);
    let factor = if draws > 0 && rem_sum > 0.0 { draws as f64 / rem_sum } else { 0.0 };
    match tasks {
        Some(t) => residual_walk_par(isa, w, scale, out, draws, factor, u, t, &starts),
        None if blocked => residual_walk_blocked(isa, w, scale, out, draws, factor, u),
        None => residual_walk_scalar(w, scale, out, draws, factor, u),
    }
    Ok(())
}

/// `floor(x)` for `x >= 0` as a count (truncation; saturating, so a huge or
/// NaN `x` cannot wrap). The blocked loops compute the same value with an
/// `i32` conversion, exact for `x < 2^31`.
#[inline(always)]
pub(super) fn floor_count(x: f64) -> usize {
    x as usize
}

/// `(sum_i floor(x_i), sum_i r_i)`, `x_i = w_i * scale`, by plain loops
/// (the summation order of [`residual_walk_scalar`]).
pub(super) fn residual_totals_scalar(w: &[f64], scale: f64) -> (usize, f64) {
    let mut floors = 0usize;
    let mut rem_sum = 0.0f64;
    for &v in w {
        let x = v * scale;
        let f = floor_count(x);
        floors = floors.saturating_add(f);
        // Exact: the fractional part of a double is a double.
        rem_sum += x - f as f64;
    }
    (floors, rem_sum)
}

/// The largest `x` the blocked residual loops convert to `i32`: well above
/// any `n w_i` they see (`n <= BLOCKED_MAX_N`), far below `i32::MAX`.
pub(super) const RESIDUAL_LIMIT: f64 = (2 * BLOCKED_MAX_N - 1) as f64;

/// One block of `x_j = w_j * scale`, split into `fl[j] = floor(x_j)` and
/// `r[j] = x_j - floor(x_j)`; returns `sum_j fl[j]`. Vectorised (packed
/// double-to-int32 conversion, as in [`systematic_counts_body`]).
#[inline(always)]
pub(super) fn residual_split_body(w: &[f64], scale: f64, r: &mut [f64], fl: &mut [i32]) -> i64 {
    let mut total = 0i64;
    for ((&v, rj), fj) in w.iter().zip(r.iter_mut()).zip(fl.iter_mut()) {
        let x = v * scale;
        // Compare-select clamps (NaN-proof; no-ops for valid x).
        let x = if x > 0.0 { x } else { 0.0 };
        let x = if x < RESIDUAL_LIMIT { x } else { RESIDUAL_LIMIT };
        // SAFETY: 0 <= x <= RESIDUAL_LIMIT < 2^31, not NaN.
        let f = unsafe { x.to_int_unchecked::<i32>() };
        *fj = f;
        *rj = x - f as f64;
        total += f as i64;
    }
    total
}

/// `(sum floor(x_i), sum r_i)` block by block, with the remainders summed
/// by [`block_prefix`], exactly as [`residual_walk_blocked`] accumulates
/// them.
pub(super) fn residual_totals_blocked(isa: Isa, w: &[f64], scale: f64) -> (usize, f64) {
    let (floors, rem_sum) = residual_totals_from(isa, w, scale, 0, 0.0);
    (floors.max(0) as usize, rem_sum)
}

/// The loop of [`residual_totals_blocked`], from given running totals.
pub(super) fn residual_totals_from(isa: Isa, w: &[f64], scale: f64, mut floors: i64, mut base: f64) -> (i64, f64) {
    let mut r = [0.0f64; BLOCK];
    let mut fl = [0i32; BLOCK];
    for chunk in w.chunks(BLOCK) {
        let (r, fl) = (&mut r[..], &mut fl[..]);
        let (f, end) = dispatch!(
            isa,
            fn generic(chunk: &[f64], scale: f64, base: f64, r: &mut [f64], fl: &mut [i32]) -> (i64, f64) {
                let r = &mut r[..chunk.len()];
                let f = residual_split_body(chunk, scale, r, &mut fl[..chunk.len()]);
                (f, block_prefix(r, base))
            }
        );
        floors += f;
        base = end;
    }
    (floors, base)
}

/// The walk of [`residual_kernel`], fused with writing the output: for
/// each particle `i` (`x_i = w_i * scale`), write `floor(x_i) + e_i` copies
/// of `i`, where `e_i` in `{0, 1}` says whether a systematic point `k + u`
/// of the residual ruler lies in particle `i`'s interval, i.e. below the
/// scaled cumulative remainder `c_i * factor` but not below
/// `c_{i-1} * factor`.
///
/// Written so that no rounding can break the guarantees (each clause is a
/// no-op in exact arithmetic):
///
/// * `e_i = 1` only if `r_i > 0`, at most once per particle, and at most
///   `draws` times in all: with `K` the extras given so far, particle `i`
///   gets one iff the number of points below its upper end exceeds `K`.
///   Were an interval ever to hold two points (a scaled `r_i` above 1
///   through round-off in `factor`), the second is carried to the next
///   particle with a positive remainder rather than given twice.
/// * Points lost at the top of the ruler (`c_last * factor` a hair below
///   `draws` with `u` a hair below 1), or carried past the last positive
///   remainder, are handed out by [`residual_repair`]: to the particles
///   with a positive remainder and no extra copy yet, from the last one
///   back.
///
/// So `N_i` is always `floor(x_i)` or, only if `x_i` is not an integer,
/// `floor(x_i) + 1`; zero-remainder particles never get an extra; the
/// output is sorted, and every slot is written.
pub(super) fn residual_walk_scalar(w: &[f64], scale: f64, out: &mut [i64], draws: usize, factor: f64, u: f64) {
    let n = out.len();
    let mut c = 0.0f64;
    let mut k = 0usize;
    let mut pos = 0usize;
    for (i, &v) in w.iter().enumerate() {
        let x = v * scale;
        let f = floor_count(x);
        let r = x - f as f64;
        c += r;
        // Points k + u below c * factor (>= 0), as for stratified/systematic.
        let below = strata_below(c * factor, |_| u);
        let extra = ((below > k as i64) & (r > 0.0) & (k < draws)) as usize;
        k += extra;
        let end = pos.saturating_add(f + extra).min(n);
        fill_run(out, pos, end, i as i64);
        pos = end;
    }
    if pos < n {
        residual_repair(w, scale, out, pos);
    }
}

/// Residual points below the cumulative remainder `c`:
/// `#{k : k + u < c * factor}` ([`strata_below`], in `i32` with
/// `c * factor` clamped into `[0, RESIDUAL_LIMIT]`, as in
/// [`systematic_count`]). Non-decreasing in `c`.
#[inline(always)]
pub(super) fn residual_count(c: f64, factor: f64, u: f64) -> i32 {
    let y = c * factor;
    let y = if y > 0.0 { y } else { 0.0 };
    let y = if y < RESIDUAL_LIMIT { y } else { RESIDUAL_LIMIT };
    // SAFETY: 0 <= y <= RESIDUAL_LIMIT < 2^31, not NaN.
    let f = unsafe { y.to_int_unchecked::<i32>() };
    f + (u < y - f as f64) as i32
}

/// Counts of residual points below each scaled cumulative remainder of a
/// block: `kk[j] = residual_count(c[j])`, vectorised.
#[inline(always)]
pub(super) fn residual_counts_body(c: &[f64], factor: f64, u: f64, kk: &mut [i32]) {
    for (kj, &cj) in kk.iter_mut().zip(c) {
        *kj = residual_count(cj, factor, u);
    }
}

/// [`residual_walk_scalar`], blocked: per block of `BLOCK` particles, the
/// floors, remainders, cumulative remainders ([`block_prefix`], the
/// summation of [`residual_totals_blocked`]) and the counts `K_j` of
/// points below each scaled cumulative remainder are computed by
/// vectorised loops; then a scalar loop applies the extra-copy rule of
/// [`residual_walk_scalar`] (branch-free) and writes the runs. Needs
/// `n <= BLOCKED_MAX_N` (`i32` counts).
pub(super) fn residual_walk_blocked(isa: Isa, w: &[f64], scale: f64, out: &mut [i64], draws: usize, factor: f64, u: f64) {
    let n = out.len();
    debug_assert!(n <= BLOCKED_MAX_N);
    let (_, pos, _) = residual_blocks(isa, w, 0, scale, factor, u, 0.0, out, 0, 0, draws);
    if pos < n {
        residual_repair(w, scale, out, pos);
    }
}

/// The loop of [`residual_walk_blocked`] over `w`, the weights of
/// particles `first..first + w.len()`, from the state `(base, pos, k)`
/// (cumulative remainder, output position, extras given so far) to the
/// state after the last of them, which it returns.
#[allow(clippy::too_many_arguments)]
pub(super) fn residual_blocks(
    isa: Isa,
    w: &[f64],
    first: usize,
    scale: f64,
    factor: f64,
    u: f64,
    mut base: f64,
    out: &mut [i64],
    mut pos: usize,
    mut k: usize,
    draws: usize,
) -> (f64, usize, usize) {
    let mut c = [0.0f64; BLOCK];
    let mut fl = [0i32; BLOCK];
    let mut el = [0i32; BLOCK];
    let mut kk = [0i32; BLOCK];
    for (b, chunk) in w.chunks(BLOCK).enumerate() {
        let first = (first + b * BLOCK) as i64;
        let (c, fl, el, kk) = (&mut c[..], &mut fl[..], &mut el[..], &mut kk[..]);
        // One dispatched call per block, as in systematic_blocks.
        (base, pos, k) = dispatch!(
            isa,
            fn generic(
                chunk: &[f64],
                scale: f64,
                factor: f64,
                u: f64,
                base: f64,
                c: &mut [f64],
                fl: &mut [i32],
                el: &mut [i32],
                kk: &mut [i32],
                out: &mut [i64],
                pos: usize,
                k: usize,
                draws: usize,
                first: i64,
            ) -> (f64, usize, usize) {
                residual_block_body(chunk, scale, factor, u, base, c, fl, el, kk, out, pos, k, draws, first)
            }
        );
    }
    (base, pos, k)
}

/// One block of [`residual_walk_blocked`]; returns the block's last
/// cumulative remainder, the new output position and the extras given so
/// far.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn residual_block_body(
    chunk: &[f64],
    scale: f64,
    factor: f64,
    u: f64,
    base: f64,
    c: &mut [f64],
    fl: &mut [i32],
    el: &mut [i32],
    kk: &mut [i32],
    out: &mut [i64],
    mut pos: usize,
    mut k: usize,
    draws: usize,
    first: i64,
) -> (f64, usize, usize) {
    let n = out.len();
    let len = chunk.len();
    let (c, fl, el, kk) = (&mut c[..len], &mut fl[..len], &mut el[..len], &mut kk[..len]);
    residual_split_body(chunk, scale, c, fl);
    for (e, &r) in el.iter_mut().zip(c.iter()) {
        *e = (r > 0.0) as i32;
    }
    let end = block_prefix(c, base);
    residual_counts_body(c, factor, u, kk);
    for j in 0..len {
        // kk >= 0 and fl >= 0 (clamped above).
        let extra = ((kk[j] as usize > k) & (el[j] != 0) & (k < draws)) as usize;
        k += extra;
        let stop = (pos + fl[j] as usize + extra).min(n);
        fill_run(out, pos, stop, first + j as i64);
        pos = stop;
    }
    (end, pos, k)
}

/// Cold path of the residual walks: `out[..pos]` holds the runs, and
/// `n - pos` residual draws were lost to round-off. Give them, one each, to
/// the particles with a positive remainder and no extra copy yet, from the
/// last one back, moving the runs right in place (a backward pass that
/// stops as soon as everything is placed). In the degenerate case that
/// there are not enough such particles (impossible unless the floors are
/// off by whole units, i.e. `N n eps` near 1), the first particle with a
/// positive `x` fills the front, which keeps the output sorted and valid.
#[cold]
#[inline(never)]
pub(super) fn residual_repair(w: &[f64], scale: f64, out: &mut [i64], pos: usize) {
    let n = out.len();
    let mut missing = n - pos;
    let (mut rp, mut wp) = (pos, n);
    for i in (0..w.len()).rev() {
        if missing == 0 {
            break;
        }
        let start = out[..rp].iter().rposition(|&a| a != i as i64).map_or(0, |p| p + 1);
        let count = rp - start;
        let x = w[i] * scale;
        let f = floor_count(x);
        let add = (x - f as f64 > 0.0 && count <= f) as usize;
        // wp - rp == missing before the update, so the write range
        // [wp - count - add, wp) starts at or after `start`: no unread run
        // is overwritten (copy_within handles the overlap).
        missing -= add;
        let new_wp = wp - count - add;
        out.copy_within(start..rp, new_wp);
        out[new_wp + count..wp].fill(i as i64);
        rp = start;
        wp = new_wp;
    }
    if missing > 0 {
        let first = w.iter().position(|&v| v * scale > 0.0).unwrap_or(w.len() - 1);
        out[..wp].fill(first as i64);
    }
}
