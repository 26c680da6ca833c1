"""Inference: runs (one, or an ensemble) -> candidates -> post-processing -> official JSON.

:func:`infer` reads one or more run directories, refuses features whose
provenance differs from what each run was trained on, decodes every sample,
maps grid units to seconds with each sample's
:class:`~tadkit.timeline.TimeAxis`, merges sliding windows, post-processes and
writes the official detection JSON and/or the official proposal JSON
(optionally the raw candidates, which :func:`postprocess_file` re-processes
without the model).

Ensembles (``runs`` with several entries, ``weights`` per run):

``mean``
    The runs' raw outputs on each batch are averaged by the first run's head
    (:meth:`~tadkit.detect.heads.base.DetectionHead.average_outputs`) and
    decoded once: the HACS-2020 style ensemble. Needs the same head, classes
    and sample grid (data mode, length, windows); streams, checkpoints, seeds
    and widths may differ.
``union``
    Each run decodes on its own; the candidates of all runs (scores times
    ``weight / max(weights)``) are pooled per video before post-processing,
    whose NMS merges what several runs found: late fusion of runs trained on
    different streams or with different heads.
``auto``
    ``mean`` when the runs allow it, else ``union``.

Class-agnostic (proposal) heads give proposals; detections then come from
video-level class scores (``classifier`` file, ``classifier_runs``, or
``postprocess.fusion_scores``), top-k classes per video. A chained run (trained
``--from-run``) first runs its source run(s) on the same videos.

Under ``torchrun`` the videos are split over the processes and rank 0 writes
one merged output.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from tadkit.data.sources import FeatureSource, Normalization
from tadkit.detect.config import DetectConfig, PostprocessConfig
from tadkit.detect.heads import DetectionHead, InputInfo, build_head
from tadkit.detect.inputs import Failed, Guarded, collate_fn, forward, input_info, make_dataset, make_source, open_stores
from tadkit.detect.postprocess import (Detections, detections_to_json, fuse_classifier, load_candidates,
                                       load_classifier_scores, merge_windows, postprocess_video,
                                       proposals_to_json, save_candidates)
from tadkit.detect.runs import (NORM_FILE, DistContext, autocast, checkpoint_path, inference_weights,
                                load_checkpoint, load_run, load_weights, run_features, run_provenances,
                                write_json)
from tadkit.errors import ConfigError, InputError, ProvenanceError
from tadkit.progress import track

FUSE_MODES = ("auto", "mean", "union")


# --------------------------------------------------------------------------- public API
def infer(run: str | os.PathLike | Sequence[str | os.PathLike], features: Any = None,
          out: str | os.PathLike | None = None, subset: str | None = None,
          annotations: str | os.PathLike | None = None, checkpoint: str = "last",
          raw: str | os.PathLike | None = None, postprocess: PostprocessConfig | None = None,
          device: str = "auto", echo: Callable[[str], None] | None = print, *,
          fuse: str = "auto", weights: Sequence[float] | None = None,
          proposals: str | os.PathLike | None = None, classifier: str | os.PathLike | None = None,
          classifier_runs: Sequence[str | os.PathLike] = (), batch_size: int | None = None,
          videos: Sequence[str] | None = None,
          from_run: Sequence[str | os.PathLike] | None = None,
          allow_provenance_mismatch: bool = False) -> dict[str, Any]:
    """Detect actions (or propose segments) in every video of ``subset`` (all videos in the store if None).

    ``run``: one run directory or several (an ensemble, fused by ``fuse`` with
    ``weights``). ``features``: store path(s) (default: the first run's).
    Writes detections to ``out``, proposals to ``proposals``, raw candidates to
    ``raw`` (any of them; at least one). ``annotations`` defaults to the first
    run's training annotations (needed for ``subset`` and durations).
    ``batch_size``: samples per forward (default ``data.infer_batch_size``);
    ``videos`` restricts the videos; ``from_run`` replaces a chained run's
    recorded source run(s). Features made differently from a run's training
    features (see ``Provenance.mismatches``) are refused unless
    ``allow_provenance_mismatch``. Returns a summary (what was written and the whole
    time, post-processing and writing included).
    """
    from tadkit.data.annotations import load_annotations

    t0 = time.perf_counter()
    runs = [Path(run)] if isinstance(run, (str, os.PathLike)) else [Path(r) for r in run]
    if not runs:
        raise ConfigError("no run to infer with (--run)")
    if out is None and proposals is None and raw is None:
        raise ConfigError("nothing to write: pass --out, --proposals or --raw")
    if fuse not in FUSE_MODES:
        raise ConfigError(f"unknown --fuse {fuse!r}; choose one of {', '.join(FUSE_MODES)}")
    weights = _weights(weights, len(runs))
    ctx = DistContext.from_env(device)
    try:
        members = [load_member(r, features, checkpoint, ctx.device, w, allow_mismatch=allow_provenance_mismatch)
                   for r, w in zip(runs, weights)]
        first = members[0]
        pp = postprocess or first.cfg.postprocess
        classes = list(first.meta["classes"])
        for m in members[1:]:
            if list(m.meta["classes"]) != classes:
                raise ConfigError(f"{m.path}: its classes differ from {first.path}'s; runs of an ensemble "
                                  "must share the class list")
        ann = None
        ann_path = annotations if annotations is not None else first.meta.get("annotations")
        if subset is not None:
            if ann_path is None:
                raise ConfigError("--subset needs annotations: pass --annotations")
            ann = load_annotations(ann_path).subset(subset)
        elif annotations is not None:
            ann = load_annotations(annotations)
        ids = _video_list(first.source, ann, videos, echo if ctx.is_main else None)
        mine = ids[ctx.rank::ctx.world_size]
        if from_run and all(m.chained is None for m in members):
            raise ConfigError("--from-run replaces the source run of a chained run (e.g. a refine network), but "
                              f"none of the runs reads proposals ({', '.join(str(m.path) for m in members)})")
        sources: dict[str, dict[str, np.ndarray]] = {}  # runs chained on the same source share its proposals
        for m in members:
            if m.chained is not None:
                key = repr((from_run or [r["path"] for r in m.chained["runs"]], m.chained.get("topk")))
                if key not in sources:
                    sources[key] = chained_proposals(m, features, ann, mine, ctx.device, from_run)
                m.proposals = sources[key]
        mode = fuse
        if mode == "auto":
            mode = "mean" if can_average(members) is None else "union"
        elif mode == "mean" and len(members) > 1 and can_average(members) is not None:
            raise ConfigError(f"--fuse mean: {can_average(members)}; use --fuse union")
        try:
            pred = predict(members, ann, mine, pp, mode=mode, raw=raw is not None,
                           batch_size=batch_size, echo=echo if ctx.is_main else None)
        except SamplesDiffer as exc:
            if fuse != "auto" or ctx.world_size > 1:  # processes must agree: no per-shard fallback
                raise
            if echo and ctx.is_main:
                echo(f"note: {exc}; pooling the runs' detections instead (--fuse union)")
            mode = "union"
            pred = predict(members, ann, mine, pp, mode=mode, raw=raw is not None,
                           batch_size=batch_size, echo=echo if ctx.is_main else None)
        gathered = ctx.gather(pred)
        if not ctx.is_main:
            return {"rank": ctx.rank, "videos": len(pred.candidates)}
        pred = Predicted.merge(gathered)
        agnostic = any(m.head.class_agnostic for m in members)
        written: dict[str, Any] = {}
        meta = {"runs": [str(m.path) for m in members], "checkpoint": checkpoint, "fuse": mode,
                "weights": list(weights), "class_agnostic": agnostic}
        if raw is not None:
            save_candidates(raw, pred.raw, pred.durations, classes, meta)
            written["raw"] = str(raw)
        props = None
        if proposals is not None:
            props = {vid: postprocess_video(det, _agnostic(pp)) for vid, det in pred.candidates.items()}
            doc = proposals_to_json(props, pred.durations, settings=dataclasses.asdict(pp))
            write_json(Path(proposals), doc)
            written["proposals"] = sum(len(v) for v in doc["results"].values())
        if out is not None:
            scores = video_class_scores(pp, classes, list(pred.candidates), classifier, classifier_runs,
                                        first.source, required=agnostic)
            results = apply_postprocess(pred.candidates, pp, classes, class_scores=scores, proposals=props,
                                        scores_file=classifier)
            settings = dict(dataclasses.asdict(pp), **({"classifier": str(classifier)} if classifier else {}),
                            **({"classifier_runs": [str(r) for r in classifier_runs]} if classifier_runs else {}))
            doc = detections_to_json(results, classes, pred.durations, settings=settings)
            write_json(Path(out), doc)
            written["detections"] = sum(len(v) for v in doc["results"].values())
        elapsed = time.perf_counter() - t0
        n = len(pred.candidates)
        summary = {"videos": n, "detections": written.get("detections", 0), "proposals": written.get("proposals", 0),
                   "seconds": round(elapsed, 3), "videos_per_second": round(n / max(elapsed, 1e-9), 2),
                   "failed": pred.failed, "fuse": mode if len(members) > 1 else None, "rank": 0}
        if echo:
            what = [f"{summary['detections']} detections to {out}"] if out is not None else []
            what += [f"{summary['proposals']} proposals to {proposals}"] if proposals is not None else []
            what += [f"raw candidates to {raw}"] if raw is not None else []
            echo(f"wrote {' and '.join(what)} for {n} videos ({summary['videos_per_second']} videos/s, "
                 f"{elapsed:.1f} s in all)")
            if pred.failed:
                echo(f"warning: {len(pred.failed)} videos failed and are not in the predictions:")
                for vid, reason in list(pred.failed.items())[:10]:
                    echo(f"  {vid}: {reason}")
        return summary
    finally:
        ctx.close()


def apply_postprocess(candidates: Mapping[str, Detections], pp: PostprocessConfig, classes: Sequence[str],
                      class_scores: Mapping[str, np.ndarray] | None = None,
                      proposals: Mapping[str, Detections] | None = None,
                      scores_file: str | os.PathLike | None = None) -> dict[str, Detections]:
    """Post-process every video; with class scores, fuse them (classifier fusion).

    ``class_scores`` (``video -> [C]``), else ``pp.fusion_scores`` (a
    CUHK-format file): the candidates are treated as class-agnostic
    proposals — the configured NMS with ``class_agnostic=True`` (or the given
    ``proposals``, already so post-processed), then each proposal is paired
    with the ``fusion_topk`` best classes of its video (score ``sqrt(cls ·
    proposal)``). Videos without scores are an error naming ``scores_file``
    (the file ``class_scores`` came from) or ``pp.fusion_scores``.
    """
    if class_scores is None and pp.fusion_scores is not None:
        class_scores, scores_file = load_classifier_scores(pp.fusion_scores, classes), pp.fusion_scores
    if class_scores is None:
        return {vid: postprocess_video(det, pp) for vid, det in candidates.items()}
    missing = [vid for vid in candidates if vid not in class_scores]
    if missing:
        raise InputError(scores_file, f"no class scores for {len(missing)} videos (e.g. {missing[0]!r})")
    out = {}
    for vid, det in candidates.items():
        props = proposals[vid] if proposals is not None else postprocess_video(det, _agnostic(pp))
        out[vid] = fuse_classifier(props, class_scores[vid], pp.fusion_topk).topk(pp.max_per_video)
    return out


def postprocess_file(candidates: str | os.PathLike, out: str | os.PathLike,
                     pp: PostprocessConfig) -> dict[str, Any]:
    """Re-run post-processing on saved raw candidates (no model needed).

    Candidates of a class-agnostic (proposal) head need ``pp.fusion_scores``
    (video-level class scores) to become detections.
    """
    cands, durations, classes, meta = load_candidates(candidates)
    if meta.get("class_agnostic") and pp.fusion_scores is None:
        raise InputError(candidates, "class-agnostic proposals (from a proposal head): detections need video-level "
                         "class scores, pass --set fusion_scores=FILE")
    results = apply_postprocess(cands, pp, classes)
    doc = detections_to_json(results, classes, durations, settings=dataclasses.asdict(pp))
    write_json(Path(out), doc)
    return {"videos": len(results), "detections": sum(len(v) for v in doc["results"].values())}


# --------------------------------------------------------------------------- members and prediction
@dataclass
class Member:
    """One run, loaded for inference: config, run.json, head (eval mode, inference weights), source."""

    path: Path
    cfg: DetectConfig
    meta: dict[str, Any]
    head: DetectionHead
    source: FeatureSource
    weight: float = 1.0
    proposals: dict[str, np.ndarray] | None = None

    @property
    def chained(self) -> dict[str, Any] | None:
        return self.meta.get("from_run")


def load_member(run: Path, features: Any, checkpoint: str, device: torch.device, weight: float = 1.0, *,
                allow_mismatch: bool = False) -> Member:
    """Load run ``run`` over ``features`` (default: the run's own stores), refusing other provenance
    (only warning with ``allow_mismatch``)."""
    cfg, meta = load_run(run)
    if meta.get("kind", "detection") != "detection":
        raise InputError(run, f"a {meta.get('kind')} run, not a detection run")
    stores = open_stores(features if features else run_features(meta), expect=run_provenances(meta),
                         allow_mismatch=allow_mismatch)
    norm = Normalization.load(run / NORM_FILE) if meta.get("normalization") else None
    source = make_source(cfg, stores, norm)
    info = InputInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["input_info"].items()}) \
        if "input_info" in meta else input_info(source)
    head = build_head(cfg.head, getattr(cfg, cfg.head, None), int(meta["feature_dim"]), len(meta["classes"]),
                      inputs=info)
    path = checkpoint_path(run, checkpoint)
    load_weights(head, inference_weights(load_checkpoint(path)), path)
    head.to(device).eval()
    return Member(run, cfg, meta, head, source, weight)


@dataclass
class Predicted:
    """Candidates in seconds per video (``raw``: under the looser cap), durations, failures."""

    candidates: dict[str, Detections] = field(default_factory=dict)
    raw: dict[str, Detections] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @classmethod
    def merge(cls, parts: Sequence["Predicted"]) -> "Predicted":
        out = cls()
        for p in parts:
            out.candidates.update(p.candidates)
            out.raw.update(p.raw)
            out.durations.update(p.durations)
            out.failed.update(p.failed)
        return out


def predict(members: Sequence[Member], annotations: Any, videos: Sequence[str], pp: PostprocessConfig, *,
            mode: str = "mean", raw: bool = False, batch_size: int | None = None,
            echo: Callable[[str], None] | None = None) -> Predicted:
    """Candidates of ``videos`` from one run or an ensemble (``mode`` ``mean`` or ``union``).

    Per sample the head decodes at most ``pp.pre_nms_topk`` candidates above
    ``pp.min_score`` (with ``raw``: ``raw_topk`` above ``raw_min_score`` too,
    kept in ``Predicted.raw``); windows are merged per video; every video
    appears (possibly with no candidate) unless it failed.
    """
    if mode == "union" and len(members) > 1:
        top = max(m.weight for m in members)
        parts = [predict([m], annotations, videos, pp, raw=raw, batch_size=batch_size, echo=echo)
                 for m in members]
        out = Predicted(durations={k: v for p in parts for k, v in p.durations.items()},
                        failed={k: v for p in parts for k, v in p.failed.items()})
        for name in ("candidates", "raw"):
            pooled = getattr(out, name)
            for p, m in zip(parts, members):
                for vid, det in getattr(p, name).items():
                    if vid not in out.failed:
                        pooled.setdefault(vid, []).append(Detections(det.segments, det.scores * (m.weight / top),
                                                                     det.labels))
            setattr(out, name, {vid: Detections.concat(d) for vid, d in pooled.items()})
        return out
    first = members[0]
    datasets = [make_dataset(m.cfg, m.source, annotations, training=False, head=m.head, proposals=m.proposals,
                             videos=videos) for m in members]
    for m, d in zip(members[1:], datasets[1:]):
        mine, theirs = _sample_keys(d), _sample_keys(datasets[0])
        if mine != theirs:
            only = sorted(_videos(mine) ^ _videos(theirs))
            why = (f"{len(only)} videos (e.g. {only[0]}) are samples of only one of it and {first.path}"
                   if only else f"its samples (windows) differ from {first.path}'s")
            raise SamplesDiffer(f"{m.path}: {why}; raw outputs cannot be averaged (use --fuse union)")
    bs = max(1, int(batch_size or first.cfg.data.infer_batch_size))
    loader = DataLoader(_Zipped(datasets), batch_size=bs, shuffle=False, num_workers=first.cfg.data.num_workers,
                        collate_fn=_ZipCollate([collate_fn(m.cfg, m.head) for m in members]))
    topk, min_score = pp.pre_nms_topk, pp.min_score
    if raw:
        topk = max(topk, pp.raw_topk) if topk > 0 and pp.raw_topk > 0 else 0
        min_score = min(min_score, pp.raw_min_score)
    out = Predicted(failed={vid: why for d in datasets for vid, why in d.report.unreadable.items()})
    strict_parts, raw_parts = [], []
    device = next(first.head.parameters()).device
    amp = first.cfg.train.amp
    with torch.no_grad():
        for batches, bad in track(loader, len(loader), "infer", "batch", enabled=None if echo else False):
            out.failed.update(bad)
            if batches is None:
                continue
            on_dev = [b.to(device) for b in batches]
            with autocast(device, amp):
                outputs = [forward(m.head, m.head, b) for m, b in zip(members, on_dev)]
            merged = outputs[0] if len(outputs) == 1 else _average(members, outputs)
            b0 = batches[0]
            for i, det in enumerate(first.head.decode(merged, on_dev[0].mask, topk=topk, min_score=min_score)):
                vid = b0.video_ids[i]
                out.durations[vid] = float(b0.durations[i])
                sec = Detections(b0.to_seconds(i, det.segments), det.scores, det.labels)
                if raw:
                    raw_parts.append((vid, sec))
                    sec = _strict(sec, pp)
                strict_parts.append((vid, sec))
    for name, parts in (("candidates", strict_parts), ("raw", raw_parts)):
        merged_parts = {vid: det for vid, det in merge_windows(parts).items() if vid not in out.failed}
        if name == "candidates" or raw:
            for vid in datasets[0].video_ids:  # videos without any candidate still appear
                if vid not in out.failed:
                    merged_parts.setdefault(vid, Detections.empty())
        setattr(out, name, merged_parts)
    return out


class SamplesDiffer(ConfigError):
    """The runs of a ``--fuse mean`` ensemble cut their stores into different samples."""


def can_average(members: Sequence[Member]) -> str | None:
    """None when the runs' raw outputs can be averaged, else why not."""
    first = members[0]
    for m in members[1:]:
        if m.cfg.head != first.cfg.head:
            return f"{m.path} has head {m.cfg.head!r}, {first.path} has {first.cfg.head!r}"
        a, b = first.cfg.data, m.cfg.data
        # full-length samples ignore data.length at inference; windows and resized videos do not
        keys = ("mode", "infer_overlap", "infer_stride") + (("length",) if a.mode != "full" else ())
        diff = [k for k in keys if getattr(a, k) != getattr(b, k)]
        if diff:
            return f"{m.path} samples videos differently ({', '.join(f'data.{k}' for k in diff)})"
        if (m.chained is None) != (first.chained is None):
            return "only some of the runs are chained"
        if m.chained is not None and [r.get("run_id") for r in m.chained["runs"]] != \
                [r.get("run_id") for r in first.chained["runs"]]:
            return f"{m.path} was chained on another source run than {first.path}"
    return None


def video_class_scores(pp: PostprocessConfig, classes: Sequence[str], video_ids: Sequence[str],
                       classifier: Any, classifier_runs: Sequence[Any], source: FeatureSource,
                       required: bool) -> dict[str, np.ndarray] | None:
    """Video-level class scores for classifier fusion (a file, classifier runs, or ``pp.fusion_scores``)."""
    from tadkit.detect.classifier import classifier_run_scores

    if classifier is not None and classifier_runs:
        raise ConfigError("pass --classifier FILE or --classifier-run DIR, not both")
    if classifier is not None:
        return load_classifier_scores(classifier, classes)
    if classifier_runs:
        scores, failed = classifier_run_scores(classifier_runs, source.store, video_ids, classes)
        if failed:
            vid, reason = next(iter(failed.items()))
            raise InputError(source.root, f"cannot score {len(failed)} videos for classifier fusion ({vid}: {reason})")
        return scores
    if pp.fusion_scores is None and required:
        raise ConfigError("a class-agnostic (proposal) head needs video-level class scores for detections: pass "
                          "--classifier FILE or --classifier-run DIR (or write only --proposals)")
    return None


def chained_proposals(member: Member, features: Any, annotations: Any, videos: Sequence[str],
                      device: torch.device, override: Sequence[Any] | None = None) -> dict[str, np.ndarray]:
    """A chained run's source proposals for ``videos`` (running its source run(s); ``override`` replaces them)."""
    info = member.chained
    recorded = [Path(r["path"]) for r in info["runs"]]
    sources = [Path(r) for r in override] if override else recorded
    if not override:
        for r, rec in zip(sources, info["runs"]):
            _, meta = load_run(r)
            if meta.get("run_id") != rec.get("run_id"):
                raise InputError(r, f"this is not the run {member.path} was trained on (run id "
                                 f"{meta.get('run_id')} vs {rec.get('run_id')}); pass --from-run to use it anyway")
    return source_proposals(sources, features, annotations, videos, int(info.get("topk", 100)), device,
                            checkpoint=info.get("checkpoint", "last"))


def source_proposals(runs: Sequence[Path], features: Any, annotations: Any, videos: Sequence[str], topk: int,
                     device: torch.device, checkpoint: str = "last") -> dict[str, np.ndarray]:
    """Class-agnostic proposals ``video -> [N, 3]`` (``start, end, score`` seconds) of source run(s).

    The source runs read ``features`` when their provenance matches, else
    their own recorded stores; their post-processing is applied class-agnostic
    and the best ``topk`` kept per video.
    """
    members = []
    for r in runs:
        try:
            members.append(load_member(Path(r), features, checkpoint, device))
        except ProvenanceError:
            if not features:
                raise
            members.append(load_member(Path(r), None, checkpoint, device))
    for m in members:
        if m.chained is not None:
            raise ConfigError(f"{m.path}: this {m.cfg.head} run reads proposals itself, so it cannot be a source "
                              f"run; pass --from-run with the run(s) it was trained on "
                              f"({', '.join(r['path'] for r in m.chained['runs'])}) or another proposal run")
    mode = "mean" if can_average(members) is None else "union"
    pp = _agnostic(dataclasses.replace(members[0].cfg.postprocess, max_per_video=topk))
    pred = predict(members, annotations, videos, pp, mode=mode)
    out = {}
    for vid, det in pred.candidates.items():
        props = postprocess_video(det, pp)
        out[vid] = np.concatenate([props.segments, props.scores[:, None]], axis=1)
    return out


# --------------------------------------------------------------------------- helpers
class _Zipped(torch.utils.data.Dataset):
    """Item ``i`` of every dataset (the runs of an ensemble), or a failure record."""

    def __init__(self, datasets: Sequence[Any]):
        self.parts = [Guarded(d) for d in datasets]

    def __len__(self) -> int:
        return len(self.parts[0])

    def __getitem__(self, index: int) -> Any:
        items = [p[index] for p in self.parts]
        bad = next((x for x in items if isinstance(x, Failed)), None)
        return bad if bad is not None else items


@dataclass(frozen=True)
class _ZipCollate:
    """``(one batch per run, or None, {video: reason})``."""

    inner: Sequence[Any]

    def __call__(self, items: Sequence[Any]) -> tuple[list[Any] | None, dict[str, str]]:
        good = [x for x in items if not isinstance(x, Failed)]
        bad = {x.video_id: x.reason for x in items if isinstance(x, Failed)}
        if not good:
            return None, bad
        return [c.inner([x[k] for x in good]) for k, c in enumerate(self.inner)], bad


def _average(members: Sequence[Member], outputs: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The first run's head averages the runs' outputs; outputs of other sizes (heads configured with
    other anchors, levels or strides) are a ``ConfigError``, not a traceback."""
    try:
        return members[0].head.average_outputs(outputs, [m.weight for m in members])
    except ValueError as exc:
        raise ConfigError(f"{', '.join(str(m.path) for m in members)}: raw outputs cannot be averaged "
                          f"({exc}); use --fuse union") from None


def _videos(keys: Sequence[Any]) -> set[str]:
    """The videos of :func:`_sample_keys`' samples."""
    return {k[0] if isinstance(k, tuple) else k for k in keys}


def _sample_keys(dataset: Any) -> list[Any]:
    windows = getattr(dataset, "windows", None)
    return [tuple(w) for w in windows] if windows is not None else list(dataset.video_ids)


def _strict(det: Detections, pp: PostprocessConfig) -> Detections:
    """What the head would have decoded at ``pp.pre_nms_topk`` / ``pp.min_score`` from a looser decode."""
    det = det.topk(pp.pre_nms_topk)
    return det.select(det.scores > pp.min_score)


def _agnostic(pp: PostprocessConfig) -> PostprocessConfig:
    return dataclasses.replace(pp, class_agnostic=True)


def _weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None or len(weights) == 0:
        return [1.0] * n
    if len(weights) != n:
        raise ConfigError(f"{len(weights)} --weights for {n} runs; give one weight per --run")
    w = [float(x) for x in weights]
    if any(not x >= 0 for x in w) or not sum(w) > 0:
        raise ConfigError(f"--weights must be non-negative and not all zero, got {w}")
    return w


def _video_list(source: FeatureSource, ann: Any, videos: Sequence[str] | None,
                echo: Callable[[str], None] | None) -> list[str]:
    """Videos to infer: the store's (those annotated in ``ann`` when given), restricted to ``videos``."""
    have = set(source.video_ids())
    if ann is not None:
        wanted = set(ann.video_ids())
        missing = sorted(wanted - have)
        if missing and echo:
            echo(f"warning: {len(missing)} of the {len(wanted)} annotated videos have no features in "
                 f"{source.root} and are skipped (e.g. {', '.join(missing[:3])})")
        have &= wanted
    if videos is not None:
        have &= set(videos)
    if not have:
        raise InputError(source.root, "no video to infer (none of the requested videos has features here)")
    return sorted(have)
