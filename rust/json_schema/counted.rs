//! A `pattern` or `format` together with `minLength` / `maxLength`: the
//! intersection of a regular language with a length range, exactly.
//!
//! A regex cannot say "and at most 255 characters" about another regex
//! (regex-automata has no intersection), and the rewrite of
//! [`strings::pattern_body_len`] covers only patterns with one variable
//! part. In general the intersection is the product of the pattern's
//! automaton with a character counter, which no regex writes compactly
//! (its regex grows with the number of paths, not of states). A grammar
//! writes it in the product's size: one nonterminal per reachable (state,
//! count) pair and one terminal per character class, which is what this
//! module builds, pruned to the pairs that can still end in an accepted
//! string of an allowed length and refused beyond [`MAX_PAIRS`].
//!
//! The automaton is built here over characters (Unicode scalar values), not
//! over the bytes of the encoded JSON text: `maxLength` counts characters,
//! and a character class maps to one terminal through
//! [`strings::class_regex`], which spells each character in its one
//! canonical encoding.

use super::strings;
use crate::error::{Error, Result};
use crate::fxhash::{FxMap, FxSet};
use crate::marks::Marks;
use regex_syntax::hir::{Class, Hir, HirKind, Look};
use std::collections::HashMap;

/// Most NFA states built for one pattern (counted repetitions unrolled).
const MAX_NFA: usize = 20_000;
/// Most DFA states of one pattern.
const MAX_DFA: usize = 4_000;
/// Most distinct character intervals (alphabet atoms) of one pattern.
const MAX_ATOMS: usize = 4_000;
/// Most (state, count) pairs of one counted string: each becomes a
/// nonterminal of the grammar.
pub const MAX_PAIRS: usize = 40_000;

/// Unicode scalar values.
const ANY: &[(u32, u32)] = &[(0, 0xD7FF), (0xE000, 0x10FFFF)];

fn too_large(what: &str) -> Error {
    Error::Usage(format!("the pattern's automaton is too large to count its length ({what})"))
}

/// A Thompson NFA over characters. Anchors are conditional empty moves:
/// `^` passes only before the first character, `$` only after the last,
/// which is how a pattern like `^(a($|/))*$` (an anchor inside a loop)
/// stays regular.
#[derive(Default)]
struct Nfa {
    eps: Vec<Vec<usize>>,
    /// Empty moves taken only at the start (`^`) / the end (`$`).
    eps_start: Vec<Vec<usize>>,
    eps_end: Vec<Vec<usize>>,
    /// (class index, target).
    edges: Vec<Vec<(usize, usize)>>,
    classes: Vec<Vec<(u32, u32)>>,
}

impl Nfa {
    fn state(&mut self) -> Result<usize> {
        if self.eps.len() >= MAX_NFA {
            return Err(too_large("NFA states"));
        }
        self.eps.push(Vec::new());
        self.eps_start.push(Vec::new());
        self.eps_end.push(Vec::new());
        self.edges.push(Vec::new());
        Ok(self.eps.len() - 1)
    }

    fn edge(&mut self, from: usize, ranges: Vec<(u32, u32)>) -> Result<usize> {
        let to = self.state()?;
        self.classes.push(ranges);
        self.edges[from].push((self.classes.len() - 1, to));
        Ok(to)
    }

