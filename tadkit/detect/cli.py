"""``tadkit detect``: train a head, run inference, re-tune post-processing.

::

    tadkit detect train --config configs/mltpn/thumos14.yaml --features feats/ \\
        --annotations thumos14.json --out runs/mltpn [--set train.epochs=5] [--resume]
    tadkit detect infer --run runs/mltpn --features feats/ --subset test --out preds.json \\
        [--raw candidates.json] [--set sigma=0.7]
    tadkit detect postprocess --candidates candidates.json --out preds.json --set method=gaussian
    tadkit detect classify --features feats/ --annotations anet.json --train-subset training \
        --subset validation --out cls_scores.json      (video-level scores for classifier fusion)

Distributed training: ``torchrun --nproc-per-node N -m tadkit detect train ...``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Iterator, Sequence

import click
import numpy as np

from tadkit.config import from_dict, load_config, parse_override


@click.group()
def detect() -> None:
    """Train detection heads over snippet features and detect actions."""


@detect.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML config (e.g. configs/mltpn/thumos14.yaml); defaults apply without one.")
@click.option("--features", required=True, type=click.Path(), help="Feature store directory.")
@click.option("--annotations", required=True, type=click.Path(), help="Ground-truth annotations file.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to create.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set optim.lr=1e-4 (repeatable).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--allow-provenance-mismatch", is_flag=True,
              help="With --resume: use features made differently from the run's (weights, recipe, ...) anyway.")
def train(config_path: str | None, features: str, annotations: str, out: str,
          overrides: Sequence[str], resume: bool, allow_provenance_mismatch: bool) -> None:
    """Train the configured head; writes config, logs and checkpoints to --out."""
    from tadkit.detect.config import DetectConfig
    from tadkit.detect.engine import train as run_train

    cfg = load_config(DetectConfig, config_path, overrides)
    with _warnings_as_lines():
        summary = run_train(cfg, features, annotations, out, resume=resume, echo=click.echo,
                            allow_provenance_mismatch=allow_provenance_mismatch)
    if summary["rank"] == 0:
        click.echo(f"trained {summary['epochs']} epochs ({summary['seconds_per_epoch']:.2f} s/epoch); "
                   f"run in {summary['run']}")


@detect.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--features", required=True, type=click.Path(), help="Feature store directory.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Predictions JSON to write.")
@click.option("--subset", default=None, help="Annotated subset to detect (default: every video in the store).")
@click.option("--annotations", default=None, type=click.Path(),
              help="Annotations for --subset and durations (default: the training annotations).")
@click.option("--checkpoint", default="last", show_default=True,
              help="last, best, epoch_0005 or a .pt path.")
@click.option("--raw", default=None, type=click.Path(dir_okay=False),
              help="Also write the raw candidates here (for `detect postprocess`).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a post-processing key, e.g. --set sigma=0.7 (repeatable).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--allow-provenance-mismatch", is_flag=True,
              help="Use features made differently from the training features (weights, recipe, ...) anyway.")
def infer(run_dir: str, features: str, out: str, subset: str | None, annotations: str | None,
          checkpoint: str, raw: str | None, overrides: Sequence[str], device: str,
          allow_provenance_mismatch: bool) -> None:
    """Detect actions with a trained run; writes the official detection JSON."""
    from tadkit.detect.engine import infer as run_infer
    from tadkit.detect.engine import load_run

    cfg, _ = load_run(run_dir)
    pp = _postprocess_config(cfg.postprocess, overrides)
    with _warnings_as_lines():
        run_infer(run_dir, features, out, subset=subset, annotations=annotations, checkpoint=checkpoint,
                  raw=raw, postprocess=pp, device=device, echo=click.echo,
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
    click.echo(f"wrote {summary['detections']} detections for {summary['videos']} videos to {out}")


@detect.command()
@click.option("--features", required=True, type=click.Path(), help="Feature store directory.")
@click.option("--annotations", required=True, type=click.Path(), help="Ground-truth annotations file.")
@click.option("--train-subset", required=True, help="Subset the classifier learns from (e.g. training).")
@click.option("--subset", default=None, help="Videos to score (default: every video in the store).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Class-scores JSON (CUHK format).")
@click.option("--steps", default=500, show_default=True, help="Full-batch Adam steps.")
@click.option("--seed", default=0, show_default=True)
def classify(features: str, annotations: str, train_subset: str, subset: str | None, out: str,
             steps: int, seed: int) -> None:
    """Train a video-level classifier and write per-video class scores for fusion."""
    from tadkit.data.annotations import load_annotations
    from tadkit.data.features import FeatureStore
    from tadkit.detect.classifier import read_pooled, train_video_classifier, write_scores

    with _warnings_as_lines():
        store = FeatureStore.open(features)
        ann = load_annotations(annotations)
        clf, failed = train_video_classifier(store, ann.subset(train_subset), steps=steps, seed=seed)
        ids = store.video_ids() if subset is None else [v for v in ann.subset(subset).video_ids() if v in store]
        pooled, bad = read_pooled(store, ids)
    failed.update(bad)
    names = list(pooled)
    scores = clf.scores(np.stack([pooled[v] for v in names])) if names else np.zeros((0, len(clf.classes)))
    write_scores(out, dict(zip(names, scores)), clf.classes)
    click.echo(f"wrote class scores of {len(names)} videos to {out}")
    for vid, reason in list(failed.items())[:10]:
        click.echo(f"warning: skipped unreadable video {vid}: {reason}", err=True)


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Show data warnings (clipped annotations, missing videos) as ``warning: ...`` lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            yield
        finally:
            seen = set()
            for w in caught:
                text = " ".join(str(w.message).split())
                if text not in seen and not issubclass(w.category, (DeprecationWarning, FutureWarning)):
                    seen.add(text)
                    click.echo(f"warning: {text}", err=True)


def _postprocess_config(base: object, overrides: Sequence[str]) -> object:
    """``base`` (a PostprocessConfig) with ``key=value`` overrides (``postprocess.`` prefix optional)."""
    from tadkit.detect.config import PostprocessConfig

    data = dataclasses.asdict(base)
    for item in overrides:
        key, value = parse_override(item)
        data[key.removeprefix("postprocess.")] = value
    return from_dict(PostprocessConfig, data, source="--set")
