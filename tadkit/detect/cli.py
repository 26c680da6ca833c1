"""``tadkit detect``: train a head, run inference, re-tune post-processing.

::

    tadkit detect train --config configs/mltpn/thumos14.yaml --features feats/ \\
        --annotations thumos14.json --out runs/mltpn [--set train.epochs=5] [--resume] [--from-run RUN]
    tadkit detect infer --run runs/mltpn [--run runs/other --fuse auto --weights 1,1] --features feats/ \\
        --subset test --out preds.json [--proposals props.json] [--raw candidates.npz] [--set sigma=0.7]
    tadkit detect postprocess --candidates candidates.npz --out preds.json --set method=gaussian
    tadkit detect classify --features feats/ --annotations anet.json --train-subset training \\
        --subset validation --out cls_scores.json      (video-level scores for classifier fusion;
                                                        --out DIR writes a classifier run)
    tadkit detect classify-ensemble --classifier-run runs/cls_1 --classifier-run runs/cls_2 --out runs/cls
                                                       (learned weights on the runs' held-out videos)

Distributed: ``torchrun --nproc-per-node N -m tadkit detect train|infer ...``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

import click
import numpy as np

from tadkit.cli import HelpGroup
from tadkit.config import from_dict, load_config, parse_override
from tadkit.detect.config_reference import config_cmd
from tadkit.text import plural
from tadkit.threads import threads_option


def _finite_above(low: float, or_equal: bool = False) -> Callable[[click.Context, click.Parameter, float], float]:
    """A click callback accepting finite numbers above ``low`` (or equal to it with ``or_equal``); defined
    before the commands, whose options use it."""

    def check(_ctx: click.Context, param: click.Parameter, value: float) -> float:
        if not (math.isfinite(value) and (value >= low if or_equal else value > low)):
            raise click.BadParameter(f"must be a finite number {'>=' if or_equal else '>'} {low:g}, got {value:g}",
                                     param=param)
        return value

    return check


@click.group(cls=HelpGroup)
def detect() -> None:
    """Train detection heads over snippet features and detect actions."""


detect.add_command(config_cmd)  # tadkit detect config: every config key (tadkit/detect/config_reference.py)


@detect.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML config (e.g. configs/mltpn/thumos14.yaml); defaults apply without one.")
@click.option("--features", required=True, multiple=True, type=click.Path(),
              help="Feature store directory (repeat to concatenate stores of the same videos).")
@click.option("--annotations", required=True, type=click.Path(), help="Ground-truth annotations file.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to create.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set optim.lr=1e-4 or --set sigma=0.7 (post-processing "
                   "keys with or without 'postprocess.'; repeatable; keys: tadkit detect config --show).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N [default: the config's train.device, auto].")
@click.option("--from-run", "from_run", multiple=True, type=click.Path(file_okay=False),
              help="Chained run: the head reads this run's proposals of every video (repeat for an ensemble).")
@click.option("--allow-provenance-mismatch", is_flag=True,
              help="With --resume: use features made differently from the run's (weights, recipe, ...) anyway.")
@threads_option
def train(config_path: str | None, features: Sequence[str], annotations: str, out: str,
          overrides: Sequence[str], resume: bool, device: str | None, from_run: Sequence[str],
          allow_provenance_mismatch: bool) -> None:
    """Train the configured head; writes config, logs and checkpoints to --out."""
    from tadkit.detect.config import DetectConfig
    from tadkit.detect.config_reference import train_overrides
    from tadkit.detect.engine import train as run_train
    from tadkit.detect.runs import CHECKPOINT_DIR

    cfg = load_config(DetectConfig, config_path, train_overrides(overrides, device))
    try:
        with _warnings_as_lines():
            summary = run_train(cfg, list(features), annotations, out, resume=resume, echo=click.echo,
                                from_run=list(from_run) or None, allow_provenance_mismatch=allow_provenance_mismatch)
    except KeyboardInterrupt:
        last = Path(out) / CHECKPOINT_DIR / "last.pt"
        if last.is_file():
            click.echo(f"note: interrupted; {last} is kept: add --resume to the same command to continue", err=True)
        raise
    if summary["rank"] == 0:
        click.echo(f"trained {summary['epochs']} epochs ({summary['seconds_per_epoch']:.2f} s/epoch); "
                   f"run in {summary['run']}")


@detect.command()
@click.option("--run", "runs", required=True, multiple=True, type=click.Path(file_okay=False),
              help="Run directory (repeat for an ensemble / late fusion).")
@click.option("--features", multiple=True, type=click.Path(),
              help="Feature store directory (repeat as in training) [default: the first run's].")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Detections JSON to write.")
@click.option("--proposals", default=None, type=click.Path(dir_okay=False),
              help="Also (or only) write class-agnostic proposals as the official proposal JSON.")
@click.option("--subset", default=None, help="Annotated subset to detect (default: every video in the store).")
@click.option("--annotations", default=None, type=click.Path(),
              help="Annotations for --subset and durations (default: the training annotations).")
@click.option("--checkpoint", default="last", show_default=True,
              help="last, best, epoch_0005 or a .pt path.")
@click.option("--fuse", type=click.Choice(["auto", "mean", "union"]), default="auto", show_default=True,
              help="Several runs: mean = average raw outputs (same head and grid), union = pool the runs' "
                   "candidates before NMS; auto = mean when possible.")
@click.option("--weights", default=None, help="Comma-separated weight per --run (default: equal).")
@click.option("--classifier", default=None, type=click.Path(dir_okay=False),
              help="Video-level class scores (CUHK format) fused with class-agnostic proposals.")
@click.option("--classifier-run", "classifier_runs", multiple=True, type=click.Path(file_okay=False),
              help="A run of `detect classify --out DIR` scoring the videos for fusion (repeat to average).")
@click.option("--from-run", "from_run", multiple=True, type=click.Path(file_okay=False),
              help="Chained runs: use this source run instead of the recorded one.")
@click.option("--raw", default=None, type=click.Path(dir_okay=False),
              help="Also write the raw candidates here (.npz; for `detect postprocess`).")
@click.option("--batch-size", type=int, default=None,
              help="Samples per forward pass [default: the run's data.infer_batch_size].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a post-processing key, e.g. --set sigma=0.7 or --set postprocess.sigma=0.7 "
                   "(repeatable).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--allow-provenance-mismatch", is_flag=True,
              help="Use features made differently from the training features (weights, recipe, ...) anyway.")
@threads_option
def infer(runs: Sequence[str], features: Sequence[str], out: str | None, proposals: str | None,
          subset: str | None, annotations: str | None, checkpoint: str, fuse: str, weights: str | None,
          classifier: str | None, classifier_runs: Sequence[str], from_run: Sequence[str], raw: str | None,
          batch_size: int | None, overrides: Sequence[str], device: str, allow_provenance_mismatch: bool) -> None:
    """Detect actions (or propose segments) with one run or an ensemble; writes the official JSON."""
    from tadkit.detect.engine import infer as run_infer
    from tadkit.detect.engine import load_run
    from tadkit.errors import ConfigError

    cfg, _ = load_run(runs[0])
    pp = _postprocess_config(cfg.postprocess, overrides)
    try:
        w = [float(x) for x in weights.split(",")] if weights else None
    except ValueError:
        raise ConfigError(f"--weights must be comma-separated numbers, got {weights!r}") from None
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    with _warnings_as_lines():
        run_infer(list(runs), list(features) or None, out, subset=subset, annotations=annotations,
                  checkpoint=checkpoint, raw=raw, postprocess=pp, device=device, echo=click.echo, fuse=fuse,
                  weights=w, proposals=proposals, classifier=classifier, classifier_runs=list(classifier_runs),
                  batch_size=batch_size, from_run=list(from_run) or None,
                  allow_provenance_mismatch=allow_provenance_mismatch)


@detect.command()
@click.option("--candidates", required=True, type=click.Path(dir_okay=False),
              help="Raw candidates written by `detect infer --raw`.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Predictions JSON to write.")
@click.option("--run", "run_dir", default=None, type=click.Path(file_okay=False),
              help="Start from this run's post-processing settings (else the defaults).")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="YAML file of post-processing settings.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a post-processing key, e.g. --set method=gaussian (repeatable).")
@threads_option
def postprocess(candidates: str, out: str, run_dir: str | None, config_path: str | None,
                overrides: Sequence[str]) -> None:
    """Re-run NMS / soft-NMS / fusion on saved candidates, without the model."""
    from tadkit.detect.config import PostprocessConfig
    from tadkit.detect.engine import load_run, postprocess_file

    if run_dir is not None:
        base = load_run(run_dir)[0].postprocess
    else:
        base = load_config(PostprocessConfig, config_path)
    pp = _postprocess_config(base, overrides)
    summary = postprocess_file(candidates, out, pp)
    click.echo(f"wrote {plural(summary['detections'], 'detection')} for {plural(summary['videos'], 'video')} "
               f"to {out}")


@detect.command()
@click.option("--features", required=True, type=click.Path(), help="Feature store directory.")
@click.option("--annotations", required=True, type=click.Path(), help="Ground-truth annotations file.")
@click.option("--train-subset", required=True, help="Subset the classifier learns from (e.g. training).")
@click.option("--subset", default=None, help="Videos to score (default: every video in the store).")
@click.option("--out", required=True, type=click.Path(),
              help="Class-scores JSON (CUHK format) when it ends in .json, else a classifier run directory "
                   "for `detect infer --classifier-run` (with DIR/scores.json when --subset is given).")
@click.option("--steps", type=click.IntRange(min=1), default=500, show_default=True, help="Full-batch Adam steps.")
@click.option("--lr", default=0.01, show_default=True, callback=_finite_above(0.0),
              help="Adam learning rate (> 0).")
@click.option("--weight-decay", default=1e-4, show_default=True, callback=_finite_above(0.0, or_equal=True),
              help="Adam weight decay (>= 0).")
@click.option("--seed", default=0, show_default=True, help="Seed of the classifier's initialisation.")
@click.option("--holdout-fraction", default=0.0, show_default=True,
              help="Keep this share of the --train-subset videos out of training (the same videos for every "
                   "run with the same fraction), for `detect classify-ensemble`.")
@threads_option
def classify(features: str, annotations: str, train_subset: str, subset: str | None, out: str,
             steps: int, lr: float, weight_decay: float, seed: int, holdout_fraction: float) -> None:
    """Train a video-level classifier and write per-video class scores (or a classifier run) for fusion."""
    from tadkit.data.annotations import load_annotations
    from tadkit.data.features import FeatureStore
    from tadkit.detect.classifier import read_pooled, save_classifier_run, train_video_classifier, write_scores
    from tadkit.detect.training import split_holdout
    from tadkit.errors import ConfigError

    if not 0.0 <= holdout_fraction < 1.0:
        raise ConfigError(f"--holdout-fraction must lie in [0, 1), got {holdout_fraction}")
    as_run = not out.lower().endswith(".json")
    with _warnings_as_lines():
        store = FeatureStore.open(features)
        ann = load_annotations(annotations)
        train_ann = ann.subset(train_subset)
        train_ids, held = split_holdout([v for v in train_ann.video_ids() if v in store], holdout_fraction, 0)
        clf, failed = train_video_classifier(store, train_ann.select(train_ids), steps=steps, lr=lr,
                                             weight_decay=weight_decay, seed=seed)
        if as_run:
            save_classifier_run(out, clf, store, {"annotations": str(Path(annotations).resolve()),
                                                  "train_subset": train_subset, "steps": steps, "lr": lr,
                                                  "weight_decay": weight_decay, "seed": seed,
                                                  "holdout_videos": held})
        names: list[str] = []
        if subset is not None or not as_run:
            ids = store.video_ids() if subset is None else [v for v in ann.subset(subset).video_ids() if v in store]
            pooled, bad = read_pooled(store, ids)
            failed.update(bad)
            names = list(pooled)
            scores = clf.scores(np.stack([pooled[v] for v in names])) if names else np.zeros((0, len(clf.classes)))
            write_scores(Path(out) / "scores.json" if as_run else out, dict(zip(names, scores)), clf.classes)
    if as_run:
        click.echo(f"wrote classifier run {out}" + (f" and class scores of {plural(len(names), 'video')}"
                                                     if names else ""))
    else:
        click.echo(f"wrote class scores of {plural(len(names), 'video')} to {out}")
    for vid, reason in list(failed.items())[:10]:
        click.echo(f"warning: skipped unreadable video {vid}: {reason}", err=True)


@detect.command("classify-ensemble")
@click.option("--classifier-run", "runs", multiple=True, required=True, type=click.Path(file_okay=False),
              help="A classifier run trained with --holdout-fraction (repeat: the ensemble's members).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Ensemble run directory to write (use it as `detect infer --classifier-run`).")
@click.option("--features", default=None, type=click.Path(), help="Feature store [default: the first run's].")
@click.option("--annotations", default=None, type=click.Path(),
              help="Labels of the held-out videos [default: the first run's annotations].")
@click.option("--steps", default=300, show_default=True, help="Full-batch Adam steps fitting the weights.")
@threads_option
def classify_ensemble(runs: Sequence[str], out: str, features: str | None, annotations: str | None,
                      steps: int) -> None:
    """Learn one weight per classifier run on the videos they all held out (HACS-2020 ensemble)."""
    from tadkit.data.annotations import load_annotations
    from tadkit.data.features import FeatureStore
    from tadkit.detect.classifier import read_classifier_run
    from tadkit.detect.classifier_ensemble import fit_classifier_ensemble, save_ensemble_run

    first = read_classifier_run(Path(runs[0]))
    with _warnings_as_lines():
        store = FeatureStore.open(features or first["features"])
        ann = load_annotations(annotations or first["annotations"])
        weights, report = fit_classifier_ensemble(runs, store, ann, steps=steps)
        save_ensemble_run(out, runs, weights, {"features": str(Path(store.root).resolve()),
                                               "annotations": str(Path(annotations or first["annotations"]).resolve()),
                                               "steps": steps, "holdout_videos": report["videos"],
                                               "member_top1": report["member_top1"],
                                               "ensemble_top1": report["ensemble_top1"]})
    n = len(report["videos"])
    for run, w, acc in zip(runs, weights, report["member_top1"]):
        click.echo(f"{run}: weight {w:.3f}, top-1 {100 * acc:.1f}% on {plural(n, 'held-out video')}")
    click.echo(f"wrote classifier ensemble {out}: top-1 {100 * report['ensemble_top1']:.1f}%")


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Show data warnings (clipped annotations, missing videos) as ``warning: ...`` lines, as they happen
    (so a training run prints them before it starts, not when it ends)."""
    seen: set[str] = set()

    def show(message: object, category: type, *_args: object, **_kwargs: object) -> None:
        text = " ".join(str(message).split())
        if text not in seen and not issubclass(category, (DeprecationWarning, FutureWarning)):
            seen.add(text)
            click.echo(f"warning: {text}", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def _postprocess_config(base: object, overrides: Sequence[str]) -> object:
    """``base`` (a PostprocessConfig) with ``key=value`` overrides (``postprocess.`` prefix optional)."""
    from tadkit.detect.config import PostprocessConfig

    data = dataclasses.asdict(base)
    for item in overrides:
        key, value = parse_override(item)
        data[key.removeprefix("postprocess.")] = value
    return from_dict(PostprocessConfig, data, source="--set")