    /// Adds `h` after `from`; returns its end state.
    fn build(&mut self, h: &Hir, from: usize) -> Result<usize> {
        Ok(match h.kind() {
            HirKind::Empty => from,
            HirKind::Literal(l) => {
                let s = std::str::from_utf8(&l.0).map_err(|_| Error::Usage("pattern has non-UTF-8 bytes".into()))?;
                let mut at = from;
                for c in s.chars() {
                    at = self.edge(at, vec![(c as u32, c as u32)])?;
                }
                at
            }
            HirKind::Class(Class::Unicode(c)) => {
                let ranges = c.ranges().iter().map(|r| (r.start() as u32, r.end() as u32)).collect();
                self.edge(from, ranges)?
            }
            HirKind::Class(Class::Bytes(_)) => return Err(Error::Usage("pattern uses a byte class".into())),
            HirKind::Look(Look::Start) => {
                let s = self.state()?;
                self.eps_start[from].push(s);
                s
            }
            HirKind::Look(Look::End) => {
                let s = self.state()?;
                self.eps_end[from].push(s);
                s
            }
            HirKind::Look(_) => {
                return Err(Error::Usage(
                    "pattern uses a boundary assertion, which this compiler does not support".into(),
                ))
            }
            HirKind::Capture(c) => self.build(&c.sub, from)?,
            HirKind::Concat(xs) => {
                let mut at = from;
                for x in xs {
                    at = self.build(x, at)?;
                }
                at
            }
            HirKind::Alternation(xs) => {
                let end = self.state()?;
                for x in xs {
                    let s = self.state()?;
                    self.eps[from].push(s);
                    let t = self.build(x, s)?;
                    self.eps[t].push(end);
                }
                end
            }
            HirKind::Repetition(r) => {
                let mut at = from;
                for _ in 0..r.min {
                    at = self.build(&r.sub, at)?;
                }
                match r.max {
                    None => {
                        let lp = self.state()?;
                        self.eps[at].push(lp);
                        let t = self.build(&r.sub, lp)?;
                        self.eps[t].push(lp);
                        lp
                    }
                    Some(m) => {
                        for _ in r.min..m {
                            let t = self.build(&r.sub, at)?;
                            let e = self.state()?;
                            self.eps[at].push(e);
                            self.eps[t].push(e);
                            at = e;
                        }
                        at
                    }
                }
            }
        })
    }

    /// A loop on any character at `at` (the unanchored ends of a search).
    fn any_loop(&mut self, at: usize) -> Result<usize> {
        let lp = self.state()?;
        self.eps[at].push(lp);
        self.classes.push(ANY.to_vec());
        self.edges[lp].push((self.classes.len() - 1, lp));
        Ok(lp)
    }

    /// Adds to `set` what empty moves reach; the anchored ones only `at_start`
    /// (no character read yet) / `at_end` (none to follow). `seen` is
    /// scratch, reused across calls.
    fn closure(&self, set: &mut Vec<usize>, at_start: bool, at_end: bool, seen: &mut Seen) {
        seen.marks.reset(self.eps.len());
        let mut stack = std::mem::take(&mut seen.stack);
        stack.clear();
        stack.extend_from_slice(set);
        for &s in set.iter() {
            seen.marks.insert(s);
        }
        let none: &[usize] = &[];
        while let Some(s) = stack.pop() {
            let starts = if at_start { &self.eps_start[s][..] } else { none };
            let ends = if at_end { &self.eps_end[s][..] } else { none };
            for &t in self.eps[s].iter().chain(starts).chain(ends) {
                if seen.marks.insert(t) {
                    set.push(t);
                    stack.push(t);
                }
            }
        }
        seen.stack = stack;
        set.sort_unstable();
        set.dedup();
    }
}

/// Scratch for [`Nfa::closure`], reused across calls: visit marks (reset
/// in constant time) and the work stack.
#[derive(Default)]
struct Seen {
    marks: Marks,
    stack: Vec<usize>,
}

/// Moves out of one state: (character class as inclusive ranges, target),
/// the classes disjoint.
pub type Moves = Vec<(Vec<(u32, u32)>, usize)>;

/// The state `s` leads to from `q`, if any.
fn walk(states: &[Moves], mut q: usize, s: &str) -> Option<usize> {
    for ch in s.chars() {
        let c = ch as u32;
        q = states[q].iter().find(|(cls, _)| cls.iter().any(|&(a, b)| a <= c && c <= b))?.1;
    }
    Some(q)
}

/// A minimal DFA over characters: per state, its transitions as
/// (character class, target) with disjoint classes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CharDfa {
    pub start: usize,
    pub accept: Vec<bool>,
    pub trans: Vec<Moves>,
}

/// The DFA of the strings in which `pattern` (ECMA-262) finds a match
/// (JSON Schema's search semantics, as [`strings::pattern_body`]).
pub fn pattern_dfa(pattern: &str) -> Result<CharDfa> {
    let hir = strings::pattern_hir(pattern)?;
    let mut nfa = Nfa::default();
    let start = nfa.state()?;
    let s = nfa.any_loop(start)?;
    let e = nfa.build(&hir, s)?;
    let accept = nfa.any_loop(e)?;
    determinize(&nfa, start, accept)
}

