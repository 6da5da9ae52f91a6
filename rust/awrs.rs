//! Adaptive weighted rejection sampling (AWRS) for constraints that are
//! opaque functions: draw the next token from one step's log-probs `p`
//! subject to a Boolean constraint `c` that can only be *asked* about single
//! tokens (a Python function, a database, a test suite), with an importance
//! weight whose expectation is the allowed mass `Z_c = sum_x p(x) c(x)`.
//!
//! Evaluating `c` on every token of a 128k vocabulary is what we avoid: when
//! the model mostly respects the constraint, a handful of calls suffice.
//!
//! # The three samplers (same interface, see [`sample`])
//! - [`Sampler::Awrs`]: round 1 draws tokens *without replacement* in the
//!   model's order (sequentially from the renormalised remaining mass, via a
//!   sum tree: O(V) setup, O(log V) per draw, never a sort of V) and stops at
//!   the first accepted token `x`. Given the sequence of rejected tokens,
//!   `x` is distributed exactly as `p(x) c(x) / Z_c` (removing rejected
//!   tokens does not change the ratios between allowed ones), so `x` is
//!   independent of the rejections and any weight built from the
//!   rejections plus fresh randomness with expectation `Z_c` is proper.
//!   Round 2 builds that weight: it continues without replacement from
//!   `V \ R1` with fresh draws `y_1, y_2, ...`. With `M_j` the mass left
//!   before draw `j`, `T_j = sum_{i<j} c(y_i) p(y_i) + c(y_j) M_j` has
//!   conditional expectation `Z_c` given the first `j - 1` draws (a
//!   sequential Horvitz-Thompson estimator). Stopping at a time decided by
//!   the past keeps it unbiased, so round 2 stops one draw *after* its first
//!   acceptance `J`: weight `p(y_J) + c(y_{J+1}) M_{J+1}`. It is never
//!   zero when `Z_c > 0` (unlike genlm-control's estimator, which collapses
//!   to `-inf` at tiny allowed mass). Cost: about twice the calls of round 1
//!   plus one.
//! - [`Sampler::Rejection`]: the same two rounds *with* replacement (i.i.d.
//!   draws from `p`); with `K` rejections over both rounds the weight is
//!   `1 / (K + 1)`, Haldane's unbiased estimator of a success probability
//!   from the trials up to the second success.
//! - [`Sampler::Full`]: evaluate every token of positive probability (one
//!   batched call), draw from `p c / Z_c` exactly, weight `Z_c` exactly.
//!
//! # Bounded calls and the fallback
//! `max_calls` bounds the tokens evaluated per step. When it is reached the
//! sampler evaluates all remaining live tokens at once (the full sampler on
//! what is left). The switch depends only on the past, and the value that
//! replaces the stopped estimator is its exact conditional expectation (the
//! remaining allowed mass for AWRS; `E[1/(K+1)]` under the now known
//! geometric law for rejection), so weights stay unbiased. The same fallback
//! handles tokens whose probability underflows `f64` relative to the most
//! likely token (log-space, so exact at any allowed mass, even `1e-300`).
//!
//! All weights are relative to `softmax(logp)`: unnormalised log-probs are
//! fine.
//!
//! # On top of the masked kernel: [`sample_blocked`]
//! The set-up of [`sample`] is O(V) per row (widen, check, maximum, `exp`
//! of every token, the tree), about the cost of the masked kernel's own
//! pass ([`crate::masked`]), which SMC runs anyway for the mask's allowed
//! mass. [`sample_blocked`] starts instead from that pass's per-block sums
//! and computes a block's token weights only when a draw lands in it
//! ([`Blocks`]), so a step costs O(V / 1024 + 1024) per draw after the
//! kernel: at |V| = 128k with ~4 calls, ~20 µs instead of ~200 µs. When
//! less than [`BLOCKS_FLOOR`] of the mass is left it switches to the exact
//! tree, so the remaining mass stays exact to rounding at any allowed mass.

use crate::fastmath::{exp_nonpos, exp_nonpos_f32};
use crate::fxhash::FxMap;
use crate::masked::BLOCK_TOKENS;
use crate::resample::{dispatch, next_uniform, Isa, ResampleRng};

/// Which sampler [`sample`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sampler {
    /// Adaptive weighted rejection sampling (without replacement).
    Awrs,
    /// Plain rejection sampling (with replacement), Haldane weight.
    Rejection,
    /// Evaluate every token of positive probability; exact `Z_c`.
    Full,
}

impl std::str::FromStr for Sampler {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "awrs" => Ok(Self::Awrs),
            "rejection" => Ok(Self::Rejection),
            "full" => Ok(Self::Full),
            _ => Err(format!("unknown sampler {s:?} (expected 'awrs', 'rejection' or 'full')")),
        }
    }
}

/// The outcome of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Draw {
    /// The accepted token; `None` when no token is allowed (`Z_c = 0`).
    pub token: Option<u32>,
    /// Log of the importance weight (an unbiased estimate of `Z_c`);
    /// `-inf` exactly when `token` is `None`.
    pub log_weight: f64,
    /// Tokens passed to the accept function.
    pub calls: usize,
    /// Whether the `max_calls` / underflow fallback ran.
    pub fell_back: bool,
}

/// Why [`sample`] failed: bad log-probs, or the accept function's error.
#[derive(Debug, PartialEq)]
pub enum SampleError<E> {
    /// The log-probs are empty or contain NaN / `+inf`.
    Input(String),
    /// The accept function returned an error (passed through untouched).
    Accept(E),
}

impl<E: std::fmt::Display> std::fmt::Display for SampleError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Input(m) => f.write_str(m),
            Self::Accept(e) => e.fmt(f),
        }
    }
}

/// Binary sum tree over the unnormalised probabilities. Parents are
/// recomputed from their children on every update (never by subtraction), so
/// the remaining mass stays accurate to relative rounding even after almost
/// all of it has been removed.
struct SumTree<'a> {
    size: usize,
    node: &'a mut Vec<f64>,
}

impl<'a> SumTree<'a> {
    /// The tree of `exp(logp - max)` in `node` (a reused buffer: after the
    /// first call of a thread no page is freshly mapped, which at |V| =
    /// 128k costs more than the arithmetic). `exp_nonpos` flushes values
    /// below `e^-708` to 0; such tokens are reached by the log-space
    /// fallback like any other zero-mass token.
    fn build(node: &'a mut Vec<f64>, logp: &[f64], max: f64) -> Self {
        Self::from_leaves(node, logp.len(), |leaves| fill_leaves(Isa::detect(), leaves, logp, max))
    }

    /// The tree of `len` leaves written by `fill` (zeroed beforehand).
    fn from_leaves(node: &'a mut Vec<f64>, len: usize, fill: impl FnOnce(&mut [f64])) -> Self {
        let size = len.next_power_of_two();
        node.clear();
        node.resize(2 * size, 0.0);
        fill(&mut node[size..size + len]);
        for i in (1..size).rev() {
            node[i] = node[2 * i] + node[2 * i + 1];
        }
        Self { size, node }
    }

    fn total(&self) -> f64 {
        self.node[1]
    }

    fn get(&self, i: usize) -> f64 {
        self.node[self.size + i]
    }

    fn remove(&mut self, i: usize) {
        let mut k = self.size + i;
        self.node[k] = 0.0;
        while k > 1 {
            k /= 2;
            self.node[k] = self.node[2 * k] + self.node[2 * k + 1];
        }
    }

    /// The leaf whose cumulative interval holds `u * total`. Never returns a
    /// zero-mass leaf while the total is positive (rounding at a boundary
    /// steers to the non-empty side).
    fn find(&self, u: f64) -> usize {
        let mut target = u * self.total();
        let mut k = 1;
        while k < self.size {
            let (l, r) = (self.node[2 * k], self.node[2 * k + 1]);
            if (target < l && l > 0.0) || r <= 0.0 {
                k *= 2;
            } else {
                target -= l;
                k = 2 * k + 1;
            }
        }
        k - self.size
    }
}

