//! Regex constraints: a pattern compiled to a byte-level DFA whose only
//! dead state is 0 and whose every other state can still reach a match.
//!
//! regex-automata does the heavy lifting (parsing, Unicode classes, UTF-8
//! compilation, determinization with size limits). We then copy the DFA into
//! a plain transition table and run a reverse reachability pass: a state from
//! which no accepting state is reachable is merged into the dead state. That
//! pass is what makes masks *exact*: without it, a token leading into such a
//! state would look viable although no completion exists.
//!
//! Semantics: the whole generated text must match (full match), over the
//! UTF-8 bytes of the text, with the syntax of Rust's `regex` crate. The DFA
//! is built with `MatchKind::All` so that a match of a shorter alternative
//! never cuts off a longer one (`a|ab` accepts both).

use crate::error::{Error, Result};
use regex_automata::{
    dfa::{dense, Automaton, StartKind},
    nfa::thompson,
    util::{primitives::StateID, start},
    Anchored, MatchKind,
};
use regex_syntax::ast::parse::ParserBuilder;
use regex_syntax::hir::translate::TranslatorBuilder;

/// Bounds that keep hostile patterns from exhausting time or memory.
#[derive(Debug, Clone, Copy)]
pub struct RegexLimits {
    /// Heap bytes for the Thompson NFA (`\w{2000}` trips this).
    pub nfa_size: usize,
    /// Heap bytes for determinization and for the dense DFA
    /// (`(a|b)*a(a|b){40}` trips this).
    pub dfa_size: usize,
    /// Reachable DFA states we are willing to copy into our own table.
    pub max_states: usize,
    /// Maximum nesting depth of the pattern.
    pub nest_limit: u32,
}

impl Default for RegexLimits {
    fn default() -> Self {
        RegexLimits { nfa_size: 16 << 20, dfa_size: 64 << 20, max_states: 200_000, nest_limit: 200 }
    }
}

/// A DFA over bytes with states numbered `0..num_states`; 0 is dead.
#[derive(Debug, Clone)]
pub struct Dfa {
    classes: [u8; 256],
    stride: usize,
    trans: Vec<u32>,
    accepting: Vec<bool>,
    /// No byte leads to a live state: only the end of the text can follow.
    terminal: Vec<bool>,
    start: u32,
}

pub const DEAD: u32 = 0;

impl Dfa {
    #[inline(always)]
    pub fn next(&self, s: u32, b: u8) -> u32 {
        // SAFETY-free fast path: indices are in range by construction
        // (every entry of `trans` is < num_states, classes < stride).
        self.trans[s as usize * self.stride + self.classes[b as usize] as usize]
    }

    pub fn start(&self) -> u32 {
        self.start
    }

    pub fn num_states(&self) -> usize {
        self.accepting.len()
    }

    #[inline]
    pub fn is_accepting(&self, s: u32) -> bool {
        self.accepting[s as usize]
    }

    #[inline]
    pub fn is_terminal(&self, s: u32) -> bool {
        self.terminal[s as usize]
    }

    /// Run `bytes` from `s`; `DEAD` if any step dies.
    pub fn run(&self, mut s: u32, bytes: &[u8]) -> u32 {
        for &b in bytes {
            s = self.next(s, b);
            if s == DEAD {
                return DEAD;
            }
        }
        s
    }

    /// Bytes every continuation from `s` must start with (stops at a
    /// branch, at an accepting state, or after `max` bytes).
    pub fn forced_bytes(&self, mut s: u32, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < max && s != DEAD && !self.accepting[s as usize] {
            let mut only: Option<(u8, u32)> = None;
            let mut count = 0;
            for b in 0..=255u8 {
                let t = self.next(s, b);
                if t != DEAD {
                    count += 1;
                    only = Some((b, t));
                    if count > 1 {
                        break;
                    }
                }
            }
            match (count, only) {
                (1, Some((b, t))) => {
                    out.push(b);
                    s = t;
                }
                _ => break,
            }
        }
        out
    }