/// The DFA of the strings matched in full by `body` (Rust regex syntax over
/// characters, as [`strings::format_body`] writes formats).
pub fn body_dfa(body: &str) -> Result<CharDfa> {
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(true)
        .utf8(true)
        .build()
        .parse(body)
        .map_err(|e| Error::Usage(format!("format regex does not parse: {e}")))?;
    let mut nfa = Nfa::default();
    let start = nfa.state()?;
    let end = nfa.build(&hir, start)?;
    determinize(&nfa, start, end)
}

/// Subset construction over the atoms of the NFA's classes, then Moore
/// minimisation (fewer states, fewer counted pairs).
fn determinize(nfa: &Nfa, start: usize, accept: usize) -> Result<CharDfa> {
    // Atoms: the intervals between class boundaries.
    let mut cuts: Vec<u32> = vec![0, 0xD800, 0xE000, 0x110000];
    for c in &nfa.classes {
        for &(lo, hi) in c {
            cuts.push(lo);
            cuts.push(hi + 1);
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    let atoms: Vec<(u32, u32)> = cuts
        .windows(2)
        .map(|w| (w[0], w[1] - 1))
        .filter(|&(lo, _)| !(0xD800..0xE000).contains(&lo))
        .collect();
    if atoms.len() > MAX_ATOMS {
        return Err(too_large("character classes"));
    }
    // Each class as runs of atom indices (classes are unions of atoms).
    // Atoms are sorted and cut at every range's ends: a range's atoms are
    // the run of those starting inside it.
    let class_runs: Vec<Vec<(usize, usize)>> = nfa
        .classes
        .iter()
        .map(|c| {
            c.iter()
                .map(|&(a, b)| (atoms.partition_point(|&(lo, _)| lo < a), atoms.partition_point(|&(lo, _)| lo <= b)))
                .filter(|(from, to)| from < to)
                .collect()
        })
        .collect();
    const DEAD: usize = usize::MAX;
    // The start state is the only one read at the start: it is never
    // shared with a later state of the same NFA set (`ids` holds the
    // others), since anchors may make the two accept differently.
    let mut seen = Seen::default();
    let mut first = vec![start];
    nfa.closure(&mut first, true, false, &mut seen);
    let mut ids: FxMap<Vec<usize>, usize> = FxMap::default();
    let mut reached: FxMap<Vec<usize>, usize> = FxMap::default();
    let mut sets = vec![first];
    let mut table: Vec<Vec<usize>> = Vec::new();
    // A state's edges cut the atoms into segments within which every atom
    // has the same targets: targets are gathered per segment, not per atom
    // (a format's "any character but ..." classes span hundreds of atoms).
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    let mut segs = crate::regex::Segments::default();
    // Every state's cuts together: atoms between two of them have equal
    // columns in the table.
    let mut any_cut = vec![false; atoms.len()];
    let mut buckets: Vec<Vec<usize>> = Vec::new();
    let mut i = 0;
    while i < sets.len() {
        runs.clear();
        for &s in &sets[i] {
            for &(c, to) in &nfa.edges[s] {
                runs.extend(class_runs[c].iter().map(|&(a, b)| (a, b, to)));
            }
        }
        segs.cut(atoms.len(), runs.iter().map(|&(a, b, _)| (a, b - 1)));
        let nseg = segs.len();
        for g in 0..nseg {
            any_cut[segs.range(g).start] = true;
        }
        if buckets.len() < nseg {
            buckets.resize(nseg, Vec::new());
        }
        for b in &mut buckets[..nseg] {
            b.clear();
        }
        for &(a, b, to) in &runs {
            for bucket in &mut buckets[segs.of(a)..=segs.of(b - 1)] {
                bucket.push(to);
            }
        }
        let mut row = vec![DEAD; atoms.len()];
        for g in 0..nseg {
            if buckets[g].is_empty() {
                continue;
            }
            // Equal targets have equal closures, in this state and any
            // other.
            let mut t = std::mem::take(&mut buckets[g]);
            t.sort_unstable();
            t.dedup();
            let id = match reached.get(&t) {
                Some(&id) => id,
                None => {
                    let key = t.clone();
                    nfa.closure(&mut t, false, false, &mut seen);
                    let id = match ids.get(&t) {
                        Some(&id) => id,
                        None => {
                            if sets.len() >= MAX_DFA {
                                return Err(too_large("DFA states"));
                            }
                            sets.push(t.clone());
                            ids.insert(t.clone(), sets.len() - 1);
                            sets.len() - 1
                        }
                    };
                    reached.insert(key, id);
                    id
                }
            };
            buckets[g] = t;
            row[segs.range(g)].fill(id);
        }
        table.push(row);
        i += 1;
    }
    let acc: Vec<bool> = sets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut end = s.clone();
            nfa.closure(&mut end, i == 0, true, &mut seen);
            end.binary_search(&accept).is_ok()
        })
        .collect();
    // Atoms whose columns are equal move every state alike: refinement
    // needs one of each (a format's hundreds of atoms are a few kinds of
    // character).
    // The first atom of each class is where some state cuts (the one
    // before it is in the same segment of every state otherwise), so only
    // those are compared.
    let mut columns: FxSet<Vec<usize>> = FxSet::default();
    let mut reps: Vec<usize> = Vec::new();
    for a in (0..atoms.len()).filter(|&a| any_cut[a]) {
        let col: Vec<usize> = table.iter().map(|row| row[a]).collect();
        if columns.insert(col) {
            reps.push(a);
        }
    }
    // Moore: refine blocks by (accepting, block of each atom's target),
    // until the number of blocks stops growing. One signature buffer for
    // every state: only a new signature is copied into the map.
    let mut block: Vec<usize> = acc.iter().map(|&a| a as usize).collect();
    let mut blocks = if acc.iter().all(|&a| a) || acc.iter().all(|&a| !a) { 1 } else { 2 };
    let mut sig: FxMap<Vec<usize>, usize> = FxMap::default();
    let mut key: Vec<usize> = Vec::with_capacity(reps.len() + 1);
    let mut next = vec![0usize; sets.len()];
    loop {
        sig.clear();
        for q in 0..sets.len() {
            key.clear();
            key.push(block[q]);
            key.extend(reps.iter().map(|&a| table[q][a]).map(|t| if t == DEAD { DEAD } else { block[t] }));
            next[q] = match sig.get(key.as_slice()) {
                Some(&b) => b,
                None => {
                    let b = sig.len();
                    sig.insert(key.clone(), b);
                    b
                }
            };
        }
        std::mem::swap(&mut block, &mut next);
        if sig.len() == blocks {
            break;
        }
        blocks = sig.len();
    }
    let n = block.iter().max().map_or(0, |m| m + 1);
    let mut trans = vec![Vec::new(); n];
    let mut accept_v = vec![false; n];
    let mut done = vec![false; n];
    for q in 0..sets.len() {
        let b = block[q];
        if done[b] {
            continue;
        }
        done[b] = true;
        accept_v[b] = acc[q];
        let mut by_target: Vec<(usize, Vec<(u32, u32)>)> = Vec::new();
        for (a, &t) in table[q].iter().enumerate() {
            if t == DEAD {
                continue;
            }
            let tb = block[t];
            let r = atoms[a];
            match by_target.iter_mut().find(|(x, _)| *x == tb) {
                Some((_, rs)) => match rs.last_mut() {
                    Some(last) if last.1 + 1 == r.0 => last.1 = r.1,
                    _ => rs.push(r),
                },
                None => by_target.push((tb, vec![r])),
            }
        }
        trans[b] = by_target.into_iter().map(|(t, rs)| (rs, t)).collect();
    }
    Ok(CharDfa {
        start: block[0],
        accept: accept_v,
        trans,
    })
}

