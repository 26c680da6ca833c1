"""BMN's boundary-matching (BM) layer (Lin et al., ICCV 2019, arXiv 1907.09702), pure torch.

The BM layer turns a temporal feature ``x (B, C, T)`` into a feature for every
entry ``[d, s]`` of a duration × start proposal map (the proposal ``[s, s +
d]`` in grid units, see :mod:`~tadkit.detect.layers.proposal_map`): ``N``
values per channel, sampled over the proposal widened by ``context × d`` on
each side. BMN then reduces the ``N`` samples with a 3-D convolution of
kernel ``(N, 1, 1)``.

**Sampling weights** (fixed, precomputed per ``(T, D)``). The widened region
``[s − context·d, s + d + context·d]`` holds ``N · k`` evenly spaced points
(``k = samples_per_bin``; the first and last on the region's ends); bin ``n``
is the mean of points ``n·k … n·k + k − 1``. A point at position ``p`` reads
``x`` linearly interpolated between cells ``⌊p⌋`` and ``⌊p⌋ + 1`` (cell ``i``
has centre ``i``); cells outside ``0 … T − 1`` read 0. So feature ``[c, n, d,
s]`` is ``Σ_t W[t, n, d, s] · x[c, t]`` with a weight tensor ``W (T, N, D,
T)`` (:func:`sampling_weights`), each ``(n, d, s)`` touching at most ``2k``
cells.

**Computation.** Materialising the BM features costs ``B·C·N·D·T`` values
(BMN's published 100 × 100 map: 82 M floats per video); :class:`BoundaryMatching`
fuses the layer with the ``(N, 1, 1)`` convolution instead. Both are linear,
so they commute: first ``y[o, n, t] = Σ_c V[o, c, n] x[c, t]`` (a 1×1 conv per
sample point), then ``out[o, d, s] = Σ_{n,t} W[t, n, d, s] · y[o, n, t]`` as a
sparse × dense matrix product (the weights stored once as a sparse ``(D·T,
N·T)`` matrix). The result equals ``Conv3d(BM(x))`` up to float rounding at a
fraction of the memory and multiply-adds; :meth:`BoundaryMatching.features`
gives the literal BM features for checks.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class BoundaryMatching(nn.Module):
    """BM layer fused with its ``(N, 1, 1)`` convolution: ``(B, C, T)`` -> ``(B, out_dim, D, T)``.

    ``max_duration`` is the number ``D`` of map rows (0: ``D = T`` of the
    input). Sampling matrices are built on first use for each ``(T, D,
    device)`` and cached (not part of the state dict). ``weight (out_dim,
    in_dim, N)`` and ``bias`` are the 3-D convolution's parameters (BMN's
    ``Conv3d`` weight ``(O, C, N, 1, 1)`` reshaped).
    """

    def __init__(self, in_dim: int, out_dim: int, num_samples: int = 32, samples_per_bin: int = 3,
                 context: float = 0.5, max_duration: int = 0):
        super().__init__()
        if num_samples < 1 or samples_per_bin < 1 or num_samples * samples_per_bin < 2:
            raise ValueError(f"the BM layer needs at least 2 sample points, got num_samples={num_samples}, "
                             f"samples_per_bin={samples_per_bin}")
        if context < 0 or max_duration < 0:
            raise ValueError("context and max_duration must be non-negative")
        self.num_samples, self.samples_per_bin = num_samples, samples_per_bin
        self.context, self.max_duration = context, max_duration
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim, num_samples))
        self.bias = nn.Parameter(torch.empty(out_dim))
        fan_in = in_dim * num_samples                     # Conv3d's default initialisation
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        self._cache: dict[tuple[int, int, str], torch.Tensor] = {}

    def rows(self, length: int) -> int:
        """Map rows ``D`` for inputs of ``length`` cells."""
        return self.max_duration or length

    def matrix(self, length: int, device: torch.device) -> torch.Tensor:
        """The sparse ``(D·T, N·T)`` sampling matrix for ``T = length`` (cached)."""
        d = self.rows(length)
        key = (length, d, str(device))
        if key not in self._cache:
            index, values = sparse_sampling(length, d, self.num_samples, self.samples_per_bin, self.context)
            m = torch.sparse_coo_tensor(index, values, (d * length, self.num_samples * length),
                                        check_invariants=True).coalesce()
            self._cache[key] = m.to(device)
        return self._cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        o, n = self.weight.shape[0], self.num_samples
        y = torch.einsum("ocn,bct->ntbo", self.weight.to(x.dtype), x).reshape(n * t, b * o)
        out = torch.sparse.mm(self.matrix(t, x.device), y.float())          # (D·T, B·O), float32
        out = out.reshape(-1, t, b, o).permute(2, 3, 0, 1) + self.bias[None, :, None, None]
        return out.to(x.dtype)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The literal BM features ``(B, C, N, D, T)`` (dense; for checks and small inputs)."""
        t = x.shape[-1]
        w = sampling_weights(t, self.rows(t), self.num_samples, self.samples_per_bin, self.context)
        return torch.einsum("bct,tnds->bcnds", x, w.to(x))


def sparse_sampling(length: int, max_duration: int, num_samples: int = 32, samples_per_bin: int = 3,
                    context: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Nonzero sampling weights as COO ``(indices (2, K), values (K,))`` of a ``(D·T, N·T)`` matrix.

    Row ``d·T + s`` is map entry ``[d, s]``, column ``n·T + t`` is bin ``n`` of
    cell ``t``; duplicates (two points of a bin touching one cell) are left for
    ``coalesce`` to sum. See the module docstring for the weights.
    """
    t_len, d_len, n, k = length, max_duration, num_samples, samples_per_bin
    d = torch.arange(d_len, dtype=torch.float64)[:, None, None]
    s = torch.arange(t_len, dtype=torch.float64)[None, :, None]
    lo_edge = s - context * d
    span = d * (1 + 2 * context)
    j = torch.arange(n * k, dtype=torch.float64)[None, None, :]
    pos = lo_edge + span * j / (n * k - 1)                         # (D, T, N·k)
    floor = pos.floor()
    frac = pos - floor
    cells = torch.stack([floor, floor + 1], -1).long()            # (D, T, N·k, 2)
    weights = torch.stack([1 - frac, frac], -1) / k
    inside = (cells >= 0) & (cells <= t_len - 1) & (weights > 0)
    rows = (torch.arange(d_len)[:, None] * t_len + torch.arange(t_len)[None, :])[:, :, None, None]
    bins = (torch.arange(n * k) // k)[None, None, :, None]
    cols = bins * t_len + cells
    rows = rows.expand_as(cols)[inside]
    cols = cols[inside]
    return torch.stack([rows, cols]), weights[inside].float()


def sampling_weights(length: int, max_duration: int, num_samples: int = 32, samples_per_bin: int = 3,
                     context: float = 0.5) -> torch.Tensor:
    """Dense sampling weights ``W (T, N, D, T)``: BM feature ``[c, n, d, s] = Σ_t W[t, n, d, s] x[c, t]``."""
    index, values = sparse_sampling(length, max_duration, num_samples, samples_per_bin, context)
    dense = torch.sparse_coo_tensor(index, values, (max_duration * length, num_samples * length),
                                    check_invariants=True).to_dense()
    return dense.reshape(max_duration, length, num_samples, length).permute(3, 2, 0, 1).contiguous()


__all__ = ["BoundaryMatching", "sparse_sampling", "sampling_weights"]
