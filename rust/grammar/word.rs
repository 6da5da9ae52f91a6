//! The tokens of identifiers, indexed once per vocabulary.
//!
//! After a bracket, an operator or a newline an identifier may start, and
//! the tokens that spell one (`server`, ` host`, `Привет`: 100,000 of
//! Llama 3's 128,000, with a space before or not) are most of such a mask.
//! The lazy walk ([`super::mask::LazyWalk`]) takes a subtree whole only
//! where every byte or character below it keeps the identifier going, so
//! it visits every node above a byte that does not, and every node below
//! a lead byte that some non-word character shares: 43,000 nodes, 1.2-1.5
//! ms, for each dense first-visit mask of Lark's INI example. Where every
//! word character leads a configuration to one state that every word
//! character leads back to (a `/\w+/`; keywords that begin like it are the
//! mask module's concern), those tokens are all allowed whatever their
//! characters. This index holds
//! them as one bit set per prefix (none, or a common first byte such as a
//! space), and the nodes where a token leaves the word ("entries"), which
//! alone are walked ([`super::mask`]'s `word_run` checks the condition).
//!
//! Two alphabets: Unicode word characters as `\w` means them
//! ([`regex_syntax::is_word_character`], Lark's `/\w+/`), and ASCII
//! `[0-9A-Za-z_]` (Lark's `CNAME`, hand-written classes). Only characters
//! some token holds are indexed, so the check goes over those few
//! thousand, not all of Unicode.

use crate::bitmask::{set_bit, words_for};
use crate::fxhash::FxMap;
use crate::toktrie::{utf8_step, TokTrie, UTF8_INVALID, UTF8_START};

/// Which characters make a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alphabet {
    /// `\w+`: letters, marks, decimal digits and connectors of any script.
    Unicode,
    /// `[0-9A-Za-z_]+`.
    Ascii,
    /// `[A-Za-z_][0-9A-Za-z_]*`: an identifier of most programming
    /// languages (Lark's `CNAME`), which no digit starts.
    AsciiIdent,
}

impl Alphabet {
    /// Whether `c` may continue a word.
    fn holds(self, c: char) -> bool {
        match self {
            Alphabet::Unicode => regex_syntax::is_word_character(c),
            Alphabet::Ascii | Alphabet::AsciiIdent => c.is_ascii_alphanumeric() || c == '_',
        }
    }

    /// Whether `c` may start a word.
    fn holds_first(self, c: char) -> bool {
        match self {
            Alphabet::AsciiIdent => c.is_ascii_alphabetic() || c == '_',
            _ => self.holds(c),
        }
    }
}

/// The fewest tokens a prefix byte must have before word characters for
/// the index to keep a bit set for it (`' '`, `.`, `(`, `-` and a tab on
/// Llama 3).
const MIN_PREFIX_TOKENS: usize = 1000;

/// A node where a token leaves the word: its byte continues no word
/// character after the path above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// Whether no whole word character comes before it (only the prefix,
    /// then `partial`): it is then walked from the prefix's state, not
    /// from the word's.
    pub first: bool,
    /// Leading bytes of a word character the entry byte cuts short,
    /// `partial_len` of them.
    pub partial: [u8; 3],
    pub partial_len: u8,
    /// Its trie node.
    pub node: u32,
    /// The node above it: where a lexeme in progress through the word may
    /// end before the entry byte.
    pub parent: u32,
}

impl Entry {
    pub fn partial(&self) -> &[u8] {
        &self.partial[..self.partial_len as usize]
    }

    /// Entries walked from the same state: the same kind of start and the
    /// same cut-short character.
    pub fn same_start(&self, o: &Entry) -> bool {
        (self.first, self.partial_len, self.partial) == (o.first, o.partial_len, o.partial)
    }
}

/// The tokens of one prefix followed by word characters.
#[derive(Debug)]
pub struct Prefix {
    /// The prefix's trie node: the root (no prefix) or one of its
    /// children, whose byte starts no word character.
    pub node: u32,
    /// That child's byte (0 for the root).
    pub byte: u8,
    /// Tokens spelling the prefix, then at least one byte of word
    /// characters (the last perhaps cut short), as a mask.
    pub tokens: Box<[u32]>,
    /// Sorted: by kind of start and cut-short character, then node.
    pub entries: Vec<Entry>,
}

