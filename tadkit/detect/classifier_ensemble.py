"""Learned weights of an ensemble of video-level classifiers (HACS-2020, sec. 2.1).

The HACS-2020 winners fuse 14 video classifiers with one adaptive weight per
model: each model's class logits are multiplied by its weight before the
softmax, and the weights are trained for the best classification. Here,
with ``z_n (V, K)`` the logits of member ``n`` on ``V`` held-out videos
(videos none of the members trained on) and ``y (V, K)`` their multi-hot
labels, :func:`fit_ensemble_weights` minimises the cross-entropy of
``softmax(Σ_n w_n z_n)`` against ``y`` normalised per video (full batch,
Adam, weights starting at ``1 / N``, i.e. at the mean of the logits);
:func:`ensemble_scores` gives the fused class probabilities. Members are
classifier runs (:mod:`tadkit.detect.classifier`; their logits are the
logits of their sigmoid probabilities) trained with ``detect classify
--holdout-fraction``::

    tadkit detect classify ... --holdout-fraction 0.2 --seed 1 --out runs/cls_1
    tadkit detect classify ... --holdout-fraction 0.2 --lr 0.003 --out runs/cls_2
    tadkit detect classify-ensemble --classifier-run runs/cls_1 --classifier-run runs/cls_2 --out runs/cls
    tadkit detect infer ... --classifier-run runs/cls

:func:`fit_classifier_ensemble` fits the weights on the videos every member
held out; :func:`save_ensemble_run` writes an ensemble run (``run.json`` with
``"kind": "classifier-ensemble"``, the members' paths and run ids, the
weights), which ``--classifier-run`` reads like a single classifier.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from tadkit.detect.classifier import KINDS, read_classifier_run, read_pooled, run_probabilities
from tadkit.detect.runs import RUN_FILE, write_json
from tadkit.errors import InputError

KIND = KINDS[1]


def fit_classifier_ensemble(runs: Sequence[str | Path], store: Any, annotations: Any,
                            steps: int = 300) -> tuple[np.ndarray, dict[str, Any]]:
    """Weights ``(N,)`` of classifier ``runs`` fitted on the videos all of them held out.

    ``annotations`` labels those videos. Returns ``(weights, report)`` with
    the held-out videos used and the top-1 accuracy (the best class is one of
    the video's classes) of every member and of the ensemble on them.
    """
    metas = [read_classifier_run(Path(r), store) for r in runs]
    held = set.intersection(*(set(m.get("holdout_videos") or []) for m in metas))
    videos = [v for v in sorted(held) if v in store and v in annotations.videos.index]
    if not videos:
        raise InputError(Path(runs[0]), "the classifier runs hold out no common annotated video to fit the "
                         "ensemble weights on: train each with `tadkit detect classify --holdout-fraction 0.2`")
    pooled, failed = read_pooled(store, videos)
    videos = [v for v in videos if v in pooled]
    classes = list(metas[0]["classes"])
    x = np.stack([pooled[v] for v in videos])
    logits = [probabilities_to_logits(run_probabilities(r, store, x, classes)) for r in runs]
    labels = np.zeros((len(videos), len(classes)))
    index = {c: i for i, c in enumerate(classes)}
    for i, vid in enumerate(videos):
        _, lab = annotations.segments_of(vid)
        labels[i, [index[annotations.classes[int(k)]] for k in np.unique(lab)]] = 1.0
    weights = fit_ensemble_weights(logits, labels, steps=steps)
    hit = lambda z: float(labels[np.arange(len(videos)), z.argmax(1)].mean())  # noqa: E731
    report = {"videos": videos, "failed": failed, "member_top1": [hit(z) for z in logits],
              "ensemble_top1": hit(ensemble_scores(logits, weights))}
    return weights, report


def save_ensemble_run(out: str | Path, runs: Sequence[str | Path], weights: Sequence[float],
                      info: Mapping[str, Any]) -> Path:
    """Write an ensemble run directory: members (path, run id), weights, provenance and classes of the first."""
    metas = [read_classifier_run(Path(r)) for r in runs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    members = [{"path": str(Path(r).resolve()), "run_id": m.get("run_id")} for r, m in zip(runs, metas)]
    write_json(out / RUN_FILE, {"kind": KIND, "run_id": uuid.uuid4().hex, "classes": metas[0]["classes"],
                                "provenance": metas[0]["provenance"], "members": members,
                                "weights": [float(w) for w in weights], **info}, indent=1)
    return out


def ensemble_run_probabilities(meta: Mapping[str, Any], store: Any, pooled: np.ndarray,
                               class_names: Sequence[str]) -> np.ndarray:
    """``[V, C]`` fused probabilities of an ensemble run (see :func:`ensemble_scores`)."""
    logits = []
    for member in meta["members"]:
        path = Path(member["path"])
        if read_classifier_run(path).get("run_id") != member.get("run_id"):
            raise InputError(path, "this classifier run changed since the ensemble was fitted (other run id); "
                             "fit the ensemble again with `tadkit detect classify-ensemble`")
        logits.append(probabilities_to_logits(run_probabilities(path, store, pooled, class_names)))
    return ensemble_scores(logits, meta["weights"])


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


__all__ = ["fit_classifier_ensemble", "save_ensemble_run", "ensemble_run_probabilities", "fit_ensemble_weights",
           "ensemble_scores", "probabilities_to_logits", "KIND"]
