"""Duration × start proposal maps (BMN-style): geometry, label maps and candidates.

A *proposal map* of a sample with ``T`` grid cells has ``D`` rows (durations)
and ``T`` columns (starts): entry ``[d, s]`` is the proposal ``[s, s + d]`` in
grid units (cell ``i`` has centre ``i``; see :mod:`tadkit.timeline`), i.e. from
the centre of start cell ``s`` to the centre of end cell ``e = s + d``. An
entry is *valid* for a sample of ``L`` real cells when ``d >= 1`` and
``s + d <= L - 1`` (a proposal starts before it ends and ends on a real cell);
row 0 is never valid. BMN's confidence maps, MENet's anchor maps and their
label maps all use this layout, so a start / end pair ``(s, e)`` reads entry
``[e - s, s]``.

* :func:`map_segments`, :func:`map_valid` — the proposals of every entry and
  which of them are real.
* :func:`iou_map` — the label map: every entry's highest tIoU with the ground
  truth.
* :func:`cell_overlap` — the share of each cell inside any of some regions
  (actionness labels); :func:`boundary_labels` — BSN / BMN start and end
  labels: the share of each cell inside a region of ``width`` cells around a
  boundary.
* :func:`pair_candidates` — boundary-peak start / end pairs of a sample (with
  :func:`~tadkit.detect.layers.peaks.boundary_peaks`) and the map entries they
  read; :func:`proposal_detections` — a sample's scored proposals as
  class-agnostic :class:`~tadkit.detect.postprocess.Detections` (label 0).
"""
from __future__ import annotations

import torch

from tadkit.detect.geometry import segment_iou
from tadkit.detect.layers.peaks import boundary_peaks, peak_pairs
from tadkit.detect.postprocess import Detections


def map_segments(max_duration: int, length: int, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(D, T, 2)`` proposals ``[s, s + d]`` (grid units) of every map entry ``[d, s]``."""
    d = torch.arange(max_duration, device=device, dtype=dtype)[:, None]
    s = torch.arange(length, device=device, dtype=dtype)[None, :]
    return torch.stack(torch.broadcast_tensors(s, s + d), -1)


def map_valid(lengths: torch.Tensor, max_duration: int, length: int) -> torch.Tensor:
    """``(B, D, T)`` bool: entry ``[d, s]`` is a real proposal of sample ``b`` (``lengths (B,)`` cells)."""
    dev = lengths.device
    d = torch.arange(max_duration, device=dev)[:, None]
    s = torch.arange(length, device=dev)[None, :]
    end = (s + d)[None]                                                    # (1, D, T)
    return (d >= 1)[None] & (end <= lengths.long().reshape(-1, 1, 1) - 1)


def iou_map(gt_segments: torch.Tensor, max_duration: int, length: int) -> torch.Tensor:
    """``(D, T)`` highest tIoU of every entry's proposal with ``gt_segments (N, 2)`` (0 without ground truth)."""
    if gt_segments.numel() == 0:
        return torch.zeros(max_duration, length, device=gt_segments.device)
    props = map_segments(max_duration, length, gt_segments.device, gt_segments.dtype)
    return segment_iou(props[:, :, None, :], gt_segments[None, None]).amax(-1)


def cell_overlap(regions: torch.Tensor, length: int) -> torch.Tensor:
    """``(T,)``: the largest share of cell ``t`` (extent ``[t - ½, t + ½]``) inside one of ``regions (N, 2)``.

    Regions are in grid units; 0 everywhere without regions.
    """
    if regions.numel() == 0:
        return torch.zeros(length, device=regions.device)
    t = torch.arange(length, device=regions.device, dtype=regions.dtype)[:, None]
    lo = torch.maximum(t - 0.5, regions[None, :, 0])
    hi = torch.minimum(t + 0.5, regions[None, :, 1])
    return (hi - lo).clamp(min=0.0).amax(1)


def boundary_labels(points: torch.Tensor, length: int, width: float = 3.0) -> torch.Tensor:
    """``(T,)`` labels of boundaries at ``points (N,)`` (grid units).

    Cell ``t`` gets the largest share of itself inside a region ``[p -
    width/2, p + width/2]`` around a boundary ``p`` (BMN: ``width`` = 3
    cells); 0 without boundaries.
    """
    return cell_overlap(torch.stack([points - 0.5 * width, points + 0.5 * width], -1), length)


def pair_candidates(start_prob: torch.Tensor, end_prob: torch.Tensor, max_duration: int,
                    rel_threshold: float = 0.5, include_ends: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Boundary-peak proposals of one sample's real cells: ``(pairs (K, 2) long, entries (K, 2) long)``.

    ``start_prob``, ``end_prob``: ``(L,)`` probabilities over the sample's
    ``L`` real cells. Start candidates are the peaks of ``start_prob`` (local
    maxima or above ``rel_threshold ×`` its maximum), end candidates those of
    ``end_prob``; ``include_ends`` also admits the first cell as a start and
    the last as an end. ``pairs`` are ``(s, e)`` with ``s < e`` and ``e - s <
    max_duration``; ``entries`` are their map indices ``(d, s) = (e - s, s)``.
    """
    starts = boundary_peaks(start_prob[None], rel_threshold=rel_threshold, include_first=include_ends)[0]
    ends = boundary_peaks(end_prob[None], rel_threshold=rel_threshold, include_last=include_ends)[0]
    pairs = peak_pairs(starts, ends, max_duration - 1)
    entries = torch.stack([pairs[:, 1] - pairs[:, 0], pairs[:, 0]], 1)
    return pairs, entries


def proposal_detections(segments: torch.Tensor, scores: torch.Tensor, topk: int = 0,
                        min_score: float = 0.0) -> Detections:
    """Proposals ``(K, 2)`` (grid units) scoring above ``min_score``, the best ``topk`` (0: all), label 0."""
    keep = scores > min_score
    segments, scores = segments[keep], scores[keep]
    if topk and topk > 0 and len(scores) > topk:
        scores, idx = scores.topk(int(topk))
        segments = segments[idx]
    return Detections(segments.double().cpu().numpy(), scores.double().cpu().numpy(),
                      torch.zeros(len(scores), dtype=torch.long).numpy())


__all__ = ["map_segments", "map_valid", "iou_map", "cell_overlap", "boundary_labels", "pair_candidates",
           "proposal_detections"]
