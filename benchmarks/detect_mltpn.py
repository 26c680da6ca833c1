"""Benchmark: MLTPN vs a per-snippet linear baseline on synthetic THUMOS14-timeline features.

Steps (the user story of issue 7, on CPU)::

    tadkit data synth-features --annotations thumos14.json --subset validation,test --out WORK/feats_...
    tadkit detect train --config CONFIG --features WORK/feats_... --annotations thumos14.json \\
        --out WORK/run_NAME --set ...     (the config at a CPU width, see CPU_WIDTH)
    tadkit detect infer --run WORK/run_NAME --features WORK/feats_... --subset test --out WORK/preds_NAME.json
    THUMOS14 mAP@0.3:0.7 (tadkit.evaluate, thumos14 protocol): MLTPN and the baseline, per class too

The baseline is a linear classifier over single snippets (C + 1 classes, trained
with cross-entropy on the validation videos); its detections are the runs of
consecutive snippets sharing a non-background arg-max class, scored by the
mean probability of that class over the run.

Only the architecture widths are overridden (``CPU_WIDTH``); optimiser, schedule
and epochs come from ``--config`` (``configs/mltpn/thumos14.yaml``, the default
recipe; ``configs/mltpn/thumos14_paper.yaml`` for the paper's SGD), so the
figures are those of the config a user starts from. ``--feature-dim``,
``--clip-len``, ``--stride`` and ``--fps`` set the synthetic features (32-dim at
about 3.75 snippets/s by default; ``--feature-dim 256 --stride 4 --fps 30`` is
I3D's 7.5 snippets/s). To compare with another commit, run this script with
``PYTHONPATH`` pointing at an export of that commit and ``--config`` at its
config file.

Prints and writes (``--json``) training seconds per epoch (wall and CPU), the
loss curve, inference speed, the mAP table and the per-class average AP.
Usage::

    python benchmarks/detect_mltpn.py --annotations thumos14.json --work /tmp/bench --threads 1
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from tadkit.cli import main as tadkit_main
from tadkit.data.annotations import load_annotations
from tadkit.data.features import FeatureStore
from tadkit.evaluate import get_protocol, load_ground_truth, load_predictions
from tadkit.timeline import TimeAxis, grid_to_segments

REPO = Path(__file__).resolve().parents[1]

#: MLTPN sized for a 2-core CPU: the paper's 6 THMs, 5 scales and 7 anchors, narrower maps (0.27 M
#: parameters over 256-dim features instead of 6.6 M at the paper's widths). Nothing else is overridden.
CPU_WIDTH = [
    "mltpn.embed_dim=32", "mltpn.transform_k1=8", "mltpn.transform_k2=8", "mltpn.thm_channels=16",
    "mltpn.thm_out_channels=16", "mltpn.head_squeeze=2", "mltpn.mfm_reduction=4",
]
#: benchmark housekeeping (no effect on the model): checkpoints only at the end, a loss every 20 steps
HOUSEKEEPING = ["train.checkpoint_every=1000", "train.log_every=20"]

#: an alternative post-processing, applied to the saved candidates without the model
SOFT_NMS = ["method=gaussian", "sigma=0.5", "voting=true", "voting_iou=0.7", "max_per_video=200"]

#: the THUMOS14 classes whose instances are annotated twice (every CliffDiving is also a Diving)
TWIN_CLASSES = ("CliffDiving", "Diving")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(ap, REPO / "configs" / "mltpn" / "thumos14.yaml")
    ap.add_argument("--name", default="mltpn", help="run name: WORK/run_NAME, WORK/preds_NAME.json")
    ap.add_argument("--softnms", action="store_true",
                    help="also re-post-process the candidates with Gaussian soft-NMS + voting (no model)")
    args = ap.parse_args(argv)
    work, feats = prepare(args)
    overrides = ([] if args.full_width else CPU_WIDTH) + HOUSEKEEPING + epoch_overrides(args) + args.overrides
    run = work / f"run_{args.name}"
    train(f"train {args.name}", args.config, feats, args.annotations, run, overrides)
    figures = {"run": args.name, "config": str(args.config), "overrides": overrides, **training_figures(run)}
    raw = work / f"candidates_{args.name}.json"
    figures.update(evaluate(run, feats, args.annotations, work / f"preds_{args.name}.json", raw=raw))
    if args.softnms:
        soft = work / f"preds_{args.name}_softnms.json"
        argv = ["detect", "postprocess", "--candidates", str(raw), "--run", str(run), "--out", str(soft)]
        run_tadkit("re-tune post-processing", argv + sum((["--set", o] for o in SOFT_NMS), []))
        figures["softnms"] = score(args.annotations, soft)
        figures["softnms_settings"] = SOFT_NMS
    if args.baseline:
        figures["linear_baseline"] = baseline_figures(args.annotations, feats, work / "linear_baseline.json")
    figures.update(environment())
    report(figures, args.json)
    return figures


# --------------------------------------------------------------------------- shared with detect_talmts.py
def add_common_arguments(ap: argparse.ArgumentParser, default_config: Path) -> None:
    """Options every detection benchmark takes (data, features, config, epochs, threads, output)."""
    ap.add_argument("--annotations", required=True,
                    help="THUMOS14 annotations (ActionFormer's thumos14.json) whose timeline the features follow")
    ap.add_argument("--work", default="/tmp/tadkit-bench-detect")
    ap.add_argument("--config", type=Path, default=default_config, help="detection config to train")
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs (default: the config's)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra config overrides for detect train (applied last)")
    ap.add_argument("--full-width", action="store_true", help="train the config's own widths, not CPU_WIDTH")
    ap.add_argument("--feature-dim", type=int, default=32, help="synthetic feature channels")
    ap.add_argument("--clip-len", type=int, default=16, help="frames per synthetic snippet")
    ap.add_argument("--stride", type=int, default=8, help="frames between synthetic snippets")
    ap.add_argument("--fps", type=float, default=None, help="sample fps (default: each video's own)")
    ap.add_argument("--levels", default=None,
                    help="also store synthetic backbone levels, steps per snippet (e.g. 2,1: levels x2, x1)")
    ap.add_argument("--baseline", action="store_true", help="also train and score the linear baseline")
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 on a shared CPU)")


def prepare(args: argparse.Namespace) -> tuple[Path, Path]:
    """Threads, warnings, the work folder and the synthetic features; returns ``(work, features)``."""
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    fps = "own" if args.fps is None else f"{args.fps:g}"
    levels = f"_levels{args.levels.replace(',', '-')}" if args.levels else ""
    feats = work / f"feats_d{args.feature_dim}_c{args.clip_len}_s{args.stride}_fps{fps}{levels}"
    cmd = ["data", "synth-features", "--annotations", args.annotations, "--subset", "validation,test",
           "--out", str(feats), "--feature-dim", str(args.feature_dim), "--clip-len", str(args.clip_len),
           "--stride", str(args.stride)]
    cmd += ([] if args.fps is None else ["--fps", str(args.fps)]) + (["--levels", args.levels] if args.levels else [])
    run_tadkit("synthetic features", cmd)
    return work, feats


def epoch_overrides(args: argparse.Namespace) -> list[str]:
    return [] if args.epochs is None else [f"train.epochs={args.epochs}"]


def train(name: str, config: Path, feats: Path, annotations: str, run: Path, overrides: Sequence[str]) -> None:
    """``tadkit detect train`` unless ``run`` already holds a finished run."""
    if (run / "checkpoints" / "last.pt").exists():
        return
    argv = ["detect", "train", "--config", str(config), "--features", str(feats), "--annotations", annotations,
            "--out", str(run)]
    for o in overrides:
        argv += ["--set", o]
    run_tadkit(name, argv)


def training_figures(run: Path) -> dict[str, Any]:
    """Seconds per epoch and the loss curve (per epoch and per logged step) of a finished run."""
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["event"] == "epoch"]
    steps = [r for r in records if r["event"] == "step"]
    return {"epochs": len(epochs),
            "train_seconds_per_epoch": round(float(np.median([r["seconds"] for r in epochs])), 1) if epochs else None,
            "loss_per_epoch": [round(float(r["loss"]), 4) for r in epochs],
            "loss_steps": [[r["epoch"], r["iter"], round(float(r["loss"]), 4)] for r in steps]}


def evaluate(run: Path, feats: Path, annotations: str, preds: Path, checkpoint: str = "last",
             raw: Path | None = None) -> dict[str, Any]:
    """Infer the test videos with ``checkpoint`` of ``run`` and score them; wall and CPU seconds too."""
    n_test = len(load_annotations(annotations).subset("test").video_ids())
    wall, cpu = time.perf_counter(), time.process_time()
    argv = ["detect", "infer", "--run", str(run), "--features", str(feats), "--subset", "test", "--out", str(preds),
            "--checkpoint", checkpoint]
    run_tadkit(f"infer {run.name} ({checkpoint})", argv + ([] if raw is None else ["--raw", str(raw)]))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"infer_seconds": round(wall, 1), "infer_cpu_seconds": round(cpu, 1),
            "infer_videos_per_second": round(n_test / wall, 2), **score(annotations, preds)}


def score(annotations: str, preds: Path) -> dict[str, Any]:
    """THUMOS14 mAP (%) per threshold, its 0.3:0.7 average and every class's 0.3:0.7 average AP."""
    res = get_protocol("thumos14").evaluate_detection(load_ground_truth(annotations, subset="test"),
                                                      load_predictions(preds))
    thresholds = [round(float(t), 2) for t in res.tiou_thresholds]
    rows = np.isin(np.round(res.tiou_thresholds, 6), np.round(res.average_over, 6))
    per_class = res.ap[rows].mean(0) * 100
    return {"mAP": dict(zip(thresholds, np.round(res.mAP * 100, 2).tolist())),
            "average_mAP_0.3_0.7": round(res.average_mAP * 100, 2),
            "class_AP_0.3_0.7": {lab: round(float(v), 2) for lab, v in zip(res.labels, per_class)}}


