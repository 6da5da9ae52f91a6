"""The public surface reads as Python: submodules on import, Python reprs,
EOS after EOS, numpy ints, and a torch-free path for numpy logits."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import tokensieve as ts


@pytest.fixture(scope="module")
def tiny():
    return ts.Vocabulary(token_bytes=[b"a", b"b", None], eos_token_ids=[2])


def test_submodules_are_exposed():
    assert ts.resample.systematic([0.0, 0.0], seed=0).tolist() in ([0, 1], [0, 0], [1, 1])
    assert callable(ts.smc.generate)
    assert "resample" in ts.__all__ and "smc" in ts.__all__
    assert not hasattr(ts.resample, "Population")


def test_reprs_read_as_python(tiny):
    m = ts.Matcher(ts.compile_regex("a", tiny))
    assert repr(m) == "Matcher(consumed=0, accepting=False, terminated=False)"
    m.consume_token(0)
    assert "accepting=True" in repr(m)
    assert repr(tiny) == "Vocabulary(size=3, eos_token_ids=[2], spelling='plain')"
    assert "resampler='systematic'" in repr(ts._core.Population(2))


def test_after_eos_the_mask_allows_eos_again(tiny):
    m = ts.Matcher(ts.compile_regex("a", tiny))
    assert m.consume_token(0) and m.consume_token(2) and m.eos_consumed
    bm = ts.allocate_token_bitmask(1, tiny.size)
    m.fill_next_token_bitmask(bm)
    assert m.allowed_tokens() == [2] and bm[0, 0] == 1 << 2  # never an all-zero row
    assert m.is_allowed(2) and not m.is_allowed(0)
    n = m.num_consumed
    assert m.consume_token(2) and m.num_consumed == n  # a no-op
    m.rollback(1)
    assert not m.eos_consumed and m.is_accepting()


def test_numpy_only_masking_does_not_import_torch():
    code = (
        "import sys, numpy as np, tokensieve as ts\n"
        "v = ts.Vocabulary(token_bytes=[b'a', b'b'])\n"
        "m = ts.Matcher(ts.compile_regex('a', v))\n"
        "bm = ts.allocate_token_bitmask(1, v.size); m.fill_next_token_bitmask(bm)\n"
        "x = np.zeros((1, 2), np.float32); ts.apply_token_bitmask_inplace(x, bm)\n"
        "assert x[0, 0] == 0 and x[0, 1] == -np.inf, x\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torch_needed_error_names_the_extra(monkeypatch):
    from tokensieve import _bitmask

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'tokensieve\[hf\]'"):
        _bitmask.unpack_bitmask(np.zeros((1, 1), np.int32), 4)


def test_vocabulary_pickles(load_vocab):
    import pickle

    tiny = ts.Vocabulary(token_bytes=[b"a", b"", None, b"b"], eos_token_ids=[3], vocab_size=40)
    for v in (tiny, load_vocab("gpt2")):
        w = pickle.loads(pickle.dumps(v))
        assert repr(w) == repr(v) and w.size == v.size and w.adds_prefix_space == v.adds_prefix_space
        assert all(w.token_bytes(i) == v.token_bytes(i) and w.is_special(i) == v.is_special(i) for i in range(v.size))
        c, d = ts.compile_regex("[a-z ]+", v), ts.compile_regex("[a-z ]+", w)
        assert ts.Matcher(c).allowed_tokens() == ts.Matcher(d).allowed_tokens()


def test_one_name_for_the_vocabulary_size(tiny):
    c = ts.compile_regex("a", tiny)
    assert tiny.vocab_size == tiny.size == c.vocab_size == ts.Matcher(c).vocab_size == 3
