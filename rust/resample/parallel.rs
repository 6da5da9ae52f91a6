//! The rayon paths of the systematic and residual walks (inputs of at
//! least `PAR_MIN` weights): blocks split across threads, bit-identical
//! output whatever the thread count.

use super::*;

/// [`systematic_walk`] on rayon's pool, bit-identical to the sequential
/// walk. Particles are cut into tasks of `t` blocks (block boundaries as
/// in the sequential walk, so every block sums exactly the same numbers).
///
/// 1. The [`quarter_sums`] of every full block, `qs`, computed in
///    parallel by [`weights`] as it stores each block.
/// 2. On one thread, each task's starting cumulative weight, by
///    folding the quarter sums in block order with [`block_end`]: the
///    very additions that give the sequential walk's block ends (four per
///    block). A task's output starts at the number of points below its
///    starting weight, `systematic_count(start)` (clamped to `n`): the
///    sequential walk's position there, since its counts are clamped and
///    non-decreasing and a block's last cumulative weight is its end.
///    `out` is split into those disjoint ranges.
/// 3. In parallel, each task runs [`systematic_blocks`] on its range, with
///    counts offset by the range's start. A task that is not the last
///    ends exactly at the next one's start (its last count is that
///    start), and every write, the four-copy stores included, stays
///    inside its range; the last task fills what is left of `out` with
///    `last`, as the sequential walk does.
#[allow(clippy::too_many_arguments)]
pub(super) fn systematic_walk_par(isa: Isa, walked: &[f64], qs: &[[f64; 4]], last: usize, out: &mut [i64], scale: f64, u: f64, t: usize) {
    let span = t * BLOCK;
    let full = walked.len() / BLOCK;
    let n = out.len();
    let tasks = walked.len().div_ceil(span);
    let mut jobs = Vec::with_capacity(tasks);
    let mut rest: &mut [i64] = out;
    let (mut base, mut p0) = (0.0f64, 0usize);
    for task in 0..tasks {
        let start = base;
        // Only the last task can hold a partial block; its end is never
        // needed.
        for q in &qs[(task * t).min(full)..((task + 1) * t).min(full)] {
            base = block_end(base, q);
        }
        let p1 = if task + 1 == tasks {
            n
        } else {
            (systematic_count(base, scale, u).max(0) as usize).min(n)
        };
        let (mine, tail) = std::mem::take(&mut rest).split_at_mut(p1 - p0);
        rest = tail;
        jobs.push((task, start, p0, mine));
        p0 = p1;
    }
    jobs.into_par_iter().with_max_len(1).for_each(|(task, start, p0, dst)| {
        if dst.is_empty() {
            return;
        }
        let lo = task * span;
        let hi = (lo + span).min(walked.len());
        let pos = systematic_blocks(isa, &walked[lo..hi], lo, start, scale, u, p0 as i32, dst);
        if task + 1 == tasks {
            dst[pos..].fill(last as i64);
        } else {
            debug_assert_eq!(pos, dst.len(), "task {task} ends before the next one starts");
        }
    });
}

/// [`residual_totals_blocked`] on rayon's pool, bit-identical: in parallel,
/// every full block's floor sum and remainder [`quarter_sums`]; then, on
/// one thread, the floor sums added up (integers: any order) and
/// the remainder sums folded in block order by [`block_end`], as in
/// [`systematic_walk_par`]; the last, partial block (if any) by the
/// sequential loop. Also pushes to `starts`, for each task of `t` blocks,
/// its starting cumulative remainder and the floors before it (what
/// [`residual_walk_par`] starts from).
pub(super) fn residual_totals_par(isa: Isa, w: &[f64], scale: f64, t: usize, starts: &mut Vec<(f64, i64)>) -> (usize, f64) {
    let span = t * BLOCK;
    let full = w.len() / BLOCK;
    let mut blocks = vec![(0i64, [0.0f64; 4]); full];
    w[..full * BLOCK]
        .par_chunks(span)
        .zip(blocks.par_chunks_mut(t))
        .with_max_len(1)
        .for_each(|(wc, bc)| {
            dispatch!(
                isa,
                fn generic(wc: &[f64], scale: f64, bc: &mut [(i64, [f64; 4])]) -> () {
                    let mut r = [0.0f64; BLOCK];
                    let mut fl = [0i32; BLOCK];
                    for (b, o) in wc.chunks_exact(BLOCK).zip(bc.iter_mut()) {
                        let f = residual_split_body(b, scale, &mut r, &mut fl);
                        *o = (f, quarter_sums(&r));
                    }
                }
            )
        });
    let (mut floors, mut base) = (0i64, 0.0f64);
    for task in 0..w.len().div_ceil(span) {
        starts.push((base, floors));
        for (f, q) in &blocks[(task * t).min(full)..((task + 1) * t).min(full)] {
            floors += f;
            base = block_end(base, q);
        }
    }
    let (floors, rem_sum) = residual_totals_from(isa, &w[full * BLOCK..], scale, floors, base);
    (floors.max(0) as usize, rem_sum)
}

