//! Lexeme promotion: regular parts of a character-level grammar become
//! single terminals, where that provably keeps the language.
//!
//! Why: GBNF is defined character by character, so its front end emits one
//! terminal per character (see `gbnf.rs`) and the parser takes a step at
//! every byte. Inside a JSON string that is a step per character, and every
//! new context of a string (a key at depth 2, a value in an array, ...) is
//! a parser configuration the mask cache has not seen: each such first
//! visit walks the whole token trie with the parser (about 1 ms on Llama
//! 3). Yet most of the text of a typical GBNF grammar comes from
//! sub-grammars that are regular -- a string, a number, `"true" ws` --
//! and a regular nonterminal can be one terminal whose body the lexer
//! walks: the lexer layer of the mask (per lexer state, shared by every
//! context) then covers the string body, and the parser only sees where
//! the lexeme ends. That is how llguidance lexes GBNF.
//!
//! The catch, and why llguidance's import rejects valid GBNF texts, is that
//! the lexer is greedy: a lexeme ends only when the next byte cannot extend
//! it. A promoted terminal `T` (for nonterminal `m`) therefore keeps the
//! character-level meaning only if a maximal munch never has to be undone.
//! We promote `m` only when both hold:
//!
//! 1. no byte that extends a complete match of `T` can begin what follows
//!    `m` anywhere in the grammar (FOLLOW, over the promoted grammar), and
//! 2. no other terminal can begin with a byte `T` begins with.
//!
//! Then, for any derivation of a text, the lexer facing the derivation's
//! next terminal makes the same cut: by (2) only that terminal survives the
//! first byte of a promoted lexeme (GBNF's other terminals are single
//! characters, which end by themselves), and by (1) the byte after the
//! lexeme's end in the derivation does not extend it. So the engine accepts
//! exactly the character-level language, and masks stay exact. A candidate
//! that fails either condition is left as it was, and its own regular parts
//! are tried instead (in `ident ::= [a-z] [a-z0-9_]* ws` followed by
//! `"\n"`, where `ws` may eat the newline, nothing is promoted).
//!
//! Regular here means: built from terminals and other regular nonterminals,
//! with at most direct left recursion (`h -> ε | h x`, how `*` and `+` are
//! desugared) or direct right recursion, and not nullable (a terminal
//! cannot match the empty string).

use super::{Grammar, Rule, Sym, Terminal};
use crate::regex::{first_bytes, Dfa, RegexLimits, DEAD};

/// Longest regex built for one promoted terminal: past it the nonterminal
/// stays as it is (the lexer DFA grows with the terminals' size).
const MAX_REGEX_LEN: usize = 4096;

/// Deepest nesting of nonterminals inside one promoted terminal.
const MAX_DEPTH: usize = 100;

/// Rounds of "promote, check, drop the unsafe ones" before giving up on
/// promotion altogether (each round drops at least one candidate, so a
/// hostile grammar could otherwise make this quadratic).
const MAX_ROUNDS: usize = 16;

/// Candidate automata built at most (each costs a regex compilation).
const MAX_CANDIDATES: usize = 256;

/// A set of bytes.
type ByteSet = [u64; 4];

fn add(set: &mut ByteSet, b: u8) {
    set[b as usize / 64] |= 1 << (b % 64);
}

fn union(a: &mut ByteSet, b: &ByteSet) -> bool {
    let mut changed = false;
    for (x, y) in a.iter_mut().zip(b) {
        let n = *x | y;
        changed |= n != *x;
        *x = n;
    }
    changed
}

fn disjoint(a: &ByteSet, b: &ByteSet) -> bool {
    a.iter().zip(b).all(|(x, y)| x & y == 0)
}

/// A terminal's first bytes and, for a promoted one, the bytes that extend
/// one of its complete matches.
struct TermBytes {
    first: ByteSet,
    extend: ByteSet,
}

