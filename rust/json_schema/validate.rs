//! Deciding whether one given JSON value satisfies a subschema.
//!
//! Why a validator in a compiler: an `enum` or `const` is a finite set,
//! and its intersection with the other keywords at the same position is
//! just the members that satisfy them. For scalars the compiler tests the
//! value against the regex it would emit; for an object or array value
//! next to `properties`, `items`, `not`, ... testing it against the schema
//! directly is both exact and far simpler than intersecting a literal with
//! an object grammar. The answer is three-valued: a keyword this
//! validator does not know (`unevaluated*`, `$dynamicRef`, a pattern
//! whose ECMA-262 and Python readings may differ on the value) gives
//! `None`, and the compiler then refuses as it did before.

use super::compile::{esc, json_eq, type_bits, type_set, FRAC, INT};
use super::numbers::Dec;
use super::resolve::Doc;
use super::strings;
use crate::error::Result;
use crate::regex::{Dfa, RegexLimits, DEAD};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Keywords that only annotate, or are read with a sibling: skipped.
const READ_WITH_SIBLING: &[&str] = &[
    "then",
    "else",
    "minContains",
    "maxContains",
    "additionalItems",
    "exclusiveMinimum",
    "exclusiveMaximum",
];

pub(super) struct Validator<'a, 'b> {
    pub doc: &'b Doc<'a>,
    /// Compiled test regexes, shared with the compiler.
    pub dfas: &'b mut HashMap<String, Dfa>,
    pub max_depth: usize,
}

/// `Some(false)` short-circuits; `None` (undecided) is remembered.
macro_rules! all {
    ($acc:ident, $e:expr) => {
        match $e {
            Some(false) => return Ok(Some(false)),
            None => $acc = None,
            Some(true) => {}
        }
    };
}

impl Validator<'_, '_> {
    fn full_match(&mut self, regex: &str, text: &str) -> Result<bool> {
        full_match(self.dfas, regex, text)
    }

    /// Whether `pattern` (ECMA-262, search) matches `text`; `None` when
    /// the pattern cannot be read or Python's `re` might read it otherwise.
    fn pattern_matches(&mut self, pattern: &str, text: &str) -> Result<Option<bool>> {
        if !strings::same_in_python(pattern, text) {
            return Ok(None);
        }
        match strings::pattern_search_regex(pattern) {
            Ok(re) => Ok(Some(self.full_match(&re, text)?)),
            Err(_) => Ok(None),
        }
    }

    /// Whether `v` satisfies the schema at `ptr` (`None`: undecided).
    pub fn valid(&mut self, ptr: &str, v: &Value, depth: usize) -> Result<Option<bool>> {
        if depth > self.max_depth {
            return Ok(None);
        }
        let o = match self.doc.get(ptr) {
            Some(Value::Bool(b)) => return Ok(Some(*b)),
            Some(Value::Object(o)) => o,
            _ => return Ok(None),
        };
        let mut acc = Some(true);
        for (k, x) in o {
            let kp = format!("{ptr}/{}", esc(k));
            if READ_WITH_SIBLING.contains(&k.as_str()) && !(k.starts_with("exclusive") && x.is_number()) {
                continue;
            }
            let r = self.keyword(ptr, o, k, &kp, x, v, depth)?;
            all!(acc, r);
        }
        Ok(acc)
    }

