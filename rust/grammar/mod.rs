//! Context-free grammars: the intermediate form every front end produces.
//!
//! A [`Grammar`] is plain BNF over two kinds of symbols: *terminals*, each
//! a regex over bytes (a lexeme), and *nonterminals*, each defined by one or
//! more rules. Front ends (Lark, GBNF, the built-in JSON grammar) desugar
//! their EBNF (`*`, `+`, `?`, groups, alternation) into fresh nonterminals
//! with [`GrammarBuilder`], so the parser only ever sees BNF.
//!
//! Lexing semantics (what "the language" of a grammar is): terminals are
//! matched greedily (maximal munch) among those the parser can accept at
//! that point — a contextual lexer. A lexeme ends exactly when the next
//! byte cannot extend it; `%ignore` terminals may appear between any two
//! lexemes. When a lexeme matches both an expected terminal and an ignored
//! one, the expected terminal wins.
//!
//! A terminal may instead end at its first complete match
//! ([`Terminal::first_match`]): Lark terminals whose regex has a lazy
//! quantifier (`/".*?"/` ends at the first closing quote, as with Lark's
//! own lexer). For the usual idioms (a lazy body before a delimiter) that
//! is exactly Python's backtracking match; where a greedy part follows a
//! lazy one (`/\d+?\.\d+/`) it is the shortest match, not Python's.
//!
//! Unlike Lark's lexer, a lexeme that runs into a dead end after a shorter
//! complete match (`%ignore " "` beside `COMMENT: " //" /[^\n]*/`, text
//! `a /b`) does not fall back to that match: the fallback is a lookahead of
//! unbounded length, and with it a byte's viability would depend on bytes
//! not yet seen.
//!
//! Masks are exact for these semantics with one caveat inherent to greedy
//! lexing: a lexeme prefix counts as viable when some allowed terminal can
//! still match it, which for pathological grammars (`s: A B` with
//! `A: /a+/`, `B: /a/`: greedy `A` swallows every `a`, so no text is
//! accepted) can allow a token no complete text follows. Grammars whose
//! adjacent terminals cannot run into each other (JSON, SQL, the usual
//! Lark and GBNF grammars) are not affected; GBNF terminals are single
//! characters, or promoted regular parts that no following terminal can
//! run into ([`promote`]), and never are.

pub mod body;
pub mod earley;
pub mod ebnf;
pub mod gbnf;
pub mod json;
pub mod lark;
pub mod lists;
pub mod mask;
pub mod promote;
pub mod word;

use crate::error::{Error, Result};
use crate::fxhash::FxMap;

/// A grammar symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sym {
    T(u32),
    N(u32),
}

#[derive(Debug, Clone)]
pub struct Terminal {
    pub name: String,
    /// Rust regex syntax; the lexeme must match it in full.
    pub regex: String,
    /// The lexeme ends at the terminal's first complete match (no byte
    /// extends a match): Lark's reading of a regex with lazy quantifiers.
    pub first_match: bool,
    /// Terminals whose lexemes this one does not match: its language is
    /// `regex`'s minus theirs (a JSON object's other keys: any string but
    /// the listed names' literals). They exclude nothing themselves.
    pub except: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub lhs: u32,
    pub rhs: Vec<Sym>,
}

#[derive(Debug, Clone)]
pub struct Grammar {
    pub terminals: Vec<Terminal>,
    pub nonterminals: Vec<String>,
    pub rules: Vec<Rule>,
    pub start: u32,
    pub ignore: Vec<u32>,
}

/// Size limits checked when a grammar is compiled.
#[derive(Debug, Clone, Copy)]
pub struct GrammarLimits {
    pub max_rules: usize,
    pub max_terminals: usize,
    pub max_rhs_symbols: usize,
    /// Items in one Earley set before parsing gives up (ambiguity guard).
    pub max_items_per_set: usize,
    /// Recursion depth of front-end parsers (nested groups).
    pub max_nesting: usize,
    /// Memory for memoised masks of one compiled grammar (full masks and
    /// the lexer layer). Once spent, further masks are computed each time
    /// they are asked for: a long generation cannot grow memory past it.
    pub mask_cache_bytes: usize,
}

