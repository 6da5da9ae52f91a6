//! One error type for the constraint half of the crate.
//!
//! Every variant carries enough context (what, where) that the Python layer
//! can surface it as a `ValueError` without adding anything: bad input must
//! never panic.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The tokenizer description could not be understood.
    #[error("invalid tokenizer: {0}")]
    Tokenizer(String),
    /// A regex failed to parse; `offset` is a byte offset into the pattern.
    #[error("invalid regex at position {offset} (line {line}, column {column}): {message}")]
    RegexSyntax {
        offset: usize,
        line: usize,
        column: usize,
        message: String,
    },
    /// The regex is valid but its automaton exceeds a configured limit.
    #[error("regex too large: {0}")]
    TooLarge(String),
    /// A grammar failed to parse or validate; `line`/`column` are 1-based
    /// (0 when the error concerns the grammar as a whole).
    #[error("grammar error{}: {message}", if *line > 0 { format!(" at line {line}, column {column}") } else { String::new() })]
    Grammar { line: usize, column: usize, message: String },
    /// The constraint accepts no string at all.
    #[error("constraint matches no string: {0}")]
    EmptyLanguage(String),
    /// A token id outside `0..vocab.size`.
    #[error("token id {id} out of range for vocabulary of size {size}")]
    TokenOutOfRange { id: u32, size: usize },
    /// A malformed JSON Schema (a keyword of the wrong type, a `$ref` to
    /// nothing); `pointer` locates it (`#/properties/a/minLength`).
    #[error("invalid JSON Schema at {pointer}: {message}")]
    Schema { pointer: String, message: String },
    /// A JSON Schema keyword the compiler cannot enforce exactly (raised in
    /// strict mode; otherwise ignored with a warning).
    #[error("unsupported JSON Schema keyword {keyword:?} at {pointer}: {message} (strict=False ignores it with a warning)")]
    Unsupported { keyword: String, pointer: String, message: String },
    /// Misuse of the matcher API (e.g. rolling back more than was consumed).
    #[error("{0}")]
    Usage(String),
}

pub type Result<T> = std::result::Result<T, Error>;
