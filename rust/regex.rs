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
use crate::fxhash::FxMap;
use regex_automata::{
    dfa::{dense, Automaton, StartKind},
    nfa::thompson,
    util::{primitives::StateID, start},
    Anchored, MatchKind,
};
use regex_syntax::ast::parse::ParserBuilder;
use regex_syntax::hir::translate::TranslatorBuilder;

mod determinize;
pub(crate) use determinize::Segments;

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
    /// Bound on determinization work, in bytes of builder memory times
    /// byte classes. The memory limit alone bounds space, not time: each
    /// DFA state costs a pass over every byte class, so a pattern with
    /// many classes and huge NFA state sets (`\d(?:(?-u:é??)){65535}`)
    /// ran for 22 s before `dfa_size` said no. Dividing this budget by
    /// the alphabet size makes the size limit trip after about the same
    /// amount of work whatever the alphabet.
    pub determinize_work: usize,
}

/// Default [`RegexLimits::determinize_work`]: 64 MiB of builder memory at
/// 16 byte classes (about two seconds of one core on the worst patterns
/// measured).
pub const DEFAULT_DETERMINIZE_WORK: usize = (64 << 20) * 16;

impl Default for RegexLimits {
    fn default() -> Self {
        RegexLimits {
            nfa_size: 16 << 20,
            dfa_size: 64 << 20,
            max_states: 200_000,
            nest_limit: 200,
            determinize_work: DEFAULT_DETERMINIZE_WORK,
        }
    }
}

/// A DFA over bytes with states numbered `0..num_states`; 0 is dead.
///
/// It may recognise several patterns at once (a grammar's terminals): each
/// state records which patterns match if the text ends there (`matches`)
/// and which can still be matched by some continuation (`reach`). A state
/// whose `reach` is empty is merged into `DEAD`, so "not dead" means "some
/// pattern can still match", and filtering `reach` by a set of patterns
/// answers the same question for a subset (a contextual lexer).
#[derive(Debug, Clone)]
pub struct Dfa {
    classes: [u8; 256],
    stride: usize,
    trans: Vec<u32>,
    /// Pattern-set words per state.
    pwords: usize,
    matches: Vec<u64>,
    reach: Vec<u64>,
    /// No byte leads to a live state: only the end of the text can follow.
    terminal: Vec<bool>,
    start: u32,
    npatterns: usize,
    /// Per UTF-8 decoder state inside a character (see
    /// [`crate::toktrie::utf8_step`]): one continuation byte per run of
    /// bytes with the same byte class and decoder successor, and that
    /// successor. A JSON lexer has one to four such runs in 0x80..=0xBF;
    /// walks that follow characters through the automaton
    /// ([`crate::grammar::mask`]) would otherwise try all 64 bytes at
    /// every step.
    utf8_conts: Utf8Continuations,
    /// See [`Dfa::char_start_groups`].
    char_groups: Box<[CharStartGroup]>,
    /// See [`Dfa::class_bytes`].
    class_sets: Box<[(u8, [u64; 4])]>,
    /// Each state's subset of NFA states, where the automaton is the plain
    /// subset construction ([`Dfa::alike_by_subsets`]).
    subsets: Option<std::sync::Arc<Subsets>>,
}

/// Per state of a lexer built by plain subset construction, the NFA states
/// it stands for, and which pattern each NFA state belongs to.
///
/// Why: the lexer runs every terminal of a grammar side by side, so two
/// states that differ only in terminals the parser does not allow now (a
/// value string's count beside a format's or a key's progress) walk alike,
/// and `grammar::mask` asks that question at every step of a run of body
/// characters. Asked by exploring pairs of states it gives up past a
/// budget when the other terminals branch widely, and the mask falls back
/// to a walk of the whole trie; asked of the subsets it is a comparison.
#[derive(Debug)]
struct Subsets {
    /// Pattern of each NFA state.
    nfa_pattern: Vec<u32>,
    /// `keys[start[s] as usize..start[s + 1] as usize]`: state `s`'s NFA
    /// states, sorted.
    start: Vec<u32>,
    keys: Vec<u32>,
    /// Per terminal (pattern of the result): the NFA patterns its matches
    /// depend on, its own and those of the terminals it excludes.
    depends: Vec<Vec<u32>>,
    /// Words of a bit set over NFA patterns.
    nwords: usize,
}

/// Most NFA states kept over all of a lexer's subsets ([`Subsets`]); a
/// larger automaton goes without.
const MAX_SUBSET_ENTRIES: usize = 1 << 21;

/// The pattern each state of `nfa` belongs to, if no state belongs to
/// two (every pattern's states are its own).
fn nfa_owners(nfa: &regex_automata::nfa::thompson::NFA) -> Option<Vec<u32>> {
    use regex_automata::nfa::thompson::State;
    use regex_automata::util::primitives::{PatternID, StateID};
    const NONE: u32 = u32::MAX;
    let mut owner = vec![NONE; nfa.states().len()];
    let mut stack = Vec::new();
    for p in 0..nfa.pattern_len() {
        let start = nfa.start_pattern(PatternID::new_unchecked(p))?;
        stack.push(start);
        while let Some(s) = stack.pop() {
            let o = &mut owner[s.as_usize()];
            if *o == p as u32 {
                continue;
            }
            if *o != NONE {
                return None;
            }
            *o = p as u32;
            match nfa.state(s) {
                State::ByteRange { trans } => stack.push(trans.next),
                State::Sparse(sp) => stack.extend(sp.transitions.iter().map(|t| t.next)),
                State::Dense(dn) => stack.extend(dn.transitions.iter().copied().filter(|&t| t != StateID::ZERO)),
                State::Look { next, .. } | State::Capture { next, .. } => stack.push(*next),
                State::Union { alternates } => stack.extend(alternates.iter().copied()),
                State::BinaryUnion { alt1, alt2 } => stack.extend([*alt1, *alt2]),
                State::Fail | State::Match { .. } => {}
            }
        }
    }
    Some(owner)
}

/// See [`Dfa::utf8_continuations`]: per decoder state, (byte, next state).
type Utf8Continuations = Box<[Box<[(u8, u8)]>]>;

/// The bytes that may start a UTF-8 character with one byte class and one
/// decoder state after them ([`Dfa::char_start_groups`]).
#[derive(Debug, Clone, Copy)]
pub struct CharStartGroup {
    /// The group's first byte, which stands for all of it.
    pub first: u8,
    /// The decoder state after any byte of the group.
    pub utf8: crate::toktrie::Utf8State,
    /// The group's bytes, as a 256-bit set, and how many there are.
    pub bytes: [u64; 4],
    pub count: u32,
}

pub const DEAD: u32 = 0;

/// Whether `pattern` has a lazy (non-greedy) repetition whose count is not
/// fixed (`*?`, `+?`, `??`, `{m,n}?`). `false` for a pattern that does not
/// parse (compiling it reports the error).
pub fn has_lazy_repetition(pattern: &str) -> bool {
    fn walk(h: &regex_syntax::hir::Hir) -> bool {
        use regex_syntax::hir::HirKind;
        match h.kind() {
            HirKind::Repetition(r) => (!r.greedy && r.max != Some(r.min)) || walk(&r.sub),
            HirKind::Capture(c) => walk(&c.sub),
            HirKind::Concat(v) | HirKind::Alternation(v) => v.iter().any(walk),
            _ => false,
        }
    }
    regex_syntax::Parser::new().parse(pattern).is_ok_and(|h| walk(&h))
}

/// The bytes a match of `pattern` can begin with, read off its syntax tree
/// (no automaton is built, so this costs microseconds). `None` when the
/// pattern does not parse, can match the empty string, or uses look-around
/// assertions (whose effect on the first byte depends on context).
pub fn first_bytes(pattern: &str) -> Option<[u64; 4]> {
    use regex_syntax::hir::{Class, HirKind};
    /// (first bytes, can match empty), or `None` for an assertion.
    fn walk(h: &regex_syntax::hir::Hir) -> Option<([u64; 4], bool)> {
        let mut set = [0u64; 4];
        let mut add = |b: u8| set[b as usize / 64] |= 1 << (b % 64);
        Some(match h.kind() {
            HirKind::Empty => (set, true),
            HirKind::Literal(l) => {
                add(l.0[0]);
                (set, false)
            }
            HirKind::Class(Class::Bytes(c)) => {
                for r in c.iter() {
                    (r.start()..=r.end()).for_each(&mut add);
                }
                (set, false)
            }
            HirKind::Class(Class::Unicode(c)) => {
                for r in c.iter() {
                    for seq in regex_syntax::utf8::Utf8Sequences::new(r.start(), r.end()) {
                        let first = seq.as_slice()[0];
                        (first.start..=first.end).for_each(&mut add);
                    }
                }
                (set, false)
            }
            HirKind::Look(_) => return None,
            HirKind::Repetition(r) => {
                let (f, e) = walk(&r.sub)?;
                (f, e || r.min == 0)
            }
            HirKind::Capture(c) => walk(&c.sub)?,
            HirKind::Concat(v) => {
                for x in v {
                    let (f, e) = walk(x)?;
                    for (a, b) in set.iter_mut().zip(f) {
                        *a |= b;
                    }
                    if !e {
                        return Some((set, false));
                    }
                }
                (set, true)
            }
            HirKind::Alternation(v) => {
                let mut empty = false;
                for x in v {
                    let (f, e) = walk(x)?;
                    for (a, b) in set.iter_mut().zip(f) {
                        *a |= b;
                    }
                    empty |= e;
                }
                (set, empty)
            }
        })
    }
    let h = regex_syntax::ParserBuilder::new().utf8(true).build().parse(pattern).ok()?;
    match walk(&h)? {
        (set, false) => Some(set),
        _ => None,
    }
}