/// `leaves[i] = exp(logp[i] - max)`, vectorised (AVX2 + FMA / AVX-512
/// builds chosen at run time: without them `mul_add` is a libm call).
fn fill_leaves(isa: Isa, leaves: &mut [f64], logp: &[f64], max: f64) {
    dispatch!(
        isa,
        fn generic(leaves: &mut [f64], logp: &[f64], max: f64) -> () {
            for (o, &x) in leaves.iter_mut().zip(logp) {
                *o = exp_nonpos(x - max);
            }
        }
    )
}

/// The float types of log-probs the samplers read in place, with the
/// weight `exp(x - max)` of an entry computed exactly as the masked kernel
/// ([`crate::masked`]) computes it: in the input's own precision.
pub trait LogProb: Copy + Into<f64> + Sync {
    /// `exp(self - max)` (`self <= max`, `max` one of the row's values).
    fn weight(self, max: f64) -> f64;

    /// `out[j] = x[j].weight(max)` where bit `j` of `words` is on (bits
    /// past its end are off), else 0; vectorised like the kernel's loops.
    fn weights(x: &[Self], words: &[u32], max: f64, out: &mut [f64]);
}

/// The body of [`LogProb::weights`] for one float type (a macro, so that
/// it is written out inside each ISA build of `dispatch!`): a word (32
/// tokens) at a time, a fixed trip count over the word's bits that
/// vectorises; an all-off word is zeros.
macro_rules! word_weights {
    ($x:expr, $words:expr, $m:expr, $out:expr, $exp:path, $t:ty) => {{
        let (x, words, m, out): (&[$t], &[u32], $t, &mut [f64]) = ($x, $words, $m, $out);
        for (c, (o, xs)) in out.chunks_mut(32).zip(x.chunks(32)).enumerate() {
            let bits = words.get(c).copied().unwrap_or(0);
            if bits == 0 {
                o.fill(0.0);
                continue;
            }
            for (j, (oj, &v)) in o.iter_mut().zip(xs).enumerate() {
                let on = (bits >> j) & 1 != 0;
                *oj = $exp(if on { v - m } else { <$t>::NEG_INFINITY }) as f64;
            }
        }
    }};
}

impl LogProb for f32 {
    #[inline]
    fn weight(self, max: f64) -> f64 {
        exp_nonpos_f32(self - max as f32) as f64
    }

    fn weights(x: &[f32], words: &[u32], max: f64, out: &mut [f64]) {
        dispatch!(
            Isa::detect(),
            fn generic(x: &[f32], words: &[u32], max: f64, out: &mut [f64]) -> () {
                word_weights!(x, words, max as f32, out, exp_nonpos_f32, f32)
            }
        )
    }
}

impl LogProb for f64 {
    #[inline]
    fn weight(self, max: f64) -> f64 {
        exp_nonpos(self - max)
    }

    fn weights(x: &[f64], words: &[u32], max: f64, out: &mut [f64]) {
        dispatch!(
            Isa::detect(),
            fn generic(x: &[f64], words: &[u32], max: f64, out: &mut [f64]) -> () {
                word_weights!(x, words, max, out, exp_nonpos, f64)
            }
        )
    }
}

/// A block's worth of mask words, all on (for rows without a mask).
const ALL_ON: [u32; BLOCK_TOKENS / 32] = [u32::MAX; BLOCK_TOKENS / 32];

/// Whether token `t` is allowed by a packed bitmask row (`None`: all are).
#[inline]
fn bit_on(mask: Option<&[u32]>, t: usize) -> bool {
    mask.is_none_or(|m| m.get(t / 32).is_some_and(|&w| (w >> (t % 32)) & 1 != 0))
}

/// The log-probs of one row as the samplers see them, masked-out tokens at
/// `-inf`: either an f64 copy with the mask applied, or the caller's row
/// and bitmask read in place.
trait RowLogp {
    fn len(&self) -> usize;
    fn at(&self, t: usize) -> f64;
}

/// An f64 row with the mask already applied.
struct Dense<'a>(&'a [f64]);

impl RowLogp for Dense<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn at(&self, t: usize) -> f64 {
        self.0[t]
    }
}

/// A row of log-probs and its optional bitmask, read in place.
struct MaskedRow<'a, L> {
    logp: &'a [L],
    mask: Option<&'a [u32]>,
}

impl<L: LogProb> RowLogp for MaskedRow<'_, L> {
    fn len(&self) -> usize {
        self.logp.len()
    }
    fn at(&self, t: usize) -> f64 {
        if bit_on(self.mask, t) {
            self.logp[t].into()
        } else {
            f64::NEG_INFINITY
        }
    }
}

/// Below this fraction of the row's first total, [`Blocks`] hands over to
/// an exact [`SumTree`]: the block masses it starts from are differences of
/// the masked kernel's cumulative sums, each off by at most half an ulp of
/// the running total, so with `nb` blocks the remaining mass is known to
/// `nb * 1.1e-16` of the first total: under `1e-6` of it that would be
/// over `1e-8` relative for a 128k vocabulary, so the exact tree takes over.
const BLOCKS_FLOOR: f64 = 1e-6;

/// The remaining mass of a row as blocks of [`BLOCK_TOKENS`] tokens: what
/// lets AWRS skip its O(V) set-up when the masked kernel has already made
/// the pass. Block masses start as the kernel's (differences of its
/// cumulative sums); a block's token weights are computed only when a draw
/// lands in it (with the kernel's formula, [`LogProb::weight`]), and from
/// then on its mass is the sum of those weights with the removed tokens
/// zeroed (recomputed, never by subtraction). A draw scans the ~V / 1024
/// block masses, then one block: O(V / 1024 + 1024).
struct Blocks<'a, L> {
    row: MaskedRow<'a, L>,
    max: f64,
    mass: Vec<f64>,
    /// The blocks a draw has entered.
    visited: Vec<Visited>,
    total: f64,
    floor: f64,
}

/// Tokens per group inside a visited block: a draw and a removal each add
/// up one group and the block's group sums (two chains of 32 additions),
/// not a chain of 1,024.
const GROUP: usize = 32;

/// A visited block: its token weights (removed tokens at 0) and their sums
/// per [`GROUP`] tokens.
struct Visited {
    block: usize,
    w: Vec<f64>,
    groups: Vec<f64>,
}

