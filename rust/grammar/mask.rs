//! Token masks for grammar states, in two layers.
//!
//! Most bytes of most tokens only extend the lexeme in progress (a string
//! body, an identifier, a number), and that part of the walk depends on
//! nothing but the lexer state and the set of terminals the parser allows.
//! So the first layer, [`LexEntry`], memoises per (lexer state, allowed set):
//! the tokens that stay inside the lexeme, and the trie nodes where the
//! lexeme may end with more bytes below ("boundaries").
//!
//! The second layer finishes the mask for the actual parser state: for each
//! distinct lexer state at the boundaries it scans the ended lexeme once,
//! then walks the boundary subtrees with the full parser. Boundary subtrees
//! repeat (`abc",` and `xyz",` both continue with `,`); subtrees of equal
//! shape give equal answers from the same parser state, so each shape is
//! walked once per mask and its result replayed by offset.
//!
//! Inside a string or key the first layer need not walk the trie at all:
//! where every body character keeps the lexeme going, the ~96% of a
//! vocabulary made of body characters only is a precomputed bit set
//! ([`BodyIndex`]), and only the few thousand other tokens are walked,
//! from the state their body prefix leads to. A lexeme that may end
//! anywhere inside such a run (the rest of a line) ends only before the
//! few entry bytes that do not extend it: their parents are its
//! boundaries.
//!
//! Identifiers likewise: where every word character leads a state into one
//! state and back to it, or to states that walk alike under the allowed
//! terminals (an identifier in progress, or one that may start after a
//! bracket, perhaps after a space), the word tokens are a precomputed bit
//! set per prefix ([`WordIndex`]), in the lexer layer ([`Plan::Words`]) as
//! in the walk after a lexeme's end ([`LazyDfa::word_run`]), and only the
//! tokens that leave the word are walked. Where keywords the position
//! allows begin like identifiers, ASCII words pass through a few keyword
//! states first ([`keyword_states`]), whose trie nodes are walked on their
//! own.

use super::body::{self, BodyIndex, SKELETON_ENTRY};
use super::earley::{can_end, extends, intersects, ByteSnaps, CompiledGrammar, GrammarState, NO_SNAP};
use super::word::{self, Alphabet, WordIndex, Words};
use crate::bitmask::{set_bit, StoredMask};
use crate::fxhash::{FxMap, ShardedMap};
use crate::regex::{Dfa, WalkSignature};
use crate::toktrie::{SubtreeBytes, TokTrie};

/// Lexer-only part of a mask for one (lexer state, allowed set).
#[derive(Debug)]
pub struct LexEntry {
    /// Tokens all of whose bytes extend the lexeme in progress.
    inner: std::sync::Arc<StoredMask>,
    /// (trie node, lexer state there) where the lexeme may end and a
    /// non-extending child follows; grouped by the terminals the lexeme
    /// matches there, then sorted by lexer state.
    boundaries: Vec<(u32, u32)>,
    /// End of each group of `boundaries`. Ending the lexeme depends only on
    /// the terminals it matches (every prefix of a keyword that is also an
    /// identifier scans the same NAME), so the parser steps once per group.
    groups: Vec<u32>,
    /// Where a run of body characters ends ([`RunEnd::Ends`]: a string's
    /// head or chunk): its length `r` and lexer state. Every node of `r`
    /// body characters is then a boundary ([`BodyIndex::at_chars`]), kept
    /// here rather than in `boundaries` so that [`fill_from_entry`] can
    /// take them together.
    run_end: Option<(u32, u32)>,
}

impl LexEntry {
    /// The entry of lexer state `s` under `allowed`. With `body` (the
    /// vocabulary's index of string-body tokens), a lexeme in progress
    /// whose state every body character moves along one path
    /// ([`WalkStates::body_run`]) takes its body tokens from the index and
    /// walks only the others, from their entry nodes; one where body
    /// characters part ways but all keep the lexeme going
    /// ([`WalkStates::body_closed`]; `memo` keeps what this build learns
    /// for the next) takes them too and walks the paths to the entry nodes;
    /// otherwise the whole trie is walked. All give the same entry.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        g: &CompiledGrammar,
        trie: &TokTrie,
        below: &SubtreeBytes,
        body: Option<&BodyIndex>,
        words: Option<&WordIndex>,
        memo: Option<&BodyMemo>,
        s: u32,
        in_progress: bool,
        allowed: &[u64],
        mask_words: usize,
    ) -> LexEntry {
        let plan = Self::plan(g, body, words, memo, s, in_progress, allowed);
        Self::build_planned(g, trie, below, plan, s, in_progress, allowed, mask_words)
    }

    /// How [`LexEntry::build`] will go about the entry of lexer state `s`
    /// under `allowed`, decided before it is built (see
    /// [`LexPlan::uses_index`]).
    pub fn plan<'a>(
        g: &CompiledGrammar,
        body: Option<&'a BodyIndex>,
        words: Option<&'a WordIndex>,
        memo: Option<&'a BodyMemo>,
        s: u32,
        in_progress: bool,
        allowed: &[u64],
    ) -> LexPlan<'a> {
        let mut states = WalkStates::new(g.lexer.num_states());
        let plan = choose_plan(&g.lexer, body, words, memo, &mut states, s, in_progress, allowed);
        LexPlan { plan, states, memo }
    }

    /// [`LexEntry::build`] by a plan [`LexEntry::plan`] made for the same
    /// state and allowed terminals.
    #[allow(clippy::too_many_arguments)]
    pub fn build_planned(
        g: &CompiledGrammar,
        trie: &TokTrie,
        below: &SubtreeBytes,
        plan: LexPlan<'_>,
        s: u32,
        in_progress: bool,
        allowed: &[u64],
        words: usize,
    ) -> LexEntry {
        let lexer = &g.lexer;
        let LexPlan { plan, states, memo } = plan;
        let mut walk = LexWalk {
            trie,
            lexer,
            below,
            allowed,
            shared: memo,
            memo: states,
            states: vec![0u32; trie.max_depth() + 1],
            inner: take_scratch(words),
            boundaries: Vec::new(),
        };
        if in_progress && can_end(lexer, s, allowed) {
            walk.boundaries.push((0u32, s));
        }
        let mut plan_end = None;
        match plan {
            Plan::Run(ix, run) => {
                let n = run.states.len() - 1;
                match run.end {
                    RunEnd::Cycle(_) | RunEnd::Long => walk.inner.copy_from_slice(ix.all()),
                    RunEnd::Dead | RunEnd::Ends => ix.upto_into(n, &mut walk.inner),
                }
                if let RunEnd::Ends = run.end {
                    plan_end = Some((n, run.states[n]));
                }
                for group in ix.entries().chunk_by(|a, b| a.same_start(b)) {
                    let e = group[0];
                    // The state before the entry byte (inside the run, so
                    // every state on the way extends the lexeme), and the
                    // one after it: where that is dead, so is every node of
                    // the group.
                    if let Some(q) = run.state_at(e.chars as usize, e.partial_len > 0) {
                        let q = lexer.run(q, e.partial());
                        // Where the lexeme may end before the entry byte
                        // (inside a run of a lexeme that may end anywhere),
                        // the parent is a boundary if that byte does not
                        // extend it (`retain` below); the root's is above,
                        // and at a run's end every node is one
                        // (`run_end`).
                        let run_end = matches!(run.end, RunEnd::Ends) && e.chars as usize == n && e.partial_len == 0;
                        if q != DEAD_STATE && !run_end && walk.memo.status(lexer, q, allowed) & ENDS != 0 {
                            walk.boundaries.extend(group.iter().filter(|x| x.parent != 0).map(|x| (x.parent, q)));
                        }
                        if q != DEAD_STATE && walk.memo.status(lexer, lexer.next(q, e.byte), allowed) & LIVE != 0 {
                            for x in group {
                                let n = x.node as usize;
                                let end = trie.subtree_end(n);
                                if end == n + 1 {
                                    // A leaf (most entries: a body token
                                    // and its closing quote): the entry
                                    // byte keeps the lexeme going (above),
                                    // so its tokens are inside. A call of
                                    // the walk per leaf was a tenth of a
                                    // string's first mask.
                                    for &t in trie.node_tokens(n) {
                                        set_bit(&mut walk.inner, t);
                                    }
                                    continue;
                                }
                                walk.states[trie.node_depth(n) - 1] = q;
                                walk.walk(n, end);
                            }
                        }
                    }
                }
                // Entries of one parent with different bytes gave it once
                // each.
                walk.boundaries.sort_unstable();
                walk.boundaries.dedup();
            }
            Plan::Closed(ix) => {
                // Every body token is inside, but body characters lead to
                // different states: follow the paths to the entry nodes.
                walk.inner.copy_from_slice(ix.all());
                walk.states[0] = s;
                for &x in ix.skeleton() {
                    let n = (x & !SKELETON_ENTRY) as usize;
                    if x & SKELETON_ENTRY != 0 {
                        walk.walk(n, trie.subtree_end(n));
                    } else {
                        let d = trie.node_depth(n);
                        walk.states[d] = lexer.next(walk.states[d - 1], trie.node_byte(n));
                    }
                }
            }
            Plan::Words(parts) => {
                // Every word token of each part is inside (after its
                // prefix, if any); tokens whose first byte neither starts a
                // word nor is a part's prefix are walked as before; the
                // others from their entry, past the word (or none of it)
                // and the character the entry byte cuts short. A lexeme
                // that may end inside the word (an identifier) ends before
                // entry bytes that do not extend it: their parents are
                // boundaries (`retain`), as a prefix may be.
                walk.states[0] = s;
                let root = parts.iter().find(|p| p.prefix.node == 0).map(|p| p.words);
                for c in trie.children(0) {
                    let taken = root.is_some_and(|w| w.is_first_lead(trie.node_byte(c))) || parts.iter().any(|p| p.prefix.node as usize == c);
                    if !taken {
                        walk.walk(c, trie.subtree_end(c));
                    }
                }
                for part in &parts {
                    let WordPart {
                        words: w,
                        prefix: p,
                        from,
                        to,
                        ref keywords,
                    } = *part;
                    for (x, y) in walk.inner.iter_mut().zip(p.tokens.iter()) {
                        *x |= y;
                    }
                    if p.node != 0 {
                        // The prefix byte itself, and its children that
                        // start no word, from the state after it.
                        let n = p.node as usize;
                        // SAFETY: trie ids are below the vocabulary's
                        // size, which the mask covers.
                        assert!(trie.vocab_size() <= walk.inner.len() * 32);
                        unsafe { set_bits_unchecked(&mut walk.inner, trie.node_tokens(n)) };
                        if walk.memo.status(lexer, from, allowed) & ENDS != 0 {
                            walk.boundaries.push((n as u32, from));
                        }
                        walk.states[1] = from;
                        for c in trie.children(n) {
                            if !w.is_first_lead(trie.node_byte(c)) {
                                walk.walk(c, trie.subtree_end(c));
                            }
                        }
                    }
                    // Where words pass through keyword states, the nodes of
                    // those states are walked on their own (with the
                    // tokens that leave a word there), and the entries
                    // below the nodes where words reach the word's state
                    // from that state.
                    let mut regions = Vec::new();
                    if let Some(ks) = keywords {
                        walk.keyword_walk(w, p.node as usize, from, true, ks, &mut regions);
                    }
                    // ASCII words: no cut-short characters, one group
                    // sorted by node, as are the regions.
                    let mut inside = within(&regions);
                    for group in p.entries.chunk_by(|a, b| a.same_start(b)) {
                        let e = group[0];
                        let q = lexer.run(if e.first { from } else { to }, e.partial());
                        if q != DEAD_STATE {
                            for x in group {
                                if keywords.is_some() && !inside(x.node) {
                                    continue;
                                }
                                if walk.memo.status(lexer, q, allowed) & ENDS != 0 {
                                    walk.boundaries.push((x.parent, q));
                                }
                                let n = x.node as usize;
                                walk.states[trie.node_depth(n) - 1] = q;
                                walk.walk(n, trie.subtree_end(n));
                            }
                        }
                    }
                }
                walk.boundaries.sort_unstable();
                walk.boundaries.dedup();
            }
            Plan::Walk => {
                walk.states[0] = s;
                walk.walk(1, trie.nodes().len());
            }
        }
        let LexWalk { inner, mut boundaries, .. } = walk;
        let run_end = plan_end.map(|(n, ls): (usize, u32)| (n as u32, ls));
        boundaries.retain(|&(n, ls)| trie.children(n as usize).any(|c| !extends(lexer, ls, trie.node_byte(c), allowed)));
        let stored = std::sync::Arc::new(StoredMask::new(&inner));
        give_back_scratch(inner);
        Self::grouped(g, allowed, stored, boundaries, run_end)
    }

    /// The entry with `boundaries` in groups (see [`LexEntry::groups`]).
    fn grouped(
        g: &CompiledGrammar,
        allowed: &[u64],
        inner: std::sync::Arc<StoredMask>,
        mut boundaries: Vec<(u32, u32)>,
        run_end: Option<(u32, u32)>,
    ) -> LexEntry {
        let mut group_of: FxMap<Vec<u64>, u32> = FxMap::default();
        let mut by_state: FxMap<u32, u32> = FxMap::default();
        for &(_, ls) in &boundaries {
            by_state.entry(ls).or_insert_with(|| {
                let m: Vec<u64> = g.lexer.matches(ls).iter().zip(allowed).map(|(m, a)| m & a).collect();
                let next = group_of.len() as u32;
                *group_of.entry(m).or_insert(next)
            });
        }
        // Sort keys computed once: a hash lookup per comparison was 4% of a
        // slow mask's instructions. (Stable: most boundaries share one key,
        // and their order by node is kept.)
        let mut keyed: Vec<(u32, u32, u32)> = boundaries.iter().map(|&(n, ls)| (by_state[&ls], ls, n)).collect();
        keyed.sort_by_key(|&(g, ls, _)| (g, ls));
        boundaries.clear();
        boundaries.extend(keyed.iter().map(|&(_, ls, n)| (n, ls)));
        let mut groups = Vec::new();
        for (i, w) in keyed.windows(2).enumerate() {
            if w[0].0 != w[1].0 {
                groups.push(i as u32 + 1);
            }
        }
        if !boundaries.is_empty() {
            groups.push(boundaries.len() as u32);
        }
        LexEntry {
            inner,
            boundaries,
            groups,
            run_end,
        }
    }

    /// This entry for any grammar over the same vocabulary: lexer states
    /// by their block in the walk signature `sig` it was built under.
    pub fn to_shared(&self, sig: &WalkSignature) -> SharedLexEntry {
        SharedLexEntry {
            inner: self.inner.clone(),
            boundaries: self.boundaries.iter().map(|&(n, ls)| (n, sig.block_of[&ls])).collect(),
            run_end: self.run_end.map(|(r, ls)| (r, sig.block_of[&ls])),
        }
    }

    /// The entry of a grammar whose lexer state and allowed terminals have
    /// the walk signature `shared` was made under (`sig`).
    pub fn from_shared(g: &CompiledGrammar, allowed: &[u64], shared: &SharedLexEntry, sig: &WalkSignature) -> LexEntry {
        let boundaries = shared.boundaries.iter().map(|&(n, i)| (n, sig.reps[i as usize])).collect();
        let run_end = shared.run_end.map(|(r, i)| (r, sig.reps[i as usize]));
        Self::grouped(g, allowed, shared.inner.clone(), boundaries, run_end)
    }

    pub fn bytes(&self) -> usize {
        self.inner.bytes() + self.boundaries.len() * 8 + self.groups.len() * 4 + 8
    }
}

thread_local! {
    /// A mask-sized buffer [`LexEntry::build_planned`] walks into before
    /// the entry keeps its [`StoredMask`]: a fresh zeroed buffer per build
    /// faulted in its pages on every first visit.
    static SCRATCH: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A zeroed buffer of `words` words, from this thread's scratch.
fn take_scratch(words: usize) -> Box<[u32]> {
    let mut v = SCRATCH.with(|c| c.take());
    v.clear();
    v.resize(words, 0);
    v.into_boxed_slice()
}

fn give_back_scratch(b: Box<[u32]>) {
    SCRATCH.with(|c| c.set(b.into_vec()));
}

/// [`WalkStates::status`] bit: the state extends the lexeme (some allowed
/// terminal can still match).
const LIVE: u8 = 1;
/// [`WalkStates::status`] bit: an allowed terminal matches here.
const ENDS: u8 = 2;
/// [`WalkStates::status`] bit: computed.
const KNOWN: u8 = 4;

/// The most characters a run ([`WalkStates::runs`]) is followed for: a run
/// costs a few lexer steps per character, and higher subtrees are rare
/// (runs of spaces or dashes) and are then taken one level further down.
const MAX_RUN: u32 = 16;

/// The fewest trie nodes a subtree must hold for a walk to ask for a
/// state's runs: they cost a pass over the lexer's byte classes per step,
/// which a small subtree does not repay (code grammars meet many states,
/// each below small subtrees only: SynCode's JavaScript masks were 20%
/// slower asking everywhere).
const MIN_RUN_SUBTREE: usize = 32;

/// A plan for [`LexEntry::build_planned`], with what making it learned
/// about the lexer's states.
pub struct LexPlan<'a> {
    plan: Plan<'a>,
    states: WalkStates,
    /// The grammar's memo, which the walk adds what it learns to.
    memo: Option<&'a BodyMemo>,
}

impl LexPlan<'_> {
    /// Whether the entry's body tokens come from the string-body index
    /// rather than a walk of the trie (then it is cheap: no need to look
    /// for it among entries shared by walk signature). An entry from the
    /// word index still walks the root's other children, which cost a
    /// SynCode C mask more than finding the entry shared.
    pub fn uses_index(&self) -> bool {
        matches!(self.plan, Plan::Run(..) | Plan::Closed(_))
    }
}

/// How [`LexEntry::build`] computes the entry of lexer state `s` (see
/// there): by the string-body index where it applies, else by the word
/// index ([`word_plan`], remembered per state and allowed terminals in
/// `memo`), else by a walk of the trie.
#[allow(clippy::too_many_arguments)]
fn choose_plan<'a>(
    lexer: &Dfa,
    body: Option<&'a BodyIndex>,
    words: Option<&'a WordIndex>,
    memo: Option<&BodyMemo>,
    states: &mut WalkStates,
    s: u32,
    in_progress: bool,
    allowed: &[u64],
) -> Plan<'a> {
    let plan = body_plan(lexer, body, memo, states, s, in_progress, allowed);
    let (Plan::Walk, Some(ix)) = (&plan, words) else { return plan };
    // Answers per state under these terminals, kept in the grammar's memo
    // (one lock for them all).
    let mut fresh = BodyFacts::default();
    let mut guard = memo.map(BodyMemo::inner);
    let BodyFacts { words: known, alike, .. } = match guard.as_mut() {
        Some(m) => facts_under(&mut m.by_allowed, allowed),
        None => &mut fresh,
    };
    // The body plan may have cut the budget for alike states short.
    states.equiv_budget = MAX_EQUIV_PAIRS;
    let mut ask = |q: u32| known.entry(q).or_insert_with(|| word_plan(lexer, ix, q, allowed, states, alike)).clone();
    let mut parts = Vec::new();
    if let Some(shape) = ask(s) {
        let w = ix.words(shape.alphabet);
        if let Some(prefix) = w.prefix(0) {
            parts.push(WordPart {
                words: w,
                prefix,
                from: s,
                to: shape.to,
                keywords: shape.keywords,
            });
        }
    }
    // Prefix bytes (a space before a word): the same question from the
    // state after the byte.
    for &(node, b) in ix.prefix_nodes() {
        // A byte that starts a word of the root's part is that part's.
        if parts.first().is_some_and(|p: &WordPart| p.prefix.node == 0 && p.words.is_first_lead(b)) {
            continue;
        }
        let sp = lexer.next(s, b);
        if sp == DEAD_STATE || !intersects(lexer.reach(sp), allowed) {
            continue;
        }
        if let Some(shape) = ask(sp) {
            let w = ix.words(shape.alphabet);
            if let Some(prefix) = w.prefix(node) {
                parts.push(WordPart {
                    words: w,
                    prefix,
                    from: sp,
                    to: shape.to,
                    keywords: shape.keywords,
                });
            }
        }
    }
    if parts.is_empty() {
        Plan::Walk
    } else {
        Plan::Words(parts)
    }
}

/// One part of a [`Plan::Words`]: the tokens of a prefix (or none) and a
/// word, whose first character leads lexer state `from` (after the prefix)
/// to `to`, and every character `to` back to itself; or, with `keywords`,
/// through those few states first ([`keyword_states`]).
struct WordPart<'a> {
    words: &'a Words,
    prefix: &'a word::Prefix,
    from: u32,
    to: u32,
    keywords: Option<std::sync::Arc<[u32]>>,
}

/// [`choose_plan`] by the string-body index alone.
fn body_plan<'a>(
    lexer: &Dfa,
    body: Option<&'a BodyIndex>,
    memo: Option<&BodyMemo>,
    states: &mut WalkStates,
    s: u32,
    in_progress: bool,
    allowed: &[u64],
) -> Plan<'a> {
    match body {
        Some(ix) if in_progress => {
            let mut fresh = BodyMemoInner::default();
            let mut memo = memo.map(BodyMemo::inner);
            let BodyMemoInner { by_allowed, succ, reach, .. } = match memo.as_mut() {
                Some(m) => &mut **m,
                None => &mut fresh,
            };
            let facts = facts_under(by_allowed, allowed);
            // Where every body string is known to keep the lexeme going
            // (found out once per state, below, where characters part
            // ways), a run is worth only a short search for alike states:
            // the closed plan is the fallback, not a walk of the whole trie.
            states.horizon = ix.horizon();
            let known_closed = reach.get(&s).is_some_and(|r| r.as_ref().is_some_and(|r| r.closed_under(allowed)));
            if known_closed {
                states.equiv_budget = MAX_EQUIV_PAIRS_IF_CLOSED;
            }
            match states.body_run(lexer, s, allowed, facts) {
                Ok(run) => Plan::Run(ix, run),
                Err(Stop::Parted) if known_closed || facts.closed.contains(&s) => Plan::Closed(ix),
                Err(Stop::Parted) if states.body_reach(lexer, s, succ, reach).is_some_and(|r| r.closed_under(allowed)) => Plan::Closed(ix),
                // Met by an exploration that failed: likely to fail
                // again (only the cost of trying is at stake).
                Err(Stop::Parted) if facts.tried.contains(&s) => Plan::Walk,
                Err(Stop::Parted) => match states.body_closed(lexer, s, allowed, succ) {
                    Ok(states) => {
                        facts.closed.extend(states);
                        Plan::Closed(ix)
                    }
                    Err(states) => {
                        facts.tried.extend(states);
                        Plan::Walk
                    }
                },
                Err(Stop::Other) => Plan::Walk,
            }
        }
        _ => Plan::Walk,
    }
}

/// One [`LexEntry::build`]: what it has found so far, and the state of
/// the walk at each depth of the trie path it is on.
struct LexWalk<'a> {
    trie: &'a TokTrie,
    lexer: &'a Dfa,
    below: &'a SubtreeBytes,
    allowed: &'a [u64],
    memo: WalkStates,
    /// The grammar's memo of lexer-state facts ([`WalkStates::accepts_below`]).
    shared: Option<&'a BodyMemo>,
    /// Lexer state after the path's bytes, by depth (the caller sets the
    /// one above where a walk starts).
    states: Vec<u32>,
    inner: Box<[u32]>,
    boundaries: Vec<(u32, u32)>,
}

