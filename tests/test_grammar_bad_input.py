"""Bad grammars and hostile inputs fail cleanly: a ValueError with a useful
message (or a refused token), in bounded time, never a crash or a hang.

The time guards are hang detectors, not benchmarks: each bound is far above
what the operation needs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import tokensieve as ts

HANG_GUARD_S = 60.0


@pytest.fixture(scope="module")
def tiny():
    """No tokenizer file needed: the 128 ASCII bytes, a few multi-byte tokens
    and EOS (id 131)."""
    return ts.Vocabulary(token_bytes=[bytes([i]) for i in range(128)] + [b"aa", b"[[", b"]]", None], eos_token_ids=[131])


TINY_EOS = 131


class Guard:
    """``with Guard("what"):`` fails if the block ran longer than the guard."""

    def __init__(self, what: str, limit: float = HANG_GUARD_S):
        self.what, self.limit = what, limit

    def __enter__(self):
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.monotonic() - self.t0
        assert self.elapsed < self.limit, f"{self.what} took {self.elapsed:.1f} s (guard {self.limit} s)"
        return False


def _compile_error(text: str, vocab, **kw) -> str:
    with Guard("compile"):
        with pytest.raises(ValueError) as e:
            ts.compile_grammar(text, vocab, **kw)
    return str(e.value)


# ---------------------------------------------------------------------------
# Syntax errors name a line and a column


@pytest.mark.parametrize(
    "syntax,text,line",
    [
        ("lark", 'start: "abc\n', 1),  # unterminated string
        ("lark", 'start: "a"\nitem: ("x" | "y"\n', 3),  # unclosed group (found end of grammar)
        ("lark", 'start: "a"\n\nitem: /[a-/\n', 3),  # unterminated class in a regex
        ("lark", 'start: "a" ] "b"\n', 1),  # stray bracket
        ("lark", 'start: "a"\nB: "b" ~ x\n', 2),  # bad repetition count
        ("lark", 'start "a"\n', 1),  # missing colon
        ("lark", 'start: "a"\n%declare FOO\n', 2),  # unsupported directive
        ("lark", 'start: "a"\nfoo: /a(?=b)/\n', 2),  # look-ahead has no Rust equivalent
        ("gbnf", 'root ::= "a" (\n', 1),
        ("gbnf", 'root ::= "a"\nitem ::= [a-\n', 2),
        ("gbnf", 'root ::= "a"\nitem = "b"\n', 2),
        ("gbnf", 'root ::= "a" {2,1}\n', 1),
    ],
)
def test_syntax_errors_name_line_and_column(tiny, syntax, text, line):
    msg = _compile_error(text, tiny, syntax=syntax)
    assert "line" in msg and "column" in msg, msg
    assert f"line {line}" in msg, msg


# ---------------------------------------------------------------------------
# Undefined symbols, empty languages, unknown options


@pytest.mark.parametrize(
    "syntax,text,name",
    [
        ("lark", "start: foo\n", "foo"),
        ("lark", 'start: "a" FOO\n', "FOO"),
        ("lark", 'start: "a"\nA: B "x"\n', None),  # A unused: may compile; if used below it must fail
        ("lark", 'start: A\nA: B "x"\n', "B"),
        ("gbnf", "root ::= foo\n", "foo"),
        ("gbnf", 'root ::= "a" | bar-baz\n', "bar-baz"),
    ],
)
def test_undefined_symbols(tiny, syntax, text, name):
    if name is None:
        try:
            ts.compile_grammar(text, tiny, syntax=syntax)
        except ValueError as e:
            assert "B" in str(e)
        return
    msg = _compile_error(text, tiny, syntax=syntax)
    assert name in msg, msg
    assert "undefined" in msg or "not defined" in msg, msg


@pytest.mark.parametrize(
    "syntax,text",
    [
        ("lark", 'start: start "a"\n'),  # no finite derivation
        ("lark", 'start: a\na: b "x"\nb: a\n'),
        ("gbnf", 'root ::= root "a"\n'),
        ("gbnf", 'root ::= x\nx ::= "a" x\n'),
    ],
)
def test_empty_language(tiny, syntax, text):
    msg = _compile_error(text, tiny, syntax=syntax)
    assert "empty" in msg, msg
    # Named at the start rule's definition (line 1, column 1 in these texts).
    assert "line 1, column 1" in msg, msg


def test_terminal_matching_empty_string_is_an_error(tiny):
    msg = _compile_error('start: A\nA: /a*/\n', tiny)
    assert "empty" in msg, msg


@pytest.mark.parametrize("syntax", ["ebnf", "LARK", "", "regex"])
def test_unknown_syntax(tiny, syntax):
    with pytest.raises(ValueError, match="syntax"):
        ts.compile_grammar('start: "a"', tiny, syntax=syntax)


def test_unknown_start_rule(tiny):
    with pytest.raises(ValueError, match="nope"):
        ts.compile_grammar('start: "a"', tiny, start="nope")
    with pytest.raises(ValueError, match="nope"):
        ts.compile_grammar('root ::= "a"', tiny, syntax="gbnf", start="nope")
    # An explicit, existing start rule works.
    m = ts.Matcher(ts.compile_grammar('start: "a"\nother: "b"', tiny, start="other"))
    assert m.consume_token(ord("b")) and m.is_accepting()


def test_bad_compile_json_options(tiny):
    with pytest.raises(ValueError, match="whitespace"):
        ts.compile_json(tiny, whitespace="none")
    with pytest.raises((ValueError, OverflowError, TypeError)):
        ts.compile_json(tiny, max_depth=-1)
    with Guard("compile_json(max_depth=10**9)"):
        with pytest.raises(ValueError):
            ts.compile_json(tiny, max_depth=10**9)


def test_grammar_text_must_be_str(tiny):
    with pytest.raises(TypeError):
        ts.compile_grammar(b'start: "a"', tiny)


# ---------------------------------------------------------------------------
# Deep nesting of the input


def test_user_grammar_nested_10000_deep(tiny):
    c = ts.compile_grammar('start: "[" start "]" | "x"', tiny)
    m = ts.Matcher(c)
    with Guard("10,000 nested brackets"):
        for i in range(10_000):
            assert m.consume_token(ord("[")), i
        assert sorted(m.allowed_tokens()) == [ord("["), ord("x"), 129]  # "[", "x", "[["
        assert not m.is_accepting()
        assert m.consume_token(ord("x"))
        for i in range(10_000):
            assert sorted(m.allowed_tokens()) == [ord("]")] + ([130] if i < 9_999 else []), i
            assert m.consume_token(ord("]")), i
        assert m.is_accepting() and m.is_terminated()
        assert m.allowed_tokens() == [TINY_EOS]
        m.rollback(5_000)
        assert sorted(m.allowed_tokens()) == [ord("]"), 130]
        cp = m.copy()
        m.reset()
        assert sorted(cp.allowed_tokens()) == [ord("]"), 130]


def test_compile_json_default_depth_rejects_bracket_65(tiny):
    with Guard("JSON depth"):
        for opener in "[{":
            m = ts.Matcher(ts.compile_json(tiny))
            prefix = "[" * 63 + opener
            if opener == "{":
                prefix = "[" * 63 + '{"k":'
                opener_tokens = [ord(ch) for ch in prefix]
            else:
                opener_tokens = [ord(ch) for ch in prefix]
            assert m.consume_tokens(opener_tokens) == len(opener_tokens)
            # depth 64 reached (for "{", inside the object after the key): no 65th bracket
            allowed = set(m.allowed_tokens())
            assert ord("[") not in allowed and ord("{") not in allowed and 129 not in allowed
            assert ord("1") in allowed and ord('"') in allowed
            assert m.consume_token(ord("[")) is False
            assert m.consume_token(ord("{")) is False
            assert m.consume_token(ord("1"))
        # The same bracket 65 with every whitespace mode and through a multi-byte token.
        m = ts.Matcher(ts.compile_json(tiny, whitespace="compact"))
        assert m.consume_tokens([129] * 32) == 32  # "[[" x 32 = depth 64
        assert m.consume_token(ord("[")) is False and m.consume_token(129) is False


def test_compile_json_very_deep_limit(tiny):
    """A large explicit max_depth compiles, nests to it, and stops there."""
    with Guard("compile_json(max_depth=10000) + 10,001 brackets"):
        m = ts.Matcher(ts.compile_json(tiny, max_depth=10_000))
        for i in range(10_000):
            assert m.consume_token(ord("[")), i
        assert m.consume_token(ord("[")) is False
        assert ord("]") in m.allowed_tokens()


def test_json_deep_nesting_via_many_tokens_is_bounded():
    """10,000 nested arrays through the real GPT-2 vocabulary: no crash, the
    bracket past the limit is refused, masks stay quick."""
    from conftest import load_vocab

    v = load_vocab("gpt2")
    ids = {v.token_bytes(i): i for i in range(v.size)}
    m = ts.Matcher(ts.compile_json(v))
    with Guard("JSON deep via GPT-2"):
        n = 0
        for i in range(10_000):
            if not m.consume_token(ids[b"["]):
                break
            n += 1
        assert n == 64
        bm = ts.allocate_token_bitmask(1, v.size)
        m.fill_next_token_bitmask(bm)
        assert ids[b"["] not in m.allowed_tokens() and ids[b"]"] in m.allowed_tokens()


# ---------------------------------------------------------------------------
# Large grammars


def test_grammar_with_10000_rules(tiny):
    """A chain of 10,000 rules (each refers to the next) compiles in bounded
    time, or fails with a clear error."""
    n = 10_000
    lines = ["start: r0"] + [f'r{i}: "a" r{i + 1} | "b"' for i in range(n - 1)] + [f'r{n - 1}: "c"']
    text = "\n".join(lines) + "\n"
    with Guard("10,000 rules"):
        try:
            c = ts.compile_grammar(text, tiny)
        except ValueError as e:
            assert "rule" in str(e) or "limit" in str(e) or "large" in str(e), str(e)
            return
        m = ts.Matcher(c)
        assert sorted(m.allowed_tokens()) == [ord("a"), ord("b"), 128]  # "a", "b", "aa"
        for _ in range(n - 1):
            assert m.consume_token(ord("a"))
        assert sorted(m.allowed_tokens()) == [ord("c")]
        assert m.consume_token(ord("c")) and m.is_accepting() and m.is_terminated()


def test_grammar_with_10000_keywords(tiny):
    """10,000 alternatives of distinct literal terminals (a big lexer)."""
    n = 10_000
    text = "start: kw+\nkw: " + " | ".join(f'"k{i}x"' for i in range(n)) + "\n"
    with Guard("10,000 keywords"):
        try:
            c = ts.compile_grammar(text, tiny)
        except ValueError as e:
            assert "large" in str(e) or "limit" in str(e), str(e)
            return
        m = ts.Matcher(c)
        for word in ("k0x", "k9999x", "k512x"):
            assert m.consume_tokens([ord(ch) for ch in word]) == len(word), word
        assert m.is_accepting()
        assert m.consume_tokens([ord(ch) for ch in "k10000x"]) < 7


def test_grammar_with_many_rules_beyond_limits(tiny):
    """Past the rule limit: a clear error, quickly."""
    n = 250_000
    text = "start: r0\n" + "".join(f'r{i}: "a" r{i + 1} | "b"\n' for i in range(n)) + f'r{n}: "c"\n'
    with Guard("250,000 rules"):
        try:
            c = ts.compile_grammar(text, tiny)
        except ValueError as e:
            assert "rules" in str(e) and ("limit" in str(e) or "max_rules" in str(e)), str(e)
            return
    # If the limit was raised, it must at least work.
    assert ts.Matcher(c).consume_token(ord("b"))


# ---------------------------------------------------------------------------
# Ambiguity


def test_highly_ambiguous_grammar(tiny):
    """``start: start start | "a"`` (Catalan-many parses) driven 200 tokens
    deep: bounded time, masks equal to the reference for the first steps,
    or a clear "too ambiguous" error."""
    text = 'start: start start | "a"\n'
    c = ts.compile_grammar(text, tiny)
    pytest.importorskip("regex")
    pytest.importorskip("lark")
    import grammar_ref as R

    rm = R.RefMatcher(R.from_lark(text))
    rv = R.RefVocab.from_token_bytes([bytes([i]) for i in range(128)] + [b"aa", b"[[", b"]]", None])
    m = ts.Matcher(c)
    state = rm.initial()
    with Guard("ambiguous grammar, 200 tokens"):
        for step in range(200):
            try:
                allowed = sorted(m.allowed_tokens())
            except ValueError as e:
                assert "ambiguous" in str(e), str(e)
                return
            if step < 8:
                want = rm.allowed_tokens(state, rv) + ([TINY_EOS] if rm.accepts(state) else [])
                assert allowed == sorted(want), step
            assert allowed == ([ord("a"), 128] + ([TINY_EOS] if step else [])), step
            tok = 128 if step % 3 == 0 else ord("a")
            try:
                assert m.consume_token(tok)
            except ValueError as e:
                assert "ambiguous" in str(e), str(e)
                return
            if step < 8:
                state = rm.push_bytes(state, rv.bytes_of[tok])
        assert m.is_accepting()
        m.rollback(100)
        assert m.is_accepting()


# ---------------------------------------------------------------------------
# In a child process (one for all cases: importing tokensieve is slow), so
# that a crash fails these tests instead of killing the run, and so that
# peak memory can be read: deeply nested grammar text must give an error,
# not a stack overflow; the ambiguous drive's memory must stay bounded.

NESTING = 100_000

DEEP_TEXTS = {
    "lark-parens": ("lark", "'start: ' + '(' * N + '\"a\"' + ')' * N"),
    "lark-optional": ("lark", "'start: ' + '[' * N + '\"a\"' + ']' * N"),
    "lark-terminal": ("lark", "'start: A\\nA: ' + '(' * N + '\"a\"' + ')' * N"),
    "lark-regex-groups": ("lark", "'start: /' + '(' * N + 'a' + ')' * N + '/'"),
    "lark-regex-classes": ("lark", "'start: /' + '[' * N + 'a' + ']' * N + '/'"),
    "lark-long-sequence": ("lark", "'start: ' + '\"a\"* ' * N"),
    "lark-repeat-chain": ("lark", "'start: \"a\"' + '~1' * N"),
    "gbnf-parens": ("gbnf", "'root ::= ' + '(' * N + '\"a\"' + ')' * N"),
    "gbnf-postfix-chain": ("gbnf", "'root ::= \"a\"' + '*' * N"),
    "gbnf-unclosed": ("gbnf", "'root ::= ' + '(' * N"),
}

CHILD = """
import json, resource, sys, tokensieve as ts
N = __N__
v = ts.Vocabulary(token_bytes=[bytes([i]) for i in range(128)] + [b"aa", None], eos_token_ids=[129])
def emit(name, out):
    print(json.dumps({"case": name, **out}), flush=True)
