"""Differential tests of grammar acceptance: against Lark itself on the real
Lark grammars of the grammar bench (every ``benches/grammars/*.lark``, plus
SynCode's JSON and Lark's calc example from ``../shared/grammars``), and
against the tests' own recogniser on the bench's GBNF grammars.

Texts: each bench sample and random mutations of it (characters deleted,
inserted or replaced, truncations), seeded. tokensieve reads them byte by
byte (a vocabulary of the 256 single bytes) and accepts a text iff it is
consumed in full and the matcher ends accepting; Lark's Earley parser with
its dynamic lexer is the reference. The one known difference is lexing:
the dynamic lexer may split a run of letters anywhere (``intprice`` as
``int price``), where tokensieve's lexer is greedy like Lark's standard ones
(see the README's constraint semantics). A disagreement counts as that
difference only when Lark's Earley parser with its greedy ``basic`` lexer
agrees with tokensieve; every other disagreement fails the test.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import List, Tuple

import pytest

import tokensieve as ts

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benches" / "grammars"
# Every Lark grammar of the bench (see benches/grammars/SOURCES.md).
GRAMMARS = sorted(BENCH.glob("*.lark"))
GRAMMARS += [ROOT.parent / "shared" / "grammars" / n for n in ("lark-calc.lark", "syncode-json_grammar.lark")]
BYTES = ts.Vocabulary(token_bytes=[bytes([b]) for b in range(256)] + [b"<eos>"], eos_token_ids=[256])


def _mutations(sample: str, n: int, seed: int) -> List[str]:
    rng = random.Random(seed)
    alphabet = sorted(set(sample))
    out = [sample]
    for _ in range(n):
        t = list(sample)
        for _ in range(rng.randint(1, 2)):
            i = rng.randrange(len(t))
            op = rng.random()
            if op < 0.33:
                del t[i]
            elif op < 0.66:
                t.insert(i, rng.choice(alphabet))
            else:
                t[i] = rng.choice(alphabet)
        if rng.random() < 0.3:
            t = t[: rng.randrange(len(t) + 1)]
        out.append("".join(t))
    return out


@pytest.mark.parametrize("path", GRAMMARS, ids=lambda p: p.name)
def test_tokensieve_accepts_exactly_what_lark_parses(path: Path) -> None:
    lark = pytest.importorskip("lark")
    if not path.is_file():
        pytest.skip(f"{path} not found")
    grammar = path.read_text(encoding="utf-8")
    sample = path.with_suffix(".1.txt").read_text(encoding="utf-8")
    parser = lark.Lark(grammar, parser="earley", lexer="dynamic")
    greedy = lark.Lark(grammar, parser="earley", lexer="basic")
    c = ts.compile_grammar(grammar, BYTES)
    disagreements: List[Tuple[bool, str]] = []
    munch = 0
    accepted = 0
    for text in _mutations(sample, 60, seed=len(sample)):
        try:
            parser.parse(text)
            theirs = True
        except lark.exceptions.LarkError:
            theirs = False
        m = ts.Matcher(c)
        data = list(text.encode("utf-8"))
        ours = m.consume_tokens(data) == len(data) and m.is_accepting()
        accepted += ours
        if ours != theirs:
            try:
                greedy.parse(text)
                greedy_ok = True
            except lark.exceptions.LarkError:
                greedy_ok = False
            if greedy_ok == ours:
                munch += 1
            else:
                disagreements.append((theirs, text))
    print(f"{path.name}: {munch} texts differ from the dynamic lexer only by maximal munch")
    assert accepted >= 1  # the sample itself
    assert munch <= 5, munch
    assert not disagreements, f"{len(disagreements)} disagreements with Lark: {disagreements[:3]}"


# Every GBNF grammar of the bench but json_arr (its 5 KB sample makes the
# reference recogniser slow; json and JSON arrays are covered by the shared json).
GBNF = [p for p in sorted(BENCH.glob("*.gbnf")) if p.name != "llamacpp-json_arr.gbnf"]
GBNF += [ROOT.parent / "shared" / "grammars" / f"llamacpp-{n}.gbnf" for n in ("json", "arithmetic", "list")]


@pytest.mark.parametrize("path", GBNF, ids=lambda p: p.name)
def test_gbnf_accepts_exactly_what_an_independent_recogniser_derives(path: Path) -> None:
    """llama.cpp grammars against the tests' own character-level Earley
    recogniser (tests/grammar_ref.py, which shares no code with the engine)
    on the bench samples and their mutations: GBNF is defined character by
    character, so there is no lexing difference to allow for."""
    if not path.is_file():
        pytest.skip(f"{path} not found")
    import grammar_ref as R

    grammar = path.read_text(encoding="utf-8")
    sample = path.with_suffix(".1.txt").read_text(encoding="utf-8")
    ref = R.RefMatcher(R.from_gbnf(grammar))
    c = ts.compile_grammar(grammar, BYTES, syntax="gbnf")
    disagreements = []
    for text in _mutations(sample, 40, seed=len(sample)):
        m = ts.Matcher(c)
        data = list(text.encode("utf-8"))
        ours = m.consume_tokens(data) == len(data) and m.is_accepting()
        if ours != ref.accepts_text(text):
            disagreements.append((ours, text))
    assert not disagreements, f"{len(disagreements)} disagreements: {disagreements[:3]}"
