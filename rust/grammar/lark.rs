//! Lark grammar front end: Lark's EBNF dialect compiled to a [`Grammar`]
//! (source text to Grammar; the EBNF desugaring and limits it shares with
//! GBNF live in `ebnf.rs`).
//!
//! Supported syntax (everything Lark has that matters for *recognition*):
//!
//! - rules `name: expansion | expansion ...` (lowercase names; the tree
//!   shaping modifiers `?name`, `!name`, `?!name`, priorities `name.2` and
//!   aliases `-> name` are accepted and ignored); a definition continues on
//!   the next line when that line starts with `|`, and anywhere inside
//!   `(...)` / `[...]`; a backslash at the end of a line continues it;
//! - terminals `NAME: expr` (uppercase; priorities `NAME.2` ignored);
//! - `|`, `*`, `+`, `?`, `[...]` (optional), `(...)`, `item ~ n`,
//!   `item ~ n..m`; an empty alternative (`a: | b`, `a:`) is epsilon, as
//!   in Lark;
//! - string literals `"..."` with Lark's escapes (`\\`, `\"`, `\n`, `\t`,
//!   `\r`, `\f`, `\xHH`, `\uHHHH`, `\UHHHHHHHH`; any other `\c` stays a
//!   backslash followed by `c`, as in Lark) and the `i` flag;
//! - regex literals `/.../flags` (flags `imsxu`; see below), literal ranges
//!   `"a".."z"`;
//! - `%ignore` (a terminal name, literal, regex or any terminal
//!   expression), `%import common.NAME [-> ALIAS]`,
//!   `%import common (A, B, ...)`, `%override` and `%extend` of definitions
//!   in the same grammar; comments `//` and `#`.
//!
//! Not supported (a clear error names the line): `%declare` (needs a
//! custom lexer), rule templates `name{x}`, imports from modules other than
//! `common`.
//!
//! Terminals are regular: a terminal definition (literals, regexes,
//! references to other terminals, ranges and the EBNF operators) compiles
//! into one Rust regex. A recursive terminal definition is an error, and so
//! is a terminal used by a rule or `%ignore` that matches the empty string.
//!
//! Python `re` → Rust `regex` differences handled in `/.../` literals:
//! `\Z` → `\z`; `\<`, `\>` are literal characters (Rust reads them as word
//! boundaries); octal escapes `\0`, `\012` → `\x{..}`; `[\b]` is a
//! backspace; inside a class `[` is literal and `&&`, `~~`, `--` are not
//! set operations; `{,n}` → `{0,n}`; a `{` that does not start a valid
//! repetition and a lone `}` are literals; `(?#...)` comments are removed.
//! Look-ahead / look-behind, backreferences (`\1`, `(?P=name)`), atomic
//! groups and conditionals have no Rust equivalent and are rejected with an
//! error. A terminal with a lazy quantifier ends at its first complete match
//! (see the lexing semantics in the module docs); in a terminal defined as
//! an alternation, only the alternatives with one do (the greedy ones and
//! the lazy ones become two terminals).
//! The one common idiom that relies on laziness — a quoted string built
//! from `common._STRING_INNER` / `_STRING_ESC_INNER` between two copies of
//! a one-character delimiter, as in `ESCAPED_STRING` — is recognised and
//! compiled exactly (the body then excludes an unescaped delimiter).
//! `$`/`^` keep Rust's meaning (end/start of the lexeme).

use super::ebnf::{class_char, gerr, matches_empty, Emitter, LineIndex, Pos};
use super::{Grammar, GrammarLimits, Sym};
use crate::error::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// Parse a Lark grammar whose start rule is `start`.
pub fn parse_lark(text: &str, limits: &GrammarLimits) -> Result<Grammar> {
    parse_lark_with_start(text, "start", limits)
}

/// Parse a Lark grammar with an explicit start rule.
pub fn parse_lark_with_start(text: &str, start: &str, limits: &GrammarLimits) -> Result<Grammar> {
    let toks = lex(text)?;
    let items = Parser {
        toks,
        i: 0,
        depth: 0,
        max_nesting: limits.max_nesting,
    }
    .parse_file()?;
    let defs = Definitions::collect(items)?;
    defs.check_names()?;
    // Only terminals reachable from rules and %ignore are compiled: an
    // unused helper may use regex syntax Rust lacks without harm.
    let mut used: Vec<String> = Vec::new();
    for (_, _, body) in &defs.rules {
        collect_terminal_names(body, &mut used);
    }
    for (_, body) in &defs.ignores {
        collect_terminal_names(body, &mut used);
    }
    let compiled = compile_terminals(&defs.terms, &used)?;
    let mut rc = RuleCompiler {
        em: Emitter::new(limits),
        defs: &defs,
        compiled: &compiled,
        term_ids: HashMap::new(),
        term_syms: HashMap::new(),
    };
    for (name, pos, body) in &defs.rules {
        rc.em.at = *pos;
        let lhs = rc.em.b.nonterminal(name);
        for alt in rc.alts(body)? {
            rc.em.rule(lhs, alt)?;
        }
    }
    for (pos, body) in &defs.ignores {
        rc.em.at = *pos;
        let ts = match body {
            Expr::Name(n, p) => rc.named_terminals(n, *p)?,
            e => {
                let re = TermCtx {
                    defs: &defs.terms,
                    done: &compiled,
                }
                .re_of(e)?;
                vec![rc.anon_terminal(&format!("%ignore@{}:{}", pos.line, pos.col), &re.s, *pos)?]
            }
        };
        for t in ts {
            rc.em.b.ignore(t);
        }
    }
    if !defs.rules.iter().any(|(n, _, _)| n == start) {
        return Err(gerr(Pos::default(), format!("the start rule {start:?} is not defined")));
    }
    rc.em.b.finish(start).map_err(|e| super::locate_empty_language(e, text, start))
}

// ---------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tk {
    Name(String),
    /// Value (escapes resolved) and the case-insensitive flag.
    Str(String, bool),
    /// Pattern as written and its flags.
    Re(String, String),
    Num(i64),
    Punct(char),
    DotDot,
    Arrow,
    Directive(String),
    Nl,
    Eof,
}

#[derive(Debug, Clone)]
struct Tok {
    k: Tk,
    pos: Pos,
}

fn describe(k: &Tk) -> String {
    match k {
        Tk::Name(n) => format!("name {n:?}"),
        Tk::Str(s, _) => format!("string {s:?}"),
        Tk::Re(p, _) => format!("regex /{p}/"),
        Tk::Num(n) => format!("number {n}"),
        Tk::Punct(c) => format!("{c:?}"),
        Tk::DotDot => "'..'".into(),
        Tk::Arrow => "'->'".into(),
        Tk::Directive(d) => format!("%{d}"),
        Tk::Nl => "end of line".into(),
        Tk::Eof => "end of grammar".into(),
    }
}

fn hex_escape(cs: &[char], j: usize, n: usize, pos: Pos) -> Result<char> {
    let digits: String = cs.get(j..j + n).map(|s| s.iter().collect()).unwrap_or_default();
    if digits.chars().count() != n || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(gerr(pos, format!("escape needs exactly {n} hex digits")));
    }
    let v = u32::from_str_radix(&digits, 16).map_err(|_| gerr(pos, "invalid hex escape"))?;
    char::from_u32(v).ok_or_else(|| gerr(pos, format!("escape \\x{{{v:X}}} is not a Unicode scalar value")))
}

