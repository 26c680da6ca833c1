"""``tadkit data``: synthetic data and annotation summaries.

* ``tadkit data synth-features --annotations A --out FEATS/`` writes a feature
  store that follows the ground truth of ``A`` (see :mod:`tadkit.data.synthetic`).
* ``tadkit data synth-videos --out DIR --num-videos N`` writes small mp4 files
  and their ActivityNet-format ground truth ``DIR/annotations.json``.
* ``tadkit data stats A`` prints videos / instances / classes per subset and
  the problems found while loading.
* ``tadkit data import-features SRC --layout L --out FEATS`` turns published
  features (ActionFormer, TSP, BMN, HACS, OpenTAD) into a feature store (see
  :mod:`tadkit.data.importers`).
"""
from __future__ import annotations

import json
import warnings

import click

from tadkit.cli import HelpGroup
from tadkit.data.annotations import FORMATS
from tadkit.data.importers import LAYOUTS, Layout
from tadkit.text import plural
from tadkit.threads import threads_option

_FMT = click.Choice(("auto",) + FORMATS)


@click.group(cls=HelpGroup)
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
@click.option("--signal", type=float, default=0.8, show_default=True,
              help="Class-signal amplitude (noise std is 1).")
@click.option("--streams", default=None,
              help="Comma-separated streams with partly complementary evidence, e.g. rgb,flow "
                   "(--feature-dim channels each) [default: one 'synthetic' stream].")
@click.option("--levels", default=None,
              help="Comma-separated backbone-like levels as steps per snippet, e.g. 2,1,0.5 "
                   "(stored as levels/<stream>/x<d>).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated features.")
