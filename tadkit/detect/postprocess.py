"""Post-processing of detection candidates: NMS family, voting, fusion, output.

Everything here works on :class:`Detections` — parallel numpy arrays of
segments ``[K, 2]``, scores ``[K]`` and integer labels ``[K]`` of one video.
Segments are in seconds by the time they reach :func:`postprocess_video`
(heads decode to grid units; :func:`to_seconds` converts with the window's
:class:`~tadkit.timeline.TimeAxis`).

Pipeline of :func:`postprocess_video` (all steps switchable in
:class:`~tadkit.detect.config.PostprocessConfig`)::

    min score -> pre-NMS top-k -> hard / linear soft / Gaussian soft NMS
              -> score voting -> top-k per video

Suppression is greedy: repeatedly take the highest-scoring remaining
candidate, then decay the others by their IoU with it — hard NMS removes those
with IoU > threshold, linear soft-NMS multiplies by ``1 - IoU`` above the
threshold, Gaussian soft-NMS multiplies every score by ``exp(-IoU² / σ)``.
Per-class suppression only lets candidates of the same label interact. Each
round is vectorised over all remaining candidates.

Outputs: :func:`detections_to_json` writes the official ActivityNet JSON
(label names, seconds clipped to ``[0, duration]``), :func:`proposals_to_json`
the official proposal JSON; :func:`save_candidates` / :func:`load_candidates`
keep raw candidates (a compact ``.npz``) so ``tadkit detect postprocess`` can
re-tune these settings without the model.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from tadkit.detect.config import PostprocessConfig
from tadkit.detect.geometry import pairwise_iou, segment_iou
from tadkit.errors import InputError
from tadkit.files import read_json
from tadkit.timeline import TimeAxis, grid_to_segments

METHODS = ("none", "hard", "linear", "gaussian")
CANDIDATES_FORMAT = "tadkit-candidates-1"
CANDIDATES_NPZ = "tadkit-candidates-npz-1"


@dataclass
class Detections:
    """Candidates of one video: ``segments [K, 2]`` (float64), ``scores [K]``, ``labels [K]`` (int64)."""

    segments: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.segments = np.asarray(self.segments, dtype=np.float64).reshape(-1, 2)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        k = len(self.segments)
        if self.scores.shape != (k,) or self.labels.shape != (k,):
            raise ValueError(f"detections need segments [K, 2], scores [K] and labels [K]; got "
                             f"{self.segments.shape}, {self.scores.shape}, {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 2)), np.zeros(0), np.zeros(0, dtype=np.int64))

    @classmethod
    def concat(cls, parts: Sequence["Detections"]) -> "Detections":
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.segments for p in parts]), np.concatenate([p.scores for p in parts]),
                   np.concatenate([p.labels for p in parts]))

    def select(self, index: Any) -> "Detections":
        """Subset (boolean mask or integer index array), in the given order."""
        return Detections(self.segments[index], self.scores[index], self.labels[index])

    def sorted(self) -> "Detections":
        """By decreasing score (stable)."""
        return self.select(np.argsort(-self.scores, kind="stable"))

    def topk(self, k: int | None) -> "Detections":
        """The ``k`` best by score, sorted (all of them when ``k`` is None)."""
        out = self.sorted()
        return out if k is None or k <= 0 else out.select(slice(0, k))


# --------------------------------------------------------------------------- suppression
def nms(segments: np.ndarray, scores: np.ndarray, labels: np.ndarray | None = None,
        iou_threshold: float = 0.5, class_agnostic: bool = False,
        max_keep: int | None = None) -> np.ndarray:
    """Hard NMS; returns the kept indices in the order they were picked (by score)."""
    keep, _ = soft_nms(segments, scores, labels, method="hard", iou_threshold=iou_threshold,
                       min_score=-np.inf, class_agnostic=class_agnostic, max_keep=max_keep)
    return keep


def soft_nms(segments: np.ndarray, scores: np.ndarray, labels: np.ndarray | None = None,
             method: str = "gaussian", sigma: float = 0.5, iou_threshold: float = 0.5,
             min_score: float = 0.0, class_agnostic: bool = False,
             max_keep: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy (soft-)NMS over one video's candidates.

    Args:
        segments: ``[K, 2]`` in any unit. scores: ``[K]``. labels: ``[K]`` ints
            (ignored when ``class_agnostic`` or None).
        method: ``"hard"`` (drop IoU > threshold), ``"linear"`` (score ×
            ``1 - IoU`` where IoU > threshold) or ``"gaussian"`` (score ×
            ``exp(-IoU² / sigma)`` for every candidate).
        min_score: candidates whose (decayed) score falls to or below it are
            dropped; ``-inf`` keeps everything hard NMS does not suppress.
        max_keep: stop after this many picks.

    Returns:
        ``(indices [J], scores [J])``: picked candidates in pick order, with
        their decayed scores (unchanged for hard NMS).
    """
    if method not in ("hard", "linear", "gaussian"):
        raise ValueError(f"unknown NMS method {method!r}; choose hard, linear or gaussian")
    if method == "gaussian" and not sigma > 0:
        raise ValueError("Gaussian soft-NMS needs sigma > 0")
    seg = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    cur = np.asarray(scores, dtype=np.float64).reshape(-1).copy()
    lab = None if (class_agnostic or labels is None) else np.asarray(labels).reshape(-1)
    alive = np.flatnonzero(cur > min_score)
    limit = len(cur) if max_keep is None or max_keep <= 0 else max_keep
    picked: list[int] = []
    picked_scores: list[float] = []
    while alive.size and len(picked) < limit:
        j = int(np.argmax(cur[alive]))
        best = int(alive[j])
        picked.append(best)
        picked_scores.append(float(cur[best]))
        alive = np.delete(alive, j)
        if not alive.size:
            break
        iou = segment_iou(seg[alive], seg[best][None, :])
        if lab is not None:
            iou = np.where(lab[alive] == lab[best], iou, 0.0)
        if method == "hard":
            alive = alive[iou <= iou_threshold]
            continue
        if method == "linear":
            decay = np.where(iou > iou_threshold, 1.0 - iou, 1.0)
        else:
            decay = np.exp(-(iou * iou) / sigma)
        cur[alive] *= decay
        alive = alive[cur[alive] > min_score]
    return np.asarray(picked, dtype=np.int64), np.asarray(picked_scores, dtype=np.float64)


