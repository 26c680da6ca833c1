"""Anchors of BSN / BMN-style proposal generators and their training labels.

An *anchor* is a pair of grid cells ``(s, e)``, ``s < e``: the segment from the
centre of cell ``s`` to the centre of cell ``e`` (cell ``i`` has centre ``i``
and extent ``[i - ½, i + ½]``, see :mod:`tadkit.timeline`). Everything here
works in the cell units of one feature sequence of ``length`` cells; a head
converts ground truth into those units first.

* :func:`anchor_map` — the dense anchors of a proposal map
  (:mod:`~tadkit.detect.layers.proposal_map`) without its empty duration-0
  row: row ``d - 1`` holds the anchors of duration ``d`` (``[s, s + d]`` at
  column ``s``), with the mask of those that end inside the sequence.
  Boundary labels are :func:`~tadkit.detect.layers.proposal_map.boundary_labels`.
* :func:`match_anchors` — each anchor's best tIoU with the ground truth and
  the index of that ground truth (BMN's IoU map, MENet's ``G_IoU``).
* :func:`offset_targets` / :func:`apply_offsets` — centre / duration offsets
  ``Δc = (c* − c) / d``, ``Δd = log(d* / d)`` of a ground truth relative to an
  anchor, and their inverse (MENet eq. 1-2 and 9).
"""
from __future__ import annotations

import torch

from tadkit.detect.geometry import pairwise_iou
from tadkit.detect.layers.proposal_map import map_segments


def anchor_map(length: int, max_duration: int | None = None,
               device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense anchors ``(D, length, 2)`` (float cell positions) and validity ``(D, length)``.

    ``D = max_duration`` (default ``length - 1``); entry ``[d - 1, s]`` is the
    anchor ``[s, s + d]``, valid when ``s + d < length``.
    """
    d = (length - 1) if max_duration is None else int(max_duration)
    anchors = map_segments(d + 1, length, device=device)[1:]
    return anchors, anchors[..., 1] < length


def match_anchors(anchors: torch.Tensor, segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best tIoU ``(K,)`` of every anchor ``(K, 2)`` with ``segments (N, 2)`` and its index ``(K,)`` long.

    Same units for both. Without ground truth: IoU 0 and index ``-1``.
    """
    k = anchors.shape[0]
    if segments.numel() == 0:
        return anchors.new_zeros(k), torch.full((k,), -1, dtype=torch.long, device=anchors.device)
    iou, index = pairwise_iou(anchors.float(), segments.float()).max(1)
    return iou, index


def offset_targets(anchors: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(Δc, Δd) (..., 2)`` of ``targets (..., 2)`` relative to ``anchors (..., 2)`` (positive durations)."""
    c, d = 0.5 * (anchors[..., 0] + anchors[..., 1]), anchors[..., 1] - anchors[..., 0]
    c_t, d_t = 0.5 * (targets[..., 0] + targets[..., 1]), targets[..., 1] - targets[..., 0]
    return torch.stack([(c_t - c) / d, torch.log(d_t / d)], -1)


def apply_offsets(anchors: torch.Tensor, offsets: torch.Tensor, max_log: float = 8.0) -> torch.Tensor:
    """Segments ``(..., 2)``: ``c' = c + d·Δc``, ``d' = d·exp(Δd)`` (``Δd`` capped at ``max_log``)."""
    c, d = 0.5 * (anchors[..., 0] + anchors[..., 1]), anchors[..., 1] - anchors[..., 0]
    c2 = c + d * offsets[..., 0]
    d2 = d * torch.exp(offsets[..., 1].clamp(max=max_log))
    return torch.stack([c2 - 0.5 * d2, c2 + 0.5 * d2], -1)


__all__ = ["anchor_map", "match_anchors", "offset_targets", "apply_offsets"]