/// Sum of a group (four accumulators: the additions overlap).
fn group_sum(x: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let mut it = x.chunks_exact(4);
    for c in &mut it {
        for l in 0..4 {
            acc[l] += c[l];
        }
    }
    let tail: f64 = it.remainder().iter().sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// The first entry with positive value whose running sum (from `acc`)
/// exceeds `target`, else the last positive one: `(index, sum before it)`.
fn scan(xs: &[f64], mut acc: f64, target: f64) -> Option<(usize, f64)> {
    let mut last = None;
    for (j, &x) in xs.iter().enumerate() {
        if x > 0.0 {
            if acc + x > target {
                return Some((j, acc));
            }
            last = Some((j, acc));
        }
        acc += x;
    }
    last
}

impl<'a, L: LogProb> Blocks<'a, L> {
    /// From the masked kernel's `max` and cumulative block sums `cum` of
    /// this row (`None` when the row has no positive mass).
    fn new(row: MaskedRow<'a, L>, max: f64, cum: &[f64]) -> Option<Self> {
        let total = cum.last().copied().unwrap_or(0.0);
        if total.is_nan() || total <= 0.0 || !max.is_finite() {
            return None;
        }
        let mut prev = 0.0;
        let mass = cum
            .iter()
            .map(|&c| {
                let m = (c - prev).max(0.0);
                prev = c;
                m
            })
            .collect();
        Some(Self {
            row,
            max,
            mass,
            visited: Vec::new(),
            total,
            floor: total * BLOCKS_FLOOR,
        })
    }

    fn weight(&self, t: usize) -> f64 {
        if bit_on(self.row.mask, t) {
            self.row.logp[t].weight(self.max)
        } else {
            0.0
        }
    }

    /// Index into `visited` of block `b`, computing its weights on the
    /// first visit (`true` then).
    fn touch(&mut self, b: usize) -> (usize, bool) {
        if let Some(k) = self.visited.iter().position(|v| v.block == b) {
            return (k, false);
        }
        let start = b * BLOCK_TOKENS;
        let end = (start + BLOCK_TOKENS).min(self.row.logp.len());
        let mut w = vec![0.0; end - start];
        self.block_weights(b, &mut w);
        let groups = w.chunks(GROUP).map(group_sum).collect();
        self.visited.push(Visited { block: b, w, groups });
        (self.visited.len() - 1, true)
    }

    /// The weights of block `b`'s tokens into `out` (its length).
    fn block_weights(&self, b: usize, out: &mut [f64]) {
        let start = b * BLOCK_TOKENS;
        let words: &[u32] = match self.row.mask {
            Some(m) => m.get(start / 32..).unwrap_or(&[]),
            None => &ALL_ON,
        };
        L::weights(&self.row.logp[start..start + out.len()], words, self.max, out);
    }

    /// Block `k` of `visited`'s mass from its group sums, and the total.
    fn update_mass(&mut self, k: usize) {
        let v = &self.visited[k];
        self.mass[v.block] = v.groups.iter().sum();
        self.total = self.mass.iter().sum();
    }

    fn get(&self, i: usize) -> f64 {
        let b = i / BLOCK_TOKENS;
        match self.visited.iter().find(|v| v.block == b) {
            Some(v) => v.w[i % BLOCK_TOKENS],
            None => self.weight(i),
        }
    }

    fn remove(&mut self, i: usize) {
        let (k, _) = self.touch(i / BLOCK_TOKENS);
        let j = i % BLOCK_TOKENS;
        let v = &mut self.visited[k];
        v.w[j] = 0.0;
        let g = j / GROUP;
        let end = ((g + 1) * GROUP).min(v.w.len());
        v.groups[g] = group_sum(&v.w[g * GROUP..end]);
        self.update_mass(k);
    }

    /// The token whose interval holds `u * total` (`None` when nothing is
    /// left). On a block's first visit its mass is replaced by its weights'
    /// sum and the target rescaled into it.
    fn find(&mut self, u: f64) -> Option<usize> {
        loop {
            if self.total.is_nan() || self.total <= 0.0 {
                return None;
            }
            let target = u * self.total;
            // Round-off past the end: the last block, at its end.
            let (b, before) = scan(&self.mass, 0.0, target)?;
            let mut within = (target - before).min(self.mass[b]);
            let (k, fresh) = self.touch(b);
            if fresh {
                let old = self.mass[b];
                self.update_mass(k);
                let s = self.mass[b];
                if s.is_nan() || s <= 0.0 {
                    continue; // the kernel's mass and the weights disagree: search again
                }
                within *= s / old;
            }
            let v = &self.visited[k];
            let (g, acc) = scan(&v.groups, 0.0, within)?;
            let lo = g * GROUP;
            let hi = (lo + GROUP).min(v.w.len());
            let (j, _) = scan(&v.w[lo..hi], acc, within)?;
            return Some(b * BLOCK_TOKENS + lo + j);
        }
    }

    /// Every token's current weight (removed ones 0), for the exact tree.
    fn fill(&self, leaves: &mut [f64]) {
        for (b, out) in leaves.chunks_mut(BLOCK_TOKENS).enumerate() {
            self.block_weights(b, out);
        }
        for v in &self.visited {
            let start = v.block * BLOCK_TOKENS;
            leaves[start..start + v.w.len()].copy_from_slice(&v.w);
        }
    }
}

/// The remaining (unnormalised) mass the samplers draw from: an exact sum
/// tree over all tokens, or [`Blocks`] on top of the masked kernel's pass
/// (which becomes a tree when little mass is left, see [`BLOCKS_FLOOR`]).
enum Masses<'a, L> {
    Tree(SumTree<'a>),
    Blocks(Blocks<'a, L>, Option<&'a mut Vec<f64>>),
}

impl<L: LogProb> Masses<'_, L> {
    fn total(&self) -> f64 {
        match self {
            Masses::Tree(t) => t.total(),
            Masses::Blocks(b, _) => b.total,
        }
    }

    fn get(&self, i: usize) -> f64 {
        match self {
            Masses::Tree(t) => t.get(i),
            Masses::Blocks(b, _) => b.get(i),
        }
    }

    fn find(&mut self, u: f64) -> Option<usize> {
        match self {
            Masses::Tree(t) => (t.total() > 0.0).then(|| t.find(u)),
            Masses::Blocks(b, _) => b.find(u),
        }
    }

    fn remove(&mut self, i: usize) {
        match self {
            Masses::Tree(t) => t.remove(i),
            Masses::Blocks(b, node) => {
                b.remove(i);
                if b.total < b.floor {
                    if let Some(node) = node.take() {
                        let tree = SumTree::from_leaves(node, b.row.logp.len(), |l| b.fill(l));
                        *self = Masses::Tree(tree);
                    }
                }
            }
        }
    }
}

fn log_sum_exp(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = xs.clone().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + xs.map(|x| (x - m).exp()).sum::<f64>().ln()
}

fn log_add_exp(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// Per-step state shared by the samplers.
struct Step<'a, F> {
    logp: &'a dyn RowLogp,
    /// `log sum exp(logp)`: weights are relative to the normalised `p`.
    log_norm: f64,
    /// `exp(logp - max)`, the scale of the sum tree.
    log_scale: f64,
    accept: &'a mut F,
    calls: usize,
}

impl<F, E> Step<'_, F>
where
    F: FnMut(&[u32]) -> Result<Vec<bool>, E>,
{
    fn ask(&mut self, toks: &[u32]) -> Result<Vec<bool>, SampleError<E>> {
        self.calls += toks.len();
        let ok = (self.accept)(toks).map_err(SampleError::Accept)?;
        if ok.len() != toks.len() {
            return Err(SampleError::Input(format!(
                "accept function returned {} answers for {} tokens",
                ok.len(),
                toks.len()
            )));
        }
        Ok(ok)
    }

    fn ask_one(&mut self, tok: usize) -> Result<bool, SampleError<E>> {
        Ok(self.ask(&[tok as u32])?[0])
    }

    /// Unnormalised tree value -> log of normalised probability.
    fn log_mass(&self, v: f64) -> f64 {
        v.ln() + self.log_scale - self.log_norm
    }

    /// Evaluate every candidate in one batch; draw one allowed token from
    /// `p c` restricted to them and return it with the log of their allowed
    /// (normalised) mass. `(None, -inf)` when none is allowed.
    fn full(&mut self, cands: Vec<u32>, rng: &mut ResampleRng) -> Result<(Option<u32>, f64), SampleError<E>> {
        let ok = self.ask(&cands)?;
        let allowed: Vec<u32> = cands.into_iter().zip(ok).filter_map(|(t, a)| a.then_some(t)).collect();
        Ok(self.full_known(allowed, rng))
    }

    /// Draw from `p` restricted to `allowed` (answers already known) and
    /// return the log of their normalised mass.
    fn full_known(&self, allowed: Vec<u32>, rng: &mut ResampleRng) -> (Option<u32>, f64) {
        let lz = log_sum_exp(allowed.iter().map(|&t| self.logp.at(t as usize)));
        if lz == f64::NEG_INFINITY {
            return (None, lz);
        }
        let mut target = next_uniform(rng);
        let mut tok = *allowed.last().unwrap();
        for &t in &allowed {
            target -= (self.logp.at(t as usize) - lz).exp();
            if target < 0.0 {
                tok = t;
                break;
            }
        }
        (Some(tok), lz - self.log_norm)
    }
}

/// Draw one token from `softmax(logp)` restricted to the tokens `accept`
/// allows, with an unbiased importance weight for the allowed mass.
///
/// `accept` receives a batch of token ids and returns one Boolean per id;
/// AWRS and rejection ask one token at a time, the full sampler and the
/// fallback ask all remaining live tokens in one batch. `max_calls` bounds
/// the tokens evaluated before the fallback (see the module docs); `0` means
/// full evaluation at once.
pub fn sample<L, F, E>(logp: &[L], sampler: Sampler, max_calls: usize, rng: &mut ResampleRng, accept: F) -> Result<Draw, SampleError<E>>
where
    L: Copy + Into<f64>,
    F: FnMut(&[u32]) -> Result<Vec<bool>, E>,
{
    sample_masked(logp, None, sampler, max_calls, rng, accept)
}