/// One byte of a word character's UTF-8 encoding, in a trie of them all.
#[derive(Debug, Clone, Copy)]
pub struct CharNode {
    pub byte: u8,
    /// 1 for a lead byte, up to 4.
    pub depth: u8,
    /// Whether a character ends here.
    pub end: bool,
}

/// The word characters of one alphabet that some token holds, and the
/// tokens they spell.
#[derive(Debug)]
pub struct Words {
    pub alphabet: Alphabet,
    /// The characters that may start a word, then those that may continue
    /// one: their UTF-8 encodings as tries in preorder (sorted by code
    /// point, which is their bytes' order).
    pub first: Vec<CharNode>,
    pub chars: Vec<CharNode>,
    /// First bytes of the characters that may start a word, and of those
    /// that may continue one (256-bit sets).
    pub first_leads: [u64; 4],
    pub leads: [u64; 4],
    /// The root first (if any token is a word), then prefix bytes.
    pub prefixes: Vec<Prefix>,
}

impl Words {
    /// Whether `b` starts a character that may start a word.
    #[inline]
    pub fn is_first_lead(&self, b: u8) -> bool {
        self.first_leads[b as usize / 64] >> (b % 64) & 1 != 0
    }

    /// Whether `b` starts a character that may continue a word.
    #[inline]
    pub fn is_lead(&self, b: u8) -> bool {
        self.leads[b as usize / 64] >> (b % 64) & 1 != 0
    }

    /// The bit set and entries of the prefix at trie node `node`.
    pub fn prefix(&self, node: u32) -> Option<&Prefix> {
        self.prefixes.iter().find(|p| p.node == node)
    }

    /// The words of `alphabet` over `trie`, whose characters are
    /// `vocab` ([`vocab_chars`]).
    fn new(trie: &TokTrie, alphabet: Alphabet, vocab: &[char]) -> Words {
        let (first, first_leads, first_child) = char_trie(vocab.iter().copied().filter(|&c| alphabet.holds_first(c)));
        let (chars, leads, child) = char_trie(vocab.iter().copied().filter(|&c| alphabet.holds(c)));
        let words = words_for(trie.vocab_size());
        // Per depth on the current path: (candidate prefix, char trie
        // node, whole characters, the cut-short one's bytes).
        #[derive(Clone, Copy)]
        struct At {
            prefix: u32,
            cnode: u32,
            chars: u32,
            partial: [u8; 3],
            plen: u8,
        }
        let root = At {
            prefix: 0,
            cnode: 0,
            chars: 0,
            partial: [0; 3],
            plen: 0,
        };
        // Candidates: the root, then every root child whose byte starts no
        // word character; kept at the end if enough tokens follow them.
        let mut cands: Vec<(u32, Vec<u32>, Vec<Entry>)> = vec![(0, Vec::new(), Vec::new())];
        let mut path = vec![root; trie.max_depth() + 1];
        let mut ids = vec![0u32; trie.max_depth() + 1];
        let nodes = trie.nodes();
        let mut i = 1;
        while i < nodes.len() {
            let node = nodes[i];
            let (d, b) = (node.depth as usize, node.byte);
            ids[d] = i as u32;
            if d == 1 && first_leads[b as usize / 64] >> (b % 64) & 1 == 0 {
                cands.push((i as u32, Vec::new(), Vec::new()));
                path[1] = At {
                    prefix: cands.len() as u32 - 1,
                    ..root
                };
                i += 1;
                continue;
            }
            let at = path[d - 1];
            // The first character (or its start) in its own trie.
            let map = if at.chars == 0 { &first_child } else { &child };
            match map.get(at.cnode, b) {
                Some((n, end)) => {
                    path[d] = if end {
                        At {
                            chars: at.chars + 1,
                            cnode: 0,
                            partial: [0; 3],
                            plen: 0,
                            ..at
                        }
                    } else {
                        let mut partial = at.partial;
                        partial[at.plen as usize] = b;
                        At {
                            cnode: n,
                            partial,
                            plen: at.plen + 1,
                            ..at
                        }
                    };
                    cands[at.prefix as usize].1.extend_from_slice(trie.node_tokens(i));
                    i += 1;
                }
                None => {
                    // Right below the prefix the node is no entry: the
                    // walk takes it from the prefix's state as before.
                    if at.chars > 0 || at.plen > 0 {
                        cands[at.prefix as usize].2.push(Entry {
                            first: at.chars == 0,
                            partial: at.partial,
                            partial_len: at.plen,
                            node: i as u32,
                            parent: ids[d - 1],
                        });
                    }
                    i = node.subtree_end as usize;
                }
            }
        }
        let prefixes = cands
            .into_iter()
            .enumerate()
            .filter(|(k, (_, toks, _))| if *k == 0 { !toks.is_empty() } else { toks.len() >= MIN_PREFIX_TOKENS })
            .map(|(_, (node, toks, mut entries))| {
                let mut tokens = vec![0u32; words].into_boxed_slice();
                for t in toks {
                    set_bit(&mut tokens, t);
                }
                entries.sort_unstable();
                Prefix {
                    node,
                    byte: if node == 0 { 0 } else { trie.node_byte(node as usize) },
                    tokens,
                    entries,
                }
            })
            .collect();
        Words {
            alphabet,
            first,
            chars,
            first_leads,
            leads,
            prefixes,
        }
    }

