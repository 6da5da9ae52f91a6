"""Bad input fails cleanly: the right exception type, a useful message, and
in bounded time (never a hang or a crash)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import tokensieve as ts
from conftest import load_vocab

HANG_GUARD_S = 30.0  # not a benchmark: only "it returned"


@pytest.fixture(scope="module")
def vocab():
    return load_vocab("gpt2")


@pytest.fixture()
def matcher(vocab):
    return ts.Matcher(ts.compile_regex("[a-z]+", vocab))


@pytest.fixture(scope="module")
def tiny():
    """A vocabulary that needs no tokenizer file: 128 one-byte ASCII tokens + EOS."""
    return ts.Vocabulary(token_bytes=[bytes([i]) for i in range(128)] + [None], eos_token_ids=[128])


# ---------------------------------------------------------------------------
# Regex syntax
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, position",
    [
        ("ab(c", 2),  # unclosed group opened at 2
        ("a[", 1),  # unclosed class
        ("abc)", 3),  # unopened group
        ("x{2,1}", 1),  # decreasing bounds
        (r"\q", 0),  # unknown escape
        ("*a", 0),  # repetition of nothing
    ],
)
def test_invalid_regex_names_position(tiny, pattern, position):
    with pytest.raises(ValueError, match=rf"invalid regex at position {position}\b") as e:
        ts.compile_regex(pattern, tiny)
    assert "line 1" in str(e.value)


def test_invalid_regex_line_and_column(tiny):
    with pytest.raises(ValueError, match=r"position 5 \(line 2, column 3\)"):
        ts.compile_regex("ab\ncd(", tiny)


def test_empty_language(tiny):
    for pattern in (r"[^\s\S]", "a$b", r"a[^\x00-\x{10FFFF}]"):
        with pytest.raises(ValueError, match="matches no string"):
            ts.compile_regex(pattern, tiny)


def test_unicode_word_boundary_is_not_called_too_large(tiny):
    with pytest.raises(ValueError) as e:
        ts.compile_regex(r"a\bb", tiny)
    assert "too large" not in str(e.value)


def test_ascii_word_boundary_is_fine(tiny):
    m = ts.Matcher(ts.compile_regex(r"(?-u:\b)ab(?-u:\b)", tiny))
    assert m.consume_tokens([ord("a"), ord("b")]) == 2 and m.is_accepting()


# ---------------------------------------------------------------------------
# Explosive patterns: "too large", quickly
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", [r"(a|b)*a(a|b){40}", r"\w{2000}"])
def test_explosive_regex_is_too_large(vocab, pattern):
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="too large"):
        ts.compile_regex(pattern, vocab)
    assert time.monotonic() - t0 < HANG_GUARD_S


def test_user_limits_apply(tiny):
    with pytest.raises(ValueError, match="too large"):
        ts.compile_regex("[a-z]{50}", tiny, max_states=10)
    with pytest.raises(ValueError, match="too large"):
        ts.compile_regex("[a-z]{50}", tiny, max_nfa_bytes=100)
    with pytest.raises(ValueError, match="too large"):
        ts.compile_regex("(a|b)*a(a|b){12}", tiny, max_dfa_bytes=10_000)
    assert ts.compile_regex("[a-z]{50}", tiny).num_states > 10


def test_huge_alternation_of_literals(vocab):
    rng = random.Random(0)
    words = sorted({"".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 10))) for _ in range(20000)})
    assert len(words) > 19000
    t0 = time.monotonic()
    try:
        c = ts.compile_regex("|".join(words), vocab)
    except ValueError as e:  # an error is acceptable, if it is the clean one
        assert "too large" in str(e)
        assert time.monotonic() - t0 < HANG_GUARD_S
        return
    assert time.monotonic() - t0 < HANG_GUARD_S
    # It compiled: the first mask is exactly the tokens that start some word.
    prefixes = {w[:i].encode() for w in words for i in range(1, len(w) + 1)}
    m = ts.Matcher(c)
    want = sorted(t for t in range(vocab.size) if vocab.token_bytes(t) in prefixes)
    assert m.allowed_tokens() == want
    # Byte-level GPT-2 has a token for every single byte: spell a word, and a non-word.
    ids = {vocab.token_bytes(t): t for t in range(256)}
    w = words[1234]
    assert m.consume_tokens([ids[bytes([b])] for b in w.encode()]) == len(w)
    assert m.is_accepting()
    m.reset()
    non_word = next(x for x in ("qqqq", "zzzzzzzzzzz", "abcdefghij") if x not in words)
    assert m.consume_tokens([ids[bytes([b])] for b in non_word.encode()]) < len(non_word) or not m.is_accepting()


# ---------------------------------------------------------------------------
# Token ids
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, -(2**40), 50257, 10**12])
def test_token_id_out_of_range(vocab, matcher, bad):
    assert vocab.size == 50257
    with pytest.raises(ValueError, match="out of range"):
        matcher.consume_token(bad)
    with pytest.raises(ValueError, match="out of range"):
        matcher.is_allowed(bad)
    with pytest.raises(ValueError, match="out of range"):
        vocab.token_bytes(bad)
    with pytest.raises(ValueError, match="out of range"):
        vocab.is_special(bad)
    with pytest.raises(ValueError, match="out of range"):
        matcher.consume_tokens([64, bad])  # 64 is "a", allowed
    # Nothing was consumed by the failed calls (consume_tokens validates first).
    assert matcher.num_consumed == 0


def test_last_valid_id_is_fine(vocab, matcher):
    assert vocab.token_bytes(vocab.size - 1) == b""  # <|endoftext|>
    assert matcher.is_allowed(vocab.size - 1) is False  # EOS, not accepting yet


def test_token_id_beyond_int64(vocab, matcher):
    with pytest.raises(ValueError):
        matcher.consume_token(2**64)


def test_token_id_wrong_type(matcher):
    with pytest.raises(TypeError):
        matcher.consume_token("7")
    with pytest.raises(TypeError):
        matcher.consume_token(1.5)


# ---------------------------------------------------------------------------
# Bitmasks
# ---------------------------------------------------------------------------


def _words(vocab):
    return (vocab.size + 31) // 32


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint32, np.int16, np.uint8, bool])
def test_bitmask_wrong_dtype(vocab, matcher, dtype):
    bm = np.zeros((1, _words(vocab)), dtype=dtype)
    with pytest.raises(TypeError, match="int32"):
        matcher.fill_next_token_bitmask(bm)


@pytest.mark.parametrize(
    "shape", [(1, 5), (1, 1570), (1, 1572), (1571 * 2,), (2, 2, 1571), (), (0, 1571)]
)
def test_bitmask_wrong_shape(vocab, matcher, shape):
    assert _words(vocab) == 1571
    bm = np.zeros(shape, dtype=np.int32)
    with pytest.raises(IndexError if shape == (0, 1571) else ValueError):
        matcher.fill_next_token_bitmask(bm)
    assert not bm.any()


@pytest.mark.parametrize("obj", [None, [[0] * 1571], b"\0" * (4 * 1571), 3, "bitmask"])
def test_bitmask_not_an_array(matcher, obj):
    with pytest.raises(TypeError):
        matcher.fill_next_token_bitmask(obj)


def test_bitmask_non_contiguous(vocab, matcher):
    w = _words(vocab)
    wide = np.zeros((2, 2 * w), dtype=np.int32)
    with pytest.raises(ValueError, match="contiguous"):
        matcher.fill_next_token_bitmask(wide[:, ::2])
    fortran = np.zeros((w, 2), dtype=np.int32).T.copy(order="F")
    assert not fortran.flags.c_contiguous
    with pytest.raises(ValueError, match="contiguous"):
        matcher.fill_next_token_bitmask(fortran)
    assert (wide == 0).all() and (fortran == 0).all()


def test_bitmask_read_only(vocab, matcher):
    bm = ts.allocate_token_bitmask(1, vocab.size)
    bm.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        matcher.fill_next_token_bitmask(bm)
    assert (bm == 0).all()


@pytest.mark.parametrize("index", [2, 3, -1, -3, 2**40])
def test_bitmask_bad_row_index(vocab, matcher, index):
    bm = ts.allocate_token_bitmask(2, vocab.size)
    with pytest.raises(IndexError):
        matcher.fill_next_token_bitmask(bm, index)
    assert (bm == 0).all()


def test_bitmask_good_rows_still_work(vocab, matcher):
    bm = ts.allocate_token_bitmask(3, vocab.size)
    matcher.fill_next_token_bitmask(bm, 2)
    matcher.fill_next_token_bitmask(bm[1])  # a 1-D row view is contiguous
    assert (bm[0] == 0).all() and (bm[1] == bm[2]).all() and bm[2].any()


def test_torch_bitmask_errors(vocab, matcher):
    torch = pytest.importorskip("torch")
    w = _words(vocab)
    with pytest.raises(TypeError, match="int32"):
        matcher.fill_next_token_bitmask(torch.zeros(1, w, dtype=torch.float32))
    with pytest.raises(TypeError, match="int32"):
        matcher.fill_next_token_bitmask(torch.zeros(1, w, dtype=torch.int64))
    with pytest.raises(ValueError):
        matcher.fill_next_token_bitmask(torch.zeros(1, w + 1, dtype=torch.int32))
    with pytest.raises(ValueError, match="contiguous"):
        matcher.fill_next_token_bitmask(torch.zeros(w, 2, dtype=torch.int32).T)
    with pytest.raises(IndexError):
        matcher.fill_next_token_bitmask(torch.zeros(1, w, dtype=torch.int32), 1)
    t = torch.zeros(1, w, dtype=torch.int32)
    matcher.fill_next_token_bitmask(t)
    assert t.any()


def test_batch_fill_errors(vocab):
    c = ts.compile_regex("[a-z]+", vocab)
    ms = [ts.Matcher(c), ts.Matcher(c)]
    bm = ts.allocate_token_bitmask(2, vocab.size)
    with pytest.raises(ValueError):
        ts.fill_next_token_bitmasks(ms, bm, indices=[0])  # length mismatch
    with pytest.raises(ValueError):
        ts.fill_next_token_bitmasks(ms, bm, indices=[1, 1])  # duplicate row
    with pytest.raises(IndexError):
        ts.fill_next_token_bitmasks(ms, bm, indices=[0, 2])
    with pytest.raises(TypeError):
        ts.fill_next_token_bitmasks(ms, bm.astype(np.float32))
    with pytest.raises(TypeError):
        ts.fill_next_token_bitmasks([ms[0], "not a matcher"], bm)
    assert (bm == 0).all()


# ---------------------------------------------------------------------------
# Rollback
# ---------------------------------------------------------------------------


def test_rollback_more_than_consumed(vocab, matcher):
    with pytest.raises(ValueError, match="only 0 consumed"):
        matcher.rollback(1)
    a = 64
    assert vocab.token_bytes(a) == b"a"
    assert matcher.consume_token(a) and matcher.consume_token(a)
    with pytest.raises(ValueError, match="only 2 consumed"):
        matcher.rollback(3)
    assert matcher.num_consumed == 2  # unchanged by the failed call
    matcher.rollback(2)
    assert matcher.num_consumed == 0
    with pytest.raises((ValueError, OverflowError, TypeError)):
        matcher.rollback(-1)


# ---------------------------------------------------------------------------
# Vocabularies
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "{",
        "[1, 2]",
        "{}",
        '{"model": {}}',
        '{"model": {"vocab": []}}',
        '{"model": {"vocab": {}}}',
        '{"model": {"vocab": {"a": "zero"}}}',
        '{"model": {"vocab": {"a": -1}}}',
        '{"model": {"vocab": {"a": 0}}, "added_tokens": [{"content": "x"}]}',
        '{"model": {"vocab": [["a"], 5]}}',
        '{"model": {"vocab": {"a": 0}}, "added_tokens": [{"id": 3000000000, "content": "x"}]}',
    ],
)
def test_vocabulary_from_garbage_json(text):
    with pytest.raises(ValueError):
        ts.Vocabulary(text)


def _run_isolated(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with its address space capped at
    4 GiB, so that a runaway allocation fails fast instead of eating the
    machine (or aborting this test process)."""
    resource = pytest.importorskip("resource")
    del resource
    prelude = "import resource; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\nimport tokensieve as ts\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )


