//! Shared machinery of the EBNF front ends (Lark, GBNF): source
//! positions and grammar errors, an [`Emitter`] that turns EBNF operators
//! (groups, optionals, bounded and unbounded repetition) into plain BNF
//! rules under [`GrammarLimits`], and small regex-emission helpers. The
//! front ends (`lark.rs`, `gbnf.rs`) only parse their source text and call
//! into this module.

use super::{GrammarBuilder, GrammarLimits, Sym};
use crate::error::{Error, Result};

// ---------------------------------------------------------------------------
// Positions and errors

/// A 1-based line/column position (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Pos {
    pub line: usize,
    pub col: usize,
}

pub(super) fn gerr(pos: Pos, message: impl Into<String>) -> Error {
    Error::Grammar {
        line: pos.line,
        column: pos.col,
        message: message.into(),
    }
}

/// Maps char indices of a text to line/column positions.
pub(super) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(chars: &[char]) -> Self {
        let mut starts = vec![0];
        starts.extend(chars.iter().enumerate().filter(|(_, &c)| c == '\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    pub fn pos(&self, i: usize) -> Pos {
        let line = self.starts.partition_point(|&s| s <= i);
        Pos {
            line,
            col: i - self.starts[line - 1] + 1,
        }
    }
}

// ---------------------------------------------------------------------------
// BNF emission with size limits

/// A [`GrammarBuilder`] that counts what it emits against [`GrammarLimits`]
/// and desugars repetition.
pub(super) struct Emitter<'l> {
    pub b: GrammarBuilder,
    limits: &'l GrammarLimits,
    nrules: usize,
    nsyms: usize,
    /// Where limit errors are reported (the definition being compiled).
    pub at: Pos,
}

impl<'l> Emitter<'l> {
    pub fn new(limits: &'l GrammarLimits) -> Self {
        Emitter {
            b: GrammarBuilder::new(),
            limits,
            nrules: 0,
            nsyms: 0,
            at: Pos::default(),
        }
    }

    fn too_large(&self, what: &str, max: usize) -> Error {
        gerr(self.at, format!("grammar too large: more than {max} {what}"))
    }

    pub fn rule(&mut self, lhs: u32, rhs: Vec<Sym>) -> Result<()> {
        self.nrules += 1;
        if self.nrules > self.limits.max_rules {
            return Err(self.too_large("rules (max_rules)", self.limits.max_rules));
        }
        self.nsyms += rhs.len();
        if self.nsyms > self.limits.max_rhs_symbols {
            return Err(self.too_large("right-hand-side symbols (max_rhs_symbols)", self.limits.max_rhs_symbols));
        }
        self.b.rule(lhs, rhs);
        Ok(())
    }

    fn check_terminal(&self, t: u32) -> Result<u32> {
        if t as usize >= self.limits.max_terminals {
            return Err(self.too_large("terminals (max_terminals)", self.limits.max_terminals));
        }
        Ok(t)
    }

    pub fn terminal(&mut self, name: &str, regex: &str) -> Result<u32> {
        let t = self.b.terminal(name, regex);
        let t = self.check_terminal(t)?;
        if crate::regex::has_lazy_repetition(regex) {
            self.b.set_first_match(t);
        }
        Ok(t)
    }

    pub fn literal(&mut self, lit: &str) -> Result<u32> {
        let t = self.b.literal(lit);
        self.check_terminal(t)
    }

    /// One symbol standing for a choice of sequences.
    pub fn group(&mut self, alts: Vec<Vec<Sym>>) -> Result<Sym> {
        if alts.len() == 1 && alts[0].len() == 1 {
            return Ok(alts[0][0]);
        }
        let h = self.b.fresh("group");
        for a in alts {
            self.rule(h, a)?;
        }
        Ok(Sym::N(h))
    }

    /// `(alt1 | alt2 | ...)?` as one nonterminal `h -> ε | alt1 | ...`.
    pub fn optional(&mut self, alts: Vec<Vec<Sym>>) -> Result<Sym> {
        let h = self.b.fresh("opt");
        self.rule(h, vec![])?;
        for a in alts {
            if !a.is_empty() {
                self.rule(h, a)?;
            }
        }
        Ok(Sym::N(h))
    }

    /// `x{min,max}` (`max` `None`: unbounded) as a sequence of symbols:
    /// `min` copies of `x`, then either a left-recursive `x*` helper or a
    /// chain of nested optionals `h_k -> ε | x h_{k-1}` (linear size,
    /// unambiguous).
    pub fn repeat(&mut self, x: Sym, min: u64, max: Option<u64>) -> Result<Vec<Sym>> {
        if let Some(mx) = max {
            if mx < min {
                return Err(gerr(
                    self.at,
                    format!("invalid repetition range {min}..{mx}: the maximum is below the minimum"),
                ));
            }
        }
        let room = self.limits.max_rhs_symbols.saturating_sub(self.nsyms) as u64;
        if min > room {
            return Err(self.too_large("right-hand-side symbols (max_rhs_symbols)", self.limits.max_rhs_symbols));
        }
        let mut out = Vec::new();
        match max {
            None => {
                if min == 0 {
                    let h = self.b.fresh("star");
                    self.rule(h, vec![])?;
                    self.rule(h, vec![Sym::N(h), x])?;
                    out.push(Sym::N(h));
                } else {
                    out.extend(std::iter::repeat_n(x, min as usize - 1));
                    let h = self.b.fresh("plus");
                    self.rule(h, vec![x])?;
                    self.rule(h, vec![Sym::N(h), x])?;
                    out.push(Sym::N(h));
                }
            }
            Some(mx) => {
                out.extend(std::iter::repeat_n(x, min as usize));
                let extra = mx - min;
                if extra > self.limits.max_rules as u64 {
                    return Err(self.too_large("rules (max_rules)", self.limits.max_rules));
                }
                let mut tail: Option<u32> = None;
                for _ in 0..extra {
                    let h = self.b.fresh("rep");
                    self.rule(h, vec![])?;
                    let mut rhs = vec![x];
                    if let Some(t) = tail {
                        rhs.push(Sym::N(t));
                    }
                    self.rule(h, rhs)?;
                    tail = Some(h);
                }
                if let Some(t) = tail {
                    out.push(Sym::N(t));
                }
            }
        }
        Ok(out)
    }
}

