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
    /// Strings with at most this many characters are one lexer terminal,
    /// as are long strings' heads; above [`MIN_LEXER_COUNT`], chunks of
    /// longer ones hold at least this many too (16 otherwise).
    ///
    /// The trade: a token inside a string counted in the lexer costs a
    /// copy of precomputed tokens and a few walks, one near a chunk's end
    /// a parser step and a walk per boundary (1-5 ms on Llama 3); but the
    /// lexer, one DFA over every terminal, grows with the count, and so
    /// does compile time. On MaskBench, 64 made TBM p99 247 us against
    /// 259 and TTFM p99 52 ms against 28 (schemas with patterns beside
    /// long strings), so the default is the smallest. Where the lexer
    /// grows past its bound, the schema is compiled again with a smaller
    /// one ([`Options::smaller_lexer`]).
    pub lexer_count: u64,
}

/// Default [`Options::lexer_count`].
pub const LEXER_COUNT: u64 = MIN_LEXER_COUNT;

/// The smallest [`Options::lexer_count`].
pub const MIN_LEXER_COUNT: u64 = 32;

/// The largest [`Options::lexer_count`]: a counter costs the lexer about
/// 14 states a character (escapes, UTF-8 sequences).
pub const MAX_LEXER_COUNT: u64 = 1024;

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
            lexer_count: LEXER_COUNT,
        }
    }
}

/// A compiled schema: the grammar, and what non-strict mode ignored.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub grammar: Grammar,
    pub warnings: Vec<String>,
    /// The lexer counts strings beyond what the fallback options would
    /// ([`Options::lexer_count`] above [`MIN_LEXER_COUNT`], or a long
    /// string's head, [`Options::string_heads`]): where it grows past its
    /// bound, [`Options::smaller_lexer`] may bring it under.
    pub lexer_counts: bool,
}

impl Options {
    /// The options of the next fallback where a schema compiled with
    /// these made the lexer too large (see [`Compiled::lexer_counts`]):
    /// the smallest lexer count first, then no heads; `None` after both.
    pub fn smaller_lexer(&self) -> Option<Options> {
        if self.lexer_count > MIN_LEXER_COUNT {
            Some(Options {
                lexer_count: MIN_LEXER_COUNT,
                ..self.clone()
            })
        } else if self.string_heads {
            Some(Options {
                string_heads: false,
                ..self.clone()
            })
        } else {
            None
        }
    }
}

/// Compile a parsed schema.
pub fn compile(schema: &Value, opts: &Options) -> Result<Compiled> {
    check(schema, opts)?;
    compile_with_budget(schema, opts, INLINE_STACK_BUDGET)
}

/// What [`compile`] refuses before compiling anything.
fn check(schema: &Value, opts: &Options) -> Result<()> {
    if opts.max_depth > MAX_MAX_DEPTH {
        return Err(Error::Usage(format!("max_depth {} is too large (limit {MAX_MAX_DEPTH})", opts.max_depth)));
    }
    if !(MIN_LEXER_COUNT..=MAX_LEXER_COUNT).contains(&opts.lexer_count) {
        return Err(Error::Usage(format!(
            "lexer_count {} is out of range ({MIN_LEXER_COUNT}..={MAX_LEXER_COUNT})",
            opts.lexer_count
        )));
    }
    if !schema.is_object() && !schema.is_boolean() {
        return Err(Error::Schema {
            pointer: "#".into(),
            message: format!("a schema must be an object or a boolean, got {schema}"),
        });
    }
    Ok(())
}

/// [`compile`], trying the caller's thread first with at most `budget`
/// bytes of stack for the compiler's recursion.
///
/// The compiler recurses once per level of subschema nesting and of
/// `$ref`/`allOf` chains (bounded by `max_depth`), so no fixed stack fits
/// every schema a caller may pass. Most schemas are shallow: they compile
/// on the caller's thread, checked against a floor `budget` below the
/// current stack pointer, provided the thread has `budget` plus a margin
/// left. A schema that reaches the floor (or a thread too short of stack
/// to try) compiles again on a thread of its own, with a stack sized for
/// the deepest allowed nesting. Spawning that thread costs more than
/// compiling a median schema in a freshly forked process (its stack and
/// allocator state are new pages), which is why it is the fallback.
fn compile_with_budget(schema: &Value, opts: &Options, budget: usize) -> Result<Compiled> {
    if let Some(floor) = stack::floor_for(budget) {
        let mut c = compile::Compiler::new(schema, opts).with_stack_floor(floor);
        let r = c.run_in_place();
        if !c.out_of_stack {
            return r.map(compiled);
        }
    }
    on_compiler_thread(|| compile::Compiler::new(schema, opts).run()).map(compiled)
}

