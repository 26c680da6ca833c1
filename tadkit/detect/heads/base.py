"""The interface between a detection head and the shared engine.

A head sees a batch of padded snippet features and answers three questions;
everything else (data, optimisation, checkpoints, DDP, post-processing,
conversion to seconds) is the engine's.

Units: every segment a head receives or returns is in *grid units* of its
input — position ``g`` is the centre of input cell ``g`` (see
:mod:`tadkit.timeline`); the engine maps them to seconds with each sample's
:class:`~tadkit.timeline.TimeAxis`.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from tadkit.detect.postprocess import Detections


class DetectionHead(nn.Module):
    """Base class of detection heads.

    ``forward(features, mask)``
        ``features (B, C, T)`` float, ``mask (B, T)`` bool (True on real
        snippets, False on padding) -> a dict of raw output tensors.
    ``loss(outputs, mask, targets)``
        ``targets``: one dict per sample with ``segments`` float ``[N, 2]``
        (grid units) and ``labels`` long ``[N]`` (class indices, ``0..C-1``)
        -> a dict of scalar tensors, ``"loss"`` being the one to minimise.
    ``decode(outputs, mask, topk, min_score)``
        -> one :class:`Detections` per sample (grid units, class-index
        labels), at most ``topk`` candidates scoring above ``min_score``.
    """

    num_classes: int
    #: inputs are padded to a multiple of this many cells (the head's total downsampling)
    stride: int = 1
    #: True when ``forward`` needs ``grid (B, T, g, g, C)``: per-snippet spatial grids
    #: (the engine then reads them from the features and passes ``grid=``)
    uses_grid: bool = False

    def loss(self, outputs: dict[str, torch.Tensor], mask: torch.Tensor,
             targets: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def decode(self, outputs: dict[str, torch.Tensor], mask: torch.Tensor, topk: int = 2000,
               min_score: float = 0.0) -> list[Detections]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Facts worth logging (parameter count, anchors ...)."""
        return {"parameters": sum(p.numel() for p in self.parameters())}
