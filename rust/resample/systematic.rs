//! Systematic resampling: the blocked walk over quarter sums and the
//! AVX-512 run fill.

use super::*;

pub(super) fn systematic_kernel(isa: Isa, ws: &Weights, out: &mut [i64], src: Uniforms<'_>, par: Par) -> Result<(), ResampleError> {
    let u = match src {
        Uniforms::Rng(rng) => next_uniform(rng),
        Uniforms::Given(g) => {
            exact_count(Scheme::Systematic, g, 1)?;
            g[0]
        }
    };
    systematic_walk(isa, ws, out, u, par);
    Ok(())
}

/// Largest `n` for the blocked systematic walk, which counts in `i32`
/// (packed double-to-int32 conversion exists on SSE2/AVX2; to-int64 does
/// not). The margin keeps `c * n / S`, which can exceed `n` by round-off,
/// far from `i32::MAX`.
pub(super) const BLOCKED_MAX_N: usize = 1 << 30;

/// Cumulative weights of one block, in place: `c[j] = base + w[0] + ... + w[j]`
/// (up to rounding) where `w` is what `c` held on entry. Returns the
/// block's end (its last sum).
///
/// A single running sum is latency-bound (one dependent add per 3-4
/// cycles), so a full block is summed as four interleaved chains over its
/// quarters, recombined as `start_s + local` where `start_{s+1}` is
/// computed by the very addition that gives the last sum of quarter `s`.
/// So the sums are deterministic, non-decreasing, unchanged by zero
/// weights, and the next block starts exactly where this one ended.
///
/// The chains read four places 512 bytes apart at once; callers whose
/// weights are not already in L1 copy the block into `c` first (see
/// [`systematic_counts_body`]).
#[inline(always)]
pub(super) fn block_prefix(c: &mut [f64], base: f64) -> f64 {
    const Q: usize = BLOCK / 4;
    if c.len() == BLOCK {
        let mut acc = [0.0f64; 4];
        for j in 0..Q {
            for s in 0..4 {
                acc[s] += c[s * Q + j];
                c[s * Q + j] = acc[s];
            }
        }
        let mut start = base;
        for (cs, a) in c.chunks_mut(Q).zip(acc) {
            for v in cs.iter_mut() {
                *v += start;
            }
            start += a;
        }
        start
    } else {
        let mut acc = 0.0f64;
        for v in c.iter_mut() {
            acc += *v;
            *v = acc;
        }
        for v in c.iter_mut() {
            *v += base;
        }
        base + acc
    }
}

/// The four quarter sums `acc` of a full block, accumulated exactly as
/// [`block_prefix`] does, so that [`block_end`] of them is that block's
/// end, bit for bit, without the cumulative sums themselves.
#[inline(always)]
pub(super) fn quarter_sums(w: &[f64]) -> [f64; 4] {
    const Q: usize = BLOCK / 4;
    let w = &w[..BLOCK];
    let mut acc = [0.0f64; 4];
    for j in 0..Q {
        for s in 0..4 {
            acc[s] += w[s * Q + j];
        }
    }
    acc
}

/// The end of a full block that starts at `base` and has quarter sums `q`
/// (the `start += a` additions of [`block_prefix`], in its order).
#[inline(always)]
pub(super) fn block_end(base: f64, q: &[f64; 4]) -> f64 {
    let mut start = base;
    for &a in q {
        start += a;
    }
    start
}

/// Systematic points below the cumulative weight `c` ([`strata_below`]
/// with one shared `u`, points scaled by `scale = n / S`), as the blocked
/// walk computes it: in `i32`, with `c * scale` clamped into
/// `[0, 2 BLOCKED_MAX_N]`. Non-decreasing in `c`.
#[inline(always)]
pub(super) fn systematic_count(c: f64, scale: f64, u: f64) -> i32 {
    const LIMIT: f64 = (2 * BLOCKED_MAX_N) as f64;
    let y = c * scale;
    // Clamp with compare-selects (single max/min instructions, and
    // NaN-proof), so the conversion below is always in range.
    let y = if y > 0.0 { y } else { 0.0 };
    let y = if y < LIMIT { y } else { LIMIT };
    // SAFETY: 0 <= y <= LIMIT < 2^31, not NaN. (`y as i32` would add a
    // saturation check that defeats vectorisation.)
    let f = unsafe { y.to_int_unchecked::<i32>() }; // floor, y >= 0
    f + (u < y - f as f64) as i32
}

