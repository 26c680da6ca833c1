"""Benchmark: the HACS-2020 system (BMN + Bi-LSTM, cascade refine, ensembles, classifier) on CPU.

Data: synthetic features on an ActivityNet v1.3 timeline subsample (``--annotations``: BSN's
``anet_anno_action.json`` with ``video_info_new.csv`` beside it, or any ActivityNet-format
file): every ``--class-step``-th class (sorted names), the first ``--train-per-class`` training
and ``--val-per-class`` validation videos of each that hold only that class. Steps::

    tadkit data synth-features --annotations WORK/anet_sub.json --out WORK/feats
    BMN (configs/bmn/anet_cpu.yaml) with 0, 1 and 2 Bi-LSTM layers; their ensemble of 3
    tadkit detect infer --run ... --proposals ...  ->  tadkit evaluate --task proposal (AR@AN, AUC)
    3 classifiers (detect classify --holdout-fraction 0.2, other seeds / learning rates)
        -> detect classify-ensemble (learned weights) -> mAP of every row with classifier fusion
    refine networks (configs/refine/anet_cpu.yaml) chained on the BMN ensemble: the paper's Table 2
        rows (no module, + Bi-LSTM, + Non-local, + Action score, + Transformer) and their ensemble
    the same commands on a HACS-format copy of some videos (ids without v_, hacs protocol)

Runs already in WORK are reused (their training is not repeated). Prints per row AR@1/5/10/100,
AUC, average mAP (0.5:0.95) with classifier fusion, training seconds per epoch (wall) and CPU
seconds of the whole training, inference videos per second; writes them as JSON (``--json``).
Usage::

    python benchmarks/detect_hacs2020.py --annotations path/to/anet_anno_action.json --work /tmp/bench-hacs
"""
from __future__ import annotations

import argparse
import csv
import json
import resource
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_mltpn import run_tadkit  # noqa: E402  (the shared in-process runner)
from tadkit.data.annotations import load_annotations
from tadkit.data.features import FeatureStore
from tadkit.detect.classifier import classifier_run_scores
from tadkit.evaluate import get_protocol, load_ground_truth, load_predictions

REPO = Path(__file__).resolve().parents[1]
BMN_CFG = REPO / "configs" / "bmn" / "anet_cpu.yaml"
REFINE_CFG = REPO / "configs" / "refine" / "anet_cpu.yaml"
QUIET = ["train.log_every=0"]

#: the BMN rows (HACS-2020 Table 3 layout at the CPU temporal scale)
BMN_ROWS = {"bmn": ["bmn.lstm_layers=0"], "bmn_lstm1": ["bmn.lstm_layers=1"], "bmn_lstm2": ["bmn.lstm_layers=2"]}
#: the refine rows (HACS-2020 Table 2 layout: modules added one by one)
MODULES = ("lstm", "non_local", "action_score", "transformer")
REFINE_ROWS = {f"refine_{i}": [f"refine.{m}={'true' if k < i else 'false'}" for k, m in enumerate(MODULES)]
               for i in range(len(MODULES) + 1)}
