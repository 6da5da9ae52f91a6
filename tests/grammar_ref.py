"""An independent, brute-force reference recognizer for grammar token masks.

Nothing here uses tokensieve. It implements the engine's documented
semantics directly and simply, so that tests can compare the engine's
bitmasks against it token by token:

* A grammar is BNF over terminals (regexes, matched with the ``regex``
  package) and nonterminals, recognised with a textbook Earley parser
  (:class:`RefGrammar`).
* Lexing is greedy (maximal munch) and contextual. The candidates for a
  lexeme are the terminals the parser expects where it starts, plus the
  ``%ignore`` terminals. A character is accepted iff

  (a) it extends the lexeme in progress (some candidate can still match the
      lexeme plus the character, as a prefix), or
  (b) the lexeme in progress matches a candidate in full, and after ending it
      (scanning the expected terminals it matches, or -- when it matches only
      ignored terminals -- leaving the parser where it is) the character can
      start a lexeme of a new candidate.

  The end of the text is accepted iff the lexeme in progress can end (as in
  (b)) and the parser then accepts, or there is no text and the grammar
  derives the empty string.
* Bytes and UTF-8. The recognizer works on characters; bytes are decoded
  as they come. A partial UTF-8 sequence at the end is accepted iff *some*
  character whose encoding starts with it would be accepted (the engine works
  on bytes with terminals compiled to UTF-8 automata, which is exactly that).
  Deciding "some character" by trying every code point would be slow, so it
  tries representatives: all non-ASCII characters the terminal patterns
  mention (and their neighbours, which covers range boundaries), plus the
  smallest and largest code point with that prefix. That is exact for
  patterns built from literals, classes, ``.`` and negated classes -- the
  only kinds the test grammars use (no ``\\w``/``\\d``/``\\s``; case-insensitive
  literals are expanded into explicit classes, with Unicode's two simple
  case foldings onto ASCII letters: U+017F -> s and U+212A -> k).

Front ends: :func:`from_lark` uses the ``lark`` package's own grammar loader
(the reference implementation of Lark syntax) to get BNF rules and terminal
regexes; :func:`from_gbnf` is a small GBNF parser written here (one terminal
per character, as GBNF is defined character by character); :func:`json_ref`
is RFC 8259 JSON written out by hand with a nesting bound.

Masks: :meth:`RefMatcher.allowed_tokens` walks the token byte strings in
sorted order with a stack of states for the prefix shared with the previous
token, and skips (by bisection) every token that extends a rejected prefix.
Two exact shortcuts keep a full-vocabulary mask around a second: where a
lexeme is in progress, a token whose whole text keeps it a prefix of a
candidate terminal is accepted with one regex call (every byte then extends
the lexeme, rule (a)); and parser steps are memoised per mask (same chart and
terminals scanned, same new chart).
"""

from __future__ import annotations

import bisect
import json
import re as _re
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

import regex

# ---------------------------------------------------------------------------
# Grammars


class RefGrammar:
    """BNF: ``rules`` is a list of ``(lhs, rhs)`` with ``rhs`` a tuple of
    names; a name is a terminal iff it is a key of ``terminals`` (name ->
    regex pattern, full match). ``ignore`` lists terminal names."""

    def __init__(self, terminals: Dict[str, str], rules: Sequence[Tuple[str, Sequence[str]]], start: str, ignore: Iterable[str] = ()):
        self.terminals = dict(terminals)
        self.ignore = frozenset(ignore)
        nts = {lhs for lhs, _ in rules}
        clash = nts & set(self.terminals)
        assert not clash, f"names used as both terminal and nonterminal: {clash}"
        for _, rhs in rules:
            for s in rhs:
                assert s in self.terminals or s in nts, f"undefined symbol {s!r}"
        assert start in nts, f"start {start!r} undefined"
        assert self.ignore <= set(self.terminals)
        aug = "<START>"
        self.rules: List[Tuple[str, Tuple[str, ...]]] = [(aug, (start,))] + [(lhs, tuple(rhs)) for lhs, rhs in rules]
        self.is_term = {n: True for n in self.terminals}
        self.rules_of: Dict[str, List[int]] = {}
        for i, (lhs, _) in enumerate(self.rules):
            self.rules_of.setdefault(lhs, []).append(i)
        self.compiled = {n: regex.compile(p) for n, p in self.terminals.items()}
        #: Every terminal matches exactly one character (GBNF): lexemes never
        #: extend, so the mask walk skips its whole-token fast path.
        self.single_char = False
        # Non-ASCII code points the patterns mention (see module docs).
        self.mentioned = set()
        for p in self.terminals.values():
            self.mentioned |= _mentioned_codepoints(p)


