//! The tokens of a JSON string body, indexed once per vocabulary.
//!
//! Inside a string every body character (anything but `"`, `\`, DEL and the
//! controls U+0000..U+001F; see [`is_body_ascii`]) usually moves the lexer
//! the same way: back to the same state in a free string, one count on in a
//! string of bounded length. Where it does, the lexer walk of the token
//! trie ([`super::mask::LexEntry::build`]) need not visit the ~120,000
//! tokens made of body characters alone (96% of Llama 3's vocabulary):
//! those of at most as many characters as the lexer can still take are all
//! inside the lexeme, a precomputed bit set, and the rest are dead. Only
//! the few thousand tokens that hold another byte (a closing quote, an
//! escape, a newline, a byte that is not UTF-8) are walked, each from the
//! state its body prefix leads to. That prefix is the same for every token
//! that shares its length, so the walk starts at "entry" nodes grouped by
//! it.
//!
//! llguidance precomputes token sets of string bodies the same way (its
//! "slices"); this index is exact for any lexer, because the walk only
//! uses it after checking, per lexer state, that every body character does
//! move that state along one path ([`super::mask`]'s `body_run`).

use crate::bitmask::{set_bit, words_for};
use crate::toktrie::{utf8_step, TokTrie, Utf8State, UTF8_INVALID, UTF8_START};

/// The longest bounded run of body characters whose tokens the index
/// keeps as a bit set; longer counts add the few longer tokens to it.
pub const MAX_COUNTED: usize = 32;

/// Where a token's body prefix ends: the node of the first byte that no
/// body character continues with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// Complete body characters before it.
    pub chars: u32,
    /// Leading bytes of a body character the entry byte cuts short (e.g.
    /// `0xE4` before a byte that cannot continue it), `partial_len` of them.
    pub partial: [u8; 3],
    pub partial_len: u8,
    /// The entry byte.
    pub byte: u8,
    /// Its trie node.
    pub node: u32,
    /// The node above it (the root for an entry byte at a token's start):
    /// where a lexeme that may end inside a run of body characters (a
    /// line's rest, `/./+`) ends before the entry byte.
    pub parent: u32,
}

impl Entry {
    /// Bytes of the cut-short character before the entry byte.
    pub fn partial(&self) -> &[u8] {
        &self.partial[..self.partial_len as usize]
    }

    /// Entries that start from the same lexer state (same body prefix
    /// length, same partial character) and byte.
    pub fn same_start(&self, o: &Entry) -> bool {
        (self.chars, self.partial_len, self.partial, self.byte) == (o.chars, o.partial_len, o.partial, o.byte)
    }
}

/// Body-character tokens by length, and the entry nodes of all others.
#[derive(Debug)]
pub struct BodyIndex {
    /// Tokens made of body characters only (the last perhaps cut short),
    /// of any length.
    all: Box<[u32]>,
    /// `upto[n]`: those of at most `n` characters (a cut-short last one
    /// counts), `n` in `0..=MAX_COUNTED`.
    upto: Vec<Box<[u32]>>,
    /// (characters, token) of the longer ones, by length: a few hundred
    /// (168 of Llama 3's tokens have more than 32 body characters), so
    /// `upto` for longer counts is `upto[MAX_COUNTED]` plus these.
    long: Vec<(u32, u32)>,
    /// Sorted by (chars, partial, byte, node).
    entries: Vec<Entry>,
    /// `at_chars[n]`: nodes spelling exactly `n` whole body characters
    /// that have children, `n` up to the trie's depth: where a lexeme may
    /// end after `n` characters (a string at its `maxLength`, a chunk of
    /// a longer one), each is a boundary.
    at_chars: Vec<Vec<u32>>,
    /// The nodes on the paths to entry nodes, in preorder, entry nodes
    /// marked with [`SKELETON_ENTRY`]: where body characters do not all
    /// move the lexer alike (a key beside key literals), a walk follows
    /// these (about 14,000 on Llama 3, against 400,000 nodes).
    skeleton: Vec<u32>,
}