#: classifier members: (seed, learning rate)
CLASSIFIERS = {"cls_1": (1, 0.01), "cls_2": (2, 0.003), "cls_3": (3, 0.03)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--annotations", required=True, help="ActivityNet annotations (BSN or official format)")
    ap.add_argument("--work", default="/tmp/tadkit-bench-hacs2020")
    ap.add_argument("--class-step", type=int, default=4)
    ap.add_argument("--train-per-class", type=int, default=12)
    ap.add_argument("--val-per-class", type=int, default=6)
    ap.add_argument("--refine-rows", default=",".join(REFINE_ROWS), help="which refine rows to train")
    ap.add_argument("--bmn-set", action="append", default=[], help="extra config override of the BMN runs")
    ap.add_argument("--refine-set", action="append", default=[], help="extra config override of the refine runs")
    ap.add_argument("--hacs-videos", type=int, default=40, help="videos of the HACS-format check (0: skip)")
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    c0, t0 = time.process_time(), time.perf_counter()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ann, hacs = work / "anet_sub.json", work / "hacs_sub.json"
    subsample(args.annotations, ann, hacs, args.class_step, args.train_per_class, args.val_per_class,
              args.hacs_videos)
    feats = work / "feats"
    run_tadkit("synthetic features", ["data", "synth-features", "--annotations", str(ann), "--out", str(feats)])
    common = ["--features", str(feats), "--annotations", str(ann)]
    figures: dict = {"videos": {s: len(load_annotations(ann, warn=False).subset(s).video_ids())
                                for s in ("training", "validation")}, "rows": {}}

    for name, (seed, lr) in CLASSIFIERS.items():                       # video-level classifiers
        if not (work / name / "run.json").exists():
            run_tadkit(f"classify {name}", ["detect", "classify", *common, "--train-subset", "training",
                                            "--holdout-fraction", "0.2", "--seed", str(seed), "--lr", str(lr),
                                            "--out", str(work / name)])
    cls = work / "cls_ensemble"
    run_tadkit("classifier ensemble", ["detect", "classify-ensemble", "--out", str(cls)]
               + sum((["--classifier-run", str(work / n)] for n in CLASSIFIERS), []))
    figures["classifiers"] = classifier_accuracy(work, feats, ann, list(CLASSIFIERS) + [cls.name])

    for name, extra in BMN_ROWS.items():                                # BMN rows
        train(name, work, ["--config", str(BMN_CFG), *common], extra + args.bmn_set)
        figures["rows"][name] = evaluate_row(work, feats, ann, [name], cls)
    figures["rows"]["bmn_ensemble"] = evaluate_row(work, feats, ann, list(BMN_ROWS), cls, tag="bmn_ensemble")

    source = sum((["--from-run", str(work / n)] for n in BMN_ROWS), [])  # refine rows, on the BMN ensemble
    refine_rows = [r for r in args.refine_rows.split(",") if r]
    for name in refine_rows:
        train(name, work, ["--config", str(REFINE_CFG), *common, *source], REFINE_ROWS[name] + args.refine_set)
        figures["rows"][name] = evaluate_row(work, feats, ann, [name], cls)
    if len(refine_rows) > 1:
        figures["rows"]["refine_ensemble"] = evaluate_row(work, feats, ann, refine_rows, cls, tag="refine_ensemble")

    if args.hacs_videos:
        figures["hacs_format"] = hacs_check(work, hacs)
    figures["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    figures["total_cpu_seconds"] = round(time.process_time() - c0, 1)
    figures["total_wall_seconds"] = round(time.perf_counter() - t0, 1)
    print_tables(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return figures


# --------------------------------------------------------------------------- steps
def subsample(source: str, out: Path, hacs_out: Path, step: int, n_train: int, n_val: int, n_hacs: int) -> None:
    """The benchmark's ActivityNet subsample (official JSON) and a HACS-format copy of its first videos."""
    ann = load_annotations(source, warn=False)
    classes = sorted(ann.classes)[::step]
    count: dict = defaultdict(int)
    db = {}
    for vid in ann.video_ids():
        subset = ann.videos.at[vid, "subset"]
        want = {"training": n_train, "validation": n_val}.get(subset)
        segs, labels = ann.segments_of(vid)
        names = {ann.classes[int(k)] for k in labels}
        if want is None or len(names) != 1 or not names <= set(classes):
            continue
        (label,) = names
        if count[subset, label] >= want:
            continue
        count[subset, label] += 1
        db[vid] = {"subset": subset, "duration": float(ann.videos.at[vid, "duration"]),
                   "annotations": [{"label": label, "segment": [float(a), float(b)]} for a, b in segs]}
    out.write_text(json.dumps({"version": "ActivityNet v1.3 subsample", "database": db}))
    hacs = {}
    for subset, n in (("training", n_hacs * 2 // 3), ("validation", n_hacs - n_hacs * 2 // 3)):
        for vid in [v for v in db if db[v]["subset"] == subset][:n]:
            hacs[vid[2:] if vid.startswith("v_") else vid] = {
                **db[vid], "url": f"https://www.youtube.com/watch?v={vid[2:]}"}
    hacs_out.write_text(json.dumps({"database": hacs, "version": "HACS Segments layout"}))


def train(name: str, work: Path, base: list[str], extra: list[str]) -> None:
    run = work / name
    if (run / "checkpoints" / "last.pt").exists():
        return
    c0 = time.process_time()
    run_tadkit(f"train {name}", ["detect", "train", *base, "--out", str(run)]
               + sum((["--set", o] for o in QUIET + extra), []))
    (run / "cpu_seconds.txt").write_text(f"{time.process_time() - c0:.1f}\n")


def evaluate_row(work: Path, feats: Path, ann: Path, runs: list[str], cls: Path, tag: str | None = None) -> dict:
    """Proposals and detections (classifier fusion) of one run or an ensemble, evaluated on validation."""
    tag = tag or runs[0]
    props, preds = work / f"{tag}_proposals.json", work / f"{tag}_detections.json"
    t0 = time.perf_counter()
    run_tadkit(f"infer {tag}", ["detect", "infer", *sum((["--run", str(work / r)] for r in runs), []),
                                "--features", str(feats), "--subset", "validation", "--proposals", str(props),
                                "--classifier-run", str(cls), "--out", str(preds)])
    seconds = time.perf_counter() - t0
    protocol = get_protocol("anet")
    gt = load_ground_truth(str(ann), subset="validation")
    prop = protocol.evaluate_proposals(gt, load_predictions(str(props), require_label=False))
    det = protocol.evaluate_detection(gt, load_predictions(str(preds)))
    n_val = len(load_annotations(ann, warn=False).subset("validation").video_ids())
    row = {"AR@1": ar_at(prop, 1), "AR@5": ar_at(prop, 5), "AR@10": ar_at(prop, 10), "AR@100": ar_at(prop, 100),
           "AUC": round(float(prop.AUC_percent), 2),
           "mAP": round(float(det.average_mAP) * 100, 2), "infer_videos_per_second": round(n_val / seconds, 2)}
    if len(runs) == 1:
        log = [json.loads(x) for x in (work / runs[0] / "log.jsonl").read_text().splitlines()]
        epochs = [r["seconds"] for r in log if r.get("event") == "epoch"]
        cpu = work / runs[0] / "cpu_seconds.txt"
        row.update(epochs=len(epochs), train_seconds_per_epoch=round(float(np.median(epochs)), 1),
                   train_cpu_seconds=float(cpu.read_text()) if cpu.exists() else None)
    print(f"[{tag}] {row}", flush=True)
    return row


def ar_at(result, an: float) -> float:
    """AR (percent) at an average of ``an`` proposals per video (on the AR-AN curve)."""
    return round(100 * float(np.interp(an, result.AN, result.AR)), 2)


def classifier_accuracy(work: Path, feats: Path, ann: Path, runs: list[str]) -> dict:
    """Top-1 accuracy (the best class is one of the video's classes) on the validation videos."""
    a = load_annotations(ann, warn=False)
    val = a.subset("validation")
    store = FeatureStore.open(feats)
    out = {}
    for name in runs:
        scores, _ = classifier_run_scores([work / name], store, val.video_ids(), a.classes)
        hits = [int(np.argmax(s)) in set(val.segments_of(v)[1].tolist()) for v, s in scores.items()]
        out[name] = round(100 * float(np.mean(hits)), 2)
    print(f"[classifiers] top-1 on validation: {out}", flush=True)
    return out


def hacs_check(work: Path, hacs: Path) -> dict:
    """The chain's commands on HACS-format annotations (one short epoch each): they run; the numbers are not meaningful."""
    root = work / "hacs"
    feats = root / "feats"
    run_tadkit("HACS synthetic features", ["data", "synth-features", "--annotations", str(hacs), "--out", str(feats)])
    common = ["--features", str(feats), "--annotations", str(hacs)]
    t0 = time.perf_counter()
    short = ["--set", "train.epochs=1"]
    if not (root / "bmn" / "checkpoints" / "last.pt").exists():
        run_tadkit("HACS bmn", ["detect", "train", "--config", str(REPO / "configs" / "bmn" / "hacs.yaml"), *common,
                                "--out", str(root / "bmn"), *short, "--set", "data.length=64",
                                "--set", "bmn.hidden_1d=64", "--set", "bmn.hidden_3d=64", "--set", "bmn.hidden_2d=32",
                                "--set", "bmn.num_samples=16"])
    if not (root / "refine" / "checkpoints" / "last.pt").exists():
        run_tadkit("HACS refine", ["detect", "train", "--config", str(REFINE_CFG), *common, "--out", str(root / "refine"),
                                   "--from-run", str(root / "bmn"), *short])
    for k in (1, 2):
        if not (root / f"cls_{k}" / "run.json").exists():
            run_tadkit(f"HACS classify {k}", ["detect", "classify", *common, "--train-subset", "training",
                                              "--holdout-fraction", "0.25", "--seed", str(k),
                                              "--out", str(root / f"cls_{k}")])
    run_tadkit("HACS classifier ensemble", ["detect", "classify-ensemble", "--classifier-run", str(root / "cls_1"),
                                            "--classifier-run", str(root / "cls_2"), "--out", str(root / "cls")])
    run_tadkit("HACS infer", ["detect", "infer", "--run", str(root / "refine"), "--features", str(feats),
                              "--subset", "validation", "--classifier-run", str(root / "cls"),
                              "--proposals", str(root / "proposals.json"), "--out", str(root / "detections.json")])
    for task, pred in (("proposal", "proposals.json"), ("detection", "detections.json")):
        run_tadkit(f"HACS evaluate {task}", ["evaluate", "--dataset", "hacs", "--task", task, "--gt", str(hacs),
                                             "--pred", str(root / pred)])
    return {"ran": True, "videos": len(json.loads(hacs.read_text())["database"]),
            "seconds": round(time.perf_counter() - t0, 1)}


def print_tables(f: dict) -> None:
    rows = f["rows"]
    print("\n| row | AR@1 | AR@5 | AR@10 | AR@100 | AUC | mAP (cls fusion) | train s/epoch | train CPU s | "
          "infer videos/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['AR@1']} | {r['AR@5']} | {r['AR@10']} | {r['AR@100']} | {r['AUC']} | {r['mAP']} | "
              f"{r.get('train_seconds_per_epoch', '')} | {r.get('train_cpu_seconds') or ''} | "
              f"{r['infer_videos_per_second']} |")
    print(f"\nclassifier top-1 on validation: {f['classifiers']}")
    if "hacs_format" in f:
        print(f"HACS-format check: {f['hacs_format']}")
    print(f"whole benchmark: {f['total_cpu_seconds']} s CPU, {f['total_wall_seconds']} s wall, "
          f"peak RSS {f['peak_rss_gb']} GB")


if __name__ == "__main__":
    main()
