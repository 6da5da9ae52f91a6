//! Compiled constraints and per-sequence matchers.
//!
//! A [`TokEnv`] (vocabulary + token trie) is built once per tokenizer and
//! shared, via `Arc`, by every constraint compiled against it. A
//! [`Constraint`] is immutable and shared by every [`Matcher`] that follows
//! it; a matcher is just a state and an undo history, so it is cheap to
//! create, `copy()` and send to another thread.
//!
//! The mask of a state is computed by walking the token trie
//! ([`TokTrie::add_allowed`]); for finite automata the result depends only
//! on the automaton state, so it is memoised per state in a lock-free,
//! memory-bounded cache. That cache is an optimisation: the walk alone is
//! exact and is all a grammar state can rely on.

use crate::bitmask::{set_bit, words_for, StoredMask};
use crate::error::{Error, Result};
use crate::fxhash::FxMap;
use crate::grammar::body::BodyIndex;
use crate::grammar::earley::{extends, CompiledGrammar, GrammarState};
use crate::grammar::mask::{fill_by_walk, fill_from_entry, BodyMemo, LazyDfa, LexEntry, SharedLexEntry, StartEntries, WalkCache};
use crate::grammar::word::WordIndex;
use crate::grammar::{Grammar, GrammarLimits};
use crate::regex::{Dfa, RegexLimits, DEAD};
use crate::toktrie::{SubtreeBytes, TokTrie};
use crate::vocab::Vocabulary;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// A vocabulary with its token trie, shared by all constraints over it.
#[derive(Debug)]
pub struct TokEnv {
    vocab: Vocabulary,
    trie: OnceLock<TokTrie>,
    shapes: OnceLock<Vec<u32>>,
    below: OnceLock<SubtreeBytes>,
    body: OnceLock<BodyIndex>,
    words: OnceLock<WordIndex>,
    /// Lexer-layer entries of every grammar over this vocabulary, by walk
    /// signature, and their bytes (at most [`SHARED_LEX_BYTES`]).
    shared_lex: Mutex<(SharedLexMap, usize)>,
    /// Masks of the tokens whose first byte is in a set, by the set (at
    /// most [`MAX_FIRST_BYTE_MASKS`]): a lexer state's extending bytes
    /// (identifier characters, digits) are few sets per grammar.
    first_bytes: Mutex<FxMap<[u64; 4], Arc<[u32]>>>,
    /// Per first byte, the mask of the tokens that start with it, for
    /// the bytes that start many ([`FirstByteMasks`]).
    first_dense: OnceLock<FirstByteMasks>,
}

/// Masks of the tokens by first byte, kept only for a byte that starts at
/// least a 128th of the vocabulary (a space starts a third of Llama 3's,
/// each letter one or two percent): OR-ing its mask costs less than
/// setting its tokens one by one, and there are at most 128 such bytes,
/// so they take at most 16 bytes per token. A mask of the tokens after a
/// lexeme that whitespace extends was 80% of SynCode JSON's slowest mask,
/// set token by token.
#[derive(Debug)]
struct FirstByteMasks(Vec<Option<Box<[u32]>>>);

impl FirstByteMasks {
    fn new(trie: &TokTrie, words: usize) -> Self {
        let mut masks: Vec<Option<Box<[u32]>>> = (0..256).map(|_| None).collect();
        let min = (words * 32 / 128).max(1);
        for c in trie.children(0) {
            let toks = trie.subtree_tokens(c);
            if toks.len() >= min {
                let mut m = vec![0u32; words];
                for &t in toks {
                    set_bit(&mut m, t);
                }
                masks[trie.node_byte(c) as usize] = Some(m.into());
            }
        }
        FirstByteMasks(masks)
    }
}

/// How many masks [`TokEnv::first_bytes`] keeps (each a mask's size).
const MAX_FIRST_BYTE_MASKS: usize = 64;

/// [`SharedLexEntry`]s by walk signature. Whether a lexeme is in progress
/// is not part of the key: an entry differs by it only in whether its
/// root is a boundary, which the signature's first label says (a lexer
/// start matches nothing, and a lexeme in progress ends at the root iff
/// its state matches).
type SharedLexMap = FxMap<Vec<u32>, Arc<SharedLexEntry>>;

/// Memory bound of a vocabulary's shared lexer-layer entries.
const SHARED_LEX_BYTES: usize = 64 << 20;

/// Lexer states beyond which a lexeme's entry is not shared (the signature
/// would cost more than it saves).
const MAX_SHARED_LEX_STATES: usize = 256;

/// The fewest bytes that must extend a lexeme for its entry to be looked
/// up among shared ones (see [`TokEnv::lex_entry`]): a string body has
/// ~190 (printable ASCII and UTF-8 lead bytes), a key among key literals
/// the few first letters of the keys left.
const MIN_SHARED_LIVE_BYTES: usize = 64;

/// The fewest tokens below the two-byte prefixes that extend a lexeme for
/// its entry to be looked up among shared ones where fewer than
/// [`MIN_SHARED_LIVE_BYTES`] bytes do (see [`walks_wide`]): Llama 3 has
/// 5,095 tokens of CJK characters and 1,100 of digits.
const MIN_SHARED_WALK_TOKENS: usize = 2048;

/// How many bytes extend the lexeme in lexer state `s` under `allowed`.
fn live_bytes(lexer: &Dfa, s: u32, allowed: &[u64]) -> usize {
    (0..=255u8).filter(|&b| extends(lexer, s, b, allowed)).count()
}

/// Whether a lexer walk from `s` spreads over much of the trie, so that
/// its entry is worth looking up among shared ones: [`MIN_SHARED_LIVE_BYTES`]
/// bytes extend it (a string body), or [`MIN_SHARED_WALK_TOKENS`] tokens
/// lie below the two-byte prefixes that do (a run of CJK characters has a
/// few lead bytes, with thousands of tokens below). A key among key
/// literals has neither, nor has a number (a thousand tokens of digits).
fn walks_wide(lexer: &Dfa, trie: &TokTrie, s: u32, allowed: &[u64]) -> bool {
    if live_bytes(lexer, s, allowed) >= MIN_SHARED_LIVE_BYTES {
        return true;
    }
    let mut tokens = 0;
    for c in trie.children(0) {
        let b = trie.node_byte(c);
        if !extends(lexer, s, b, allowed) {
            continue;
        }
        let t = lexer.next(s, b);
        for c2 in trie.children(c) {
            if extends(lexer, t, trie.node_byte(c2), allowed) {
                tokens += trie.subtree_tokens(c2).len();
                if tokens >= MIN_SHARED_WALK_TOKENS {
                    return true;
                }
            }
        }
    }
    false
}