/// Systematic points below each cumulative weight of a block, minus `off`
/// (the output position where the caller's slice of `out` starts),
/// vectorised: the block's cumulative sums, then `k[j]` for all of them.
/// Returns the block's end.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn systematic_counts_body(w: &[f64], base: f64, scale: f64, u: f64, off: i32, c: &mut [f64], k: &mut [i32]) -> f64 {
    let c = &mut c[..w.len()];
    // Copy first, then sum in place: at 2^20 particles, where the weights
    // come from L3, running the four chains straight off `w` measured
    // ~1.5 ns per particle against ~0.8 for copy-then-sum (the contiguous
    // copy streams; the four interleaved strided reads do not). Same
    // additions either way.
    c.copy_from_slice(w);
    let end = block_prefix(c, base);
    for (kj, &cj) in k.iter_mut().zip(c.iter()) {
        *kj = systematic_count(cj, scale, u) - off;
    }
    end
}

/// [`walk`] specialised to systematic points, in two steps per block: the
/// counts `K_i` for the whole block (vectorised, see
/// [`systematic_counts_body`]), then the runs `out[K_{i-1}..K_i] = i`. The
/// fused scalar walk spends ~30 instructions per particle; this ~15.
/// With `par`, see [`systematic_walk_par`].
pub(super) fn systematic_walk(isa: Isa, ws: &Weights, out: &mut [i64], u: f64, par: Par) {
    let n = out.len();
    let scale = n as f64 / ws.sum;
    if n > BLOCKED_MAX_N {
        walk(ws, out, |c| strata_below(c * scale, |_| u));
        return;
    }
    let walked = &ws.w[..ws.last];
    if let Some(t) = par {
        if walked.len() > t * BLOCK {
            systematic_walk_par(isa, walked, &ws.quarters, ws.last, out, scale, u, t);
            return;
        }
    }
    let pos = systematic_blocks(isa, walked, 0, 0.0, scale, u, 0, out);
    out[pos..].fill(ws.last as i64);
}

/// The blocked systematic walk over `w` (the weights of particles
/// `first..first + w.len()`, starting at cumulative weight `base`),
/// writing into `out`, which starts at output position `off`: the runs of
/// every particle until `out` is full. Returns the position reached in
/// `out`.
#[allow(clippy::too_many_arguments)]
pub(super) fn systematic_blocks(isa: Isa, w: &[f64], first: usize, mut base: f64, scale: f64, u: f64, off: i32, out: &mut [i64]) -> usize {
    let n = out.len();
    let mut k = [0i32; BLOCK];
    let mut c = [0.0f64; BLOCK];
    let mut pos = 0usize;
    for (b, chunk) in w.chunks(BLOCK).enumerate() {
        prefetch_block(w, b + PREFETCH_BLOCKS);
        let k = &mut k[..chunk.len()];
        let c = &mut c[..];
        let first = (first + b * BLOCK) as i64;
        // One dispatched call per block: counts, then runs (so the runs'
        // four-copy stores are single vector stores under AVX2). The
        // AVX-512 build writes the runs with `fill_block_avx512`.
        let (b_end, p_end) = dispatch!(
            isa,
            fn generic(
                isa: Isa,
                chunk: &[f64],
                base: f64,
                scale: f64,
                u: f64,
                off: i32,
                c: &mut [f64],
                k: &mut [i32],
                out: &mut [i64],
                pos: usize,
                first: i64,
            ) -> (f64, usize) {
                let e = systematic_counts_body(chunk, base, scale, u, off, c, k);
                #[cfg(target_arch = "x86_64")]
                if isa.avx512 {
                    // SAFETY: `dispatch!` runs the AVX-512 build exactly
                    // when `isa.avx512`, i.e. when the CPU has these
                    // features; the other builds never take this branch.
                    #[allow(unused_unsafe)] // needed in the builds without AVX-512
                    let end = unsafe { fill_block_avx512(out, k, pos, first) };
                    return (e, end);
                }
                (e, fill_block(out, k, pos, first))
            }
        );
        base = b_end;
        pos = p_end;
        if pos == n {
            break;
        }
    }
    pos
}

/// How many blocks ahead [`systematic_blocks`] prefetches the weights.
pub(super) const PREFETCH_BLOCKS: usize = 2;

