//! Exact regexes for JSON numbers in a range.
//!
//! A bound such as `minimum: 0.5, exclusiveMaximum: 100` is enforced by the
//! lexer, so it has to be a regex over the number's JSON text. Regexes
//! cannot compare, but they can compare *digit strings* one position at a
//! time: a number lies in `[lo, hi]` iff its integer part is strictly
//! between the bounds' integer parts, or equal to one of them and its
//! fraction compares the right way, digit by digit. Both comparisons are
//! small recursive constructions over the bounds' digits, so the regex is
//! linear in the bounds' length, exact, and never enumerates values.
//!
//! Bounded numbers are written without an exponent (`150`, not `1.5e2`):
//! an exponent shifts the digits against the bound and has no finite
//! digit-wise description. Unbounded numbers keep the full JSON syntax.

use std::collections::HashMap;

/// A non-negative decimal `int.frac`, `int` without leading zeros (`"0"`
/// for zero), `frac` without trailing zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dec {
    pub neg: bool,
    pub int: String,
    pub frac: String,
}

impl Dec {
    /// Parse the decimal text Rust's `Display` writes for an `f64` or an
    /// integer (`-12.5`, `0.001`, `100`; never an exponent).
    pub fn parse(text: &str) -> Option<Dec> {
        let (neg, t) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let (i, f) = t.split_once('.').unwrap_or((t, ""));
        if i.is_empty() || !i.bytes().all(|b| b.is_ascii_digit()) || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let int = i.trim_start_matches('0');
        let int = if int.is_empty() { "0" } else { int };
        let frac = f.trim_end_matches('0');
        let zero = int == "0" && frac.is_empty();
        Some(Dec {
            neg: neg && !zero,
            int: int.to_string(),
            frac: frac.to_string(),
        })
    }

    /// The exact decimal value of a JSON number.
    pub fn from_json(n: &serde_json::Number) -> Option<Dec> {
        if let Some(i) = n.as_i64() {
            return Dec::parse(&i.to_string());
        }
        if let Some(u) = n.as_u64() {
            return Dec::parse(&u.to_string());
        }
        let f = n.as_f64()?;
        if !f.is_finite() {
            return None;
        }
        Dec::parse(&format!("{f}"))
    }

    fn is_zero(&self) -> bool {
        self.int == "0" && self.frac.is_empty()
    }

    fn negated(&self) -> Dec {
        Dec {
            neg: !self.neg && !self.is_zero(),
            ..self.clone()
        }
    }

    fn abs_cmp(&self, o: &Dec) -> std::cmp::Ordering {
        self.int
            .len()
            .cmp(&o.int.len())
            .then_with(|| self.int.cmp(&o.int))
            .then_with(|| self.frac.cmp(&o.frac))
    }

    pub fn compare(&self, o: &Dec) -> std::cmp::Ordering {
        use std::cmp::Ordering::*;
        match (self.neg, o.neg) {
            (false, true) => Greater,
            (true, false) => Less,
            (false, false) => self.abs_cmp(o),
            (true, true) => o.abs_cmp(self),
        }
    }
}

/// One side of a range: the bound and whether it is exclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub value: Dec,
    pub exclusive: bool,
}

/// Whether `[lo, hi]` (bounds as given) contains no number.
pub fn is_empty_range(lo: Option<&Bound>, hi: Option<&Bound>) -> bool {
    match (lo, hi) {
        (Some(l), Some(h)) => match l.value.compare(&h.value) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => l.exclusive || h.exclusive,
            std::cmp::Ordering::Less => false,
        },
        _ => false,
    }
}

/// JSON text of an unbounded number.
pub const NUMBER_RE: &str = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?";
/// JSON text of an unbounded integer (`1.0` is an integer in JSON Schema).
pub const INTEGER_RE: &str = r"-?(?:0|[1-9][0-9]*)(?:\.0+)?";

