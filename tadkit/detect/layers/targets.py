"""Class targets shared by detection heads.

THUMOS14 annotates every CliffDiving instance a second time as Diving with
exactly the same segment; other datasets have such exact twins too. A location
or anchor matched to one instance of a twin must be trained on the classes of
all of them, or the second class only ever gets the positives it wins by
chance. :func:`instance_classes` gives these multi-hot targets; heads with
independent sigmoid classifiers use them as they are, softmax heads spread the
target evenly over the twin classes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def instance_classes(assigned: torch.Tensor, gt_segments: torch.Tensor, gt_labels: torch.Tensor,
                     num_classes: int) -> torch.Tensor:
    """Multi-hot class targets ``[N, C]`` of locations assigned (``assigned [N]``) to ground truth.

    ``assigned`` holds a ground-truth index per location (``-1``: background,
    an all-zero row). A location takes the label of its ground truth and of
    every other ground truth with exactly the same segment.
    """
    n = assigned.shape[0]
    out = torch.zeros(n, num_classes, dtype=gt_segments.dtype, device=gt_segments.device)
    hit = assigned >= 0
    if gt_segments.numel() == 0 or not hit.any():
        return out
    same = (gt_segments[assigned[hit]][:, None, :] == gt_segments[None, :, :]).all(-1)  # (n_hit, M)
    onehot = F.one_hot(gt_labels.long(), num_classes).to(out.dtype)                      # (M, C)
    out[hit] = (same.to(out.dtype) @ onehot).clamp(max=1.0)
    return out


def softmax_targets(classes: torch.Tensor) -> torch.Tensor:
    """Multi-hot ``[..., C]`` -> target distributions ``[..., C + 1]`` over background + classes.

    An all-zero row is background (probability 1 on index 0); otherwise the
    probability is spread evenly over the row's classes.
    """
    count = classes.sum(-1, keepdim=True)
    return torch.cat([(count == 0).to(classes.dtype), classes / count.clamp(min=1)], -1)