impl Default for GrammarLimits {
    fn default() -> Self {
        GrammarLimits {
            max_rules: 200_000,
            max_terminals: 20_000,
            max_rhs_symbols: 2_000_000,
            max_items_per_set: 100_000,
            max_nesting: 200,
            mask_cache_bytes: crate::matcher::DEFAULT_MASK_CACHE_BYTES,
        }
    }
}

/// Incrementally builds a [`Grammar`], interning names and terminals and
/// desugaring EBNF operators into fresh nonterminals.
#[derive(Debug, Default)]
pub struct GrammarBuilder {
    terminals: Vec<Terminal>,
    term_by_regex: FxMap<String, u32>,
    term_by_name: FxMap<String, u32>,
    nonterminals: Vec<String>,
    nt_by_name: FxMap<String, u32>,
    rules: Vec<Rule>,
    ignore: Vec<u32>,
    fresh: usize,
}

impl GrammarBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A terminal for `regex`; identical regexes share one terminal.
    pub fn terminal(&mut self, name: &str, regex: &str) -> u32 {
        if let Some(&t) = self.term_by_regex.get(regex) {
            if !self.term_by_name.contains_key(name) {
                self.term_by_name.insert(name.to_string(), t);
            }
            return t;
        }
        let t = self.push_terminal(name, regex, Vec::new(), regex.to_string());
        self.term_by_name.insert(name.to_string(), t);
        t
    }

    /// A new terminal, found again under `key`.
    fn push_terminal(&mut self, name: &str, regex: &str, except: Vec<u32>, key: String) -> u32 {
        let t = self.terminals.len() as u32;
        self.terminals.push(Terminal {
            name: name.to_string(),
            regex: regex.to_string(),
            first_match: false,
            except,
        });
        self.term_by_regex.insert(key, t);
        t
    }

    /// A terminal for `regex` minus the lexemes of terminals `except`
    /// (see [`Terminal::except`]); equal ones share one terminal.
    pub fn terminal_except(&mut self, name: &str, regex: &str, mut except: Vec<u32>) -> u32 {
        except.sort_unstable();
        except.dedup();
        if except.is_empty() {
            return self.terminal(name, regex);
        }
        let key = format!("{regex}\0{except:?}");
        if let Some(&t) = self.term_by_regex.get(&key) {
            return t;
        }
        self.push_terminal(name, regex, except, key)
    }

    /// Give terminal `t` first-match semantics (see [`Terminal::first_match`]).
    pub fn set_first_match(&mut self, t: u32) {
        self.terminals[t as usize].first_match = true;
    }

    /// A terminal matching `lit` exactly.
    pub fn literal(&mut self, lit: &str) -> u32 {
        let name = format!("{lit:?}");
        self.terminal(&name, &regex_syntax::escape(lit))
    }

    /// The regex of terminal `t`.
    pub fn terminal_regex(&self, t: u32) -> &str {
        &self.terminals[t as usize].regex
    }

    pub fn terminal_named(&self, name: &str) -> Option<u32> {
        self.term_by_name.get(name).copied()
    }

    /// The nonterminal called `name` (created on first mention).
    pub fn nonterminal(&mut self, name: &str) -> u32 {
        if let Some(&n) = self.nt_by_name.get(name) {
            return n;
        }
        let n = self.nonterminals.len() as u32;
        self.nonterminals.push(name.to_string());
        self.nt_by_name.insert(name.to_string(), n);
        n
    }

    pub fn has_nonterminal(&self, name: &str) -> bool {
        self.nt_by_name.contains_key(name)
    }

    /// A new nonterminal no user name can clash with.
    pub fn fresh(&mut self, hint: &str) -> u32 {
        self.fresh += 1;
        let name = format!("__{hint}_{}", self.fresh);
        self.nonterminal(&name)
    }

    pub fn rule(&mut self, lhs: u32, rhs: Vec<Sym>) {
        self.rules.push(Rule { lhs, rhs });
    }

    /// `x*` as a left-recursive helper: `h -> ε | h x`.
    pub fn star(&mut self, x: Sym) -> Sym {
        let h = self.fresh("star");
        self.rule(h, vec![]);
        self.rule(h, vec![Sym::N(h), x]);
        Sym::N(h)
    }

    /// `x+`: `h -> x | h x`.
    pub fn plus(&mut self, x: Sym) -> Sym {
        let h = self.fresh("plus");
        self.rule(h, vec![x]);
        self.rule(h, vec![Sym::N(h), x]);
        Sym::N(h)
    }

    /// `x?`: `h -> ε | x`.
    pub fn opt(&mut self, x: Sym) -> Sym {
        let h = self.fresh("opt");
        self.rule(h, vec![]);
        self.rule(h, vec![x]);
        Sym::N(h)
    }

    /// A nonterminal for a choice of sequences.
    pub fn alts(&mut self, alts: Vec<Vec<Sym>>) -> Sym {
        if alts.len() == 1 && alts[0].len() == 1 {
            return alts[0][0];
        }
        let h = self.fresh("group");
        for a in alts {
            self.rule(h, a);
        }
        Sym::N(h)
    }

    pub fn ignore(&mut self, t: u32) {
        if !self.ignore.contains(&t) {
            self.ignore.push(t);
        }
    }

    /// Give every nonterminal that has no rule the single rule `rhs`
    /// (front ends that create states lazily use an unproductive symbol:
    /// a state with no way forward derives nothing, rather than being an
    /// undefined-symbol error).
    pub fn define_missing(&mut self, rhs: &[Sym]) {
        let mut defined = vec![false; self.nonterminals.len()];
        for r in &self.rules {
            defined[r.lhs as usize] = true;
        }
        for (n, d) in defined.into_iter().enumerate() {
            if !d {
                self.rules.push(Rule {
                    lhs: n as u32,
                    rhs: rhs.to_vec(),
                });
            }
        }
    }

    /// Nonterminals mentioned but never defined.
    pub fn undefined(&self) -> Vec<String> {
        let mut defined = vec![false; self.nonterminals.len()];
        for r in &self.rules {
            defined[r.lhs as usize] = true;
        }
        self.nonterminals
            .iter()
            .zip(defined)
            .filter(|(_, d)| !d)
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub fn finish(self, start: &str) -> Result<Grammar> {
        let start = *self.nt_by_name.get(start).ok_or_else(|| Error::Grammar {
            line: 0,
            column: 0,
            message: format!("start rule {start:?} is not defined"),
        })?;
        let g = Grammar {
            terminals: self.terminals,
            nonterminals: self.nonterminals,
            rules: self.rules,
            start,
            ignore: self.ignore,
        };
        g.validate()?;
        Ok(g)
    }
}