_FOLDS = {"s": "\u017f", "k": "\u212a"}  # CaseFolding.txt: 017F; C; 0073 / 212A; C; 006B


def icase_literal(s: str) -> str:
    """A regex for literal ``s`` matched case-insensitively (simple folding)."""
    out = []
    for ch in s:
        if ch.isascii() and ch.isalpha():
            lo = ch.lower()
            out.append("[" + lo + lo.upper() + _FOLDS.get(lo, "") + "]")
        else:
            out.append(regex.escape(ch))
    return "".join(out)


def _mentioned_codepoints(p: str) -> set:
    cps = {ord(c) for c in p if ord(c) >= 0x80}
    for m in _re.finditer(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|x\{([0-9a-fA-F]+)\})", p):
        v = int(next(g for g in m.groups() if g), 16)
        if v >= 0x80:
            cps.add(v)
    if _re.search(r"\(\?[a-z]*i", p):
        raise ValueError("reference: case-insensitive regex flags are not supported; use icase_literal")
    if _re.search(r"\\[wWdDsSbBpP]", p):
        raise ValueError(f"reference: Unicode-dependent escapes are not supported: {p!r}")
    return cps


# --- Lark (via the lark package's loader) -----------------------------------

# Lark's lazy string idioms (common.ESCAPED_STRING etc.): under maximal munch
# a lazy body would run past the closing quote, so (like Lark's leftmost lazy
# match) the body excludes an unescaped delimiter.
_LARK_LAZY = {
    r'".*?(?<!\\)(\\\\)*?"': r'"(?:[^"\\\n]|\\.)*"',
    r'".*?"': r'"[^"\n]*"',
}


def from_lark(text: str, start: str = "start") -> RefGrammar:
    from lark.lexer import PatternStr
    from lark.load_grammar import load_grammar

    g, _ = load_grammar(text, "<grammar>", None, False)
    terms, rules, ignore = g.compile([start], set())
    terminals = {}
    for t in terms:
        p = t.pattern
        if isinstance(p, PatternStr):
            pat = icase_literal(p.value) if "i" in p.flags else regex.escape(p.value)
        else:
            if p.flags:
                raise ValueError(f"reference: regex flags {p.flags} unsupported")
            pat = _LARK_LAZY.get(p.value, p.value)
            if "*?" in pat or "(?<" in pat:
                raise ValueError(f"reference: lazy/look-behind regex {pat!r} unsupported")
        terminals[str(t.name)] = pat
    out = []
    for r in rules:
        out.append((str(r.origin.name), tuple(str(s.name) for s in r.expansion)))
    return RefGrammar(terminals, out, start, [str(i) for i in ignore])


# --- GBNF (parsed here) -----------------------------------------------------