impl LexWalk<'_> {
    /// Below node `n` (lexer state `q`; `first`: no word character read
    /// yet), the nodes where words are in keyword states `ks`: the tokens
    /// that leave a word there, walked from `q`, and `n` a boundary where
    /// the lexeme may end; words that reach the word's state (any state
    /// outside `ks`, [`keyword_states`]) give their subtree's node range to
    /// `regions`, in preorder.
    fn keyword_walk(&mut self, w: &Words, n: usize, q: u32, first: bool, ks: &[u32], regions: &mut Vec<(u32, u32)>) {
        let (trie, lexer, allowed) = (self.trie, self.lexer, self.allowed);
        for c in trie.children(n) {
            let b = trie.node_byte(c);
            let word = if first { w.is_first_lead(b) } else { w.is_lead(b) };
            if !word {
                // Right below the prefix (or the root) the caller walks it.
                if !first {
                    if self.memo.status(lexer, q, allowed) & ENDS != 0 {
                        self.boundaries.push((n as u32, q));
                    }
                    self.states[trie.node_depth(c) - 1] = q;
                    self.walk(c, trie.subtree_end(c));
                }
                continue;
            }
            let q2 = lexer.next(q, b);
            if ks.binary_search(&q2).is_ok() {
                self.keyword_walk(w, c, q2, false, ks, regions);
            } else {
                regions.push((c as u32, trie.subtree_end(c) as u32));
            }
        }
    }

    /// Walk the nodes `lo..hi` (whole subtrees in preorder) from the state
    /// `states` holds at the depth above `lo`, visiting every accepted node
    /// (not only token ends) to find boundaries.
    fn walk(&mut self, lo: usize, hi: usize) {
        let (trie, lexer, allowed, below, shared) = (self.trie, self.lexer, self.allowed, self.below, self.shared);
        // Locals, not fields, in the loop: the compiler then keeps them in
        // registers (a field behind `&mut self` may alias the bit sets).
        let memo = &mut self.memo;
        let states = &mut self.states[..];
        let inner = &mut self.inner[..];
        let boundaries = &mut self.boundaries;
        // Sliced to the walk's end: `nodes[i]` for `i < nodes.len()` then
        // needs no check.
        let nodes = &trie.nodes()[..hi];
        // Every token of the trie is below its vocabulary's size.
        assert!(trie.vocab_size() <= inner.len() * 32, "mask shorter than the vocabulary");
        // One state per depth of the trie (`states` is made that long), and
        // the walk starts below the root (the only node of depth 0).
        assert!(states.len() > trie.max_depth() && lo >= 1);
        let mut i = lo;
        while i < nodes.len() {
            let node = nodes[i];
            let d = node.depth as usize;
            // SAFETY: `1 <= d <= max_depth < states.len()` (asserted above).
            debug_assert!(d >= 1);
            let ls = lexer.next(unsafe { *states.get_unchecked(d - 1) }, node.byte);
            let status = memo.status(lexer, ls, allowed);
            if status & LIVE == 0 {
                i = node.subtree_end as usize;
                continue;
            }
            // SAFETY: trie ids are below `vocab_size <= inner.len() * 32`
            // (asserted above).
            unsafe { set_bits_unchecked(inner, trie.node_tokens(i)) };
            let end = node.subtree_end as usize;
            if end == i + 1 {
                // A leaf (most nodes): no child to end the lexeme before.
                i += 1;
                continue;
            }
            // SAFETY: as above.
            unsafe { *states.get_unchecked_mut(d) = ls };
            if memo.accepts_below(lexer, ls, allowed, below, i, end - i, shared) {
                // Every node below extends the lexeme, and none may end
                // it: all its tokens are inside, and node `i` is no
                // boundary (none of its children ends).
                // SAFETY: as for the node's own tokens above.
                unsafe { set_bits_unchecked(inner, trie.subtree_tokens(i)) };
                i = end;
                continue;
            }
            if status & ENDS != 0 {
                boundaries.push((i as u32, ls));
            }
            i += 1;
        }
    }
}

/// Why [`WalkStates::body_run`] found no run.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// Body characters lead to states that do not walk alike.
    Parted,
    /// Some lead out of the lexeme, or to where it must end.
    Other,
}

/// What lexer-entry builds of one grammar learn about how body characters
/// move its lexer, by allowed terminals, for the next build: every token
/// inside a string or key starts a build from another state of the same
/// run or set.
#[derive(Debug, Default)]
pub struct BodyMemo(std::sync::Mutex<BodyMemoInner>);

#[derive(Debug, Default)]
struct BodyMemoInner {
    by_allowed: FxMap<Vec<u64>, BodyFacts>,
    /// Per lexer state, whatever the allowed terminals: the states body
    /// characters pass through and (`true`) end in, each once
    /// ([`WalkStates::body_closed`]).
    succ: FxMap<u32, Box<[(u32, bool)]>>,
    /// Per lexer state, whatever the allowed terminals: what body strings
    /// from it meet ([`WalkStates::body_reach`]); `None` where that says
    /// nothing (some body string dies) or was too large to find out.
    reach: FxMap<u32, Option<std::sync::Arc<BodyReach>>>,
    /// Per lexer state, whatever the allowed terminals: the bytes that lead
    /// straight back to it ([`SubtreeFacts::loop_bytes`] of a live state).
    loop_bytes: FxMap<u32, [u64; 4]>,
    /// Per (lexer state, allowed terminals it can still reach):
    /// [`SubtreeFacts::loop_chars`] and [`WalkStates::runs`], where found.
    chars: FxMap<(u32, Box<[u64]>), CharFacts>,
}

/// A lexer state's runs ([`WalkStates::runs`]): (first bytes, length).
type Runs = std::sync::Arc<[([u64; 4], u32)]>;

/// What [`BodyMemoInner::chars`] keeps of a state.
#[derive(Debug, Default, Clone)]
struct CharFacts {
    loop_chars: Option<[u64; 4]>,
    runs: Option<Runs>,
}

/// The most entries [`BodyMemoInner::loop_bytes`] and
/// [`BodyMemoInner::chars`] keep each (an entry of `chars` holds a set of
/// terminals: a few kB at worst in a schema's large lexer).
const MAX_SHARED_STATE_FACTS: usize = 1 << 12;

impl BodyMemo {
    /// The key of lexer state `s` under `allowed` in
    /// [`BodyMemoInner::chars`]: a state's character facts ask only about
    /// states it leads to, whose reachable terminals are among its own, so
    /// only the allowed terminals `s` can reach matter (every value
    /// position of a JSON grammar meets the same string body).
    fn chars_key(lexer: &Dfa, s: u32, allowed: &[u64]) -> (u32, Box<[u64]>) {
        (s, lexer.reach(s).iter().zip(allowed).map(|(r, a)| r & a).collect())
    }

    /// The memo, whatever a panic elsewhere left it in (it holds only
    /// answers, each written whole).
    fn inner(&self) -> std::sync::MutexGuard<'_, BodyMemoInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn loop_bytes(&self, s: u32) -> Option<[u64; 4]> {
        self.inner().loop_bytes.get(&s).copied()
    }

    fn keep_loop_bytes(&self, s: u32, bytes: [u64; 4]) {
        let mut m = self.inner();
        if m.loop_bytes.len() < MAX_SHARED_STATE_FACTS {
            m.loop_bytes.insert(s, bytes);
        }
    }

    fn char_facts(&self, key: &(u32, Box<[u64]>)) -> CharFacts {
        self.inner().chars.get(key).cloned().unwrap_or_default()
    }

    fn keep_char_facts(&self, key: (u32, Box<[u64]>), f: impl FnOnce(&mut CharFacts)) {
        let mut m = self.inner();
        if m.chars.len() < MAX_SHARED_STATE_FACTS || m.chars.contains_key(&key) {
            f(m.chars.entry(key).or_default());
        }
    }
}

/// What every string of body characters from a lexer state meets (the
/// states [`WalkStates::body_closed`] checks), whatever the allowed
/// terminals: the terminals each state met can still reach, intersected,
/// and those any state met matches, united.
///
/// Why: `body_closed` answers per allowed set, and a key of an object
/// that allows other keys beside its listed ones starts from the same
/// lexer state at every key with another allowed set (the listed keys not
/// yet written). In the one lexer over all of a schema's terminals that
/// state's body strings meet thousands of states (every key literal and
/// value string beside the free key), more than `body_closed` may
/// explore per mask. Explored once per state, this answers every allowed
/// set that shares a terminal all those states reach (the free key) and
/// none they match.
#[derive(Debug)]
struct BodyReach {
    reach_all: Box<[u64]>,
    match_any: Box<[u64]>,
}

impl BodyReach {
    /// Whether every body string keeps the lexeme going under `allowed`
    /// without ending it (sufficient for [`WalkStates::body_closed`]'s
    /// `Ok`, not necessary).
    fn closed_under(&self, allowed: &[u64]) -> bool {
        intersects(&self.reach_all, allowed) && !intersects(&self.match_any, allowed)
    }
}

/// The most lexer states one [`WalkStates::body_reach`] explores. Paid
/// once per state for every allowed set, so well above
/// [`MAX_BODY_STATES`].
const MAX_BODY_REACH_STATES: usize = 1 << 15;

#[derive(Debug, Default)]
struct BodyFacts {
    /// [`WalkStates::body_step`] by state.
    steps: FxMap<u32, Result<u32, Stop>>,
    /// States from which every string of body characters keeps the lexeme
    /// going ([`WalkStates::body_closed`]), and states met by explorations
    /// that found otherwise or gave up.
    closed: crate::fxhash::FxSet<u32>,
    tried: crate::fxhash::FxSet<u32>,
    /// [`WalkStates::equiv`]'s answers.
    alike: FxMap<(u32, u32), bool>,
    /// [`word_plan`] by state.
    words: FxMap<u32, Option<WordShape>>,
}

/// The facts of `by_allowed` under `allowed`, made on first use (the key
/// copied only then: most builds find it).
fn facts_under<'m>(by_allowed: &'m mut FxMap<Vec<u64>, BodyFacts>, allowed: &[u64]) -> &'m mut BodyFacts {
    if !by_allowed.contains_key(allowed) {
        by_allowed.insert(allowed.to_vec(), BodyFacts::default());
    }
    by_allowed.get_mut(allowed).expect("inserted above")
}

/// How a [`LexEntry::build`] goes about it.
enum Plan<'a> {
    /// Body characters move the lexer along one run
    /// ([`WalkStates::body_run`]): body tokens from the index, entries
    /// grouped by the length of their body prefix.
    Run(&'a BodyIndex, BodyRun),
    /// Body characters keep the lexeme going but part ways
    /// ([`WalkStates::body_closed`]): every body token, and the paths to
    /// the entries.
    Closed(&'a BodyIndex),
    /// Every word character leads into one state and back to it
    /// ([`word_plan`]: an identifier), from the state itself or after a
    /// prefix byte, per part: every word token of each, the root's other
    /// children, and the word entries.
    Words(Vec<WordPart<'a>>),
    /// The whole trie.
    Walk,
}

/// How every body character moves the lexer on from a state
/// ([`WalkStates::body_run`]).
struct BodyRun {
    /// The state, then the state after each body character in turn.
    states: Vec<u32>,
    end: RunEnd,
}

enum RunEnd {
    /// No body character keeps the lexeme alive after the last state.
    Dead,
    /// Nor after the last state, where the lexeme may end (a string's first
    /// chunk, longer strings going on in the next lexeme): every node of
    /// that many whole characters with children is a boundary.
    Ends,
    /// After the last state, every body character leads back to
    /// `states[k]`.
    Cycle(usize),
    /// The run goes on past [`BodyIndex::horizon`] characters (a string
    /// counted in the lexer, far from its `maxLength`): no token reaches
    /// where it goes.
    Long,
}

impl BodyRun {
    /// The state after `p` body characters, if the lexeme lives through
    /// them (and, with `partial`, through the start of one more).
    fn state_at(&self, p: usize, partial: bool) -> Option<u32> {
        let n = self.states.len() - 1;
        match self.end {
            RunEnd::Dead | RunEnd::Ends | RunEnd::Long => (p < n || (p == n && !partial)).then(|| self.states[p]),
            RunEnd::Cycle(_) if p <= n => Some(self.states[p]),
            RunEnd::Cycle(k) => Some(self.states[k + (p - k) % (n + 1 - k)]),
        }
    }
}

/// [`WalkStates::body_successors`]' buffers, kept over one exploration.
#[derive(Default)]
struct SuccScratch {
    marks: crate::marks::Marks,
    out: Vec<(u32, bool)>,
}

/// The most lexer states [`WalkStates::body_closed`] explores.
const MAX_BODY_STATES: usize = 2048;

/// The most state pairs [`WalkStates::equiv`] compares before it gives up.
const MAX_EQUIV_PAIRS: usize = 512;

/// [`MAX_EQUIV_PAIRS`] where [`BodyReach`] already shows the lexeme
/// closed: a key among hundreds of literals compared each pair of body
/// states up to the limit, 90% of its mask, to find none alike.
const MAX_EQUIV_PAIRS_IF_CLOSED: usize = 32;

/// What one [`LexEntry::build`] walk has learned about the lexer states it
/// met, dense by state so that a trie node costs array lookups, not hash
/// lookups or terminal-set intersections.
struct WalkStates {
    /// Per lexer state: [`KNOWN`] | [`LIVE`] | [`ENDS`], or 0.
    status: Vec<u8>,
    /// Per lexer state: index into `subtree` plus one, or 0.
    slot: Vec<u32>,
    subtree: Vec<SubtreeFacts>,
    /// One byte of each lexer class.
    class_reps: Vec<u8>,
    /// First bytes of body characters, one per group that leads alike
    /// ([`WalkStates::body_starts`]).
    body_starts: Vec<(u8, crate::toktrie::Utf8State)>,
    /// The most pairs one [`WalkStates::equiv`] compares.
    equiv_budget: usize,
    /// [`BodyIndex::horizon`]: a run that lives this long is
    /// [`RunEnd::Long`].
    horizon: usize,
}

/// What decides whether a lexer state accepts a whole trie subtree.
struct SubtreeFacts {
    /// Bytes that lead straight back to the state.
    loop_bytes: [u64; 4],
    /// First bytes of the characters that lead back to it ([`char_loop`]),
    /// when first needed.
    loop_chars: Option<[u64; 4]>,
    /// The state's step of a run ([`WalkStates::run_step`]) and its runs
    /// ([`WalkStates::runs`]), when first needed.
    step: Option<Option<([u64; 4], u32)>>,
    runs: Option<Runs>,
    /// Whether `loop_chars` and `runs` were looked up in the grammar's
    /// [`BodyMemo`].
    shared: bool,
}

impl WalkStates {
    fn new(states: usize) -> Self {
        WalkStates {
            status: vec![0; states],
            slot: vec![0; states],
            subtree: Vec::new(),
            class_reps: Vec::new(),
            body_starts: Vec::new(),
            equiv_budget: MAX_EQUIV_PAIRS,
            horizon: body::MAX_COUNTED + 1,
        }
    }

    #[inline(always)]
    fn status(&mut self, lexer: &Dfa, t: u32, allowed: &[u64]) -> u8 {
        let st = self.status[t as usize];
        if st != 0 {
            return st;
        }
        let mut st = KNOWN;
        if t != DEAD_STATE && intersects(lexer.reach(t), allowed) {
            st |= LIVE;
            if can_end(lexer, t, allowed) {
                st |= ENDS;
            }
        }
        self.status[t as usize] = st;
        st
    }

    /// The index of lexer state `s`'s [`SubtreeFacts`], made on first use
    /// (its loop bytes from `shared`, the grammar's memo, where known:
    /// those of a live state do not depend on the allowed terminals).
    fn facts(&mut self, lexer: &Dfa, s: u32, allowed: &[u64], shared: Option<&BodyMemo>) -> usize {
        let k = self.slot[s as usize];
        if k != 0 {
            return k as usize - 1;
        }
        let loop_bytes = if self.status(lexer, s, allowed) & LIVE == 0 {
            [0u64; 4]
        } else if let Some(b) = shared.and_then(|m| m.loop_bytes(s)) {
            b
        } else {
            let mut loop_bytes = [0u64; 4];
            for (rep, bytes) in lexer.class_bytes() {
                if lexer.next(s, *rep) == s {
                    for (w, b) in loop_bytes.iter_mut().zip(bytes) {
                        *w |= b;
                    }
                }
            }
            if let Some(m) = shared {
                m.keep_loop_bytes(s, loop_bytes);
            }
            loop_bytes
        };
        self.subtree.push(SubtreeFacts {
            loop_bytes,
            loop_chars: None,
            step: None,
            runs: None,
            shared: false,
        });
        self.slot[s as usize] = self.subtree.len() as u32;
        self.subtree.len() - 1
    }

    /// Whether, from lexer state `s` at trie node `i` (whose subtree holds
    /// `size` nodes), every node below extends the lexeme and none is a
    /// boundary. Three ways, cheapest first: every byte below loops back
    /// to `s` (a string body over ASCII); node `i` spells whole characters
    /// and every character met loops back (a string body, any script); or
    /// every character met moves `s` along one run no shorter than the
    /// subtree is high (a string body of bounded length, where each
    /// character moves the count on).
    ///
    /// What is learned of `s`'s characters is kept in `shared` (the
    /// grammar's memo) for later walks: the first masks of a JSON document
    /// each build an entry for another allowed set, and each met the same
    /// string and number states afresh (a quarter of SynCode JSON's
    /// slowest masks).
    #[allow(clippy::too_many_arguments)]
    fn accepts_below(
        &mut self,
        lexer: &Dfa,
        s: u32,
        allowed: &[u64],
        below: &SubtreeBytes,
        i: usize,
        size: usize,
        shared: Option<&BodyMemo>,
    ) -> bool {
        let Some(bytes) = below.get(i) else { return false };
        let k = self.facts(lexer, s, allowed, shared);
        if subset(bytes, &self.subtree[k].loop_bytes) {
            return true;
        }
        if !below.whole_chars_below(i) {
            return false;
        }
        let leads = lead_bytes(bytes);
        let key = match shared {
            Some(m) if !self.subtree[k].shared => {
                let key = BodyMemo::chars_key(lexer, s, allowed);
                let known = m.char_facts(&key);
                let f = &mut self.subtree[k];
                f.shared = true;
                f.loop_chars = f.loop_chars.or(known.loop_chars);
                if f.runs.is_none() {
                    f.runs = known.runs;
                }
                Some(key)
            }
            _ => None,
        };
        let chars = match self.subtree[k].loop_chars {
            Some(c) => c,
            None => {
                let c = char_loop(lexer, s, allowed);
                self.subtree[k].loop_chars = Some(c);
                if let Some(m) = shared {
                    let key = key.clone().unwrap_or_else(|| BodyMemo::chars_key(lexer, s, allowed));
                    m.keep_char_facts(key, |f| f.loop_chars = Some(c));
                }
                c
            }
        };
        if subset(&leads, &chars) {
            return true;
        }
        match below.char_height(i) {
            Some(h) if h as u32 <= MAX_RUN && size >= MIN_RUN_SUBTREE => {
                let known = self.subtree[k].runs.is_some();
                let runs = self.runs(lexer, s, allowed, shared);
                if let (Some(m), false) = (shared, known) {
                    let key = key.unwrap_or_else(|| BodyMemo::chars_key(lexer, s, allowed));
                    m.keep_char_facts(key, |f| f.runs = Some(runs.clone()));
                }
                runs.iter().any(|(set, n)| *n >= h as u32 && subset(&leads, set))
            }
            _ => false,
        }
    }

    /// The first bytes of body characters ([`body::starts_body_char`])
    /// with the decoder state after each, one per group of bytes of one
    /// lexer class and decoder state ([`char_starts`]): characters that
    /// start with bytes of one group lead alike.
    fn body_starts(&mut self, lexer: &Dfa) -> &[(u8, crate::toktrie::Utf8State)] {
        if self.body_starts.is_empty() {
            let mut skipped = true; // the last byte was not kept
            for (b0, u, fresh) in char_starts(lexer) {
                if !body::starts_body_char(b0) {
                    skipped = true;
                    continue;
                }
                if fresh || skipped {
                    self.body_starts.push((b0, u));
                }
                skipped = false;
            }
        }
        &self.body_starts
    }

    /// Where every body character ([`body::starts_body_char`]) leads from
    /// `q`, if all lead to one state through states that extend the
    /// lexeme and cannot end it, that one included; or to states that
    /// walk alike ([`WalkStates::equiv`]: a value string's `T` that also
    /// starts the key literal `"T"` moves the value alike), then the first.
    fn body_step(&mut self, lexer: &Dfa, q: u32, allowed: &[u64], alike_memo: &mut FxMap<(u32, u32), bool>) -> Result<u32, Stop> {
        let mut dest = None;
        for k in 0..self.body_starts(lexer).len() {
            let (b0, u) = self.body_starts[k];
            let mut parted = false;
            let judge = |a| match a {
                Ask::Pass(x) => self.status(lexer, x, allowed) == KNOWN | LIVE,
                // A run may end where a lexeme ends ([`RunEnd::Ends`]).
                Ask::End(x) => self.status(lexer, x, allowed) & LIVE != 0,
                Ask::Alike(x, y) => {
                    let alike = self.equiv(lexer, x, y, allowed, alike_memo);
                    parted |= !alike;
                    alike
                }
            };
            match char_dest(lexer, q, b0, u, dest, judge) {
                Some(d) => dest = Some(d),
                None if parted => return Err(Stop::Parted),
                None => return Err(Stop::Other),
            }
        }
        dest.ok_or(Stop::Other)
    }

    /// Whether lexer states `a` and `b` walk alike under `allowed`: every
    /// byte string leads both to states that extend the lexeme or not
    /// alike and that match the same allowed terminals, which is all a
    /// walk, a boundary's scan and its continuation ask of a state. States
    /// that differ only in terminals `allowed` leaves out (a key literal
    /// beside a value string) are alike. `false` past
    /// [`WalkStates::equiv_budget`] pairs.
    fn equiv(&mut self, lexer: &Dfa, a: u32, b: u32, allowed: &[u64], memo: &mut FxMap<(u32, u32), bool>) -> bool {
        let key = (a.min(b), a.max(b));
        if let Some(&r) = memo.get(&key) {
            return r;
        }
        if lexer.alike_by_subsets(a, b, allowed) {
            memo.insert(key, true);
            return true;
        }
        if self.class_reps.is_empty() {
            let mut seen = vec![false; lexer.num_classes()];
            for x in 0..=255u8 {
                let c = lexer.byte_class(x);
                if !seen[c] {
                    seen[c] = true;
                    self.class_reps.push(x);
                }
            }
        }
        let mut seen: crate::fxhash::FxSet<(u32, u32)> = Default::default();
        let mut stack = vec![key];
        seen.insert(key);
        let mut alike = true;
        let mut gave_up = false;
        'pairs: while let Some((x, y)) = stack.pop() {
            let (sx, sy) = (self.status(lexer, x, allowed), self.status(lexer, y, allowed));
            if sx != sy
                || (sx & ENDS != 0
                    && lexer
                        .matches(x)
                        .iter()
                        .zip(lexer.matches(y))
                        .zip(allowed)
                        .any(|((m, n), w)| (m ^ n) & w != 0))
            {
                alike = false;
                break;
            }
            if sx & LIVE == 0 {
                continue;
            }
            for &c in &self.class_reps {
                let (nx, ny) = (lexer.next(x, c), lexer.next(y, c));
                if nx != ny && seen.insert((nx.min(ny), nx.max(ny))) {
                    if seen.len() > self.equiv_budget {
                        alike = false;
                        gave_up = true;
                        break 'pairs;
                    }
                    stack.push((nx.min(ny), nx.max(ny)));
                }
            }
        }
        // A shorter search's giving up is not kept: a later one with the
        // full budget may find the pair alike.
        if !gave_up || self.equiv_budget == MAX_EQUIV_PAIRS {
            memo.insert(key, alike);
        }
        alike
    }

    /// Whether every string of body characters from `s` (the last one
    /// perhaps cut short) leads only through states that extend the
    /// lexeme and cannot end it, whichever states those are: a key beside
    /// key literals, where any other key is allowed too. Then every body
    /// token is inside the lexeme, and the same holds from every state
    /// met, which are returned. Otherwise, or past [`MAX_BODY_STATES`]
    /// states, the states met before it gave up.
    fn body_closed(
        &mut self,
        lexer: &Dfa,
        s: u32,
        allowed: &[u64],
        succ: &mut FxMap<u32, Box<[(u32, bool)]>>,
    ) -> Result<crate::fxhash::FxSet<u32>, crate::fxhash::FxSet<u32>> {
        let mut seen: crate::fxhash::FxSet<u32> = Default::default();
        seen.insert(s);
        let mut stack = vec![s];
        let mut scratch = SuccScratch::default();
        while let Some(q) = stack.pop() {
            for &(t, end) in self.body_successors(lexer, q, succ, &mut scratch) {
                if self.status(lexer, t, allowed) != KNOWN | LIVE {
                    return Err(seen);
                }
                if end && seen.insert(t) {
                    if seen.len() > MAX_BODY_STATES {
                        return Err(seen);
                    }
                    stack.push(t);
                }
            }
        }
        Ok(seen)
    }

    /// The states body characters lead `q` through (`false`) and to
    /// (`true`), each once, memoised in `succ`.
    fn body_successors<'s>(
        &mut self,
        lexer: &Dfa,
        q: u32,
        succ: &'s mut FxMap<u32, Box<[(u32, bool)]>>,
        scratch: &mut SuccScratch,
    ) -> &'s [(u32, bool)] {
        if let std::collections::hash_map::Entry::Vacant(v) = succ.entry(q) {
            // Deduplicated by dense marks: a key beside a few hundred
            // literal states meets ~25,000 (state, end) pairs, which a hash
            // set made a third of that mask.
            let SuccScratch { marks, out } = scratch;
            marks.reset(2 * lexer.num_states());
            out.clear();
            for k in 0..self.body_starts(lexer).len() {
                let (b0, u) = self.body_starts[k];
                char_walk(lexer, q, b0, u, |x, end| {
                    if marks.insert(2 * x as usize + end as usize) {
                        out.push((x, end));
                    }
                    true
                });
            }
            v.insert(out.as_slice().into());
        }
        &succ[&q]
    }

    /// [`BodyReach`] of `s`, explored once per state and lent to every
    /// state met on the way (their body strings are among `s`'s, so what
    /// holds of all of `s`'s holds of theirs).
    fn body_reach(
        &mut self,
        lexer: &Dfa,
        s: u32,
        succ: &mut FxMap<u32, Box<[(u32, bool)]>>,
        memo: &mut FxMap<u32, Option<std::sync::Arc<BodyReach>>>,
    ) -> Option<std::sync::Arc<BodyReach>> {
        if let Some(r) = memo.get(&s) {
            return r.clone();
        }
        let mut reach_all = lexer.reach(s).to_vec();
        let mut match_any = vec![0u64; reach_all.len()];
        let mut seen = crate::marks::Marks::default();
        seen.reset(lexer.num_states());
        seen.insert(s as usize);
        let mut met = vec![s];
        let mut stack = vec![s];
        let mut scratch = SuccScratch::default();
        let found = 'explore: {
            while let Some(q) = stack.pop() {
                for &(t, end) in self.body_successors(lexer, q, succ, &mut scratch) {
                    for ((r, m), (rt, mt)) in reach_all.iter_mut().zip(&mut match_any).zip(lexer.reach(t).iter().zip(lexer.matches(t))) {
                        *r &= rt;
                        *m |= mt;
                    }
                    if t == DEAD_STATE || reach_all.iter().all(|&w| w == 0) {
                        break 'explore false; // some body string dies
                    }
                    if end && seen.insert(t as usize) {
                        if met.len() >= MAX_BODY_REACH_STATES {
                            break 'explore false;
                        }
                        met.push(t);
                        stack.push(t);
                    }
                }
            }
            true
        };
        if !found {
            memo.insert(s, None);
            return None;
        }
        let r = std::sync::Arc::new(BodyReach {
            reach_all: reach_all.into(),
            match_any: match_any.into(),
        });
        for q in met {
            memo.entry(q).or_insert_with(|| Some(r.clone()));
        }
        Some(r)
    }

    /// No body character keeps the lexeme going from `q`: the first byte
    /// of each leads to a state that does not extend it (one byte of each
    /// group of [`WalkStates::body_starts`] stands for its lexer class).
    fn body_dead(&mut self, lexer: &Dfa, q: u32, allowed: &[u64]) -> bool {
        (0..self.body_starts(lexer).len()).all(|k| {
            let b = self.body_starts[k].0;
            self.status(lexer, lexer.next(q, b), allowed) & LIVE == 0
        })
    }

    /// The states body characters move `s` through, if they all move it
    /// alike: on until no body character keeps the lexeme alive
    /// ([`RunEnd::Dead`]: a string of bounded length), back to a state
    /// met before ([`RunEnd::Cycle`]: a free string, or one with only a
    /// minimum length), or past the longest token ([`RunEnd::Long`]: a
    /// long string counted in the lexer). The lexeme may end on the way
    /// where body characters also go on (the rest of a line). [`Stop::Parted`]
    /// where characters part ways (a key literal's next letter),
    /// [`Stop::Other`] where some leave the lexeme or must end it.
    fn body_run(&mut self, lexer: &Dfa, s: u32, allowed: &[u64], facts: &mut BodyFacts) -> Result<BodyRun, Stop> {
        let mut states = vec![s];
        loop {
            let q = *states.last().unwrap_or(&s);
            let step = match facts.steps.get(&q) {
                Some(&step) => step,
                None => {
                    let step = self.body_step(lexer, q, allowed, &mut facts.alike);
                    facts.steps.insert(q, step);
                    step
                }
            };
            match step {
                Ok(t) if self.status(lexer, t, allowed) & ENDS != 0 && self.body_dead(lexer, t, allowed) => {
                    // The lexeme may end after these characters and none
                    // goes on: the run stops there (a string's first
                    // chunk).
                    states.push(t);
                    return Ok(BodyRun { states, end: RunEnd::Ends });
                }
                // Where the lexeme may end but body characters go on (the
                // rest of a line, `/./+`), the run goes on too: maximal
                // munch reads every body character as extending it, so it
                // ends only before an entry byte that does not, and
                // [`LexEntry::build_planned`] finds those ends at the
                // entries' parents.
                Ok(t) => {
                    // Back to a state met before: a cycle.
                    if let Some(k) = states.iter().position(|&x| x == t) {
                        return Ok(BodyRun {
                            states,
                            end: RunEnd::Cycle(k),
                        });
                    }
                    states.push(t);
                    if states.len() == body::MAX_COUNTED + 2 {
                        // Long enough to be a cycle of states that walk
                        // alike, if it is one (asked once: the question
                        // costs the run's length).
                        if let Some(run) = self.alike_cycle(lexer, states.clone(), allowed, &mut facts.alike) {
                            return Ok(run);
                        }
                    }
                    if states.len() > self.horizon {
                        return Ok(BodyRun { states, end: RunEnd::Long });
                    }
                }
                Err(why) => {
                    if states.len() > 1 {
                        if let Some(run) = self.alike_cycle(lexer, states.clone(), allowed, &mut facts.alike) {
                            return Ok(run);
                        }
                    }
                    return if self.body_dead(lexer, q, allowed) {
                        Ok(BodyRun { states, end: RunEnd::Dead })
                    } else {
                        Err(why)
                    };
                }
            }
        }
    }

    /// The run `states` (each the body step of the one before) as a cycle
    /// at its first state that walks like the next ([`WalkStates::equiv`]:
    /// a free key string whose lexer state also counts a value string's
    /// characters), cut after that state; `None` if there is none.
    ///
    /// Why after the run, not at each step: a string of bounded length
    /// counts its characters, and its consecutive states differ only in
    /// how many remain, which `equiv` finds out at the count's end. Asked
    /// at every step (a 32-character head beside a 2,000-state lexer),
    /// that was a quadratic 14 M instructions for one mask. Two states that
    /// walk alike make every later pair alike too, so a run with such a
    /// pair never ends (the lexeme could always go on): only runs that stop
    /// short of an end need the question, and their first alike pair is the
    /// one a check at every step would have found.
    fn alike_cycle(&mut self, lexer: &Dfa, mut states: Vec<u32>, allowed: &[u64], memo: &mut FxMap<(u32, u32), bool>) -> Option<BodyRun> {
        let k = (0..states.len().saturating_sub(1)).find(|&i| self.equiv(lexer, states[i], states[i + 1], allowed, memo))?;
        states.truncate(k + 1);
        Some(BodyRun {
            states,
            end: RunEnd::Cycle(k),
        })
    }

    /// Lexer state `s`'s runs: each a set of characters (by first byte)
    /// and a length, such that any string of that many or fewer of those
    /// characters, the last perhaps cut short, extends the lexeme from `s`
    /// through states that cannot end it. A string body of bounded length
    /// (`maxLength`, `{0,24}`) is a run: every character moves its count
    /// on by one. Each step follows the characters that lead to the most
    /// common next state ([`WalkStates::run_step`]); where a later step
    /// keeps fewer of them, a longer run of those few follows the shorter
    /// run of all (ASCII may go on where other characters have stopped).
    fn runs(&mut self, lexer: &Dfa, s: u32, allowed: &[u64], shared: Option<&BodyMemo>) -> Runs {
        let k = self.facts(lexer, s, allowed, shared);
        if self.subtree[k].runs.is_none() {
            let mut runs: Vec<([u64; 4], u32)> = Vec::new();
            let mut set = [u64::MAX; 4];
            let mut cur = s;
            let mut n = 0;
            while n < MAX_RUN {
                let kc = self.facts(lexer, cur, allowed, shared);
                let step = match self.subtree[kc].step {
                    Some(step) => step,
                    None => {
                        let step = self.run_step(lexer, cur, allowed);
                        self.subtree[kc].step = Some(step);
                        step
                    }
                };
                let Some((bytes, t)) = step else { break };
                let mut kept = set;
                for (w, b) in kept.iter_mut().zip(&bytes) {
                    *w &= b;
                }
                if kept != set {
                    if n > 0 {
                        runs.push((set, n));
                    }
                    if kept == [0; 4] {
                        break;
                    }
                    set = kept;
                }
                n += 1;
                cur = t;
            }
            if n > 0 && set != [0; 4] && runs.last().is_none_or(|r| r.1 < n) {
                runs.push((set, n));
            }
            self.subtree[k].runs = Some(runs.into());
        }
        self.subtree[k].runs.clone().unwrap_or_else(|| Vec::new().into())
    }

    /// One step of a run from `s`: the first bytes of the characters that
    /// lead to its most common next state, and that state, if one of them
    /// qualifies (see [`WalkStates::runs`]).
    fn run_step(&mut self, lexer: &Dfa, s: u32, allowed: &[u64]) -> Option<([u64; 4], u32)> {
        let mut to: Vec<(u32, [u64; 4], u32)> = Vec::new(); // (next state, first bytes, how many)
        for g in lexer.char_start_groups() {
            if let Some(t) = char_dest(lexer, s, g.first, g.utf8, None, exact(|q| self.status(lexer, q, allowed) == KNOWN | LIVE)) {
                let k = match to.iter().position(|e| e.0 == t) {
                    Some(k) => k,
                    None => {
                        to.push((t, [0; 4], 0));
                        to.len() - 1
                    }
                };
                for (w, b) in to[k].1.iter_mut().zip(&g.bytes) {
                    *w |= b;
                }
                to[k].2 += g.count;
            }
        }
        to.iter().max_by_key(|e| e.2).map(|&(t, set, _)| (set, t))
    }
}

