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
//!
//! # Layout
//!
//! This file holds the public API (schemes, errors, `resample_into`, `ess`,
//! `log_normalize_into`), the scratch buffers and the ISA dispatch
//! (`Isa`, `dispatch!`: which SIMD build of a block loop runs). The rest:
//! `simd` (the per-ISA block loops), `weights` (normalisation and the
//! shared walk helpers), `systematic`, `multinomial` (with stratified),
//! `residual` (the kernels), `parallel` (their rayon paths), `tests`; the
//! branch-free `exp`/`ln` are in `crate::fastmath`, shared with `masked`.

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

mod multinomial;
mod parallel;
mod residual;
mod simd;
mod systematic;
mod weights;
use multinomial::*;
use parallel::*;
use residual::*;
use simd::*;
use systematic::*;
use weights::*;

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