impl CharDfa {
    /// Whether the automaton accepts `s`.
    pub fn accepts(&self, s: &str) -> bool {
        walk(&self.trans, self.start, s).is_some_and(|q| self.accept[q])
    }

    /// Fewest characters from each state to an accepting one (`None`:
    /// none reachable).
    pub fn dist_to_accept(&self) -> Vec<Option<u64>> {
        let n = self.accept.len();
        let mut rev = vec![Vec::new(); n];
        for (q, ts) in self.trans.iter().enumerate() {
            for (_, t) in ts {
                rev[*t].push(q);
            }
        }
        let mut dist: Vec<Option<u64>> = self.accept.iter().map(|&a| a.then_some(0)).collect();
        let mut queue: std::collections::VecDeque<usize> = (0..n).filter(|&q| self.accept[q]).collect();
        while let Some(q) = queue.pop_front() {
            let d = dist[q].unwrap_or(0);
            for &p in &rev[q] {
                if dist[p].is_none() {
                    dist[p] = Some(d + 1);
                    queue.push_back(p);
                }
            }
        }
        dist
    }

    /// Shortest and longest accepted lengths (`None` as the longest when
    /// a cycle lies on an accepting path); `None` for the empty language.
    pub fn length_range(&self) -> Option<(u64, Option<u64>)> {
        let dist = self.dist_to_accept();
        let shortest = dist[self.start]?;
        // Longest path over the live states reachable from the start; a
        // cycle among them means no bound.
        let n = self.accept.len();
        let live = |q: usize| dist[q].is_some();
        let mut memo: Vec<Option<u64>> = vec![None; n];
        let mut state = vec![0u8; n]; // 0 new, 1 on stack, 2 done
        let mut stack: Vec<(usize, usize)> = vec![(self.start, 0)];
        state[self.start] = 1;
        while let Some(&mut (q, ref mut i)) = stack.last_mut() {
            let ts = &self.trans[q];
            if *i < ts.len() {
                let t = ts[*i].1;
                *i += 1;
                if !live(t) {
                    continue;
                }
                match state[t] {
                    0 => {
                        state[t] = 1;
                        stack.push((t, 0));
                    }
                    1 => return Some((shortest, None)),
                    _ => {}
                }
            } else {
                let best = ts.iter().filter(|(_, t)| live(*t)).filter_map(|(_, t)| memo[*t].map(|m| m + 1)).max();
                memo[q] = match (self.accept[q], best) {
                    (true, b) => Some(b.unwrap_or(0)),
                    (false, b) => b,
                };
                state[q] = 2;
                stack.pop();
            }
        }
        Some((shortest, memo[self.start]))
    }
}