thread_local! {
    /// regex-automata's Thompson compiler, kept per thread: a new one
    /// allocates and fills a 320 KB cache of UTF-8 suffixes on its first
    /// Unicode class, more than the rest of a small lexer's compile
    /// touches (in a freshly forked worker, 80 page faults per schema). A
    /// kept one only bumps the cache's version number.
    static NFA_COMPILER: std::cell::RefCell<thompson::Compiler> = std::cell::RefCell::new(thompson::Compiler::new());
}

#[cfg(test)]
thread_local! {
    /// Tests: determinize with regex-automata even without look-around
    /// (the reference for [`determinize`]).
    static FORCE_DENSE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether to skip [`determinize`] (tests only, see `FORCE_DENSE`).
fn force_dense() -> bool {
    #[cfg(test)]
    {
        FORCE_DENSE.with(|f| f.get())
    }
    #[cfg(not(test))]
    {
        false
    }
}

/// A terminal for [`Dfa::compile_terminals`].
#[derive(Debug, Clone, Copy)]
pub struct TerminalSpec<'a> {
    pub pattern: &'a str,
    /// See [`Dfa::compile_many_first_match`].
    pub first_match: bool,
    /// Terminals whose matches are taken out of this one's: its language
    /// is its pattern's minus theirs. They must exclude nothing themselves.
    pub except: &'a [u32],
}

/// Terminals over the distinct patterns determinized for them.
struct TerminalMap {
    pattern_of: Vec<u32>,
    except: Vec<Vec<u32>>,
}

/// [`Dfa::quotient_in`]'s per-thread index of states met.
#[derive(Default)]
struct QuotientIndex {
    marks: crate::marks::Marks,
    index: Vec<u32>,
}

thread_local! {
    static QUOTIENT_INDEX: std::cell::Cell<QuotientIndex> = std::cell::Cell::new(QuotientIndex::default());
}

/// See [`Dfa::quotient`]: per state (breadth first from the start), its
/// successors by byte class (`u32::MAX`: none), label id and block.
struct Quotient {
    states: Vec<u32>,
    succ: Vec<u32>,
    labels: Vec<u32>,
    block: Vec<u32>,
    nblocks: usize,
}

/// (state, byte class) pairs that [`Dfa::walk_signature`]'s refinement may
/// pass over before it gives up: each round costs a pass over every state
/// and class, and a signature is only worth computing when it costs far
/// less than the trie walk it saves (a lexeme with a long chain of states,
/// such as up to 20 tabs, refines for as many rounds).
const MAX_WALK_SIGNATURE_WORK: usize = 24 << 10;

/// See [`Dfa::walk_signature`].
#[derive(Debug)]
pub struct WalkSignature {
    /// The automaton-independent description (a hash map key).
    pub key: Vec<u32>,
    /// Block (state of the description) of each state it covers.
    pub block_of: crate::fxhash::FxMap<u32, u32>,
    /// A state of this automaton for each block.
    pub reps: Vec<u32>,
}

impl Dfa {
    /// The continuation bytes that matter after UTF-8 decoder state `u`
    /// (1..=7: inside a character): one per run of bytes in 0x80..=0xBF
    /// with the same byte class and decoder successor, with that
    /// successor. Empty for state 0 and invalid states.
    #[inline]
    pub fn utf8_continuations(&self, u: crate::toktrie::Utf8State) -> &[(u8, crate::toktrie::Utf8State)] {
        if u == 0 || u as usize >= self.utf8_conts.len() {
            return &[];
        }
        &self.utf8_conts[u as usize]
    }

    /// The bytes that may start a UTF-8 character, grouped by byte class
    /// and decoder outcome (in order of their first bytes): every character
    /// that starts with a byte of a group leads a state where the same
    /// character with the group's first byte does. Walks that follow
    /// characters ([`crate::grammar::mask`]) ask once per group, not once
    /// per byte (per lexer state met, that pass over 256 bytes was a fifth
    /// of a JSON grammar's slowest masks).
    #[inline]
    pub fn char_start_groups(&self) -> &[CharStartGroup] {
        &self.char_groups
    }

    /// Per byte class, by class id: its first byte and all its bytes (a
    /// 256-bit set). Anything asked of every byte of a state is asked once
    /// per class.
    #[inline]
    pub fn class_bytes(&self) -> &[(u8, [u64; 4])] {
        &self.class_sets
    }

    #[inline(always)]
    pub fn next(&self, s: u32, b: u8) -> u32 {
        // Every state id stored in `trans` is < num_states and classes are
        // < stride, so ids from this DFA index in bounds; the check stays
        // for ids from elsewhere.
        self.trans[s as usize * self.stride + self.classes[b as usize] as usize]
    }

    pub fn start(&self) -> u32 {
        self.start
    }

    /// The equivalence class of byte `b`: bytes of one class lead every
    /// state to the same state, so anything that depends on a byte only
    /// through this DFA can be memoised per class.
    #[inline(always)]
    pub fn byte_class(&self, b: u8) -> usize {
        self.classes[b as usize] as usize
    }

    /// The byte-class table ([`Dfa::byte_class`] for every byte).
    #[inline(always)]
    pub fn classes(&self) -> &[u8; 256] {
        &self.classes
    }

    /// Number of byte classes (an upper bound on [`Dfa::byte_class`] + 1).
    pub fn num_classes(&self) -> usize {
        self.stride
    }

    pub fn num_states(&self) -> usize {
        self.terminal.len()
    }

    pub fn num_patterns(&self) -> usize {
        self.npatterns
    }

    /// Words of a pattern bitset (`u64`s).
    pub fn pattern_words(&self) -> usize {
        self.pwords
    }

    /// Patterns that match if the text ends in state `s`.
    #[inline]
    pub fn matches(&self, s: u32) -> &[u64] {
        &self.matches[s as usize * self.pwords..(s as usize + 1) * self.pwords]
    }

    /// A canonical description of what state `s` can still do when only
    /// the patterns in `allowed` count: the minimal automaton of the states
    /// reachable from `s` through states that can still match an allowed
    /// pattern, each labelled with the allowed patterns it matches, in
    /// breadth-first order over byte classes. Two states with the same
    /// signature accept the same continuations and end lexemes with the same
    /// matches, so anything computed from one holds for the other (`"c"`
    /// and `"b"` are the same NAME in progress when the keyword `char` is
    /// not allowed). `false` (no signature) past `max_states` reachable
    /// states.
    pub fn signature(&self, s: u32, allowed: &[u64], max_states: usize, out: &mut Vec<u64>) -> bool {
        const NONE: u32 = u32::MAX;
        out.clear();
        let stride = self.stride;
        let Some(Quotient {
            states,
            succ,
            block,
            nblocks,
            ..
        }) = self.quotient(s, allowed, max_states, usize::MAX)
        else {
            return false;
        };
        // Encode the quotient breadth first from `s`'s block.
        let mut order = vec![NONE; nblocks];
        order[block[0] as usize] = 0;
        let mut rep = vec![0usize]; // a state of each numbered block
        let mut k = 0;
        while k < rep.len() {
            let q = rep[k];
            k += 1;
            out.extend(self.matches(states[q]).iter().zip(allowed).map(|(m, a)| m & a));
            for c in 0..stride {
                let t = succ[q * stride + c];
                if t == NONE {
                    out.push(u64::MAX);
                    continue;
                }
                let b = block[t as usize] as usize;
                if order[b] == NONE {
                    order[b] = rep.len() as u32;
                    rep.push(t as usize);
                }
                out.push(order[b] as u64);
            }
        }
        true
    }

    /// The states reachable from `s` through states where an `allowed`
    /// pattern can still match, breadth first by byte class, and their
    /// minimal automaton (Moore's refinement from blocks of equal matched
    /// allowed patterns). `None` past `max_states` states or once the
    /// refinement would pass over more than `max_work` (state, class) pairs.
    fn quotient(&self, s: u32, allowed: &[u64], max_states: usize, max_work: usize) -> Option<Quotient> {
        self.quotient_with(s, allowed, max_states, max_work, true)
    }