/// `a` is a subset of `b` (256-bit byte sets). Word by word, spelled
/// out: the trie walks ask it at most nodes, and the iterator form
/// compiled to twice the instructions in some builds (a branch-free form
/// was as many instructions but slower natively).
#[inline(always)]
fn subset(a: &[u64; 4], b: &[u64; 4]) -> bool {
    a[0] & !b[0] == 0 && a[1] & !b[1] == 0 && a[2] & !b[2] == 0 && a[3] & !b[3] == 0
}

const DEAD_STATE: u32 = crate::regex::DEAD;

/// Bytes 0x80..=0xBF (UTF-8 continuation bytes) as the third word of a
/// 256-bit byte set.
const CONTINUATION_BYTES: u64 = u64::MAX;

/// The bytes of `bytes` (those below a node of whole characters) that
/// start a character: continuation bytes there belong to characters whose
/// lead byte is below too.
fn lead_bytes(bytes: &[u64; 4]) -> [u64; 4] {
    let mut leads = *bytes;
    leads[2] &= !CONTINUATION_BYTES;
    leads
}

/// The bytes that may start a UTF-8 character, with the decoder state
/// after each, and whether it starts a new group: a byte of the previous
/// byte's lexer class with the same decoder state starts characters that
/// lead where that one's do.
fn char_starts(lexer: &Dfa) -> impl Iterator<Item = (u8, crate::toktrie::Utf8State, bool)> + '_ {
    use crate::toktrie::{utf8_step, UTF8_INVALID, UTF8_START};
    let mut last = (usize::MAX, UTF8_INVALID);
    (0..=255u8).filter_map(move |b| {
        let u = utf8_step(UTF8_START, b);
        if u == UTF8_INVALID {
            return None;
        }
        let key = (lexer.byte_class(b), u);
        let fresh = key != last;
        last = key;
        Some((b, u, fresh))
    })
}

/// The continuation bytes that may follow UTF-8 decoder state `u`, one
/// per (lexer byte class, decoder state after it): a byte of the previous
/// byte's class with the same decoder outcome leads where that one did.
fn continuations(lexer: &Dfa, u: crate::toktrie::Utf8State) -> impl Iterator<Item = (u8, crate::toktrie::Utf8State)> + '_ {
    lexer.utf8_continuations(u).iter().copied()
}

/// The first bytes (ASCII bytes and UTF-8 lead bytes) of the characters
/// that lead from lexer state `s` back to `s` through states that extend
/// the lexeme, for every valid continuation of the lead byte: a string
/// body's characters, multi-byte ones included. Each of the walk's
/// per-byte states inside such a character is thereby live, so below a
/// trie node of whole characters ([`SubtreeBytes::whole_chars_below`])
/// whose first bytes all lie in this set every token extends the lexeme.
fn char_loop(lexer: &Dfa, s: u32, allowed: &[u64]) -> [u64; 4] {
    let live = |q: u32| q != DEAD_STATE && intersects(lexer.reach(q), allowed);
    let mut set = [0u64; 4];
    for g in lexer.char_start_groups() {
        if char_dest(lexer, s, g.first, g.utf8, Some(s), exact(live)).is_some() {
            for (w, b) in set.iter_mut().zip(&g.bytes) {
                *w |= b;
            }
        }
    }
    set
}

/// What [`char_dest`] asks its caller about lexer states.
enum Ask {
    /// May a character pass through this state?
    Pass(u32),
    /// May a character end in this state?
    End(u32),
    /// Two characters end in these states: do they end alike?
    Alike(u32, u32),
}

/// A [`char_dest`] judge that passes the states `ok` accepts and counts
/// only equal states alike.
fn exact(mut ok: impl FnMut(u32) -> bool) -> impl FnMut(Ask) -> bool {
    move |a| match a {
        Ask::Pass(q) | Ask::End(q) => ok(q),
        Ask::Alike(x, y) => x == y,
    }
}

/// Where every valid character that starts with byte `b0` (the decoder in
/// state `u` after it) leads from lexer state `s`, if all of them lead to
/// one state (`want`, when given), or to states `judge` finds alike (then
/// the first), and `judge` lets every state on the way pass, that one
/// included. Stops at the first state that fails.
fn char_dest(lexer: &Dfa, s: u32, b0: u8, u: crate::toktrie::Utf8State, want: Option<u32>, mut judge: impl FnMut(Ask) -> bool) -> Option<u32> {
    // A character ends in `q`: one more that must end where all others do.
    fn arrive(q: u32, dest: &mut Option<u32>, judge: &mut impl FnMut(Ask) -> bool) -> bool {
        if !judge(Ask::End(q)) {
            return false;
        }
        match *dest {
            Some(d) => d == q || judge(Ask::Alike(d, q)),
            None => {
                *dest = Some(q);
                true
            }
        }
    }
    let mut dest = want;
    let ok = char_walk(
        lexer,
        s,
        b0,
        u,
        |q, end| if end { arrive(q, &mut dest, &mut judge) } else { judge(Ask::Pass(q)) },
    );
    if ok {
        dest
    } else {
        None
    }
}

/// Follow every valid character that starts with byte `b0` (the decoder
/// in state `u` after it) from lexer state `s`: `visit(state, ends a
/// character)` for each state on the way (once per state and decoder
/// state inside a character), until it says `false` (then `false`).
fn char_walk(lexer: &Dfa, s: u32, b0: u8, u: crate::toktrie::Utf8State, mut visit: impl FnMut(u32, bool) -> bool) -> bool {
    use crate::toktrie::UTF8_START;
    let q = lexer.next(s, b0);
    if u == UTF8_START {
        return visit(q, true); // one byte: no buffers
    }
    if !visit(q, false) {
        return false;
    }
    // The frontiers come from this thread's pool: a mask's plan walks the
    // characters of hundreds of states, and two fresh vectors per
    // multi-byte start were a fifth of its instructions. (A `visit` that
    // walks characters itself finds the pool empty and allocates.)
    let (mut frontier, mut next) = CHAR_WALK_BUFS.with(|c| c.take());
    frontier.clear();
    frontier.push((q, u));
    let mut ok = true;
    'levels: while !frontier.is_empty() {
        next.clear();
        for &(q, u) in &frontier {
            for (b, u2) in continuations(lexer, u) {
                let q2 = lexer.next(q, b);
                if !visit(q2, u2 == UTF8_START) {
                    ok = false;
                    break 'levels;
                }
                if u2 != UTF8_START && !next.contains(&(q2, u2)) {
                    next.push((q2, u2));
                }
            }
        }
        std::mem::swap(&mut frontier, &mut next);
    }
    CHAR_WALK_BUFS.with(|c| c.set((frontier, next)));
    ok
}

/// Frontier buffers of a [`char_walk`], per character byte level.
type CharWalkBufs = (Vec<(u32, crate::toktrie::Utf8State)>, Vec<(u32, crate::toktrie::Utf8State)>);

