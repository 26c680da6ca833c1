"""Temporal feature pyramids built by strided 1-D convolutions.

Geometry (input grid units: cell ``g`` of the input sequence has centre ``g``):
level ``l`` has stride ``s_l = first_stride · 2^l`` input cells. A stride-2
convolution with kernel 3 and padding 1 reads cells ``2j - 1, 2j, 2j + 1`` of
its input for its output cell ``j``, so its receptive field is centred on
input cell ``2j``; chained, cell ``j`` of level ``l`` is centred on input cell
``j · s_l`` (:func:`level_centers`; :func:`to_level_cells` is the inverse).
Every such convolution maps ``L`` cells to ``ceil(L / 2)``, so odd lengths are
fine: see :func:`pyramid_lengths`.

* :class:`TemporalPyramid` — ``(B, C_in, T)`` -> ``num_levels`` maps
  ``(B, C, T_l)``: a stem of ``log2(first_stride)`` stride-2 convs, then one
  stride-2 conv per further level (each conv + GroupNorm + ReLU, padding
  positions zeroed after every layer).
* :func:`refine_top_down` — the parameter-free top-down pass of TAL-MTS' RFP:
  from the coarsest level down, nearest-neighbour upsample and add.
* :func:`frame_level_feature` — linear interpolation of a level back to the
  input length at the level's cell centres (TAL-MTS' ``f_a^c``).
* :class:`StoredLevelPyramid` — the same levels, the lowest ones built from
  stored backbone levels (TAL-MTS / AFSD: I3D Mixed_4f, Mixed_5c) whose steps
  :func:`steps_to_cells` resamples onto the level's cells.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from tadkit.data.batches import LevelInput


class TemporalPyramid(nn.Module):
    """Strided-conv pyramid: ``features (B, C_in, T)``, ``mask (B, T)`` -> list of ``(B, C, T_l)``.

    ``first_stride`` (a power of two) is the stride of level 0 in input cells;
    ``num_levels`` levels follow, each half as long as the one before.
    """

    def __init__(self, in_dim: int, dim: int, num_levels: int, first_stride: int = 1):
        super().__init__()
        if num_levels < 1:
            raise ValueError("a pyramid needs at least one level")
        if first_stride < 1 or first_stride & (first_stride - 1):
            raise ValueError(f"first_stride must be a power of two, got {first_stride}")
        self.num_levels = num_levels
        self.first_stride = first_stride
        n_stem = int(math.log2(first_stride))
        stem: list[nn.Module] = []
        if n_stem == 0:
            stem.append(ConvNormReLU(in_dim, dim, stride=1))
        for i in range(n_stem):
            stem.append(ConvNormReLU(in_dim if i == 0 else dim, dim, stride=2))
        self.stem = nn.ModuleList(stem)
        self.down = nn.ModuleList(ConvNormReLU(dim, dim, stride=2) for _ in range(num_levels - 1))

    @property
    def strides(self) -> list[int]:
        """Stride of every level, in input cells."""
        return [self.first_stride * 2 ** i for i in range(self.num_levels)]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        stride = 1
        for layer in self.stem:
            stride *= layer.stride
            x = _apply_mask(layer(x), mask, stride)
        levels = [x]
        for layer in self.down:
            stride *= 2
            x = _apply_mask(layer(x), mask, stride)
            levels.append(x)
        return levels


class StoredLevelPyramid(nn.Module):
    """A :class:`TemporalPyramid` whose lowest ``len(level_dims)`` levels come from stored backbone levels.

    ``forward(levels, mask)``: ``levels`` one
    :class:`~tadkit.data.batches.LevelInput` per ``level_dims`` entry
    (``features (B, C_k, T_k)``, ``mask``, ``positions`` in snippet-grid
    units), ``mask (B, T)`` of the snippet axis -> ``num_levels`` maps ``(B,
    dim, T_l)`` with the lengths and strides of ``TemporalPyramid(...,
    num_levels, first_stride)`` over ``T`` snippets. Stored level ``k`` is
    resampled onto the cells of level ``k`` (:func:`steps_to_cells`) and
    projected by a kernel-1 conv + GroupNorm + ReLU (TAL-MTS / AFSD: 3-D convs
    with temporal kernel 1 that only remove space; tadkit's levels are stored
    spatially pooled); the levels above the last stored one are stride-2 convs
    as in :class:`TemporalPyramid`.
    """

    def __init__(self, level_dims: Sequence[int], dim: int, num_levels: int, first_stride: int = 1):
        super().__init__()
        if not 1 <= len(level_dims) <= num_levels:
            raise ValueError(f"need 1 to num_levels={num_levels} stored levels, got {len(level_dims)}")
        if first_stride < 1 or first_stride & (first_stride - 1):
            raise ValueError(f"first_stride must be a power of two, got {first_stride}")
        self.num_levels, self.first_stride = num_levels, first_stride
        self.level_dims = tuple(int(c) for c in level_dims)
        self.project = nn.ModuleList(ConvNormReLU(c, dim, kernel=1) for c in self.level_dims)
        self.down = nn.ModuleList(ConvNormReLU(dim, dim, stride=2) for _ in range(num_levels - len(level_dims)))

    @property
    def strides(self) -> list[int]:
        """Stride of every level, in input cells."""
        return [self.first_stride * 2 ** i for i in range(self.num_levels)]

    def forward(self, levels: Sequence["LevelInput"], mask: torch.Tensor) -> list[torch.Tensor]:
        if len(levels) != len(self.project):
            raise ValueError(f"the pyramid was built for {len(self.project)} stored levels, got {len(levels)} "
                             "(data.levels)")
        strides = self.strides
        lengths = pyramid_lengths(mask.shape[-1], self.first_stride, self.num_levels)
        out = []
        for k, (lv, proj) in enumerate(zip(levels, self.project)):
            if lv.features.shape[1] != self.level_dims[k]:
                raise ValueError(f"stored level {k} has {lv.features.shape[1]} channels, the pyramid was built "
                                 f"for {self.level_dims[k]}")
            cells = steps_to_cells(lv.features, lv.mask, lv.positions, lengths[k], strides[k])
            out.append(_apply_mask(proj(cells), mask, strides[k]))
        x = out[-1]
        for layer, s in zip(self.down, strides[len(out):]):
            x = _apply_mask(layer(x), mask, s)
            out.append(x)
        return out


class ConvNormReLU(nn.Module):
    """Conv1d (kernel 3, padding 1) + GroupNorm + ReLU: ``(B, C_in, L)`` -> ``(B, C, ceil(L / stride))``."""

    def __init__(self, in_dim: int, dim: int, stride: int = 1, kernel: int = 3):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(in_dim, dim, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.GroupNorm(num_groups(dim), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


def refine_top_down(levels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """RFP's top-down refinement: ``out[L-1] = f[L-1]``, ``out[l] = f[l] + nearest(out[l+1])``.

    No parameters: the coarser (already refined) level is upsampled to level
    ``l``'s length by nearest-neighbour interpolation and added, so semantics
    flow from the coarsest level all the way down. Shapes are unchanged.
    """
    out = list(levels)
    for l in range(len(out) - 2, -1, -1):
        out[l] = out[l] + F.interpolate(out[l + 1], size=out[l].shape[-1], mode="nearest")
    return out


def frame_level_feature(level: torch.Tensor, length: int, stride: int) -> torch.Tensor:
    """``(B, C, T_l)`` -> ``(B, C, length)``: a level of ``stride`` read at every input cell.

    Input cell ``g`` lies at ``g / stride`` level cells (:func:`to_level_cells`);
    the value there is the linear interpolation of the two nearest level cells,
    and the end cells' values beyond the first / last centre.
    """
    n = level.shape[-1]
    pos = to_level_cells(torch.arange(length, dtype=torch.float32, device=level.device), stride).clamp(0, n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    w = (pos - lo).to(level.dtype)
    return level[..., lo] * (1 - w) + level[..., hi] * w


def pyramid_lengths(length: int, first_stride: int, num_levels: int) -> list[int]:
    """Lengths of the levels of a :class:`TemporalPyramid` over ``length`` input cells."""
    n = length
    for _ in range(int(math.log2(first_stride))):
        n = -(-n // 2)
    out = [n]
    for _ in range(num_levels - 1):
        n = -(-n // 2)
        out.append(n)
    return out


def level_centers(length: int, stride: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``[length]`` centres, in input grid units, of the cells of a level with ``stride``: ``j · stride``.

    The centre of cell ``j``'s receptive field through the stride-2, kernel-3,
    padding-1 convolutions that build the level (see the module docstring);
    anchors, locations and pooling regions of every pyramid head use it.
    """
    return torch.arange(length, dtype=torch.float32, device=device) * stride


