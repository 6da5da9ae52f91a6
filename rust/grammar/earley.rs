//! Earley parsing over lexemes, driven byte by byte through a contextual
//! lexer, with state that is a pair of stacks (cheap to extend and undo).
//!
//! Why Earley: it accepts every context-free grammar as written — left
//! recursion, ambiguity and nullable rules need no rewriting — and its
//! chart is a stack of item sets, so rolling back is truncation. Nullable
//! nonterminals are handled the Aycock–Horspool way: predicting a nullable
//! symbol also advances over it at once.
//!
//! Why sets hold their predicted items by name: which items a set predicts
//! follows from the nonterminals its other items wait on, so the closure
//! of each combination met is merged once per chart and a set records
//! which one it holds (see `Chart::set_combo`). In grammars with optional
//! whitespace between all symbols those items are most of every set.
//!
//! Why a lexer: the token trie walk pushes one byte at a time, and most
//! bytes only extend the current lexeme (a string body, a number). The
//! lexer is one DFA over all terminals whose states know which terminals
//! they can still complete ([`Dfa::reach`]); filtered by the terminals the
//! parser expects, it decides those bytes alone. The parser is consulted
//! only where a lexeme ends.

use super::{Grammar, GrammarLimits, Sym};
use crate::error::{Error, Result};
use crate::fxhash::{FxMap, FxSet, ShardedMap};
use crate::regex::{Dfa, RegexLimits, TerminalSpec, DEAD};

const NT_FLAG: u32 = 1 << 30;
const END_FLAG: u32 = 1 << 31;

/// A compiled grammar: flattened rules, nullable set and the lexer DFA.
#[derive(Debug)]
pub struct CompiledGrammar {
    /// Rule `r` is `rhs[rule_start[r]..]` up to an `END_FLAG | r` marker.
    rhs: Vec<u32>,
    rule_start: Vec<u32>,
    rule_lhs: Vec<u32>,
    /// Left-hand side of the rule each `rhs` position belongs to.
    dot_lhs: Vec<u32>,
    /// Per `rhs` position, a name shared by every position with the same
    /// left-hand side and the same symbols after it ([`dot_names`]): what
    /// fingerprints fold for an item's dot.
    dot_name: Vec<u32>,
    /// Rules of each nonterminal.
    rules_of: Vec<Vec<u32>>,
    nullable: Vec<bool>,
    /// The augmented rule `S' -> S`.
    start_rule: u32,
    pub(crate) lexer: Dfa,
    /// `%ignore` terminals as a pattern bitset.
    ignore: Vec<u64>,
    pwords: usize,
    max_items_per_set: usize,
    /// Per nonterminal: what predicting it brings into a set, worked out
    /// on first use ([`CompiledGrammar::prediction`]); `None` where that
    /// is over [`MAX_PREDICTION_ITEMS`] or the grammar's share of them is
    /// spent, and the set takes the items one by one instead.
    predictions: Box<[std::sync::OnceLock<Option<Prediction>>]>,
    /// Items all predictions of this grammar may still hold.
    prediction_budget: std::sync::atomic::AtomicUsize,
    /// No lexeme extends another (every complete match is a lexer state no
    /// byte leads on from): GBNF's single characters. Such grammars get
    /// their masks from one lazy walk of the whole trie (see
    /// [`crate::grammar::mask::fill_by_walk`]).
    pub(crate) prefix_free_lexemes: bool,
    /// Per `rhs` position: 0, or one more than the index in `loop_bytes`
    /// of the bytes that take an item there round its repetition again
    /// (see [`repetition_loops`]).
    dot_loop: Vec<u16>,
    loop_bytes: Vec<[u64; 4]>,
}

impl CompiledGrammar {
    pub fn new(g: &Grammar, limits: &GrammarLimits) -> Result<Self> {
        if g.rules.len() > limits.max_rules {
            return Err(Error::TooLarge(format!(
                "grammar has {} rules (limit {})",
                g.rules.len(),
                limits.max_rules
            )));
        }
        if g.terminals.len() > limits.max_terminals {
            return Err(Error::TooLarge(format!(
                "grammar has {} terminals (limit {})",
                g.terminals.len(),
                limits.max_terminals
            )));
        }
        let total: usize = g.rules.iter().map(|r| r.rhs.len() + 1).sum();
        if total > limits.max_rhs_symbols {
            return Err(Error::TooLarge(format!("grammar has {total} symbols (limit {})", limits.max_rhs_symbols)));
        }
        g.validate()?;
        // One rule per separated list, so that its first element and the
        // later ones share mask keys (see `lists.rs`).
        let folded = super::lists::fold_separated_lists(g);
        let g = folded.as_ref().unwrap_or(g);
        let total: usize = g.rules.iter().map(|r| r.rhs.len() + 1).sum();
        // A rule with a symbol that derives no finite string can never be
        // completed. Kept, it would still be predicted and its first
        // terminals allowed, leading into a text that cannot end
        // (`root ::= "a" | "(" r1`, `r1 ::= r1`): masks would allow `(`.
        // Dropping such rules leaves the language as it is and makes every
        // live item completable.
        let productive = g.productive();
        let rules: Vec<&super::Rule> = g.rules.iter().filter(|r| g.rule_is_productive(r, &productive)).collect();
        let n_nt = g.nonterminals.len();
        let mut rhs = Vec::with_capacity(total + 2);
        let mut rule_start = Vec::with_capacity(g.rules.len() + 1);
        let mut rule_lhs = Vec::with_capacity(g.rules.len() + 1);
        let mut rules_of = vec![Vec::new(); n_nt + 1];
        for (r, rule) in rules.iter().enumerate() {
            rule_start.push(rhs.len() as u32);
            rule_lhs.push(rule.lhs);
            rules_of[rule.lhs as usize].push(r as u32);
            for s in &rule.rhs {
                rhs.push(match *s {
                    Sym::T(t) => t,
                    Sym::N(n) => NT_FLAG | n,
                });
            }
            rhs.push(END_FLAG | r as u32);
        }
        // Augmented start S' -> S (S' is nonterminal n_nt).
        let start_rule = rules.len() as u32;
        rule_start.push(rhs.len() as u32);
        rule_lhs.push(n_nt as u32);
        rules_of[n_nt].push(start_rule);
        rhs.push(NT_FLAG | g.start);
        rhs.push(END_FLAG | start_rule);

        let mut dot_lhs = Vec::with_capacity(rhs.len());
        for (r, &st) in rule_start.iter().enumerate() {
            let end = rule_start.get(r + 1).map_or(rhs.len(), |&e| e as usize);
            dot_lhs.extend(std::iter::repeat_n(rule_lhs[r], end - st as usize));
        }
        let dot_name = dot_names(&rhs, &dot_lhs);
        // Nullable over all rules equals nullable over the productive ones;
        // the augmented start S' is nullable iff S is.
        let mut nullable = g.nullable();
        nullable.push(nullable[g.start as usize]);

        let specs: Vec<TerminalSpec<'_>> = g
            .terminals
            .iter()
            .map(|t| TerminalSpec {
                pattern: &t.regex,
                first_match: t.first_match,
                except: &t.except,
            })
            .collect();
        let lexer = Dfa::compile_terminals(&specs, &RegexLimits::default()).map_err(|e| match e {
            Error::RegexSyntax { message, .. } => Error::Grammar {
                line: 0,
                column: 0,
                message: format!("invalid terminal regex: {message}"),
            },
            other => other,
        })?;
        if lexer.matches(lexer.start()).iter().any(|&w| w != 0) {
            let m = lexer.matches(lexer.start());
            let t = (0..g.terminals.len()).find(|&t| m[t / 64] >> (t % 64) & 1 == 1).unwrap_or(0);
            return Err(Error::Grammar {
                line: 0,
                column: 0,
                message: format!("terminal {} matches the empty string", g.terminals[t].name),
            });
        }
        for (t, term) in g.terminals.iter().enumerate() {
            let reach = lexer.reach(lexer.start());
            if lexer.start() == DEAD || reach[t / 64] >> (t % 64) & 1 == 0 {
                return Err(Error::Grammar {
                    line: 0,
                    column: 0,
                    message: format!("terminal {} matches no string", term.name),
                });
            }
        }
        let pwords = lexer.pattern_words();
        let prefix_free_lexemes = (0..lexer.num_states() as u32).all(|s| lexer.matches(s).iter().all(|&w| w == 0) || lexer.is_terminal(s));
        let mut ignore = vec![0u64; pwords];
        for &t in &g.ignore {
            ignore[t as usize / 64] |= 1 << (t % 64);
        }
        // Only a walk of single-byte lexemes asks (see `LazyWalk`); where
        // lexemes are longer, few states could use them, and every new
        // chart set would work them out for nothing.
        let (dot_loop, loop_bytes) = if prefix_free_lexemes {
            repetition_loops(&rhs, &rule_start, &rule_lhs, &rules_of, &lexer)
        } else {
            (vec![0; rhs.len()], Vec::new())
        };
        Ok(CompiledGrammar {
            rhs,
            rule_start,
            rule_lhs,
            dot_lhs,
            dot_name,
            rules_of,
            nullable,
            start_rule,
            lexer,
            ignore,
            pwords,
            max_items_per_set: limits.max_items_per_set,
            predictions: (0..=n_nt).map(|_| std::sync::OnceLock::new()).collect(),
            prediction_budget: std::sync::atomic::AtomicUsize::new(PREDICTION_BUDGET_PER_SYMBOL * (total + 2)),
            prefix_free_lexemes,
            dot_loop,
            loop_bytes,
        })
    }

    /// How many byte sets [`repetition_loops`] found (none, too, where
    /// lexemes are longer than a byte: a walk need not look for them).
    #[inline]
    pub(crate) fn num_loop_sets(&self) -> usize {
        self.loop_bytes.len()
    }

    /// Byte set `id` (from 1) of [`repetition_loops`]: with an item it is
    /// kept for in the top set and no lexeme in progress, every string of
    /// its bytes is a valid continuation.
    #[inline]
    pub(crate) fn loop_bytes(&self, id: u16) -> &[u64; 4] {
        &self.loop_bytes[id as usize - 1]
    }
}

/// Distinct byte sets [`repetition_loops`] keeps; further loops are left
/// out (they only make masks faster).
const MAX_LOOP_SETS: usize = u16::MAX as usize;

/// For each repetition `h -> h x` (how `*` and `+` are desugared, see
/// `ebnf.rs`), the bytes `b` that alone are a lexeme no byte extends and
/// that derive `x`: `x` a terminal matching `b`, or a nonterminal with a
/// rule `x -> T` for such a terminal. Keyed by the dot before `x`.
///
/// Why: with an item `[h -> h . x, o]` in the top set and no lexeme in
/// progress, such a byte ends a lexeme at once (the lexer's state after it
/// is terminal), the scan advances the item to `[h -> h x ., o]`, whose
/// completion of `h` at `o` puts `[h -> h . x, o]` back: the next set
/// holds the item again, with no lexeme in progress. So every string of
/// those bytes is a valid continuation, whatever else the set holds, and a
/// trie walk accepts a subtree spelled only with them without a parser
/// step (inside an identifier where keywords begin -- `in`, `import` --
/// each prefix is another configuration, and was learned one by one).
/// The argument is about the parser alone, so it holds for any grammar.
fn repetition_loops(rhs: &[u32], rule_start: &[u32], rule_lhs: &[u32], rules_of: &[Vec<u32>], lexer: &Dfa) -> (Vec<u16>, Vec<[u64; 4]>) {
    let mut single: FxMap<u32, [u64; 4]> = FxMap::default();
    for b in 0..=255u8 {
        let s = lexer.next(lexer.start(), b);
        if s == DEAD || !lexer.is_terminal(s) {
            continue;
        }
        for (w, &word) in lexer.matches(s).iter().enumerate() {
            let mut m = word;
            while m != 0 {
                let t = 64 * w as u32 + m.trailing_zeros();
                m &= m - 1;
                single.entry(t).or_insert([0; 4])[b as usize / 64] |= 1 << (b % 64);
            }
        }
    }
    let mut dot_loop = vec![0u16; rhs.len()];
    let mut sets: Vec<[u64; 4]> = Vec::new();
    let mut ids: FxMap<[u64; 4], u16> = FxMap::default();
    if single.is_empty() {
        return (dot_loop, sets);
    }
    let body = |r: usize| {
        let s = rule_start[r] as usize;
        let e = rhs[s..].iter().position(|&x| x & END_FLAG != 0).map_or(rhs.len(), |p| s + p);
        &rhs[s..e]
    };
    for r in 0..rule_start.len() {
        let h = rule_lhs[r];
        let &[first, x] = body(r) else { continue };
        if first != NT_FLAG | h {
            continue;
        }
        let mut bytes = [0u64; 4];
        let mut add = |t: u32| {
            if let Some(b) = single.get(&t) {
                for (w, x) in bytes.iter_mut().zip(b) {
                    *w |= x;
                }
            }
        };
        if x & NT_FLAG == 0 {
            add(x);
        } else {
            for &r2 in &rules_of[(x & !NT_FLAG) as usize] {
                if let &[t] = body(r2 as usize) {
                    if t & NT_FLAG == 0 {
                        add(t);
                    }
                }
            }
        }
        if bytes == [0; 4] {
            continue;
        }
        let id = match ids.get(&bytes) {
            Some(&id) => id,
            None if sets.len() < MAX_LOOP_SETS => {
                sets.push(bytes);
                ids.insert(bytes, sets.len() as u16);
                sets.len() as u16
            }
            None => continue,
        };
        dot_loop[rule_start[r] as usize + 1] = id;
    }
    (dot_loop, sets)
}

