"""Benchmark: MENet proposals and detections on synthetic ActivityNet- and THUMOS14-timeline features.

Steps (the user story of issue 15, on CPU)::

    ActivityNet timeline: a seeded subsample of anet_anno_action.json (subsets from the
    video_info_new.csv beside it) -> WORK/anet_sub.json
        tadkit data synth-features --annotations WORK/anet_sub.json --clip-len 16 --stride 16 --out WORK/feats_anet
        for each variant (two-stage MENet; only Generalization / Specialization / Bias; without MREM):
            tadkit detect train --config configs/menet/anet_cpu.yaml ... --set <switches>
            tadkit detect infer ... --subset validation --proposals props.json       -> AR@AN, AUC
        MENet: tadkit detect classify (a video-level classifier run), then
            tadkit detect infer ... --classifier-run cls --out preds.json          -> mAP@0.5:0.95
    THUMOS14 timeline: the features of benchmarks/detect_mltpn.py (same command, deterministic)
        tadkit detect train --config configs/menet/thumos14_cpu.yaml; proposals -> AR@50..500;
        detections with a classifier run -> mAP@0.3:0.7

The synthetic features have no movement / total halves (the Base ablation's channel selection is
only meaningful on MFE features), so the MEM ablation here is MREM against the Base model's
temporal conv. Prints seconds (wall and CPU) per epoch, test videos per second and the tables,
and writes the figures as JSON (``--json``). Usage::

    python benchmarks/detect_menet.py --anet anet_anno_action.json --thumos thumos14.json \
        --work /tmp/bench-menet --json /tmp/bench-menet/figures.json
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_mltpn import run_tadkit  # noqa: E402  (the same in-process runner as the other heads)
from tadkit.data.annotations import load_annotations
from tadkit.evaluate import get_protocol, load_ground_truth, load_predictions

REPO = Path(__file__).resolve().parents[1]

#: the paper's ablations that the synthetic features can show (Table 8 and the MREM half of Table 5)
VARIANTS = {
    "MENet (two-stage, MREM)": [],
    "only Generalization": ["menet.sampling=generalization"],
    "only Specialization": ["menet.sampling=specialization"],
    "only Bias": ["menet.sampling=bias"],
    "Base conv instead of MREM (two-stage)": ["menet.mrem=false"],
}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--anet", required=True,
                    help="BSN's anet_anno_action.json (with its video_info_new.csv beside it) or ActivityNet JSON")
    ap.add_argument("--thumos", default=None,
                    help="THUMOS14 annotations (e.g. ActionFormer's thumos14.json); without it that part is skipped")
    ap.add_argument("--work", default="/tmp/tadkit-bench-menet")
    ap.add_argument("--train-videos", type=int, default=800, help="ActivityNet training videos in the subsample")
    ap.add_argument("--val-videos", type=int, default=200, help="ActivityNet validation videos in the subsample")
    ap.add_argument("--variants", default="all", help="'all', or comma-separated names of VARIANTS ('default')")
    ap.add_argument("--seed", type=int, default=0, help="train.seed of the runs (another seed: the noise between runs)")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    names = list(VARIANTS) if args.variants == "all" else (
        [next(iter(VARIANTS))] if args.variants == "default" else args.variants.split(","))
    seed = [f"train.seed={args.seed}"] if args.seed else []
    suffix = f"_seed{args.seed}" if args.seed else ""

    figures: dict = {"anet": {}, "thumos14": {}}
    ann = anet_subsample(args.anet, work / "anet_sub.json", args.train_videos, args.val_videos)
    feats = work / "feats_anet"
    run_tadkit("synthetic ActivityNet features", ["data", "synth-features", "--annotations", str(ann),
                                                 "--clip-len", "16", "--stride", "16", "--out", str(feats)])
    for name in names:
        figures["anet"][name] = proposal_run(REPO / "configs" / "menet" / "anet_cpu.yaml", feats, ann,
                                             work / ("anet_" + _slug(name) + suffix),
                                             VARIANTS[name] + seed, "anet", "validation", max_proposals=100)
        print(json.dumps({name: figures["anet"][name]}), flush=True)
    figures["anet"]["detections"] = fused_detections(work / ("anet_" + _slug(names[0]) + suffix), feats, ann, work,
                                                      "anet", "training", "validation")
    if args.thumos:
        tfeats = work / "feats_thumos"
        run_tadkit("synthetic THUMOS14 features", ["data", "synth-features", "--annotations", args.thumos,
                                                  "--subset", "validation,test", "--out", str(tfeats)])
        figures["thumos14"]["MENet (two-stage, MREM)"] = proposal_run(
            REPO / "configs" / "menet" / "thumos14_cpu.yaml", tfeats, Path(args.thumos),
            work / ("thumos_menet" + suffix), seed, "thumos14", "test", max_proposals=500)
        figures["thumos14"]["detections"] = fused_detections(work / ("thumos_menet" + suffix), tfeats,
                                                             Path(args.thumos), work,
                                                             "thumos14", "validation", "test")
    figures["torch_threads"] = torch.get_num_threads()
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return figures


def anet_subsample(source: str, out: Path, n_train: int, n_val: int, seed: int = 0) -> Path:
    """A seeded subsample of annotated training and validation videos, as ActivityNet JSON."""
    if out.exists():
        return out
    ann = load_annotations(source)
    rng = np.random.default_rng(seed)
    keep = []
    for subset, n in (("training", n_train), ("validation", n_val)):
        ids = [v for v in ann.subset(subset).video_ids() if len(ann.segments_of(v)[0])]
        keep += [ids[i] for i in sorted(rng.choice(len(ids), size=min(n, len(ids)), replace=False))]
    out.write_text(json.dumps(ann.select(keep).to_activitynet(version="anet-subsample")))
    return out


def proposal_run(config: Path, feats: Path, ann: Path, run: Path, overrides: list[str], dataset: str, subset: str,
                 max_proposals: int) -> dict:
    """Train (unless done), write proposals of ``subset``, evaluate AR@AN; timings in wall and CPU seconds."""
    cpu0 = time.process_time()
    if not (run / "checkpoints" / "last.pt").exists():
        train = ["detect", "train", "--config", str(config), "--features", str(feats), "--annotations", str(ann),
                 "--out", str(run)]
        for o in overrides:
            train += ["--set", o]
        run_tadkit(f"train {run.name}", train)
    train_cpu = time.process_time() - cpu0
    epochs = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["event"] == "epoch"]
    props = run / "proposals.json"
    t0, cpu0 = time.perf_counter(), time.process_time()
    run_tadkit(f"proposals {run.name}", ["detect", "infer", "--run", str(run), "--features", str(feats), "--subset",
                                         subset, "--proposals", str(props)])
    infer_wall, infer_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    gt = load_ground_truth(ann, subset=subset)
    res = get_protocol(dataset).evaluate_proposals(gt, load_predictions(props, require_label=False),
                                                   max_avg_nr_proposals=max_proposals)
    n_videos = len(json.loads(props.read_text())["results"])
    ar = {f"{res.AN[0]:g}": round(float(res.AR[0]) * 100, 2)}        # the first point of the AR-AN curve
    ar.update({str(k): round(v * 100, 2) for k, v in res.recall_at.items() if k <= max_proposals})
    return {"AUC": round(res.AUC * 100, 2), "AR@AN": ar, "epochs": len(epochs),
            "train_seconds_per_epoch": round(float(np.median([r["seconds"] for r in epochs])), 1),
            "train_cpu_seconds_per_epoch": round(train_cpu / max(1, len(epochs)), 1) if train_cpu > 1 else None,
            "test_videos_per_second": round(n_videos / infer_wall, 2),
            "test_cpu_seconds_per_video": round(infer_cpu / n_videos, 3), "overrides": overrides}


def fused_detections(run: Path, feats: Path, ann: Path, work: Path, dataset: str, train_subset: str,
                     subset: str) -> dict:
    """A video-level classifier run over the same features, its scores fused with the run's proposals -> mAP."""
    cls = work / f"classifier_{dataset}"
    if not (cls / "run.json").exists():
        run_tadkit(f"classifier {dataset}", ["detect", "classify", "--features", str(feats), "--annotations",
                                             str(ann), "--train-subset", train_subset, "--out", str(cls)])
    preds = run / "detections.json"
    run_tadkit(f"detections {run.name}", ["detect", "infer", "--run", str(run), "--features", str(feats),
                                          "--subset", subset, "--classifier-run", str(cls), "--out", str(preds)])
    protocol = get_protocol(dataset)
    res = protocol.evaluate_detection(load_ground_truth(ann, subset=subset), load_predictions(preds))
    return {"mAP": {str(round(float(t), 2)): round(float(m) * 100, 2) for t, m in zip(res.tiou_thresholds, res.mAP)},
            "average_mAP": round(res.average_mAP * 100, 2)}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


if __name__ == "__main__":
    main()