fn lex(text: &str) -> Result<Vec<Tok>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let cs: Vec<char> = text.chars().collect();
    let li = LineIndex::new(&cs);
    let n = cs.len();
    let mut toks: Vec<Tok> = Vec::new();
    let mut i = 0;
    let at = |j: usize| cs.get(j).copied().unwrap_or('\0');
    while i < n {
        let c = cs[i];
        let pos = li.pos(i);
        macro_rules! push {
            ($k:expr) => {
                toks.push(Tok { k: $k, pos })
            };
        }
        match c {
            ' ' | '\t' | '\x0c' => i += 1,
            '\r' | '\n' => {
                if !matches!(toks.last(), Some(Tok { k: Tk::Nl, .. }) | None) {
                    push!(Tk::Nl);
                }
                i += 1;
            }
            '\\' => {
                // Line continuation: backslash, spaces, newline.
                let mut j = i + 1;
                while at(j) == ' ' || at(j) == '\t' {
                    j += 1;
                }
                if at(j) == '\r' {
                    j += 1;
                }
                if at(j) != '\n' {
                    return Err(gerr(pos, "unexpected '\\' (only allowed at the end of a line, to continue it)"));
                }
                i = j + 1;
            }
            '#' => {
                while i < n && cs[i] != '\n' {
                    i += 1;
                }
            }
            '/' if at(i + 1) == '/' => {
                while i < n && cs[i] != '\n' {
                    i += 1;
                }
            }
            '/' => {
                let mut j = i + 1;
                loop {
                    if j >= n {
                        return Err(gerr(pos, "unterminated regular expression (missing closing '/')"));
                    }
                    match cs[j] {
                        '\\' => j += 2,
                        '/' => break,
                        _ => j += 1,
                    }
                }
                let pattern: String = cs[i + 1..j].iter().collect();
                j += 1;
                let fstart = j;
                while j < n && "imslux".contains(cs[j]) {
                    j += 1;
                }
                let flags: String = cs[fstart..j].iter().collect();
                if pattern.contains('\n') && !flags.contains('x') {
                    return Err(gerr(
                        pos,
                        "unterminated regular expression (a regex may span several lines only with the x flag)",
                    ));
                }
                push!(Tk::Re(pattern, flags));
                i = j;
            }
            '"' => {
                let mut j = i + 1;
                let mut s = String::new();
                loop {
                    if j >= n || cs[j] == '\n' || cs[j] == '\r' {
                        return Err(gerr(pos, "unterminated string literal"));
                    }
                    match cs[j] {
                        '"' => break,
                        '\\' => {
                            let epos = li.pos(j);
                            let d = at(j + 1);
                            if j + 1 >= n || d == '\n' || d == '\r' {
                                return Err(gerr(pos, "unterminated string literal"));
                            }
                            match d {
                                '\\' => s.push('\\'),
                                '"' => s.push('"'),
                                'n' => s.push('\n'),
                                't' => s.push('\t'),
                                'r' => s.push('\r'),
                                'f' => s.push('\x0c'),
                                'x' | 'u' | 'U' => {
                                    let len = match d {
                                        'x' => 2,
                                        'u' => 4,
                                        _ => 8,
                                    };
                                    s.push(hex_escape(&cs, j + 2, len, epos)?);
                                    j += len;
                                }
                                _ => {
                                    // Lark keeps unknown escapes verbatim.
                                    s.push('\\');
                                    s.push(d);
                                }
                            }
                            j += 2;
                        }
                        ch => {
                            s.push(ch);
                            j += 1;
                        }
                    }
                }
                j += 1;
                let icase = at(j) == 'i';
                if icase {
                    j += 1;
                }
                push!(Tk::Str(s, icase));
                i = j;
            }
            '%' => {
                let mut j = i + 1;
                while at(j).is_ascii_alphabetic() {
                    j += 1;
                }
                push!(Tk::Directive(cs[i + 1..j].iter().collect()));
                i = j;
            }
            '-' if at(i + 1) == '>' => {
                push!(Tk::Arrow);
                i += 2;
            }
            '.' if at(i + 1) == '.' => {
                push!(Tk::DotDot);
                i += 2;
            }
            c if c.is_ascii_digit() || (c == '-' && at(i + 1).is_ascii_digit()) => {
                let mut j = i + 1;
                while at(j).is_ascii_digit() {
                    j += 1;
                }
                let s: String = cs[i..j].iter().collect();
                let v: i64 = s.parse().map_err(|_| gerr(pos, format!("number {s} is too large")))?;
                push!(Tk::Num(v));
                i = j;
            }
            ':' | '|' | '(' | ')' | '[' | ']' | '{' | '}' | ',' | '*' | '+' | '?' | '~' | '.' | '!' => {
                push!(Tk::Punct(c));
                i += 1;
            }
            c if c == '_' || c.is_ascii_alphabetic() => {
                let mut j = i + 1;
                while at(j) == '_' || at(j).is_ascii_alphanumeric() {
                    j += 1;
                }
                push!(Tk::Name(cs[i..j].iter().collect()));
                i = j;
            }
            c => return Err(gerr(pos, format!("unexpected character {c:?}"))),
        }
    }
    let pos = li.pos(n);
    toks.push(Tok { k: Tk::Eof, pos });
    Ok(toks)
}

// ---------------------------------------------------------------------------
// AST and parser

#[derive(Debug, Clone)]
enum Expr {
    Name(String, Pos),
    Str(String, bool, Pos),
    Regex(String, String, Pos),
    Range(char, char, Pos),
    Seq(Vec<Expr>),
    Alt(Vec<Expr>),
    Repeat {
        inner: Box<Expr>,
        min: u64,
        max: Option<u64>,
        pos: Pos,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameKind {
    Rule,
    Term,
}

fn name_kind(name: &str, pos: Pos) -> Result<NameKind> {
    let rest = name.strip_prefix('_').unwrap_or(name);
    let bad = || {
        gerr(
            pos,
            format!("invalid name {name:?}: rule names are lowercase (`_?[a-z][_a-z0-9]*`), terminal names uppercase (`_?[A-Z][_A-Z0-9]*`)"),
        )
    };
    let first = rest.chars().next().ok_or_else(bad)?;
    if first.is_ascii_lowercase() && rest.chars().all(|c| c == '_' || c.is_ascii_lowercase() || c.is_ascii_digit()) {
        Ok(NameKind::Rule)
    } else if first.is_ascii_uppercase() && rest.chars().all(|c| c == '_' || c.is_ascii_uppercase() || c.is_ascii_digit()) {
        Ok(NameKind::Term)
    } else {
        Err(bad())
    }
}

#[derive(Debug)]
enum Item {
    Rule { name: String, pos: Pos, body: Expr },
    Term { name: String, pos: Pos, body: Expr },
    Ignore { pos: Pos, body: Expr },
    Import { pos: Pos, names: Vec<(String, String, Pos)> },
    Override(Box<Item>),
    Extend(Box<Item>),
}

struct Parser {
    toks: Vec<Tok>,
    i: usize,
    /// Bracket nesting; newlines are insignificant inside brackets.
    depth: usize,
    max_nesting: usize,
}

impl Parser {
    fn peek(&mut self) -> &Tok {
        if self.depth > 0 {
            while self.toks[self.i].k == Tk::Nl {
                self.i += 1;
            }
        }
        &self.toks[self.i]
    }

    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if t.k != Tk::Eof {
            self.i += 1;
        }
        t
    }

    fn is_punct(&mut self, c: char) -> bool {
        self.peek().k == Tk::Punct(c)
    }

    fn unexpected(&mut self, expected: &str) -> Error {
        let t = self.peek().clone();
        gerr(t.pos, format!("expected {expected}, found {}", describe(&t.k)))
    }

    fn expect_punct(&mut self, c: char, what: &str) -> Result<Pos> {
        if self.is_punct(c) {
            Ok(self.bump().pos)
        } else {
            Err(self.unexpected(what))
        }
    }

    fn parse_file(mut self) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        loop {
            while self.toks[self.i].k == Tk::Nl {
                self.i += 1;
            }
            let t = self.peek().clone();
            let item = match &t.k {
                Tk::Eof => break,
                Tk::Directive(d) => {
                    self.bump();
                    self.statement(d, t.pos)?
                }
                Tk::Name(_) | Tk::Punct('?') | Tk::Punct('!') => self.definition()?,
                _ => return Err(self.unexpected("a rule or terminal definition or a %directive")),
            };
            items.push(item);
            if !matches!(self.peek().k, Tk::Nl | Tk::Eof) {
                return Err(self.unexpected("end of line"));
            }
        }
        Ok(items)
    }