impl CharDfa {
    /// Every string (one state looping on any character).
    pub fn any() -> CharDfa {
        CharDfa {
            start: 0,
            accept: vec![true],
            trans: vec![vec![(ANY.to_vec(), 0)]],
        }
    }

    /// Every string of characters from `ranges`.
    pub fn over(ranges: &[(u32, u32)]) -> CharDfa {
        CharDfa {
            start: 0,
            accept: vec![true],
            trans: vec![vec![(ranges.to_vec(), 0)]],
        }
    }

    /// Exactly the given strings (a trie).
    pub fn literals(words: &[String]) -> CharDfa {
        let mut d = CharDfa {
            start: 0,
            accept: vec![false],
            trans: vec![Vec::new()],
        };
        for w in words {
            let mut q = 0;
            for ch in w.chars() {
                let c = ch as u32;
                q = match d.trans[q].iter().find(|(cls, _)| cls[0] == (c, c)) {
                    Some((_, t)) => *t,
                    None => {
                        d.accept.push(false);
                        d.trans.push(Vec::new());
                        let t = d.accept.len() - 1;
                        d.trans[q].push((vec![(c, c)], t));
                        t
                    }
                };
            }
            d.accept[q] = true;
        }
        d
    }

    /// Every string this automaton rejects: made complete with a sink
    /// state, acceptance flipped.
    pub fn complement(&self) -> CharDfa {
        let sink = self.accept.len();
        let mut trans = self.trans.clone();
        for moves in trans.iter_mut() {
            let mut used: Vec<(u32, u32)> = moves.iter().flat_map(|(c, _)| c.iter().copied()).collect();
            used.sort_unstable();
            let mut rest = Vec::new();
            for &(lo, hi) in ANY {
                let mut at = lo;
                for &(a, b) in &used {
                    if b < at || a > hi {
                        continue;
                    }
                    if a > at {
                        rest.push((at, a - 1));
                    }
                    at = at.max(b.saturating_add(1));
                }
                if at <= hi {
                    rest.push((at, hi));
                }
            }
            if !rest.is_empty() {
                moves.push((rest, sink));
            }
        }
        trans.push(vec![(ANY.to_vec(), sink)]);
        let mut accept: Vec<bool> = self.accept.iter().map(|a| !a).collect();
        accept.push(true);
        CharDfa {
            start: self.start,
            accept,
            trans,
        }
    }

