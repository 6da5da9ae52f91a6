//! Token trie: every token's bytes in one trie, flattened in preorder.
//!
//! A mask is computed by walking this trie with the constraint's state: each
//! node pushes one byte into a [`Recognizer`]; if the recognizer rejects the
//! byte, no token below that node can be allowed and the whole subtree is
//! skipped by jumping to `subtree_end`. Tokens sharing a prefix share the
//! work of checking it, and dead prefixes cost one step however many tokens
//! sit beneath them.
//!
//! The walk asks nothing of the constraint but "push a byte / pop bytes",
//! so the same code serves finite automata (a stack of DFA states) and
//! grammars (a lexer state plus a parser stack that only grows when a lexeme
//! ends). Mask caching per automaton state is layered on top, in
//! [`crate::matcher`].

use crate::bitmask::set_bit;
use crate::fxhash::FxMap;
use crate::vocab::Vocabulary;

/// The constraint side of a trie walk.
///
/// Implementations keep a stack of states, one per byte pushed since the walk
/// began, so `pop_bytes` is cheap.
pub trait Recognizer {
    /// Push one byte. Returns `false`, leaving the state unchanged, when no
    /// string of the language continues the current prefix with `b`.
    fn try_push_byte(&mut self, b: u8) -> bool;
    /// Undo the last `n` successful pushes.
    fn pop_bytes(&mut self, n: usize);
}

#[derive(Debug, Clone, Copy)]
pub struct Node {
    /// Index one past this node's last descendant.
    pub subtree_end: u32,
    /// Tokens whose bytes end exactly here: `token_ids[tok_start..tok_start+ntok]`.
    tok_start: u32,
    pub ntok: u16,
    /// Length of the byte string this node spells (root: 0).
    pub depth: u16,
    pub byte: u8,
}

/// Bytes below large subtrees, from [`TokTrie::subtree_bytes`].
#[derive(Debug, Clone, Default)]
pub struct SubtreeBytes {
    index: Vec<u32>,
    sets: Vec<[u64; 4]>,
    /// Per kept node, the most characters (bytes other than UTF-8
    /// continuation bytes) on a path below it, at most 255.
    heights: Vec<u8>,
    /// Per node, one bit: [`SubtreeBytes::whole_chars_below`].
    utf8: Vec<u64>,
}

impl SubtreeBytes {
    /// The bytes below node `i`, if its subtree is large enough to be kept.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&[u64; 4]> {
        self.sets.get(*self.index.get(i)? as usize)
    }

    /// The most characters on a path below node `i` (bytes that are not
    /// UTF-8 continuation bytes; at most 255), if its subtree is large
    /// enough to be kept. Below a node of whole characters
    /// ([`SubtreeBytes::whole_chars_below`]) that is the most characters a
    /// token below adds.
    #[inline]
    pub fn char_height(&self, i: usize) -> Option<usize> {
        self.heights.get(*self.index.get(i)? as usize).map(|&h| h as usize)
    }

    /// Node `i` spells whole UTF-8 characters and every path below it
    /// continues with valid UTF-8 (whole characters, the last one perhaps
    /// cut short by a token's end). Below such a node a lexer state that
    /// every character it meets leads back to accepts the whole subtree,
    /// multi-byte characters included: a string body over a vocabulary
    /// where a third of the tokens are not ASCII.
    #[inline]
    pub fn whole_chars_below(&self, i: usize) -> bool {
        self.utf8.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 != 0)
    }
}

/// Where a UTF-8 decoder stands: between characters, inside one (how many
/// bytes remain, and for a second byte the range the lead byte allows), or
/// in an invalid sequence.
pub type Utf8State = u8;
/// Between characters.
pub const UTF8_START: Utf8State = 0;
/// Not valid UTF-8 (sticky).
pub const UTF8_INVALID: Utf8State = u8::MAX;

