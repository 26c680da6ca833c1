"""The non-local block (Wang, Girshick, Gupta, He, CVPR 2018, arXiv 1711.07971) over 1-D sequences.

Embedded-Gaussian form: with ``θ, φ, g`` 1×1 convolutions to ``inner``
channels, every position attends to every other,
``y_i = Σ_j softmax_j(θ(x_i)·φ(x_j)) g(x_j)``, and the block returns
``x + W_z y`` (``W_z`` a 1×1 convolution back to the input width, initialised
to zero so that a new block starts as the identity, the paper's
recommendation). An optional ``mask`` keeps padded positions from being
attended to.
"""
from __future__ import annotations

import torch
from torch import nn


class NonLocal1d(nn.Module):
    """``(N, C, L)`` -> ``(N, C, L)`` non-local block (residual); ``inner`` defaults to ``C // 2``."""

    def __init__(self, dim: int, inner: int | None = None):
        super().__init__()
        inner = inner or max(1, dim // 2)
        self.theta = nn.Conv1d(dim, inner, 1)
        self.phi = nn.Conv1d(dim, inner, 1)
        self.g = nn.Conv1d(dim, inner, 1)
        self.out = nn.Conv1d(inner, dim, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x (N, C, L)``; ``mask (N, L)`` True on positions that may be attended to."""
        affinity = torch.einsum("ncl,ncm->nlm", self.theta(x), self.phi(x))      # (N, L, L)
        if mask is not None:
            affinity = affinity.masked_fill(~mask[:, None, :], float("-inf"))
        y = torch.einsum("nlm,ncm->ncl", affinity.softmax(-1), self.g(x))
        return x + self.out(y)


__all__ = ["NonLocal1d"]