    /// [`Dfa::quotient`]; `paths: false` refines paths too (to test the
    /// shortcut against).
    fn quotient_with(&self, s: u32, allowed: &[u64], max_states: usize, max_work: usize, paths: bool) -> Option<Quotient> {
        use crate::fxhash::FxMap;
        const NONE: u32 = u32::MAX;
        let stride = self.stride;
        let live = |t: u32| t != DEAD && self.reach(t).iter().zip(allowed).any(|(r, a)| r & a != 0);
        // Every call names a handful of states of a possibly large
        // automaton: their indices live in a per-thread array whose marks
        // start over in constant time (a hash map was a fifth of a
        // signature's cost).
        let (states, succ, revisits) = QUOTIENT_INDEX.with(|cell| {
            let mut ix = cell.take();
            let r = self.quotient_in(&mut ix, s, max_states, &live);
            cell.set(ix);
            r
        })?;
        let n = states.len();
        // A path (each state one live byte class on to a new state: the
        // rest of a literal, such as an object key) is its own minimal
        // automaton: state `k` is the only one with a longest continuation
        // of `n - 1 - k` classes. Refinement would take `n` rounds to find
        // that out.
        let path = paths && !revisits && succ.chunks(stride).all(|row| row.iter().filter(|&&t| t != NONE).count() <= 1);
        let labels = self.quotient_labels(&states, allowed);
        if path {
            return Some(Quotient {
                states,
                succ,
                labels,
                block: (0..n as u32).collect(),
                nblocks: n,
            });
        }
        // Byte classes that every reachable state maps alike tell the
        // refinement nothing new: only one of each such column is read
        // (a string body reached from a lexer over many terminals has
        // dozens of classes and a handful of distinct columns).
        // Columns are compared in place, grouped by a hash.
        let column_hash = |c: usize| {
            use std::hash::{BuildHasher, Hasher};
            let mut h = crate::fxhash::BuildFx.build_hasher();
            for q in 0..n {
                h.write_u32(succ[q * stride + c]);
            }
            h.finish()
        };
        let mut by_hash: FxMap<u64, Vec<usize>> = FxMap::default();
        let mut cols: Vec<usize> = Vec::new();
        for c in 0..stride {
            let seen = by_hash.entry(column_hash(c)).or_default();
            if !seen.iter().any(|&o| (0..n).all(|q| succ[q * stride + o] == succ[q * stride + c])) {
                seen.push(c);
                cols.push(c);
            }
        }
        let width = cols.len();
        // Blocks by label, then by successors' blocks, until no block
        // splits. Keys live in one flat buffer (no allocation per state
        // and round).
        let mut block = labels.clone();
        // Labels are 0 (matching nothing) and 1.. densely.
        let mut nblocks = labels.iter().max().map_or(0, |&m| m as usize) + usize::from(labels.contains(&0));
        let mut keys = vec![0u32; n * (width + 1)];
        let mut refined = vec![0u32; n];
        for round in 0.. {
            if round >= max_work / (n * width).max(1) {
                return None;
            }
            for q in 0..n {
                let k = &mut keys[q * (width + 1)..(q + 1) * (width + 1)];
                k[0] = block[q];
                for (j, &c) in cols.iter().enumerate() {
                    let t = succ[q * stride + c];
                    k[j + 1] = if t == NONE { NONE } else { block[t as usize] };
                }
            }
            let mut ids: FxMap<&[u32], u32> = FxMap::default();
            ids.reserve(n);
            for (q, r) in refined.iter_mut().enumerate() {
                let next = ids.len() as u32;
                *r = *ids.entry(&keys[q * (width + 1)..(q + 1) * (width + 1)]).or_insert(next);
            }
            let stable = ids.len() == nblocks;
            nblocks = ids.len();
            std::mem::swap(&mut block, &mut refined);
            if stable {
                break;
            }
        }
        Some(Quotient {
            states,
            succ,
            labels,
            block,
            nblocks,
        })
    }

    /// The breadth-first part of [`Dfa::quotient_with`]: the states
    /// reachable from `s` through `live` ones, their successors by class
    /// (`u32::MAX` where not live), and whether any state was reached
    /// twice. `None` past `max_states`.
    fn quotient_in(&self, ix: &mut QuotientIndex, s: u32, max_states: usize, live: &impl Fn(u32) -> bool) -> Option<(Vec<u32>, Vec<u32>, bool)> {
        const NONE: u32 = u32::MAX;
        let stride = self.stride;
        ix.marks.reset(self.num_states());
        if ix.index.len() < self.num_states() {
            ix.index.resize(self.num_states(), 0);
        }
        let mut states = vec![s];
        ix.marks.insert(s as usize);
        ix.index[s as usize] = 0;
        let mut revisits = false;
        let mut succ: Vec<u32> = Vec::new(); // `stride` per state
        let mut i = 0;
        while i < states.len() {
            let q = states[i];
            i += 1;
            for c in 0..stride {
                let t = self.trans[q as usize * stride + c];
                if !live(t) {
                    succ.push(NONE);
                    continue;
                }
                let id = if ix.marks.insert(t as usize) {
                    if states.len() >= max_states {
                        return None;
                    }
                    let id = states.len() as u32;
                    ix.index[t as usize] = id;
                    states.push(t);
                    id
                } else {
                    revisits = true;
                    ix.index[t as usize]
                };
                succ.push(id);
            }
        }
        Some((states, succ, revisits))
    }

    /// Each state's allowed matches: 0 where it matches none, otherwise the
    /// set numbered from 1 in order of first appearance. Matching nothing
    /// keeps its own label because a walk signature must tell where a
    /// lexeme may end: numbered like the others, a state matching nothing
    /// followed by one matching `A` would read like one matching `A`
    /// followed by one matching `B`, and an entry shared between them would
    /// put every lexeme end in the wrong place.
    fn quotient_labels(&self, states: &[u32], allowed: &[u64]) -> Vec<u32> {
        use crate::fxhash::FxMap;
        if self.pwords == 1 && allowed.len() == 1 {
            let mut ids: FxMap<u64, u32> = FxMap::default();
            return states
                .iter()
                .map(|&q| match self.matches(q)[0] & allowed[0] {
                    0 => 0,
                    m => {
                        let next = ids.len() as u32 + 1;
                        *ids.entry(m).or_insert(next)
                    }
                })
                .collect();
        }
        let mut ids: FxMap<Vec<u64>, u32> = FxMap::default();
        states
            .iter()
            .map(|&q| {
                let m: Vec<u64> = self.matches(q).iter().zip(allowed).map(|(m, a)| m & a).collect();
                if m.iter().all(|&w| w == 0) {
                    return 0;
                }
                let next = ids.len() as u32 + 1;
                *ids.entry(m).or_insert(next)
            })
            .collect()
    }

    /// What a trie walk of one lexeme from `s` reads of this automaton,
    /// written so that it does not depend on the automaton: the minimal
    /// automaton of the states reachable from `s` by bytes after which an
    /// `allowed` pattern can still match, numbered breadth first from `s`;
    /// per state, which of the allowed pattern sets met so far it matches
    /// (sets named by order of first appearance, so two automata whose
    /// terminals differ only in name agree), then its successors by byte as
    /// runs (first byte, successor + 1, or 0 where no allowed pattern
    /// survives). `None` past `max_states` reachable states or
    /// [`MAX_WALK_SIGNATURE_WORK`].
    ///
    /// Why: many grammars over one vocabulary share lexemes (every JSON
    /// Schema has JSON strings, whatever its property names), and the
    /// lexer-only part of a mask depends on nothing else, so it can be
    /// computed once per vocabulary and found again under this key by a
    /// grammar compiled later. States of one block match the same allowed
    /// patterns and continue alike, so any of them stands for the others.
    pub fn walk_signature(&self, s: u32, allowed: &[u64], max_states: usize) -> Option<WalkSignature> {
        const NONE: u32 = u32::MAX;
        let stride = self.stride;
        let Quotient {
            states,
            succ,
            labels,
            block,
            nblocks,
        } = self.quotient(s, allowed, max_states, MAX_WALK_SIGNATURE_WORK)?;
        // Number the blocks breadth first from `s`'s and encode, byte by byte.
        let mut order = vec![NONE; nblocks];
        let mut reps = vec![0usize];
        order[block[0] as usize] = 0;
        let mut key = Vec::new();
        let mut k = 0;
        while k < reps.len() {
            let q = reps[k];
            k += 1;
            key.push(labels[q]);
            let mut prev = NONE - 1;
            for b in 0..256 {
                let t = succ[q * stride + self.classes[b] as usize];
                let code = if t == NONE {
                    0
                } else {
                    let bl = block[t as usize] as usize;
                    if order[bl] == NONE {
                        order[bl] = reps.len() as u32;
                        reps.push(t as usize);
                    }
                    order[bl] + 1
                };
                if code != prev {
                    key.push(b as u32);
                    key.push(code);
                    prev = code;
                }
            }
            key.push(NONE); // end of the state's runs
        }
        Some(WalkSignature {
            key,
            block_of: states.iter().zip(&block).map(|(&q, &bl)| (q, order[bl as usize])).collect(),
            reps: reps.into_iter().map(|q| states[q]).collect(),
        })
    }

