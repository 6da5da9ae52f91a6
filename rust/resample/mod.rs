//! Resampling kernels for sequential Monte Carlo: multinomial, systematic,
//! stratified and residual, plus the effective sample size and
//! log-normalisation.
//!
//! # The common shape of every kernel
//!
//! All four kernels solve the same problem: given unnormalised log weights
//! `lw[0..N]` and a number of draws `n`, write `n` ancestor indices, in
//! increasing order, such that particle `i` appears `N_i` times with
//! `E[N_i] = n * w_i`, where `w_i = exp(lw_i) / sum_j exp(lw_j)`.
//!
//! Each kernel places `n` points on the weight "ruler" `[0, 1)` and maps a
//! point `p` to the particle whose interval `[C_{i-1}, C_i) / S` contains it
//! (`C` the cumulative weights, `S` the total), i.e. the inverse CDF. They
//! differ only in where the points go:
//!
//! | scheme        | points                                    | uniforms used                    |
//! |---------------|-------------------------------------------|----------------------------------|
//! | `Multinomial` | `n` sorted i.i.d. uniforms                | `n`                              |
//! | `Stratified`  | `(k + u_k) / n`, one uniform per stratum  | `n`                              |
//! | `Systematic`  | `(k + u) / n`, one shared uniform         | `1`                              |
//! | `Residual`    | `floor(n w_i)` copies of `i` first, then systematic on the remainders: points `k + u`, `k < R`, against the cumulative remainders `r_i = n w_i - floor(n w_i)` (`R = n - sum_i floor(n w_i) = sum_i r_i`) | `1` |
//!
//! Because the points are sorted, one left-to-right walk over the particles
//! emits the output already sorted: at particle `i` we only need `K_i`, the
//! number of points below `C_i`, and we write `i` into `out[K_{i-1}..K_i]`.
//! For systematic, stratified and residual `K_i` has a closed form (no
//! search, no data-dependent inner loop, see `strata_below`); for
//! multinomial it is a merge against the sorted uniforms, which we generate
//! already sorted in O(n) from exponential spacings (the normalised partial
//! sums of `n + 1` standard exponentials are distributed as `n` sorted
//! uniforms). Every kernel is therefore O(N + n), and no kernel sorts
//! anything except *caller-supplied* multinomial uniforms (see
//! [`Uniforms::Given`]).
//!
//! # Residual is residual-*systematic*
//!
//! The residual kernel's second stage is systematic, not multinomial (the
//! textbook residual resampling is residual-multinomial, whose counts are
//! only bounded below by `floor(n w_i)`). Each remainder `r_i` is below 1,
//! so its interval on the residual ruler holds at most one point: every
//! count is `floor(n w_i)` or `ceil(n w_i)`, the latter with probability
//! `r_i`, so `E[N_i] = n w_i` and `Var[N_i] = r_i (1 - r_i)`. The bound is
//! enforced per particle, from `n w_i` itself, whatever the rounding (see
//! `residual_walk`).
//!
//! In exact arithmetic this is the *same* resampler as `Systematic`, point
//! for point: `floor`s up to `i` plus remainders up to `i` add up to
//! `n C_i / S`, and the integers below the floors hold one point each, so
//! the number of points `k + u` below `n C_i / S` is the same on both
//! rulers. The same `u` gives the same output (up to round-off at interval
//! boundaries, a set of `u` of measure ~1e-15), hence the same joint law of
//! the counts. What the residual formulation adds is that the
//! `{floor, ceil}` bound holds exactly for the computed `n w_i`, rather than
//! for differences of rounded cumulative sums.
//!
//! # Numerical safety
//!
//! * Weights are `exp(lw_i - max)`, so the largest is exactly 1 and the total
//!   `S` lies in `[1, N]`: no overflow, and underflow only for particles
//!   that are more than `e^708` times less likely than the best one.
//! * `-inf` means weight zero. NaN, `+inf`, an empty slice and "everything is
//!   `-inf`" are errors ([`ResampleError`]), detected in the same pass that
//!   finds the maximum.
//! * Cumulative weights are never normalised; points are scaled by `S`
//!   instead. The running sum `C_N` can still differ from `S` in its last
//!   bits (and `(k + u) / n` can round up to exactly 1 when `u` is the
//!   largest double below 1), so a point can land at or beyond `C_N`. Rather
//!   than index past the end, every point not claimed before the *last
//!   particle with positive weight* `L` goes to `L`. Zero-weight particles
//!   own empty intervals, so they are never selected, wherever they are.
//! * Every output slot is written, whatever the rounding: the walk ends with
//!   `out[K_{L-1}..n] = L`.
//! * Residual is the exception to "`L` absorbs the rest", since giving `L`
//!   a second extra copy would break its `{floor, ceil}` bound: a residual
//!   point lost to round-off goes to the last particle with a positive
//!   remainder that has no extra copy yet (see `residual_walk`), and a
//!   zero-remainder particle never gets an extra copy.
//!
//! # Speed
//!
//! Three passes: validate + max (no `exp`), then `w_i = exp(lw_i - max)`
//! stored to a reused scratch buffer and summed, then the walk. `exp` is
//! the dominant per-particle cost, so it is evaluated once, by
//! [`exp_nonpos`], a branch-free polynomial the compiler vectorises
//! (unlike libm's `exp`). The walk is blocked: per block of `BLOCK`
//! particles the cumulative sums and the counts `K_i` are computed by
//! vectorised loops, and only the runs `out[K_{i-1}..K_i] = i` are written
//! by a scalar loop (see `fill_block`; systematic with AVX-512 writes eight
//! particles' short runs with two vector stores, see `fill_block_avx512`,
//! and prefetches the weights two blocks ahead); the multinomial merge is
//! branch-free (see `merge_walk`). Residual has one more pass before the
//! walk (the sum of the floors and of the remainders, which fixes `R` and
//! the residual scale), then a blocked walk of the same shape.
//!
//! On x86-64 the block-level loops are also compiled for AVX2 + FMA and
//! for AVX-512, and picked at run time (`dispatch!`). All builds perform
//! the same IEEE operations in the same order (explicit `mul_add`, never
//! implicit contraction; fixed accumulator lanes), so a given seed gives
//! bit-identical output on every machine, whichever path runs (no libm
//! transcendental is involved in any kernel).
//!
//! # Threads
//!
//! The systematic and residual kernels, from `PAR_MIN` (262,144)
//! particles on (and when rayon's current pool has more than one thread),
//! run every pass on that pool, in tasks of whole blocks, with
//! **bit-identical** output to the sequential passes, so results never
//! depend on the number of threads:
//!
//! * validate + max and the `exp` pass: the max is exact in any order, and
//!   the total `S` is the block sums added in block order by one thread,
//!   exactly the sequential additions;
//! * the systematic walk (`systematic_walk_par`): a block's running sum
//!   ends at `base` plus its four quarter sums, added in order, so every
//!   block's starting sum is a cheap sequential fold over the quarter
//!   sums, and since a systematic count depends only on the cumulative
//!   weight, so is every task's first output slot; tasks then write
//!   disjoint ranges of the output;
//! * the residual totals and walk (`residual_walk_par`), the same way,
//!   except that the walk's state also holds the extras given so far,
//!   which is speculated per task and checked afterwards (a wrong guess,
//!   possible only through round-off, redoes the rest sequentially).
//!
//! The multinomial merge and the stratified walk (which draws one uniform
//! per particle, in order, from one generator) stay sequential, and so do
//! their first two passes: parallel, those measured no faster overall (the
//! sequential walk then reads weights that sit in other cores' caches).
//! The parallel passes in the tests are forced on for all four kernels.