/// The items that predicting a nonterminal adds to a set, all with that
/// set as their origin: the nonterminal's rules, the rules of every
/// nonterminal they predict in turn, and each of those advanced over its
/// nullable prefix.
///
/// Why kept: they depend on the nonterminal alone, yet in a grammar with
/// optional whitespace between all symbols (a character-level grammar of a
/// programming language) they are two thirds of every set (96 of 136 items
/// per set on the PoC JavaScript grammar), and each was taken one by one
/// through the work loop: decoded, checked for completion, its symbol
/// predicted or its terminal recorded. Nothing in the loop can change
/// them (a rule predicted in the set it completes in is nullable and was
/// advanced over already), so they never enter it: a set names the merged
/// predictions of its roots instead (see [`Chart::set_combo`]), or, where
/// that is not kept, takes the list as it is.
///
/// A merged prediction of several roots is a `Prediction` too, with no
/// `nts`.
#[derive(Debug)]
struct Prediction {
    dots: Box<[u32]>,
    /// The nonterminals predicted along the way, the first one included:
    /// a later item waiting on one of them finds it predicted.
    nts: Box<[u32]>,
    /// The terminals those items wait on.
    expect: Box<[u64]>,
    /// The items waiting on a terminal, by terminal: what a scan
    /// advances.
    by_term: BySymbol,
    /// The items waiting on a nonterminal, by nonterminal: what a
    /// completion advances.
    by_wait: BySymbol,
    /// The distinct byte sets of [`repetition_loops`] kept for the items.
    loops: Box<[u16]>,
}

/// Dots grouped by the symbol they wait on, each group found in constant
/// time: a bitset of the symbols present, how many are present before
/// each word of it, and each group's range.
///
/// Why not a sorted list searched in halves: a completion into a set
/// looks its nonterminal up once, and the binary searches were half of
/// the chart's time on the PoC JavaScript grammar.
#[derive(Debug)]
struct BySymbol {
    present: Box<[u64]>,
    rank: Box<[u32]>,
    at: Box<[u32]>,
    dots: Box<[u32]>,
}

impl BySymbol {
    /// From (symbol, dot) pairs, symbols below `symbols`.
    fn new(mut pairs: Vec<(u32, u32)>, symbols: usize) -> BySymbol {
        pairs.sort_unstable();
        let words = symbols.div_ceil(64);
        let mut present = vec![0u64; words];
        let mut at = Vec::new();
        for (i, &(x, _)) in pairs.iter().enumerate() {
            if i == 0 || pairs[i - 1].0 != x {
                present[x as usize / 64] |= 1 << (x % 64);
                at.push(i as u32);
            }
        }
        at.push(pairs.len() as u32);
        let mut rank = Vec::with_capacity(words);
        let mut before = 0;
        for w in &present {
            rank.push(before);
            before += w.count_ones();
        }
        BySymbol {
            present: present.into(),
            rank: rank.into(),
            at: at.into(),
            dots: pairs.into_iter().map(|(_, d)| d).collect(),
        }
    }

    /// The dots waiting on `sym`.
    #[inline]
    fn get(&self, sym: u32) -> &[u32] {
        let bit = 1u64 << (sym % 64);
        let w = sym as usize / 64;
        let word = self.present.get(w).copied().unwrap_or(0);
        if word & bit == 0 {
            return &[];
        }
        let r = (self.rank[w] + (word & (bit - 1)).count_ones()) as usize;
        &self.dots[self.at[r] as usize..self.at[r + 1] as usize]
    }

    fn bytes(&self) -> usize {
        8 * self.present.len() + 4 * (self.rank.len() + self.at.len() + self.dots.len())
    }
}

/// A set whose predicted items are in `items` (see [`Chart::set_combo`]).
const NO_COMBO: u32 = u32::MAX;

/// Heap for one chart's merged predictions ([`Chart::combos`]).
const MAX_COMBO_BYTES: usize = 4 << 20;

/// Items beyond which a single [`Prediction`] is not kept.
const MAX_PREDICTION_ITEMS: usize = 1 << 14;

/// [`Prediction`] items a grammar may keep, per symbol of its rules: the
/// predictions of all nonterminals could be quadratic in the grammar (each
/// holding most rules), but a generation meets few of them.
const PREDICTION_BUDGET_PER_SYMBOL: usize = 16;

impl CompiledGrammar {
    /// What predicting nonterminal `n` adds to a set, or `None` where it
    /// is not kept (see [`CompiledGrammar::predictions`]).
    #[inline]
    fn prediction(&self, n: usize) -> Option<&Prediction> {
        self.predictions[n].get_or_init(|| self.predict(n)).as_ref()
    }

    fn predict(&self, n: usize) -> Option<Prediction> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut dots = Vec::new();
        let mut nts = vec![n as u32];
        let mut met: FxSet<u32> = FxSet::default();
        met.insert(n as u32);
        let mut expect = vec![0u64; self.pwords];
        let mut i = 0;
        while i < nts.len() {
            let m = nts[i] as usize;
            i += 1;
            // Each rule is met once (its nonterminal is), and its dot only
            // moves right: no dot is listed twice.
            for &r in &self.rules_of[m] {
                let mut d = self.rule_start[r as usize];
                loop {
                    dots.push(d);
                    let sym = self.rhs[d as usize];
                    if sym & END_FLAG != 0 {
                        break;
                    }
                    if sym & NT_FLAG == 0 {
                        expect[sym as usize / 64] |= 1 << (sym % 64);
                        break;
                    }
                    let x = sym & !NT_FLAG;
                    if met.insert(x) {
                        nts.push(x);
                    }
                    if !self.nullable[x as usize] {
                        break;
                    }
                    d += 1;
                }
            }
            if dots.len() > MAX_PREDICTION_ITEMS {
                return None;
            }
        }
        let need = 3 * dots.len() + nts.len() + 4 * (self.rules_of.len() + 64 * self.pwords) / 64;
        self.prediction_budget.fetch_update(Relaxed, Relaxed, |b| b.checked_sub(need)).ok()?;
        nts.sort_unstable();
        Some(Prediction::new(self, dots, nts, expect))
    }
}

impl Prediction {
    /// A prediction of items `dots` (each once), having predicted `nts`,
    /// waiting on terminals `expect`.
    fn new(g: &CompiledGrammar, dots: Vec<u32>, nts: Vec<u32>, expect: Vec<u64>) -> Prediction {
        let mut by_term = Vec::new();
        let mut by_wait = Vec::new();
        let mut loops = Vec::new();
        for &d in &dots {
            let l = g.dot_loop[d as usize];
            if l != 0 && !loops.contains(&l) {
                loops.push(l);
            }
            let sym = g.rhs[d as usize];
            if sym & END_FLAG != 0 {
                continue;
            }
            if sym & NT_FLAG != 0 {
                by_wait.push((sym & !NT_FLAG, d));
            } else {
                by_term.push((sym, d));
            }
        }
        Prediction {
            dots: dots.into(),
            nts: nts.into(),
            by_term: BySymbol::new(by_term, 64 * expect.len()),
            expect: expect.into(),
            by_wait: BySymbol::new(by_wait, g.rules_of.len()),
            loops: loops.into(),
        }
    }

    /// Approximate heap size.
    fn bytes(&self) -> usize {
        4 * (self.dots.len() + self.nts.len()) + 8 * self.expect.len() + self.by_term.bytes() + self.by_wait.bytes()
    }
}

/// An Earley item: a dot position in `rhs` and the origin set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Item {
    dot: u32,
    origin: u32,
}

/// Stack of Earley sets, stored flat.
#[derive(Debug, Default)]
pub struct Chart {
    items: Vec<Item>,
    /// Start offset of each set in `items`.
    sets: Vec<u32>,
    /// Per set: terminals expected next, then those plus `%ignore` (2 × pwords).
    expect: Vec<u64>,
    /// Scratch: dedup table for the set under construction.
    seen: FxSet<Item>,
    /// Scratch: per nonterminal, the generation of the set under
    /// construction in which it was last predicted (each is predicted once
    /// per set); `generation` counts sets built, popped ones included.
    predicted: Vec<u32>,
    generation: u32,
    /// Scratch: per dot position, the generation in which the item (dot,
    /// this set) was added: most items of a set are its own predictions,
    /// deduplicated here without hashing.
    dot_seen: Vec<u32>,
    /// Scratch: per dot position, (generation, origin) of the first item
    /// with that dot and an earlier origin added to the set under
    /// construction; only a second origin for the same dot (ambiguity)
    /// goes through `seen`.
    dot_other: Vec<(u32, u32)>,
    /// Scratch for the completion index: per nonterminal, (generation,
    /// count then slot) of the items waiting on it, and the nonterminals met.
    wait_count: Vec<(u32, u32)>,
    wait_syms: Vec<u32>,
    /// Memoised contexts (see [`Chart::context`]) by (generation of the
    /// set, nonterminal). Keys use the generation rather than the index,
    /// so a popped set's entries never answer for the set that replaces
    /// it.
    ///
    /// A set's first [`NEAR_CONTEXTS`] entries are kept beside it instead
    /// (`ctx_keys` / `ctx_values`, per set index, emptied when the index
    /// is built again): most sets need few, and in one table shared by all
    /// sets, popped ones included, each lookup was a cache miss (a tenth
    /// of the PoC JavaScript grammar's mask time).
    ctx: ShardedMap<(u32, u32), u128>,
    ctx_keys: Vec<Vec<u32>>,
    ctx_values: Vec<Vec<u128>>,
    /// Per set: the generation that built it.
    gens: Vec<u32>,
    /// Scratch buffers of [`Chart::context`].
    /// (set, nonterminal, start of its closure in `ctx_closure` or
    /// [`NO_CLOSURE`]).
    ctx_stack: Vec<(usize, u32, u32)>,
    /// The closures of the entries of `ctx_stack`, in stack order.
    ctx_closure: Vec<u32>,
    ctx_wait: Vec<Item>,
    /// Scratch of [`Chart::fold_closure`].
    ctx_scc: Option<Box<SccScratch>>,
    /// Members met by [`Chart::closure`], and those it still has to
    /// expand.
    ctx_marks: crate::marks::Marks,
    ctx_queue: Vec<u32>,
    /// Closures by (generation of the set, nonterminal), and how many
    /// members they hold in all (see [`Chart::closure`]).
    closures: FxMap<(u32, u32), Box<[u32]>>,
    closure_members: usize,
    /// Closures of the sets that hold their predictions by name, by
    /// (combination, nonterminal): only predicted items take part in a
    /// closure, so every set with one combination has the same closures,
    /// wherever it sits (see [`Chart::closure`]).
    combo_closures: FxMap<(u32, u32), Box<[u32]>>,
    /// Completion index of large sets: (awaited symbol, item index) sorted by
    /// symbol; `waits_at[k]` is set `k`'s range, empty for small sets,
    /// which are scanned instead.
    waits: Vec<(u32, u32)>,
    waits_at: Vec<(u32, u32)>,
    /// Scratch: the terminals expected by the set under construction.
    scratch: Vec<u64>,
    /// Scratch: the items of [`Prediction`]s added to the set under
    /// construction, appended to it once the work loop is done.
    predicted_items: Vec<Item>,
    /// Per set: the [`Prediction`] in `combos` that holds its predicted
    /// items, or [`NO_COMBO`] where `items` holds them. A set's predicted
    /// items follow from the nonterminals its other items predict (its
    /// "roots"), so each combination of roots met is merged once into one
    /// prediction and the set names it: it then holds and closes over only
    /// the items that came from earlier sets (35 rather than 136 per set
    /// on the PoC JavaScript grammar), and a completion into it reads one
    /// list. Which combinations occur depends on the grammar, not the text
    /// (they are LR(0) closures in all but name).
    set_combo: Vec<u32>,
    /// Combination ids by [`roots_key`] of their roots.
    combo_ids: FxMap<u128, u32>,
    combos: Vec<std::sync::Arc<Prediction>>,
    /// Heap held by `combos`; past [`MAX_COMBO_BYTES`] new sets hold
    /// their predicted items in `items`.
    combo_bytes: usize,
    /// Scratch: the roots of the set under construction.
    roots: Vec<u32>,
    /// Scratch: the items a scan starts a set with.
    seeds: Vec<Item>,
    /// Scratch for merging predictions: per dot, the stamp of the last
    /// merge that took it.
    dot_mark: Vec<u32>,
    mark_stamp: u32,
}

/// A copy keeps the sets and leaves the memos and scratch behind: they
/// are caches, rebuilt on demand, and the context memo alone (up to 2^18
/// entries) made copying a matcher cost 8-10 ms on the PoC JavaScript
/// grammar; SMC copies one per resampled particle. A field that describes
/// the sets themselves must be listed here: the rest start empty.
impl Clone for Chart {
    fn clone(&self) -> Self {
        Chart {
            items: self.items.clone(),
            sets: self.sets.clone(),
            expect: self.expect.clone(),
            generation: self.generation,
            ctx_keys: vec![Vec::new(); self.sets.len()],
            ctx_values: vec![Vec::new(); self.sets.len()],
            gens: self.gens.clone(),
            waits: self.waits.clone(),
            waits_at: self.waits_at.clone(),
            set_combo: self.set_combo.clone(),
            combo_ids: self.combo_ids.clone(),
            combos: self.combos.clone(),
            combo_bytes: self.combo_bytes,
            ..Chart::default()
        }
    }
}