    /// The strings both automata accept (the reachable product).
    pub fn intersect(&self, o: &CharDfa) -> Result<CharDfa> {
        let mut ids: HashMap<(usize, usize), usize> = HashMap::new();
        let mut pairs = vec![(self.start, o.start)];
        ids.insert(pairs[0], 0);
        let mut trans = Vec::new();
        let mut i = 0;
        while i < pairs.len() {
            let (p, q) = pairs[i];
            let mut moves: Moves = Vec::new();
            for (c1, t1) in &self.trans[p] {
                for (c2, t2) in &o.trans[q] {
                    let c = strings::intersect(c1, c2);
                    if c.is_empty() {
                        continue;
                    }
                    let j = match ids.get(&(*t1, *t2)) {
                        Some(&j) => j,
                        None => {
                            if pairs.len() >= MAX_DFA {
                                return Err(too_large("intersection states"));
                            }
                            pairs.push((*t1, *t2));
                            ids.insert((*t1, *t2), pairs.len() - 1);
                            pairs.len() - 1
                        }
                    };
                    match moves.iter_mut().find(|(_, t)| *t == j) {
                        Some((cls, _)) => {
                            cls.extend(c);
                            cls.sort_unstable();
                        }
                        None => moves.push((c, j)),
                    }
                }
            }
            trans.push(moves);
            i += 1;
        }
        Ok(CharDfa {
            start: 0,
            accept: pairs.iter().map(|&(p, q)| self.accept[p] && o.accept[q]).collect(),
            trans,
        })
    }
}

/// The product of a DFA with a character counter for lengths `min..=max`:
/// the (state, count) pairs from which an accepted string of an allowed
/// length can still be completed, reachable from (start, 0). Counts past
/// `min` are merged when there is no `max`. `Err` when the product has
/// more than [`MAX_PAIRS`] pairs.
pub struct Product {
    /// Pairs in order of discovery; `pairs[0]` is (start, 0).
    pub pairs: Vec<(usize, u64)>,
    /// Per pair: its moves (class, index of the next pair) and whether the
    /// string may end there.
    pub moves: Vec<Moves>,
    pub ends: Vec<bool>,
}

