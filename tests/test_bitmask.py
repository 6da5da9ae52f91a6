"""apply_token_bitmask_inplace: the Rust CPU path (contiguous float32/16,
bfloat16) and the torch path (any other layout or dtype, and CUDA) agree
with a plain per-token reference."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tokensieve as ts  # noqa: E402


def reference(logits: "torch.Tensor", bits: np.ndarray) -> "torch.Tensor":
    out = logits.clone()
    rows, vocab = out.shape
    for r in range(rows):
        for t in range(vocab):
            w = t // 32
            if w >= bits.shape[1] or not (int(bits[r, w]) >> (t % 32)) & 1:
                out[r, t] = float("-inf")
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "transposed-view"])
@pytest.mark.parametrize("vocab", [70, 96])  # narrower than, equal to the 3-word mask
def test_paths_agree_with_reference(dtype, layout, vocab):
    rng = np.random.default_rng(vocab)
    bits = rng.integers(-(2**31), 2**31, size=(3, 3), dtype=np.int64).astype(np.int32)
    bits[0, 0] = 0  # an all-masked word
    bits[1, 1] = -1  # an all-allowed word
    logits = torch.from_numpy(rng.standard_normal((3, vocab))).to(dtype)
    expect = reference(logits, bits)
    if layout == "contiguous":
        got = logits.clone()
        ts.apply_token_bitmask_inplace(got, bits)
    else:
        base = logits.clone().t().contiguous().t()  # same values, non-contiguous
        assert not base.is_contiguous()
        ts.apply_token_bitmask_inplace(base, bits)
        got = base
    assert torch.equal(got, expect)


def test_one_row_and_torch_bitmask():
    bits = np.array([5], dtype=np.int32)  # tokens 0 and 2
    logits = torch.zeros(32)
    ts.apply_token_bitmask_inplace(logits, torch.from_numpy(bits))
    assert torch.isfinite(logits).nonzero().flatten().tolist() == [0, 2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_bitmask_narrower_than_logits_is_an_error(dtype):
    # 3 words cover 96 tokens: 130 logit columns would be partly unmasked.
    logits = torch.zeros(3, 130, dtype=dtype)
    with pytest.raises(ValueError, match="covers 96 tokens"):
        ts.apply_token_bitmask_inplace(logits, np.zeros((3, 3), np.int32))
    with pytest.raises(ValueError, match="covers 96 tokens"):
        ts.apply_token_bitmask_inplace(logits.numpy() if dtype != torch.bfloat16 else logits.float().numpy(),
                                       np.zeros((3, 3), np.int32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_numpy_logits_agree_with_reference(dtype):
    rng = np.random.default_rng(1)
    bits = rng.integers(-(2**31), 2**31, size=(3, 3), dtype=np.int64).astype(np.int32)
    logits = rng.standard_normal((3, 90)).astype(dtype)
    expect = reference(torch.from_numpy(logits.astype(np.float64)), bits).numpy()
    ts.apply_token_bitmask_inplace(logits, bits)
    assert np.array_equal(logits.astype(np.float64), expect)


def test_bad_arguments():
    with pytest.raises(TypeError):
        ts.apply_token_bitmask_inplace([[0.0] * 32], np.zeros((1, 1), np.int32))
    with pytest.raises(TypeError):
        ts.apply_token_bitmask_inplace(np.zeros((1, 32), np.int64), np.zeros((1, 1), np.int32))
    with pytest.raises(TypeError):
        ts.apply_token_bitmask_inplace(torch.zeros(1, 32), np.zeros((1, 1), np.int64))
    with pytest.raises(ValueError):
        ts.apply_token_bitmask_inplace(torch.zeros(2, 32), np.zeros((1, 1), np.int32))
    with pytest.raises(TypeError):
        ts.apply_token_bitmask_inplace(torch.zeros(1, 32, dtype=torch.int64), np.zeros((1, 1), np.int32))