/// One byte of UTF-8 decoding, exactly as the standard bounds it (no
/// overlong forms, no surrogates, nothing past U+10FFFF). States: 0 between
/// characters; 1, 2, 3 continuation bytes to go (any of 0x80..=0xBF);
/// 4 after 0xE0 (0xA0..=0xBF, then 1); 5 after 0xED (0x80..=0x9F, then 1);
/// 6 after 0xF0 (0x90..=0xBF, then 2); 7 after 0xF4 (0x80..=0x8F, then 2).
#[inline]
pub fn utf8_step(state: Utf8State, b: u8) -> Utf8State {
    let cont = |lo: u8, hi: u8, then: Utf8State| if (lo..=hi).contains(&b) { then } else { UTF8_INVALID };
    match state {
        0 => match b {
            0x00..=0x7F => 0,
            0xC2..=0xDF => 1,
            0xE0 => 4,
            0xE1..=0xEC | 0xEE..=0xEF => 2,
            0xED => 5,
            0xF0 => 6,
            0xF1..=0xF3 => 3,
            0xF4 => 7,
            _ => UTF8_INVALID,
        },
        1..=3 => cont(0x80, 0xBF, state - 1),
        4 => cont(0xA0, 0xBF, 1),
        5 => cont(0x80, 0x9F, 1),
        6 => cont(0x90, 0xBF, 2),
        7 => cont(0x80, 0x8F, 2),
        _ => UTF8_INVALID,
    }
}

#[derive(Debug, Clone)]
pub struct TokTrie {
    nodes: Vec<Node>,
    token_ids: Vec<u32>,
    vocab_size: usize,
    max_depth: usize,
}

/// Longest token we index. Longer byte strings exist in no real vocabulary;
/// the bound keeps walk stacks small and `depth` in a `u16`.
pub const MAX_TOKEN_LEN: usize = 1024;

impl TokTrie {
    /// Build the trie over every token of `vocab` that stands for text: not
    /// special tokens, and not EOS ids, which always mean "end of sequence"
    /// (even when the tokenizer also gives them a spelling): masks, `is_allowed`
    /// and `consume_token` then agree on what an EOS id means.
    pub fn new(vocab: &Vocabulary) -> Self {
        let mut toks: Vec<(&[u8], u32)> = (0..vocab.size() as u32)
            .filter(|&t| !vocab.is_special(t) && !vocab.is_eos(t))
            .map(|t| (vocab.token_bytes(t), t))
            .filter(|(b, _)| !b.is_empty() && b.len() <= MAX_TOKEN_LEN)
            .collect();
        toks.sort_unstable();

        let mut nodes: Vec<Node> = Vec::with_capacity(toks.len() * 2);
        let mut token_ids: Vec<u32> = Vec::with_capacity(toks.len());
        nodes.push(Node {
            subtree_end: 0,
            tok_start: 0,
            ntok: 0,
            depth: 0,
            byte: 0,
        });
        // Path of node indices from the root to the last inserted node.
        let mut path: Vec<u32> = vec![0];
        let mut prev: &[u8] = &[];
        let mut max_depth = 0;
        for (bytes, id) in toks {
            let lcp = prev.iter().zip(bytes).take_while(|(a, b)| a == b).count();
            // Close nodes deeper than the shared prefix.
            while path.len() > lcp + 1 {
                let idx = path.pop().unwrap() as usize;
                nodes[idx].subtree_end = nodes.len() as u32;
            }
            for (d, &b) in bytes.iter().enumerate().skip(lcp) {
                path.push(nodes.len() as u32);
                nodes.push(Node {
                    subtree_end: 0,
                    tok_start: token_ids.len() as u32,
                    ntok: 0,
                    depth: (d + 1) as u16,
                    byte: b,
                });
            }
            let last = *path.last().unwrap() as usize;
            if nodes[last].ntok == 0 {
                nodes[last].tok_start = token_ids.len() as u32;
            }
            nodes[last].ntok += 1;
            token_ids.push(id);
            max_depth = max_depth.max(bytes.len());
            prev = bytes;
        }
        let end = nodes.len() as u32;
        for idx in path {
            nodes[idx as usize].subtree_end = end;
        }
        TokTrie {
            nodes,
            token_ids,
            vocab_size: vocab.size(),
            max_depth,
        }
    }

    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Length of the longest indexed token: recognizers need a stack this deep.
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// Set the bit of every token whose bytes `r` accepts in full from its
    /// current state. `r` is returned to that state.
    pub fn add_allowed<R: Recognizer>(&self, r: &mut R, mask: &mut [u32]) {
        self.walk_range(1, self.nodes.len(), 0, r, |i, _| {
            for &t in self.node_tokens(i) {
                set_bit(mask, t);
            }
        });
    }

