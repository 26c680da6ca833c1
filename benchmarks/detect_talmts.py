"""Benchmark: TAL-MTS and its ablation on the synthetic THUMOS14-timeline features of the MLTPN benchmark.

Steps (issue 8, on CPU)::

    tadkit data synth-features --annotations thumos14.json --subset validation,test --out WORK/feats
    for each variant (baseline, +RFP, +STT, +RFP+STT, +RFP+STT+FSA = TAL-MTS):
        tadkit detect train --config configs/talmts/thumos14.yaml --features WORK/feats \\
            --annotations thumos14.json --out WORK/run_<variant> --set ... (CPU_OVERRIDES + switches)
        tadkit detect infer --run WORK/run_<variant> --features WORK/feats --subset test --out ...
        THUMOS14 mAP@0.3:0.7 (tadkit.evaluate, thumos14 protocol)
    the per-snippet linear baseline of benchmarks/detect_mltpn.py on the same features

The features are generated exactly as in ``benchmarks/detect_mltpn.py`` (same
command, deterministic), so the figures sit next to MLTPN's; ``--mltpn-json``
adds that benchmark's JSON figures to the table. ``--published N`` also trains
the full model for N epochs with the published optimiser (Adam, lr 1e-5,
weight decay 1e-3, batch size 1) to show how far it gets in that time.

Prints seconds per epoch, inference videos per second and the mAP table
(markdown), and writes the figures as JSON (``--json``). Usage::

    python benchmarks/detect_talmts.py --annotations path/to/thumos14.json --work /tmp/bench-talmts
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
from detect_mltpn import linear_baseline, run_tadkit  # noqa: E402  (same baseline and runner as MLTPN)
from tadkit.data.annotations import load_annotations
from tadkit.evaluate import get_protocol, load_ground_truth, load_predictions

REPO = Path(__file__).resolve().parents[1]

#: TAL-MTS sized for a 2-core CPU: the paper's 6 levels and 256-snippet clips, narrower maps,
#: a faster optimiser than the published Adam 1e-5 / batch 1 (see --published). The synthetic
#: features have 3.75 snippets/s, so level 0 at stride 1 (0.27 s cells) is closest to the paper's
#: 0.4 s level-0 cells (stride 4 measured 33.5 vs 38.3 average mAP at stride 1).
CPU_OVERRIDES = [
    "talmts.dim=64", "talmts.first_stride=1", "talmts.stt_dim=32", "talmts.fsa_dim=32", "talmts.num_heads=4",
    "talmts.boundary_dim=16", "talmts.stt_temporal_layers=1", "talmts.mlp_ratio=2.0",
    "optim.name=adam", "optim.lr=1e-3", "optim.weight_decay=1e-4", "train.batch_size=16",
    "schedule.name=cosine", "schedule.warmup_epochs=1", "train.checkpoint_every=100", "train.log_every=0",
]

#: the paper's ablation rows (Table VI)
VARIANTS = {
    "baseline": ["talmts.rfp=false", "talmts.stt=false", "talmts.fsa=false"],
    "+RFP": ["talmts.rfp=true", "talmts.stt=false", "talmts.fsa=false"],
    "+STT": ["talmts.rfp=false", "talmts.stt=true", "talmts.fsa=false"],
    "+RFP+STT": ["talmts.rfp=true", "talmts.stt=true", "talmts.fsa=false"],
    "TAL-MTS (+RFP+STT+FSA)": ["talmts.rfp=true", "talmts.stt=true", "talmts.fsa=true"],
}

PUBLISHED = ["optim.name=adam", "optim.lr=1e-5", "optim.weight_decay=1e-3", "train.batch_size=1",
             "schedule.name=constant", "schedule.warmup_epochs=0"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--annotations", required=True,
                    help="THUMOS14 annotations (ActionFormer's thumos14.json) whose timeline the features follow")
    ap.add_argument("--work", default="/tmp/tadkit-bench-talmts")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma-separated subset of: " + ", ".join(VARIANTS))
    ap.add_argument("--published", type=int, default=0,
                    help="also train the full model this many epochs with the published optimiser")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra config overrides for detect train (all variants; applied last)")
    ap.add_argument("--mltpn-json", default=None, help="figures of benchmarks/detect_mltpn.py --json")
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (1 is fastest on a busy shared CPU)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    feats = work / "feats"
    warnings.simplefilter("ignore")
    run_tadkit("synthetic features", ["data", "synth-features", "--annotations", args.annotations,
                                 "--subset", "validation,test", "--out", str(feats)])
    protocol = get_protocol("thumos14")
    gt = load_ground_truth(args.annotations, subset="test")
    n_test = len(load_annotations(args.annotations).subset("test").video_ids())

    rows = {}
    base = CPU_OVERRIDES + [f"train.epochs={args.epochs}"]
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if name not in VARIANTS:
            sys.exit(f"unknown variant {name!r} (choose from {', '.join(VARIANTS)})")
        overrides = base + VARIANTS[name] + args.overrides  # --set wins over the variant's switches
        rows[name] = _run_variant(args, work, feats, _slug(name), overrides, protocol, gt, n_test)
    if args.published:
        overrides = CPU_OVERRIDES + VARIANTS["TAL-MTS (+RFP+STT+FSA)"] + PUBLISHED + \
            [f"train.epochs={args.published}"] + args.overrides
        rows[f"TAL-MTS, published optimiser ({args.published} epochs)"] = _run_variant(
            args, work, feats, "published", overrides, protocol, gt, n_test)

    t0 = time.perf_counter()
    linear_baseline(args.annotations, feats, work / "linear_baseline.json")
    lin = protocol.evaluate_detection(gt, load_predictions(work / "linear_baseline.json"))
    thresholds = [round(float(t), 2) for t in lin.tiou_thresholds]
    rows["linear per-snippet baseline"] = {"mAP": dict(zip(thresholds, np.round(lin.mAP * 100, 2).tolist())),
                                           "average_mAP_0.3_0.7": round(lin.average_mAP * 100, 2),
                                           "seconds": round(time.perf_counter() - t0, 2)}
    if args.mltpn_json and Path(args.mltpn_json).is_file():
        m = json.loads(Path(args.mltpn_json).read_text())
        rows["MLTPN (benchmarks/detect_mltpn.py)"] = {
            "mAP": m.get("mltpn_softnms_mAP") or m.get("mltpn_mAP"),
            "average_mAP_0.3_0.7": m.get("mltpn_softnms_average_mAP_0.3_0.7", m.get("mltpn_average_mAP_0.3_0.7")),
            "train_seconds_per_epoch": m.get("train_seconds_per_epoch"),
            "infer_videos_per_second": m.get("infer_videos_per_second"), "epochs": m.get("epochs")}
    figures = {"rows": rows, "cpu_overrides": CPU_OVERRIDES, "epochs": args.epochs,
               "torch_threads": torch.get_num_threads(), "test_videos": n_test}
    print(json.dumps(figures, indent=1))
    print(markdown_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return figures


def markdown_table(rows: dict[str, dict]) -> str:
    """One markdown row per variant: mAP at 0.3..0.7, average, s/epoch, videos/s, parameters."""
    head = "| model | 0.3 | 0.4 | 0.5 | 0.6 | 0.7 | avg 0.3:0.7 | s/epoch | infer videos/s | parameters |"
    lines = [head, "|" + "---|" * 10]
    for name, r in rows.items():
        m = r.get("mAP") or {}
        vals = [m.get(t, m.get(str(t))) for t in (0.3, 0.4, 0.5, 0.6, 0.7)]
        vals.append(r.get("average_mAP_0.3_0.7"))
        cells = [f"{v:.1f}" if isinstance(v, (int, float)) else "–" for v in vals]
        cells += [str(r.get(k, "–")) for k in ("train_seconds_per_epoch", "infer_videos_per_second", "parameters")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _run_variant(args: argparse.Namespace, work: Path, feats: Path, slug: str, overrides: list[str],
                 protocol, gt, n_test: int) -> dict:
    run, preds = work / f"run_{slug}", work / f"preds_{slug}.json"
    if not (run / "checkpoints" / "last.pt").exists():
        train_args = ["detect", "train", "--config", str(REPO / "configs" / "talmts" / "thumos14.yaml"),
                      "--features", str(feats), "--annotations", args.annotations, "--out", str(run)]
        for o in overrides:
            train_args += ["--set", o]
        run_tadkit(f"train {slug}", train_args)
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["event"] == "epoch"]
    t0 = time.perf_counter()
    run_tadkit(f"infer {slug}", ["detect", "infer", "--run", str(run), "--features", str(feats), "--subset", "test",
                            "--out", str(preds)])
    infer_seconds = time.perf_counter() - t0
    res = protocol.evaluate_detection(gt, load_predictions(preds))
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    thresholds = [round(float(t), 2) for t in res.tiou_thresholds]
    return {"mAP": dict(zip(thresholds, np.round(res.mAP * 100, 2).tolist())),
            "average_mAP_0.3_0.7": round(res.average_mAP * 100, 2),
            "epochs": len(epochs),
            "train_seconds_per_epoch": round(float(np.median([r["seconds"] for r in epochs])), 2),
            "final_loss": epochs[-1]["loss"] if epochs else None,
            "infer_seconds": round(infer_seconds, 2), "infer_videos_per_second": round(n_test / infer_seconds, 2),
            "parameters": int(sum(t.numel() for t in state["model"].values() if t.dtype.is_floating_point)),
            "overrides": overrides}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


if __name__ == "__main__":
    main()