/// Regex for the JSON texts of numbers in the range: `integer` restricts
/// to integral values; `frac_digits` (from `multipleOf: 0.01`) allows at
/// most that many significant fraction digits. `None` when the range is
/// empty.
pub fn range_regex(lo: Option<&Bound>, hi: Option<&Bound>, integer: bool, frac_digits: Option<usize>) -> Option<String> {
    if lo.is_none() && hi.is_none() {
        return Some(match (integer, frac_digits) {
            (true, _) => INTEGER_RE.to_string(),
            (false, None) => NUMBER_RE.to_string(),
            (false, Some(k)) => format!(r"-?(?:0|[1-9][0-9]*){}", frac_regex(&FracLo::Free, &FracHi::Free, Some(k))?),
        });
    }
    if is_empty_range(lo, hi) {
        return None;
    }
    let zero = Bound {
        value: Dec::parse("0").unwrap(),
        exclusive: false,
    };
    let mut alts = Vec::new();
    // Non-negative part: [max(lo, 0), hi].
    let pos_lo = match lo {
        Some(l) if !l.value.neg => l.clone(),
        _ => zero.clone(),
    };
    let pos_hi = hi.cloned();
    if !hi.is_some_and(|h| h.value.neg) {
        if let Some(r) = nonneg(&pos_lo, pos_hi.as_ref(), integer, frac_digits) {
            alts.push(r);
        }
    }
    // Negative part: x = -y with y in [max(-hi, 0), -lo]; y = 0 ("-0") is
    // included exactly when 0 is in range, which the same bounds say.
    if lo.is_none_or(|l| l.value.neg || l.value.is_zero() && !l.exclusive) {
        let neg_lo = match hi {
            Some(h) if h.value.neg || h.value.is_zero() => Bound {
                value: h.value.negated(),
                exclusive: h.exclusive,
            },
            _ => zero.clone(),
        };
        let neg_hi = lo.map(|l| Bound {
            value: l.value.negated(),
            exclusive: l.exclusive,
        });
        if let Some(r) = nonneg(&neg_lo, neg_hi.as_ref(), integer, frac_digits) {
            alts.push(format!("-(?:{r})"));
        }
    }
    if alts.is_empty() {
        None
    } else {
        Some(alts.join("|"))
    }
}

/// Non-negative numbers in `[lo, hi]` (`lo >= 0`).
fn nonneg(lo: &Bound, hi: Option<&Bound>, integer: bool, frac_digits: Option<usize>) -> Option<String> {
    if is_empty_range(Some(lo), hi) {
        return None;
    }
    if integer {
        // Integral values: ceil / floor the bounds to integers.
        let lo_i = {
            let mut v = lo.value.int.clone();
            if !lo.value.frac.is_empty() || lo.exclusive {
                v = inc(&v);
            }
            v
        };
        let hi_i = match hi {
            None => None,
            Some(h) => {
                if h.value.frac.is_empty() && h.exclusive {
                    if h.value.int == "0" {
                        return None;
                    }
                    Some(dec(&h.value.int))
                } else {
                    Some(h.value.int.clone())
                }
            }
        };
        let r = int_range(&lo_i, hi_i.as_deref())?;
        return Some(format!(r"(?:{r})(?:\.0+)?"));
    }
    let (a, fa) = (&lo.value.int, &lo.value.frac);
    let lo_f = FracLo::Tight(fa.clone(), lo.exclusive);
    let mut alts = Vec::new();
    match hi {
        Some(h) if h.value.int == *a => {
            let hi_f = FracHi::Tight(h.value.frac.clone(), h.exclusive);
            if let Some(f) = frac_regex(&lo_f.norm(), &hi_f, frac_digits) {
                alts.push(format!("{a}{f}"));
            }
        }
        _ => {
            if let Some(f) = frac_regex(&lo_f.norm(), &FracHi::Free, frac_digits) {
                alts.push(format!("{a}{f}"));
            }
            let mid_lo = inc(a);
            let any = frac_regex(&FracLo::Free, &FracHi::Free, frac_digits)?;
            match hi {
                None => {
                    if let Some(r) = int_range(&mid_lo, None) {
                        alts.push(format!("(?:{r}){any}"));
                    }
                }
                Some(h) => {
                    let b = &h.value.int;
                    if mid_lo.len() < b.len() || (mid_lo.len() == b.len() && mid_lo < *b) {
                        if let Some(r) = int_range(&mid_lo, Some(&dec(b))) {
                            alts.push(format!("(?:{r}){any}"));
                        }
                    }
                    let hi_f = FracHi::Tight(h.value.frac.clone(), h.exclusive);
                    if let Some(f) = frac_regex(&FracLo::Free, &hi_f, frac_digits) {
                        alts.push(format!("{b}{f}"));
                    }
                }
            }
        }
    }
    if alts.is_empty() {
        None
    } else {
        Some(alts.join("|"))
    }
}