thread_local! {
    /// [`char_walk`]'s frontier buffers, kept between calls.
    static CHAR_WALK_BUFS: std::cell::Cell<CharWalkBufs> = const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// A [`LexEntry`] keyed by the lexer's walk signature, shared by every
/// grammar over one vocabulary: boundaries name lexer states by their index
/// in the signature.
#[derive(Debug)]
pub struct SharedLexEntry {
    inner: std::sync::Arc<StoredMask>,
    boundaries: Vec<(u32, u32)>,
    run_end: Option<(u32, u32)>,
}

impl SharedLexEntry {
    pub fn bytes(&self) -> usize {
        self.inner.bytes() + self.boundaries.len() * 8
    }
}

/// Marks a walk result that stands for a whole subtree: every token at or
/// below that node is accepted.
const WHOLE: u32 = 1 << 31;

/// Set the bits of the tokens a subtree walk from node `c` accepted
/// (offsets from `c`, some standing for whole subtrees).
fn set_accepted(trie: &TokTrie, c: usize, offsets: &[u32], out: &mut [u32]) {
    // Every token of the trie is below its vocabulary's size.
    assert!(trie.vocab_size() <= out.len() * 32, "mask shorter than the vocabulary");
    for &o in offsets {
        let toks = if o & WHOLE != 0 {
            trie.subtree_tokens(c + (o & !WHOLE) as usize)
        } else {
            trie.node_tokens(c + o as usize)
        };
        // SAFETY: every `t < vocab_size <= out.len() * 32` ([`TokTrie::new`]
        // takes ids from `0..vocab.size()`; asserted above).
        unsafe { set_bits_unchecked(out, toks) };
    }
}

/// Set the bits of `toks` in `out`. Callers check once for a whole walk
/// that the mask covers the trie's vocabulary: setting the bits of tens
/// of thousands of tokens (every identifier after an operator) is a third
/// of such a mask's instructions, and a bounds check per token added 5%
/// to SynCode C's.
///
/// # Safety
/// Every token in `toks` must be below `out.len() * 32`.
#[inline(always)]
unsafe fn set_bits_unchecked(out: &mut [u32], toks: &[u32]) {
    for &t in toks {
        debug_assert!((t as usize) < out.len() * 32);
        *out.get_unchecked_mut((t >> 5) as usize) |= 1u32 << (t & 31);
    }
}

/// The mask of `st` (no lexeme in progress) by one lazy walk of the whole
/// trie from it: the lexer layer is skipped. Where lexemes are single
/// characters (GBNF) every token byte ends one, so that layer would split
/// the walk into a group per first character, each with its own parser
/// step and walk; one walk shares its transitions, scans and loops.
///
/// With `body` (the vocabulary's body index), a configuration from which
/// every body character leads to one that they all lead back to
/// ([`LazyDfa::body_run`]: inside a comment, `[^\n]*`) takes the body
/// tokens from the index and walks only the others, from their entry
/// nodes.
#[allow(clippy::too_many_arguments)]
pub fn fill_by_walk(
    g: &CompiledGrammar,
    dfa: &mut LazyDfa,
    trie: &TokTrie,
    shapes: &[u32],
    below: &SubtreeBytes,
    body: Option<&BodyIndex>,
    st: &mut GrammarState,
    out: &mut [u32],
) {
    out.fill(0);
    let mut walk = LazyWalk::new(g, dfa, st);
    let run = match body {
        Some(ix) if ix.all().len() == out.len() => dfa.body_run(g, st, walk.base),
        _ => None,
    };
    if let (Some(ix), Some(rep)) = (body, run) {
        // Every body token is accepted (the last character perhaps cut
        // short: every character goes on alike). A token holding another
        // byte is below an entry node, whose body prefix led to the base
        // (none) or to the state after one body character (some), or into
        // a character the entry byte cuts short: walked from there.
        out.copy_from_slice(ix.all());
        let es = ix.entries();
        let first = es.partition_point(|e| e.chars == 0);
        walk_entries(g, dfa, trie, shapes, below, st, &es[..first], out);
        if first < es.len() && st.push_byte(g, rep) {
            walk_entries(g, dfa, trie, shapes, below, st, &es[first..], out);
            st.pop_bytes(g, 1);
        }
        return;
    }
    let mut memo = WalkMemo::default();
    for c in trie.children(0) {
        // Most first bytes are dead: skipped once their class is known
        // dead, as in [`Finish::walk_nodes`].
        if walk.dead_from_base(g, dfa, trie.node_byte(c)) {
            continue;
        }
        let accepted = memo.get_or_walk(shapes[c], |arena| walk.walk_subtree(g, dfa, trie, below, st, c, arena));
        set_accepted(trie, c, accepted, out);
    }
}

/// Walk the subtrees of body-index entries `es` from `st`'s configuration
/// (that of their body prefix), or from there past the character their
/// entry byte cuts short, setting the tokens accepted in `out`.
#[allow(clippy::too_many_arguments)]
fn walk_entries(
    g: &CompiledGrammar,
    dfa: &mut LazyDfa,
    trie: &TokTrie,
    shapes: &[u32],
    below: &SubtreeBytes,
    st: &mut GrammarState,
    es: &[body::Entry],
    out: &mut [u32],
) {
    for group in es.chunk_by(|a, b| a.partial() == b.partial()) {
        let partial = group[0].partial();
        let pushed = push_all(g, st, partial.iter().copied());
        if pushed == partial.len() {
            let mut w = LazyWalk::new(g, dfa, st);
            let mut m = WalkMemo::default();
            for x in group {
                let n = x.node as usize;
                let accepted = m.get_or_walk(shapes[n], |arena| w.walk_subtree(g, dfa, trie, below, st, n, arena));
                set_accepted(trie, n, accepted, out);
            }
        }
        st.pop_bytes(g, pushed);
    }
}

/// Results of walks from one configuration: per subtree shape, the offsets
/// of its accepted token nodes, as a range of `arena`.
#[derive(Debug, Default)]
pub struct WalkMemo {
    shapes: FxMap<u32, (u32, u32)>,
    arena: Vec<u32>,
}

impl WalkMemo {
    pub fn bytes(&self) -> usize {
        self.shapes.len() * 12 + self.arena.len() * 4
    }

    /// The accepted offsets of a subtree of shape `shape`: those `walk`
    /// pushes onto the arena, the first time this shape is asked for.
    fn get_or_walk(&mut self, shape: u32, walk: impl FnOnce(&mut Vec<u32>)) -> &[u32] {
        let arena = &mut self.arena;
        let (from, to) = *self.shapes.entry(shape).or_insert_with(|| {
            let from = arena.len() as u32;
            walk(arena);
            (from, arena.len() as u32)
        });
        &self.arena[from as usize..to as usize]
    }
}

/// Walk results by the configuration a lexeme's end leaves
/// ([`GrammarState::mask_key`], position-independent), shared by every mask
/// of one compiled grammar: after an identifier in an expression the same
/// boundary subtrees (`(`, `)`, `;`, ` =` ...) are walked from the same
/// configuration at every statement, so each is walked once per grammar,
/// not once per mask.
pub type WalkCache = FxMap<(u32, bool, u128), WalkMemo>;

/// Lexer entries from the lexer's start, which [`fill_from_entry`] asks
/// for where the lexeme in progress may end right at the token's start,
/// and the tokens by first byte. The caller keeps both (per grammar and
/// allowed terminals; per vocabulary).
pub trait StartEntries {
    /// The entry of the lexer's start (no lexeme in progress) under
    /// `allowed`.
    fn start_entry(&self, allowed: &[u64]) -> Option<std::sync::Arc<LexEntry>>;
    /// The tokens whose first byte is in `bytes` (a 256-bit set), as a mask.
    fn first_bytes(&self, bytes: &[u64; 4]) -> std::sync::Arc<[u32]>;
    /// The first byte of token `t` (one of the trie's).
    fn first_byte(&self, t: u32) -> u8;
}

/// Complete a mask for grammar state `st` from its lexer entry. `walks`
/// memoises boundary walks across masks; `reserve(bytes)` says whether the
/// cache may grow by that much; `body` is the vocabulary's body index
/// (which the entry was built with) and the grammar's memo of body runs;
/// `starts` gives entries from the lexer's start (see
/// [`Finish::after_root`]).
#[allow(clippy::too_many_arguments)]
pub fn fill_from_entry(
    g: &CompiledGrammar,
    dfa: &mut LazyDfa,
    trie: &TokTrie,
    shapes: &[u32],
    below: &SubtreeBytes,
    body: (&BodyIndex, &BodyMemo),
    words: Option<&WordIndex>,
    st: &mut GrammarState,
    entry: &LexEntry,
    walks: &std::sync::Mutex<WalkCache>,
    reserve: &dyn Fn(usize) -> bool,
    starts: &dyn StartEntries,
    out: &mut [u32],
) {
    entry.inner.write_to(out);
    let allowed = st.lexer_view(g).2.to_vec();
    let mut f = Finish {
        g,
        dfa,
        trie,
        shapes,
        below,
        walks,
        reserve,
        words,
        walk: None,
    };
    let b = &entry.boundaries;
    let mut i = 0;
    for &j in &entry.groups {
        let j = j as usize;
        if let Some(saved) = st.enter_after_lexeme(g, b[i].1) {
            // The lexeme in progress may end at the token's start (node
            // 0): the tokens after that end are those of the state it
            // leaves, from their own entry.
            let root = b[i..j].iter().find(|x| x.0 == 0).map(|x| x.1);
            match root {
                Some(s) if !g.prefix_free_lexemes && f.after_root(st, s, &allowed, starts, out) => {
                    f.walk_boundaries(st, &allowed, b[i..j].iter().copied().filter(|x| x.0 != 0), out);
                }
                _ => f.walk_boundaries(st, &allowed, b[i..j].iter().copied(), out),
            }
            st.leave_after_lexeme(g, saved);
        }
        i = j;
    }
    if let Some((r, sr)) = entry.run_end {
        let (ix, memo) = body;
        if let Some(saved) = st.enter_after_lexeme(g, sr) {
            if !f.chained(ix, memo, st, &allowed, r as usize, sr, out) {
                f.walk_boundaries(st, &allowed, ix.at_chars(r as usize).iter().map(|&n| (n, sr)), out);
            }
            st.leave_after_lexeme(g, saved);
        }
    }
}

/// What [`fill_from_entry`] walks with.
struct Finish<'a> {
    g: &'a CompiledGrammar,
    dfa: &'a mut LazyDfa,
    trie: &'a TokTrie,
    shapes: &'a [u32],
    below: &'a SubtreeBytes,
    walks: &'a std::sync::Mutex<WalkCache>,
    reserve: &'a dyn Fn(usize) -> bool,
    /// The vocabulary's index of word tokens ([`Finish::words`]).
    words: Option<&'a WordIndex>,
    walk: Option<LazyWalk>,
}

impl Finish<'_> {
    /// Walk the subtrees of `nodes` from `st` (each node's byte the first
    /// taken), setting the tokens accepted in `out`.
    ///
    /// Lexemes ending in different lexer states often leave the parser in
    /// the same configuration (an identifier ended after "re" or after
    /// "ret" scans the same NAME), so results are kept per configuration:
    /// per shape, the offsets of accepted token nodes.
    fn walk_nodes(&mut self, st: &mut GrammarState, nodes: impl Iterator<Item = usize>, out: &mut [u32]) {
        let g = self.g;
        let key = st.mask_key(g);
        let mut memo = self.walks.lock().unwrap().remove(&key).unwrap_or_default();
        let before = memo.bytes();
        let mut fresh = true; // `walk` not yet reset to this base
        for c in nodes {
            // Once the walk stands at this base, a child whose first byte's
            // class it already found dead is skipped before the memo is
            // asked. Below a space or a newline all but a dozen of their
            // hundreds of children are dead, and each was a lookup by
            // shape (a random read) and a walk call: chess.gbnf's
            // first-visit masks lost 13% of their instructions, the one
            // after a move's end 44%.
            if let (false, Some(w)) = (fresh, &self.walk) {
                if w.dead_from_base(g, self.dfa, self.trie.node_byte(c)) {
                    continue;
                }
            }
            let (walk, dfa, trie, below) = (&mut self.walk, &mut *self.dfa, self.trie, self.below);
            let accepted = memo.get_or_walk(self.shapes[c], |arena| {
                let w = walk.get_or_insert_with(LazyWalk::unset);
                if fresh {
                    w.reset(g, dfa, st);
                    fresh = false;
                }
                w.walk_subtree(g, dfa, trie, below, st, c, arena);
            });
            set_accepted(self.trie, c, accepted, out);
        }
        // A walk cut short by a parser limit is not kept.
        if st.error.is_none() && (self.reserve)(memo.bytes().saturating_sub(before) + if before == 0 { 64 } else { 0 }) {
            self.walks.lock().unwrap().insert(key, memo);
        }
    }

    /// The tokens after a lexeme in progress (lexer state `s`, under
    /// `allowed`) that ends at the token's start, `st` being the state
    /// that end leaves: those of `st`'s own mask whose first byte does not
    /// extend the lexeme (a byte that extends it is read as extending it:
    /// maximal munch). `false` (nothing done) where `st`'s entry from the
    /// lexer's start is not at hand.
    ///
    /// Why: after an identifier, a keyword or a number (most tokens of
    /// code) the lexeme may go on or end, and the tokens after its end
    /// (` =`, `(`, ` foo`: a space, then everything the grammar allows)
    /// were walked with the parser, subtree by subtree, from each new
    /// configuration: three quarters of SynCode C's and Java's mask time.
    /// The entry of `st`'s lexer start depends only on its allowed
    /// terminals, which recur more often than configurations, and holds
    /// most of those tokens whole; only its boundaries are walked. Only
    /// an entry already made is taken: making one walks the whole trie,
    /// which the walks it saves on a first visit do not repay (SynCode
    /// Java's instructions rose by 16% when every such end made one).
    fn after_root(&mut self, st: &mut GrammarState, s: u32, allowed: &[u64], starts: &dyn StartEntries, out: &mut [u32]) -> bool {
        let (g, trie) = (self.g, self.trie);
        let (_, in_progress, allowed2) = st.lexer_view(g);
        if in_progress {
            return false;
        }
        let allowed2 = allowed2.to_vec();
        let Some(entry) = starts.start_entry(&allowed2) else { return false };
        if entry.run_end.is_some() {
            return false;
        }
        let mut ext = [0u64; 4];
        for (rep, bytes) in g.lexer.class_bytes() {
            if extends(&g.lexer, s, *rep, allowed) {
                for (w, b) in ext.iter_mut().zip(bytes) {
                    *w |= b;
                }
            }
        }
        match entry.inner.sparse_ids() {
            // A few tokens (after a number: `,`, `]`, ` `): each judged by
            // its first byte, rather than by a mask of every token whose
            // first byte extends the lexeme (a letter starts half of them,
            // and making that mask was a JSON grammar's slowest mask).
            Some(ids) => {
                for &t in ids {
                    let b = starts.first_byte(t);
                    if ext[b as usize / 64] >> (b % 64) & 1 == 0 {
                        set_bit(out, t);
                    }
                }
            }
            None => entry.inner.or_into_except(out, &starts.first_bytes(&ext)),
        }
        // Boundaries below a first byte that extends the lexeme are not
        // after its end.
        let tops: Vec<(usize, usize)> = trie.children(0).map(|c| (c, trie.subtree_end(c))).collect();
        let after_end = |n: u32| {
            let k = tops.partition_point(|&(c, _)| c <= n as usize);
            let c = tops[k - 1].0;
            let b = trie.node_byte(c);
            ext[b as usize / 64] >> (b % 64) & 1 == 0
        };
        let bs = &entry.boundaries;
        let mut i = 0;
        for &j in &entry.groups {
            let j = j as usize;
            if bs[i..j].iter().any(|x| after_end(x.0)) {
                if let Some(saved) = st.enter_after_lexeme(g, bs[i].1) {
                    self.walk_boundaries(st, &allowed2, bs[i..j].iter().copied().filter(|x| after_end(x.0)), out);
                    st.leave_after_lexeme(g, saved);
                }
            }
            i = j;
        }
        true
    }

    /// The children of boundary `nodes` (node, lexer state where the
    /// lexeme ended) whose byte does not extend the lexeme under
    /// `allowed`, walked from `st` (after the lexeme), but for the word
    /// tokens [`Finish::words`] takes from the index.
    fn walk_boundaries(&mut self, st: &mut GrammarState, allowed: &[u64], nodes: impl Iterator<Item = (u32, u32)>, out: &mut [u32]) {
        let (g, trie) = (self.g, self.trie);
        let bounds: Vec<(u32, u32)> = nodes.collect();
        let children: Vec<usize> = bounds
            .iter()
            .flat_map(|&(n, ls)| {
                trie.children(n as usize)
                    .filter(move |&c| !extends(&g.lexer, ls, trie.node_byte(c), allowed))
            })
            .collect();
        let done = self.words(st, allowed, &bounds, out);
        if done.is_empty() {
            self.walk_nodes(st, children.into_iter(), out);
        } else {
            // Taken: a child of the root or of a prefix node whose byte
            // starts what was taken below it.
            let taken = |c: usize| {
                let (d, b) = (trie.node_depth(c), trie.node_byte(c));
                done.iter().any(|&(p, ref bytes)| {
                    let below = if p == 0 {
                        d == 1
                    } else {
                        d == 2 && (p as usize) < c && c < trie.subtree_end(p as usize)
                    };
                    below && has_byte(bytes, b)
                })
            };
            self.walk_nodes(st, children.into_iter().filter(|&c| !taken(c)), out);
        }
    }

    /// The tokens of words right after a lexeme's end, from the
    /// vocabulary's [`WordIndex`], where [`LazyDfa::word_run`] finds that
    /// every word character leads `st`'s configuration (or the one after a
    /// prefix byte) into a word and keeps it there: the prefix's bit set,
    /// and walks of only its entries. Three places: a lexeme ended at the
    /// token's start (`nodes` hold the root's children) and a word begins
    /// the token, or a prefix byte (a space) then a word; or a lexeme
    /// ended right after a prefix byte (`bounds` holds its node: a space
    /// that `%ignore` whitespace read) and a word follows. Returns, per
    /// node below which it took words (the root, or a prefix's), the bytes
    /// of its children it took: their subtrees are not walked.
    ///
    /// A set is taken only where every lead byte's node below it is among
    /// `nodes` (it holds the tokens below them all).
    fn words(&mut self, st: &mut GrammarState, allowed: &[u64], bounds: &[(u32, u32)], out: &mut [u32]) -> Vec<(u32, [u64; 4])> {
        let mut done = Vec::new();
        let (g, trie) = (self.g, self.trie);
        let Some(ix) = self.words else { return done };
        if !ix.alphabets().into_iter().any(|w| self.dfa.words_may_run(g, w)) {
            return done;
        }
        // The bytes of node `n`'s children that end the lexeme of some
        // boundary at `n` (those the caller walks).
        let after = |n: u32| {
            let mut bytes = [0u64; 4];
            for &(m, ls) in bounds {
                if m == n {
                    for c in trie.children(n as usize) {
                        let b = trie.node_byte(c);
                        if !extends(&g.lexer, ls, b, allowed) {
                            add_byte(&mut bytes, b);
                        }
                    }
                }
            }
            bytes
        };
        let ones = |bytes: &[u64; 4]| bytes.iter().map(|w| w.count_ones() as usize).sum::<usize>();
        let present = if bounds.iter().any(|x| x.0 == 0) { after(0) } else { [0; 4] };
        let tops = ones(&present);
        // Prefix nodes where a lexeme ended, with enough children after it.
        let mut ended: Vec<(u32, [u64; 4])> = Vec::new();
        for &(n, _) in bounds {
            if n != 0
                && trie.node_depth(n as usize) == 1
                && ix.prefix_nodes().binary_search_by_key(&n, |x| x.0).is_ok()
                && !ended.iter().any(|x| x.0 == n)
            {
                let below = after(n);
                if ones(&below) >= MIN_WORD_TOPS {
                    ended.push((n, below));
                }
            }
        }
        if tops < MIN_WORD_TOPS && ended.is_empty() {
            return done;
        }
        self.dfa.init(g);
        let base = self.dfa.state_of(g, st);
        let root_run = self.dfa.word_run(g, st, base, ix, None);
        let mut root = [0u64; 4];
        if tops >= MIN_WORD_TOPS {
            if let Some(r) = &root_run {
                let w = ix.words(r.alphabet);
                if let (Some(p), true) = (w.prefix(0), subset(&w.first_leads, &present)) {
                    self.take_words(st, w, r, p, false, out);
                    root = w.first_leads;
                }
            }
            for &(c, b) in ix.prefix_nodes() {
                if !has_byte(&present, b) || has_byte(&root, b) {
                    continue;
                }
                let Some(r) = self.dfa.word_run(g, st, base, ix, Some(b)) else {
                    continue;
                };
                if let Some(p) = ix.words(r.alphabet).prefix(c) {
                    self.take_words(st, ix.words(r.alphabet), &r, p, false, out);
                    add_byte(&mut root, b);
                }
            }
            if root != [0; 4] {
                done.push((0, root));
            }
        }
        // After a prefix byte the lexeme that ended read, words go on from
        // `st` as after the root: the same question.
        if let Some(r) = &root_run {
            let w = ix.words(r.alphabet);
            for &(n, below) in &ended {
                let Some(p) = w.prefix(n) else { continue };
                // Every word's lead byte below the prefix ends the lexeme.
                let mut leads = [0u64; 4];
                for c in trie.children(n as usize) {
                    if w.is_first_lead(trie.node_byte(c)) {
                        add_byte(&mut leads, trie.node_byte(c));
                    }
                }
                if subset(&leads, &below) {
                    self.take_words(st, w, r, p, true, out);
                    done.push((n, w.first_leads));
                }
            }
        }
        done
    }

    /// The tokens of prefix `p` and word characters of `w` (which
    /// [`LazyDfa::word_run`] found to run as `run` says from `st`'s
    /// configuration, after the prefix byte where `read` says a lexeme
    /// that ended took it, or with it otherwise): its bit set; where the
    /// prefix is still to be read, the prefix's own tokens and its
    /// children that start no word character, walked from the prefix's
    /// configuration; and its entries, from the configuration of their
    /// start (the prefix, or a word after it, then the cut-short
    /// character's bytes). Where words pass through keyword states, the
    /// nodes of those states are walked on their own
    /// ([`Finish::keyword_walk`]), and only the entries below where words
    /// reach the word's state from the word's configuration.
    fn take_words(&mut self, st: &mut GrammarState, w: &Words, run: &WordRun, p: &word::Prefix, read: bool, out: &mut [u32]) {
        let (g, trie) = (self.g, self.trie);
        for (o, x) in out.iter_mut().zip(p.tokens.iter()) {
            *o |= x;
        }
        let pre = (p.node != 0 && !read).then(|| trie.node_byte(p.node as usize));
        if let Some(b) = pre {
            if !st.push_byte(g, b) {
                debug_assert!(false, "word_run took the prefix byte");
                return;
            }
            for &t in trie.node_tokens(p.node as usize) {
                set_bit(out, t);
            }
            let below: Vec<usize> = trie.children(p.node as usize).filter(|&c| !w.is_first_lead(trie.node_byte(c))).collect();
            self.walk_nodes(st, below.into_iter(), out);
        }
        let mut regions = Vec::new();
        if let Some((first, ks)) = &run.keywords {
            self.keyword_walk(st, w, p.node as usize, *first, true, ks, &mut regions, out);
        }
        let mut inside = within(&regions);
        for group in p.entries.chunk_by(|a, b| a.same_start(b)) {
            let e = group[0];
            let head: &[u8] = if e.first { &[] } else { &[run.lead] };
            let pushed = push_all(g, st, head.iter().chain(e.partial()).copied());
            if pushed == head.len() + e.partial().len() {
                if run.keywords.is_some() {
                    // ASCII words: one group, sorted by node.
                    let nodes: Vec<usize> = group.iter().filter(|x| inside(x.node)).map(|x| x.node as usize).collect();
                    self.walk_nodes(st, nodes.into_iter(), out);
                } else {
                    self.walk_nodes(st, group.iter().map(|x| x.node as usize), out);
                }
            }
            st.pop_bytes(g, pushed);
        }
        if pre.is_some() {
            st.pop_bytes(g, 1);
        }
    }

    /// Below node `n` (`st`'s configuration, lexer state `q`; `first`: no
    /// word character read yet), the nodes where words are in keyword
    /// states `ks`: the tokens that leave a word there, walked from that
    /// configuration; words that reach the word's state (any state outside
    /// `ks`, [`keyword_states`]) give their subtree's node range to
    /// `regions`, in preorder.
    #[allow(clippy::too_many_arguments)]
    fn keyword_walk(
        &mut self,
        st: &mut GrammarState,
        w: &Words,
        n: usize,
        q: u32,
        first: bool,
        ks: &[u32],
        regions: &mut Vec<(u32, u32)>,
        out: &mut [u32],
    ) {
        let (g, trie) = (self.g, self.trie);
        let mut leave = Vec::new();
        for c in trie.children(n) {
            let b = trie.node_byte(c);
            let word = if first { w.is_first_lead(b) } else { w.is_lead(b) };
            if !word {
                // Right below the prefix (or the root) the caller walks it.
                if !first {
                    leave.push(c);
                }
                continue;
            }
            let q2 = g.lexer.next(q, b);
            if ks.binary_search(&q2).is_ok() {
                if st.push_byte(g, b) {
                    self.keyword_walk(st, w, c, q2, false, ks, regions, out);
                    st.pop_bytes(g, 1);
                } else {
                    debug_assert!(false, "a keyword state keeps the lexeme going");
                }
            } else {
                regions.push((c as u32, trie.subtree_end(c) as u32));
            }
        }
        if !leave.is_empty() {
            self.walk_nodes(st, leave.into_iter(), out);
        }
    }

    /// The subtrees below a run that ended after `r` body characters in
    /// lexer state `sr` (under `allowed`), from `st` after that lexeme,
    /// where the next lexeme is a run too: a string's head or chunk
    /// followed by the next chunk. `false` (nothing done) where it is not.
    ///
    /// Why: those subtrees are every node of `r` body characters, which
    /// for small `r` is most of the trie, and walking them cost 1-5 ms
    /// per token inside a long string. But body characters go on alike
    /// after the end as before it, so the answer is mostly the body
    /// index's again: every body token of more than `r` characters that
    /// the next run holds; the tokens with another byte after the `r`-th
    /// character, walked from the state that byte meets, per group of
    /// entries that start alike; and, where the next run ends too, the
    /// few tokens long enough to pass its end, walked byte by byte.
    #[allow(clippy::too_many_arguments)]
    fn chained(&mut self, ix: &BodyIndex, memo: &BodyMemo, st: &mut GrammarState, allowed: &[u64], r: usize, sr: u32, out: &mut [u32]) -> bool {
        let g = self.g;
        let (s0, _, allowed0) = st.lexer_view(g);
        let allowed0 = allowed0.to_vec();
        // From the lexer's start, asked as if a lexeme were in progress:
        // the run is the same question.
        let LexPlan { plan: Plan::Run(_, run), .. } = LexEntry::plan(g, Some(ix), None, Some(memo), s0, true, &allowed0) else {
            return false;
        };
        let n0 = run.states.len() - 1;
        // Body tokens of more than `r` characters the next run holds.
        let mut held = take_scratch(out.len());
        match run.end {
            RunEnd::Cycle(_) | RunEnd::Long => held.copy_from_slice(ix.all()),
            RunEnd::Dead | RunEnd::Ends => ix.upto_into(r + n0, &mut held),
        }
        let mut short = take_scratch(out.len());
        ix.upto_into(r, &mut short);
        for ((o, h), s) in out.iter_mut().zip(held.iter()).zip(short.iter()) {
            *o |= h & !s;
        }
        give_back_scratch(held);
        give_back_scratch(short);
        // Tokens with another byte after the `r`-th character: from the
        // state before it, per group of entries that start alike (any body
        // characters lead there alike; a cut-short one is its bytes).
        let es = ix.entries();
        let from = es.partition_point(|e| (e.chars as usize) < r);
        for group in es[from..].chunk_by(|a, b| a.same_start(b)) {
            let e = group[0];
            let p = e.chars as usize - r;
            let first = p == 0 && e.partial_len == 0;
            // Past the next run's end: below a node of the last part.
            let inside = run.state_at(p, e.partial_len > 0).is_some();
            // Right below the end, a byte that extends the lexeme that
            // ended is the lexer layer's.
            if inside && !(first && extends(&g.lexer, sr, e.byte, allowed)) {
                let pushed = push_all(g, st, std::iter::repeat_n(BODY_CHAR, p).chain(e.partial().iter().copied()));
                if pushed == p + e.partial_len as usize {
                    self.walk_nodes(st, group.iter().map(|x| x.node as usize), out);
                }
                st.pop_bytes(g, pushed);
            }
        }
        // Where the next run ends, the tokens that pass its end, byte by
        // byte from there (long tokens only: `r + n0` characters).
        if let RunEnd::Ends = run.end {
            for &x in ix.at_chars(r + n0) {
                let pushed = push_all(g, st, std::iter::repeat_n(BODY_CHAR, n0));
                if pushed == n0 {
                    for c in self.trie.children(x as usize) {
                        self.exact_walk(st, c, out);
                    }
                }
                st.pop_bytes(g, pushed);
            }
        }
        true
    }

    /// Every token at or below node `c` that `st` accepts, byte by byte.
    fn exact_walk(&mut self, st: &mut GrammarState, c: usize, out: &mut [u32]) {
        let g = self.g;
        if !st.push_byte(g, self.trie.node_byte(c)) {
            return;
        }
        for &t in self.trie.node_tokens(c) {
            set_bit(out, t);
        }
        for d in self.trie.children(c) {
            self.exact_walk(st, d, out);
        }
        st.pop_bytes(g, 1);
    }
}

