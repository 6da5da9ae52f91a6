//! tokensieve: exact token masks for constrained decoding, and sequential
//! Monte Carlo that turns masked decoding into correctly weighted samples.
//!
//! The crate is pure Rust; everything Python-facing lives in
//! [`python_bindings`] behind the `python` feature, so the core can be tested
//! and benchmarked without an interpreter.
//!
//! Module map (one concept each):
//! - [`vocab`]: token id -> exact bytes, parsed from `tokenizer.json`.
//! - [`toktrie`]: a preorder-flattened trie over those bytes, walked by any
//!   [`toktrie::Recognizer`] to compute a token bitmask with subtree pruning.
//! - [`regex`]: regexes compiled to a byte DFA with live-state analysis.
//! - [`matcher`]: per-sequence state over a compiled constraint (consume,
//!   rollback, masks, mask cache).
//! - [`masked`]: per-row allowed probability mass and draws from a batch of
//!   log-probs and token bitmasks (the numerical core of an SMC step).
//! - [`resample`]: resampling kernels (multinomial, systematic, stratified,
//!   residual), ESS and log-normalisation.
//! - [`smc`]: particle population bookkeeping for SMC.
//! - [`awrs`]: adaptive weighted rejection sampling for opaque constraints.
//! - [`fastmath`]: branch-free `exp`/`ln` shared by `resample` and `masked`.
//! - [`marks`]: visit marks cleared in constant time (subset constructions).

pub mod awrs;
pub mod bitmask;
pub mod error;
pub mod fastmath;
pub mod fxhash;
pub mod grammar;
pub mod json_schema;
pub mod marks;
pub mod masked;
pub mod matcher;
pub mod regex;
pub mod resample;
pub mod smc;
pub mod toktrie;
pub mod vocab;

#[cfg(feature = "python")]
mod python_bindings;

pub use error::{Error, Result};
