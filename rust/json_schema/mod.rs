//! JSON Schema constraints: a front end that compiles a schema (draft
//! 2020-12, draft-07 spellings accepted) to the same [`Grammar`] the Lark
//! and GBNF front ends produce, so masks, caching, rollback and SMC work
//! unchanged.
//!
//! What the language is:
//! - Values are JSON texts as `json.dumps(value, ensure_ascii=False)`
//!   writes them (see [`strings`] for the one character encoding), with
//!   whitespace per [`Whitespace`].
//! - Properties appear in the order the schema lists them (`properties`,
//!   then required names not listed), each listed one at most once, then
//!   any further keys `additionalProperties` / `patternProperties` allow.
//!   JSON Schema itself does not order keys; fixing the order is what keeps
//!   the grammar linear in the schema (as llguidance and XGrammar do).
//! - Bounded numbers are written without exponent ([`numbers`]).
//! - Counts (`maxLength`, `maxItems`, `minProperties`) are counted by the
//!   lexer for short strings and by the parser otherwise, never by a regex
//!   unrolled to the count.
//!
//! Strict by default: a keyword whose meaning the grammar cannot enforce
//! exactly is an [`Error::Unsupported`](crate::error::Error::Unsupported)
//! naming the keyword and its location; with `strict: false` it is ignored
//! and reported in [`Compiled::warnings`], so the caller knows the mask
//! over-approximates.

mod compile;
mod counted;
pub mod numbers;
mod resolve;
pub mod strings;
mod validate;

use crate::error::{Error, Result};
use crate::grammar::Grammar;
use serde_json::Value;

/// Whitespace between JSON tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whitespace {
    /// Any JSON whitespace between tokens (and around the value).
    Flexible,
    /// None at all.
    Compact,
    /// Exactly these separators between items and between key and value,
    /// as `json.dumps(separators=(item, key))`; none elsewhere.
    Separators { item: String, key: String },
}

/// Compilation settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub whitespace: Whitespace,
    /// Refuse keywords that cannot be enforced exactly (else ignore them
    /// with a warning).
    pub strict: bool,
    /// Deepest nesting of subschemas (and of `$ref`/`allOf` chains).
    pub max_depth: usize,
    /// Count the first characters of a long string (`maxLength` above the
    /// lexer's count) in the lexer, the rest in chunks (see
    /// `compile::chunked_string`): masks inside most strings are then a
    /// copy of precomputed tokens, at the price of a larger lexer. Off,
    /// the whole string is counted in chunks (the fallback where that
    /// lexer grows past its bound).
    pub string_heads: bool,
}

/// Default [`Options::max_depth`].
pub const DEFAULT_MAX_DEPTH: usize = 128;

/// Largest [`Options::max_depth`] accepted: with the compiler's stack
/// (below) a few kilobytes per level leave ample room.
pub const MAX_MAX_DEPTH: usize = 2_000;

/// Stack of the compiler thread (address space; pages are committed only
/// as the recursion touches them).
const COMPILER_STACK_BYTES: usize = 256 << 20;

impl Default for Options {
    fn default() -> Self {
        Options {
            whitespace: Whitespace::Flexible,
            strict: true,
            max_depth: DEFAULT_MAX_DEPTH,
            string_heads: true,
        }
    }
}

/// A compiled schema: the grammar, and what non-strict mode ignored.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub grammar: Grammar,
    pub warnings: Vec<String>,
    /// Some long string starts with a head counted in the lexer
    /// ([`Options::string_heads`]).
    pub string_heads: bool,
}

/// Compile a parsed schema.
pub fn compile(schema: &Value, opts: &Options) -> Result<Compiled> {
    if opts.max_depth > MAX_MAX_DEPTH {
        return Err(Error::Usage(format!("max_depth {} is too large (limit {MAX_MAX_DEPTH})", opts.max_depth)));
    }
    if !schema.is_object() && !schema.is_boolean() {
        return Err(Error::Schema {
            pointer: "#".into(),
            message: format!("a schema must be an object or a boolean, got {schema}"),
        });
    }
    // The compiler recurses once per level of subschema nesting and of
    // `$ref`/`allOf` chains (bounded by `max_depth`): it runs on a thread of
    // its own with a stack sized for the deepest allowed nesting, so no
    // schema can overflow the caller's (e.g. Python's main) thread stack.
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("json-schema".into())
            .stack_size(COMPILER_STACK_BYTES)
            .spawn_scoped(scope, || compile::Compiler::new(schema, opts).run())
            .map_err(|e| Error::Usage(format!("cannot start the JSON Schema compiler thread: {e}")))?
            .join()
            .map_err(|_| Error::Usage("internal error: the JSON Schema compiler panicked (please report the schema)".into()))?
    })
    .map(|(grammar, warnings, string_heads)| Compiled {
        grammar,
        warnings,
        string_heads,
    })
}

/// Compile a schema given as JSON text.
pub fn compile_str(text: &str, opts: &Options) -> Result<Compiled> {
    let v: Value = serde_json::from_str(text).map_err(|e| Error::Schema {
        pointer: "#".into(),
        message: format!("not valid JSON: {e}"),
    })?;
    compile(&v, opts)
}

#[cfg(test)]
mod tests;