def score_voting(kept: Detections, pool: Detections, iou_threshold: float = 0.7,
                 class_agnostic: bool = False) -> Detections:
    """Refine kept boundaries by the score-weighted mean of overlapping candidates.

    Each kept segment's ``[start, end]`` becomes ``Σ w_j seg_j / Σ w_j`` over
    the candidates ``j`` of ``pool`` (the pre-NMS set) of the same label (any
    label when ``class_agnostic``) with IoU ≥ ``iou_threshold``, where ``w_j``
    is the candidate's score. Scores and labels are unchanged; a kept segment
    with no such candidate keeps its boundaries.
    """
    if not len(kept) or not len(pool):
        return kept
    iou = pairwise_iou(kept.segments, pool.segments)  # [K, P]
    w = np.where(iou >= iou_threshold, np.maximum(pool.scores, 0.0)[None, :], 0.0)
    if not class_agnostic:
        w = np.where(kept.labels[:, None] == pool.labels[None, :], w, 0.0)
    total = w.sum(axis=1)
    voted = (w @ pool.segments) / np.maximum(total, 1e-12)[:, None]
    segments = np.where(total[:, None] > 0, voted, kept.segments)
    return Detections(segments, kept.scores.copy(), kept.labels.copy())


def postprocess_video(det: Detections, cfg: PostprocessConfig) -> Detections:
    """Run the configured pipeline (see the module docstring); returns sorted detections."""
    if cfg.method not in METHODS:
        raise ValueError(f"unknown NMS method {cfg.method!r}; choose one of {', '.join(METHODS)}")
    det = det.select(det.scores >= cfg.min_score) if cfg.min_score > 0 else det
    det = det.topk(cfg.pre_nms_topk)
    pool = det
    if cfg.method != "none" and len(det):
        keep, scores = soft_nms(det.segments, det.scores, det.labels, method=cfg.method,
                                sigma=cfg.sigma, iou_threshold=cfg.iou_threshold,
                                min_score=cfg.min_score if cfg.method != "hard" else -np.inf,
                                class_agnostic=cfg.class_agnostic, max_keep=cfg.max_per_video)
        det = Detections(det.segments[keep], scores, det.labels[keep])
    if cfg.voting and len(det):
        det = score_voting(det, pool, cfg.voting_iou, cfg.class_agnostic)
    return det.topk(cfg.max_per_video)


# --------------------------------------------------------------------------- windows & fusion
def to_seconds(det: Detections, axis: TimeAxis, duration: float | None = None) -> Detections:
    """Candidates in grid units of ``axis`` -> seconds (clipped to ``[0, duration]`` if given)."""
    return Detections(grid_to_segments(det.segments, axis, duration), det.scores, det.labels)


