//! Stratified and multinomial resampling (sorted uniforms merged with the
//! cumulative weights).

use super::*;

pub(super) fn stratified_kernel(ws: &Weights, out: &mut [i64], src: Uniforms<'_>) -> Result<(), ResampleError> {
    let n = out.len();
    let scale = n as f64 / ws.sum;
    match src {
        Uniforms::Rng(rng) => {
            // Only strata that contain a particle boundary need their
            // uniform, and boundaries arrive in stratum order: draw one
            // uniform per particle and keep it only when the boundary
            // moved to a new stratum (a select, not a branch).
            let mut cur = -1i64;
            let mut cur_u = 0.0;
            walk(ws, out, |c| {
                strata_below(c * scale, |f| {
                    let fresh = next_uniform(rng);
                    let moved = f != cur;
                    cur = f;
                    cur_u = if moved { fresh } else { cur_u };
                    cur_u
                })
            });
        }
        Uniforms::Given(g) => {
            exact_count(Scheme::Stratified, g, n)?;
            // Strata at or past n hold no points: report 1.0 so that none
            // counts (the count is clamped to n anyway).
            walk(ws, out, |c| strata_below(c * scale, |f| g.get(f as usize).copied().unwrap_or(1.0)));
        }
    }
    Ok(())
}

pub(super) fn multinomial_kernel(isa: Isa, mut ws: Weights, out: &mut [i64], src: Uniforms<'_>) -> Result<(), ResampleError> {
    let n = out.len();
    // Points pts[j] compared as pts[j] < c * factor.
    let (pts, factor) = match src {
        Uniforms::Rng(rng) => {
            let (t, total) = sorted_spacings(isa, rng, n);
            (t, total / ws.sum)
        }
        Uniforms::Given(g) => {
            exact_count(Scheme::Multinomial, g, n)?;
            (sorted_copy(g), 1.0 / ws.sum)
        }
    };
    merge_walk(isa, &mut ws.w, ws.last, out, &pts, factor);
    scratch::give(1, pts);
    Ok(())
}

/// Assign sorted points to particles: `out[p]` = the particle whose scaled
/// cumulative interval `[C_{i-1}, C_i) * factor` contains `pts[p]`
/// (`pts.len() == out.len()`, sorted). Same clamping rules as [`walk`].
/// `w` holds the weights `w_0..=w_last` and is overwritten with the
/// thresholds.
///
/// First the thresholds `C_i * factor` for every particle before `last`
/// (blocked and vectorised, as for systematic), with `+inf` for `last`
/// itself: that makes `last` absorb whatever round-off leaves over, and
/// keeps the merge in bounds. Then a branch-free merge: a
/// `while pts[p] < t` loop per particle mispredicts about once per
/// particle, since its trip count is random; instead each step either
/// assigns point `p` to particle `i` or moves on to particle `i + 1`,
/// decided by a compare, storing `out[p] = i` unconditionally (a step that
/// moves on is overwritten later). Such a merge is bound by the latency of
/// its load-compare-increment chain, so the points are split into four
/// ranges, each started by a binary search, and merged as four
/// interleaved, independent chains.
pub(super) fn merge_walk(isa: Isa, w: &mut [f64], last: usize, out: &mut [i64], pts: &[f64], factor: f64) {
    let n = out.len();
    assert_eq!(pts.len(), n);
    // The weights become the thresholds, in place.
    let th = &mut w[..=last];
    let mut base = 0.0f64;
    for c in th[..last].chunks_mut(BLOCK) {
        base = dispatch!(
            isa,
            fn generic(c: &mut [f64], base: f64, factor: f64) -> f64 {
                let end = block_prefix(c, base);
                for v in c.iter_mut() {
                    *v *= factor;
                }
                end
            }
        );
    }
    th[last] = f64::INFINITY;
    // Chain k covers points [bounds[k], bounds[k + 1]), starting at the
    // first particle whose threshold exceeds its first point.
    let bounds = [0, n / 4, n / 2, 3 * n / 4, n];
    let mut p = [0usize; 4];
    let mut i = [0usize; 4];
    for k in 0..4 {
        p[k] = bounds[k];
        i[k] = match pts.get(bounds[k]) {
            Some(&x) => th.partition_point(|&t| t <= x),
            None => last,
        };
    }
    let end = [bounds[1], bounds[2], bounds[3], bounds[4]];
    // (th[last] = inf > any point, so i never passes last.)
    macro_rules! step {
        ($k:expr) => {{
            let take = pts[p[$k]] < th[i[$k]];
            out[p[$k]] = i[$k] as i64;
            p[$k] += take as usize;
            i[$k] += (!take) as usize;
        }};
    }
    while p[0] < end[0] && p[1] < end[1] && p[2] < end[2] && p[3] < end[3] {
        step!(0);
        step!(1);
        step!(2);
        step!(3);
    }
    for k in 0..4 {
        while p[k] < end[k] {
            step!(k);
        }
    }
}