for name, (syntax, expr) in __CASES__.items():
    print(json.dumps({"start": name}), flush=True)
    try:
        c = ts.compile_grammar(eval(expr), v, syntax=syntax)
        emit(name, {"ok": True, "a": ts.Matcher(c).consume_token(ord("a"))})
    except ValueError as e:
        emit(name, {"ok": False, "err": str(e)[:300]})
# memory: an ambiguous grammar driven 200 tokens deep
print(json.dumps({"start": "ambiguous"}), flush=True)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
c = ts.compile_grammar('start: start start | "a" | start "b" start', v)
m = ts.Matcher(c)
out = {"err": None, "steps": 0}
try:
    for i in range(200):
        m.allowed_tokens()
        assert m.consume_token(128 if i % 2 else ord("a"))
        out["steps"] += 1
except ValueError as e:
    out["err"] = str(e)
out["grew_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
emit("ambiguous", out)
"""


@pytest.fixture(scope="module")
def child_results():
    code = CHILD.replace("__N__", str(NESTING)).replace("__CASES__", repr(DEEP_TEXTS))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=4 * HANG_GUARD_S)
    elapsed = time.monotonic() - t0
    results, started = {}, None
    for line in r.stdout.splitlines():
        d = json.loads(line)
        if "start" in d:
            started = d["start"]
        else:
            results[d["case"]] = d
    return {"rc": r.returncode, "stderr": r.stderr[-2000:], "results": results, "last_started": started, "elapsed": elapsed}


def _child_case(child_results, name):
    res = child_results["results"].get(name)
    if res is None:
        pytest.fail(f"child process died (rc {child_results['rc']}) during case {child_results['last_started']!r}: {child_results['stderr']}")
    return res


@pytest.mark.parametrize("name", list(DEEP_TEXTS))
def test_deeply_nested_grammar_text(child_results, name):
    out = _child_case(child_results, name)
    if not out["ok"]:
        assert "line" in out["err"] and "column" in out["err"], out["err"]


def test_highly_ambiguous_grammar_memory_is_bounded(child_results):
    out = _child_case(child_results, "ambiguous")
    if out["err"] is not None:
        assert "ambiguous" in out["err"], out
    else:
        assert out["steps"] == 200
    assert out["grew_mib"] < 1024, out
    assert child_results["rc"] == 0, child_results["stderr"]
    assert child_results["elapsed"] < 4 * HANG_GUARD_S
