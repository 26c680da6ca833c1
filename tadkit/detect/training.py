"""Training: a feature store and annotations -> a run directory (see :mod:`tadkit.detect.runs`).

Reproducibility: every epoch reseeds all RNGs and shuffles from ``(seed,
epoch, rank)``, and checkpoints carry model, optimizer, scheduler, AMP scaler,
EMA, RNG and model-selection states, so a run resumed from an epoch checkpoint
continues bit-for-bit as if it had never stopped (same device type, process
count and number of intra-op threads, which fix the order of float
reductions).

Model selection (``data.holdout_fraction > 0``): the held-out videos are
scored every ``train.validate_every`` epochs with the weights inference uses
(the EMA when ``train.ema``): their loss, and with ``train.select_by: metric``
the average mAP over ``train.val_tiou`` (AR@AN's AUC for class-agnostic heads)
through the same prediction and post-processing as ``tadkit detect infer`` and
the evaluate stage. ``best.pt`` holds the selected epoch; it is written after
the selection is updated, so checkpoints always carry the current best and a
resumed run never lets a worse epoch replace it. ``last.pt`` is written every
epoch.

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in
DistributedDataParallel (NCCL on GPU, gloo on CPU), ``train.batch_size`` is
the global batch split over the processes, and only rank 0 writes.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from tadkit.config import save_config, to_dict
from tadkit.data.datasets import prefix_hint
from tadkit.data.sources import Normalization
from tadkit.detect.config import DetectConfig
from tadkit.detect.heads import DetectionHead, build_head, group_parameters
from tadkit.detect.inputs import (Guarded, check_not_empty, collate_fn, fit_normalization, forward, input_info,
                                  make_dataset, make_source, open_stores, targets)
from tadkit.detect.postprocess import Detections, load_candidates, save_candidates
from tadkit.detect.runs import (CHECKPOINT_DIR, CONFIG_FILE, LOG_FILE, NORM_FILE, RUN_FILE, SOURCE_PROPOSALS_FILE,
                                DistContext, autocast, load_checkpoint, load_run, load_weights, resume_config,
                                rng_state, run_provenances, seed_everything, set_rng_state, write_json)
from tadkit.errors import ConfigError, InputError, TadkitError
from tadkit.progress import track


# --------------------------------------------------------------------------- public API
def train(cfg: DetectConfig, features: str | os.PathLike | Sequence[str | os.PathLike],
          annotations: str | os.PathLike, out: str | os.PathLike, resume: bool = False,
          echo: Callable[[str], None] | None = print, *,
          from_run: Sequence[str | os.PathLike] | None = None,
          allow_provenance_mismatch: bool = False) -> dict[str, Any]:
    """Train ``cfg.head`` on the ``cfg.data.train_subset`` videos; returns a summary.

    ``features``: one store or several (concatenated on channels).
    ``resume`` continues from ``out/checkpoints/last.pt`` (the run's saved
    config and held-out videos are used; ``cfg`` may only extend ``train.epochs``). ``from_run``:
    source run(s) whose proposals of every training video the head reads
    (a chained run, e.g. a refine network on a BMN run). On ``resume``,
    features made differently from the run's (see ``Provenance.mismatches``)
    are refused unless ``allow_provenance_mismatch``.
    """
    from tadkit.data.annotations import load_annotations

    out = Path(out)
    ctx = DistContext.from_env(cfg.train.device)
    say = echo if ctx.is_main and echo is not None else (lambda _msg: None)
    try:
        meta: dict[str, Any] | None = None
        if resume:
            cfg, meta = resume_config(out, cfg)
        elif (out / CHECKPOINT_DIR / "last.pt").exists():
            raise InputError(out, "the run directory already holds checkpoints; pass --resume to continue "
                             "it or choose another --out")
        seed_everything(cfg.train.seed + ctx.rank)
        stores = open_stores(features, expect=None if meta is None else run_provenances(meta),
                             allow_mismatch=allow_provenance_mismatch)
        ann = load_annotations(annotations)
        if not ann.classes:
            raise InputError(annotations, "no action classes: the annotations hold no labelled instance")
        train_ann = ann.subset(cfg.data.train_subset)
        source = make_source(cfg, stores)
        usable = usable_videos(source, train_ann, say)
        check_instances(train_ann.select(usable), ann.classes, annotations, cfg.data.train_subset, say)
        if meta is not None and isinstance(meta.get("holdout_videos"), list):  # resumed: the same held-out videos
            held = set(meta["holdout_videos"])
            train_ids, holdout_ids = sorted(v for v in usable if v not in held), sorted(v for v in usable if v in held)
        else:
            train_ids, holdout_ids = split_holdout(usable, cfg.data.holdout_fraction, cfg.train.seed)
        info = input_info(source, source.first_readable(train_ids))
        head = build_head(cfg.head, getattr(cfg, cfg.head, None), source.feature_dim, len(ann.classes), inputs=info)
        chained = _chained(from_run, meta, head, cfg)
        if meta is not None and meta.get("normalization"):
            source.normalization = Normalization.load(out / NORM_FILE)
        elif meta is None:
            source.normalization = fit_normalization(cfg, source, train_ids)
        proposals = None
        if chained is not None:
            proposals = _source_proposals(chained, out, features, ann, train_ids + holdout_ids, ctx, resume)
        train_set = make_dataset(cfg, source, train_ann.select(train_ids), True, head, proposals)
        check_not_empty(train_set, "training", source.root)
        holdout = None
        if holdout_ids:
            holdout = Holdout(train_ann.select(holdout_ids), holdout_ids,
                              make_dataset(cfg, source, train_ann.select(holdout_ids), True, head, proposals),
                              source, proposals)
        if ctx.is_main and meta is None:
            out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out / CONFIG_FILE)
            if source.normalization is not None:
                source.normalization.save(out / NORM_FILE)
            write_json(out / RUN_FILE, {
                "kind": "detection", "run_id": uuid.uuid4().hex, "head": cfg.head,
                "class_agnostic": bool(head.class_agnostic), "classes": list(ann.classes),
                "feature_dim": source.feature_dim, "provenance": stores[0].provenance.to_dict(),
                "inputs": source.describe(), "input_info": dataclasses.asdict(info),
                "features": [str(s.root.resolve()) for s in stores], "annotations": str(Path(annotations).resolve()),
                "train_videos": len(train_ids), "missing_videos": len(train_ann.video_ids()) - len(usable),
                "holdout_videos": holdout_ids, "normalization": NORM_FILE if source.normalization else None,
                "from_run": chained, "world_size": ctx.world_size}, indent=1)
        ctx.barrier()
        trainer = Trainer(cfg, head, ctx, out, echo=echo if ctx.is_main else None)
        if resume:
            trainer.load(out / CHECKPOINT_DIR / "last.pt")
        return {**trainer.fit(train_set, holdout), "holdout_videos": holdout_ids}
    finally:
        ctx.close()


def usable_videos(source: Any, annotations: Any, say: Callable[[str], None]) -> list[str]:
    """Annotated videos that have features (a warning with the count for the others)."""
    have = set(source.video_ids())
    annotated = annotations.video_ids()
    missing = [v for v in annotated if v not in have]
    usable = [v for v in annotated if v in have]
    hint = prefix_hint(missing, have) if missing else ""
    if not usable:
        raise InputError(source.root, f"no training videos: none of the {len(annotated)} annotated videos has "
                         f"features here ({len(have)} videos in the store). {hint}".strip())
    if missing:
        say(f"warning: {len(missing)} of the {len(annotated)} annotated training videos have no features in "
            f"{source.root} and are not used (e.g. {', '.join(missing[:3])}). {hint}".strip())
    return usable


def check_instances(train_ann: Any, classes: Sequence[str], where: Any, subset: str,
                    say: Callable[[str], None]) -> None:
    """``InputError`` when the training videos (``train_ann``) hold no action instance; a warning naming
    the ``classes`` none of them shows (the head sees no positive of those)."""
    if not len(train_ann):
        raise InputError(where, f"no action instance in the {len(train_ann.video_ids())} training videos with "
                                f"features (subset {subset!r}): nothing to learn from; check data.train_subset")
    seen = set(train_ann.instances["label_idx"].tolist())
    unseen = [c for i, c in enumerate(classes) if i not in seen]
    if unseen:
        names = ", ".join(unseen[:5]) + (", ..." if len(unseen) > 5 else "")
        say(f"warning: {len(unseen)} of the {len(classes)} classes {'has' if len(unseen) == 1 else 'have'} no "
            f"instance in the training videos ({names}): the head cannot learn to detect "
            f"{'it' if len(unseen) == 1 else 'them'}")


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


def build_optimizer(cfg: DetectConfig, head: torch.nn.Module | Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """SGD / Adam / AdamW from ``cfg.optim`` over the head's parameter groups.

    Groups come from ``head.param_groups(cfg.optim)`` or, when it returns
    None, from ``optim.no_decay`` / ``optim.lr_mult`` (:func:`group_parameters`);
    a group's ``lr_mult`` scales ``optim.lr``. A plain iterable of parameters
    is one group.
    """
    o = cfg.optim
    if isinstance(head, torch.nn.Module):
        groups = head.param_groups(o) if isinstance(head, DetectionHead) else None
        if groups is None:
            groups = group_parameters(head, o.weight_decay, o.no_decay, o.lr_mult)
    else:
        groups = [{"params": list(head)}]
    params = []
    for g in groups:
        g = dict(g)
        g.setdefault("lr", o.lr * float(g.pop("lr_mult", 1.0)))
        g.setdefault("weight_decay", o.weight_decay)
        params.append(g)
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


@dataclasses.dataclass
class Holdout:
    """The held-out videos: their annotations, a training-style dataset (loss) and what prediction needs."""

    annotations: Any
    video_ids: list[str]
    loss_set: Any
    source: Any
    proposals: Mapping[str, np.ndarray] | None = None


# --------------------------------------------------------------------------- trainer
class Trainer:
    """The training loop of one process (see the module docstring)."""

    def __init__(self, cfg: DetectConfig, head: DetectionHead, ctx: DistContext, out: Path,
                 echo: Callable[[str], None] | None = print):
        self.cfg, self.ctx, self.out, self.echo = cfg, ctx, out, echo
        self.head = head.to(ctx.device)
        self.model: torch.nn.Module = self.head
        if ctx.world_size > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.head, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        self.optimizer = build_optimizer(cfg, self.head)
        self.iters_per_epoch = 1  # optimiser steps per epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: lr_factor(cfg, it / self.iters_per_epoch))
        self.use_amp = cfg.train.amp and ctx.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.ema = ModelEMA(self.head, cfg.train.ema_decay) if cfg.train.ema else None
        self.epoch = 0  # completed epochs
        metric = "loss" if cfg.train.select_by == "loss" else ("AUC" if head.class_agnostic else "mAP")
        self.selection: dict[str, Any] = {"by": metric, "value": None, "epoch": 0}
        self.failed: dict[str, str] = {}
        self._tb = _tensorboard(out) if ctx.is_main else None

    # -- checkpoints ------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"model": self.head.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "ema": None if self.ema is None else self.ema.module.state_dict(),
                "epoch": self.epoch, "selection": dict(self.selection), "rng": rng_state(),
                "config": to_dict(self.cfg), "world_size": self.ctx.world_size}

    def load(self, path: Path) -> None:
        if not path.is_file():
            raise InputError(path, "no checkpoint to resume from (the run stopped before its first epoch ended): "
                             "rerun without --resume to start it again")
        state = load_checkpoint(path)
        load_weights(self.head, state["model"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.epoch = int(state["epoch"])
        if isinstance(state.get("selection"), Mapping) and state["selection"].get("by") == self.selection["by"]:
            self.selection = dict(state["selection"])
        elif self.selection["by"] == "loss" and math.isfinite(float(state.get("best", math.inf))):
            self.selection["value"] = float(state["best"])  # checkpoints of older tadkit versions
        set_rng_state(state["rng"])

    def save(self, name: str) -> Path:
        ckdir = self.out / CHECKPOINT_DIR
        ckdir.mkdir(parents=True, exist_ok=True)
        path = ckdir / name
        tmp = ckdir / f".{name}.tmp"
        torch.save(self.state(), tmp)
        os.replace(tmp, path)
        return path

    # -- loop ---------------------------------------------------------------------
    def fit(self, train_set: Any, holdout: Holdout | None = None) -> dict[str, Any]:
        cfg, ctx = self.cfg, self.ctx
        per_rank = max(1, cfg.train.batch_size // ctx.world_size)
        accumulate = max(1, cfg.train.accumulate)
        collate = collate_fn(cfg, self.head)
        batches = max(1, math.ceil(len(train_set) / (per_rank * ctx.world_size)))
        self.iters_per_epoch = math.ceil(batches / accumulate)
        self._say(f"training {cfg.head}: {len(train_set)} samples, {batches} batches/epoch"
                  f"{f' ({self.iters_per_epoch} steps of {accumulate})' if accumulate > 1 else ''}, "
                  f"{ctx.world_size} process(es) on {ctx.device}, from epoch {self.epoch}")
        epoch_times, last = [], {}
        for epoch in range(self.epoch, cfg.train.epochs):
            t0 = time.perf_counter()
            # every epoch starts from RNG streams fixed by (seed, epoch, rank): a resumed run
            # (any rank) continues exactly as an uninterrupted one
            seed_everything(cfg.train.seed * 1000003 + epoch * 1009 + ctx.rank)
            self.head.on_epoch_start(epoch, cfg.train.epochs)
            loader = self._loader(train_set, per_rank, collate, epoch)
            last = self._train_epoch(loader, epoch, accumulate)
            _check_finite_weights(self.head, epoch)
            self.epoch = epoch + 1
            record = {"event": "epoch", "epoch": self.epoch, "seconds": round(time.perf_counter() - t0, 3),
                      **{k: round(v, 6) for k, v in last.items()}}
            improved = False
            due = self.epoch % max(1, cfg.train.validate_every) == 0 or self.epoch == cfg.train.epochs
            if ctx.is_main and holdout is not None and due:
                improved = self._validate(holdout, per_rank, collate, record)
            epoch_times.append(record["seconds"])
            if ctx.is_main:
                self._write_log(record)
                self._say(" ".join(f"{k}={v}" for k, v in record.items() if k != "event"))
                # selection is already updated: every checkpoint of this epoch carries it
                if self.epoch % max(1, cfg.train.checkpoint_every) == 0 or self.epoch == cfg.train.epochs:
                    self.save(f"epoch_{self.epoch:04d}.pt")
                self.save("last.pt")
                if improved:
                    self.save("best.pt")
            ctx.barrier()
        return {"epochs": self.epoch, "seconds_per_epoch": float(np.mean(epoch_times)) if epoch_times else 0.0,
                "last": last, "run": str(self.out), "rank": ctx.rank, "failed": dict(self.failed),
                "selection": dict(self.selection)}

    def _loader(self, dataset: Any, per_rank: int, collate: Any, epoch: int) -> DataLoader:
        gen = torch.Generator().manual_seed(self.cfg.train.seed * 100003 + epoch)
        if self.ctx.world_size > 1:
            sampler = torch.utils.data.distributed.DistributedSampler(
                dataset, num_replicas=self.ctx.world_size, rank=self.ctx.rank, shuffle=True,
                seed=self.cfg.train.seed)
            sampler.set_epoch(epoch)
            return DataLoader(Guarded(dataset), batch_size=per_rank, sampler=sampler, collate_fn=collate,
                              num_workers=self.cfg.data.num_workers, generator=gen)
        return DataLoader(Guarded(dataset), batch_size=per_rank, shuffle=True, generator=gen, collate_fn=collate,
                          num_workers=self.cfg.data.num_workers)

    def _train_epoch(self, loader: DataLoader, epoch: int, accumulate: int = 1) -> dict[str, float]:
        cfg, dev = self.cfg, self.ctx.device
        self.model.train()
        sums: dict[str, float] = {}
        n = 0
        total = len(loader)
        batches = track(loader, total, f"epoch {epoch + 1}", "batch",
                        enabled=None if self.echo is not None else False, leave=False)
        self.optimizer.zero_grad(set_to_none=True)
        for it, (batch, bad) in enumerate(batches):
            if bad:
                self._record_failures(bad, epoch)
            group_start = it - it % accumulate
            group_size = min(accumulate, total - group_start)
            step_now = it - group_start == group_size - 1
            if batch is None:
                if self.ctx.world_size > 1:  # every process must take part in every step
                    raise TadkitError(f"a whole batch of unreadable samples under DDP ({next(iter(bad.values()))})")
                if step_now and n:
                    self._step()
                continue
            b = batch.to(dev)
            sync = step_now or self.ctx.world_size == 1
            with (self.model.no_sync() if not sync else nullcontext()):
                with autocast(dev, self.use_amp):
                    outputs = forward(self.model, self.head, b)
                losses = self.head.loss(outputs, b.mask, targets(b))
                loss = losses["loss"]
                if not torch.isfinite(loss):
                    raise TadkitError(f"training diverged: loss is {float(loss)} at epoch {epoch + 1}, "
                                      f"iteration {it + 1}; lower optim.lr or set train.grad_clip")
                self.scaler.scale(loss / group_size).backward()
            if step_now:
                self._step()
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

    def _step(self) -> None:
        """One optimiser step over the accumulated gradients, then one schedule step. Without any
        gradient (every batch of the group unreadable) only the schedule advances: the AMP scaler
        cannot step then."""
        if any(p.grad is not None for p in self.head.parameters()):
            if self.cfg.train.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.head.parameters(), self.cfg.train.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update(self.head)
        self.scheduler.step()

    # -- model selection ------------------------------------------------------------
    def _eval_head(self) -> DetectionHead:
        """The weights inference uses (the EMA when kept)."""
        return self.ema.module if self.ema is not None else self.head

    def _validate(self, holdout: Holdout, per_rank: int, collate: Any, record: dict[str, Any]) -> bool:
        """Score the held-out videos into ``record``; True when the selection improved."""
        head = self._eval_head()
        was_training = head.training
        head.eval()
        try:
            record["holdout_loss"] = self._holdout_loss(head, holdout.loss_set, per_rank, collate)
            value = record["holdout_loss"]
            if self.selection["by"] != "loss":
                value = record[f"holdout_{self.selection['by']}"] = holdout_metric(self.cfg, head, holdout)
        finally:
            head.train(was_training)
        best = self.selection["value"]
        if best is None or ((value < best) if self.selection["by"] == "loss" else (value > best)):
            self.selection.update(value=value, epoch=self.epoch)
            return True
        return False

    @torch.no_grad()
    def _holdout_loss(self, head: DetectionHead, dataset: Any, per_rank: int, collate: Any) -> float:
        total, n = 0.0, 0
        for batch, bad in DataLoader(Guarded(dataset), batch_size=per_rank, shuffle=False, collate_fn=collate):
            if bad:
                self._record_failures(bad, self.epoch)
            if batch is None:
                continue
            b = batch.to(self.ctx.device)
            total += float(head.loss(forward(head, head, b), b.mask, targets(b))["loss"]) * len(b)
            n += len(b)
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


def holdout_metric(cfg: DetectConfig, head: DetectionHead, holdout: Holdout) -> float:
    """Average mAP (%) over ``train.val_tiou`` of ``head`` on the held-out videos (AUC % for proposal heads).

    Exactly what ``tadkit detect infer`` + ``tadkit evaluate`` would report for
    these videos: the same prediction, post-processing and rounding of the
    official JSON, evaluated in-process by :mod:`tadkit.evaluate`.
    """
    from tadkit.detect.inference import Member, apply_postprocess, predict
    from tadkit.detect.postprocess import detections_to_json, proposals_to_json
    from tadkit.evaluate import GroundTruth, Predictions, evaluate_detection, evaluate_proposals

    ann = holdout.annotations
    member = Member(Path("."), cfg, {}, head, holdout.source, proposals=holdout.proposals)
    pp = cfg.postprocess
    pred = predict([member], ann, holdout.video_ids, pp)
    classes = list(ann.classes)
    gt_rows = []
    for vid in holdout.video_ids:
        segs, labels = ann.segments_of(vid)
        gt_rows += [(vid, s, e, classes[int(k)]) for (s, e), k in zip(segs, labels)]
    gt = GroundTruth.from_records(gt_rows)
    gt.videos = list(holdout.video_ids)
    if head.class_agnostic:
        props = apply_postprocess(pred.candidates, dataclasses.replace(pp, class_agnostic=True), ["proposal"])
        doc = proposals_to_json(props, pred.durations)
        rows = [(v, e["segment"][0], e["segment"][1], None, e["score"]) for v, es in doc["results"].items() for e in es]
        if not rows:
            return 0.0
        return 100.0 * evaluate_proposals(gt, Predictions.from_records(rows), cfg.train.val_tiou).AUC
    doc = detections_to_json(apply_postprocess(pred.candidates, pp, classes), classes, pred.durations)
    rows = [(v, e["segment"][0], e["segment"][1], e["label"], e["score"]) for v, es in doc["results"].items()
            for e in es]
    if not rows or not len(gt):
        return 0.0
    return 100.0 * evaluate_detection(gt, Predictions.from_records(rows), cfg.train.val_tiou).average_mAP


# --------------------------------------------------------------------------- helpers
def _chained(from_run: Sequence[Any] | None, meta: Mapping[str, Any] | None, head: DetectionHead,
             cfg: DetectConfig) -> dict[str, Any] | None:
    """The ``from_run`` record of a chained run (None otherwise); checks the head reads proposals."""
    if meta is not None:
        return meta.get("from_run")
    if not from_run:
        if "proposals" in head.needs:
            raise ConfigError(f"head {cfg.head!r} reads another run's proposals: pass --from-run RUN")
        return None
    if "proposals" not in head.needs:
        raise ConfigError(f"head {cfg.head!r} does not read proposals; --from-run is for heads that do "
                          "(e.g. a refine network)")
    runs = []
    for r in from_run:
        rcfg, rmeta = load_run(r)
        runs.append({"path": str(Path(r).resolve()), "run_id": rmeta.get("run_id"), "head": rcfg.head,
                     "classes": rmeta.get("classes"), "config": to_dict(rcfg)})
    return {"runs": runs, "topk": cfg.data.proposals_topk, "checkpoint": "last"}


def _source_proposals(chained: Mapping[str, Any], out: Path, features: Any, ann: Any, videos: Sequence[str],
                      ctx: DistContext, resume: bool) -> dict[str, np.ndarray]:
    """The source runs' proposals of the training videos (computed once by rank 0, cached in the run)."""
    from tadkit.detect.inference import source_proposals

    path = out / SOURCE_PROPOSALS_FILE
    if ctx.is_main and not (resume and path.is_file()):
        props = source_proposals([Path(r["path"]) for r in chained["runs"]], features, ann, videos,
                                 int(chained["topk"]), ctx.device, checkpoint=chained.get("checkpoint", "last"))
        out.mkdir(parents=True, exist_ok=True)
        save_candidates(path, {v: Detections(p[:, :2], p[:, 2], np.zeros(len(p), np.int64)) for v, p in props.items()},
                        {v: 0.0 for v in props}, ["proposal"], {"source": chained["runs"]})
    ctx.barrier()
    cands, _, _, _ = load_candidates(path)
    return {v: np.concatenate([d.segments, d.scores[:, None]], axis=1) for v, d in cands.items()}


def _check_finite_weights(head: torch.nn.Module, epoch: int) -> None:
    """``TadkitError`` when a weight became NaN or infinite (a finite loss does not rule it out)."""
    bad = [name for name, p in head.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise TadkitError(f"training diverged: {len(bad)} weight tensor(s) are NaN or infinite after epoch "
                          f"{epoch + 1} (e.g. {bad[0]}); lower optim.lr or set train.grad_clip")


def _tensorboard(out: Path) -> Any:
    """A TensorBoard writer under ``out/tb`` when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tb"))
