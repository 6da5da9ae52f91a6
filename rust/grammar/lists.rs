//! Separated lists: `p (s p)*` and `(p s)* p` become one left-recursive
//! rule `l -> p | l s p`.
//!
//! Why: the idiom is everywhere (`term ([-+*/] term)*`, a JSON object's
//! `member ("," ws member)*`, Lark's `x ("," x)*`), and its EBNF
//! desugaring (`ebnf.rs`: `h -> ε | h g`, `g -> s p`) puts the first `p`
//! and every later one in different rules. The parser configurations
//! inside them differ in name though not in future: after the first term
//! of an expression its completion advances `e -> term . h`, after a later
//! one `g -> s term .`, which completes `g` and then `h`. Mask keys
//! ([`super::earley::Chart::fingerprint`]) name a configuration by what is
//! left of each item's rule and what its completion advances, so the two
//! are computed apart: every first element of a list (the first term of
//! each line of arithmetic, the first member of each JSON object) was a
//! first visit whose mask a later element had already paid for. In
//! `l -> p | l s p` both are `l -> ... . p` with `l` begun at the list's
//! start: one name, one mask.
//!
//! The rewrite keeps the language and the derivations' shape up to
//! reassociation: `p (s p)*` and `l` derive the same strings, each in as
//! many ways (`l` splits a string exactly where the repetition did).

use super::{Grammar, Rule, Sym};
use crate::fxhash::FxMap;