    /// Walk node `root` and its subtree (`r` in the state before `root`'s
    /// byte), calling `on_accept(node, r)` for every node whose path `r`
    /// accepts (token ends or not).
    pub fn walk_subtree<R: Recognizer, F: FnMut(usize, &R)>(&self, root: usize, r: &mut R, on_accept: F) {
        let base = self.nodes[root].depth as usize - 1;
        self.walk_range(root, self.nodes[root].subtree_end as usize, base, r, on_accept)
    }

    /// Walk for automata whose next state depends only on the previous
    /// state and the byte (DFAs): states are kept per depth, so undoing a
    /// byte costs nothing. `step` returns `0` for "dead". Calls
    /// `on_accept(node, state)` for every accepted node where a token ends.
    #[inline(always)]
    pub fn walk_states<S: Fn(u32, u8) -> u32, F: FnMut(usize, u32)>(&self, start: u32, step: S, mut on_accept: F) {
        let nodes = &self.nodes[..];
        let mut states = vec![0u32; self.max_depth + 1];
        states[0] = start;
        let n = nodes.len();
        let mut i = 1usize;
        while i < n {
            // SAFETY: `i < n`; `1 <= depth <= max_depth` for every non-root
            // node, so both `states` indices are in bounds.
            let node = unsafe { *nodes.get_unchecked(i) };
            let d = node.depth as usize;
            debug_assert!(d >= 1 && d < states.len());
            let s = step(unsafe { *states.get_unchecked(d - 1) }, node.byte);
            if s == 0 {
                i = node.subtree_end as usize;
                continue;
            }
            unsafe { *states.get_unchecked_mut(d) = s };
            if node.ntok != 0 {
                on_accept(i, s);
            }
            i += 1;
        }
    }

    /// The preorder walk with subtree skipping shared by all entry points.
    #[inline(always)]
    fn walk_range<R: Recognizer, F: FnMut(usize, &R)>(&self, start: usize, end: usize, base: usize, r: &mut R, mut on_accept: F) {
        let nodes = &self.nodes[..];
        let mut depth = base;
        let mut i = start;
        while i < end {
            let node = nodes[i];
            let d = node.depth as usize;
            if depth >= d {
                r.pop_bytes(depth + 1 - d);
                depth = d - 1;
            }
            if r.try_push_byte(node.byte) {
                depth = d;
                on_accept(i, r);
                i += 1;
            } else {
                i = node.subtree_end as usize;
            }
        }
        r.pop_bytes(depth - base);
    }

    /// The longest token that is a prefix of `bytes`: (token, its length,
    /// whether longer tokens extend it).
    pub fn longest_prefix(&self, bytes: &[u8]) -> Option<(u32, usize, bool)> {
        let mut node = 0usize;
        let mut best = None;
        for (d, &b) in bytes.iter().enumerate() {
            match self.children(node).find(|&c| self.nodes[c].byte == b) {
                Some(c) => node = c,
                None => break,
            }
            if let Some(&t) = self.node_tokens(node).first() {
                best = Some((t, d + 1, self.nodes[node].subtree_end as usize > node + 1));
            }
        }
        best
    }

    /// Tokens whose bytes end exactly at node `i`.
    #[inline]
    pub fn node_tokens(&self, i: usize) -> &[u32] {
        let n = self.nodes[i];
        &self.token_ids[n.tok_start as usize..n.tok_start as usize + n.ntok as usize]
    }

