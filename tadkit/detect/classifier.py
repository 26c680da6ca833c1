"""A video-level action classifier over snippet features, for classifier fusion.

Two-stage heads (and class-agnostic proposals in general) take their class
from a video-level classifier: each proposal is paired with the top-k classes
of its video, scored ``sqrt(cls · proposal)`` (see
:func:`tadkit.detect.postprocess.fuse_classifier`). Instead of external scores
(e.g. the CUHK ActivityNet file) one can train this classifier over the same
features::

    tadkit detect classify --features feats/ --annotations anet.json \\
        --train-subset training --subset validation --out cls_scores.json
    tadkit detect infer ... --classifier cls_scores.json --set fusion_topk=2

or keep the trained classifier as a *classifier run* and let ``infer`` score
whatever videos it detects (several runs are averaged)::

    tadkit detect classify --features feats/ --annotations anet.json --train-subset training --out runs/cls_1
    tadkit detect infer ... --classifier-run runs/cls_1 --classifier-run runs/cls_2

Model: each video's ``[T, C]`` features are pooled over time (mean and max,
``[2C]``), standardised with the training statistics, and a linear layer with
independent sigmoids (a video may hold several classes) is trained with binary
cross-entropy, full batch, Adam. The output is the CUHK format
``{"results": {video: [score per class]}, "class": [names]}``.
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from tadkit.detect.runs import CLASSIFIER_FILE, RUN_FILE, write_json
from tadkit.errors import InputError, ProvenanceError
from tadkit.files import read_json

#: ``run.json`` kinds: one classifier, or a learned ensemble of classifier runs
KINDS = ("classifier", "classifier-ensemble")


@dataclass
class VideoClassifier:
    """Linear multi-label classifier over pooled features (see the module docstring)."""

    classes: list[str]
    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray  # [K, 2C]
    bias: np.ndarray    # [K]

    def scores(self, pooled: np.ndarray) -> np.ndarray:
        """``[V, 2C]`` pooled features -> ``[V, K]`` class probabilities."""
        z = (pooled - self.mean) / self.std
        return 1.0 / (1.0 + np.exp(-(z @ self.weight.T + self.bias)))

    def save(self, path: str | os.PathLike) -> None:
        p = Path(path)
        tmp = p.with_name(f".{p.name}.tmp.npz")
        np.savez(tmp, classes=np.array(self.classes, dtype=str), mean=self.mean, std=self.std,
                 weight=self.weight, bias=self.bias)
        os.replace(tmp, p)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "VideoClassifier":
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls([str(c) for c in z["classes"]], z["mean"], z["std"], z["weight"], z["bias"])
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(path, f"unreadable classifier ({exc})") from None


def save_classifier_run(out: str | os.PathLike, clf: VideoClassifier, store: Any,
                        info: Mapping[str, Any]) -> Path:
    """Write a classifier run directory (``run.json`` with ``"kind": "classifier"``, ``classifier.npz``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clf.save(out / CLASSIFIER_FILE)
    write_json(out / RUN_FILE, {"kind": "classifier", "run_id": uuid.uuid4().hex, "classes": list(clf.classes),
                                "provenance": store.provenance.to_dict(),
                                "features": str(Path(store.root).resolve()), **info}, indent=1)
    return out


def classifier_run_scores(runs: Sequence[str | os.PathLike], store: Any, video_ids: Sequence[str],
                          class_names: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Mean class probabilities of several classifier runs for ``video_ids``, in ``class_names`` order.

    Every run must have been trained on features with ``store``'s provenance
    and score every class of ``class_names``; a run may be a learned ensemble
    of classifier runs (``detect classify-ensemble``). Returns ``({video:
    [C]}, {unreadable video: reason})``.
    """
    pooled, failed = read_pooled(store, video_ids)
    names = list(pooled)
    x = np.stack([pooled[v] for v in names]) if names else np.zeros((0, 0))
    total = np.zeros((len(names), len(class_names)))
    for run in runs:
        total += run_probabilities(run, store, x, class_names)
    return {v: total[i] / max(1, len(runs)) for i, v in enumerate(names)}, failed


def run_probabilities(run: str | os.PathLike, store: Any, pooled: np.ndarray,
                      class_names: Sequence[str]) -> np.ndarray:
    """``[V, C]`` class probabilities of one classifier run (or ensemble run) for ``pooled [V, 2C']`` features."""
    run = Path(run)
    meta = read_classifier_run(run, store)
    if meta.get("kind") == KINDS[1]:
        from tadkit.detect.classifier_ensemble import ensemble_run_probabilities

        return ensemble_run_probabilities(meta, store, pooled, class_names)
    clf = VideoClassifier.load(run / CLASSIFIER_FILE)
    position = {c: i for i, c in enumerate(clf.classes)}
    missing = [c for c in class_names if c not in position]
    if missing:
        raise InputError(run, f"the classifier does not score classes {missing[:5]}")
    if not len(pooled):
        return np.zeros((0, len(class_names)))
    return clf.scores(pooled)[:, [position[c] for c in class_names]]


def read_classifier_run(run: Path, store: Any = None) -> dict[str, Any]:
    """``run.json`` of a classifier run or classifier-ensemble run; checks its features' provenance against ``store``."""
    from tadkit.data.features import Provenance

    meta = read_json(run / RUN_FILE) if (run / RUN_FILE).is_file() else {}
    kind = meta.get("kind")
    if kind not in KINDS or (kind == KINDS[0] and not (run / CLASSIFIER_FILE).is_file()):
        raise InputError(run, f"not a classifier run (no {RUN_FILE} / {CLASSIFIER_FILE}); make one with "
                         "`tadkit detect classify --out DIR`")
    if store is not None:
        problems = store.provenance.mismatches(Provenance.from_dict(meta["provenance"]))
        if problems:
            raise ProvenanceError(f"{run}: the classifier was trained on other features: " + "; ".join(problems))
    return meta


def pool_features(features: np.ndarray) -> np.ndarray:
    """``[T, C]`` snippet features -> ``[2C]`` (temporal mean ‖ temporal max)."""
    f = np.asarray(features, dtype=np.float32)
    return np.concatenate([f.mean(0), f.max(0)])


def train_video_classifier(store: Any, annotations: Any, steps: int = 500, lr: float = 0.01,
                           weight_decay: float = 1e-4, seed: int = 0) -> tuple[VideoClassifier, dict[str, str]]:
    """Fit on every annotated video of ``annotations`` that ``store`` holds.

    Returns ``(classifier, failed)`` where ``failed`` maps unreadable videos to
    the reason (they are skipped).
    """
    classes = list(annotations.classes)
    ids = [v for v in annotations.video_ids() if v in store]
    pooled, failed = read_pooled(store, ids)
    ids = [v for v in ids if v in pooled]
    if not ids:
        raise InputError(store.root, "no readable annotated video to train the classifier on")
    x = np.stack([pooled[v] for v in ids])
    y = np.zeros((len(ids), len(classes)), dtype=np.float32)
    for i, vid in enumerate(ids):
        _, labels = annotations.segments_of(vid)
        y[i, np.unique(labels)] = 1.0
    mean, std = x.mean(0), x.std(0) + 1e-6
    gen = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(x.shape[1], len(classes))
    with torch.no_grad():
        layer.weight.normal_(0.0, 0.01, generator=gen)
        layer.bias.zero_()
    xt = torch.from_numpy((x - mean) / std).float()
    yt = torch.from_numpy(y)
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(layer(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    clf = VideoClassifier(classes, mean, std, layer.weight.detach().numpy().astype(np.float64),
                          layer.bias.detach().numpy().astype(np.float64))
    return clf, failed


def read_pooled(store: Any, video_ids: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Pooled features of ``video_ids``: ``({video: [2C]}, {failed video: reason})``."""
    pooled, failed = {}, {}
    for vid in video_ids:
        try:
            pooled[vid] = pool_features(store.read(vid, extras=False).features)
        except (InputError, OSError, KeyError, ValueError) as exc:
            failed[vid] = " ".join(str(exc).split())
    return pooled, failed


def write_scores(path: str | os.PathLike, scores: dict[str, np.ndarray], classes: Sequence[str]) -> None:
    """Write CUHK-format class scores (loadable by ``load_classifier_scores``)."""
    doc = {"results": {vid: [round(float(s), 6) for s in row] for vid, row in scores.items()},
           "class": list(classes)}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, p)
