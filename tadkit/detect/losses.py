"""Losses shared by detection heads (torch, differentiable).

All functions take per-element predictions and targets and return per-element
losses (``reduction="none"``) or their sum / mean, so heads normalise by their
own sample counts (the paper's ``1/N_cls``, ``1/N_conf``, ``1/N_reg``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tadkit.detect.geometry import segment_giou


def smooth_l1(pred: torch.Tensor, target: torch.Tensor, beta: float = 1.0,
              reduction: str = "none") -> torch.Tensor:
    """Smooth-L1 (Huber / beta): ``0.5 d² / beta`` for ``|d| < beta``, else ``|d| - 0.5 beta``."""
    d = (pred - target).abs()
    loss = torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta) if beta > 0 else d
    return _reduce(loss, reduction)


def giou_loss(pred: torch.Tensor, target: torch.Tensor, reduction: str = "none") -> torch.Tensor:
    """``1 - GIoU`` of aligned segments ``[..., 2]`` -> ``[...]`` (in ``[0, 2]``)."""
    return _reduce(1.0 - segment_giou(pred, target), reduction)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0, reduction: str = "none") -> torch.Tensor:
    """Focal loss (Lin et al. 2017) on independent sigmoid outputs.

    ``-α_t (1 - p_t)^γ log p_t`` with ``p_t = p`` for positives (``targets``
    1) and ``1 - p`` otherwise; ``alpha < 0`` disables the α weighting.
    """
    targets = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return _reduce(loss, reduction)


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"unknown reduction {reduction!r}")
