"""The examples under ``examples/`` run offline, on a tiny random GPT-2
with the real GPT-2 tokenizer (few particles and tokens to stay fast), and
everything they return satisfies their constraints; and ``tokensieve
generate --smc --potential``."""

from __future__ import annotations

import importlib
import math
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import tokensieve as ts  # noqa: E402
from tokensieve import cli  # noqa: E402

from test_cli import local_model  # noqa: E402,F401  (the fixture)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def ex() -> Any:
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield lambda name: importlib.import_module(name)
    finally:
        sys.path.remove(str(EXAMPLES))


def test_lipogram(ex: Any, capsys: Any) -> None:
    res = ex("lipogram").main(["--particles", "4", "--max-new-tokens", "6"])
    out = capsys.readouterr().out
    assert "posterior" in out and "potential calls per particle and step" in out
    assert res.posterior()
    for t, w in zip(res.text_bytes, res.weights):
        assert b"e" not in t.lower()
    assert res.calls_per_step() < 50257 / 100


def test_sql_sqlite(ex: Any, capsys: Any) -> None:
    mod = ex("sql_sqlite")
    res = mod.main(["--particles", "4", "--max-new-tokens", "10"])
    assert "posterior" in capsys.readouterr().out
    con = mod.database()
    text = mod.GRAMMAR.read_text()
    known = mod.KnownNames(mod.grammar_keywords(text) | mod.schema_names(con), mod.stored_values(con))
    vocab = ts.Vocabulary.from_tokenizer_file(ts.__path__[0] + "/data/gpt2_tokenizer.json", eos_token_ids=[50256])
    g = ts.compile_grammar(text, vocab)
    for ids, t, st, w in zip(res.token_ids, res.text_bytes, res.status, res.weights):
        if st == "dead":
            continue
        assert ts.Matcher(g).consume_tokens(ids) == len(ids), t  # a viable grammar prefix
        assert known.prefix(t) == 0.0, t
        if st == "eos":
            con.execute(t.decode()).fetchall()  # runs


def test_sql_potentials_by_hand(ex: Any) -> None:
    mod = ex("sql_sqlite")
    con = mod.database()
    known = mod.KnownNames(mod.grammar_keywords(mod.GRAMMAR.read_text()) | mod.schema_names(con), mod.stored_values(con))
    assert known.prefix(b"SELECT name FROM customers WHERE country = 'F") == 0.0
    assert known.prefix(b"SELECT name FROM customers WHERE country = 'X") == -math.inf
    assert known.prefix(b"SELECT nam") == 0.0 and known.complete(b"SELECT nam") == -math.inf
    assert known.prefix(b"SELECT salary FROM") == -math.inf
    ok = mod.executes_on(con)
    assert ok.complete(b"SELECT c.name FROM customers AS c") == 0.0
    assert ok.complete(b"SELECT name FROM orders") == -math.inf
    assert ok.prefix(b"SELECT name FROM orders") == 0.0  # complete-only


def test_python_code(ex: Any, capsys: Any) -> None:
    mod = ex("python_code")
    res = mod.main(["--particles", "8", "--max-new-tokens", "8"])
    assert "posterior" in capsys.readouterr().out
    pf = mod.PythonFunction(mod.PROMPT, "add", mod.check_add)
    for t, st in zip(res.text_bytes, res.status):
        if st == "dead":
            continue
        assert mod.parses_as_prefix(mod.PROMPT + t.decode()), t
        if st == "eos":
            assert pf.complete(t) == 0.0, t


def test_python_potential_by_hand(ex: Any) -> None:
    mod = ex("python_code")
    pre = mod.PROMPT
    for body, ok in [(" a + (", True), (" a + ( b", True), (" a b", False), (" a )", False), (" ( a + b )", True),
                     (" a +", True), (" 1 ( ) 2", False), (" 2 * ( - + 1 ( ) 2", False), (" ( ( a ) ) b", False)]:
        assert mod.parses_as_prefix(pre + body) is ok, body
    pf = mod.PythonFunction(pre, "add", mod.check_add)
    assert pf.complete(b" a + b\n") == 0.0 and pf.complete(b" b - 0 + a\n") == 0.0
    assert pf.complete(b" a * b\n") == -math.inf and pf.prefix(b" a * b\n") == -math.inf
    assert pf.prefix(b" ( a") == 0.0 and pf.prefix(b" 9 ** 9 ** 9") == -math.inf


def test_cli_potential(local_model: Path, tmp_path: Path, capsys: Any) -> None:
    pot = tmp_path / "mypot.py"
    pot.write_text("def no_e(text: bytes) -> bool:\n    return b'e' not in text\n")
    argv = ["generate", "--model", str(local_model), "--regex", "[a-z ]{1,12}", "--prompt", "Say:",
            "--smc", "8", "--seed", "1", "--max-new-tokens", "6"]
    rc = cli.main(argv + ["--potential", f"{pot}:no_e"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "posterior" in out and "Traceback" not in err
    import re

    quoted = [eval(m) for m in re.findall(r"^\s+[0-9.]+\s+('.*'|\".*\")", out, flags=re.M)]
    assert quoted and all("e" not in s for s in quoted), out
    # A module on sys.path (the current directory) and a Potential subclass work too.
    (tmp_path / "mypot2.py").write_text(
        "from tokensieve.potentials import Potential\n"
        "class NoE(Potential):\n    def prefix(self, text):\n        return 0.0 if b'e' not in text else float('-inf')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        assert cli.main(argv + ["--potential", "mypot2:NoE", "--sampler", "direct"]) == 0
    finally:
        sys.path.remove(str(tmp_path))
    capsys.readouterr()
    for bad, msg in [("nocolon", "MODULE:FUNCTION"), ("no_such_mod_xyz:f", "cannot import"),
                     (f"{pot}:missing", "no attribute")]:
        assert cli.main(argv + ["--potential", bad]) == 2
        assert msg in capsys.readouterr().err
    rc = cli.main(argv[:-6] + ["--potential", f"{pot}:no_e"])
    assert rc == 2 and "--potential needs --smc" in capsys.readouterr().err
