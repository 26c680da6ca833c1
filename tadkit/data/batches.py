"""Samples and batches: what the datasets of :mod:`tadkit.data.datasets` give and collate makes.

A :class:`Sample` is one model input with its targets (fields in the
datasets' module docstring); :func:`collate` pads samples to a common length
(a multiple of the model's stride, or ``pad_to``) into a :class:`Batch` with
masks; :class:`LevelInput` holds one backbone level (unbatched in a sample,
batched and padded in a batch). Grid units throughout; ``to_seconds`` maps a
sample's grid positions back to seconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from tadkit.timeline import TimeAxis, grid_to_segments


@dataclass
class LevelInput:
    """One stored backbone level of a sample (unbatched) or a batch.

    ``features (C_l, T_l)`` / ``(B, C_l, T_l)`` float32, ``mask (T_l,)`` /
    ``(B, T_l)`` bool (False on padding), ``positions (T_l,)`` / ``(B, T_l)``
    float32: each step's time in the sample's snippet-grid units (a step at
    the centre of snippet cell 3 has position 3.0; padded steps continue the
    last spacing).
    """

    features: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "LevelInput":
        return LevelInput(*(t.to(device, non_blocking=non_blocking)
                            for t in (self.features, self.mask, self.positions)))


@dataclass
class Sample:
    """One model input with its targets (see the module docstring)."""

    video_id: str
    features: torch.Tensor
    mask: torch.Tensor
    axis: TimeAxis
    duration: float
    segments: torch.Tensor
    labels: torch.Tensor
    offset: int = 0
    grid: torch.Tensor | None = None
    levels: list["LevelInput"] | None = None
    proposals: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """Number of snippets ``T``."""
        return int(self.features.shape[-1])

    @property
    def times(self) -> np.ndarray:
        """``[T]`` centre time in seconds of every cell."""
        return self.axis.centers()

    def to_seconds(self, grid: np.ndarray | torch.Tensor) -> np.ndarray:
        """``[N, 2]`` grid positions of this sample -> seconds in ``[0, duration]``."""
        return grid_to_segments(_numpy(grid), self.axis, self.duration)


@dataclass
class Batch:
    """A padded batch of :class:`Sample` (made by :func:`collate`).

    ``features (B, C, T)`` float32, ``mask (B, T)`` bool (False on padding),
    ``grid (B, T, g, g, C_g)`` float32 or None: the per-snippet spatial grids
    when the dataset was asked for them (``grid=True``), ``levels``: one
    :class:`LevelInput` per requested level (each padded to its longest
    sample, or to ``pad_to`` times the level's steps per snippet), or None,
    ``proposals``: one ``(N_i, 3)`` tensor per sample (chained runs) or None,
    ``segments`` / ``labels``: lists of ``(N_i, 2)`` float32 / ``(N_i,)`` int64
    in grid units, ``axes`` / ``video_ids`` / ``durations`` / ``offsets``: one
    per sample; ``origins`` / ``steps`` ``(B,)`` float64 tensors hold the axes
    for vectorised conversion (``seconds = origin + grid * step``).
    """

    features: torch.Tensor
    mask: torch.Tensor
    segments: list[torch.Tensor]
    labels: list[torch.Tensor]
    axes: list[TimeAxis]
    video_ids: list[str]
    durations: torch.Tensor
    offsets: torch.Tensor
    origins: torch.Tensor
    steps: torch.Tensor
    grid: torch.Tensor | None = None
    levels: list[LevelInput] | None = None
    proposals: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """Tensors moved to ``device`` (axes and ids stay on the host)."""
        mv = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(mv(self.features), mv(self.mask), [mv(s) for s in self.segments],
                     [mv(lab) for lab in self.labels], self.axes, self.video_ids,
                     mv(self.durations), mv(self.offsets), mv(self.origins), mv(self.steps),
                     None if self.grid is None else mv(self.grid),
                     None if self.levels is None else [lv.to(device, non_blocking) for lv in self.levels],
                     None if self.proposals is None else [mv(p) for p in self.proposals])

    def to_seconds(self, i: int, grid: np.ndarray | torch.Tensor) -> np.ndarray:
        """``[N, 2]`` grid positions of sample ``i`` -> seconds in ``[0, duration]``."""
        return grid_to_segments(_numpy(grid), self.axes[i], float(self.durations[i]))


def collate(samples: Sequence[Sample], stride: int = 1, pad_to: int | None = None,
            pad_value: float = 0.0) -> Batch:
    """Pad samples to a common length and stack them into a :class:`Batch`.

    The length is the longest sample rounded up to a multiple of ``stride``
    (the model's total downsampling), or ``pad_to`` when given (it must be
    at least the longest sample; it is rounded up to ``stride`` too).
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    longest = max(s.length for s in samples)
    if pad_to is not None and pad_to < longest:
        raise ValueError(f"pad_to={pad_to} is shorter than a sample of {longest} snippets")
    target = max(longest, pad_to or 0)
    target = -(-target // stride) * stride
    c = samples[0].features.shape[0]
    feats = torch.full((len(samples), c, target), pad_value, dtype=samples[0].features.dtype)
    mask = torch.zeros((len(samples), target), dtype=torch.bool)
    for i, s in enumerate(samples):
        if s.features.shape[0] != c:
            raise ValueError(f"sample {s.video_id!r} has {s.features.shape[0]} channels, expected {c}")
        feats[i, :, :s.length] = s.features
        mask[i, :s.length] = s.mask
    grid = None
    with_grid = [s.grid is not None for s in samples]
    if any(with_grid):
        if not all(with_grid):
            raise ValueError("some samples carry a spatial grid and some do not")
        shape = samples[0].grid.shape[1:]
        grid = torch.zeros((len(samples), target, *shape), dtype=samples[0].grid.dtype)
        for i, s in enumerate(samples):
            if s.grid.shape[1:] != shape:
                raise ValueError(f"sample {s.video_id!r} has a {tuple(s.grid.shape[1:])} grid, expected {tuple(shape)}")
            grid[i, :s.length] = s.grid
    levels = None
    if samples[0].levels is not None:
        if any(s.levels is None or len(s.levels) != len(samples[0].levels) for s in samples):
            raise ValueError("samples carry different numbers of levels")
        levels = [_collate_level([s.levels[k] for s in samples], pad_to, pad_value)
                  for k in range(len(samples[0].levels))]
    proposals = None if samples[0].proposals is None else [s.proposals for s in samples]
    return Batch(
        features=feats, mask=mask,
        segments=[s.segments for s in samples], labels=[s.labels for s in samples],
        axes=[s.axis for s in samples], video_ids=[s.video_id for s in samples],
        durations=torch.tensor([s.duration for s in samples], dtype=torch.float64),
        offsets=torch.tensor([s.offset for s in samples], dtype=torch.long),
        origins=torch.tensor([s.axis.origin for s in samples], dtype=torch.float64),
        steps=torch.tensor([s.axis.step for s in samples], dtype=torch.float64),
        grid=grid, levels=levels, proposals=proposals,
    )


def _collate_level(items: Sequence[LevelInput], pad_to: int | None, pad_value: float) -> LevelInput:
    """Pad one level of every sample to the longest (at least ``pad_to`` × the level's steps per cell)."""
    lengths = [int(x.features.shape[-1]) for x in items]
    target = max(lengths)
    if pad_to is not None:  # steps per snippet cell, from each sample's spacing
        density = max((n - 1) / max(float(x.positions[-1] - x.positions[0]), 1e-6) if n >= 2 else 1.0
                      for n, x in zip(lengths, items))
        target = max(target, int(math.ceil(pad_to * density - 1e-6)))
    c = items[0].features.shape[0]
    feats = torch.full((len(items), c, target), pad_value, dtype=items[0].features.dtype)
    mask = torch.zeros((len(items), target), dtype=torch.bool)
    pos = torch.zeros((len(items), target), dtype=torch.float32)
    for i, (x, n) in enumerate(zip(items, lengths)):
        feats[i, :, :n] = x.features
        mask[i, :n] = x.mask
        step = float(x.positions[-1] - x.positions[-2]) if n >= 2 else 1.0
        last = float(x.positions[-1]) if n else -step
        pos[i, :n] = x.positions
        pos[i, n:] = last + step * torch.arange(1, target - n + 1, dtype=torch.float32)
    return LevelInput(feats, mask, pos)



@dataclass(frozen=True)
class PadCollate:
    """Picklable ``collate_fn`` for a DataLoader: ``DataLoader(ds, collate_fn=PadCollate(32))``."""

    stride: int = 1
    pad_to: int | None = None
    pad_value: float = 0.0

    def __call__(self, samples: Sequence[Sample]) -> Batch:
        return collate(samples, self.stride, self.pad_to, self.pad_value)


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)
