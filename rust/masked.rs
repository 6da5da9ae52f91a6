//! Masked next-token distributions: for each row of a batch of log-probs
//! and its packed token bitmask, the log of the allowed probability mass,
//! and draws from the allowed tokens renormalised.
//!
//! This is the per-step numerical core of SMC decoding (the incremental log
//! weight of a particle is its row's `log Z`, and its next token is a draw
//! from that row), and it is two passes over `rows x vocab` numbers per step:
//! on a 128k-token vocabulary it is most of what SMC adds to the model's
//! forward pass on a CPU. So it is written like the resampling kernels:
//! blocked, vectorised (the block loops are compiled for the baseline,
//! AVX2 + FMA and AVX-512 targets and picked at run time, with identical
//! results on all three), rows in parallel on rayon's pool, and no
//! allocation proportional to the vocabulary.
//!
//! # Layout and semantics
//!
//! `logits` holds `rows` rows of `vocab` numbers (f32 or f64, row-major),
//! `mask` holds `rows` rows of `words` `u32` words: token `t`
//! is allowed iff `t < vocab`, `t / 32 < words` and bit `t % 32` of word
//! `t / 32` is set (so bits beyond the logits, and logits beyond the mask,
//! are never allowed). Per row, with `M` the largest allowed log-prob:
//!
//! * `log_z = M + ln(sum over allowed t of exp(logp_t - M))`, or `-inf`
//!   when no allowed token has a finite log-prob (a dead row);
//! * the row is cut into blocks of [`BLOCK_TOKENS`] tokens, and
//!   `cum[b]` is the cumulative sum, in block order, of the blocks' allowed
//!   weights `exp(logp_t - M)`;
//! * a draw with uniform `u` in `[0, 1)` picks the first block whose `cum`
//!   exceeds `u * cum[last]`, then the first token of that block whose
//!   running sum does. Tokens of weight zero (disallowed, or `-inf`) own
//!   empty intervals and are never drawn; if round-off leaves the target at
//!   or past the end, the last token of positive weight is drawn.
//!
//! Shifting by the *allowed* maximum (not the row's) means the top allowed
//! token has weight exactly 1, so the sum never underflows, whatever mass
//! the mask removes. NaN or `+inf` in an allowed position is an error
//! ([`MaskedError::NotFinite`]); in a disallowed position it is ignored.

use rayon::prelude::*;

use crate::fastmath::{exp_nonpos, exp_nonpos_f32};
use crate::resample::{dispatch, Isa};

/// Tokens per block (32 mask words): a draw recomputes at most this many
/// weights, and a row of a 128k vocabulary has ~125 blocks to search.
pub const BLOCK_TOKENS: usize = 1024;

/// Fewest `rows * vocab` entries for which rows are processed on rayon's
/// pool: below it (a handful of rows of a small vocabulary) the hand-off
/// costs more than the pass.
const PAR_MIN: usize = 1 << 17;

/// Why a batch cannot be processed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MaskedError {
    /// A buffer's length does not match `rows`, `vocab` and `words`.
    #[error("{what} has {got} elements, expected {want}")]
    Shape { what: &'static str, got: usize, want: usize },
    /// An allowed token's log-prob is NaN or `+inf`.
    #[error("log-prob of allowed token {token} in row {row} is {value} (must be finite or -inf)")]
    NotFinite { row: usize, token: usize, value: f64 },
    /// A draw asked for a row that does not exist.
    #[error("row {row} out of range for {rows} rows")]
    NoSuchRow { row: usize, rows: usize },
    /// A draw from a row with no allowed token of positive probability.
    #[error("row {row} has no allowed token with positive probability")]
    DeadRow { row: usize },
    /// A uniform outside `[0, 1)`.
    #[error("uniform {value} is outside [0, 1)")]
    BadUniform { value: f64 },
}

/// Log-probs of a batch, in the model's float type (converted to f64 per
/// element inside the loops, never copied).
#[derive(Clone, Copy, Debug)]
pub enum Logits<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl Logits<'_> {
    fn len(&self) -> usize {
        match self {
            Logits::F32(x) => x.len(),
            Logits::F64(x) => x.len(),
        }
    }
}

/// A batch's shape: `rows` rows of `vocab` log-probs and of `words` mask
/// words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub rows: usize,
    pub vocab: usize,
    pub words: usize,
}

impl Shape {
    /// Blocks per row.
    pub fn blocks(&self) -> usize {
        self.vocab.div_ceil(BLOCK_TOKENS)
    }

    fn check(&self, logits: Logits<'_>, mask: &[u32]) -> Result<(), MaskedError> {
        lengths(&[
            ("logits", logits.len(), self.rows.saturating_mul(self.vocab)),
            ("mask", mask.len(), self.rows.saturating_mul(self.words)),
        ])
    }

    /// [`Shape::check`], and the per-row outputs of [`masked_rows`] that a
    /// draw reads.
    fn check_rows(&self, logits: Logits<'_>, mask: &[u32], max: &[f64], cum: &[f64]) -> Result<(), MaskedError> {
        self.check(logits, mask)?;
        lengths(&[("max", max.len(), self.rows), ("cum", cum.len(), self.rows * self.blocks())])
    }
}