    fn bytes(&self) -> usize {
        (self.first.len() + self.chars.len()) * 3 + self.prefixes.iter().map(|p| p.tokens.len() * 4 + p.entries.len() * 12).sum::<usize>()
    }
}

/// Every character some token of `trie` holds (whole, valid UTF-8),
/// sorted: one walk of the trie, code points marked in a bit set.
fn vocab_chars(trie: &TokTrie) -> Vec<char> {
    let mut seen = vec![0u64; (char::MAX as usize + 1).div_ceil(64)];
    // Per depth: the decoder's state and the code point so far.
    let mut at = vec![(UTF8_START, 0u32); trie.max_depth() + 1];
    let nodes = trie.nodes();
    let mut i = 1;
    while i < nodes.len() {
        let node = nodes[i];
        let (d, b) = (node.depth as usize, node.byte);
        let (u, cp) = at[d - 1];
        let u2 = utf8_step(u, b);
        if u2 == UTF8_INVALID {
            // Nothing below decodes past an invalid byte.
            i = node.subtree_end as usize;
            continue;
        }
        let cp = if u == UTF8_START {
            match b {
                0x00..=0x7F => b as u32,
                0xC0..=0xDF => (b & 0x1F) as u32,
                0xE0..=0xEF => (b & 0x0F) as u32,
                _ => (b & 0x07) as u32,
            }
        } else {
            cp << 6 | (b & 0x3F) as u32
        };
        if u2 == UTF8_START {
            seen[cp as usize / 64] |= 1 << (cp % 64);
        }
        at[d] = (u2, cp);
        i += 1;
    }
    let mut chars = Vec::new();
    for (k, &w) in seen.iter().enumerate() {
        let mut w = w;
        while w != 0 {
            let cp = k as u32 * 64 + w.trailing_zeros();
            w &= w - 1;
            if let Some(c) = char::from_u32(cp) {
                chars.push(c);
            }
        }
    }
    chars
}

/// A [`CharNode`] trie as a map from (node, byte) to (child, whether a
/// character ends there), node 0 standing between characters: lead bytes
/// by table (most lookups: ASCII), the rest by hash.
struct CharMap {
    lead: [u32; 256],
    deeper: FxMap<(u32, u8), (u32, bool)>,
}

/// In [`CharMap::lead`]: a character ends at the lead byte.
const LEAD_END: u32 = 1 << 31;

impl CharMap {
    #[inline]
    fn get(&self, cnode: u32, b: u8) -> Option<(u32, bool)> {
        if cnode == 0 {
            let x = self.lead[b as usize];
            (x != 0).then_some((x & !LEAD_END, x & LEAD_END != 0))
        } else {
            self.deeper.get(&(cnode, b)).copied()
        }
    }
}