class _GbnfParser:
    """llama.cpp's GBNF, following its grammar-parser: a rule ends at a
    newline outside parentheses; newlines inside parentheses and after
    ``::=`` / ``|`` are whitespace."""

    ESC = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-", "^": "^", "/": "/"}

    def __init__(self, text: str):
        self.s = text
        self.i = 0
        self.rules: List[Tuple[str, Tuple[str, ...]]] = []
        self.terminals: Dict[str, str] = {}
        self.defined = set()
        self.fresh = 0

    # lexical helpers
    def space(self, newlines: bool):
        while self.i < len(self.s):
            c = self.s[self.i]
            if c == "#":
                while self.i < len(self.s) and self.s[self.i] not in "\r\n":
                    self.i += 1
            elif c in " \t" or (newlines and c in "\r\n"):
                self.i += 1
            else:
                break

    def name(self) -> str:
        m = _re.compile(r"[A-Za-z0-9_-]+").match(self.s, self.i)
        if not m:
            raise ValueError(f"GBNF: expected a name at {self.i}: {self.s[self.i:self.i + 20]!r}")
        self.i = m.end()
        return m.group()

    def char(self) -> str:
        c = self.s[self.i]
        if c != "\\":
            self.i += 1
            return c
        e = self.s[self.i + 1]
        if e in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[e]
            v = int(self.s[self.i + 2:self.i + 2 + n], 16)
            self.i += 2 + n
            return chr(v)
        self.i += 2
        return self.ESC[e]

    def new_nt(self, hint: str) -> str:
        self.fresh += 1
        return f"__{hint}{self.fresh}"

    def term(self, pattern: str) -> str:
        name = "T:" + pattern
        self.terminals[name] = pattern
        return name

    # grammar
    def parse(self) -> "RefGrammar":
        self.space(True)
        while self.i < len(self.s):
            n = self.name()
            self.space(False)
            assert self.s.startswith("::=", self.i), f"GBNF: expected ::= at {self.i}"
            self.i += 3
            self.space(True)
            for alt in self.alternates(False):
                self.rules.append((n, alt))
            self.defined.add(n)
            if self.i < len(self.s):
                assert self.s[self.i] in "\r\n", f"GBNF: expected newline at {self.i}: {self.s[self.i:self.i + 20]!r}"
            self.space(True)
        return RefGrammar(self.terminals, self.rules, "root")

    def alternates(self, nested: bool) -> List[Tuple[str, ...]]:
        alts = [self.sequence(nested)]
        while self.i < len(self.s) and self.s[self.i] == "|":
            self.i += 1
            self.space(True)
            alts.append(self.sequence(nested))
        return alts

    def sequence(self, nested: bool) -> Tuple[str, ...]:
        seq: List[str] = []
        while self.i < len(self.s):
            c = self.s[self.i]
            last_start = len(seq)
            if c == '"':
                self.i += 1
                while self.s[self.i] != '"':
                    seq.append(self.term(regex.escape(self.char())))
                self.i += 1
            elif c == "[":
                self.i += 1
                neg = self.s[self.i] == "^"
                if neg:
                    self.i += 1
                ranges = []
                while self.s[self.i] != "]":
                    lo = self.char()
                    hi = lo
                    if self.s[self.i] == "-" and self.s[self.i + 1] != "]":
                        self.i += 1
                        hi = self.char()
                    ranges.append((ord(lo), ord(hi)))
                self.i += 1
                body = "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ranges if lo <= hi)
                if neg:
                    pat = f"[^{body}]" if body else "(?s:.)"
                else:
                    pat = f"[{body}]" if body else "[^\\x00-\\U0010ffff]"
                seq.append(self.term(pat))
            elif c == ".":
                self.i += 1
                seq.append(self.term("(?s:.)"))
            elif c == "(":
                self.i += 1
                self.space(True)
                alts = self.alternates(True)
                assert self.s[self.i] == ")", f"GBNF: expected ) at {self.i}"
                self.i += 1
                g = self.new_nt("group")
                for a in alts:
                    self.rules.append((g, a))
                seq.append(g)
            elif _re.match(r"[A-Za-z0-9_-]", c):
                seq.append(self.name())
            else:
                break
            # postfix operators apply to the element just parsed
            self.space(nested)
            while self.i < len(self.s) and self.s[self.i] in "*+?{":
                elem = tuple(seq[last_start:])
                del seq[last_start:]
                op = self.s[self.i]
                if op == "{":
                    j = self.s.index("}", self.i)
                    spec = self.s[self.i + 1:j]
                    self.i = j + 1
                    if "," in spec:
                        a, b = spec.split(",")
                        lo, hi = int(a.strip()), (int(b.strip()) if b.strip() else None)
                    else:
                        lo = hi = int(spec.strip())
                else:
                    self.i += 1
                    lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[op]
                seq.extend(self.repeat(elem, lo, hi))
                self.space(nested)
        return tuple(seq)

    def repeat(self, elem: Tuple[str, ...], lo: int, hi: Optional[int]) -> List[str]:
        out = list(elem) * lo
        if hi is None:
            star = self.new_nt("star")  # star -> eps | star elem
            self.rules.append((star, ()))
            self.rules.append((star, (star,) + elem))
            out.append(star)
        else:
            for _ in range(hi - lo):
                opt = self.new_nt("opt")
                self.rules.append((opt, ()))
                self.rules.append((opt, elem))
                out.append(opt)
        return out