fn term_bytes(regex: &str) -> Option<TermBytes> {
    let dfa = Dfa::compile(regex, &RegexLimits::default()).ok()?;
    let mut first = [0u64; 4];
    let mut extend = [0u64; 4];
    for b in 0..=255u8 {
        if dfa.next(dfa.start(), b) != DEAD {
            add(&mut first, b);
        }
    }
    let mut seen = vec![false; dfa.num_states()];
    let mut stack = vec![dfa.start()];
    seen[dfa.start() as usize] = true;
    while let Some(s) = stack.pop() {
        let accepting = dfa.is_accepting(s);
        for b in 0..=255u8 {
            let t = dfa.next(s, b);
            if t == DEAD {
                continue;
            }
            if accepting {
                add(&mut extend, b);
            }
            if !seen[t as usize] {
                seen[t as usize] = true;
                stack.push(t);
            }
        }
    }
    Some(TermBytes { first, extend })
}

/// Memo of [`Regular::of`].
#[derive(Clone)]
enum Memo {
    Unvisited,
    Visiting,
    Done(Option<String>),
}

/// The regex of each nonterminal whose language is regular (see the module
/// docs for what is recognised).
struct Regular<'g> {
    g: &'g Grammar,
    rules_of: &'g [Vec<usize>],
    memo: Vec<Memo>,
    /// Nesting of [`Regular::of`] calls: past [`MAX_DEPTH`] a nonterminal
    /// counts as not regular (a chain of 100,000 rules must not overflow
    /// the stack; the regex would exceed the nesting limit anyway).
    depth: usize,
}

impl Regular<'_> {
    fn of(&mut self, n: u32) -> Option<String> {
        match &self.memo[n as usize] {
            Memo::Done(r) => return r.clone(),
            Memo::Visiting => return None, // indirect recursion
            Memo::Unvisited => {}
        }
        if self.depth >= MAX_DEPTH {
            return None; // not memoised: a shallower call may still succeed
        }
        self.memo[n as usize] = Memo::Visiting;
        self.depth += 1;
        let r = self.compute(n);
        self.depth -= 1;
        self.memo[n as usize] = Memo::Done(r.clone());
        r
    }

    fn compute(&mut self, n: u32) -> Option<String> {
        let me = Sym::N(n);
        let (mut base, mut left, mut right) = (Vec::new(), Vec::new(), Vec::new());
        let rules_of = self.rules_of;
        for &r in &rules_of[n as usize] {
            let rhs = &self.g.rules[r].rhs;
            let (body, kind) = if rhs.len() > 1 && rhs[0] == me {
                (&rhs[1..], &mut left)
            } else if rhs.len() > 1 && rhs[rhs.len() - 1] == me {
                (&rhs[..rhs.len() - 1], &mut right)
            } else {
                (&rhs[..], &mut base)
            };
            let mut seq = String::new();
            for &s in body {
                let part = match s {
                    Sym::N(m) if m == n => return None,
                    Sym::N(m) => self.of(m)?,
                    Sym::T(t) => {
                        let term = &self.g.terminals[t as usize];
                        if term.first_match {
                            return None;
                        }
                        term.regex.clone()
                    }
                };
                seq.push_str("(?:");
                seq.push_str(&part);
                seq.push(')');
                if seq.len() > MAX_REGEX_LEN {
                    return None;
                }
            }
            kind.push(seq);
        }
        if base.is_empty() || (!left.is_empty() && !right.is_empty()) {
            return None;
        }
        let alt = |v: &[String]| format!("(?:{})", v.join("|"));
        let out = match (left.is_empty(), right.is_empty()) {
            (false, _) => format!("{}{}*", alt(&base), alt(&left)),
            (_, false) => format!("{}*{}", alt(&right), alt(&base)),
            _ => alt(&base),
        };
        (out.len() <= MAX_REGEX_LEN).then_some(out)
    }
}