impl TokEnv {
    pub fn new(vocab: Vocabulary) -> Arc<Self> {
        Arc::new(TokEnv {
            vocab,
            trie: OnceLock::new(),
            shapes: OnceLock::new(),
            below: OnceLock::new(),
            body: OnceLock::new(),
            words: OnceLock::new(),
            shared_lex: Mutex::default(),
            first_bytes: Mutex::default(),
            first_dense: OnceLock::new(),
        })
    }

    /// The tokens whose first byte is in `bytes` (a 256-bit set), as a
    /// mask; kept for the next ask.
    pub fn first_bytes(&self, bytes: &[u64; 4]) -> Arc<[u32]> {
        if let Some(m) = self.first_bytes.lock().unwrap().get(bytes) {
            return m.clone();
        }
        let trie = self.trie();
        let dense = self.first_byte_masks();
        let mut m = vec![0u32; self.mask_words()];
        for c in trie.children(0) {
            let b = trie.node_byte(c);
            if bytes[b as usize / 64] >> (b % 64) & 1 != 0 {
                match &dense.0[b as usize] {
                    Some(d) => m.iter_mut().zip(d.iter()).for_each(|(w, d)| *w |= d),
                    None => trie.subtree_tokens(c).iter().for_each(|&t| set_bit(&mut m, t)),
                }
            }
        }
        let m: Arc<[u32]> = m.into();
        let mut map = self.first_bytes.lock().unwrap();
        if map.len() < MAX_FIRST_BYTE_MASKS {
            map.insert(*bytes, m.clone());
        }
        m
    }

    /// How many of the per-vocabulary structures (trie, shapes, subtree
    /// bytes, body index, masks by first byte) are built: a caller can
    /// tell whether a call built one (and so freed its temporaries).
    pub fn data_built(&self) -> usize {
        [
            self.trie.get().is_some(),
            self.shapes.get().is_some(),
            self.below.get().is_some(),
            self.body.get().is_some(),
            self.first_dense.get().is_some(),
        ]
        .iter()
        .filter(|&&b| b)
        .count()
    }

    /// Build the per-vocabulary data grammar masks use (the token trie,
    /// its subtree shapes and bytes, the string-body index,
    /// [`BodyIndex`], the word index, [`WordIndex`], and the masks by first
    /// byte) now rather than at the
    /// first mask: every JSON Schema's strings take their body tokens from
    /// the index, so like the token trie it is per-vocabulary work
    /// (llguidance precomputes its string-body token sets per tokenizer the
    /// same way).
    /// [`Constraint::grammar`] calls it.
    pub fn prepare_grammar_data(&self) {
        self.shapes();
        self.subtree_bytes();
        self.body_index();
        self.word_index();
        self.first_byte_masks();
    }

    /// The lexer-layer entry of grammar `g` in lexer state `ls` under
    /// `allowed`: from the vocabulary's shared entries when another grammar
    /// (or an earlier compile of a schema) met a lexeme that walks alike:
    /// the first string of every JSON Schema then costs a copy, not a walk
    /// of the vocabulary.
    fn lex_entry(&self, g: &CompiledGrammar, memo: &BodyMemo, ls: u32, in_progress: bool, allowed: &[u64]) -> LexEntry {
        let plan = LexEntry::plan(g, Some(self.body_index()), Some(self.word_index()), Some(memo), ls, in_progress, allowed);
        let build = |plan| LexEntry::build_planned(g, self.trie(), self.subtree_bytes(), plan, ls, in_progress, allowed, self.mask_words());
        // Only a lexeme in progress (a string or number body), or a lexer
        // start where one terminal is allowed (japanese.gbnf's first run
        // of characters, whose walk is that of every run after a space):
        // from a start among several terminals the walk depends on the
        // grammar's whole set of them and is rarely met again. Nor one
        // whose body tokens come from the index: its build is cheaper than
        // the signature. Nor one whose walk stays narrow ([`walks_wide`]:
        // a key among key literals): it visits a few subtrees and cost
        // less than the signature, which found no entry to share (every
        // key of an object has its own allowed keys).
        let one_terminal = allowed.iter().map(|w| w.count_ones()).sum::<u32>() == 1;
        let sig = if (in_progress || one_terminal) && !plan.uses_index() && walks_wide(&g.lexer, self.trie(), ls, allowed) {
            g.lexer.walk_signature(ls, allowed, MAX_SHARED_LEX_STATES)
        } else {
            None
        };
        let Some(mut sig) = sig else {
            return build(plan);
        };
        let key = std::mem::take(&mut sig.key);
        let found = self.shared_lex.lock().unwrap().0.get(&key).cloned();
        if let Some(shared) = found {
            return LexEntry::from_shared(g, allowed, &shared, &sig);
        }
        let e = build(plan);
        let shared = e.to_shared(&sig);
        let bytes = shared.bytes() + key.len() * 4 + 64;
        let mut map = self.shared_lex.lock().unwrap();
        if map.1 + bytes <= SHARED_LEX_BYTES {
            map.1 += bytes;
            map.0.insert(key, Arc::new(shared));
        }
        e
    }

    pub fn vocab(&self) -> &Vocabulary {
        &self.vocab
    }

    /// Built on first use, so loading a vocabulary only to inspect tokens
    /// does not pay for it.
    pub fn trie(&self) -> &TokTrie {
        self.trie.get_or_init(|| TokTrie::new(&self.vocab))
    }

    /// Masks of the tokens by first byte ([`FirstByteMasks`]); built on
    /// first use by a grammar.
    fn first_byte_masks(&self) -> &FirstByteMasks {
        self.first_dense.get_or_init(|| FirstByteMasks::new(self.trie(), self.mask_words()))
    }

    /// Subtree shape ids of the trie (see [`TokTrie::shape_ids`]); built on
    /// first use by a grammar.
    pub fn shapes(&self) -> &[u32] {
        self.shapes.get_or_init(|| self.trie().shape_ids())
    }