use std::fmt;
use std::str::FromStr;

use rand_xoshiro::rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

/// The random number generator used by every kernel and by
/// [`crate::smc::Population`]: xoshiro256++, seeded through SplitMix64.
pub type ResampleRng = Xoshiro256PlusPlus;

/// A generator seeded from a `u64` (via SplitMix64, as `seed_from_u64` does).
pub fn rng_from_seed(seed: u64) -> ResampleRng {
    ResampleRng::seed_from_u64(seed)
}

/// One uniform in `[0, 1)` with 53 random bits: the top 53 bits of a 64-bit
/// draw, scaled by `2^-53`. Exactly representable, so never rounds up to 1.
#[inline]
pub fn next_uniform(rng: &mut ResampleRng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A resampling scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `n` i.i.d. draws from the categorical distribution of the weights.
    /// Highest variance; mostly useful as a reference.
    Multinomial,
    /// One uniform `u`, points `(k + u) / n`. Lowest cost, and each count
    /// is `floor(n w_i)` or `ceil(n w_i)`. The usual default.
    Systematic,
    /// One uniform per stratum, points `(k + u_k) / n`. Counts are within
    /// one of `floor(n w_i)` / `ceil(n w_i)`; variance never above
    /// multinomial's.
    Stratified,
    /// `floor(n w_i)` copies deterministically, then systematic
    /// resampling of the remaining `R = n - sum floor(n w_i)` draws on the
    /// remainders `n w_i - floor(n w_i)` (residual-systematic). Each count
    /// is `floor(n w_i)` or `ceil(n w_i)`; one uniform. (Same law as
    /// `Systematic`: see the module docs.)
    Residual,
}