/// Scratch of [`Chart::fold_closure`], per member of the closure (by its
/// index there): Tarjan's visit number (0: not visited) and low link, the
/// context once its component is folded, and the items waiting on it
/// (`items[start..end]`); then the component stack, the search's call
/// stack (member, next item) and the component being folded.
#[derive(Debug, Default)]
struct SccScratch {
    index: Vec<u32>,
    low: Vec<u32>,
    done: Vec<bool>,
    value: Vec<u128>,
    start: Vec<u32>,
    end: Vec<u32>,
    items: Vec<Item>,
    tstack: Vec<u32>,
    calls: Vec<(u32, u32)>,
    comp: Vec<u32>,
    /// Per nonterminal: (stamp, its index among the members); `stamp`
    /// names the current fold.
    slot: Vec<(u32, u32)>,
    stamp: u32,
}

impl SccScratch {
    fn reset(&mut self, m: usize, nonterminals: usize) {
        if self.slot.len() < nonterminals {
            self.slot.resize(nonterminals, (0, 0));
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.slot.iter_mut().for_each(|s| *s = (0, 0));
            self.stamp = 1;
        }
        for v in [&mut self.index, &mut self.low, &mut self.start, &mut self.end] {
            v.clear();
            v.resize(m, 0);
        }
        self.done.clear();
        self.done.resize(m, false);
        self.value.clear();
        self.value.resize(m, 0);
        self.items.clear();
        self.tstack.clear();
        self.calls.clear();
    }

    /// Index among the members of nonterminal `x`, one of them.
    #[inline]
    fn pos(&self, x: u32) -> usize {
        let (stamp, j) = self.slot[x as usize];
        assert!(stamp == self.stamp, "a closure holds every member its items lead to");
        j as usize
    }
}

/// What an item contributes in place of a context where its rule is a
/// member of the cycle being folded ([`Chart::fold_closure`]): the
/// member's name.
fn in_cycle(l: u32) -> u128 {
    ((mix(l as u64 ^ 0x243f_6a88_85a3_08d3) as u128) << 64) | mix((l as u64).wrapping_add(0x1319_8a2e_0370_7344)) as u128
}

/// A context's own fold: its items, each with the context it leads to.
#[inline]
fn own_fold(a: u64, b: u64) -> u128 {
    ((mix(a ^ 0x6a09_e667_f3bc_c908) as u128) << 64) | mix(b ^ a.rotate_left(23)) as u128
}

/// Fold member `x` with own fold `own` into the fold of a cycle.
#[inline]
fn cycle_step(h: (u64, u64), x: u32, own: u128) -> (u64, u64) {
    let a = mix(h.0 ^ x as u64 ^ (own as u64)).wrapping_add(h.1);
    (a, mix(h.1 ^ ((own >> 64) as u64) ^ a.rotate_left(29)))
}

/// The context of member `x` of a cycle folded into `h`.
#[inline]
fn cycle_name(h: (u64, u64), x: u32) -> u128 {
    let x = x as u64;
    ((mix(h.0 ^ x.wrapping_mul(0x9e37_79b9_7f4a_7c15)) as u128) << 64) | mix(h.1 ^ x) as u128
}

/// The fold of a cycle before its first member.
const CYCLE_SEED: (u64, u64) = (0x51_7c_c1_b7_27_22_0a_95, 0x2545_f491_4f6c_dd1d);

/// Sets with at least this many items get a completion index. Completing a
/// nonterminal reads its origin set for the items waiting on it; on an
/// ambiguous grammar sets grow with the text (`(. .+)*` has one item per
/// earlier position) and a scan per completion would make each step
/// quadratic in the text, and in a grammar of nested rules (an expression
/// grammar, character by character) one byte completes a chain of them,
/// each scanning its origin set. Only tiny sets are cheaper to scan than to
/// index (a counting sort per set).
const INDEX_MIN_ITEMS: usize = 12;

/// Memoised contexts kept beside each set (see [`Chart::ctx`]).
const NEAR_CONTEXTS: usize = 16;

/// Context memo entries beyond which it starts over.
const MAX_CONTEXT_MEMO: usize = 1 << 18;

/// [`Chart::ctx`] keys (in place of a nonterminal) of a set's
/// [`Chart::fingerprint`] and [`Chart::local_fingerprint_at`]: no
/// nonterminal comes near them.
const FOLD_FULL: u32 = u32::MAX;

/// Members of memoised closures ([`Chart::closures`]) beyond which they
/// start over.
const MAX_CLOSURE_MEMBERS: usize = 1 << 20;

/// A [`Chart::ctx_stack`] entry whose closure is not computed yet.
const NO_CLOSURE: u32 = u32::MAX;
const FOLD_LOCAL: u32 = u32::MAX - 1;

impl Chart {
    fn set_range(&self, k: usize) -> std::ops::Range<usize> {
        let s = self.sets[k] as usize;
        let e = self.sets.get(k + 1).map_or(self.items.len(), |&e| e as usize);
        s..e
    }

    pub fn num_sets(&self) -> usize {
        self.sets.len()
    }

    /// A 128-bit fingerprint of everything the parser's future depends on,
    /// so masks can be memoised by it even though set indices differ (the
    /// third key of an object looks like the second).
    ///
    /// What the future reads: the top set's items waiting on a terminal
    /// (scans), whether the start rule is complete (acceptance: the
    /// lowest bit, apart from the hash of the rest, so that
    /// [`GrammarState::mask_key`] can leave it out where it cannot matter),
    /// and, for each item, what its completion will advance: the *context*
    /// of its rule's left-hand side at its origin ([`Chart::context`]).
    /// Nothing else of the chart is ever read again, so an item left over
    /// from the previous list element (a `ws` that might have followed it)
    /// does not make the next element's fingerprint differ.
    pub fn fingerprint(&mut self, g: &CompiledGrammar) -> u128 {
        self.fold_set(g, self.sets.len() - 1, false)
    }

    /// A position-independent name of the parser configuration after set
    /// `k`, cheaper than [`Chart::fingerprint`] and finer: every item of
    /// set `k` (completed ones aside) by its dot, and for an origin below
    /// `k` by the context its completion advances there. Items predicted at
    /// `k` need no context (the set itself says what they advance), so
    /// nothing of set `k` is closed over, and the contexts of earlier sets
    /// are memoised while a walk goes deeper.
    pub fn local_fingerprint_at(&mut self, g: &CompiledGrammar, k: usize) -> u128 {
        self.fold_set(g, k, true)
    }

    /// The items of set `k` folded with their contexts, and whether the
    /// start rule is complete there: [`Chart::fingerprint`] (`local`
    /// false: items waiting on a nonterminal left out, the contexts of those
    /// predicted at `k` closed over) or [`Chart::local_fingerprint_at`].
    ///
    /// Memoised per set (in `ctx`, under [`FOLD_FULL`] / [`FOLD_LOCAL`]):
    /// a mask asks for the same set's fingerprint once per group of
    /// boundaries it walks from there, and a set of a large object (a
    /// hundred optional properties, each a string or null) holds thousands
    /// of items.
    fn fold_set(&mut self, g: &CompiledGrammar, k: usize, local: bool) -> u128 {
        let tag = if local { FOLD_LOCAL } else { FOLD_FULL };
        if let Some(h) = self.memo(k, tag) {
            return h;
        }
        if self.ctx.len() > MAX_CONTEXT_MEMO {
            self.ctx.clear(); // entries of popped sets pile up
        }
        let h = self.fold_set_uncached(g, k, local);
        self.remember(k, tag, h);
        h
    }

    fn fold_set_uncached(&mut self, g: &CompiledGrammar, k: usize, local: bool) -> u128 {
        let (mut a, mut b) = if local {
            (0x2545_f491_4f6c_dd1du64, 0x9e37_79b9_7f4a_7c15u64)
        } else {
            (0x9e37_79b9_7f4a_7c15u64, 0xc2b2_ae3d_27d4_eb4fu64)
        };
        let end = END_FLAG | g.start_rule;
        let mut accepts = 0u64;
        for i in self.set_range(k) {
            let it = self.items[i];
            let s = g.rhs[it.dot as usize];
            if s & END_FLAG != 0 {
                accepts |= (s == end && it.origin == 0) as u64;
                continue;
            }
            let o = it.origin as usize;
            let c = if !local && s & NT_FLAG != 0 {
                continue;
            } else if local && o == k {
                if k > 0 {
                    // Predicted here: which items those are follows from
                    // the dots of the others (every set above the first
                    // has some), so they add nothing to the name.
                    continue;
                }
                0x6a09_e667_f3bc_c908
            } else {
                self.context(g, o, g.dot_lhs[it.dot as usize])
            };
            fold_item(&mut a, &mut b, g.dot_name[it.dot as usize], c);
        }
        if let Some(p) = self.combo(k).filter(|_| !local) {
            // The predicted items waiting on a terminal.
            for &d in p.by_term.dots.iter() {
                let c = self.context(g, k, g.dot_lhs[d as usize]);
                fold_item(&mut a, &mut b, g.dot_name[d as usize], c);
            }
        }
        if local {
            return ((mix(a ^ accepts) as u128) << 64) | mix(b ^ a.rotate_left(11) ^ accepts) as u128;
        }
        // Acceptance as the lowest bit of the full fingerprint, kept out of
        // the hash ([`Chart::fingerprint`]).
        let h = ((mix(a) as u128) << 64) | mix(b ^ a.rotate_left(7)) as u128;
        (h & !1) | accepts as u128
    }

    /// Fingerprint of what completing nonterminal `nt` from set `k` leads
    /// to: the items of set `k` waiting on it, each with the context of its
    /// own rule at its origin ([`Chart::fold_closure`]). An item predicted
    /// at `k` leads to a context in the same set: those make up the closure
    /// of `nt` (every nonterminal whose rules were predicted at `k` and
    /// wait on a member; completing `nt` may complete those too, in the
    /// same set). Origins below `k` recurse into earlier sets; contexts are
    /// memoised per (set, nonterminal) and computed with an explicit stack,
    /// so deep nesting cannot overflow the call stack.
    fn context(&mut self, g: &CompiledGrammar, k: usize, nt: u32) -> u128 {
        if let Some(h) = self.memo(k, nt) {
            return h;
        }
        if self.ctx.len() > MAX_CONTEXT_MEMO {
            self.ctx.clear(); // entries of popped sets pile up
        }
        let mut stack = std::mem::take(&mut self.ctx_stack);
        let mut closure = std::mem::take(&mut self.ctx_closure);
        let mut wait = std::mem::take(&mut self.ctx_wait);
        stack.clear();
        closure.clear();
        stack.push((k, nt, NO_CLOSURE));
        while let Some(&(k, nt, at)) = stack.last() {
            if self.memo(k, nt).is_some() {
                stack.pop();
                if at != NO_CLOSURE {
                    closure.truncate(at as usize);
                }
                continue;
            }
            // An entry's closure is computed once and kept while entries
            // above it are resolved (LIFO: they append after it and are
            // gone when it is on top again): a set of a hundred optional
            // properties had every closure recomputed once per dependency.
            let at = if at == NO_CLOSURE {
                let at = closure.len();
                self.closure(g, k, nt, &mut closure, &mut wait);
                if let Some(top) = stack.last_mut() {
                    top.2 = at as u32;
                }
                at
            } else {
                at as usize
            };
            // The contexts of earlier sets that members not memoised yet
            // lead to come first (members memoised are folded already:
            // the contexts of a chain of nested rules predicted in one set
            // share most members).
            let before = stack.len();
            for &x in &closure[at..] {
                if self.memo(k, x).is_some() {
                    continue;
                }
                // Items with origin `k` lead to members.
                self.waiting_held(g, k, x, &mut wait);
                for &it in &wait {
                    let o = it.origin as usize;
                    let l = g.dot_lhs[it.dot as usize];
                    if o < k && self.memo(o, l).is_none() {
                        stack.push((o, l, NO_CLOSURE));
                    }
                }
            }
            if stack.len() > before {
                continue;
            }
            self.fold_closure(g, k, nt, &closure[at..], &mut wait);
            stack.pop();
            closure.truncate(at);
        }
        self.ctx_stack = stack;
        self.ctx_closure = closure;
        self.ctx_wait = wait;
        self.memo(k, nt).unwrap()
    }