@threads_option
def synth_features_cmd(annotations_path: str, out: str, fmt: str, subset: str | None, feature_dim: int,
                       clip_len: int, stride: int, fps: float | None, signal: float,
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
    try:
        kwargs: dict = dict(feature_dim=feature_dim, clip_len=clip_len, stride=stride, fps=fps,
                            signal=signal, seed=seed)
        if streams:
            kwargs["streams"] = tuple(x.strip() for x in streams.split(",") if x.strip())
        if levels:
            kwargs["levels"] = tuple(float(x) for x in levels.split(",") if x.strip())
        cfg = SynthFeatureConfig(**kwargs)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    report = synth_features(ann, out, cfg)
    click.echo(f"{report.store}: wrote {plural(len(report.written), 'video')}, skipped "
               f"{len(report.skipped)} already present, {len(report.failed)} failed")
    for vid, reason in list(report.failed.items())[:10]:
        click.echo(f"  failed {vid}: {reason}", err=True)
    if report.failed:
        raise click.exceptions.Exit(1)


@data.command("synth-videos")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for the mp4 files and annotations.json.")
@click.option("--num-videos", type=int, default=8, show_default=True,
              help="Videos to write (split into training and validation).")
@click.option("--num-classes", type=int, default=4, show_default=True, help="Motion patterns used (1-8).")
@click.option("--size", type=int, default=128, show_default=True, help="Frame width and height (even).")
@click.option("--fps", type=float, default=15.0, show_default=True, help="Frame rate of the videos.")
@click.option("--min-duration", type=float, default=4.0, show_default=True, help="Seconds.")
@click.option("--max-duration", type=float, default=8.0, show_default=True, help="Seconds.")
@click.option("--max-instances", type=int, default=3, show_default=True,
              help="At most this many (non-overlapping) instances per video; at least one.")
@click.option("--val-fraction", type=float, default=0.25, show_default=True,
              help="Share of the videos (the last ones) in the validation subset, in [0, 1).")
@click.option("--codec", default="mpeg4", show_default=True,
              help="mpeg4 (bit-reproducible) or libx264.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the timelines and motions.")
@threads_option
def synth_videos_cmd(out: str, num_videos: int, num_classes: int, size: int, fps: float,
                     min_duration: float, max_duration: float, max_instances: int, val_fraction: float,
                     codec: str, seed: int) -> None:
    """Write small mp4 videos whose motion patterns are the action classes."""
    from tadkit.data.synthetic import SynthVideoConfig, synth_videos

    try:
        cfg = SynthVideoConfig(num_videos=num_videos, num_classes=num_classes, size=size, fps=fps,
                               min_duration=min_duration, max_duration=max_duration,
                               max_instances=max_instances, val_fraction=val_fraction, codec=codec,
                               seed=seed)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    result = synth_videos(out, cfg)
    s = result.annotations.summary()["subsets"]
    parts = ", ".join(f"{k}: {plural(v['videos'], 'video')} / {plural(v['instances'], 'instance')}"
                      for k, v in s.items())
    click.echo(f"{result.root}: {plural(len(result.videos), 'video')} ({parts}); "
               f"ground truth {result.annotation_file}")


def _list_layouts(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--list-layouts``: print every known release and its time rule, and exit."""
    if not value or ctx.resilient_parsing:
        return
    for layout in LAYOUTS.values():
        click.echo(f"{layout.name}\n  files     {layout.files}\n  times     {layout.convention()}\n"
                   f"  backbone  {layout.backbone} ({', '.join(layout.streams)})\n  release   {layout.source}")
    ctx.exit(0)


@data.command("import-features")
@click.argument("source", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Feature store directory to write (created; a rerun skips imported videos).")
@click.option("--layout", "layout_name", required=True, type=click.Choice(list(LAYOUTS)),
              help="The release SOURCE comes from (its files and time rule; --list-layouts).")
@click.option("--list-layouts", is_flag=True, is_eager=True, expose_value=False, callback=_list_layouts,
              help="List the known releases with their time rules and exit.")
@click.option("--annotations", "annotations_path", type=click.Path(exists=True), default=None,
              help="Ground truth: selects the videos and gives their fps and durations.")
@click.option("--format", "fmt", type=_FMT, default="auto", show_default=True, help="Annotation format.")
@click.option("--subset", default=None, help="Only videos of these annotated subsets (comma-separated).")
@click.option("--video-info", type=click.Path(exists=True, dir_okay=False), default=None,
              help="BSN's video_info_new.csv: resized features span featureFrame / numFrame of the video.")
@click.option("--backbone", default=None, help="Declared backbone, recorded in the provenance [default: the layout's].")
@click.option("--streams", default=None, help="Declared streams, comma-separated [default: the layout's].")
@click.option("--fps", type=float, default=None,
              help="Sample fps of the features [default: the layout's, else each video's from --annotations].")
@click.option("--stride", type=int, default=None, help="Frames between features [default: the layout's].")
@click.option("--clip-len", type=int, default=None, help="Frames per feature [default: the layout's].")
@click.option("--offset-frames", type=float, default=None,
              help="Frame of feature 0's time stamp [default: the layout's, else clip-len / 2].")
@click.option("--prefix", default=None, help="Prefix of file / key names that is not part of the video id.")
@threads_option
def import_features_cmd(source: str, out: str, layout_name: str, annotations_path: str | None, fmt: str,
                        subset: str | None, video_info: str | None, backbone: str | None, streams: str | None,
                        fps: float | None, stride: int | None, clip_len: int | None, offset_frames: float | None,
                        prefix: str | None) -> None:
    """Write published features (ActionFormer, TSP, BMN, HACS, OpenTAD) into a feature store."""
    from tadkit.data.annotations import load_annotations
    from tadkit.data.importers import import_features

    layout = LAYOUTS[layout_name].with_overrides(
        backbone=backbone, fps=fps, stride=stride, clip_len=clip_len, offset=offset_frames, prefix=prefix,
        streams=None if streams is None else tuple(s.strip() for s in streams.split(",") if s.strip()))
    ann = None
    if annotations_path is not None:
        ann = load_annotations(annotations_path, fmt, warn=False)
        if subset:
            ann = ann.subset(subset)
    elif subset:
        raise click.UsageError("--subset needs --annotations")
    else:  # no video could be timed: one line now, not one failure per video
        _check_times_without_annotations(layout, video_info)
    report = import_features(source, out, layout, annotations=ann, video_info=video_info)
    click.echo(f"{report.store}: imported {plural(len(report.written), 'video')}, skipped "
               f"{len(report.skipped)} already present, {len(report.failed)} failed ({report.seconds:.1f} s)")
    if report.missing:
        click.echo(f"warning: {plural(len(report.missing), 'annotated video')} without features "
                   f"(e.g. {report.missing[0]})", err=True)
    if report.overrun:
        click.echo(f"warning: the features of {plural(len(report.overrun), 'video')} run past the annotated "
                   f"end (e.g. {report.overrun[0]}): check --fps / --stride", err=True)
    for vid, reason in list(report.failed.items())[:10]:
        click.echo(f"  failed {vid}: {reason}", err=True)
    if report.failed:
        raise click.exceptions.Exit(3)


def _check_times_without_annotations(layout: Layout, video_info: str | None) -> None:
    """``ConfigError`` when ``layout`` needs what only annotations give: per-video fps (strided, no
    fixed fps) or durations (resized, no ``--video-info``)."""
    from tadkit.errors import ConfigError

    if layout.rule == "strided" and layout.fps is None:
        raise ConfigError(f"layout {layout.name} takes each video's fps from the annotations: "
                          "pass --annotations (that give fps) or --fps")
    if layout.rule == "resized" and video_info is None:
        raise ConfigError(f"layout {layout.name} spreads each video's features over its duration: "
                          "pass --annotations (that give durations) or --video-info")


@data.command("stats")
@click.argument("annotations_path", type=click.Path(exists=True))
@click.option("--format", "fmt", type=_FMT, default="auto", show_default=True,
              help="Annotation format (auto: detected from the file).")
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
    click.echo(f"{annotations_path}: {plural(len(ann.videos), 'video')}, {plural(len(ann), 'instance')}, "
               f"{plural(len(ann.classes), 'class', 'classes')}")
    click.echo(f"  {'subset':12s} {'videos':>7s} {'annotated':>9s} {'instances':>9s} {'classes':>7s} {'ambiguous':>9s}")
    for name, row in summary["subsets"].items():
        click.echo(f"  {name:12s} {row['videos']:7d} {row['videos_with_instances']:9d} {row['instances']:9d} "
                   f"{row['classes']:7d} {row['ambiguous']:9d}")
    for msg in summary["problems"]:
        click.echo(f"  note: {msg}")