def merge_windows(parts: Iterable[tuple[str, Detections]]) -> dict[str, Detections]:
    """Gather sliding-window candidates (already in seconds) into one set per video.

    Windows overlap, so the same action is usually found by several windows;
    the merged set goes through :func:`postprocess_video`, whose NMS removes
    the duplicates. Videos keep their first-seen order.
    """
    grouped: dict[str, list[Detections]] = {}
    for video_id, det in parts:
        grouped.setdefault(video_id, []).append(det)
    return {vid: Detections.concat(dets) for vid, dets in grouped.items()}


def fuse_classifier(proposals: Detections, class_scores: np.ndarray, topk: int = 2) -> Detections:
    """Class-agnostic proposals × video-level class scores -> detections.

    The ``topk`` classes with the highest video-level score each get a copy of
    every proposal, scored ``sqrt(cls_score · proposal_score)``. Returns
    ``K · topk`` detections sorted by score (proposal labels are ignored).
    """
    cls = np.asarray(class_scores, dtype=np.float64).reshape(-1)
    k = max(1, min(int(topk), len(cls)))
    top = np.argsort(-cls, kind="stable")[:k]  # [k]
    n = len(proposals)
    scores = np.sqrt(np.clip(cls[top][:, None] * proposals.scores[None, :], 0.0, None))  # [k, K]
    out = Detections(np.tile(proposals.segments, (k, 1)), scores.reshape(-1), np.repeat(top, n))
    return out.sorted()


