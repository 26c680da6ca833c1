"""Benchmark: MLTPN vs a per-snippet linear baseline on synthetic THUMOS14-timeline features.

Steps (the user story of issue 7, on CPU)::

    tadkit data synth-features --annotations thumos14.json --subset validation,test --out WORK/feats
    tadkit detect train --config configs/mltpn/thumos14.yaml --features WORK/feats \\
        --annotations thumos14.json --out WORK/run --set ...   (a CPU-sized MLTPN, see CPU_OVERRIDES)
    tadkit detect infer --run WORK/run --features WORK/feats --subset test --out WORK/preds.json
    THUMOS14 mAP@0.3:0.7 (tadkit.evaluate, thumos14 protocol) of MLTPN and of the baseline

The baseline is a linear classifier over single snippets (C + 1 classes, trained
with cross-entropy on the validation videos); its detections are the runs of
consecutive snippets sharing a non-background arg-max class, scored by the
mean probability of that class over the run.

Prints training seconds per epoch, inference videos per second and the mAP
table, and writes them as JSON (``--json``). Usage::

    python benchmarks/detect_mltpn.py --annotations path/to/thumos14.json --work /tmp/bench
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from tadkit.cli import main as tadkit_main
from tadkit.data.annotations import load_annotations
from tadkit.data.features import FeatureStore
from tadkit.evaluate import get_protocol, load_ground_truth, load_predictions
from tadkit.timeline import TimeAxis, grid_to_segments

REPO = Path(__file__).resolve().parents[1]

#: MLTPN sized for a 2-core CPU: the paper's 6 THMs, 5 scales and 7 anchors, narrower maps.
CPU_OVERRIDES = [
    "mltpn.embed_dim=32", "mltpn.transform_k1=8", "mltpn.transform_k2=8", "mltpn.thm_channels=16",
    "mltpn.thm_out_channels=16", "mltpn.head_squeeze=2", "mltpn.mfm_reduction=4",
    "optim.name=adam", "optim.lr=1e-3", "optim.weight_decay=0", "train.batch_size=16",
    "train.checkpoint_every=100",
]

#: an alternative post-processing, applied to the saved candidates without the model
SOFT_NMS = ["method=gaussian", "sigma=0.5", "voting=true", "voting_iou=0.7", "max_per_video=200"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--annotations", required=True,
                    help="THUMOS14 annotations (ActionFormer's thumos14.json) whose timeline the features follow")
    ap.add_argument("--work", default="/tmp/tadkit-bench-mltpn")
    ap.add_argument("--epochs", type=int, default=20,
                    help="the paper's schedule: 20 epochs, lr x0.1 after 3/4 of them (15)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra config overrides for detect train")
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (1 is fastest on a busy shared CPU)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    feats, run, preds = work / "feats", work / "run", work / "preds.json"
    warnings.simplefilter("ignore")

    run_tadkit("synthetic features", ["data", "synth-features", "--annotations", args.annotations,
                                 "--subset", "validation,test", "--out", str(feats)])
    epochs = args.epochs
    overrides = CPU_OVERRIDES + [f"train.epochs={epochs}", f"schedule.milestones=[{max(1, epochs * 3 // 4)}]"]
    overrides += args.overrides
    if not (run / "checkpoints" / "last.pt").exists():
        train_args = ["detect", "train", "--config", str(REPO / "configs" / "mltpn" / "thumos14.yaml"),
                      "--features", str(feats), "--annotations", args.annotations, "--out", str(run)]
        for o in overrides:
            train_args += ["--set", o]
        run_tadkit("train MLTPN", train_args)
    epoch_seconds = [r["seconds"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())
                     if r["event"] == "epoch"]
    t0 = time.perf_counter()
    raw = work / "candidates.json"
    run_tadkit("infer MLTPN", ["detect", "infer", "--run", str(run), "--features", str(feats), "--subset", "test",
                          "--out", str(preds), "--raw", str(raw)])
    infer_seconds = time.perf_counter() - t0
    soft = work / "preds_softnms.json"
    run_tadkit("re-tune post-processing", ["detect", "postprocess", "--candidates", str(raw), "--run", str(run),
                                      "--out", str(soft)] + sum((["--set", o] for o in SOFT_NMS), []))

    protocol = get_protocol("thumos14")
    gt = load_ground_truth(args.annotations, subset="test")
    mltpn = protocol.evaluate_detection(gt, load_predictions(preds))
    mltpn_soft = protocol.evaluate_detection(gt, load_predictions(soft))
    t0 = time.perf_counter()
    baseline_preds = work / "baseline.json"
    linear_baseline(args.annotations, feats, baseline_preds)
    baseline_seconds = time.perf_counter() - t0
    base = protocol.evaluate_detection(gt, load_predictions(baseline_preds))

    n_test = len(load_annotations(args.annotations).subset("test").video_ids())
    thresholds = [round(float(t), 2) for t in mltpn.tiou_thresholds]
    figures = {
        "epochs": len(epoch_seconds),
        "train_seconds_per_epoch": round(float(np.median(epoch_seconds)), 2),
        "infer_seconds": round(infer_seconds, 2),
        "infer_videos_per_second": round(n_test / infer_seconds, 2),
        "mltpn_mAP": dict(zip(thresholds, np.round(mltpn.mAP * 100, 2).tolist())),
        "mltpn_average_mAP_0.3_0.7": round(mltpn.average_mAP * 100, 2),
        "mltpn_softnms_mAP": dict(zip(thresholds, np.round(mltpn_soft.mAP * 100, 2).tolist())),
        "mltpn_softnms_average_mAP_0.3_0.7": round(mltpn_soft.average_mAP * 100, 2),
        "softnms_settings": SOFT_NMS,
        "baseline_mAP": dict(zip(thresholds, np.round(base.mAP * 100, 2).tolist())),
        "baseline_average_mAP_0.3_0.7": round(base.average_mAP * 100, 2),
        "baseline_seconds": round(baseline_seconds, 2),
        "overrides": overrides,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return figures


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
    """Run ``tadkit ARGV`` in-process, timing it; stop the benchmark if it fails."""
    t0 = time.perf_counter()
    code = tadkit_main(argv)
    if code != 0:
        sys.exit(f"{name} failed (exit {code}): tadkit {' '.join(argv)}")
    print(f"[{name}] {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