/// [`sample`] from `softmax(logp)` restricted to the tokens of a packed
/// bitmask first (bit `t % 32` of word `t / 32`; tokens past its end are
/// excluded): the accept function is never asked about a masked-out token,
/// and the weight estimates the allowed mass relative to the *masked*
/// distribution (multiply by the mask's allowed mass for the mass under
/// `softmax(logp)`).
pub fn sample_masked<L, F, E>(
    logp: &[L],
    mask: Option<&[u32]>,
    sampler: Sampler,
    max_calls: usize,
    rng: &mut ResampleRng,
    mut accept: F,
) -> Result<Draw, SampleError<E>>
where
    L: Copy + Into<f64>,
    F: FnMut(&[u32]) -> Result<Vec<bool>, E>,
{
    check_row_len(logp.len())?;
    // Reused buffers (see `SumTree::build`); taken out of the thread-local
    // slot, so a nested call from inside `accept` just gets fresh ones.
    let mut scratch = SCRATCH.with(|c| std::mem::take(&mut *c.borrow_mut()));
    let r = sample_in(&mut scratch, logp, mask, sampler, max_calls, rng, &mut accept);
    SCRATCH.with(|c| *c.borrow_mut() = scratch);
    r
}

/// A row's length as every sampler needs it: not empty, and token ids fit
/// in `u32`.
fn check_row_len<E>(len: usize) -> Result<(), SampleError<E>> {
    if len == 0 {
        return Err(SampleError::Input("log-probs are empty".into()));
    }
    if len > u32::MAX as usize {
        return Err(SampleError::Input("vocabulary larger than 2^32".into()));
    }
    Ok(())
}

/// Buffers reused across calls on one thread.
#[derive(Default)]
struct Scratch {
    logp: Vec<f64>,
    node: Vec<f64>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

fn sample_in<L, F, E>(
    scratch: &mut Scratch,
    input: &[L],
    mask: Option<&[u32]>,
    sampler: Sampler,
    max_calls: usize,
    rng: &mut ResampleRng,
    accept: &mut F,
) -> Result<Draw, SampleError<E>>
where
    L: Copy + Into<f64>,
    F: FnMut(&[u32]) -> Result<Vec<bool>, E>,
{
    let Scratch { logp: logp_buf, node } = scratch;
    logp_buf.clear();
    logp_buf.extend(input.iter().map(|&x| x.into()));
    if let Some(words) = mask {
        for (w, chunk) in logp_buf.chunks_mut(32).enumerate() {
            let bits = words.get(w).copied().unwrap_or(0);
            if bits == u32::MAX {
                continue;
            }
            for (j, x) in chunk.iter_mut().enumerate() {
                if (bits >> j) & 1 == 0 {
                    *x = f64::NEG_INFINITY;
                }
            }
        }
    }
    let logp: &[f64] = logp_buf;
    // NaN or +inf, in one vectorisable pass (masked-out tokens are -inf by now).
    let bad = |x: f64| x.is_nan() | (x == f64::INFINITY);
    if logp.iter().fold(false, |acc, &x| acc | bad(x)) {
        let i = logp.iter().position(|&x| bad(x)).unwrap_or(0);
        return Err(SampleError::Input(format!(
            "log-prob of token {i} is {} (expected a finite number or -inf)",
            logp[i]
        )));
    }
    let max = logp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return Ok(NOTHING);
    }
    let full_only = sampler == Sampler::Full || max_calls == 0;
    let tree = if full_only { None } else { Some(SumTree::build(node, logp, max)) };
    // With the tree: its root is sum exp(logp - max) (pairwise sums).
    let log_norm = match &tree {
        Some(t) => max + t.total().ln(),
        None => log_sum_exp(logp.iter().copied()),
    };
    let dense = Dense(logp);
    let step = Step {
        logp: &dense,
        log_norm,
        log_scale: max,
        accept,
        calls: 0,
    };
    rounds::<f64, F, E>(step, tree.map(Masses::Tree), sampler, max_calls, rng)
}

/// The draw of `sampler` on a row whose masses are set up (`None`: the
/// full sampler, or `max_calls == 0`).
fn rounds<L, F, E>(
    mut step: Step<'_, F>,
    masses: Option<Masses<'_, L>>,
    sampler: Sampler,
    max_calls: usize,
    rng: &mut ResampleRng,
) -> Result<Draw, SampleError<E>>
where
    L: LogProb,
    F: FnMut(&[u32]) -> Result<Vec<bool>, E>,
{
    // Tokens removed by draws without replacement (few: a bitmap is built
    // only for the fallback).
    let mut removed: Vec<u32> = Vec::new();
    let live = |logp: &dyn RowLogp, removed: &[u32]| -> Vec<u32> {
        let mut dead = vec![false; logp.len()];
        for &t in removed {
            dead[t as usize] = true;
        }
        (0..logp.len())
            .filter(|&i| !dead[i] && logp.at(i) > f64::NEG_INFINITY)
            .map(|i| i as u32)
            .collect()
    };
    let finish = |step: &Step<'_, F>, token: Option<u32>, lw: f64, fell_back: bool| Draw {
        token,
        log_weight: if token.is_some() { lw } else { f64::NEG_INFINITY },
        calls: step.calls,
        fell_back,
    };
    let Some(mut tree) = masses else {
        let (tok, lz) = step.full(live(step.logp, &removed), rng)?;
        return Ok(finish(&step, tok, lz, sampler != Sampler::Full));
    };
    match sampler {
        Sampler::Awrs => {
            // Round 1: without replacement until the first acceptance.
            let x = loop {
                let found = if step.calls >= max_calls { None } else { tree.find(next_uniform(rng)) };
                let Some(i) = found else {
                    let (tok, lz) = step.full(live(step.logp, &removed), rng)?;
                    return Ok(finish(&step, tok, lz, true));
                };
                if step.ask_one(i)? {
                    break i as u32;
                }
                tree.remove(i);
                removed.push(i as u32);
            };
            // Round 2: fresh draws from V \ R1, stopped one draw after the
            // first acceptance; `first` holds p(y_J) once it is found.
            let mut first: Option<f64> = None;
            loop {
                let m = tree.total();
                let base = first.map_or(f64::NEG_INFINITY, |v| step.log_mass(v));
                if m <= 0.0 && first.is_some() {
                    // Nothing left with representable mass: c(y) M = 0.
                    return Ok(finish(&step, Some(x), base, false));
                }
                let found = if step.calls >= max_calls { None } else { tree.find(next_uniform(rng)) };
                let Some(i) = found else {
                    if first.is_some() && tree.total() <= 0.0 {
                        return Ok(finish(&step, Some(x), base, false));
                    }
                    let (_, lz) = step.full(live(step.logp, &removed), rng)?;
                    return Ok(finish(&step, Some(x), log_add_exp(base, lz), true));
                };
                // The mass before this draw (a first visit of a block may
                // have refined it).
                let m = tree.total();
                let ok = step.ask_one(i)?;
                if first.is_some() {
                    let lw = if ok { log_add_exp(base, step.log_mass(m)) } else { base };
                    return Ok(finish(&step, Some(x), lw, false));
                }
                if ok {
                    first = Some(tree.get(i));
                }
                tree.remove(i);
                removed.push(i as u32);
            }
        }
        Sampler::Rejection => {
            // Known answers, so the fallback asks only about the unknown.
            let mut known: FxMap<u32, bool> = FxMap::default();
            let mut rejects = 0usize;
            let mut draws = 0usize;
            let mut x: Option<u32> = None;
            loop {
                // Draws, not calls, are bounded: repeats of a known token
                // cost no call but must not loop forever at tiny `Z_c`.
                let found = if draws >= max_calls { None } else { tree.find(next_uniform(rng)) };
                let Some(i) = found else {
                    // Evaluate the rest, then weigh by the exact law of what
                    // the stopped draws would have done.
                    let cands: Vec<u32> = live(step.logp, &removed).into_iter().filter(|t| !known.contains_key(t)).collect();
                    let ok = step.ask(&cands)?;
                    for (&t, a) in cands.iter().zip(ok) {
                        known.insert(t, a);
                    }
                    let mut allowed: Vec<u32> = known.iter().filter_map(|(&t, &a)| a.then_some(t)).collect();
                    allowed.sort_unstable();
                    let (tok, lz) = step.full_known(allowed, rng);
                    // Haldane's 1/(K+1) is unbiased only unconditionally:
                    // replace it by its expectation given what was seen.
                    // Round 2 pending: K = rejects + G, G geometric.
                    // Round 1 pending: K = rejects + G1 + G2, and
                    // E[1/(a+G1+G2)] = Z - Z^2 (a-1) S(a) with S as in
                    // `log_haldane_tail` (a = rejects + 1).
                    let a = rejects + 1;
                    let lt = log_haldane_tail(lz, a);
                    return Ok(match x {
                        None => {
                            let r = (a as f64 - 1.0) * (lz + lt).exp();
                            finish(&step, tok, lz + (-r).ln_1p(), true)
                        }
                        Some(x) => finish(&step, Some(x), lz + lt, true),
                    });
                };
                draws += 1;
                let ok = match known.get(&(i as u32)) {
                    // A repeat costs nothing: the answer is known.
                    Some(&a) => a,
                    None => {
                        let a = step.ask_one(i)?;
                        known.insert(i as u32, a);
                        a
                    }
                };
                if !ok {
                    rejects += 1;
                    continue;
                }
                match x {
                    None => x = Some(i as u32),
                    Some(x) => {
                        return Ok(finish(&step, Some(x), -((rejects + 1) as f64).ln(), false));
                    }
                }
            }
        }
        Sampler::Full => unreachable!("handled above: no masses for the full sampler"),
    }
}