def load_classifier_scores(path: str | os.PathLike, class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Video-level class scores from a CUHK-format file, in ``class_names`` order.

    The file is ``{"results": {video: [score per class]}, "class": [names]}``.
    Returns ``video -> [C]`` scores aligned to ``class_names``. Raises
    :class:`InputError` naming the file for a malformed file or a class of
    ``class_names`` the file does not score.
    """
    p = Path(path)
    data = read_json(p)
    if not isinstance(data, Mapping) or not isinstance(data.get("results"), Mapping) \
            or not isinstance(data.get("class"), list):
        raise InputError(p, 'expected {"results": {video: [scores]}, "class": [names]}')
    names = [str(c) for c in data["class"]]
    position = {name: i for i, name in enumerate(names)}
    missing = [c for c in class_names if c not in position]
    if missing:
        raise InputError(p, f"no scores for classes {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    order = np.asarray([position[c] for c in class_names], dtype=np.int64)
    out = {}
    for vid, scores in data["results"].items():
        arr = np.asarray(scores, dtype=np.float64).reshape(-1) if isinstance(scores, list) else None
        if arr is None or arr.shape != (len(names),) or not np.all(np.isfinite(arr)):
            raise InputError(p, f"video {vid!r}: expected {len(names)} finite class scores")
        out[str(vid)] = arr[order]
    return out


# --------------------------------------------------------------------------- files
def detections_to_json(results: Mapping[str, Detections], class_names: Sequence[str],
                       durations: Mapping[str, float], settings: Mapping[str, Any] | None = None,
                       version: str = "tadkit") -> dict[str, Any]:
    """Official ActivityNet detection JSON.

    ``{"version", "results": {video: [{"label", "score", "segment"}]},
    "external_data"}`` with label names and segments in seconds clipped to
    ``[0, duration]`` (rounded to ms; a segment with nothing left is dropped); ``settings`` (the post-processing that shaped the
    scores: σ, top-k, fusion k ...) are recorded under ``external_data``.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for vid, det in results.items():
        det = det.sorted()
        seg = np.round(np.clip(det.segments, 0.0, float(durations[vid])), 3)
        keep = seg[:, 1] > seg[:, 0]  # nothing left inside the video: not a detection
        out[vid] = [{"label": class_names[int(l)], "score": round(float(s), 6), "segment": [float(a), float(b)]}
                    for (a, b), s, l in zip(seg[keep], det.scores[keep], det.labels[keep])]
    return {"version": version, "results": out,
            "external_data": {"used": False, "details": "tadkit", "postprocess": dict(settings or {})}}


def proposals_to_json(results: Mapping[str, Detections], durations: Mapping[str, float],
                      settings: Mapping[str, Any] | None = None, version: str = "tadkit") -> dict[str, Any]:
    """Official ActivityNet *proposal* JSON: ``{"results": {video: [{"score", "segment"}]}}``.

    Like :func:`detections_to_json` without labels (what ``tadkit evaluate
    --task proposal`` reads for AR@AN); the labels of a class head's candidates are ignored.
    """
    unlabelled = {vid: Detections(det.segments, det.scores, np.zeros(len(det.scores), np.int64))
                  for vid, det in results.items()}
    doc = detections_to_json(unlabelled, ["proposal"], durations, settings, version)
    for entries in doc["results"].values():
        for e in entries:
            del e["label"]
    return doc


def save_candidates(path: str | os.PathLike, candidates: Mapping[str, Detections],
                    durations: Mapping[str, float], class_names: Sequence[str],
                    meta: Mapping[str, Any] | None = None) -> None:
    """Write raw (pre-NMS) candidates in seconds, so post-processing can be re-run.

    The file is an uncompressed ``.npz`` (format :data:`CANDIDATES_NPZ`:
    ``videos [V]``, ``durations [V]``, ``offsets [V+1]`` — video ``i``'s
    candidates are rows ``offsets[i]:offsets[i+1]`` of ``segments [N, 2]``
    float64 seconds, ``scores [N]`` float32 (what the heads compute, so
    lossless), ``labels [N]`` int32 — plus ``classes`` and ``meta`` JSON),
    unless ``path`` ends in ``.json``: then the older, larger and slower JSON
    format (:data:`CANDIDATES_FORMAT`). Written atomically.
    """
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    if p.suffix.lower() == ".json":
        videos = {vid: {"duration": float(durations[vid]), "segments": det.segments.tolist(),
                        "scores": det.scores.tolist(), "labels": det.labels.tolist()}
                  for vid, det in candidates.items()}
        doc = {"format": CANDIDATES_FORMAT, "class": list(class_names), "meta": dict(meta or {}),
               "videos": videos}
        tmp.write_text(json.dumps(doc))
    else:
        vids = list(candidates)
        dets = [candidates[v] for v in vids]
        offsets = np.concatenate([[0], np.cumsum([len(d) for d in dets])]).astype(np.int64)
        with open(tmp, "wb") as fh:
            np.savez(fh, format=np.array(CANDIDATES_NPZ), videos=np.array(vids, dtype=str),
                     durations=np.array([float(durations[v]) for v in vids], dtype=np.float64),
                     offsets=offsets,
                     segments=np.concatenate([d.segments for d in dets]) if dets else np.zeros((0, 2)),
                     scores=(np.concatenate([d.scores for d in dets]) if dets else np.zeros(0)).astype(np.float32),
                     labels=(np.concatenate([d.labels for d in dets]) if dets else np.zeros(0)).astype(np.int32),
                     classes=np.array(list(class_names), dtype=str), meta=np.array(json.dumps(dict(meta or {}))))
    os.replace(tmp, p)


def load_candidates(path: str | os.PathLike) -> tuple[dict[str, Detections], dict[str, float], list[str], dict]:
    """Read :func:`save_candidates` output (``.npz`` or the older JSON): ``(candidates, durations, class names, meta)``."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            binary = fh.read(4) == b"PK\x03\x04"
    except OSError as exc:
        raise InputError(p, f"cannot read ({exc.strerror or exc})") from None
    if binary:
        return _load_candidates_npz(p)
    doc = read_json(p)
    if not isinstance(doc, dict) or doc.get("format") != CANDIDATES_FORMAT:
        raise InputError(p, f"not a tadkit candidates file (expected format {CANDIDATES_FORMAT!r})")
    cands, durations = {}, {}
    try:
        for vid, v in doc["videos"].items():
            cands[vid] = Detections(np.asarray(v["segments"], dtype=np.float64).reshape(-1, 2),
                                    v["scores"], v["labels"])
            durations[vid] = float(v["duration"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(p, f"malformed candidates entry ({exc})") from None
    return cands, durations, list(doc["class"]), dict(doc.get("meta", {}))


def _load_candidates_npz(p: Path) -> tuple[dict[str, Detections], dict[str, float], list[str], dict]:
    try:
        with np.load(p, allow_pickle=False) as z:
            if str(z["format"]) != CANDIDATES_NPZ:
                raise ValueError(f"format {str(z['format'])!r}")
            vids = [str(v) for v in z["videos"]]
            off, seg, sc, lab = z["offsets"], z["segments"], z["scores"].astype(np.float64), z["labels"]
            cands = {v: Detections(seg[off[i]:off[i + 1]], sc[off[i]:off[i + 1]], lab[off[i]:off[i + 1]])
                     for i, v in enumerate(vids)}
            durations = dict(zip(vids, z["durations"].astype(float).tolist()))
            return cands, durations, [str(c) for c in z["classes"]], json.loads(str(z["meta"]))
    except (OSError, KeyError, ValueError, IndexError) as exc:
        raise InputError(p, f"not a tadkit candidates file ({' '.join(str(exc).split())[:200]})") from None