    /// Patterns some continuation from `s` can still match.
    #[inline]
    pub fn reach(&self, s: u32) -> &[u64] {
        &self.reach[s as usize * self.pwords..(s as usize + 1) * self.pwords]
    }

    /// Single-pattern view: the text so far matches pattern 0.
    #[inline]
    pub fn is_accepting(&self, s: u32) -> bool {
        self.matches[s as usize * self.pwords] & 1 != 0
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
        while out.len() < max && s != DEAD && self.matches(s).iter().all(|&w| w == 0) {
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
        let dfa = Self::compile_many(&[pattern], limits)?;
        if dfa.start == DEAD {
            return Err(Error::EmptyLanguage("the regex matches no string".into()));
        }
        Ok(dfa)
    }

    /// Compile several patterns into one DFA (pattern `i` is bit `i`).
    /// Unlike [`Dfa::compile`], a DFA matching nothing is not an error here.
    pub fn compile_many<P: AsRef<str>>(patterns: &[P], limits: &RegexLimits) -> Result<Dfa> {
        Self::compile_many_first_match(patterns, &[], limits)
    }

    /// [`Dfa::compile_many`] where pattern `i` with `first_match[i]` set
    /// matches only strings none of whose proper prefixes it matches: once
    /// it has matched, no further byte keeps it alive. That is how a lexer
    /// that takes a lazy regex's first match (Lark's, with Python's `re`)
    /// ends `/".*?"/` at the first closing quote, where maximal munch over
    /// the pattern's full language would run on to the last.
    pub fn compile_many_first_match<P: AsRef<str>>(patterns: &[P], first_match: &[bool], limits: &RegexLimits) -> Result<Dfa> {
        Self::compile_unique(patterns, first_match, None, limits)
    }

    /// One automaton for a grammar's terminals, where a terminal may be
    /// another's language minus some terminals' ([`TerminalSpec::except`]).
    /// Pattern `i` of the result is terminal `i`.
    ///
    /// Why: a JSON object that lists names and allows other keys has a key
    /// terminal "any string but these names". Spelled as one regex (the
    /// complement of the names' trie) it is a different pattern for every
    /// object, and the lexer's automaton runs all of them side by side: a
    /// Kubernetes schema with 87 such objects took 10,603 states and 2.1 s
    /// to determinize. As the JSON string minus the key literals the
    /// grammar already has, every such terminal is one pattern (terminals
    /// with equal patterns are determinized once), and its matches are
    /// the string's without those of the literals.
    pub fn compile_terminals(terms: &[TerminalSpec<'_>], limits: &RegexLimits) -> Result<Dfa> {
        let mut unique: Vec<&str> = Vec::new();
        let mut unique_first: Vec<bool> = Vec::new();
        let mut index: std::collections::HashMap<(&str, bool), u32> = std::collections::HashMap::new();
        let mut pattern_of = Vec::with_capacity(terms.len());
        for t in terms {
            let next = unique.len() as u32;
            let i = *index.entry((t.pattern, t.first_match)).or_insert(next);
            if i == next {
                unique.push(t.pattern);
                unique_first.push(t.first_match);
            }
            pattern_of.push(i);
        }
        for (i, t) in terms.iter().enumerate() {
            for &e in t.except {
                if e as usize >= terms.len() || e as usize == i || !terms[e as usize].except.is_empty() {
                    return Err(Error::Usage(format!(
                        "terminal {i} excludes terminal {e}, which is out of range, itself, or excludes others"
                    )));
                }
            }
        }
        let map = TerminalMap {
            pattern_of,
            except: terms.iter().map(|t| t.except.to_vec()).collect(),
        };
        Self::compile_unique(&unique, &unique_first, Some(&map), limits)
    }

    fn compile_unique<P: AsRef<str>>(patterns: &[P], first_match: &[bool], map: Option<&TerminalMap>, limits: &RegexLimits) -> Result<Dfa> {
        let mut hirs = Vec::with_capacity(patterns.len());
        for p in patterns {
            let pattern = p.as_ref();
            let ast = ParserBuilder::new()
                .nest_limit(limits.nest_limit)
                .build()
                .parse(pattern)
                .map_err(|e| syntax_error(e.span(), &e.kind().to_string()))?;
            let hir = TranslatorBuilder::new()
                .utf8(true)
                .build()
                .translate(pattern, &ast)
                .map_err(|e| syntax_error(e.span(), &e.kind().to_string()))?;
            hirs.push(hir);
        }
        let config = thompson::Config::new()
            .nfa_size_limit(Some(limits.nfa_size))
            .which_captures(thompson::WhichCaptures::None)
            .shrink(false);
        let too_large = |e: thompson::BuildError| Error::TooLarge(format!("NFA exceeds {} bytes ({e})", limits.nfa_size));
        let nfa = NFA_COMPILER.with(|cached| match cached.try_borrow_mut() {
            Ok(mut c) => c.configure(config).build_many_from_hir(&hirs).map_err(too_large),
            Err(_) => thompson::Compiler::new().configure(config).build_many_from_hir(&hirs).map_err(too_large),
        })?;
        let alphabet = nfa.byte_classes().alphabet_len().max(1);
        let determinize_limit = limits.dfa_size.min(limits.determinize_work / alphabet);
        let pwords = patterns.len().div_ceil(64).max(1);
        let mut first = vec![0u64; pwords];
        for (i, _) in first_match.iter().enumerate().filter(|(_, &f)| f) {
            first[i / 64] |= 1 << (i % 64);
        }
        if !force_dense() {
            if let Some(sub) = determinize::determinize(&nfa, limits, determinize_limit)? {
                if first.iter().all(|&f| f == 0) {
                    // Already numbered as `finish` wants it (dead 0, classes
                    // in byte order): no renumbering pass.
                    let determinize::SubsetDfa {
                        classes,
                        stride,
                        trans,
                        pwords,
                        matches,
                        start,
                        keys,
                    } = sub;
                    let (mut dfa, kept) = Self::finish(classes, stride, trans, matches, pwords, start, patterns.len(), map);
                    dfa.subsets = Self::subsets(&nfa, &kept, &keys, patterns.len(), map);
                    return Ok(dfa);
                }
                return Self::from_source(&sub, limits, patterns.len(), &first, map);
            }
        }
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .match_kind(MatchKind::All)
                    .start_kind(StartKind::Anchored)
                    .byte_classes(true)
                    .minimize(false)
                    .dfa_size_limit(Some(limits.dfa_size))
                    .determinize_size_limit(Some(determinize_limit)),
            )
            .build_from_nfa(&nfa)
            .map_err(|e| {
                let msg = e.to_string();
                if msg.contains("unsupported") {
                    Error::Usage(format!(
                        "unsupported regex feature ({msg}); Unicode word boundaries need ASCII mode: use (?-u:\\b)"
                    ))
                } else if msg.contains("determinization") {
                    Error::TooLarge(format!(
                        "DFA construction exceeds its work bound ({determinize_limit} bytes at {alphabet} byte classes; {msg})"
                    ))
                } else {
                    Error::TooLarge(format!("DFA exceeds {} bytes ({msg})", limits.dfa_size))
                }
            })?;
        Self::from_source(&DenseSource(&dfa), limits, patterns.len(), &first, map)
    }

    /// [`Subsets`] of `dfa`, built from `keys` (the subsets of the states
    /// before `finish` pruned and renumbered them; it keeps their order).
    fn subsets(
        nfa: &regex_automata::nfa::thompson::NFA,
        old: &[u32],
        keys: &[std::rc::Rc<[u32]>],
        npatterns: usize,
        map: Option<&TerminalMap>,
    ) -> Option<std::sync::Arc<Subsets>> {
        let nfa_pattern = nfa_owners(nfa)?;
        let total: usize = old.iter().map(|&o| keys[o as usize].len()).sum();
        if total > MAX_SUBSET_ENTRIES {
            return None;
        }
        let mut start = Vec::with_capacity(old.len() + 1);
        let mut flat = Vec::with_capacity(total);
        for &o in old.iter() {
            start.push(flat.len() as u32);
            flat.extend_from_slice(&keys[o as usize]);
        }
        start.push(flat.len() as u32);
        let depends = match map {
            Some(m) => (0..m.pattern_of.len())
                .map(|t| {
                    std::iter::once(m.pattern_of[t])
                        .chain(m.except[t].iter().map(|&e| m.pattern_of[e as usize]))
                        .collect()
                })
                .collect(),
            None => (0..npatterns as u32).map(|p| vec![p]).collect(),
        };
        Some(std::sync::Arc::new(Subsets {
            nfa_pattern,
            start,
            keys: flat,
            depends,
            nwords: npatterns.div_ceil(64).max(1),
        }))
    }

    /// Whether states `a` and `b` are alike under the terminals `allowed`
    /// because their subsets agree on every NFA state of the patterns
    /// those terminals depend on (see [`Subsets`]): then every byte string
    /// leads both to states with the same allowed matches and reach, since
    /// each pattern's NFA states move on their own. `false` says nothing
    /// (the subsets may differ in states that never matter), and so does
    /// an automaton without subsets.
    pub fn alike_by_subsets(&self, a: u32, b: u32, allowed: &[u64]) -> bool {
        let Some(sub) = &self.subsets else { return false };
        if a == DEAD || b == DEAD {
            return a == b;
        }
        let mut rel = vec![0u64; sub.nwords];
        for (w, &bits) in allowed.iter().enumerate() {
            let mut x = bits;
            while x != 0 {
                let t = w * 64 + x.trailing_zeros() as usize;
                x &= x - 1;
                for &p in sub.depends.get(t).map_or(&[][..], |v| &v[..]) {
                    rel[p as usize / 64] |= 1 << (p % 64);
                }
            }
        }
        let keep = |q: &&u32| {
            let p = sub.nfa_pattern[**q as usize];
            p == u32::MAX || rel[p as usize / 64] >> (p % 64) & 1 != 0
        };
        let key = |s: u32| &sub.keys[sub.start[s as usize] as usize..sub.start[s as usize + 1] as usize];
        key(a).iter().filter(keep).eq(key(b).iter().filter(keep))
    }

    /// Our DFA from a determinized automaton (regex-automata's, or
    /// [`determinize`]'s). States are pairs
    /// (its state, the first-match patterns already matched on the way),
    /// the latter masked out of the state's matches; without first-match
    /// patterns the second part is always empty and this is a plain
    /// renumbering.
    /// With `map`, the result's patterns are its terminals (see
    /// [`Dfa::compile_terminals`]).
    fn from_source<S: Source>(src: &S, limits: &RegexLimits, npatterns: usize, first: &[u64], map: Option<&TerminalMap>) -> Result<Dfa> {
        let start_id = src.start()?;

        // Our byte classes: the source's (EOI handled separately).
        let mut classes = [0u8; 256];
        let mut reps: Vec<u8> = Vec::new();
        let mut class_of_rep: FxMap<u8, u8> = FxMap::default();
        for b in 0..=255u8 {
            let c = src.byte_class(b);
            let ours = *class_of_rep.entry(c).or_insert_with(|| {
                reps.push(b);
                (reps.len() - 1) as u8
            });
            classes[b as usize] = ours;
        }
        let stride = reps.len();

        let pwords = npatterns.div_ceil(64).max(1);
        // BFS over reachable (state, first-match patterns done) pairs; the
        // done sets are interned (id 0: none, the only one without
        // first-match patterns), so a pair is two integers and a
        // transition costs one lookup in a small-key map, not an
        // allocation and a SipHash of a vector. Index 0 is reserved for
        // dead.
        let mut done_sets: Vec<Vec<u64>> = vec![vec![0u64; pwords]];
        let mut done_ids: FxMap<Vec<u64>, u32> = FxMap::default();
        done_ids.insert(vec![0u64; pwords], 0);
        let any_first = first.iter().any(|&f| f != 0);
        let mut ids: FxMap<(S::Id, u32), u32> = FxMap::default();
        let mut order: Vec<(S::Id, u32)> = vec![(start_id, 0)]; // placeholder for dead
        let mut trans: Vec<u32> = vec![DEAD; stride];
        let mut queue = std::collections::VecDeque::new();
        let mut intern = |key: (S::Id, u32), order: &mut Vec<(S::Id, u32)>, queue: &mut std::collections::VecDeque<(S::Id, u32)>| -> Result<u32> {
            let sid = key.0;
            if src.is_dead(sid) {
                return Ok(DEAD);
            }
            if src.is_quit(sid) {
                return Err(Error::Usage(
                    "the pattern needs look-around the DFA cannot decide (Unicode word boundary on non-ASCII input); use (?-u:\\b)".into(),
                ));
            }
            if let Some(&i) = ids.get(&key) {
                return Ok(i);
            }
            let i = order.len() as u32;
            if order.len() > limits.max_states {
                return Err(Error::TooLarge(format!("more than {} DFA states", limits.max_states)));
            }
            ids.insert(key, i);
            order.push(key);
            queue.push_back(key);
            Ok(i)
        };
        let start = intern((start_id, 0), &mut order, &mut queue)?;
        let mut from = 0usize;
        let mut m = vec![0u64; pwords];
        while let Some((sid, done)) = queue.pop_front() {
            from += 1;
            trans.resize((from + 1) * stride, DEAD);
            // First-match patterns matched here are over for every successor.
            let done2 = if any_first {
                src.matches(sid, &mut m);
                let d: Vec<u64> = done_sets[done as usize]
                    .iter()
                    .zip(&m)
                    .zip(first)
                    .map(|((d, m), f)| d | (m & f))
                    .collect();
                let next = done_sets.len() as u32;
                let id = *done_ids.entry(d.clone()).or_insert(next);
                if id == next {
                    done_sets.push(d);
                }
                id
            } else {
                0
            };
            for (c, &b) in reps.iter().enumerate() {
                let t = src.next(sid, b);
                trans[from * stride + c] = intern((t, done2), &mut order, &mut queue)?;
            }
        }
        let n = order.len();
        trans.resize(n * stride, DEAD);
        let mut matches = vec![0u64; n * pwords];
        for (i, &(sid, done)) in order.iter().enumerate().skip(1) {
            src.matches(sid, &mut m);
            for (w, (m, d)) in m.iter().zip(&done_sets[done as usize]).enumerate() {
                matches[i * pwords + w] = m & !d;
            }
        }
        Ok(Self::finish(classes, stride, trans, matches, pwords, start, npatterns, map).0)
    }

    /// From a numbered automaton (state 0 dead) and its pattern matches:
    /// terminal matches where `map` says so, then pruning; and per state of
    /// the result the state it was.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        classes: [u8; 256],
        stride: usize,
        trans: Vec<u32>,
        matches: Vec<u64>,
        pwords: usize,
        start: u32,
        npatterns: usize,
        map: Option<&TerminalMap>,
    ) -> (Dfa, Vec<u32>) {
        let n = trans.len() / stride;
        let Some(map) = map else {
            return prune_and_renumber(classes, stride, trans, matches, pwords, start, npatterns);
        };
        // Terminal `t` matches where its pattern does and no terminal it
        // excludes does; what it can still reach follows from that in
        // `prune_and_renumber`.
        let nterms = map.pattern_of.len();
        let twords = nterms.div_ceil(64).max(1);
        let mut tmatches = vec![0u64; n * twords];
        let bit = |v: &[u64], i: usize| v[i / 64] >> (i % 64) & 1 != 0;
        // By pattern, its terminals; and the terminals that exclude some.
        // Most states match nothing and a few patterns at most, so a state
        // costs its matched patterns, not a pass over every terminal (that
        // was a tenth of a large schema's compile).
        let mut terms_of: Vec<Vec<u32>> = vec![Vec::new(); npatterns];
        for (t, &p) in map.pattern_of.iter().enumerate() {
            terms_of[p as usize].push(t as u32);
        }
        let excluding: Vec<usize> = (0..nterms).filter(|&t| !map.except[t].is_empty()).collect();
        for i in 1..n {
            let pm = &matches[i * pwords..(i + 1) * pwords];
            if pm.iter().all(|&w| w == 0) {
                continue;
            }
            let tm = &mut tmatches[i * twords..(i + 1) * twords];
            for (w, &word) in pm.iter().enumerate() {
                let mut x = word;
                while x != 0 {
                    let p = w * 64 + x.trailing_zeros() as usize;
                    x &= x - 1;
                    for &t in &terms_of[p] {
                        tm[t as usize / 64] |= 1 << (t % 64);
                    }
                }
            }
            // Excluded terminals exclude none themselves: the order of
            // these checks does not matter.
            for &t in &excluding {
                if bit(tm, t) && map.except[t].iter().any(|&e| bit(tm, e as usize)) {
                    tm[t / 64] &= !(1 << (t % 64));
                }
            }
        }
        prune_and_renumber(classes, stride, trans, tmatches, twords, start, nterms)
    }
}

