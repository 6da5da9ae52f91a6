//! Subset construction from a Thompson NFA without look-around, for the
//! lexers of grammars and schemas.
//!
//! Why not regex-automata's determinizer: a lexer's patterns run side by
//! side, so its automaton is large (thousands of states for a schema with
//! a few counted strings and a format), and compiling it was 75% of the
//! time from schema to first mask. regex-automata computes each
//! transition on its own (every NFA state of the set, for every byte
//! class), hashes states with SipHash, and supports look-around, match
//! priorities and unanchored searches that a lexer never needs. Here one
//! pass over the set's NFA states buckets their targets by byte class,
//! classes with the same targets share one epsilon closure (most of an
//! alphabet goes to the same place), and closures of equal target sets
//! are remembered across states.
//!
//! The result is the plain subset automaton: state 0 dead, a state's
//! matches the patterns whose match state is in its closure (what
//! regex-automata reports at end of input, with `MatchKind::All`).
//! [`super::Dfa`] takes it from there (first-match patterns, terminals,
//! pruning). Patterns with look-around (`^`, `$`, `\b`) go to
//! regex-automata instead.

use super::{Error, RegexLimits, Result, DEAD};
use crate::fxhash::FxMap;
use crate::marks::Marks;
use regex_automata::nfa::thompson::{State, NFA};
use regex_automata::util::primitives::StateID;

/// A complete DFA over byte classes (see the module documentation).
pub(super) struct SubsetDfa {
    /// Byte class of each byte: the NFA's classes, numbered in byte order.
    pub classes: [u8; 256],
    /// Number of classes (transitions per state).
    pub stride: usize,
    /// `trans[s * stride + c]`: the successor of state `s` on class `c`.
    pub trans: Vec<u32>,
    /// Pattern-set words per state.
    pub pwords: usize,
    /// `matches[s * pwords..][..pwords]`: patterns matched in state `s`.
    pub matches: Vec<u64>,
    pub start: u32,
    /// Per state, its NFA states with transitions or a match, sorted
    /// (state 0, dead: none).
    pub keys: Vec<std::rc::Rc<[u32]>>,
}

/// Bytes of bookkeeping per state, as regex-automata counts it against
/// `determinize_size_limit` (two handles and an ID in its maps, a header in
/// the state's encoding), so that both determinizers refuse after about
/// the same amount of work.
const STATE_OVERHEAD: usize = 45;