/// [`residual_walk_blocked`] on rayon's pool, bit-identical. Unlike the
/// systematic walk, the walk's state at a particle is not a function of
/// its cumulative remainder alone: besides the position (the floors so
/// far, known from [`residual_totals_par`], plus the extras so far) it
/// carries `k`, the extras given so far, and the extra-copy rule only
/// *usually* keeps `k = min(K, draws)`, `K` the count of points below the
/// cumulative remainder. (It does whenever `K` never grows by two within
/// one particle, nor at a zero remainder, i.e. unless round-off puts two
/// points in one remainder interval; then `k` lags until the next
/// positive remainder catches it up.)
///
/// So each task of `t` blocks starts from that speculated state,
/// `k = min(K(start), draws)` and `pos = min(floors before + k, n)`,
/// writes its runs into the disjoint range of `out` between its
/// speculated start and the next task's, and returns its final `k`. Then,
/// in task order, each task's final `k` is checked against the next
/// task's speculated one. If all agree, every task started from the
/// sequential walk's state, so wrote exactly its runs (positions being
/// floors plus extras, a task that ends in the right state ends at the
/// next one's start). At the first disagreement, the walk is redone on
/// one thread from the start of that task (whose start state was
/// right) to the end. Either way, [`residual_repair`] finishes as in the
/// sequential walk. Once a task's verified start is `n`, the rest writes
/// nothing, whatever its `k`.
#[allow(clippy::too_many_arguments)]
pub(super) fn residual_walk_par(
    isa: Isa,
    w: &[f64],
    scale: f64,
    out: &mut [i64],
    draws: usize,
    factor: f64,
    u: f64,
    t: usize,
    starts: &[(f64, i64)],
) {
    let n = out.len();
    let span = t * BLOCK;
    // (start base, start k, start position) of each task.
    let spec: Vec<(f64, usize, usize)> = starts
        .iter()
        .map(|&(base, floors)| {
            let k = (residual_count(base, factor, u).max(0) as usize).min(draws);
            (base, k, (floors.max(0) as usize).saturating_add(k).min(n))
        })
        .collect();
    let tasks = spec.len();
    let mut jobs = Vec::with_capacity(tasks);
    let mut rest: &mut [i64] = out;
    for task in 0..tasks {
        let p1 = if task + 1 == tasks { n } else { spec[task + 1].2 };
        let (mine, tail) = std::mem::take(&mut rest).split_at_mut(p1 - spec[task].2);
        rest = tail;
        jobs.push((task, mine));
    }
    let ends: Vec<(usize, usize)> = jobs
        .into_par_iter()
        .with_max_len(1)
        .map(|(task, dst)| {
            let (base, k, p0) = spec[task];
            if p0 == n {
                return (0, 0);
            }
            let lo = task * span;
            let hi = (lo + span).min(w.len());
            let (_, pos, k) = residual_blocks(isa, &w[lo..hi], lo, scale, factor, u, base, dst, 0, k, draws);
            (pos, k)
        })
        .collect();
    let mut pos = n;
    for task in 0..tasks {
        let (base, k, p0) = spec[task];
        if p0 == n {
            break;
        }
        if task + 1 == tasks {
            pos = p0 + ends[task].0;
        } else if ends[task].1 != spec[task + 1].1 {
            let lo = task * span;
            pos = residual_blocks(isa, &w[lo..], lo, scale, factor, u, base, out, p0, k, draws).1;
        } else {
            continue;
        }
        break;
    }
    if pos < n {
        residual_repair(w, scale, out, pos);
    }
}
