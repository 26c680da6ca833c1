"""``tadkit data``: synthetic data and annotation summaries.

* ``tadkit data synth-features --annotations A --out FEATS/`` writes a feature
  store that follows the ground truth of ``A`` (see :mod:`tadkit.data.synthetic`).
* ``tadkit data synth-videos --out DIR --num-videos N`` writes small mp4 files
  and their ActivityNet-format ground truth ``DIR/annotations.json``.
* ``tadkit data stats A`` prints videos / instances / classes per subset and
  the problems found while loading.
"""
from __future__ import annotations

import json
import warnings

import click

from tadkit.data.annotations import FORMATS

_FMT = click.Choice(("auto",) + FORMATS)


@click.group()
def data() -> None:
    """Annotations and synthetic data (features, videos)."""


@data.command("synth-features")
@click.option("--annotations", "annotations_path", required=True, type=click.Path(exists=True),
              help="Ground truth whose timeline the features follow (any supported format).")
@click.option("--out", required=True, type=click.Path(),
              help="Feature store directory to write (created; a rerun resumes).")
@click.option("--format", "fmt", type=_FMT, default="auto", show_default=True, help="Annotation format.")
@click.option("--subset", default=None, help="Only these subsets (comma-separated, e.g. validation,test).")
@click.option("--feature-dim", type=int, default=32, show_default=True, help="Channels per snippet.")
@click.option("--clip-len", type=int, default=16, show_default=True, help="Frames per snippet.")
@click.option("--stride", type=int, default=8, show_default=True, help="Frames between snippets.")
@click.option("--fps", type=float, default=None,
              help="Sample fps of every video [default: each video's own fps, else 30].")
@click.option("--signal", type=float, default=None, help="Class-signal amplitude (noise std is 1).")
@click.option("--streams", default=None,
              help="Comma-separated streams with partly complementary evidence, e.g. rgb,flow "
                   "(--feature-dim channels each) [default: one 'synthetic' stream].")
@click.option("--levels", default=None,
              help="Comma-separated backbone-like levels as steps per snippet, e.g. 2,1,0.5 "
                   "(stored as levels/<stream>/x<d>).")
@click.option("--seed", type=int, default=0, show_default=True)
def synth_features_cmd(annotations_path: str, out: str, fmt: str, subset: str | None, feature_dim: int,
                       clip_len: int, stride: int, fps: float | None, signal: float | None,
                       streams: str | None, levels: str | None, seed: int) -> None:
    """Write synthetic snippet features following an annotation timeline."""
    from tadkit.data.annotations import load_annotations
    from tadkit.data.synthetic import SynthFeatureConfig, synth_features

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ann = load_annotations(annotations_path, fmt)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    if subset:
        ann = ann.subset(subset)
    kwargs = dict(feature_dim=feature_dim, clip_len=clip_len, stride=stride, fps=fps, seed=seed)
    if signal is not None:
        kwargs["signal"] = signal
    try:
        if streams:
            kwargs["streams"] = tuple(x.strip() for x in streams.split(",") if x.strip())
        if levels:
            kwargs["levels"] = tuple(float(x) for x in levels.split(",") if x.strip())
        cfg = SynthFeatureConfig(**kwargs)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    report = synth_features(ann, out, cfg)
    click.echo(f"{report.store}: wrote {len(report.written)} videos, skipped {len(report.skipped)} "
               f"already present, {len(report.failed)} failed")
    for vid, reason in list(report.failed.items())[:10]:
        click.echo(f"  failed {vid}: {reason}", err=True)
    if report.failed:
        raise click.exceptions.Exit(1)


@data.command("synth-videos")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for the mp4 files and annotations.json.")
@click.option("--num-videos", type=int, default=8, show_default=True)
@click.option("--num-classes", type=int, default=4, show_default=True, help="Motion patterns used (1-8).")
@click.option("--size", type=int, default=128, show_default=True, help="Frame width and height (even).")
@click.option("--fps", type=float, default=15.0, show_default=True)
@click.option("--min-duration", type=float, default=4.0, show_default=True, help="Seconds.")
@click.option("--max-duration", type=float, default=8.0, show_default=True, help="Seconds.")
@click.option("--max-instances", type=int, default=3, show_default=True,
              help="At most this many (non-overlapping) instances per video; at least one.")
@click.option("--codec", default="mpeg4", show_default=True,
              help="mpeg4 (bit-reproducible) or libx264.")
@click.option("--seed", type=int, default=0, show_default=True)
def synth_videos_cmd(out: str, num_videos: int, num_classes: int, size: int, fps: float,
                     min_duration: float, max_duration: float, max_instances: int, codec: str,
                     seed: int) -> None:
    """Write small mp4 videos whose motion patterns are the action classes."""
    from tadkit.data.synthetic import SynthVideoConfig, synth_videos

    try:
        cfg = SynthVideoConfig(num_videos=num_videos, num_classes=num_classes, size=size, fps=fps,
                               min_duration=min_duration, max_duration=max_duration,
                               max_instances=max_instances, codec=codec, seed=seed)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    result = synth_videos(out, cfg)
    s = result.annotations.summary()["subsets"]
    parts = ", ".join(f"{k}: {v['videos']} videos / {v['instances']} instances" for k, v in s.items())
    click.echo(f"{result.root}: {len(result.videos)} videos ({parts}); ground truth {result.annotation_file}")


@data.command("stats")
@click.argument("annotations_path", type=click.Path(exists=True))
@click.option("--format", "fmt", type=_FMT, default="auto", show_default=True)
@click.option("--ambiguous", type=click.Path(exists=True, dir_okay=False), default=None,
              help="THUMOS Ambiguous_<subset>.txt to attach.")
@click.option("--video-info", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CSV with subset / duration / fps per video (e.g. video_info_new.csv).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def stats_cmd(annotations_path: str, fmt: str, ambiguous: str | None, video_info: str | None,
              as_json: bool) -> None:
    """Summarise an annotation file: videos, instances and classes per subset."""
    from tadkit.data.annotations import load_annotations

    ann = load_annotations(annotations_path, fmt, ambiguous=ambiguous, video_info=video_info, warn=False)
    summary = ann.summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"{annotations_path}: {len(ann.videos)} videos, {len(ann)} instances, {len(ann.classes)} classes")
    click.echo(f"  {'subset':12s} {'videos':>7s} {'annotated':>9s} {'instances':>9s} {'classes':>7s} {'ambiguous':>9s}")
    for name, row in summary["subsets"].items():
        click.echo(f"  {name:12s} {row['videos']:7d} {row['videos_with_instances']:9d} {row['instances']:9d} "
                   f"{row['classes']:7d} {row['ambiguous']:9d}")
    for msg in summary["problems"]:
        click.echo(f"  note: {msg}")
