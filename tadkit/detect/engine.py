"""Training and inference shared by every detection head.

:func:`train` turns a feature store and annotations into a *run directory*::

    runs/mltpn/
      config.yaml          the resolved DetectConfig
      run.json             classes, feature dim, features' provenance, data paths
      log.jsonl            one JSON object per logged step / epoch
      tb/                  the same scalars for TensorBoard (when it is installed)
      checkpoints/
        epoch_0005.pt      model + optimizer + scheduler + scaler + EMA + epoch + RNG
        last.pt            the latest of them (what --resume continues from)
        best.pt            lowest held-out loss (only with data.holdout_fraction > 0)

:func:`infer` reads a run, refuses features whose provenance differs from the
training features, decodes every sample, maps grid units to seconds with each
sample's :class:`~tadkit.timeline.TimeAxis`, merges sliding windows, post-
processes and writes the official detection JSON (optionally the raw
candidates, which :func:`postprocess_file` re-processes without the model).

Reproducibility: every epoch reseeds all RNGs and shuffles from ``(seed,
epoch, rank)``, and checkpoints carry model, optimizer, scheduler, AMP scaler,
EMA and RNG states, so a run resumed from an epoch checkpoint continues
bit-for-bit as if it had never stopped (same device type, process count and
number of intra-op threads, which fix the order of float reductions).

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in
DistributedDataParallel (NCCL on GPU, gloo on CPU), ``train.batch_size`` is
the global batch split over the processes, and only rank 0 writes.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from tadkit.checkpoints import compare_weights, few, read_checkpoint
from tadkit.config import save_config, to_dict
from tadkit.detect.config import DetectConfig, PostprocessConfig
from tadkit.detect.heads import DetectionHead, build_head
from tadkit.detect.postprocess import (Detections, detections_to_json, fuse_classifier, load_candidates,
                                       load_classifier_scores, merge_windows, postprocess_video,
                                       save_candidates)
from tadkit.errors import ConfigError, InputError, TadkitError
from tadkit.files import read_json
from tadkit.progress import track

CHECKPOINT_DIR = "checkpoints"
PROVENANCE_HINT = "extract them with the training settings, or pass --allow-provenance-mismatch to use them anyway"
RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
LOG_FILE = "log.jsonl"


# --------------------------------------------------------------------------- public API
def train(cfg: DetectConfig, features: str | os.PathLike, annotations: str | os.PathLike,
          out: str | os.PathLike, resume: bool = False,
          echo: Callable[[str], None] | None = print, allow_provenance_mismatch: bool = False) -> dict[str, Any]:
    """Train ``cfg.head`` on the ``cfg.data.train_subset`` videos; returns a summary.

    ``resume`` continues from ``out/checkpoints/last.pt`` (the run's saved
    config is used; ``cfg`` may only extend ``train.epochs``). Features that
    differ from the run's (see ``Provenance.mismatches``) are refused unless
    ``allow_provenance_mismatch``.
    """
    from tadkit.data.annotations import load_annotations
    from tadkit.data.features import FeatureStore

    from tadkit.data.features import Provenance

    out = Path(out)
    ctx = _DistContext.from_env(cfg.train.device)
    try:
        expect = None
        if resume:
            cfg, meta = _resume_config(out, cfg)
            expect = Provenance.from_dict(meta["provenance"])
        elif (out / CHECKPOINT_DIR / "last.pt").exists():
            raise InputError(out, "the run directory already holds checkpoints; pass --resume to continue "
                             "it or choose another --out")
        seed_everything(cfg.train.seed + ctx.rank)
        store = FeatureStore.open(features, expect=expect, allow_mismatch=allow_provenance_mismatch,
                                  hint=PROVENANCE_HINT)
        ann = load_annotations(annotations)
        train_ann = ann.subset(cfg.data.train_subset)
        train_ids, holdout_ids = split_holdout(train_ann.video_ids(), cfg.data.holdout_fraction,
                                               cfg.train.seed)
        head = build_head(cfg.head, getattr(cfg, cfg.head, None), store.provenance.feature_dim,
                          len(ann.classes))
        train_set = _dataset(cfg, store, train_ann.select(train_ids), training=True, grid=head.uses_grid)
        holdout_set = (_dataset(cfg, store, train_ann.select(holdout_ids), training=True, grid=head.uses_grid)
                       if holdout_ids else None)
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out / CONFIG_FILE)
            _write_json(out / RUN_FILE, {
                "head": cfg.head, "classes": list(ann.classes),
                "feature_dim": store.provenance.feature_dim, "provenance": store.provenance.to_dict(),
                "features": str(Path(features).resolve()), "annotations": str(Path(annotations).resolve()),
                "train_videos": len(train_ids), "holdout_videos": holdout_ids,
                "world_size": ctx.world_size}, indent=1)
        trainer = Trainer(cfg, head, ctx, out, echo=echo if ctx.is_main else None)
        if resume:
            trainer.load(out / CHECKPOINT_DIR / "last.pt")
        return trainer.fit(train_set, holdout_set)
    finally:
        ctx.close()


def infer(run: str | os.PathLike, features: str | os.PathLike, out: str | os.PathLike,
          subset: str | None = None, annotations: str | os.PathLike | None = None,
          checkpoint: str = "last", raw: str | os.PathLike | None = None,
          postprocess: PostprocessConfig | None = None, device: str = "auto",
          echo: Callable[[str], None] | None = print, allow_provenance_mismatch: bool = False) -> dict[str, Any]:
    """Detect actions in every video of ``subset`` (all videos in the store if None).

    Writes the official JSON to ``out`` (and raw candidates to ``raw``);
    returns a summary. ``annotations`` defaults to the training annotations
    (needed for ``subset`` and durations).
    """
    from tadkit.data.annotations import load_annotations
    from tadkit.data.features import FeatureStore, Provenance

    run = Path(run)
    cfg, meta = load_run(run)
    pp = postprocess or cfg.postprocess
    store = FeatureStore.open(features, expect=Provenance.from_dict(meta["provenance"]),
                              allow_mismatch=allow_provenance_mismatch, hint=PROVENANCE_HINT)
    ann = None
    ann_path = annotations if annotations is not None else meta.get("annotations")
    if subset is not None:
        if ann_path is None:
            raise ConfigError("--subset needs annotations: pass --annotations")
        ann = load_annotations(ann_path).subset(subset)
    elif annotations is not None:
        ann = load_annotations(annotations)
    dev = _pick_device(device)
    head = build_head(cfg.head, getattr(cfg, cfg.head, None), int(meta["feature_dim"]), len(meta["classes"]))
    ckpt = _checkpoint_path(run, checkpoint)
    state = _load_checkpoint(ckpt)
    _load_weights(head, state["ema"] if state.get("ema") is not None else state["model"], ckpt)
    head.to(dev).eval()
    dataset = _dataset(cfg, store, ann, training=False, grid=head.uses_grid)
    loader = DataLoader(_Guarded(dataset), batch_size=max(1, cfg.train.batch_size), shuffle=False,
                        num_workers=cfg.data.num_workers, collate_fn=_collate_fn(cfg, head))
    t0 = time.perf_counter()
    parts, durations, failed = [], {}, dict(getattr(dataset.report, "unreadable", {}))
    with torch.no_grad():
        for batch, bad in track(loader, len(loader), "infer", "batch", enabled=None if echo else False):
            failed.update(bad)
            if batch is None:
                continue
            b = batch.to(dev)
            with _autocast(dev, cfg.train.amp):
                outputs = _forward(head, b)
            dets = head.decode(outputs, b.mask, topk=pp.pre_nms_topk, min_score=pp.min_score)
            for i, det in enumerate(dets):
                vid = batch.video_ids[i]
                durations[vid] = float(batch.durations[i])
                parts.append((vid, Detections(batch.to_seconds(i, det.segments), det.scores, det.labels)))
    candidates = {vid: det for vid, det in merge_windows(parts).items() if vid not in failed}
    for vid in dataset.video_ids:  # videos without any candidate still appear
        if vid not in failed:
            candidates.setdefault(vid, Detections.empty())
    elapsed = time.perf_counter() - t0
    classes = list(meta["classes"])
    if raw is not None:
        save_candidates(raw, candidates, durations, classes, {"run": str(run), "checkpoint": checkpoint})
    results = apply_postprocess(candidates, pp, classes)
    doc = detections_to_json(results, classes, durations, settings=dataclasses.asdict(pp))
    _write_json(Path(out), doc)
    summary = {"videos": len(results), "detections": sum(len(d) for d in results.values()),
               "seconds": round(elapsed, 3), "videos_per_second": round(len(results) / max(elapsed, 1e-9), 2),
               "failed": failed}
    if echo:
        echo(f"wrote {summary['detections']} detections for {summary['videos']} videos to {out} "
             f"({summary['videos_per_second']} videos/s)")
        if failed:
            echo(f"warning: {len(failed)} videos failed and are not in the predictions:")
            for vid, reason in list(failed.items())[:10]:
                echo(f"  {vid}: {reason}")
    return summary


def apply_postprocess(candidates: Mapping[str, Detections], pp: PostprocessConfig,
                      classes: Sequence[str]) -> dict[str, Detections]:
    """Post-process every video; with ``pp.fusion_scores`` fuse video-level class scores.

    Fusion treats the candidates as class-agnostic proposals: they go through
    the configured NMS with ``class_agnostic=True``, then each proposal is
    paired with the ``fusion_topk`` best classes of its video (score
    ``sqrt(cls · proposal)``). Videos absent from the scores file are an error.
    """
    if pp.fusion_scores is None:
        return {vid: postprocess_video(det, pp) for vid, det in candidates.items()}
    scores = load_classifier_scores(pp.fusion_scores, classes)
    missing = [vid for vid in candidates if vid not in scores]
    if missing:
        raise InputError(pp.fusion_scores, f"no class scores for {len(missing)} videos (e.g. {missing[0]!r})")
    agnostic = dataclasses.replace(pp, class_agnostic=True)
    out = {}
    for vid, det in candidates.items():
        proposals = postprocess_video(det, agnostic)
        out[vid] = fuse_classifier(proposals, scores[vid], pp.fusion_topk).topk(pp.max_per_video)
    return out


def postprocess_file(candidates: str | os.PathLike, out: str | os.PathLike,
                     pp: PostprocessConfig) -> dict[str, Any]:
    """Re-run post-processing on saved raw candidates (no model needed)."""
    cands, durations, classes, _ = load_candidates(candidates)
    results = apply_postprocess(cands, pp, classes)
    _write_json(Path(out), detections_to_json(results, classes, durations, settings=dataclasses.asdict(pp)))
    return {"videos": len(results), "detections": sum(len(d) for d in results.values())}


def load_run(run: str | os.PathLike) -> tuple[DetectConfig, dict[str, Any]]:
    """``(config, run.json contents)`` of a run directory."""
    run = Path(run)
    if not (run / RUN_FILE).is_file() or not (run / CONFIG_FILE).is_file():
        raise InputError(run, f"not a tadkit run directory (no {RUN_FILE} / {CONFIG_FILE})")
    from tadkit.config import load_config

    cfg = load_config(DetectConfig, run / CONFIG_FILE)
    return cfg, read_json(run / RUN_FILE)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def split_holdout(video_ids: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic ``(train, held-out)`` split of sorted ``video_ids``."""
    ids = sorted(video_ids)
    if fraction <= 0 or len(ids) < 2:
        return ids, []
    n = min(len(ids) - 1, max(1, int(round(fraction * len(ids)))))
    order = np.random.default_rng(seed).permutation(len(ids))
    held = sorted(ids[i] for i in order[:n])
    return [v for v in ids if v not in set(held)], held


