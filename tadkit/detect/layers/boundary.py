"""Boundary pooling (AFSD, Lin et al. 2021): max-pool features over a region around each boundary.

A region ``[a, b]`` is given in the *cell units* of the pooled feature (cell
``i`` has centre ``i`` and extent ``[i - 0.5, i + 0.5]``); it pools every
cell it touches, ``i = ceil(a - 0.5) .. floor(b + 0.5)``, clamped to
``[0, L - 1]``. A region entirely outside the sequence pools the nearest end
cell; a region narrower than a cell still pools the cell(s) it touches.

:func:`boundary_max_pool` is vectorised over batch, regions and channels with
a sparse table of range maxima: level ``k`` holds the maximum over ``2^k``
consecutive cells, so any range ``[lo, hi]`` is the maximum of two
overlapping power-of-two blocks. Cost ``O(B·C·L·log L)`` for the table and
``O(B·C·N)`` for ``N`` regions, no Python loop over regions, no compiled
op; gradients flow to the arg-max cells like ``torch.max``.
"""
from __future__ import annotations

import torch


def boundary_max_pool(x: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Channel-wise maximum of ``x (B, C, L)`` over ``regions (B, N, 2)`` -> ``(B, C, N)``.

    ``regions`` are float ``[a, b]`` in cell units of ``x`` (see the module
    docstring for which cells a region pools).
    """
    if x.dim() != 3 or regions.dim() != 3 or regions.shape[-1] != 2 or regions.shape[0] != x.shape[0]:
        raise ValueError(f"boundary_max_pool needs x (B, C, L) and regions (B, N, 2); got "
                         f"{tuple(x.shape)} and {tuple(regions.shape)}")
    b, c, length = x.shape
    n = regions.shape[1]
    if n == 0:
        return x.new_zeros(b, c, 0)
    lo, hi = region_cells(regions, length)
    span = hi - lo + 1                                            # (B, N) >= 1
    powers = 2 ** torch.arange(1, length.bit_length(), device=span.device)
    k = (span[..., None] >= powers).sum(-1)                       # floor(log2(span)), exactly
    table = range_max_table(x, int(k.max()) + 1)                  # (B, C, K, L)
    flat = table.reshape(b, c, -1)
    left = k * length + lo
    right = k * length + (hi - (1 << k) + 1)
    pick = lambda idx: flat.gather(2, idx[:, None, :].expand(b, c, n))  # noqa: E731
    return torch.maximum(pick(left), pick(right))


def region_cells(regions: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last cell ``(B, N)`` long tensors pooled for ``regions [..., 2]`` over ``length`` cells."""
    r = regions.detach().float()
    lo = torch.ceil(r[..., 0] - 0.5).clamp(0, length - 1).long()
    hi = torch.floor(r[..., 1] + 0.5).clamp(0, length - 1).long()
    return lo, torch.maximum(hi, lo)


def range_max_table(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Sparse table ``(B, C, levels, L)``: entry ``[.., k, i]`` is ``max(x[.., i : i + 2^k])``.

    Windows running past the end are cut at ``L`` (only entries with
    ``i + 2^k <= L`` are ever read by :func:`boundary_max_pool`).
    """
    rows = [x]
    cur = x
    for k in range(1, max(1, levels)):
        step = 1 << (k - 1)
        shifted = torch.cat([cur[..., step:], cur[..., -1:].expand(*cur.shape[:-1], step)], -1)
        cur = torch.maximum(cur, shifted)
        rows.append(cur)
    return torch.stack(rows, 2)


def boundary_regions(segments: torch.Tensor, inner: float = 0.25, outer: float = 0.1,
                     min_extent: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end regions ``[..., 2]`` around ``segments [..., 2]`` (same units).

    With ``w = end - start``: the start region is ``[start - outer·w, start +
    inner·w]`` and the end region ``[end - inner·w, end + outer·w]``; each
    reach is at least ``min_extent``. The defaults are AFSD's: a quarter of the
    segment inside, a tenth outside, at least one cell.
    """
    s, e = segments[..., 0], segments[..., 1]
    w = (e - s).clamp(min=0)
    into = (inner * w).clamp(min=min_extent)
    out = (outer * w).clamp(min=min_extent)
    return torch.stack([s - out, s + into], -1), torch.stack([e - into, e + out], -1)