    /// All nodes in preorder (for walks that keep their own per-depth state).
    #[inline]
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Length of the byte string node `i` spells (root: 0).
    #[inline]
    pub fn node_depth(&self, i: usize) -> usize {
        self.nodes[i].depth as usize
    }

    /// One past the last node of `i`'s subtree (preorder).
    #[inline]
    pub fn subtree_end(&self, i: usize) -> usize {
        self.nodes[i].subtree_end as usize
    }

    /// Tokens whose bytes end at node `i` or below it: a contiguous run,
    /// since tokens are stored in the nodes' preorder.
    #[inline]
    pub fn subtree_tokens(&self, i: usize) -> &[u32] {
        let end = self.nodes[i].subtree_end as usize;
        let to = self.nodes.get(end).map_or(self.token_ids.len(), |n| n.tok_start as usize);
        &self.token_ids[self.nodes[i].tok_start as usize..to]
    }

    #[inline]
    pub fn node_byte(&self, i: usize) -> u8 {
        self.nodes[i].byte
    }

    /// Children of node `i` (0 is the root), in byte order.
    pub fn children(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let end = self.nodes[i].subtree_end as usize;
        let mut c = i + 1;
        std::iter::from_fn(move || {
            if c >= end {
                return None;
            }
            let cur = c;
            c = self.nodes[cur].subtree_end as usize;
            Some(cur)
        })
    }

    /// For every node with a subtree of at least `min_nodes` nodes, the set
    /// of bytes on its strict descendants (a 256-bit set). A walk in a state
    /// that every one of those bytes leads back to (a string body, a run of
    /// letters) accepts the whole subtree without visiting it.
    pub fn subtree_bytes(&self, min_nodes: usize) -> SubtreeBytes {
        let n = self.nodes.len();
        let mut all = vec![[0u64; 4]; n];
        let mut height = vec![0u8; n];
        for i in (0..n).rev() {
            let mut set = [0u64; 4];
            for c in self.children(i) {
                let lead = !(0x80..0xC0).contains(&self.nodes[c].byte);
                height[i] = height[i].max(height[c].saturating_add(lead as u8));
                let b = self.nodes[c].byte as usize;
                set[b / 64] |= 1 << (b % 64);
                for (w, x) in set.iter_mut().zip(&all[c]) {
                    *w |= x;
                }
            }
            all[i] = set;
        }
        let mut index = vec![u32::MAX; n];
        let mut sets = Vec::new();
        let mut heights = Vec::new();
        for (i, set) in all.into_iter().enumerate() {
            if self.nodes[i].subtree_end as usize - i >= min_nodes {
                index[i] = sets.len() as u32;
                sets.push(set);
                heights.push(height[i]);
            }
        }
        // Decoder state per node (preorder: a parent before its children),
        // then bottom up whether anything below is invalid.
        let mut dec = vec![UTF8_START; n];
        for i in 0..n {
            for c in self.children(i) {
                dec[c] = utf8_step(dec[i], self.nodes[c].byte);
            }
        }
        let mut clean = vec![true; n]; // nothing invalid strictly below
        for i in (0..n).rev() {
            clean[i] = self.children(i).all(|c| dec[c] != UTF8_INVALID && clean[c]);
        }
        let mut utf8 = vec![0u64; n.div_ceil(64)];
        for i in 0..n {
            if dec[i] == UTF8_START && clean[i] {
                utf8[i / 64] |= 1 << (i % 64);
            }
        }
        SubtreeBytes { index, sets, heights, utf8 }
    }