/// No token is allowed.
const NOTHING: Draw = Draw {
    token: None,
    log_weight: f64::NEG_INFINITY,
    calls: 0,
    fell_back: false,
};

/// [`sample_masked`] on top of the masked kernel's pass over this row
/// ([`crate::masked::masked_rows`] with the same log-probs and mask):
/// `max` is the row's allowed maximum and `cum` its cumulative block sums.
/// The O(V) set-up of [`sample_masked`] (widening, NaN check, maximum, the
/// `exp` of every token, the sum tree) is skipped: the draws start from
/// the kernel's block masses and compute the weights of the blocks they
/// land in (see [`Blocks`]). The log-probs are trusted to be what the
/// kernel checked (no NaN or `+inf` where allowed). Same weights' meaning
/// as [`sample_masked`] (relative to the masked distribution).
#[allow(clippy::too_many_arguments)]
pub fn sample_blocked<L, F, E>(
    logp: &[L],
    mask: Option<&[u32]>,
    max: f64,
    cum: &[f64],
    sampler: Sampler,
    max_calls: usize,
    rng: &mut ResampleRng,
    mut accept: F,
) -> Result<Draw, SampleError<E>>
where
    L: LogProb,
    F: FnMut(&[u32]) -> Result<Vec<bool>, E>,
{
    check_row_len(logp.len())?;
    let nb = logp.len().div_ceil(BLOCK_TOKENS);
    if cum.len() != nb {
        return Err(SampleError::Input(format!(
            "{} block sums for {} tokens (expected {nb})",
            cum.len(),
            logp.len()
        )));
    }
    let row = MaskedRow { logp, mask };
    let Some(blocks) = Blocks::new(MaskedRow { logp, mask }, max, cum) else {
        return Ok(NOTHING);
    };
    let log_norm = max + blocks.total.ln();
    let full_only = sampler == Sampler::Full || max_calls == 0;
    let step = Step {
        logp: &row,
        log_norm,
        log_scale: max,
        accept: &mut accept,
        calls: 0,
    };
    // The exact tree's buffer, should the blocks hand over to it: reused
    // (see `SumTree::build`).
    let mut node = SCRATCH.with(|c| std::mem::take(&mut c.borrow_mut().node));
    let masses = (!full_only).then_some(Masses::Blocks(blocks, Some(&mut node)));
    let r = rounds(step, masses, sampler, max_calls, rng);
    SCRATCH.with(|c| c.borrow_mut().node = node);
    r
}

/// `ln sum_{j>=0} q^j / (a + j)` with `q = 1 - Z`, `Z = exp(log_z)`: times
/// `Z` it is `E[1 / (a + G)]` for `G` geometric (failures before a success
/// of probability `Z`), the Haldane weight's conditional expectation once
/// the rejection sampler stopped after `a - 1` rejections.
fn log_haldane_tail(log_z: f64, a: usize) -> f64 {
    // A mass is at most 1 (only inconsistent `max` / `cum` given to
    // `sample_blocked` can claim more; the series would then not end).
    if log_z.is_nan() {
        return f64::NAN;
    }
    let z = log_z.exp().min(1.0);
    let a = a as f64;
    if z * a <= 5.0 && z < 1e-3 {
        // Closed form for integer a: q^-a (-ln(1-q) - sum_{i<a} q^i / i);
        // the bracket loses at most a factor e^5 of relative precision here.
        let q = -z; // ln q = ln_1p(-z)
        let ln_q = q.ln_1p();
        let mut partial = 0.0;
        let mut qi = 1.0;
        let mut i = 1.0;
        while i < a {
            qi *= 1.0 - z;
            partial += qi / i;
            i += 1.0;
        }
        let bracket = -log_z - partial;
        if bracket > 0.0 {
            return -a * ln_q + bracket.ln();
        }
    }
    // Direct series: converges geometrically with ratio 1 - z.
    let q = 1.0 - z;
    let (mut sum, mut qj, mut j) = (0.0f64, 1.0f64, 0.0f64);
    loop {
        let term = qj / (a + j);
        sum += term;
        if term < 1e-18 * sum || qj == 0.0 {
            return sum.ln();
        }
        qj *= q;
        j += 1.0;
    }
}

/// One row's question in [`sample_rows`]: row `row` asks about `tokens`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowAsk {
    /// The row (particle) asking.
    pub row: usize,
    /// The token ids it asks about.
    pub tokens: Vec<u32>,
}

enum RowMsg {
    Ask(RowAsk),
    Done(usize, Result<Draw, Option<String>>),
}

/// Scratch buffers for the row threads of [`sample_rows`], kept across
/// calls (a new thread has an empty thread-local slot, and fresh buffers
/// would be page-faulted in again at every step); at most 64 are kept
/// (~3 MiB each at |V| = 128k).
static ROW_SCRATCH: std::sync::Mutex<Vec<Scratch>> = std::sync::Mutex::new(Vec::new());