pub fn product(dfa: &CharDfa, min: u64, max: Option<u64>) -> Result<Option<Product>> {
    let top = max.unwrap_or(min);
    let n = dfa.accept.len();
    if (top as u128 + 1) * n as u128 > 4 * MAX_PAIRS as u128 {
        return Err(too_large("length bound times automaton states"));
    }
    let top = top as usize;
    let next = |c: usize| if max.is_some() { c + 1 } else { (c + 1).min(top) };
    let dist = dfa.dist_to_accept();
    // good[c][q]: an allowed end is reachable from (q, c).
    let mut good = vec![vec![false; n]; top + 1];
    for q in 0..n {
        good[top][q] = if max.is_some() { dfa.accept[q] } else { dist[q].is_some() };
    }
    for c in (0..top).rev() {
        for q in 0..n {
            good[c][q] = (dfa.accept[q] && c as u64 >= min) || dfa.trans[q].iter().any(|(_, t)| good[c + 1][*t]);
        }
    }
    if !good[0][dfa.start] {
        return Ok(None);
    }
    let mut index: HashMap<(usize, usize), usize> = HashMap::new();
    let mut pairs = vec![(dfa.start, 0usize)];
    index.insert((dfa.start, 0), 0);
    let mut moves = Vec::new();
    let mut ends = Vec::new();
    let mut i = 0;
    while i < pairs.len() {
        let (q, c) = pairs[i];
        ends.push(dfa.accept[q] && c as u64 >= min);
        let mut ms = Vec::new();
        if c < top || max.is_none() {
            let c2 = next(c);
            for (cls, t) in &dfa.trans[q] {
                if !good[c2][*t] {
                    continue;
                }
                let j = match index.get(&(*t, c2)) {
                    Some(&j) => j,
                    None => {
                        if pairs.len() >= MAX_PAIRS {
                            return Err(too_large("counted states"));
                        }
                        pairs.push((*t, c2));
                        index.insert((*t, c2), pairs.len() - 1);
                        pairs.len() - 1
                    }
                };
                ms.push((cls.clone(), j));
            }
        }
        moves.push(ms);
        i += 1;
    }
    Ok(Some(Product {
        pairs: pairs.into_iter().map(|(q, c)| (q, c as u64)).collect(),
        moves,
        ends,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dfa: &CharDfa, s: &str) -> bool {
        dfa.accepts(s)
    }

    /// Whether the product accepts `s`.
    fn run_product(p: &Product, s: &str) -> bool {
        walk(&p.moves, 0, s).is_some_and(|i| p.ends[i])
    }

    #[test]
    fn pattern_search_semantics() {
        let d = pattern_dfa("^([a-z0-9-]+):([a-z0-9\\.-]+):([a-z0-9-]+)?:([a-z0-9-]+)$").unwrap();
        assert!(run(&d, "a:b::c") && run(&d, "ab:c.d:e:f") && !run(&d, "a:b:c") && !run(&d, "A:b::c"));
        let d = pattern_dfa("b").unwrap();
        assert!(run(&d, "abc") && run(&d, "b") && !run(&d, "ac") && !run(&d, ""));
        let d = pattern_dfa("^$|(^x+$)").unwrap();
        assert!(run(&d, "") && run(&d, "xx") && !run(&d, "xy"));
        assert_eq!(pattern_dfa("^a{2,4}$").unwrap().length_range(), Some((2, Some(4))));
        assert_eq!(pattern_dfa("^ab*$").unwrap().length_range(), Some((1, None)));
        assert_eq!(pattern_dfa("x").unwrap().length_range(), Some((1, None)));
        // Anchors inside: `$` as an alternative in a loop, `^` after a loop.
        let d = pattern_dfa("^(/?(x*)($|/))*$").unwrap();
        assert!(run(&d, "") && run(&d, "x/xx") && run(&d, "/x/") && !run(&d, "x/y"));
        let d = pattern_dfa("^a$b").unwrap();
        assert!(!run(&d, "a") && !run(&d, "ab"));
        let d = pattern_dfa("a*^b").unwrap();
        assert!(run(&d, "bcd") && !run(&d, "abc"));
    }

    #[test]
    fn boolean_operations() {
        let a = pattern_dfa("^[a-z]+$").unwrap();
        let b = pattern_dfa("x").unwrap();
        let ab = a.intersect(&b.complement()).unwrap();
        assert!(ab.accepts("abc") && !ab.accepts("axc") && !ab.accepts("") && !ab.accepts("a1"));
        let not_lit = CharDfa::literals(&["ab".into(), "".into(), "é".into()]).complement();
        assert!(!not_lit.accepts("ab") && !not_lit.accepts("") && !not_lit.accepts("é") && not_lit.accepts("a") && not_lit.accepts("abc"));
        let any = CharDfa::any();
        assert!(any.accepts("") && any.accepts("\u{10FFFF}") && !any.complement().accepts("x"));
    }

    #[test]
    fn counted_product() {
        let d = pattern_dfa("^([a-z]+):([a-z]+)$").unwrap();
        let p = product(&d, 0, Some(5)).unwrap().unwrap();
        for (s, ok) in [
            ("a:b", true),
            ("ab:cd", true),
            ("abc:de", false),
            ("a:bcd", true),
            ("a:bcde", false),
            (":a", false),
        ] {
            assert_eq!(run_product(&p, s), ok, "{s}");
        }
        let p = product(&d, 4, None).unwrap().unwrap();
        for (s, ok) in [("a:b", false), ("ab:c", true), ("abcdefgh:ijklmnop", true)] {
            assert_eq!(run_product(&p, s), ok, "{s}");
        }
        // Unsatisfiable: at least 3 characters, at most 2.
        assert!(product(&d, 0, Some(2)).unwrap().is_none());
        let u = body_dfa("[0-9]{2}-[0-9]+").unwrap();
        let p = product(&u, 0, Some(4)).unwrap().unwrap();
        assert!(run_product(&p, "12-3") && !run_product(&p, "12-") && !run_product(&p, "12-34"));
        assert!(product(&u, 0, Some(10_000_000)).is_err());
    }
}