/// A body character that stands for any: inside a run every body character
/// moves the lexer alike.
const BODY_CHAR: u8 = b'a';

/// A word character that stands for any in [`LazyDfa::word_run`].
const WORD_CHAR: u8 = b'a';

/// Whether every character of `chars` (a trie of [`Words`]) leads lexer
/// state `from` to `to`, or to a state `alike` finds alike to it (see
/// [`WalkStates::equiv`]), through states that extend a lexeme under
/// `allowed` and that some byte extends (a lexeme in progress all the way,
/// moved by the lexer alone): a walk over a few thousand bytes.
fn chars_lead(lexer: &Dfa, chars: &[word::CharNode], from: u32, to: u32, allowed: &[u64], mut alike: impl FnMut(u32) -> bool) -> bool {
    let mut at = [from; 5];
    chars.iter().all(|n| {
        let d = n.depth as usize;
        let s = lexer.next(at[d - 1], n.byte);
        at[d] = s;
        if n.end {
            s == to || (s != DEAD_STATE && alike(s))
        } else {
            s != DEAD_STATE && !lexer.is_terminal(s) && intersects(lexer.reach(s), allowed)
        }
    })
}

/// How words of an alphabet move the lexer from a state (see
/// [`word_plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct WordShape {
    alphabet: Alphabet,
    /// The word's state: every character leads it back to itself, or to a
    /// state that walks alike.
    to: u32,
    /// Where some first characters begin keywords the position allows:
    /// the other states words pass through on their way to `to`'s, sorted
    /// ([`keyword_states`]).
    keywords: Option<std::sync::Arc<[u32]>>,
}

/// The alphabet of `ix` whose characters all lead lexer state `s` to
/// the state `a` leads it to, and that state back to itself, under
/// `allowed` (the wider alphabet first), with that state: then the lexer
/// layer takes the word tokens from the index ([`Plan::Words`]).
///
/// "To that state" means to it or to one that walks alike under `allowed`
/// ([`WalkStates::equiv`], answers kept in `alike`): where a keyword is not
/// allowed (`int` inside a C expression) the letters that begin it lead
/// the lexer elsewhere than other letters, but only to identifiers that
/// the keyword's terminal may also match, which no walk under these
/// terminals tells apart. The entries are then walked from the state of
/// `a`, which walks as theirs would. Where keywords are allowed, an ASCII
/// alphabet may still pass through their few states ([`keyword_states`]).
fn word_plan(
    lexer: &Dfa,
    ix: &WordIndex,
    s: u32,
    allowed: &[u64],
    states: &mut WalkStates,
    alike: &mut FxMap<(u32, u32), bool>,
) -> Option<WordShape> {
    let t = lexer.next(s, WORD_CHAR);
    if t == DEAD_STATE || lexer.is_terminal(t) || !intersects(lexer.reach(t), allowed) {
        return None;
    }
    let mut same = |q: u32, to: u32| states.equiv(lexer, q, to, allowed, alike);
    // The ASCII letters first, a cheap test most states fail.
    let loops = !(0..128u8).any(|b| {
        (b.is_ascii_alphanumeric() || b == b'_') && ix.words(Alphabet::Ascii).is_lead(b) && {
            let q = lexer.next(t, b);
            q != t && (q == DEAD_STATE || !same(q, t))
        }
    });
    let plain = loops
        .then(|| {
            ix.alphabets().into_iter().find(|w| {
                w.prefix(0).is_some()
                    && chars_lead(lexer, &w.first, s, t, allowed, |q| same(q, t))
                    && chars_lead(lexer, &w.chars, t, t, allowed, |q| same(q, t))
            })
        })
        .flatten();
    if let Some(w) = plain {
        return Some(WordShape {
            alphabet: w.alphabet,
            to: t,
            keywords: None,
        });
    }
    [Alphabet::Ascii, Alphabet::AsciiIdent].into_iter().find_map(|a| {
        let w = ix.words(a);
        w.prefix(0)?;
        let (to, _, ks) = keyword_states(lexer, w, s, allowed, &mut same)?;
        Some(WordShape {
            alphabet: a,
            to,
            keywords: Some(ks),
        })
    })
}

/// A test of whether nodes, asked in increasing order, lie in one of
/// `regions` (node ranges, sorted and disjoint).
fn within(regions: &[(u32, u32)]) -> impl FnMut(u32) -> bool + '_ {
    let mut r = 0;
    move |n| {
        while r < regions.len() && regions[r].1 <= n {
            r += 1;
        }
        r < regions.len() && regions[r].0 <= n
    }
}

/// The most states [`keyword_states`] lets words pass through before the
/// word's own.
const MAX_KEYWORD_STATES: usize = 256;

/// The most states [`keyword_states`] tries as the word's.
const MAX_WORD_STATE_TRIES: usize = 8;

/// Where ASCII words of `w` from lexer state `from` pass through a few
/// states of keywords the allowed terminals hold (`i`, `in`, `int` at a C
/// statement's start) before they reach the word's state, which every
/// character leads back to (or alike, by `alike(q, to)`): that state, a
/// first character that leads to it, and the others, sorted. Every state
/// met must keep a lexeme going under `allowed`, and the others must be
/// finitely many with no cycle among them (else `None`): then every word
/// token is inside the lexeme, and the tokens that leave a word are walked
/// from the state they leave it in, which below the few nodes of those
/// states is the word's.
fn keyword_states(
    lexer: &Dfa,
    w: &Words,
    from: u32,
    allowed: &[u64],
    alike: &mut impl FnMut(u32, u32) -> bool,
) -> Option<(u32, u8, std::sync::Arc<[u32]>)> {
    if w.alphabet == Alphabet::Unicode {
        return None;
    }
    let live = |q: u32| q != DEAD_STATE && !lexer.is_terminal(q) && intersects(lexer.reach(q), allowed);
    let firsts: Vec<u8> = (0..128u8).filter(|&b| w.is_first_lead(b)).collect();
    let chars: Vec<u8> = (0..128u8).filter(|&b| w.is_lead(b)).collect();
    let mut tried: Vec<u32> = Vec::new();
    let mut found = None;
    for &b in &firsts {
        let t = lexer.next(from, b);
        if !live(t) || tried.contains(&t) {
            continue;
        }
        if tried.len() == MAX_WORD_STATE_TRIES {
            break;
        }
        tried.push(t);
        if chars.iter().all(|&c| {
            let q = lexer.next(t, c);
            q == t || (q != DEAD_STATE && alike(q, t))
        }) {
            found = Some((t, b));
            break;
        }
    }
    let (to, lead) = found?;
    // Depth first from `from`: 1 on the stack, 2 done.
    let mut mark: FxMap<u32, u8> = FxMap::default();
    let mut stack: Vec<(u32, usize)> = Vec::new();
    let mut word = |q: u32| q == to || (q != DEAD_STATE && alike(q, to));
    for &b in &firsts {
        let q = lexer.next(from, b);
        if word(q) || mark.contains_key(&q) {
            continue;
        }
        if !live(q) {
            return None;
        }
        mark.insert(q, 1);
        stack.push((q, 0));
        while let Some(top) = stack.last_mut() {
            let (s, i) = *top;
            if i == chars.len() {
                mark.insert(s, 2);
                stack.pop();
                continue;
            }
            top.1 += 1;
            let q2 = lexer.next(s, chars[i]);
            if word(q2) {
                continue;
            }
            match mark.get(&q2) {
                Some(2) => {}
                Some(_) => return None,
                None => {
                    if !live(q2) || mark.len() >= MAX_KEYWORD_STATES {
                        return None;
                    }
                    mark.insert(q2, 1);
                    stack.push((q2, 0));
                }
            }
        }
    }
    let mut ks: Vec<u32> = mark.into_keys().collect();
    ks.sort_unstable();
    Some((to, lead, ks.into()))
}

/// The fewest root children a walk must start from for [`Finish::words`]
/// to ask whether words run: below that few word tokens are at stake.
const MIN_WORD_TOPS: usize = 16;

#[inline]
fn has_byte(set: &[u64; 4], b: u8) -> bool {
    set[b as usize / 64] >> (b % 64) & 1 != 0
}

#[inline]
fn add_byte(set: &mut [u64; 4], b: u8) {
    set[b as usize / 64] |= 1 << (b % 64);
}

/// Push `bytes` onto `st` up to the first it refuses; how many it took.
fn push_all(g: &CompiledGrammar, st: &mut GrammarState, bytes: impl Iterator<Item = u8>) -> usize {
    let mut n = 0;
    for b in bytes {
        if !st.push_byte(g, b) {
            break;
        }
        n += 1;
    }
    n
}

/// [`LazyDfa::char_slot`] of a state where no lexeme is in progress.
const NO_CHAR_LOOPS: u32 = u32::MAX;

/// Flag of [`LazyDfa::char_slot`]: the state has no lexeme in progress
/// (characters are judged by [`known_chars_loop`]).
const NO_LEXEME: u32 = 1 << 31;

/// Transition-table entry not computed yet. Zero, so that a new block of
/// the table comes from zeroed memory rather than a fill (a row has a
/// hundred entries where keywords split the bytes into classes, and a walk
/// from a new configuration makes thousands of rows). State 0 itself is a
/// placeholder that no transition leads to.
const UNKNOWN: u32 = 0;
/// Transition to "no string of the language continues this way".
const DEAD: u32 = 1;

/// The automaton of parser configurations a grammar's trie walks reach,
/// built lazily as a DFA and kept for the grammar's lifetime.
///
/// Why: a grammar whose lexemes are short (GBNF's are single characters)
/// makes the parser take a step at nearly every byte of every token, and an
/// Earley step costs the size of a chart set. But walks reach few distinct
/// configurations: inside an identifier, a string or a number the set
/// after each byte has the same future, and the walk of the next mask
/// passes through the configurations of the previous one (every statement
/// of a block starts the same way). So each configuration is named by the
/// lexer state plus its top chart set's fingerprint
/// ([`GrammarState::set_fingerprint`]: what the future reads,
/// independent of the input position, the same key the mask cache uses),
/// transitions are memoised per (configuration, lexer byte class), and the
/// parser only runs for a transition no walk of this grammar has taken
/// yet. Every other trie node costs a table lookup.
///
/// A state stands for every configuration with its fingerprint, all of
/// which accept the same continuations; a transition learned from one of
/// them is right for all of them, since it leads to a configuration with
/// the same future whichever one took it.
#[derive(Debug, Default)]
pub struct LazyDfa {
    /// Per state: (lexer state, lexeme in progress, set id); states 0 and
    /// 1 are placeholders for [`UNKNOWN`] and [`DEAD`].
    info: Vec<(u32, bool, u32)>,
    states: ShardedMap<(u32, bool, u32), u32>,
    /// Set ids by fingerprint; per set id, the terminals the lexer may
    /// match there and those the parser expects.
    sets: ShardedMap<u128, u32>,
    set_allowed: Vec<Vec<u64>>,
    set_expected: Vec<Vec<u64>>,
    /// The state after a byte of lexer class `c` in state `s` (the parser
    /// sees a byte only through the lexer, so bytes of one class move every
    /// configuration alike).
    trans: Trans,
    /// (set id, terminals scanned) -> id of the set the scan pushes. Many
    /// lexer states end a lexeme the same way (every prefix of a keyword
    /// that is also a NAME), and many byte classes are the same one-byte
    /// lexeme to a set (any letter inside an identifier), so the parser
    /// runs once per distinct scan ([`LazyDfa::known_scan`]).
    ///
    /// The terminals are named by their id in `term_sets` (a grammar
    /// scans few distinct sets): with the sets themselves as keys, each
    /// doubling of the table rehashed every set, 9.5 million instructions
    /// and 2,700 page faults in one mask of the PoC JavaScript sample.
    scans: ShardedMap<(u32, u32), u32>,
    term_sets: FxMap<Vec<u64>, u32>,
    /// Per state: the bytes known to lead straight back to it, kept up as
    /// transitions are learned (recomputing it from the whole row after
    /// each cost 4% of SynCode SQL's instructions: rows there have a
    /// hundred classes).
    loops: Vec<[u64; 4]>,
    /// Per state: where in `char_loops` its record is, plus one; 0 before
    /// the first question, with [`NO_LEXEME`] set where no lexeme is in
    /// progress; [`NO_CHAR_LOOPS`] for the placeholders [`UNKNOWN`] and
    /// [`DEAD`].
    char_slot: Vec<u32>,
    /// The lead bytes known to start only characters that lead back to a
    /// state, and those known not to, for subtrees of whole characters
    /// ([`chars_loop`]). Kept apart from the per-state arrays and made on
    /// the first question: at 64 bytes for every state, their growth
    /// doubled the page faults of SynCode Java's slowest masks.
    char_loops: Vec<([u64; 4], [u64; 4])>,
    /// Per record of `char_loops`, for a state with no lexeme in progress:
    /// how often [`known_chars_loop`] met a transition not learned yet
    /// (past [`MAX_CHAR_MISSES`] it is not asked again).
    char_misses: Vec<u8>,
    /// Per state: byte sets every string of which it accepts, where no
    /// lexeme is in progress ([`GrammarState::loops_at`]); per set id, the
    /// same for the set.
    sure: Vec<[u16; 2]>,
    set_sure: Vec<[u16; 2]>,
    /// Scratch for a key of `scans`.
    scan_scratch: Vec<u64>,
    /// Per state, what [`LazyDfa::body_run`] found.
    body_runs: FxMap<u32, Option<u8>>,
    /// What [`LazyDfa::word_run`] learned.
    words: Box<WordMemo>,
}

/// What [`keyword_states`] finds: the word's state, a first character
/// that leads there, and the keyword states.
type Keywords = (u32, u8, std::sync::Arc<[u32]>);

/// How words run from a configuration ([`LazyDfa::word_run`]).
#[derive(Debug, Clone)]
pub struct WordRun {
    pub alphabet: Alphabet,
    /// A first character that leads to the word's state (or alike).
    lead: u8,
    /// Where words pass through keyword states first: the lexer state the
    /// first character is read in, and those states ([`keyword_states`]).
    keywords: Option<(u32, std::sync::Arc<[u32]>)>,
}

/// [`LazyDfa`]'s memo of word runs, apart from the tables the walk reads.
#[derive(Debug, Default)]
struct WordMemo {
    /// Per (state, prefix node), what [`LazyDfa::word_run`] found.
    runs: FxMap<(u32, u32), Option<WordRun>>,
    /// Per (lexer state, lexer state, allowed terminals' id in
    /// `allowed_ids`, alphabet, first characters), whether every character
    /// leads from the one to the other ([`LazyDfa::chars_lead`]). By the
    /// allowed terminals, not the set: a code grammar meets thousands of
    /// sets (configurations) that allow the same few sets of terminals.
    chars_lead: FxMap<(u32, u32, u32, Alphabet, bool), bool>,
    allowed_ids: FxMap<Vec<u64>, u32>,
    /// Per allowed terminals' id, [`WalkStates::equiv`]'s answers.
    alike: Vec<FxMap<(u32, u32), bool>>,
    /// Per (lexer state, allowed terminals' id, alphabet), what
    /// [`keyword_states`] found.
    keywords: FxMap<(u32, u32, Alphabet), Option<Keywords>>,
    /// [`LazyDfa::words_may_run`], per alphabet.
    may_run: [Option<bool>; 3],
}

/// [`WalkStates::equiv`] of two lexer states under `allowed`, answers kept
/// in `memo`; the walk states it needs made on the first question (none
/// where every state met is the word's own).
fn alike_under<'a>(lexer: &'a Dfa, allowed: &'a [u64], memo: &'a mut FxMap<(u32, u32), bool>) -> impl FnMut(u32, u32) -> bool + 'a {
    let mut states: Option<WalkStates> = None;
    move |q, to| {
        states
            .get_or_insert_with(|| WalkStates::new(lexer.num_states()))
            .equiv(lexer, q, to, allowed, memo)
    }
}

impl WordMemo {
    /// The id of `allowed` in `allowed_ids`, made on first use.
    fn allowed_id(&mut self, allowed: &[u64]) -> u32 {
        if let Some(&id) = self.allowed_ids.get(allowed) {
            return id;
        }
        let id = self.allowed_ids.len() as u32;
        self.allowed_ids.insert(allowed.to_vec(), id);
        self.alike.push(FxMap::default());
        id
    }
}

/// States (or set ids) past which [`LazyDfa`]'s per-state (per-set)
/// arrays reserve room for [`RESERVED_STATES`] at once.
///
/// Why: each array doubled by copying, and the mask that crossed a size
/// paid for the copy and the new pages (5 million instructions and 900
/// page faults, a third of the PoC JavaScript sample's slowest mask, at
/// 65,536 states and set ids). Reserved, the room is address space until
/// states use it (about 100 bytes per state); small grammars (most JSON
/// Schemas) never get this far.
const RESERVE_STATES_AT: usize = 4096;
const RESERVED_STATES: usize = 1 << 20;

/// A scan for [`LazyDfa::scans`] to remember once the parser has run.
struct PendingScan {
    /// (set id, id of the terminals scanned).
    key: (u32, u32),
    /// How many sets the parser's step pushes before the scan's own (one
    /// where a lexeme ended before the byte and `b` alone is another).
    pushed_before: usize,
}

/// States per block of [`Trans`].
const TRANS_BLOCK: usize = 1 << TRANS_SHIFT;
const TRANS_SHIFT: u32 = 8;

/// [`LazyDfa`]'s transition table, `stride` entries per state, in blocks of
/// [`TRANS_BLOCK`] states.
///
/// Why blocks: the table lives as long as the grammar and grows with every
/// configuration a walk meets. As one `Vec` it doubled by copying, and a
/// copy of tens of MB fell on whichever mask crossed the size: 13 ms of
/// page faults in one mask of the SynCode Go sample. A new block only
/// touches its own pages.
#[derive(Debug, Default)]
struct Trans {
    blocks: Vec<Box<[u32]>>,
    stride: usize,
    states: usize,
}

impl Trans {
    /// Index of state `s`'s entry for class `c` within its block.
    #[inline(always)]
    fn at(&self, s: u32, c: usize) -> (usize, usize) {
        ((s >> TRANS_SHIFT) as usize, (s as usize & (TRANS_BLOCK - 1)) * self.stride + c)
    }

    #[inline(always)]
    fn get(&self, s: u32, c: usize) -> u32 {
        let (b, i) = self.at(s, c);
        self.blocks[b][i]
    }

    /// [`Trans::get`] without bounds checks, for the walk's inner loop
    /// (two checks per trie node there).
    ///
    /// # Safety
    /// `s` must be a state of the table (below `states`) and `c` a class
    /// (below `stride`).
    #[inline(always)]
    unsafe fn get_unchecked(&self, s: u32, c: usize) -> u32 {
        debug_assert!((s as usize) < self.states && c < self.stride);
        let (b, i) = self.at(s, c);
        *self.blocks.get_unchecked(b).get_unchecked(i)
    }

    #[inline(always)]
    fn set(&mut self, s: u32, c: usize, t: u32) {
        let (b, i) = self.at(s, c);
        self.blocks[b][i] = t;
    }

    /// A new state, every transition [`UNKNOWN`]; its id.
    fn push(&mut self) -> u32 {
        if self.states.is_multiple_of(TRANS_BLOCK) {
            const { assert!(UNKNOWN == 0) };
            self.blocks.push(vec![0; TRANS_BLOCK * self.stride].into_boxed_slice());
        }
        self.states += 1;
        (self.states - 1) as u32
    }

    fn bytes(&self) -> usize {
        self.blocks.len() * TRANS_BLOCK * self.stride * 4
    }
}

impl LazyDfa {
    /// Approximate heap size, for the mask cache's budget.
    pub fn bytes(&self) -> usize {
        let words = self.set_allowed.first().map_or(0, Vec::len);
        self.trans.bytes()
            + self.info.len() * (12 + 24 + 32 + 4 + 4)
            + self.char_loops.len() * 65
            + self.sets.len() * (24 + 4 + 2 * (24 + 8 * words))
            + self.scans.len() * 16
            + self.term_sets.len() * (32 + 8 * words)
    }

    fn init(&mut self, g: &CompiledGrammar) {
        if self.trans.states != 0 {
            return;
        }
        let stride = g.lexer.num_classes();
        self.trans.stride = stride;
        // State 0 stands for UNKNOWN, state 1 is DEAD.
        for _ in [UNKNOWN, DEAD] {
            self.trans.push();
            self.info.push((0, false, 0));
            self.loops.push([0; 4]);
            self.sure.push([0; 2]);
            self.char_slot.push(NO_CHAR_LOOPS);
        }
    }

    /// Whether every body character of the string-body index (ASCII but
    /// quote, backslash and controls; every character from U+0080 up)
    /// leads state `base`, `st`'s own, to one state that every body
    /// character leads back to itself (the base itself, or the state after
    /// a first character): then a body byte that goes there. Remembered
    /// per state.
    ///
    /// Why: in a grammar of single-character lexemes a comment body
    /// (`[^\n]*`) is a configuration every ordinary character leads back
    /// to, yet the walk met each multi-byte character as a lexeme in
    /// progress that ends, and walked nearly every token: the mask after
    /// `//` in llama.cpp's c.gbnf sample took 9.9 million instructions,
    /// now 1.3. (Its `/* */` comment is no such run: `*` leads elsewhere.)
    ///
    /// Exhaustive by lexer byte class: bytes of one class move the lexer,
    /// hence the parser, alike, so one byte per class (and, inside a
    /// multi-byte character, per next UTF-8 state) stands for all.
    fn body_run(&mut self, g: &CompiledGrammar, st: &mut GrammarState, base: u32) -> Option<u8> {
        if let Some(&known) = self.body_runs.get(&base) {
            return known;
        }
        let rep = (0x20..0x7Fu8).find(|&b| body::is_body_ascii(b));
        let run = rep.and_then(|rep| {
            if !st.push_byte(g, rep) {
                return None;
            }
            let next = self.state_of(g, st);
            let loops = self.body_chars_lead_to(g, st, next);
            st.pop_bytes(g, 1);
            (loops && (next == base || self.body_chars_lead_to(g, st, next))).then_some(rep)
        });
        self.body_runs.insert(base, run);
        run
    }

