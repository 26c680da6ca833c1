"""``tadkit demo``: the whole pipeline on generated data, in a few minutes on a CPU.

It runs exactly the commands a user runs, in order, and prints each one:

1. ``tadkit data synth-videos``  small mp4s whose motion patterns are the classes,
   with ActivityNet-format ground truth (training / validation subsets);
2. ``tadkit extract --backbone i3d``  two-stream I3D features (RGB + TV-L1 flow)
   with *random* weights — no checkpoint can be downloaded, so the features are
   random projections of the frames and the resulting mAP is modest;
3. ``tadkit detect train``  a small MLTPN on the training videos;
4. ``tadkit detect infer``  detections for the validation videos (official JSON);
5. ``tadkit evaluate --dataset anet``  mAP, per-class CSV, PR curves and a
   detection timeline per validation video.

Everything lands under ``--out``; a rerun reuses finished stages (extraction
skips published videos), ``--force`` starts over. Deterministic for a seed.
"""
from __future__ import annotations

import json
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import click

from tadkit.errors import TadkitError
from tadkit.threads import threads_option


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run (``--fast`` is the CI-sized one)."""

    num_videos: int
    num_classes: int
    size: int
    fps: float
    min_duration: float
    max_duration: float
    crop: int
    flow_size: int
    flow_scales: int
    flow_warps: int
    epochs: int
    lr: float
    length: int


FULL = DemoSettings(num_videos=14, num_classes=4, size=64, fps=8.0, min_duration=10.0,
                    max_duration=14.0, crop=64, flow_size=64, flow_scales=2, flow_warps=1,
                    epochs=60, lr=3e-3, length=64)
FAST = DemoSettings(num_videos=6, num_classes=3, size=64, fps=8.0, min_duration=8.0,
                    max_duration=10.0, crop=64, flow_size=64, flow_scales=2, flow_warps=1,
                    epochs=6, lr=3e-3, length=32)


@click.command()
@click.option("--out", type=click.Path(file_okay=False), default="tadkit-demo", show_default=True,
              help="Folder for videos, features, run, predictions and report.")
@click.option("--fast", is_flag=True, help="A smaller, quicker run (used by the test suite).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of videos, weights and training.")
@click.option("--force", is_flag=True, help="Delete --out first instead of reusing finished stages.")
@threads_option
def demo(out: str, fast: bool, seed: int, force: bool) -> None:
    """Run the demo pipeline: synthetic videos -> extract -> train -> infer -> evaluate."""
    run_demo(Path(out), FAST if fast else FULL, seed=seed, force=force)


def run_demo(out: Path, s: DemoSettings, seed: int = 0, force: bool = False) -> dict:
    """Run every stage into ``out``; returns the evaluation results (fractions)."""
    if force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    videos, feats, run = out / "videos", out / "features", out / "run"
    gt, preds, report = videos / "annotations.json", out / "predictions.json", out / "report"
    started = time.perf_counter()

    if not gt.is_file():
        _stage("1/5 synthetic videos", [
            "data", "synth-videos", "--out", videos, "--num-videos", s.num_videos,
            "--num-classes", s.num_classes, "--size", s.size, "--fps", s.fps,
            "--min-duration", s.min_duration, "--max-duration", s.max_duration, "--seed", seed])
    _stage("2/5 extract I3D two-stream features (random weights)", [
        "extract", "--backbone", "i3d", videos, "--out", feats, "--random-weights", "--seed", seed,
        "--size", s.crop, "--flow-size", s.flow_size, "--flow-scales", s.flow_scales,
        "--flow-warps", s.flow_warps, "--batch-size", 8, "--device", "cpu"])
    if not (run / "checkpoints").is_dir() or force:
        if run.exists():
            shutil.rmtree(run)
        _stage("3/5 train MLTPN", [
            "detect", "train", "--features", feats, "--annotations", gt, "--out", run,
            *_sets(head="mltpn", **{
                "data.mode": "resize", "data.length": s.length, "data.train_subset": "training",
                "data.test_subset": "validation", "mltpn.embed_dim": 64, "mltpn.thm_channels": 32,
                "mltpn.thm_out_channels": 32, "mltpn.num_thms": 2, "mltpn.num_scales": 3,
                "mltpn.transform_k1": 16, "mltpn.transform_k2": 16,
                "optim.name": "adam", "optim.lr": s.lr, "optim.weight_decay": 0.0,
                "schedule.name": "cosine", "train.epochs": s.epochs, "train.batch_size": 4,
                "train.seed": seed, "train.checkpoint_every": s.epochs, "train.device": "cpu",
                "postprocess.method": "gaussian", "postprocess.sigma": 0.5,
                "postprocess.max_per_video": 50})])
    _stage("4/5 detect actions in the validation videos", [
        "detect", "infer", "--run", run, "--features", feats, "--annotations", gt,
        "--subset", "validation", "--out", preds, "--device", "cpu"])
    results_json = report / "results.json"
    _stage("5/5 evaluate (ActivityNet protocol)", [
        "evaluate", "--dataset", "anet", "--gt", gt, "--pred", preds, "--subset", "validation",
        "--json", results_json, "--out", report, "--timelines", s.num_videos])
    results = json.loads(results_json.read_text())
    elapsed = time.perf_counter() - started
    click.echo("")
    click.echo(f"demo finished in {elapsed:.0f} s — average mAP {100 * results['average_mAP']:.1f}% "
               "(random backbone weights: modest by design)")
    for label, path in [("videos + ground truth", videos), ("features", feats), ("training run", run),
                        ("predictions", preds), ("report", report)]:
        click.echo(f"  {label:22s} {path}")
    return results


def _sets(**pairs: object) -> list[str]:
    args: list[str] = []
    for key, value in pairs.items():
        args += ["--set", f"{key}={value}"]
    return args


def _stage(title: str, args: list[object]) -> None:
    """Run one ``tadkit`` command in-process, as a user would type it."""
    from tadkit.cli import cli

    argv = [str(a) for a in args]
    click.secho(f"\n== {title}", bold=True)
    click.echo("$ tadkit " + " ".join(shlex.quote(a) for a in argv))
    try:
        code = cli.main(args=argv, prog_name="tadkit", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    if isinstance(code, int) and code not in (0,):
        raise TadkitError(f"demo stage '{title}' failed (exit code {code})")