def from_gbnf(text: str) -> RefGrammar:
    g = _GbnfParser(text).parse()
    g.single_char = True  # literals are split into characters; classes and "." are one character
    return g


# --- JSON (RFC 8259), written out by hand -----------------------------------


def json_ref(whitespace: str = "flexible", max_depth: int = 64) -> RefGrammar:
    """RFC 8259 JSON; arrays/objects nest at most ``max_depth`` deep."""
    terminals = {
        # char = unescaped / escape ; unescaped = %x20-21 / %x23-5B / %x5D-10FFFF
        "STRING": r'"(?:[\x20\x21\x23-\x5b\x5d-\U0010ffff]|\\["\\/bfnrt]|\\u[0-9A-Fa-f]{4})*"',
        "NUMBER": r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?",
        "TRUE": "true", "FALSE": "false", "NULL": "null",
        "LBRACE": r"\{", "RBRACE": r"\}", "LSQB": r"\[", "RSQB": r"\]", "COMMA": ",", "COLON": ":",
    }
    ignore = []
    if whitespace == "flexible":
        terminals["WS"] = r"[\x20\t\n\r]+"
        ignore = ["WS"]
    rules = [("json", ("v0",))]
    for d in range(max_depth + 1):
        v = f"v{d}"
        for t in ("STRING", "NUMBER", "TRUE", "FALSE", "NULL"):
            rules.append((v, (t,)))
        if d == max_depth:
            continue
        w = f"v{d + 1}"
        rules += [
            (v, ("LBRACE", "RBRACE")), (v, ("LBRACE", f"mem{d}", "RBRACE")),
            (f"mem{d}", ("STRING", "COLON", w)), (f"mem{d}", ("STRING", "COLON", w, "COMMA", f"mem{d}")),
            (v, ("LSQB", "RSQB")), (v, ("LSQB", f"el{d}", "RSQB")),
            (f"el{d}", (w,)), (f"el{d}", (w, "COMMA", f"el{d}")),
        ]
    return RefGrammar(terminals, rules, "json", ignore)


# ---------------------------------------------------------------------------
# Earley parser (persistent: a chart is a tuple of immutable sets)


class _ESet:
    __slots__ = ("items", "waiting", "expect", "accept", "cand")

    def __init__(self, items, waiting, expect, accept, ignore):
        self.items = items  # set of (rule, dot, origin)
        self.waiting = waiting  # nonterminal -> items with the dot before it
        self.expect = expect  # terminal -> items with the dot before it
        self.accept = accept  # the start rule is complete (origin 0)
        self.cand = frozenset(expect) | ignore  # lexeme candidates here


def _closure(g: RefGrammar, sets: tuple, seeds) -> _ESet:
    k = len(sets)
    items = set()
    waiting: Dict[str, list] = {}
    expect: Dict[str, list] = {}
    done_here = set()  # nonterminals completed with origin k (empty spans)
    work = []

    def add(it):
        if it not in items:
            items.add(it)
            work.append(it)

    for s in seeds:
        add(s)
    while work:
        it = work.pop()
        r, d, o = it
        lhs, rhs = g.rules[r]
        if d == len(rhs):  # complete
            if o == k:
                if lhs not in done_here:
                    done_here.add(lhs)
                    for (r2, d2, o2) in list(waiting.get(lhs, ())):
                        add((r2, d2 + 1, o2))
            else:
                for (r2, d2, o2) in sets[o].waiting.get(lhs, ()):
                    add((r2, d2 + 1, o2))
            continue
        sym = rhs[d]
        if sym in g.is_term:
            expect.setdefault(sym, []).append(it)
        else:
            waiting.setdefault(sym, []).append(it)
            if sym in done_here:
                add((r, d + 1, o))
            for r2 in g.rules_of[sym]:
                add((r2, 0, k))
    accept = (0, 1, 0) in items
    return _ESet(items, waiting, expect, accept, g.ignore)


