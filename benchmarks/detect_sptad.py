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

    python benchmarks/detect_sptad.py --annotations thumos14.json --work /tmp/bench-sptad
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_mltpn import (baseline_figures, environment, evaluate, report, run_tadkit, train,  # noqa: E402
                          training_figures)
from detect_talmts import _slug, markdown_table  # noqa: E402

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
    ap.add_argument("--annotations", required=True,
                    help="THUMOS14 annotations (ActionFormer's thumos14.json) whose timeline the features follow")
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
    rows = {}
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if name == FALLBACK:
            run_tadkit("synthetic features (MLTPN benchmark store)", common + ["--out", str(snippets)])
            overrides, feats = [], snippets  # the config's data.levels are absent: data.optional_levels
        elif name in VARIANTS:
            overrides, feats = [LEVEL_NAMES] + VARIANTS[name], levels
        else:
            sys.exit(f"unknown variant {name!r} (choose from {', '.join(list(VARIANTS) + [FALLBACK])})")
        rows[name] = run_variant(args.annotations, work, feats, _slug(name)[:40], overrides + args.overrides)
    for store in (levels, snippets):
        if store.is_dir():
            rows[f"linear per-snippet baseline ({store.name})"] = baseline_figures(
                args.annotations, store, work / f"linear_baseline_{store.name}.json")
    for label, path in (("MLTPN", args.mltpn_json), ("TAL-MTS", args.talmts_json)):
        if path and Path(path).is_file():
            rows.update(_external_rows(label, json.loads(Path(path).read_text())))
    figures = {"rows": rows, "config": str(CONFIG.relative_to(REPO)), "levels": LEVELS, **environment()}
    report(figures, args.json)
    print(markdown_table({name: _with_cpu(r) for name, r in rows.items()}))
    return figures


def run_variant(annotations: str, work: Path, feats: Path, slug: str, overrides: list[str]) -> dict:
    """Train (unless already trained), infer the test subset, evaluate; wall and CPU seconds of each."""
    run = work / f"run_{slug}"
    cpu = time.process_time()
    done = (run / "checkpoints" / "last.pt").exists()
    train(f"train {slug}", CONFIG, feats, annotations, run, overrides)
    figures = training_figures(run)
    figures["train_cpu_seconds_per_epoch"] = (None if done else
                                              round((time.process_time() - cpu) / max(1, figures["epochs"]), 1))
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    return {**figures, **evaluate(run, feats, annotations, work / f"preds_{slug}.json"),
            "parameters": int(sum(t.numel() for t in state["model"].values() if t.dtype.is_floating_point)),
            "overrides": overrides}


def _external_rows(label: str, figures: dict) -> dict:
    """The rows another benchmark's ``--json`` adds: detect_talmts.py's full-model rows, detect_mltpn.py's run."""
    if "rows" in figures:
        return {f"{label}: {name}": row for name, row in figures["rows"].items() if name.startswith("TAL-MTS")}
    config = Path(figures.get("config", "mltpn/?"))
    return {f"{label} ({config.parent.name}/{config.name}, benchmarks/detect_mltpn.py)": figures}


def _with_cpu(row: dict) -> dict:
    """The row for the table: wall seconds per epoch with CPU seconds beside them."""
    if row.get("train_cpu_seconds_per_epoch") is None:
        return row
    return {**row, "train_seconds_per_epoch": f"{row['train_seconds_per_epoch']} (cpu {row['train_cpu_seconds_per_epoch']})"}


if __name__ == "__main__":
    main()