/// Attach the position of rule `name`'s definition in `text` to an
/// empty-language error, so front ends can name line and column for it too.
pub(crate) fn locate_empty_language(e: Error, text: &str, name: &str) -> Error {
    let Error::EmptyLanguage(message) = e else { return e };
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let body = trimmed.trim_start_matches(['?', '!']);
        if let Some(rest) = body.strip_prefix(name) {
            let rest = rest.trim_start();
            if rest.starts_with(':') || rest.starts_with("::=") || rest.starts_with('.') {
                let column = line.len() - body.len() + 1;
                return Error::Grammar {
                    line: i + 1,
                    column,
                    message,
                };
            }
        }
    }
    Error::EmptyLanguage(message)
}

impl Grammar {
    /// Which nonterminals derive some finite terminal string: the least
    /// fixpoint, by counting each rule's not-yet-productive occurrences
    /// (linear in the grammar: a pass-until-stable loop is quadratic on
    /// the long chains JSON Schema counting emits).
    pub fn productive(&self) -> Vec<bool> {
        self.fixpoint(|_| true)
    }

    /// Which nonterminals derive the empty string (the same fixpoint over
    /// rules without terminals). A rule of nullable symbols only is
    /// productive, so dropping unproductive rules first changes nothing here.
    pub fn nullable(&self) -> Vec<bool> {
        self.fixpoint(|r| r.rhs.iter().all(|s| matches!(s, Sym::N(_))))
    }