    /// Fold the contexts of `nt` and of the other members of its closure
    /// at set `k` (`members`, sorted) that are not memoised yet, and
    /// memoise them; the contexts of the items' origins below `k` must be
    /// memoised.
    ///
    /// A member's context folds the items waiting on it, each with the
    /// context of its rule at its origin, that of an item predicted at `k`
    /// included: whether an item began at `k` or earlier does not enter
    /// the name, only what its completion advances. So the first pass
    /// through a repetition names the same configuration as every later
    /// one: after `a+` in `expr ::= term ([-+*/] term)*`, the helper
    /// `star -> star . grp` was predicted in the set itself, and after
    /// `a+b*` it began a term earlier, and the two masks were computed
    /// apart.
    ///
    /// Members wait on each other in cycles (left recursion: `star ->
    /// . star grp` waits on `star`), so the members are split into strongly
    /// connected components (Tarjan, with explicit stacks), each folded
    /// once its successors are: a member alone folds its items; the members
    /// of a cycle fold, together, their items with each reference inside
    /// the cycle by name, and each member's context is that fold and its
    /// own name. Equal contexts then mean equal unfoldings: the
    /// continuations after completing the member are the same.
    fn fold_closure(&mut self, g: &CompiledGrammar, k: usize, nt: u32, members: &[u32], wait: &mut Vec<Item>) {
        if let [x] = members {
            // Most closures: `nt` alone, its items predicted here (if any)
            // its own rules.
            debug_assert_eq!(*x, nt);
            self.waiting(g, k, nt, wait);
            let mut cyclic = false;
            let own = self.fold_waiting(g, k, wait, |_| {
                cyclic = true;
                in_cycle(nt)
            });
            let v = if cyclic { cycle_name(cycle_step(CYCLE_SEED, nt, own), nt) } else { own };
            self.remember(k, nt, v);
            return;
        }
        // Boxed: moving the scratch out and back is a pointer's copy.
        let mut sc = self.ctx_scc.take().unwrap_or_default();
        sc.reset(members.len(), g.rules_of.len());
        for (j, &x) in members.iter().enumerate() {
            sc.slot[x as usize] = (sc.stamp, j as u32);
        }
        let mut counter = 0u32;
        let root = sc.pos(nt);
        counter += 1;
        self.scc_visit(g, k, members, root, counter, &mut sc, wait);
        while let Some(&(j, e)) = sc.calls.last() {
            let j = j as usize;
            if e < sc.end[j] {
                sc.calls.last_mut().expect("just read").1 += 1;
                let it = sc.items[e as usize];
                if it.origin as usize != k {
                    continue;
                }
                let l = g.dot_lhs[it.dot as usize];
                let t = sc.pos(l);
                if sc.done[t] {
                    continue;
                }
                if sc.index[t] == 0 {
                    // Met for the first time: a context memoised earlier
                    // (a member of an earlier closure) is final.
                    if let Some(v) = self.memo(k, l) {
                        sc.done[t] = true;
                        sc.value[t] = v;
                        continue;
                    }
                    counter += 1;
                    self.scc_visit(g, k, members, t, counter, &mut sc, wait);
                } else {
                    // Visited and not done: on the component stack.
                    sc.low[j] = sc.low[j].min(sc.index[t]);
                }
                continue;
            }
            sc.calls.pop();
            if let Some(&(p, _)) = sc.calls.last() {
                sc.low[p as usize] = sc.low[p as usize].min(sc.low[j]);
            }
            if sc.low[j] != sc.index[j] {
                continue;
            }
            sc.comp.clear();
            while let Some(y) = sc.tstack.pop() {
                sc.comp.push(y);
                if y as usize == j {
                    break;
                }
            }
            sc.comp.sort_unstable();
            // Each member's items: their dots, and the contexts they lead
            // to (a member of this component by name).
            let mut cyclic = sc.comp.len() > 1;
            let mut h = CYCLE_SEED;
            for ci in 0..sc.comp.len() {
                let y = sc.comp[ci] as usize;
                let items = &sc.items[sc.start[y] as usize..sc.end[y] as usize];
                let own = self.fold_waiting(g, k, items, |l| {
                    let t = sc.pos(l);
                    if sc.done[t] {
                        sc.value[t]
                    } else {
                        cyclic = true;
                        in_cycle(l)
                    }
                });
                sc.value[y] = own;
                h = cycle_step(h, members[y], sc.value[y]);
            }
            for ci in 0..sc.comp.len() {
                let y = sc.comp[ci] as usize;
                if cyclic {
                    sc.value[y] = cycle_name(h, members[y]);
                }
                sc.done[y] = true;
                self.remember(k, members[y], sc.value[y]);
            }
        }
        self.ctx_scc = Some(sc);
    }

    /// The own fold of the items waiting on a member at set `k`
    /// (`items`): each item's dot with the context it leads to, memoised
    /// for an origin below `k`, `in_set(lhs)` for an item predicted at `k`.
    #[inline]
    fn fold_waiting(&self, g: &CompiledGrammar, k: usize, items: &[Item], mut in_set: impl FnMut(u32) -> u128) -> u128 {
        let (mut a, mut b) = (0u64, 0u64);
        for it in items {
            let l = g.dot_lhs[it.dot as usize];
            let c = if (it.origin as usize) < k {
                self.memo(it.origin as usize, l).expect("contexts of earlier sets are memoised first")
            } else {
                in_set(l)
            };
            fold_item(&mut a, &mut b, g.dot_name[it.dot as usize], c);
        }
        own_fold(a, b)
    }

    /// Enter member `j` in [`Chart::fold_closure`]'s search: number it,
    /// put it on the component stack, and list the items waiting on it.
    #[allow(clippy::too_many_arguments)]
    fn scc_visit(&self, g: &CompiledGrammar, k: usize, members: &[u32], j: usize, n: u32, sc: &mut SccScratch, wait: &mut Vec<Item>) {
        sc.index[j] = n;
        sc.low[j] = n;
        sc.tstack.push(j as u32);
        self.waiting(g, k, members[j], wait);
        sc.start[j] = sc.items.len() as u32;
        sc.items.extend_from_slice(wait);
        sc.end[j] = sc.items.len() as u32;
        sc.calls.push((j as u32, sc.start[j]));
    }

    /// Memoised context of `nt` at set `k`.
    #[inline]
    fn memo(&self, k: usize, nt: u32) -> Option<u128> {
        let keys = &self.ctx_keys[k];
        if let Ok(full) = <&[u32; NEAR_CONTEXTS]>::try_from(keys.as_slice()) {
            // Compared all at once (vector instructions), not one by one.
            let hits = full.iter().enumerate().fold(0u32, |m, (i, &x)| m | u32::from(x == nt) << i);
            if hits != 0 {
                return Some(self.ctx_values[k][hits.trailing_zeros() as usize]);
            }
            return self.ctx.get(&(self.gens[k], nt)).copied();
        }
        keys.iter().position(|&x| x == nt).map(|i| self.ctx_values[k][i])
    }

    /// Memoise context `h` of `nt` at set `k`.
    #[inline]
    fn remember(&mut self, k: usize, nt: u32, h: u128) {
        if self.ctx_keys[k].len() < NEAR_CONTEXTS {
            self.ctx_keys[k].push(nt);
            self.ctx_values[k].push(h);
        } else {
            self.ctx.insert((self.gens[k], nt), h);
        }
    }

    /// Append to `out`: `nt` and every nonterminal with a rule predicted
    /// at `k` that waits there on a member, sorted.
    ///
    /// A member's own closure is part of this one, so a member whose
    /// closure is known brings it whole instead of being expanded: in a
    /// set of an object with a hundred optional properties, each
    /// property's rule waits on the next one's, every context asks for the
    /// closure of one more of them, and expanding each member every time
    /// was quadratic in the properties per set.
    fn closure(&mut self, g: &CompiledGrammar, k: usize, nt: u32, out: &mut Vec<u32>, wait: &mut Vec<Item>) {
        let from = out.len();
        let gen = self.gens[k];
        // A set holding its predictions by name holds no other item with
        // its own origin, so its closures are its combination's: a set
        // met at another position (every identifier character in a new
        // context) finds them made.
        let combo = self.set_combo[k];
        let (memo, key) = if combo != NO_COMBO {
            (&self.combo_closures, combo)
        } else {
            (&self.closures, gen)
        };
        if let Some(known) = memo.get(&(key, nt)) {
            out.extend_from_slice(known);
            return;
        }
        let mut queue = std::mem::take(&mut self.ctx_queue);
        queue.clear();
        self.ctx_marks.reset(g.rules_of.len());
        self.ctx_marks.insert(nt as usize);
        out.push(nt);
        queue.push(nt);
        while let Some(x) = queue.pop() {
            if x != nt {
                if let Some(known) = memo.get(&(key, x)) {
                    for &y in known.iter() {
                        if self.ctx_marks.insert(y as usize) {
                            out.push(y);
                        }
                    }
                    continue;
                }
            }
            self.waiting(g, k, x, wait);
            for &it in wait.iter() {
                if it.origin as usize == k {
                    let l = g.dot_lhs[it.dot as usize];
                    if self.ctx_marks.insert(l as usize) {
                        out.push(l);
                        queue.push(l);
                    }
                }
            }
        }
        self.ctx_queue = queue;
        out[from..].sort_unstable();
        if self.closure_members > MAX_CLOSURE_MEMBERS {
            self.closures.clear();
            self.combo_closures.clear();
            self.closure_members = 0;
        }
        self.closure_members += out.len() - from;
        let memo = if combo != NO_COMBO {
            &mut self.combo_closures
        } else {
            &mut self.closures
        };
        memo.insert((key, nt), out[from..].into());
    }

    /// The items of set `k` waiting on `nt`, each once, into `out`
    /// (cleared first).
    fn waiting(&self, g: &CompiledGrammar, k: usize, nt: u32, out: &mut Vec<Item>) {
        self.waiting_held(g, k, nt, out);
        let c = self.set_combo[k];
        if c != NO_COMBO {
            out.extend(self.combos[c as usize].by_wait.get(nt).iter().map(|&d| Item { dot: d, origin: k as u32 }));
        }
    }

    /// [`Chart::waiting`] without the items set `k`'s combination holds
    /// (all of them where it has none).
    fn waiting_held(&self, g: &CompiledGrammar, k: usize, nt: u32, out: &mut Vec<Item>) {
        out.clear();
        let want = NT_FLAG | nt;
        let (ws, we) = self.waits_at[k];
        if ws < we {
            let idx = &self.waits[ws as usize..we as usize];
            let from = idx.partition_point(|&(sym, _)| sym < want);
            out.extend(
                idx[from..]
                    .iter()
                    .take_while(|&&(sym, _)| sym == want)
                    .map(|&(_, j)| self.items[j as usize]),
            );
        } else {
            out.extend(self.items[self.set_range(k)].iter().filter(|it| g.rhs[it.dot as usize] == want));
        }
    }

    /// Id in `combos` of the merged prediction of the roots in `roots`,
    /// merged now if no set met them before.
    fn combo_id(&mut self, g: &CompiledGrammar) -> u32 {
        let key = roots_key(&self.roots);
        if let Some(&id) = self.combo_ids.get(&key) {
            return id;
        }
        if self.dot_mark.len() < g.rhs.len() {
            self.dot_mark.resize(g.rhs.len(), 0);
        }
        self.mark_stamp = self.mark_stamp.wrapping_add(1);
        if self.mark_stamp == 0 {
            self.dot_mark.iter_mut().for_each(|m| *m = 0);
            self.mark_stamp = 1;
        }
        let stamp = self.mark_stamp;
        let mut dots = Vec::new();
        let mut expect = vec![0u64; g.pwords];
        for &r in &self.roots {
            let p = g.prediction(r as usize).expect("a root's prediction is kept");
            for &d in p.dots.iter() {
                let m = &mut self.dot_mark[d as usize];
                if *m != stamp {
                    *m = stamp;
                    dots.push(d);
                }
            }
            for (e, x) in expect.iter_mut().zip(p.expect.iter()) {
                *e |= x;
            }
        }
        let p = Prediction::new(g, dots, Vec::new(), expect);
        self.combo_bytes += p.bytes() + 40;
        let id = self.combos.len() as u32;
        self.combos.push(std::sync::Arc::new(p));
        self.combo_ids.insert(key, id);
        id
    }

    /// The two largest byte sets of [`repetition_loops`] kept for the
    /// items of set `k` (0 for none): each alone, not their union, is a
    /// set every string of which continues the configuration after set
    /// `k` when no lexeme is in progress (after `x` in `x = 1`, both `x1`
    /// and ` \t` continue, but not `\tif`).
    fn loops_at(&self, g: &CompiledGrammar, k: usize) -> [u16; 2] {
        let mut best = [0u16; 2];
        if g.num_loop_sets() == 0 {
            return best;
        }
        let mut size = [0u32; 2];
        let mut take = |l: u16| {
            if l == 0 || best.contains(&l) {
                return;
            }
            let n = g.loop_bytes(l).iter().map(|w| w.count_ones()).sum::<u32>();
            if n > size[0] {
                (best, size) = ([l, best[0]], [n, size[0]]);
            } else if n > size[1] {
                (best[1], size[1]) = (l, n);
            }
        };
        let c = self.set_combo[k];
        if c != NO_COMBO {
            for &l in self.combos[c as usize].loops.iter() {
                take(l);
            }
        }
        for it in &self.items[self.set_range(k)] {
            take(g.dot_loop[it.dot as usize]);
        }
        best
    }

    /// The prediction holding set `k`'s predicted items, if one does.
    #[inline]
    fn combo(&self, k: usize) -> Option<std::sync::Arc<Prediction>> {
        let c = self.set_combo[k];
        (c != NO_COMBO).then(|| self.combos[c as usize].clone())
    }

    fn pop_set(&mut self, pwords: usize) {
        self.gens.pop();
        self.set_combo.pop();
        if let Some((ws, _)) = self.waits_at.pop() {
            self.waits.truncate(ws as usize);
        }
        let s = self.sets.pop().expect("pop on empty chart") as usize;
        self.items.truncate(s);
        let l = self.expect.len() - 2 * pwords;
        self.expect.truncate(l);
    }

    fn expected(&self, pwords: usize) -> &[u64] {
        let l = self.expect.len();
        &self.expect[l - 2 * pwords..l - pwords]
    }

    fn allowed(&self, pwords: usize) -> &[u64] {
        let l = self.expect.len();
        &self.expect[l - pwords..]
    }

    /// [`Chart::allowed`] of set `k`.
    fn allowed_at(&self, k: usize, pwords: usize) -> &[u64] {
        &self.expect[(2 * k + 1) * pwords..(2 * k + 2) * pwords]
    }

    /// [`Chart::expected`] of set `k`.
    fn expected_at(&self, k: usize, pwords: usize) -> &[u64] {
        &self.expect[2 * k * pwords..(2 * k + 1) * pwords]
    }
}