impl Scheme {
    /// All schemes, in the order of their [`Scheme::code`].
    pub const ALL: [Scheme; 4] = [Scheme::Multinomial, Scheme::Systematic, Scheme::Stratified, Scheme::Residual];

    /// The lowercase name (`"systematic"`, ...), as accepted by `FromStr`.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Multinomial => "multinomial",
            Scheme::Systematic => "systematic",
            Scheme::Stratified => "stratified",
            Scheme::Residual => "residual",
        }
    }

    /// A small integer code (the index into [`Scheme::ALL`]). The Python
    /// layer passes this instead of a string: cheaper to extract, and
    /// string extraction is awkward on the abi3-py39 stable ABI.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The inverse of [`Scheme::code`].
    pub fn from_code(code: u8) -> Option<Scheme> {
        Scheme::ALL.get(code as usize).copied()
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheme {
    type Err = ResampleError;

    fn from_str(s: &str) -> Result<Scheme, ResampleError> {
        Scheme::ALL
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or_else(|| ResampleError::UnknownScheme(s.to_string()))
    }
}

/// Everything that can be wrong with a resampling request. The Python
/// bindings turn each into a `ValueError` carrying this message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ResampleError {
    /// No particles.
    #[error("log weights are empty")]
    Empty,
    /// A NaN log weight (the first one found).
    #[error("log weight at index {index} is NaN")]
    NaN {
        /// Position of the first NaN.
        index: usize,
    },
    /// A `+inf` log weight: an infinite weight cannot be normalised.
    #[error("log weight at index {index} is +inf")]
    PosInf {
        /// Position of the first `+inf`.
        index: usize,
    },
    /// Every log weight is `-inf`: the total weight is zero.
    #[error("all log weights are -inf (total weight is zero)")]
    AllZero,
    /// `n = 0` draws requested.
    #[error("the number of draws n must be positive")]
    NoDraws,
    /// An output buffer whose length does not match its input.
    #[error("output has length {got}, expected {expected}")]
    OutputLength {
        /// Required length.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// Supplied uniforms of the wrong count for a scheme that needs an exact count.
    #[error("{scheme} resampling takes exactly {expected} uniform(s), got {got}")]
    UniformCount {
        /// The scheme.
        scheme: Scheme,
        /// Number required.
        expected: usize,
        /// Number supplied.
        got: usize,
    },
    /// Residual resampling was given no uniform (it takes one: the offset
    /// of its systematic stage; further values are ignored).
    #[error(
        "residual resampling needs at least {needed} uniform(s) (the offset u of its systematic \
         stage; values after the first are checked but ignored), got {got}"
    )]
    TooFewUniforms {
        /// Number required (always 1).
        needed: usize,
        /// Number supplied.
        got: usize,
    },
    /// A supplied uniform outside `[0, 1)` (or NaN).
    #[error("uniform at index {index} is {value}, not in [0, 1)")]
    BadUniform {
        /// Position of the offending uniform.
        index: usize,
        /// Its value.
        value: f64,
    },
    /// A scheme name that is not one of the four.
    #[error("unknown resampling scheme {0:?} (expected multinomial, systematic, stratified or residual)")]
    UnknownScheme(String),
}