# ---------------------------------------------------------------------------
# Lexer + parser state, characters and bytes


class RefMatcher:
    """Reference recognizer over bytes.

    A state is an immutable tuple ``(sets, lex, alive, tail)``: the Earley
    chart (a tuple of sets), the lexeme in progress (``None`` before any
    text), the candidate terminals that lexeme is still a prefix of, and the
    pending bytes of an incomplete UTF-8 character."""

    def __init__(self, g: RefGrammar):
        self.g = g
        self._scan_memo: Dict[tuple, tuple] = {}
        self._rep_memo: Dict[bytes, Tuple[str, ...]] = {}
        self._short: Dict[Tuple[str, str, bool], bool] = {}  # regex results on short strings
        self._starts_memo: Dict[Tuple[FrozenSet[str], str], FrozenSet[str]] = {}
        self._first_memo: Dict[tuple, list] = {}  # per mask: _extends_whole's first character
        self._push_memo: Dict[tuple, tuple] = {}  # per mask: push_char after a 1-character lexeme

    def initial(self):
        s0 = _closure(self.g, (), [(0, 0, 0)])
        return ((s0,), None, frozenset(), b"")

    # --- characters
    def _match(self, t: str, s: str, partial: bool) -> bool:
        """Terminal ``t`` matches ``s`` in full, or (``partial``) ``s`` is a
        prefix of some string ``t`` matches."""
        if len(s) > 3:
            return self.g.compiled[t].fullmatch(s, partial=partial) is not None
        key = (t, s, partial)
        v = self._short.get(key)
        if v is None:
            v = self._short[key] = self.g.compiled[t].fullmatch(s, partial=partial) is not None
        return v

    def _prefix(self, t: str, s: str) -> bool:
        return self._match(t, s, True)

    def _full(self, t: str, s: str) -> bool:
        return self._match(t, s, False)

    def _starts(self, cand: FrozenSet[str], c: str) -> FrozenSet[str]:
        """The candidates a lexeme starting with ``c`` may belong to."""
        key = (cand, c)
        v = self._starts_memo.get(key)
        if v is None:
            v = self._starts_memo[key] = frozenset(t for t in cand if self._prefix(t, c))
        return v

    def _scan(self, sets: tuple, terms: FrozenSet[str]) -> tuple:
        """The chart after scanning ``terms`` (memoised per mask)."""
        key = (id(sets[-1]), terms)
        hit = self._scan_memo.get(key)
        if hit is not None and hit[0] is sets[-1]:
            return hit[1]
        top = sets[-1]
        seeds = [(r, d + 1, o) for t in terms for (r, d, o) in top.expect[t]]
        assert seeds
        new = sets + (_closure(self.g, sets, seeds),)
        self._scan_memo[key] = (top, new)
        return new

    def _end_lexeme(self, sets, lex, alive):
        """The chart after ending lexeme ``lex``, or None if it cannot end."""
        matched = frozenset(t for t in alive if self._full(t, lex))
        if not matched:
            return None
        scan = matched & frozenset(sets[-1].expect)
        if scan:  # expected terminals win over %ignore
            return self._scan(sets, scan)
        return sets  # only %ignore terminals: the parser stays put

    def push_char(self, sets, lex, alive, c: str):
        """``(sets, lex, alive)`` after character ``c``, or None."""
        if lex is not None and len(lex) == 1:  # memoised (per mask) when cheap to key
            key = (id(sets[-1]), lex, alive, c)
            hit = self._push_memo.get(key)
            if hit is None or hit[0] is not sets[-1]:
                hit = self._push_memo[key] = (sets[-1], self._push_char(sets, lex, alive, c))
            return hit[1]
        return self._push_char(sets, lex, alive, c)

    def _push_char(self, sets, lex, alive, c: str):
        if lex is not None:
            lc = lex + c
            ext = [t for t in alive if self._prefix(t, lc)]
            if ext:  # (a) extends the lexeme
                return sets, lc, frozenset(ext)
            sets = self._end_lexeme(sets, lex, alive)  # (b) end it ...
            if sets is None:
                return None
        alive = self._starts(sets[-1].cand, c)  # ... and start one
        return (sets, c, alive) if alive else None

    def _char_accepts(self, sets, lex, alive) -> bool:
        if lex is None:
            return sets[-1].accept
        sets = self._end_lexeme(sets, lex, alive)
        return sets is not None and sets[-1].accept

    # --- bytes
    def _reps(self, tail: bytes) -> Tuple[str, ...]:
        """Representative characters whose UTF-8 encoding starts with the
        incomplete sequence ``tail`` (empty if no character does)."""
        hit = self._rep_memo.get(tail)
        if hit is not None:
            return hit
        lead = tail[0]
        n = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
        # Well-formed UTF-8 (Unicode Table 3-7): the second byte's range
        # depends on the lead, later bytes are 80..BF.
        second = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}.get(lead, (0x80, 0xBF))
        ranges = [second] + [(0x80, 0xBF)] * (n - 2)
        ok = 0xC2 <= lead <= 0xF4 and len(tail) < n
        ok = ok and all(lo <= b <= hi for b, (lo, hi) in zip(tail[1:], ranges))
        cps = []
        if ok:
            rest = ranges[len(tail) - 1:]
            lo = ord((tail + bytes(r[0] for r in rest)).decode("utf-8"))
            hi = ord((tail + bytes(r[1] for r in rest)).decode("utf-8"))
            cps = [lo, hi]
            for m in self.g.mentioned:
                cps += [m - 1, m, m + 1]
            cps += [ord(c) for c in _FOLDS.values()]
            cps = sorted({c for c in cps if lo <= c <= hi and not 0xD800 <= c <= 0xDFFF})
            cps = [c for c in cps if chr(c).encode("utf-8").startswith(tail)]
            assert cps
        out = tuple(chr(c) for c in cps)
        self._rep_memo[tail] = out
        return out

    def push_byte(self, state, b: int):
        sets, lex, alive, tail = state
        if not tail and b < 0x80:
            r = self.push_char(sets, lex, alive, chr(b))
            return None if r is None else r + (b"",)
        t2 = tail + bytes((b,))
        try:
            ch = t2.decode("utf-8")
        except UnicodeDecodeError:
            ch = None
        if ch is not None:  # a complete character
            r = self.push_char(sets, lex, alive, ch)
            return None if r is None else r + (b"",)
        # An incomplete character: accepted iff some completion is.
        if any(self.push_char(sets, lex, alive, c) is not None for c in self._reps(t2)):
            return (sets, lex, alive, t2)
        return None

    def push_bytes(self, state, data: bytes):
        for b in data:
            state = self.push_byte(state, b)
            if state is None:
                return None
        return state

    def accepts(self, state) -> bool:
        """End of text allowed here."""
        sets, lex, alive, tail = state
        return not tail and self._char_accepts(sets, lex, alive)

    def accepts_text(self, text) -> bool:
        data = text.encode("utf-8") if isinstance(text, str) else text
        st = self.push_bytes(self.initial(), data)
        return st is not None and self.accepts(st)

    # --- masks
    def _extends_whole(self, state, rest: bytes) -> bool:
        """Fast path: ``rest`` (the rest of a token) is accepted if its text,
        appended to the lexeme in progress, is still a prefix of a candidate
        terminal. Every shorter prefix then is too, so each byte extends the
        lexeme (rule (a)). False means "not decided here", not "rejected"."""
        sets, lex, alive, tail = state
        if lex is None or tail:
            return False
        try:
            text = rest.decode("utf-8")
        except UnicodeDecodeError:
            return False
        key = (lex, alive, text[0])
        alive = self._first_memo.get(key)
        if alive is None:
            first = lex + text[0]
            alive = self._first_memo[key] = [t for t in key[1] if self._prefix(t, first)]
        if len(text) == 1 or not alive:
            return bool(alive)
        whole = lex + text
        return any(self._prefix(t, whole) for t in alive)

    def allowed_tokens(self, state, vocab: "RefVocab") -> List[int]:
        """Ids of the ordinary tokens whose bytes are all accepted from
        ``state``. Tokens are visited in byte order with a stack of states
        for the prefix shared with the last token walked; all tokens that
        extend a rejected prefix are skipped at once. Where a lexeme has just
        started, the rest of the token is first tried as one extension of it
        (:meth:`_extends_whole`)."""
        toks, keys = vocab.sorted, vocab.keys
        self._scan_memo.clear()
        self._first_memo.clear()
        self._push_memo.clear()
        out = []
        stack = [state]  # stack[i]: the state after cur[:i]
        cur = b""  # the last token walked
        k = 0
        push = self.push_byte
        fast = not self.g.single_char
        while k < len(toks):
            tb, tid = toks[k]
            if fast and self._extends_whole(state, tb):
                out.append(tid)
                k += 1
                continue
            n = 0
            lim = min(len(stack) - 1, len(tb))
            while n < lim and cur[n] == tb[n]:
                n += 1
            del stack[n + 1:]
            cur = tb
            for i in range(n, len(tb)):
                s = stack[-1]
                if fast and i and s[1] is not None and len(s[1]) == 1 and self._extends_whole(s, tb[i:]):
                    out.append(tid)
                    k += 1
                    break
                s = push(s, tb[i])
                if s is None:
                    # Every token starting with tb[:i + 1] is rejected: skip them.
                    k = bisect.bisect_left(keys, _after_prefix(tb[:i + 1]), k + 1)
                    break
                stack.append(s)
            else:
                out.append(tid)
                k += 1
        self._scan_memo.clear()
        self._push_memo.clear()
        return out