impl CompiledGrammar {
    /// A chart holding the initial set.
    pub fn initial_chart(&self) -> Result<Chart> {
        let mut c = Chart::default();
        let seed = Item {
            dot: self.rule_start[self.start_rule as usize],
            origin: 0,
        };
        if !self.push_set(&mut c, std::iter::once(seed))? {
            return Err(Error::EmptyLanguage("grammar has no initial parse".into()));
        }
        Ok(c)
    }

    /// Build a new set from `seeds` and close it under prediction and
    /// completion. Returns `Ok(false)` (chart unchanged) if it is empty.
    fn push_set(&self, c: &mut Chart, seeds: impl Iterator<Item = Item>) -> Result<bool> {
        let k = c.sets.len() as u32;
        let start = c.items.len();
        let c_combo_bytes = c.combo_bytes;
        c.sets.push(start as u32);
        c.roots.clear();
        if c.ctx_keys.len() <= k as usize {
            c.ctx_keys.push(Vec::new());
            c.ctx_values.push(Vec::new());
        } else {
            c.ctx_keys[k as usize].clear();
            c.ctx_values[k as usize].clear();
        }
        // Clearing a hash set writes all its control bytes, empty or not:
        // once an ambiguous set had grown it, every later set paid for that.
        if !c.seen.is_empty() {
            c.seen.clear();
        }
        c.generation = c.generation.wrapping_add(1);
        if c.generation == 0 {
            c.ctx.clear();
            c.closures.clear();
            c.closure_members = 0;
            c.predicted.iter_mut().for_each(|p| *p = 0);
            c.dot_seen.iter_mut().for_each(|p| *p = 0);
            c.dot_other.iter_mut().for_each(|p| p.0 = 0);
            c.wait_count.iter_mut().for_each(|p| p.0 = 0);
            c.generation = 1;
        }
        let gen = c.generation;
        if c.predicted.len() < self.rules_of.len() || c.dot_seen.len() < self.rhs.len() {
            c.predicted.resize(self.rules_of.len(), 0);
            c.wait_count.resize(self.rules_of.len(), (0, 0));
            c.dot_seen.resize(self.rhs.len(), 0);
            c.dot_other.resize(self.rhs.len(), (0, 0));
        }
        let pw = self.pwords;
        // Borrowed apart, so that the loop keeps them in registers rather
        // than reloading them through `c` after every push.
        let Chart {
            items,
            sets,
            seen,
            predicted,
            dot_seen,
            dot_other,
            wait_count,
            wait_syms,
            waits,
            waits_at,
            gens,
            scratch,
            predicted_items,
            roots,
            set_combo,
            combos,
            ..
        } = c;
        predicted_items.clear();
        // Whether the predicted items will be held by a merged prediction
        // (see [`Chart::set_combo`]): in every set but the first (whose
        // predicted items are what names it), unless merged predictions
        // are over budget or a prediction is not kept; the set then takes
        // the items of its roots so far one by one.
        let mut rooted = k > 0 && c_combo_bytes <= MAX_COMBO_BYTES;
        // A macro rather than a closure: a closure would hold `dot_seen`
        // for the whole loop, and predictions mark it too.
        macro_rules! fresh {
            ($it:expr) => {{
                let it: Item = $it;
                if it.origin == k {
                    let s = &mut dot_seen[it.dot as usize];
                    let new = *s != gen;
                    *s = gen;
                    new
                } else {
                    let s = &mut dot_other[it.dot as usize];
                    if s.0 != gen {
                        *s = (gen, it.origin);
                        true
                    } else {
                        s.1 != it.origin && seen.insert(it)
                    }
                }
            }};
        }
        for it in seeds {
            if fresh!(it) {
                items.push(it);
            }
        }
        let expected = scratch;
        expected.clear();
        expected.resize(pw, 0);
        // Items waiting on a nonterminal, counted per nonterminal as they
        // come (for the completion index below).
        wait_syms.clear();
        // The set is dropped and the step refused: more items than the
        // ambiguity limit allows (the work loop counts the predicted items
        // it will append).
        macro_rules! too_large {
            () => {{
                items.truncate(start);
                sets.pop();
                return Err(Error::TooLarge(format!(
                    "Earley set exceeded {} items (grammar too ambiguous)",
                    self.max_items_per_set
                )));
            }};
        }
        // The items of prediction `p` not in the set yet, into
        // `predicted_items` (they never enter the work loop, see
        // [`Prediction`]).
        macro_rules! take_items {
            ($p:expr) => {{
                let p: &Prediction = $p;
                for &m in p.nts.iter() {
                    predicted[m as usize] = gen;
                }
                for &d in p.dots.iter() {
                    let seen = &mut dot_seen[d as usize];
                    if *seen == gen {
                        continue;
                    }
                    *seen = gen;
                    predicted_items.push(Item { dot: d, origin: k });
                    let sym = self.rhs[d as usize];
                    if sym & NT_FLAG != 0 && sym & END_FLAG == 0 {
                        let w = &mut wait_count[(sym & !NT_FLAG) as usize];
                        if w.0 != gen {
                            *w = (gen, 0);
                            wait_syms.push(sym & !NT_FLAG);
                        }
                        w.1 += 1;
                    }
                }
                for (e, x) in expected.iter_mut().zip(p.expect.iter()) {
                    *e |= x;
                }
            }};
        }
        let mut i = start;
        while i < items.len() {
            if items.len() - start + predicted_items.len() > self.max_items_per_set {
                too_large!();
            }
            let it = items[i];
            i += 1;
            let sym = self.rhs[it.dot as usize];
            if sym & END_FLAG != 0 {
                if it.origin == k {
                    // A rule completed in the set it was predicted in
                    // derives the empty string, so its lhs is nullable and
                    // every item here waiting on it was already advanced
                    // when it predicted it (below): nothing to do. Without
                    // this, each such completion rescanned the whole set
                    // (quadratic in grammars with `ws` between all symbols).
                    continue;
                }
                // Complete: advance items in the origin set waiting on lhs.
                let lhs = self.rule_lhs[(sym & !END_FLAG) as usize];
                let want = NT_FLAG | lhs;
                let (ws, we) = waits_at[it.origin as usize];
                if ws < we {
                    let idx = &waits[ws as usize..we as usize];
                    let from = idx.partition_point(|&(sym, _)| sym < want);
                    for &(sym, j) in &idx[from..] {
                        if sym != want {
                            break;
                        }
                        let w = items[j as usize];
                        let adv = Item {
                            dot: w.dot + 1,
                            origin: w.origin,
                        };
                        if fresh!(adv) {
                            items.push(adv);
                        }
                    }
                } else {
                    let (s, e) = (sets[it.origin as usize] as usize, sets[it.origin as usize + 1] as usize);
                    for j in s..e {
                        let w = items[j];
                        if self.rhs[w.dot as usize] == want {
                            let adv = Item {
                                dot: w.dot + 1,
                                origin: w.origin,
                            };
                            if fresh!(adv) {
                                items.push(adv);
                            }
                        }
                    }
                }
                // And those its merged prediction holds.
                let combo = set_combo[it.origin as usize];
                if combo != NO_COMBO {
                    for &d in combos[combo as usize].by_wait.get(lhs) {
                        let adv = Item {
                            dot: d + 1,
                            origin: it.origin,
                        };
                        if fresh!(adv) {
                            items.push(adv);
                        }
                    }
                }
            } else if sym & NT_FLAG != 0 {
                let n = (sym & !NT_FLAG) as usize;
                let w = &mut wait_count[n];
                if w.0 != gen {
                    *w = (gen, 0);
                    wait_syms.push(n as u32);
                }
                w.1 += 1;
                if predicted[n] != gen {
                    predicted[n] = gen;
                    let pred = self.prediction(n);
                    if rooted && pred.is_none() {
                        rooted = false;
                        for &r in roots.iter() {
                            take_items!(self.prediction(r as usize).expect("a root's prediction is kept"));
                        }
                        roots.clear();
                    }
                    if let Some(p) = pred.filter(|_| rooted) {
                        // Held by its name; what it predicts in turn too.
                        for &m in p.nts.iter() {
                            predicted[m as usize] = gen;
                        }
                        roots.push(n as u32);
                        for (e, x) in expected.iter_mut().zip(p.expect.iter()) {
                            *e |= x;
                        }
                    } else if let Some(p) = pred {
                        take_items!(p);
                    } else {
                        for &r in &self.rules_of[n] {
                            let p = Item {
                                dot: self.rule_start[r as usize],
                                origin: k,
                            };
                            if fresh!(p) {
                                items.push(p);
                            }
                        }
                    }
                }
                if self.nullable[n] {
                    let adv = Item {
                        dot: it.dot + 1,
                        origin: it.origin,
                    };
                    if fresh!(adv) {
                        items.push(adv);
                    }
                }
            } else {
                expected[sym as usize / 64] |= 1 << (sym % 64);
            }
        }
        items.extend_from_slice(predicted_items);
        if items.len() - start > self.max_items_per_set {
            too_large!();
        }
        if items.len() == start {
            sets.pop();
            return Ok(false);
        }
        let ws = waits.len();
        if items.len() - start >= INDEX_MIN_ITEMS {
            // Grouped by symbol with a counting sort: the few distinct
            // nonterminals waited on (counted above) in order, then place.
            wait_syms.sort_unstable();
            let mut slot = ws as u32;
            for &x in wait_syms.iter() {
                let w = &mut wait_count[x as usize];
                let n = w.1;
                w.1 = slot;
                slot += n;
            }
            waits.resize(slot as usize, (0, 0));
            for (j, it) in items.iter().enumerate().skip(start) {
                let sym = self.rhs[it.dot as usize];
                if sym & NT_FLAG != 0 && sym & END_FLAG == 0 {
                    let w = &mut wait_count[(sym & !NT_FLAG) as usize];
                    waits[w.1 as usize] = (sym, j as u32);
                    w.1 += 1;
                }
            }
        }
        waits_at.push((ws as u32, waits.len() as u32));
        gens.push(gen);
        let combo = if roots.is_empty() { NO_COMBO } else { c.combo_id(self) };
        c.set_combo.push(combo);
        let (expect, expected) = (&mut c.expect, &c.scratch);
        expect.extend_from_slice(expected);
        for (w, e) in expected.iter().enumerate() {
            expect.push(e | self.ignore[w]);
        }
        Ok(true)
    }

    /// Scan the terminals in `terms` (a bitset) at the top set.
    fn scan(&self, c: &mut Chart, terms: &[u64]) -> Result<bool> {
        let top = c.sets.len() - 1;
        let range = c.set_range(top);
        let mut seeds = std::mem::take(&mut c.seeds);
        seeds.clear();
        seeds.extend(
            c.items[range]
                .iter()
                .filter(|it| {
                    let s = self.rhs[it.dot as usize];
                    s & (NT_FLAG | END_FLAG) == 0 && terms[s as usize / 64] >> (s % 64) & 1 == 1
                })
                .map(|it| Item {
                    dot: it.dot + 1,
                    origin: it.origin,
                }),
        );
        // Predicted items held by a merged prediction: looked up per
        // scanned terminal.
        if let Some(p) = c.combo(top) {
            for (w, &bits) in terms.iter().enumerate() {
                let mut bits = bits;
                while bits != 0 {
                    let t = (w * 64) as u32 + bits.trailing_zeros();
                    bits &= bits - 1;
                    seeds.extend(p.by_term.get(t).iter().map(|&d| Item {
                        dot: d + 1,
                        origin: top as u32,
                    }));
                }
            }
        }
        let r = self.push_set(c, seeds.iter().copied());
        c.seeds = seeds;
        r
    }

    /// The top set contains the completed start rule.
    fn chart_accepts(&self, c: &Chart) -> bool {
        let end = END_FLAG | self.start_rule;
        c.items[c.set_range(c.sets.len() - 1)]
            .iter()
            .any(|it| it.origin == 0 && self.rhs[it.dot as usize] == end)
    }
}

/// A 128-bit name of a set of roots (each root once), whatever their
/// order: sorting them per set and hashing the sorted list as a key cost
/// 3% of the PoC JavaScript grammar's mask instructions. A collision
/// would give a set the wrong predicted items, as one of the 128-bit
/// fingerprints the masks are memoised by would; both are as unlikely.
fn roots_key(roots: &[u32]) -> u128 {
    let (mut a, mut b) = (0u64, 0u64);
    for &r in roots {
        a = a.wrapping_add(mix(r as u64 ^ 0x243f_6a88_85a3_08d3));
        b = b.wrapping_add(mix((r as u64).wrapping_mul(0x1319_8a2e_0370_7344) ^ 0xa409_3822_299f_31d0));
    }
    ((mix(a ^ roots.len() as u64) as u128) << 64) | mix(b) as u128
}

/// A name per `rhs` position, equal for two positions iff they have the
/// same left-hand side and the same symbols after them (rule ends alike).
///
/// Why: an item's future is what is left of its rule and what completing
/// the rule advances (its context); which rule it is, or how far into it,
/// is not. `x+` is `h -> x | h x`: the first `x` is read by `h -> . x`,
/// every later one by `h -> h . x`, and naming the two by their dots made
/// the first pass of a repetition a configuration apart from the others (a
/// second item or section of an INI file, in Lark's `conf` example, took
/// its dense first-visit masks anew). Named from each rule's end
/// backwards, so the work is linear in the grammar.
fn dot_names(rhs: &[u32], dot_lhs: &[u32]) -> Vec<u32> {
    let mut names = vec![0u32; rhs.len()];
    let mut ids: FxMap<(u32, u32, u32), u32> = FxMap::default();
    let mut next = u32::MAX; // the name of the position after this one
    for p in (0..rhs.len()).rev() {
        let s = rhs[p];
        // A rule's end: the same name for every rule of one left-hand side.
        let key = if s & END_FLAG != 0 {
            (dot_lhs[p], END_FLAG, u32::MAX)
        } else {
            (dot_lhs[p], s, next)
        };
        let fresh = ids.len() as u32;
        let id = *ids.entry(key).or_insert(fresh);
        names[p] = id;
        next = id;
    }
    names
}