/// `Err(Shape)` for the first `(what, got, want)` whose lengths differ.
fn lengths(checks: &[(&'static str, usize, usize)]) -> Result<(), MaskedError> {
    match checks.iter().find(|&&(_, got, want)| got != want) {
        Some(&(what, got, want)) => Err(MaskedError::Shape { what, got, want }),
        None => Ok(()),
    }
}

/// The element types of the log-probs: the loops are written once over
/// this, and run in the input's own precision (f32 lanes for f32 input)
/// up to the sums, which are f64 for both.
trait Value: Copy + Send + Sync + PartialOrd {
    /// Padding for a row's last partial group (its mask bits are off).
    const ZERO: Self;
    const NEG_INF: Self;
    fn f64(self) -> f64;
    /// `max` back from [`Value::f64`] (exact: it is one of the row's values).
    fn from_f64(max: f64) -> Self;
    /// `self` if `keep`, else `-inf`, selected on the bits: written as a
    /// branch, the compiler leaves the maximum loop scalar.
    fn or_neg_inf(self, keep: bool) -> Self;
    /// NaN or `+inf` (`!(v < inf)`: one compare).
    fn not_below_inf(self) -> bool;
    /// `exp(self - max)` if `on`, else 0; the select comes first, since a
    /// disallowed entry may hold anything, NaN included. In the input's
    /// precision: f64 log-probs get the f64 `exp`, f32 log-probs the f32
    /// one (~1e-7 relative; the inputs themselves are no more accurate),
    /// which is several times cheaper and so most of the pass for f32.
    fn weight(self, on: bool, max: Self) -> Self;
}

macro_rules! impl_value {
    ($t:ty, $bits:ty, $exp:path) => {
        impl Value for $t {
            const ZERO: $t = 0.0;
            const NEG_INF: $t = <$t>::NEG_INFINITY;
            #[inline(always)]
            fn f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn from_f64(max: f64) -> $t {
                max as $t
            }
            #[inline(always)]
            fn or_neg_inf(self, keep: bool) -> $t {
                let k = (keep as $bits).wrapping_neg();
                <$t>::from_bits((self.to_bits() & k) | (<$t>::NEG_INFINITY.to_bits() & !k))
            }
            #[inline(always)]
            #[allow(clippy::neg_cmp_op_on_partial_ord)]
            fn not_below_inf(self) -> bool {
                !(self < <$t>::INFINITY)
            }
            #[inline(always)]
            fn weight(self, on: bool, max: $t) -> $t {
                $exp(if on { self - max } else { <$t>::NEG_INFINITY })
            }
        }
    };
}
impl_value!(f32, u32, exp_nonpos_f32);
impl_value!(f64, u64, exp_nonpos);

/// Word `w` of a row's mask (tokens `32 w .. 32 w + 32`), 0 past its end.
#[inline(always)]
fn word_at(mask: &[u32], w: usize) -> u32 {
    mask.get(w).copied().unwrap_or(0)
}

/// The 8-bit mask of tokens `8 g .. 8 g + 8` of a row.
#[inline(always)]
fn byte_at(mask: &[u32], g: usize) -> u32 {
    (word_at(mask, g / 4) >> ((g % 4) * 8)) & 0xff
}

/// The 16-bit mask of tokens `16 g .. 16 g + 16` of a row.
#[inline(always)]
fn half_at(mask: &[u32], g: usize) -> u32 {
    (word_at(mask, g / 2) >> ((g % 2) * 16)) & 0xffff
}

/// The row's last `len % 16` log-probs, padded to sixteen, and their mask
/// bits with those of the padding (and of tokens past the row: the bitmask
/// may be wider than the logits) cleared.
#[inline(always)]
fn padded_tail<T: Value>(x: &[T], mask: &[u32]) -> ([T; 16], u32) {
    let full = x.len() / 16 * 16;
    let mut pad = [T::ZERO; 16];
    pad[..x.len() - full].copy_from_slice(&x[full..]);
    let rem = x.len() - full;
    (pad, half_at(mask, full / 16) & ((1u32 << rem) - 1))
}

/// `exp(x - max)` of one entry if its bit is on, else 0, as f64 (for the
/// draws, which recompute one block).
#[inline(always)]
fn weight_of<T: Value>(v: T, on: bool, max: f64) -> f64 {
    v.weight(on, T::from_f64(max)).f64()
}

/// The first allowed token whose log-prob is NaN or `+inf` (the cold path
/// of the row passes, taken only after they saw one).
fn first_bad<T: Value>(x: &[T], mask: &[u32]) -> usize {
    (0..x.len())
        .find(|&t| (word_at(mask, t / 32) >> (t % 32)) & 1 != 0 && x[t].not_below_inf())
        .unwrap_or(0)
}

/// The eight lanes' sums combined in a fixed tree.
#[inline(always)]
fn sum8(acc: &[f64; 8]) -> f64 {
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// Add the weights of one group of sixteen tokens (mask bits `bits`) to
/// the eight accumulators: tokens `0..8`, then `8..16`, so accumulator `l`
/// takes every eighth token in order. A group with no bit on adds nothing
/// (it would add exact zeros).
#[inline(always)]
fn add_group<T: Value>(acc: &mut [f64; 8], c: &[T], bits: u32, max: T) {
    if bits == 0 {
        return;
    }
    let c = &c[..16];
    let mut w = [T::ZERO; 16];
    for l in 0..16 {
        w[l] = c[l].weight((bits >> l) & 1 != 0, max);
    }
    for l in 0..8 {
        acc[l] += w[l].f64();
    }
    for l in 0..8 {
        acc[l] += w[l + 8].f64();
    }
}

/// One row: its allowed maximum `M` and, into `cum`, the cumulative block
/// sums of `exp(logp - M)` over the allowed entries. `Err(token)` names an
/// allowed entry that is NaN or `+inf`. A row with no finite allowed entry
/// gets `M = -inf` and all-zero sums.
///
/// Both passes walk the row sixteen tokens (two mask bytes) at a time in
/// sixteen fixed lanes of the input's type, which the compiler turns into
/// vector steps (the `exp` included): one 512-bit vector per step for f32.
/// The second pass skips groups whose mask bits are all off and reads the
/// row from L2 (a 128k-token f32 row is 512 KiB); it sums the weights in
/// f64, into eight accumulators (tokens `16g..16g+8`, then
/// `16g+8..16g+16`: each accumulator takes every eighth token, in order).
/// Measured on one Zen 4 core, 16 rows of a 128k vocabulary, ns per token,
/// against the earlier eight-token steps (f64 lanes for both types, every
/// f32 converted before the maximum), with half / 5% / 1% of the tokens
/// allowed: f32 on AVX-512 0.69-1.22 / 0.77-1.08 / 0.51-0.80 ->
/// 0.48-0.55 / 0.39-0.48 / 0.20-0.37, on AVX2 0.92-1.47 -> 0.67-0.75 with
/// half allowed; f64 on AVX-512 1.37 / 1.11 / 0.80 -> 1.17 / 0.79 / 0.47.
///
/// A macro rather than an `#[inline(always)]` function: the same loops,
/// inlined from a function into the ISA-specific builds of `dispatch!`,
/// measured 6-7 ns per token instead of 0.8 (left scalar: the vectoriser
/// did not take them), while written in the dispatched body they vectorise.
macro_rules! row_body {
    ($x:expr, $mask:expr, $cum:expr, $t:ty) => {{
        let (x, mask, cum): (&[$t], &[u32], &mut [f64]) = ($x, $mask, $cum);
        let per_block = BLOCK_TOKENS / 16;
        // Pass 1: the allowed maximum, and NaN / +inf where allowed.
        let mut m = [<$t as Value>::NEG_INF; 16];
        let mut bad = [0u32; 16];
        let (tail, tail_bits) = padded_tail(x, mask);
        let mut groups = x.chunks_exact(16);
        for (g, c) in (&mut groups).enumerate() {
            let bits = half_at(mask, g);
            for l in 0..16 {
                let keep = (bits >> l) & 1 != 0;
                bad[l] |= (keep & c[l].not_below_inf()) as u32;
                let v = c[l].or_neg_inf(keep);
                m[l] = if v > m[l] { v } else { m[l] };
            }
        }
        // The last, partial group, padded, through the same lanes (a loop
        // over the remainder's length would index the lanes dynamically
        // and push them out of registers).
        for l in 0..16 {
            let keep = (tail_bits >> l) & 1 != 0;
            bad[l] |= (keep & tail[l].not_below_inf()) as u32;
            let v = tail[l].or_neg_inf(keep);
            m[l] = if v > m[l] { v } else { m[l] };
        }
        let bad = bad.iter().fold(0, |a, &b| a | b);
        let mut mx = <$t as Value>::NEG_INF;
        for v in m {
            mx = if v > mx { v } else { mx };
        }
        // `+ 0.0` turns a maximum of -0 into +0, so that which of two
        // tied zeros the lanes kept cannot show.
        let max = mx.f64() + 0.0;
        let r: Result<f64, usize> = if bad != 0 {
            Err(first_bad(x, mask))
        } else if max == f64::NEG_INFINITY {
            cum.fill(0.0);
            Ok(max)
        } else {
            // Pass 2: per block, the allowed weights' sum, accumulated
            // into the running total.
            let mut run = 0.0;
            for (b, blk) in x.chunks(BLOCK_TOKENS).enumerate() {
                let mut acc = [0.0f64; 8];
                let g0 = b * per_block;
                let mut groups = blk.chunks_exact(16);
                for (g, c) in (&mut groups).enumerate() {
                    add_group(&mut acc, c, half_at(mask, g0 + g), mx);
                }
                if !groups.remainder().is_empty() {
                    // Only the row's last block can end in a partial group.
                    add_group(&mut acc, &tail, tail_bits, mx);
                }
                run += sum8(&acc);
                cum[b] = run;
            }
            Ok(max)
        };
        r
    }};
}

/// [`row_body!`] for row `r`, built for `isa`.
fn one_row(isa: Isa, logits: Logits<'_>, shape: Shape, r: usize, mask: &[u32], cum: &mut [f64]) -> Result<f64, MaskedError> {
    let lo = r * shape.vocab;
    let hi = lo + shape.vocab;
    let res = match logits {
        Logits::F32(v) => {
            let x = &v[lo..hi];
            dispatch!(
                isa,
                fn generic(x: &[f32], mask: &[u32], cum: &mut [f64]) -> Result<f64, usize> {
                    row_body!(x, mask, cum, f32)
                }
            )
        }
        Logits::F64(v) => {
            let x = &v[lo..hi];
            dispatch!(
                isa,
                fn generic(x: &[f64], mask: &[u32], cum: &mut [f64]) -> Result<f64, usize> {
                    row_body!(x, mask, cum, f64)
                }
            )
        }
    };
    res.map_err(|token| MaskedError::NotFinite {
        row: r,
        token,
        value: value_at(logits, lo + token),
    })
}

fn value_at(logits: Logits<'_>, i: usize) -> f64 {
    match logits {
        Logits::F32(v) => v[i] as f64,
        Logits::F64(v) => v[i],
    }
}

/// For every row `r`: `max[r]` (its allowed maximum `M`), `cum[r * nb..][..nb]`
/// (its cumulative block sums, `nb = shape.blocks()`) and
/// `log_z[r] = M + ln(cum[last])` (`-inf` for a dead row). Rows run in
/// parallel on rayon's current pool for large batches; the results do not
/// depend on it. On error the outputs are partly written.
pub fn masked_rows(logits: Logits<'_>, mask: &[u32], shape: Shape, log_z: &mut [f64], max: &mut [f64], cum: &mut [f64]) -> Result<(), MaskedError> {
    masked_rows_with(Isa::detect(), logits, mask, shape, log_z, max, cum)
}

/// [`masked_rows`] built for `isa` (the tests run every ISA).
fn masked_rows_with(
    isa: Isa,
    logits: Logits<'_>,
    mask: &[u32],
    shape: Shape,
    log_z: &mut [f64],
    max: &mut [f64],
    cum: &mut [f64],
) -> Result<(), MaskedError> {
    shape.check_rows(logits, mask, max, cum)?;
    lengths(&[("log_z", log_z.len(), shape.rows)])?;
    let nb = shape.blocks();
    if nb == 0 {
        // An empty vocabulary: nothing is allowed anywhere.
        log_z.fill(f64::NEG_INFINITY);
        max.fill(f64::NEG_INFINITY);
        return Ok(());
    }
    let work = |(r, ((lz, m), c)): (usize, ((&mut f64, &mut f64), &mut [f64]))| -> Result<(), MaskedError> {
        let row_mask = &mask[r * shape.words..(r + 1) * shape.words];
        let mx = one_row(isa, logits, shape, r, row_mask, c)?;
        *m = mx;
        *lz = if mx == f64::NEG_INFINITY { mx } else { mx + c[nb - 1].ln() };
        Ok(())
    };
    if shape.rows > 1 && shape.rows * shape.vocab >= PAR_MIN && rayon::current_num_threads() > 1 {
        log_z
            .par_iter_mut()
            .zip(max.par_iter_mut())
            .zip(cum.par_chunks_mut(nb))
            .enumerate()
            .with_max_len(1)
            .try_for_each(work)
    } else {
        log_z
            .iter_mut()
            .zip(max.iter_mut())
            .zip(cum.chunks_mut(nb))
            .enumerate()
            .try_for_each(work)
    }
}

/// One token from row `row`'s allowed tokens, renormalised, by inverse CDF
/// at `u` (see the module docs), given that row's `max` and cumulative
/// block sums `cum` from [`masked_rows`].
pub fn draw(logits: Logits<'_>, mask: &[u32], shape: Shape, max: &[f64], cum: &[f64], row: usize, u: f64) -> Result<usize, MaskedError> {
    draw_with(Isa::detect(), logits, mask, shape, max, cum, row, u)
}

#[allow(clippy::too_many_arguments)]
fn draw_with(isa: Isa, logits: Logits<'_>, mask: &[u32], shape: Shape, max: &[f64], cum: &[f64], row: usize, u: f64) -> Result<usize, MaskedError> {
    shape.check_rows(logits, mask, max, cum)?;
    draw_checked(isa, logits, mask, shape, max, cum, row, u)
}

/// [`draw`] once the buffers' lengths are known to match `shape`.
#[allow(clippy::too_many_arguments)]
fn draw_checked(
    isa: Isa,
    logits: Logits<'_>,
    mask: &[u32],
    shape: Shape,
    max: &[f64],
    cum: &[f64],
    row: usize,
    u: f64,
) -> Result<usize, MaskedError> {
    let nb = shape.blocks();
    if row >= shape.rows {
        return Err(MaskedError::NoSuchRow { row, rows: shape.rows });
    }
    if !(0.0..1.0).contains(&u) {
        return Err(MaskedError::BadUniform { value: u });
    }
    let cum = &cum[row * nb..(row + 1) * nb];
    let m = max[row];
    let total = cum.last().copied().unwrap_or(0.0);
    if total <= 0.0 || m == f64::NEG_INFINITY {
        return Err(MaskedError::DeadRow { row });
    }
    let target = u * total;
    let mask = &mask[row * shape.words..(row + 1) * shape.words];
    let lo_idx = row * shape.vocab;
    // The first block whose cumulative sum exceeds the target; round-off
    // can leave none, and then the last token of positive weight is drawn.
    let b = cum.partition_point(|&c| c <= target);
    let mut w = [0.0f64; BLOCK_TOKENS];
    if b < nb {
        let start = b * BLOCK_TOKENS;
        let end = (start + BLOCK_TOKENS).min(shape.vocab);
        let w = &mut w[..end - start];
        block_weights(isa, logits, lo_idx + start, &mask[(start / 32).min(mask.len())..], m, w);
        // Scan the block's groups of eight by their sums, then the one
        // group where the target falls (a token-by-token scan is a chain
        // of 1024 dependent additions). Only a token of positive weight is
        // returned: if round-off put the group sum past the target but not
        // the running sum inside it, the target is taken to be in the next
        // group, whose first positive token is then drawn.
        let mut acc = if b == 0 { 0.0 } else { cum[b - 1] };
        for (k, g) in w.chunks(8).enumerate() {
            let s: f64 = g.iter().sum();
            if acc + s > target {
                let mut a = acc;
                for (j, &x) in g.iter().enumerate() {
                    a += x;
                    if x > 0.0 && a > target {
                        return Ok(start + 8 * k + j);
                    }
                }
            }
            acc += s;
        }
        if let Some(j) = w.iter().rposition(|&x| x > 0.0) {
            return Ok(start + j);
        }
    }
    // Past the end (or a block whose weights summed differently): the last
    // positive-weight token of the row.
    for b in (0..nb).rev() {
        let start = b * BLOCK_TOKENS;
        let end = (start + BLOCK_TOKENS).min(shape.vocab);
        let w = &mut w[..end - start];
        block_weights(isa, logits, lo_idx + start, &mask[(start / 32).min(mask.len())..], m, w);
        if let Some(j) = w.iter().rposition(|&x| x > 0.0) {
            return Ok(start + j);
        }
    }
    Err(MaskedError::DeadRow { row })
}

/// [`draw`] for each `(rows[k], u[k])`, into `out[k]`.
#[allow(clippy::too_many_arguments)]
pub fn draw_many(
    logits: Logits<'_>,
    mask: &[u32],
    shape: Shape,
    max: &[f64],
    cum: &[f64],
    rows: &[i64],
    u: &[f64],
    out: &mut [i64],
) -> Result<(), MaskedError> {
    shape.check_rows(logits, mask, max, cum)?;
    lengths(&[("uniforms", u.len(), rows.len()), ("out", out.len(), rows.len())])?;
    let isa = Isa::detect();
    for ((&r, &uk), o) in rows.iter().zip(u).zip(out.iter_mut()) {
        let row = usize::try_from(r).map_err(|_| MaskedError::NoSuchRow {
            row: usize::MAX,
            rows: shape.rows,
        })?;
        *o = draw_checked(isa, logits, mask, shape, max, cum, row, uk)? as i64;
    }
    Ok(())
}

/// `w[j] = exp(logp[at + j] - max)` where token `j` of the window is
/// allowed by `mask` (which starts at the window's first word), else 0.
fn block_weights(isa: Isa, logits: Logits<'_>, at: usize, mask: &[u32], max: f64, w: &mut [f64]) {
    // Written out in the dispatched bodies (a macro), for the reason given
    // at `row_body!`.
    macro_rules! body {
        ($x:expr, $mask:expr, $max:expr, $w:expr) => {{
            let (x, mask, max, w) = ($x, $mask, $max, $w);
            let mut xs = x.chunks_exact(8);
            let mut ws = w.chunks_exact_mut(8);
            for (g, (xg, wg)) in (&mut xs).zip(&mut ws).enumerate() {
                let byte = byte_at(mask, g);
                for l in 0..8 {
                    wg[l] = weight_of(xg[l], (byte >> l) & 1 != 0, max);
                }
            }
            let byte = byte_at(mask, x.len() / 8);
            for (l, (&v, o)) in xs.remainder().iter().zip(ws.into_remainder()).enumerate() {
                *o = weight_of(v, (byte >> l) & 1 != 0, max);
            }
        }};
    }
    let len = w.len();
    match logits {
        Logits::F32(v) => {
            let x = &v[at..at + len];
            dispatch!(
                isa,
                fn generic(x: &[f32], mask: &[u32], max: f64, w: &mut [f64]) -> () {
                    body!(x, mask, max, w)
                }
            )
        }
        Logits::F64(v) => {
            let x = &v[at..at + len];
            dispatch!(
                isa,
                fn generic(x: &[f64], mask: &[u32], max: f64, w: &mut [f64]) -> () {
                    body!(x, mask, max, w)
                }
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resample::{next_uniform, rng_from_seed, ResampleRng};

    /// A random batch: log-probs (some `-inf`, some NaN in disallowed
    /// places) and masks of varied density, including all-zero rows.
    fn batch(rng: &mut ResampleRng, shape: Shape, density: f64) -> (Vec<f64>, Vec<u32>) {
        let mut lp = Vec::with_capacity(shape.rows * shape.vocab);
        for _ in 0..shape.rows * shape.vocab {
            let r = next_uniform(rng);
            lp.push(if r < 0.02 {
                f64::NEG_INFINITY
            } else {
                -30.0 * next_uniform(rng) - 800.0 * (r > 0.99) as u8 as f64
            });
        }
        let mut mask = vec![0u32; shape.rows * shape.words];
        for (i, w) in mask.iter_mut().enumerate() {
            for b in 0..32 {
                if next_uniform(rng) < density {
                    *w |= 1 << b;
                }
            }
            let _ = i;
        }
        // NaN where not allowed must be ignored.
        for r in 0..shape.rows {
            for t in 0..shape.vocab {
                let on = t / 32 < shape.words && (mask[r * shape.words + t / 32] >> (t % 32)) & 1 != 0;
                if !on && next_uniform(rng) < 0.05 {
                    lp[r * shape.vocab + t] = f64::NAN;
                }
            }
        }
        (lp, mask)
    }

    fn allowed(mask: &[u32], shape: Shape, r: usize, t: usize) -> bool {
        t / 32 < shape.words && (mask[r * shape.words + t / 32] >> (t % 32)) & 1 != 0
    }

    /// Exact-ish reference: allowed max, weights, log Z.
    fn reference(lp: &[f64], mask: &[u32], shape: Shape, r: usize) -> (f64, Vec<f64>, f64) {
        let row = &lp[r * shape.vocab..(r + 1) * shape.vocab];
        let m = (0..shape.vocab)
            .filter(|&t| allowed(mask, shape, r, t))
            .map(|t| row[t])
            .fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = (0..shape.vocab)
            .map(|t| {
                if allowed(mask, shape, r, t) && m > f64::NEG_INFINITY {
                    (row[t] - m).exp()
                } else {
                    0.0
                }
            })
            .collect();
        let z: f64 = w.iter().sum();
        (m, w.clone(), if m == f64::NEG_INFINITY { m } else { m + z.ln() })
    }

    fn run(isa: Isa, lp: Logits<'_>, mask: &[u32], shape: Shape) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut lz = vec![0.0; shape.rows];
        let mut mx = vec![0.0; shape.rows];
        let mut cum = vec![0.0; shape.rows * shape.blocks()];
        masked_rows_with(isa, lp, mask, shape, &mut lz, &mut mx, &mut cum).unwrap();
        (lz, mx, cum)
    }

    #[test]
    fn log_z_and_draws_match_brute_force() {
        let mut rng = rng_from_seed(3);
        for (vocab, words, density) in [
            (1usize, 1usize, 0.5),
            (31, 1, 0.3),
            (32, 1, 0.9),
            (100, 4, 0.02),
            (1024, 32, 0.5),
            (1500, 40, 0.7),
            (3000, 50, 0.1),
            (2100, 70, 1.0),
        ] {
            let shape = Shape { rows: 5, vocab, words };
            let (lp, mask) = batch(&mut rng, shape, density);
            let (lz, mx, cum) = run(Isa::detect(), Logits::F64(&lp), &mask, shape);
            for r in 0..shape.rows {
                let (m, w, want) = reference(&lp, &mask, shape, r);
                assert_eq!(mx[r].to_bits(), m.to_bits(), "max, vocab {vocab} row {r}");
                if want == f64::NEG_INFINITY {
                    assert_eq!(lz[r], f64::NEG_INFINITY);
                    assert_eq!(
                        draw(Logits::F64(&lp), &mask, shape, &mx, &cum, r, 0.5),
                        Err(MaskedError::DeadRow { row: r })
                    );
                    continue;
                }
                assert!((lz[r] - want).abs() <= 1e-12 * want.abs().max(1.0), "log_z {} vs {want}", lz[r]);
                // Inverse CDF on a fine grid of uniforms: every draw is an
                // allowed token of positive weight whose exact interval
                // contains the target, up to round-off.
                let total: f64 = w.iter().sum();
                let mut c = vec![0.0; vocab + 1];
                for t in 0..vocab {
                    c[t + 1] = c[t] + w[t];
                }
                let mut freq = vec![0usize; vocab];
                let k = 4000;
                for i in 0..k {
                    let u = (i as f64 + 0.5) / k as f64;
                    let t = draw(Logits::F64(&lp), &mask, shape, &mx, &cum, r, u).unwrap();
                    assert!(w[t] > 0.0, "drew a zero-weight token {t}");
                    let x = u * total;
                    assert!(
                        c[t] <= x + 1e-9 * total && x <= c[t + 1] + 1e-9 * total,
                        "u {u}: token {t} owns [{}, {}), target {x}",
                        c[t],
                        c[t + 1]
                    );
                    freq[t] += 1;
                }
                for t in 0..vocab {
                    let p = w[t] / total;
                    assert!(
                        (freq[t] as f64 / k as f64 - p).abs() <= 1.0 / k as f64 + 1e-9,
                        "token {t}: {} vs {p}",
                        freq[t]
                    );
                }
                // Round-off at the very end: the last positive token.
                let last = (0..vocab).rev().find(|&t| w[t] > 0.0).unwrap();
                let one_minus = 1.0 - f64::EPSILON / 2.0;
                assert_eq!(draw(Logits::F64(&lp), &mask, shape, &mx, &cum, r, one_minus).unwrap(), last);
            }
        }
    }

    #[test]
    fn f32_isa_and_thread_independent() {
        let mut rng = rng_from_seed(4);
        let shape = Shape {
            rows: 64,
            vocab: 5000,
            words: 157,
        };
        let (lp, mask) = batch(&mut rng, shape, 0.4);
        let lp32: Vec<f32> = lp.iter().map(|&x| x as f32).collect();
        for logits in [Logits::F64(&lp), Logits::F32(&lp32)] {
            let want = run(Isa::all()[0], logits, &mask, shape);
            for isa in Isa::all() {
                let got = run(isa, logits, &mask, shape);
                let bits = |v: &Vec<f64>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got.0), bits(&want.0));
                assert_eq!(bits(&got.2), bits(&want.2));
                for r in 0..shape.rows {
                    if want.0[r] > f64::NEG_INFINITY {
                        for u in [0.0, 0.3, 0.999] {
                            let a = draw_with(Isa::all()[0], logits, &mask, shape, &want.1, &want.2, r, u).unwrap();
                            let b = draw_with(isa, logits, &mask, shape, &got.1, &got.2, r, u).unwrap();
                            assert_eq!(a, b);
                        }
                    }
                }
            }
            // One thread against the pool (this batch is above PAR_MIN).
            let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            let one = pool.install(|| run(Isa::detect(), logits, &mask, shape));
            let many = run(Isa::detect(), logits, &mask, shape);
            assert_eq!(
                one.0.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                many.0.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn exp_nonpos_f32_matches_libm() {
        let mut rng = rng_from_seed(9);
        let mut worst = 0.0f64;
        for i in 0..200_000 {
            let x = if i < 1000 {
                -(i as f32) * 0.087
            } else {
                -87.0 * next_uniform(&mut rng) as f32
            };
            let want = (x as f64).exp();
            let got = exp_nonpos_f32(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "max relative error {worst:e}");
        assert_eq!(exp_nonpos_f32(0.0), 1.0);
        assert_eq!(exp_nonpos_f32(-0.0), 1.0);
        assert_eq!(exp_nonpos_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpos_f32(-87.5), 0.0);
        assert!(exp_nonpos_f32(-86.9) > 0.0);
    }

    #[test]
    fn bad_input_is_an_error() {
        let shape = Shape {
            rows: 2,
            vocab: 40,
            words: 2,
        };
        let mut lp = vec![-1.0f64; 80];
        let mask = vec![u32::MAX, 0xff, 0, 0];
        let mut lz = vec![0.0; 2];
        let mut mx = vec![0.0; 2];
        let mut cum = vec![0.0; 2];
        lp[3] = f64::NAN;
        let e = masked_rows(Logits::F64(&lp), &mask, shape, &mut lz, &mut mx, &mut cum).unwrap_err();
        assert!(matches!(e, MaskedError::NotFinite { row: 0, token: 3, .. }), "{e:?}");
        lp[3] = -1.0;
        lp[60] = f64::INFINITY; // row 1 allows nothing: ignored
        lp[45] = f64::NAN;
        masked_rows(Logits::F64(&lp), &mask, shape, &mut lz, &mut mx, &mut cum).unwrap();
        assert_eq!(lz[1], f64::NEG_INFINITY);
        assert!((lz[0] - (-1.0 + 40f64.ln())).abs() < 1e-12);
        lp[39] = f64::INFINITY;
        assert!(matches!(
            masked_rows(Logits::F64(&lp), &mask, shape, &mut lz, &mut mx, &mut cum),
            Err(MaskedError::NotFinite { row: 0, token: 39, .. })
        ));
        lp[39] = -1.0;
        masked_rows(Logits::F64(&lp), &mask, shape, &mut lz, &mut mx, &mut cum).unwrap();
        assert!(matches!(
            masked_rows(Logits::F64(&lp[1..]), &mask, shape, &mut lz, &mut mx, &mut cum),
            Err(MaskedError::Shape { what: "logits", .. })
        ));
        assert!(matches!(
            masked_rows(Logits::F64(&lp), &mask[1..], shape, &mut lz, &mut mx, &mut cum),
            Err(MaskedError::Shape { what: "mask", .. })
        ));
        assert!(matches!(
            masked_rows(Logits::F64(&lp), &mask, shape, &mut lz, &mut mx, &mut cum[1..]),
            Err(MaskedError::Shape { what: "cum", .. })
        ));
        for u in [-0.1, 1.0, f64::NAN] {
            assert!(matches!(
                draw(Logits::F64(&lp), &mask, shape, &mx, &cum, 0, u),
                Err(MaskedError::BadUniform { .. })
            ));
        }
        assert!(matches!(
            draw(Logits::F64(&lp), &mask, shape, &mx, &cum, 2, 0.5),
            Err(MaskedError::NoSuchRow { .. })
        ));
        assert_eq!(
            draw(Logits::F64(&lp), &mask, shape, &mx, &cum, 1, 0.5),
            Err(MaskedError::DeadRow { row: 1 })
        );
        let mut out = vec![0i64; 2];
        assert!(matches!(
            draw_many(Logits::F64(&lp), &mask, shape, &mx, &cum, &[0, -1], &[0.1, 0.2], &mut out),
            Err(MaskedError::NoSuchRow { .. })
        ));
        draw_many(Logits::F64(&lp), &mask, shape, &mx, &cum, &[0, 0], &[0.0, 0.99], &mut out).unwrap();
        assert_eq!(out, [0, 39]);
        // Empty vocabulary: every row dead.
        let e = Shape { rows: 2, vocab: 0, words: 0 };
        masked_rows(Logits::F64(&[]), &[], e, &mut lz, &mut mx, &mut []).unwrap();
        assert_eq!(lz, [f64::NEG_INFINITY; 2]);
    }

    /// The row passes in the order of additions they promise: accumulator
    /// `t % 8` takes a block's allowed tokens in order, the eight are
    /// combined in a fixed tree, the blocks summed in order. Spelled out
    /// token by token here, it must give the same maximum, block sums and
    /// log Z bit for bit, f32 and f64, on every ISA build (and the same
    /// first bad token).
    #[test]
    fn row_passes_match_scalar_reference() {
        fn reference<T: Value>(x: &[T], mask: &[u32]) -> Result<(f64, Vec<f64>), usize> {
            let on = |t: usize| (word_at(mask, t / 32) >> (t % 32)) & 1 != 0;
            if let Some(t) = (0..x.len()).find(|&t| on(t) && x[t].not_below_inf()) {
                return Err(t);
            }
            let nb = x.len().div_ceil(BLOCK_TOKENS);
            let m = (0..x.len()).filter(|&t| on(t)).map(|t| x[t].f64()).fold(f64::NEG_INFINITY, f64::max) + 0.0;
            if m == f64::NEG_INFINITY {
                return Ok((m, vec![0.0; nb]));
            }
            let (mut run, mut cum) = (0.0, vec![]);
            for b in 0..nb {
                let mut acc = [0.0f64; 8];
                for t in b * BLOCK_TOKENS..((b + 1) * BLOCK_TOKENS).min(x.len()) {
                    acc[t % 8] += x[t].weight(on(t), T::from_f64(m)).f64();
                }
                run += sum8(&acc);
                cum.push(run);
            }
            Ok((m, cum))
        }
        fn check<T: Value>(isa: Isa, x: &[T], logits: Logits<'_>, mask: &[u32], words: usize, case: usize) {
            let shape = Shape {
                rows: 1,
                vocab: x.len(),
                words,
            };
            let (mut lz, mut mx, mut cum) = ([0.0], [0.0], vec![0.0; shape.blocks()]);
            let got = masked_rows_with(isa, logits, mask, shape, &mut lz, &mut mx, &mut cum);
            match reference(x, mask) {
                Err(t) => assert!(
                    matches!(got, Err(MaskedError::NotFinite { token, .. }) if token == t),
                    "case {case}: {got:?}"
                ),
                Ok((m, want)) => {
                    got.unwrap();
                    assert_eq!(mx[0].to_bits(), m.to_bits(), "case {case} {isa:?}");
                    let bits = |v: &[f64]| v.iter().map(|c| c.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&cum), bits(&want), "case {case} {isa:?}");
                    let z = if m == f64::NEG_INFINITY { m } else { m + want.last().unwrap().ln() };
                    assert_eq!(lz[0].to_bits(), z.to_bits(), "case {case} {isa:?}");
                }
            }
        }
        let mut rng = crate::resample::rng_from_seed(3);
        let mut u = || crate::resample::next_uniform(&mut rng);
        for case in 0..300 {
            let vocab = 1 + (u() * 5000.0) as usize;
            let words = vocab.div_ceil(32) + (case % 3);
            let dens = [0.5, 0.05, 0.01, 1.0, 0.0][case % 5];
            let x32: Vec<f32> = (0..vocab)
                .map(|i| match u() {
                    v if v < 0.002 => f32::NAN,
                    v if v < 0.05 => f32::NEG_INFINITY,
                    v if v < 0.1 => [0.0, -0.0][i % 2],
                    v => (-30.0 * v) as f32,
                })
                .collect();
            let x64: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
            let mask: Vec<u32> = (0..words).map(|_| (0..32).filter(|_| u() < dens).fold(0u32, |w, b| w | 1 << b)).collect();
            for isa in Isa::all() {
                check(isa, &x32, Logits::F32(&x32), &mask, words, case);
                check(isa, &x64, Logits::F64(&x64), &mask, words, case);
            }
        }
    }
}
