"""Pre-LN transformer encoders and the tokens they read.

* :class:`TransformerEncoder` — ``depth`` × :class:`TransformerBlock`
  (``x + MSA(LN(x))``, ``x + MLP(LN(x))``) and a final LayerNorm, over
  ``(N, L, D)`` tokens with an optional key padding mask ``(N, L)`` (True on
  real tokens). Attention runs through ``F.scaled_dot_product_attention``
  (fused kernels on GPU).
* :func:`sinusoidal_embedding` — fixed ``(L, D)`` position codes, valid for
  any sequence length (temporal position embedding).
* :func:`grid_patches` — split a per-snippet spatial grid
  ``(B, T, g, g, C)`` into ``(g / p)²`` patch tokens of ``p · p · C`` values.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TransformerEncoder(nn.Module):
    """``depth`` pre-LN blocks + final LayerNorm: ``(N, L, D)`` -> ``(N, L, D)``."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(dim, num_heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, key_mask)
        return self.norm(x)


class TransformerBlock(nn.Module):
    """One pre-LN block: multi-head self-attention then a GELU MLP, each residual.

    ``key_mask (N, L)``: True on tokens that may be attended to; every row must
    hold at least one True.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"token width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = max(1, int(round(dim * mlp_ratio)))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attention(self.norm1(x), key_mask))
        return x + self.drop(self.mlp(self.norm2(x)))

    def attention(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Multi-head self-attention of ``(N, L, D)`` tokens."""
        n, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


def sinusoidal_embedding(length: int, dim: int, device: torch.device | str | None = None,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(length, dim)`` sine/cosine position codes (Vaswani et al.), base 10000."""
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    half = (dim + 1) // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=device) / max(1, half))
    ang = pos * freq[None, :]
    out = torch.stack([ang.sin(), ang.cos()], -1).reshape(length, 2 * half)[:, :dim]
    return out.to(dtype)


def grid_patches(grid: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, T, g, g, C)`` -> ``(B, T, (g/patch)², patch·patch·C)`` patch tokens, row-major.

    ``patch`` must divide ``g``; ``patch = g`` gives one token per snippet.
    """
    b, t, g, g2, c = grid.shape
    if g != g2 or g % patch:
        raise ValueError(f"a {g}x{g2} grid cannot be cut into {patch}x{patch} patches")
    n = g // patch
    x = grid.reshape(b, t, n, patch, n, patch, c).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, n * n, patch * patch * c)