/// Fold item (dot, context) into an order-independent pair of accumulators.
#[inline]
fn fold_item(a: &mut u64, b: &mut u64, dot: u32, c: u128) {
    let x = mix(dot as u64 ^ (c as u64).rotate_left(17));
    let y = mix((dot as u64).wrapping_mul(0x2545_f491_4f6c_dd1d) ^ ((c >> 64) as u64));
    *a = a.wrapping_add(x);
    *b ^= y.wrapping_mul(x | 1);
}

/// splitmix64 finaliser.
#[inline]
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Some bit is set in both.
#[inline]
pub(crate) fn intersects(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).any(|(x, y)| x & y != 0)
}

/// Stands in [`GrammarState`]'s lexer stack for "no lexeme in progress
/// after this byte": the byte completed a lexeme that no byte can extend
/// (every GBNF character, most punctuation), so it was ended at once.
///
/// Why at once rather than when the next byte comes: the state is then
/// the same whichever character it was (`"ab` and `"ay` both sit inside a
/// string body), so masks memoised by state are found again at the next
/// character of the same context instead of being keyed by the last one.
const FRESH: u32 = u32::MAX;

/// Parser + lexer state of one sequence: a chart and, per pushed byte, the
/// lexer state and the chart height at that byte.
#[derive(Debug, Clone)]
pub struct GrammarState {
    chart: Chart,
    /// Lexer state after each byte (or [`FRESH`]); `lex[0]` is the lexer start.
    lex: Vec<u32>,
    /// Chart height (number of sets) after each byte.
    height: Vec<u32>,
    /// First error hit while pushing (limits); reported by the matcher.
    pub(crate) error: Option<Error>,
    /// Scratch: the terminals a lexeme end scans.
    scan: Vec<u64>,
}

/// The bytes a walk pushed onto one [`GrammarState`], kept so that the
/// parser can be put back into a configuration without taking them again.
///
/// Why: a mask walk over [`crate::grammar::mask::LazyDfa`] trails the
/// trie with the real parser only where a transition is new, and to get
/// there it replayed the path from the deepest node the parser stood on.
/// Nearly all of those replays (98% on the PoC Python grammar, where they
/// were 60% of the parser steps of its slowest masks) led to a
/// configuration the same walk had already stood in, by another path. Any
/// chart in a configuration with that name has the same future (the
/// premise of the lazy automaton), so the sets the parser built the first
/// time are copied back instead of rebuilt: a copy of the items rather
/// than an Earley step per byte.
///
/// Each record is one byte taken: its lexer state, the sets it pushed,
/// and the record of the byte before it (a tree rooted at the base). The
/// records are valid only over the base they were taken from (the sets
/// below it, and their item and index offsets, must be the same);
/// [`ByteSnaps::clear`] before another.
#[derive(Debug, Default)]
pub struct ByteSnaps {
    bytes: Vec<SnapByte>,
    sets: Vec<SnapSet>,
    items: Vec<Item>,
    waits: Vec<(u32, u32)>,
    expect: Vec<u64>,
    /// The contexts memoised beside each set ([`Chart::memo`]), saved when
    /// the set is popped and put back with it: a set's contexts are asked
    /// for again by every set built above it.
    memo_keys: Vec<u32>,
    memo_values: Vec<u128>,
    /// Scratch for [`ByteSnaps::goto`].
    chain: Vec<u32>,
    popped: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
struct SnapByte {
    /// The record of the byte before, or [`NO_SNAP`].
    prev: u32,
    /// Bytes taken from the base, this one included.
    depth: u32,
    /// What the caller named the configuration after it.
    name: u32,
    /// Lexer state after it.
    lex: u32,
    /// Its sets in `sets`.
    sets: (u32, u32),
}

/// A set as the parser built it, with where its copies are kept.
#[derive(Debug, Clone, Copy)]
struct SnapSet {
    /// Its index in the chart.
    index: u32,
    start: u32,
    gen: u32,
    combo: u32,
    waits_at: (u32, u32),
    items: (u32, u32),
    waits: (u32, u32),
    /// Its saved contexts in `memo_keys` / `memo_values`.
    memo: (u32, u32),
}

/// No record: the base itself.
pub const NO_SNAP: u32 = u32::MAX;

/// Items past which [`ByteSnaps::full`] says so (8 MiB).
const MAX_SNAP_ITEMS: usize = 1 << 20;

impl ByteSnaps {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.sets.clear();
        self.items.clear();
        self.waits.clear();
        self.expect.clear();
        self.memo_keys.clear();
        self.memo_values.clear();
    }

    /// Whether the records hold as much as they should: the caller goes
    /// back to the base and clears them.
    pub fn full(&self) -> bool {
        self.items.len() > MAX_SNAP_ITEMS || self.memo_keys.len() > MAX_SNAP_ITEMS || self.bytes.len() >= (NO_SNAP / 2) as usize
    }

    /// The name given to record `r` (`base` for [`NO_SNAP`]).
    pub fn name(&self, r: u32, base: u32) -> u32 {
        if r == NO_SNAP {
            base
        } else {
            self.bytes[r as usize].name
        }
    }

    fn depth(&self, r: u32) -> u32 {
        if r == NO_SNAP {
            0
        } else {
            self.bytes[r as usize].depth
        }
    }

    /// Record the last byte `st` took, after record `prev` (`st` stood
    /// there before it), naming the configuration after it `name`.
    pub fn record(&mut self, g: &CompiledGrammar, st: &GrammarState, prev: u32, name: u32) -> u32 {
        let n = st.lex.len();
        let (h0, h1) = (st.height[n - 2] as usize, st.height[n - 1] as usize);
        let c = &st.chart;
        let first = self.sets.len() as u32;
        for k in h0..h1 {
            let r = c.set_range(k);
            let items = (self.items.len() as u32, (self.items.len() + r.len()) as u32);
            self.items.extend_from_slice(&c.items[r.clone()]);
            let (ws, we) = c.waits_at[k];
            let waits = (self.waits.len() as u32, self.waits.len() as u32 + (we - ws));
            self.waits.extend_from_slice(&c.waits[ws as usize..we as usize]);
            self.expect.extend_from_slice(&c.expect[2 * k * g.pwords..(2 * k + 2) * g.pwords]);
            self.sets.push(SnapSet {
                index: k as u32,
                start: r.start as u32,
                gen: c.gens[k],
                combo: c.set_combo[k],
                waits_at: (ws, we),
                items,
                waits,
                memo: (0, 0),
            });
        }
        self.bytes.push(SnapByte {
            prev,
            depth: self.depth(prev) + 1,
            name,
            lex: st.lex[n - 1],
            sets: (first, self.sets.len() as u32),
        });
        (self.bytes.len() - 1) as u32
    }

    /// Move `st`, standing at record `from`, to record `to`: pop the bytes
    /// down to the records' common ancestor, then copy back the sets of
    /// the records from there to `to`.
    #[inline]
    pub fn goto(&mut self, g: &CompiledGrammar, st: &mut GrammarState, from: u32, to: u32) {
        if from != to {
            self.go(g, st, from, to);
        }
    }

    #[inline(never)]
    fn go(&mut self, g: &CompiledGrammar, st: &mut GrammarState, from: u32, to: u32) {
        let mut chain = std::mem::take(&mut self.chain);
        chain.clear();
        let (mut a, mut b) = (from, to);
        let mut popped = std::mem::take(&mut self.popped);
        popped.clear();
        while self.depth(a) > self.depth(b) {
            popped.push(a);
            a = self.bytes[a as usize].prev;
        }
        while self.depth(b) > self.depth(a) {
            chain.push(b);
            b = self.bytes[b as usize].prev;
        }
        while a != b {
            popped.push(a);
            a = self.bytes[a as usize].prev;
            chain.push(b);
            b = self.bytes[b as usize].prev;
        }
        let c = &mut st.chart;
        for &r in &popped {
            let rec = self.bytes[r as usize];
            for j in rec.sets.0..rec.sets.1 {
                let s = &mut self.sets[j as usize];
                let k = s.index as usize;
                let keys = &c.ctx_keys[k];
                if keys.len() > (s.memo.1 - s.memo.0) as usize {
                    let at = self.memo_keys.len() as u32;
                    self.memo_keys.extend_from_slice(keys);
                    self.memo_values.extend_from_slice(&c.ctx_values[k]);
                    s.memo = (at, self.memo_keys.len() as u32);
                }
            }
        }
        self.popped = popped;
        let pop = (self.depth(from) - self.depth(a)) as usize;
        if pop > 0 {
            st.pop_bytes(g, pop);
        }
        let pw = g.pwords;
        let c = &mut st.chart;
        for &r in chain.iter().rev() {
            let rec = self.bytes[r as usize];
            for j in rec.sets.0..rec.sets.1 {
                let s = self.sets[j as usize];
                let k = c.sets.len();
                debug_assert_eq!(s.start as usize, c.items.len(), "records of another base");
                debug_assert_eq!(s.waits_at.0 as usize, c.waits.len(), "records of another base");
                c.sets.push(s.start);
                c.items.extend_from_slice(&self.items[s.items.0 as usize..s.items.1 as usize]);
                c.waits.extend_from_slice(&self.waits[s.waits.0 as usize..s.waits.1 as usize]);
                c.waits_at.push(s.waits_at);
                c.gens.push(s.gen);
                c.set_combo.push(s.combo);
                c.expect.extend_from_slice(&self.expect[2 * j as usize * pw..(2 * j as usize + 2) * pw]);
                // The contexts kept beside a set index are those of
                // whichever set held it last: this one's are put back.
                if c.ctx_keys.len() <= k {
                    c.ctx_keys.push(Vec::new());
                    c.ctx_values.push(Vec::new());
                }
                let (m0, m1) = (s.memo.0 as usize, s.memo.1 as usize);
                c.ctx_keys[k].clear();
                c.ctx_keys[k].extend_from_slice(&self.memo_keys[m0..m1]);
                c.ctx_values[k].clear();
                c.ctx_values[k].extend_from_slice(&self.memo_values[m0..m1]);
            }
            st.lex.push(rec.lex);
            st.height.push(c.sets.len() as u32);
        }
        self.chain = chain;
    }
}

impl GrammarState {
    pub fn new(g: &CompiledGrammar) -> Result<Self> {
        let chart = g.initial_chart()?;
        Ok(GrammarState {
            lex: vec![g.lexer.start()],
            height: vec![chart.num_sets() as u32],
            chart,
            error: None,
            scan: Vec::new(),
        })
    }

    pub fn num_bytes(&self) -> usize {
        self.lex.len() - 1
    }

    /// Key under which this state's mask can be memoised: the lexer state,
    /// whether a lexeme is in progress, and the chart's fingerprint, with
    /// whether the top set accepts where that can still matter.
    ///
    /// It cannot while a lexeme is in progress that no `%ignore` terminal
    /// is among: whatever ends the lexeme scans a terminal and starts a new
    /// set, and the top set's completed start rule is never read again. So
    /// the `[` of a second INI section (after a complete first one) has the
    /// key of the first section's `[`, and its dense mask is not computed
    /// anew.
    pub fn mask_key(&mut self, g: &CompiledGrammar) -> (u32, bool, u128) {
        let (s, ip) = self.lexer_position(g);
        let fp = self.chart.fingerprint(g);
        let matters = !ip || intersects(g.lexer.reach(s), &g.ignore);
        // The lowest bit is acceptance ([`Chart::fingerprint`]), memoised
        // with the rest: no scan of the top set per key.
        (s, ip, if matters { fp } else { fp & !1 })
    }

    /// [`Chart::local_fingerprint_at`] of chart set `k`: a
    /// position-independent name for the parser configuration after it.
    pub fn set_fingerprint(&mut self, g: &CompiledGrammar, k: usize) -> u128 {
        self.chart.local_fingerprint_at(g, k)
    }

    /// Push one byte under greedy contextual lexing; `false` (state
    /// unchanged) if no string of the language continues with it.
    pub fn push_byte(&mut self, g: &CompiledGrammar, b: u8) -> bool {
        let pw = g.pwords;
        let (s, in_progress) = self.lexer_position(g);
        let s2 = g.lexer.next(s, b);
        if s2 != DEAD && intersects(g.lexer.reach(s2), self.chart.allowed(pw)) {
            return self.push_lexer_state(g, s2);
        }
        if !in_progress {
            return false; // no lexeme in progress: nothing to end
        }
        // End the current lexeme at `s`, then start a new one with `b`.
        let Some(scanned) = self.end_lexeme(g, s) else {
            return false;
        };
        let s3 = g.lexer.next(g.lexer.start(), b);
        if s3 != DEAD && intersects(g.lexer.reach(s3), self.chart.allowed(pw)) && self.push_lexer_state(g, s3) {
            return true;
        }
        if scanned {
            self.chart.pop_set(pw);
        }
        false
    }