/// Where a kernel's randomness comes from.
#[derive(Debug)]
pub enum Uniforms<'a> {
    /// Draw from this generator (the normal case).
    Rng(&'a mut ResampleRng),
    /// Use these uniforms, each in `[0, 1)`; mainly for exact tests. How
    /// many, and what they mean:
    ///
    /// * `Systematic`: exactly 1, the shared offset `u`: points `(k + u) / n`.
    /// * `Stratified`: exactly `n`, `u_k` for stratum `k`: points `(k + u_k) / n`.
    /// * `Multinomial`: exactly `n`, in any order; each is one inverse-CDF
    ///   draw (`u` picks the particle whose interval contains `u * S`). They
    ///   are sorted internally, O(n log n); the seeded path instead
    ///   generates sorted uniforms directly and does not sort.
    /// * `Residual`: 1, the offset `u` of its systematic stage: points
    ///   `k + u`, `k = 0..R`, on the cumulative remainders
    ///   `n w_i - floor(n w_i)` (scaled to total `R`). For backwards
    ///   compatibility (this stage used to be multinomial, taking one
    ///   uniform per residual draw) a longer slice is accepted and only its
    ///   first value is used; an empty slice is
    ///   [`ResampleError::TooFewUniforms`].
    ///
    /// All supplied values are checked, used or not.
    Given(&'a [f64]),
}

pub use crate::fastmath::exp_nonpos;
/// Per-thread reusable `f64` buffers for the kernels' O(N) scratch (the
/// weights, and the sorted points of multinomial).
///
/// At large N a fresh allocation of that size comes straight from `mmap`,
/// and touching it costs a page fault and a kernel page clear per 4 KiB:
/// measured, that is as expensive as the whole resampling. Reusing the
/// buffer avoids it. Buffers above [`SCRATCH_KEEP`] elements are freed
/// rather than kept, to bound what an idle thread holds (at most two
/// buffers per thread that has resampled).
///
/// [`SCRATCH_KEEP`]: scratch::SCRATCH_KEEP
use crate::fastmath::neg_ln_unit;

mod scratch {
    use std::cell::Cell;

    /// Largest buffer kept between calls: 4M doubles (32 MiB).
    pub const SCRATCH_KEEP: usize = 1 << 22;

    thread_local! {
        static SLOTS: [Cell<Vec<f64>>; 2] = const { [Cell::new(Vec::new()), Cell::new(Vec::new())] };
    }

    /// A vector of length `len` with unspecified (stale or zero) contents,
    /// from slot `slot` if it has one. Only newly grown elements are
    /// zeroed, so in the steady state this costs nothing per element.
    pub fn take(slot: usize, len: usize) -> Vec<f64> {
        let mut v = SLOTS.try_with(|s| s[slot].take()).unwrap_or_default();
        v.truncate(len);
        v.resize(len, 0.0);
        v
    }

    /// Put `v` in slot `slot` as is (no size bound) and return what was
    /// there: lends a buffer to another thread for one call.
    pub fn swap(slot: usize, v: Vec<f64>) -> Vec<f64> {
        SLOTS.try_with(|s| s[slot].replace(v)).unwrap_or_default()
    }

    /// Hand a buffer back to slot `slot` for the next call.
    pub fn give(slot: usize, v: Vec<f64>) {
        if v.capacity() <= SCRATCH_KEEP {
            // During thread teardown the slot may be gone; then just drop.
            let _ = SLOTS.try_with(|s| s[slot].set(v));
        }
    }
}

/// Validated, exponentiated weights: what every kernel walks over. The
/// buffer goes back to the scratch cache on drop.
///
/// (Storing them in the pass that sums them, rather than recomputing them
/// block by block during the walk, measured ~25% faster for N up to 2^16,
/// where `exp` dominates, and no slower at 2^20, where the extra write and
/// read of 8 bytes per particle cost about as much as a second `exp`.)
#[derive(Debug)]
struct Weights {
    /// `w_i = exp_nonpos(lw_i - max)`; the largest is exactly 1.
    w: Vec<f64>,
    /// `sum_i w_i`, in `[1, N]`.
    sum: f64,
    /// The last `i` with `w_i > 0`: the particle that absorbs points lost
    /// to round-off (see the module docs).
    last: usize,
    /// In parallel and when asked for, the [`quarter_sums`] of every full
    /// block (the parallel systematic walk needs them; computing them while
    /// the block is still in L1 saves re-reading all the weights). Empty
    /// otherwise.
    quarters: Vec<[f64; 4]>,
}

impl Drop for Weights {
    fn drop(&mut self) {
        scratch::give(0, std::mem::take(&mut self.w));
    }
}

/// Results of the fused validate/max/sum pass used by [`ess`] and
/// [`log_sum_exp`] (which need no per-particle weights).
#[derive(Clone, Copy, Debug)]
struct Summary {
    /// `max_i lw_i` (finite).
    max: f64,
    /// `sum_i exp(lw_i - max)`, in `[1, N]`.
    sum: f64,
    /// `sum_i exp(lw_i - max)^2` (only when asked for).
    sumsq: f64,
}

/// Block size of the blocked passes: 2 KiB of `f64`, small enough that a
/// block read by one loop is still in L1 for the next, large enough that
/// per-block overhead (ISA dispatch, online rescaling) is negligible.
const BLOCK: usize = 256;

/// Fewest particles for which the systematic and residual kernels run on
/// rayon's pool (see "Threads" in the module docs). Below it the calling
/// thread does everything. Handing a call to the pool costs tens of
/// microseconds when its threads are awake, and (in a VM) up to a few
/// hundred when they sleep, as they do between resampling steps of an SMC
/// loop. Measured on 2 vCPUs (systematic, `n = N`, two threads against
/// one; `benches/README_resample.md`): in a tight loop 2x and 1.4x slower
/// at 2^14 and 2^15 particles, 1.2x, 1.4x and 1.6x faster at 2^16, 2^17
/// and 2^18; in the interleaved benchmark no faster at 2^16 and 2^17,
/// 1.3x faster at 2^18, 1.2x at 2^20; for a call after 5 ms of idling
/// 1.2-1.5x slower at 2^16 and 2^17, even at 2^18, 1.3-1.6x faster at
/// 2^20. Residual gains a little more.
const PAR_MIN: usize = 1 << 18;

/// Blocks per parallel task (64 blocks = 16,384 particles = 128 KiB of
/// weights): enough tasks to balance a 2^20-particle population over many
/// cores, few enough that the sequential per-task bookkeeping is nothing.
const PAR_TASK_BLOCKS: usize = 64;

/// How the passes of one call run: `None` on one thread, `Some(t)` on
/// rayon's current pool in tasks of `t` blocks. The output is
/// bit-identical either way, for any `t` and any number of threads.
type Par = Option<usize>;

/// The plan for `len` particles on the current pool.
fn par_plan(len: usize) -> Par {
    (len >= PAR_MIN && rayon::current_num_threads() > 1).then_some(PAR_TASK_BLOCKS)
}

/// Which instruction-set build of the block loops to run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Isa {
    /// AVX2 and FMA both available.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) avx2: bool,
    /// AVX-512 F/DQ/VL/BW available too (with `avx2`). The vectorised `exp`
    /// runs ~25% faster built for it (eight lanes per instruction, fewer
    /// instructions per weight), even on cores that split 512-bit
    /// operations in two, and the walk ~10%.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) avx512: bool,
}