    /// Compile `pattern` (Rust regex syntax) for full-match semantics.
    pub fn compile(pattern: &str, limits: &RegexLimits) -> Result<Dfa> {
        let ast = ParserBuilder::new()
            .nest_limit(limits.nest_limit)
            .build()
            .parse(pattern)
            .map_err(|e| syntax_error(pattern, e.span(), &e.kind().to_string()))?;
        let hir = TranslatorBuilder::new()
            .utf8(true)
            .build()
            .translate(pattern, &ast)
            .map_err(|e| syntax_error(pattern, e.span(), &e.kind().to_string()))?;

        let nfa = thompson::Compiler::new()
            .configure(
                thompson::Config::new()
                    .nfa_size_limit(Some(limits.nfa_size))
                    .which_captures(thompson::WhichCaptures::None)
                    .shrink(false),
            )
            .build_from_hir(&hir)
            .map_err(|e| Error::TooLarge(format!("NFA exceeds {} bytes ({e})", limits.nfa_size)))?;
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .match_kind(MatchKind::All)
                    .start_kind(StartKind::Anchored)
                    .byte_classes(true)
                    .minimize(false)
                    .dfa_size_limit(Some(limits.dfa_size))
                    .determinize_size_limit(Some(limits.dfa_size)),
            )
            .build_from_nfa(&nfa)
            .map_err(|e| Error::TooLarge(format!("DFA exceeds {} bytes ({e})", limits.dfa_size)))?;
        Self::from_dense(&dfa, limits, pattern)
    }

    fn from_dense(dfa: &dense::DFA<Vec<u32>>, limits: &RegexLimits, pattern: &str) -> Result<Dfa> {
        let start_cfg = start::Config::new().anchored(Anchored::Yes);
        let start_id = dfa
            .start_state(&start_cfg)
            .map_err(|e| Error::Usage(format!("cannot start regex automaton: {e}")))?;

        // Our byte classes: regex-automata's (EOI handled separately).
        let bc = dfa.byte_classes();
        let mut classes = [0u8; 256];
        let mut reps: Vec<u8> = Vec::new();
        let mut class_of_rep = std::collections::HashMap::new();
        for b in 0..=255u8 {
            let c = bc.get(b);
            let ours = *class_of_rep.entry(c).or_insert_with(|| {
                reps.push(b);
                (reps.len() - 1) as u8
            });
            classes[b as usize] = ours;
        }
        let stride = reps.len();

        // BFS over reachable states; index 0 reserved for dead.
        let mut ids: std::collections::HashMap<StateID, u32> = std::collections::HashMap::new();
        let mut order: Vec<StateID> = vec![StateID::ZERO]; // placeholder for dead
        let mut trans: Vec<u32> = vec![DEAD; stride];
        let mut queue = std::collections::VecDeque::new();
        let intern = |sid: StateID, order: &mut Vec<StateID>, ids: &mut std::collections::HashMap<StateID, u32>, queue: &mut std::collections::VecDeque<StateID>| -> Result<u32> {
            if dfa.is_dead_state(sid) {
                return Ok(DEAD);
            }
            if dfa.is_quit_state(sid) {
                return Err(Error::Usage(format!(
                    "regex {pattern:?} needs look-around the DFA cannot decide (Unicode word boundary on non-ASCII input); use (?-u:\\b)"
                )));
            }
            if let Some(&i) = ids.get(&sid) {
                return Ok(i);
            }
            let i = order.len() as u32;
            if order.len() > limits.max_states {
                return Err(Error::TooLarge(format!("more than {} DFA states", limits.max_states)));
            }
            ids.insert(sid, i);
            order.push(sid);
            queue.push_back(sid);
            Ok(i)
        };
        let start = intern(start_id, &mut order, &mut ids, &mut queue)?;
        while let Some(sid) = queue.pop_front() {
            let from = ids[&sid] as usize;
            if trans.len() < (from + 1) * stride {
                trans.resize((from + 1) * stride, DEAD);
            }
            for (c, &b) in reps.iter().enumerate() {
                let t = dfa.next_state(sid, b);
                let ti = intern(t, &mut order, &mut ids, &mut queue)?;
                trans[from * stride + c] = ti;
            }
        }
        let n = order.len();
        trans.resize(n * stride, DEAD);
        let mut accepting = vec![false; n];
        for (i, &sid) in order.iter().enumerate().skip(1) {
            accepting[i] = dfa.is_match_state(dfa.next_eoi_state(sid));
        }
        prune_and_renumber(classes, stride, trans, accepting, start)
    }
}