/// [`sample_masked`] for every row of a `rows x vocab` matrix at once, with
/// *one* call of `accept_batch` per round: the rows run in their own
/// threads (so the O(V) set-up of the rows runs in parallel), each row
/// blocks on its questions, and once every unfinished row is waiting the
/// caller's thread asks all their questions in one batch and hands the
/// answers back. Row `r` uses `rng_from_seed(seeds[r])`, so the draws do
/// not depend on the scheduling and equal those of [`sample_masked`] row by
/// row. `masks`: `rows` packed bitmask rows of `words` words each.
/// `blocks`: the masked kernel's per-row maximum and cumulative block sums
/// for these rows and masks (`rows` and `rows * vocab.div_ceil(1024)`
/// numbers); with them each row draws as [`sample_blocked`], without the
/// O(V) set-up.
///
/// The first error of `accept_batch` is returned (rows still running are
/// told that their question failed, and finish); otherwise the first row's
/// input error, if any.
#[allow(clippy::too_many_arguments)]
pub fn sample_rows<L, F, E>(
    logp: &[L],
    vocab: usize,
    masks: Option<(&[u32], usize)>,
    blocks: Option<(&[f64], &[f64])>,
    sampler: Sampler,
    max_calls: usize,
    seeds: &[u64],
    mut accept_batch: F,
) -> Result<Vec<Draw>, SampleError<E>>
where
    L: LogProb,
    F: FnMut(&[RowAsk]) -> Result<Vec<Vec<bool>>, E>,
{
    let rows = seeds.len();
    if vocab == 0 || logp.len() != rows * vocab {
        return Err(SampleError::Input(format!(
            "log-probs of length {} for {rows} rows of {vocab} tokens",
            logp.len()
        )));
    }
    if let Some((m, words)) = masks {
        if m.len() != rows * words {
            return Err(SampleError::Input(format!("mask of {} words for {rows} rows of {words}", m.len())));
        }
    }
    let nb = vocab.div_ceil(BLOCK_TOKENS);
    if let Some((max, cum)) = blocks {
        if max.len() != rows || cum.len() != rows * nb {
            return Err(SampleError::Input(format!(
                "{} maxima and {} block sums for {rows} rows of {nb} blocks",
                max.len(),
                cum.len()
            )));
        }
    }
    if rows == 0 {
        return Ok(Vec::new());
    }
    use std::sync::mpsc;
    let (to_main, from_rows) = mpsc::channel::<RowMsg>();
    let mut replies = Vec::with_capacity(rows);
    let mut inboxes = Vec::with_capacity(rows);
    for _ in 0..rows {
        let (tx, rx) = mpsc::channel::<Option<Vec<bool>>>();
        replies.push(tx);
        inboxes.push(rx);
    }
    let mut out: Vec<Option<Draw>> = vec![None; rows];
    let mut input_err: Option<(usize, String)> = None;
    let mut call_err: Option<E> = None;
    std::thread::scope(|scope| {
        for (r, inbox) in inboxes.into_iter().enumerate() {
            let to_main = to_main.clone();
            let row = &logp[r * vocab..(r + 1) * vocab];
            let mask = masks.map(|(m, words)| &m[r * words..(r + 1) * words]);
            let seed = seeds[r];
            std::thread::Builder::new()
                .stack_size(1 << 20)
                .spawn_scoped(scope, move || {
                    let mut scratch = ROW_SCRATCH.lock().map(|mut v| v.pop()).ok().flatten().unwrap_or_default();
                    let mut rng = crate::resample::rng_from_seed(seed);
                    let mut ask = |t: &[u32]| -> Result<Vec<bool>, ()> {
                        let msg = RowMsg::Ask(RowAsk { row: r, tokens: t.to_vec() });
                        if to_main.send(msg).is_err() {
                            return Err(());
                        }
                        inbox.recv().ok().flatten().ok_or(())
                    };
                    let res = match blocks {
                        Some((max, cum)) => {
                            let cum = &cum[r * nb..(r + 1) * nb];
                            sample_blocked(row, mask, max[r], cum, sampler, max_calls, &mut rng, &mut ask)
                        }
                        None => sample_in(&mut scratch, row, mask, sampler, max_calls, &mut rng, &mut ask),
                    };
                    if let Ok(mut v) = ROW_SCRATCH.lock() {
                        if v.len() < 64 {
                            v.push(scratch);
                        }
                    }
                    let res = res.map_err(|e| match e {
                        SampleError::Input(m) => Some(m),
                        SampleError::Accept(()) => None,
                    });
                    let _ = to_main.send(RowMsg::Done(r, res));
                })
                .expect("spawn an AWRS row thread");
        }
        drop(to_main);
        let mut running = rows;
        let mut pending: Vec<RowAsk> = Vec::new();
        while running > 0 {
            match from_rows.recv() {
                Ok(RowMsg::Ask(a)) => pending.push(a),
                Ok(RowMsg::Done(r, res)) => {
                    running -= 1;
                    match res {
                        Ok(d) => out[r] = Some(d),
                        Err(Some(m)) => {
                            if input_err.as_ref().is_none_or(|(r0, _)| r < *r0) {
                                input_err = Some((r, m));
                            }
                        }
                        Err(None) => {}
                    }
                }
                Err(_) => break, // every row thread is gone
            }
            if !pending.is_empty() && pending.len() == running {
                pending.sort_by_key(|a| a.row);
                let answers = if call_err.is_some() { Err(()) } else { Ok(()) };
                let answers = answers.and_then(|()| match accept_batch(&pending) {
                    Ok(v) if v.len() == pending.len() && v.iter().zip(&pending).all(|(a, p)| a.len() == p.tokens.len()) => Ok(v),
                    Ok(_) => Err(()),
                    Err(e) => {
                        call_err = Some(e);
                        Err(())
                    }
                });
                match answers {
                    Ok(v) => {
                        for (a, ans) in pending.drain(..).zip(v) {
                            let _ = replies[a.row].send(Some(ans));
                        }
                    }
                    Err(()) => {
                        if call_err.is_none() && input_err.is_none() {
                            input_err = Some((pending[0].row, "accept function returned the wrong number of answers".into()));
                        }
                        for a in pending.drain(..) {
                            let _ = replies[a.row].send(None);
                        }
                    }
                }
            }
        }
    });
    if let Some(e) = call_err {
        return Err(SampleError::Accept(e));
    }
    if let Some((r, m)) = input_err {
        return Err(SampleError::Input(format!("row {r}: {m}")));
    }
    Ok(out
        .into_iter()
        .map(|d| {
            d.unwrap_or(Draw {
                token: None,
                log_weight: f64::NEG_INFINITY,
                calls: 0,
                fell_back: false,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resample::rng_from_seed;
    use std::convert::Infallible;

    const P: [f64; 5] = [0.4, 0.25, 0.2, 0.1, 0.05];

    fn run(logp: &[f64], allowed: &[bool], sampler: Sampler, max_calls: usize, seed: u64) -> Draw {
        let mut rng = rng_from_seed(seed);
        sample(logp, sampler, max_calls, &mut rng, |t: &[u32]| {
            Ok::<_, Infallible>(t.iter().map(|&i| allowed[i as usize]).collect())
        })
        .unwrap()
    }

    /// Monte Carlo over seeds: mean of w / Z_c within 3 SE of 1, and a
    /// chi-square test of the token frequencies against p c / Z_c.
    fn check(logp: &[f64], allowed: &[bool], sampler: Sampler, max_calls: usize) {
        check_draws(logp, allowed, &format!("{sampler:?} max_calls={max_calls}"), 1e-8, |seed| {
            run(logp, allowed, sampler, max_calls, seed)
        });
    }

    /// [`check`] for any way of drawing (`draw(seed)`); `tol`: the
    /// precision of the weights' arithmetic (f32 `exp`: ~2e-7).
    fn check_draws(logp: &[f64], allowed: &[bool], label: &str, tol: f64, mut draw: impl FnMut(u64) -> Draw) {
        let n = 40_000u64;
        let log_norm = log_sum_exp(logp.iter().copied());
        let lz = log_sum_exp(logp.iter().zip(allowed).filter(|(_, &a)| a).map(|(&l, _)| l)) - log_norm;
        let mut counts = vec![0f64; logp.len()];
        let (mut s, mut s2) = (0.0, 0.0);
        for seed in 0..n {
            let d = draw(seed);
            let r = (d.log_weight - lz).exp();
            s += r;
            s2 += r * r;
            counts[d.token.unwrap() as usize] += 1.0;
        }
        let nf = n as f64;
        let mean = s / nf;
        let se = ((s2 / nf - mean * mean).max(0.0) / nf).sqrt();
        assert!((mean - 1.0).abs() <= 3.0 * se + tol, "{label}: E[w]/Z = {mean} (SE {se})");
        let mut chi2 = 0.0;
        let mut df: f64 = -1.0;
        for i in 0..logp.len() {
            if allowed[i] {
                let e = nf * (logp[i] - log_norm - lz).exp();
                chi2 += (counts[i] - e).powi(2) / e;
                df += 1.0;
            } else {
                assert_eq!(counts[i], 0.0, "disallowed token {i} drawn");
            }
        }
        // 99.9% quantile bound, loose for df <= 4: df + 6 sqrt(2 df) + 10.
        assert!(chi2 <= df + 6.0 * (2.0 * df).sqrt() + 10.0, "{label}: chi2 {chi2} df {df}");
    }

    fn lp(p: &[f64]) -> Vec<f64> {
        p.iter().map(|x| x.ln()).collect()
    }

    #[test]
    fn unbiased_and_exact_distribution_all_samplers() {
        let allowed = [false, true, true, false, true];
        for s in [Sampler::Awrs, Sampler::Rejection, Sampler::Full] {
            for cap in [1, 2, 3, 1000] {
                check(&lp(&P), &allowed, s, cap);
            }
        }
    }

    #[test]
    fn exact_at_tiny_allowed_mass() {
        // Allowed mass 1e-12 and (underflowing f64 against the max) 1e-400.
        for tiny in [-12.0 * 10f64.ln(), -400.0 * 10f64.ln()] {
            let logp = vec![0.0, -0.5, tiny, tiny - 1.0, -1.0];
            let allowed = [false, false, true, true, false];
            for s in [Sampler::Awrs, Sampler::Rejection] {
                check(&logp, &allowed, s, 20);
            }
        }
    }

    /// `logp` spread over a vocabulary of several blocks: token `k` of
    /// `logp` at id `k * 1031 + 7`, every other id masked out (or `-inf`
    /// where `masked` is false, with an all-ones mask).
    fn spread(logp: &[f64], masked: bool) -> (Vec<f64>, Vec<u32>, Vec<usize>) {
        let ids: Vec<usize> = (0..logp.len()).map(|k| k * 1031 + 7).collect();
        let v = ids.last().unwrap() + 5;
        let mut wide = vec![if masked { 3.0 } else { f64::NEG_INFINITY }; v];
        let mut mask = vec![if masked { 0 } else { u32::MAX }; v.div_ceil(32)];
        for (k, &t) in ids.iter().enumerate() {
            wide[t] = logp[k];
            mask[t / 32] |= 1 << (t % 32);
        }
        (wide, mask, ids)
    }

    /// The masked kernel's `max` and cumulative block sums of one row.
    fn kernel(row: crate::masked::Logits<'_>, vocab: usize, mask: &[u32]) -> (f64, Vec<f64>) {
        let shape = crate::masked::Shape {
            rows: 1,
            vocab,
            words: mask.len(),
        };
        let (mut lz, mut mx, mut cum) = ([0.0], [0.0], vec![0.0; shape.blocks()]);
        crate::masked::masked_rows(row, mask, shape, &mut lz, &mut mx, &mut cum).unwrap();
        (mx[0], cum)
    }

    /// Draw of [`sample_blocked`] on the spread-out row, back in `logp`'s
    /// indices.
    #[allow(clippy::too_many_arguments)]
    fn run_blocked<L: LogProb>(
        wide: &[L],
        mask: &[u32],
        ids: &[usize],
        allowed: &[bool],
        blocks: &(f64, Vec<f64>),
        s: Sampler,
        cap: usize,
        seed: u64,
    ) -> Draw {
        let mut rng = rng_from_seed(seed);
        let back = |t: u32| ids.iter().position(|&i| i == t as usize).expect("a masked-out token was asked");
        let mut d = sample_blocked(wide, Some(mask), blocks.0, &blocks.1, s, cap, &mut rng, |t: &[u32]| {
            Ok::<_, Infallible>(t.iter().map(|&i| allowed[back(i)]).collect())
        })
        .unwrap();
        d.token = d.token.map(|t| back(t) as u32);
        d
    }

    #[test]
    fn blocked_is_unbiased_and_exact() {
        // Blocks of 1024 tokens, the mass in several of them; f64 and f32
        // log-probs, the mask or -inf removing the other tokens; the tiny
        // case hands over to the exact tree (BLOCKS_FLOOR).
        let tiny = -30.0;
        let cases: [(Vec<f64>, Vec<bool>); 3] = [
            (lp(&P), vec![false, true, true, false, true]),
            (lp(&[0.3, 0.05, 0.1, 0.2, 0.15, 0.2]), vec![true, false, true, false, false, true]),
            (vec![0.0, -0.5, tiny, tiny - 1.0, -1.0], vec![false, false, true, true, false]),
        ];
        for (c, (logp, allowed)) in cases.iter().enumerate() {
            // Masked out by the bitmask, and (first case only) by -inf.
            for masked in [true, false].into_iter().take(if c == 0 { 2 } else { 1 }) {
                let (wide, mask, ids) = spread(logp, masked);
                let b64 = kernel(crate::masked::Logits::F64(&wide), wide.len(), &mask);
                let wide32: Vec<f32> = wide.iter().map(|&x| x as f32).collect();
                let b32 = kernel(crate::masked::Logits::F32(&wide32), wide.len(), &mask);
                let lp32: Vec<f64> = logp.iter().map(|&x| x as f32 as f64).collect();
                for s in [Sampler::Awrs, Sampler::Rejection, Sampler::Full] {
                    for cap in [2, 1000] {
                        check_draws(logp, allowed, &format!("blocked f64 {s:?} {cap}"), 1e-8, |seed| {
                            run_blocked(&wide, &mask, &ids, allowed, &b64, s, cap, seed)
                        });
                        check_draws(&lp32, allowed, &format!("blocked f32 {s:?} {cap}"), 1e-6, |seed| {
                            run_blocked(&wide32, &mask, &ids, allowed, &b32, s, cap, seed)
                        });
                    }
                }
            }
        }
    }

    #[test]
    fn blocked_rows_batch_equals_row_by_row() {
        let (wide, mask, _) = spread(&lp(&P), true);
        let (v, words) = (wide.len(), mask.len());
        let rows = 4;
        let logp: Vec<f64> = (0..rows).flat_map(|_| wide.iter().copied()).collect();
        let masks: Vec<u32> = (0..rows).flat_map(|_| mask.iter().copied()).collect();
        let (max, cum): (Vec<f64>, Vec<Vec<f64>>) = (0..rows).map(|_| kernel(crate::masked::Logits::F64(&wide), wide.len(), &mask)).unzip();
        let cum: Vec<f64> = cum.concat();
        let nb = cum.len() / rows;
        let allowed = |r: usize, t: u32| !(t as usize / 1031 + r).is_multiple_of(3);
        let seeds: Vec<u64> = (0..rows as u64).map(|s| 5 * s + 2).collect();
        for sampler in [Sampler::Awrs, Sampler::Rejection, Sampler::Full] {
            let got = sample_rows(
                &logp,
                v,
                Some((&masks, words)),
                Some((&max, &cum)),
                sampler,
                1000,
                &seeds,
                |asks: &[RowAsk]| Ok::<_, ()>(asks.iter().map(|a| a.tokens.iter().map(|&t| allowed(a.row, t)).collect()).collect()),
            )
            .unwrap();
            for r in 0..rows {
                let mut rng = rng_from_seed(seeds[r]);
                let one = sample_blocked(
                    &wide,
                    Some(&mask),
                    max[r],
                    &cum[r * nb..(r + 1) * nb],
                    sampler,
                    1000,
                    &mut rng,
                    |t: &[u32]| Ok::<_, ()>(t.iter().map(|&x| allowed(r, x)).collect()),
                )
                .unwrap();
                assert_eq!(got[r], one, "{sampler:?} row {r}");
            }
        }
        let mut rng = rng_from_seed(0);
        let bad = sample_blocked(&wide, Some(&mask), max[0], &cum[..2], Sampler::Awrs, 10, &mut rng, |t: &[u32]| {
            Ok::<_, ()>(vec![true; t.len()])
        });
        assert!(matches!(bad, Err(SampleError::Input(_))));
    }

    #[test]
    fn awrs_weight_expectation_by_enumeration() {
        // Exact expectation over all rejection orders for a 5-token
        // vocabulary: enumerate round 1 and round 2 paths with their
        // probabilities (the rng is replaced by exhaustive branching).
        let p = P;
        let c = [false, true, false, true, false];
        let z: f64 = p.iter().zip(c).filter(|(_, a)| *a).map(|(x, _)| x).sum();
        // E[w] = sum over round-1 reject sets R1 (prob of reaching an
        // acceptance after exactly R1) of E[T | R1].
        fn round2(p: &[f64], c: &[bool], live: &mut Vec<bool>, first: Option<f64>) -> f64 {
            let m: f64 = (0..p.len()).filter(|&i| live[i]).map(|i| p[i]).sum();
            let mut e = 0.0;
            for i in 0..p.len() {
                if !live[i] {
                    continue;
                }
                let pr = p[i] / m;
                match first {
                    Some(pj) => e += pr * (pj + if c[i] { m } else { 0.0 }),
                    None => {
                        live[i] = false;
                        let v = if c[i] {
                            round2(p, c, live, Some(p[i]))
                        } else {
                            round2(p, c, live, None)
                        };
                        live[i] = true;
                        e += pr * v;
                    }
                }
            }
            if m == 0.0 {
                return first.unwrap_or(0.0);
            }
            e
        }
        fn round1(p: &[f64], c: &[bool], live: &mut Vec<bool>, acc: &mut [f64]) -> f64 {
            let m: f64 = (0..p.len()).filter(|&i| live[i]).map(|i| p[i]).sum();
            let mut e = 0.0;
            for i in 0..p.len() {
                if !live[i] {
                    continue;
                }
                let pr = p[i] / m;
                if c[i] {
                    let w = round2(p, c, live, None);
                    acc[i] += pr * w; // E[w 1{x = i}] contribution (before path prob)
                    e += pr * w;
                } else {
                    live[i] = false;
                    let mut sub = vec![0.0; p.len()];
                    e += pr * round1(p, c, live, &mut sub);
                    for k in 0..p.len() {
                        acc[k] += pr * sub[k];
                    }
                    live[i] = true;
                }
            }
            e
        }
        let mut acc = vec![0.0; 5];
        let e = round1(&p, &c, &mut vec![true; 5], &mut acc);
        assert!((e - z).abs() < 1e-14, "E[w] = {e}, Z = {z}");
        // Properness: E[w 1{x = i}] = p(i) c(i) for every token.
        for i in 0..5 {
            let want = if c[i] { p[i] } else { 0.0 };
            assert!((acc[i] - want).abs() < 1e-14, "token {i}: {} vs {want}", acc[i]);
        }
    }

    #[test]
    fn mask_excludes_tokens_and_renormalises() {
        // Tokens 0 and 3 masked out; the accept function rejects token 1.
        let p = [0.4, 0.25, 0.2, 0.1, 0.05];
        let logp = lp(&p);
        let mask = [0b10110u32];
        for sampler in [Sampler::Awrs, Sampler::Rejection, Sampler::Full] {
            let mut sum = 0.0;
            let reps = 4000;
            for seed in 0..reps {
                let mut rng = rng_from_seed(seed);
                let d = sample_masked(&logp, Some(&mask), sampler, 1000, &mut rng, |t: &[u32]| -> Result<Vec<bool>, ()> {
                    assert!(t.iter().all(|&x| x != 0 && x != 3), "asked about a masked-out token");
                    Ok(t.iter().map(|&x| x != 1).collect())
                })
                .unwrap();
                assert!(matches!(d.token, Some(2) | Some(4)));
                sum += d.log_weight.exp();
            }
            // Allowed mass under the masked distribution: (0.2 + 0.05) / 0.5.
            let mean = sum / reps as f64;
            assert!((mean - 0.5).abs() < 0.03, "{sampler:?}: {mean}");
        }
    }

    #[test]
    fn rows_batch_equals_row_by_row() {
        let v = 300;
        let rows = 7;
        let mut logp = Vec::new();
        for r in 0..rows {
            for i in 0..v {
                logp.push(-(((i * (r + 3)) % 17) as f64) * 0.4);
            }
        }
        let mut mask = vec![u32::MAX; rows * 10];
        mask[3 * 10] = 0; // row 3: tokens 0..32 masked out
        let allowed = |r: usize, t: u32| !(t as usize + r).is_multiple_of(5) && r != 6;
        let seeds: Vec<u64> = (0..rows as u64).map(|s| 11 * s + 1).collect();
        for sampler in [Sampler::Awrs, Sampler::Rejection, Sampler::Full] {
            let mut calls = 0;
            let got = sample_rows(
                &logp,
                v,
                Some((&mask, 10)),
                None,
                sampler,
                1000,
                &seeds,
                |asks: &[RowAsk]| -> Result<Vec<Vec<bool>>, ()> {
                    calls += 1;
                    Ok(asks.iter().map(|a| a.tokens.iter().map(|&t| allowed(a.row, t)).collect()).collect())
                },
            )
            .unwrap();
            for r in 0..rows {
                let mut rng = rng_from_seed(seeds[r]);
                let one = sample_masked(
                    &logp[r * v..(r + 1) * v],
                    Some(&mask[r * 10..(r + 1) * 10]),
                    sampler,
                    1000,
                    &mut rng,
                    |t: &[u32]| -> Result<Vec<bool>, ()> { Ok(t.iter().map(|&x| allowed(r, x)).collect()) },
                )
                .unwrap();
                assert_eq!(got[r], one, "{sampler:?} row {r}");
            }
            assert_eq!(got[6].token, None);
            let most = got.iter().map(|d| d.calls).max().unwrap();
            assert!(calls <= most.max(1) + 1, "{sampler:?}: {calls} batched calls, at most {most} per row");
        }
        // An error of the batch function reaches the caller; no hang.
        let e = sample_rows(
            &logp,
            v,
            None,
            None,
            Sampler::Awrs,
            1000,
            &seeds,
            |_: &[RowAsk]| -> Result<Vec<Vec<bool>>, &str> { Err("boom") },
        );
        assert_eq!(e.unwrap_err(), SampleError::Accept("boom"));
        let mut bad = logp.clone();
        bad[2 * v + 5] = f64::NAN;
        let e = sample_rows(
            &bad,
            v,
            None,
            None,
            Sampler::Awrs,
            1000,
            &seeds,
            |a: &[RowAsk]| -> Result<Vec<Vec<bool>>, ()> { Ok(a.iter().map(|x| vec![true; x.tokens.len()]).collect()) },
        );
        assert!(matches!(e, Err(SampleError::Input(m)) if m.contains("row 2")));
    }

    #[test]
    fn nothing_allowed_is_minus_inf_not_a_hang() {
        for s in [Sampler::Awrs, Sampler::Rejection, Sampler::Full] {
            let d = run(&lp(&P), &[false; 5], s, 3, 7);
            assert_eq!(d.token, None);
            assert_eq!(d.log_weight, f64::NEG_INFINITY);
        }
        let d = run(&[f64::NEG_INFINITY; 3], &[true; 3], Sampler::Awrs, 3, 7);
        assert_eq!((d.token, d.calls), (None, 0));
    }

    #[test]
    fn bad_input_and_callback_errors() {
        let mut rng = rng_from_seed(0);
        let ok = |t: &[u32]| Ok::<_, String>(vec![true; t.len()]);
        let e = sample(&[0.0f32, f32::NAN], Sampler::Awrs, 5, &mut rng, ok).unwrap_err();
        assert!(matches!(e, SampleError::Input(m) if m.contains("token 1")));
        let e = sample::<f64, _, String>(&[], Sampler::Awrs, 5, &mut rng, ok).unwrap_err();
        assert!(matches!(e, SampleError::Input(_)));
        let e = sample(&[0.0f64, 0.0], Sampler::Awrs, 5, &mut rng, |_: &[u32]| {
            Err::<Vec<bool>, _>("boom".to_string())
        })
        .unwrap_err();
        assert_eq!(e, SampleError::Accept("boom".into()));
    }

    #[test]
    fn awrs_calls_are_few_when_the_model_agrees() {
        // 4096 tokens, 90% of the mass allowed: mean calls stay small.
        let v = 4096;
        let logp: Vec<f64> = (0..v).map(|i| -(i as f64) * 0.01).collect();
        let allowed: Vec<bool> = (0..v).map(|i| i % 10 != 3).collect();
        let mut calls = 0;
        for seed in 0..200 {
            calls += run(&logp, &allowed, Sampler::Awrs, 1000, seed).calls;
        }
        let mean = calls as f64 / 200.0;
        assert!(mean < 5.0, "mean calls {mean} at |V| = {v}");
    }

    #[test]
    fn haldane_tail_matches_series() {
        for (z, a) in [(1e-4f64, 3usize), (0.5, 7), (1e-6, 100), (0.01, 2000)] {
            let direct: f64 = (0..5_000_000).map(|j| (1.0 - z).powi(j) / (a as f64 + j as f64)).sum();
            let got = log_haldane_tail(z.ln(), a).exp();
            assert!((got / direct - 1.0).abs() < 1e-6 || z < 1e-5, "{z} {a}: {got} vs {direct}");
        }
    }
}