def baseline_figures(annotations: str, feats: Path, out: Path) -> dict[str, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    linear_baseline(annotations, feats, out)
    return {"seconds": round(time.perf_counter() - wall, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
            **score(annotations, out)}


def environment() -> dict[str, Any]:
    """Threads and the process's CPU time / peak RSS so far (the machine is shared: wall time varies)."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return {"torch_threads": torch.get_num_threads(), "process_cpu_seconds": round(use.ru_utime + use.ru_stime, 1),
            "peak_rss_mb": round(use.ru_maxrss / 1024, 1)}


def report(figures: dict[str, Any], path: str | None) -> None:
    text = json.dumps(figures, indent=1)
    print(text)
    if path:
        Path(path).write_text(text)


def linear_baseline(annotations: str, feats: Path, out: Path, steps: int = 300, seed: int = 0) -> None:
    """Per-snippet linear classifier -> runs of arg-max snippets -> official JSON at ``out``."""
    torch.manual_seed(seed)
    ann = load_annotations(annotations)
    store = FeatureStore.open(feats)
    classes = list(ann.classes)
    xs, ys = [], []
    for vid in ann.subset("validation").video_ids():
        if vid not in store:
            continue
        v = store.read(vid, extras=False)
        segs, labels = ann.segments_of(vid)
        y = np.zeros(v.num_snippets, dtype=np.int64)
        for (s, e), lab in zip(segs, labels):
            y[(v.times >= s) & (v.times <= e)] = lab + 1
        xs.append(v.features)
        ys.append(y)
    x = torch.from_numpy(np.concatenate(xs)).float()
    y = torch.from_numpy(np.concatenate(ys))
    mean, std = x.mean(0), x.std(0) + 1e-6
    model = torch.nn.Linear(x.shape[1], len(classes) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model((x - mean) / std), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    results = {}
    with torch.no_grad():
        for vid in ann.subset("test").video_ids():
            if vid not in store:
                continue
            v = store.read(vid, extras=False)
            prob = torch.softmax(model((torch.from_numpy(v.features).float() - mean) / std), -1).numpy()
            axis = TimeAxis.from_centers(v.times, fallback_step=v.stride / v.fps)
            duration = ann.duration_of(vid)
            results[vid] = [
                {"label": classes[k - 1], "score": float(score),
                 "segment": [float(t) for t in grid_to_segments(np.array([[a - 0.5, b + 0.5]]), axis, duration)[0]]}
                for a, b, k, score in _runs(prob)]
    out.write_text(json.dumps({"version": "linear-baseline", "results": results, "external_data": {}}))


def _runs(prob: np.ndarray) -> list[tuple[int, int, int, float]]:
    """``(first, last, class, mean prob)`` of every run of equal non-background arg-max."""
    arg = prob.argmax(1)
    change = np.flatnonzero(np.diff(arg)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(arg)]]) - 1
    return [(int(a), int(b), int(arg[a]), float(prob[a:b + 1, arg[a]].mean()))
            for a, b in zip(starts, ends) if arg[a] != 0]


def run_tadkit(name: str, argv: list[str]) -> None:
    """Run ``tadkit ARGV`` in-process, timing it (wall and CPU); stop the benchmark if it fails."""
    wall, cpu = time.perf_counter(), time.process_time()
    code = tadkit_main(argv)
    if code != 0:
        sys.exit(f"{name} failed (exit {code}): tadkit {' '.join(argv)}")
    print(f"[{name}] {time.perf_counter() - wall:.1f} s wall, {time.process_time() - cpu:.1f} s CPU", flush=True)


if __name__ == "__main__":
    main()