def to_level_cells(positions: torch.Tensor, stride: int) -> torch.Tensor:
    """Input grid positions -> cell units of a level with ``stride`` (the inverse of :func:`level_centers`)."""
    return positions / stride


def steps_to_cells(features: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, length: int,
                   stride: int) -> torch.Tensor:
    """Steps of a stored level -> the ``length`` cells of a pyramid level with ``stride``: ``(B, C, length)``.

    ``features (B, C, T_s)``, ``mask (B, T_s)`` (True on real steps, which
    come first), ``positions (B, T_s)`` each step's time in snippet-grid units
    (regular spacing). In the level's cell units (:func:`to_level_cells`) a
    step lies at ``u`` and cell ``j`` at its centre (:func:`level_centers`,
    ``j · stride`` grid units, i.e. ``j``); cell ``j`` is the mean of the real
    steps weighted by ``max(0, 1 - |u - j| / h)`` with ``h = max(1, step
    spacing in cells)``: steps denser than the cells are averaged over ±1 cell
    (steps exactly on the centres give the steps themselves), sparser ones are
    interpolated linearly between the two around the centre. A cell no real
    step reaches is 0. Both keep a linear signal's value exactly when the
    cells hold a whole number of steps, so cell ``j`` summarises the time
    centred on ``j · stride``, as a strided-conv pyramid's cell does.
    """
    b, c, ts = features.shape
    if ts == 0:
        return features.new_zeros(b, c, length)
    u = to_level_cells(positions.to(torch.float32), stride).masked_fill(~mask, math.inf)   # padding sorts last
    centres = to_level_cells(level_centers(length, stride, features.device), stride)     # (length,) = j
    n_real = mask.sum(1)
    last = u.gather(1, (n_real - 1).clamp(min=0)[:, None])[:, 0]
    spacing = torch.where(n_real > 1, (last - u[:, 0]) / (n_real - 1).clamp(min=1), torch.ones_like(last))
    h = spacing.clamp(min=1.0)                                                            # (B,) kernel reach
    reach = int(torch.ceil((2 * h / spacing.clamp(min=1e-6)).max()).item()) + 2           # steps within ±h
    lo = torch.searchsorted(u.contiguous(), (centres[None, :] - h[:, None]).contiguous())  # (B, length)
    idx = lo[..., None] + torch.arange(min(reach, ts), device=u.device)                   # (B, length, K)
    inside = idx < ts
    idx = idx.clamp(max=ts - 1)
    d = u.gather(1, idx.flatten(1)).view(idx.shape) - centres[None, :, None]
    w = (1 - d.abs() / h[:, None, None]).clamp(min=0) * inside                          # padding (inf): 0
    f = features.gather(2, idx.flatten(1)[:, None, :].expand(-1, c, -1)).view(b, c, *idx.shape[1:])
    w = w.to(features.dtype)
    return (f * w[:, None]).sum(-1) / w.sum(-1).clamp(min=1e-12)[:, None]


def level_mask(mask: torch.Tensor | None, length: int, stride: int, batch: int = 1,
               device: torch.device | str | None = None) -> torch.Tensor:
    """``(B, length)`` True where a level cell's centre ``j · stride`` is a real input cell.

    Without an input ``mask`` every cell of the ``batch`` samples is real.
    """
    if mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    return level_centers(length, stride, mask.device)[None, :] < mask.sum(1, keepdim=True)


def num_groups(channels: int, max_groups: int = 32) -> int:
    """The largest group count ``<= max_groups`` that divides ``channels``."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def _apply_mask(x: torch.Tensor, mask: torch.Tensor | None, stride: int) -> torch.Tensor:
    """Zero the cells of a level ``x (B, C, L)`` whose centre is padding."""
    if mask is None:
        return x
    return x * level_mask(mask, x.shape[-1], stride).to(x.dtype)[:, None, :]
