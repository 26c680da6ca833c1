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


def balanced_bce(pred: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
                 threshold: float = 0.5, logits: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """BMN's re-weighted binary cross-entropy (Lin et al. 2019) -> a scalar.

    Entries with ``targets > threshold`` are positives (target 1), the other
    valid entries negatives (target 0). With ``n`` valid entries, ``p``
    positives and ``q`` negatives, positives weigh ``0.5 n / p`` and negatives
    ``0.5 n / q`` (BMN's ``0.5 r`` and ``0.5 r / (r - 1)`` with ``r = n / p``),
    and the loss is the mean over valid entries — i.e. the average of the
    positives' mean BCE and the negatives' mean BCE. A side without entries
    drops out (weight 0), the limit of those weights; no valid entry gives 0.

    ``pred`` holds logits (``logits=True``) or probabilities (clamped to
    ``[eps, 1 - eps]``); ``mask`` (same shape, bool) marks valid entries.
    """
    pos = (targets > threshold).to(pred.dtype)
    valid = torch.ones_like(pos) if mask is None else mask.to(pred.dtype)
    pos = pos * valid
    neg = valid - pos
    if logits:
        loss_pos = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred), reduction="none")
        loss_neg = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
    else:
        p = pred.clamp(eps, 1 - eps)
        loss_pos, loss_neg = -torch.log(p), -torch.log1p(-p)
    n_pos, n_neg = pos.sum(), neg.sum()
    total = pred.new_zeros(())
    if n_pos > 0:
        total = total + 0.5 * (loss_pos * pos).sum() / n_pos
    if n_neg > 0:
        total = total + 0.5 * (loss_neg * neg).sum() / n_neg
    return total


def sampled_l2(pred: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
               high: float = 0.7, low: float = 0.3, generator: torch.Generator | None = None) -> torch.Tensor:
    """BMN's regression loss on soft targets (IoU maps) with balanced sampling -> a scalar.

    Valid entries are split by target: high (``> high``), medium (``(low,
    high]``) and low (``<= low``). Every high entry counts; each medium entry
    is drawn with probability ``n_high / n_medium`` and each low entry with
    ``n_high / n_low``, so the three groups weigh about the same. The loss is
    ``½ Σ w (pred − target)² / Σ w`` over the drawn entries ``w``, 0 when
    nothing is drawn (no high entry). ``pred`` are values (e.g. sigmoid
    outputs), not logits.
    """
    valid = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask.bool()
    hi = (targets > high) & valid
    mid = (targets > low) & (targets <= high) & valid
    lo = (targets <= low) & valid
    n_hi = hi.sum().to(pred.dtype)
    draw = torch.rand(targets.shape, generator=generator, device=targets.device, dtype=pred.dtype)
    keep_mid = mid & (draw < n_hi / mid.sum().clamp(min=1))
    keep_lo = lo & (draw < n_hi / lo.sum().clamp(min=1))
    w = (hi | keep_mid | keep_lo).to(pred.dtype)
    return 0.5 * (w * (pred - targets) ** 2).sum() / w.sum().clamp(min=1)


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"unknown reduction {reduction!r}")
