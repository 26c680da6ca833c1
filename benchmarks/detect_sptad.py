"""Benchmark: SP-TAD and its ablations on synthetic THUMOS14-timeline features with backbone-like levels.

Steps (issue 14, on CPU)::

    tadkit data synth-features --annotations thumos14.json --subset validation,test --levels 2,1,0.5 \\
        --out WORK/feats_levels                    (snippets + levels of 2, 1, 1/2 steps per snippet)
    for each variant (Table 5 TFPN types, Table 6 numbers of heads; on request Table 7's classification
    head and the paper's lr 1e-4):
        tadkit detect train --config configs/sptad/thumos14_cpu.yaml --features WORK/feats_levels \\
            --annotations thumos14.json --out WORK/run_<variant> --set ... (the variant's switches)
        tadkit detect infer --run WORK/run_<variant> --features WORK/feats_levels --subset test --out ...
        THUMOS14 mAP@0.3:0.7 (tadkit.evaluate, thumos14 protocol)
    SP-TAD on the snippet-only store of benchmarks/detect_mltpn.py (the automatic single-level fallback),
    the per-snippet linear baseline on both stores

Prints, per variant, training seconds per epoch (wall, median) and CPU seconds per epoch, test
videos per second (inference of the 212 test videos, wall), and the mAP table (markdown); writes
the figures as JSON (``--json``). ``--mltpn-json`` / ``--talmts-json`` add those benchmarks' rows.
Usage::

    python benchmarks/detect_sptad.py --annotations ../shared/data/thumos14.json --work /tmp/bench-sptad
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
from detect_talmts import markdown_table  # noqa: E402
from tadkit.data.annotations import load_annotations
from tadkit.evaluate import get_protocol, load_ground_truth, load_predictions

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "sptad" / "thumos14_cpu.yaml"
LEVELS = "2,1,0.5"

#: the synthetic levels (2, 1 and 1/2 steps per snippet) as data.levels, finest first
LEVEL_NAMES = "data.levels=[x2,x1,x0.5]"

#: the paper's ablations (Tables 5-7) and the paper's learning rate; the first row is the default model
VARIANTS = {
    "SP-TAD (inter-level TFPN; 4 heads; cls head)": [],
    "TFPN: single level": ["sptad.tfpn=single"],
    "TFPN: high-level": ["sptad.tfpn=high"],
    "1 head": ["sptad.num_heads=1"],
    "2 heads": ["sptad.num_heads=2"],
    "6 heads": ["sptad.num_heads=6"],
    "no classification head": ["sptad.cls_head=false"],
    "paper lr 1e-4": ["optim.lr=1e-4"],
}
FALLBACK = "snippets only (automatic single-level fallback)"
DEFAULT_ROWS = [k for k in VARIANTS if k not in ("no classification head", "paper lr 1e-4")] + [FALLBACK]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--annotations", default=str(REPO.parent / "shared" / "data" / "thumos14.json"))
    ap.add_argument("--work", default="/tmp/tadkit-bench-sptad")
    ap.add_argument("--variants", default=",".join(DEFAULT_ROWS),
                    help="comma-separated subset of: " + ", ".join(list(VARIANTS) + [FALLBACK]))
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra config overrides for detect train (all variants; applied last)")
    ap.add_argument("--mltpn-json", default=None, help="figures of benchmarks/detect_mltpn.py --json")
    ap.add_argument("--talmts-json", default=None, help="figures of benchmarks/detect_talmts.py --json")
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 on a busy shared CPU)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")
    levels, snippets = work / "feats_levels", work / "feats"
    common = ["data", "synth-features", "--annotations", args.annotations, "--subset", "validation,test"]
    run_tadkit("synthetic features with levels", common + ["--levels", LEVELS, "--out", str(levels)])
    protocol = get_protocol("thumos14")
    gt = load_ground_truth(args.annotations, subset="test")
    n_test = len(load_annotations(args.annotations).subset("test").video_ids())

    rows = {}
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if name == FALLBACK:
            run_tadkit("synthetic features (MLTPN benchmark store)", common + ["--out", str(snippets)])
            overrides, feats = [], snippets  # the config's data.levels are absent: data.optional_levels
        elif name in VARIANTS:
            overrides, feats = [LEVEL_NAMES] + VARIANTS[name], levels
        else:
            sys.exit(f"unknown variant {name!r} (choose from {', '.join(list(VARIANTS) + [FALLBACK])})")
        rows[name] = run_variant(args.annotations, work, feats, _slug(name), overrides + args.overrides,
                                 protocol, gt, n_test)
    for store in (levels, snippets):
        if not store.is_dir():
            continue
        out = work / f"linear_baseline_{store.name}.json"
        linear_baseline(args.annotations, store, out)
        lin = protocol.evaluate_detection(gt, load_predictions(out))
        thresholds = [round(float(t), 2) for t in lin.tiou_thresholds]
        rows[f"linear per-snippet baseline ({store.name})"] = {
            "mAP": dict(zip(thresholds, np.round(lin.mAP * 100, 2).tolist())),
            "average_mAP_0.3_0.7": round(lin.average_mAP * 100, 2)}
    for label, path in (("MLTPN", args.mltpn_json), ("TAL-MTS", args.talmts_json)):
        if path and Path(path).is_file():
            rows.update(_external_rows(label, json.loads(Path(path).read_text())))
    figures = {"rows": rows, "config": str(CONFIG.relative_to(REPO)), "levels": LEVELS,
               "torch_threads": torch.get_num_threads(), "test_videos": n_test}
    print(json.dumps(figures, indent=1))
    print(markdown_table({name: _with_cpu(r) for name, r in rows.items()}))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return figures


def run_variant(annotations: str, work: Path, feats: Path, slug: str, overrides: list[str], protocol, gt,
                n_test: int) -> dict:
    """Train (unless already trained), infer the test subset, evaluate; wall and CPU seconds of each."""
    run, preds = work / f"run_{slug}", work / f"preds_{slug}.json"
    train_cpu = None
    if not (run / "checkpoints" / "last.pt").exists():
        args = ["detect", "train", "--config", str(CONFIG), "--features", str(feats), "--annotations", annotations,
                "--out", str(run)]
        for o in overrides:
            args += ["--set", o]
        c0 = time.process_time()
        run_tadkit(f"train {slug}", args)
        train_cpu = time.process_time() - c0
    epochs = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["event"] == "epoch"]
    t0, c0 = time.perf_counter(), time.process_time()
    run_tadkit(f"infer {slug}", ["detect", "infer", "--run", str(run), "--features", str(feats), "--subset", "test",
                                 "--out", str(preds)])
    infer_wall, infer_cpu = time.perf_counter() - t0, time.process_time() - c0
    res = protocol.evaluate_detection(gt, load_predictions(preds))
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    thresholds = [round(float(t), 2) for t in res.tiou_thresholds]
    return {"mAP": dict(zip(thresholds, np.round(res.mAP * 100, 2).tolist())),
            "average_mAP_0.3_0.7": round(res.average_mAP * 100, 2), "epochs": len(epochs),
            "train_seconds_per_epoch": round(float(np.median([r["seconds"] for r in epochs])), 1),
            "train_cpu_seconds_per_epoch": None if train_cpu is None else round(train_cpu / max(1, len(epochs)), 1),
            "final_loss": epochs[-1]["loss"] if epochs else None,
            "infer_videos_per_second": round(n_test / infer_wall, 1),
            "infer_cpu_seconds": round(infer_cpu, 1),
            "parameters": int(sum(t.numel() for t in state["model"].values() if t.dtype.is_floating_point)),
            "overrides": overrides}


def _external_rows(label: str, figures: dict) -> dict:
    if "rows" in figures:  # benchmarks/detect_talmts.py: its first (full-model) row
        name = next((k for k in figures["rows"] if k.startswith("TAL-MTS")), None)
        return {f"{label}: {name}": figures["rows"][name]} if name else {}
    return {f"{label} (benchmarks/detect_mltpn.py)": {
        "mAP": figures.get("mltpn_softnms_mAP") or figures.get("mltpn_mAP"),
        "average_mAP_0.3_0.7": figures.get("mltpn_softnms_average_mAP_0.3_0.7", figures.get("mltpn_average_mAP_0.3_0.7")),
        "train_seconds_per_epoch": figures.get("train_seconds_per_epoch"),
        "infer_videos_per_second": figures.get("infer_videos_per_second")}}


def _with_cpu(row: dict) -> dict:
    """The row for the table: wall seconds per epoch with CPU seconds beside them."""
    if row.get("train_cpu_seconds_per_epoch") is None:
        return row
    return {**row, "train_seconds_per_epoch": f"{row['train_seconds_per_epoch']} (cpu {row['train_cpu_seconds_per_epoch']})"}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")[:40]


if __name__ == "__main__":
    main()