    /// Bytes below the trie's larger subtrees (see
    /// [`TokTrie::subtree_bytes`]); built on first use by a grammar.
    pub fn subtree_bytes(&self) -> &SubtreeBytes {
        self.below.get_or_init(|| self.trie().subtree_bytes(2))
    }

    /// String-body tokens by length and the entry nodes of all others
    /// (see [`BodyIndex`]); built on first use by a grammar.
    pub fn body_index(&self) -> &BodyIndex {
        self.body.get_or_init(|| BodyIndex::new(self.trie()))
    }

    /// Word tokens per prefix and the entry nodes of the others (see
    /// [`WordIndex`]); built on first use by a grammar.
    pub fn word_index(&self) -> &WordIndex {
        self.words.get_or_init(|| WordIndex::new(self.trie()))
    }

    pub fn mask_words(&self) -> usize {
        words_for(self.vocab.size())
    }
}

/// Default memory budget for memoised masks of one constraint.
pub const DEFAULT_MASK_CACHE_BYTES: usize = 256 << 20;

/// Per-state memo of masks, filled on first request, never evicted; once
/// the byte budget is spent, further states are computed on every request.
#[derive(Debug)]
struct MaskCache {
    slots: Vec<OnceLock<StoredMask>>,
    used: AtomicUsize,
    budget: usize,
}

impl MaskCache {
    fn new(states: usize, budget: usize) -> Self {
        MaskCache {
            slots: (0..states).map(|_| OnceLock::new()).collect(),
            used: AtomicUsize::new(0),
            budget,
        }
    }
}

/// What a [`Constraint`] compiled to. Each variant is shared (`Arc`) with
/// the [`State`] of every matcher over it, so that a matcher's state always
/// comes with the automaton it belongs to: a regex state can never be paired
/// with a grammar, and no method needs a "can't happen" arm.
#[derive(Debug)]
enum Kind {
    Regex(Arc<RegexKind>),
    Grammar(Arc<GrammarKind>),
}

/// A compiled regex and its per-state mask memo.
#[derive(Debug)]
struct RegexKind {
    dfa: Dfa,
    cache: MaskCache,
}

/// A compiled grammar and its mask memos.
#[derive(Debug)]
struct GrammarKind {
    g: CompiledGrammar,
    cache: GrammarMaskCache,
}

/// [`StartEntries`] of one grammar's masks.
struct Starts<'a> {
    env: &'a TokEnv,
    g: &'a CompiledGrammar,
    cache: &'a GrammarMaskCache,
}

impl StartEntries for Starts<'_> {
    fn start_entry(&self, allowed: &[u64]) -> Option<Arc<LexEntry>> {
        let key = GrammarMaskCache::lex_key(self.g, self.g.lexer.start(), false, allowed);
        self.cache.lex.lock().unwrap().get(&key).cloned()
    }

    fn first_bytes(&self, bytes: &[u64; 4]) -> Arc<[u32]> {
        self.env.first_bytes(bytes)
    }

    fn first_byte(&self, t: u32) -> u8 {
        self.env.vocab.token_bytes(t).first().copied().unwrap_or(0)
    }
}

/// Masks of grammar states keyed by [`GrammarState::mask_key`], and the
/// lexer layer ([`LexEntry`]) keyed by (lexer state, in progress, allowed).
#[derive(Debug, Default)]
struct GrammarMaskCache {
    map: Mutex<MaskMap>,
    lex: Mutex<LexMap>,
    walks: Mutex<WalkCache>,
    /// How body characters move the lexer ([`BodyMemo`]).
    body: BodyMemo,
    /// The automaton of parser configurations every mask walk of this
    /// grammar extends ([`LazyDfa`]), and the bytes charged for it.
    dfa: Mutex<(LazyDfa, usize)>,
    classes: Mutex<LexerClasses>,
    used: AtomicUsize,
    /// [`GrammarLimits::mask_cache_bytes`].
    budget: usize,
}

/// Memo of [`GrammarMaskCache::lexer_class`].
#[derive(Debug, Default)]
struct LexerClasses {
    by_state: FxMap<(u32, Vec<u64>), u32>,
    by_signature: FxMap<Vec<u64>, u32>,
}

/// Full masks by [`GrammarState::mask_key`].
type MaskMap = FxMap<(u32, bool, u128), Arc<StoredMask>>;

/// Lexer-layer entries by (lexer state, lexeme in progress, allowed
/// terminals reachable from that state).
type LexMap = FxMap<(u32, bool, Vec<u64>), Arc<LexEntry>>;

/// Lexer states reachable from a state in progress beyond which no
/// signature is computed (the state keys masks as itself).
const MAX_SIGNATURE_STATES: usize = 32;

impl GrammarMaskCache {
    /// A name for lexer state `ls` under `allowed` that is shared by every
    /// state that behaves the same there ([`Dfa::signature`]), tagged with
    /// the top bit so it never equals a raw state id.
    fn lexer_class(&self, g: &CompiledGrammar, ls: u32, allowed: &[u64]) -> u32 {
        let mut classes = self.classes.lock().unwrap();
        let key = (ls, allowed.to_vec());
        if let Some(&c) = classes.by_state.get(&key) {
            return c;
        }
        let mut sig = Vec::new();
        let c = if g.lexer.signature(ls, allowed, MAX_SIGNATURE_STATES, &mut sig) {
            let next = classes.by_signature.len() as u32 | 1 << 31;
            *classes.by_signature.entry(sig).or_insert(next)
        } else {
            ls
        };
        classes.by_state.insert(key, c);
        c
    }

    /// The key of the lexer-layer entry of lexer state `ls` under
    /// `allowed`. Only terminals still reachable from `ls` matter, so keys
    /// from different parser contexts (an object key, a string value)
    /// coincide inside the same lexeme.
    fn lex_key(g: &CompiledGrammar, ls: u32, in_progress: bool, allowed: &[u64]) -> (u32, bool, Vec<u64>) {
        let reach = g.lexer.reach(ls);
        (ls, in_progress, allowed.iter().zip(reach).map(|(a, r)| a & r).collect())
    }

