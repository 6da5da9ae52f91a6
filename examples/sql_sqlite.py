"""SQL that runs: a Lark SQL grammar times Python functions that know the
database.

Three factors, in this order:

1. ``examples/grammars/sql.lark`` (the SynCode SQL grammar), compiled by
   tokensieve into exact token masks: every string is a syntactically valid
   ``SELECT`` prefix, and EOS comes only when the query is complete;
2. ``known_names`` (a prefix potential, asked only about tokens the
   grammar allows): every finished word must be an SQL keyword, a table or
   column of the schema, or a one-letter alias, and every string literal a
   value stored in the database;
3. ``executes`` (checked on complete queries only): the query must run
   without error against an in-memory sqlite3 database with that schema.

SMC with AWRS samples the model conditioned on all three and reports the
weighted queries and log P(constraints). Offline by default (a tiny random
GPT-2: the queries are random but always run); ``--model PATH`` for a real
model.

    python examples/sql_sqlite.py [--model PATH] [--particles N]
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
from pathlib import Path
from typing import FrozenSet, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import load_model, parser, report  # noqa: E402

import tokensieve as ts  # noqa: E402
from tokensieve import smc  # noqa: E402
from tokensieve.potentials import Potential, complete_only  # noqa: E402

GRAMMAR = Path(__file__).parent / "grammars" / "sql.lark"

SCHEMA = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, country TEXT);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, amount REAL, status TEXT);
INSERT INTO customers VALUES (1, 'Ada', 'FR'), (2, 'Alan', 'UK'), (3, 'Grace', 'US');
INSERT INTO orders VALUES (1, 1, 120.0, 'shipped'), (2, 1, 35.5, 'open'), (3, 3, 990.0, 'shipped');
"""

PROMPT = (
    "-- sqlite, tables customers(id, name, country) and orders(id, customer_id, amount, status)\n"
    "-- total amount of shipped orders per country\n"
)


def database() -> sqlite3.Connection:
    con = sqlite3.connect(":memory:")
    con.executescript(SCHEMA)
    return con


def schema_names(con: sqlite3.Connection) -> FrozenSet[str]:
    names = set()
    for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        names.add(table.lower())
        names.update(row[1].lower() for row in con.execute(f"PRAGMA table_info({table})"))
    return frozenset(names)


def grammar_keywords(text: str) -> FrozenSet[str]:
    return frozenset(k.lower() for k in re.findall(r'"([A-Za-z_]+)"i', text))


_WORD = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
_LITERAL = re.compile(rb"'([^']*)'")


class KnownNames(Potential):
    """Prefix potential: every finished word is a keyword, a schema name or
    a one-letter alias, and every string literal is a value stored in the
    database; the word or literal still being typed (at the very end) must
    be a prefix of one of them."""

    def __init__(self, words: FrozenSet[str], values: FrozenSet[bytes]) -> None:
        self.words = words
        self.values = values
        self.name = "known_names"

    def _ok(self, text: bytes, complete: bool) -> bool:
        for m in _LITERAL.finditer(text):
            if m.group(1) not in self.values:
                return False
        body = _LITERAL.sub(b"''", text)
        q = body.find(b"'")
        if q >= 0:  # an unterminated literal at the end
            if complete or not any(v.startswith(body[q + 1:]) for v in self.values):
                return False
            body = body[:q]
        for m in _WORD.finditer(body):
            w = m.group().decode().lower()
            if w in self.words or len(w) == 1:
                continue
            if not complete and m.end() == len(body) and any(k.startswith(w) for k in self.words):
                continue  # still being typed
            return False
        return True

    def prefix(self, text: bytes) -> float:
        return 0.0 if self._ok(text, False) else float("-inf")

    def complete(self, text: bytes) -> float:
        return 0.0 if self._ok(text, True) else float("-inf")


def stored_values(con: sqlite3.Connection) -> FrozenSet[bytes]:
    vals = set()
    for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        for row in con.execute(f"SELECT * FROM {table}"):
            vals.update(str(v).encode() for v in row if isinstance(v, str))
    return frozenset(vals)


def executes_on(con: sqlite3.Connection) -> Potential:
    def executes(text: bytes) -> bool:
        try:
            con.execute(text.decode("utf-8")).fetchmany(10)
        except (sqlite3.Error, UnicodeDecodeError, ValueError):
            return False
        return True

    return complete_only(executes)


def main(argv: Optional[Sequence[str]] = None) -> smc.SMCResult:
    args = parser("SQL from a Lark grammar times sqlite3", max_new_tokens=40).parse_args(argv)
    model, tok, vocab = load_model(args.model, args.seed, args.layers)
    grammar_text = GRAMMAR.read_text()
    sql = ts.compile_grammar(grammar_text, vocab)
    con = database()
    known = KnownNames(grammar_keywords(grammar_text) | schema_names(con), stored_values(con))
    res = smc.generate(
        model, tok, PROMPT,
        potentials=[sql, known, executes_on(con)],
        sampler=args.sampler, n_particles=args.particles, max_new_tokens=args.max_new_tokens,
        seed=args.seed, vocab=vocab,
    )
    report(res)
    for text, st in zip(res.texts, res.status):
        if st == "eos":
            rows = con.execute(text).fetchmany(3)
            print(f"  runs: {text!r} -> {rows}")
            break
    return res


if __name__ == "__main__":
    main()