/// Lower constraint on the fraction digits still to come: `Tight(f, excl)`
/// means the rest must be `>= 0.f` (`>` if `excl`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FracLo {
    Free,
    Tight(String, bool),
}

impl FracLo {
    /// `>= 0.0` holds for every digit string: no constraint at all.
    fn norm(&self) -> FracLo {
        match self {
            FracLo::Tight(f, false) if f.is_empty() => FracLo::Free,
            x => x.clone(),
        }
    }
}

/// Upper constraint: `Tight(f, excl)`: the rest must be `<= 0.f` (`<`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FracHi {
    Free,
    Tight(String, bool),
}

/// The optional fraction `(\.[0-9]+)?` of a number whose integer part
/// equals the bounds' (where tight), as a regex; `None` when no fraction
/// (not even the empty one) satisfies the constraints.
fn frac_regex(lo: &FracLo, hi: &FracHi, sig: Option<usize>) -> Option<String> {
    let mut memo = HashMap::new();
    let empty_ok = empty_ok(lo, hi);
    let nonempty = digits_nonempty(lo, hi, sig, &mut memo);
    match (empty_ok, nonempty) {
        (true, Some(d)) => Some(format!(r"(?:\.(?:{d}))?")),
        (true, None) => Some(String::new()),
        (false, Some(d)) => Some(format!(r"\.(?:{d})")),
        (false, None) => None,
    }
}

/// Whether the empty rest (all zeros) satisfies both sides.
fn empty_ok(lo: &FracLo, hi: &FracHi) -> bool {
    let lo_ok = match lo {
        FracLo::Free => true,
        FracLo::Tight(f, excl) => f.is_empty() && !excl,
    };
    let hi_ok = match hi {
        FracHi::Free => true,
        FracHi::Tight(f, excl) => !(f.is_empty() && *excl),
    };
    lo_ok && hi_ok
}

type Memo = HashMap<(FracLo, FracHi, Option<usize>), Option<String>>;

/// Digit strings of length >= 1 satisfying the constraints, at most `sig`
/// of which may be nonzero-significant (digits past `sig` must be zeros).
fn digits_nonempty(lo: &FracLo, hi: &FracHi, sig: Option<usize>, memo: &mut Memo) -> Option<String> {
    let key = (lo.clone(), hi.clone(), sig);
    if let Some(r) = memo.get(&key) {
        return r.clone();
    }
    let r = digits_nonempty_uncached(lo, hi, sig, memo);
    memo.insert(key, r.clone());
    r
}