fn compiled((grammar, warnings, lexer_counts): (Grammar, Vec<String>, bool)) -> Compiled {
    Compiled {
        grammar,
        warnings,
        lexer_counts,
    }
}

/// Runs `f` on a thread of its own whose stack fits the deepest allowed
/// nesting ([`COMPILER_STACK_BYTES`]).
fn on_compiler_thread<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("json-schema".into())
            .stack_size(COMPILER_STACK_BYTES)
            .spawn_scoped(scope, f)
            .map_err(|e| Error::Usage(format!("cannot start the JSON Schema compiler thread: {e}")))?
            .join()
            .map_err(|_| Error::Usage("internal error: the JSON Schema compiler panicked (please report the schema)".into()))?
    })
}

/// Stack the compiler's recursion may use on the caller's thread
/// ([`compile_with_budget`]): a few hundred levels of nesting.
const INLINE_STACK_BUDGET: usize = 1 << 20;

/// Where the caller's stack ends.
mod stack {
    /// Stack left untouched below the budget: room for the recursions
    /// outside the checked ones (JSON values, at most serde_json's 128
    /// levels; regex compilation) and for signal handlers.
    const MARGIN: usize = 1 << 20;

    /// An address in the current stack frame.
    #[inline(always)]
    pub fn approx_sp() -> usize {
        let marker = 0u8;
        std::hint::black_box(&marker) as *const u8 as usize
    }

    /// The floor `budget` bytes below the current frame, if the current
    /// thread's stack reaches `budget + MARGIN` below it (stacks grow
    /// down on every target this is compiled for); `None` where the
    /// stack's extent is unknown.
    pub fn floor_for(budget: usize) -> Option<usize> {
        let low = lowest_address()?;
        let sp = approx_sp();
        let floor = sp.checked_sub(budget)?;
        (floor.checked_sub(MARGIN)? >= low).then_some(floor)
    }

    /// The lowest usable address of the current thread's stack (above its
    /// guard), asked of the C library once per thread.
    #[cfg(target_os = "linux")]
    fn lowest_address() -> Option<usize> {
        use std::cell::Cell;
        thread_local! {
            static LOW: Cell<Option<Option<usize>>> = const { Cell::new(None) };
        }
        LOW.with(|low| {
            if let Some(v) = low.get() {
                return v;
            }
            let v = query();
            low.set(Some(v));
            v
        })
    }

    #[cfg(target_os = "linux")]
    fn query() -> Option<usize> {
        // SAFETY: `attr` is initialised by pthread_getattr_np before it is
        // read and destroyed exactly once; the out-pointers are valid locals.
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
                return None;
            }
            let mut addr: *mut libc::c_void = std::ptr::null_mut();
            let mut size: libc::size_t = 0;
            let mut guard: libc::size_t = 0;
            let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0 && libc::pthread_attr_getguardsize(&attr, &mut guard) == 0;
            libc::pthread_attr_destroy(&mut attr);
            if !ok || addr.is_null() || size == 0 {
                return None;
            }
            (addr as usize).checked_add(guard)
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn lowest_address() -> Option<usize> {
        None
    }
}

/// Compile a schema given as JSON text.
///
/// Parsing recurses once per level of JSON nesting (serde_json stops at
/// 128), and so does dropping the value: on a thread short of stack (a
/// Python thread started after `threading.stack_size(32768)`) both happen
/// on the compiler's thread, not only the compile.
pub fn compile_str(text: &str, opts: &Options) -> Result<Compiled> {
    let parse = || -> Result<Value> {
        serde_json::from_str(text).map_err(|e| Error::Schema {
            pointer: "#".into(),
            message: format!("not valid JSON: {e}"),
        })
    };
    if stack::floor_for(INLINE_STACK_BUDGET).is_some() {
        return compile(&parse()?, opts);
    }
    on_compiler_thread(|| {
        let v = parse()?;
        check(&v, opts)?;
        compile::Compiler::new(&v, opts).run().map(compiled)
    })
}

#[cfg(test)]
mod tests;