/// The subset automaton of `nfa` from its anchored start, or `None` if the
/// NFA has look-around. `work_limit` bounds the builder's memory (see
/// [`RegexLimits::determinize_work`]).
pub(super) fn determinize(nfa: &NFA, limits: &RegexLimits, work_limit: usize) -> Result<Option<SubsetDfa>> {
    if !nfa.look_set_any().is_empty() {
        return Ok(None);
    }
    let bc = nfa.byte_classes();
    let mut classes = [0u8; 256];
    for b in 0..=255u8 {
        classes[b as usize] = bc.get(b);
    }
    let stride = classes[255] as usize + 1;
    let npatterns = nfa.pattern_len();
    let pwords = npatterns.div_ceil(64).max(1);
    let mut d = Builder {
        nfa,
        stride,
        pwords,
        seen: Marks::default(),
        stack: Vec::new(),
        closure: Vec::new(),
        keys: vec![std::rc::Rc::from([])],
        ids: FxMap::default(),
        closures: FxMap::default(),
        trans: vec![DEAD; stride],
        matches: vec![0; pwords],
        work: 0,
        work_limit,
        limits,
    };
    let start = d.state_of_targets(&[nfa.start_anchored().as_u32()])?;
    // States are numbered in creation order: explore them in that order.
    //
    // A state's outgoing transitions, as class ranges, cut the alphabet
    // into segments within which every class has the same targets; the
    // targets are bucketed per segment, not per class. Most transitions
    // of a lexer's string bodies span nearly every class ("any character
    // but the quote"), and pushing each target into every class's bucket
    // was most of the construction's time.
    //
    // Each NFA state's transitions as class ranges, once (CSR: those of
    // `s` are `tr[tr_at[s]..tr_at[s + 1]]`), neighbouring classes with one
    // target merged: a state of the subset automaton gathers its members'
    // ranges by copying them, not by converting each member's transitions
    // again for every subset it belongs to (3-4% of the construction).
    let mut tr: Vec<(u8, u8, u32)> = Vec::new();
    let mut tr_at: Vec<u32> = Vec::with_capacity(nfa.states().len() + 1);
    for s in nfa.states() {
        tr_at.push(tr.len() as u32);
        let first = tr.len();
        let mut edge = |a: u8, b: u8, to: u32| {
            let mine = tr.len() > first;
            match tr.last_mut() {
                Some(last) if mine && last.2 == to && last.1 as usize + 1 == a as usize => last.1 = b,
                _ => tr.push((a, b, to)),
            }
        };
        match s {
            State::ByteRange { trans } => edge(classes[trans.start as usize], classes[trans.end as usize], trans.next.as_u32()),
            State::Sparse(sp) => {
                for t in sp.transitions.iter() {
                    edge(classes[t.start as usize], classes[t.end as usize], t.next.as_u32());
                }
            }
            State::Dense(dn) => {
                // The NFA's classes refine every transition, so a
                // class's first byte speaks for the class.
                let mut b = 0usize;
                while b < 256 {
                    let c = classes[b];
                    let to = dn.transitions[b];
                    if to != StateID::ZERO {
                        edge(c, c, to.as_u32());
                    }
                    while b < 256 && classes[b] == c {
                        b += 1;
                    }
                }
            }
            _ => {}
        }
    }
    tr_at.push(tr.len() as u32);
    let mut buckets: Vec<Vec<u32>> = vec![Vec::new(); stride];
    let mut sorted: Vec<u32> = Vec::new();
    let mut ranges: Vec<(u8, u8, u32)> = Vec::new();
    let mut segs = Segments::default();
    let mut next = 1usize;
    while next < d.keys.len() {
        ranges.clear();
        for &s in d.keys[next].iter() {
            ranges.extend_from_slice(&tr[tr_at[s as usize] as usize..tr_at[s as usize + 1] as usize]);
        }
        if ranges.is_empty() {
            next += 1;
            continue;
        }
        segs.cut(stride, ranges.iter().map(|&(a, b, _)| (a as usize, b as usize)));
        let nseg = segs.len();
        for b in &mut buckets[..nseg] {
            b.clear();
        }
        for &(a, b, to) in &ranges {
            for bucket in &mut buckets[segs.of(a as usize)..=segs.of(b as usize)] {
                bucket.push(to);
            }
        }
        // Neighbouring segments mostly go to the same targets, pushed in
        // the same order (the state's NFA states in turn): compare the raw
        // buckets before sorting a copy and looking it up.
        let mut prev: Option<(usize, u32)> = None;
        for g in 0..nseg {
            if buckets[g].is_empty() {
                prev = None;
                continue;
            }
            let to = match prev {
                Some((p, to)) if buckets[p] == buckets[g] => to,
                _ => {
                    // Targets come in the order of the state's NFA
                    // states, mostly ascending already: sort only if not.
                    let targets = if buckets[g].is_sorted_by(|a, b| a < b) {
                        &buckets[g][..]
                    } else {
                        sorted.clear();
                        sorted.extend_from_slice(&buckets[g]);
                        sorted.sort_unstable();
                        sorted.dedup();
                        &sorted[..]
                    };
                    match d.closures.get(targets) {
                        Some(&to) => to,
                        None => d.state_of_targets(targets)?,
                    }
                }
            };
            prev = Some((g, to));
            let r = segs.range(g);
            d.trans[next * stride + r.start..next * stride + r.end].fill(to);
        }
        next += 1;
    }
    Ok(Some(SubsetDfa {
        classes,
        stride,
        trans: d.trans,
        pwords,
        matches: d.matches,
        start,
        keys: d.keys,
    }))
}

struct Builder<'a> {
    nfa: &'a NFA,
    stride: usize,
    pwords: usize,
    /// Epsilon-closure visit marks.
    seen: Marks,
    stack: Vec<u32>,
    /// The last [`Builder::closure`].
    closure: Vec<u32>,
    /// Per DFA state, its NFA states with transitions or a match, sorted
    /// (index 0: dead, empty); shared with `ids`, so that each is
    /// allocated once.
    keys: Vec<std::rc::Rc<[u32]>>,
    ids: FxMap<std::rc::Rc<[u32]>, u32>,
    /// The DFA state reached from a sorted set of NFA targets.
    closures: FxMap<Box<[u32]>, u32>,
    trans: Vec<u32>,
    matches: Vec<u64>,
    work: usize,
    work_limit: usize,
    limits: &'a RegexLimits,
}