/// Marks an entry node in [`BodyIndex::skeleton`].
pub const SKELETON_ENTRY: u32 = 1 << 31;

/// Whether ASCII byte `b` is a body character of the index. DEL (0x7F)
/// is left out although JSON allows it: GBNF and Lark string rules
/// written for JSON often exclude it (llama.cpp's json.gbnf has
/// `[^"\\\x7F\x00-\x1F]`), and with it in the set their lexers fail
/// the "every body character leads alike" check, so no mask could use the
/// index. Left out, the few tokens holding DEL are entry tokens, walked
/// byte by byte: exact for both kinds of string, at the cost of a handful
/// of walks where DEL is allowed.
#[inline]
pub fn is_body_ascii(b: u8) -> bool {
    (0x20..0x7F).contains(&b) && b != b'"' && b != b'\\'
}

/// Whether `b` starts a body character: an ASCII body byte or a valid UTF-8
/// lead byte (every character from U+0080 up is a body character).
#[inline]
pub fn starts_body_char(b: u8) -> bool {
    is_body_ascii(b) || (b >= 0x80 && utf8_step(UTF8_START, b) != UTF8_INVALID)
}

impl BodyIndex {
    pub fn new(trie: &TokTrie) -> Self {
        let words = words_for(trie.vocab_size());
        let mut all = vec![0u32; words].into_boxed_slice();
        let mut exact: Vec<Box<[u32]>> = (0..=MAX_COUNTED).map(|_| vec![0u32; words].into_boxed_slice()).collect();
        let mut entries = Vec::new();
        let mut at_chars = vec![Vec::new(); trie.max_depth() + 1];
        let mut long = Vec::new();
        // Per depth on the current path: (complete characters, decoder
        // state, bytes of the character in progress).
        #[derive(Clone, Copy)]
        struct At {
            chars: u32,
            u: Utf8State,
            partial: [u8; 3],
            plen: u8,
        }
        let root = At {
            chars: 0,
            u: UTF8_START,
            partial: [0; 3],
            plen: 0,
        };
        let mut path = vec![root; trie.max_depth() + 1];
        // Node ids on the current path, and per node whether it is on the
        // skeleton (1) or an entry (2).
        let mut ids = vec![0u32; trie.max_depth() + 1];
        let mut on_skeleton = vec![0u8; trie.nodes().len()];
        let nodes = trie.nodes();
        let mut i = 1;
        while i < nodes.len() {
            let node = nodes[i];
            let d = node.depth as usize;
            let at = path[d - 1];
            let b = node.byte;
            let u = utf8_step(at.u, b);
            let body = if at.u == UTF8_START { starts_body_char(b) } else { u != UTF8_INVALID };
            if !body {
                on_skeleton[i] = 2;
                for &a in ids[1..d].iter().rev() {
                    if std::mem::replace(&mut on_skeleton[a as usize], 1) != 0 {
                        break;
                    }
                }
                entries.push(Entry {
                    chars: at.chars,
                    partial: at.partial,
                    partial_len: at.plen,
                    byte: b,
                    node: i as u32,
                    parent: ids[d - 1],
                });
                i = node.subtree_end as usize;
                continue;
            }
            let next = if u == UTF8_START {
                At {
                    chars: at.chars + 1,
                    u,
                    partial: [0; 3],
                    plen: 0,
                }
            } else {
                let mut partial = at.partial;
                partial[at.plen as usize] = b;
                At {
                    chars: at.chars,
                    u,
                    partial,
                    plen: at.plen + 1,
                }
            };
            path[d] = next;
            ids[d] = i as u32;
            if next.plen == 0 && node.subtree_end as usize > i + 1 {
                at_chars[next.chars as usize].push(i as u32);
            }
            let len = next.chars as usize + (next.plen > 0) as usize;
            for &t in trie.node_tokens(i) {
                set_bit(&mut all, t);
                if len <= MAX_COUNTED {
                    set_bit(&mut exact[len], t);
                } else {
                    long.push((len as u32, t));
                }
            }
            i += 1;
        }
        // Cumulative: upto[n] holds every length up to n.
        for n in 1..exact.len() {
            let (lo, hi) = exact.split_at_mut(n);
            for (w, x) in hi[0].iter_mut().zip(lo[n - 1].iter()) {
                *w |= x;
            }
        }
        entries.sort_unstable();
        long.sort_unstable();
        let skeleton = (0..nodes.len() as u32)
            .filter_map(|i| match on_skeleton[i as usize] {
                0 => None,
                1 => Some(i),
                _ => Some(i | SKELETON_ENTRY),
            })
            .collect();
        BodyIndex {
            all,
            upto: exact,
            long,
            entries,
            at_chars,
            skeleton,
        }
    }