/// The trie of `chars` (sorted) in preorder, their lead bytes, and the
/// trie as a [`CharMap`].
fn char_trie(chars: impl Iterator<Item = char>) -> (Vec<CharNode>, [u64; 4], CharMap) {
    let mut nodes = Vec::new();
    let mut leads = [0u64; 4];
    let mut map = CharMap {
        lead: [0; 256],
        deeper: FxMap::default(),
    };
    let mut prev = [0u8; 4];
    let mut prev_len = 0;
    // Node ids of the current character's bytes (1-based: 0 is "between").
    let mut ids = [0u32; 4];
    for c in chars {
        let mut buf = [0u8; 4];
        let enc = c.encode_utf8(&mut buf).as_bytes();
        let shared = prev[..prev_len].iter().zip(enc).take_while(|(a, b)| a == b).count();
        for (k, &b) in enc.iter().enumerate().skip(shared) {
            let end = k + 1 == enc.len();
            nodes.push(CharNode {
                byte: b,
                depth: k as u8 + 1,
                end,
            });
            let id = nodes.len() as u32;
            if k == 0 {
                map.lead[b as usize] = id | if end { LEAD_END } else { 0 };
            } else {
                map.deeper.insert((ids[k - 1], b), (id, end));
            }
            ids[k] = id;
        }
        leads[enc[0] as usize / 64] |= 1 << (enc[0] % 64);
        prev[..enc.len()].copy_from_slice(enc);
        prev_len = enc.len();
    }
    (nodes, leads, map)
}

/// The word tokens of a vocabulary in every alphabet.
#[derive(Debug)]
pub struct WordIndex {
    unicode: Words,
    ascii: Words,
    ascii_ident: Words,
    /// The prefix nodes of any alphabet but the root, with their bytes.
    prefix_nodes: Vec<(u32, u8)>,
}

impl WordIndex {
    pub fn new(trie: &TokTrie) -> WordIndex {
        let vocab = vocab_chars(trie);
        let mut ix = WordIndex {
            unicode: Words::new(trie, Alphabet::Unicode, &vocab),
            ascii: Words::new(trie, Alphabet::Ascii, &vocab),
            ascii_ident: Words::new(trie, Alphabet::AsciiIdent, &vocab),
            prefix_nodes: Vec::new(),
        };
        let mut nodes: Vec<(u32, u8)> = ix
            .alphabets()
            .iter()
            .flat_map(|w| w.prefixes.iter().map(|p| (p.node, p.byte)))
            .filter(|p| p.0 != 0)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        ix.prefix_nodes = nodes;
        ix
    }

    /// The prefix nodes of any alphabet (not the root), with their bytes.
    pub fn prefix_nodes(&self) -> &[(u32, u8)] {
        &self.prefix_nodes
    }

    pub fn words(&self, a: Alphabet) -> &Words {
        match a {
            Alphabet::Unicode => &self.unicode,
            Alphabet::Ascii => &self.ascii,
            Alphabet::AsciiIdent => &self.ascii_ident,
        }
    }

    /// Every alphabet, the wider first.
    pub fn alphabets(&self) -> [&Words; 3] {
        [&self.unicode, &self.ascii, &self.ascii_ident]
    }