    /// The least set of nonterminals closed under "a rule that `counts`
    /// whose right-hand nonterminals are all in the set puts its
    /// left-hand side in": each rule's count of nonterminal occurrences
    /// not yet in the set, and for each nonterminal the rules it occurs
    /// in, so every occurrence is resolved once.
    fn fixpoint(&self, counts: impl Fn(&Rule) -> bool) -> Vec<bool> {
        let n = self.nonterminals.len();
        let mut done = vec![false; n];
        let mut missing = vec![0u32; self.rules.len()];
        // Occurrences grouped by nonterminal (counting sort): `occ[start[m]..start[m + 1]]`.
        let mut start = vec![0u32; n + 1];
        for r in self.rules.iter().filter(|r| counts(r)) {
            for s in &r.rhs {
                if let Sym::N(m) = s {
                    start[*m as usize + 1] += 1;
                }
            }
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut occ = vec![0u32; start[n] as usize];
        let mut work = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            if !counts(r) {
                missing[i] = u32::MAX;
                continue;
            }
            for s in &r.rhs {
                if let Sym::N(m) = s {
                    occ[fill[*m as usize] as usize] = i as u32;
                    fill[*m as usize] += 1;
                    missing[i] += 1;
                }
            }
            if missing[i] == 0 && !done[r.lhs as usize] {
                done[r.lhs as usize] = true;
                work.push(r.lhs);
            }
        }
        while let Some(m) = work.pop() {
            for &i in &occ[start[m as usize] as usize..start[m as usize + 1] as usize] {
                missing[i as usize] -= 1;
                let lhs = self.rules[i as usize].lhs;
                if missing[i as usize] == 0 && !done[lhs as usize] {
                    done[lhs as usize] = true;
                    work.push(lhs);
                }
            }
        }
        done
    }

    /// Every symbol of `r`'s right-hand side is a terminal or productive.
    pub fn rule_is_productive(&self, r: &Rule, productive: &[bool]) -> bool {
        r.rhs.iter().all(|s| match s {
            Sym::T(_) => true,
            Sym::N(m) => productive[*m as usize],
        })
    }

    /// Undefined nonterminals and an empty language are errors.
    pub fn validate(&self) -> Result<()> {
        let n = self.nonterminals.len();
        let mut defined = vec![false; n];
        for r in &self.rules {
            defined[r.lhs as usize] = true;
        }
        if let Some(i) = defined.iter().position(|d| !d) {
            return Err(Error::Grammar {
                line: 0,
                column: 0,
                message: format!("undefined symbol {:?}", self.nonterminals[i]),
            });
        }
        let productive = self.productive();
        if !productive[self.start as usize] {
            let mut dead: Vec<&str> = (0..n)
                .filter(|&i| !productive[i] && !self.nonterminals[i].starts_with("__"))
                .map(|i| self.nonterminals[i].as_str())
                .collect();
            dead.truncate(5);
            return Err(Error::EmptyLanguage(format!(
                "the grammar's language is empty: start symbol {:?} derives no finite string (rules that never terminate: {})",
                self.nonterminals[self.start as usize],
                dead.join(", ")
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pass-until-stable fixpoint the worklist replaced.
    fn reference(g: &Grammar, counts: impl Fn(&Rule) -> bool) -> Vec<bool> {
        let mut done = vec![false; g.nonterminals.len()];
        loop {
            let mut changed = false;
            for r in g.rules.iter().filter(|r| counts(r)) {
                if !done[r.lhs as usize]
                    && r.rhs
                        .iter()
                        .all(|s| matches!(s, Sym::T(_)) || matches!(s, Sym::N(m) if done[*m as usize]))
                {
                    done[r.lhs as usize] = true;
                    changed = true;
                }
            }
            if !changed {
                return done;
            }
        }
    }

    proptest::proptest! {
        /// Productive and nullable sets equal the naive fixpoint on random
        /// grammars (repeated symbols, self-loops, unused nonterminals).
        #[test]
        fn fixpoints_match_reference(
            n in 1usize..12,
            rules in proptest::collection::vec((0u32..12, proptest::collection::vec((proptest::bool::ANY, 0u32..12), 0..4)), 0..30),
        ) {
            let g = Grammar {
                terminals: vec![],
                nonterminals: (0..n).map(|i| format!("n{i}")).collect(),
                rules: rules
                    .into_iter()
                    .map(|(l, rhs)| Rule {
                        lhs: l % n as u32,
                        rhs: rhs.into_iter().map(|(t, x)| if t { Sym::T(x) } else { Sym::N(x % n as u32) }).collect(),
                    })
                    .collect(),
                start: 0,
                ignore: vec![],
            };
            proptest::prop_assert_eq!(g.productive(), reference(&g, |_| true));
            proptest::prop_assert_eq!(g.nullable(), reference(&g, |r| r.rhs.iter().all(|s| matches!(s, Sym::N(_)))));
        }
    }
}