_CLEAN_VALUE_ERROR = """
try:
    {expr}
except ValueError as e:
    print("ValueError:", e)
else:
    print("no error")
"""


def test_vocabulary_huge_token_id_is_a_clean_error():
    r = _run_isolated(_CLEAN_VALUE_ERROR.format(expr="ts.Vocabulary('{\"model\": {\"vocab\": {\"a\": 2000000000}}}')"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ValueError:")


def test_vocabulary_id_beyond_u32_is_rejected():
    with pytest.raises(ValueError):
        ts.Vocabulary('{"model": {"vocab": {"a": 0, "b": 4294967296}}}')


def test_vocabulary_huge_vocab_size_is_a_clean_error():
    r = _run_isolated(_CLEAN_VALUE_ERROR.format(expr="ts.Vocabulary(token_bytes=[b'a'], vocab_size=10**10)"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("ValueError:")


def test_vocabulary_bad_vocab_size_type():
    with pytest.raises((OverflowError, ValueError)):
        ts.Vocabulary(token_bytes=[b"a"], vocab_size=-1)


def test_vocabulary_eos_out_of_range():
    tok = json.dumps({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}}})
    with pytest.raises(ValueError, match="EOS"):
        ts.Vocabulary(tok, eos_token_ids=[5])
    with pytest.raises(ValueError, match="EOS"):
        ts.Vocabulary(token_bytes=[b"a"], eos_token_ids=[1])
    with pytest.raises(TypeError):
        ts.Vocabulary()  # neither JSON nor token_bytes


def test_missing_tokenizer_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        ts.Vocabulary.from_tokenizer_file(tmp_path / "nope" / "tokenizer.json")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        ts.Vocabulary.from_tokenizer_file(tmp_path)  # empty directory
    with pytest.raises(TypeError):
        ts.Vocabulary.from_tokenizer_file(3)


def test_eos_from_tokenizer_config_beside_the_file(tmp_path):
    tok = {
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "<x>": 2}, "merges": ["a b"]},
        "added_tokens": [{"id": 3, "content": "<stop>", "special": True}],
    }
    (tmp_path / "tokenizer.json").write_text(json.dumps(tok))
    assert ts.Vocabulary.from_tokenizer_file(tmp_path).eos_token_ids == []
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "<stop>"}}))
    assert ts.Vocabulary.from_tokenizer_file(tmp_path).eos_token_ids == [3]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<x>"}))
    assert ts.Vocabulary.from_tokenizer_file(tmp_path).eos_token_ids == [2]
    assert ts.Vocabulary.from_tokenizer_file(tmp_path, eos_token_ids=[1]).eos_token_ids == [1]
    (tmp_path / "tokenizer_config.json").write_text("not json")
    assert ts.Vocabulary.from_tokenizer_file(tmp_path).eos_token_ids == []


def test_garbage_tokenizer_file(tmp_path):
    p = tmp_path / "tokenizer.json"
    p.write_text("this is not a tokenizer")
    with pytest.raises(ValueError):
        ts.Vocabulary.from_tokenizer_file(p)
    gz = tmp_path / "x.json.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises((ValueError, OSError)):
        ts.Vocabulary.from_tokenizer_file(gz)