impl Builder<'_> {
    /// The DFA state of the epsilon closure of `targets` (sorted, distinct),
    /// created if new.
    fn state_of_targets(&mut self, targets: &[u32]) -> Result<u32> {
        self.closure(targets);
        let id = if self.closure.is_empty() {
            DEAD
        } else if let Some(&id) = self.ids.get(self.closure.as_slice()) {
            id
        } else {
            let key: std::rc::Rc<[u32]> = self.closure.as_slice().into();
            self.add_state(key)?
        };
        self.closures.insert(targets.into(), id);
        Ok(id)
    }

    fn add_state(&mut self, key: std::rc::Rc<[u32]>) -> Result<u32> {
        let id = self.keys.len() as u32;
        if self.keys.len() > self.limits.max_states {
            return Err(Error::TooLarge(format!("more than {} DFA states", self.limits.max_states)));
        }
        self.work += STATE_OVERHEAD + 2 * key.len();
        if self.work > self.work_limit {
            return Err(Error::TooLarge(format!(
                "DFA construction exceeds its work bound ({} bytes at {} byte classes; determinization exceeded size limit of {})",
                self.work_limit,
                self.stride + 1,
                self.work_limit
            )));
        }
        if (self.keys.len() + 1) * (self.stride + 1) * 4 > self.limits.dfa_size {
            return Err(Error::TooLarge(format!("DFA exceeds {} bytes", self.limits.dfa_size)));
        }
        self.trans.resize((id as usize + 1) * self.stride, DEAD);
        self.matches.resize((id as usize + 1) * self.pwords, 0);
        for &s in key.iter() {
            if let State::Match { pattern_id } = self.nfa.state(StateID::new_unchecked(s as usize)) {
                let p = pattern_id.as_usize();
                self.matches[id as usize * self.pwords + p / 64] |= 1 << (p % 64);
            }
        }
        self.ids.insert(key.clone(), id);
        self.keys.push(key);
        Ok(id)
    }

    /// Into `self.closure`: the NFA states with transitions or a match
    /// reachable from `roots` through epsilon moves, sorted. (One buffer
    /// for all closures: most find a state that exists, and growing a
    /// fresh vector for each was a tenth of a large lexer's construction.)
    fn closure(&mut self, roots: &[u32]) {
        self.seen.reset(self.nfa.states().len());
        let out = &mut self.closure;
        out.clear();
        self.stack.extend(roots.iter().rev());
        while let Some(s) = self.stack.pop() {
            if !self.seen.insert(s as usize) {
                continue;
            }
            match self.nfa.state(StateID::new_unchecked(s as usize)) {
                State::ByteRange { .. } | State::Sparse(_) | State::Dense(_) | State::Match { .. } => out.push(s),
                State::Union { alternates } => self.stack.extend(alternates.iter().rev().map(|a| a.as_u32())),
                State::BinaryUnion { alt1, alt2 } => {
                    self.stack.push(alt2.as_u32());
                    self.stack.push(alt1.as_u32());
                }
                State::Capture { next, .. } => self.stack.push(next.as_u32()),
                // No look-around here (checked above); Fail leads nowhere.
                State::Look { .. } | State::Fail => {}
            }
        }
        out.sort_unstable();
    }
}

/// The segments that a set of index ranges cuts `0..n` into: every index
/// of one segment lies in the same ranges. Both subset constructions (this
/// one over byte classes, `json_schema::counted`'s over character atoms)
/// gather a state's targets per segment: most transitions span nearly the
/// whole alphabet, and gathering per index was most of their time.
#[derive(Debug, Default)]
pub(crate) struct Segments {
    cut: Vec<bool>,
    of: Vec<u32>,
    start: Vec<usize>,
}

impl Segments {
    /// Cut `0..n` at both ends of each range (`(first, last)`, inclusive,
    /// within `0..n`).
    pub(crate) fn cut(&mut self, n: usize, ranges: impl Iterator<Item = (usize, usize)>) {
        self.cut.clear();
        self.cut.resize(n + 1, false);
        self.cut[0] = true;
        for (a, b) in ranges {
            self.cut[a] = true;
            self.cut[b + 1] = true;
        }
        self.start.clear();
        self.of.clear();
        for i in 0..n {
            if self.cut[i] {
                self.start.push(i);
            }
            self.of.push(self.start.len() as u32 - 1);
        }
        self.start.push(n);
    }

    /// The number of segments.
    pub(crate) fn len(&self) -> usize {
        self.start.len() - 1
    }

    /// The segment of index `i`.
    pub(crate) fn of(&self, i: usize) -> usize {
        self.of[i] as usize
    }

    /// The indices of segment `g`.
    pub(crate) fn range(&self, g: usize) -> std::ops::Range<usize> {
        self.start[g]..self.start[g + 1]
    }
}