/// What [`Dfa::from_source`] reads of a determinized automaton.
trait Source {
    type Id: Copy + Eq + std::hash::Hash;
    fn start(&self) -> Result<Self::Id>;
    /// The byte's class; classes are numbered in byte order.
    fn byte_class(&self, b: u8) -> u8;
    fn next(&self, s: Self::Id, b: u8) -> Self::Id;
    fn is_dead(&self, s: Self::Id) -> bool;
    /// A state where the automaton gave up (look-around it cannot decide).
    fn is_quit(&self, s: Self::Id) -> bool;
    /// The patterns matched if the text ends in `s`, into `m` (cleared).
    fn matches(&self, s: Self::Id, m: &mut [u64]);
}

/// regex-automata's dense DFA (patterns with look-around).
struct DenseSource<'a>(&'a dense::DFA<Vec<u32>>);

impl Source for DenseSource<'_> {
    type Id = StateID;
    fn start(&self) -> Result<StateID> {
        self.0
            .start_state(&start::Config::new().anchored(Anchored::Yes))
            .map_err(|e| Error::Usage(format!("cannot start regex automaton: {e}")))
    }
    fn byte_class(&self, b: u8) -> u8 {
        self.0.byte_classes().get(b)
    }
    fn next(&self, s: StateID, b: u8) -> StateID {
        self.0.next_state(s, b)
    }
    fn is_dead(&self, s: StateID) -> bool {
        self.0.is_dead_state(s)
    }
    fn is_quit(&self, s: StateID) -> bool {
        self.0.is_quit_state(s)
    }
    fn matches(&self, s: StateID, m: &mut [u64]) {
        m.fill(0);
        // Matches are delayed by one byte: read them past the end.
        let e = self.0.next_eoi_state(s);
        if self.0.is_match_state(e) {
            for k in 0..self.0.match_len(e) {
                let p = self.0.match_pattern(e, k).as_usize();
                m[p / 64] |= 1u64 << (p % 64);
            }
        }
    }
}