/// Merge every state that cannot reach an accepting state into `DEAD`, and
/// renumber the survivors densely.
fn prune_and_renumber(classes: [u8; 256], stride: usize, trans: Vec<u32>, accepting: Vec<bool>, start: u32) -> Result<Dfa> {
    let n = accepting.len();
    // Reverse edges in CSR form.
    let mut indeg = vec![0u32; n + 1];
    for &t in &trans {
        indeg[t as usize + 1] += 1;
    }
    for i in 0..n {
        indeg[i + 1] += indeg[i];
    }
    let mut fill = indeg.clone();
    let mut preds = vec![0u32; trans.len()];
    for (e, &t) in trans.iter().enumerate() {
        let s = (e / stride) as u32;
        preds[fill[t as usize] as usize] = s;
        fill[t as usize] += 1;
    }
    let mut live = accepting.clone();
    live[DEAD as usize] = false;
    let mut stack: Vec<u32> = (0..n as u32).filter(|&s| live[s as usize]).collect();
    while let Some(t) = stack.pop() {
        for &p in &preds[indeg[t as usize] as usize..indeg[t as usize + 1] as usize] {
            if p != DEAD && !live[p as usize] {
                live[p as usize] = true;
                stack.push(p);
            }
        }
    }
    if !live[start as usize] {
        return Err(Error::EmptyLanguage("the regex matches no string".into()));
    }
    let mut new_id = vec![DEAD; n];
    let mut next = 1u32;
    for s in 1..n {
        if live[s] {
            new_id[s] = next;
            next += 1;
        }
    }
    let m = next as usize;
    let mut ntrans = vec![DEAD; m * stride];
    let mut nacc = vec![false; m];
    let mut terminal = vec![true; m];
    for s in 1..n {
        let ns = new_id[s] as usize;
        if ns == 0 {
            continue;
        }
        nacc[ns] = accepting[s];
        for c in 0..stride {
            let t = new_id[trans[s * stride + c] as usize];
            ntrans[ns * stride + c] = t;
            if t != DEAD {
                terminal[ns] = false;
            }
        }
    }
    Ok(Dfa { classes, stride, trans: ntrans, accepting: nacc, terminal, start: new_id[start as usize] })
}

fn syntax_error(pattern: &str, span: &regex_syntax::ast::Span, message: &str) -> Error {
    let _ = pattern;
    Error::RegexSyntax { offset: span.start.offset, line: span.start.line, column: span.start.column, message: message.to_string() }
}

/// Trie-walk adapter: a stack of DFA states, one per pushed byte.
pub struct DfaWalker<'a> {
    dfa: &'a Dfa,
    stack: Vec<u32>,
}

impl<'a> DfaWalker<'a> {
    pub fn new(dfa: &'a Dfa, state: u32, max_depth: usize) -> Self {
        let mut stack = Vec::with_capacity(max_depth + 1);
        stack.push(state);
        DfaWalker { dfa, stack }
    }
}

impl crate::toktrie::Recognizer for DfaWalker<'_> {
    #[inline(always)]
    fn try_push_byte(&mut self, b: u8) -> bool {
        // `stack` is never empty: pops never go below the initial state.
        let s = self.dfa.next(*self.stack.last().unwrap(), b);
        if s == DEAD {
            false
        } else {
            self.stack.push(s);
            true
        }
    }

    #[inline(always)]
    fn pop_bytes(&mut self, n: usize) {
        let l = self.stack.len() - n;
        self.stack.truncate(l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(p: &str, s: &str) -> Option<bool> {
        let d = Dfa::compile(p, &RegexLimits::default()).unwrap();
        let st = d.run(d.start(), s.as_bytes());
        if st == DEAD {
            None
        } else {
            Some(d.is_accepting(st))
        }
    }

    #[test]
    fn full_match_semantics() {
        assert_eq!(full("a|ab", "a"), Some(true));
        assert_eq!(full("a|ab", "ab"), Some(true));
        assert_eq!(full("a|ab", "abc"), None);
        assert_eq!(full("[0-9]{4}-[0-9]{2}", "2024-"), Some(false));
        assert_eq!(full("caf.", "café"), Some(true));
        // a prefix that is only viable through a multi-byte char
        assert_eq!(full("é", "\u{e9}"), Some(true));
    }

    #[test]
    fn dead_ends_are_pruned() {
        // After "ab" nothing can complete: `ab` leads nowhere in `a(bc|d)` unless c follows.
        let d = Dfa::compile("a(bc|d)", &RegexLimits::default()).unwrap();
        assert_ne!(d.run(d.start(), b"ab"), DEAD);
        assert_eq!(d.run(d.start(), b"abd"), DEAD);
        // `$` inside: `a$b` matches nothing.
        assert!(matches!(Dfa::compile("a$b", &RegexLimits::default()), Err(Error::EmptyLanguage(_))));
    }

    #[test]
    fn syntax_error_names_position() {
        match Dfa::compile("ab(c", &RegexLimits::default()) {
            Err(Error::RegexSyntax { offset, .. }) => assert_eq!(offset, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn explosive_patterns_hit_limits() {
        let t = std::time::Instant::now();
        assert!(matches!(Dfa::compile("(a|b)*a(a|b){40}", &RegexLimits::default()), Err(Error::TooLarge(_))));
        assert!(matches!(Dfa::compile(r"\w{2000}", &RegexLimits::default()), Err(Error::TooLarge(_))));
        assert!(t.elapsed().as_secs() < 60);
    }

    #[test]
    fn forced() {
        let d = Dfa::compile(r#"\{"name": "[a-z]+"\}"#, &RegexLimits::default()).unwrap();
        assert_eq!(d.forced_bytes(d.start(), 100), br#"{"name": ""#);
    }
}
