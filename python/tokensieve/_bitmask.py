"""Bitmask allocation and application (numpy / torch glue)."""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from . import _core

_SHIFTS: Dict[Any, Any] = {}
_CPU_DTYPES: Dict[Any, str] = {}  # torch dtype -> name; filled on first use (torch imports lazily)


def _cpu_dtypes() -> Dict[Any, str]:
    if not _CPU_DTYPES:
        import torch

        _CPU_DTYPES.update({torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"})
    return _CPU_DTYPES


def allocate_token_bitmask(batch_size: int, vocab_size: int) -> np.ndarray:
    """Return a zeroed int32 array of shape ``(batch_size, ceil(vocab_size / 32))``.

    Bit ``t % 32`` of word ``t // 32`` in a row stands for token ``t``.
    ``torch.from_numpy`` views it as a tensor without copying.
    """
    batch_size = _positive_int(batch_size, "batch_size")
    vocab_size = _positive_int(vocab_size, "vocab_size")
    return np.zeros((batch_size, _core.bitmask_words(vocab_size)), dtype=np.int32)


def _positive_int(x: Any, name: str) -> int:
    """``x`` as a Python int (numpy integers included, bools not): a
    TypeError for anything else, a ValueError unless it is positive."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    if x <= 0:
        raise ValueError(f"{name} must be positive, got {int(x)}")
    return int(x)


def _shifts(device: Any):
    import torch

    s = _SHIFTS.get(device)
    if s is None:
        s = torch.arange(32, dtype=torch.int32, device=device)
        _SHIFTS[device] = s
    return s


def unpack_bitmask(bitmask: Any, vocab_size: int):
    """Boolean torch tensor ``(..., vocab_size)`` of allowed tokens from a packed bitmask."""
    import torch

    bm = torch.from_numpy(bitmask) if isinstance(bitmask, np.ndarray) else bitmask
    bits = (bm.unsqueeze(-1) >> _shifts(bm.device)) & 1
    allowed = bits.flatten(-2).bool()
    if allowed.shape[-1] < vocab_size:
        pad = torch.zeros(*allowed.shape[:-1], vocab_size - allowed.shape[-1], dtype=torch.bool, device=bm.device)
        allowed = torch.cat([allowed, pad], dim=-1)
    return allowed[..., :vocab_size]


def apply_token_bitmask_inplace(logits: Any, bitmask: Any) -> None:
    """Set disallowed logits to ``-inf`` in place.

    ``logits``: float torch tensor ``(batch, V)`` or ``(V,)`` on any device.
    ``bitmask``: int32 numpy array or torch tensor ``(batch, W)`` or ``(W,)``
    (moved to ``logits.device``). Columns of ``logits`` beyond ``32 * W``
    (an embedding matrix wider than the vocabulary) are masked too.
    """
    import torch

    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if isinstance(bitmask, np.ndarray):
        if bitmask.dtype != np.int32:
            raise TypeError(f"bitmask must have dtype int32, got {bitmask.dtype}")
        bitmask = torch.from_numpy(bitmask)
    elif isinstance(bitmask, torch.Tensor):
        if bitmask.dtype != torch.int32:
            raise TypeError(f"bitmask must have dtype int32, got {bitmask.dtype}")
    else:
        raise TypeError(f"bitmask must be a numpy array or torch tensor, got {type(bitmask).__name__}")
    if logits.dim() not in (1, 2) or bitmask.dim() != logits.dim():
        raise ValueError(
            f"logits {tuple(logits.shape)} and bitmask {tuple(bitmask.shape)} must both be 1-D or both 2-D"
        )
    if logits.dim() == 2 and logits.shape[0] != bitmask.shape[0]:
        raise ValueError(f"logits have {logits.shape[0]} rows but bitmask has {bitmask.shape[0]}")
    vocab = logits.shape[-1]
    if (
        logits.device.type == "cpu"
        and logits.is_contiguous()
        and bitmask.device.type == "cpu"
        and logits.dtype in _cpu_dtypes()
    ):
        bm = bitmask.contiguous()
        rows = 1 if logits.dim() == 1 else logits.shape[0]
        _core._apply_bitmask_cpu(
            logits.data_ptr(), _cpu_dtypes()[logits.dtype], rows, vocab, bm.data_ptr(), bm.shape[-1]
        )
        return
    bm = bitmask.to(logits.device, non_blocking=True)
    covered = min(vocab, bm.shape[-1] * 32)
    allowed = unpack_bitmask(bm, covered)
    logits[..., :covered].masked_fill_(~allowed, float("-inf"))
    if vocab > covered:
        logits[..., covered:] = float("-inf")