impl Source for determinize::SubsetDfa {
    type Id = u32;
    fn start(&self) -> Result<u32> {
        Ok(self.start)
    }
    fn byte_class(&self, b: u8) -> u8 {
        self.classes[b as usize]
    }
    fn next(&self, s: u32, b: u8) -> u32 {
        self.trans[s as usize * self.stride + self.classes[b as usize] as usize]
    }
    fn is_dead(&self, s: u32) -> bool {
        s == DEAD
    }
    fn is_quit(&self, _: u32) -> bool {
        false
    }
    fn matches(&self, s: u32, m: &mut [u64]) {
        m.copy_from_slice(&self.matches[s as usize * self.pwords..][..self.pwords]);
    }
}

/// Compute which patterns each state can still reach, merge states that
/// reach none into `DEAD`, and renumber the survivors densely (in order);
/// also per state of the result the state it was.
fn prune_and_renumber(
    classes: [u8; 256],
    stride: usize,
    trans: Vec<u32>,
    matches: Vec<u64>,
    pwords: usize,
    start: u32,
    npatterns: usize,
) -> (Dfa, Vec<u32>) {
    let n = trans.len() / stride;
    // Reverse edges in CSR form, each (state, successor) pair once and
    // none into dead, from dead or onto itself: a string body's state has
    // most of the alphabet going to one successor, and most of a large
    // lexer's transitions are dead.
    let mut last = vec![u32::MAX; n];
    let mut edges: Vec<(u32, u32)> = Vec::new();
    for s in 1..n {
        for &t in &trans[s * stride..(s + 1) * stride] {
            if t != DEAD && t as usize != s && last[t as usize] != s as u32 {
                last[t as usize] = s as u32;
                edges.push((s as u32, t));
            }
        }
    }
    let mut indeg = vec![0u32; n + 1];
    for &(_, t) in &edges {
        indeg[t as usize + 1] += 1;
    }
    for i in 0..n {
        indeg[i + 1] += indeg[i];
    }
    let mut fill = indeg.clone();
    let mut preds = vec![0u32; edges.len()];
    for &(s, t) in &edges {
        preds[fill[t as usize] as usize] = s;
        fill[t as usize] += 1;
    }
    drop(edges);
    // reach[s] = matches[s] | union of reach over successors (fixpoint).
    let mut reach = matches.clone();
    reach[..pwords].fill(0);
    let mut stack: Vec<u32> = (1..n as u32)
        .filter(|&s| reach[s as usize * pwords..][..pwords].iter().any(|&w| w != 0))
        .collect();
    while let Some(t) = stack.pop() {
        for &p in &preds[indeg[t as usize] as usize..indeg[t as usize + 1] as usize] {
            if p == DEAD {
                continue;
            }
            let mut changed = false;
            for w in 0..pwords {
                let add = reach[t as usize * pwords + w] & !reach[p as usize * pwords + w];
                if add != 0 {
                    reach[p as usize * pwords + w] |= add;
                    changed = true;
                }
            }
            if changed {
                stack.push(p);
            }
        }
    }
    let live = |s: usize| reach[s * pwords..(s + 1) * pwords].iter().any(|&w| w != 0);
    let mut new_id = vec![DEAD; n];
    let mut next = 1u32;
    for (s, id) in new_id.iter_mut().enumerate().skip(1) {
        if live(s) {
            *id = next;
            next += 1;
        }
    }
    let m = next as usize;
    let mut kept = vec![0u32; m];
    for (s, &id) in new_id.iter().enumerate().skip(1) {
        if id != DEAD {
            kept[id as usize] = s as u32;
        }
    }
    // Every state lives (the usual case): the tables stand as they are,
    // without a second copy of the largest one.
    let (trans, matches, reach, start) = if m == n {
        (trans, matches, reach, start)
    } else {
        let mut ntrans = vec![DEAD; m * stride];
        let mut nmatch = vec![0u64; m * pwords];
        let mut nreach = vec![0u64; m * pwords];
        for s in 1..n {
            let ns = new_id[s] as usize;
            if ns == 0 {
                continue;
            }
            nmatch[ns * pwords..(ns + 1) * pwords].copy_from_slice(&matches[s * pwords..(s + 1) * pwords]);
            nreach[ns * pwords..(ns + 1) * pwords].copy_from_slice(&reach[s * pwords..(s + 1) * pwords]);
            for c in 0..stride {
                ntrans[ns * stride + c] = new_id[trans[s * stride + c] as usize];
            }
        }
        (ntrans, nmatch, nreach, new_id[start as usize])
    };
    let terminal = trans.chunks_exact(stride).map(|row| row.iter().all(|&t| t == DEAD)).collect();
    let dfa = Dfa {
        classes,
        stride,
        trans,
        pwords,
        matches,
        reach,
        terminal,
        start,
        npatterns,
        utf8_conts: utf8_continuations(&classes),
        char_groups: char_start_groups(&classes),
        class_sets: class_sets(&classes, stride),
        subsets: None,
    };
    (dfa, kept)
}

/// See [`Dfa::class_bytes`].
fn class_sets(classes: &[u8; 256], stride: usize) -> Box<[(u8, [u64; 4])]> {
    let mut out = vec![(0u8, [0u64; 4]); stride];
    let mut seen = vec![false; stride];
    for b in 0..=255u8 {
        let c = classes[b as usize] as usize;
        if !seen[c] {
            seen[c] = true;
            out[c].0 = b;
        }
        out[c].1[b as usize / 64] |= 1 << (b % 64);
    }
    out.into_boxed_slice()
}

/// See [`Dfa::char_start_groups`].
fn char_start_groups(classes: &[u8; 256]) -> Box<[CharStartGroup]> {
    use crate::toktrie::{utf8_step, UTF8_INVALID, UTF8_START};
    let mut out: Vec<CharStartGroup> = Vec::new();
    for b in 0..=255u8 {
        let u = utf8_step(UTF8_START, b);
        if u == UTF8_INVALID {
            continue;
        }
        let c = classes[b as usize];
        let k = match out.iter().position(|g| g.utf8 == u && classes[g.first as usize] == c) {
            Some(k) => k,
            None => {
                out.push(CharStartGroup {
                    first: b,
                    utf8: u,
                    bytes: [0; 4],
                    count: 0,
                });
                out.len() - 1
            }
        };
        out[k].bytes[b as usize / 64] |= 1 << (b % 64);
        out[k].count += 1;
    }
    out.into_boxed_slice()
}

/// See [`Dfa::utf8_continuations`].
fn utf8_continuations(classes: &[u8; 256]) -> Utf8Continuations {
    use crate::toktrie::{utf8_step, UTF8_INVALID};
    (0..8u8)
        .map(|u| {
            let mut out = Vec::new();
            let mut last = (u8::MAX, UTF8_INVALID);
            for b in 0x80..=0xBFu8 {
                let u2 = utf8_step(u, b);
                let key = (classes[b as usize], u2);
                if u2 != UTF8_INVALID && key != last {
                    out.push((b, u2));
                    last = key;
                }
            }
            out.into_boxed_slice()
        })
        .collect()
}

