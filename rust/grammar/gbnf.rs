//! GBNF front end: llama.cpp's grammar format compiled to a [`Grammar`].
//!
//! Syntax (as llama.cpp's `grammar-parser`): rules `name ::= alternatives`
//! (names of letters, digits, `-`; `_` is accepted too), `|`, sequences,
//! string literals `"..."`, character classes `[a-z]`, `[^"\\]`, `.` (any
//! character), groups `( )`, postfix `*`, `+`, `?`, `{m}`, `{m,}`,
//! `{m,n}`, comments `#` to the end of the line; the start rule is `root`.
//! Escapes in literals and classes: `\n \t \r \\ \" \[ \]`, `\xHH`,
//! `\uHHHH`, `\UHHHHHHHH` (as llama.cpp), plus any other escaped ASCII
//! punctuation character standing for itself (`\-`, `\^`, ...). A class
//! range whose ends are reversed matches nothing, as in llama.cpp.
//!
//! Line structure: inside parentheses newlines are plain whitespace; at the
//! top level a newline ends the rule unless what follows (after blank and
//! comment lines) is not the start of a new rule (`name ::=`) — so a rule
//! may also continue on a line that starts with `|`. This accepts every
//! grammar llama.cpp accepts, with the same meaning, and a few more.
//! Whitespace is never implicit (there is no `%ignore`).
//!
//! Lexing: GBNF is defined character by character, while the engine lexes
//! greedily among the terminals the parser expects (see the module docs).
//! To make the two agree exactly, every terminal emitted here matches
//! exactly ONE character: a literal `"abc"` becomes the three terminals
//! `a`, `b`, `c`, a class is one terminal (a one-character class is the
//! same terminal as that literal character), `.` is `(?s:.)`. With single-
//! character terminals maximal munch never has a choice, so e.g.
//! `"ab" | [a-z]+` means exactly what it means in llama.cpp. Afterwards
//! regular parts of the grammar (a string, a number) are promoted to
//! multi-character terminals, only where a maximal munch provably never has
//! to be undone ([`super::promote`]).
//!
//! Repetition `x{m,n}` desugars into `m` copies of `x` followed by a chain
//! of nested optionals (linear in `n`), `x{m,}` into `m - 1` copies and a
//! left-recursive `x+`.

use super::ebnf::{class_char, gerr, Emitter, LineIndex, Pos};
use super::{Grammar, GrammarLimits, Sym};
use crate::error::Result;
use regex_syntax::hir::{ClassUnicode, ClassUnicodeRange};
use std::collections::{HashMap, HashSet};

/// Parse a GBNF grammar whose start rule is `root`.
pub fn parse_gbnf(text: &str, limits: &GrammarLimits) -> Result<Grammar> {
    parse_gbnf_with_start(text, "root", limits)
}

/// Parse a GBNF grammar with an explicit start rule; its regular parts are
/// promoted to multi-character terminals where that keeps the language
/// (see [`super::promote`]).
pub fn parse_gbnf_with_start(text: &str, start: &str, limits: &GrammarLimits) -> Result<Grammar> {
    parse_gbnf_chars(text, start, limits).map(|g| super::promote::promote_lexemes(&g))
}

/// The grammar exactly as written: one terminal per character, nothing
/// promoted (the reference the promoted grammar is tested against).
pub fn parse_gbnf_chars(text: &str, start: &str, limits: &GrammarLimits) -> Result<Grammar> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let s: Vec<char> = text.chars().collect();
    let li = LineIndex::new(&s);
    let mut p = GbnfParser {
        s,
        i: 0,
        li,
        em: Emitter::new(limits),
        max_nesting: limits.max_nesting,
        defined: HashMap::new(),
        uses: Vec::new(),
        used: HashSet::new(),
    };
    p.space(true);
    while !p.eof() {
        p.rule()?;
    }
    for (name, pos) in &p.uses {
        if !p.defined.contains_key(name) {
            return Err(gerr(*pos, format!("undefined rule {name:?}")));
        }
    }
    if !p.defined.contains_key(start) {
        return Err(gerr(Pos::default(), format!("the grammar has no {start:?} rule (the start rule)")));
    }
    p.em.b.finish(start).map_err(|e| super::locate_empty_language(e, text, start))
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