def lr_factor(cfg: DetectConfig, epoch: float) -> float:
    """Learning-rate multiplier at fractional ``epoch`` (warm-up × schedule)."""
    s = cfg.schedule
    if s.name == "step":
        factor = s.gamma ** sum(1 for m in s.milestones if epoch >= m)
    elif s.name == "cosine":
        span = max(1e-9, cfg.train.epochs - s.warmup_epochs)
        progress = min(1.0, max(0.0, (epoch - s.warmup_epochs) / span))
        factor = s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    else:
        factor = 1.0
    if s.warmup_epochs > 0 and epoch < s.warmup_epochs:
        factor *= epoch / s.warmup_epochs
    return factor


# --------------------------------------------------------------------------- trainer
class Trainer:
    """The training loop of one process (see the module docstring)."""

    def __init__(self, cfg: DetectConfig, head: DetectionHead, ctx: "_DistContext", out: Path,
                 echo: Callable[[str], None] | None = print):
        self.cfg, self.ctx, self.out, self.echo = cfg, ctx, out, echo
        self.head = head.to(ctx.device)
        self.model: torch.nn.Module = self.head
        if ctx.world_size > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.head, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        self.optimizer = build_optimizer(cfg, self.head.parameters())
        self.iters_per_epoch = 1
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: lr_factor(cfg, it / self.iters_per_epoch))
        self.use_amp = cfg.train.amp and ctx.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.ema = ModelEMA(self.head, cfg.train.ema_decay) if cfg.train.ema else None
        self.epoch = 0  # completed epochs
        self.best = math.inf
        self.failed: dict[str, str] = {}
        self._tb = _tensorboard(out) if ctx.is_main else None

    # -- checkpoints ------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"model": self.head.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "ema": None if self.ema is None else self.ema.module.state_dict(),
                "epoch": self.epoch, "best": self.best, "rng": _rng_state(),
                "config": to_dict(self.cfg), "world_size": self.ctx.world_size}

    def load(self, path: Path) -> None:
        if not path.is_file():
            raise InputError(path, "no checkpoint to resume from")
        state = _load_checkpoint(path)
        _load_weights(self.head, state["model"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.epoch, self.best = int(state["epoch"]), float(state.get("best", math.inf))
        _set_rng_state(state["rng"])

    def save(self, name: str) -> Path:
        ckdir = self.out / CHECKPOINT_DIR
        ckdir.mkdir(parents=True, exist_ok=True)
        path = ckdir / name
        tmp = ckdir / f".{name}.tmp"
        torch.save(self.state(), tmp)
        os.replace(tmp, path)
        return path

    # -- loop ---------------------------------------------------------------------
    def fit(self, train_set: Any, holdout_set: Any = None) -> dict[str, Any]:
        cfg, ctx = self.cfg, self.ctx
        per_rank = max(1, cfg.train.batch_size // ctx.world_size)
        collate = _collate_fn(cfg, self.head)
        self.iters_per_epoch = max(1, math.ceil(len(train_set) / (per_rank * ctx.world_size)))
        self._say(f"training {cfg.head}: {len(train_set)} samples, {self.iters_per_epoch} iterations/epoch, "
                  f"{ctx.world_size} process(es) on {ctx.device}, from epoch {self.epoch}")
        epoch_times, last = [], {}
        for epoch in range(self.epoch, cfg.train.epochs):
            t0 = time.perf_counter()
            # every epoch starts from RNG streams fixed by (seed, epoch, rank): a resumed run
            # (any rank) continues exactly as an uninterrupted one
            seed_everything(cfg.train.seed * 1000003 + epoch * 1009 + ctx.rank)
            loader = self._loader(train_set, per_rank, collate, epoch)
            last = self._train_epoch(loader, epoch)
            _check_finite_weights(self.head, epoch)
            self.epoch = epoch + 1
            record = {"event": "epoch", "epoch": self.epoch, "seconds": round(time.perf_counter() - t0, 3),
                      **{k: round(v, 6) for k, v in last.items()}}
            if holdout_set is not None and len(holdout_set):
                record["holdout_loss"] = self._holdout_loss(holdout_set, per_rank, collate)
            epoch_times.append(record["seconds"])
            if ctx.is_main:
                self._write_log(record)
                self._say(" ".join(f"{k}={v}" for k, v in record.items() if k != "event"))
                if self.epoch % max(1, cfg.train.checkpoint_every) == 0 or self.epoch == cfg.train.epochs:
                    self.save(f"epoch_{self.epoch:04d}.pt")
                    shutil.copyfile(self.out / CHECKPOINT_DIR / f"epoch_{self.epoch:04d}.pt",
                                    self.out / CHECKPOINT_DIR / ".last.tmp")
                    os.replace(self.out / CHECKPOINT_DIR / ".last.tmp", self.out / CHECKPOINT_DIR / "last.pt")
                if "holdout_loss" in record and record["holdout_loss"] < self.best:
                    self.best = record["holdout_loss"]
                    self.save("best.pt")
            ctx.barrier()
        return {"epochs": self.epoch, "seconds_per_epoch": float(np.mean(epoch_times)) if epoch_times else 0.0,
                "last": last, "run": str(self.out), "rank": ctx.rank, "failed": dict(self.failed)}

    def _loader(self, dataset: Any, per_rank: int, collate: Any, epoch: int) -> DataLoader:
        gen = torch.Generator().manual_seed(self.cfg.train.seed * 100003 + epoch)
        if self.ctx.world_size > 1:
            sampler = torch.utils.data.distributed.DistributedSampler(
                dataset, num_replicas=self.ctx.world_size, rank=self.ctx.rank, shuffle=True,
                seed=self.cfg.train.seed)
            sampler.set_epoch(epoch)
            return DataLoader(_Guarded(dataset), batch_size=per_rank, sampler=sampler, collate_fn=collate,
                              num_workers=self.cfg.data.num_workers, generator=gen)
        return DataLoader(_Guarded(dataset), batch_size=per_rank, shuffle=True, generator=gen, collate_fn=collate,
                          num_workers=self.cfg.data.num_workers)

    def _train_epoch(self, loader: DataLoader, epoch: int) -> dict[str, float]:
        cfg, dev = self.cfg, self.ctx.device
        self.model.train()
        sums: dict[str, float] = {}
        n = 0
        batches = track(loader, len(loader), f"epoch {epoch + 1}", "batch",
                        enabled=None if self.echo is not None else False, leave=False)
        for it, (batch, bad) in enumerate(batches):
            if bad:
                self._record_failures(bad, epoch)
            if batch is None:
                if self.ctx.world_size > 1:  # every process must take part in every step
                    raise TadkitError(f"a whole batch of unreadable samples under DDP ({next(iter(bad.values()))})")
                continue
            b = batch.to(dev)
            targets = [{"segments": s, "labels": l} for s, l in zip(b.segments, b.labels)]
            with _autocast(dev, self.use_amp):
                outputs = _forward(self.model, b)
            losses = self.head.loss(outputs, b.mask, targets)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise TadkitError(f"training diverged: loss is {float(loss)} at epoch {epoch + 1}, "
                                  f"iteration {it + 1}; lower optim.lr or set train.grad_clip")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.train.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.head.parameters(), cfg.train.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.head)
            n += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            if self.ctx.is_main and cfg.train.log_every > 0 and (it + 1) % cfg.train.log_every == 0:
                self._write_log({"event": "step", "epoch": epoch + 1, "iter": it + 1,
                                 "lr": self.optimizer.param_groups[0]["lr"],
                                 **{k: round(float(v.detach()), 6) for k, v in losses.items()}})
        out = {k: v / max(1, n) for k, v in sums.items()}
        if self.ctx.world_size > 1:  # log the mean over processes
            keys = sorted(out)
            vals = torch.tensor([out[k] for k in keys], dtype=torch.float64,
                                device=dev if dev.type == "cuda" else "cpu")
            dist.all_reduce(vals)
            out = {k: float(v) / self.ctx.world_size for k, v in zip(keys, vals)}
        out["lr"] = self.optimizer.param_groups[0]["lr"]
        return out

    @torch.no_grad()
    def _holdout_loss(self, dataset: Any, per_rank: int, collate: Any) -> float:
        self.head.eval()
        total, n = 0.0, 0
        for batch, bad in DataLoader(_Guarded(dataset), batch_size=per_rank, shuffle=False, collate_fn=collate):
            if bad:
                self._record_failures(bad, self.epoch)
            if batch is None:
                continue
            b = batch.to(self.ctx.device)
            targets = [{"segments": s, "labels": l} for s, l in zip(b.segments, b.labels)]
            total += float(self.head.loss(_forward(self.head, b), b.mask, targets)["loss"]) * len(b)
            n += len(b)
        self.head.train()
        return round(total / max(1, n), 6)

    def _record_failures(self, bad: Mapping[str, str], epoch: int) -> None:
        """Log samples that could not be read (training goes on without them)."""
        new = {k: v for k, v in bad.items() if k not in self.failed}
        self.failed.update(bad)
        if new and self.ctx.is_main:
            self._write_log({"event": "failed", "epoch": epoch + 1, "videos": new})
            for vid, reason in new.items():
                self._say(f"warning: skipping unreadable video {vid}: {reason}")

    def _write_log(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        with open(self.out / LOG_FILE, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._tb is not None:
            step = record.get("epoch", 0) * self.iters_per_epoch + record.get("iter", 0) - (
                self.iters_per_epoch if "iter" in record else 0)
            for key, value in record.items():
                if key not in ("time", "event", "epoch", "iter") and isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{record['event']}/{key}", value, step)
            self._tb.flush()

    def _say(self, msg: str) -> None:
        if self.echo is not None:
            self.echo(msg)


def build_optimizer(cfg: DetectConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """SGD / Adam / AdamW from ``cfg.optim``."""
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


class ModelEMA:
    """Exponential moving average of a model's weights (buffers are copied)."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        import copy

        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for ema_t, t in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_t.dtype.is_floating_point:
                ema_t.mul_(self.decay).add_(t.detach(), alpha=1 - self.decay)
            else:
                ema_t.copy_(t)


# --------------------------------------------------------------------------- helpers
class _DistContext:
    """Rank / world size / device of this process; initialises torch.distributed under torchrun."""

    def __init__(self, rank: int, world_size: int, device: torch.device, owns_group: bool):
        self.rank, self.world_size, self.device, self.owns_group = rank, world_size, device, owns_group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "auto") -> "_DistContext":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(0, 1, _pick_device(device), False)
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = _pick_device(device)
        if dev.type == "cuda":
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), dev, owns)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _tensorboard(out: Path) -> Any:
    """A TensorBoard writer under ``out/tb`` when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tb"))


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    return dev


def _autocast(device: torch.device, enabled: bool) -> Any:
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def _forward(model: torch.nn.Module, b: Any) -> dict[str, torch.Tensor]:
    """The head's forward on a batch; spatial grids go along when the batch has them."""
    if b.grid is None:
        return model(b.features, b.mask)
    return model(b.features, b.mask, grid=b.grid)


def _dataset(cfg: DetectConfig, store: Any, annotations: Any, training: bool, grid: bool = False) -> Any:
    from tadkit.data.datasets import make_dataset

    d = cfg.data
    if d.mode == "window":
        kwargs = dict(window=d.length, overlap=d.train_overlap if training else d.infer_overlap,
                      min_ioi=d.min_ioi, drop_empty=d.drop_empty and training)
    elif d.mode == "resize":
        kwargs = dict(length=d.length)
    else:
        kwargs = dict(max_length=d.max_length if training else None, min_ioi=d.min_ioi)
    return make_dataset(d.mode, store, annotations, None, warn=False, grid=grid, **kwargs)


def _collate_fn(cfg: DetectConfig, head: DetectionHead) -> "_GuardedCollate":
    from tadkit.data.datasets import PadCollate

    return _GuardedCollate(PadCollate(stride=max(1, int(getattr(head, "stride", 1))),
                                      pad_to=cfg.data.length if cfg.data.mode == "window" else None))


class _Guarded(torch.utils.data.Dataset):
    """A dataset whose unreadable items become ``_Failed`` records instead of exceptions."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except (TadkitError, OSError, KeyError, ValueError) as exc:
            return _Failed(_video_at(self.dataset, index), " ".join(str(exc).split()))


@dataclasses.dataclass(frozen=True)
class _Failed:
    video_id: str
    reason: str


@dataclasses.dataclass(frozen=True)
class _GuardedCollate:
    """``(batch of the good samples or None, {video: reason} of the failed ones)``."""

    inner: Any

    def __call__(self, items: Sequence[Any]) -> tuple[Any, dict[str, str]]:
        good = [x for x in items if not isinstance(x, _Failed)]
        bad = {x.video_id: x.reason for x in items if isinstance(x, _Failed)}
        return (self.inner(good) if good else None), bad


def _video_at(dataset: Any, index: int) -> str:
    windows = getattr(dataset, "windows", None)
    if windows is not None:
        return str(windows[index][0])
    videos = getattr(dataset, "video_ids", None)
    return str(videos[index]) if videos is not None else f"item {index}"


def _resume_config(out: Path, cfg: DetectConfig) -> tuple[DetectConfig, dict[str, Any]]:
    """The run's saved config (with ``cfg``'s epoch count) and its run.json."""
    saved, meta = load_run(out)
    if cfg.train.epochs != saved.train.epochs:
        saved = dataclasses.replace(saved, train=dataclasses.replace(saved.train, epochs=cfg.train.epochs))
    return saved, meta


def _checkpoint_path(run: Path, checkpoint: str) -> Path:
    p = Path(checkpoint)
    if p.suffix == ".pt" and p.is_file():
        return p
    name = checkpoint if checkpoint.endswith(".pt") else f"{checkpoint}.pt"
    path = run / CHECKPOINT_DIR / name
    if not path.is_file():
        have = sorted(q.name for q in (run / CHECKPOINT_DIR).glob("*.pt")) if (run / CHECKPOINT_DIR).is_dir() else []
        raise InputError(path, f"no such checkpoint (available: {', '.join(have) or 'none'})")
    return path


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """A run checkpoint: tensors and plain Python values only (``weights_only``: loading never runs code)."""
    state = read_checkpoint(path)
    if not isinstance(state, dict) or not isinstance(state.get("model"), Mapping):
        what = (f"a dict without 'model' weights (keys: {few([str(k) for k in state])})" if isinstance(state, dict)
                else f"a {type(state).__name__}")
        raise InputError(path, f"not a tadkit run checkpoint: it holds {what}")
    return state


def _load_weights(head: torch.nn.Module, weights: Any, path: Path) -> None:
    if not isinstance(weights, Mapping):
        raise InputError(path, f"not a tadkit run checkpoint: its weights are a {type(weights).__name__}")
    mismatch = compare_weights(head, weights)
    if mismatch:
        raise InputError(path, f"the weights do not fit this run's {type(head).__name__}: {mismatch.describe()}")
    head.load_state_dict(weights)


def _check_finite_weights(head: torch.nn.Module, epoch: int) -> None:
    bad = [name for name, p in head.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise TadkitError(f"training diverged: {len(bad)} weight tensor(s) are NaN or infinite after epoch "
                          f"{epoch + 1} (e.g. {bad[0]}); lower optim.lr or set train.grad_clip")


def _rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain values (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "numpy": (name, keys.tolist(), pos, has_gauss, cached),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_json(path: Path, doc: Any, indent: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=indent))
    os.replace(tmp, path)


__all__ = ["train", "infer", "apply_postprocess", "postprocess_file", "load_run", "Trainer",
           "ModelEMA", "build_optimizer", "lr_factor", "split_holdout", "seed_everything"]