    /// Whether every body character leads `st`'s configuration to state
    /// `target` (see [`LazyDfa::body_run`]).
    fn body_chars_lead_to(&mut self, g: &CompiledGrammar, st: &mut GrammarState, target: u32) -> bool {
        use crate::toktrie::{Utf8State, UTF8_START};
        /// The characters from UTF-8 state `u` on (bytes already pushed)
        /// all end at `target`: one byte per lexer class and next decoder
        /// state, from the lexer's tables.
        fn chars(dfa: &mut LazyDfa, g: &CompiledGrammar, st: &mut GrammarState, target: u32, u: Utf8State) -> bool {
            let mut leads = g
                .lexer
                .char_start_groups()
                .iter()
                .filter(|x| x.utf8 != UTF8_START)
                .map(|x| (x.first, x.utf8));
            let mut conts = g.lexer.utf8_continuations(u).iter().copied();
            let next: &mut dyn Iterator<Item = (u8, Utf8State)> = if u == UTF8_START { &mut leads } else { &mut conts };
            for (b, u2) in next {
                if !st.push_byte(g, b) {
                    return false;
                }
                let ok = if u2 == UTF8_START {
                    dfa.state_of(g, st) == target
                } else {
                    chars(dfa, g, st, target, u2)
                };
                st.pop_bytes(g, 1);
                if !ok {
                    return false;
                }
            }
            true
        }
        let mut classes: Vec<usize> = Vec::new();
        for b in (0x20..0x7Fu8).filter(|&b| body::is_body_ascii(b)) {
            let c = g.lexer.byte_class(b);
            if classes.contains(&c) {
                continue;
            }
            classes.push(c);
            if !st.push_byte(g, b) {
                return false;
            }
            let to = self.state_of(g, st) == target;
            st.pop_bytes(g, 1);
            if !to {
                return false;
            }
        }
        chars(self, g, st, target, UTF8_START)
    }

    /// Whether the words of `w` may run at all in this grammar: every one
    /// of its characters leads the lexer's start, and the state `a` leads
    /// it to, to states where a lexeme goes on, whatever terminals are
    /// allowed, as [`LazyDfa::word_run`] needs of the states after a first
    /// and a second character. Answered once per grammar and alphabet,
    /// from the lexer alone: where every letter is a lexeme of its own (a
    /// GBNF grammar's characters), the grammar's walks do not ask again.
    pub fn words_may_run(&mut self, g: &CompiledGrammar, w: &Words) -> bool {
        let slot = &mut self.words.may_run[w.alphabet as usize];
        *slot.get_or_insert_with(|| {
            let lexer = &g.lexer;
            let t = lexer.next(lexer.start(), WORD_CHAR);
            let any = vec![u64::MAX; lexer.reach(t).len()];
            let goes_on = |q: u32| !lexer.is_terminal(q);
            t != DEAD_STATE && chars_lead(lexer, &w.first, lexer.start(), t, &any, goes_on) && chars_lead(lexer, &w.chars, t, t, &any, goes_on)
        })
    }

    /// The alphabet whose words [`WordIndex`] may take whole from state
    /// `base`, `st`'s own, after the byte of trie node `prefix` (none for
    /// the root): every word character of it some token holds leads there
    /// to one state with a lexeme in progress, and back to that state from
    /// it. The wider alphabet first; remembered per (state, prefix).
    ///
    /// Exact by the lexer alone: inside a lexeme a byte that extends it
    /// moves the configuration by the lexer only ([`LazyDfa::lexer_step`]),
    /// so a character that leads the lexer from the word's state back to it
    /// leads the configuration back too. The first character either starts
    /// a lexeme (no lexeme in progress at the prefix's state) or ends the
    /// one in progress before it (no word character's lead byte extends
    /// it), which ends it the same way for every character, the parser's
    /// step taken once for all by `a`.
    pub fn word_run(&mut self, g: &CompiledGrammar, st: &mut GrammarState, base: u32, ix: &WordIndex, prefix: Option<u8>) -> Option<WordRun> {
        let key = (base, prefix.map_or(u32::MAX, u32::from));
        if let Some(known) = self.words.runs.get(&key) {
            return known.clone();
        }
        let mut found = None;
        if prefix.is_none_or(|b| st.push_byte(g, b)) {
            let bp = if prefix.is_some() { self.state_of(g, st) } else { base };
            if st.push_byte(g, WORD_CHAR) {
                let t = self.state_of(g, st);
                st.pop_bytes(g, 1);
                found = ix.alphabets().into_iter().find_map(|w| {
                    (w.is_first_lead(WORD_CHAR) && self.words_may_run(g, w))
                        .then(|| self.words_lead(g, bp, t, w))
                        .flatten()
                });
            }
            if prefix.is_some() {
                st.pop_bytes(g, 1);
            }
        }
        self.words.runs.insert(key, found.clone());
        found
    }

    /// How the characters of `w` lead state `from` on, where one of them,
    /// `a`, leads it to state `t`: every one to `t` and `t` back to itself
    /// (see [`LazyDfa::word_run`]), or through a few keyword states first
    /// ([`keyword_states`]).
    fn words_lead(&mut self, g: &CompiledGrammar, from: u32, t: u32, w: &Words) -> Option<WordRun> {
        let lexer = &g.lexer;
        let (lt, ipt, set) = self.info[t as usize];
        let (lf, ipf, set_f) = self.info[from as usize];
        if !ipt || lexer.is_terminal(lt) || !intersects(lexer.reach(lt), &self.set_allowed[set as usize]) {
            return None;
        }
        let first = if ipf {
            // The lexeme in progress ends before every word character.
            let allowed = &self.set_allowed[set_f as usize];
            if (0..=255u8).any(|b| w.is_first_lead(b) && extends(lexer, lf, b, allowed)) {
                return None;
            }
            lexer.start()
        } else if set_f == set {
            lf
        } else {
            return None;
        };
        if self.chars_lead(lexer, w, true, first, lt, set) && self.chars_lead(lexer, w, false, lt, lt, set) {
            return Some(WordRun {
                alphabet: w.alphabet,
                lead: WORD_CHAR,
                keywords: None,
            });
        }
        let (_, lead, ks) = self.keyword_states(lexer, w, first, set)?;
        Some(WordRun {
            alphabet: w.alphabet,
            lead,
            keywords: Some((first, ks)),
        })
    }

    /// [`keyword_states`] of ASCII words from lexer state `first` under set
    /// `set`'s allowed terminals, memoised by those terminals.
    fn keyword_states(&mut self, lexer: &Dfa, w: &Words, first: u32, set: u32) -> Option<Keywords> {
        if w.alphabet == Alphabet::Unicode {
            return None;
        }
        let allowed = &self.set_allowed[set as usize];
        let m = &mut *self.words;
        let id = m.allowed_id(allowed);
        let key = (first, id, w.alphabet);
        if let Some(known) = m.keywords.get(&key) {
            return known.clone();
        }
        let mut alike = alike_under(lexer, allowed, &mut m.alike[id as usize]);
        let found = keyword_states(lexer, w, first, allowed, &mut alike);
        m.keywords.insert(key, found.clone());
        found
    }

    /// Whether every character of `w` leads lexer state `from` to `to`, or
    /// to states that walk alike under set `set`'s allowed terminals
    /// ([`WalkStates::equiv`]: an identifier that begins like a keyword
    /// not allowed there), through states that extend a lexeme under them
    /// and that some byte extends (a lexeme in progress all the way, moved
    /// by the lexer alone). Memoised: a walk over the few thousand bytes
    /// of [`Words::chars`].
    ///
    /// A state alike to `to` moves the configuration as `to`'s does: inside
    /// a lexeme the lexer alone moves it, and where the lexeme ends the
    /// parser scans the terminals it matches among the allowed, the same
    /// for both.
    fn chars_lead(&mut self, lexer: &Dfa, w: &Words, first: bool, from: u32, to: u32, set: u32) -> bool {
        let allowed = &self.set_allowed[set as usize];
        let m = &mut *self.words;
        let id = m.allowed_id(allowed);
        let key = (from, to, id, w.alphabet, first);
        if let Some(&known) = m.chars_lead.get(&key) {
            return known;
        }
        let mut alike = alike_under(lexer, allowed, &mut m.alike[id as usize]);
        let ok = chars_lead(lexer, if first { &w.first } else { &w.chars }, from, to, allowed, |q| alike(q, to));
        m.chars_lead.insert(key, ok);
        ok
    }

    fn state_id(&mut self, ls: u32, ip: bool, set: u32) -> u32 {
        let next = self.trans.states as u32;
        let id = *self.states.get_or_insert((ls, ip, set), next);
        if id == next {
            if self.info.len() == RESERVE_STATES_AT {
                // Address space only: pages are touched as states come.
                // Where it is refused, the arrays grow as before.
                let more = RESERVED_STATES - self.info.len();
                let _ = self.info.try_reserve_exact(more);
                let _ = self.loops.try_reserve_exact(more);
                let _ = self.sure.try_reserve_exact(more);
                let _ = self.char_slot.try_reserve_exact(more);
            }
            self.trans.push();
            self.info.push((ls, ip, set));
            self.loops.push([0; 4]);
            self.sure.push(if ip { [0; 2] } else { self.set_sure[set as usize] });
            self.char_slot.push(if ip { 0 } else { NO_LEXEME });
        }
        id
    }

    /// Id of chart set `k` of `st`.
    fn set_id(&mut self, g: &CompiledGrammar, st: &mut GrammarState, k: usize) -> u32 {
        let fp = st.set_fingerprint(g, k);
        let next = self.sets.len() as u32;
        let id = *self.sets.get_or_insert(fp, next);
        if id == next {
            if self.set_allowed.len() == RESERVE_STATES_AT {
                let more = RESERVED_STATES - self.set_allowed.len();
                let _ = self.set_allowed.try_reserve_exact(more);
                let _ = self.set_expected.try_reserve_exact(more);
                let _ = self.set_sure.try_reserve_exact(more);
            }
            self.set_allowed.push(st.allowed_at(g, k).to_vec());
            self.set_expected.push(st.expected_at(g, k).to_vec());
            self.set_sure.push(st.loops_at(g, k));
        }
        id
    }

    /// The state of `st` itself.
    fn state_of(&mut self, g: &CompiledGrammar, st: &mut GrammarState) -> u32 {
        let set = self.set_id(g, st, st.chart_height() - 1);
        let (ls, ip) = st.lexer_position(g);
        self.state_id(ls, ip, set)
    }

    /// The transition from state `from` on byte `b` when the lexer alone
    /// decides it: the byte extends the lexeme in progress (and does not
    /// complete one no byte can extend), or no lexeme is in progress and
    /// the byte starts none. `UNKNOWN` when a lexeme ends, which needs the
    /// parser.
    fn lexer_step(&mut self, g: &CompiledGrammar, from: u32, b: u8) -> u32 {
        let (ls, ip, set) = self.info[from as usize];
        let s2 = g.lexer.next(ls, b);
        let allowed = &self.set_allowed[set as usize];
        if s2 != crate::regex::DEAD && g.lexer.reach(s2).iter().zip(allowed).any(|(x, y)| x & y != 0) {
            if g.lexer.is_terminal(s2) {
                return UNKNOWN;
            }
            return self.state_id(s2, true, set);
        }
        if ip {
            UNKNOWN
        } else {
            DEAD
        }
    }

    /// The state after a lexeme ends in lexer state `s` (one no byte
    /// extends) from a configuration with set `set`, when the parser need
    /// not run: the scan it makes is known from another state with that
    /// set, or scans only `%ignore` terminals. Otherwise [`UNKNOWN`] and
    /// the key under which to remember the scan, with `pushed_before`.
    ///
    /// Why: in a grammar of single-character lexemes (GBNF) every byte
    /// ends one, and a state has a transition per lexer byte class (every
    /// letter of a keyword is its own). Inside an identifier those letters
    /// all scan the same identifier character, so the parser runs once
    /// per scan instead of once per class; nor does the walk replay its
    /// path to get there (PoC JavaScript: three steps in four led to a
    /// known set).
    fn known_scan(&mut self, g: &CompiledGrammar, set: u32, s: u32, pushed_before: usize) -> (u32, Option<PendingScan>) {
        if !intersects(g.lexer.matches(s), &self.set_allowed[set as usize]) {
            return (DEAD, None);
        }
        match self.scan_result(g, set, s, pushed_before) {
            Ok((after, _)) => (self.state_id(g.lexer.start(), false, after), None),
            Err(pending) => (UNKNOWN, Some(pending)),
        }
    }

    /// The set a lexeme ended in lexer state `s` leaves from set `set`
    /// (whose allowed terminals it matches), and whether it scanned only
    /// `%ignore` terminals (the set is then `set` itself, nothing pushed);
    /// or, where no state with that set made this scan yet, what to
    /// remember once the parser has made it.
    fn scan_result(&mut self, g: &CompiledGrammar, set: u32, s: u32, pushed_before: usize) -> Result<(u32, bool), PendingScan> {
        let terms = &mut self.scan_scratch;
        terms.clear();
        terms.extend(g.lexer.matches(s).iter().zip(&self.set_expected[set as usize]).map(|(x, y)| x & y));
        if terms.iter().all(|&w| w == 0) {
            return Ok((set, true));
        }
        let next = self.term_sets.len() as u32;
        let id = match self.term_sets.get(terms) {
            Some(&id) => id,
            None => {
                self.term_sets.insert(terms.clone(), next);
                next
            }
        };
        let key = (set, id);
        match self.scans.get(&key) {
            Some(&after) => Ok((after, false)),
            None => Err(PendingScan { key, pushed_before }),
        }
    }
}

/// Whether byte `b` and the bytes below its node (`below`; a `leaf` has
/// none) all take one of a state's repetitions ([`LazyDfa::sure`]): then
/// every token of the subtree continues the state's configuration, and
/// the walk needs neither its transitions nor its nodes. Inside an
/// identifier where keywords begin (`in`, `import`), each prefix is
/// another configuration, which the walk used to learn one by one.
#[inline(always)]
fn repeats<'a>(g: &CompiledGrammar, [l1, l2]: [u16; 2], b: u8, below: impl Fn() -> Option<&'a [u64; 4]>, leaf: bool) -> bool {
    let covers = |l: u16| {
        let set = g.loop_bytes(l);
        set[b as usize / 64] >> (b % 64) & 1 != 0 && below().map_or(leaf, |bytes| subset(bytes, set))
    };
    l1 != 0 && (covers(l1) || l2 != 0 && covers(l2))
}

/// Times [`known_chars_loop`] may meet a transition not learned yet, per
/// state, before it is no longer asked there.
const MAX_CHAR_MISSES: u8 = 255;

/// Whether every character starting with a byte of `leads` leads state
/// `t` of a [`LazyDfa`], where no lexeme is in progress, back to `t` by
/// transitions already learned (`yes` and `no` as for [`chars_loop`]). A
/// lead byte whose characters meet a transition not learned yet is judged
/// neither way (and counted in `misses`): the walk goes down that subtree
/// and learns it.
///
/// Why: in a grammar of single-character lexemes a comment body (`/* */`'s
/// `( [^*] | "*" [^/] )*`) leads every ordinary character back to one
/// configuration, but the lexer alone cannot tell (each character ends a
/// lexeme), so below every node holding a multi-byte character the walk
/// went byte by byte: the masks after `/*` in llama.cpp's c.gbnf sample
/// took 9 million instructions each.
#[allow(clippy::too_many_arguments)]
fn known_chars_loop(
    trans: &Trans,
    classes: &[u8],
    lexer: &Dfa,
    t: u32,
    leads: &[u64; 4],
    yes: &mut [u64; 4],
    no: &mut [u64; 4],
    misses: &mut u8,
) -> bool {
    use crate::toktrie::{Utf8State, UTF8_INVALID, UTF8_START};
    /// Some(whether every character from `q`, UTF-8 state `u` on, ends at
    /// `t`), None where a transition is not learned.
    fn back(trans: &Trans, classes: &[u8], lexer: &Dfa, t: u32, q: u32, u: Utf8State) -> Option<bool> {
        if u == UTF8_START {
            return Some(q == t);
        }
        let mut all = true;
        for &(c, u2) in lexer.utf8_continuations(u) {
            match trans.get(q, classes[c as usize] as usize) {
                UNKNOWN => return None,
                DEAD => all = false,
                q2 => all &= back(trans, classes, lexer, t, q2, u2)?,
            }
        }
        Some(all)
    }
    judge_leads(leads, yes, no, |b, u| {
        let q = trans.get(t, classes[b as usize] as usize);
        let judged = if u == UTF8_INVALID || q == DEAD {
            Some(false)
        } else if q == UNKNOWN {
            None
        } else {
            back(trans, classes, lexer, t, q, u)
        };
        if judged.is_none() {
            *misses = misses.saturating_add(1);
        }
        judged
    })
}

/// Judge the lead bytes of `leads` not yet in `yes`, one at a time, by
/// `judge` (given the byte and the UTF-8 decoder state after it): a byte
/// judged true joins `yes`, one judged false joins `no` and ends the
/// walk; `None` (not known yet) ends it too, recording nothing. Whether
/// every lead byte was judged true.
#[inline(always)]
fn judge_leads(
    leads: &[u64; 4],
    yes: &mut [u64; 4],
    no: &mut [u64; 4],
    mut judge: impl FnMut(u8, crate::toktrie::Utf8State) -> Option<bool>,
) -> bool {
    use crate::toktrie::{utf8_step, UTF8_START};
    for w in 0..4 {
        let mut todo = leads[w] & !yes[w];
        while todo != 0 {
            let bit = todo & todo.wrapping_neg();
            todo &= todo - 1;
            let b = (w * 64) as u8 + bit.trailing_zeros() as u8;
            match judge(b, utf8_step(UTF8_START, b)) {
                Some(true) => yes[w] |= bit,
                Some(false) => {
                    no[w] |= bit;
                    return false;
                }
                None => return false,
            }
        }
    }
    true
}

/// Whether every character starting with a byte of `leads` leads lexer
/// state `s` back to itself through states live under `allowed`
/// ([`char_loop`], one lead byte at a time). `yes` and `no` hold the lead
/// bytes already judged, and take the ones judged now: a state is asked
/// once per subtree, and only about the characters below it, so judging
/// every character at once (as [`char_loop`] does) cost more than it
/// saved where configurations are many (SynCode SQL: 7% more
/// instructions).
#[inline(never)]
fn chars_loop(lexer: &Dfa, s: u32, allowed: &[u64], leads: &[u64; 4], yes: &mut [u64; 4], no: &mut [u64; 4]) -> bool {
    use crate::toktrie::UTF8_INVALID;
    let live = |q: u32| q != DEAD_STATE && intersects(lexer.reach(q), allowed);
    judge_leads(leads, yes, no, |b, u| {
        Some(u != UTF8_INVALID && char_dest(lexer, s, b, u, Some(s), exact(live)).is_some())
    })
}

/// A trie walk over a [`LazyDfa`] from one parser configuration (the
/// "base"): known transitions are table lookups, and the real parser state
/// trails the walk, replaying the path bytes only when a transition is
/// unknown.
#[derive(Debug, Default)]
pub struct LazyWalk {
    base: u32,
    /// Per depth below the base on the current trie path: the state there
    /// and the byte that led to it (kept between walks to save allocations).
    ids: Vec<u32>,
    path: Vec<u8>,
    /// The bytes `st` took in this walk ([`ByteSnaps`]), the record it
    /// stands at, and per state the first record that stood there: the
    /// parser is moved between records rather than replaying a path.
    snaps: ByteSnaps,
    at: u32,
    snap_of: FxMap<u32, u32>,
}

thread_local! {
    /// A finished walk's records, kept for the thread's next walk: a mask
    /// starts a walk, and growing the records anew each time cost 4% of
    /// the PoC Python grammar's instructions.
    static SPARE_SNAPS: std::cell::Cell<Option<(ByteSnaps, FxMap<u32, u32>)>> = const { std::cell::Cell::new(None) };
}

impl Drop for LazyWalk {
    fn drop(&mut self) {
        let spare = (std::mem::take(&mut self.snaps), std::mem::take(&mut self.snap_of));
        SPARE_SNAPS.with(|s| s.set(Some(spare)));
    }
}

impl LazyWalk {
    /// Walk from `st`'s configuration over `dfa`.
    pub fn new(g: &CompiledGrammar, dfa: &mut LazyDfa, st: &mut GrammarState) -> LazyWalk {
        let mut w = LazyWalk::unset();
        w.reset(g, dfa, st);
        w
    }

    /// A walk to [`LazyWalk::reset`] before use.
    fn unset() -> LazyWalk {
        let mut w = LazyWalk::default();
        if let Some((snaps, snap_of)) = SPARE_SNAPS.with(|s| s.take()) {
            (w.snaps, w.snap_of) = (snaps, snap_of);
        }
        w
    }

    /// Start over from base `st`, keeping the buffers.
    pub fn reset(&mut self, g: &CompiledGrammar, dfa: &mut LazyDfa, st: &mut GrammarState) {
        dfa.init(g);
        self.base = dfa.state_of(g, st);
        self.snaps.clear();
        self.snap_of.clear();
        self.at = NO_SNAP;
    }

    /// Whether byte `b` leads nowhere from the base, as far as `dfa` has
    /// learnt (an unknown transition is not dead).
    #[inline]
    fn dead_from_base(&self, g: &CompiledGrammar, dfa: &LazyDfa, b: u8) -> bool {
        dfa.trans.get(self.base, g.lexer.classes()[b as usize] as usize) == DEAD
    }

    /// Walk the subtree of trie node `root` from the base (`st` must be in
    /// the base configuration, and is left in it), pushing the offset from
    /// `root` of every accepted node where a token ends into `out` (with
    /// [`WHOLE`] set for a subtree accepted whole).
    #[allow(clippy::too_many_arguments)]
    pub fn walk_subtree(
        &mut self,
        g: &CompiledGrammar,
        dfa: &mut LazyDfa,
        trie: &TokTrie,
        below: &SubtreeBytes,
        st: &mut GrammarState,
        root: usize,
        out: &mut Vec<u32>,
    ) {
        // Most grammars have no repetition of one-byte lexemes (or, where
        // lexemes are longer, none are kept): their walk does not pay for
        // asking (it costs a few percent per node).
        if g.num_loop_sets() == 0 {
            self.walk_subtree_with::<false>(g, dfa, trie, below, st, root, out)
        } else {
            self.walk_subtree_with::<true>(g, dfa, trie, below, st, root, out)
        }
    }