    /// For every node, an id equal for two nodes iff their subtrees have the
    /// same shape (bytes, and where tokens end). Isomorphic subtrees also have
    /// identical preorder layouts, so a walk's result over one, expressed as
    /// offsets from its root, holds for all of them.
    pub fn shape_ids(&self) -> Vec<u32> {
        // A subtree is (byte, has tokens, its list of children); a list of
        // children is (first child's subtree, the list of its later
        // siblings). Interning both bottom-up (children follow their parent
        // in preorder, so a reverse scan sees them first) keys every node
        // by a few integers, with no per-node allocation.
        const NONE: u32 = u32::MAX;
        let n = self.nodes.len();
        let mut ids = vec![0u32; n];
        // Per node: the interned list of itself and its later siblings.
        let mut lists = vec![NONE; n];
        let mut nodes: FxMap<(u8, bool, u32), u32> = FxMap::with_capacity_and_hasher(n, Default::default());
        let mut chains: FxMap<(u32, u32), u32> = FxMap::with_capacity_and_hasher(n, Default::default());
        for i in (0..n).rev() {
            let end = self.nodes[i].subtree_end as usize;
            let kids = if i + 1 < end { lists[i + 1] } else { NONE };
            let next = nodes.len() as u32;
            ids[i] = *nodes.entry((self.nodes[i].byte, self.nodes[i].ntok > 0, kids)).or_insert(next);
            // The next sibling starts where this subtree ends, if the parent
            // (the nearest shallower node) still continues there.
            let d = self.nodes[i].depth;
            let sib = if end < n && self.nodes[end].depth == d { lists[end] } else { NONE };
            let next = chains.len() as u32;
            lists[i] = *chains.entry((ids[i], sib)).or_insert(next);
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitmask::{ones, words_for};

    /// Accepts prefixes of a fixed set of strings (brute force).
    struct PrefixSet {
        words: Vec<Vec<u8>>,
        buf: Vec<u8>,
    }
    impl Recognizer for PrefixSet {
        fn try_push_byte(&mut self, b: u8) -> bool {
            self.buf.push(b);
            if self.words.iter().any(|w| w.starts_with(&self.buf)) {
                true
            } else {
                self.buf.pop();
                false
            }
        }
        fn pop_bytes(&mut self, n: usize) {
            let l = self.buf.len() - n;
            self.buf.truncate(l);
        }
    }

    fn vocab(toks: &[&str]) -> Vocabulary {
        Vocabulary::from_token_bytes(toks.iter().map(|t| Some(t.as_bytes().to_vec())).collect(), vec![], None).unwrap()
    }

    #[test]
    fn walk_matches_brute_force() {
        let toks = ["a", "ab", "abc", "b", "ba", "abd", "c", "ab", "bcd", "x"];
        let v = vocab(&toks);
        let trie = TokTrie::new(&v);
        let words: Vec<Vec<u8>> = vec![b"abd".to_vec(), b"bax".to_vec()];
        let mut r = PrefixSet {
            words: words.clone(),
            buf: vec![],
        };
        let mut mask = vec![0u32; words_for(v.size())];
        trie.add_allowed(&mut r, &mut mask);
        assert!(r.buf.is_empty());
        let expect: Vec<u32> = (0..toks.len() as u32)
            .filter(|&t| words.iter().any(|w| w.starts_with(toks[t as usize].as_bytes())))
            .collect();
        assert_eq!(ones(&mask), expect);
    }

    /// Two nodes get the same shape id iff their subtrees are equal
    /// (bytes and token ends), checked against the definition itself.
    fn check_shapes(trie: &TokTrie) {
        fn spell(t: &TokTrie, i: usize) -> String {
            let kids: Vec<String> = t.children(i).map(|c| spell(t, c)).collect();
            format!(
                "{}{}({})",
                t.node_byte(i),
                if t.node_tokens(i).is_empty() { "" } else { "*" },
                kids.join(",")
            )
        }
        let ids = trie.shape_ids();
        let spelled: Vec<String> = (0..trie.num_nodes()).map(|i| spell(trie, i)).collect();
        for i in 0..ids.len() {
            for j in 0..ids.len() {
                assert_eq!(ids[i] == ids[j], spelled[i] == spelled[j], "{} vs {}", spelled[i], spelled[j]);
            }
        }
    }

    proptest::proptest! {
        /// The decoder agrees with the standard library: a byte string ends
        /// between characters iff it is valid UTF-8, and never turns invalid
        /// iff it is a prefix of valid UTF-8.
        #[test]
        fn prop_utf8_step_is_utf8(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8)) {
            let state = bytes.iter().fold(UTF8_START, |u, &b| utf8_step(u, b));
            let std = std::str::from_utf8(&bytes);
            proptest::prop_assert_eq!(state == UTF8_START, std.is_ok());
            proptest::prop_assert_eq!(state != UTF8_INVALID, std.map_or_else(|e| e.error_len().is_none(), |_| true));
        }

        /// `whole_chars_below` by its definition, on tokens mixing ASCII,
        /// multi-byte characters and stray bytes.
        #[test]
        fn prop_whole_chars_below(toks in proptest::collection::vec(proptest::collection::vec(proptest::sample::select(vec![b'a', b'b', 0xC3, 0xA9, 0xE6, 0x97, 0xA5, 0x80]), 1..6), 1..30)) {
            let v = Vocabulary::from_token_bytes(toks.iter().map(|t| Some(t.clone())).collect(), vec![], None).unwrap();
            let trie = TokTrie::new(&v);
            let below = trie.subtree_bytes(2);
            // The byte string of every node, by walking down from the root.
            let mut spelled = vec![Vec::new(); trie.num_nodes()];
            for i in 0..trie.num_nodes() {
                for c in trie.children(i) {
                    let mut s = spelled[i].clone();
                    s.push(trie.node_byte(c));
                    spelled[c] = s;
                }
            }
            for i in 0..trie.num_nodes() {
                let prefix_ok = std::str::from_utf8(&spelled[i]).is_ok();
                let below_ok = (i + 1..trie.subtree_end(i)).all(|k| std::str::from_utf8(&spelled[k]).map_or_else(|e| e.error_len().is_none(), |_| true));
                proptest::prop_assert_eq!(below.whole_chars_below(i), prefix_ok && below_ok, "node {:?}", spelled[i]);
            }
        }

        #[test]
        fn prop_shape_ids_name_equal_subtrees(toks in proptest::collection::vec("[ab]{1,4}", 1..30)) {
            let refs: Vec<&str> = toks.iter().map(|s| s.as_str()).collect();
            let trie = TokTrie::new(&vocab(&refs));
            check_shapes(&trie);
            // A subtree's tokens, and the bytes below it, by their definitions.
            let below = trie.subtree_bytes(1);
            for i in 0..trie.num_nodes() {
                let mut toks: Vec<u32> = (i..trie.subtree_end(i)).flat_map(|k| trie.node_tokens(k).to_vec()).collect();
                let mut got = trie.subtree_tokens(i).to_vec();
                toks.sort_unstable();
                got.sort_unstable();
                proptest::prop_assert_eq!(got, toks);
                let mut bytes = [0u64; 4];
                for k in i + 1..trie.subtree_end(i) {
                    let b = trie.node_byte(k) as usize;
                    bytes[b / 64] |= 1 << (b % 64);
                }
                proptest::prop_assert_eq!(below.get(i), Some(&bytes));
            }
        }

        #[test]
        fn prop_walk_equals_brute_force(
            toks in proptest::collection::vec("[abc]{1,4}", 1..40),
            words in proptest::collection::vec("[abc]{0,6}", 0..5),
        ) {
            let refs: Vec<&str> = toks.iter().map(|s| s.as_str()).collect();
            let v = vocab(&refs);
            let trie = TokTrie::new(&v);
            let words: Vec<Vec<u8>> = words.into_iter().map(|w| w.into_bytes()).collect();
            let mut r = PrefixSet { words: words.clone(), buf: vec![] };
            let mut mask = vec![0u32; words_for(v.size())];
            trie.add_allowed(&mut r, &mut mask);
            let expect: Vec<u32> = (0..toks.len() as u32)
                .filter(|&t| words.iter().any(|w| w.starts_with(toks[t as usize].as_bytes())))
                .collect();
            proptest::prop_assert_eq!(ones(&mask), expect);
        }
    }
}