    /// The lexer-layer entry of lexer state `ls` (a lexeme in progress or
    /// not) under `allowed`, built on first use.
    fn lex_entry(&self, env: &TokEnv, g: &CompiledGrammar, ls: u32, in_progress: bool, allowed: &[u64]) -> Arc<LexEntry> {
        let lex_key = Self::lex_key(g, ls, in_progress, allowed);
        if let Some(e) = self.lex.lock().unwrap().get(&lex_key) {
            return e.clone();
        }
        let e = Arc::new(env.lex_entry(g, &self.body, ls, in_progress, &lex_key.2));
        if self.reserve(e.bytes()) {
            self.lex.lock().unwrap().insert(lex_key, e.clone());
        }
        e
    }

    /// Charge the shared automaton's growth to the budget. Over budget it
    /// starts over (memory stays bounded; later masks rebuild what they
    /// visit), and so it does after a walk a parser limit cut short, whose
    /// transitions may record a failed step as a dead end.
    fn charge_dfa(&self, slot: &mut (LazyDfa, usize), failed: bool) {
        let (dfa, charged) = slot;
        let now = dfa.bytes();
        if failed || (now > *charged && !self.reserve(now - *charged)) {
            self.used.fetch_sub(*charged, Ordering::Relaxed);
            *dfa = LazyDfa::default();
            *charged = 0;
        } else {
            *charged = now.max(*charged);
        }
    }

    /// Account for `bytes` more; false (nothing reserved) once over budget.
    fn reserve(&self, bytes: usize) -> bool {
        if self.used.fetch_add(bytes, Ordering::Relaxed) + bytes <= self.budget {
            true
        } else {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            false
        }
    }
}

/// An immutable compiled constraint.
#[derive(Debug)]
pub struct Constraint {
    env: Arc<TokEnv>,
    kind: Kind,
}

impl Constraint {
    pub fn regex(env: Arc<TokEnv>, pattern: &str, limits: &RegexLimits) -> Result<Arc<Self>> {
        let dfa = Dfa::compile(pattern, limits)?;
        env.trie(); // build outside the first mask
        let cache = MaskCache::new(dfa.num_states(), DEFAULT_MASK_CACHE_BYTES);
        Ok(Arc::new(Constraint {
            env,
            kind: Kind::Regex(Arc::new(RegexKind { dfa, cache })),
        }))
    }

    /// A JSON Schema (JSON text) compiled to a grammar constraint, and the
    /// warnings of non-strict mode. Where the strings counted in the lexer
    /// ([`crate::json_schema::Options::lexer_count`], long strings' heads)
    /// make the lexer too large, the schema is compiled again with a
    /// smaller lexer ([`crate::json_schema::Options::smaller_lexer`]).
    pub fn json_schema(
        env: Arc<TokEnv>,
        schema: &str,
        opts: &crate::json_schema::Options,
        limits: &GrammarLimits,
    ) -> Result<(Arc<Self>, Vec<String>)> {
        let mut opts = opts.clone();
        loop {
            let c = crate::json_schema::compile_str(schema, &opts)?;
            match Self::grammar(env.clone(), &c.grammar, limits) {
                Err(Error::TooLarge(m)) if c.lexer_counts => match opts.smaller_lexer() {
                    Some(o) => opts = o,
                    None => return Err(Error::TooLarge(m)),
                },
                r => return Ok((r?, c.warnings)),
            }
        }
    }

    pub fn grammar(env: Arc<TokEnv>, grammar: &Grammar, limits: &GrammarLimits) -> Result<Arc<Self>> {
        let g = CompiledGrammar::new(grammar, limits)?;
        GrammarState::new(&g)?; // the initial set must exist
        env.prepare_grammar_data();
        Ok(Arc::new(Constraint {
            env,
            kind: Kind::Grammar(Arc::new(GrammarKind {
                g,
                cache: GrammarMaskCache {
                    budget: limits.mask_cache_bytes,
                    ..Default::default()
                },
            })),
        }))
    }

    pub fn env(&self) -> &Arc<TokEnv> {
        &self.env
    }

    pub fn vocab(&self) -> &Vocabulary {
        &self.env.vocab
    }

    /// Number of automaton states (regex) or lexer states (grammar): a
    /// size indicator for users.
    pub fn num_states(&self) -> usize {
        match &self.kind {
            Kind::Regex(rx) => rx.dfa.num_states(),
            Kind::Grammar(gr) => gr.g.lexer.num_states(),
        }
    }

    fn initial_state(&self) -> State {
        match &self.kind {
            Kind::Regex(rx) => State::Regex {
                state: rx.dfa.start(),
                history: Vec::new(),
                rx: rx.clone(),
            },
            Kind::Grammar(gr) => State::Grammar {
                st: Box::new(GrammarState::new(&gr.g).expect("checked at compile time")),
                token_lens: Vec::new(),
                accepting: None,
                gr: gr.clone(),
            },
        }
    }
}