/// Ask for block `b` of `w` (its 32 cache lines) to be brought into L1, if
/// it exists. At 2^20 particles the weights come from L3 or memory, and the
/// walk does enough work per block that the hardware prefetchers fall
/// behind: prefetching two blocks ahead measured the counts alone at ~1.45
/// against ~1.9 ns per particle. (A prefetch is only a hint: it never
/// faults and changes no result.)
#[inline(always)]
pub(super) fn prefetch_block(w: &[f64], b: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(block) = w.get(b * BLOCK..) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for line in block.iter().take(BLOCK).step_by(8) {
            // SAFETY: prefetching is a hint with no architectural effect;
            // `line` is a valid reference anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>((line as *const f64).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (w, b);
}

/// [`fill_block`] with AVX-512, eight particles at a time.
///
/// The scalar writer costs ~1 ns per particle even with `out` in L1 (a
/// load, a compare, a branch and an unaligned 32-byte store each), more
/// than computing the counts. Here a group of eight particles whose runs
/// end within 16 slots of `pos` (the usual case when `n ~ N`: counts
/// average one) is written with two 64-byte stores: slot `pos + o` belongs
/// to particle `first + j0 + L_o`, `L_o = #{j in group : k[j] <= pos + o}`
/// (particle `j` owns `[k[j-1], k[j])`), computed for the 16 slots at once
/// by eight broadcast-compare-adds. Slots past the group's last run get
/// `first + j0 + 8`, junk that the following runs overwrite, exactly like
/// the four-copy stores of the scalar writer: runs tile `out` from left to
/// right, so a slot's last writer is its owner. Groups with a longer
/// total (a long run) and the block's last `len % 8` particles take the
/// scalar path. Near the end of `out` (fewer than 16 slots past the
/// block's end) the whole block goes to [`fill_block`], whose careful path
/// clamps. Every vector store is also checked to lie inside `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512dq,avx512vl,avx512bw")]
pub(super) fn fill_block_avx512(out: &mut [i64], k: &[i32], mut pos: usize, first: i64) -> usize {
    use std::arch::x86_64::*;
    const SLOTS: usize = 16;
    let n = out.len();
    let block_end = k.last().map_or(pos, |&e| e.max(0) as usize);
    if block_end + SLOTS > n {
        return fill_block(out, k, pos, first);
    }
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let one = _mm512_set1_epi32(1);
    let mut groups = k.chunks_exact(8);
    let mut j0 = 0usize;
    for kg in &mut groups {
        let end = kg[7] as usize;
        if end.wrapping_sub(pos) <= SLOTS && pos + SLOTS <= n {
            // pos < 2^30 (BLOCKED_MAX_N), so it fits the i32 lanes.
            let slot = _mm512_add_epi32(iota, _mm512_set1_epi32(pos as i32));
            // Two independent sums, so the eight compare-adds are not
            // one dependent chain.
            let (mut la, mut lb) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            for kp in kg.chunks_exact(2) {
                let a = _mm512_cmple_epi32_mask(_mm512_set1_epi32(kp[0]), slot);
                let b = _mm512_cmple_epi32_mask(_mm512_set1_epi32(kp[1]), slot);
                la = _mm512_mask_add_epi32(la, a, la, one);
                lb = _mm512_mask_add_epi32(lb, b, lb, one);
            }
            let l = _mm512_add_epi32(la, lb);
            let v = _mm512_set1_epi64(first + j0 as i64);
            let lo = _mm512_add_epi64(v, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(l)));
            let hi = _mm512_add_epi64(v, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(l)));
            let dst = &mut out[pos..pos + SLOTS];
            // SAFETY: `dst` is 16 in-bounds i64 slots; unaligned stores.
            unsafe {
                _mm512_storeu_si512(dst.as_mut_ptr().cast(), lo);
                _mm512_storeu_si512(dst.as_mut_ptr().add(8).cast(), hi);
            }
            pos = end;
        } else {
            pos = fill_runs(out, kg, pos, first + j0 as i64);
        }
        j0 += 8;
    }
    fill_runs(out, groups.remainder(), pos, first + j0 as i64)
}

/// The runs of particles `first + j` ending at `k[j]`, from `pos`, by the
/// scalar fast path of [`fill_block`] (the caller guarantees four slots of
/// room past every run end, so the four-copy stores stay inside `out`).
#[inline(always)]
pub(super) fn fill_runs(out: &mut [i64], k: &[i32], mut pos: usize, first: i64) -> usize {
    for (j, &kj) in k.iter().enumerate() {
        let end = kj as usize;
        let v = first + j as i64;
        if end - pos <= 4 {
            out[pos..pos + 4].copy_from_slice(&[v; 4]);
        } else {
            out[pos..end].fill(v);
        }
        pos = end;
    }
    pos
}

/// Write the runs `out[k[j-1]..k[j]] = first + j` of one block (with
/// `k[-1] = pos`), returning the new `pos`.
///
/// The counts are non-decreasing by construction (see
/// [`block_prefix`] and [`strata_below`]), so each run starts where the
/// previous one ended and there is no serial dependency between particles
/// besides that register move. When the whole block ends at least four
/// slots before the end of `out`, every particle stores four copies
/// unconditionally (see [`fill_run`]) with no other check; the last block
/// takes the careful path, which also clamps. Were the counts ever not
/// monotone, the slice indexing below would panic rather than write out
/// of bounds.
#[inline(always)]
pub(super) fn fill_block(out: &mut [i64], k: &[i32], mut pos: usize, first: i64) -> usize {
    let n = out.len();
    let block_end = k.last().map_or(pos, |&e| e.max(0) as usize);
    if block_end + 4 <= n {
        pos = fill_runs(out, k, pos, first);
    } else {
        for (j, &kj) in k.iter().enumerate() {
            let end = (kj.max(0) as usize).max(pos).min(n);
            fill_run(out, pos, end, first + j as i64);
            pos = end;
        }
    }
    pos
}