/// `g` with every `p h` (in any rule) where `h -> ε | h x` and `x` derives
/// exactly `s p` (one rule, or `x` itself when `s` is empty) replaced by a
/// fresh `l -> p | l s p`, `p` the longest such suffix of `x`'s rule; and
/// likewise every `h p` where `x` derives exactly `p s` (`(x ",")* x`, as
/// SynCode's SQL writes its lists). The old helpers stay (unreachable
/// where every use was folded). `None` where there is no list to fold:
/// most grammars are compiled without a copy.
pub fn fold_separated_lists(g: &Grammar) -> Option<Grammar> {
    let n = g.nonterminals.len();
    let mut rules_of: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (r, rule) in g.rules.iter().enumerate() {
        rules_of[rule.lhs as usize].push(r);
    }
    // The body of each star helper `h -> ε | h x`: `x`'s only rule, or `x`.
    let body_of = |h: u32| -> Option<&[Sym]> {
        let rs = &rules_of[h as usize];
        if rs.len() != 2 {
            return None;
        }
        let (a, b) = (&g.rules[rs[0]].rhs, &g.rules[rs[1]].rhs);
        let step = match (a.as_slice(), b.as_slice()) {
            ([], s) | (s, []) => s,
            _ => return None,
        };
        let [Sym::N(hh), x] = step else { return None };
        if *hh != h || *x == Sym::N(h) {
            return None;
        }
        match *x {
            Sym::N(m) if rules_of[m as usize].len() == 1 => {
                let body = g.rules[rules_of[m as usize][0]].rhs.as_slice();
                // A body that uses the helper itself is not a list of it.
                (!body.is_empty() && !body.contains(&Sym::N(h))).then_some(body)
            }
            _ => Some(std::slice::from_ref(x)),
        }
    };
    let mut rules: Vec<Rule> = Vec::with_capacity(g.rules.len());
    let mut names: Vec<String> = Vec::new();
    let mut lists: FxMap<(Vec<Sym>, Vec<Sym>), u32> = FxMap::default();
    let mut extra: Vec<Rule> = Vec::new();
    for rule in &g.rules {
        let mut rhs: Vec<Sym> = Vec::with_capacity(rule.rhs.len());
        let mut i = 0;
        while i < rule.rhs.len() {
            let s = rule.rhs[i];
            i += 1;
            let body = match s {
                Sym::N(h) if h != rule.lhs => body_of(h),
                _ => None,
            };
            let Some(body) = body else {
                rhs.push(s);
                continue;
            };
            let m = body.len();
            // `p (s p)*`: `p` the longest suffix of the body just emitted;
            // else `(p s)* p`: `p` the longest prefix of the body that
            // follows.
            let before = (1..=m.min(rhs.len())).rev().find(|&k| rhs[rhs.len() - k..] == body[m - k..]);
            let after = || {
                let rest = &rule.rhs[i..];
                (1..=m.min(rest.len())).rev().find(|&k| rest[..k] == body[..k])
            };
            let (sep, p) = match (before, before.is_none().then(after).flatten()) {
                (Some(k), _) => {
                    rhs.truncate(rhs.len() - k);
                    let (sep, p) = body.split_at(m - k);
                    (sep.to_vec(), p.to_vec())
                }
                (None, Some(k)) => {
                    i += k;
                    let (p, sep) = body.split_at(k);
                    (sep.to_vec(), p.to_vec())
                }
                (None, None) => {
                    rhs.push(s);
                    continue;
                }
            };
            let l = *lists.entry((sep, p)).or_insert_with_key(|(sep, p)| {
                let l = (n + names.len()) as u32;
                names.push(format!("__list_{l}"));
                extra.push(Rule { lhs: l, rhs: p.clone() });
                let mut step = Vec::with_capacity(m + 1);
                step.push(Sym::N(l));
                step.extend_from_slice(sep);
                step.extend_from_slice(p);
                extra.push(Rule { lhs: l, rhs: step });
                l
            });
            rhs.push(Sym::N(l));
        }
        rules.push(Rule { lhs: rule.lhs, rhs });
    }
    if lists.is_empty() {
        return None;
    }
    rules.extend(extra);
    let mut nonterminals = g.nonterminals.clone();
    nonterminals.extend(names);
    Some(Grammar {
        terminals: g.terminals.clone(),
        nonterminals,
        rules,
        start: g.start,
        ignore: g.ignore.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::ebnf::tests::accepts;
    use super::super::{gbnf, lark, GrammarLimits};
    use super::*;

    fn lists_in(g: &Grammar) -> usize {
        g.nonterminals.iter().filter(|n| n.starts_with("__list_")).count()
    }

    #[test]
    fn separated_lists_become_one_rule() {
        let limits = GrammarLimits::default();
        let g = lark::parse_lark(
            "start: term (OP term)*\nterm: NAME | \"(\" start \")\"\nOP: /[-+*\\/]/\nNAME: /[a-z]+/\n",
            &limits,
        )
        .unwrap();
        let f = fold_separated_lists(&g).unwrap();
        assert_eq!(lists_in(&f), 1);
        let l = f.nonterminals.iter().position(|n| n.starts_with("__list_")).unwrap() as u32;
        let mut mine: Vec<&Vec<Sym>> = f.rules.iter().filter(|r| r.lhs == l).map(|r| &r.rhs).collect();
        mine.sort_by_key(|r| r.len());
        assert_eq!(mine.len(), 2);
        assert_eq!(mine[0].len(), 1, "l -> p");
        assert_eq!(mine[1].len(), 3, "l -> l s p");
        assert_eq!(mine[1][0], Sym::N(l));
        for text in ["a", "a+b", "a+(b*c)-d", "(a)", "((a+b))"] {
            assert!(accepts(&g, text) && accepts(&f, text), "{text}");
        }
        for text in ["", "+", "a+", "a++b", "(a", "a)"] {
            assert!(!accepts(&g, text) && !accepts(&f, text), "{text}");
        }
    }

    #[test]
    fn longest_shared_suffix_is_the_element() {
        // A JSON object's members: `string ":" value ("," string ":" value)*`.
        let limits = GrammarLimits::default();
        let src = r#"root ::= "{" ( s ":" v ( "," s ":" v )* )? "}"
s ::= "\"" [a-z]* "\""
v ::= [0-9]+ | root
"#;
        let g = gbnf::parse_gbnf(src, &limits).unwrap();
        let f = fold_separated_lists(&g).unwrap();
        assert!(lists_in(&f) >= 1);
        let l = f.nonterminals.iter().position(|n| n.starts_with("__list_")).unwrap() as u32;
        let p = f.rules.iter().find(|r| r.lhs == l && r.rhs.first() != Some(&Sym::N(l))).unwrap();
        let step = f.rules.iter().find(|r| r.lhs == l && r.rhs.first() == Some(&Sym::N(l))).unwrap();
        assert_eq!(step.rhs.len(), p.rhs.len() + 2, "the separator is one symbol");
        for text in [r#"{}"#, r#"{"a":1}"#, r#"{"a":1,"b":{"c":2}}"#, r#"{"":0,"x":{},"y":3}"#] {
            assert!(accepts(&g, text) && accepts(&f, text), "{text}");
        }
        for text in [r#"{,}"#, r#"{"a":1,}"#, r#"{"a"}"#, r#"{"a":1"b":2}"#] {
            assert!(!accepts(&g, text) && !accepts(&f, text), "{text}");
        }
    }

    /// Every string up to `max_len` over `alphabet`.
    fn strings(alphabet: &[char], max_len: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..max_len {
            last = last.iter().flat_map(|s| alphabet.iter().map(move |&c| format!("{s}{c}"))).collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn folding_keeps_the_language_exhaustively() {
        // Lists with separators of several symbols, nested lists, a list
        // inside its own element, `x x*`, lists at a rule's start and end,
        // and repetitions that are not lists beside them.
        let limits = GrammarLimits::default();
        let cases: [(&str, &[char]); 6] = [
            (
                "start: e \";\" e*\ne: t (\"+\" t)*\nt: \"a\" | \"(\" e \")\"\n",
                &['a', '+', '(', ')', ';'],
            ),
            (
                "start: \"[\" (v (\",\" \" \"? v)*)? \"]\"\nv: \"a\" | start\n",
                &['a', ',', ' ', '[', ']'],
            ),
            ("start: (\"a\" \"b\") (\",\" \"a\" \"b\")* (\"a\" \"b\")*\n", &['a', 'b', ',']),
            ("start: \"a\" \"a\"* \"b\" (\"b\" | \"a\")* (\"a\" \",\")* \"a\"\n", &['a', 'b', ',']),
            ("start: x (\",\" x)* \",\"?\nx: \"a\" x? | \"b\" (\";\" \"b\")*\n", &['a', 'b', ',', ';']),
            ("start: (\"a\" \"b\" \",\")* \"a\" \"b\" (\"a\" \",\")* \"b\"\n", &['a', 'b', ',']),
        ];
        for (src, alphabet) in cases {
            let g = lark::parse_lark(src, &limits).unwrap();
            let f = fold_separated_lists(&g).unwrap();
            assert!(lists_in(&f) >= 1, "{src}");
            let max_len = if alphabet.len() > 4 { 6 } else { 7 };
            let mut accepted = 0;
            for text in strings(alphabet, max_len) {
                let yes = accepts(&g, &text);
                assert_eq!(yes, accepts(&f, &text), "{src} on {text:?}");
                accepted += usize::from(yes);
            }
            assert!(accepted >= 3, "{src}: {accepted} strings accepted");
        }
    }

    #[test]
    fn other_repetitions_are_left_alone() {
        let limits = GrammarLimits::default();
        for src in [
            "start: \"a\" (\"b\" \"c\")*\n",
            "start: \"a\" (\"b\" | \"a\")*\n",
            "start: (\"a\" \",\")* \"b\"\n",
            "start: \"b\" (\",\" \"a\")* \"a\"\n",
        ] {
            let g = lark::parse_lark(src, &limits).unwrap();
            assert!(fold_separated_lists(&g).is_none(), "{src}");
        }
        // `(x ",")* x` is `x ("," x)*`: the same list.
        let g = lark::parse_lark("start: x (\",\" x)* \";\" (x \",\")* x\nx: \"a\" | \"b\"\n", &limits).unwrap();
        let f = fold_separated_lists(&g).unwrap();
        assert_eq!(lists_in(&f), 1);
        for text in ["a;a", "a,b;b", "a;a,b,a", "b,b,b;a,a"] {
            assert!(accepts(&g, text) && accepts(&f, text), "{text}");
        }
        for text in ["a,;a", "a;,a", "a;a,", ";a"] {
            assert!(!accepts(&g, text) && !accepts(&f, text), "{text}");
        }
        // `x x*` is `x+`: one list with no separator.
        let g = lark::parse_lark("start: \"a\" \"a\"*\n", &limits).unwrap();
        let f = fold_separated_lists(&g).unwrap();
        assert_eq!(lists_in(&f), 1);
        for text in ["a", "aa", "aaaa"] {
            assert!(accepts(&f, text), "{text}");
        }
        assert!(!accepts(&f, ""));
    }
}