    pub fn bytes(&self) -> usize {
        self.alphabets().iter().map(|w| w.bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Vocabulary;

    fn vocab(tokens: &[&[u8]]) -> Vocabulary {
        Vocabulary::from_token_bytes(tokens.iter().map(|t| Some(t.to_vec())).collect(), vec![], None).unwrap()
    }

    /// Every token is in a prefix's set iff it spells the prefix and then
    /// word characters (the last perhaps cut short), and every other
    /// token below the prefix is below exactly one of its entries or right
    /// below the prefix: against a definition by decoding, on a small
    /// vocabulary of several scripts and on the real ones.
    fn check(trie: &TokTrie, v: &Vocabulary, ix: &WordIndex) {
        for w in ix.alphabets() {
            for p in &w.prefixes {
                let pre: Vec<u8> = if p.node == 0 { vec![] } else { vec![trie.node_byte(p.node as usize)] };
                let (lo, hi) = if p.node == 0 {
                    (1, trie.nodes().len())
                } else {
                    (p.node as usize, trie.subtree_end(p.node as usize))
                };
                let in_entry = |t: u32| {
                    p.entries.iter().any(|e| {
                        let n = e.node as usize;
                        (n..trie.subtree_end(n)).any(|m| trie.node_tokens(m).contains(&t))
                    })
                };
                for t in 0..v.size() as u32 {
                    let bytes = v.token_bytes(t);
                    let Some(rest) = bytes.strip_prefix(&pre[..]) else { continue };
                    if rest.is_empty() || (p.node == 0 && !w.is_first_lead(rest[0])) {
                        continue;
                    }
                    // Whole word characters, then perhaps the start of one.
                    let (valid, tail) = match std::str::from_utf8(rest) {
                        Ok(s) => (s, &[][..]),
                        Err(e) => (std::str::from_utf8(&rest[..e.valid_up_to()]).unwrap(), &rest[e.valid_up_to()..]),
                    };
                    let whole = valid
                        .chars()
                        .enumerate()
                        .all(|(k, c)| if k == 0 { w.first_holds(c) } else { w.chars_hold(c) });
                    let cut_short = tail.is_empty() || (tail.len() < 4 && w.starts_char(if valid.is_empty() { &w.first } else { &w.chars }, tail));
                    let is_word = whole && cut_short;
                    assert_eq!(
                        crate::bitmask::get_bit(&p.tokens, t),
                        is_word,
                        "{:?} {:?} under {pre:?}",
                        w.alphabet,
                        String::from_utf8_lossy(bytes)
                    );
                    let first = rest[0];
                    let below_prefix = p.node != 0 && !w.is_first_lead(first);
                    if !is_word && !below_prefix {
                        assert!(
                            in_entry(t),
                            "{:?} {:?} under {pre:?}: in no entry",
                            w.alphabet,
                            String::from_utf8_lossy(bytes)
                        );
                    }
                }
                for e in &p.entries {
                    assert!((lo..hi).contains(&(e.node as usize)));
                }
            }
        }
    }

    impl Words {
        /// Whether `c` is one of the indexed characters that continue a
        /// word, or start one.
        fn chars_hold(&self, c: char) -> bool {
            let mut buf = [0u8; 4];
            self.starts_char(&self.chars, c.encode_utf8(&mut buf).as_bytes()) && self.alphabet.holds(c)
        }

        fn first_holds(&self, c: char) -> bool {
            let mut buf = [0u8; 4];
            self.starts_char(&self.first, c.encode_utf8(&mut buf).as_bytes()) && self.alphabet.holds_first(c)
        }

        /// Whether `bytes` begin (or are) the encoding of a character of
        /// `chars`.
        fn starts_char(&self, chars: &[CharNode], bytes: &[u8]) -> bool {
            let mut path = [0u8; 4];
            chars.iter().any(|n| {
                path[n.depth as usize - 1] = n.byte;
                n.depth as usize >= bytes.len() && path[..bytes.len()] == *bytes
            })
        }
    }

    #[test]
    fn index_holds_the_word_tokens_of_small_and_real_vocabularies() {
        let mut toks: Vec<Vec<u8>> = Vec::new();
        for w in [
            "a", "ab", "a.", "ab(", " ", "(", ".", "é", "日本", "a日", "x—y", "—", "a_1", "ß", "1", "1a", "a1",
        ] {
            toks.push(w.as_bytes().to_vec());
            toks.push(format!(" {w}").into_bytes());
        }
        toks.extend([
            b"a\xE6".to_vec(),
            b"\xE6\x97".to_vec(),
            b" a\xE6\x97".to_vec(),
            b"a\xE6(".to_vec(),
            b"\xFF".to_vec(),
        ]);
        toks.sort();
        toks.dedup();
        let refs: Vec<&[u8]> = toks.iter().map(|t| &t[..]).collect();
        let v = vocab(&refs);
        let trie = TokTrie::new(&v);
        let ix = WordIndex::new(&trie);
        check(&trie, &v, &ix);
        assert!(ix.words(Alphabet::Unicode).prefix(0).is_some());
        assert!(ix.words(Alphabet::Unicode).is_lead(0xE6) && !ix.words(Alphabet::Ascii).is_lead(0xE6));
        let id = ix.words(Alphabet::AsciiIdent);
        assert!(id.is_first_lead(b'a') && !id.is_first_lead(b'1') && id.is_lead(b'1'));
        for name in ["gpt2", "llama-3-8b-instruct"] {
            let Some(env) = crate::grammar::mask::tests::load_env(name) else {
                return;
            };
            let ix = WordIndex::new(env.trie());
            check(env.trie(), env.vocab(), &ix);
            let u = ix.words(Alphabet::Unicode);
            let space = env.trie().children(0).find(|&c| env.trie().node_byte(c) == b' ').unwrap() as u32;
            assert!(u.prefix(space).is_some(), "{name}: the space prefix is indexed");
        }
    }
}