/// Whether the regex matches the empty string (full-match semantics).
pub(super) fn matches_empty(regex: &str) -> Result<bool> {
    let hir = match regex_syntax::ParserBuilder::new().build().parse(regex) {
        Ok(h) => h,
        Err(_) => return Ok(false), // reported elsewhere
    };
    let props = hir.properties();
    if props.minimum_len() != Some(0) {
        return Ok(false);
    }
    if props.look_set().is_empty() {
        return Ok(true);
    }
    // Look-around assertions: let the DFA decide.
    let dfa = crate::regex::Dfa::compile_many(&[regex], &Default::default())?;
    Ok(dfa.start() != crate::regex::DEAD && dfa.matches(dfa.start())[0] & 1 != 0)
}

// ---------------------------------------------------------------------------
// Regex emission

/// `c` written for a regex character class (ASCII letters and digits as
/// themselves, anything else as `\x{..}`).
pub(super) fn class_char(c: char) -> String {
    if c.is_ascii_alphanumeric() {
        c.to_string()
    } else {
        format!("\\x{{{:X}}}", c as u32)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::{Grammar, Sym};
    use crate::regex::{Dfa, RegexLimits, DEAD};
    use std::collections::HashSet;

    /// Test oracle: does `g` derive `text`, over *all* ways of splitting
    /// the text into lexemes (not the engine's greedy lexing), with
    /// `%ignore` lexemes allowed between any two lexemes? An Earley
    /// recognizer over byte positions.
    pub(crate) fn accepts(g: &Grammar, text: &str) -> bool {
        let bytes = text.as_bytes();
        let n = bytes.len();
        let pats: Vec<&str> = g.terminals.iter().map(|t| t.regex.as_str()).collect();
        let dfa = Dfa::compile_many(&pats, &RegexLimits::default()).unwrap();
        // spans[i] = (terminal, end) for lexemes starting at i.
        let mut spans: Vec<Vec<(u32, usize)>> = vec![Vec::new(); n + 1];
        for (i, sp) in spans.iter_mut().enumerate() {
            let mut s = dfa.start();
            for (j, &b) in bytes.iter().enumerate().skip(i) {
                s = dfa.next(s, b);
                if s == DEAD {
                    break;
                }
                for (w, &word) in dfa.matches(s).iter().enumerate() {
                    let mut m = word;
                    while m != 0 {
                        let b = m.trailing_zeros() as usize;
                        m &= m - 1;
                        sp.push(((w * 64 + b) as u32, j + 1));
                    }
                }
            }
        }
        let nn = g.nonterminals.len();
        let nullable = g.nullable();
        let mut rules_of: Vec<Vec<usize>> = vec![Vec::new(); nn];
        for (k, r) in g.rules.iter().enumerate() {
            rules_of[r.lhs as usize].push(k);
        }
        type Item = (usize, usize, usize); // rule, dot, origin
        let mut sets: Vec<Vec<Item>> = vec![Vec::new(); n + 1];
        let mut seen: Vec<HashSet<Item>> = vec![HashSet::new(); n + 1];
        let add = |sets: &mut Vec<Vec<Item>>, seen: &mut Vec<HashSet<Item>>, i: usize, it: Item| {
            if seen[i].insert(it) {
                sets[i].push(it);
            }
        };
        for &r in &rules_of[g.start as usize] {
            add(&mut sets, &mut seen, 0, (r, 0, 0));
        }
        for i in 0..=n {
            let mut k = 0;
            while k < sets[i].len() {
                let (r, d, o) = sets[i][k];
                k += 1;
                let rule = &g.rules[r];
                if d == rule.rhs.len() {
                    let waiting: Vec<Item> = sets[o].clone();
                    for (r2, d2, o2) in waiting {
                        if g.rules[r2].rhs.get(d2) == Some(&Sym::N(rule.lhs)) {
                            add(&mut sets, &mut seen, i, (r2, d2 + 1, o2));
                        }
                    }
                    continue;
                }
                match rule.rhs[d] {
                    Sym::N(m) => {
                        for &r2 in &rules_of[m as usize] {
                            add(&mut sets, &mut seen, i, (r2, 0, i));
                        }
                        if nullable[m as usize] {
                            add(&mut sets, &mut seen, i, (r, d + 1, o));
                        }
                    }
                    Sym::T(t) => {
                        for &(t2, j) in &spans[i] {
                            if t2 == t {
                                add(&mut sets, &mut seen, j, (r, d + 1, o));
                            }
                        }
                    }
                }
            }
            for &(t, j) in &spans[i] {
                if g.ignore.contains(&t) {
                    for it in sets[i].clone() {
                        add(&mut sets, &mut seen, j, it);
                    }
                }
            }
        }
        sets[n]
            .iter()
            .any(|&(r, d, o)| o == 0 && g.rules[r].lhs == g.start && d == g.rules[r].rhs.len())
    }
}