    /// [`LazyWalk::walk_subtree`], looking for subtrees of one
    /// repetition's bytes (`LOOPS`) or not.
    #[allow(clippy::too_many_arguments)]
    fn walk_subtree_with<const LOOPS: bool>(
        &mut self,
        g: &CompiledGrammar,
        dfa: &mut LazyDfa,
        trie: &TokTrie,
        below: &SubtreeBytes,
        st: &mut GrammarState,
        root: usize,
        out: &mut Vec<u32>,
    ) {
        let d0 = trie.node_depth(root) - 1;
        let end = trie.subtree_end(root);
        let need = trie.max_depth() + 2;
        if self.ids.len() < need {
            self.ids.resize(need, 0);
            self.path.resize(need, 0);
        }
        // Sliced to the subtree: `nodes[i]` for `i < nodes.len()` then
        // needs no check.
        let nodes = &trie.nodes()[..end];
        let classes = g.lexer.classes();
        // ids[k]: state after k bytes below the base on the current path;
        // path[k]: the (k+1)-th byte. `st` stands at record `self.at`
        // (the base at first and at the end).
        debug_assert_eq!(self.at, NO_SNAP);
        self.ids[0] = self.base;
        let mut i = root;
        loop {
            // Fast path: known transitions only (a table lookup per node).
            // Its reads go unchecked where the walk's invariants bound
            // them (asserted here, or below per node in debug builds):
            // bounds checks were a fifth of its instructions, and the
            // loop visits every live node of a dense first-visit mask.
            {
                let (trans, ids, path) = (&dfa.trans, &mut self.ids[..need], &mut self.path[..need]);
                let (loops, sure) = (&dfa.loops[..], &dfa.sure[..]);
                let (char_slot, char_loops, char_misses) = (&mut dfa.char_slot[..], &mut dfa.char_loops, &mut dfa.char_misses);
                let (info, set_allowed) = (&dfa.info[..], &dfa.set_allowed[..]);
                // Every state of the table has its loops and character
                // slot (pushed together in `state_id`), and the table is
                // this grammar's: every byte class of its lexer (below
                // `num_classes`) is below the stride.
                assert!(loops.len() >= trans.states && char_slot.len() >= trans.states);
                assert!(g.lexer.num_classes() <= trans.stride);
                while i < nodes.len() {
                    let node = nodes[i];
                    // 1-based depth below the base: a node below `root` is
                    // deeper than the base's depth `d0`, and no deeper than
                    // the trie (`need` = its depth + 2).
                    let d = node.depth as usize - d0;
                    debug_assert!(d >= 1 && d < need);
                    // A byte that takes a repetition once more, with only
                    // such bytes below: the whole subtree is accepted, its
                    // transitions not needed (`[a-z0-9_]*` inside an
                    // identifier, whatever keywords its prefixes begin).
                    if LOOPS
                        && repeats(
                            g,
                            sure[ids[d - 1] as usize],
                            node.byte,
                            || below.get(i),
                            node.subtree_end as usize == i + 1,
                        )
                    {
                        out.push((i - root) as u32 | WHOLE);
                        i = node.subtree_end as usize;
                        continue;
                    }
                    // SAFETY: `1 <= d < need` (above); `ids` holds states
                    // of the table (the base, then transitions taken),
                    // and classes are below the stride (asserted).
                    let from = unsafe { *ids.get_unchecked(d - 1) };
                    let t = unsafe { trans.get_unchecked(from, classes[node.byte as usize] as usize) };
                    if t == UNKNOWN {
                        break;
                    }
                    if t == DEAD {
                        i = node.subtree_end as usize;
                        continue;
                    }
                    // SAFETY: `1 <= d < need`.
                    unsafe {
                        *ids.get_unchecked_mut(d) = t;
                        *path.get_unchecked_mut(d - 1) = node.byte;
                    }
                    if let Some(bytes) = below.get(i) {
                        // Every byte below leads back to `t`: the whole
                        // subtree is accepted.
                        // SAFETY: `t` is a state of the table (asserted
                        // above: every state has its loops).
                        let set = unsafe { loops.get_unchecked(t as usize) };
                        if subset(bytes, set) {
                            out.push((i - root) as u32 | WHOLE);
                            i = node.subtree_end as usize;
                            continue;
                        }
                        // Below a node of whole characters, characters
                        // rather than bytes must lead back: an identifier
                        // of any script (`\w+` below ` caf` holds `é`,
                        // two bytes, neither of which loops alone), or a
                        // GBNF comment's `[^*]` (one lexeme per character,
                        // judged by the transitions learned).
                        // SAFETY: as for `loops`.
                        let flagged = unsafe { *char_slot.get_unchecked(t as usize) };
                        let lexeme = flagged & NO_LEXEME == 0;
                        // Where no lexeme is in progress, ASCII characters
                        // are bytes: those below must loop already.
                        if flagged != NO_CHAR_LOOPS && (lexeme || subset(&[bytes[0], bytes[1], 0, 0], set)) && below.whole_chars_below(i) {
                            let slot = if flagged & !NO_LEXEME == 0 {
                                char_loops.push(([0; 4], [0; 4]));
                                char_misses.push(0);
                                char_slot[t as usize] = flagged | char_loops.len() as u32;
                                char_loops.len()
                            } else {
                                (flagged & !NO_LEXEME) as usize
                            };
                            let (yes, no) = &mut char_loops[slot - 1];
                            let leads = lead_bytes(bytes);
                            if !leads.iter().zip(no.iter()).any(|(l, n)| l & n != 0) {
                                let misses = &mut char_misses[slot - 1];
                                if subset(&leads, yes)
                                    || if lexeme {
                                        let (ls, _, set_id) = info[t as usize];
                                        chars_loop(&g.lexer, ls, &set_allowed[set_id as usize], &leads, yes, no)
                                    } else {
                                        *misses < MAX_CHAR_MISSES && known_chars_loop(trans, classes, &g.lexer, t, &leads, yes, no, misses)
                                    }
                                {
                                    out.push((i - root) as u32 | WHOLE);
                                    i = node.subtree_end as usize;
                                    continue;
                                }
                            }
                        }
                    }
                    if node.ntok != 0 {
                        out.push((i - root) as u32);
                    }
                    i += 1;
                }
            }
            if i >= end {
                break;
            }
            // Slow path: a transition seen for the first time.
            let node = nodes[i];
            let d = node.depth as usize - d0;
            let b = node.byte;
            let from = self.ids[d - 1];
            let class = classes[b as usize] as usize;
            let mut t = dfa.lexer_step(g, from, b);
            let mut scan_key = None;
            if t == UNKNOWN {
                // A lexeme ends here: if the same scan from the same set
                // was seen, its known result is taken.
                let (ls, _, set) = dfa.info[from as usize];
                let allowed = &dfa.set_allowed[set as usize];
                if extends(&g.lexer, ls, b, allowed) {
                    // `b` completes a lexeme no byte extends (a GBNF
                    // character, a closing quote).
                    (t, scan_key) = dfa.known_scan(g, set, g.lexer.next(ls, b), 0);
                } else if !intersects(g.lexer.matches(ls), allowed) {
                    t = DEAD;
                } else {
                    match dfa.scan_result(g, set, ls, 0) {
                        Ok((after, ignored)) => {
                            let fresh = dfa.state_id(g.lexer.start(), false, after);
                            t = dfa.lexer_step(g, fresh, b);
                            if t == UNKNOWN {
                                // `b` alone is a lexeme no byte extends.
                                let s3 = g.lexer.next(g.lexer.start(), b);
                                (t, scan_key) = dfa.known_scan(g, after, s3, usize::from(!ignored));
                            }
                        }
                        Err(pending) => scan_key = Some(pending),
                    }
                }
            }
            if t == UNKNOWN {
                if self.snaps.full() {
                    self.snaps.goto(g, st, self.at, NO_SNAP);
                    self.snaps.clear();
                    self.snap_of.clear();
                    self.at = NO_SNAP;
                }
                // Put the parser in state `from`: where this walk's parser
                // stood in it before, copy those sets back; otherwise from
                // the deepest state on the path it stood in, take the
                // path's bytes. A byte known to lead a state back to
                // itself is skipped: `st` is then in a configuration with
                // the same future, which is all a transition depends on
                // (inside an identifier, most of the path).
                if self.snaps.name(self.at, self.base) != from {
                    let mut j = d - 1;
                    let mut to = NO_SNAP;
                    while j > 0 {
                        if let Some(&r) = self.snap_of.get(&self.ids[j]) {
                            to = r;
                            break;
                        }
                        if self.ids[j] == self.base {
                            break;
                        }
                        j -= 1;
                    }
                    self.snaps.goto(g, st, self.at, to);
                    self.at = to;
                    while j < d - 1 {
                        if self.ids[j + 1] != self.ids[j] {
                            let ok = st.push_byte(g, self.path[j]);
                            debug_assert!(ok, "replaying a known transition");
                            self.at = self.snaps.record(g, st, self.at, self.ids[j + 1]);
                            self.snap_of.entry(self.ids[j + 1]).or_insert(self.at);
                        }
                        j += 1;
                    }
                }
                let before = st.chart_height();
                t = if st.push_byte(g, b) {
                    let after = st.chart_height();
                    let (ls, ip) = st.lexer_position(g);
                    let set = if after == before {
                        dfa.info[from as usize].2
                    } else {
                        dfa.set_id(g, st, after - 1)
                    };
                    if let Some(PendingScan { key, pushed_before }) = scan_key {
                        // The scan pushed set `before + pushed_before` (a
                        // byte that alone completes a lexeme may have pushed
                        // another after it).
                        let at = before + pushed_before;
                        if after > at {
                            let id = if after == at + 1 { set } else { dfa.set_id(g, st, at) };
                            dfa.scans.insert(key, id);
                        }
                    }
                    let to = dfa.state_id(ls, ip, set);
                    self.at = self.snaps.record(g, st, self.at, to);
                    self.snap_of.entry(to).or_insert(self.at);
                    to
                } else {
                    DEAD
                };
            }
            dfa.trans.set(from, class, t);
            if t == from {
                for (w, x) in dfa.loops[from as usize].iter_mut().zip(&g.lexer.class_bytes()[class].1) {
                    *w |= x;
                }
            }
            // The fast path now takes this node with the known transition.
        }
        self.snaps.goto(g, st, self.at, NO_SNAP);
        self.at = NO_SNAP;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::grammar::earley::{GrammarState, GrammarWalker};
    use crate::grammar::json::{json_grammar, Whitespace};
    use crate::grammar::GrammarLimits;
    use crate::matcher::TokEnv;
    use crate::vocab::Vocabulary;

    /// A real tokenizer's environment from `../shared`, or `None` (the
    /// test skips) where it is absent.
    pub(crate) fn load_env(name: &str) -> Option<std::sync::Arc<TokEnv>> {
        let path = format!("{}/../shared/tokenizers/{name}/tokenizer.json", env!("CARGO_MANIFEST_DIR"));
        let Ok(json) = std::fs::read_to_string(&path) else {
            eprintln!("skipping: {path} not found");
            return None;
        };
        Some(TokEnv::new(Vocabulary::from_tokenizer_json(&json, None, None).unwrap()))
    }

    /// `g`'s state after `pre`, which it must accept.
    fn state_after(g: &CompiledGrammar, pre: &str) -> GrammarState {
        let mut st = GrammarState::new(g).unwrap();
        assert!(pre.bytes().all(|b| st.push_byte(g, b)), "{pre:?}");
        st
    }

    /// `text` in `syntax` ("gbnf" or "lark"), compiled with default limits.
    fn compiled(syntax: &str, text: &str) -> CompiledGrammar {
        let lim = GrammarLimits::default();
        let g = match syntax {
            "gbnf" => crate::grammar::gbnf::parse_gbnf(text, &lim),
            "lark" => crate::grammar::lark::parse_lark(text, &lim),
            other => panic!("no grammar syntax {other:?}"),
        };
        CompiledGrammar::new(&g.unwrap(), &lim).unwrap()
    }

    /// [`StartEntries`] built afresh at every ask.
    struct TestStarts<'a> {
        env: &'a TokEnv,
        g: &'a CompiledGrammar,
        memo: &'a BodyMemo,
    }

    impl StartEntries for TestStarts<'_> {
        fn start_entry(&self, allowed: &[u64]) -> Option<std::sync::Arc<LexEntry>> {
            let (env, g) = (self.env, self.g);
            let e = LexEntry::build(
                g,
                env.trie(),
                env.subtree_bytes(),
                Some(env.body_index()),
                Some(env.word_index()),
                Some(self.memo),
                g.lexer.start(),
                false,
                allowed,
                env.mask_words(),
            );
            Some(std::sync::Arc::new(e))
        }

        fn first_bytes(&self, bytes: &[u64; 4]) -> std::sync::Arc<[u32]> {
            self.env.first_bytes(bytes)
        }

