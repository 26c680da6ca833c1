"""1-D segment geometry: temporal IoU and GIoU, for numpy arrays and torch tensors.

A segment is ``[start, end]`` with ``start <= end`` in any one unit (seconds or
grid positions; both arguments must use the same one). Arrays of segments have
shape ``[..., 2]``. Every function accepts numpy arrays or torch tensors and
returns the same kind, so the training losses (torch, differentiable) and the
post-processing (numpy) share one definition.

* :func:`segment_iou` / :func:`segment_giou` — element-wise ("aligned") over
  broadcastable ``[..., 2]`` inputs, returning ``[...]``.
* :func:`pairwise_iou` — every pair of ``[N, 2]`` and ``[M, 2]``, returning
  ``[N, M]``.

Degenerate segments (zero length) are allowed: their IoU with anything is 0
unless both are the same point, where the union is 0 and the IoU is defined
as 0 too (``eps`` keeps the division finite).
"""
from __future__ import annotations

from typing import Any

import numpy as np

EPS = 1e-8


def segment_iou(a: Any, b: Any, eps: float = EPS) -> Any:
    """Temporal IoU of aligned segments: ``a [..., 2]``, ``b [..., 2]`` -> ``[...]``."""
    inter, union, _ = _overlaps(a, b)
    return inter / _clamp_min(union, eps)


def segment_giou(a: Any, b: Any, eps: float = EPS) -> Any:
    """Generalised IoU of aligned segments (Rezatofighi et al. 2019), in ``[-1, 1]``.

    ``GIoU = IoU - |B \\ (a ∪ b)| / |B|`` where ``B`` is the shortest interval
    covering both segments; it keeps a gradient when the segments do not
    overlap.
    """
    inter, union, hull = _overlaps(a, b)
    iou = inter / _clamp_min(union, eps)
    return iou - (hull - union) / _clamp_min(hull, eps)


def pairwise_iou(a: Any, b: Any, eps: float = EPS) -> Any:
    """IoU of every pair: ``a [N, 2]``, ``b [M, 2]`` -> ``[N, M]``."""
    return segment_iou(a[:, None, :], b[None, :, :], eps)


def segment_length(a: Any) -> Any:
    """``end - start`` of ``[..., 2]`` segments, clamped at 0."""
    return _clamp_min(a[..., 1] - a[..., 0], 0.0)


# --------------------------------------------------------------------------- helpers
def _overlaps(a: Any, b: Any) -> tuple[Any, Any, Any]:
    """Intersection, union and hull lengths of aligned segments."""
    maximum, minimum = _ops(a)
    inter = _clamp_min(minimum(a[..., 1], b[..., 1]) - maximum(a[..., 0], b[..., 0]), 0.0)
    union = segment_length(a) + segment_length(b) - inter
    hull = maximum(a[..., 1], b[..., 1]) - minimum(a[..., 0], b[..., 0])
    return inter, union, hull


def _ops(x: Any) -> tuple[Any, Any]:
    if isinstance(x, np.ndarray):
        return np.maximum, np.minimum
    import torch

    return torch.maximum, torch.minimum


def _clamp_min(x: Any, lo: float) -> Any:
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return np.maximum(x, lo)
    return x.clamp(min=lo)