    /// Record lexer state `s` for the byte just taken; a lexeme that no
    /// byte can extend is ended at once (see [`FRESH`]). `false` (nothing
    /// recorded, chart as it was) if that end fails.
    fn push_lexer_state(&mut self, g: &CompiledGrammar, s: u32) -> bool {
        let s = if g.lexer.is_terminal(s) {
            if self.end_lexeme(g, s).is_none() {
                return false;
            }
            FRESH
        } else {
            s
        };
        self.lex.push(s);
        self.height.push(self.chart.num_sets() as u32);
        true
    }

    pub fn pop_bytes(&mut self, g: &CompiledGrammar, n: usize) {
        let l = self.lex.len() - n;
        self.lex.truncate(l);
        self.height.truncate(l);
        let h = *self.height.last().unwrap() as usize;
        while self.chart.num_sets() > h {
            self.chart.pop_set(g.pwords);
        }
    }

    /// Current lexer state, whether a lexeme is in progress, and the
    /// terminals the lexer may match now (expected plus `%ignore`).
    pub fn lexer_view(&self, g: &CompiledGrammar) -> (u32, bool, &[u64]) {
        let (s, ip) = self.lexer_position(g);
        (s, ip, self.chart.allowed(g.pwords))
    }

    /// Move to the state right after the current lexeme ends in lexer state
    /// `ls` (a state reached by extending the lexeme in progress): scan the
    /// matched terminals and start a fresh lexeme. Returns what
    /// [`GrammarState::leave_after_lexeme`] needs to undo it, or `None` if
    /// the lexeme cannot end there.
    pub fn enter_after_lexeme(&mut self, g: &CompiledGrammar, ls: u32) -> Option<(Vec<u32>, Vec<u32>, bool)> {
        let scanned = self.end_lexeme(g, ls)?;
        let lex = std::mem::replace(&mut self.lex, vec![g.lexer.start()]);
        let height = std::mem::replace(&mut self.height, vec![self.chart.num_sets() as u32]);
        Some((lex, height, scanned))
    }

    /// End the lexeme in progress in lexer state `ls`: scan the expected
    /// terminals it matches (pushing a chart set), or, if it matches only
    /// `%ignore` terminals, leave the parser as it is. `None` if it matches
    /// nothing allowed or the scan fails; otherwise whether a set was pushed.
    fn end_lexeme(&mut self, g: &CompiledGrammar, ls: u32) -> Option<bool> {
        let pw = g.pwords;
        let m = g.lexer.matches(ls);
        if !intersects(m, self.chart.allowed(pw)) {
            return None;
        }
        let mut scan = std::mem::take(&mut self.scan);
        scan.clear();
        scan.extend(m.iter().zip(self.chart.expected(pw)).map(|(x, y)| x & y));
        if scan.iter().all(|&w| w == 0) {
            self.scan = scan;
            return Some(false); // only %ignore terminals matched: the parser stays put
        }
        let r = g.scan(&mut self.chart, &scan);
        self.scan = scan;
        match r {
            Ok(true) => Some(true),
            Ok(false) => None,
            Err(e) => {
                self.error.get_or_insert(e);
                None
            }
        }
    }

    /// Number of chart sets (parser steps taken so far).
    /// Terminals the lexer may match after chart set `k` (expected there
    /// plus `%ignore`).
    pub fn allowed_at(&self, g: &CompiledGrammar, k: usize) -> &[u64] {
        self.chart.allowed_at(k, g.pwords)
    }

    /// Up to two byte sets ([`CompiledGrammar::loop_bytes`], 0 for none)
    /// each of which continues the configuration after chart set `k` with
    /// any string of its bytes where no lexeme is in progress: the bytes
    /// that take a repetition `h -> h x` one more time, alone (see
    /// [`repetition_loops`]).
    pub fn loops_at(&self, g: &CompiledGrammar, k: usize) -> [u16; 2] {
        self.chart.loops_at(g, k)
    }

    /// Terminals the parser expects after chart set `k`.
    pub fn expected_at(&self, g: &CompiledGrammar, k: usize) -> &[u64] {
        self.chart.expected_at(k, g.pwords)
    }

    pub fn chart_height(&self) -> usize {
        self.chart.num_sets()
    }

    /// Lexer state and whether a lexeme is in progress.
    pub fn lexer_position(&self, g: &CompiledGrammar) -> (u32, bool) {
        let s = *self.lex.last().unwrap();
        if self.lex.len() == 1 || s == FRESH {
            (g.lexer.start(), false)
        } else {
            (s, true)
        }
    }

    pub fn leave_after_lexeme(&mut self, g: &CompiledGrammar, saved: (Vec<u32>, Vec<u32>, bool)) {
        let (lex, height, scanned) = saved;
        self.lex = lex;
        self.height = height;
        if scanned {
            self.chart.pop_set(g.pwords);
        }
    }

    /// The bytes so far form a complete string of the language.
    pub fn is_accepting(&mut self, g: &CompiledGrammar) -> bool {
        let (s, in_progress) = self.lexer_position(g);
        if !in_progress {
            return g.chart_accepts(&self.chart);
        }
        // End the lexeme in progress exactly as a following byte would
        // (expected terminals win over %ignore), then ask the parser.
        match self.end_lexeme(g, s) {
            None => false,
            Some(scanned) => {
                let acc = g.chart_accepts(&self.chart);
                if scanned {
                    self.chart.pop_set(g.pwords);
                }
                acc
            }
        }
    }

    /// Some byte can follow.
    pub fn can_continue(&mut self, g: &CompiledGrammar) -> bool {
        (0..=255u8).any(|b| {
            let ok = self.push_byte(g, b);
            if ok {
                self.pop_bytes(g, 1);
            }
            ok
        })
    }
}

/// Whether lexer state `s` extends with byte `b` under `allowed`.
#[inline]
pub fn extends(lexer: &Dfa, s: u32, b: u8, allowed: &[u64]) -> bool {
    let t = lexer.next(s, b);
    t != DEAD && intersects(lexer.reach(t), allowed)
}

/// Some terminal in `allowed` matches in lexer state `s`.
#[inline]
pub fn can_end(lexer: &Dfa, s: u32, allowed: &[u64]) -> bool {
    intersects(lexer.matches(s), allowed)
}

/// Trie-walk adapter over a grammar state.
pub struct GrammarWalker<'a> {
    pub g: &'a CompiledGrammar,
    pub st: &'a mut GrammarState,
}