        fn first_byte(&self, t: u32) -> u8 {
            self.env.vocab().token_bytes(t)[0]
        }
    }

    /// Panics, naming the tokens allowed by one mask only, where two differ.
    fn same_masks(got: &[u32], want: &[u32], vocab: &crate::vocab::Vocabulary, what: &str) {
        if got == want {
            return;
        }
        let (g, w) = (crate::bitmask::ones(got), crate::bitmask::ones(want));
        let name = |t: &u32| String::from_utf8_lossy(vocab.token_bytes(*t)).into_owned();
        let extra: Vec<String> = g.iter().filter(|t| !w.contains(t)).take(20).map(name).collect();
        let missing: Vec<String> = w.iter().filter(|t| !g.contains(t)).take(20).map(name).collect();
        panic!("{what}: allowed but should not be {extra:?}; not allowed but should be {missing:?}");
    }

    /// Feed `doc` byte by byte; before every `stride`-th byte (and at the
    /// end) the layered mask must equal a plain trie walk with the full
    /// parser.
    fn check_doc(env: &TokEnv, g: &CompiledGrammar, doc: &str, stride: usize, complete: bool) {
        let (trie, shapes, words) = (env.trie(), env.shapes(), env.mask_words());
        let mut st = GrammarState::new(g).unwrap();
        // One walk cache for the whole document, as a matcher has.
        let walks = std::sync::Mutex::new(WalkCache::default());
        // One automaton for the whole document too (warm), and a fresh one
        // per mask for the one-walk check (cold).
        let mut dfa = LazyDfa::default();
        let memo = BodyMemo::default();
        let n = doc.len();
        for (i, byte) in doc.bytes().chain(std::iter::once(0)).enumerate() {
            if i % stride == 0 || i == n {
                let (ls, ip, allowed) = st.lexer_view(g);
                let allowed = allowed.to_vec();
                let entry = LexEntry::build(
                    g,
                    trie,
                    env.subtree_bytes(),
                    Some(env.body_index()),
                    Some(env.word_index()),
                    Some(&memo),
                    ls,
                    ip,
                    &allowed,
                    words,
                );
                let mut fast = vec![0u32; words];
                fill_from_entry(
                    g,
                    &mut dfa,
                    trie,
                    shapes,
                    env.subtree_bytes(),
                    (env.body_index(), &memo),
                    Some(env.word_index()),
                    &mut st,
                    &entry,
                    &walks,
                    &|_| true,
                    &TestStarts { env, g, memo: &memo },
                    &mut fast,
                );
                let mut slow = vec![0u32; words];
                trie.add_allowed(&mut GrammarWalker { g, st: &mut st }, &mut slow);
                assert_eq!(
                    crate::bitmask::ones(&fast),
                    crate::bitmask::ones(&slow),
                    "{:?} before byte {i}",
                    String::from_utf8_lossy(&doc.as_bytes()[..i.min(n)])
                );
                if !ip {
                    let mut whole = vec![0u32; words];
                    fill_by_walk(g, &mut LazyDfa::default(), trie, shapes, env.subtree_bytes(), None, &mut st, &mut whole);
                    same_masks(&whole, &slow, env.vocab(), &format!("one walk, before byte {i} of {doc:?}"));
                    fill_by_walk(
                        g,
                        &mut LazyDfa::default(),
                        trie,
                        shapes,
                        env.subtree_bytes(),
                        Some(env.body_index()),
                        &mut st,
                        &mut whole,
                    );
                    same_masks(
                        &whole,
                        &slow,
                        env.vocab(),
                        &format!("one walk with string bodies, before byte {i} of {doc:?}"),
                    );
                }
            }
            if i == n {
                break;
            }
            assert!(st.push_byte(g, byte), "{doc:?} rejected at byte {i}");
        }
        assert!(!complete || st.is_accepting(g), "{doc:?} not accepted");
    }

    /// The real grammars and samples of the grammar bench (benches/grammars
    /// and ../shared/grammars: llama.cpp GBNF, Lark, SynCode) on GPT-2 and
    /// Llama 3: the cold path (lexer layer + lazy walk) equals the plain walk
    /// at every 5th byte of the first 1,500 bytes of each sample.
    #[test]
    fn lazy_walk_equals_plain_walk_on_real_grammars() {
        let mut files = Vec::new();
        for dir in [
            concat!(env!("CARGO_MANIFEST_DIR"), "/benches/grammars"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/grammars"),
        ] {
            let Ok(entries) = std::fs::read_dir(dir) else {
                eprintln!("skipping {dir}: not found");
                continue;
            };
            files.extend(
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "gbnf" || x == "lark")),
            );
        }
        files.sort();
        assert!(files.len() >= 9, "{files:?}");
        for vname in ["gpt2", "llama-3-8b-instruct"] {
            let Some(env) = load_env(vname) else { return };
            for f in &files {
                let text = std::fs::read_to_string(f).unwrap();
                let sample = std::fs::read_to_string(f.with_extension("1.txt")).unwrap();
                // A prefix of long samples (json_arr's 150 elements), closed.
                let sample = if sample.len() > 1500 {
                    let cut = sample[..1500].rfind(",\n").expect("a long sample is a list");
                    format!("{}]", &sample[..cut])
                } else {
                    sample
                };
                // The plain walk runs the full parser at every trie node: on
                // the highly ambiguous PoC grammars (nullable `ws` between
                // all symbols) that is seconds per mask, so only their first
                // 240 bytes are checked (the sample is then a prefix).
                let stem = f.file_stem().unwrap().to_string_lossy();
                let slow = stem.starts_with("llamacpp-poc-");
                let (sample, complete) = if slow {
                    let mut n = 240.min(sample.len());
                    while !sample.is_char_boundary(n) {
                        n -= 1;
                    }
                    (sample[..n].to_string(), n == sample.len())
                } else {
                    (sample, true)
                };
                let g = compiled(&f.extension().unwrap().to_string_lossy(), &text);
                check_doc(&env, &g, &sample, 5, complete);
            }
        }
    }

    /// Subtrees of multi-byte characters are taken whole only where every
    /// character leads back to the body's state: a JSON string body (any
    /// character but `"`, `\` and controls) and a body of a few chosen
    /// characters (`é` but not `è`, whose lead byte it shares), on GPT-2
    /// and Llama 3, against the plain walk at every byte.
    #[test]
    fn multibyte_string_bodies_equal_plain_walk() {
        let json = CompiledGrammar::new(&json_grammar(Whitespace::Compact, 4).unwrap(), &GrammarLimits::default()).unwrap();
        let chosen = compiled("lark", "start: STR\nSTR: /\"[a-zé日]*\"/\n");
        for name in ["gpt2", "llama-3-8b-instruct"] {
            let Some(env) = load_env(name) else { return };
            check_doc(&env, &json, r#"["日本語 é😀 \u00e9","ĥ"]"#, 1, true);
            check_doc(&env, &chosen, "\"abé日c\"", 1, true);
        }
    }

    /// DEL (0x7F) is not a body character of the index ([`body::is_body_ascii`]):
    /// string rules that exclude it (llama.cpp's json.gbnf) use the index,
    /// and where a string allows it its tokens are walked as entries. Both,
    /// on GPT-2 and Llama 3, against the plain walk at every byte.
    #[test]
    fn del_in_string_bodies_equals_plain_walk() {
        let allows = compiled(
            "lark",
            r#"start: STR
STR: /"[^"\\\x00-\x1f]*"/"#,
        );
        let excludes = compiled(
            "gbnf",
            r#"root ::= string ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" [nt"] )* "\""
ws ::= " "?"#,
        );
        for name in ["gpt2", "llama-3-8b-instruct"] {
            let Some(env) = load_env(name) else { return };
            check_doc(&env, &allows, "\"ab\u{7f}c d\u{7f}\u{7f}é\"", 1, true);
            check_doc(&env, &excludes, "\"ab c\\n dé\"", 1, true);
        }
        // Inside either string the index applies (it did not where DEL was
        // a body character that the rule excludes).
        let Some(env) = load_env("llama-3-8b-instruct") else { return };
        for g in [&allows, &excludes] {
            let mut st = GrammarState::new(g).unwrap();
            assert!(st.push_byte(g, b'"') && st.push_byte(g, b'a'));
            let (ls, ip, allowed) = st.lexer_view(g);
            let memo = BodyMemo::default();
            let plan = LexEntry::plan(g, Some(env.body_index()), Some(env.word_index()), Some(&memo), ls, ip, allowed);
            assert!(plan.uses_index());
        }
    }

    /// Subtrees of whole characters below an identifier are taken whole
    /// where every character met leads back (`\w` of any script), and
    /// walked where one does not (a `-`, a `,`, an emoji): identifiers
    /// after a separator, so that the parser's walk (not the lexer layer)
    /// meets them, on GPT-2 and Llama 3 against the plain walk at every
    /// byte.
    #[test]
    fn identifier_subtrees_of_any_script_equal_plain_walk() {
        let g = compiled(
            "lark",
            r#"start: NAME ("," NAME)* ";"
NAME: /\w+/
%ignore " ""#,
        );
        for name in ["gpt2", "llama-3-8b-instruct"] {
            let Some(env) = load_env(name) else { return };
            check_doc(&env, &g, "café, naïve,日本語 ,x_1,Ωμέγα;", 1, true);
        }
    }

    /// Subtrees spelled with the bytes of one repetition (`[a-z0-9_]*`
    /// after an identifier's first letter, a `*` over a group of
    /// characters) are taken whole without a parser step, but only one
    /// repetition's bytes at a time: after `x` in `x = 1`, `x1` and `\t\t`
    /// continue while `\tif` does not. Keywords that begin inside
    /// identifiers (`in`, `if`) make each prefix another configuration,
    /// which the walk used to learn one by one. Against the plain walk at
    /// every byte on GPT-2 and Llama 3, and which repetitions a set keeps.
    #[test]
    fn repetition_subtrees_equal_plain_walk() {
        let gbnf = compiled(
            "gbnf",
            r#"root ::= (stmt ws)*
stmt ::= id ws "=" ws expr ws ";" | "if" ws id ws ";"
expr ::= id | [0-9]+ | expr ws "in" ws expr
id ::= [a-z_] [a-z0-9_]*
ws ::= ([ \t] | "\n")*"#,
        );
        for name in ["gpt2", "llama-3-8b-instruct"] {
            let Some(env) = load_env(name) else { return };
            check_doc(&env, &gbnf, "x = 1;\nif\tinx ;\nin_if = ain in b12in ;\t\n", 1, true);
        }
        // After `x`: the identifier's letters and the whitespace, apart.
        let mut st = GrammarState::new(&gbnf).unwrap();
        assert!(st.push_byte(&gbnf, b'x'));
        let bytes = |l: u16| {
            (0..=255u8)
                .filter(|&b| gbnf.loop_bytes(l)[b as usize / 64] >> (b % 64) & 1 != 0)
                .collect::<Vec<u8>>()
        };
        let sets: Vec<Vec<u8>> = st
            .loops_at(&gbnf, st.chart_height() - 1)
            .into_iter()
            .filter(|&l| l != 0)
            .map(bytes)
            .collect();
        assert_eq!(sets, [b"0123456789_abcdefghijklmnopqrstuvwxyz".to_vec(), b"\t\n ".to_vec()]);
    }

    /// Where a lexeme in progress may end at the token's start, the
    /// tokens after its end come from the entry of the state it leaves
    /// (an identifier, a number, a keyword that is also a prefix of one;
    /// ignored spaces and comments; ignored whitespace a rule also
    /// expects, which is then scanned). Checked against the plain walk at
    /// every byte on GPT-2 and Llama 3.
    #[test]
    fn ends_at_the_token_start_equal_plain_walk() {
        let code = compiled(
            "lark",
            r#"start: (NAME | NUMBER | "(" | ")" | "," | "for" | "=")*
NAME: /[a-z_][a-z_0-9]*/
NUMBER: /[0-9]+/
COMMENT: /#[^\n]*/
%ignore " "
%ignore /\n+/
%ignore COMMENT
"#,
        );
        let used = compiled(
            "lark",
            r#"start: item+
item: NAME | NAME WS ":" | "[" WS? "]" | NUMBER
NAME: /[a-z]+/
NUMBER: /[0-9]+/
WS: / +/
%ignore WS
"#,
        );
        // After `a` the token `ab` extends `A` (`aa`, then `b` starts no
        // `B`): only first bytes that do not extend the lexeme in progress
        // may read the token as after its end (`a`, then `ab`).
        let munch = compiled("lark", "start: A B\nA: /a+/\nB: /ab/\n");
        for name in ["gpt2", "llama-3-8b-instruct"] {
            let Some(env) = load_env(name) else { return };
            check_doc(&env, &code, "foo(bar, 12) # the for\n  form = fort(x_1)  # end\n for", 1, true);
            check_doc(&env, &used, "ab :[ ]12  cd  :[]7 x", 1, true);
            check_doc(&env, &munch, "aa", 1, false);
        }
    }

    /// Inside a GBNF comment every body character leads back to the same
    /// configuration, and the one-walk mask takes the body tokens from the
    /// index; where a body character does not (letters only, a `*` that
    /// may close the comment, a character that must be followed by `x`, a
    /// first character that may not be `!`) it walks as before. Both
    /// against the plain walk at every byte, GPT-2 and Llama 3, with
    /// multi-byte characters, quotes, backslashes and controls.
    #[test]
    fn comment_bodies_from_the_index_equal_plain_walk() {
        // Nesting and `/x` keep the comments character by character (a
        // promoted comment would be one lexeme: see `promote`), as in
        // c.gbnf, where `/` is also division.
        let gbnf = |body: &str| {
            let text = format!("root ::= item+\nitem ::= comment | \"(\" item* \")\" | \"x\" | \"/x\"\ncomment ::= {body}\n");
            let g = compiled("gbnf", &text);
            assert!(g.prefix_free_lexemes, "{text}");
            g
        };
        let comment = gbnf(r#""//" [^\n]* "\n""#);
        let no_quote = gbnf(r#""//" [^\n"]* "\n""#);
        let letters = gbnf(r#""//" [a-z é]* "\n""#);
        let closing = gbnf(r#""/*" ([^*] | "*" [^/])* "*/""#);
        let kanji_then_x = gbnf(r#""//" ([^\n日] | "日x")* "\n""#);
        let no_bang_first = gbnf(r#""//" ([^\n!] [^\n]*)? "\n""#);
        // The shortcut is taken inside the first two comments, right after
        // `//` too (a quote is no body character: its tokens are walked),
        // and not in the others.
        let inside = |g: &CompiledGrammar, pre: &str| {
            let mut st = GrammarState::new(g).unwrap();
            assert!(pre.bytes().all(|b| st.push_byte(g, b)));
            let mut dfa = LazyDfa::default();
            let w = LazyWalk::new(g, &mut dfa, &mut st);
            dfa.body_run(g, &mut st, w.base).is_some()
        };
        assert!(inside(&comment, "x//") && inside(&comment, "x//ab") && inside(&no_quote, "x//ab"));
        assert!(!inside(&letters, "//ab") && !inside(&closing, "/*ab") && !inside(&kanji_then_x, "//ab"));
        assert!(!inside(&no_bang_first, "//") && inside(&no_bang_first, "//a"));
        for name in ["gpt2", "llama-3-8b-instruct"] {
            let Some(env) = load_env(name) else { return };
            check_doc(&env, &comment, "x// a \"q\" \\ é日本 😀\tend\nx//\n", 1, true);
            check_doc(&env, &no_quote, "// a é日本 😀\nx", 1, true);
            check_doc(&env, &letters, "// ab é z\nx", 1, true);
            check_doc(&env, &kanji_then_x, "// a é 日x本 \"\nx", 1, true);
            check_doc(&env, &no_bang_first, "// a!\n//\nx", 1, true);
            check_doc(&env, &closing, "/* a * b é日本 😀 \"q\" */x", 1, true);
        }
    }

    /// A lexeme that may end anywhere inside a run of body characters (an
    /// INI value `/./+`, a `#` comment to the end of the line, a value of
    /// one to six characters) takes its body tokens from the index, its
    /// boundaries at the entries' parents: against the plain walk at every
    /// byte, GPT-2 and Llama 3, with multi-byte characters, quotes,
    /// backslashes and tabs.
    #[test]
    fn lexemes_that_may_end_inside_a_run_equal_plain_walk() {
        let conf = compiled(
            "lark",
            "start: item+\nitem: NAME \"=\" VALUE? _NL\nNAME: /\\w/+\nVALUE: /./+\n_NL: /\\r?\\n/\n%ignore \" \"\n",
        );
        let comment = compiled(
            "lark",
            "start: (NAME \";\")+\nNAME: /[a-z]+/\nCOMMENT: /#[^\\n]*/\n%ignore COMMENT\n%ignore /[ \\n]/\n",
        );
        let short = compiled("lark", "start: (SHORT _NL)+\nSHORT: /.{1,6}/\n_NL: \"\\n\"\n");
        // Inside each lexeme the plan is a run, not a walk of the trie.
        let run_inside = |g: &CompiledGrammar, pre: &str, env: &TokEnv| {
            let st = state_after(g, pre);
            let (ls, ip, allowed) = st.lexer_view(g);
            assert!(ip, "{pre:?}");
            LexEntry::plan(g, Some(env.body_index()), None, None, ls, ip, allowed).uses_index()
        };
        for name in ["gpt2", "llama-3-8b-instruct"] {
            let Some(env) = load_env(name) else { return };
            assert!(run_inside(&conf, "a=b", &env) && run_inside(&conf, "a = b c", &env));
            assert!(run_inside(&comment, "a; #x", &env) && run_inside(&short, "ab", &env));
            check_doc(&env, &conf, "host = 0.0.0.0\nname=A \"q\" \\ é日本 😀\tend\r\nx=\ny = ,;[]\n", 1, true);
            check_doc(&env, &comment, "ab; # a \"q\" \\ é日本 😀\n#\ncd;#x", 1, true);
            check_doc(&env, &short, "a\nabcdef\né日本 😀\n\"\\ \t\n", 1, true);
        }
    }

    /// Identifiers from the word index: after a bracket (no lexeme in
    /// progress, a space perhaps before the word) the walk takes word
    /// tokens from the index ([`LazyDfa::word_run`]), and inside an
    /// identifier so does the lexer layer ([`Plan::Words`]); in Unicode
    /// words (`\w`), ASCII ones (`CNAME`-like), and not where keywords begin
    /// like identifiers, or where a word may not follow. Against the plain
    /// walk at every byte, GPT-2 and Llama 3.
    #[test]
    fn words_from_the_index_equal_plain_walk() {
        let conf = compiled(
            "lark",
            "start: section+\nsection: \"[\" NAME \"]\" _NL item*\nitem: NAME \"=\" NAME? _NL\nNAME: /\\w/+\n_NL: /\\n/\n%ignore /[ \\t]+/\n",
        );
        let ascii = compiled(
            "lark",
            "start: (NAME \"(\" NAME? \")\" \";\")+\nNAME: /[a-zA-Z_][a-zA-Z0-9_]*/\n%ignore \" \"\n",
        );
        let keyword = compiled("lark", "start: (\"if\" NAME \";\" | NAME \";\")+\nNAME: /\\w+/\n%ignore \" \"\n");
        // Keywords allowed at a statement's start, not inside an
        // expression, where a word that begins like one is an identifier.
        let c_like = compiled(
            "lark",
            "start: stmt+\nstmt: \"int\" NAME \"=\" expr \";\" | NAME \"=\" expr \";\" | \"while\" \"(\" expr \")\" \"{\" stmt* \"}\"\nexpr: NAME | NUMBER | expr \"+\" expr | \"(\" expr \")\"\nNAME: /[a-zA-Z_][a-zA-Z_0-9]*/\nNUMBER: /[0-9]+/\n%ignore /[ \\t\\n]+/\n",
        );
        for name in ["gpt2", "llama-3-8b-instruct"] {
            let Some(env) = load_env(name) else { return };
            let ix = env.word_index();
            // The walk's question, after `pre`, with no prefix or a space.
            let run = |g: &CompiledGrammar, pre: &str, prefix: Option<u8>| {
                let mut st = state_after(g, pre);
                let mut dfa = LazyDfa::default();
                let w = LazyWalk::new(g, &mut dfa, &mut st);
                dfa.word_run(g, &mut st, w.base, ix, prefix).map(|r| (r.alphabet, r.keywords.is_some()))
            };
            // The lexer layer's plan, inside a lexeme.
            let plan = |g: &CompiledGrammar, pre: &str| {
                let st = state_after(g, pre);
                let (ls, ip, allowed) = st.lexer_view(g);
                match LexEntry::plan(g, Some(env.body_index()), Some(ix), None, ls, ip, allowed).plan {
                    Plan::Words(parts) => parts
                        .iter()
                        .find(|p| p.prefix.node == 0)
                        .map(|p| (p.words.alphabet, p.keywords.is_some())),
                    _ => None,
                }
            };
            let (unicode, ascii_, ident) = (Alphabet::Unicode, Alphabet::Ascii, Alphabet::AsciiIdent);
            assert_eq!(run(&conf, "[", None), Some((unicode, false)));
            assert_eq!(run(&conf, "[", Some(b' ')), Some((unicode, false)));
            assert_eq!(run(&conf, "[a]\n", None), Some((unicode, false)));
            assert_eq!(run(&ascii, "f(", None), Some((ident, false)));
            assert_eq!(run(&ascii, "f(", Some(b' ')), Some((ident, false)));
            assert_eq!(run(&ascii, "f", None), None, "a lexeme in progress that a word extends");
            assert_eq!(plan(&conf, "[ab"), Some((unicode, false)));
            assert_eq!(plan(&ascii, "f(ab"), Some((ascii_, false)));
            assert_eq!(plan(&keyword, "ab"), Some((unicode, false)));
            // Keywords the position does not allow: a word that begins like
            // one walks alike.
            assert_eq!(run(&keyword, "if ", None), Some((unicode, false)), "`if` is not allowed after `if`");
            assert_eq!(plan(&keyword, "if i"), Some((unicode, false)));
            assert_eq!(run(&c_like, "int x = ", None), Some((ident, false)));
            assert_eq!(run(&c_like, "x=(", Some(b' ')), Some((ident, false)));
            assert_eq!(plan(&c_like, "x = wh"), Some((ascii_, false)));
            // Keywords it allows: ASCII words pass through their states.
            assert_eq!(run(&keyword, "", None), Some((ascii_, true)), "`if` begins like a word");
            assert_eq!(plan(&keyword, "i"), Some((ascii_, true)), "`i` may go on to `if`");
            assert_eq!(run(&c_like, "x=1;", None), Some((ident, true)), "`int` and `while` are allowed");
            assert_eq!(run(&c_like, "x=1;", Some(b'\n')), Some((ident, true)));
            assert_eq!(plan(&c_like, "wh"), Some((ascii_, true)), "`wh` may go on to `while`");
            // Not where a keyword state loops (a word of `x`s, then `y`).
            let looping = compiled("lark", "start: (K | NAME)+\nK: /x+y/\nNAME: /[a-z]+/\n%ignore \" \"\n");
            assert_eq!(run(&looping, "", None), None);
            // A keyword, or an identifier, may end before a non-ASCII
            // letter (`i` + `ón`: a token of Llama 3's): its node is a
            // boundary.
            let mixed = compiled(
                "lark",
                "start: (\"if\" | \"in\" | NAME | OTHER)+\nNAME: /[a-zA-Z_][a-zA-Z_0-9]*/\nOTHER: /[^\\x00-\\x7f]+/\n%ignore \" \"\n",
            );
            assert_eq!(run(&mixed, "", None), Some((ident, true)));
            assert_eq!(plan(&mixed, "i"), Some((ascii_, true)));
            check_doc(&env, &conf, "[server]\nhost = local\n[ Привет_1 ]\nname=日本語 \n\t[é]\nx=\n", 1, true);
            check_doc(&env, &ascii, "foo(bar); x_1 ( y ) ;Z9();", 1, true);
            check_doc(&env, &keyword, "if ab; ifx; i; if if;", 1, true);
            check_doc(&env, &keyword, "if ab; if in; if if_; if i; ab; i; if; iffy;", 1, true);
            check_doc(&env, &looping, "ab xxy xx xa", 1, false);
            check_doc(&env, &mixed, "ión in if ifé a iñ xé ión", 1, true);
            check_doc(
                &env,
                &c_like,
                "int x = a + (int_ + while1);\nwhile ( i ) {\ty = in + w; int z=( x);}\n",
                1,
                true,
            );
        }
    }

    #[test]
    fn char_loops_follow_every_continuation() {
        let lexer = crate::regex::Dfa::compile_many(&[r#""(?:[^"\\\x00-\x1f]|\\.)*""#, r#""[a-zé]*""#], &Default::default()).unwrap();
        let open = lexer.run(lexer.start(), "\"".as_bytes());
        let has = |set: &[u64; 4], b: u8| set[b as usize / 64] >> (b % 64) & 1 != 0;
        // The JSON body alone (after `À` the other body is gone): every
        // lead byte, ASCII but `"`, `\` and controls.
        let body = char_loop(&lexer, lexer.run(lexer.start(), "\"À".as_bytes()), &[0b01]);
        assert!((0xC2..=0xF4).all(|b| has(&body, b)) && !has(&body, 0xC0) && !has(&body, 0xF5));
        assert!(has(&body, b'a') && !has(&body, b'"') && !has(&body, b'\\') && !has(&body, b'\n'));
        // `é` (C3 A9) loops but `è` (C3 A8) leaves the chosen body: no 0xC3.
        let chosen = char_loop(&lexer, open, &[0b10]);
        assert!(has(&chosen, b'z') && !has(&chosen, 0xC3) && !has(&chosen, b'A'));
        // Every character from `À` to `ÿ` (0xC3 0x80-0xBF) is live, but `è`
        // also starts `èa`: characters that start with 0xC3 lead to two
        // states, so they neither loop nor make a run step.
        let two = crate::regex::Dfa::compile_many(&[r#""(?:[À-ÿ]|èa)*""#], &Default::default()).unwrap();
        let body = two.run(two.start(), b"\"");
        assert!(!has(&char_loop(&two, body, &[1]), 0xC3));
        let live = |q| q != DEAD_STATE;
        assert_eq!(char_dest(&two, body, 0xC3, crate::toktrie::utf8_step(0, 0xC3), None, exact(live)), None);
        assert_eq!(char_dest(&two, body, b'"', 0, None, exact(live)), Some(two.run(body, b"\"")));
    }

    /// Strings of bounded length: the lexer counts their characters (a
    /// run at every state, [`WalkStates::runs`]) or the parser counts
    /// chunks of them, beside unbounded strings and key literals that
    /// share the lexer's states. The layered mask equals a plain walk at
    /// every byte, non-ASCII characters and escapes included, near the
    /// bounds too, on GPT-2 and Llama 3.
    #[test]
    fn layered_mask_equals_plain_walk_on_counted_strings() {
        let schema = r#"{"type": "object", "properties": {
            "a": {"type": "string", "maxLength": 12},
            "b": {"type": "string", "minLength": 3, "maxLength": 40},
            "c": {"type": "string", "maxLength": 150},
            "d": {"type": "string"},
            "ab": {"type": "string", "minLength": 5, "maxLength": 5},
            "e": {"type": "string", "maxLength": 30},
            "f": {"type": "string", "minLength": 40, "maxLength": 100},
            "g": {"type": "string", "maxLength": 600000}},
            "additionalProperties": false}"#;
        // Strings past their head cross chunk ends (16 characters, 147 in
        // `g`) with escapes, `\u` sequences and multi-byte characters on
        // both sides; `f` ends on a chunk's end.
        let long = format!(
            r#"{{"c": "{}", "f": "{}", "g": "{}"}}"#,
            r#"chunk one, \"quoted\" and \u001f\n then é€日本 across the end; more\ttext"#,
            "forty-eight characters: exactly this long, yes.",
            r#"A long text, with punctuation; numbers 12345 and é€日本 characters \" quoted \n. "#.repeat(4)
        );
        let docs = [
            r#"{"a": "héllo wörld!", "b": "ab\n€€€ some text that is long", "c": "x", "d": "free", "ab": "a\"b€d", "e": "twenty-eight characters her€"}"#,
            long.as_str(),
            r#"{"a": "", "b": "日本語のテキスト、そして more text here at the end!", "c": "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789 ééééééééééé", "ab": "12345"}"#,
        ];
        let c = crate::json_schema::compile_str(schema, &Default::default()).unwrap();
        let g = CompiledGrammar::new(&c.grammar, &GrammarLimits::default()).unwrap();
        for name in ["gpt2", "llama-3-8b-instruct"] {
            let Some(env) = load_env(name) else { return };
            for doc in &docs {
                check_doc(&env, &g, doc, 1, true);
            }
        }
    }

    /// With the string-body index ([`BodyIndex`]) a lexer entry equals the
    /// one a walk of the whole trie builds: at every byte of documents with
    /// free, counted (in the lexer and in chunks) and minimum-length
    /// strings, key literals (` "` and `_"` are tokens), escapes, non-ASCII
    /// and cut-short characters, on GPT-2 and Llama 3; and, on GPT-2, from
    /// every state of the lexer with every terminal allowed, mid-character
    /// states included.
    #[test]
    fn body_index_entries_equal_whole_walks() {
        let schema = r#"{"type": "object", "properties": {
            "a": {"type": "string", "maxLength": 12},
            "b": {"type": "string", "minLength": 3, "maxLength": 40},
            "c": {"type": "string", "minLength": 4},
            "d": {"type": "string"},
            "ab": {"type": "string", "minLength": 5, "maxLength": 5},
            "e": {"type": "string", "maxLength": 30, "pattern": "^[^é]*$"},
            "f": {"enum": ["alpha", "beta\n", "日本"]},
            " ": {"type": "integer"},
            "__": {"type": "string", "maxLength": 3},
            "g": {"type": "string", "maxLength": 600000},
            "h": {"type": "string", "minLength": 50, "maxLength": 60}}}"#;
        // `g` is a head and chunks of 147 characters (a run past every
        // token's length, and runs that end after more than 32
        // characters), `h` chunks of 16 with a minimum.
        let long = format!(
            r#"{{"g": "{}", "h": "{}"}}"#,
            "A long text, with punctuation; numbers 12345 and é€日本 characters \\\" quoted \\n. ".repeat(4),
            "fifty-five characters, give or take: a string near its max"
        );
        let docs = [
            r#"{"a": "héllo wörld!", "b": "ab\n€€€ some text that is long", "c": "xyzw\"q", "d": "free 日本語 \u0001", "ab": "a\"b€d", "e": "twenty-eight characters here", "f": "beta\n", " ": 1, "__": "ab", "zz": "other"}"#,
            r#"{"a": "", "b": "日本語のテキスト、そして more text here", "c": "長い文字列です", "ab": "12345", "f": "日本"}"#,
            long.as_str(),
        ];
        entries_equal_whole_walks(schema, &docs, true);
        // A key beside hundreds of key literals and enum strings, where
        // other keys are allowed too: the key's body strings meet more
        // lexer states than `body_closed` explores per mask, so its plan
        // comes from `body_reach`.
        let names: Vec<String> = (0..300)
            .map(|i| format!("setting_{}_{}", ["alpha", "beta", "gamma", "delta", "omega"][i % 5], i * 7919 % 1000))
            .collect();
        let props: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| match i % 3 {
                0 => format!(r#""{n}": {{"type": "string"}}"#),
                1 => format!(r#""{n}": {{"enum": ["{n}_on", "{n}_off", "auto"]}}"#),
                _ => format!(r#""{n}": {{"type": "integer"}}"#),
            })
            .collect();
        let schema = format!(r#"{{"type": "object", "properties": {{{}}}}}"#, props.join(", "));
        let doc = format!(
            r#"{{"{}": "free text é", "{}": "{}_off", "{}": 7, "setting_alpha_x": 1, "zzz 日本": "auto"}}"#,
            names[0], names[1], names[1], names[2]
        );
        entries_equal_whole_walks(&schema, &[doc.as_str()], false);
    }

    /// [`LexEntry::build`] with the body index equals the whole-trie walk
    /// before every byte of `docs`, on GPT-2 and Llama 3 (with
    /// `every_state`, also from every lexer state with every terminal
    /// allowed, on GPT-2).
    fn entries_equal_whole_walks(schema: &str, docs: &[&str], every_state: bool) {
        let c = crate::json_schema::compile_str(schema, &Default::default()).unwrap();
        let g = CompiledGrammar::new(&c.grammar, &GrammarLimits::default()).unwrap();
        // Boundaries with the run's end spelled out (every node of that
        // many body characters with a child that does not extend it).
        let sorted = |e: &LexEntry, env: &TokEnv, allowed: &[u64]| {
            let mut b = e.boundaries.clone();
            if let Some((r, ls)) = e.run_end {
                let trie = env.trie();
                b.extend(
                    env.body_index()
                        .at_chars(r as usize)
                        .iter()
                        .filter(|&&x| trie.children(x as usize).any(|c| !extends(&g.lexer, ls, trie.node_byte(c), allowed)))
                        .map(|&x| (x, ls)),
                );
            }
            b.sort_unstable();
            b
        };
        let memo = BodyMemo::default();
        let same = |env: &TokEnv, ls: u32, ip: bool, allowed: &[u64], at: &str| {
            let (trie, below, words) = (env.trie(), env.subtree_bytes(), env.mask_words());
            let fast = LexEntry::build(
                &g,
                trie,
                below,
                Some(env.body_index()),
                Some(env.word_index()),
                Some(&memo),
                ls,
                ip,
                allowed,
                words,
            );
            let slow = LexEntry::build(&g, trie, below, None, None, None, ls, ip, allowed, words);
            if fast.inner != slow.inner {
                let (a, b) = (fast.inner.ones(), slow.inner.ones());
                // Up to ten tokens of `x` not in `y`, spelled.
                let only = |x: &[u32], y: &[u32]| -> Vec<String> {
                    let spell = |t: u32| String::from_utf8_lossy(env.vocab().token_bytes(t)).to_string();
                    x.iter().filter(|t| !y.contains(t)).take(10).map(|&t| spell(t)).collect()
                };
                panic!("inner tokens differ {at}: extra {:?} missing {:?}", only(&a, &b), only(&b, &a));
            }
            // The same boundary nodes, in lexer states that walk alike
            // (the index walks from one state of each such set).
            let (a, b) = (sorted(&fast, env, allowed), sorted(&slow, env, allowed));
            assert_eq!(
                a.iter().map(|x| x.0).collect::<Vec<_>>(),
                b.iter().map(|x| x.0).collect::<Vec<_>>(),
                "boundaries differ {at}"
            );
            let mut states = WalkStates::new(g.lexer.num_states());
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    states.equiv(&g.lexer, x.1, y.1, allowed, &mut FxMap::default()),
                    "boundary {x:?} / {y:?} {at}"
                );
            }
        };
        for name in ["gpt2", "llama-3-8b-instruct"] {
            let Some(env) = load_env(name) else { return };
            for doc in docs {
                let mut st = GrammarState::new(&g).unwrap();
                for (i, byte) in doc.bytes().enumerate() {
                    let (ls, ip, allowed) = st.lexer_view(&g);
                    let allowed = allowed.to_vec();
                    same(&env, ls, ip, &allowed, &format!("{name} before byte {i} of {doc}"));
                    assert!(st.push_byte(&g, byte), "{doc} rejected at byte {i}");
                }
            }
            if name == "gpt2" && every_state {
                let all = vec![u64::MAX; g.lexer.pattern_words()];
                for ls in 0..g.lexer.num_states() as u32 {
                    same(&env, ls, true, &all, &format!("lexer state {ls}"));
                }
            }
        }
    }

    /// The layered mask equals a plain trie walk with the full parser, at
    /// every byte of some JSON documents, on the real GPT-2 vocabulary.
    #[test]
    fn layered_mask_equals_plain_walk() {
        let Some(env) = load_env("gpt2") else { return };
        for ws in [Whitespace::Flexible, Whitespace::Compact] {
            let g = CompiledGrammar::new(&json_grammar(ws, 8).unwrap(), &GrammarLimits::default()).unwrap();
            let docs: &[&str] = if ws == Whitespace::Flexible {
                &[r#"{"a": [1, 2.5e-3, "x\"y", true], "b": {"c": null}}"#, " [ \"é\" , -0 ]"]
            } else {
                &[r#"{"a":[1,2.5e-3,"x\"y",true],"b":{"c":null}}"#]
            };
            for doc in docs {
                check_doc(&env, &g, doc, 1, true);
            }
        }
    }
}
