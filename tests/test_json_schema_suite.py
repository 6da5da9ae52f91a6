"""The official JSON-Schema-Test-Suite (draft 2020-12) through
``tokensieve.compile_json_schema``, with a ratchet.

Runs the harness of ``benches/json_schema_suite.py`` (the same function, via
``json_schema_suite_lib``) on the Llama 3 vocabulary and checks:

* no case is **wrongly accepted** (an invalid instance accepted in full and
  accepting at the end): a constraint must never let a model produce an
  instance its schema rejects;
* no case raises while matching (``error``);
* per file, ``passed`` is at least the value recorded in
  ``tests/data/json_schema_suite_ratchet.json`` (refusing a schema is
  allowed, but a file may not regress). After an improvement, raise the
  ratchet with ``python benches/json_schema_suite.py --update-ratchet``.

Needs ``../shared/json-schema-test-suite`` and the shared Llama 3 tokenizer;
it skips only when those are absent.
"""

from __future__ import annotations

import json

import pytest

import json_schema_suite_lib
from conftest import load_vocab, tokenizer_path

S = json_schema_suite_lib.load()
LLAMA3 = "llama-3-8b-instruct"

#: Suite cases the compiler wrongly accepts today, as (file, group index,
#: case index, reason): compiler bugs, reported, not fixed here. Each runs
#: as an xfail(strict=True) test below; test_no_wrongly_accepted fails on
#: any other. Remove an entry when its test starts passing.
KNOWN_WRONGLY_ACCEPTED: list = []  # the four found on 2026-12-04 were fixed before main's 69fe6f4


@pytest.fixture(scope="module")
def suite_result():
    if not S.SUITE_DIR.is_dir():
        pytest.skip(f"JSON-Schema-Test-Suite not found: {S.SUITE_DIR}")
    tok_file = tokenizer_path(LLAMA3)  # skips when the shared tokenizer is absent
    engine = S.tokensieve_engine(vocab=load_vocab(LLAMA3))
    result = S.run_suite(engine, S.llama3_tokenize(tok_file), S.SUITE_DIR)
    print("\n" + S.format_table(result))
    return result


def test_suite_covers_every_case(suite_result):
    """All 2,063 cases of the 67 files are counted (31 of them skipped: refRemote)."""
    tot = suite_result.totals()
    expected = sum(len(g["tests"]) for p in S.suite_files(S.SUITE_DIR) for g in json.loads(p.read_text(encoding="utf-8")))
    assert tot["cases"] == expected
    assert tot["skipped"] == suite_result.counts["refRemote.json"]["skipped"] > 0


def test_no_wrongly_accepted(suite_result):
    """No invalid instance accepted, apart from the known bugs (tested below)."""
    known = {(f, g, c) for f, g, c, _ in KNOWN_WRONGLY_ACCEPTED}
    bad = [f for f in suite_result.failures if f["outcome"] == "wrongly_accepted" and (f["file"], f["group"], f["case"]) not in known]
    assert not bad, "invalid instances accepted:\n" + "\n".join(
        f"  {f['file']} #{f['group']}.{f['case']} {f['description']!r}: schema={json.dumps(f['schema'])[:300]} instance={f['instance'][:200]}"
        for f in bad[:25]
    )


def test_no_errors_while_matching(suite_result):
    bad = [f for f in suite_result.failures if f["outcome"] == "error"]
    assert not bad, [(f["file"], f["group"], f["case"]) for f in bad[:25]]


def test_ratchet(suite_result):
    """Per file, ``passed`` >= the ratchet."""
    assert S.RATCHET.is_file(), f"{S.RATCHET} missing: run python benches/json_schema_suite.py --update-ratchet"
    ratchet = json.loads(S.RATCHET.read_text(encoding="utf-8"))
    regressions = {
        f: (want.get("passed", 0), suite_result.counts.get(f, {}).get("passed", 0))
        for f, want in ratchet.items()
        if suite_result.counts.get(f, {}).get("passed", 0) < want.get("passed", 0)
    }
    assert not regressions, f"files passing fewer cases than the ratchet (ratchet, now): {regressions}"
    missing = sorted(set(suite_result.counts) - set(ratchet))
    assert not missing, f"files not in the ratchet (re-run --update-ratchet): {missing}"


if KNOWN_WRONGLY_ACCEPTED:  # (an empty parametrization would show as a skip)

    @pytest.mark.parametrize(
        "file,group,case",
        [
            pytest.param(f, g, c, id=f"{f}#{g}.{c}", marks=pytest.mark.xfail(strict=True, reason=r))
            for f, g, c, r in KNOWN_WRONGLY_ACCEPTED
        ],
    )
    def test_known_wrongly_accepted(suite_result, file, group, case):
        """A known wrongly accepted case (xfail strict: passes once fixed)."""
        wrong = {(f["file"], f["group"], f["case"]) for f in suite_result.failures if f["outcome"] == "wrongly_accepted"}
        assert (file, group, case) not in wrong