impl crate::toktrie::Recognizer for GrammarWalker<'_> {
    #[inline]
    fn try_push_byte(&mut self, b: u8) -> bool {
        self.st.push_byte(self.g, b)
    }
    #[inline]
    fn pop_bytes(&mut self, n: usize) {
        if n > 0 {
            self.st.pop_bytes(self.g, n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::GrammarBuilder;

    fn accepts(g: &CompiledGrammar, s: &str) -> Option<bool> {
        let mut st = GrammarState::new(g).unwrap();
        for &b in s.as_bytes() {
            if !st.push_byte(g, b) {
                return None;
            }
        }
        Some(st.is_accepting(g))
    }

    fn arith() -> CompiledGrammar {
        // e -> e "+" t | t ; t -> t "*" f | f ; f -> NUM | "(" e ")"  (left recursive)
        let mut b = GrammarBuilder::new();
        let e = b.nonterminal("e");
        let t = b.nonterminal("t");
        let f = b.nonterminal("f");
        let num = b.terminal("NUM", "[0-9]+");
        let plus = b.literal("+");
        let star = b.literal("*");
        let lp = b.literal("(");
        let rp = b.literal(")");
        let ws = b.terminal("WS", "[ ]+");
        b.ignore(ws);
        b.rule(e, vec![Sym::N(e), Sym::T(plus), Sym::N(t)]);
        b.rule(e, vec![Sym::N(t)]);
        b.rule(t, vec![Sym::N(t), Sym::T(star), Sym::N(f)]);
        b.rule(t, vec![Sym::N(f)]);
        b.rule(f, vec![Sym::T(num)]);
        b.rule(f, vec![Sym::T(lp), Sym::N(e), Sym::T(rp)]);
        CompiledGrammar::new(&b.finish("e").unwrap(), &GrammarLimits::default()).unwrap()
    }

    /// Records taken over one base, visited in any order: the chart after
    /// [`ByteSnaps::goto`] is the one the bytes build, set for set, with the
    /// same future (the same fingerprints, the same next steps).
    #[test]
    fn byte_snaps_put_back_the_charts_the_bytes_build() {
        let gbnf = "root ::= (expr \";\")*\nexpr ::= term ((\"+\" | \"-\") term)*\nterm ::= [a-z]+ | \"(\" expr \")\" | [0-9]+\n";
        let char_level = crate::grammar::gbnf::parse_gbnf(gbnf, &GrammarLimits::default()).unwrap();
        let char_level = CompiledGrammar::new(&char_level, &GrammarLimits::default()).unwrap();
        for (g, base, paths) in [
            (arith(), "1+", &["(2*3", "(4+", "5 ", "(2*", "(2*3)", "6 *7"][..]),
            (char_level, "ab;", &["(x+", "(x+y", "(12-", "ab", "(x+(", "a;b"][..]),
        ] {
            let fresh = |bytes: &str| {
                let mut st = GrammarState::new(&g).unwrap();
                for b in base.bytes().chain(bytes.bytes()) {
                    assert!(st.push_byte(&g, b), "{base}{bytes}");
                }
                st
            };
            let mut st = fresh("");
            let mut snaps = ByteSnaps::default();
            let mut at = NO_SNAP;
            // One record per prefix of every path, each taken from its parent.
            let mut records: Vec<(String, u32)> = vec![(String::new(), NO_SNAP)];
            for p in paths {
                for n in 1..=p.len() {
                    if records.iter().any(|(q, _)| q == &p[..n]) {
                        continue;
                    }
                    let parent = records.iter().find(|(q, _)| q == &p[..n - 1]).unwrap().1;
                    snaps.goto(&g, &mut st, at, parent);
                    assert!(st.push_byte(&g, p.as_bytes()[n - 1]));
                    at = snaps.record(&g, &st, parent, n as u32);
                    records.push((p[..n].to_string(), at));
                }
            }
            // Visit them in a scrambled order and back to the base.
            let order: Vec<usize> = (0..3 * records.len()).map(|i| (i * 7 + 3) % records.len()).chain([0]).collect();
            for i in order {
                let (bytes, r) = &records[i];
                snaps.goto(&g, &mut st, at, *r);
                at = *r;
                let mut want = fresh(bytes);
                assert_eq!(st.chart.items, want.chart.items, "{bytes:?}");
                assert_eq!(st.chart.sets, want.chart.sets, "{bytes:?}");
                assert_eq!(st.chart.expect, want.chart.expect, "{bytes:?}");
                assert_eq!(st.chart.waits_at, want.chart.waits_at, "{bytes:?}");
                assert_eq!(st.lex, want.lex, "{bytes:?}");
                assert_eq!(st.height, want.height, "{bytes:?}");
                assert_eq!(st.mask_key(&g), want.mask_key(&g), "{bytes:?}");
                assert_eq!(snaps.name(at, 0), if *r == NO_SNAP { 0 } else { bytes.len() as u32 });
                for b in [b'1', b'+', b'*', b')', b'(', b' ', b'x', b';', b'-'] {
                    let (x, y) = (st.push_byte(&g, b), want.push_byte(&g, b));
                    assert_eq!(x, y, "{bytes:?} then {:?}", b as char);
                    if x {
                        assert_eq!(st.mask_key(&g), want.mask_key(&g), "{bytes:?} then {:?}", b as char);
                        assert_eq!(st.is_accepting(&g), want.is_accepting(&g));
                        st.pop_bytes(&g, 1);
                        want.pop_bytes(&g, 1);
                    }
                }
            }
        }
    }

    #[test]
    fn arithmetic() {
        let g = arith();
        assert_eq!(accepts(&g, "1+2*3"), Some(true));
        assert_eq!(accepts(&g, "12 + (3*4)"), Some(true));
        assert_eq!(accepts(&g, "12 + (3*4"), Some(false));
        assert_eq!(accepts(&g, "1+"), Some(false));
        assert_eq!(accepts(&g, "1++"), None);
        assert_eq!(accepts(&g, ")"), None);
        assert_eq!(accepts(&g, "1 2"), None);
    }

    /// Every future a state has, up to `depth` more bytes of `alphabet`:
    /// the strings it accepts, and the strings it can take, in order.
    fn futures(g: &CompiledGrammar, st: &mut GrammarState, alphabet: &[u8], depth: usize) -> Vec<(Vec<u8>, bool)> {
        fn go(g: &CompiledGrammar, st: &mut GrammarState, alphabet: &[u8], depth: usize, path: &mut Vec<u8>, out: &mut Vec<(Vec<u8>, bool)>) {
            out.push((path.clone(), st.is_accepting(g)));
            if depth == 0 {
                return;
            }
            for &b in alphabet {
                if st.push_byte(g, b) {
                    path.push(b);
                    go(g, st, alphabet, depth - 1, path, out);
                    path.pop();
                    st.pop_bytes(g, 1);
                }
            }
        }
        let mut out = Vec::new();
        go(g, st, alphabet, depth, &mut Vec::new(), &mut out);
        out
    }

    /// The mask key after `text`.
    fn key_after(g: &CompiledGrammar, text: &str) -> (u32, bool, u128) {
        let mut st = GrammarState::new(g).unwrap();
        for b in text.bytes() {
            assert!(st.push_byte(g, b), "{text}");
        }
        st.mask_key(g)
    }

    /// States at every prefix of random texts of `g` over `alphabet`,
    /// grouped by mask key: in each group every future up to four bytes
    /// (strings taken, and which of them are complete) is the same.
    /// Returns (states, keys).
    fn check_keys_by_futures(g: &CompiledGrammar, alphabet: &[u8], seed: u64) -> (usize, usize) {
        use rand_xoshiro::rand_core::{Rng, SeedableRng};
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
        // Per key: the first text that had it, and its futures.
        type Futures = Vec<(Vec<u8>, bool)>;
        let mut groups: FxMap<(u32, bool, u128), (String, Futures)> = FxMap::default();
        let mut states = 0;
        for _ in 0..60 {
            let mut st = GrammarState::new(g).unwrap();
            let mut text = String::new();
            for _ in 0..24 {
                let key = st.mask_key(g);
                let fut = futures(g, &mut st, alphabet, 4);
                states += 1;
                match groups.get(&key) {
                    Some((other, want)) => assert!(want == &fut, "{text:?} and {other:?} share a key, not a future"),
                    None => {
                        groups.insert(key, (text.clone(), fut));
                    }
                }
                let next: Vec<u8> = alphabet
                    .iter()
                    .copied()
                    .filter(|&b| {
                        let ok = st.push_byte(g, b);
                        if ok {
                            st.pop_bytes(g, 1);
                        }
                        ok
                    })
                    .collect();
                let b = next[rng.next_u32() as usize % next.len()];
                assert!(st.push_byte(g, b));
                text.push(b as char);
            }
        }
        (states, groups.len())
    }

    /// Equal mask keys mean equal futures, and a repetition's first pass
    /// has the key of its later ones. States at every prefix of random
    /// texts of a grammar with left, right and mutual recursion, nested
    /// repetitions, optionals and an empty list are grouped by key
    /// ([`check_keys_by_futures`]). And after `a+` the key is that after
    /// `a+b*a-`, inside an identifier too, and inside the first element of
    /// `(expr ";")+` as inside a later one; inside parentheses it is not.
    /// (Before contexts folded the items predicted in their own set by
    /// what they lead to, the first pass had a key of its own: the same
    /// texts gave 835 keys, then 762; with dots named by what is left of
    /// their rules, and acceptance left out while a lexeme is in progress,
    /// 662.)
    #[test]
    fn equal_keys_have_equal_futures() {
        let gbnf = "root ::= (expr \";\")+\nexpr ::= term ((\"+\" | \"-\") term)*\nterm ::= atom | term \"*\" atom | \"-\" term\natom ::= [a-b]+ | \"(\" expr \")\" | list\nlist ::= \"[\" (expr (\",\" expr)*)? \"]\"\n";
        let g = crate::grammar::gbnf::parse_gbnf(gbnf, &GrammarLimits::default()).unwrap();
        let g = CompiledGrammar::new(&g, &GrammarLimits::default()).unwrap();
        let key_after = |text: &str| key_after(&g, text);
        assert_eq!(key_after("a+"), key_after("a+b*a-"));
        assert_eq!(key_after("a+b"), key_after("a+b*a-ab"));
        assert_eq!(key_after("[a,"), key_after("[a,b,"));
        assert_eq!(key_after("a;"), key_after("a;b;"));
        assert_eq!(key_after("a"), key_after("a;b"));
        assert_eq!(key_after("a+[b"), key_after("a;b;a+[b"));
        assert_ne!(key_after("a+"), key_after("(a+"));
        assert_ne!(key_after("[a,"), key_after("[[a,"));
        let (states, keys) = check_keys_by_futures(&g, b"ab+-*;()[],", 11);
        // Not a vacuous check: most states share a key with another.
        assert!(states - keys > 700, "{keys} keys for {states} states");
    }

    /// [`equal_keys_have_equal_futures`] for a Lark grammar with an
    /// `%ignore`d space, where acceptance may matter while a lexeme is in
    /// progress (a space after a complete text), and where it does not:
    /// `[` of a second section, after a complete first one, has the key of
    /// the first section's `[`; an item's value has one key in every item.
    #[test]
    fn equal_keys_have_equal_futures_with_ignored_lexemes() {
        let lark = "start: section+\nsection: \"[\" NAME \"]\" item+\nitem: NAME \"=\" VALUE? \";\"\nNAME: /[ab]+/\nVALUE: /[ab ]+/\n%ignore \" \"\n";
        let g = crate::grammar::lark::parse_lark(lark, &GrammarLimits::default()).unwrap();
        let g = CompiledGrammar::new(&g, &GrammarLimits::default()).unwrap();
        let key_after = |text: &str| key_after(&g, text);
        assert_eq!(key_after("["), key_after("[a]b=a;["));
        assert_eq!(key_after("[a]b=a"), key_after("[a]b=;b=a"));
        let (states, keys) = check_keys_by_futures(&g, b"ab[]=; ", 5);
        assert!(states - keys > 700, "{keys} keys for {states} states");
    }

    /// A separated list's first element and its later ones share keys
    /// (`lists.rs` folds `p (s p)*` into one rule): after `price` and
    /// after `price*qty` the parser's future is the same (llama.cpp's
    /// arithmetic.gbnf). The test fails without the fold.
    #[test]
    fn list_elements_share_keys() {
        let gbnf = "root ::= (expr \"=\" ws term \"\\n\")+\nexpr ::= term ([-+*/] term)*\nterm ::= ident | num | \"(\" ws expr \")\" ws\nident ::= [a-z] [a-z0-9_]* ws\nnum ::= [0-9]+ ws\nws ::= [ \\t\\n]*\n";
        let g = crate::grammar::gbnf::parse_gbnf(gbnf, &GrammarLimits::default()).unwrap();
        let g = CompiledGrammar::new(&g, &GrammarLimits::default()).unwrap();
        let key_after = |text: &str| key_after(&g, text);
        assert_eq!(key_after("price"), key_after("price*qty"));
        assert_eq!(key_after("price*qty"), key_after("price*qty+shipping"));
        assert_eq!(key_after("price*"), key_after("price*qty+"));
        assert_eq!(key_after("(a"), key_after("(a+b"));
        assert_ne!(key_after("price"), key_after("price*"));
        assert_ne!(key_after("a = b"), key_after("a"));
        // And keys shared that way name equal futures.
        let (states, keys) = check_keys_by_futures(&g, b"ab1*+=( \n", 7);
        assert!(states - keys > 700, "{keys} keys for {states} states");
    }

    #[test]
    fn nullable_and_ambiguous() {
        let mut b = GrammarBuilder::new();
        let s = b.nonterminal("s");
        let a = b.literal("a");
        let x = b.nonterminal("x");
        // s -> s s | "a" | x ; x -> ε
        b.rule(s, vec![Sym::N(s), Sym::N(s)]);
        b.rule(s, vec![Sym::T(a)]);
        b.rule(s, vec![Sym::N(x)]);
        b.rule(x, vec![]);
        let g = CompiledGrammar::new(&b.finish("s").unwrap(), &GrammarLimits::default()).unwrap();
        assert_eq!(accepts(&g, ""), Some(true));
        assert_eq!(accepts(&g, "aaaa"), Some(true));
        let mut st = GrammarState::new(&g).unwrap();
        for _ in 0..200 {
            assert!(st.push_byte(&g, b'a'));
        }
        assert!(st.is_accepting(&g));
    }

    #[test]
    fn greedy_lexing() {
        // s -> A B ; A = "a"+ ; B = "ab"  : "aab" must lex as A="a" B="ab"? Greedy
        // A eats "aa" then "b" cannot start B -> rejected.
        let mut b = GrammarBuilder::new();
        let s = b.nonterminal("s");
        let ta = b.terminal("A", "a+");
        let tb = b.literal("ab");
        b.rule(s, vec![Sym::T(ta), Sym::T(tb)]);
        let g = CompiledGrammar::new(&b.finish("s").unwrap(), &GrammarLimits::default()).unwrap();
        assert_eq!(accepts(&g, "aab"), None);
    }

    #[test]
    fn empty_terminal_rejected() {
        let mut b = GrammarBuilder::new();
        let s = b.nonterminal("s");
        let t = b.terminal("E", "a*");
        b.rule(s, vec![Sym::T(t)]);
        assert!(CompiledGrammar::new(&b.finish("s").unwrap(), &GrammarLimits::default()).is_err());
    }

    /// A bench grammar (`benches/grammars/NAME.gbnf`) and the first `len`
    /// bytes of its sample.
    fn bench_gbnf(name: &str, len: usize) -> (String, Vec<u8>) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/grammars/");
        let text = std::fs::read_to_string(format!("{dir}{name}.gbnf")).unwrap();
        let mut doc = std::fs::read(format!("{dir}{name}.1.txt")).unwrap();
        doc.truncate(len);
        (text, doc)
    }

    /// What the future of `st` looks like from outside: the bytes of
    /// `probes` that may follow, acceptance, the mask key and the top
    /// set's name.
    fn outlook(g: &CompiledGrammar, st: &mut GrammarState, probes: &[u8]) -> (Vec<u8>, bool, (u32, bool, u128), u128) {
        let next = probes
            .iter()
            .copied()
            .filter(|&b| {
                let ok = st.push_byte(g, b);
                if ok {
                    st.pop_bytes(g, 1);
                }
                ok
            })
            .collect();
        let top = st.chart_height() - 1;
        (next, st.is_accepting(g), st.mask_key(g), st.set_fingerprint(g, top))
    }

    /// Sets that hold their predicted items by name (merged predictions)
    /// parse exactly as sets that hold them item by item: at every byte of
    /// the PoC grammars' samples, the bytes that may follow, acceptance and
    /// both fingerprints are the same whether merged predictions are used,
    /// refused (over the chart's budget), or only some predictions are kept
    /// (sets switch to items midway).
    #[test]
    fn held_predictions_parse_as_items() {
        use std::sync::atomic::Ordering::Relaxed;
        for name in ["llamacpp-poc-javascript", "llamacpp-poc-python"] {
            let (text, doc) = bench_gbnf(name, 400);
            let doc = &doc[..];
            let compile = |budget: Option<usize>| {
                let g = crate::grammar::gbnf::parse_gbnf(&text, &GrammarLimits::default()).unwrap();
                let g = CompiledGrammar::new(&g, &GrammarLimits::default()).unwrap();
                if let Some(b) = budget {
                    g.prediction_budget.store(b, Relaxed);
                }
                g
            };
            // What the whole walk keeps, so that half of it mixes.
            let used = {
                let g = compile(None);
                let full = g.prediction_budget.load(Relaxed);
                let mut st = GrammarState::new(&g).unwrap();
                assert!(doc.iter().all(|&b| st.push_byte(&g, b)));
                full - g.prediction_budget.load(Relaxed)
            };
            // Merged predictions; refused by the chart; no prediction kept;
            // some kept.
            let gs = [compile(None), compile(None), compile(Some(0)), compile(Some(used / 2))];
            let mut sts: Vec<GrammarState> = gs.iter().map(|g| GrammarState::new(g).unwrap()).collect();
            sts[1].chart.combo_bytes = usize::MAX / 2;
            let mut probes: Vec<u8> = doc.to_vec();
            probes.extend_from_slice(b"\t\r\x00\x7f\xc3\xff");
            probes.sort_unstable();
            probes.dedup();
            for (i, &byte) in doc.iter().enumerate() {
                let mut seen = Vec::new();
                for (g, st) in gs.iter().zip(sts.iter_mut()) {
                    seen.push(outlook(g, st, &probes));
                }
                for (v, other) in seen.iter().enumerate().skip(1) {
                    assert_eq!(&seen[0], other, "{name}: variant {v} differs after {i} bytes");
                }
                for (g, st) in gs.iter().zip(sts.iter_mut()) {
                    assert!(st.push_byte(g, byte), "{name}: byte {i} rejected");
                }
            }
            assert!(
                sts[0].chart.set_combo.iter().any(|&c| c != NO_COMBO),
                "{name}: no set named a merged prediction"
            );
            assert!(sts[1].chart.set_combo.iter().all(|&c| c == NO_COMBO));
            assert!(sts[2].chart.set_combo.iter().all(|&c| c == NO_COMBO));
            let mixed = &sts[3].chart.set_combo;
            assert!(
                mixed.contains(&NO_COMBO) && mixed.iter().any(|&c| c != NO_COMBO),
                "{name}: half the budget did not mix"
            );
        }
    }

    /// A copy (which leaves the memos behind) parses as the original: from
    /// cuts along the PoC JavaScript sample, both go on in step with the
    /// same next bytes, acceptance and fingerprints.
    #[test]
    fn copies_parse_as_originals() {
        let (text, doc) = bench_gbnf("llamacpp-poc-javascript", 600);
        let g = crate::grammar::gbnf::parse_gbnf(&text, &GrammarLimits::default()).unwrap();
        let g = CompiledGrammar::new(&g, &GrammarLimits::default()).unwrap();
        let every: Vec<u8> = (0..=255).collect();
        let mut st = GrammarState::new(&g).unwrap();
        let mut i = 0;
        while i < doc.len() {
            if i % 150 == 75 {
                let mut cp = st.clone();
                assert!(cp.chart.ctx.is_empty() && cp.chart.ctx_keys.iter().all(Vec::is_empty));
                for &b in &doc[i..(i + 40).min(doc.len())] {
                    assert_eq!(outlook(&g, &mut st, &every), outlook(&g, &mut cp, &every), "after {i} bytes");
                    assert!(st.push_byte(&g, b) && cp.push_byte(&g, b));
                    i += 1;
                }
                continue;
            }
            assert!(st.push_byte(&g, doc[i]));
            i += 1;
        }
    }
}