    /// Body-character tokens of any length.
    pub fn all(&self) -> &[u32] {
        &self.all
    }

    /// Write the body-character tokens of at most `n` characters to `out`.
    pub fn upto_into(&self, n: usize, out: &mut [u32]) {
        if n >= self.max_chars() {
            out.copy_from_slice(&self.all);
            return;
        }
        out.copy_from_slice(&self.upto[n.min(MAX_COUNTED)]);
        for &(_, t) in self.long.iter().take_while(|&&(len, _)| len as usize <= n) {
            set_bit(out, t);
        }
    }

    /// The most characters of a body-character token.
    fn max_chars(&self) -> usize {
        self.long.last().map_or(MAX_COUNTED, |&(len, _)| len as usize)
    }

    /// More characters than any token's body prefix holds (a cut-short
    /// last one counted): a lexeme that body characters keep going this
    /// long holds every body token, and reaches every entry byte.
    pub fn horizon(&self) -> usize {
        self.max_chars().max(self.entries.last().map_or(0, |e| e.chars as usize + 1)) + 1
    }

    /// Entry nodes, sorted by body prefix, partial character and byte.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Nodes of exactly `n` whole body characters that have children.
    pub fn at_chars(&self, n: usize) -> &[u32] {
        self.at_chars.get(n).map_or(&[], |v| &v[..])
    }

    /// Paths to the entry nodes (see [`BodyIndex::skeleton`]).
    pub fn skeleton(&self) -> &[u32] {
        &self.skeleton
    }