def _after_prefix(p: bytes) -> bytes:
    """The least byte string greater than every string starting with ``p``
    (``p`` never ends with 0xFF here: no UTF-8 byte is 0xFF, and the walk
    rejects it at once; b"\xff" * n is handled anyway)."""
    while p and p[-1] == 0xFF:
        p = p[:-1]
    if not p:
        return b"\xff" * 64
    return p[:-1] + bytes((p[-1] + 1,))


# ---------------------------------------------------------------------------
# Vocabularies (independent of tokensieve): byte-level BPE tokenizer.json


def _bytes_to_unicode() -> Dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


class RefVocab:
    """The ordinary tokens of a byte-level BPE ``tokenizer.json`` (decoded
    here, with GPT-2's byte-to-unicode table), sorted by bytes. Special added
    tokens are left out (never allowed)."""

    def __init__(self, tokenizer_json_text: str):
        tj = json.loads(tokenizer_json_text)
        dec = {c: b for b, c in _bytes_to_unicode().items()}
        self.special = {a["id"] for a in tj.get("added_tokens", []) if a.get("special")}
        toks = {i: bytes(dec[c] for c in s) for s, i in tj["model"]["vocab"].items()}
        for a in tj.get("added_tokens", []):
            if a.get("special"):
                toks.pop(a["id"], None)
            else:
                toks[a["id"]] = a["content"].encode("utf-8")
        self._init({i: b for i, b in toks.items() if i not in self.special})

    @classmethod
    def from_token_bytes(cls, token_bytes: Sequence[Optional[bytes]]) -> "RefVocab":
        """A vocabulary given as a list of token byte strings (None: special)."""
        self = cls.__new__(cls)
        self.special = {i for i, b in enumerate(token_bytes) if b is None}
        self._init({i: b for i, b in enumerate(token_bytes) if b is not None})
        return self

    def _init(self, bytes_of: Dict[int, bytes]):
        self.bytes_of = bytes_of
        assert all(self.bytes_of.values()), "empty ordinary token"
        self.sorted: List[Tuple[bytes, int]] = sorted((b, i) for i, b in self.bytes_of.items())
        self.keys = [b for b, _ in self.sorted]
