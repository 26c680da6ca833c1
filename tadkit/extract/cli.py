"""``tadkit extract``: videos -> a feature store (see ``docs/extraction.md``).

Exit codes: 0 when every video is in the store (extracted now or earlier),
3 when at least one video failed (the others are extracted; failures are
listed on stderr and kept in ``<out>/failures/``), 1 for a usage or input
error before any extraction (one ``error:`` line).
"""
from __future__ import annotations

import os

import click

from tadkit.errors import ConfigError, InputError
from tadkit.text import plural
from tadkit.threads import threads_option

#: Exit code when some videos failed (the rest was extracted).
EXIT_SOME_FAILED = 3
#: The families of ``tadkit.extract.backbones`` (listed here so that ``--help`` does not import torch).
BACKBONE_FAMILIES = ("i3d", "tsn", "slowfast_r50", "slowfast_r101", "r2plus1d_34", "mfe")
#: Every checkpoint key layout some backbone family accepts (each family checks its own).
CHECKPOINT_FORMATS = ("auto", "piergiaj", "hassony2", "mmaction2", "torchvision", "pyslowfast", "pytorchvideo",
                      "ig65m")


def _list_backbones(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--list-backbones``: print every family and exit (before the other options are checked)."""
    if not value or ctx.resilient_parsing:
        return
    click.echo(list_backbones_text())
    ctx.exit(0)


@click.command("extract")
@click.argument("videos", nargs=-1, required=True, type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Feature store directory.")
@click.option("--list-backbones", is_flag=True, is_eager=True, expose_value=False, callback=_list_backbones,
              help="List the backbone families (streams, recipe, feature dim, checkpoint formats) and exit.")
@click.option("--backbone", default="i3d", show_default=True, type=click.Choice(BACKBONE_FAMILIES),
              help="Backbone family (details: --list-backbones).")
@click.option("--streams", default=None, help="Comma-separated streams in feature order [default: all, e.g. rgb,flow].")
@click.option("--weights", "weights", multiple=True, metavar="STREAM=PATH",
              help="Local checkpoint of a stream, e.g. rgb=rgb_imagenet.pt (repeat per stream).")
@click.option("--random-weights", is_flag=True, help="Use seeded random weights (tests, benchmarks).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of --random-weights.")
@click.option("--checkpoint-format", default="auto", show_default=True,
              type=click.Choice(CHECKPOINT_FORMATS), help="Key layout of the checkpoints (see --list-backbones).")
@click.option("--bn-eps", type=float, default=None,
              help="BatchNorm eps [default: the checkpoint layout's: piergiaj 1e-3, hassony2 1e-5; random 1e-3].")
@click.option("--fps", type=float, default=None, help="Sample fps [default: each video's own].")
@click.option("--clip-len", type=int, default=None, help="Frames per snippet [default: the recipe's, i3d 16].")
@click.option("--stride", type=int, default=None, help="Frames between snippet starts [default: the recipe's, i3d 4].")
@click.option("--spatial-grid", type=int, default=None, metavar="G",
              help="Also store a G x G grid of the last stage per snippet ([T, G, G, C]).")
@click.option("--levels", is_flag=True, help="Also store intermediate stages with their own times (levels/...).")
@click.option("--class-scores", is_flag=True,
              help="Store the classifier's class scores (logits) per stream instead of the pooled features "
                   "(TSN; the CUHK ActivityNet features). Needs checkpoints with a classifier.")
@click.option("--recipe", default=None, help="Preprocessing recipe [default: the backbone's first, i3d: i3d_thumos].")
@click.option("--size", type=int, default=None,
              help="Crop size override, the resize scales alike [default: the recipe's: i3d/slowfast 224, "
                   "tsn 256, r2plus1d_34/mfe 112].")
@click.option("--device", default=None, help="cpu, cuda or cuda:N [default: cuda when available].")
@click.option("--batch-size", type=int, default=None, help="Snippets per forward [default: 2 on CPU, 16 on CUDA].")
@click.option("--amp", is_flag=True, help="float16 autocast (CUDA only).")
@click.option("--flow-dir", type=click.Path(file_okay=False), default=None,
              help="Precomputed flow: DIR/<video id>/x_*.jpg, y_*.jpg (denseflow layout).")
@click.option("--flow-size", type=int, default=None,
              help="Compute TV-L1 on frames with this shorter side (faster, coarser).")
@click.option("--flow-scales", type=int, default=5, show_default=True, help="TV-L1 pyramid scales.")
@click.option("--flow-warps", type=int, default=5, show_default=True, help="TV-L1 warps per scale.")
@click.option("--flow-threads", type=int, default=1, show_default=True, help="Frame pairs computed in parallel.")
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "decord", "pyav"]),
              help="Video decoder (auto: decord, PyAV when decord fails).")
@click.option("--workers", type=int, default=1, show_default=True, help="Videos decoded in parallel.")
@click.option("--on-source-change", type=click.Choice(["refuse", "reextract"]), default="refuse", show_default=True,
              help="A video already in --out whose source file changed (replaced, re-encoded, another file "
                   "of that name): refuse the run, or extract it again.")
@click.option("--distributed", is_flag=True, help="Require a torchrun environment and shard videos by rank.")
@click.option("--progress/--no-progress", default=None,
              help="Progress per snippet [default: a bar on a terminal, else a line every "
                   "$TADKIT_PROGRESS_INTERVAL (30) seconds].")
@threads_option
def extract(videos: tuple[str, ...], out: str, backbone: str, streams: str | None, weights: tuple[str, ...],
            random_weights: bool, seed: int, checkpoint_format: str, bn_eps: float | None, fps: float | None,
            clip_len: int | None, stride: int | None, spatial_grid: int | None, levels: bool,
            class_scores: bool, recipe: str | None, size: int | None,
            device: str | None, batch_size: int | None, amp: bool, flow_dir: str | None,
            flow_size: int | None, flow_scales: int, flow_warps: int, flow_threads: int, backend: str,
            workers: int, on_source_change: str, distributed: bool, progress: bool | None) -> None:
    """Extract snippet features of VIDEOS (files, folders or list files) into --out.

    A rerun skips videos already in the store (from the same source files);
    a killed run can simply be restarted. Exit code 3 when some videos failed
    (listed at the end).
    """
    from tadkit.extract.flow import FlowOptions
    from tadkit.extract.runner import ExtractOptions, distributed_env, extract as run_extract
    from tadkit.extract.video import collect_videos

    if distributed and "WORLD_SIZE" not in os.environ:
        raise ConfigError("--distributed needs the torchrun environment (RANK, WORLD_SIZE); "
                          "launch with: torchrun --nproc-per-node N -m tadkit extract ...")
    paths = collect_videos(videos)
    if not paths:
        raise InputError(", ".join(videos), "no video files found")
    opts = ExtractOptions(
        backbone=backbone,
        streams=None if streams is None else tuple(s for s in streams.split(",") if s.strip()),
        weights=_parse_weights(weights),
        random_weights=random_weights, seed=seed, checkpoint_format=checkpoint_format, bn_eps=bn_eps,
        fps=fps, clip_len=clip_len, stride=stride, spatial_grid=spatial_grid, levels=levels,
        class_scores=class_scores, recipe=recipe, size=size, device=device,
        batch_size=batch_size, amp=amp, flow_dir=flow_dir, backend=backend, workers=workers,
        flow=FlowOptions(size=flow_size, scales=flow_scales, warps=flow_warps, threads=flow_threads),
        on_source_change=on_source_change, decoder_logs=bool((click.get_current_context().find_root().obj
                                                               or {}).get("debug")),
    )
    rank, world = distributed_env()
    report = run_extract(paths, out, opts, rank=rank, world_size=world, progress=progress)
    who = f"rank {rank}/{world}: " if world > 1 else ""
    for vid, why in report.redone:
        click.echo(f"note: extracted {vid} again: {why}", err=True)
    click.echo(f"{who}{len(report.done)} extracted, {len(report.skipped)} already present, "
               f"{len(report.failed)} failed, of {plural(report.total, 'video')} "
               f"({plural(report.snippets, 'snippet')} in {report.seconds:.1f} s) -> {out}")
    for vid, what in report.warnings:
        click.echo(f"warning: {vid}: {what}", err=True)
    if report.failed:
        click.echo(f"warning: {plural(len(report.failed), 'video')} failed (recorded in {os.path.join(out, 'failures')}):",
                   err=True)
        for vid, stage, reason in report.failed:
            click.echo(f"  {vid} [{stage}]: {' '.join(reason.split())}", err=True)
        raise click.exceptions.Exit(EXIT_SOME_FAILED)


def list_backbones_text() -> str:
    """The ``--list-backbones`` table: one block per family."""
    from tadkit.extract import backbones
    from tadkit.extract.transforms import get_recipe

    lines = []
    for fam in backbones.families():
        dim = fam.stream_dim * len(fam.streams)
        recipe = get_recipe(fam.recipes[0])
        lines.append(f"{fam.name}")
        lines.append(f"  streams       {', '.join(f'{s}={m}' for s, m in fam.models.items())}")
        lines.append(f"  feature dim   {dim} ({' + '.join([str(fam.stream_dim)] * len(fam.streams))})")
        lines.append(f"  recipes       {', '.join(fam.recipes)} (default {recipe.name}: {recipe.clip_len}-frame "
                     f"clips every {recipe.stride} frames, crop {recipe.crop})")
        for stream, text in fam.input_recipe.items():
            lines.append(f"  input {stream:7s} {text}")
        lines.append(f"  checkpoints   {', '.join(fam.checkpoint_formats)} (--checkpoint-format, or auto)")
        if fam.notes:
            lines.append(f"  notes         {fam.notes}")
    return "\n".join(lines)


def _parse_weights(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        stream, sep, path = item.partition("=")
        if not sep or not stream or not path:
            raise ConfigError(f"--weights expects STREAM=PATH (e.g. rgb=rgb_imagenet.pt), got {item!r}")
        if stream in out:
            raise ConfigError(f"--weights given twice for stream {stream!r}")
        if not os.path.isfile(path):
            raise InputError(path, "no such checkpoint file")
        out[stream] = path
    return out