    pub fn bytes(&self) -> usize {
        (self.upto.len() + 1) * std::mem::size_of_val(&*self.all)
            + self.entries.len() * std::mem::size_of::<Entry>()
            + self.long.len() * 8
            + (self.skeleton.len() + self.at_chars.iter().map(Vec::len).sum::<usize>()) * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Vocabulary;

    /// Every token is either a body token of the right length or below
    /// exactly one entry node whose prefix it starts with, on a vocabulary
    /// with multi-byte characters, cut-short ones and invalid bytes.
    #[test]
    fn every_token_is_body_or_below_one_entry() {
        let toks: Vec<Vec<u8>> = vec![
            b"a".to_vec(),
            b"ab".to_vec(),
            b"ab\"".to_vec(),
            b"ab\",".to_vec(),
            b"\"".to_vec(),
            b"\\n".to_vec(),
            "é".as_bytes().to_vec(),
            vec![0xE4],
            vec![0xE4, 0xB8],
            vec![0xE4, b'x'],
            vec![0x80],
            vec![b'x', 0xED, 0xA0],
            "日本".as_bytes().to_vec(),
            b"a\nb".to_vec(),
            // Longer than MAX_COUNTED: the index adds these one by one.
            b"0123456789012345678901234567890123456789".to_vec(),
            b"012345678901234567890123456789012345".to_vec(),
            "0123456789012345678901234567890123é日".as_bytes().to_vec(),
            b"0123456789012345678901234567890123456789\"".to_vec(),
        ];
        let vocab = Vocabulary::from_token_bytes(toks.iter().cloned().map(Some).collect(), vec![], None).unwrap();
        let trie = TokTrie::new(&vocab);
        let idx = BodyIndex::new(&trie);
        let has = |set: &[u32], t: usize| set[t / 32] >> (t % 32) & 1 != 0;
        let len_of = |b: &[u8]| -> Option<usize> {
            let mut u = UTF8_START;
            let mut n = 0;
            for &x in b {
                let v = utf8_step(u, x);
                let ok = if u == UTF8_START {
                    is_body_ascii(x) || (x >= 0x80 && v != UTF8_INVALID)
                } else {
                    v != UTF8_INVALID
                };
                if !ok {
                    return None;
                }
                if u == UTF8_START {
                    n += 1;
                }
                u = v;
            }
            Some(n)
        };
        let mut upto = vec![0u32; words_for(trie.vocab_size())];
        let longest = toks.iter().filter_map(|b| len_of(b)).max().unwrap_or(0);
        assert!(idx.horizon() > longest.max(40), "{}", idx.horizon());
        for (t, b) in toks.iter().enumerate() {
            match len_of(b) {
                Some(n) => {
                    assert!(has(idx.all(), t), "{b:?}");
                    for m in 0..=longest + 2 {
                        idx.upto_into(m, &mut upto);
                        assert_eq!(has(&upto, t), n <= m, "{b:?} upto {m}");
                    }
                }
                None => {
                    assert!(!has(idx.all(), t), "{b:?}");
                    let below: Vec<_> = idx
                        .entries()
                        .iter()
                        .filter(|e| {
                            let n = e.node as usize;
                            let d = trie.node_depth(n);
                            d <= b.len()
                                && b[d - 1] == e.byte
                                && len_of(&b[..d - 1 - e.partial_len as usize]) == Some(e.chars as usize)
                                && b[d - 1 - e.partial_len as usize..d - 1] == *e.partial()
                                && trie.subtree_tokens(n).contains(&(t as u32))
                        })
                        .collect();
                    assert_eq!(below.len(), 1, "{b:?}: {below:?}");
                }
            }
        }
        // Nodes of n whole body characters with children, and no others.
        let spelled = |x: usize| &toks[trie.subtree_tokens(x)[0] as usize][..trie.node_depth(x)];
        for n in 1..=longest + 2 {
            let want: Vec<u32> = (1..trie.num_nodes())
                .filter(|&x| trie.subtree_end(x) > x + 1)
                .filter(|&x| {
                    let b = spelled(x);
                    std::str::from_utf8(b).is_ok() && len_of(b) == Some(n)
                })
                .map(|x| x as u32)
                .collect();
            assert_eq!(idx.at_chars(n), &want[..], "{n} characters");
        }
        // The skeleton: every entry, marked, and every node above one.
        let sk = idx.skeleton();
        assert!(sk.windows(2).all(|w| w[0] & !SKELETON_ENTRY < w[1] & !SKELETON_ENTRY));
        for e in idx.entries() {
            assert!(sk.contains(&(e.node | SKELETON_ENTRY)));
        }
        for &x in sk.iter().filter(|&&x| x & SKELETON_ENTRY == 0) {
            let (lo, hi) = (x as usize, trie.subtree_end(x as usize));
            assert!(
                idx.entries().iter().any(|e| (lo..hi).contains(&(e.node as usize))),
                "node {x} leads to no entry"
            );
        }
        let above = |n: u32| sk.iter().any(|&x| x & !SKELETON_ENTRY == n);
        for e in idx.entries() {
            for a in 1..e.node {
                if trie.subtree_end(a as usize) > e.node as usize {
                    assert!(above(a), "node {a} above entry {e:?}");
                }
            }
        }
        // `x` then a surrogate's first two bytes: `ED` is a body lead byte,
        // `A0` cannot continue it.
        assert!(idx.entries().iter().any(|e| e.chars == 1 && e.partial() == [0xED] && e.byte == 0xA0));
    }
}
