"""Learned weights of an ensemble of video-level classifiers (HACS-2020, sec. 2.1).

The HACS-2020 winners fuse 14 video classifiers with one adaptive weight per
model: each model's class logits are multiplied by its weight before the
softmax, and the weights are trained for the best classification. Here,
with ``z_n (V, K)`` the logits of member ``n`` on ``V`` held-out videos
(videos none of the members trained on) and ``y (V, K)`` their multi-hot
labels, :func:`fit_ensemble_weights` minimises the cross-entropy of
``softmax(Σ_n w_n z_n)`` against ``y`` normalised per video (full batch,
Adam, weights starting at ``1 / N``, i.e. at the mean of the logits);
:func:`ensemble_scores` gives the fused class probabilities.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def fit_ensemble_weights(logits: Sequence[np.ndarray], labels: np.ndarray, steps: int = 300,
                         lr: float = 0.05) -> np.ndarray:
    """Weights ``(N,)`` of ``N`` members' logits ``(V, K)`` fitted to multi-hot ``labels (V, K)``.

    Videos without any label are ignored; with none left the weights stay at
    ``1 / N``.
    """
    z = torch.as_tensor(np.stack([np.asarray(x, dtype=np.float64) for x in logits]))       # (N, V, K)
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64))
    if z.dim() != 3 or z.shape[1:] != y.shape:
        raise ValueError(f"logits (N, V, K) and labels (V, K) do not match: {tuple(z.shape)} vs {tuple(y.shape)}")
    n = z.shape[0]
    w = torch.full((n,), 1.0 / n, dtype=torch.float64, requires_grad=True)
    keep = y.sum(1) > 0
    if not keep.any():
        return w.detach().numpy()
    z, target = z[:, keep], y[keep] / y[keep].sum(1, keepdim=True)
    opt = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        loss = -(target * torch.log_softmax(torch.einsum("n,nvk->vk", w, z), -1)).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach().numpy()


def ensemble_scores(logits: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """``softmax(Σ_n w_n z_n)`` over classes: ``(V, K)`` fused class probabilities."""
    z = np.einsum("n,nvk->vk", np.asarray(weights, dtype=np.float64),
                  np.stack([np.asarray(x, dtype=np.float64) for x in logits]))
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def probabilities_to_logits(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Logits of independent sigmoid probabilities (clipped to ``[eps, 1 - eps]``)."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


__all__ = ["fit_ensemble_weights", "ensemble_scores", "probabilities_to_logits"]
