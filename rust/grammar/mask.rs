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

use super::earley::{can_end, extends, CompiledGrammar, GrammarState, GrammarWalker};
use crate::bitmask::set_bit;
use crate::toktrie::TokTrie;
use std::collections::HashMap;

/// Lexer-only part of a mask for one (lexer state, allowed set).
#[derive(Debug)]
pub struct LexEntry {
    /// Tokens all of whose bytes extend the lexeme in progress.
    inner: Box<[u32]>,
    /// (trie node, lexer state there) where the lexeme may end and a
    /// non-extending child follows; sorted by lexer state.
    boundaries: Vec<(u32, u32)>,
}

impl LexEntry {
    pub fn build(g: &CompiledGrammar, trie: &TokTrie, s: u32, in_progress: bool, allowed: &[u64], words: usize) -> LexEntry {
        let lexer = &g.lexer;
        let mut inner = vec![0u32; words].into_boxed_slice();
        let mut boundaries = Vec::new();
        if in_progress && can_end(lexer, s, allowed) {
            boundaries.push((0u32, s));
        }
        // Visit every accepted node (not only token ends) to find boundaries.
        trie.walk_states_all(
            s,
            |ls, b| if extends(lexer, ls, b, allowed) { lexer.next(ls, b) } else { 0 },
            |i, ls| {
                for &t in trie.node_tokens(i) {
                    set_bit(&mut inner, t);
                }
                if can_end(lexer, ls, allowed) {
                    boundaries.push((i as u32, ls));
                }
            },
        );
        boundaries.retain(|&(n, ls)| trie.children(n as usize).any(|c| !extends(lexer, ls, trie.node_byte(c), allowed)));
        boundaries.sort_by_key(|&(_, ls)| ls);
        LexEntry { inner, boundaries }
    }

    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.inner) + self.boundaries.len() * 8
    }
}

/// Complete a mask for grammar state `st` from its lexer entry.
pub fn fill_from_entry(g: &CompiledGrammar, trie: &TokTrie, shapes: &[u32], st: &mut GrammarState, entry: &LexEntry, out: &mut [u32]) {
    out.copy_from_slice(&entry.inner);
    let mut memo: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut i = 0;
    let b = &entry.boundaries;
    while i < b.len() {
        let ls = b[i].1;
        let mut j = i;
        while j < b.len() && b[j].1 == ls {
            j += 1;
        }
        let (_, _, allowed) = st.lexer_view(g);
        let allowed = allowed.to_vec();
        if let Some(saved) = st.enter_after_lexeme(g, ls) {
            memo.clear();
            for &(node, _) in &b[i..j] {
                for c in trie.children(node as usize) {
                    if extends(&g.lexer, ls, trie.node_byte(c), &allowed) {
                        continue; // handled by the lexer layer
                    }
                    let offs = memo.entry(shapes[c]).or_insert_with(|| {
                        let mut v = Vec::new();
                        trie.walk_subtree(c, &mut GrammarWalker { g, st }, |k, _| {
                            if !trie.node_tokens(k).is_empty() {
                                v.push((k - c) as u32)
                            }
                        });
                        v
                    });
                    for &o in offs.iter() {
                        for &t in trie.node_tokens(c + o as usize) {
                            set_bit(out, t);
                        }
                    }
                }
            }
            st.leave_after_lexeme(g, saved);
        }
        i = j;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::earley::GrammarState;
    use crate::grammar::json::{json_grammar, Whitespace};
    use crate::grammar::GrammarLimits;
    use crate::matcher::TokEnv;
    use crate::vocab::Vocabulary;

    /// The layered mask equals a plain trie walk with the full parser, at
    /// every byte of some JSON documents, on the real GPT-2 vocabulary.
    #[test]
    fn layered_mask_equals_plain_walk() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/tokenizers/gpt2/tokenizer.json");
        let Ok(json) = std::fs::read_to_string(path) else {
            eprintln!("skipping: {path} not found");
            return;
        };
        let env = TokEnv::new(Vocabulary::from_tokenizer_json(&json, None, None).unwrap());
        let trie = env.trie();
        let shapes = env.shapes();
        for ws in [Whitespace::Flexible, Whitespace::Compact] {
            let g = CompiledGrammar::new(&json_grammar(ws, 8).unwrap(), &GrammarLimits::default()).unwrap();
            let docs: &[&str] = if ws == Whitespace::Flexible {
                &[r#"{"a": [1, 2.5e-3, "x\"y", true], "b": {"c": null}}"#, " [ \"é\" , -0 ]"]
            } else {
                &[r#"{"a":[1,2.5e-3,"x\"y",true],"b":{"c":null}}"#]
            };
            for doc in docs {
                let mut st = GrammarState::new(&g).unwrap();
                for &byte in doc.as_bytes() {
                    let words = env.mask_words();
                    let (ls, ip, allowed) = st.lexer_view(&g);
                    let allowed = allowed.to_vec();
                    let entry = LexEntry::build(&g, trie, ls, ip, &allowed, words);
                    let mut fast = vec![0u32; words];
                    fill_from_entry(&g, trie, shapes, &mut st, &entry, &mut fast);
                    let mut slow = vec![0u32; words];
                    trie.add_allowed(&mut GrammarWalker { g: &g, st: &mut st }, &mut slow);
                    assert_eq!(
                        crate::bitmask::ones(&fast),
                        crate::bitmask::ones(&slow),
                        "doc {doc:?} before byte {:?}",
                        byte as char
                    );
                    assert!(st.push_byte(&g, byte), "{doc:?} rejected at {:?}", byte as char);
                }
                assert!(st.is_accepting(&g));
            }
        }
    }
}