fn digits_nonempty_uncached(lo: &FracLo, hi: &FracHi, sig: Option<usize>, memo: &mut Memo) -> Option<String> {
    if let (FracLo::Free, FracHi::Free) = (lo, hi) {
        return Some(match sig {
            None => "[0-9]+".to_string(),
            Some(0) => "0+".to_string(),
            Some(k) => format!("[0-9]{{1,{k}}}0*"),
        });
    }
    // States a zero digit maps to themselves (an empty bound on one side):
    // closed forms, else the recursion below would not terminate.
    match hi {
        FracHi::Tight(f, true) if f.is_empty() => return None,
        FracHi::Tight(f, false) if f.is_empty() => {
            return match lo {
                FracLo::Free => Some("0+".into()),
                _ => None,
            }
        }
        _ => {}
    }
    if let (FracLo::Tight(f, true), FracHi::Free) = (lo, hi) {
        if f.is_empty() {
            // Value > 0: a nonzero digit, within the first `sig` places.
            return match sig {
                None => Some("0*[1-9][0-9]*".into()),
                Some(0) => None,
                Some(k) => Some(
                    (0..k)
                        .map(|z| format!("0{{{z}}}[1-9][0-9]{{0,{}}}0*", k - z - 1))
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
            };
        }
    }
    // The state after one more digit `d`, grouped by next state.
    let mut groups: Vec<((FracLo, FracHi), Vec<u8>)> = Vec::new();
    for d in 0..=9u8 {
        if sig == Some(0) && d != 0 {
            continue;
        }
        let lo2 = match lo {
            FracLo::Free => Some(FracLo::Free),
            FracLo::Tight(f, excl) => {
                let l = f.bytes().next().map_or(0, |c| c - b'0');
                match d.cmp(&l) {
                    std::cmp::Ordering::Greater => Some(FracLo::Free),
                    std::cmp::Ordering::Equal => Some(FracLo::Tight(f.get(1..).unwrap_or("").to_string(), *excl).norm()),
                    std::cmp::Ordering::Less => None,
                }
            }
        };
        let hi2 = match hi {
            FracHi::Free => Some(FracHi::Free),
            FracHi::Tight(f, excl) => {
                let h = f.bytes().next().map_or(0, |c| c - b'0');
                match d.cmp(&h) {
                    std::cmp::Ordering::Less => Some(FracHi::Free),
                    std::cmp::Ordering::Equal => Some(FracHi::Tight(f.get(1..).unwrap_or("").to_string(), *excl)),
                    std::cmp::Ordering::Greater => None,
                }
            }
        };
        if let (Some(l), Some(h)) = (lo2, hi2) {
            if let Some(g) = groups.iter_mut().find(|(k, _)| *k == (l.clone(), h.clone())) {
                g.1.push(d);
            } else {
                groups.push(((l, h), vec![d]));
            }
        }
    }
    let sig2 = sig.map(|k| k.saturating_sub(1));
    let mut alts = Vec::new();
    for ((l, h), ds) in groups {
        let class = digit_class(&ds);
        let end = empty_ok(&l, &h);
        let more = digits_nonempty(&l, &h, sig2, memo);
        match (end, more) {
            (true, Some(m)) => alts.push(format!("{class}(?:{m})?")),
            (true, None) => alts.push(class),
            (false, Some(m)) => alts.push(format!("{class}(?:{m})")),
            (false, None) => {}
        }
    }
    if alts.is_empty() {
        None
    } else {
        Some(alts.join("|"))
    }
}

fn digit_class(ds: &[u8]) -> String {
    if ds.len() == 1 {
        return format!("{}", ds[0]);
    }
    let (first, last) = (ds[0], ds[ds.len() - 1]);
    if (last - first) as usize + 1 == ds.len() {
        format!("[{first}-{last}]")
    } else {
        format!("[{}]", ds.iter().map(|d| d.to_string()).collect::<String>())
    }
}

/// `s + 1` for a decimal digit string.
fn inc(s: &str) -> String {
    let mut d: Vec<u8> = s.bytes().collect();
    let mut i = d.len();
    loop {
        if i == 0 {
            d.insert(0, b'1');
            break;
        }
        i -= 1;
        if d[i] == b'9' {
            d[i] = b'0';
        } else {
            d[i] += 1;
            break;
        }
    }
    String::from_utf8(d).unwrap_or_default()
}

/// `s - 1` for a positive decimal digit string.
fn dec(s: &str) -> String {
    let mut d: Vec<u8> = s.bytes().collect();
    let mut i = d.len();
    while i > 0 {
        i -= 1;
        if d[i] == b'0' {
            d[i] = b'9';
        } else {
            d[i] -= 1;
            break;
        }
    }
    let t = String::from_utf8(d).unwrap_or_default();
    let t = t.trim_start_matches('0');
    if t.is_empty() {
        "0".into()
    } else {
        t.into()
    }
}

fn num_lt(a: &str, b: &str) -> bool {
    a.len() < b.len() || (a.len() == b.len() && a < b)
}

/// Integers `a..=b` (`b = None`: unbounded) as canonical digit strings.
pub fn int_range(a: &str, b: Option<&str>) -> Option<String> {
    if let Some(b) = b {
        if num_lt(b, a) {
            return None;
        }
    }
    let mut alts = Vec::new();
    let mut lo = a.to_string();
    loop {
        let n = lo.len();
        let top = "9".repeat(n);
        match b {
            Some(b) if b.len() == n => {
                alts.push(same_len(lo.as_bytes(), b.as_bytes()));
                break;
            }
            _ => {
                alts.push(same_len(lo.as_bytes(), top.as_bytes()));
                if b.is_none() {
                    alts.push(format!("[1-9][0-9]{{{n},}}"));
                    break;
                }
                lo = format!("1{}", "0".repeat(n));
                if let Some(b) = b {
                    if b.len() > n + 1 {
                        // Whole lengths strictly between: one class each.
                        let (from, to) = (n + 1, b.len() - 1);
                        alts.push(format!("[1-9][0-9]{{{},{}}}", from - 1, to - 1));
                        lo = format!("1{}", "0".repeat(to));
                    }
                }
            }
        }
    }
    Some(alts.join("|"))
}

/// Digit strings of the same length between `a` and `b` inclusive.
fn same_len(a: &[u8], b: &[u8]) -> String {
    if a.is_empty() {
        return String::new();
    }
    if a.iter().all(|&c| c == b'0') && b.iter().all(|&c| c == b'9') {
        return format!("[0-9]{{{}}}", a.len());
    }
    if a[0] == b[0] {
        return format!("{}{}", a[0] as char, same_len(&a[1..], &b[1..]));
    }
    let n = a.len() - 1;
    let nines = vec![b'9'; n];
    let zeros = vec![b'0'; n];
    let mut alts = vec![format!("{}(?:{})", a[0] as char, same_len(&a[1..], &nines))];
    if b[0] - a[0] > 1 {
        alts.push(format!("[{}-{}][0-9]{{{n}}}", (a[0] + 1) as char, (b[0] - 1) as char));
    }
    alts.push(format!("{}(?:{})", b[0] as char, same_len(&zeros, &b[1..])));
    format!("(?:{})", alts.join("|"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex_automata::dfa::{dense, Automaton};
    use regex_automata::Input;

    fn full(re: &str) -> dense::DFA<Vec<u32>> {
        dense::DFA::new(&format!("^(?:{re})$")).unwrap()
    }
    fn is_match(d: &dense::DFA<Vec<u32>>, s: &str) -> bool {
        d.try_search_fwd(&Input::new(s)).unwrap().is_some()
    }
    fn b(v: &str, excl: bool) -> Bound {
        Bound {
            value: Dec::parse(v).unwrap(),
            exclusive: excl,
        }
    }

    #[test]
    fn int_ranges_match_exactly() {
        for (a, bb) in [(0, 0), (0, 9), (3, 47), (10, 99), (7, 1234), (99, 100), (0, 100000), (5, 5), (123, 4567)] {
            let d = full(&int_range(&a.to_string(), Some(&bb.to_string())).unwrap());
            for x in 0..12000u32 {
                assert_eq!(is_match(&d, &x.to_string()), x >= a && x <= bb, "{a}..{bb} at {x}");
            }
            assert!(!is_match(&d, "01"));
        }
        let d = full(&int_range("37", None).unwrap());
        for x in 0..5000u32 {
            assert_eq!(is_match(&d, &x.to_string()), x >= 37);
        }
    }

    /// Every decimal with up to 2 integer and 3 fraction digits, both
    /// signs, against the range computed with exact rationals (thousandths).
    #[test]
    fn decimal_ranges_match_exactly() {
        let cases = [
            (Some(("0.5", false)), Some(("100", true))),
            (Some(("-1.25", true)), Some(("2.5", false))),
            (Some(("-3", false)), None),
            (None, Some(("-0.1", false))),
            (Some(("1.05", false)), Some(("1.7", false))),
            (Some(("0", true)), None),
            (None, Some(("0", true))),
            (Some(("-0.5", false)), Some(("-0.25", true))),
        ];
        let milli = |s: &str| -> i64 {
            let d = Dec::parse(s).unwrap();
            let f = format!("{:0<3}", d.frac);
            let v = d.int.parse::<i64>().unwrap() * 1000 + f[..3].parse::<i64>().unwrap();
            if d.neg {
                -v
            } else {
                v
            }
        };
        for (lo, hi) in cases {
            for integer in [false, true] {
                let lo_b = lo.map(|(v, e)| b(v, e));
                let hi_b = hi.map(|(v, e)| b(v, e));
                let re = range_regex(lo_b.as_ref(), hi_b.as_ref(), integer, None);
                let d = re.as_deref().map(full);
                for i in -1500i64..=1500 {
                    let v = i * 10; // hundredths and tenths...
                    for text in texts(v) {
                        let x = milli(&text);
                        let ok_lo = lo.is_none_or(|(l, e)| if e { x > milli(l) } else { x >= milli(l) });
                        let ok_hi = hi.is_none_or(|(h, e)| if e { x < milli(h) } else { x <= milli(h) });
                        let ok_int = !integer || x % 1000 == 0;
                        let got = d.as_ref().is_some_and(|d| is_match(d, &text));
                        assert_eq!(got, ok_lo && ok_hi && ok_int, "{lo:?} {hi:?} int={integer} {text} re={re:?}");
                    }
                }
            }
        }
    }

    /// JSON spellings of v/1000: minimal, with trailing zeros, and "-0".
    fn texts(v: i64) -> Vec<String> {
        let neg = v < 0;
        let a = v.unsigned_abs();
        let (i, f) = (a / 1000, a % 1000);
        let s = if neg { "-" } else { "" };
        let mut out = vec![format!("{s}{i}.{f:03}")];
        let trimmed = format!("{f:03}").trim_end_matches('0').to_string();
        out.push(if trimmed.is_empty() {
            format!("{s}{i}")
        } else {
            format!("{s}{i}.{trimmed}")
        });
        if v == 0 {
            out.push("-0".into());
            out.push("-0.0".into());
        }
        out
    }

    #[test]
    fn significant_digits() {
        let re = range_regex(Some(&b("0", false)), Some(&b("10", false)), false, Some(2)).unwrap();
        let d = full(&re);
        assert!(is_match(&d, "1.25"));
        assert!(is_match(&d, "1.250"));
        assert!(is_match(&d, "10.00"));
        assert!(!is_match(&d, "1.255"));
        assert!(!is_match(&d, "10.01"));
        let un = full(&range_regex(None, None, false, Some(2)).unwrap());
        assert!(is_match(&un, "-3.14") && !is_match(&un, "3.141") && is_match(&un, "3.1400"));
    }

    #[test]
    fn empty_ranges() {
        assert!(range_regex(Some(&b("2", false)), Some(&b("1", false)), false, None).is_none());
        assert!(range_regex(Some(&b("1", true)), Some(&b("1", false)), false, None).is_none());
        assert!(range_regex(Some(&b("1.1", false)), Some(&b("1.9", false)), true, None).is_none());
    }
}
