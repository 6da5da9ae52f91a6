//! JSON strings as regexes: the character encoding, `pattern`, `format`
//! and "any key but these".
//!
//! JSON lets a character be written several ways (`a`, `\u0061`); a
//! schema constrains characters, so a regex over the encoded text must
//! follow every encoding or pick one. We pick one, the one
//! `json.dumps(..., ensure_ascii=False)` and serde_json write: a character
//! appears raw unless it is `"`, `\` or a control character, which take
//! their short escape (`\n`) or else `\u00xx` in lowercase hex. With one
//! encoding per character, `maxLength` counts encodings, a `pattern`'s
//! character classes map class by class, and "any key except `name`" is a
//! plain trie complement. Texts with other escapes (`\u0061`, `\/`) are
//! valid JSON but outside the language; the generic JSON grammar
//! (`compile_json`) still accepts them.

use crate::error::{Error, Result};
use regex_syntax::hir::{Class, Hir, HirKind, Look};
use std::collections::BTreeMap;

/// One character in its canonical encoding.
pub const CH: &str = r#"(?:[^"\\\x00-\x1f]|\\["\\bfnrt]|\\u00(?:0[0-7bef]|1[0-9a-f]))"#;

/// The canonical JSON text of `s`, quotes included.
pub fn encode(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The canonical encoding of `c` (without quotes), as a regex literal.
fn enc_char(c: char) -> String {
    let mut buf = [0u8; 4];
    let e = encode(c.encode_utf8(&mut buf));
    regex_syntax::escape(&e[1..e.len() - 1])
}

/// Characters written raw (not escaped).
fn is_raw(c: u32) -> bool {
    c >= 0x20 && c != 0x22 && c != 0x5c
}

/// A regex matching the encoding of any character in `ranges` (inclusive
/// scalar-value ranges); `None` for the empty set.
pub fn class_regex(ranges: &[(u32, u32)]) -> Option<String> {
    let mut raw = String::new();
    let mut specials = Vec::new();
    for &(lo, hi) in ranges {
        // Split off the escaped characters: 0x00-0x1f, '"', '\\'.
        let mut start = lo;
        for s in [0x22u32, 0x5c] {
            if start <= s && s <= hi {
                if start < s {
                    push_raw(&mut raw, &mut specials, start, s - 1);
                }
                specials.push(s);
                start = s + 1;
            }
        }
        if start <= hi {
            push_raw(&mut raw, &mut specials, start, hi);
        }
    }
    let mut alts = Vec::new();
    if !raw.is_empty() {
        alts.push(format!("[{raw}]"));
    }
    specials_regex(&mut specials, &mut alts);
    match alts.len() {
        0 => None,
        1 => Some(alts.pop().unwrap_or_default()),
        _ => Some(format!("(?:{})", alts.join("|"))),
    }
}

/// The escaped characters among `specials` (`"`, `\\`, U+0000-U+001F) as
/// at most two alternatives: the short escapes in one class (`\\[\"nt]`)
/// and the `\\u00XX` ones grouped by their third hex digit. One literal
/// alternative per character made patterns hundreds of bytes long and
/// their NFAs more than twice as large (MaskBench's o27348: a lexer NFA of
/// 2,770 states, now 1,126), every subset of the lexer's construction
/// with them.
fn specials_regex(specials: &mut Vec<u32>, alts: &mut Vec<String>) {
    specials.sort_unstable();
    specials.dedup();
    let mut short = String::new();
    let mut long: [String; 2] = [String::new(), String::new()];
    for &c in specials.iter() {
        match c {
            0x22 => short.push('"'),
            0x5c => short.push_str("\\\\"),
            0x08 => short.push('b'),
            0x09 => short.push('t'),
            0x0a => short.push('n'),
            0x0c => short.push('f'),
            0x0d => short.push('r'),
            c if c < 0x20 => long[(c >> 4) as usize].push(char::from_digit(c & 0xf, 16).unwrap_or('0')),
            _ => {}
        }
    }
    if !short.is_empty() {
        alts.push(format!("\\\\[{short}]"));
    }
    let groups: Vec<String> = (0..2).filter(|&h| !long[h].is_empty()).map(|h| format!("{h}[{}]", long[h])).collect();
    match groups.len() {
        0 => {}
        1 => alts.push(format!("\\\\u00{}", groups[0])),
        _ => alts.push(format!("\\\\u00(?:{})", groups.join("|"))),
    }
}

fn push_raw(raw: &mut String, specials: &mut Vec<u32>, lo: u32, hi: u32) {
    let mut lo = lo;
    while lo < 0x20 && lo <= hi {
        specials.push(lo);
        lo += 1;
    }
    if lo <= hi && is_raw(lo) {
        if lo == hi {
            raw.push_str(&format!("\\x{{{lo:x}}}"));
        } else {
            raw.push_str(&format!("\\x{{{lo:x}}}-\\x{{{hi:x}}}"));
        }
    }
}

/// Any key except the given names: the complement of a trie.
///
/// Two finite parts and one shared tail: strings that end inside the trie
/// at a node no name ends at (`stay`), and strings that leave the trie at
/// their last character (`leave`), after which anything (`CH*`) may
/// follow. One tail for every exit point keeps the DFA at one state per
/// trie node; a tail per exit point multiplies it.
///
/// When every name is printable ASCII (the usual case), the trie branches
/// on ASCII only and one shared alternative covers any string with another
/// character: a multi-byte class at every trie node would give each node
/// its own UTF-8 sub-automaton (hundreds of DFA states for a few names).
/// Names longer than 40 characters are spelled out as flat alternations
/// (every inner prefix, every exit point): the nested form would nest
/// groups deeper than the regex parser allows.
pub fn not_in_set(names: &[String]) -> String {
    type Node = TrieNode;
    /// Characters of `lo..=hi` no name continues with at `node`.
    fn others(node: &Node, lo: u32, hi: u32) -> Option<String> {
        let mut ranges = Vec::new();
        let mut next = lo;
        for &c in node.kids.keys() {
            let c = c as u32;
            if c > next {
                ranges.push((next, c - 1));
            }
            next = c + 1;
        }
        if next <= hi {
            ranges.push((next, hi));
        }
        class_regex(&ranges)
    }
    fn stay(node: &Node) -> Option<String> {
        let mut alts = Vec::new();
        if !node.end {
            alts.push(String::new());
        }
        for (&c, kid) in &node.kids {
            if let Some(r) = stay(kid) {
                alts.push(format!("{}{r}", enc_char(c)));
            }
        }
        (!alts.is_empty()).then(|| format!("(?:{})", alts.join("|")))
    }
    fn leave(node: &Node, lo: u32, hi: u32) -> String {
        let mut alts: Vec<String> = others(node, lo, hi).into_iter().collect();
        for (&c, kid) in &node.kids {
            alts.push(format!("{}{}", enc_char(c), leave(kid, lo, hi)));
        }
        format!("(?:{})", alts.join("|"))
    }
    fn flat(node: &Node, prefix: &str, lo: u32, hi: u32, stays: &mut Vec<String>, leaves: &mut Vec<String>) {
        if !node.end {
            stays.push(prefix.to_string());
        }
        if let Some(other) = others(node, lo, hi) {
            leaves.push(format!("{prefix}{other}"));
        }
        for (&c, kid) in &node.kids {
            flat(kid, &format!("{prefix}{}", enc_char(c)), lo, hi, stays, leaves);
        }
    }
    let root = TrieNode::of(names);
    let safe = |c: char| (0x20..0x80).contains(&(c as u32)) && c != '"' && c != '\\';
    let ascii = names.iter().all(|n| n.chars().all(safe));
    let (lo, hi) = if ascii { (0x20, 0x7f) } else { (0, 0x10ffff) };
    let (stays, leaves) = if names.iter().any(|n| n.chars().count() > 40) {
        let (mut stays, mut leaves) = (Vec::new(), Vec::new());
        flat(&root, "", lo, hi, &mut stays, &mut leaves);
        (stays, format!("(?:{})", leaves.join("|")))
    } else {
        (stay(&root).into_iter().collect(), leave(&root, lo, hi))
    };
    let mut alts = stays;
    alts.push(format!("{leaves}{CH}*"));
    if ascii {
        // Any string with a character outside printable ASCII (raw or
        // escaped) is no name.
        alts.push(format!(
            r#"[\x20\x21\x23-\x5b\x5d-\x7f]*(?:[^\x00-\x7f]|\\["\\bfnrt]|\\u00(?:0[0-7bef]|1[0-9a-f])){CH}*"#
        ));
    }
    format!("(?:{})", alts.join("|"))
}

/// A regex that matches nothing (an empty key or string language).
pub const NO_STRING: &str = r"[^\x00-\x{10FFFF}]";

/// Scalar values as sorted, disjoint inclusive ranges.
type CharSet = Vec<(u32, u32)>;

/// The characters a pattern's complement is built over: ASCII without
/// `\n`, `\r` and `\x1c`-`\x1f` (whitespace to Python's `\s`). On these, ECMA-262 (the specification) and Python's
/// `re` (what `jsonschema` runs) agree about `\w`, `\d`, `\s`, `.` and a
/// final `$`; on others they differ (Python's `\w` and `\d` are Unicode,
/// its `.` matches `\r`, its `$` also matches before a final `\n`), and a
/// key that fails one but matches the other must not count as failing.
pub(super) const SAFE_CHARS: &[(u32, u32)] = &[(0, 0x09), (0x0b, 0x0c), (0x0e, 0x1b), (0x20, 0x7f)];

/// The characters in both sets.
pub(super) fn intersect(a: &[(u32, u32)], b: &[(u32, u32)]) -> CharSet {
    let mut out = Vec::new();
    for &(x, y) in a {
        for &(u, v) in b {
            let (lo, hi) = (x.max(u), y.min(v));
            if lo <= hi {
                out.push((lo, hi));
            }
        }
    }
    out.sort_unstable();
    out
}

/// `a` less `b`.
fn minus(a: &[(u32, u32)], b: &[(u32, u32)]) -> CharSet {
    let mut rest = Vec::new();
    let mut next = 0u32;
    for &(u, v) in b {
        if u > next {
            rest.push((next, u - 1));
        }
        next = v.saturating_add(1);
    }
    if next <= 0x10ffff {
        rest.push((next, 0x10ffff));
    }
    intersect(a, &rest)
}

/// The characters one position of a pattern matches, if it matches
/// exactly one character.
fn char_set(h: &Hir) -> Option<CharSet> {
    match h.kind() {
        HirKind::Literal(l) => {
            let s = std::str::from_utf8(&l.0).ok()?;
            let mut cs = s.chars();
            match (cs.next(), cs.next()) {
                (Some(c), None) => Some(vec![(c as u32, c as u32)]),
                _ => None,
            }
        }
        HirKind::Class(Class::Unicode(c)) => Some(c.ranges().iter().map(|r| (r.start() as u32, r.end() as u32)).collect()),
        HirKind::Capture(c) => char_set(&c.sub),
        _ => None,
    }
}

/// A pattern as a sequence of (character set, min, max) repetitions.
fn char_items(h: &Hir, out: &mut Vec<(CharSet, u64, Option<u64>)>) -> Option<()> {
    match h.kind() {
        HirKind::Literal(l) => {
            for c in std::str::from_utf8(&l.0).ok()?.chars() {
                out.push((vec![(c as u32, c as u32)], 1, Some(1)));
            }
        }
        HirKind::Concat(xs) => {
            for x in xs {
                char_items(x, out)?;
            }
        }
        HirKind::Capture(c) => char_items(&c.sub, out)?,
        HirKind::Repetition(r) => out.push((char_set(&r.sub)?, r.min as u64, r.max.map(|m| m as u64))),
        HirKind::Empty => {}
        _ => out.push((char_set(h)?, 1, Some(1))),
    }
    Some(())
}

/// A pattern whose non-matching strings form a small automaton over
/// character sets, so that its complement is a regex built state by state.
enum KeyPattern {
    /// `^c1…ck` then, anchored at the end, an optional final `C{m,n}`
    /// (`^[a-z_]+$`, `^x-`, `^[a-z][a-z0-9]*$`).
    Anchored {
        prefix: Vec<CharSet>,
        rep: Option<(CharSet, u64, Option<u64>)>,
        end: bool,
    },
    /// Unanchored `C` or `C+`: some character of C occurs (`\w+`, `.{1,}`).
    Contains(CharSet),
}

/// Where [`KeyPattern`] matching stands after a prefix of the key.
#[derive(Clone, Copy)]
enum KeyState {
    /// Inside the fixed prefix, at this position.
    Pre(usize),
    /// This many characters of the final repetition (capped at its min
    /// when unbounded).
    Rep(u64),
    /// The whole prefix seen, nothing may follow.
    Done,
    /// No completion matches.
    Dead,
    /// Every completion matches.
    Matched,
    /// (`Contains`) no character of the set yet.
    Waiting,
}

impl KeyPattern {
    fn parse(pattern: &str) -> Result<Option<KeyPattern>> {
        let hir = pattern_hir(pattern)?;
        let branches = top_branches(&hir);
        let [branch] = branches.as_slice() else { return Ok(None) };
        let (start, mid, end) = peel_anchors(branch);
        let mut items = Vec::new();
        for h in mid {
            if char_items(h, &mut items).is_none() {
                return Ok(None);
            }
        }
        if !start {
            return Ok(match items.as_slice() {
                [(set, 1, _)] if !end => Some(KeyPattern::Contains(set.clone())),
                _ => None,
            });
        }
        // Unanchored at the end, a search needs only the minimum of the
        // trailing repetitions.
        if !end {
            while let Some(last) = items.last_mut() {
                last.2 = Some(last.1);
                if last.1 > 0 {
                    break;
                }
                items.pop();
            }
        }
        let rep = match items.last() {
            Some((_, m, x)) if end && *x != Some(*m) => items.pop(),
            _ => None,
        };
        let mut prefix = Vec::new();
        for (set, m, x) in items {
            if x != Some(m) || m > 1000 {
                return Ok(None);
            }
            prefix.extend(std::iter::repeat_n(set, m as usize));
        }
        Ok(Some(KeyPattern::Anchored { prefix, rep, end }))
    }

    fn start(&self) -> KeyState {
        match self {
            KeyPattern::Contains(_) => KeyState::Waiting,
            KeyPattern::Anchored { .. } => self.after(0),
        }
    }

    /// The state at prefix position `i` (past the prefix when `i` is its length).
    fn after(&self, i: usize) -> KeyState {
        match self {
            KeyPattern::Anchored { prefix, rep, end } => match (i < prefix.len(), rep, end) {
                (true, _, _) => KeyState::Pre(i),
                (false, _, false) => KeyState::Matched,
                (false, Some(_), true) => KeyState::Rep(0),
                (false, None, true) => KeyState::Done,
            },
            KeyPattern::Contains(_) => KeyState::Matched,
        }
    }

    /// The parts of `chars` and the state each leads to from `st`.
    fn split(&self, st: KeyState, chars: &[(u32, u32)]) -> Vec<(CharSet, KeyState)> {
        let on = |set: &[(u32, u32)], yes: KeyState, no: KeyState| vec![(intersect(chars, set), yes), (minus(chars, set), no)];
        match (self, st) {
            (KeyPattern::Anchored { prefix, .. }, KeyState::Pre(i)) => on(&prefix[i], self.after(i + 1), KeyState::Dead),
            (KeyPattern::Anchored { rep: Some((set, m, x)), .. }, KeyState::Rep(j)) => {
                let next = match x {
                    Some(x) if j + 1 > *x => KeyState::Dead,
                    Some(_) => KeyState::Rep(j + 1),
                    None => KeyState::Rep((j + 1).min(*m)),
                };
                on(set, next, KeyState::Dead)
            }
            (KeyPattern::Contains(set), KeyState::Waiting) => on(set, KeyState::Matched, KeyState::Waiting),
            (_, KeyState::Matched) => vec![(chars.to_vec(), KeyState::Matched)],
            _ => vec![(chars.to_vec(), KeyState::Dead)],
        }
    }

    fn step(&self, st: KeyState, c: char) -> KeyState {
        let c = c as u32;
        self.split(st, &[(c, c)])
            .into_iter()
            .find(|(s, _)| !s.is_empty())
            .map_or(KeyState::Dead, |(_, n)| n)
    }

    /// Whether a key ending in `st` fails to match.
    fn fails_here(&self, st: KeyState) -> bool {
        match (self, st) {
            (KeyPattern::Anchored { rep: Some((_, m, _)), .. }, KeyState::Rep(j)) => j < *m,
            (_, KeyState::Done | KeyState::Matched) => false,
            _ => true,
        }
    }

    /// The regex of the continuations from `st` that fail to match; `None`
    /// when there are none.
    fn failing(&self, st: KeyState) -> Option<String> {
        let safe = class_regex(SAFE_CHARS).unwrap_or_default();
        let any = format!("{safe}*");
        let class = |set: &[(u32, u32)]| class_regex(set);
        match (self, st) {
            (_, KeyState::Matched) => None,
            (_, KeyState::Dead) => Some(any),
            (_, KeyState::Done) => Some(format!("{safe}+")),
            (KeyPattern::Contains(set), KeyState::Waiting) => Some(match class(&minus(SAFE_CHARS, set)) {
                Some(c) => format!("{c}*"),
                None => String::new(),
            }),
            (KeyPattern::Anchored { prefix, .. }, KeyState::Pre(i)) => {
                let mut alts = vec![String::new()];
                if let Some(c) = class(&minus(SAFE_CHARS, &prefix[i])) {
                    alts.push(format!("{c}{any}"));
                }
                if let (Some(c), Some(rest)) = (class(&prefix[i]), self.failing(self.after(i + 1))) {
                    alts.push(format!("{c}{rest}"));
                }
                Some(format!("(?:{})", alts.join("|")))
            }
            (KeyPattern::Anchored { rep: Some((set, m, x)), .. }, KeyState::Rep(j)) => {
                let mut alts = Vec::new();
                if let Some(c) = class(&minus(SAFE_CHARS, set)) {
                    alts.push(format!("{any}{c}{any}"));
                }
                if let Some(c) = class(set) {
                    if j < *m {
                        alts.push(format!("(?:{c}){{0,{}}}", m - j - 1));
                    }
                    if let Some(x) = x {
                        alts.push(format!("(?:{c}){{{},}}", (x + 1).saturating_sub(j)));
                    }
                } else if j < *m {
                    alts.push(String::new());
                }
                (!alts.is_empty()).then(|| format!("(?:{})", alts.join("|")))
            }
            _ => Some(any),
        }
    }

    /// The regex of the continuations from `st` over [`SAFE_CHARS`] that
    /// match; `None` when there are none.
    fn matching(&self, st: KeyState) -> Option<String> {
        let safe = class_regex(SAFE_CHARS).unwrap_or_default();
        let class = |set: &[(u32, u32)]| class_regex(&intersect(set, SAFE_CHARS));
        match (self, st) {
            (_, KeyState::Matched) => Some(format!("{safe}*")),
            (_, KeyState::Done) => Some(String::new()),
            (KeyPattern::Contains(set), KeyState::Waiting) => {
                let c = class(set)?;
                let other = class_regex(&minus(SAFE_CHARS, set)).map_or(String::new(), |o| format!("{o}*"));
                Some(format!("{other}{c}{safe}*"))
            }
            (KeyPattern::Anchored { prefix, .. }, KeyState::Pre(i)) => Some(format!("{}{}", class(&prefix[i])?, self.matching(self.after(i + 1))?)),
            (KeyPattern::Anchored { rep: Some((set, m, x)), .. }, KeyState::Rep(j)) => {
                let lo = m.saturating_sub(j);
                match class(set) {
                    None => (lo == 0).then(String::new),
                    Some(c) => Some(match x {
                        Some(x) => format!("(?:{c}){{{lo},{}}}", x.saturating_sub(j)),
                        None => format!("(?:{c}){{{lo},}}"),
                    }),
                }
            }
            _ => None,
        }
    }

    /// Keys below `node` (reached in state `st`) that are no name and fail
    /// to match (`want_match`: that match, over [`SAFE_CHARS`]).
    fn walk(&self, node: &TrieNode, st: KeyState, want_match: bool) -> Option<String> {
        let mut alts = Vec::new();
        if !node.end && self.fails_here(st) != want_match {
            alts.push(String::new());
        }
        let kids: CharSet = node.kids.keys().map(|&c| (c as u32, c as u32)).collect();
        for (part, next) in self.split(st, &minus(SAFE_CHARS, &kids)) {
            let rest = if want_match { self.matching(next) } else { self.failing(next) };
            if let (Some(c), Some(rest)) = (class_regex(&part), rest) {
                alts.push(format!("{c}{rest}"));
            }
        }
        for (&c, kid) in &node.kids {
            if !SAFE_CHARS.iter().any(|&(lo, hi)| (lo..=hi).contains(&(c as u32))) {
                continue;
            }
            if let Some(rest) = self.walk(kid, self.step(st, c), want_match) {
                alts.push(format!("{}{rest}", enc_char(c)));
            }
        }
        (!alts.is_empty()).then(|| format!("(?:{})", alts.join("|")))
    }
}

/// Whether some text outside [`SAFE_CHARS`] may be decided differently by
/// ECMA-262 and Python's `re` (see [`same_in_python`]).
pub fn reads_differently_in_python(pattern: &str) -> bool {
    ["\\w", "\\W", "\\d", "\\D", "\\s", "\\S", "\\b", "\\B", ".", "$"]
        .iter()
        .any(|x| pattern.contains(x))
}

/// Whether `pattern` surely decides `text` alike under ECMA-262 and
/// Python's `re` (which `jsonschema` runs). They differ on `\w`, `\d`,
/// `\s`, `\b` (Unicode-aware in Python, and its `\s` has `\x1c`-`\x1f`)
/// for other characters than those of [`SAFE_CHARS`] and `\n`, on `.`
/// for `\r`, U+2028 and U+2029 (Python matches them), and on `$` before a
/// final `\n` (Python matches there).
pub fn same_in_python(pattern: &str, text: &str) -> bool {
    let has = |xs: &[&str]| xs.iter().any(|x| pattern.contains(x));
    let classes_ok = text
        .chars()
        .all(|c| c == '\n' || c == '\r' || SAFE_CHARS.iter().any(|&(lo, hi)| (lo..=hi).contains(&(c as u32))));
    (classes_ok || !has(&["\\w", "\\W", "\\d", "\\D", "\\s", "\\S", "\\b", "\\B"]))
        && (!has(&["."]) || !text.contains(['\r', '\u{2028}', '\u{2029}']))
        && (!has(&["$"]) || !text.ends_with('\n'))
}

/// Keys that are none of `names` and in which `pattern` (ECMA-262, search
/// semantics) finds no match, as a regex over the encoded key, restricted
/// to the characters of [`SAFE_CHARS`]: what
/// `additionalProperties` governs next to one `patternProperties` entry.
/// The pattern must be a fixed prefix (`^x-`), a fixed prefix and one final
/// repetition anchored at both ends (`^[a-z_]+$`, `^[a-z][a-z0-9]{0,7}$`),
/// or an unanchored character class (`\w+`): their complements follow
/// the prefix position or repetition count, walked jointly with the trie
/// of names. `Ok(None)` for other shapes, and `[^\x00-\x{10FFFF}]` (no
/// key) when nothing qualifies.
pub fn not_in_set_nor_pattern(names: &[String], pattern: &str) -> Result<Option<String>> {
    key_walk(names, pattern, false)
}

/// Keys that are none of `names` and in which `pattern` finds a match,
/// over [`SAFE_CHARS`] (see [`not_in_set_nor_pattern`]): the keys a
/// `patternProperties` entry governs when it also matches listed names.
pub fn in_pattern_not_in_set(names: &[String], pattern: &str) -> Result<Option<String>> {
    key_walk(names, pattern, true)
}

fn key_walk(names: &[String], pattern: &str, want_match: bool) -> Result<Option<String>> {
    let Some(kp) = KeyPattern::parse(pattern)? else { return Ok(None) };
    let root = TrieNode::of(names);
    Ok(Some(kp.walk(&root, kp.start(), want_match).unwrap_or_else(|| NO_STRING.into())))
}

/// A trie of names.
#[derive(Default)]
struct TrieNode {
    end: bool,
    kids: BTreeMap<char, TrieNode>,
}

impl TrieNode {
    fn of(names: &[String]) -> TrieNode {
        let mut root = TrieNode::default();
        for n in names {
            let mut node = &mut root;
            for c in n.chars() {
                node = node.kids.entry(c).or_default();
            }
            node.end = true;
        }
        root
    }
}

/// Why a pattern cannot be enforced.
fn unsupported(what: &str) -> Error {
    Error::Usage(format!("pattern uses {what}, which a regular language cannot express"))
}

/// ECMA-262 pattern text to Rust regex syntax with ECMA's meanings
/// (`\d` is ASCII, `.` stops at line terminators, `\b` is a word
/// boundary, which we refuse, inside a class a backspace).
pub fn ecma_to_rust(p: &str) -> Result<String> {
    const S: &str = r"\t\n\x0B\x0C\r \x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}\x{FEFF}";
    let cs: Vec<char> = p.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut in_class = false;
    let hex = |c: char| format!("\\x{{{:x}}}", c as u32);
    while i < cs.len() {
        let c = cs[i];
        match c {
            '\\' => {
                let Some(&e) = cs.get(i + 1) else {
                    return Err(unsupported("a trailing backslash"));
                };
                i += 2;
                match e {
                    'd' => out.push_str("[0-9]"),
                    'D' => out.push_str("[^0-9]"),
                    'w' => out.push_str("[0-9A-Za-z_]"),
                    'W' => out.push_str("[^0-9A-Za-z_]"),
                    's' => out.push_str(&format!("[{S}]")),
                    'S' => out.push_str(&format!("[^{S}]")),
                    'b' if in_class => out.push_str(r"\x08"),
                    'b' | 'B' => return Err(unsupported("a word boundary")),
                    '1'..='9' | 'k' => return Err(unsupported("a backreference")),
                    '0' => out.push_str(r"\x00"),
                    'n' => out.push_str(r"\n"),
                    'r' => out.push_str(r"\r"),
                    't' => out.push_str(r"\t"),
                    'f' => out.push_str(r"\x0C"),
                    'v' => out.push_str(r"\x0B"),
                    'c' => {
                        let Some(l) = cs.get(i).filter(|l| l.is_ascii_alphabetic()) else {
                            return Err(unsupported("a malformed \\c escape"));
                        };
                        out.push_str(&format!("\\x{{{:x}}}", (*l as u32) % 32));
                        i += 1;
                    }
                    'x' => {
                        let h: String = cs.get(i..i + 2).map(|s| s.iter().collect()).unwrap_or_default();
                        let v = u32::from_str_radix(&h, 16).map_err(|_| unsupported("a malformed \\x escape"))?;
                        out.push_str(&format!("\\x{{{v:x}}}"));
                        i += 2;
                    }
                    'u' => {
                        let (v, used) = if cs.get(i) == Some(&'{') {
                            let end = cs[i..]
                                .iter()
                                .position(|&c| c == '}')
                                .ok_or_else(|| unsupported("a malformed \\u escape"))?;
                            let h: String = cs[i + 1..i + end].iter().collect();
                            (u32::from_str_radix(&h, 16).map_err(|_| unsupported("a malformed \\u escape"))?, end + 1)
                        } else {
                            let h: String = cs.get(i..i + 4).map(|s| s.iter().collect()).unwrap_or_default();
                            (u32::from_str_radix(&h, 16).map_err(|_| unsupported("a malformed \\u escape"))?, 4)
                        };
                        i += used;
                        // A surrogate pair spells one character.
                        let mut v = v;
                        if (0xD800..0xDC00).contains(&v) && cs.get(i) == Some(&'\\') && cs.get(i + 1) == Some(&'u') {
                            let h: String = cs.get(i + 2..i + 6).map(|s| s.iter().collect()).unwrap_or_default();
                            if let Ok(lo) = u32::from_str_radix(&h, 16) {
                                if (0xDC00..0xE000).contains(&lo) {
                                    v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
                                    i += 6;
                                }
                            }
                        }
                        if (0xD800..0xE000).contains(&v) {
                            return Err(unsupported("a lone surrogate"));
                        }
                        out.push_str(&format!("\\x{{{v:x}}}"));
                    }
                    'p' | 'P' => {
                        // A Unicode property: `\p{Name}` copied whole.
                        out.push('\\');
                        out.push(e);
                        if cs.get(i) == Some(&'{') {
                            let end = cs[i..]
                                .iter()
                                .position(|&c| c == '}')
                                .ok_or_else(|| unsupported("a malformed \\p escape"))?;
                            let name: String = cs[i + 1..i + end].iter().collect();
                            // ECMA's long names (`Letter`) are Rust's too,
                            // except for a few spellings.
                            let name = match name.as_str() {
                                "Letter" => "L".to_string(),
                                "Lowercase_Letter" => "Ll".to_string(),
                                "Uppercase_Letter" => "Lu".to_string(),
                                "Number" => "N".to_string(),
                                "Decimal_Number" | "digit" => "Nd".to_string(),
                                "Punctuation" => "P".to_string(),
                                "Symbol" => "S".to_string(),
                                _ => name,
                            };
                            out.push('{');
                            out.push_str(&name);
                            out.push('}');
                            i += end + 1;
                        }
                    }
                    other => out.push_str(&hex(other)),
                }
                continue;
            }
            '[' if in_class => out.push_str(r"\["),
            '[' => {
                in_class = true;
                out.push('[');
                if cs.get(i + 1) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                if cs.get(i + 1) == Some(&']') {
                    return Err(unsupported("an empty character class"));
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            '&' | '~' if in_class => out.push_str(&hex(c)),
            '-' if in_class && cs.get(i + 1) == Some(&'-') => out.push_str(&hex(c)),
            '.' if !in_class => out.push_str(r"[^\n\r\x{2028}\x{2029}]"),
            '(' if !in_class && cs.get(i + 1) == Some(&'?') => {
                let rest: String = cs[i + 2..].iter().take(2).collect();
                if rest.starts_with('=') || rest.starts_with('!') || rest == "<=" || rest == "<!" {
                    return Err(unsupported("a lookaround"));
                }
                out.push('(');
            }
            '{' if !in_class => {
                // A quantifier only in the form {n}, {n,} or {n,m} (copied
                // whole); any other brace is a literal, as in ECMA-262.
                let rest: String = cs[i..].iter().collect();
                let quant = rest.find('}').map(|end| &rest[..=end]).filter(|q| {
                    let inner = &q[1..q.len() - 1];
                    let (a, b) = inner.split_once(',').unwrap_or((inner, "0"));
                    !a.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit())
                });
                match quant {
                    Some(q) => {
                        out.push_str(q);
                        i += q.chars().count();
                        continue;
                    }
                    None => out.push_str(r"\{"),
                }
            }
            '}' if !in_class => out.push_str(r"\}"),
            _ => out.push(c),
        }
        i += 1;
    }
    Ok(out)
}

/// An ECMA-262 pattern parsed as Rust's regex syntax reads it after
/// [`ecma_to_rust`] (Unicode, UTF-8).
pub(super) fn pattern_hir(pattern: &str) -> Result<Hir> {
    let rust = ecma_to_rust(pattern)?;
    regex_syntax::ParserBuilder::new()
        .unicode(true)
        .utf8(true)
        .nest_limit(100)
        .build()
        .parse(&rust)
        .map_err(|e| {
            Error::Usage(format!(
                "pattern {pattern:?} does not parse: {}",
                e.to_string().lines().last().unwrap_or("")
            ))
        })
}

/// The regex (over canonically encoded text, without quotes) of the
/// strings in which `pattern` (ECMA-262) finds a match, as JSON Schema's
/// `pattern` means it: a search, anchored only where the pattern says.
pub fn pattern_body(pattern: &str) -> Result<String> {
    let hir = pattern_hir(pattern)?;
    let mut alts = Vec::new();
    for branch in top_branches(&hir) {
        let (start, mid, end) = peel_anchors(branch);
        let pre = if start { "" } else { "(?:" };
        let mut body = String::new();
        if !start {
            body.push_str(pre);
            body.push_str(CH);
            body.push_str("*)");
        }
        for h in mid {
            body.push_str(&enc_hir(h)?);
        }
        if !end {
            body.push_str(&format!("{CH}*"));
        }
        alts.push(body);
    }
    Ok(format!("(?:{})", alts.join("|")))
}

/// Whether a pattern matches every string under search semantics: some
/// branch that is not anchored at both ends can match the empty string
/// (`.*`, `""`, `^a*`), so a match exists in any string.
pub fn is_universal(pattern: &str) -> bool {
    let Ok(hir) = pattern_hir(pattern) else { return false };
    top_branches(&hir).into_iter().any(|b| {
        let (start, mid, end) = peel_anchors(b);
        !(start && end)
            && mid
                .iter()
                .all(|h| h.properties().minimum_len() == Some(0) && h.properties().look_set().is_empty())
    })
}

/// A fully anchored pattern intersected with a length range, when that is
/// a regex rewrite: every branch has a fixed length in characters except
/// for at most one repetition of a single character, whose bounds absorb
/// the range (`^[a-z][a-z0-9]*$` with maxLength 8 is `[a-z][a-z0-9]{0,7}`).
/// `Ok(None)` when the pattern has another shape.
pub fn pattern_body_len(pattern: &str, min: u64, max: Option<u64>) -> Result<Option<String>> {
    let hir = pattern_hir(pattern)?;
    let mut alts = Vec::new();
    for branch in top_branches(&hir) {
        let (start, mid, end) = peel_anchors(branch);
        if !(start && end) {
            return Ok(None);
        }
        let mut fixed = 0u64;
        let mut adjustable = None;
        for (i, h) in mid.iter().enumerate() {
            match fixed_len(h) {
                Some(n) => fixed += n,
                None => match h.kind() {
                    HirKind::Repetition(r) if fixed_len(&r.sub) == Some(1) && adjustable.is_none() => adjustable = Some((i, r)),
                    _ => return Ok(None),
                },
            }
        }
        let mut body = String::new();
        match adjustable {
            None => {
                if fixed < min || max.is_some_and(|m| fixed > m) {
                    continue;
                }
                for h in &mid {
                    body.push_str(&enc_hir(h)?);
                }
            }
            Some((at, r)) => {
                let lo = (r.min as u64).max(min.saturating_sub(fixed));
                let hi = match (r.max, max) {
                    (Some(b), Some(m)) => Some((b as u64).min(m.saturating_sub(fixed))),
                    (Some(b), None) => Some(b as u64),
                    (None, Some(m)) => Some(m.saturating_sub(fixed)),
                    (None, None) => None,
                };
                if max.is_some_and(|m| m < fixed) || hi.is_some_and(|h| h < lo) || lo > 100_000 || hi.is_some_and(|h| h > 100_000) {
                    continue;
                }
                for (i, h) in mid.iter().enumerate() {
                    if i == at {
                        let sub = enc_hir(&r.sub)?;
                        body.push_str(&match hi {
                            Some(h) => format!("(?:{sub}){{{lo},{h}}}"),
                            None => format!("(?:{sub}){{{lo},}}"),
                        });
                    } else {
                        body.push_str(&enc_hir(h)?);
                    }
                }
            }
        }
        alts.push(body);
    }
    if alts.is_empty() {
        return Ok(Some(r"[^\x00-\x{10FFFF}]".into()));
    }
    Ok(Some(format!("(?:{})", alts.join("|"))))
}

/// The length in characters of every string `h` matches, if it is fixed.
fn fixed_len(h: &Hir) -> Option<u64> {
    match h.kind() {
        HirKind::Empty => Some(0),
        HirKind::Literal(l) => std::str::from_utf8(&l.0).ok().map(|s| s.chars().count() as u64),
        HirKind::Class(_) => Some(1),
        HirKind::Look(_) => None,
        HirKind::Repetition(r) => match r.max {
            Some(m) if m == r.min => fixed_len(&r.sub).map(|n| n * m as u64),
            _ => None,
        },
        HirKind::Capture(c) => fixed_len(&c.sub),
        HirKind::Concat(xs) => xs.iter().map(fixed_len).sum(),
        HirKind::Alternation(xs) => {
            let first = fixed_len(&xs[0])?;
            xs.iter().all(|x| fixed_len(x) == Some(first)).then_some(first)
        }
    }
}

pub(super) fn top_branches(h: &Hir) -> Vec<&Hir> {
    match h.kind() {
        HirKind::Alternation(bs) => bs.iter().collect(),
        HirKind::Capture(c) => top_branches(&c.sub),
        _ => vec![h],
    }
}

/// Leading `^` / trailing `$` of a branch: (anchored start, the rest,
/// anchored end).
pub(super) fn peel_anchors(h: &Hir) -> (bool, Vec<&Hir>, bool) {
    let items: Vec<&Hir> = match h.kind() {
        HirKind::Concat(xs) => xs.iter().collect(),
        HirKind::Capture(c) => {
            if let HirKind::Concat(_) | HirKind::Look(_) = c.sub.kind() {
                return peel_anchors(&c.sub);
            }
            vec![h]
        }
        _ => vec![h],
    };
    let is = |x: &Hir, l: Look| matches!(x.kind(), HirKind::Look(k) if *k == l);
    let mut lo = 0;
    let mut hi = items.len();
    let mut start = false;
    let mut end = false;
    while lo < hi && is(items[lo], Look::Start) {
        start = true;
        lo += 1;
    }
    while hi > lo && is(items[hi - 1], Look::End) {
        end = true;
        hi -= 1;
    }
    (start, items[lo..hi].to_vec(), end)
}

/// A pattern's HIR as a regex over the canonical encoding.
fn enc_hir(h: &Hir) -> Result<String> {
    Ok(match h.kind() {
        HirKind::Empty => String::new(),
        HirKind::Literal(l) => {
            let s = std::str::from_utf8(&l.0).map_err(|_| unsupported("non-UTF-8 bytes"))?;
            s.chars().map(enc_char).collect()
        }
        HirKind::Class(Class::Unicode(c)) => {
            let ranges: Vec<(u32, u32)> = c.ranges().iter().map(|r| (r.start() as u32, r.end() as u32)).collect();
            class_regex(&ranges).unwrap_or_else(|| r"[^\x00-\x{10FFFF}]".into())
        }
        HirKind::Class(Class::Bytes(_)) => return Err(unsupported("a byte class")),
        HirKind::Look(_) => return Err(unsupported("an anchor or boundary inside the pattern")),
        HirKind::Repetition(r) => {
            let sub = enc_hir(&r.sub)?;
            match r.max {
                Some(m) if m == r.min => format!("(?:{sub}){{{m}}}"),
                Some(m) => format!("(?:{sub}){{{},{m}}}", r.min),
                None => format!("(?:{sub}){{{},}}", r.min),
            }
        }
        HirKind::Capture(c) => format!("(?:{})", enc_hir(&c.sub)?),
        HirKind::Concat(xs) => xs.iter().map(enc_hir).collect::<Result<Vec<_>>>()?.concat(),
        HirKind::Alternation(xs) => format!("(?:{})", xs.iter().map(enc_hir).collect::<Result<Vec<_>>>()?.join("|")),
    })
}

/// A pattern as a plain Rust regex with search semantics, for testing
/// property names against `patternProperties`.
pub fn pattern_search_regex(pattern: &str) -> Result<String> {
    Ok(format!("(?s:.)*(?:{})(?s:.)*", ecma_to_rust(pattern)?))
}

/// A real calendar date (leap years included); year 0000 excluded, as
/// Python's `date` (and so `jsonschema`) rejects it.
const DATE: &str = r"(?:(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)-02-29)";
const TIME: &str = r"(?:(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?(?:[zZ]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]))";
const DUR_TIME: &str = r"T(?:[0-9]+H(?:[0-9]+M(?:[0-9]+S)?)?|[0-9]+M(?:[0-9]+S)?|[0-9]+S)";
const IPV4: &str = r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
/// A hostname label of at most 62 characters, no hyphen at either end nor
/// in third position (so never the reserved `??--` form), and at most
/// four labels (251 characters, inside the 253 limit).
const LABEL: &str = r"[A-Za-z0-9](?:[A-Za-z0-9]|[A-Za-z0-9-][A-Za-z0-9](?:[A-Za-z0-9-]{0,58}[A-Za-z0-9])?)?";

/// RFC 6901: `/`-separated reference tokens, `~` only as `~0` / `~1`.
const JSON_POINTER: &str = r#"(?:/(?:[^~/"\\\x00-\x1f]|~[01])*)*"#;

/// The body regex (raw ASCII, no escapes needed) of a supported `format`;
/// `Ok(None)` for a format the specification does not define (ignored as
/// an annotation); an error for a defined format we cannot enforce.
pub fn format_body(format: &str) -> std::result::Result<Option<String>, String> {
    let h4 = "[0-9a-fA-F]{1,4}";
    Ok(Some(match format {
        "date" => DATE.to_string(),
        "time" => TIME.to_string(),
        "date-time" => format!("{DATE}[Tt]{TIME}"),
        "duration" => format!(r"P(?:(?:[0-9]+Y(?:[0-9]+M(?:[0-9]+D)?)?|[0-9]+M(?:[0-9]+D)?|[0-9]+D)(?:{DUR_TIME})?|{DUR_TIME}|[0-9]+W)"),
        "email" => {
            let atom = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+";
            format!(r"{atom}(?:\.{atom})*@(?:{LABEL}\.){{0,3}}{LABEL}")
        }
        "hostname" => format!(r"(?:{LABEL}\.){{0,3}}{LABEL}"),
        "ipv4" => IPV4.to_string(),
        "ipv6" => {
            let h = h4;
            let ls32 = format!("(?:{h}:{h}|{IPV4})");
            [
                format!("(?:{h}:){{6}}{ls32}"),
                format!("::(?:{h}:){{5}}{ls32}"),
                format!("(?:{h})?::(?:{h}:){{4}}{ls32}"),
                format!("(?:(?:{h}:){{0,1}}{h})?::(?:{h}:){{3}}{ls32}"),
                format!("(?:(?:{h}:){{0,2}}{h})?::(?:{h}:){{2}}{ls32}"),
                format!("(?:(?:{h}:){{0,3}}{h})?::{h}:{ls32}"),
                format!("(?:(?:{h}:){{0,4}}{h})?::{ls32}"),
                format!("(?:(?:{h}:){{0,5}}{h})?::{h}"),
                format!("(?:(?:{h}:){{0,6}}{h})?::"),
            ]
            .map(|a| format!("(?:{a})"))
            .join("|")
        }
        "uuid" => "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}".to_string(),
        "uri" | "uri-reference" => {
            let unres = r"A-Za-z0-9._~\-";
            let sub = r"!$&'()*+,;=";
            let pct = "%[0-9A-Fa-f]{2}";
            let pchar = format!("(?:[{unres}{sub}:@]|{pct})");
            let reg = format!("(?:[{unres}{sub}]|{pct})*");
            let user = format!("(?:(?:[{unres}{sub}:]|{pct})*@)?");
            let auth = format!("//{user}{reg}(?::[0-9]*)?");
            let abempty = format!("(?:/{pchar}*)*");
            let tail = format!(r"(?:\?(?:{pchar}|[/?])*)?(?:#(?:{pchar}|[/?])*)?");
            let scheme = "[A-Za-z][A-Za-z0-9+.-]*:";
            let hier = format!("(?:{auth}{abempty}|/(?:{pchar}+{abempty})?|{pchar}+{abempty})?");
            let uri = format!("{scheme}{hier}{tail}");
            if format == "uri" {
                uri
            } else {
                let seg_nc = format!("(?:[{unres}{sub}@]|{pct})+");
                let rel = format!("(?:{auth}{abempty}|/(?:{pchar}+{abempty})?|{seg_nc}{abempty})?{tail}");
                format!("(?:{uri}|{rel})")
            }
        }
        "json-pointer" => JSON_POINTER.to_string(),
        "relative-json-pointer" => format!("(?:0|[1-9][0-9]*)(?:#|{JSON_POINTER})"),
        "uri-template" => {
            let pct = "%[0-9A-Fa-f]{2}";
            let varchar = format!("(?:[A-Za-z0-9_]|{pct})");
            let varspec = format!(r"{varchar}(?:\.?{varchar})*(?::[1-9][0-9]{{0,3}}|\*)?");
            let expr = format!(r"\{{[+#./;?&=,!@|]?{varspec}(?:,{varspec})*\}}");
            format!(r"(?:[!#$&()*+,\-./0-9:;=?@A-Z\[\]_a-z~]|{pct}|{expr})*")
        }
        // ASCII subsets of the internationalised forms: conservative
        // (everything accepted is valid), not complete.
        "idn-email" => return format_body("email"),
        "idn-hostname" => return format_body("hostname"),
        "iri" => return format_body("uri"),
        "iri-reference" => return format_body("uri-reference"),
        "regex" => return Err(format!("format {format:?} (a regex's syntax) is not a regular language")),
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex_automata::dfa::{dense, Automaton};
    use regex_automata::Input;

    fn m(re: &str, s: &str) -> bool {
        let d = dense::DFA::new(&format!("^(?:{re})$")).unwrap();
        d.try_search_fwd(&Input::new(s)).unwrap().is_some()
    }

    #[test]
    fn canonical_encoding() {
        assert!(m(CH, "a") && m(CH, "é") && m(CH, r"\n") && m(CH, r"\u001f") && m(CH, r#"\""#));
        assert!(!m(CH, r"\u0061") && !m(CH, r"\/") && !m(CH, "\n") && !m(CH, r"\u001F"));
        assert_eq!(encode("a\"\n\u{1}/é"), r#""a\"\n\u0001/é""#);
    }

    #[test]
    fn keys_not_in_set() {
        let r = format!("\"{}\"", not_in_set(&["ab".into(), "a".into(), "b\"".into()]));
        let ascii = format!("\"{}\"", not_in_set(&["ab".into(), "a".into(), "é".into()][..2]));
        for (s, ok) in [
            ("\"a\"", false),
            ("\"ab\"", false),
            ("\"\"", true),
            ("\"abé\"", true),
            ("\"é\"", true),
            ("\"a\\n\"", true),
            ("\"ac\"", true),
            ("\"~\"", true),
        ] {
            assert_eq!(m(&ascii, s), ok, "ascii {s}");
        }
        for (s, ok) in [
            ("\"a\"", false),
            ("\"ab\"", false),
            (r#""b\"""#, false),
            ("\"\"", true),
            ("\"abc\"", true),
            ("\"b\"", true),
            ("\"x\"", true),
            ("\"aa\"", true),
        ] {
            assert_eq!(m(&r, s), ok, "{s}");
        }
    }

    #[test]
    fn patterns_are_searches() {
        let p = |pat: &str, s: &str| m(&format!("\"{}\"", pattern_body(pat).unwrap()), s);
        assert!(p("^[a-c]+$", "\"abc\"") && !p("^[a-c]+$", "\"abd\""));
        assert!(p("b", "\"abc\"") && !p("b", "\"ac\""));
        assert!(p(r"^\d{2}", "\"12x\"") && !p(r"^\d{2}", "\"x12\""));
        assert!(p("a$", "\"ba\"") && !p("a$", "\"ab\""));
        assert!(p("^\"", r#""\"x""#));
        assert!(p(r"^\w+$", "\"a_1\"") && !p(r"^\w+$", "\"é\""));
        assert!(p("^a.c$", "\"a\\\"c\"") && !p("^a.c$", "\"a\\nc\""));
        assert!(p("^(?:x|y){2}$", "\"xy\""));
        assert!(p(r"^[^\s]{1,3}$", "\"ab\"") && !p(r"^[^\s]{1,3}$", "\"a b\""));
        assert!(p(r"^a{,2}$", "\"a{,2}\""));
        let pl = |pat: &str, lo: u64, hi: Option<u64>, s: &str| m(&format!("\"{}\"", pattern_body_len(pat, lo, hi).unwrap().unwrap()), s);
        assert!(pl("^[a-z][a-z0-9]*$", 2, Some(3), "\"ab\"") && pl("^[a-z][a-z0-9]*$", 2, Some(3), "\"a1b\""));
        assert!(!pl("^[a-z][a-z0-9]*$", 2, Some(3), "\"a\"") && !pl("^[a-z][a-z0-9]*$", 2, Some(3), "\"abcd\""));
        assert!(pl("^(ab|cd)x{2}$", 4, Some(4), "\"cdxx\"") && !pl("^(ab|cd)x{2}$", 5, None, "\"cdxx\""));
        assert!(pattern_body_len("^[a-z]+", 1, Some(4)).unwrap().is_none() && pattern_body_len("^a+b+$", 1, Some(4)).unwrap().is_none());
        assert!(is_universal(".*") && is_universal("") && is_universal("^a*") && is_universal(".*$"));
        assert!(!is_universal("^.*$") && !is_universal(".+") && !is_universal("a"));
        for bad in ["(?=a)", "(?!a)", r"(a)\1", r"\bfoo", "(?<=a)b"] {
            assert!(pattern_body(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats() {
        // As the compiler uses them: between quotes, so top-level
        // alternations must be grouped by the caller.
        let f = |name: &str, s: &str| m(&format!("\"(?:{})\"", format_body(name).unwrap().unwrap()), &format!("\"{s}\""));
        assert!(
            f("date", "2020-02-29") && !f("date", "2021-02-29") && !f("date", "1966-09-31") && f("date", "2000-02-29") && !f("date", "1900-02-29")
        );
        assert!(f("date-time", "1963-06-19T08:30:06.283185Z") && !f("date-time", "1963-06-19 08:30:06Z"));
        assert!(f("time", "08:30:06+01:00") && !f("time", "24:00:00Z"));
        assert!(f("ipv4", "192.168.0.1") && !f("ipv4", "256.1.1.1") && !f("ipv4", "01.1.1.1"));
        assert!(
            f("ipv6", "::1")
                && f("ipv6", "2001:db8::ff00:42:8329")
                && f("ipv6", "::ffff:192.0.2.1")
                && !f("ipv6", "12345::")
                && !f("ipv6", "1:2:3:4:5:6:7:8:9")
        );
        assert!(f("uuid", "2eb8aa08-aa98-11ea-b4aa-73b441d16380") && !f("uuid", "2eb8aa08aa9811eab4aa73b441d16380"));
        assert!(f("email", "joe.bloggs@example.com") && !f("email", "joe..bloggs@example.com") && !f("email", "2962"));
        assert!(f("hostname", "www.example.com") && !f("hostname", "-a.com") && !f("hostname", "a_b.com"));
        assert!(f("uri", "http://foo.bar/?baz=qux#quux") && !f("uri", "//foo.bar/?baz=qux") && !f("uri", "http:// shouldfail.com"));
        assert!(f("duration", "P4DT12H30M5S") && !f("duration", "PT1D") && !f("duration", "P"));
        assert!(format_body("int32").unwrap().is_none() && format_body("regex").is_err());
        assert!(
            f("uri-template", "http://example.com/dictionary/{term:1}/{term}") && !f("uri-template", "http://example.com/dictionary/{term:1}/{term")
        );
        assert!(f("relative-json-pointer", "1/foo") && f("relative-json-pointer", "0#") && !f("relative-json-pointer", "/foo"));
        assert!(f("json-pointer", "/foo/bar~0/baz~1") && !f("json-pointer", "/foo/bar~"));
    }
}
