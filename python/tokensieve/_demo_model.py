"""The model of ``tokensieve demo``: a tiny GPT-2 in plain PyTorch.

Why not ``transformers.GPT2LMHeadModel``: importing it pulls in
``torch._dynamo``, ``torch.distributed`` and the rest of transformers'
model machinery, over a second and a half before the first token, which is
most of the demo. This is the same architecture (learned positions,
pre-LayerNorm blocks of causal self-attention and a tanh-GELU MLP, the
output layer tied to the token embedding), at the demo's size, with
GPT-2's initialisation; its weights are random, as the demo says.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["TinyGPT2"]


class _Block(nn.Module):
    """One pre-LayerNorm transformer block (GPT-2's)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.out = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        y: torch.Tensor = x + self.out(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))
        return y


class TinyGPT2(nn.Module):
    """GPT-2 with ``layers`` blocks of width ``dim``: ``model(ids)`` maps
    ``(batch, length)`` token ids to the ``(batch, vocab)`` logits of the
    next token (the output layer only at the last position: with a
    50k-token vocabulary it is most of the work)."""

    def __init__(self, vocab: int, *, dim: int = 64, layers: int = 2, heads: int = 4, positions: int = 128) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(positions, dim)
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() > 1:
                # GPT-2: N(0, 0.02), residual projections scaled by 1/sqrt(2 layers).
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.wte(ids) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.ln_f(x[:, -1]) @ self.wte.weight.T
        return logits
