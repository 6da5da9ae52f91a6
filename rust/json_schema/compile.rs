//! Schema to grammar: intersect keywords into a [`Shape`], emit BNF.
//!
//! A schema position is compiled as the *conjunction* of the subschemas
//! that apply there (a `Conj`: JSON pointers, sorted). `allOf`, `$ref` and
//! sibling keywords are folded into one [`Shape`] (the intersection of
//! their constraints); `anyOf`/`oneOf` stay symbolic until emission, where
//! each branch becomes its own conjunction (the group's pointer plus a
//! choice marker), so intersections distribute over unions. Grammar
//! symbols are memoised per conjunction: a `$ref` back to an ancestor
//! reaches the same conjunction and the same symbol, which is how
//! recursive schemas (trees, linked lists) compile to recursive rules.
//!
//! Whitespace lives inside the punctuation terminals (`{` followed by
//! optional whitespace, `,` with optional whitespace around), never as an
//! ignored terminal: a string may then be split into several lexemes
//! (long `maxLength` counts) without whitespace slipping in between.

use crate::fxhash::FxMap;
use std::collections::HashMap;

use serde_json::Value;

use super::counted::{self, CharDfa};
use super::numbers::{self, Bound, Dec};
use super::resolve::Doc;
use super::strings::{self, CH};
use super::validate::{self, Validator};
use super::{Options, Whitespace};
use crate::error::{Error, Result};
use crate::grammar::{GrammarBuilder, Sym};
use crate::regex::{Dfa, RegexLimits};

const NULL: u8 = 1;
const BOOL: u8 = 2;
pub(super) const INT: u8 = 4;
/// Numbers that are not integers.
pub(super) const FRAC: u8 = 8;
const STR: u8 = 16;
const ARR: u8 = 32;
const OBJ: u8 = 64;
const ALL: u8 = 127;

/// Largest length / item / property count enforced.
const MAX_COUNT: u64 = 10_000_000;
/// Most distinct subschema conjunctions compiled for one schema.
const MAX_SUBSCHEMAS: usize = 20_000;
/// Most enum values or multiples enumerated into one terminal.
const MAX_ENUMERATED: usize = 10_000;

type Conj = Vec<String>;

/// The intersection of every constraint that applies at one position.
#[derive(Debug, Clone)]
struct Shape {
    never: bool,
    types: u8,
    enums: Option<Vec<Value>>,
    lo: Option<Bound>,
    hi: Option<Bound>,
    multiple_of: Vec<(Dec, String)>,
    min_len: u64,
    max_len: Option<u64>,
    patterns: Vec<(String, String)>,
    formats: Vec<(String, String)>,
    prefix: Vec<Conj>,
    /// `items` (and draft-07 `additionalItems`) subschemas with the length
    /// of the prefix beside them in their own schema object: an `items`
    /// constrains only the positions past *its* `prefixItems`.
    items: Vec<(String, usize)>,
    /// `contains` subschemas and `minContains`.
    contains: Vec<String>,
    min_contains: Option<u64>,
    min_items: u64,
    max_items: Option<u64>,
    props: Vec<(String, Conj)>,
    required: Vec<String>,
    /// `additionalProperties` subschemas with the property names and
    /// patterns of their own schema object, the only ones they exempt.
    additional: Vec<(String, Vec<String>, Vec<String>)>,
    pattern_props: Vec<(String, Conj, String)>,
    min_props: u64,
    max_props: Option<u64>,
    /// What each `properties` / `patternProperties` / `additionalProperties`
    /// / `prefixItems` / `items` / `contains` evaluates, with the chain of
    /// schema objects it was applied through: `unevaluated*` at object O
    /// sees exactly the contributions whose chain passes through O.
    evaluated: Vec<(Vec<String>, Eval)>,
    /// `unevaluatedProperties` / `unevaluatedItems`: (subschema, owner O).
    unevaluated_props: Vec<(String, String)>,
    unevaluated_items: Vec<(String, String)>,
    /// `anyOf` / `oneOf` groups and the disjunctions of negations and
    /// dependencies, expanded one at a time at emission.
    alts: Vec<Alt>,
    /// Property names that must be absent (from negated `required` and
    /// from dependencies whose trigger is absent).
    forbidden: Vec<String>,
    /// Scalar values excluded (negated `enum` / `const`), with the pointer
    /// of the keyword.
    excluded: Vec<(Value, String)>,
    /// Negated `additionalProperties`: some member must witness it.
    witness: Vec<Witness>,
    /// Negated `pattern`s, with the keyword's pointer.
    not_patterns: Vec<(String, String)>,
    /// Negated `format`s (their body regexes), with the keyword's pointer.
    not_formats: Vec<(String, String)>,
    /// Pointer of the keyword each structural constraint came from, for
    /// error messages.
    structural: Option<String>,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            never: false,
            types: ALL,
            enums: None,
            lo: None,
            hi: None,
            multiple_of: Vec::new(),
            min_len: 0,
            max_len: None,
            patterns: Vec::new(),
            formats: Vec::new(),
            prefix: Vec::new(),
            items: Vec::new(),
            contains: Vec::new(),
            min_contains: None,
            min_items: 0,
            max_items: None,
            props: Vec::new(),
            required: Vec::new(),
            additional: Vec::new(),
            pattern_props: Vec::new(),
            min_props: 0,
            max_props: None,
            alts: Vec::new(),
            forbidden: Vec::new(),
            excluded: Vec::new(),
            witness: Vec::new(),
            not_patterns: Vec::new(),
            not_formats: Vec::new(),
            evaluated: Vec::new(),
            unevaluated_props: Vec::new(),
            unevaluated_items: Vec::new(),
            structural: None,
        }
    }
}

/// A union still to be expanded: `n` choices under `group`, each compiled
/// as the position's conjunction plus the marker `@i@group`. An
/// `anyOf`/`oneOf` lists its branch pointers; a disjunction built by
/// [`Compiler::negation`] or a dependency has none (`branches` empty), its
/// choices are lists of [`Atom`]s recomputed from `group` when the marker
/// is seen.
#[derive(Debug, Clone)]
struct Alt {
    group: String,
    branches: Vec<String>,
    n: usize,
    one_of: bool,
}

/// One positive constraint of a disjunct: the building blocks that
/// negations and dependencies are rewritten into.
#[derive(Debug, Clone)]
enum Atom {
    Types(u8),
    /// The property must be present (objects only).
    Present(String),
    /// The property must be absent (objects only).
    Absent(String),
    /// The property's value must fail the schema at the pointer.
    PropNot(String, String),
    /// The schema at the pointer holds, without its annotations (`not` of
    /// `not`, both branches of a failed `oneOf`).
    Holds(String),
    /// The schema at the pointer holds, annotations included
    /// (`dependentSchemas`).
    Applies(String),
    /// The schema at the pointer fails.
    Not(String),
    /// None of these scalar values (with the pointer of the `enum`/`const`).
    Exclude(Vec<Value>, String),
    MinLen(u64),
    MaxLen(u64),
    Lo(Bound),
    Hi(Bound),
    MinItems(u64),
    MaxItems(u64),
    MinProps(u64),
    MaxProps(u64),
    Witness(Witness),
    /// Some item fails the schema at the pointer (`not {items: S}`).
    ContainsNot(String),
    /// The string has no match of the pattern (`not {pattern}`), with the
    /// keyword's pointer.
    NotPattern(String, String),
    /// The string is not in the format (its body regex), with the
    /// keyword's pointer.
    NotFormat(String, String),
}

/// `not {additionalProperties: S}` (in an object listing `names`): a
/// member whose key is none of `names` and whose value fails S
/// (`not_value`, the pointer of S; `None` when S is `false`).
#[derive(Debug, Clone)]
struct Witness {
    names: Vec<String>,
    not_value: Option<String>,
    at: String,
}

/// A union of conjunctions of atoms.
type Disjuncts = Vec<Vec<Atom>>;

/// What a keyword marks as evaluated (for `unevaluated*`).
#[derive(Debug, Clone)]
enum Eval {
    Name(String),
    Pattern(String),
    AllProps,
    Prefix(usize),
    AllItems,
    Contains,
}

struct Punct {
    lb: Sym,
    rb: Sym,
    lk: Sym,
    rk: Sym,
    comma: Sym,
    colon: Sym,
    ws: Option<Sym>,
}

pub struct Compiler<'a> {
    doc: Doc<'a>,
    b: GrammarBuilder,
    opts: &'a Options,
    pub warnings: Vec<String>,
    memo: HashMap<Conj, Sym>,
    p: Punct,
    never: Sym,
    any: Option<Sym>,
    /// DFAs of the regexes names and enum values are tested against
    /// (a pattern is tested against every property name, a terminal
    /// against every enum value): each compiled once.
    dfas: HashMap<String, Dfa>,
    /// Length-counted strings built by [`Self::counted_string`], by
    /// (automaton, min, max).
    counted: FxMap<(CharDfa, u64, Option<u64>), Option<Sym>>,
    /// [`Compiler::chunks`] by `(min, max, quote)`: many strings share one bound.
    chunked: HashMap<(u64, Option<u64>, bool), Sym>,
    /// Character automata of patterns (`true`) and format bodies
    /// (`false`), or why there is none: a schema often repeats a format
    /// (three `oneOf` branches of hostname / ipv4 / ipv6 formats, each
    /// tried for its own disjointness and for the union).
    char_dfas: HashMap<(bool, String), std::result::Result<CharDfa, String>>,
    depth: usize,
    /// The lexer counts strings beyond what the fallback options would
    /// (see [`super::Compiled::lexer_counts`]).
    lexer_counts: bool,
    /// Lowest stack address the recursion may reach (0: unchecked, the
    /// compiler runs on a thread whose stack is sized for `max_depth`).
    stack_floor: usize,
    /// The recursion reached [`Self::stack_floor`]: whatever `run`
    /// returns is void, and the caller starts again on a large stack.
    pub out_of_stack: bool,
}

/// Keywords that constrain a value (all others are annotations): a
/// negation must handle each or refuse.
const ASSERTIONS: &[&str] = &[
    "$ref",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "type",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "items",
    "additionalItems",
    "prefixItems",
    "minItems",
    "maxItems",
    "properties",
    "required",
    "additionalProperties",
    "patternProperties",
    "minProperties",
    "maxProperties",
    "uniqueItems",
    "if",
    "contains",
    "minContains",
    "maxContains",
    "unevaluatedProperties",
    "unevaluatedItems",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "propertyNames",
    "$dynamicRef",
    "$recursiveRef",
];

/// Whether a schema holds for every value without looking (`true`, or
/// annotations only).
fn trivially_true(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Object(o) => o.keys().all(|k| !ASSERTIONS.contains(&k.as_str())),
        _ => false,
    }
}

/// A property name as a JSON pointer segment.
pub(super) fn esc(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

fn hash_ptr(p: &str) -> String {
    format!("#{p}")
}

fn schema_err(ptr: &str, message: impl Into<String>) -> Error {
    Error::Schema {
        pointer: hash_ptr(ptr),
        message: message.into(),
    }
}

pub(super) fn type_bits(v: &Value) -> u8 {
    match v {
        Value::Null => NULL,
        Value::Bool(_) => BOOL,
        Value::Number(n) => match Dec::from_json(n) {
            Some(d) if d.frac.is_empty() => INT,
            _ => FRAC,
        },
        Value::String(_) => STR,
        Value::Array(_) => ARR,
        Value::Object(_) => OBJ,
    }
}

/// JSON Schema equality (numbers by value).
pub(super) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (Dec::from_json(x), Dec::from_json(y)) {
            (Some(p), Some(q)) => p == q,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q)),
        (Value::Object(x), Value::Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w))),
        _ => a == b,
    }
}

fn count(v: &Value, ptr: &str, kw: &str) -> Result<u64> {
    let bad = || schema_err(&format!("{ptr}/{kw}"), format!("{kw} must be a non-negative integer, got {v}"));
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                return Ok(u.min(u64::MAX / 2));
            }
            match n.as_f64() {
                Some(f) if f >= 0.0 && f.fract() == 0.0 => Ok((f.min(1e18)) as u64),
                _ => Err(bad()),
            }
        }
        _ => Err(bad()),
    }
}

fn number(v: &Value, ptr: &str, kw: &str) -> Result<Dec> {
    match v {
        Value::Number(n) => Dec::from_json(n).ok_or_else(|| schema_err(&format!("{ptr}/{kw}"), format!("{kw} is not a finite number"))),
        _ => Err(schema_err(&format!("{ptr}/{kw}"), format!("{kw} must be a number, got {v}"))),
    }
}

/// Keep the tighter of two bounds on one side: `upper` for maxima.
fn tighter(cur: &mut Option<Bound>, new: Bound, upper: bool) {
    use std::cmp::Ordering::*;
    let replace = match cur {
        None => true,
        Some(c) => match (new.value.compare(&c.value), upper) {
            (Greater, false) | (Less, true) => true,
            (Equal, _) => new.exclusive,
            _ => false,
        },
    };
    if replace {
        *cur = Some(new);
    }
}