/// `g` with its safely promotable regular nonterminals replaced by single
/// terminals (the module docs say which). Grammars with `%ignore`
/// terminals are returned as they are: whitespace may fall between any two
/// lexemes there, which a promoted terminal would forbid.
pub fn promote_lexemes(g: &Grammar) -> Grammar {
    if !g.ignore.is_empty() {
        return g.clone();
    }
    let n_nt = g.nonterminals.len();
    let mut rules_of = vec![Vec::new(); n_nt];
    for (i, r) in g.rules.iter().enumerate() {
        rules_of[r.lhs as usize].push(i);
    }
    let mut reg = Regular {
        g,
        rules_of: &rules_of,
        memo: vec![Memo::Unvisited; n_nt],
        depth: 0,
    };
    let nullable = g.nullable();
    // First bytes of the grammar's own terminals, from their syntax (an
    // automaton per terminal would cost more than the rest of compiling).
    let Some(old_first) = g
        .terminals
        .iter()
        .map(|t| first_bytes(&t.regex).or_else(|| term_bytes(&t.regex).map(|tb| tb.first)))
        .collect::<Option<Vec<_>>>()
    else {
        return g.clone();
    };
    // Candidates, and those found unsafe (retried without them).
    let mut rejected = vec![false; n_nt];
    let mut promoted_bytes: Vec<Option<TermBytes>> = (0..n_nt).map(|_| None).collect();
    let mut built = 0;
    for _round in 0..MAX_ROUNDS {
        // The frontier: candidates reached from the start through
        // nonterminals that stay as they are.
        let mut promote = vec![false; n_nt];
        let mut seen = vec![false; n_nt];
        let mut stack = vec![g.start];
        seen[g.start as usize] = true;
        while let Some(n) = stack.pop() {
            // The start symbol itself is never promoted: a whole grammar as
            // one lexeme gives up the parser's merging of equivalent
            // positions (measured: chess.gbnf's masks took 3x as long).
            let is_candidate = |n: u32, reg: &mut Regular| n != g.start && !rejected[n as usize] && !nullable[n as usize] && reg.of(n).is_some();
            if is_candidate(n, &mut reg) {
                promote[n as usize] = true;
                continue;
            }
            for &r in &rules_of[n as usize] {
                for &s in &g.rules[r].rhs {
                    if let Sym::N(m) = s {
                        if !seen[m as usize] {
                            seen[m as usize] = true;
                            stack.push(m);
                        }
                    }
                }
            }
        }
        if !promote.iter().any(|&p| p) {
            return g.clone();
        }
        // Terminals in use: the originals reached, and the promoted ones
        // (by their first bytes, from the syntax: a candidate that clashes
        // with another terminal is dropped before its automaton is built).
        let live = |m: u32| seen[m as usize] && !promote[m as usize];
        let mut firsts: Vec<(usize, ByteSet)> = Vec::new(); // (owner id, first bytes)
        let mut used = vec![false; g.terminals.len()];
        for r in g.rules.iter().filter(|r| live(r.lhs)) {
            for &s in &r.rhs {
                if let Sym::T(t) = s {
                    used[t as usize] = true;
                }
            }
        }
        for (t, u) in used.iter().enumerate() {
            if *u {
                firsts.push((usize::MAX - t, old_first[t]));
            }
        }
        for n in (0..n_nt).filter(|&n| promote[n]) {
            match promoted_bytes[n]
                .as_ref()
                .map(|tb| tb.first)
                .or_else(|| first_bytes(&reg.of(n as u32).unwrap_or_default()))
            {
                Some(f) => firsts.push((n, f)),
                None => rejected[n] = true,
            }
        }
        // Per byte, how many terminals begin with it: a candidate clashes
        // where a byte of its own is counted twice.
        let mut owners = [0u32; 256];
        for (_, f) in &firsts {
            for (b, c) in owners.iter_mut().enumerate() {
                *c += (f[b / 64] >> (b % 64) & 1) as u32;
            }
        }
        for &(n, f) in firsts.iter().filter(|(n, _)| *n < n_nt) {
            if (0..256).any(|b| f[b / 64] >> (b % 64) & 1 == 1 && owners[b] > 1) {
                rejected[n] = true;
            }
        }
        for n in 0..n_nt {
            if promote[n] && !rejected[n] && promoted_bytes[n].is_none() {
                built += 1;
                if built > MAX_CANDIDATES {
                    return g.clone();
                }
                match term_bytes(&reg.of(n as u32).unwrap_or_default()) {
                    Some(tb) => promoted_bytes[n] = Some(tb),
                    None => rejected[n] = true,
                }
            }
        }
        if (0..n_nt).any(|n| promote[n] && rejected[n]) {
            continue; // retry without the clashing or uncompilable ones
        }
        // FIRST and FOLLOW over the promoted grammar, reachable part.
        let sym_first = |s: Sym, first: &[ByteSet]| -> ByteSet {
            match s {
                Sym::T(t) => old_first[t as usize],
                Sym::N(m) => match &promoted_bytes[m as usize] {
                    Some(tb) if promote[m as usize] => tb.first,
                    _ => first[m as usize],
                },
            }
        };
        let sym_nullable = |s: Sym| matches!(s, Sym::N(m) if !promote[m as usize] && nullable[m as usize]);
        let mut first = vec![[0u64; 4]; n_nt];
        loop {
            let mut changed = false;
            for r in g.rules.iter().filter(|r| live(r.lhs)) {
                let mut acc = first[r.lhs as usize];
                for &s in &r.rhs {
                    union(&mut acc, &sym_first(s, &first));
                    if !sym_nullable(s) {
                        break;
                    }
                }
                changed |= union(&mut first[r.lhs as usize], &acc);
            }
            if !changed {
                break;
            }
        }
        let mut follow = vec![[0u64; 4]; n_nt];
        loop {
            let mut changed = false;
            for r in g.rules.iter().filter(|r| live(r.lhs)) {
                // Walk right to left with what may follow the position.
                let mut after = follow[r.lhs as usize];
                for &s in r.rhs.iter().rev() {
                    if let Sym::N(m) = s {
                        changed |= union(&mut follow[m as usize], &after);
                    }
                    let f = sym_first(s, &first);
                    if sym_nullable(s) {
                        union(&mut after, &f);
                    } else {
                        after = f;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let mut unsafe_any = false;
        for n in 0..n_nt {
            let Some(tb) = promoted_bytes[n].as_ref().filter(|_| promote[n]) else {
                continue;
            };
            if !disjoint(&tb.extend, &follow[n]) {
                rejected[n] = true;
                unsafe_any = true;
            }
        }
        if unsafe_any {
            continue;
        }
        // Safe: emit the reachable part, promoted nonterminals as the one
        // rule `m -> T_m` (terminals used only below them are dropped, so
        // the lexer DFA does not grow with the grammar's insides).
        let mut nt_id = vec![u32::MAX; n_nt];
        let mut nonterminals = Vec::new();
        for n in (0..n_nt).filter(|&n| seen[n]) {
            nt_id[n] = nonterminals.len() as u32;
            nonterminals.push(g.nonterminals[n].clone());
        }
        let mut t_id = vec![u32::MAX; g.terminals.len()];
        let mut terminals = Vec::new();
        let mut rules = Vec::new();
        for r in g.rules.iter().filter(|r| live(r.lhs)) {
            let rhs = r
                .rhs
                .iter()
                .map(|&s| match s {
                    Sym::N(m) => Sym::N(nt_id[m as usize]),
                    Sym::T(t) => {
                        if t_id[t as usize] == u32::MAX {
                            t_id[t as usize] = terminals.len() as u32;
                            terminals.push(g.terminals[t as usize].clone());
                        }
                        Sym::T(t_id[t as usize])
                    }
                })
                .collect();
            rules.push(Rule {
                lhs: nt_id[r.lhs as usize],
                rhs,
            });
        }
        for n in (0..n_nt).filter(|&n| promote[n]) {
            rules.push(Rule {
                lhs: nt_id[n],
                rhs: vec![Sym::T(terminals.len() as u32)],
            });
            terminals.push(Terminal {
                name: g.nonterminals[n].clone(),
                regex: reg.of(n as u32).unwrap_or_default(),
                first_match: false,
                except: Vec::new(),
            });
        }
        let out = Grammar {
            terminals,
            nonterminals,
            rules,
            start: nt_id[g.start as usize],
            ignore: Vec::new(),
        };
        return out;
    }
    g.clone() // no stable choice within the rounds: promote nothing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitmask::ones;
    use crate::grammar::gbnf::parse_gbnf_chars;
    use crate::grammar::mask::tests::load_env;
    use crate::grammar::GrammarLimits;
    use crate::matcher::{Constraint, Matcher, TokEnv};

    fn promoted(src: &str) -> Vec<String> {
        let g = parse_gbnf_chars(src, "root", &GrammarLimits::default()).unwrap();
        let p = promote_lexemes(&g);
        p.terminals
            .iter()
            .filter(|t| p.nonterminals.contains(&t.name))
            .map(|t| t.name.clone())
            .collect()
    }

    #[test]
    fn json_strings_and_numbers_are_promoted() {
        let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grammars/json.gbnf")).unwrap();
        let p = promoted(&src);
        assert!(p.contains(&"string".to_string()), "{p:?}");
        assert!(p.contains(&"number".to_string()), "{p:?}");
    }

    /// Where a greedy lexeme could swallow what follows it, the candidate
    /// stays character-level (`root` is made recursive, so not regular).
    #[test]
    fn unsafe_candidates_stay_character_level() {
        let p = |body: &str| promoted(&format!("root ::= body | \"(\" root \")\"\n{body}"));
        // `ws` may end in "\n", which also follows `ident`; `[a-z]+` inside
        // it is safe (a letter never follows it).
        let got = p("body ::= ident \"\\n\" root?\nident ::= [a-z]+ ws\nws ::= [ \\t\\n]*");
        assert!(!got.contains(&"ident".to_string()) && !got.contains(&"body".to_string()), "{got:?}");
        assert!(got.iter().any(|n| n.starts_with("__plus")), "{got:?}");
        // A word followed by a letter.
        assert_eq!(p("body ::= word [a-z] root?\nword ::= [a-z]+"), Vec::<String>::new());
        // Another terminal starts like the candidate (a keyword beside an
        // identifier): the lexer would have to choose.
        assert_eq!(p("body ::= \"i\" root? | id \";\" root?\nid ::= [a-z]+"), Vec::<String>::new());
        // Safe: a word is followed by a space, ")" or the end.
        assert_eq!(p("body ::= word (\" \" word)*\nword ::= [a-z]+"), vec!["body".to_string()]);
        // ... which it is where the whole of `body` is regular: its regex
        // has both readings of "\n".
        assert_eq!(
            p("body ::= (ident \"\\n\")+\nident ::= [a-z]+ ws\nws ::= [ \\t\\n]*"),
            vec!["body".to_string()]
        );
        // The start symbol stays a nonterminal; its parts are promoted.
        let got = promoted("root ::= [a-z]+ [0-9]");
        assert!(got.len() == 1 && got[0].starts_with("__plus"), "{got:?}");
    }

    /// Hostile shapes stay cheap: a chain of 50,000 rules (deeper than any
    /// stack would take recursively) and a thousand mutually clashing
    /// candidates compile, promoting nothing or a bounded amount.
    #[test]
    fn deep_and_wide_grammars_are_bounded() {
        let mut src = String::from("root ::= \"(\" root \")\" | r0\n");
        for i in 0..50_000 {
            src.push_str(&format!("r{i} ::= r{} | \"x\"\n", i + 1));
        }
        src.push_str("r50000 ::= [a-z]\n");
        let t = std::time::Instant::now();
        promoted(&src);
        let mut wide = String::from("root ::= (w0");
        for i in 1..1000 {
            wide.push_str(&format!(" | w{i}"));
        }
        wide.push_str(") root?\n");
        for i in 0..1000 {
            wide.push_str(&format!("w{i} ::= \"k{i}\" [a-z]+\n"));
        }
        assert_eq!(promoted(&wide), Vec::<String>::new());
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "{:?}", t.elapsed());
    }

    /// Feed `text` byte by byte (single-byte tokens) to a matcher of the
    /// character-level grammar and one of the promoted grammar: before every
    /// byte their masks are equal, and they accept and reject the same
    /// bytes. Returns how many bytes were accepted.
    fn same_masks(env: &std::sync::Arc<TokEnv>, chars: &Grammar, prom: &Grammar, text: &[u8], what: &str) -> usize {
        let lim = GrammarLimits::default();
        let mut a = Matcher::new(Constraint::grammar(env.clone(), chars, &lim).unwrap());
        let mut b = Matcher::new(Constraint::grammar(env.clone(), prom, &lim).unwrap());
        let words = env.mask_words();
        let (mut ma, mut mb) = (vec![0u32; words], vec![0u32; words]);
        for (i, &byte) in text.iter().enumerate() {
            a.fill_mask(&mut ma).unwrap();
            b.fill_mask(&mut mb).unwrap();
            assert!(
                ma == mb,
                "{what}: masks differ before byte {i} of {:?}: {:?} vs {:?}",
                String::from_utf8_lossy(&text[..i]),
                ones(&ma).len(),
                ones(&mb).len()
            );
            let (t, _, _) = env.trie().longest_prefix(&[byte]).unwrap();
            let (ok_a, ok_b) = (a.consume_token(t).unwrap(), b.consume_token(t).unwrap());
            assert_eq!(ok_a, ok_b, "{what}: byte {i}");
            if !ok_a {
                return i;
            }
        }
        assert_eq!(a.is_accepting(), b.is_accepting(), "{what}: at the end");
        text.len()
    }

    /// Every GBNF grammar of the bench and the tests, promoted and as
    /// written, on GPT-2 and Llama 3: equal masks before every byte of the
    /// valid sample (its first 1,200 bytes) and of 12 seeded mutations of it.
    #[test]
    fn promoted_masks_equal_character_level_masks() {
        let mut files = Vec::new();
        for dir in ["benches/grammars", "../shared/grammars", "tests/grammars"] {
            let dir = format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"));
            if let Ok(entries) = std::fs::read_dir(&dir) {
                files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "gbnf")));
            }
        }
        files.sort();
        let mut promoted_any = 0;
        for vname in ["gpt2", "llama-3-8b-instruct"] {
            let Some(env) = load_env(vname) else { return };
            for f in &files {
                let text = std::fs::read_to_string(f).unwrap();
                let chars = parse_gbnf_chars(&text, "root", &GrammarLimits::default()).unwrap();
                let prom = promote_lexemes(&chars);
                if !prom.terminals.iter().any(|t| prom.nonterminals.contains(&t.name)) {
                    continue;
                }
                promoted_any += 1;
                let Ok(sample) = std::fs::read_to_string(f.with_extension("1.txt")) else {
                    continue;
                };
                let sample = &sample.as_bytes()[..sample.len().min(1200)];
                let what = format!("{} / {vname}", f.display());
                let ok = same_masks(&env, &chars, &prom, sample, &what);
                assert!(ok >= sample.len().min(1000), "{what}: the sample was rejected at byte {ok}");
                let mut seed = 0x9E37_79B9_7F4A_7C15u64;
                for k in 0..12 {
                    let mut m = sample[..sample.len().min(300)].to_vec();
                    for _ in 0..3 {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let at = (seed >> 8) as usize % m.len();
                        let pick = b"\"{}[],:0123456789.e- \n\\abcxyz(";
                        match seed % 3 {
                            0 => m[at] = pick[(seed >> 32) as usize % pick.len()],
                            1 => m.insert(at, pick[(seed >> 40) as usize % pick.len()]),
                            _ => {
                                m.remove(at);
                            }
                        }
                    }
                    same_masks(&env, &chars, &prom, &m, &format!("{what}, mutation {k}"));
                }
            }
        }
        assert!(promoted_any >= 2, "no grammar was promoted");
    }
}
