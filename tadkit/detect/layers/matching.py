"""Set-prediction matching: the DETR / Sparse R-CNN bipartite assignment for 1-D segments.

A query-based head predicts a fixed set of ``N`` candidates (class logits and
a segment each); training pairs each ground-truth instance with exactly one
candidate, the pairing that minimises the total matching cost (Hungarian
algorithm, :func:`scipy.optimize.linear_sum_assignment`). The unmatched
candidates are trained as background.

* :func:`matching_cost` — the ``(N, M)`` cost between ``N`` candidates and
  ``M`` ground truths: ``w_cls · focal + w_l1 · L1 − w_giou · GIoU``, where the
  focal term is Sparse R-CNN's difference of the positive and negative focal
  losses of the ground truth's class (low when the candidate is confident in
  that class), L1 is the distance between ``[start, end]`` pairs, GIoU the
  generalised IoU (Rezatofighi et al. 2019).
* :func:`hungarian_match` — the optimal one-to-one assignment of a cost
  matrix: ``(candidate indices, ground-truth indices)``, both sorted by
  candidate, ``min(N, M)`` pairs.
* :func:`match_sets` — both, for one sample.

Segments may be in any one unit (the cost's L1 term is only comparable to the
others on normalised coordinates, as the heads use it). Matching never needs
gradients: everything here runs under ``torch.no_grad``.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from tadkit.detect.geometry import segment_giou

EPS = 1e-8


@torch.no_grad()
def matching_cost(logits: torch.Tensor, segments: torch.Tensor, gt_labels: torch.Tensor,
                  gt_segments: torch.Tensor, cls_weight: float = 2.0, l1_weight: float = 5.0,
                  giou_weight: float = 2.0, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Cost ``(N, M)`` of pairing candidates with ground truths (lower is better).

    ``logits (N, C)`` sigmoid class logits and ``segments (N, 2)`` ``[start,
    end]`` of the candidates; ``gt_labels (M,)`` class indices and
    ``gt_segments (M, 2)`` of the ground truth. With ``p`` the candidate's
    probability of the ground truth's class::

        focal = α (1 − p)^γ (−log p) − (1 − α) p^γ (−log(1 − p))
        cost  = cls_weight · focal + l1_weight · |Δstart| + |Δend| − giou_weight · GIoU

    (``alpha < 0`` drops the α weighting, as in
    :func:`tadkit.detect.losses.sigmoid_focal_loss`).
    """
    n, m = logits.shape[0], gt_labels.shape[0]
    if n == 0 or m == 0:
        return logits.new_zeros(n, m)
    p = torch.sigmoid(logits.float())[:, gt_labels.long()]                   # (N, M)
    pos = (1 - p) ** gamma * -(p + EPS).log()
    neg = p ** gamma * -(1 - p + EPS).log()
    if alpha >= 0:
        pos, neg = alpha * pos, (1 - alpha) * neg
    seg, gt = segments.float(), gt_segments.float().to(segments.device)
    l1 = torch.cdist(seg, gt, p=1)                                           # (N, M)
    giou = segment_giou(seg[:, None, :], gt[None, :, :])
    return cls_weight * (pos - neg) + l1_weight * l1 - giou_weight * giou


def hungarian_match(cost: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal one-to-one assignment of an ``(N, M)`` cost matrix.

    Returns ``(rows, cols)`` long tensors of ``min(N, M)`` pairs, sorted by
    row: candidate ``rows[k]`` takes ground truth ``cols[k]``. Among equally
    cheap assignments scipy's choice is kept (deterministic for a given
    matrix). Non-finite costs are an error (a NaN would silently corrupt the
    assignment).
    """
    c = cost.detach().cpu().double().numpy() if isinstance(cost, torch.Tensor) else np.asarray(cost, np.float64)
    if c.ndim != 2:
        raise ValueError(f"a cost matrix must be 2-D, got shape {c.shape}")
    if c.size == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty.clone()
    if not np.isfinite(c).all():
        raise ValueError("the matching cost holds NaN or infinite values")
    rows, cols = linear_sum_assignment(c)
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def match_sets(logits: torch.Tensor, segments: torch.Tensor, gt_labels: torch.Tensor,
               gt_segments: torch.Tensor, **weights: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`hungarian_match` of :func:`matching_cost` for one sample (indices on ``logits``' device)."""
    rows, cols = hungarian_match(matching_cost(logits, segments, gt_labels, gt_segments, **weights))
    return rows.to(logits.device), cols.to(logits.device)


__all__ = ["matching_cost", "hungarian_match", "match_sets"]