    #[allow(clippy::too_many_arguments)]
    fn keyword(&mut self, ptr: &str, o: &Map<String, Value>, k: &str, kp: &str, x: &Value, v: &Value, depth: usize) -> Result<Option<bool>> {
        let d = depth + 1;
        let num = |v: &Value| match v {
            Value::Number(n) => Dec::from_json(n),
            _ => None,
        };
        Ok(match k {
            "$ref" => {
                let Some(r) = x.as_str() else { return Ok(None) };
                match self.doc.resolve(r, ptr) {
                    Ok(t) => self.valid(&t, v, d)?,
                    Err(_) => None,
                }
            }
            "allOf" | "anyOf" | "oneOf" => {
                let n = x.as_array().map_or(0, |a| a.len());
                let mut hits = 0;
                let mut unknown = false;
                for i in 0..n {
                    match self.valid(&format!("{kp}/{i}"), v, d)? {
                        Some(true) => hits += 1,
                        Some(false) => {}
                        None => unknown = true,
                    }
                }
                match k {
                    "allOf" if hits < n && !unknown => Some(false),
                    "anyOf" if hits > 0 => Some(true),
                    "oneOf" if hits > 1 => Some(false),
                    _ if unknown => None,
                    "allOf" => Some(true),
                    "anyOf" => Some(false),
                    _ => Some(hits == 1),
                }
            }
            "not" => self.valid(kp, v, d)?.map(|b| !b),
            "if" => match self.valid(kp, v, d)? {
                None => None,
                Some(c) => {
                    let branch = if c { "then" } else { "else" };
                    if o.contains_key(branch) {
                        self.valid(&format!("{ptr}/{branch}"), v, d)?
                    } else {
                        Some(true)
                    }
                }
            },
            "type" => match type_set(x, kp) {
                Ok(bits) => {
                    let t = type_bits(v);
                    Some(bits & t != 0 || (t == INT && bits & FRAC != 0))
                }
                Err(_) => None,
            },
            "enum" => x.as_array().map(|xs| xs.iter().any(|y| json_eq(y, v))),
            "const" => Some(json_eq(x, v)),
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                let (Some(n), Some(b)) = (num(v), num(x)) else {
                    return Ok(if v.is_number() { None } else { Some(true) });
                };
                let excl = match k {
                    "minimum" => o.get("exclusiveMinimum") == Some(&Value::Bool(true)),
                    "maximum" => o.get("exclusiveMaximum") == Some(&Value::Bool(true)),
                    _ => true,
                };
                let c = n.compare(&b);
                Some(if k.ends_with("inimum") {
                    c.is_gt() || c.is_eq() && !excl
                } else {
                    c.is_lt() || c.is_eq() && !excl
                })
            }
            "multipleOf" => match (num(v), num(x)) {
                (Some(n), Some(m)) => multiple(&n, &m),
                _ if v.is_number() => None,
                _ => Some(true),
            },
            "minLength" | "maxLength" => match (v.as_str(), x.as_u64()) {
                (Some(s), Some(n)) => {
                    let len = s.chars().count() as u64;
                    Some(if k == "minLength" { len >= n } else { len <= n })
                }
                (None, _) => Some(true),
                _ => None,
            },
            "pattern" => match (v.as_str(), x.as_str()) {
                (Some(s), Some(p)) => self.pattern_matches(p, s)?,
                (None, _) => Some(true),
                _ => None,
            },
            "format" => match (v.as_str(), x.as_str().map(strings::format_body)) {
                (None, _) => Some(true),
                (Some(_), Some(Ok(None))) => Some(true),
                (Some(s), Some(Ok(Some(b)))) => {
                    let enc = strings::encode(s);
                    Some(self.full_match(&format!("(?:{b})"), &enc[1..enc.len() - 1])?)
                }
                _ => None,
            },
            "minItems" | "maxItems" => match (v.as_array(), x.as_u64()) {
                (Some(a), Some(n)) => Some(if k == "minItems" { a.len() as u64 >= n } else { a.len() as u64 <= n }),
                (None, _) => Some(true),
                _ => None,
            },
            "uniqueItems" => match v.as_array() {
                Some(a) if x == &Value::Bool(true) => Some(!(0..a.len()).any(|i| (i + 1..a.len()).any(|j| json_eq(&a[i], &a[j])))),
                _ => Some(true),
            },
            "prefixItems" | "items" => {
                let Some(a) = v.as_array() else { return Ok(Some(true)) };
                let mut acc = Some(true);
                match x {
                    Value::Array(xs) => {
                        for (i, item) in a.iter().enumerate() {
                            if i < xs.len() {
                                all!(acc, self.valid(&format!("{kp}/{i}"), item, d)?);
                            } else if k == "items" && o.contains_key("additionalItems") {
                                all!(acc, self.valid(&format!("{ptr}/additionalItems"), item, d)?);
                            }
                        }
                    }
                    _ => {
                        let skip = match o.get("prefixItems") {
                            Some(Value::Array(p)) if k == "items" => p.len(),
                            _ => 0,
                        };
                        for item in a.iter().skip(skip) {
                            all!(acc, self.valid(kp, item, d)?);
                        }
                    }
                }
                acc
            }
            "contains" => {
                let Some(a) = v.as_array() else { return Ok(Some(true)) };
                let mut hits = 0u64;
                for item in a {
                    match self.valid(kp, item, d)? {
                        Some(true) => hits += 1,
                        Some(false) => {}
                        None => return Ok(None),
                    }
                }
                let lo = o.get("minContains").and_then(Value::as_u64).unwrap_or(1);
                let hi = o.get("maxContains").and_then(Value::as_u64);
                Some(hits >= lo && hi.is_none_or(|h| hits <= h))
            }
            "minProperties" | "maxProperties" => match (v.as_object(), x.as_u64()) {
                (Some(m), Some(n)) => Some(if k == "minProperties" {
                    m.len() as u64 >= n
                } else {
                    m.len() as u64 <= n
                }),
                (None, _) => Some(true),
                _ => None,
            },
            "required" => match (v.as_object(), x.as_array()) {
                (Some(m), Some(rs)) => Some(rs.iter().all(|r| r.as_str().is_some_and(|r| m.contains_key(r)))),
                (None, _) => Some(true),
                _ => None,
            },
            "properties" => {
                let (Some(m), Some(ps)) = (v.as_object(), x.as_object()) else {
                    return Ok(if v.is_object() { None } else { Some(true) });
                };
                let mut acc = Some(true);
                for (name, val) in m {
                    if ps.contains_key(name) {
                        all!(acc, self.valid(&format!("{kp}/{}", esc(name)), val, d)?);
                    }
                }
                acc
            }
            "patternProperties" => {
                let (Some(m), Some(ps)) = (v.as_object(), x.as_object()) else {
                    return Ok(if v.is_object() { None } else { Some(true) });
                };
                let mut acc = Some(true);
                for (name, val) in m {
                    for p in ps.keys() {
                        match self.pattern_matches(p, name)? {
                            Some(true) => all!(acc, self.valid(&format!("{kp}/{}", esc(p)), val, d)?),
                            Some(false) => {}
                            None => acc = None,
                        }
                    }
                }
                acc
            }
            "additionalProperties" => {
                let Some(m) = v.as_object() else { return Ok(Some(true)) };
                let listed = o.get("properties").and_then(Value::as_object);
                let pats: Vec<&String> = o
                    .get("patternProperties")
                    .and_then(Value::as_object)
                    .map(|p| p.keys().collect())
                    .unwrap_or_default();
                let mut acc = Some(true);
                for (name, val) in m {
                    if listed.is_some_and(|l| l.contains_key(name)) {
                        continue;
                    }
                    let mut matched = Some(false);
                    for p in &pats {
                        match self.pattern_matches(p, name)? {
                            Some(true) => matched = Some(true),
                            Some(false) => {}
                            None => matched = matched.filter(|&b| b),
                        }
                    }
                    match matched {
                        Some(true) => {}
                        Some(false) => all!(acc, self.valid(kp, val, d)?),
                        None => acc = None,
                    }
                }
                acc
            }
            "propertyNames" => {
                let Some(m) = v.as_object() else { return Ok(Some(true)) };
                let mut acc = Some(true);
                for name in m.keys() {
                    all!(acc, self.valid(kp, &Value::String(name.clone()), d)?);
                }
                acc
            }
            "dependentRequired" | "dependentSchemas" | "dependencies" => {
                let (Some(m), Some(deps)) = (v.as_object(), x.as_object()) else {
                    return Ok(if v.is_object() { None } else { Some(true) });
                };
                let mut acc = Some(true);
                for (name, dep) in deps {
                    if !m.contains_key(name) {
                        continue;
                    }
                    match dep {
                        Value::Array(rs) => all!(acc, Some(rs.iter().all(|r| r.as_str().is_some_and(|r| m.contains_key(r))))),
                        _ if k == "dependentRequired" => acc = None,
                        _ => all!(acc, self.valid(&format!("{kp}/{}", esc(name)), v, d)?),
                    }
                }
                acc
            }
            "unevaluatedProperties" | "unevaluatedItems" | "$dynamicRef" | "$recursiveRef" => None,
            _ => Some(true), // annotations and unknown keywords
        })
    }
}

/// Whether `text` is matched in full by `regex`, each regex compiled once
/// into `dfas`.
pub(super) fn full_match(dfas: &mut HashMap<String, Dfa>, regex: &str, text: &str) -> Result<bool> {
    if !dfas.contains_key(regex) {
        let dfa = Dfa::compile_many(&[regex], &RegexLimits::default())?;
        dfas.insert(regex.to_string(), dfa);
    }
    let dfa = &dfas[regex];
    let s = dfa.run(dfa.start(), text.as_bytes());
    Ok(s != DEAD && dfa.is_accepting(s))
}

/// Whether `n` is an integral multiple of `m` (`None` past 36 digits).
pub(super) fn multiple(n: &Dec, m: &Dec) -> Option<bool> {
    let scale = n.frac.len().max(m.frac.len());
    let scaled = |x: &Dec| -> Option<u128> {
        if x.int.len() + scale > 36 {
            return None;
        }
        format!("{}{:0<scale$}", x.int, x.frac).parse().ok()
    };
    match (scaled(n), scaled(m)) {
        (Some(a), Some(b)) if b > 0 => Some(a % b == 0),
        _ => None,
    }
}
