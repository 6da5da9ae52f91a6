//! The built-in JSON grammar (RFC 8259), generated directly as BNF.
//!
//! Nesting depth is bounded by unrolling: `value_d` may contain only
//! `value_{d+1}`, and the deepest level holds scalars only. The bound is
//! exact (a mask never allows a bracket that would exceed it) and keeps
//! every parse finite without a side counter in the parser.

use super::{Grammar, GrammarBuilder, Sym};
use crate::error::Result;

/// Whitespace policy between JSON tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whitespace {
    /// Any JSON whitespace (`[ \t\n\r]*`) between tokens.
    Flexible,
    /// No whitespace at all (`{"a":1,"b":[2,3]}`).
    Compact,
}

/// Default maximum nesting depth of arrays/objects.
pub const DEFAULT_MAX_DEPTH: usize = 64;

pub const STRING_RE: &str = r#""(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*""#;
pub const NUMBER_RE: &str = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?";

pub fn json_grammar(ws: Whitespace, max_depth: usize) -> Result<Grammar> {
    let mut b = GrammarBuilder::new();
    let string = b.terminal("STRING", STRING_RE);
    let number = b.terminal("NUMBER", NUMBER_RE);
    let tr = b.literal("true");
    let fa = b.literal("false");
    let nu = b.literal("null");
    let (lb, rb, lk, rk, comma, colon) = (
        b.literal("{"),
        b.literal("}"),
        b.literal("["),
        b.literal("]"),
        b.literal(","),
        b.literal(":"),
    );
    if ws == Whitespace::Flexible {
        let w = b.terminal("WS", r"[ \t\n\r]+");
        b.ignore(w);
    }
    let start = b.nonterminal("start");
    let values: Vec<u32> = (0..=max_depth).map(|d| b.nonterminal(&format!("value_{d}"))).collect();
    b.rule(start, vec![Sym::N(values[0])]);
    for d in 0..=max_depth {
        let v = values[d];
        for t in [string, number, tr, fa, nu] {
            b.rule(v, vec![Sym::T(t)]);
        }
        if d == max_depth {
            continue;
        }
        let inner = Sym::N(values[d + 1]);
        // object: "{" "}" | "{" members "}" ; members: pair | members "," pair
        let pair = b.fresh("pair");
        b.rule(pair, vec![Sym::T(string), Sym::T(colon), inner]);
        let members = b.fresh("members");
        b.rule(members, vec![Sym::N(pair)]);
        b.rule(members, vec![Sym::N(members), Sym::T(comma), Sym::N(pair)]);
        b.rule(v, vec![Sym::T(lb), Sym::T(rb)]);
        b.rule(v, vec![Sym::T(lb), Sym::N(members), Sym::T(rb)]);
        // array: "[" "]" | "[" elements "]"
        let elements = b.fresh("elements");
        b.rule(elements, vec![inner]);
        b.rule(elements, vec![Sym::N(elements), Sym::T(comma), inner]);
        b.rule(v, vec![Sym::T(lk), Sym::T(rk)]);
        b.rule(v, vec![Sym::T(lk), Sym::N(elements), Sym::T(rk)]);
    }
    b.finish("start")
}
