"""Bitmask allocation and application (numpy / torch glue)."""

from __future__ import annotations

import operator
import sys
from typing import Any, Dict

import numpy as np

from . import _core

_SHIFTS: Dict[Any, Any] = {}
_CPU_DTYPES: Dict[Any, str] = {}  # torch dtype -> name; filled on first use (torch imports lazily)


def _cpu_dtypes() -> Dict[Any, str]:
    if not _CPU_DTYPES:
        torch = _require_torch()

        _CPU_DTYPES.update({torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"})
    return _CPU_DTYPES


def _int_arg(value: Any, name: str) -> int:
    """``value`` as a Python int: any integer type (numpy ints included),
    not ``bool`` nor a float; a TypeError naming ``name``."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None


def _positive_int(value: Any, name: str) -> int:
    """``value`` as a positive Python int (see :func:`_int_arg`); a
    TypeError or ValueError naming ``name``."""
    v = _int_arg(value, name)
    if v <= 0:
        raise ValueError(f"{name} must be positive, got {v}")
    return v


def allocate_token_bitmask(batch_size: int, vocab_size: int) -> np.ndarray:
    """Return a zeroed int32 array of shape ``(batch_size, ceil(vocab_size / 32))``.

    Bit ``t % 32`` of word ``t // 32`` in a row stands for token ``t``.
    ``torch.from_numpy`` views it as a tensor without copying.
    """
    batch_size = _positive_int(batch_size, "batch_size")
    vocab_size = _positive_int(vocab_size, "vocab_size")
    return np.zeros((batch_size, _core.bitmask_words(vocab_size)), dtype=np.int32)


def _require_torch() -> Any:
    """Import torch, or explain which extra provides it."""
    try:
        import torch
    except ImportError:
        raise ImportError(
            "this needs PyTorch; install it with pip install 'tokensieve[hf]' (numpy logits work without it)"
        ) from None
    return torch


def _shifts(device: Any) -> Any:
    torch = _require_torch()

    s = _SHIFTS.get(device)
    if s is None:
        s = torch.arange(32, dtype=torch.int32, device=device)
        _SHIFTS[device] = s
    return s


_BITS: Dict[Any, Any] = {}


def _bits(device: Any) -> Any:
    """``1 << k`` for k in 0..31 as int32 (bit 31 is the sign bit) on ``device``."""
    torch = _require_torch()

    b = _BITS.get(device)
    if b is None:
        b = torch.from_numpy((np.uint32(1) << np.arange(32, dtype=np.uint32)).view(np.int32)).to(device)
        _BITS[device] = b
    return b


def unpack_bitmask(bitmask: Any, vocab_size: int) -> Any:
    """Boolean torch tensor ``(..., vocab_size)`` of allowed tokens from a packed bitmask."""
    torch = _require_torch()

    bm = torch.from_numpy(bitmask) if isinstance(bitmask, np.ndarray) else bitmask
    bits = (bm.unsqueeze(-1) >> _shifts(bm.device)) & 1
    allowed = bits.flatten(-2).bool()
    if allowed.shape[-1] < vocab_size:
        pad = torch.zeros(*allowed.shape[:-1], vocab_size - allowed.shape[-1], dtype=torch.bool, device=bm.device)
        allowed = torch.cat([allowed, pad], dim=-1)
    return allowed[..., :vocab_size]


def _check_bitmask_dims(logits_shape: Any, bitmask_shape: Any) -> None:
    """Both 1-D or both 2-D with as many rows, the bitmask covering every
    logit column (a narrower bitmask would silently leave columns
    unmasked: build the vocabulary with the model's ``vocab_size``)."""
    if len(logits_shape) not in (1, 2) or len(bitmask_shape) != len(logits_shape):
        raise ValueError(
            f"logits {tuple(logits_shape)} and bitmask {tuple(bitmask_shape)} must both be 1-D or both 2-D"
        )
    if len(logits_shape) == 2 and logits_shape[0] != bitmask_shape[0]:
        raise ValueError(f"logits have {logits_shape[0]} rows but bitmask has {bitmask_shape[0]}")
    if bitmask_shape[-1] * 32 < logits_shape[-1]:
        raise ValueError(
            f"bitmask covers {bitmask_shape[-1] * 32} tokens but logits have {logits_shape[-1]} columns; "
            f"build the vocabulary with vocab_size={logits_shape[-1]}"
        )


def _apply_numpy(logits: np.ndarray, bitmask: Any) -> None:
    if not isinstance(bitmask, np.ndarray):
        raise TypeError(f"bitmask for numpy logits must be a numpy array, got {type(bitmask).__name__}")
    if bitmask.dtype != np.int32:
        raise TypeError(f"bitmask must have dtype int32, got {bitmask.dtype}")
    if logits.dtype.kind != "f":
        raise TypeError(f"logits must be a floating-point array, got dtype {logits.dtype}")
    _check_bitmask_dims(logits.shape, bitmask.shape)
    if logits.dtype == np.float32 and logits.flags.c_contiguous:
        _core._apply_bitmask_cpu(logits, bitmask, "float32")
        return
    if not logits.flags.writeable:
        raise ValueError("logits are read-only")
    bits = np.unpackbits(np.ascontiguousarray(bitmask).view(np.uint8), axis=-1, bitorder="little")
    logits[~bits[..., : logits.shape[-1]].astype(bool)] = -np.inf


def apply_token_bitmask_inplace(logits: Any, bitmask: Any) -> None:
    """Set disallowed logits to ``-inf`` in place.

    ``logits``: float numpy array, or float torch tensor on any device,
    ``(batch, V)`` or ``(V,)``.
    ``bitmask``: int32 numpy array or torch tensor ``(batch, W)`` or ``(W,)``
    (moved to ``logits.device``) with ``32 * W >= V``: a narrower bitmask is
    a ValueError (build the vocabulary with the model's ``vocab_size``).
    numpy logits need no torch.
    """
    if isinstance(logits, np.ndarray):
        _apply_numpy(logits, bitmask)
        return
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a numpy array or torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if logits.layout != torch.strided or logits.is_nested:
        raise TypeError(f"logits must be a dense (strided) tensor, got layout {logits.layout}")
    if isinstance(bitmask, np.ndarray):
        if bitmask.dtype != np.int32:
            raise TypeError(f"bitmask must have dtype int32, got {bitmask.dtype}")
        bitmask = torch.from_numpy(bitmask)
    elif isinstance(bitmask, torch.Tensor):
        if bitmask.dtype != torch.int32:
            raise TypeError(f"bitmask must have dtype int32, got {bitmask.dtype}")
        if bitmask.layout != torch.strided or bitmask.is_nested:
            raise TypeError(f"bitmask must be a dense (strided) tensor, got layout {bitmask.layout}")
    else:
        raise TypeError(f"bitmask must be a numpy array or torch tensor, got {type(bitmask).__name__}")
    _check_bitmask_dims(tuple(logits.shape), tuple(bitmask.shape))
    vocab = logits.shape[-1]
    if (
        logits.device.type == "cpu"
        and logits.is_contiguous()
        and bitmask.device.type == "cpu"
        and logits.dtype in _cpu_dtypes()
        and not logits.is_neg()  # a negated view has no numpy view: torch ops below
        and not (logits.requires_grad and torch.is_grad_enabled())  # autograd sees torch ops only
    ):
        name = _cpu_dtypes()[logits.dtype]
        # 16-bit floats as their bit patterns (numpy has no bfloat16); the
        # Rust side checks both arrays again.
        view = logits.detach() if name == "float32" else logits.detach().view(torch.int16)
        _core._apply_bitmask_cpu(view.numpy(), bitmask.resolve_neg().contiguous().numpy(), name)
        return
    bm = bitmask.to(logits.device, non_blocking=True)
    if logits.is_cuda and logits.is_contiguous() and bm.is_contiguous() and _triton_apply(logits, bm, vocab):
        return
    if bm.shape[-1] * 32 >= vocab:
        # Three kernels (and, compare, fill): on a GPU each op costs a
        # launch, so the unpacking is folded into the comparison.
        disallowed = (bm.unsqueeze(-1) & _bits(bm.device)) == 0
        logits.masked_fill_(disallowed.flatten(-2)[..., :vocab], float("-inf"))
        return
    allowed = unpack_bitmask(bm, vocab)
    logits.masked_fill_(~allowed, float("-inf"))


_TRITON: Dict[str, Any] = {}


def _triton_apply(logits: Any, bm: Any, vocab: int) -> bool:
    """One fused Triton kernel for CUDA logits: each program reads a block
    of bitmask words and writes ``-inf`` where a bit is clear (one launch
    instead of three). ``False`` when Triton is unavailable, so the caller
    falls back to torch ops."""
    kernel = _TRITON.get("kernel")
    if kernel is None:
        if _TRITON.get("missing"):
            return False
        try:
            import triton  # type: ignore[import-untyped, unused-ignore]
            import triton.language as tl  # type: ignore[import-untyped, unused-ignore]
        except Exception:
            _TRITON["missing"] = True
            return False

        @triton.jit  # type: ignore[untyped-decorator, unused-ignore]
        def _apply(logits_ptr, bm_ptr, vocab, words, stride, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]  # noqa: N803 (Triton reads the annotations: only constexpr)
            row = tl.program_id(0)
            col = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
            inside = col < vocab
            word = tl.load(bm_ptr + row * words + col // 32, mask=inside, other=0)
            clear = ((word >> (col % 32)) & 1) == 0
            tl.store(logits_ptr + row * stride + col, float("-inf"), mask=inside & clear)

        kernel = _TRITON["kernel"] = _apply
    rows = 1 if logits.dim() == 1 else logits.shape[0]
    words = bm.shape[-1]
    stride = logits.shape[-1]
    block = 4096
    grid = (rows, (vocab + block - 1) // block)
    try:
        kernel[grid](logits, bm, vocab, words, stride, BLOCK=block)
    except Exception:  # no usable Triton backend here: torch ops instead
        _TRITON["missing"] = True
        _TRITON.pop("kernel", None)
        return False
    return True