impl RegexKind {
    /// Mask of allowed tokens in `state`, EOS included iff accepting.
    fn fill_mask(&self, env: &TokEnv, state: u32, out: &mut [u32]) {
        let slot = &self.cache.slots[state as usize];
        if let Some(m) = slot.get() {
            m.write_to(out);
            return;
        }
        out.fill(0);
        let trie = env.trie();
        trie.walk_states(
            state,
            |s, b| self.dfa.next(s, b),
            |i, _| {
                for &t in trie.node_tokens(i) {
                    set_bit(out, t);
                }
            },
        );
        if self.dfa.is_accepting(state) {
            for &e in env.vocab().eos_token_ids() {
                set_bit(out, e);
            }
        }
        let stored = StoredMask::new(out);
        let bytes = stored.bytes() + 32;
        if self.cache.used.fetch_add(bytes, Ordering::Relaxed) + bytes <= self.cache.budget {
            let _ = slot.set(stored);
        } else {
            self.cache.used.fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}

impl GrammarKind {
    /// Mask of allowed tokens at `st` (EOS iff `accepting`), from the
    /// per-state memo or the lexer layer plus a walk of the boundary
    /// subtrees. An error the parser hit on the way (a size limit) is
    /// returned rather than a partial mask.
    fn fill_mask(&self, env: &TokEnv, st: &mut GrammarState, accepting: bool, out: &mut [u32]) -> Result<()> {
        let (g, cache) = (&self.g, &self.cache);
        let mut key = st.mask_key(g);
        if key.1 {
            key.0 = cache.lexer_class(g, key.0, st.lexer_view(g).2);
        }
        if let Some(m) = cache.map.lock().unwrap().get(&key).cloned() {
            m.write_to(out);
            return Ok(());
        }
        let trie = env.trie();
        // A matcher computing a mask of the same grammar on another thread
        // holds the shared automaton: walk over a private one meanwhile.
        let mut shared = cache.dfa.try_lock().ok();
        let mut private = LazyDfa::default();
        let dfa = match shared.as_mut() {
            Some(guard) => &mut guard.0,
            None => &mut private,
        };
        let (ls, in_progress, allowed) = st.lexer_view(g);
        if !in_progress && g.prefix_free_lexemes {
            fill_by_walk(g, dfa, trie, env.shapes(), env.subtree_bytes(), Some(env.body_index()), st, out);
        } else {
            let entry = cache.lex_entry(env, g, ls, in_progress, allowed);
            let reserve = |bytes: usize| cache.reserve(bytes);
            let body = (env.body_index(), &cache.body);
            fill_from_entry(
                g,
                dfa,
                trie,
                env.shapes(),
                env.subtree_bytes(),
                body,
                Some(env.word_index()),
                st,
                &entry,
                &cache.walks,
                &reserve,
                &Starts { env, g, cache },
                out,
            );
        }
        if let Some(guard) = shared.as_mut() {
            cache.charge_dfa(guard, st.error.is_some());
        }
        drop(shared);
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        if accepting {
            for &e in env.vocab().eos_token_ids() {
                set_bit(out, e);
            }
        }
        let stored = StoredMask::new(out);
        if cache.reserve(stored.bytes() + 64) {
            cache.map.lock().unwrap().insert(key, Arc::new(stored));
        }
        Ok(())
    }

    /// Bytes every continuation of `st` shares, up to `limit` (empty at a
    /// branch or once the text may end); `st` is left as it was.
    fn forced_bytes(&self, st: &mut GrammarState, limit: usize) -> Vec<u8> {
        let g = &self.g;
        let mut out = Vec::new();
        while out.len() < limit && !st.is_accepting(g) {
            let mut only = None;
            let mut count = 0;
            for b in 0..=255u8 {
                if st.push_byte(g, b) {
                    st.pop_bytes(g, 1);
                    count += 1;
                    only = Some(b);
                    if count > 1 {
                        break;
                    }
                }
            }
            match (count, only) {
                (1, Some(b)) => {
                    st.push_byte(g, b);
                    out.push(b);
                }
                _ => break,
            }
        }
        st.pop_bytes(g, out.len());
        out
    }
}

/// The mutable part of a matcher, with the automaton it runs on.
#[derive(Debug, Clone)]
enum State {
    Regex {
        rx: Arc<RegexKind>,
        state: u32,
        /// State before each consumed (non-EOS) token, for `rollback`.
        history: Vec<u32>,
    },
    Grammar {
        gr: Arc<GrammarKind>,
        st: Box<GrammarState>,
        /// Bytes of each consumed (non-EOS) token, for `rollback`.
        token_lens: Vec<u32>,
        /// Memo of `is_accepting` for the current position.
        accepting: Option<bool>,
    },
}

/// Per-sequence state over a [`Constraint`].
#[derive(Debug, Clone)]
pub struct Matcher {
    constraint: Arc<Constraint>,
    state: State,
    /// EOS has been consumed (it is always the last token).
    eos: bool,
}

/// Longest forced-byte run reported by [`Matcher::forced_bytes`].
const FORCED_LIMIT: usize = 1 << 16;

impl Matcher {
    pub fn new(constraint: Arc<Constraint>) -> Self {
        let state = constraint.initial_state();
        Matcher {
            constraint,
            state,
            eos: false,
        }
    }

    pub fn constraint(&self) -> &Arc<Constraint> {
        &self.constraint
    }

    /// Write the mask of allowed next tokens into `out`
    /// (`words_for(vocab.size())` words). After EOS only EOS is allowed
    /// (never an all-zero row, which would turn a sampler's logits into
    /// all `-inf`); consuming it again is a no-op that returns true.
    pub fn fill_mask(&mut self, out: &mut [u32]) -> Result<()> {
        let words = self.constraint.env.mask_words();
        if out.len() != words {
            return Err(Error::Usage(format!("bitmask row has {} words, expected {words}", out.len())));
        }
        if self.eos {
            out.fill(0);
            for &e in self.constraint.vocab().eos_token_ids() {
                set_bit(out, e);
            }
            return Ok(());
        }
        let accepting = self.is_accepting();
        let env = &self.constraint.env;
        match &mut self.state {
            State::Regex { rx, state, .. } => {
                rx.fill_mask(env, *state, out);
                Ok(())
            }
            State::Grammar { gr, st, .. } => gr.fill_mask(env, st, accepting, out),
        }
    }

    /// Whether token `t` is allowed now, without changing state.
    pub fn is_allowed(&mut self, t: u32) -> Result<bool> {
        if self.eos {
            // Consuming EOS again is a no-op: nothing to roll back.
            return self.consume_token(t);
        }
        if self.consume_token(t)? {
            self.rollback(1)?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Consume `t` if allowed; returns `false` and leaves the state
    /// unchanged otherwise.
    pub fn consume_token(&mut self, t: u32) -> Result<bool> {
        let c = self.constraint.clone();
        let vocab = c.vocab();
        vocab.check_token(t)?;
        if self.eos {
            return Ok(vocab.is_eos(t));
        }
        if vocab.is_eos(t) {
            if self.is_accepting() {
                self.eos = true;
                return Ok(true);
            }
            return Ok(false);
        }
        if vocab.is_special(t) {
            return Ok(false);
        }
        let bytes = vocab.token_bytes(t);
        match &mut self.state {
            State::Regex { rx, state, history } => {
                let s = rx.dfa.run(*state, bytes);
                if s == DEAD {
                    return Ok(false);
                }
                history.push(*state);
                *state = s;
                Ok(true)
            }
            State::Grammar {
                gr,
                st,
                token_lens,
                accepting,
            } => {
                let g = &gr.g;
                for (i, &b) in bytes.iter().enumerate() {
                    if !st.push_byte(g, b) {
                        st.pop_bytes(g, i);
                        return match st.error.take() {
                            Some(e) => Err(e),
                            None => Ok(false),
                        };
                    }
                }
                token_lens.push(bytes.len() as u32);
                *accepting = None;
                Ok(true)
            }
        }
    }

    /// Consume tokens in order; stops at the first disallowed one and
    /// returns how many were consumed.
    pub fn consume_tokens(&mut self, ts: &[u32]) -> Result<usize> {
        for (i, &t) in ts.iter().enumerate() {
            if !self.consume_token(t)? {
                return Ok(i);
            }
        }
        Ok(ts.len())
    }

    /// Undo the last `n` consumed tokens (EOS counts as one).
    pub fn rollback(&mut self, mut n: usize) -> Result<()> {
        let consumed = self.num_consumed();
        if n > consumed {
            return Err(Error::Usage(format!("cannot roll back {n} tokens: only {consumed} consumed")));
        }
        if n > 0 && self.eos {
            self.eos = false;
            n -= 1;
        }
        if n == 0 {
            return Ok(());
        }
        match &mut self.state {
            State::Regex { state, history, .. } => {
                let keep = history.len() - n;
                *state = history[keep];
                history.truncate(keep);
            }
            State::Grammar {
                gr,
                st,
                token_lens,
                accepting,
            } => {
                let keep = token_lens.len() - n;
                let bytes: usize = token_lens[keep..].iter().map(|&l| l as usize).sum();
                token_lens.truncate(keep);
                st.pop_bytes(&gr.g, bytes);
                *accepting = None;
            }
        }
        Ok(())
    }

    pub fn eos_consumed(&self) -> bool {
        self.eos
    }

    pub fn num_consumed(&self) -> usize {
        let n = match &self.state {
            State::Regex { history, .. } => history.len(),
            State::Grammar { token_lens, .. } => token_lens.len(),
        };
        n + self.eos as usize
    }

    /// The text so far is in the language (EOS would be allowed, or was consumed).
    pub fn is_accepting(&mut self) -> bool {
        if self.eos {
            return true;
        }
        match &mut self.state {
            State::Regex { rx, state, .. } => rx.dfa.is_accepting(*state),
            State::Grammar { gr, st, accepting, .. } => *accepting.get_or_insert_with(|| st.is_accepting(&gr.g)),
        }
    }

    /// EOS was consumed, or no token but EOS can follow.
    pub fn is_terminated(&mut self) -> bool {
        if self.eos {
            return true;
        }
        match &mut self.state {
            State::Regex { rx, state, .. } => rx.dfa.is_terminal(*state),
            State::Grammar { gr, st, .. } => !st.can_continue(&gr.g),
        }
    }

    pub fn reset(&mut self) {
        self.state = self.constraint.initial_state();
        self.eos = false;
    }

    /// Tokens that spell a prefix of [`Matcher::forced_bytes`], longest
    /// match first, so callers can append them without sampling. The last
    /// token is dropped when longer tokens extend it: the model might
    /// prefer a token that crosses the end of the forced text.
    pub fn forced_tokens(&mut self) -> Vec<u32> {
        let bytes = self.forced_bytes();
        let trie = self.constraint.env.trie();
        let mut out = Vec::new();
        let mut pos = 0;
        let mut last_extends = false;
        while pos < bytes.len() {
            match trie.longest_prefix(&bytes[pos..]) {
                Some((t, len, extends)) => {
                    out.push(t);
                    pos += len;
                    last_extends = extends;
                }
                None => break,
            }
        }
        if pos == bytes.len() && last_extends {
            out.pop();
        }
        out
    }

    /// Bytes every allowed continuation shares (empty at a branch or once
    /// the text may end).
    pub fn forced_bytes(&mut self) -> Vec<u8> {
        if self.eos {
            return Vec::new();
        }
        match &mut self.state {
            State::Regex { rx, state, .. } => rx.dfa.forced_bytes(*state, FORCED_LIMIT),
            State::Grammar { gr, st, .. } => gr.forced_bytes(st, FORCED_LIMIT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitmask::{get_bit, ones};

    fn env(toks: &[&str]) -> Arc<TokEnv> {
        let mut t: Vec<Option<Vec<u8>>> = toks.iter().map(|s| Some(s.as_bytes().to_vec())).collect();
        t.push(None); // EOS
        let eos = (t.len() - 1) as u32;
        TokEnv::new(Vocabulary::from_token_bytes(t, vec![eos], Some(40)).unwrap())
    }

    /// The tokens by first byte are those whose bytes start with one of
    /// the bytes asked for (the empty token and EOS never), kept alike.
    #[test]
    fn first_bytes_are_tokens_by_their_first_byte() {
        let toks = ["ab", "a", "b", "ba", " a", "", "xyz", "\u{e9}"];
        let e = env(&toks);
        let mut set = [0u64; 4];
        for b in [b'a', b' ', 0xC3] {
            set[b as usize / 64] |= 1 << (b % 64);
        }
        let want: Vec<u32> = toks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.as_bytes().first().is_some_and(|&b| set[b as usize / 64] >> (b % 64) & 1 != 0))
            .map(|(i, _)| i as u32)
            .collect();
        assert_eq!(want, vec![0, 1, 4, 7]);
        assert_eq!(ones(&e.first_bytes(&set)), want);
        assert!(Arc::ptr_eq(&e.first_bytes(&set), &e.first_bytes(&set)), "kept for the next ask");
        assert_eq!(ones(&e.first_bytes(&[0; 4])), Vec::<u32>::new());
    }

    #[test]
    fn consume_mask_rollback() {
        let e = env(&["1", "2", "12", "-", "x", "1-"]);
        let c = Constraint::regex(e.clone(), "[0-9]+-[0-9]", &RegexLimits::default()).unwrap();
        let mut m = Matcher::new(c);
        let mut mask = vec![0u32; e.mask_words()];
        m.fill_mask(&mut mask).unwrap();
        assert_eq!(ones(&mask), vec![0, 1, 2, 5]);
        assert!(m.consume_token(2).unwrap());
        assert!(!m.consume_token(4).unwrap());
        assert!(m.consume_token(3).unwrap());
        assert!(!m.is_accepting());
        m.fill_mask(&mut mask).unwrap();
        assert_eq!(ones(&mask), vec![0, 1]);
        assert!(m.consume_token(0).unwrap());
        assert!(m.is_accepting() && m.is_terminated());
        m.fill_mask(&mut mask).unwrap();
        assert_eq!(ones(&mask), vec![6]);
        assert!(m.consume_token(6).unwrap());
        m.fill_mask(&mut mask).unwrap();
        assert_eq!(ones(&mask), vec![6], "after EOS only EOS, never an all-zero row");
        assert!(m.is_allowed(6).unwrap() && !m.is_allowed(0).unwrap());
        assert!(m.consume_token(6).unwrap(), "EOS again is a no-op");
        assert_eq!(m.num_consumed(), 4);
        m.rollback(2).unwrap();
        assert_eq!(m.num_consumed(), 2);
        m.fill_mask(&mut mask).unwrap();
        assert!(get_bit(&mask, 0) && !get_bit(&mask, 6));
        assert!(m.rollback(3).is_err());
        assert!(matches!(m.consume_token(40), Err(Error::TokenOutOfRange { .. })));
        m.reset();
        assert_eq!(m.num_consumed(), 0);
    }

    #[test]
    fn forced_tokens_spell_forced_bytes() {
        let e = env(&["{", "{\"", "\"", "name", "na", "\":", " ", "x"]);
        let c = Constraint::regex(e.clone(), r#"\{"name": [a-z]+\}"#, &RegexLimits::default()).unwrap();
        let mut m = Matcher::new(c);
        assert_eq!(m.forced_bytes(), br#"{"name": "#.to_vec());
        // `{"` + `name` + `":` + ` `; the trailing space token has no extension.
        assert_eq!(m.forced_tokens(), vec![1, 3, 5, 6]);
        for t in m.forced_tokens() {
            assert!(m.consume_token(t).unwrap());
        }
    }

    /// Masks served from the fingerprint cache equal a plain trie walk
    /// with the full parser, at every byte of documents with repeated
    /// structure (the case where a wrong cache key would show), on the
    /// real GPT-2 vocabulary and a Lark JSON grammar with EBNF helpers.
    #[test]
    fn cached_grammar_masks_equal_plain_walk() {
        let lark = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grammars/json.lark")).unwrap();
        let g = crate::grammar::lark::parse_lark(&lark, &GrammarLimits::default()).unwrap();
        check_cached_masks(
            &g,
            &[
                r#"[1, 2, [3, 4], {"a": [5, 6, 7]}, {"a": [8]}, [[], [9]], "x", "y", true]"#,
                r#"{"k1": {"k2": [1, {"k3": "v"}]}, "k4": [[1, 2], [3, 4]], "k5": null}"#,
            ],
        );
    }

    /// The same for llama.cpp's json_arr.gbnf (character-level, where the
    /// cache key must see through items left over from earlier elements)
    /// on a few elements of the bench sample.
    #[test]
    fn cached_gbnf_masks_equal_plain_walk() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/grammars/");
        let text = std::fs::read_to_string(format!("{dir}llamacpp-json_arr.gbnf")).unwrap();
        let sample = std::fs::read_to_string(format!("{dir}llamacpp-json_arr.1.txt")).unwrap();
        // The first eight elements, closed.
        let cut = sample.match_indices(",\n").nth(7).unwrap().0;
        let doc = format!("{}]", &sample[..cut]);
        let g = crate::grammar::gbnf::parse_gbnf(&text, &GrammarLimits::default()).unwrap();
        check_cached_masks(&g, &[&doc]);
    }

    /// A mask that a parser limit cuts short is an error, and leaves
    /// nothing behind in the grammar's shared automaton or walk cache: a
    /// new matcher of the same constraint then gets, at every prefix the
    /// limit allows, the masks of a freshly compiled one.
    #[test]
    fn masks_after_a_limit_error_are_unaffected() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/tokenizers/gpt2/tokenizer.json");
        let Ok(json) = std::fs::read_to_string(root) else {
            eprintln!("skipping: {root} not found");
            return;
        };
        let env = TokEnv::new(Vocabulary::from_tokenizer_json(&json, None, None).unwrap());
        let limits = GrammarLimits {
            max_items_per_set: 40,
            ..GrammarLimits::default()
        };
        let g = crate::grammar::gbnf::parse_gbnf("root ::= (. .+)*", &limits).unwrap();
        let words = env.mask_words();
        let x = env.trie().longest_prefix(b"x").unwrap().0;
        let c = Constraint::grammar(env.clone(), &g, &limits).unwrap();
        let mut m = Matcher::new(c.clone());
        let mut ok_steps = 0;
        let mut out = vec![0u32; words];
        while m.fill_mask(&mut out).is_ok() {
            ok_steps += 1;
            assert!(ok_steps < 200, "the limit never triggered");
            m.consume_token(x).unwrap();
        }
        let fresh = Constraint::grammar(env.clone(), &g, &limits).unwrap();
        let (mut a, mut b) = (Matcher::new(c), Matcher::new(fresh));
        for _ in 0..ok_steps {
            let (mut ma, mut mb) = (vec![0u32; words], vec![0u32; words]);
            a.fill_mask(&mut ma).unwrap();
            b.fill_mask(&mut mb).unwrap();
            assert_eq!(ones(&ma), ones(&mb));
            a.consume_token(x).unwrap();
            b.consume_token(x).unwrap();
        }
    }

    /// Lexer-layer entries found in the vocabulary's shared cache (built
    /// by an earlier grammar whose lexer walks alike: JSON Schemas with
    /// different property names, patterns and formats, all with JSON
    /// strings) give the masks of a plain walk, on GPT-2 and Llama 3.
    /// (Only lexemes that many bytes extend are shared: the word-character
    /// patterns here, not the date or the lowercase one.)
    #[test]
    fn shared_lexer_entries_across_grammars() {
        let schemas = [
            (
                r#"{"type":"object","properties":{"name":{"type":"string"},"n":{"type":"integer"}}}"#,
                r#"{"name": "Hello \"world\" é", "n": 42}"#,
            ),
            (
                r#"{"type":"object","properties":{"title":{"type":"string"},"tags":{"type":"array","items":{"type":"string"}}}}"#,
                r#"{"title": "a \n\u001f b", "tags": ["x", "yz"]}"#,
            ),
            (
                r#"{"type":"object","properties":{"id":{"type":"string","pattern":"^[a-z]+$"},"when":{"type":"string","format":"date"}}}"#,
                r#"{"id": "abc", "when": "2024-02-29"}"#,
            ),
            (
                r#"{"type":"object","properties":{"etag":{"type":"string","pattern":"^[\\w\\.:-]+$"},"css":{"type":"string","pattern":"^[\\w\\s-]+$"}}}"#,
                r#"{"etag": "a.b:c-d_e", "css": "x y-z"}"#,
            ),
            (
                r#"{"type":"object","properties":{"key":{"type":"string","pattern":"^[\\w\\.:-]+$"}}}"#,
                r#"{"key": "v1.2:rc-3"}"#,
            ),
            (r#"{"type":"array","items":{"type":"string","maxLength":3}}"#, r#"["ab", "", "xyz"]"#),
        ];
        for tok in ["gpt2", "llama-3-8b-instruct"] {
            let Some(env) = shared_env(tok) else { return };
            env.prepare_grammar_data();
            assert!(env.body.get().is_some(), "string-body index prepared");
            // Twice over: the second round finds every entry shared (and
            // adds none).
            let mut sizes = Vec::new();
            for _ in 0..2 {
                for (schema, doc) in schemas {
                    let g = crate::json_schema::compile_str(schema, &Default::default()).unwrap().grammar;
                    check_masks_on(&env, &g, &[doc], 1);
                }
                sizes.push(env.shared_lex.lock().unwrap().0.len());
            }
            assert!(sizes[0] > 0 && sizes[1] == sizes[0], "{sizes:?}");
        }
    }

    #[test]
    fn shared_entries_keep_lexeme_ends() {
        // After `c`, `T2` may not end until one more character; after `a`,
        // `T1` may end at once. Their lexers walk alike byte by byte, so a
        // signature blind to where a lexeme may end gave `T1` the entry
        // `T2` shared, without its ends: `a` and `ab` were refused after
        // `a`.
        let g2 = "start: T2 \"\\n\"\nT2: /c([\\x20-\\x60\\x62-\\x7e]a)*[\\x20-\\x60\\x62-\\x7e]/\n";
        let g1 = "start: T1 \"a\" \"b\"\nT1: /a([\\x20-\\x60\\x62-\\x7e]a)*/\n";
        for tok in ["gpt2", "llama-3-8b-instruct"] {
            let Some(env) = shared_env(tok) else { return };
            for (text, doc) in [(g2, "cxax\n"), (g1, "axaab")] {
                let g = crate::grammar::lark::parse_lark(text, &GrammarLimits::default()).unwrap();
                check_masks_on(&env, &g, &[doc], 1);
            }
            assert!(!env.shared_lex.lock().unwrap().0.is_empty(), "entries were shared");
        }
    }

    #[test]
    fn start_entries_shared_with_lexemes_in_progress() {
        // Promoted, the first word is one terminal and each later one
        // another (a space, then letters): the first word's start entry
        // serves every later word after its space, and the entry inside
        // the first word serves the later ones.
        let g = crate::grammar::gbnf::parse_gbnf(r#"root ::= [a-z]+ (" " [a-z]+)*"#, &GrammarLimits::default()).unwrap();
        for tok in ["gpt2", "llama-3-8b-instruct"] {
            let Some(env) = shared_env(tok) else { return };
            let c = Constraint::grammar(env.clone(), &g, &GrammarLimits::default()).unwrap();
            Matcher::new(c).fill_mask(&mut vec![0u32; env.mask_words()]).unwrap();
            assert_eq!(env.shared_lex.lock().unwrap().0.len(), 1, "{tok}: the start entry is shared");
            check_masks_on(&env, &g, &["ab cd efg h"], 1);
            assert_eq!(env.shared_lex.lock().unwrap().0.len(), 2, "{tok}");
        }
    }

    fn shared_env(name: &str) -> Option<Arc<TokEnv>> {
        let root = format!("{}/../shared/tokenizers/{name}/tokenizer.json", env!("CARGO_MANIFEST_DIR"));
        let Ok(json) = std::fs::read_to_string(&root) else {
            eprintln!("skipping: {root} not found");
            return None;
        };
        Some(TokEnv::new(Vocabulary::from_tokenizer_json(&json, None, None).unwrap()))
    }

    /// Feed each doc byte by byte (GPT-2 has a token per byte): the
    /// matcher's masks (mask cache, lexer layer, lazy walk) equal a plain
    /// trie walk with the full parser before every byte.
    fn check_cached_masks(g: &crate::grammar::Grammar, docs: &[&str]) {
        let Some(env) = shared_env("gpt2") else { return };
        check_masks_on(&env, g, docs, 1);
    }

    /// [`check_cached_masks`] over `env`, checking before every `stride`-th
    /// byte (docs are fed a byte at a time through the longest token that
    /// spells that byte alone).
    fn check_masks_on(env: &Arc<TokEnv>, g: &crate::grammar::Grammar, docs: &[&str], stride: usize) {
        use crate::grammar::earley::{GrammarState, GrammarWalker};
        let c = Constraint::grammar(env.clone(), g, &GrammarLimits::default()).unwrap();
        let Kind::Grammar(gr) = &c.kind else { panic!("a grammar constraint") };
        let cg = &gr.g;
        let words = env.mask_words();
        for doc in docs {
            let mut m = Matcher::new(c.clone());
            let mut plain = GrammarState::new(cg).unwrap();
            let trie = env.trie();
            for (i, &byte) in doc.as_bytes().iter().enumerate() {
                if i % stride == 0 {
                    let mut fast = vec![0u32; words];
                    m.fill_mask(&mut fast).unwrap();
                    let mut slow = vec![0u32; words];
                    trie.add_allowed(&mut GrammarWalker { g: cg, st: &mut plain }, &mut slow);
                    if plain.is_accepting(cg) {
                        for &e in env.vocab().eos_token_ids() {
                            set_bit(&mut slow, e);
                        }
                    }
                    assert_eq!(ones(&fast), ones(&slow), "{doc:?} before {:?}", byte as char);
                }
                let (t, _, _) = trie.longest_prefix(&[byte]).unwrap();
                assert!(m.consume_token(t).unwrap(), "{doc:?} rejected at byte {i}");
                assert!(plain.push_byte(cg, byte));
            }
            assert!(m.is_accepting());
        }
    }
}