fn syntax_error(span: &regex_syntax::ast::Span, message: &str) -> Error {
    Error::RegexSyntax {
        offset: span.start.offset,
        line: span.start.line,
        column: span.start.column,
        message: message.to_string(),
    }
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

    /// Whether `a` and `b` match the same patterns on every byte string
    /// (a walk over reachable pairs of states).
    fn same_language(a: &Dfa, b: &Dfa) -> bool {
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![(a.start(), b.start())];
        while let Some((x, y)) = stack.pop() {
            if !seen.insert((x, y)) {
                continue;
            }
            if (x == DEAD) != (y == DEAD) || a.matches(x) != b.matches(y) {
                return false;
            }
            if x == DEAD {
                continue;
            }
            for byte in 0..=255u8 {
                stack.push((a.next(x, byte), b.next(y, byte)));
            }
        }
        true
    }

    /// Both determinizers on the same terminals (first-match flags and
    /// exclusions included): the same language, pattern by pattern.
    fn check_against_regex_automata(terms: &[TerminalSpec<'_>]) {
        let limits = RegexLimits::default();
        let ours = Dfa::compile_terminals(terms, &limits);
        FORCE_DENSE.with(|f| f.set(true));
        let theirs = Dfa::compile_terminals(terms, &limits);
        FORCE_DENSE.with(|f| f.set(false));
        match (ours, theirs) {
            (Ok(a), Ok(b)) => {
                let pats: Vec<&str> = terms.iter().map(|t| t.pattern).collect();
                assert!(same_language(&a, &b), "{pats:?}");
                assert!(a.num_states() <= b.num_states(), "{pats:?}: {} > {}", a.num_states(), b.num_states());
            }
            (Err(_), Err(_)) => {}
            (a, b) => panic!(
                "{:?}: ours {:?}, regex-automata {:?}",
                terms.iter().map(|t| t.pattern).collect::<Vec<_>>(),
                a.err(),
                b.err()
            ),
        }
    }

    #[test]
    fn subset_construction_equals_regex_automata_on_lexers() {
        let json_str = r#""(?:[^"\\\x00-\x1f]|\\["\\bfnrt]|\\u00(?:0[0-7bef]|1[0-9a-f]))*""#;
        let counted = r#""(?:[^"\\\x00-\x1f]|\\["\\bfnrt]|\\u00(?:0[0-7bef]|1[0-9a-f])){3,12}""#;
        let counted2 = r#""(?:[^"\\\x00-\x1f]|\\["\\bfnrt]|\\u00(?:0[0-7bef]|1[0-9a-f])){7,9}""#;
        let lexers: Vec<Vec<(&str, bool, Vec<u32>)>> = vec![
            vec![("[a-z]+", false, vec![]), ("char", false, vec![]), ("[0-9]+", false, vec![])],
            vec![
                (json_str, false, vec![1, 2]),
                (r#""name""#, false, vec![]),
                (r#""host""#, false, vec![]),
                (counted, false, vec![]),
                (counted2, false, vec![]),
            ],
            vec![
                (r#"".*?""#, true, vec![]),
                (r"[^\n]*", false, vec![]),
                (r" //[^\n]*", false, vec![]),
                (" ", false, vec![]),
            ],
            vec![
                (r"\p{L}+", false, vec![]),
                (r"[αβγ]{2,4}|\d+", false, vec![]),
                (r"(?:ab|a)*b?", false, vec![]),
                ("", false, vec![]),
            ],
            vec![
                (r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", false, vec![]),
                (r"\{[ \t\n\r]*", false, vec![]),
                (r"[ \t\n\r]*,[ \t\n\r]*", false, vec![]),
            ],
            vec![
                (r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,10}[A-Za-z0-9])?\.){0,3}[A-Za-z]{2,6}", false, vec![]),
                (r"[^@]+@[^@]+", true, vec![]),
            ],
            vec![
                (r"[\x00-\xff]", false, vec![]),
                (r"(?-u:[\x80-\xff])+", false, vec![]),
                (r"é|e\u{301}", false, vec![]),
            ],
        ];
        for lexer in &lexers {
            let terms: Vec<TerminalSpec<'_>> = lexer
                .iter()
                .map(|(p, f, e)| TerminalSpec {
                    pattern: p,
                    first_match: *f,
                    except: e,
                })
                .collect();
            check_against_regex_automata(&terms);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 300, ..Default::default() })]
        /// Random small patterns, several per lexer, some first-match.
        #[test]
        fn subset_construction_equals_regex_automata(
            pats in proptest::collection::vec(regex_strategy(), 1..4),
            firsts in proptest::collection::vec(proptest::bool::ANY, 4),
        ) {
            let terms: Vec<TerminalSpec<'_>> = pats
                .iter()
                .zip(&firsts)
                .map(|(p, &f)| TerminalSpec { pattern: p, first_match: f, except: &[] })
                .collect();
            check_against_regex_automata(&terms);
        }
    }

    fn regex_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("é".to_string()),
            Just("[a-c]".to_string()),
            Just("[^a]".to_string()),
            Just(r"\d".to_string()),
            Just("[α-ω]".to_string()),
            Just(".".to_string()),
            Just(r#"""#.to_string()),
        ];
        leaf.prop_recursive(4, 24, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 2..4).prop_map(|v| v.concat()),
                proptest::collection::vec(inner.clone(), 2..4).prop_map(|v| format!("(?:{})", v.join("|"))),
                inner.clone().prop_map(|r| format!("(?:{r})*")),
                inner.clone().prop_map(|r| format!("(?:{r})?")),
                inner.clone().prop_map(|r| format!("(?:{r})*?")),
                (inner, 0u32..3, 0u32..3).prop_map(|(r, m, k)| format!("(?:{r}){{{m},{}}}", m + k)),
            ]
        })
    }

    /// Lexer states that behave alike under the allowed patterns share a
    /// signature; allowing a pattern that tells them apart separates them.
    #[test]
    fn signatures_name_states_equal_under_allowed_patterns() {
        let d = Dfa::compile_many(&["[a-z]+", "char", "[0-9]+"], &RegexLimits::default()).unwrap();
        let (c, b, x) = (d.run(d.start(), b"c"), d.run(d.start(), b"b"), d.run(d.start(), b"xy"));
        assert_ne!(c, b);
        let sig = |s: u32, allowed: u64| {
            let mut out = Vec::new();
            assert!(d.signature(s, &[allowed], 64, &mut out));
            out
        };
        assert_eq!(sig(c, 0b001), sig(b, 0b001));
        assert_eq!(sig(x, 0b101), sig(b, 0b101));
        assert_ne!(sig(c, 0b011), sig(b, 0b011));
        // A state past the bound gets no signature.
        let mut out = Vec::new();
        assert!(!d.signature(d.start(), &[0b111], 2, &mut out));
    }

    /// The shortcut for paths (the rest of a literal) finds the blocks
    /// refinement finds: every state its own, on lexers where literals
    /// share prefixes and suffixes with each other and with a pattern.
    #[test]
    fn quotient_of_a_path_is_the_refined_one() {
        let lexers: [&[&str]; 3] = [
            &[r#""name""#, r#""username""#, r#""nam""#, r#""[a-z]*""#],
            &["abcabc", "abd", "(?:abc)+x", "[0-9]+"],
            &["null", "nul", "true", "false", "-?[0-9]+"],
        ];
        let mut paths = 0;
        for pats in lexers {
            let d = Dfa::compile_many(pats, &RegexLimits::default()).unwrap();
            let words = pats.len().div_ceil(64);
            for allowed in 1..(1u64 << pats.len()) {
                for st in 1..d.num_states() as u32 {
                    let Some(fast) = d.quotient_with(st, &[allowed][..words], 64, usize::MAX, true) else {
                        continue;
                    };
                    let slow = d.quotient_with(st, &[allowed][..words], 64, usize::MAX, false).unwrap();
                    assert_eq!(fast.states, slow.states);
                    // Same partition: blocks correspond one to one.
                    let mut map = std::collections::HashMap::new();
                    for (a, b) in fast.block.iter().zip(&slow.block) {
                        assert_eq!(*map.entry(*a).or_insert(*b), *b, "{pats:?} state {st} allowed {allowed:b}");
                    }
                    assert_eq!(fast.nblocks, slow.nblocks, "{pats:?} state {st} allowed {allowed:b}");
                    paths += usize::from(fast.nblocks == fast.states.len());
                }
            }
        }
        assert!(paths > 20, "only {paths} quotients without merged states");
    }

    /// Whether `a` and `b` walk alike under `allowed`, by exploring every
    /// pair of states the same byte strings lead them to.
    fn alike_exhaustive(d: &Dfa, a: u32, b: u32, allowed: &[u64]) -> bool {
        let status = |s: u32| -> (bool, Vec<u64>) {
            let live = s != DEAD && d.reach(s).iter().zip(allowed).any(|(r, a)| r & a != 0);
            (live, d.matches(s).iter().zip(allowed).map(|(m, a)| m & a).collect())
        };
        let reps: Vec<u8> = (0..=255u8).filter(|&b| b == 0 || d.byte_class(b) != d.byte_class(b - 1)).collect();
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![(a, b)];
        seen.insert((a, b));
        while let Some((x, y)) = stack.pop() {
            let (sx, sy) = (status(x), status(y));
            if sx != sy {
                return false;
            }
            if !sx.0 {
                continue;
            }
            for &c in &reps {
                let p = (d.next(x, c), d.next(y, c));
                if p.0 != p.1 && seen.insert(p) {
                    stack.push(p);
                }
            }
        }
        true
    }

    /// Where two states' subsets agree on the patterns an allowed set
    /// depends on, the states walk alike: checked against an exhaustive
    /// exploration on a JSON Schema lexer (key literals, other keys that
    /// exclude them, an enum, a format, counted and free strings, numbers),
    /// for every pair of states under single terminals, all terminals and
    /// random sets of them.
    #[test]
    fn alike_by_subsets_implies_alike() {
        let schema = r#"{"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 12},
            "nick": {"enum": ["ann", "bob", "anna"]},
            "day": {"type": "string", "format": "date"},
            "free": {"type": "string"},
            "n": {"type": "integer", "minimum": 3, "maximum": 1200}}}"#;
        let c = crate::json_schema::compile_str(schema, &Default::default()).unwrap();
        let g = crate::grammar::earley::CompiledGrammar::new(&c.grammar, &crate::grammar::GrammarLimits::default()).unwrap();
        let d = &g.lexer;
        assert!(d.subsets.is_some());
        let n = d.num_states() as u32;
        let words = d.pattern_words();
        let nt = d.npatterns;
        let mut sets: Vec<Vec<u64>> = vec![vec![u64::MAX; words]];
        for t in 0..nt {
            let mut v = vec![0u64; words];
            v[t / 64] |= 1 << (t % 64);
            sets.push(v);
        }
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..8 {
            let mut v = vec![0u64; words];
            for t in 0..nt {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                if rng.is_multiple_of(3) {
                    v[t / 64] |= 1 << (t % 64);
                }
            }
            sets.push(v);
        }
        let (mut alike, mut distinct) = (0, 0);
        for allowed in &sets {
            for a in 1..n {
                for b in a + 1..n {
                    if d.alike_by_subsets(a, b, allowed) {
                        assert!(alike_exhaustive(d, a, b, allowed), "states {a} and {b} under {allowed:?}");
                        alike += 1;
                    } else {
                        distinct += 1;
                    }
                }
            }
        }
        assert!(alike > 100 && distinct > 100, "{alike} alike, {distinct} not");
    }

    #[test]
    fn walk_signature_of_a_string_beside_long_literals() {
        // The lexer of a small JSON Schema: a JSON string body beside an
        // object key and key literals that start with the same quote. The
        // literals' letters split the byte classes and their prefixes the
        // states, but restricted to the string they all read alike, and
        // the signature (within its work bound) is that of a lexer holding
        // the string alone.
        let body = r#"(?:[^"\\\x00-\x1f]|\\["\\bfnrt]|\\u00(?:0[0-7bef]|1[0-9a-f]))"#;
        let string = format!(r#""{body}*""#);
        let key = format!(
            r#""(?:(?:)|(?:[\x20-\x21\x23-\x5b\x5d-\x7f]|\\"|\\\\){body}*|[\x20\x21\x23-\x5b\x5d-\x7f]*(?:[^\x00-\x7f]|\\["\\bfnrt]){body}*)""#
        );
        let alone = Dfa::compile_many(&[string.as_str()], &RegexLimits::default()).unwrap();
        let lexer = [
            string.as_str(),
            key.as_str(),
            r#""root""#,
            r#""property""#,
            r#""BasePolicyDataProvider\.getRegistryPolicyValue""#,
            r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?",
            "null|true|false",
        ];
        let mixed = Dfa::compile_many(&lexer, &RegexLimits::default()).unwrap();
        let sig = |d: &Dfa| d.walk_signature(d.run(d.start(), b"\""), &[1], 256).expect("within the work bound").key;
        assert_eq!(sig(&mixed), sig(&alone));
    }

    #[test]
    fn walk_signature_tells_where_lexemes_end() {
        // From `a` in `a([b-z]a)*` the lexeme may end, then not, then may;
        // from `c` in `c([b-z]a)*[b-z]` it may not, then may, then not. Both
        // walk alike byte by byte, and both read "one set of matches, then
        // another" if matching nothing were numbered like a set; their
        // entries' boundaries are where the other's are not.
        let ends_first = Dfa::compile_many(&["a(?:[b-z]a)*"], &RegexLimits::default()).unwrap();
        let ends_second = Dfa::compile_many(&["c(?:[b-z]a)*[b-z]"], &RegexLimits::default()).unwrap();
        let sig = |d: &Dfa, b: &[u8]| d.walk_signature(d.run(d.start(), b), &[1], 256).expect("within the work bound").key;
        assert_ne!(sig(&ends_first, b"a"), sig(&ends_second, b"c"));
        // Whose terminal it is does not matter.
        let renamed = Dfa::compile_many(&["x", "a(?:[b-z]a)*"], &RegexLimits::default()).unwrap();
        assert_eq!(
            sig(&ends_first, b"a"),
            renamed.walk_signature(renamed.run(renamed.start(), b"a"), &[2], 256).unwrap().key
        );
    }

    #[test]
    fn terminals_minus_others() {
        let string = r#""[a-z]*""#;
        let spec = |pattern, except| TerminalSpec {
            pattern,
            first_match: false,
            except,
        };
        let terms = [spec(string, &[][..]), spec(r#""a""#, &[]), spec(r#""ab""#, &[]), spec(string, &[1, 2])];
        let d = Dfa::compile_terminals(&terms, &RegexLimits::default()).unwrap();
        let m = |s: &[u8]| d.matches(d.run(d.start(), s))[0];
        let r = |s: &[u8]| d.reach(d.run(d.start(), s))[0];
        assert_eq!(m(br#""a""#), 0b0011);
        assert_eq!(m(br#""ab""#), 0b0101);
        assert_eq!(m(br#""abc""#), 0b1001);
        assert_eq!(m(br#""""#), 0b1001);
        // Inside the string every terminal but the finished literals can
        // still match; after a listed name's closing quote the other-keys
        // terminal cannot.
        assert_eq!(r(br#""a"#), 0b1111);
        assert_eq!(r(br#""a""#), 0b0011);
        // The two terminals with the string's pattern are determinized once.
        let plain = Dfa::compile_many(&[string, r#""a""#, r#""ab""#], &RegexLimits::default()).unwrap();
        assert_eq!(d.num_states(), plain.num_states());
        // An exclusion must name another terminal that excludes nothing.
        for bad in [&[3u32][..], &[9], &[0]] {
            let t = [spec(string, &[][..]), spec(r#""a""#, &[]), spec(r#""ab""#, &[]), spec(string, bad)];
            let mut t = t.to_vec();
            if bad == [0] {
                t[0].except = &[1];
            }
            assert!(Dfa::compile_terminals(&t, &RegexLimits::default()).is_err());
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
        assert!(matches!(
            Dfa::compile("(a|b)*a(a|b){40}", &RegexLimits::default()),
            Err(Error::TooLarge(_))
        ));
        assert!(matches!(Dfa::compile(r"\w{2000}", &RegexLimits::default()), Err(Error::TooLarge(_))));
        assert!(t.elapsed().as_secs() < 60);
    }

    /// Class sets and character-start groups partition the bytes they
    /// cover, and every byte of one moves every state as its first byte
    /// does (with the same UTF-8 decoder outcome, for character starts).
    #[test]
    fn class_sets_and_char_start_groups_partition_alike_bytes() {
        use crate::toktrie::{utf8_step, UTF8_INVALID, UTF8_START};
        let d = Dfa::compile_many(&[r#""[^"\\]*""#, "[a-z]+", "é+|日本", "[0-9]+"], &RegexLimits::default()).unwrap();
        let has = |set: &[u64; 4], b: u8| set[b as usize / 64] >> (b % 64) & 1 != 0;
        let mut seen = [0u64; 4];
        for (first, bytes) in d.class_bytes() {
            assert!(has(bytes, *first));
            for b in 0..=255u8 {
                if has(bytes, b) {
                    assert!(!has(&seen, b), "byte {b} in two classes");
                    assert_eq!(d.byte_class(b), d.byte_class(*first));
                }
            }
            for (w, x) in seen.iter_mut().zip(bytes) {
                *w |= x;
            }
        }
        assert_eq!(seen, [u64::MAX; 4], "every byte has a class");
        assert!((0..=255u8).all(|b| has(&d.class_bytes()[d.byte_class(b)].1, b)), "indexed by class");
        let mut seen = [0u64; 4];
        let mut firsts = Vec::new();
        for g in d.char_start_groups() {
            firsts.push(g.first);
            assert_eq!(g.count, g.bytes.iter().map(|w| w.count_ones()).sum::<u32>());
            for b in 0..=255u8 {
                if has(&g.bytes, b) {
                    assert!(!has(&seen, b), "byte {b} in two groups");
                    assert_eq!((d.byte_class(b), utf8_step(UTF8_START, b)), (d.byte_class(g.first), g.utf8));
                }
            }
            for (w, x) in seen.iter_mut().zip(&g.bytes) {
                *w |= x;
            }
        }
        for b in 0..=255u8 {
            assert_eq!(has(&seen, b), utf8_step(UTF8_START, b) != UTF8_INVALID, "byte {b}");
        }
        assert!(firsts.windows(2).all(|w| w[0] < w[1]), "groups in order of their first bytes");
        // Far fewer groups than lead bytes: a question per group is cheap.
        assert!(d.char_start_groups().len() < 64, "{}", d.char_start_groups().len());
    }

    #[test]
    fn forced() {
        let d = Dfa::compile(r#"\{"name": "[a-z]+"\}"#, &RegexLimits::default()).unwrap();
        assert_eq!(d.forced_bytes(d.start(), 100), br#"{"name": ""#);
    }
}