    fn number(&mut self, what: &str) -> Result<i64> {
        let plus = self.is_punct('+');
        if plus {
            self.bump();
        }
        match self.peek().k {
            Tk::Num(v) if !(plus && v < 0) => {
                self.bump();
                Ok(v)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn definition(&mut self) -> Result<Item> {
        let mut modifiers = false;
        while self.is_punct('?') || self.is_punct('!') {
            self.bump();
            modifiers = true;
        }
        let t = self.bump();
        let Tk::Name(name) = t.k else {
            return Err(gerr(t.pos, format!("expected a rule name, found {}", describe(&t.k))));
        };
        let kind = name_kind(&name, t.pos)?;
        if name.starts_with("__") {
            return Err(gerr(t.pos, format!("names starting with '__' are reserved ({name:?})")));
        }
        if modifiers && kind == NameKind::Term {
            return Err(gerr(
                t.pos,
                format!("the modifiers '?' and '!' apply to rules only, not to terminal {name}"),
            ));
        }
        if self.is_punct('{') {
            return Err(gerr(self.peek().pos, "rule templates (`name{param}`) are not supported"));
        }
        if self.is_punct('.') {
            self.bump();
            self.number("a priority number after '.'")?;
        }
        self.expect_punct(':', "':' after the name being defined")?;
        let body = self.expansions()?;
        Ok(match kind {
            NameKind::Rule => Item::Rule { name, pos: t.pos, body },
            NameKind::Term => Item::Term { name, pos: t.pos, body },
        })
    }

    fn name(&mut self, what: &str) -> Result<(String, Pos)> {
        match self.peek().clone() {
            Tok { k: Tk::Name(n), pos } => {
                self.bump();
                Ok((n, pos))
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn statement(&mut self, directive: &str, pos: Pos) -> Result<Item> {
        match directive {
            "ignore" => Ok(Item::Ignore {
                pos,
                body: self.expansions()?,
            }),
            "import" => {
                let ppos = self.peek().pos;
                if self.is_punct('.') {
                    return Err(gerr(ppos, "relative imports are not supported (only `%import common.NAME`)"));
                }
                let mut path = vec![self.name("a module name after %import")?];
                while self.is_punct('.') {
                    self.bump();
                    path.push(self.name("a name after '.'")?);
                }
                let names: Vec<(String, String, Pos)> = if self.is_punct('(') {
                    self.bump();
                    self.depth += 1;
                    let mut names = vec![self.name("a name to import")?];
                    while self.is_punct(',') {
                        self.bump();
                        names.push(self.name("a name to import")?);
                    }
                    self.expect_punct(')', "')' or ','")?;
                    self.depth -= 1;
                    names.into_iter().map(|(n, p)| (n.clone(), n, p)).collect()
                } else {
                    if path.len() < 2 {
                        return Err(gerr(ppos, "expected `%import module.NAME` or `%import module (NAME, ...)`"));
                    }
                    let (n, p) = path.pop().unwrap();
                    let alias = if self.peek().k == Tk::Arrow {
                        self.bump();
                        self.name("a name after '->'")?.0
                    } else {
                        n.clone()
                    };
                    vec![(n, alias, p)]
                };
                let module: Vec<&str> = path.iter().map(|(n, _)| n.as_str()).collect();
                if module != ["common"] {
                    return Err(gerr(
                        ppos,
                        format!("cannot import from {:?}: only the `common` module is available", module.join(".")),
                    ));
                }
                Ok(Item::Import { pos, names })
            }
            "override" => Ok(Item::Override(Box::new(self.definition()?))),
            "extend" => Ok(Item::Extend(Box::new(self.definition()?))),
            "declare" => Err(gerr(pos, "%declare is not supported (declared terminals need a custom lexer)")),
            d => Err(gerr(pos, format!("unknown directive %{d}"))),
        }
    }

    fn expansions(&mut self) -> Result<Expr> {
        let mut alts = vec![self.alias()?];
        loop {
            if self.is_punct('|') {
                self.bump();
            } else if self.depth == 0 && self.toks[self.i].k == Tk::Nl && self.toks[self.i + 1].k == Tk::Punct('|') {
                self.i += 2;
            } else {
                break;
            }
            alts.push(self.alias()?);
        }
        Ok(if alts.len() == 1 { alts.pop().unwrap() } else { Expr::Alt(alts) })
    }

    fn alias(&mut self) -> Result<Expr> {
        let e = self.expansion()?;
        if self.peek().k == Tk::Arrow {
            self.bump();
            self.name("an alias name after '->'")?;
        }
        Ok(e)
    }

    fn expansion(&mut self) -> Result<Expr> {
        let mut items = Vec::new();
        while matches!(self.peek().k, Tk::Punct('(') | Tk::Punct('[') | Tk::Name(_) | Tk::Str(..) | Tk::Re(..)) {
            items.push(self.expr()?);
        }
        Ok(if items.len() == 1 { items.pop().unwrap() } else { Expr::Seq(items) })
    }

    fn expr(&mut self) -> Result<Expr> {
        let atom = self.atom()?;
        let t = self.peek().clone();
        let (min, max) = match t.k {
            Tk::Punct('*') => (0, None),
            Tk::Punct('+') => (1, None),
            Tk::Punct('?') => (0, Some(1)),
            Tk::Punct('~') => {
                self.bump();
                let lo = self.number("a repetition count after '~'")?;
                let hi = if self.peek().k == Tk::DotDot {
                    self.bump();
                    self.number("a repetition count after '..'")?
                } else {
                    lo
                };
                if lo < 0 || hi < lo {
                    return Err(gerr(t.pos, format!("bad repetition range {lo}..{hi}")));
                }
                return Ok(Expr::Repeat {
                    inner: Box::new(atom),
                    min: lo as u64,
                    max: Some(hi as u64),
                    pos: t.pos,
                });
            }
            _ => return Ok(atom),
        };
        self.bump();
        Ok(Expr::Repeat {
            inner: Box::new(atom),
            min,
            max,
            pos: t.pos,
        })
    }

    fn atom(&mut self) -> Result<Expr> {
        let t = self.bump();
        match t.k {
            Tk::Punct(open @ ('(' | '[')) => {
                self.depth += 1;
                if self.depth > self.max_nesting {
                    return Err(gerr(t.pos, format!("groups nested more than {} deep (max_nesting)", self.max_nesting)));
                }
                let inner = self.expansions()?;
                let close = if open == '(' { ')' } else { ']' };
                if !self.is_punct(close) {
                    let found = self.peek().clone();
                    return Err(gerr(
                        found.pos,
                        format!(
                            "expected {close:?} to close the {open:?} at line {}, column {}, found {}",
                            t.pos.line,
                            t.pos.col,
                            describe(&found.k)
                        ),
                    ));
                }
                self.bump();
                self.depth -= 1;
                Ok(if open == '(' {
                    inner
                } else {
                    Expr::Repeat {
                        inner: Box::new(inner),
                        min: 0,
                        max: Some(1),
                        pos: t.pos,
                    }
                })
            }
            Tk::Name(n) => {
                name_kind(&n, t.pos)?;
                if self.is_punct('{') {
                    return Err(gerr(self.peek().pos, "rule templates (`name{args}`) are not supported"));
                }
                Ok(Expr::Name(n, t.pos))
            }
            Tk::Str(s, icase) => {
                if self.peek().k == Tk::DotDot {
                    self.bump();
                    let t2 = self.bump();
                    let Tk::Str(s2, _) = t2.k else {
                        return Err(gerr(t2.pos, format!("expected a string after '..', found {}", describe(&t2.k))));
                    };
                    let one = |s: &str| {
                        let mut it = s.chars();
                        match (it.next(), it.next()) {
                            (Some(c), None) => Some(c),
                            _ => None,
                        }
                    };
                    let (Some(lo), Some(hi)) = (one(&s), one(&s2)) else {
                        return Err(gerr(t.pos, "a literal range \"a\"..\"z\" needs single characters"));
                    };
                    if lo > hi {
                        return Err(gerr(t.pos, format!("empty literal range {lo:?}..{hi:?}")));
                    }
                    return Ok(Expr::Range(lo, hi, t.pos));
                }
                Ok(Expr::Str(s, icase, t.pos))
            }
            Tk::Re(p, f) => Ok(Expr::Regex(p, f, t.pos)),
            k => Err(gerr(
                t.pos,
                format!("expected a rule, terminal, literal or group, found {}", describe(&k)),
            )),
        }
    }
}

fn collect_terminal_names(e: &Expr, out: &mut Vec<String>) {
    let _ = walk_names(e, &mut |n, _| {
        if n.trim_start_matches('_').starts_with(|c: char| c.is_ascii_uppercase()) {
            out.push(n.to_string());
        }
        Ok(())
    });
}

fn walk_names(e: &Expr, f: &mut dyn FnMut(&str, Pos) -> Result<()>) -> Result<()> {
    match e {
        Expr::Name(n, p) => f(n, *p),
        Expr::Seq(v) | Expr::Alt(v) => v.iter().try_for_each(|x| walk_names(x, f)),
        Expr::Repeat { inner, .. } => walk_names(inner, f),
        Expr::Str(..) | Expr::Regex(..) | Expr::Range(..) => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Definitions

/// Where a terminal's regex comes from.
#[derive(Debug, Clone)]
enum TermSrc {
    Expr(Expr),
    /// Precompiled (imported from `common`).
    Raw(String),
    /// `_STRING_INNER` (false) / `_STRING_ESC_INNER` (true): lazy bodies
    /// whose extent depends on the delimiter that follows.
    Lazy(bool),
}

#[derive(Debug, Clone)]
struct TermDef {
    src: TermSrc,
    pos: Pos,
    /// Textual order (for deterministic compilation).
    order: usize,
}

struct Definitions {
    rules: Vec<(String, Pos, Expr)>,
    terms: HashMap<String, TermDef>,
    ignores: Vec<(Pos, Expr)>,
    /// Every body in textual order, with whether it is a terminal context.
    bodies_in_order: Vec<(bool, Expr)>,
}

impl Definitions {
    fn collect(items: Vec<Item>) -> Result<Definitions> {
        let mut d = Definitions {
            rules: Vec::new(),
            terms: HashMap::new(),
            ignores: Vec::new(),
            bodies_in_order: Vec::new(),
        };
        let mut rule_idx: HashMap<String, usize> = HashMap::new();
        let mut later = Vec::new();
        let dup = |name: &str, pos: Pos, first: Pos| {
            gerr(
                pos,
                format!("{name} is defined more than once (first at line {}, column {})", first.line, first.col),
            )
        };
        for item in items {
            match item {
                Item::Rule { name, pos, body } => {
                    if let Some(&k) = rule_idx.get(&name) {
                        return Err(dup(&name, pos, d.rules[k].1));
                    }
                    rule_idx.insert(name.clone(), d.rules.len());
                    d.bodies_in_order.push((false, body.clone()));
                    d.rules.push((name, pos, body));
                }
                Item::Term { name, pos, body } => {
                    if let Some(first) = d.terms.get(&name) {
                        return Err(dup(&name, pos, first.pos));
                    }
                    d.bodies_in_order.push((true, body.clone()));
                    let order = d.terms.len();
                    d.terms.insert(
                        name,
                        TermDef {
                            src: TermSrc::Expr(body),
                            pos,
                            order,
                        },
                    );
                }
                Item::Ignore { pos, body } => {
                    d.bodies_in_order.push((true, body.clone()));
                    d.ignores.push((pos, body));
                }
                Item::Import { pos, names } => {
                    for (name, alias, npos) in names {
                        let Some(src) = common_terminals().get(&name) else {
                            return Err(gerr(npos, format!("the common module has no terminal {name:?}")));
                        };
                        name_kind(&alias, npos)?;
                        if let Some(first) = d.terms.get(&alias) {
                            if matches!(first.src, TermSrc::Expr(_)) || !same_src(&first.src, src) {
                                return Err(dup(&alias, npos, first.pos));
                            }
                            continue;
                        }
                        let order = d.terms.len();
                        d.terms.insert(
                            alias,
                            TermDef {
                                src: src.clone(),
                                pos,
                                order,
                            },
                        );
                    }
                }
                other @ (Item::Override(_) | Item::Extend(_)) => later.push(other),
            }
        }
        for item in later {
            let (extend, inner) = match item {
                Item::Override(b) => (false, *b),
                Item::Extend(b) => (true, *b),
                _ => unreachable!(),
            };
            let verb = if extend { "extend" } else { "override" };
            match inner {
                Item::Rule { name, pos, body } => {
                    let Some(&k) = rule_idx.get(&name) else {
                        return Err(gerr(pos, format!("cannot {verb} rule {name:?}: it is not defined")));
                    };
                    d.bodies_in_order.push((false, body.clone()));
                    let old = &mut d.rules[k].2;
                    *old = if extend { join_alts(old.clone(), body) } else { body };
                }
                Item::Term { name, pos, body } => {
                    let Some(def) = d.terms.get_mut(&name) else {
                        return Err(gerr(pos, format!("cannot {verb} terminal {name:?}: it is not defined")));
                    };
                    d.bodies_in_order.push((true, body.clone()));
                    def.src = match (&def.src, extend) {
                        (_, false) => TermSrc::Expr(body),
                        (TermSrc::Expr(old), true) => TermSrc::Expr(join_alts(old.clone(), body)),
                        _ => return Err(gerr(pos, format!("cannot extend the imported terminal {name}"))),
                    };
                    def.pos = pos;
                }
                _ => unreachable!(),
            }
        }
        Ok(d)
    }

    /// Undefined names (at their first use, in textual order) and rules
    /// used where only terminals are allowed.
    fn check_names(&self) -> Result<()> {
        let rules: HashSet<&str> = self.rules.iter().map(|(n, _, _)| n.as_str()).collect();
        for (terminal_ctx, body) in &self.bodies_in_order {
            walk_names(body, &mut |n, p| match name_kind(n, p)? {
                NameKind::Rule if *terminal_ctx => Err(gerr(
                    p,
                    format!("rule {n:?} used inside a terminal definition or %ignore (terminals may only contain terminals)"),
                )),
                NameKind::Rule if !rules.contains(n) => Err(gerr(p, format!("undefined rule {n:?}"))),
                NameKind::Term if !self.terms.contains_key(n) => Err(gerr(p, format!("undefined terminal {n:?}"))),
                _ => Ok(()),
            })?;
        }
        Ok(())
    }
}

fn same_src(a: &TermSrc, b: &TermSrc) -> bool {
    match (a, b) {
        (TermSrc::Raw(x), TermSrc::Raw(y)) => x == y,
        (TermSrc::Lazy(x), TermSrc::Lazy(y)) => x == y,
        _ => false,
    }
}

fn join_alts(a: Expr, b: Expr) -> Expr {
    let mut v = match a {
        Expr::Alt(v) => v,
        e => vec![e],
    };
    match b {
        Expr::Alt(w) => v.extend(w),
        e => v.push(e),
    }
    Expr::Alt(v)
}

// ---------------------------------------------------------------------------
// Terminal compilation (to one Rust regex each)

/// Precedence of a regex fragment: what it needs to be wrapped in before
/// it can be repeated (`Atom`) or concatenated (`Concat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prec {
    Atom,
    Concat,
    Alt,
}

#[derive(Debug, Clone)]
struct Re {
    s: String,
    p: Prec,
}

impl Re {
    fn atom(&self) -> String {
        if self.p == Prec::Atom {
            self.s.clone()
        } else {
            format!("(?:{})", self.s)
        }
    }

    fn piece(&self) -> String {
        if self.p == Prec::Alt {
            format!("(?:{})", self.s)
        } else {
            self.s.clone()
        }
    }
}

fn literal_re(s: &str, icase: bool) -> Re {
    let esc = regex_syntax::escape(s);
    if icase && !s.is_empty() {
        return Re {
            s: format!("(?i:{esc})"),
            p: Prec::Atom,
        };
    }
    Re {
        s: esc,
        p: if s.chars().count() == 1 { Prec::Atom } else { Prec::Concat },
    }
}

/// The delimiter-aware body of a lazy string idiom.
fn lazy_body(escaped: bool, delim: Option<char>) -> Re {
    let d = delim.map(class_char).unwrap_or_default();
    let s = if escaped {
        format!("(?:[^{d}\\\\\\n]|\\\\.)*")
    } else {
        format!("[^{d}\\n]*")
    };
    Re { s, p: Prec::Concat }
}

/// The position of the `off`-th character of a pattern starting one column
/// after `start` (regex literals: after the opening `/`).
fn offset_pos(start: Pos, pattern: &str, off: usize) -> Pos {
    let mut p = Pos {
        line: start.line,
        col: start.col + 1,
    };
    for c in pattern.chars().take(off) {
        if c == '\n' {
            p = Pos { line: p.line + 1, col: 1 };
        } else {
            p.col += 1;
        }
    }
    p
}

fn regex_literal_re(pattern: &str, flags: &str, pos: Pos) -> Result<Re> {
    if flags.contains('l') {
        return Err(gerr(pos, "the regex flag 'l' (locale) is not supported"));
    }
    let leading_x = {
        let rest = pattern.strip_prefix("(?").unwrap_or("");
        let fl: String = rest.chars().take_while(|c| c.is_ascii_alphabetic() || *c == '-').collect();
        rest[fl.len()..].starts_with(')') && fl.split('-').next().unwrap_or("").contains('x')
    };
    let verbose = flags.contains('x') || leading_x;
    let translated = translate_python_regex(pattern, verbose).map_err(|(off, msg)| gerr(offset_pos(pos, pattern, off), msg))?;
    if let Err(e) = regex_syntax::ParserBuilder::new().build().parse(&translated) {
        let (msg, off) = match &e {
            regex_syntax::Error::Parse(x) => (x.kind().to_string(), x.span().start.offset),
            regex_syntax::Error::Translate(x) => (x.kind().to_string(), x.span().start.offset),
            other => (other.to_string(), 0),
        };
        let at = if translated == pattern {
            offset_pos(pos, pattern, pattern.get(..off).map_or(0, |p| p.chars().count()))
        } else {
            pos
        };
        return Err(gerr(at, format!("invalid regular expression /{pattern}/: {msg}")));
    }
    let inline: String = flags.chars().filter(|c| "imsx".contains(*c)).collect();
    let nl = if verbose { "\n" } else { "" };
    Ok(if !inline.is_empty() {
        Re {
            s: format!("(?{inline}:{translated}{nl})"),
            p: Prec::Atom,
        }
    } else if verbose {
        Re {
            s: format!("(?:{translated}{nl})"),
            p: Prec::Atom,
        }
    } else {
        Re { s: translated, p: Prec::Alt }
    })
}

/// Translate Python `re` syntax into Rust `regex` syntax (see the module
/// docs for the differences handled). Errors carry a char offset.
fn translate_python_regex(p: &str, verbose: bool) -> std::result::Result<String, (usize, String)> {
    let cs: Vec<char> = p.chars().collect();
    let n = cs.len();
    let at = |j: usize| cs.get(j).copied().unwrap_or('\0');
    let mut out = String::with_capacity(p.len() + 8);
    let mut i = 0;
    let mut in_class = false;
    let mut class_body_start = 0;
    let is_oct = |c: char| ('0'..='7').contains(&c);
    let push_cp = |out: &mut String, v: u32| out.push_str(&format!("\\x{{{v:X}}}"));
    while i < n {
        let c = cs[i];
        if c == '\\' {
            if i + 1 >= n {
                return Err((i, "regex ends with a lone backslash".into()));
            }
            let d = cs[i + 1];
            match d {
                'Z' if !in_class => out.push_str("\\z"),
                'b' if in_class => out.push_str("\\x{8}"),
                '<' | '>' => out.push(d),
                '0' => {
                    let mut j = i + 2;
                    let mut v = 0u32;
                    while j < i + 4 && is_oct(at(j)) {
                        v = v * 8 + at(j).to_digit(8).unwrap();
                        j += 1;
                    }
                    push_cp(&mut out, v);
                    i = j;
                    continue;
                }
                '1'..='9' => {
                    if is_oct(d) && is_oct(at(i + 2)) && is_oct(at(i + 3)) {
                        let v = (d.to_digit(8).unwrap() * 8 + at(i + 2).to_digit(8).unwrap()) * 8 + at(i + 3).to_digit(8).unwrap();
                        if v > 0o377 {
                            return Err((i, "octal escape out of range".into()));
                        }
                        push_cp(&mut out, v);
                        i += 4;
                        continue;
                    }
                    return Err((i, "backreferences (\\1, ...) are not supported".into()));
                }
                'x' | 'u' | 'U' => {
                    let len = match d {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let digits: String = cs[(i + 2).min(n)..(i + 2 + len).min(n)].iter().collect();
                    if digits.len() != len || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
                        return Err((i, format!("\\{d} needs exactly {len} hex digits")));
                    }
                    let v = u32::from_str_radix(&digits, 16).unwrap();
                    if char::from_u32(v).is_none() {
                        return Err((i, format!("\\{d}{digits} is not a Unicode scalar value")));
                    }
                    push_cp(&mut out, v);
                    i += 2 + len;
                    continue;
                }
                'N' => return Err((i, "named character escapes (\\N{...}) are not supported".into())),
                d if !d.is_ascii() => out.push_str(&regex_syntax::escape(&d.to_string())),
                d => {
                    out.push('\\');
                    out.push(d);
                }
            }
            i += 2;
            continue;
        }
        if in_class {
            match c {
                ']' if i > class_body_start => in_class = false,
                // Rust's verbose mode skips whitespace and `#` inside
                // classes too; Python's does not.
                c if verbose && (c.is_whitespace() || c == '#') => {
                    push_cp(&mut out, c as u32);
                    i += 1;
                    continue;
                }
                '[' => {
                    out.push_str("\\[");
                    i += 1;
                    continue;
                }
                '&' | '~' | '-' if at(i + 1) == c => {
                    out.push(c);
                    out.push('\\');
                    out.push(c);
                    i += 2;
                    continue;
                }
                _ => {}
            }
            out.push(c);
            i += 1;
            continue;
        }
        match c {
            '#' if verbose => {
                while i < n && cs[i] != '\n' {
                    out.push(cs[i]);
                    i += 1;
                }
                continue;
            }
            '[' => {
                in_class = true;
                out.push('[');
                i += 1;
                if at(i) == '^' {
                    out.push('^');
                    i += 1;
                }
                class_body_start = i;
                continue;
            }
            '(' if at(i + 1) == '?' => {
                let e = at(i + 2);
                let e2 = at(i + 3);
                match e {
                    '#' => {
                        // Python comment group: drop it.
                        let mut j = i + 3;
                        while j < n && cs[j] != ')' {
                            j += 1;
                        }
                        if j >= n {
                            return Err((i, "unterminated (?#...) comment".into()));
                        }
                        i = j + 1;
                        continue;
                    }
                    '=' | '!' => return Err((i, "look-ahead assertions are not supported".into())),
                    '<' if e2 == '=' || e2 == '!' => return Err((i, "look-behind assertions are not supported".into())),
                    'P' if e2 == '=' => return Err((i, "backreferences ((?P=name)) are not supported".into())),
                    '>' => return Err((i, "atomic groups are not supported".into())),
                    '(' => return Err((i, "conditional patterns are not supported".into())),
                    _ => {}
                }
                out.push(c);
                i += 1;
                continue;
            }
            '{' => {
                // A Python repetition is `{m}`, `{m,}`, `{,n}`, `{m,n}`, `{,}`;
                // any other `{` is a literal.
                let mut j = i + 1;
                let lo_s = j;
                while at(j).is_ascii_digit() {
                    j += 1;
                }
                let lo: String = cs[lo_s..j].iter().collect();
                let mut hi: Option<String> = None;
                if at(j) == ',' {
                    j += 1;
                    let hs = j;
                    while at(j).is_ascii_digit() {
                        j += 1;
                    }
                    hi = Some(cs[hs..j].iter().collect());
                }
                if at(j) == '}' && !(lo.is_empty() && hi.is_none()) {
                    let lo_v = if lo.is_empty() { "0".to_string() } else { lo };
                    match hi {
                        None => out.push_str(&format!("{{{lo_v}}}")),
                        Some(h) if h.is_empty() => out.push_str(&format!("{{{lo_v},}}")),
                        Some(h) => out.push_str(&format!("{{{lo_v},{h}}}")),
                    }
                    i = j + 1;
                } else {
                    out.push_str("\\{");
                    i += 1;
                }
                continue;
            }
            '}' => {
                out.push_str("\\}");
                i += 1;
                continue;
            }
            _ => {}
        }
        out.push(c);
        i += 1;
    }
    if in_class {
        return Err((n, "unterminated character class".into()));
    }
    Ok(out)
}

/// Compiles terminal expressions given already compiled dependencies.
struct TermCtx<'a> {
    defs: &'a HashMap<String, TermDef>,
    done: &'a HashMap<String, Re>,
}

impl TermCtx<'_> {
    fn lazy(&self, e: &Expr) -> Option<bool> {
        match e {
            Expr::Name(n, _) => match self.defs.get(n).map(|d| &d.src) {
                Some(TermSrc::Lazy(esc)) => Some(*esc),
                _ => None,
            },
            _ => None,
        }
    }

    fn re_of(&self, e: &Expr) -> Result<Re> {
        Ok(match e {
            Expr::Name(n, p) => match self.defs.get(n).map(|d| &d.src) {
                Some(TermSrc::Raw(s)) => Re { s: s.clone(), p: Prec::Alt },
                Some(TermSrc::Lazy(esc)) => lazy_body(*esc, None),
                Some(TermSrc::Expr(_)) => self
                    .done
                    .get(n)
                    .cloned()
                    .ok_or_else(|| gerr(*p, format!("terminal {n} is not compiled")))?,
                None => return Err(gerr(*p, format!("undefined terminal {n:?}"))),
            },
            Expr::Str(s, icase, _) => literal_re(s, *icase),
            Expr::Regex(p, f, pos) => regex_literal_re(p, f, *pos)?,
            Expr::Range(lo, hi, _) => Re {
                s: format!("[{}-{}]", class_char(*lo), class_char(*hi)),
                p: Prec::Atom,
            },
            Expr::Seq(v) => {
                let mut parts: Vec<Re> = Vec::new();
                let mut k = 0;
                while k < v.len() {
                    // `"q" _STRING_ESC_INNER "q"`: the body stops at the first
                    // unescaped delimiter, as Lark's lazy regex does.
                    if let (Some(esc), Some(Expr::Str(d, false, _))) = (self.lazy(&v[k]), v.get(k + 1)) {
                        if d.chars().count() == 1 {
                            parts.push(lazy_body(esc, d.chars().next()));
                            k += 1;
                            continue;
                        }
                    }
                    parts.push(self.re_of(&v[k])?);
                    k += 1;
                }
                match parts.len() {
                    0 => Re {
                        s: String::new(),
                        p: Prec::Concat,
                    },
                    1 => parts.pop().unwrap(),
                    _ => Re {
                        s: parts.iter().map(Re::piece).collect(),
                        p: Prec::Concat,
                    },
                }
            }
            Expr::Alt(v) => {
                let parts = v.iter().map(|x| self.re_of(x)).collect::<Result<Vec<_>>>()?;
                if parts.len() == 1 {
                    parts.into_iter().next().unwrap()
                } else {
                    Re {
                        s: parts.iter().map(|r| r.s.as_str()).collect::<Vec<_>>().join("|"),
                        p: Prec::Alt,
                    }
                }
            }
            Expr::Repeat { inner, min, max, .. } => {
                let r = self.re_of(inner)?;
                if r.s.is_empty() {
                    return Ok(r);
                }
                let a = r.atom();
                let op = match (min, max) {
                    (0, None) => "*".to_string(),
                    (1, None) => "+".to_string(),
                    (0, Some(1)) => "?".to_string(),
                    (m, None) => format!("{{{m},}}"),
                    (m, Some(x)) if m == x => format!("{{{m}}}"),
                    (m, Some(x)) => format!("{{{m},{x}}}"),
                };
                Re {
                    s: format!("{a}{op}"),
                    p: Prec::Concat,
                }
            }
        })
    }
}

/// Compile every terminal defined by an expression, dependencies first
/// (an explicit-stack DFS, so long reference chains cannot overflow the
/// stack); a cycle is an error.
fn compile_terminals(defs: &HashMap<String, TermDef>, roots: &[String]) -> Result<HashMap<String, Re>> {
    let mut names: Vec<&String> = roots
        .iter()
        .filter(|n| matches!(defs.get(*n).map(|d| &d.src), Some(TermSrc::Expr(_))))
        .collect();
    names.sort_by_key(|n| defs[*n].order);
    names.dedup();
    let deps_of = |n: &str| -> Result<Vec<String>> {
        let mut out = Vec::new();
        if let TermSrc::Expr(e) = &defs[n].src {
            walk_names(e, &mut |m, _| {
                if matches!(defs.get(m).map(|d| &d.src), Some(TermSrc::Expr(_))) {
                    out.push(m.to_string());
                }
                Ok(())
            })?;
        }
        Ok(out)
    };
    let mut done: HashMap<String, Re> = HashMap::new();
    let mut on_stack: HashSet<String> = HashSet::new();
    for root in names {
        if done.contains_key(root.as_str()) {
            continue;
        }
        let mut stack: Vec<(String, Vec<String>, usize)> = vec![(root.clone(), deps_of(root)?, 0)];
        on_stack.insert(root.clone());
        while let Some((name, deps, k)) = stack.last_mut() {
            if *k < deps.len() {
                let d = deps[*k].clone();
                *k += 1;
                if done.contains_key(&d) {
                    continue;
                }
                if on_stack.contains(&d) {
                    let mut cycle: Vec<&str> = stack.iter().map(|(n, _, _)| n.as_str()).skip_while(|n| *n != d).collect();
                    cycle.push(&d);
                    let first = &defs[cycle[0]];
                    return Err(gerr(
                        first.pos,
                        format!(
                            "terminal {} is recursive ({}); terminals must be regular — use a rule (lowercase name) instead",
                            cycle[0],
                            cycle.join(" -> ")
                        ),
                    ));
                }
                let dd = deps_of(&d)?;
                on_stack.insert(d.clone());
                stack.push((d, dd, 0));
                continue;
            }
            let name = name.clone();
            let def = &defs[&name];
            let TermSrc::Expr(e) = &def.src else { unreachable!() };
            let re = TermCtx { defs, done: &done }.re_of(e)?;
            if let Err(err) = regex_syntax::ParserBuilder::new().build().parse(&re.s) {
                return Err(gerr(def.pos, format!("terminal {name} compiles to an invalid regex: {err}")));
            }
            on_stack.remove(&name);
            done.insert(name, re);
            stack.pop();
        }
    }
    Ok(done)
}

/// Lark's `common` terminals, written in Lark syntax and compiled once.
const COMMON_LARK: &str = r#"
DIGIT: "0".."9"
HEXDIGIT: "a".."f" | "A".."F" | DIGIT
INT: DIGIT+
SIGNED_INT: ["+" | "-"] INT
DECIMAL: INT "." INT? | "." INT
_EXP: ("e" | "E") SIGNED_INT
FLOAT: INT _EXP | DECIMAL _EXP?
SIGNED_FLOAT: ["+" | "-"] FLOAT
NUMBER: FLOAT | INT
SIGNED_NUMBER: ["+" | "-"] NUMBER
ESCAPED_STRING: "\"" _STRING_ESC_INNER "\""
LCASE_LETTER: "a".."z"
UCASE_LETTER: "A".."Z"
LETTER: UCASE_LETTER | LCASE_LETTER
WORD: LETTER+
CNAME: ("_" | LETTER) ("_" | LETTER | DIGIT)*
WS_INLINE: (" " | /\t/)+
WS: /[ \t\f\r\n]/+
CR: /\r/
LF: /\n/
NEWLINE: (CR? LF)+
SH_COMMENT: /#[^\n]*/
CPP_COMMENT: /\/\/[^\n]*/
C_COMMENT: /\/\*([^*]|\*+[^*\/])*\*+\//
SQL_COMMENT: /--[^\n]*/
"#;

fn common_terminals() -> &'static HashMap<String, TermSrc> {
    static COMMON: OnceLock<HashMap<String, TermSrc>> = OnceLock::new();
    COMMON.get_or_init(|| {
        let toks = lex(COMMON_LARK).expect("common.lark lexes");
        let items = Parser {
            toks,
            i: 0,
            depth: 0,
            max_nesting: 100,
        }
        .parse_file()
        .expect("common.lark parses");
        let mut defs = Definitions::collect(items).expect("common.lark definitions");
        for (name, esc) in [("_STRING_INNER", false), ("_STRING_ESC_INNER", true)] {
            let order = defs.terms.len();
            defs.terms.insert(
                name.to_string(),
                TermDef {
                    src: TermSrc::Lazy(esc),
                    pos: Pos::default(),
                    order,
                },
            );
        }
        let all: Vec<String> = defs.terms.keys().cloned().collect();
        let done = compile_terminals(&defs.terms, &all).expect("common.lark compiles");
        let mut out: HashMap<String, TermSrc> = done.into_iter().map(|(n, re)| (n, TermSrc::Raw(re.s))).collect();
        out.insert("_STRING_INNER".into(), TermSrc::Lazy(false));
        out.insert("_STRING_ESC_INNER".into(), TermSrc::Lazy(true));
        out
    })
}

// ---------------------------------------------------------------------------
// Rule compilation

struct RuleCompiler<'a, 'l> {
    em: Emitter<'l>,
    defs: &'a Definitions,
    compiled: &'a HashMap<String, Re>,
    term_ids: HashMap<String, u32>,
    /// The symbol of each named terminal used by a rule (see `named_terminals`).
    term_syms: HashMap<String, Sym>,
}

impl RuleCompiler<'_, '_> {
    fn ctx(&self) -> TermCtx<'_> {
        TermCtx {
            defs: &self.defs.terms,
            done: self.compiled,
        }
    }

    fn check_nonempty(regex: &str, what: &str, pos: Pos) -> Result<()> {
        if matches_empty(regex)? {
            return Err(gerr(
                pos,
                format!("{what} matches the empty string; terminals must match at least one character (make its use optional instead)"),
            ));
        }
        Ok(())
    }

    fn named_terminal(&mut self, name: &str, pos: Pos) -> Result<u32> {
        if let Some(&t) = self.term_ids.get(name) {
            return Ok(t);
        }
        let def = self
            .defs
            .terms
            .get(name)
            .ok_or_else(|| gerr(pos, format!("undefined terminal {name:?}")))?;
        let re = self.ctx().re_of(&Expr::Name(name.to_string(), pos))?;
        Self::check_nonempty(&re.s, &format!("terminal {name}"), def.pos)?;
        let t = self.em.terminal(name, &re.s)?;
        self.term_ids.insert(name.to_string(), t);
        Ok(t)
    }

    /// The terminals of the named terminal `name`: one, except for a
    /// definition that is an alternation of lazy and greedy alternatives
    /// (`COMMENT: /\/\/.*/ | /\/\*.*?\*\//s`), which gets two: its greedy
    /// alternatives and its lazy ones. In Python's `re` laziness belongs to a
    /// quantifier, so only the lazy alternatives end at their first match;
    /// one first-match terminal for the whole definition would end a line
    /// comment at its `//` (and then reject `// it's`).
    fn named_terminals(&mut self, name: &str, pos: Pos) -> Result<Vec<u32>> {
        let defs = self.defs;
        let Some(TermDef {
            src: TermSrc::Expr(Expr::Alt(alts)),
            pos: def_pos,
            ..
        }) = defs.terms.get(name)
        else {
            return Ok(vec![self.named_terminal(name, pos)?]);
        };
        let (mut greedy, mut lazy) = (Vec::new(), Vec::new());
        for a in alts {
            let re = self.ctx().re_of(a)?;
            if crate::regex::has_lazy_repetition(&re.s) {
                lazy.push(re.s);
            } else {
                greedy.push(re.s);
            }
        }
        if greedy.is_empty() || lazy.is_empty() {
            return Ok(vec![self.named_terminal(name, pos)?]);
        }
        let mut out = Vec::new();
        for part in [greedy, lazy] {
            let re = part.join("|");
            Self::check_nonempty(&re, &format!("terminal {name}"), *def_pos)?;
            out.push(self.em.terminal(name, &re)?);
        }
        Ok(out)
    }

    /// The symbol standing for the named terminal `name` in a rule.
    fn named_terminal_sym(&mut self, name: &str, pos: Pos) -> Result<Sym> {
        if let Some(&s) = self.term_syms.get(name) {
            return Ok(s);
        }
        let ts = self.named_terminals(name, pos)?;
        let s = match ts[..] {
            [t] => Sym::T(t),
            _ => self.em.group(ts.into_iter().map(|t| vec![Sym::T(t)]).collect())?,
        };
        self.term_syms.insert(name.to_string(), s);
        Ok(s)
    }

    fn anon_terminal(&mut self, name: &str, regex: &str, pos: Pos) -> Result<u32> {
        if let Some(&t) = self.term_ids.get(name) {
            return Ok(t);
        }
        Self::check_nonempty(regex, &format!("the terminal {name}"), pos)?;
        let t = self.em.terminal(name, regex)?;
        self.term_ids.insert(name.to_string(), t);
        Ok(t)
    }

    fn alts(&mut self, e: &Expr) -> Result<Vec<Vec<Sym>>> {
        match e {
            Expr::Alt(v) => v.iter().map(|a| self.seq(a)).collect(),
            _ => Ok(vec![self.seq(e)?]),
        }
    }

    fn seq(&mut self, e: &Expr) -> Result<Vec<Sym>> {
        match e {
            Expr::Seq(v) => {
                let mut out = Vec::new();
                for x in v {
                    out.extend(self.item(x)?);
                }
                Ok(out)
            }
            _ => self.item(e),
        }
    }

    fn item(&mut self, e: &Expr) -> Result<Vec<Sym>> {
        Ok(match e {
            Expr::Seq(_) => self.seq(e)?,
            Expr::Alt(_) => {
                let mut a = self.alts(e)?;
                if a.len() == 1 {
                    a.pop().unwrap()
                } else {
                    vec![self.em.group(a)?]
                }
            }
            Expr::Name(n, p) => match name_kind(n, *p)? {
                NameKind::Rule => vec![Sym::N(self.em.b.nonterminal(n))],
                NameKind::Term => vec![self.named_terminal_sym(n, *p)?],
            },
            Expr::Str(s, icase, p) => {
                let t = if *icase {
                    let re = literal_re(s, true);
                    self.anon_terminal(&format!("{s:?}i"), &re.s, *p)?
                } else {
                    if s.is_empty() {
                        Self::check_nonempty("", "the literal \"\"", *p)?;
                    }
                    self.em.literal(s)?
                };
                vec![Sym::T(t)]
            }
            Expr::Regex(pat, flags, p) => {
                let re = regex_literal_re(pat, flags, *p)?;
                vec![Sym::T(self.anon_terminal(&format!("/{pat}/{flags}"), &re.s, *p)?)]
            }
            Expr::Range(lo, hi, p) => {
                let re = self.ctx().re_of(e)?;
                vec![Sym::T(self.anon_terminal(&format!("{lo:?}..{hi:?}"), &re.s, *p)?)]
            }
            Expr::Repeat { inner, min, max, pos } => {
                let saved = std::mem::replace(&mut self.em.at, *pos);
                let out = self.repeat(inner, *min, *max);
                self.em.at = saved;
                out?
            }
        })
    }

    fn repeat(&mut self, inner: &Expr, min: u64, max: Option<u64>) -> Result<Vec<Sym>> {
        // A repeated optional or star is the same language as a repetition
        // of its body from zero: (y?){m,n} = y{0,n} and (y*){m,n} = y* for
        // n >= 1. Desugared as written, every copy could match the empty
        // string, so the parser would track which copies took each `y`:
        // `["a"]~1..1000` made Earley sets of 100,000+ items. Said this way
        // the repetition is unambiguous.
        if let Expr::Repeat {
            inner: y,
            min: 0,
            max: inner_max,
            ..
        } = inner
        {
            if max != Some(0) && matches!(inner_max, Some(1) | None) {
                let outer_max = if inner_max.is_none() { None } else { max };
                return self.repeat(y, 0, outer_max);
            }
        }
        Ok({
            {
                let a = self.alts(inner)?;
                if a.iter().all(|x| x.is_empty()) {
                    return Ok(vec![]);
                }
                if min == 0 && max == Some(1) {
                    return Ok(vec![self.em.optional(a)?]);
                }
                let x = self.em.group(a)?;
                self.em.repeat(x, min, max)?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::ebnf::tests::accepts;
    use crate::regex::{Dfa, RegexLimits, DEAD};

    fn lim() -> GrammarLimits {
        GrammarLimits::default()
    }

    fn lark(src: &str) -> Grammar {
        match parse_lark(src, &lim()) {
            Ok(g) => g,
            Err(e) => panic!("{e}\n--- grammar:\n{src}"),
        }
    }

    fn lark_err(src: &str) -> (usize, usize, String) {
        match parse_lark(src, &lim()) {
            Err(Error::Grammar { line, column, message }) => (line, column, message),
            other => panic!("expected a grammar error, got {other:?}"),
        }
    }

    fn fixture(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grammars").join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn term_regex<'g>(g: &'g Grammar, name: &str) -> &'g str {
        &g.terminals
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no terminal {name}: {:?}", g.terminals))
            .regex
    }

    fn full_match(re: &str, s: &str) -> bool {
        let d = Dfa::compile_many(&[re], &RegexLimits::default()).unwrap();
        let st = d.run(d.start(), s.as_bytes());
        st != DEAD && d.matches(st)[0] & 1 != 0
    }

    #[test]
    fn simple_shapes() {
        let g = lark("start: \"a\" b\nb: \"b\" | \"c\" \"d\"\n");
        assert_eq!(g.nonterminals[g.start as usize], "start");
        assert_eq!(g.terminals.len(), 4);
        let b = g.nonterminals.iter().position(|n| n == "b").unwrap() as u32;
        let rb: Vec<_> = g.rules.iter().filter(|r| r.lhs == b).collect();
        assert_eq!(rb.len(), 2);
        assert_eq!(rb[1].rhs.len(), 2);
        assert!(accepts(&g, "ab"));
        assert!(accepts(&g, "acd"));
        assert!(!accepts(&g, "ac"));
        assert!(!accepts(&g, "a b"));
    }

    #[test]
    fn ebnf_operators() {
        let g = lark("start: \"a\"* \"b\"+ [\"c\"] \"d\"? (\"e\" | \"f\") \"g\"~2 \"h\"~1..3\n");
        for s in ["bfgghh", "aabbcdegghhh", "bcegghh"] {
            assert!(accepts(&g, s), "{s}");
        }
        for s in ["fgghh", "bfghh", "bfggh hh", "bfgghhhh", "bcdefgghh"] {
            assert!(!accepts(&g, s), "{s}");
        }
        let g = lark("start: (\"x\" \"y\")~0..2 \"z\"~0\n");
        for s in ["", "xy", "xyxy"] {
            assert!(accepts(&g, s), "{s}");
        }
        assert!(!accepts(&g, "xyxyxy"));
    }

    #[test]
    fn newlines_and_continuations() {
        let src = "start: a\n    | b\n    // comment\n    | c  # another\na: \"a\"\nb: (\"b\"\n   \"b\")\nc: \"c\" \\\n   \"c\"\n";
        let g = lark(src);
        for s in ["a", "bb", "cc"] {
            assert!(accepts(&g, s), "{s}");
        }
        assert!(!accepts(&g, "b"));
    }

    #[test]
    fn leading_and_trailing_pipe_are_empty_alternatives() {
        let g = lark("start: | \"a\"\n");
        assert!(accepts(&g, ""));
        let g = lark("start: \"a\"\n  |\n");
        assert!(accepts(&g, ""));
        let g = lark("start: x \"b\"\nx:\n");
        assert!(accepts(&g, "b"));
    }

    #[test]
    fn modifiers_priorities_aliases() {
        let g = lark("?start: sum\n!sum.2: NUM \"+\" NUM -> add\n    | NUM\n_NUM.3: /[0-9]+/\nNUM: _NUM\n");
        assert!(accepts(&g, "1+2"));
        assert!(accepts(&g, "12"));
        let g = lark("?!start: \"x\"\n");
        assert!(accepts(&g, "x"));
    }

    #[test]
    fn strings_and_escapes() {
        let g = lark(r#"start: "a\"b" "\n" "\\" "\x41" "\u00e9" "\q" "sel"i"#);
        assert!(accepts(&g, "a\"b\n\\Aé\\qSeL"));
        assert!(accepts(&g, "a\"b\n\\Aé\\qsel"));
        assert!(!accepts(&g, "a\"b\n\\Aé\\qsex"));
        let g = lark("start: \"a\"..\"c\" \"-\"..\"/\"\n");
        assert!(accepts(&g, "b."));
        assert!(!accepts(&g, "d."));
    }

    #[test]
    fn regex_literals_and_flags() {
        let g = lark("start: /ab+/ /select/i /a.b/s /x # comment\n  y [ #]/x\n");
        assert!(accepts(&g, "abbSELECTa\nbxy "));
        assert!(accepts(&g, "abbSELECTa\nbxy#"));
        assert!(!accepts(&g, "abbSELECTa\nbx y "));
        // The `.` without s does not match a newline.
        let g = lark("start: /a.b/\n");
        assert!(!accepts(&g, "a\nb"));
        // Python-only syntax is translated.
        let g = lark(r"start: /[[]+/ /a{,2}b/ /x\Z/ /\</ /{/ /\101/ /\01/ /[\b]/ /(?#c)q/ /}/");
        assert!(accepts(&g, "[[abx<{A\u{1}\u{8}q}"));
        assert!(!accepts(&g, "[[aaabx<{A\u{1}\u{8}q}"));
    }

    #[test]
    fn terminals_compile_to_one_regex() {
        let g = lark("start: NAME\nNAME: (LETTER | \"_\") (LETTER | DIGIT | \"_\")*\nLETTER: \"a\"..\"z\" | \"A\"..\"Z\"\nDIGIT: /[0-9]/\n");
        assert_eq!(g.terminals.len(), 1);
        let re = term_regex(&g, "NAME");
        for s in ["a", "_x9", "Abc_1"] {
            assert!(full_match(re, s), "{s}");
        }
        for s in ["", "9a", "a-b"] {
            assert!(!full_match(re, s), "{s}");
        }
        let g = lark("start: T\nT: \"ab\"~2 \"c\"~1..2 \"d\"i\n");
        let re = term_regex(&g, "T");
        assert!(full_match(re, "ababcD"));
        assert!(full_match(re, "ababccd"));
        assert!(!full_match(re, "abcd"));
    }

    #[test]
    fn common_imports() {
        let g =
            lark("start: SIGNED_NUMBER ESCAPED_STRING CNAME\n%import common.SIGNED_NUMBER\n%import common (ESCAPED_STRING, CNAME, WS)\n%ignore WS\n");
        assert!(accepts(&g, "-1.5e3 \"a\\\"b\" _x1"));
        assert!(accepts(&g, "7\"\"x"));
        assert!(!accepts(&g, "7 \"a\" 1x"));
        let num = term_regex(&g, "SIGNED_NUMBER");
        for s in ["1", "-1", "+1.", ".5", "1e5", "1.5E-3", "-.5e+2"] {
            assert!(full_match(num, s), "{s}");
        }
        for s in ["", "-", ".", "e5", "1e", "1.2.3"] {
            assert!(!full_match(num, s), "{s}");
        }
        let st = term_regex(&g, "ESCAPED_STRING");
        for s in [r#""""#, r#""abc""#, r#""a\"b""#, r#""a\\""#, r#""\\\"""#] {
            assert!(full_match(st, s), "{s}");
        }
        for s in [r#"""#, r#""a"b""#, r#""a\""#, "\"a\nb\"", r#""a\\"b""#] {
            assert!(!full_match(st, s), "{s}");
        }
        // Aliases, and the lazy-string idiom with another delimiter.
        let g = lark("start: N S\n%import common.INT -> N\n%import common._STRING_ESC_INNER\nS: \"'\" _STRING_ESC_INNER \"'\"\n");
        assert!(accepts(&g, "12'a\\'b'"));
        assert!(!accepts(&g, "12'a'b'"));
        let s = term_regex(&g, "S");
        assert!(full_match(s, "'say \"hi\"'"));
        let g = lark("start: WORD NEWLINE C_COMMENT\n%import common (WORD, NEWLINE, C_COMMENT)\n");
        assert!(accepts(&g, "abc\r\n\n/* x * / */"));
        assert!(!accepts(&g, "abc\n/* a */ b */"));
    }

    #[test]
    fn fixtures_parse_and_recognize() {
        let g = lark(&fixture("brackets.lark"));
        for s in ["", "()", "([]{})", "[[()]]{}"] {
            assert!(accepts(&g, s), "{s}");
        }
        for s in ["(", "(]", "())"] {
            assert!(!accepts(&g, s), "{s}");
        }
        let g = lark(&fixture("arithmetic.lark"));
        for s in ["1", "1 + 2 * x", "-(3.5 - y) / 2", "a*b*c"] {
            assert!(accepts(&g, s), "{s}");
        }
        for s in ["1 +", "* 2", "(1", "1 2"] {
            assert!(!accepts(&g, s), "{s}");
        }
        let g = lark(&fixture("json.lark"));
        for s in ["{}", "[]", " {\"a\": [1, -2.5e3, true, null], \"b\": {\"c\": \"d\\\"\"}} ", "\"x\"", "3"] {
            assert!(accepts(&g, s), "{s}");
        }
        for s in ["{", "[1,]", "{\"a\" 1}", "'x'", "[1 2]"] {
            assert!(!accepts(&g, s), "{s}");
        }
        let g = lark(&fixture("sql.lark"));
        for s in [
            "SELECT * FROM t",
            "select a, b AS c FROM t1, t2 WHERE a = 1 AND b <> 'x' ORDER BY a DESC LIMIT 10;",
            "SELECT DISTINCT count(*) FROM users WHERE age >= 18 OR name LIKE 'A%'",
        ] {
            assert!(accepts(&g, s), "{s}");
        }
        for s in ["SELECT FROM t", "SELECT * t", "SELECT * FROM t WHERE"] {
            assert!(!accepts(&g, s), "{s}");
        }
        let g = lark(&fixture("list.lark"));
        for s in ["1", "1, abc, 3", "a,b,c,d"] {
            assert!(accepts(&g, s), "{s}");
        }
        for s in ["", "1,", ",1", "1,,2"] {
            assert!(!accepts(&g, s), "{s}");
        }
        // The list rule is left-recursive as written.
        let list = g.nonterminals.iter().position(|n| n == "list").unwrap() as u32;
        assert!(g.rules.iter().any(|r| r.lhs == list && r.rhs.first() == Some(&Sym::N(list))));
        let g = lark(&fixture("nullable.lark"));
        for s in ["", "a", "x", "ax", "dde", "a x d e"] {
            assert!(accepts(&g, s), "{s}");
        }
        for s in ["aa", "xa", "q"] {
            assert!(!accepts(&g, s), "{s}");
        }
    }

    #[test]
    fn override_and_extend() {
        let g = lark("start: a\na: \"x\"\nT: \"t\"\n%override a: \"y\" T\n%extend T: \"u\"\n");
        assert!(accepts(&g, "yu"));
        assert!(!accepts(&g, "x"));
    }

    #[test]
    fn error_positions() {
        let (l, c, m) = lark_err("start: a\na: b\n");
        assert_eq!((l, c), (2, 4), "{m}");
        assert!(m.contains("undefined rule \"b\""), "{m}");
        let (l, c, m) = lark_err("start: \"a\" FOO\n");
        assert_eq!((l, c), (1, 12), "{m}");
        assert!(m.contains("FOO"), "{m}");
        let (l, c, m) = lark_err("start: \"a\n");
        assert_eq!((l, c), (1, 8), "{m}");
        assert!(m.contains("unterminated string"), "{m}");
        let (l, c, m) = lark_err("start: /ab\n");
        assert_eq!((l, c), (1, 8), "{m}");
        assert!(m.contains("unterminated regular expression"), "{m}");
        let (l, c, m) = lark_err("start: (\"a\"\n\nb: \"b\"\n");
        assert_eq!(l, 3, "{m}");
        assert!(c >= 1 && m.contains("')'"), "{m}");
        let (l, c, m) = lark_err("start: \"a\" )\n");
        assert_eq!((l, c), (1, 12), "{m}");
        let (l, c, m) = lark_err("start: A\nA: B \"x\"\nB: A\n");
        assert_eq!((l, c), (2, 1), "{m}");
        assert!(m.contains("recursive") && m.contains("A -> B -> A"), "{m}");
        let (l, c, m) = lark_err("start: A\nA: \"x\"?\n");
        assert_eq!((l, c), (2, 1), "{m}");
        assert!(m.contains("empty string") && m.contains('A'), "{m}");
        let (l, c, m) = lark_err("start: \"a\" /x*/\n");
        assert_eq!((l, c), (1, 12), "{m}");
        assert!(m.contains("empty string"), "{m}");
        let (l, c, m) = lark_err("start: \"a\" /(?=x)x/\n");
        assert_eq!((l, c), (1, 13), "{m}");
        assert!(m.contains("look-ahead"), "{m}");
        let (l, _, m) = lark_err("start: /(a)\\1/\n");
        assert_eq!(l, 1);
        assert!(m.contains("backreference"), "{m}");
        let (l, c, m) = lark_err("start: /a(/\n");
        assert_eq!(l, 1, "{m}");
        assert!(c >= 8 && m.contains("invalid regular expression"), "{m}");
        let (l, c, m) = lark_err("start: \"a\"\n%declare FOO\n");
        assert_eq!((l, c), (2, 1), "{m}");
        assert!(m.contains("not supported"), "{m}");
        let (l, _, m) = lark_err("start: x\nx: \"a\"\nx: \"b\"\n");
        assert_eq!(l, 3);
        assert!(m.contains("more than once"), "{m}");
        let (l, c, m) = lark_err("start: x\nX: \"a\"\nx: start{a}\n");
        assert_eq!((l, c), (3, 9), "{m}");
        assert!(m.contains("templates"), "{m}");
        let (l, c, m) = lark_err("start: A\nA: a\na: \"x\"\n");
        assert_eq!((l, c), (2, 4), "{m}");
        let (l, c, m) = lark_err("start: \"a\" ~ 3..1\n");
        assert_eq!((l, c), (1, 12), "{m}");
        let (l, c, m) = lark_err("%import python.NAME\nstart: \"a\"\n");
        assert_eq!((l, c), (1, 9), "{m}");
        let (l, c, m) = lark_err("%import common.NOPE\nstart: \"a\"\n");
        assert_eq!((l, c), (1, 16), "{m}");
        let (_, _, m) = lark_err("rule: \"a\"\n");
        assert!(m.contains("\"start\""), "{m}");
        let (l, c, m) = lark_err("start: Foo\n");
        assert_eq!((l, c), (1, 8), "{m}");
        let (l, c, m) = lark_err("start: \"a\" $\n");
        assert_eq!((l, c), (1, 12), "{m}");
    }

    #[test]
    fn more_errors_and_sharing() {
        let (l, c, m) = lark_err("start: \"a\"\n%ignore ws\nws: \" \"\n");
        assert_eq!((l, c), (2, 9), "{m}");
        assert!(m.contains("rule \"ws\""), "{m}");
        let (l, c, m) = lark_err("start: \"a\"\n?A: \"a\"\n");
        assert_eq!((l, c), (2, 2), "{m}");
        let (l, c, m) = lark_err("start: \"\\x4\"\n");
        assert_eq!((l, c), (1, 9), "{m}");
        let (l, c, m) = lark_err("start: \"a\" ~ x\n");
        assert_eq!((l, c), (1, 14), "{m}");
        // A named terminal and the same anonymous literal are one terminal.
        let g = lark("start: A \"a\" \"b\"i B\nA: \"a\"\nB: \"b\"i\n");
        assert_eq!(g.terminals.len(), 2, "{:?}", g.terminals);
        assert!(accepts(&g, "aabB"));
    }

    #[test]
    fn empty_language_is_reported() {
        match parse_lark("// c\n  start: start \"a\"\n", &lim()) {
            Err(Error::Grammar { line: 2, column: 3, message }) => assert!(message.contains("empty"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn limits() {
        let mut l = lim();
        l.max_nesting = 10;
        let deep = format!("start: {}\"a\"{}\n", "(".repeat(11), ")".repeat(11));
        match parse_lark(&deep, &l) {
            Err(Error::Grammar { line: 1, message, .. }) => assert!(message.contains("nested"), "{message}"),
            other => panic!("{other:?}"),
        }
        let ok = format!("start: {}\"a\"{}\n", "(".repeat(10), ")".repeat(10));
        parse_lark(&ok, &l).unwrap();
        // The default limit is far from a stack overflow.
        let deep = format!("start: {}\"a\"{}\n", "(".repeat(1000), ")".repeat(1000));
        assert!(parse_lark(&deep, &lim()).is_err());
        let deep = format!("start: {}\"a\"{}\n", "[".repeat(200), "]".repeat(200));
        parse_lark(&deep, &lim()).unwrap();
        let mut l = lim();
        l.max_rules = 5;
        let src = "start: a b c d e f\na: \"a\"\nb: \"b\"\nc: \"c\"\nd: \"d\"\ne: \"e\"\nf: \"f\"\n";
        match parse_lark(src, &l) {
            Err(Error::Grammar { message, .. }) => assert!(message.contains("max_rules"), "{message}"),
            other => panic!("{other:?}"),
        }
        match parse_lark("start: \"a\"~1000000000\n", &lim()) {
            Err(Error::Grammar { message, .. }) => assert!(message.contains("too large"), "{message}"),
            other => panic!("{other:?}"),
        }
        // A long chain of terminal references needs no deep recursion.
        let mut src = String::from("start: T0\n");
        for k in 0..5000 {
            src.push_str(&format!("T{k}: T{}\n", k + 1));
        }
        src.push_str("T5000: \"z\"\n");
        let g = lark(&src);
        assert!(accepts(&g, "z"));
    }

    #[test]
    fn custom_start_and_unused_terminals() {
        let g = parse_lark_with_start("expr: NUM\nNUM: /[0-9]+/\nUNUSED: /x*/\nLOOK: /a(?=b)/\n", "expr", &lim()).unwrap();
        assert!(accepts(&g, "42"));
        assert_eq!(g.terminals.len(), 1);
    }

    #[test]
    fn lazy_and_greedy_alternatives_are_separate_terminals() {
        // Only the lazy alternative ends at its first match: `// it's` is
        // one comment, not `//` followed by an unterminated `'s`.
        let g = lark("start: \"a\"+\nCOMMENT: /\\/\\/.*/ | /\\/\\*.*?\\*\\//s\n%ignore COMMENT\n");
        let fm: Vec<bool> = g.ignore.iter().map(|&t| g.terminals[t as usize].first_match).collect();
        assert_eq!(fm, vec![false, true]);
        let g = lark("start: X+\nX: /a.*?b/ | \"c\" | /d+/\n");
        assert_eq!(g.terminals.iter().filter(|t| t.first_match).count(), 1);
        assert_eq!(g.terminals.len(), 2);
        let g = lark("start: STR+\nSTR: /'.*?'/ | /\".*?\"/\n");
        assert_eq!(g.terminals.len(), 1);
        assert!(g.terminals[0].first_match);
    }

    #[test]
    fn ignore_forms() {
        let g = lark("start: \"a\" \"b\"\n%ignore \" \"\n%ignore /\\t+/\n%ignore COMMENT\nCOMMENT: \"#\" /[^\\n]*/\n");
        assert!(accepts(&g, " a\t\t b #x"));
        assert!(!accepts(&g, "a\nb"));
        assert_eq!(g.ignore.len(), 3);
    }
}