impl Isa {
    pub(crate) fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
            Isa {
                avx2,
                avx512: avx2
                    && std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512dq")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512bw"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Isa { avx2: false, avx512: false }
        }
    }

    /// Every build this CPU can run, baseline first (for the tests that
    /// check they agree bit for bit).
    #[cfg(test)]
    pub(crate) fn all() -> Vec<Isa> {
        let best = Isa::detect();
        let mut v = vec![Isa { avx2: false, avx512: false }];
        if best.avx2 {
            v.push(Isa { avx2: true, avx512: false });
        }
        if best.avx512 {
            v.push(best);
        }
        v
    }
}

/// Compile `$body` (a call to an `#[inline(always)]` function) three
/// times, for the baseline target, with AVX2 + FMA and with AVX-512 on top,
/// and run the one `$isa` picks. All builds perform the same IEEE
/// operations in the same order: Rust never contracts `a * b + c` on its
/// own, the explicit `mul_add`s are correctly rounded fused operations in
/// all (an FMA instruction, or libm's `fma` on a baseline x86-64 CPU
/// without one; slow, but such CPUs predate 2013), and reductions use
/// fixed accumulator lanes whatever the vector width. So results are
/// bit-identical everywhere (`kernels_are_isa_independent`).
macro_rules! dispatch {
    ($isa:expr, fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {{
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn avx2($($arg: $ty),*) -> $ret $body
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma,avx512f,avx512dq,avx512vl,avx512bw")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn avx512($($arg: $ty),*) -> $ret $body
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) -> $ret $body
        #[cfg(target_arch = "x86_64")]
        {
            if $isa.avx512 {
                // SAFETY: only taken when the CPU reports these features.
                unsafe { avx512($($arg),*) }
            } else if $isa.avx2 {
                // SAFETY: only taken when the CPU reports AVX2 and FMA.
                unsafe { avx2($($arg),*) }
            } else {
                $name($($arg),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $name($($arg),*)
        }
    }};
}

pub(crate) use dispatch;

/// Combine eight accumulator lanes in a fixed order.
#[inline(always)]
fn tree8(a: [f64; 8]) -> f64 {
    ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
}

/// Max of a slice, and whether every value is `< +inf` (not NaN, not +inf).
/// Eight independent lanes so that the compiler vectorises the reduction
/// (a single `if v > m` chain would not be reassociated). `!(v < inf)` is
/// deliberate: one compare that is true for both NaN and `+inf`.
#[inline(always)]
#[allow(clippy::neg_cmp_op_on_partial_ord)]
fn max_body(lw: &[f64]) -> (f64, bool) {
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
fn sums_body<const SQ: bool>(lw: &[f64], m: f64) -> (f64, f64) {
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
fn exp_store_body(lw: &[f64], m: f64, dst: &mut [f64]) -> f64 {
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
fn exponentials_body(u: &mut [f64]) {
    for v in u.iter_mut() {
        *v = neg_ln_unit(1.0 - *v);
    }
}

fn block_sums<const SQ: bool>(isa: Isa, lw: &[f64], m: f64) -> (f64, f64) {
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

fn exp_store(isa: Isa, lw: &[f64], m: f64, dst: &mut [f64]) -> f64 {
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
fn max_checked(isa: Isa, lw: &[f64], par: Par) -> Result<f64, ResampleError> {
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

fn exponentials(isa: Isa, u: &mut [f64]) {
    dispatch!(
        isa,
        fn generic(u: &mut [f64]) -> () {
            exponentials_body(u)
        }
    )
}

/// The first NaN or `+inf` (cold path, only after a pass reported one).
fn first_bad(lw: &[f64]) -> ResampleError {
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
fn weights(isa: Isa, lw: &[f64], par: Par, quarters: bool) -> Result<Weights, ResampleError> {
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
fn summarize<const SQ: bool>(isa: Isa, lw: &[f64]) -> Result<Summary, ResampleError> {
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
fn fill_run(out: &mut [i64], pos: usize, end: usize, v: i64) {
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
fn walk<F: FnMut(f64) -> i64>(ws: &Weights, out: &mut [i64], mut count: F) {
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
fn strata_below(x: f64, u_at: impl FnOnce(i64) -> f64) -> i64 {
    let f = x as i64; // x >= 0: truncation is floor (saturating if huge)
    f + (u_at(f) < x - f as f64) as i64
}

/// Check supplied uniforms: each in `[0, 1)`.
fn check_uniforms(u: &[f64]) -> Result<(), ResampleError> {
    match u.iter().position(|&v| !(0.0..1.0).contains(&v)) {
        Some(index) => Err(ResampleError::BadUniform { index, value: u[index] }),
        None => Ok(()),
    }
}

fn exact_count(scheme: Scheme, u: &[f64], expected: usize) -> Result<(), ResampleError> {
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
fn sorted_spacings(isa: Isa, rng: &mut ResampleRng, k: usize) -> (Vec<f64>, f64) {
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
fn sorted_copy(u: &[f64]) -> Vec<f64> {
    let mut v = u.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    v
}

fn systematic_kernel(isa: Isa, ws: &Weights, out: &mut [i64], src: Uniforms<'_>, par: Par) -> Result<(), ResampleError> {
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
const BLOCKED_MAX_N: usize = 1 << 30;

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
fn block_prefix(c: &mut [f64], base: f64) -> f64 {
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
fn quarter_sums(w: &[f64]) -> [f64; 4] {
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
fn block_end(base: f64, q: &[f64; 4]) -> f64 {
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
fn systematic_count(c: f64, scale: f64, u: f64) -> i32 {
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
fn systematic_counts_body(w: &[f64], base: f64, scale: f64, u: f64, off: i32, c: &mut [f64], k: &mut [i32]) -> f64 {
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
fn systematic_walk(isa: Isa, ws: &Weights, out: &mut [i64], u: f64, par: Par) {
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
fn systematic_blocks(isa: Isa, w: &[f64], first: usize, mut base: f64, scale: f64, u: f64, off: i32, out: &mut [i64]) -> usize {
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
const PREFETCH_BLOCKS: usize = 2;

/// Ask for block `b` of `w` (its 32 cache lines) to be brought into L1, if
/// it exists. At 2^20 particles the weights come from L3 or memory, and the
/// walk does enough work per block that the hardware prefetchers fall
/// behind: prefetching two blocks ahead measured the counts alone at ~1.45
/// against ~1.9 ns per particle. (A prefetch is only a hint: it never
/// faults and changes no result.)
#[inline(always)]
fn prefetch_block(w: &[f64], b: usize) {
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
fn systematic_walk_par(isa: Isa, walked: &[f64], qs: &[[f64; 4]], last: usize, out: &mut [i64], scale: f64, u: f64, t: usize) {
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
fn fill_block_avx512(out: &mut [i64], k: &[i32], mut pos: usize, first: i64) -> usize {
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
fn fill_runs(out: &mut [i64], k: &[i32], mut pos: usize, first: i64) -> usize {
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
fn fill_block(out: &mut [i64], k: &[i32], mut pos: usize, first: i64) -> usize {
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

fn stratified_kernel(ws: &Weights, out: &mut [i64], src: Uniforms<'_>) -> Result<(), ResampleError> {
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

fn multinomial_kernel(isa: Isa, mut ws: Weights, out: &mut [i64], src: Uniforms<'_>) -> Result<(), ResampleError> {
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
fn merge_walk(isa: Isa, w: &mut [f64], last: usize, out: &mut [i64], pts: &[f64], factor: f64) {
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
fn residual_kernel(isa: Isa, ws: &Weights, out: &mut [i64], src: Uniforms<'_>, par: Par) -> Result<(), ResampleError> {
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
fn floor_count(x: f64) -> usize {
    x as usize
}

/// `(sum_i floor(x_i), sum_i r_i)`, `x_i = w_i * scale`, by plain loops
/// (the summation order of [`residual_walk_scalar`]).
fn residual_totals_scalar(w: &[f64], scale: f64) -> (usize, f64) {
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
const RESIDUAL_LIMIT: f64 = (2 * BLOCKED_MAX_N - 1) as f64;

/// One block of `x_j = w_j * scale`, split into `fl[j] = floor(x_j)` and
/// `r[j] = x_j - floor(x_j)`; returns `sum_j fl[j]`. Vectorised (packed
/// double-to-int32 conversion, as in [`systematic_counts_body`]).
#[inline(always)]
fn residual_split_body(w: &[f64], scale: f64, r: &mut [f64], fl: &mut [i32]) -> i64 {
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
fn residual_totals_blocked(isa: Isa, w: &[f64], scale: f64) -> (usize, f64) {
    let (floors, rem_sum) = residual_totals_from(isa, w, scale, 0, 0.0);
    (floors.max(0) as usize, rem_sum)
}

/// The loop of [`residual_totals_blocked`], from given running totals.
fn residual_totals_from(isa: Isa, w: &[f64], scale: f64, mut floors: i64, mut base: f64) -> (i64, f64) {
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

/// [`residual_totals_blocked`] on rayon's pool, bit-identical: in parallel,
/// every full block's floor sum and remainder [`quarter_sums`]; then, on
/// one thread, the floor sums added up (integers: any order) and
/// the remainder sums folded in block order by [`block_end`], as in
/// [`systematic_walk_par`]; the last, partial block (if any) by the
/// sequential loop. Also pushes to `starts`, for each task of `t` blocks,
/// its starting cumulative remainder and the floors before it (what
/// [`residual_walk_par`] starts from).
fn residual_totals_par(isa: Isa, w: &[f64], scale: f64, t: usize, starts: &mut Vec<(f64, i64)>) -> (usize, f64) {
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
fn residual_walk_scalar(w: &[f64], scale: f64, out: &mut [i64], draws: usize, factor: f64, u: f64) {
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
fn residual_count(c: f64, factor: f64, u: f64) -> i32 {
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
fn residual_counts_body(c: &[f64], factor: f64, u: f64, kk: &mut [i32]) {
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
fn residual_walk_blocked(isa: Isa, w: &[f64], scale: f64, out: &mut [i64], draws: usize, factor: f64, u: f64) {
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
fn residual_blocks(
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
fn residual_walk_par(isa: Isa, w: &[f64], scale: f64, out: &mut [i64], draws: usize, factor: f64, u: f64, t: usize, starts: &[(f64, i64)]) {
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

/// One block of [`residual_walk_blocked`]; returns the block's last
/// cumulative remainder, the new output position and the extras given so
/// far.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn residual_block_body(
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
fn residual_repair(w: &[f64], scale: f64, out: &mut [i64], pos: usize) {
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

/// Resample: write `out.len()` ancestor indices, in increasing order, drawn
/// by `scheme` from the unnormalised log weights `log_weights`.
///
/// Errors on an empty `log_weights`, a NaN or `+inf` log weight, all log
/// weights `-inf`, an empty `out`, and on supplied uniforms of the wrong
/// count or outside `[0, 1)` (see [`Uniforms::Given`]). On error `out` may
/// have been partially written.
///
/// Systematic and residual resampling of at least 262,144 particles run on
/// rayon's current thread pool (see "Threads" in the module docs); the
/// output is the same, bit for bit, for any number of threads.
pub fn resample_into(scheme: Scheme, log_weights: &[f64], out: &mut [i64], uniforms: Uniforms<'_>) -> Result<(), ResampleError> {
    // Only the systematic and residual walks parallelise. For the other
    // two a parallel `exp` pass alone measured no faster: what it saves,
    // their sequential walk loses fetching the weights from other cores'
    // caches.
    let par = match scheme {
        Scheme::Systematic | Scheme::Residual => par_plan(log_weights.len()),
        Scheme::Stratified | Scheme::Multinomial => None,
    };
    if par.is_some() && rayon::current_thread_index().is_none() {
        // Hand the whole call to one pool thread, so that its parallel
        // passes are forked locally there rather than each injected into
        // the pool (and waited for) from outside. It borrows this thread's
        // scratch buffer for the weights, so that whichever pool thread
        // runs the call, the same (warm) buffer serves, and pool threads
        // keep none.
        let buf = scratch::take(0, log_weights.len());
        let (r, buf) = rayon::scope(move |_| {
            let own = scratch::swap(0, buf);
            let r = resample_with(Isa::detect(), scheme, log_weights, out, uniforms, par);
            (r, scratch::swap(0, own))
        });
        scratch::give(0, buf);
        return r;
    }
    resample_with(Isa::detect(), scheme, log_weights, out, uniforms, par)
}

/// [`resample_into`] with an explicit ISA and [`Par`] plan (the tests
/// force every combination).
fn resample_with(isa: Isa, scheme: Scheme, log_weights: &[f64], out: &mut [i64], uniforms: Uniforms<'_>, par: Par) -> Result<(), ResampleError> {
    let ws = weights(isa, log_weights, par, scheme == Scheme::Systematic)?;
    if out.is_empty() {
        return Err(ResampleError::NoDraws);
    }
    if let Uniforms::Given(u) = &uniforms {
        check_uniforms(u)?;
    }
    match scheme {
        Scheme::Systematic => systematic_kernel(isa, &ws, out, uniforms, par),
        Scheme::Stratified => stratified_kernel(&ws, out, uniforms),
        Scheme::Multinomial => multinomial_kernel(isa, ws, out, uniforms),
        Scheme::Residual => residual_kernel(isa, &ws, out, uniforms, par),
    }
}

/// [`resample_into`] into a fresh vector of `n` indices, drawing from `rng`.
pub fn resample(scheme: Scheme, log_weights: &[f64], n: usize, rng: &mut ResampleRng) -> Result<Vec<i64>, ResampleError> {
    let mut out = vec![0i64; n];
    resample_into(scheme, log_weights, &mut out, Uniforms::Rng(rng))?;
    Ok(out)
}

/// Effective sample size `(sum w)^2 / sum w^2`, in `[1, N]`, computed from
/// unnormalised log weights in one pass. Same errors as [`resample_into`]
/// for bad log weights.
pub fn ess(log_weights: &[f64]) -> Result<f64, ResampleError> {
    let s = summarize::<true>(Isa::detect(), log_weights)?;
    // sumsq >= 1: the maximum contributes exactly 1.
    Ok(s.sum * s.sum / s.sumsq)
}

/// `log(sum_i exp(lw_i))`, computed stably in one pass.
pub fn log_sum_exp(log_weights: &[f64]) -> Result<f64, ResampleError> {
    let s = summarize::<false>(Isa::detect(), log_weights)?;
    Ok(s.max + s.sum.ln())
}

/// `out[i] = lw_i - log_sum_exp(lw)`, so that `exp(out)` sums to 1 (`-inf`
/// stays `-inf`). Returns the log normaliser `log_sum_exp(lw)`.
pub fn log_normalize_into(log_weights: &[f64], out: &mut [f64]) -> Result<f64, ResampleError> {
    if out.len() != log_weights.len() {
        return Err(ResampleError::OutputLength {
            expected: log_weights.len(),
            got: out.len(),
        });
    }
    let lse = log_sum_exp(log_weights)?;
    for (o, &v) in out.iter_mut().zip(log_weights) {
        *o = v - lse;
    }
    Ok(lse)
}

#[cfg(test)]
mod tests;
