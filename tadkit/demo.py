"""``tadkit demo``: the whole pipeline on generated data, in a few minutes on a CPU.

It runs exactly the commands a user runs, in order, and prints each one:

1. ``tadkit data synth-videos``  small mp4s whose motion patterns are the classes,
   with ActivityNet-format ground truth (training / validation subsets; every
   class in both);
2. ``tadkit extract --backbone i3d``  two-stream I3D features (RGB + TV-L1 flow)
   with *random* weights — no checkpoint can be downloaded, so the features are
   random projections of the frames and of the flow;
3. ``tadkit detect train``  a small TAL-MTS on the training videos, with the
   config the demo writes to ``<out>/detect.yaml``;
4. ``tadkit detect infer``  detections for the validation videos (official JSON);
5. ``tadkit evaluate --dataset anet``  mAP, per-class CSV, PR curves and a
   detection timeline per validation video.

The full demo reaches about 60 % average mAP on its 14 validation videos in
about two minutes of CPU time (``benchmarks/RESULTS.md``, "Demo (issue 20)");
``--fast`` is a few seconds of plumbing on 4 tiny videos, not a result.

Threads: every torch stage (I3D forward, training, inference) runs on one
thread, whatever ``--threads`` says, because a different thread count changes
the order of float sums and with it the numbers. ``--threads N`` computes the
TV-L1 flow of N frame pairs at once (each pair on its own, so the flow is the
same at any N). The demo's numbers therefore depend only on the seed (for a
given torch version and CPU kind).

Everything lands under ``--out``; a rerun reuses finished stages (extraction
skips published videos), ``--force`` starts over.
"""
from __future__ import annotations

import json
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

from tadkit.errors import TadkitError
from tadkit.threads import apply_threads, resolve_threads, threads_option

#: Threads of every torch stage of the demo (see the module docstring).
TORCH_THREADS = 1


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run (``--fast`` is the test-sized one). Times in seconds, sizes in pixels."""

    num_videos: int
    num_classes: int
    val_fraction: float
    size: int
    fps: float
    min_duration: float
    max_duration: float
    epochs: int


FULL = DemoSettings(num_videos=48, num_classes=4, val_fraction=0.3, size=48, fps=8.0,
                    min_duration=8.0, max_duration=11.0, epochs=60)
FAST = DemoSettings(num_videos=4, num_classes=2, val_fraction=0.5, size=32, fps=8.0,
                    min_duration=4.0, max_duration=4.5, epochs=40)


@click.command()
@click.option("--out", type=click.Path(file_okay=False), default="tadkit-demo", show_default=True,
              help="Folder for videos, features, run, predictions and report.")
@click.option("--fast", is_flag=True, help="A smaller, quicker run (used by the test suite).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of videos, weights and training.")
@click.option("--force", is_flag=True, help="Delete --out first instead of reusing finished stages.")
@threads_option
def demo(out: str, fast: bool, seed: int, force: bool) -> None:
    """Run the demo pipeline: synthetic videos -> extract -> train -> infer -> evaluate.

    The torch stages always run on one thread (the numbers are the same at any
    --threads); --threads N computes the optical flow of N frame pairs at once.
    """
    run_demo(Path(out), FAST if fast else FULL, seed=seed, force=force, flow_threads=resolve_threads())


def run_demo(out: Path, s: DemoSettings, seed: int = 0, force: bool = False, flow_threads: int = 1) -> dict:
    """Run every stage into ``out``; returns the evaluation results (fractions)."""
    if force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    videos, feats, run = out / "videos", out / "features", out / "run"
    gt, preds, report = videos / "annotations.json", out / "predictions.json", out / "report"
    config = out / "detect.yaml"
    threads = ["--threads", TORCH_THREADS]
    apply_threads(TORCH_THREADS)
    started = time.perf_counter()

    if not gt.is_file():
        _stage("1/5 synthetic videos", [
            "data", "synth-videos", "--out", videos, "--num-videos", s.num_videos,
            "--num-classes", s.num_classes, "--val-fraction", s.val_fraction, "--size", s.size,
            "--fps", s.fps, "--min-duration", s.min_duration, "--max-duration", s.max_duration,
            "--seed", seed])
    _stage("2/5 extract I3D two-stream features (random weights)", [
        "extract", "--backbone", "i3d", videos, "--out", feats, "--random-weights", "--seed", seed,
        "--recipe", "i3d_thumos_resize", "--size", s.size, "--flow-size", s.size, "--flow-scales", 2,
        "--flow-warps", 1, "--flow-threads", flow_threads, "--batch-size", 8, "--device", "cpu", *threads])
    if not (run / "checkpoints").is_dir() or force:
        if run.exists():
            shutil.rmtree(run)
        config.write_text(yaml.safe_dump(detect_config(s, seed), sort_keys=False))
        _stage("3/5 train TAL-MTS", [
            "detect", "train", "--config", config, "--features", feats, "--annotations", gt, "--out", run,
            "--device", "cpu", *threads])
    _stage("4/5 detect actions in the validation videos", [
        "detect", "infer", "--run", run, "--features", feats, "--annotations", gt,
        "--subset", "validation", "--out", preds, "--device", "cpu", *threads])
    results_json = report / "results.json"
    _stage("5/5 evaluate (ActivityNet protocol)", [
        "evaluate", "--dataset", "anet", "--gt", gt, "--pred", preds, "--subset", "validation",
        "--json", results_json, "--out", report, "--timelines", s.num_videos])
    results = json.loads(results_json.read_text())
    elapsed = time.perf_counter() - started
    click.echo("")
    click.echo(f"demo finished in {elapsed:.0f} s — average mAP {100 * results['average_mAP']:.1f}% "
               f"(tIoU 0.5:0.95) on {results['num_videos']} validation videos; the same at any --threads")
    for label, path in [("videos + ground truth", videos), ("features", feats), ("detector config", config),
                        ("training run", run), ("predictions", preds), ("report", report)]:
        click.echo(f"  {label:22s} {path}")
    return results


def detect_config(s: DemoSettings, seed: int) -> dict[str, Any]:
    """The demo's ``detect train`` config: a small TAL-MTS over each whole video resized to 64 cells."""
    return {
        "head": "talmts",
        "talmts": {"dim": 64, "num_levels": 4, "first_stride": 1, "rfp": False, "stt_dim": 32,
                   "stt_temporal_layers": 1, "fsa_dim": 32, "num_heads": 4, "boundary_dim": 16},
        "data": {"mode": "resize", "length": 64, "train_subset": "training", "test_subset": "validation"},
        "optim": {"name": "adam", "lr": 1.0e-3, "weight_decay": 1.0e-4},
        "schedule": {"name": "cosine", "warmup_epochs": 1},
        "train": {"epochs": s.epochs, "batch_size": 4, "seed": seed, "checkpoint_every": s.epochs},
        "postprocess": {"method": "linear", "iou_threshold": 0.3, "max_per_video": 50},
    }


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