/// The type bits of a `type` keyword's value (a name or a list of names).
pub(super) fn type_set(v: &Value, kp: &str) -> Result<u8> {
    let names: Vec<&Value> = match v {
        Value::Array(xs) => xs.iter().collect(),
        x => vec![x],
    };
    let mut bits = 0;
    for n in names {
        bits |= match n.as_str() {
            Some("null") => NULL,
            Some("boolean") => BOOL,
            Some("integer") => INT,
            Some("number") => INT | FRAC,
            Some("string") => STR,
            Some("array") => ARR,
            Some("object") => OBJ,
            _ => return Err(schema_err(kp, format!("unknown type {n}"))),
        };
    }
    Ok(bits)
}

impl<'a> Compiler<'a> {
    pub fn new(root: &'a Value, opts: &'a Options) -> Compiler<'a> {
        let mut b = GrammarBuilder::new();
        let p = match &opts.whitespace {
            Whitespace::Flexible => {
                let ws = r"[ \t\n\r]*";
                Punct {
                    lb: Sym::T(b.terminal("{", &format!(r"\{{{ws}"))),
                    rb: Sym::T(b.terminal("}", &format!(r"{ws}\}}"))),
                    lk: Sym::T(b.terminal("[", &format!(r"\[{ws}"))),
                    rk: Sym::T(b.terminal("]", &format!(r"{ws}\]"))),
                    comma: Sym::T(b.terminal(",", &format!("{ws},{ws}"))),
                    colon: Sym::T(b.terminal(":", &format!("{ws}:{ws}"))),
                    ws: Some(Sym::T(b.terminal("WS", r"[ \t\n\r]+"))),
                }
            }
            Whitespace::Compact => Punct {
                lb: Sym::T(b.literal("{")),
                rb: Sym::T(b.literal("}")),
                lk: Sym::T(b.literal("[")),
                rk: Sym::T(b.literal("]")),
                comma: Sym::T(b.literal(",")),
                colon: Sym::T(b.literal(":")),
                ws: None,
            },
            Whitespace::Separators { item, key } => Punct {
                lb: Sym::T(b.literal("{")),
                rb: Sym::T(b.literal("}")),
                lk: Sym::T(b.literal("[")),
                rk: Sym::T(b.literal("]")),
                comma: Sym::T(b.literal(item)),
                colon: Sym::T(b.literal(key)),
                ws: None,
            },
        };
        let never = b.fresh("never");
        b.rule(never, vec![Sym::N(never)]);
        Compiler {
            doc: Doc::new(root),
            b,
            opts,
            warnings: Vec::new(),
            memo: HashMap::new(),
            p,
            never: Sym::N(never),
            any: None,
            dfas: HashMap::new(),
            counted: FxMap::default(),
            chunked: HashMap::new(),
            char_dfas: HashMap::new(),
            depth: 0,
            lexer_counts: false,
            stack_floor: 0,
            out_of_stack: false,
        }
    }

    /// Check the recursion against `floor`, the lowest stack address it
    /// may reach (see [`Self::out_of_stack`]).
    pub fn with_stack_floor(mut self, floor: usize) -> Self {
        self.stack_floor = floor;
        self
    }

    /// Called on entry to each recursive step bounded by `max_depth`
    /// (nesting, `$ref`/`allOf` chains, negations): an error once the
    /// stack is below the floor. The error may be caught on the way up (a
    /// branch tried and refused), so the sticky flag, not the error, is
    /// what voids the run.
    fn stack_check(&mut self, ptr: &str) -> Result<()> {
        if self.stack_floor != 0 && super::stack::approx_sp() < self.stack_floor {
            self.out_of_stack = true;
            return Err(schema_err(ptr, "the caller's stack budget is exhausted"));
        }
        Ok(())
    }

    /// Compile the whole document into a grammar with start symbol `start`.
    /// Also says whether the lexer counts strings beyond what the
    /// fallback options would ([`super::Compiled::lexer_counts`]).
    pub fn run(mut self) -> Result<(crate::grammar::Grammar, Vec<String>, bool)> {
        self.run_in_place()
    }

    /// [`Self::run`], leaving the compiler behind (to read
    /// [`Self::out_of_stack`]); call it once.
    pub fn run_in_place(&mut self) -> Result<(crate::grammar::Grammar, Vec<String>, bool)> {
        let v = self.emit(vec![String::new()])?;
        let start = self.b.nonterminal("start");
        match self.p.ws {
            Some(ws) => {
                let wso = self.b.opt(ws);
                self.b.rule(start, vec![wso, v, wso]);
            }
            None => self.b.rule(start, vec![v]),
        }
        self.b.define_missing(&[self.never]);
        let g = std::mem::take(&mut self.b).finish("start").map_err(|e| match e {
            Error::EmptyLanguage(_) => Error::EmptyLanguage("the schema admits no JSON value (contradictory or unsatisfiable constraints)".into()),
            e => e,
        })?;
        Ok((g, std::mem::take(&mut self.warnings), self.lexer_counts))
    }

    /// Whether `text` is matched in full by `regex`.
    fn full_match(&mut self, regex: &str, text: &str) -> Result<bool> {
        validate::full_match(&mut self.dfas, regex, text)
    }

    /// [`counted::pattern_dfa`] (`is_pattern`) or [`counted::body_dfa`] of
    /// `text`, computed once per compile.
    fn char_dfa(&mut self, is_pattern: bool, text: &str) -> Result<CharDfa> {
        let key = (is_pattern, text.to_string());
        if let Some(r) = self.char_dfas.get(&key) {
            return r.clone().map_err(Error::Usage);
        }
        let r = if is_pattern {
            counted::pattern_dfa(text)
        } else {
            counted::body_dfa(text)
        };
        match r {
            Ok(d) => {
                self.char_dfas.insert(key, Ok(d.clone()));
                Ok(d)
            }
            Err(Error::Usage(m)) => {
                self.char_dfas.insert(key, Err(m.clone()));
                Err(Error::Usage(m))
            }
            Err(e) => Err(e),
        }
    }

    fn unsupported(&mut self, keyword: &str, ptr: &str, message: &str) -> Result<()> {
        if self.opts.strict {
            Err(Error::Unsupported {
                keyword: keyword.to_string(),
                pointer: hash_ptr(ptr),
                message: message.to_string(),
            })
        } else {
            self.warnings
                .push(format!("ignored JSON Schema keyword {keyword:?} at {}: {message}", hash_ptr(ptr)));
            Ok(())
        }
    }

    // ----- shapes -----

    fn shape_of(&mut self, conj: &Conj) -> Result<Shape> {
        let mut s = Shape::default();
        let mut seen = Vec::new();
        for p in conj {
            if p.starts_with('@') {
                continue;
            }
            // `!ptr`: the schema at ptr must fail (a property value under a
            // negated `properties`, the other branches of a `oneOf`).
            match p.strip_prefix('!') {
                Some(q) => self.apply_negated(&mut s, q, conj, &mut Vec::new(), &mut seen)?,
                None => self.apply(&mut s, p, conj, &mut Vec::new(), &mut seen)?,
            }
        }
        Ok(s)
    }

    fn apply(&mut self, s: &mut Shape, ptr: &str, conj: &Conj, chain: &mut Vec<String>, seen: &mut Vec<String>) -> Result<()> {
        self.stack_check(ptr)?;
        if chain.iter().any(|c| c == ptr) {
            return Err(schema_err(
                ptr,
                "$ref cycle with no base case (the schema refers to itself without consuming input)",
            ));
        }
        if seen.iter().any(|c| c == ptr) {
            return Ok(());
        }
        if chain.len() > self.opts.max_depth {
            return Err(schema_err(
                ptr,
                format!("$ref/allOf nesting deeper than max_depth={}", self.opts.max_depth),
            ));
        }
        seen.push(ptr.to_string());
        let v = self.doc.get(ptr).ok_or_else(|| schema_err(ptr, "no such location"))?;
        let o = match v {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => {
                s.never = true;
                return Ok(());
            }
            Value::Object(o) => o,
            other => return Err(schema_err(ptr, format!("a schema must be an object or a boolean, got {other}"))),
        };
        chain.push(ptr.to_string());
        let is_tuple = matches!(o.get("items"), Some(Value::Array(_)));
        for (k, v) in o {
            let kp = format!("{ptr}/{}", esc(k));
            match k.as_str() {
                "$ref" => {
                    let r = v.as_str().ok_or_else(|| schema_err(&kp, "$ref must be a string"))?;
                    let target = self.doc.resolve(r, ptr).map_err(|m| schema_err(&kp, m))?;
                    self.apply(s, &target, conj, chain, seen)?;
                }
                "allOf" | "anyOf" | "oneOf" => {
                    let xs = v
                        .as_array()
                        .filter(|x| !x.is_empty())
                        .ok_or_else(|| schema_err(&kp, format!("{k} must be a non-empty array")))?;
                    let branches: Vec<String> = (0..xs.len()).map(|i| format!("{kp}/{i}")).collect();
                    if k == "allOf" {
                        for b in &branches {
                            self.apply(s, b, conj, chain, seen)?;
                        }
                    } else if let Some(i) = (0..xs.len()).find(|i| conj.contains(&format!("@{i}@{kp}"))) {
                        self.apply(s, &branches[i], conj, chain, seen)?;
                    } else if xs.len() == 1 {
                        self.apply(s, &branches[0], conj, chain, seen)?;
                    } else {
                        s.alts.push(Alt {
                            group: kp,
                            n: branches.len(),
                            branches,
                            one_of: k == "oneOf",
                        });
                    }
                }
                "type" => s.types &= type_set(v, &kp)?,
                "enum" | "const" => {
                    let vals = if k == "const" {
                        vec![v.clone()]
                    } else {
                        v.as_array().ok_or_else(|| schema_err(&kp, "enum must be an array"))?.clone()
                    };
                    s.enums = Some(match s.enums.take() {
                        None => vals,
                        Some(old) => old.into_iter().filter(|x| vals.iter().any(|y| json_eq(x, y))).collect(),
                    });
                }
                "minimum" => tighter(
                    &mut s.lo,
                    Bound {
                        value: number(v, ptr, k)?,
                        exclusive: o.get("exclusiveMinimum") == Some(&Value::Bool(true)),
                    },
                    false,
                ),
                "maximum" => tighter(
                    &mut s.hi,
                    Bound {
                        value: number(v, ptr, k)?,
                        exclusive: o.get("exclusiveMaximum") == Some(&Value::Bool(true)),
                    },
                    true,
                ),
                "exclusiveMinimum" | "exclusiveMaximum" => {
                    if v.is_boolean() {
                        continue; // draft-04 form, read with minimum/maximum
                    }
                    let b = Bound {
                        value: number(v, ptr, k)?,
                        exclusive: true,
                    };
                    if k == "exclusiveMinimum" {
                        tighter(&mut s.lo, b, false)
                    } else {
                        tighter(&mut s.hi, b, true)
                    }
                }
                "multipleOf" => {
                    let d = number(v, ptr, k)?;
                    if d.neg || d.int == "0" && d.frac.is_empty() {
                        return Err(schema_err(&kp, "multipleOf must be positive"));
                    }
                    if !s.multiple_of.iter().any(|(x, _)| *x == d) {
                        s.multiple_of.push((d, kp));
                    }
                }
                "minLength" => s.min_len = s.min_len.max(count(v, ptr, k)?),
                "maxLength" => {
                    let c = count(v, ptr, k)?;
                    s.max_len = Some(s.max_len.map_or(c, |m| m.min(c)));
                }
                "pattern" => {
                    let p = v.as_str().ok_or_else(|| schema_err(&kp, "pattern must be a string"))?;
                    if !s.patterns.iter().any(|(x, _)| x == p) {
                        s.patterns.push((p.to_string(), kp));
                    }
                }
                "format" => {
                    let f = v.as_str().ok_or_else(|| schema_err(&kp, "format must be a string"))?;
                    if !s.formats.iter().any(|(x, _)| x == f) {
                        s.formats.push((f.to_string(), kp));
                    }
                }
                "items" | "additionalItems" => {
                    if k == "additionalItems" && !is_tuple {
                        continue;
                    }
                    match v {
                        Value::Array(xs) => {
                            s.evaluated.push((chain.clone(), Eval::Prefix(xs.len())));
                            for i in 0..xs.len() {
                                let p = format!("{kp}/{i}");
                                match s.prefix.get_mut(i) {
                                    Some(c) => c.push(p),
                                    None => s.prefix.push(vec![p]),
                                }
                            }
                        }
                        _ => {
                            s.evaluated.push((chain.clone(), Eval::AllItems));
                            let local = match (k.as_str(), o.get("prefixItems"), o.get("items")) {
                                ("additionalItems", _, Some(Value::Array(xs))) => xs.len(),
                                (_, Some(Value::Array(xs)), _) => xs.len(),
                                _ => 0,
                            };
                            s.items.push((kp.clone(), local));
                        }
                    }
                    s.structural.get_or_insert(kp);
                }
                "prefixItems" => {
                    let xs = v.as_array().ok_or_else(|| schema_err(&kp, "prefixItems must be an array"))?;
                    s.evaluated.push((chain.clone(), Eval::Prefix(xs.len())));
                    for i in 0..xs.len() {
                        let p = format!("{kp}/{i}");
                        match s.prefix.get_mut(i) {
                            Some(c) => c.push(p),
                            None => s.prefix.push(vec![p]),
                        }
                    }
                    s.structural.get_or_insert(kp);
                }
                "minItems" => s.min_items = s.min_items.max(count(v, ptr, k)?),
                "maxItems" => {
                    let c = count(v, ptr, k)?;
                    s.max_items = Some(s.max_items.map_or(c, |m| m.min(c)));
                }
                "properties" => {
                    let m = v.as_object().ok_or_else(|| schema_err(&kp, "properties must be an object"))?;
                    for name in m.keys() {
                        s.evaluated.push((chain.clone(), Eval::Name(name.clone())));
                        let p = format!("{kp}/{}", esc(name));
                        match s.props.iter_mut().find(|(n, _)| n == name) {
                            Some((_, c)) => c.push(p),
                            None => s.props.push((name.clone(), vec![p])),
                        }
                    }
                    s.structural.get_or_insert(kp);
                }
                "required" => {
                    let xs = v.as_array().ok_or_else(|| schema_err(&kp, "required must be an array of strings"))?;
                    for x in xs {
                        let n = x.as_str().ok_or_else(|| schema_err(&kp, "required must be an array of strings"))?;
                        if !s.required.iter().any(|r| r == n) {
                            s.required.push(n.to_string());
                        }
                    }
                }
                "additionalProperties" => {
                    let keys = |kw: &str| -> Vec<String> {
                        o.get(kw)
                            .and_then(|x| x.as_object())
                            .map(|m| m.keys().cloned().collect())
                            .unwrap_or_default()
                    };
                    s.additional.push((kp.clone(), keys("properties"), keys("patternProperties")));
                    s.evaluated.push((chain.clone(), Eval::AllProps));
                    s.structural.get_or_insert(kp);
                }
                "patternProperties" => {
                    let m = v.as_object().ok_or_else(|| schema_err(&kp, "patternProperties must be an object"))?;
                    for pat in m.keys() {
                        s.evaluated.push((chain.clone(), Eval::Pattern(pat.clone())));
                        let p = format!("{kp}/{}", esc(pat));
                        match s.pattern_props.iter_mut().find(|(n, _, _)| n == pat) {
                            Some((_, c, _)) => c.push(p),
                            None => s.pattern_props.push((pat.clone(), vec![p], kp.clone())),
                        }
                    }
                    s.structural.get_or_insert(kp);
                }
                "minProperties" => s.min_props = s.min_props.max(count(v, ptr, k)?),
                "maxProperties" => {
                    let c = count(v, ptr, k)?;
                    s.max_props = Some(s.max_props.map_or(c, |m| m.min(c)));
                }
                "uniqueItems" if v == &Value::Bool(true) => {
                    self.unsupported(k, &kp, "uniqueItems: true cannot be enforced by a grammar")?;
                }
                "not" => self.apply_negated(s, &kp, conj, chain, seen)?,
                "if" if o.contains_key("then") || o.contains_key("else") => {
                    // Either `if` holds (its annotations count) and so does
                    // `then`, or `if` fails and `else` holds: two disjoint
                    // branches, so their union is exact.
                    match self.negation(&kp, chain.len())? {
                        Err(m) => self.unsupported(k, &kp, &format!("conditional schema whose `if` has no negation ({m})"))?,
                        Ok(_) => {
                            let mut yes = vec![Atom::Applies(kp.clone())];
                            let mut no = vec![Atom::Not(kp.clone())];
                            if o.contains_key("then") {
                                yes.push(Atom::Applies(format!("{ptr}/then")));
                            }
                            if o.contains_key("else") {
                                no.push(Atom::Applies(format!("{ptr}/else")));
                            }
                            self.apply_disjuncts(s, &kp, vec![yes, no], conj, chain, seen)?;
                        }
                    }
                }
                "contains" => {
                    s.evaluated.push((chain.clone(), Eval::Contains));
                    s.contains.push(kp.clone());
                    s.structural.get_or_insert(kp);
                }
                "unevaluatedProperties" | "unevaluatedItems" if v != &Value::Bool(true) => {
                    let owner = ptr.to_string();
                    if k == "unevaluatedProperties" {
                        s.unevaluated_props.push((kp.clone(), owner));
                    } else {
                        s.unevaluated_items.push((kp.clone(), owner));
                    }
                    s.structural.get_or_insert(kp);
                }
                "minContains" => {
                    let c = count(v, ptr, k)?;
                    s.min_contains = Some(s.min_contains.map_or(c, |m| m.max(c)));
                }
                "dependentRequired" | "dependentSchemas" | "dependencies" => self.apply_dependencies(s, k, v, &kp, conj, chain, seen)?,
                "maxContains" | "propertyNames" | "$dynamicRef" | "$recursiveRef" => {
                    self.unsupported(k, &kp, "not supported")?;
                }
                _ => {} // annotations and unknown keywords
            }
        }
        chain.pop();
        Ok(())
    }

    /// `dependentRequired`, `dependentSchemas` and draft-07 `dependencies`
    /// (both forms; a bare string is draft 3's single required name): for
    /// each trigger name, the union "trigger absent" or "an object with the
    /// trigger, its dependents present / its schema holding". Objects keep
    /// schema key order, so absence and presence are plain per-name facts
    /// of the object grammar.
    #[allow(clippy::too_many_arguments)]
    fn apply_dependencies(
        &mut self,
        s: &mut Shape,
        k: &str,
        v: &Value,
        kp: &str,
        conj: &Conj,
        chain: &mut Vec<String>,
        seen: &mut Vec<String>,
    ) -> Result<()> {
        let m = v.as_object().ok_or_else(|| schema_err(kp, format!("{k} must be an object")))?;
        for (name, dep) in m {
            let gp = format!("{kp}/{}", esc(name));
            let mut then = vec![Atom::Types(OBJ), Atom::Present(name.clone())];
            match dep {
                Value::Array(xs) if k != "dependentSchemas" => {
                    for x in xs {
                        let d = x.as_str().ok_or_else(|| schema_err(&gp, "dependencies must list property names"))?;
                        if d != name {
                            then.push(Atom::Present(d.to_string()));
                        }
                    }
                    if then.len() == 2 {
                        continue;
                    }
                }
                Value::String(d) if k == "dependencies" => then.push(Atom::Present(d.clone())),
                Value::Bool(true) => continue,
                Value::Bool(_) | Value::Object(_) if k != "dependentRequired" => then.push(Atom::Applies(gp.clone())),
                _ => return Err(schema_err(&gp, format!("invalid {k} value {dep}"))),
            }
            self.apply_disjuncts(s, &gp, vec![vec![Atom::Absent(name.clone())], then], conj, chain, seen)?;
        }
        Ok(())
    }

    /// `not` of the schema at `ptr`, applied to `s` (see [`Self::negation`]).
    fn apply_negated(&mut self, s: &mut Shape, ptr: &str, conj: &Conj, chain: &mut Vec<String>, seen: &mut Vec<String>) -> Result<()> {
        self.stack_check(ptr)?;
        match self.negation(ptr, chain.len())? {
            Ok(ds) => self.apply_disjuncts(s, &format!("!{ptr}"), ds, conj, chain, seen),
            Err(m) => self.unsupported("not", ptr, &m),
        }
    }

    /// Apply a union: no disjunct makes the position empty, one applies
    /// directly, several become an [`Alt`] under `group` whose choice the
    /// marker `@i@group` in `conj` names once it is expanded.
    fn apply_disjuncts(
        &mut self,
        s: &mut Shape,
        group: &str,
        ds: Disjuncts,
        conj: &Conj,
        chain: &mut Vec<String>,
        seen: &mut Vec<String>,
    ) -> Result<()> {
        let n = ds.len();
        let pick = match n {
            0 => {
                s.never = true;
                return Ok(());
            }
            1 => Some(0),
            _ => (0..n).find(|i| conj.contains(&format!("@{i}@{group}"))),
        };
        match pick {
            Some(i) => {
                for a in ds.into_iter().nth(i).unwrap_or_default() {
                    self.apply_atom(s, a, conj, chain, seen)?;
                }
            }
            None => s.alts.push(Alt {
                group: group.to_string(),
                branches: Vec::new(),
                n,
                one_of: false,
            }),
        }
        Ok(())
    }

    fn apply_atom(&mut self, s: &mut Shape, a: Atom, conj: &Conj, chain: &mut Vec<String>, seen: &mut Vec<String>) -> Result<()> {
        let add = |xs: &mut Vec<String>, n: String| {
            if !xs.contains(&n) {
                xs.push(n)
            }
        };
        match a {
            Atom::Types(t) => s.types &= t,
            Atom::Present(n) => add(&mut s.required, n),
            Atom::Absent(n) => add(&mut s.forbidden, n),
            Atom::PropNot(n, p) => {
                let np = format!("!{p}");
                match s.props.iter_mut().find(|(x, _)| *x == n) {
                    Some((_, c)) => c.push(np),
                    None => s.props.push((n, vec![np])),
                }
                s.structural.get_or_insert(p);
            }
            Atom::Holds(p) => {
                // `not` passes on no annotations: what the schema evaluates
                // stays unevaluated.
                let before = s.evaluated.len();
                self.apply(s, &p, conj, chain, seen)?;
                s.evaluated.truncate(before);
            }
            Atom::Applies(p) => self.apply(s, &p, conj, chain, seen)?,
            Atom::Not(p) => self.apply_negated(s, &p, conj, chain, seen)?,
            Atom::Exclude(vals, at) => s.excluded.extend(vals.into_iter().map(|v| (v, at.clone()))),
            Atom::MinLen(n) => s.min_len = s.min_len.max(n),
            Atom::MaxLen(n) => s.max_len = Some(s.max_len.map_or(n, |m| m.min(n))),
            Atom::Lo(b) => tighter(&mut s.lo, b, false),
            Atom::Hi(b) => tighter(&mut s.hi, b, true),
            Atom::MinItems(n) => s.min_items = s.min_items.max(n),
            Atom::MaxItems(n) => s.max_items = Some(s.max_items.map_or(n, |m| m.min(n))),
            Atom::MinProps(n) => s.min_props = s.min_props.max(n),
            Atom::MaxProps(n) => s.max_props = Some(s.max_props.map_or(n, |m| m.min(n))),
            Atom::ContainsNot(p) => {
                s.structural.get_or_insert(p.clone());
                s.contains.push(format!("!{p}"));
            }
            Atom::NotPattern(p, at) => s.not_patterns.push((p, at)),
            Atom::NotFormat(b, at) => s.not_formats.push((b, at)),
            Atom::Witness(w) => {
                s.structural.get_or_insert(w.at.clone());
                s.witness.push(w);
            }
        }
        Ok(())
    }

    /// The complement of the schema at `ptr` as a union of conjunctions of
    /// positive [`Atom`]s, or why this compiler has none.
    ///
    /// A schema is the conjunction of its keywords, so its negation is the
    /// union of the keywords' negations; each of those is positive again:
    /// `not {type}` the other types, `not {required: [a, b]}` an object
    /// without `a` or without `b`, `not {maxLength: n}` a string of at
    /// least n+1 characters (an assertion on one type fails only on values
    /// of that type), `not {enum}` the excluded scalars, `not {properties:
    /// {a: S}}` an object whose `a` fails S, `not {anyOf}` every branch
    /// negated, `not {oneOf}` no branch or two branches at once, `not
    /// {not: S}` S itself. Nested negations stay symbolic ([`Atom::Not`],
    /// [`Atom::PropNot`]) and are expanded where they apply, so recursive
    /// schemas terminate through the memo of conjunctions.
    fn negation(&mut self, ptr: &str, depth: usize) -> Result<std::result::Result<Disjuncts, String>> {
        const NUM: u8 = INT | FRAC;
        self.stack_check(ptr)?;
        if depth > self.opts.max_depth {
            return Err(schema_err(ptr, format!("not/$ref nesting deeper than max_depth={}", self.opts.max_depth)));
        }
        let v = self.doc.get(ptr).ok_or_else(|| schema_err(ptr, "no such location"))?;
        let o = match v {
            Value::Bool(true) => return Ok(Ok(vec![])),
            Value::Bool(false) => return Ok(Ok(vec![vec![]])),
            Value::Object(o) => o,
            other => return Err(schema_err(ptr, format!("a schema must be an object or a boolean, got {other}"))),
        };
        let mut out: Disjuncts = Vec::new();
        for (k, x) in o {
            let kp = format!("{ptr}/{}", esc(k));
            let branches = |kw: &str| -> Result<usize> {
                x.as_array()
                    .filter(|xs| !xs.is_empty())
                    .map(|xs| xs.len())
                    .ok_or_else(|| schema_err(&kp, format!("{kw} must be a non-empty array")))
            };
            match k.as_str() {
                "type" => out.push(vec![Atom::Types(!type_set(x, &kp)? & ALL)]),
                "enum" | "const" => {
                    let vals = if k == "const" {
                        vec![x.clone()]
                    } else {
                        x.as_array().ok_or_else(|| schema_err(&kp, "enum must be an array"))?.clone()
                    };
                    // Array and object values are excluded only from a
                    // finite enum (see `emit_shape`).
                    out.push(vec![Atom::Exclude(vals, kp)]);
                }
                "required" => {
                    let xs = x.as_array().ok_or_else(|| schema_err(&kp, "required must be an array of strings"))?;
                    for r in xs {
                        let r = r.as_str().ok_or_else(|| schema_err(&kp, "required must be an array of strings"))?;
                        out.push(vec![Atom::Types(OBJ), Atom::Absent(r.to_string())]);
                    }
                }
                "minLength" | "minItems" | "minProperties" => {
                    let n = count(x, ptr, k)?;
                    if n > 0 {
                        out.push(match k.as_str() {
                            "minLength" => vec![Atom::Types(STR), Atom::MaxLen(n - 1)],
                            "minItems" => vec![Atom::Types(ARR), Atom::MaxItems(n - 1)],
                            _ => vec![Atom::Types(OBJ), Atom::MaxProps(n - 1)],
                        });
                    }
                }
                "maxLength" | "maxItems" | "maxProperties" => {
                    let n = count(x, ptr, k)?.saturating_add(1);
                    out.push(match k.as_str() {
                        "maxLength" => vec![Atom::Types(STR), Atom::MinLen(n)],
                        "maxItems" => vec![Atom::Types(ARR), Atom::MinItems(n)],
                        _ => vec![Atom::Types(OBJ), Atom::MinProps(n)],
                    });
                }
                "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                    if x.is_boolean() {
                        continue; // draft-04 form, read with minimum/maximum
                    }
                    let excl = match k.as_str() {
                        "minimum" => o.get("exclusiveMinimum") == Some(&Value::Bool(true)),
                        "maximum" => o.get("exclusiveMaximum") == Some(&Value::Bool(true)),
                        _ => true,
                    };
                    let b = Bound {
                        value: number(x, ptr, k)?,
                        exclusive: !excl,
                    };
                    let atom = if k.ends_with("inimum") { Atom::Hi(b) } else { Atom::Lo(b) };
                    out.push(vec![Atom::Types(NUM), atom]);
                }
                "not" => out.push(vec![Atom::Holds(kp)]),
                "$ref" => {
                    let r = x.as_str().ok_or_else(|| schema_err(&kp, "$ref must be a string"))?;
                    let target = self.doc.resolve(r, ptr).map_err(|m| schema_err(&kp, m))?;
                    match self.negation(&target, depth + 1)? {
                        Ok(ds) => out.extend(ds),
                        Err(m) => return Ok(Err(m)),
                    }
                }
                "allOf" => {
                    for i in 0..branches(k)? {
                        match self.negation(&format!("{kp}/{i}"), depth + 1)? {
                            Ok(ds) => out.extend(ds),
                            Err(m) => return Ok(Err(m)),
                        }
                    }
                }
                "anyOf" => out.push((0..branches(k)?).map(|i| Atom::Not(format!("{kp}/{i}"))).collect()),
                "oneOf" => {
                    let n = branches(k)?;
                    out.push((0..n).map(|i| Atom::Not(format!("{kp}/{i}"))).collect());
                    for i in 0..n {
                        for j in i + 1..n {
                            out.push(vec![Atom::Holds(format!("{kp}/{i}")), Atom::Holds(format!("{kp}/{j}"))]);
                        }
                    }
                }
                "properties" => {
                    let m = x.as_object().ok_or_else(|| schema_err(&kp, "properties must be an object"))?;
                    for (name, sub) in m {
                        if !trivially_true(sub) {
                            let sp = format!("{kp}/{}", esc(name));
                            out.push(vec![Atom::Types(OBJ), Atom::Present(name.clone()), Atom::PropNot(name.clone(), sp)]);
                        }
                    }
                }
                "items" if x.is_object() || x.is_boolean() => {
                    if o.contains_key("prefixItems") {
                        return Ok(Err("`not` of items beside prefixItems".into()));
                    }
                    if !trivially_true(x) {
                        out.push(vec![Atom::Types(ARR), Atom::ContainsNot(kp)]);
                    }
                }
                "pattern" => {
                    let p = x.as_str().ok_or_else(|| schema_err(&kp, "pattern must be a string"))?;
                    out.push(vec![Atom::Types(STR), Atom::NotPattern(p.to_string(), kp)]);
                }
                "additionalProperties" => {
                    if o.get("patternProperties").is_some_and(|p| p.as_object().is_none_or(|m| !m.is_empty())) {
                        return Ok(Err("`not` of additionalProperties beside patternProperties".into()));
                    }
                    if trivially_true(x) {
                        continue;
                    }
                    let names = o
                        .get("properties")
                        .and_then(|p| p.as_object())
                        .map(|m| m.keys().cloned().collect())
                        .unwrap_or_default();
                    let not_value = (x != &Value::Bool(false)).then(|| kp.clone());
                    out.push(vec![Atom::Types(OBJ), Atom::Witness(Witness { names, not_value, at: kp })]);
                }
                "format" => match strings::format_body(x.as_str().unwrap_or_default()) {
                    Ok(None) => {}
                    Ok(Some(b)) => out.push(vec![Atom::Types(STR), Atom::NotFormat(b, kp)]),
                    Err(m) => return Ok(Err(format!("`not` of a format: {m}"))),
                },
                "if" if !o.contains_key("then") && !o.contains_key("else") => {}
                "if" => {
                    // `if` and `then` fails, or `if` fails and `else` fails.
                    if o.contains_key("then") {
                        out.push(vec![Atom::Holds(kp.clone()), Atom::Not(format!("{ptr}/then"))]);
                    }
                    if o.contains_key("else") {
                        out.push(vec![Atom::Not(kp.clone()), Atom::Not(format!("{ptr}/else"))]);
                    }
                }
                "uniqueItems" | "unevaluatedProperties" | "unevaluatedItems"
                    if x == &Value::Bool(false) || k != "uniqueItems" && x == &Value::Bool(true) => {}
                "additionalItems" if !matches!(o.get("items"), Some(Value::Array(_))) => {}
                _ if ASSERTIONS.contains(&k.as_str()) => return Ok(Err(format!("`not` of {k}"))),
                _ => {} // annotations and unknown keywords
            }
        }
        Ok(Ok(out))
    }

    // ----- emission -----

    fn emit(&mut self, mut conj: Conj) -> Result<Sym> {
        self.stack_check(conj.first().map_or("", |s| s.as_str()))?;
        conj.sort();
        conj.dedup();
        if let Some(&s) = self.memo.get(&conj) {
            return Ok(s);
        }
        if self.depth > self.opts.max_depth {
            return Err(schema_err(
                conj.first().map_or("", |s| s.as_str()),
                format!("schema nesting deeper than max_depth={}", self.opts.max_depth),
            ));
        }
        if self.memo.len() >= MAX_SUBSCHEMAS {
            // Unions inside intersections multiply (allOf of k anyOf of b
            // branches is b^k combinations): bound it.
            return Err(Error::TooLarge(format!(
                "the schema expands to more than {MAX_SUBSCHEMAS} distinct subschema combinations (anyOf/oneOf inside allOf multiply)"
            )));
        }
        let nt = self.b.fresh("schema");
        self.memo.insert(conj.clone(), Sym::N(nt));
        self.depth += 1;
        let shape = self.shape_of(&conj);
        let alts = shape.and_then(|s| self.emit_shape(&conj, s));
        self.depth -= 1;
        let alts = alts?;
        if alts.is_empty() {
            self.b.rule(nt, vec![self.never]);
        }
        for a in alts {
            self.b.rule(nt, a);
        }
        Ok(Sym::N(nt))
    }

    fn emit_shape(&mut self, conj: &Conj, mut s: Shape) -> Result<Vec<Vec<Sym>>> {
        if s.never || s.types == 0 {
            return Ok(vec![]);
        }
        if !s.alts.is_empty() {
            let alt = s.alts.remove(0);
            // A `oneOf` whose branches may overlap: exactly one holds when
            // branch i holds and every branch that may overlap it fails, if
            // each of those has a negation.
            let mut overlaps = Vec::new();
            if alt.one_of {
                overlaps = self.overlapping(&alt.branches)?;
            }
            if !overlaps.is_empty() {
                let mut why = None;
                for (j, b) in alt.branches.iter().enumerate() {
                    if overlaps.iter().any(|&(x, y)| x == j || y == j) {
                        if let Err(m) = self.negation(b, 0)? {
                            why.get_or_insert(m);
                        }
                    }
                }
                match why {
                    None => {}
                    Some(m) => {
                        overlaps.clear();
                        self.unsupported(
                            "oneOf",
                            &alt.group,
                            &format!(
                                "branches that are not provably disjoint (different types or a const/enum discriminator) and have no negation ({m})"
                            ),
                        )?;
                    }
                }
            }
            let mut out = Vec::new();
            for i in 0..alt.n {
                let mut c = conj.clone();
                c.push(format!("@{i}@{}", alt.group));
                for &(x, y) in &overlaps {
                    if x == i || y == i {
                        c.push(format!("!{}", alt.branches[x + y - i]));
                    }
                }
                out.push(vec![self.emit(c)?]);
            }
            return Ok(out);
        }
        if let Some(vals) = s.enums.take() {
            return self.emit_enum(conj, &s, vals);
        }
        // An excluded array or object: the array and object grammars do not
        // exclude single values (a finite enum above does).
        if s.types & (ARR | OBJ) != 0 {
            if let Some((_, at)) = s.excluded.iter().find(|(v, _)| v.is_array() || v.is_object()) {
                let at = at.clone();
                self.unsupported("not", &at, "`not` of an enum or const with array or object values, outside a finite enum")?;
            }
        }
        let mut out = Vec::new();
        for (bit, lit, v) in [
            (NULL, "null", Value::Null),
            (BOOL, "true", Value::Bool(true)),
            (BOOL, "false", Value::Bool(false)),
        ] {
            if s.types & bit != 0 && !s.excluded.iter().any(|(x, _)| *x == v) {
                out.push(vec![Sym::T(self.b.literal(lit))]);
            }
        }
        if s.types & (INT | FRAC) != 0 {
            if let Some(re) = self.number_regex_excluding(&s)? {
                out.push(vec![Sym::T(self.b.terminal("NUMBER", &re))]);
            }
        }
        if s.types & STR != 0 {
            if let Some(sym) = self.string(&s)? {
                out.push(vec![sym]);
            }
        }
        if s.types & ARR != 0 {
            if let Some(sym) = self.array(&s)? {
                out.push(vec![sym]);
            }
        }
        if s.types & OBJ != 0 {
            if let Some(sym) = self.object(&s)? {
                out.push(vec![sym]);
            }
        }
        Ok(out)
    }

    /// The pairs of branches that some value may satisfy at once: all but
    /// those told apart by type, by a required property with disjoint
    /// `const`/`enum` values, types or string patterns (no string matches
    /// both), or by a key one forbids and the other requires.
    fn overlapping(&mut self, branches: &[String]) -> Result<Vec<(usize, usize)>> {
        let mut info = Vec::new();
        for b in branches {
            let s = self.shape_of(&vec![b.clone()])?;
            let mut types = s.types;
            if let Some(vals) = &s.enums {
                types &= vals.iter().fold(0, |acc, v| acc | type_bits(v));
            }
            if !s.alts.is_empty() {
                // Nested unions: their types are the union of the branches'
                // (any type for a union without branch schemas).
                let mut t = 0;
                for a in &s.alts {
                    if a.branches.is_empty() {
                        t = ALL;
                    }
                    for x in &a.branches {
                        t |= self.shape_of(&vec![x.clone()])?.types;
                    }
                }
                types &= t;
            }
            let mut disc = Vec::new();
            let mut req_types = Vec::new();
            let mut req_strings = Vec::new();
            for (name, c) in &s.props {
                if s.required.contains(name) {
                    let ps = self.shape_of(c)?;
                    // A string-only property with a pattern (or format):
                    // its automaton, to tell branches apart by patterns
                    // no string matches both of.
                    if ps.types == STR && ps.alts.is_empty() && !ps.never && (!ps.patterns.is_empty() || !ps.formats.is_empty()) {
                        if let Some(mut d) = self.string_dfa(&ps)? {
                            if let Some(vals) = &ps.enums {
                                let words: Vec<String> = vals.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
                                d = d.intersect(&CharDfa::literals(&words))?;
                            }
                            req_strings.push((name.clone(), d));
                        }
                    }
                    let mut t = ps.types;
                    if let Some(vals) = &ps.enums {
                        t &= vals.iter().fold(0, |acc, v| acc | type_bits(v));
                    }
                    if ps.never {
                        t = 0;
                    }
                    req_types.push((name.clone(), t));
                    if let Some(vals) = ps.enums {
                        disc.push((name.clone(), vals));
                    }
                }
            }
            // Keys this branch forbids outright: additionalProperties false
            // in an object without patternProperties forbids every key its
            // own properties do not list.
            let mut closed: Vec<Vec<String>> = Vec::new();
            for (ap, names, pats) in &s.additional {
                if pats.is_empty() && self.doc.get(ap) == Some(&Value::Bool(false)) {
                    closed.push(names.clone());
                }
            }
            info.push((types, disc, s.required.clone(), req_types, closed, req_strings));
        }
        let forbids = |closed: &Vec<Vec<String>>, k: &String| closed.iter().any(|names| !names.contains(k));
        let mut pairs = Vec::new();
        for i in 0..info.len() {
            for j in i + 1..info.len() {
                let (ti, di, ri, rti, ci, si) = &info[i];
                let (tj, dj, rj, rtj, cj, sj) = &info[j];
                if ti & tj == 0 {
                    continue;
                }
                if (ti & tj) != OBJ {
                    pairs.push((i, j));
                    continue;
                }
                let by_disc = di
                    .iter()
                    .any(|(n, vi)| dj.iter().any(|(m, vj)| n == m && !vi.iter().any(|x| vj.iter().any(|y| json_eq(x, y)))));
                let by_closed = ri.iter().any(|k| forbids(cj, k)) || rj.iter().any(|k| forbids(ci, k));
                let by_type = rti.iter().any(|(n, a)| rtj.iter().any(|(m, b)| n == m && a & b == 0));
                let mut by_pattern = false;
                for (n, a) in si {
                    for (m, b) in sj {
                        if n == m && !by_pattern {
                            by_pattern = a.intersect(b).is_ok_and(|x| x.length_range().is_none());
                        }
                    }
                }
                if !(by_disc || by_closed || by_type || by_pattern) {
                    pairs.push((i, j));
                }
            }
        }
        Ok(pairs)
    }

    // ----- scalars -----

    /// [`Self::number_regex`] less the excluded numbers: the range cut at
    /// each into pieces with exclusive bounds.
    fn number_regex_excluding(&mut self, s: &Shape) -> Result<Option<String>> {
        let mut cuts: Vec<(Dec, String)> = s
            .excluded
            .iter()
            .filter_map(|(v, at)| match v {
                Value::Number(n) => Dec::from_json(n).map(|d| (d, at.clone())),
                _ => None,
            })
            .filter(|(d, _)| s.types & (if d.frac.is_empty() { INT } else { FRAC }) != 0)
            .collect();
        if cuts.is_empty() {
            return self.number_regex(s);
        }
        if s.types & INT == 0 {
            let at = cuts[0].1.clone();
            self.unsupported("not", &at, "excluded values among non-integral numbers only")?;
            return self.number_regex(s);
        }
        cuts.sort_by(|a, b| a.0.compare(&b.0));
        let mut piece = s.clone();
        let mut parts = Vec::new();
        let mut lo = s.lo.clone();
        for i in 0..=cuts.len() {
            let cut = cuts.get(i).map(|(d, _)| Bound {
                value: d.clone(),
                exclusive: true,
            });
            let mut hi = s.hi.clone();
            if let Some(c) = &cut {
                tighter(&mut hi, c.clone(), true);
            }
            piece.lo = lo.clone();
            piece.hi = hi;
            if let Some(re) = self.number_regex(&piece)? {
                parts.push(format!("(?:{re})"));
            }
            if let Some(c) = cut {
                tighter(&mut lo, c, false);
            }
        }
        Ok((!parts.is_empty()).then(|| parts.join("|")))
    }

    fn number_regex(&mut self, s: &Shape) -> Result<Option<String>> {
        let mut integer = s.types & FRAC == 0;
        let mut frac_digits = None;
        if s.types & INT == 0 {
            // Only non-integral numbers (`not: {type: integer}`).
            if s.lo.is_some() || s.hi.is_some() || !s.multiple_of.is_empty() {
                let at = s.multiple_of.first().map(|m| m.1.clone()).unwrap_or_default();
                self.unsupported("not", &at, "non-integral numbers with bounds or multipleOf")?;
            }
            return Ok(Some(r"-?(?:0|[1-9][0-9]*)\.[0-9]*[1-9][0-9]*".to_string()));
        }
        // Of several multipleOf, one that is a multiple of all others
        // implies them.
        let mult = s
            .multiple_of
            .iter()
            .find(|(k, _)| s.multiple_of.iter().all(|(d, _)| divides(d, k)))
            .cloned()
            .or_else(|| s.multiple_of.first().cloned());
        if s.multiple_of.len() > 1 && !s.multiple_of.iter().all(|(d, _)| mult.as_ref().is_some_and(|(k, _)| divides(d, k))) {
            let kp = s.multiple_of[1].1.clone();
            self.unsupported("multipleOf", &kp, "several multipleOf constraints, none a multiple of the others")?;
        }
        if let Some((k, kp)) = mult.as_ref() {
            if k.int == "1" && k.frac.is_empty() {
                integer = true;
            } else if k.int == "0" && k.frac.ends_with('1') && k.frac[..k.frac.len() - 1].bytes().all(|c| c == b'0') {
                frac_digits = Some(k.frac.len());
            } else if let Some(vals) = enumerate_multiples(k, s.lo.as_ref(), s.hi.as_ref(), integer) {
                return Ok(if vals.is_empty() { None } else { Some(vals.join("|")) });
            } else if let (true, None, None) = (k.frac.is_empty(), &s.lo, &s.hi) {
                match suffix_multiples(&k.int) {
                    Some(re) => return Ok(Some(re)),
                    None => self.unsupported(
                        "multipleOf",
                        kp,
                        "multipleOf of an unbounded number is enforced for powers of 2 and 5 times powers of ten only",
                    )?,
                }
            } else {
                self.unsupported("multipleOf", kp, "multipleOf over a range with more than 10000 multiples")?;
            }
        }
        Ok(numbers::range_regex(s.lo.as_ref(), s.hi.as_ref(), integer, frac_digits))
    }

    /// The string symbol of `s`, `None` when no string qualifies.
    fn string(&mut self, s: &Shape) -> Result<Option<Sym>> {
        if self.needs_string_automaton(s)? {
            if let Some(dfa) = self.string_dfa(s)? {
                return self.counted_string(&dfa, None, s.min_len, s.max_len);
            }
        }
        let sym = self.string_unexcluded(s)?;
        let mut excl = Vec::new();
        for (v, at) in &s.excluded {
            let Value::String(x) = v else { continue };
            // Only the excluded strings the symbol would produce matter.
            let hit = match sym {
                None => false,
                Some(Sym::T(t)) => {
                    let re = self.b_terminal_regex(t);
                    self.full_match(&re, &strings::encode(x))?
                }
                Some(Sym::N(_)) => {
                    let n = x.chars().count() as u64;
                    n >= s.min_len && s.max_len.is_none_or(|m| n <= m)
                }
            };
            if hit {
                excl.push((x.clone(), at.clone()));
            }
        }
        if excl.is_empty() {
            return Ok(sym);
        }
        let plain = s.patterns.is_empty() && s.not_patterns.is_empty() && s.formats.iter().all(|(f, _)| matches!(strings::format_body(f), Ok(None)));
        if plain && s.min_len == 0 && s.max_len.is_none() {
            let names: Vec<String> = excl.into_iter().map(|(x, _)| x).collect();
            return Ok(Some(Sym::T(self.b.terminal("STRING", &format!("\"{}\"", strings::not_in_set(&names))))));
        }
        self.unsupported("not", &excl[0].1, "excluded strings together with a pattern, format or length bound")?;
        Ok(sym)
    }

    /// Whether the string constraints of `s` go beyond what the regex
    /// forms of [`Self::string_unexcluded`] express: several patterns or
    /// formats, a negated format, a negated pattern other than the simple
    /// shapes of [`strings::not_in_set_nor_pattern`], excluded strings
    /// beside a pattern, format or length bound.
    fn needs_string_automaton(&mut self, s: &Shape) -> Result<bool> {
        let bodies = s.patterns.len() + s.formats.iter().filter(|(f, _)| matches!(strings::format_body(f), Ok(Some(_)))).count();
        let excl: Vec<String> = s.excluded.iter().filter_map(|(v, _)| v.as_str().map(str::to_string)).collect();
        let simple_not = match s.not_patterns.as_slice() {
            [] => true,
            [(p, _)] if bodies == 0 && s.min_len <= 1 && s.max_len.is_none() => {
                let mut names = excl.clone();
                if s.min_len == 1 {
                    names.push(String::new());
                }
                matches!(strings::not_in_set_nor_pattern(&names, p), Ok(Some(_)))
            }
            _ => false,
        };
        Ok(bodies > 1 || !s.not_formats.is_empty() || !simple_not || (!excl.is_empty() && (bodies > 0 || s.min_len > 0 || s.max_len.is_some())))
    }

    /// All string constraints of `s` but the length bounds as one automaton
    /// over characters: patterns and formats intersected, negated ones and
    /// excluded strings complemented. `None` when a part has no automaton
    /// (a backreference, `format: regex`).
    fn string_dfa(&mut self, s: &Shape) -> Result<Option<CharDfa>> {
        let mut parts = Vec::new();
        let usage = |r: Result<CharDfa>| match r {
            Ok(d) => Ok(Some(d)),
            Err(Error::Usage(_)) => Ok(None),
            Err(e) => Err(e),
        };
        for (p, _) in &s.patterns {
            let Some(d) = usage(self.char_dfa(true, p))? else { return Ok(None) };
            parts.push(d);
        }
        for (f, _) in &s.formats {
            match strings::format_body(f) {
                Ok(None) => {}
                Ok(Some(b)) => {
                    let Some(d) = usage(self.char_dfa(false, &b))? else { return Ok(None) };
                    parts.push(d);
                }
                Err(_) => return Ok(None),
            }
        }
        for (p, _) in &s.not_patterns {
            let Some(d) = usage(self.char_dfa(true, p))? else { return Ok(None) };
            parts.push(d.complement());
            // Where Python's `re` (the validators') may find a match ECMA
            // does not, a string must not count as failing the pattern:
            // only the characters both read alike.
            if strings::reads_differently_in_python(p) {
                parts.push(CharDfa::over(strings::SAFE_CHARS));
            }
        }
        for (b, _) in &s.not_formats {
            let Some(d) = usage(self.char_dfa(false, b))? else { return Ok(None) };
            parts.push(d.complement());
        }
        let excl: Vec<String> = s.excluded.iter().filter_map(|(v, _)| v.as_str().map(str::to_string)).collect();
        if !excl.is_empty() {
            parts.push(counted::CharDfa::literals(&excl).complement());
        }
        let mut dfa = CharDfa::any();
        for d in parts {
            match usage(dfa.intersect(&d))? {
                Some(x) => dfa = x,
                None => return Ok(None),
            }
        }
        Ok(Some(dfa))
    }

    /// [`Self::string`] before excluded values.
    fn string_unexcluded(&mut self, s: &Shape) -> Result<Option<Sym>> {
        if let Some((p, at)) = s.not_patterns.first() {
            // The complement of one simple pattern, alone on the string.
            let alone = s.not_patterns.len() == 1
                && s.patterns.is_empty()
                && s.formats.iter().all(|(f, _)| matches!(strings::format_body(f), Ok(None)))
                && s.min_len <= 1
                && s.max_len.is_none();
            // Excluded strings go into the same trie walk, and so does the
            // empty string under minLength 1.
            let mut excl: Vec<String> = s.excluded.iter().filter_map(|(v, _)| v.as_str().map(str::to_string)).collect();
            if s.min_len == 1 {
                excl.push(String::new());
            }
            let body = match strings::not_in_set_nor_pattern(&excl, p) {
                Ok(b) if alone => b,
                Ok(_) | Err(Error::Usage(_)) => None,
                Err(e) => return Err(e),
            };
            match body {
                Some(b) if b == strings::NO_STRING => return Ok(None),
                Some(b) => return Ok(Some(Sym::T(self.b.terminal("STRING", &format!("\"{b}\""))))),
                None => self.unsupported(
                    "not",
                    at,
                    "`not` of a pattern: one pattern of the forms ^prefix, ^prefix C{m,n}$ or an unanchored class, without other string constraints",
                )?,
            }
        }
        if let Some(max) = s.max_len {
            if max < s.min_len {
                return Ok(None);
            }
        }
        let mut body: Option<String> = None;
        let mut body_from = String::new();
        for (f, kp) in &s.formats {
            match strings::format_body(f) {
                Ok(Some(b)) => {
                    if body.is_some() {
                        self.unsupported("format", kp, "several formats on one string")?;
                        continue;
                    }
                    body = Some(b);
                    body_from = kp.clone();
                }
                Ok(None) => {}
                Err(m) => self.unsupported("format", kp, &m)?,
            }
        }
        for (p, kp) in &s.patterns {
            if body.is_some() {
                self.unsupported("pattern", kp, "a pattern together with another pattern or a format")?;
                continue;
            }
            match strings::pattern_body(p) {
                Ok(b) => {
                    body = Some(b);
                    body_from = kp.clone();
                }
                Err(Error::Usage(m)) => {
                    // No regex over the encoded text (an anchor inside the
                    // pattern): its automaton as rules, if it has one.
                    let only = s.patterns.len() == 1 && body.is_none() && s.formats.iter().all(|(f, _)| matches!(strings::format_body(f), Ok(None)));
                    match self.char_dfa(true, p) {
                        Ok(d) if only => return self.counted_string(&d, None, s.min_len, s.max_len),
                        _ => self.unsupported("pattern", kp, &m)?,
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(mut b) = body {
            if s.min_len > 0 || s.max_len.is_some() {
                let pattern = match (
                    s.patterns.first(),
                    s.formats.iter().any(|(f, _)| matches!(strings::format_body(f), Ok(Some(_)))),
                ) {
                    (Some((p, _)), false) => Some(p.clone()),
                    _ => None,
                };
                match pattern.as_deref().map(|p| strings::pattern_body_len(p, s.min_len, s.max_len)) {
                    Some(Ok(Some(c))) => b = c,
                    _ => {
                        // The general case: the pattern's (or format's)
                        // automaton times a character counter.
                        let dfa = match &pattern {
                            Some(p) => self.char_dfa(true, p),
                            None => self.char_dfa(false, &b),
                        };
                        match dfa.and_then(|d| self.counted_string(&d, Some(&b), s.min_len, s.max_len)) {
                            Ok(sym) => return Ok(sym),
                            Err(Error::Usage(m)) => {
                                self.unsupported("maxLength", &body_from, &format!("length bounds together with a pattern or format: {m}"))?
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            return Ok(Some(Sym::T(self.b.terminal("STRING", &format!("\"(?:{b})\"")))));
        }
        let (min, max) = (s.min_len, s.max_len);
        if max.is_some_and(|m| m > MAX_COUNT) || min > MAX_COUNT {
            return Err(Error::TooLarge(format!("string length bound above {MAX_COUNT}")));
        }
        let big = max.map_or(min, |m| m.max(min));
        if big <= self.opts.lexer_count {
            self.lexer_counts |= big > super::MIN_LEXER_COUNT;
            let rep = match max {
                Some(m) if m == min => format!("{{{m}}}"),
                Some(m) => format!("{{{min},{m}}}"),
                None if min == 0 => "*".into(),
                None => format!("{{{min},}}"),
            };
            return Ok(Some(Sym::T(self.b.terminal("STRING", &format!("\"{CH}{rep}\"")))));
        }
        Ok(Some(self.chunked_string(min, max)))
    }

    /// A string in the language of `dfa` (whose regex over the encoded
    /// text is `body`, when there is one) with `min..=max` characters: the
    /// plain terminal when every match already has an allowed length, else
    /// the product of the automaton with a character counter as
    /// right-linear rules (one nonterminal per (state, count) pair, one
    /// terminal per character class; the opening quote rides on the first
    /// character so that no lone `"` terminal competes with other strings'
    /// terminals). `None` when no string qualifies; products are shared
    /// between equal (automaton, bounds).
    fn counted_string(&mut self, dfa: &CharDfa, body: Option<&str>, min: u64, max: Option<u64>) -> Result<Option<Sym>> {
        let Some((lo, hi)) = dfa.length_range() else { return Ok(None) };
        if let Some(b) = body {
            if lo >= min && max.is_none_or(|m| hi.is_some_and(|h| h <= m)) {
                return Ok(Some(Sym::T(self.b.terminal("STRING", &format!("\"(?:{b})\"")))));
            }
        }
        // Keyed by the automaton itself: its `Debug` text, the key before,
        // cost a seventh of a schema's compile where formats meet length
        // bounds (JsonSchemaStore's 0.5.2).
        let key = (dfa.clone(), min, max);
        if let Some(&sym) = self.counted.get(&key) {
            return Ok(sym);
        }
        let sym = match counted::product(dfa, min, max)? {
            None => None,
            Some(p) => {
                let nts: Vec<u32> = (0..p.pairs.len()).map(|_| self.b.fresh("strlen")).collect();
                let open = self.b.fresh("strlen");
                for (i, ms) in p.moves.iter().enumerate() {
                    for (cls, j) in ms {
                        if let Some(re) = strings::class_regex(cls) {
                            let t = self.b.terminal("STRING_CHAR", &re);
                            self.b.rule(nts[i], vec![Sym::T(t), Sym::N(nts[*j])]);
                            if i == 0 {
                                let t = self.b.terminal("STRING_CHAR", &format!("\"{re}"));
                                self.b.rule(open, vec![Sym::T(t), Sym::N(nts[*j])]);
                            }
                        }
                    }
                    if p.ends[i] {
                        let t = self.b.literal("\"");
                        self.b.rule(nts[i], vec![Sym::T(t)]);
                    }
                }
                if p.ends[0] {
                    let t = self.b.literal("\"\"");
                    self.b.rule(open, vec![Sym::T(t)]);
                }
                Some(Sym::N(open))
            }
        };
        self.counted.insert(key, sym);
        Ok(sym)
    }

    /// A string of `min..=max` characters as chunks of exactly `k`
    /// characters and a closing chunk of fewer, counted by the parser.
    /// Where the minimum allows strings of at most [`Options::lexer_count`]
    /// characters, those are one terminal, counted in the lexer, beside a
    /// head of exactly that many that the chunks continue: most strings are
    /// short, and a mask inside a string counted in the lexer is a copy
    /// of precomputed tokens (`grammar::body`), while one inside a chunk
    /// meets the chunk's end within a few characters.
    fn chunked_string(&mut self, min: u64, max: Option<u64>) -> Sym {
        let n = self.opts.lexer_count;
        if let Some(m) = max.filter(|&m| self.opts.string_heads && min <= n && m > n) {
            let short = self.b.terminal("STRING", &format!("\"{CH}{{{min},{n}}}\""));
            let head = self.b.terminal("STRING_CHUNK", &format!("\"{CH}{{{n}}}"));
            let rest = self.chunks(1, Some(m - n), "");
            let open = self.b.fresh("strchunk");
            self.lexer_counts = true;
            self.b.rule(open, vec![Sym::T(short)]);
            self.b.rule(open, vec![Sym::T(head), rest]);
            return Sym::N(open);
        }
        self.chunks(min, max, "\"")
    }

    /// `min..=max` characters as chunks of exactly `k` characters and a
    /// closing chunk of fewer and the closing quote, the first chunk
    /// after `quote`.
    fn chunks(&mut self, min: u64, max: Option<u64>, quote: &str) -> Sym {
        let memo = (min, max, !quote.is_empty());
        if let Some(&sym) = self.chunked.get(&memo) {
            return sym;
        }
        let big = max.map_or(min, |m| m.max(min));
        // Chunks as long as the lexer counts (a token near a chunk's end is
        // slow: see [`Options::lexer_count`]), 16 characters in the
        // smallest lexer.
        let least = if self.opts.lexer_count > super::MIN_LEXER_COUNT {
            self.lexer_counts = true;
            self.opts.lexer_count
        } else {
            16
        };
        let k = big.div_ceil(4096).clamp(least, 2048);
        let states = match max {
            Some(n) => n / k,
            None => min.div_ceil(k).max(1),
        };
        let nts: Vec<u32> = (0..=states).map(|_| self.b.fresh("strchunk")).collect();
        // Up to 4,097 chunk states share a handful of terminals: build
        // each one's regex once, not once a state.
        let mut full_t: [Option<u32>; 2] = [None, None];
        let mut last_t: Option<(u64, u64, bool, u32)> = None;
        for j in 0..=states {
            let first = j == 0 && !quote.is_empty();
            let q = if first { quote } else { "" };
            let done = j * k;
            let full_ok = match max {
                Some(n) => done + k <= n,
                None => true,
            };
            if full_ok {
                let full = match full_t[first as usize] {
                    Some(t) => t,
                    None => {
                        let t = self.b.terminal("STRING_CHUNK", &format!("{q}{CH}{{{k}}}"));
                        full_t[first as usize] = Some(t);
                        t
                    }
                };
                let next = if j == states { nts[j as usize] } else { nts[j as usize + 1] };
                self.b.rule(nts[j as usize], vec![Sym::T(full), Sym::N(next)]);
            }
            let a = min.saturating_sub(done);
            let b = match max {
                Some(n) => (n - done).min(k - 1),
                None => k - 1,
            };
            if a <= b {
                let last = match last_t {
                    Some((la, lb, lf, t)) if (la, lb, lf) == (a, b, first) => t,
                    _ => {
                        let t = self.b.terminal("STRING_END", &format!("{q}{CH}{{{a},{b}}}\""));
                        last_t = Some((a, b, first, t));
                        t
                    }
                };
                self.b.rule(nts[j as usize], vec![Sym::T(last)]);
            }
        }
        let sym = Sym::N(nts[0]);
        self.chunked.insert(memo, sym);
        sym
    }

    // ----- enums and literals -----

    fn emit_enum(&mut self, conj: &Conj, s: &Shape, vals: Vec<Value>) -> Result<Vec<Vec<Sym>>> {
        let structural = s.prefix.len() + s.props.len() + s.pattern_props.len() + s.required.len() > 0
            || !s.items.is_empty()
            || !s.contains.is_empty()
            || !s.additional.is_empty()
            || !s.unevaluated_props.is_empty()
            || !s.unevaluated_items.is_empty()
            || s.min_items > 0
            || s.max_items.is_some()
            || s.min_props > 0
            || s.max_props.is_some()
            || !s.forbidden.is_empty()
            || !s.witness.is_empty();
        let mut out = Vec::new();
        let mut strs = Vec::new();
        for v in vals {
            if type_bits(&v) & s.types == 0 && !(type_bits(&v) == INT && s.types & FRAC != 0) {
                continue;
            }
            if s.excluded.iter().any(|(x, _)| json_eq(x, &v)) {
                continue;
            }
            match &v {
                Value::Array(_) | Value::Object(_) if structural => match self.conj_holds(conj, &v)? {
                    Some(true) => {}
                    Some(false) => continue,
                    None => {
                        let at = s.structural.clone().unwrap_or_default();
                        self.unsupported(
                            "enum",
                            &at,
                            "object or array values together with keywords this compiler cannot test them against",
                        )?;
                    }
                },
                Value::Number(n) => {
                    let Some(d) = Dec::from_json(n) else { continue };
                    if !self.number_ok(s, &d)? {
                        continue;
                    }
                }
                Value::String(x) => {
                    if !self.string_ok(s, x)? {
                        continue;
                    }
                    strs.push(regex_syntax::escape(&strings::encode(x)));
                    continue;
                }
                _ => {}
            }
            out.push(self.literal(&v));
        }
        if !strs.is_empty() {
            if strs.len() > MAX_ENUMERATED {
                return Err(Error::TooLarge(format!("enum of more than {MAX_ENUMERATED} strings")));
            }
            strs.sort();
            strs.dedup();
            out.push(vec![Sym::T(self.b.terminal("STRING_ENUM", &strs.join("|")))]);
        }
        Ok(out)
    }

    /// Whether `v` satisfies every schema of the conjunction (negated
    /// ones fail), by validating it: an `enum`/`const` member is in the
    /// intersection iff it does. Choice markers are skipped: the union
    /// they split is validated whole, which gives the same union.
    /// `None` when the validator cannot decide.
    fn conj_holds(&mut self, conj: &Conj, v: &Value) -> Result<Option<bool>> {
        let mut val = Validator {
            doc: &self.doc,
            dfas: &mut self.dfas,
            max_depth: self.opts.max_depth,
        };
        let mut acc = Some(true);
        for p in conj {
            if p.starts_with('@') {
                continue;
            }
            let r = match p.strip_prefix('!') {
                Some(q) => val.valid(q, v, 0)?.map(|b| !b),
                None => val.valid(p, v, 0)?,
            };
            match r {
                Some(false) => return Ok(Some(false)),
                None => acc = None,
                Some(true) => {}
            }
        }
        Ok(acc)
    }

    fn number_ok(&mut self, s: &Shape, d: &Dec) -> Result<bool> {
        if s.types & FRAC == 0 && !d.frac.is_empty() {
            return Ok(false);
        }
        let text = format!(
            "{}{}{}{}",
            if d.neg { "-" } else { "" },
            d.int,
            if d.frac.is_empty() { "" } else { "." },
            d.frac
        );
        let Some(re) = self.number_regex(s)? else { return Ok(false) };
        self.full_match(&re, &text)
    }

    fn string_ok(&mut self, s: &Shape, x: &str) -> Result<bool> {
        let enc = strings::encode(x);
        match self.string(s)? {
            None => Ok(false),
            Some(Sym::T(t)) => {
                let re = self.b_terminal_regex(t);
                self.full_match(&re, &enc)
            }
            Some(Sym::N(_)) => {
                // Counted: a long plain string, or a pattern or format with
                // length bounds ([`Self::counted_string`]).
                let n = x.chars().count() as u64;
                if n < s.min_len || s.max_len.is_some_and(|m| n > m) {
                    return Ok(false);
                }
                Ok(self.string_dfa(s)?.is_some_and(|d| d.accepts(x)))
            }
        }
    }

    /// The terminal of a key that is none of `names`: any JSON string but
    /// the names' key literals (the same terminals the listed members
    /// use), taken out in the lexer ([`crate::grammar::Terminal::except`])
    /// rather than spelled as the complement of their trie, which made a
    /// pattern per object that the lexer's automaton ran side by side.
    fn other_keys(&mut self, names: &[String]) -> u32 {
        let except = names.iter().map(|n| self.b.literal(&strings::encode(n))).collect();
        self.b.terminal_except("KEY", &format!("\"{}*\"", strings::CH), except)
    }

    fn b_terminal_regex(&self, t: u32) -> String {
        self.b.terminal_regex(t).to_string()
    }

    /// The symbols spelling one JSON value (any whitespace the mode allows
    /// between its tokens).
    fn literal(&mut self, v: &Value) -> Vec<Sym> {
        match v {
            Value::Null => vec![Sym::T(self.b.literal("null"))],
            Value::Bool(true) => vec![Sym::T(self.b.literal("true"))],
            Value::Bool(false) => vec![Sym::T(self.b.literal("false"))],
            Value::Number(n) => {
                let re = match Dec::from_json(n) {
                    Some(d) => {
                        let sign = if d.neg {
                            "-"
                        } else if d.int == "0" && d.frac.is_empty() {
                            "-?"
                        } else {
                            ""
                        };
                        if d.frac.is_empty() {
                            format!(r"{sign}{}(?:\.0+)?", d.int)
                        } else {
                            format!(r"{sign}{}\.{}0*", d.int, d.frac)
                        }
                    }
                    None => regex_syntax::escape(&n.to_string()),
                };
                vec![Sym::T(self.b.terminal("NUMBER", &re))]
            }
            Value::String(x) => vec![Sym::T(self.b.literal(&strings::encode(x)))],
            Value::Array(xs) => {
                let mut out = vec![self.p.lk];
                for (i, x) in xs.iter().enumerate() {
                    if i > 0 {
                        out.push(self.p.comma);
                    }
                    out.extend(self.literal(x));
                }
                out.push(self.p.rk);
                out
            }
            Value::Object(m) => {
                let mut out = vec![self.p.lb];
                for (i, (k, x)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(self.p.comma);
                    }
                    out.push(Sym::T(self.b.literal(&strings::encode(k))));
                    out.push(self.p.colon);
                    out.extend(self.literal(x));
                }
                out.push(self.p.rb);
                out
            }
        }
    }

    /// The symbol of a conjunction, any value for the empty one.
    fn value(&mut self, c: Conj) -> Result<Sym> {
        if c.is_empty() {
            Ok(self.any())
        } else {
            self.emit(c)
        }
    }

    /// Any JSON value (the schema `true`).
    fn any(&mut self) -> Sym {
        if let Some(a) = self.any {
            return a;
        }
        let a = self.b.fresh("any");
        self.any = Some(Sym::N(a));
        let string = Sym::T(self.b.terminal("STRING", &format!("\"{CH}*\"")));
        let number = Sym::T(self.b.terminal("NUMBER", numbers::NUMBER_RE));
        for lit in ["null", "true", "false"] {
            let t = self.b.literal(lit);
            self.b.rule(a, vec![Sym::T(t)]);
        }
        self.b.rule(a, vec![string]);
        self.b.rule(a, vec![number]);
        let Punct {
            lb,
            rb,
            lk,
            rk,
            comma,
            colon,
            ..
        } = self.p;
        let pair = self.b.fresh("pair");
        self.b.rule(pair, vec![string, colon, Sym::N(a)]);
        let members = self.b.fresh("members");
        self.b.rule(members, vec![Sym::N(pair)]);
        self.b.rule(members, vec![Sym::N(members), comma, Sym::N(pair)]);
        self.b.rule(a, vec![lb, rb]);
        self.b.rule(a, vec![lb, Sym::N(members), rb]);
        let elems = self.b.fresh("elements");
        self.b.rule(elems, vec![Sym::N(a)]);
        self.b.rule(elems, vec![Sym::N(elems), comma, Sym::N(a)]);
        self.b.rule(a, vec![lk, rk]);
        self.b.rule(a, vec![lk, Sym::N(elems), rk]);
        Sym::N(a)
    }

    /// Whether a conjunction is the `false` schema (cheap syntactic check;
    /// other empty languages are pruned from the grammar anyway).
    fn is_false(&mut self, c: &Conj) -> Result<bool> {
        let s = self.shape_of(c)?;
        Ok(s.never || s.types == 0 || s.enums.as_ref().is_some_and(|e| e.is_empty()))
    }

    // ----- arrays -----

    fn array(&mut self, s: &Shape) -> Result<Option<Sym>> {
        // Item conjunction at position j: the prefix's, and each `items`
        // whose own prefix ends at or before j. Past `tail_from` it is
        // the same for every position.
        let plen = s.prefix.len();
        let local_max = s
            .evaluated
            .iter()
            .filter_map(|(_, e)| if let Eval::Prefix(l) = e { Some(*l) } else { None })
            .max()
            .unwrap_or(0);
        let tail_from = s.items.iter().map(|(_, l)| *l).max().unwrap_or(0).max(plen).max(local_max);
        for (up, owner) in &s.unevaluated_items {
            if s.evaluated.iter().any(|(ch, e)| matches!(e, Eval::Contains) && ch.contains(owner)) {
                self.unsupported("unevaluatedItems", up, "unevaluatedItems next to contains")?;
            }
        }
        let item_conj = |j: usize| -> Conj {
            let mut c = s.prefix.get(j).cloned().unwrap_or_default();
            c.extend(s.items.iter().filter(|(_, l)| *l <= j).map(|(p, _)| p.clone()));
            for (up, owner) in &s.unevaluated_items {
                let seen = s.evaluated.iter().any(|(ch, e)| {
                    ch.contains(owner)
                        && match e {
                            Eval::Prefix(l) => j < *l,
                            Eval::AllItems => true,
                            _ => false,
                        }
                });
                if !seen {
                    c.push(up.clone());
                }
            }
            c
        };
        let tail = item_conj(tail_from);
        let mut max = s.max_items;
        if !tail.is_empty() && self.is_false(&tail)? {
            let k = tail_from as u64;
            max = Some(max.map_or(k, |m| m.min(k)));
        }
        let min = s.min_items;
        if max.is_some_and(|m| m < min) {
            return Ok(None);
        }
        if max.is_some_and(|m| m > MAX_COUNT) || min > MAX_COUNT {
            return Err(Error::TooLarge(format!("array length bound above {MAX_COUNT}")));
        }
        // One `contains`: count matching items up to `need`. Several (each
        // needing one match): the set of those matched so far, as a bit
        // mask, an item adding any subset it satisfies (one item may
        // satisfy several).
        let multi = s.contains.len() > 1;
        if multi && s.min_contains.is_some() {
            let at = s.contains[1].clone();
            self.unsupported("contains", &at, "minContains beside several contains constraints on one array")?;
        }
        if s.contains.len() > 4 {
            let at = s.contains[4].clone();
            self.unsupported("contains", &at, "more than four contains constraints on one array")?;
        }
        let cs: Vec<String> = s.contains.iter().take(4).cloned().collect();
        let need = match (cs.len(), multi) {
            (0, _) => 0,
            (n, true) => (1u64 << n) - 1,
            (_, false) => s.min_contains.unwrap_or(1),
        };
        let next = |k: u64, x: u64| if multi { k | x } else { (k + x).min(need) };
        // States j = items so far; the last one loops when unbounded.
        let last = match max {
            Some(m) => m,
            None => min.max(tail_from as u64).max(1),
        };
        if (last + 1).saturating_mul(need + 1) > 200_000 {
            return Err(Error::TooLarge(format!(
                "array bounds need more than 200000 parser states (up to {last} items)"
            )));
        }
        // Per position: the item choices, (symbol, what it adds: a count
        // or a mask of contains matched).
        let mut choices: Vec<Vec<(Sym, u64)>> = Vec::new();
        for j in 0..=tail_from {
            let c = item_conj(j);
            let mut ch = vec![(self.value(c.clone())?, 0)];
            if need > 0 {
                let subsets = if multi { (1u64 << cs.len()) - 1 } else { 1 };
                for t in 1..=subsets {
                    let mut cc = c.clone();
                    cc.extend(cs.iter().enumerate().filter(|(i, _)| t >> i & 1 == 1).map(|(_, p)| p.clone()));
                    ch.push((self.emit(cc)?, if multi { t } else { 1 }));
                }
            }
            choices.push(ch);
        }
        let Punct { lk, rk, comma, .. } = self.p;
        let nts: Vec<Vec<u32>> = (0..=last).map(|_| (0..=need).map(|_| self.b.fresh("arr")).collect()).collect();
        for j in 0..=last {
            let pos = (j as usize).min(tail_from);
            for k in 0..=need {
                let nt = nts[j as usize][k as usize];
                if j >= min && k >= need {
                    self.b.rule(nt, vec![rk]);
                }
                let next_j = if j < last {
                    j + 1
                } else if max.is_none() {
                    j
                } else {
                    continue;
                };
                let sep = if j > 0 { vec![comma] } else { vec![] };
                for &(it, x) in &choices[pos] {
                    let mut rhs = sep.clone();
                    rhs.extend([it, Sym::N(nts[next_j as usize][next(k, x) as usize])]);
                    self.b.rule(nt, rhs);
                }
            }
        }
        let arr = self.b.fresh("array");
        self.b.rule(arr, vec![lk, Sym::N(nts[0][0])]);
        Ok(Some(Sym::N(arr)))
    }

    // ----- objects -----

    fn object(&mut self, s: &Shape) -> Result<Option<Sym>> {
        // Value conjunctions of the listed properties, then of required
        // names not listed (they take patternProperties/additionalProperties).
        let mut entries: Vec<(String, Conj, bool)> = Vec::new();
        let mut pats = Vec::new();
        for (p, c, kp) in &s.pattern_props {
            let re = match strings::pattern_search_regex(p) {
                Ok(r) => r,
                Err(Error::Usage(m)) => {
                    self.unsupported("patternProperties", kp, &m)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            pats.push((p.clone(), c.clone(), kp.clone(), re));
        }
        if s.forbidden.iter().any(|n| s.required.contains(n)) {
            return Ok(None);
        }
        // Listed names: properties, then required and forbidden names not
        // listed (a forbidden name is a listed entry that is always
        // skipped, so no other rule produces it).
        let mut names: Vec<String> = s.props.iter().map(|(n, _)| n.clone()).collect();
        for r in s.required.iter().chain(&s.forbidden) {
            if !names.contains(r) {
                names.push(r.clone());
            }
        }
        for name in &names {
            let mut c = match s.props.iter().find(|(n, _)| n == name) {
                Some((_, c)) => c.clone(),
                None => Vec::new(),
            };
            for (p, pc, kp, re) in &pats {
                if self.full_match(re, name)? {
                    c.extend(pc.iter().cloned());
                } else if !strings::same_in_python(p, name) {
                    self.unsupported(
                        "patternProperties",
                        kp,
                        &format!("whether {p:?} matches the listed name {name:?} differs between ECMA-262 and Python's re"),
                    )?;
                }
            }
            // Each additionalProperties applies unless its own object
            // lists the name or has a pattern matching it.
            for (ap, local_names, local_pats) in &s.additional {
                if local_names.contains(name) {
                    continue;
                }
                let mut exempt = false;
                for lp in local_pats {
                    if let Ok(re) = strings::pattern_search_regex(lp) {
                        exempt |= self.full_match(&re, name)?;
                    }
                }
                if !exempt {
                    c.push(ap.clone());
                }
            }
            for (up, owner) in &s.unevaluated_props {
                let mut seen = false;
                for (ch, e) in &s.evaluated {
                    if !ch.contains(owner) {
                        continue;
                    }
                    seen |= match e {
                        Eval::Name(n) => n == name,
                        Eval::AllProps => true,
                        Eval::Pattern(p) => match strings::pattern_search_regex(p) {
                            Ok(re) => self.full_match(&re, name)?,
                            Err(_) => false,
                        },
                        _ => false,
                    };
                }
                if !seen {
                    c.push(up.clone());
                }
            }
            entries.push((name.clone(), c, s.required.contains(name)));
        }
        // Keys beyond the listed ones.
        let mut extras: Vec<(Sym, Conj)> = Vec::new();
        let mut additional: Conj = s.additional.iter().map(|(p, _, _)| p.clone()).collect();
        // Keys beyond every listed name and pattern are unevaluated unless
        // an additionalProperties in the owner's scope evaluated them.
        for (up, owner) in &s.unevaluated_props {
            let covered = s.evaluated.iter().any(|(ch, e)| ch.contains(owner) && matches!(e, Eval::AllProps));
            if !covered {
                if !pats.is_empty() {
                    self.unsupported("unevaluatedProperties", up, "unevaluatedProperties next to patternProperties")?;
                }
                additional.push(up.clone());
            }
        }
        let additional_false = !additional.is_empty() && self.is_false(&additional)?;
        if pats.is_empty() {
            if !additional_false {
                let key = Sym::T(self.other_keys(&names));
                extras.push((key, additional.clone()));
            }
        } else if pats.iter().all(|(p, ..)| strings::is_universal(p)) {
            // Every key matches (`.*`): each extra key takes every pattern's
            // schema, and additionalProperties never applies.
            let key = Sym::T(self.other_keys(&names));
            let conj: Conj = pats.iter().flat_map(|(_, pc, ..)| pc.iter().cloned()).collect();
            extras.push((key, conj));
        } else {
            if !additional_false {
                // Keys that are no listed name and match no pattern take
                // additionalProperties: the complement of one pattern of a
                // simple shape, built jointly with the names' trie.
                let rest = match pats.as_slice() {
                    [(p, ..)] => match strings::not_in_set_nor_pattern(&names, p) {
                        Ok(r) => r,
                        Err(Error::Usage(_)) => None,
                        Err(e) => return Err(e),
                    },
                    _ => None,
                };
                match rest {
                    // No key is left to additionalProperties.
                    Some(body) if body == strings::NO_STRING => {}
                    Some(body) => {
                        let key = Sym::T(self.b.terminal("KEY", &format!("\"{body}\"")));
                        extras.push((key, additional.clone()));
                    }
                    None => {
                        let kp = pats[0].2.clone();
                        self.unsupported(
                            "patternProperties",
                            &kp,
                            "patternProperties with additionalProperties other than false (supported: one pattern, a fixed prefix `^ab`, `^prefix C{m,n}$` or an unanchored class `C+`)",
                        )?;
                    }
                }
            }
            for (i, (p, pc, kp, re)) in pats.iter().enumerate() {
                let mut listed = false;
                for n in &names {
                    listed |= self.full_match(re, n).unwrap_or(true);
                }
                // A pattern that matches listed names governs the other
                // keys it matches: for simple shapes, its language less the
                // names' trie.
                let body = match listed {
                    true => strings::in_pattern_not_in_set(&names, p)
                        .map(|b| b.ok_or_else(|| Error::Usage(format!("pattern {p:?} also matches a listed property")))),
                    false => Ok(strings::pattern_body(p)),
                };
                let body = match body.and_then(|b| b) {
                    Ok(b) => b,
                    Err(Error::Usage(m)) => {
                        self.unsupported("patternProperties", kp, &m)?;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if body == strings::NO_STRING {
                    continue;
                }
                for (q, _, _, _) in &pats[i + 1..] {
                    if patterns_overlap(p, q)? {
                        self.unsupported("patternProperties", kp, &format!("patterns {p:?} and {q:?} can match the same key"))?;
                    }
                }
                let key = Sym::T(self.b.terminal("KEY", &format!("\"{body}\"")));
                extras.push((key, pc.clone()));
            }
        }
        let (min, max) = (s.min_props, s.max_props);
        if max.is_some_and(|m| m < min) {
            return Ok(None);
        }
        if min > MAX_COUNT || max.is_some_and(|m| m > MAX_COUNT) {
            return Err(Error::TooLarge(format!("property count bound above {MAX_COUNT}")));
        }
        let cap = match max {
            Some(m) => m,
            None => min.max(1),
        };
        let n = entries.len();
        if (n as u64 + 1).saturating_mul(cap + 1) > 200_000 {
            return Err(Error::TooLarge("object bounds need more than 200000 parser states".into()));
        }
        // A negated additionalProperties needs a witness: some member
        // whose key its object neither lists nor patterns, with a value
        // that fails its schema (any value when the schema is `false`).
        // Several witnesses are tracked as a bit set when every one is of
        // `additionalProperties: false` (a member's key decides which it
        // witnesses); one with a schema needs the value to fail it, a
        // second value symbol, so it must be alone.
        let mut witnesses = s.witness.clone();
        if witnesses.len() > 16 || witnesses.len() > 1 && witnesses.iter().any(|w| w.not_value.is_some()) {
            let at = witnesses[1].at.clone();
            self.unsupported("not", &at, "several negated additionalProperties on one object, one with a schema")?;
            witnesses.clear();
        }
        let full: u32 = (1u32 << witnesses.len()) - 1;
        // Per member: (value, witnesses it sets, or a second value that
        // sets these).
        type Member = (Sym, u32, Option<(Sym, u32)>);
        let values_of = |name: Option<&String>, c: &Conj, me: &mut Self| -> Result<Member> {
            let v = me.value(c.clone())?;
            let mut plain = 0;
            let mut alt = None;
            for (k, w) in witnesses.iter().enumerate() {
                if name.is_some_and(|n| w.names.contains(n)) {
                    continue;
                }
                match &w.not_value {
                    None => plain |= 1 << k,
                    Some(p) => {
                        let mut cw = c.clone();
                        cw.push(format!("!{p}"));
                        alt = Some((me.emit(cw)?, 1 << k));
                    }
                }
            }
            Ok((v, plain, alt))
        };
        let mut vals = Vec::new();
        let mut keys = Vec::new();
        for (name, c, _) in &entries {
            vals.push(if s.forbidden.contains(name) {
                (self.never, 0, None)
            } else {
                values_of(Some(name), c, self)?
            });
            keys.push(Sym::T(self.b.literal(&strings::encode(name))));
        }
        let mut extra_vals = Vec::new();
        for (k, c) in &extras {
            let (v, plain, alt) = values_of(None, c, self)?;
            extra_vals.push((*k, v, plain, alt));
        }
        let Punct { lb, rb, comma, colon, .. } = self.p;
        // States: (entries decided, members so far, witnesses seen); a move
        // is the symbols up to the next state, and that state.
        type Move = (Vec<Sym>, (usize, u64, u32));
        let mut states: HashMap<(usize, u64, u32), u32> = HashMap::new();
        let start = (0usize, 0u64, 0u32);
        let mut work = vec![start];
        let root = self.b.fresh("obj");
        states.insert(start, root);
        let next_c = |c: u64| if max.is_some() { c + 1 } else { (c + 1).min(cap) };
        let room = |c: u64| max.is_none_or(|m| c < m);
        while let Some((i, c, seen)) = work.pop() {
            let nt = states[&(i, c, seen)];
            let sep = if c > 0 { vec![comma] } else { vec![] };
            let mut moves: Vec<Move> = Vec::new();
            let member = |k: Sym, (v, plain, alt): Member, i2: usize, moves: &mut Vec<Move>| {
                for (val, bits) in std::iter::once((v, plain)).chain(alt) {
                    let mut rhs = sep.clone();
                    rhs.extend([k, colon, val]);
                    moves.push((rhs, (i2, next_c(c), seen | bits)));
                }
            };
            if i < n {
                if !entries[i].2 {
                    moves.push((vec![], (i + 1, c, seen)));
                }
                if room(c) && vals[i].0 != self.never {
                    member(keys[i], vals[i], i + 1, &mut moves);
                }
            } else {
                if c >= min && seen == full {
                    self.b.rule(nt, vec![rb]);
                }
                if room(c) {
                    for &(k, v, plain, alt) in &extra_vals {
                        member(k, (v, plain, alt), n, &mut moves);
                    }
                }
            }
            for (mut rhs, key) in moves {
                let next = *states.entry(key).or_insert_with(|| {
                    work.push(key);
                    self.b.fresh("obj")
                });
                rhs.push(Sym::N(next));
                self.b.rule(nt, rhs);
            }
        }
        let obj = self.b.fresh("object");
        self.b.rule(obj, vec![lb, Sym::N(root)]);
        Ok(Some(Sym::N(obj)))
    }
}

/// Whether `d` divides `k` (`k / d` a whole number), both positive decimals.
fn divides(d: &Dec, k: &Dec) -> bool {
    validate::multiple(k, d) == Some(true)
}

/// Whether two patterns can match the same key (their DFAs' product has a
/// state where both match).
fn patterns_overlap(p: &str, q: &str) -> Result<bool> {
    let (a, b) = (strings::pattern_search_regex(p)?, strings::pattern_search_regex(q)?);
    let dfa = Dfa::compile_many(&[a, b], &RegexLimits::default())?;
    Ok((0..dfa.num_states() as u32).any(|s| dfa.matches(s).first().is_some_and(|w| w & 3 == 3)))
}

/// Integer digit strings divisible by `k` when `k = 2^a 5^b` (the last
/// `max(a, b)` digits decide), as a regex of JSON integers.
fn suffix_multiples(k: &str) -> Option<String> {
    let mut k: u64 = k.parse().ok()?;
    let kk = k;
    let (mut a, mut b) = (0u32, 0u32);
    while k.is_multiple_of(2) {
        k /= 2;
        a += 1;
    }
    while k.is_multiple_of(5) {
        k /= 5;
        b += 1;
    }
    if k != 1 || a.max(b) > 4 {
        return None;
    }
    let m = a.max(b);
    let modulus = 10u64.pow(m);
    let mut small = Vec::new();
    let mut suffixes = Vec::new();
    let mut x = 0;
    while x < modulus {
        small.push(x.to_string());
        suffixes.push(format!("{x:0width$}", width = m as usize));
        x += kk;
    }
    let body = if m == 0 {
        "0|[1-9][0-9]*".to_string()
    } else {
        format!("{}|[1-9][0-9]*(?:{})", small.join("|"), suffixes.join("|"))
    };
    Some(format!(r"-?(?:{body})(?:\.0+)?"))
}

/// Every multiple of `k` within finite bounds (at most `MAX_ENUMERATED`),
/// each as the regex of its JSON spellings; `None` when not enumerable.
fn enumerate_multiples(k: &Dec, lo: Option<&Bound>, hi: Option<&Bound>, integer: bool) -> Option<Vec<String>> {
    let (lo, hi) = (lo?, hi?);
    let scale = k.frac.len().max(lo.value.frac.len()).max(hi.value.frac.len());
    if scale > 12 {
        return None;
    }
    let scaled = |d: &Dec| -> Option<i128> {
        if d.int.len() > 24 {
            return None;
        }
        let f = format!("{:0<scale$}", d.frac);
        let v: i128 = format!("{}{}", d.int, f).parse().ok()?;
        Some(if d.neg { -v } else { v })
    };
    let (ks, ls, hs) = (scaled(k)?, scaled(&lo.value)?, scaled(&hi.value)?);
    let mut first = ls.div_euclid(ks) * ks;
    while first < ls || (lo.exclusive && first == ls) {
        first += ks;
    }
    let mut out = Vec::new();
    let mut x = first;
    while x < hs || (!hi.exclusive && x == hs) {
        if out.len() >= MAX_ENUMERATED {
            return None;
        }
        let neg = x < 0;
        let a = x.unsigned_abs();
        let p = 10u128.pow(scale as u32);
        let (i, f) = (a / p, a % p);
        let frac = format!("{f:0scale$}");
        let frac = frac.trim_end_matches('0');
        if integer && !frac.is_empty() {
            x += ks;
            continue;
        }
        let sign = if neg {
            "-"
        } else if a == 0 {
            "-?"
        } else {
            ""
        };
        out.push(if frac.is_empty() {
            format!(r"{sign}{i}(?:\.0+)?")
        } else {
            format!(r"{sign}{i}\.{frac}0*")
        });
        x += ks;
    }
    Some(out)
}