struct GbnfParser<'l> {
    s: Vec<char>,
    i: usize,
    li: LineIndex,
    em: Emitter<'l>,
    max_nesting: usize,
    defined: HashMap<String, Pos>,
    /// First use of each rule name, in textual order.
    uses: Vec<(String, Pos)>,
    used: HashSet<String>,
}

impl GbnfParser<'_> {
    fn eof(&self) -> bool {
        self.i >= self.s.len()
    }

    fn at(&self, j: usize) -> Option<char> {
        self.s.get(j).copied()
    }

    fn cur(&self) -> Option<char> {
        self.at(self.i)
    }

    fn pos(&self) -> Pos {
        self.li.pos(self.i)
    }

    fn is_newline(c: Option<char>) -> bool {
        matches!(c, Some('\n') | Some('\r'))
    }

    /// Skip spaces, tabs and comments; newlines too if `newlines`.
    fn space(&mut self, newlines: bool) {
        while let Some(c) = self.cur() {
            match c {
                ' ' | '\t' => self.i += 1,
                '#' => {
                    while !self.eof() && !Self::is_newline(self.cur()) {
                        self.i += 1;
                    }
                }
                '\n' | '\r' if newlines => self.i += 1,
                _ => break,
            }
        }
    }

    /// Whether `name ::=` starts at `j`.
    fn rule_starts_at(&self, j: usize) -> bool {
        let mut k = j;
        while self.at(k).is_some_and(is_word) {
            k += 1;
        }
        if k == j {
            return false;
        }
        while matches!(self.at(k), Some(' ') | Some('\t')) {
            k += 1;
        }
        self.s.get(k..k + 3) == Some(&[':', ':', '='][..])
    }

    fn name(&mut self) -> String {
        let st = self.i;
        while self.cur().is_some_and(is_word) {
            self.i += 1;
        }
        self.s[st..self.i].iter().collect()
    }

    fn rule(&mut self) -> Result<()> {
        let npos = self.pos();
        let name = self.name();
        if name.is_empty() {
            let found = self.cur().unwrap_or(' ');
            return Err(gerr(npos, format!("expected a rule name, found {found:?}")));
        }
        if name.starts_with("__") {
            return Err(gerr(npos, format!("rule names starting with '__' are reserved ({name:?})")));
        }
        self.space(false);
        if self.s.get(self.i..self.i + 3) != Some(&[':', ':', '='][..]) {
            return Err(gerr(self.pos(), format!("expected '::=' after the rule name {name:?}")));
        }
        self.i += 3;
        self.space(true);
        self.em.at = npos;
        let alts = self.alternates(false, 0)?;
        self.space(false);
        if !self.eof() && !Self::is_newline(self.cur()) && !self.rule_starts_at(self.i) {
            let c = self.cur().unwrap();
            return Err(gerr(
                self.pos(),
                format!("unexpected {c:?} (expected a rule item, '|' or the end of the line)"),
            ));
        }
        self.space(true);
        if let Some(first) = self.defined.get(&name) {
            return Err(gerr(
                npos,
                format!(
                    "rule {name:?} is defined more than once (first at line {}, column {})",
                    first.line, first.col
                ),
            ));
        }
        self.defined.insert(name.clone(), npos);
        let lhs = self.em.b.nonterminal(&name);
        for a in alts {
            self.em.rule(lhs, a)?;
        }
        Ok(())
    }

    fn alternates(&mut self, nested: bool, depth: usize) -> Result<Vec<Vec<Sym>>> {
        let mut alts = vec![self.sequence(nested, depth)?];
        while self.cur() == Some('|') {
            self.i += 1;
            self.space(true);
            alts.push(self.sequence(nested, depth)?);
        }
        Ok(alts)
    }

    fn sequence(&mut self, nested: bool, depth: usize) -> Result<Vec<Sym>> {
        let mut out: Vec<Sym> = Vec::new();
        // The last item, still open to a postfix operator.
        let mut last: Option<Vec<Sym>> = None;
        loop {
            if !nested && Self::is_newline(self.cur()) {
                let mut q = GbnfParser::skip_all(&self.s, self.i);
                if q >= self.s.len() || self.rule_starts_at(q) {
                    break;
                }
                std::mem::swap(&mut self.i, &mut q);
            }
            let Some(c) = self.cur() else { break };
            let cpos = self.pos();
            let item = match c {
                '"' => Some(self.literal()?),
                '[' => Some(vec![Sym::T(self.class()?)]),
                '.' => {
                    self.i += 1;
                    Some(vec![Sym::T(self.em.terminal(".", "(?s:.)")?)])
                }
                '(' => {
                    if depth + 1 > self.max_nesting {
                        return Err(gerr(cpos, format!("groups nested more than {} deep (max_nesting)", self.max_nesting)));
                    }
                    self.i += 1;
                    self.space(true);
                    let mut alts = self.alternates(true, depth + 1)?;
                    match self.cur() {
                        Some(')') => self.i += 1,
                        Some(c) => {
                            return Err(gerr(
                                self.pos(),
                                format!("expected ')' to close the '(' at line {}, column {}, found {c:?}", cpos.line, cpos.col),
                            ))
                        }
                        None => return Err(gerr(cpos, "unclosed '('")),
                    }
                    Some(if alts.len() == 1 {
                        alts.pop().unwrap()
                    } else {
                        vec![self.em.group(alts)?]
                    })
                }
                '*' | '+' | '?' | '{' => {
                    let Some(item) = last.take() else {
                        return Err(gerr(cpos, format!("expected an item before {c:?}")));
                    };
                    let (min, max) = self.repetition()?;
                    let saved = std::mem::replace(&mut self.em.at, cpos);
                    let r = self.repeat(item, min, max);
                    self.em.at = saved;
                    last = Some(r?);
                    None
                }
                // `name ::=` starts the next rule (after a trailing `|`).
                c if is_word(c) && !nested && self.rule_starts_at(self.i) => break,
                c if is_word(c) => {
                    let name = self.name();
                    if name.starts_with("__") {
                        return Err(gerr(cpos, format!("rule names starting with '__' are reserved ({name:?})")));
                    }
                    if self.used.insert(name.clone()) {
                        self.uses.push((name.clone(), cpos));
                    }
                    Some(vec![Sym::N(self.em.b.nonterminal(&name))])
                }
                _ => break,
            };
            if let Some(item) = item {
                if let Some(prev) = last.replace(item) {
                    out.extend(prev);
                }
            }
            self.space(nested);
        }
        if let Some(prev) = last {
            out.extend(prev);
        }
        Ok(out)
    }

    /// Index after blank space, newlines and comments from `j`.
    fn skip_all(s: &[char], mut j: usize) -> usize {
        while j < s.len() {
            match s[j] {
                ' ' | '\t' | '\n' | '\r' => j += 1,
                '#' => {
                    while j < s.len() && s[j] != '\n' {
                        j += 1;
                    }
                }
                _ => break,
            }
        }
        j
    }

    fn repeat(&mut self, item: Vec<Sym>, min: u64, max: Option<u64>) -> Result<Vec<Sym>> {
        if item.is_empty() {
            return Ok(item);
        }
        if min == 0 && max == Some(1) {
            return Ok(vec![self.em.optional(vec![item])?]);
        }
        let x = self.em.group(vec![item])?;
        self.em.repeat(x, min, max)
    }

    fn int(&mut self) -> Result<u64> {
        let st = self.i;
        while self.cur().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        if st == self.i {
            let found = self.cur().map(|c| format!("{c:?}")).unwrap_or("the end of the grammar".into());
            return Err(gerr(self.pos(), format!("expected a number, found {found}")));
        }
        let s: String = self.s[st..self.i].iter().collect();
        s.parse().map_err(|_| gerr(self.li.pos(st), format!("repetition count {s} is too large")))
    }

    /// A postfix operator at the cursor: (min, max).
    fn repetition(&mut self) -> Result<(u64, Option<u64>)> {
        let c = self.cur().unwrap();
        let open = self.pos();
        self.i += 1;
        Ok(match c {
            '*' => (0, None),
            '+' => (1, None),
            '?' => (0, Some(1)),
            _ => {
                self.space(true);
                let min = self.int()?;
                self.space(true);
                let max = match self.cur() {
                    Some('}') => Some(min),
                    Some(',') => {
                        self.i += 1;
                        self.space(true);
                        let max = if self.cur().is_some_and(|c| c.is_ascii_digit()) {
                            Some(self.int()?)
                        } else {
                            None
                        };
                        self.space(true);
                        if self.cur() != Some('}') {
                            return Err(gerr(self.pos(), "expected '}' to close the repetition"));
                        }
                        max
                    }
                    _ => return Err(gerr(self.pos(), "expected ',' or '}' in the repetition")),
                };
                self.i += 1;
                if let Some(mx) = max {
                    if mx < min {
                        return Err(gerr(open, format!("invalid repetition {{{min},{mx}}}: the maximum is below the minimum")));
                    }
                }
                (min, max)
            }
        })
    }

    /// One (possibly escaped) character of a literal or class.
    fn char(&mut self) -> Result<char> {
        let Some(c) = self.cur() else {
            return Err(gerr(self.pos(), "unexpected end of the grammar"));
        };
        if c != '\\' {
            self.i += 1;
            return Ok(c);
        }
        let epos = self.pos();
        let Some(d) = self.at(self.i + 1) else {
            return Err(gerr(epos, "unexpected end of the grammar after '\\'"));
        };
        self.i += 2;
        Ok(match d {
            'x' | 'u' | 'U' => {
                let len = match d {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let digits: String = self.s.get(self.i..self.i + len).map(|s| s.iter().collect()).unwrap_or_default();
                if digits.chars().count() != len || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(gerr(epos, format!("\\{d} needs exactly {len} hex digits")));
                }
                self.i += len;
                let v = u32::from_str_radix(&digits, 16).unwrap();
                char::from_u32(v).ok_or_else(|| gerr(epos, format!("\\{d}{digits} is not a Unicode scalar value")))?
            }
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            d if d.is_ascii_punctuation() => d,
            d => return Err(gerr(epos, format!("unknown escape \\{d}"))),
        })
    }

    fn literal(&mut self) -> Result<Vec<Sym>> {
        let open = self.pos();
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.cur() {
                None => return Err(gerr(open, "unterminated string literal")),
                Some('"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(_) => {
                    let c = self.char()?;
                    out.push(Sym::T(self.em.literal(&c.to_string())?));
                }
            }
        }
    }

    /// A character class: one terminal matching one character.
    fn class(&mut self) -> Result<u32> {
        let open = self.pos();
        let st = self.i;
        self.i += 1;
        let negated = self.cur() == Some('^');
        if negated {
            self.i += 1;
        }
        let mut ranges = Vec::new();
        loop {
            match self.cur() {
                None => return Err(gerr(open, "unterminated character class")),
                Some(']') => {
                    self.i += 1;
                    break;
                }
                Some(_) => {
                    let lo = self.char()?;
                    if self.cur() == Some('-') && self.at(self.i + 1).is_some_and(|c| c != ']') {
                        self.i += 1;
                        let hi = self.char()?;
                        if lo <= hi {
                            ranges.push(ClassUnicodeRange::new(lo, hi));
                        }
                    } else {
                        ranges.push(ClassUnicodeRange::new(lo, lo));
                    }
                }
            }
        }
        let mut cls = ClassUnicode::new(ranges);
        if negated {
            cls.negate();
        }
        let source: String = self.s[st..self.i].iter().collect();
        let rs = cls.ranges();
        if rs.len() == 1 && rs[0].start() == rs[0].end() {
            return self.em.literal(&rs[0].start().to_string());
        }
        let mut complement = cls.clone();
        complement.negate();
        let regex = if rs.is_empty() {
            // Matches nothing (e.g. `[]`); harmless, as in llama.cpp.
            "[^\\x{0}-\\x{10FFFF}]".to_string()
        } else if complement.ranges().is_empty() {
            "(?s:.)".to_string()
        } else {
            let mut r = String::from("[");
            for x in rs {
                r.push_str(&class_char(x.start()));
                if x.end() != x.start() {
                    if x.end() as u32 > x.start() as u32 + 1 {
                        r.push('-');
                    }
                    r.push_str(&class_char(x.end()));
                }
            }
            r.push(']');
            r
        };
        self.em.terminal(&source, &regex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::grammar::ebnf::tests::accepts;
    use regex_syntax::hir::HirKind;

    fn lim() -> GrammarLimits {
        GrammarLimits::default()
    }

    fn gbnf(src: &str) -> Grammar {
        match parse_gbnf(src, &lim()) {
            Ok(g) => g,
            Err(e) => panic!("{e}\n--- grammar:\n{src}"),
        }
    }

    fn gbnf_err(src: &str) -> (usize, usize, String) {
        match parse_gbnf(src, &lim()) {
            Err(Error::Grammar { line, column, message }) => (line, column, message),
            other => panic!("expected a grammar error, got {other:?}"),
        }
    }

    fn fixture(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grammars").join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// Every terminal the front end emits (before promotion) matches
    /// exactly one character.
    fn single_char_terminals(src: &str) {
        let g = parse_gbnf_chars(src, "root", &lim()).unwrap();
        for t in &g.terminals {
            let hir = regex_syntax::ParserBuilder::new().build().parse(&t.regex).unwrap();
            let one = match hir.kind() {
                HirKind::Class(_) => true,
                HirKind::Literal(l) => std::str::from_utf8(&l.0).map(|s| s.chars().count() == 1).unwrap_or(false),
                _ => false,
            };
            assert!(one, "terminal {} = /{}/ is not a single character", t.name, t.regex);
        }
    }

    #[test]
    fn shapes() {
        let g = gbnf("root ::= \"abc\" [a-z] . x\nx ::= \"a\" | [b]\n");
        // a, b, c, [a-z], . (the class [b] is the literal b)
        assert_eq!(g.terminals.len(), 5, "{:?}", g.terminals);
        single_char_terminals("root ::= \"abc\" [a-z] . x\nx ::= \"a\" | [b]\n");
        let root = g.nonterminals.iter().position(|n| n == "root").unwrap() as u32;
        let r: Vec<_> = g.rules.iter().filter(|r| r.lhs == root).collect();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].rhs.len(), 6);
        assert!(accepts(&g, "abcq\u{e9}b"));
        assert!(accepts(&g, "abcz\na"));
        assert!(!accepts(&g, "abcQ\na"));
        assert!(!accepts(&g, "abc"));
    }

    #[test]
    fn repetitions() {
        let g = gbnf("root ::= \"ab\"{2} [0-9]{1,3} \"x\"{2,} \"y\"{0,2} \"z\"* \"w\"+ \"v\"?");
        for s in ["abab1xxw", "abab123xxxxyyzzzwwwv"] {
            assert!(accepts(&g, s), "{s}");
        }
        for s in ["ab1xxw", "abab1234xxw", "abab1xw", "abab1xxyyyw", "abab1xx", "abab1xxwvv"] {
            assert!(!accepts(&g, s), "{s}");
        }
        let g = gbnf("root ::= (\"a\" | \"bc\"){0} \"d\" ( \"e\" ){ 1 , 2 }");
        assert!(accepts(&g, "de"));
        assert!(accepts(&g, "dee"));
        assert!(!accepts(&g, "ade"));
        // Postfix operators stack.
        let g = gbnf("root ::= \"a\"{2}{2} \"b\"?*");
        assert!(accepts(&g, "aaaa"));
        assert!(accepts(&g, "aaaabbb"));
        assert!(!accepts(&g, "aaa"));
    }

    #[test]
    fn escapes_and_classes() {
        let g = gbnf(r#"root ::= "\x41\u00e9\U0001F600\n\t\r\\\"\[\]" [^"\\\x00-\x1F] [\-a] [a-] [z-a]?"#);
        single_char_terminals(r#"root ::= "\x41\u00e9\U0001F600\n\t\r\\\"\[\]" [^"\\\x00-\x1F] [\-a] [a-] [z-a]?"#);
        assert!(accepts(&g, "A\u{e9}\u{1F600}\n\t\r\\\"[]q--"));
        assert!(accepts(&g, "A\u{e9}\u{1F600}\n\t\r\\\"[]\u{263A}aa"));
        assert!(!accepts(&g, "A\u{e9}\u{1F600}\n\t\r\\\"[]\"--"));
        assert!(!accepts(&g, "A\u{e9}\u{1F600}\n\t\r\\\"[]\u{1}--"));
        // `[^]` is any character, `[]` none.
        let g = gbnf("root ::= [^] | \"x\" []");
        assert!(accepts(&g, "\n"));
        assert!(accepts(&g, "x"));
        assert!(!accepts(&g, "xy"));
    }

    #[test]
    fn character_level_semantics() {
        // With single-character terminals, greedy lexing is irrelevant:
        // "ab" then more letters is the [a-z]+ branch, "ab" alone either.
        let g = gbnf("root ::= (\"ab\" | [a-z]+) \"!\"");
        single_char_terminals("root ::= (\"ab\" | [a-z]+) \"!\"");
        for s in ["ab!", "abc!", "a!", "zz!"] {
            assert!(accepts(&g, s), "{s}");
        }
        assert!(!accepts(&g, "!"));
    }

    #[test]
    fn line_structure() {
        // Newlines inside parentheses, a rule continued after `|` at the end
        // of a line or at the start of the next, comments everywhere.
        let src = "# leading comment\n\nroot ::= a |\n  b # trailing\n  | c\n\na ::= (\n  \"x\"\n  \"y\" # inner\n)\nb::=\"b\"\nc ::=\n  \"c\"\n";
        let g = gbnf(src);
        for s in ["xy", "b", "c"] {
            assert!(accepts(&g, s), "{s}");
        }
        assert!(!accepts(&g, "x"));
        // Windows line endings.
        let g = gbnf("root ::= a\r\na ::= \"a\"\r\n");
        assert!(accepts(&g, "a"));
        // An empty alternative and an empty rule.
        let g = gbnf("root ::= e \"a\" | \ne ::=\n");
        assert!(accepts(&g, ""));
        assert!(accepts(&g, "a"));
    }

    #[test]
    fn fixtures_parse_and_recognize() {
        let g = gbnf(&fixture("json.gbnf"));
        single_char_terminals(&fixture("json.gbnf"));
        for s in [
            "{}",
            "{\"a\": [1, -2.5e3, true, null], \"b\": {\"c\": \"d\\\"\\u00e9\"}}",
            "{\n\"k\":\"v\"}",
        ] {
            assert!(accepts(&g, s), "{s}");
        }
        for s in ["[]", "{", "{\"a\" 1}", "{\"a\": 01}", "{ \"a\":1}x"] {
            assert!(!accepts(&g, s), "{s}");
        }
        let g = gbnf(&fixture("arithmetic.gbnf"));
        for s in ["1=1\n", "a+b*(c-1)= 7\nx=y\n"] {
            assert!(accepts(&g, s), "{s}");
        }
        for s in ["1=1", "=1\n", "1+=2\n"] {
            assert!(!accepts(&g, s), "{s}");
        }
        let g = gbnf(&fixture("list.gbnf"));
        for s in ["- a\n", "- first item\n- second\n"] {
            assert!(accepts(&g, s), "{s}");
        }
        for s in ["", "- \n", "- a", "- a\u{2028}b\n", "* a\n"] {
            assert!(!accepts(&g, s), "{s}");
        }
        let g = gbnf(&fixture("chess.gbnf"));
        for s in [
            "1. e4 e5\n2. Nf3 Nc6\n",
            "1. d4 d5\n2. c4 dxc4\n3. O-O-O Qxd8+\n",
            "1. e4 e5\n2. e8=Q Kxe8#\n",
        ] {
            assert!(accepts(&g, s), "{s}");
        }
        for s in ["1. e4 e5\n", "1. e9 e5\n2. a1 a2\n", "2. e4 e5\n3. a3 a4\n"] {
            assert!(!accepts(&g, s), "{s}");
        }
    }

    #[test]
    fn error_positions() {
        let (l, c, m) = gbnf_err("root ::= a b\na ::= \"a\"\n");
        assert_eq!((l, c), (1, 12), "{m}");
        assert!(m.contains("undefined rule \"b\""), "{m}");
        let (l, c, m) = gbnf_err("root ::= \"abc\n");
        assert_eq!((l, c), (1, 10), "{m}");
        assert!(m.contains("unterminated"), "{m}");
        let (l, c, m) = gbnf_err("root ::= [abc\n");
        assert_eq!((l, c), (1, 10), "{m}");
        assert!(m.contains("unterminated"), "{m}");
        let (l, c, m) = gbnf_err("root ::= (\"a\" \"b\"\n");
        assert_eq!((l, c), (1, 10), "{m}");
        assert!(m.contains("'('"), "{m}");
        let (l, c, m) = gbnf_err("root ::= \"a\"\nx ::= (\"a\" ]\n");
        assert_eq!((l, c), (2, 12), "{m}");
        assert!(m.contains("')'"), "{m}");
        let (l, c, m) = gbnf_err("root ::= \"a\" )\n");
        assert_eq!((l, c), (1, 14), "{m}");
        let (l, c, m) = gbnf_err("root ::= \"a\"\nroot = \"b\"\n");
        assert_eq!((l, c), (2, 6), "{m}");
        assert!(m.contains("'='"), "{m}");
        let (l, c, m) = gbnf_err("root ::= * \"a\"\n");
        assert_eq!((l, c), (1, 10), "{m}");
        assert!(m.contains("before"), "{m}");
        let (l, c, m) = gbnf_err("root ::= \"a\"{x}\n");
        assert_eq!((l, c), (1, 14), "{m}");
        let (l, c, m) = gbnf_err("root ::= \"a\"{3,1}\n");
        assert_eq!((l, c), (1, 13), "{m}");
        let (l, c, m) = gbnf_err("root ::= \"\\q\"\n");
        assert_eq!((l, c), (1, 11), "{m}");
        assert!(m.contains("escape"), "{m}");
        let (l, c, m) = gbnf_err("root ::= \"\\x4\"\n");
        assert_eq!((l, c), (1, 11), "{m}");
        let (l, c, m) = gbnf_err("root ::= \"\\uD800\"\n");
        assert_eq!((l, c), (1, 11), "{m}");
        let (l, _, m) = gbnf_err("root ::= \"a\"\nroot ::= \"b\"\n");
        assert_eq!(l, 2);
        assert!(m.contains("more than once"), "{m}");
        let (l, _, m) = gbnf_err("a ::= \"a\"\n");
        assert_eq!(l, 0);
        assert!(m.contains("root"), "{m}");
        let (l, c, m) = gbnf_err("\n\n  ::= \"a\"\n");
        assert_eq!((l, c), (3, 3), "{m}");
        match parse_gbnf("x ::= \"b\"\nroot ::= root \"a\"\n", &lim()) {
            Err(Error::Grammar { line: 2, column: 1, message }) => assert!(message.contains("empty"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn limits() {
        let mut l = lim();
        l.max_nesting = 5;
        let deep = format!("root ::= {}\"a\"{}\n", "(".repeat(6), ")".repeat(6));
        match parse_gbnf(&deep, &l) {
            Err(Error::Grammar {
                line: 1,
                column: 15,
                message,
            }) => assert!(message.contains("nested"), "{message}"),
            other => panic!("{other:?}"),
        }
        let ok = format!("root ::= {}\"a\"{}\n", "(".repeat(5), ")".repeat(5));
        parse_gbnf(&ok, &l).unwrap();
        let deep = format!("root ::= {}\"a\"{}\n", "(".repeat(200), ")".repeat(200));
        parse_gbnf(&deep, &lim()).unwrap();
        assert!(parse_gbnf(&format!("root ::= {}\"a\"{}\n", "(".repeat(100_000), ")".repeat(100_000)), &lim()).is_err());
        let mut l = lim();
        l.max_rules = 10;
        match parse_gbnf("root ::= \"a\"{0,20}\n", &l) {
            Err(Error::Grammar {
                line: 1,
                column: 13,
                message,
            }) => assert!(message.contains("max_rules"), "{message}"),
            other => panic!("{other:?}"),
        }
        match parse_gbnf("root ::= \"a\"{99999999999}\n", &lim()) {
            Err(Error::Grammar { message, .. }) => assert!(message.contains("too large"), "{message}"),
            other => panic!("{other:?}"),
        }
        // Many postfix operators in a row stay iterative.
        let src = format!("root ::= \"a\"{}\n", "?".repeat(2_000));
        let g = parse_gbnf(&src, &lim()).unwrap();
        assert!(accepts(&g, "a"));
    }

    #[test]
    fn custom_start() {
        let g = parse_gbnf_with_start("expr ::= [0-9]+\n", "expr", &lim()).unwrap();
        assert!(accepts(&g, "42"));
    }
}
