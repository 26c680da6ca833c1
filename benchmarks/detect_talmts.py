"""Benchmark: TAL-MTS and its ablation on the synthetic THUMOS14-timeline features of the MLTPN benchmark.

Steps (issue 8, on CPU)::

    tadkit data synth-features --annotations thumos14.json --subset validation,test --out WORK/feats_...
    for each variant (baseline, +RFP, +STT, +RFP+STT, +RFP+STT+FSA = TAL-MTS):
        tadkit detect train --config CONFIG --features WORK/feats_... --annotations thumos14.json \\
            --out WORK/run_TAG_<variant> --set ... (CPU_WIDTH + the variant's switches)
        tadkit detect infer --run WORK/run_TAG_<variant> --features WORK/feats_... --subset test --out ...
        THUMOS14 mAP@0.3:0.7 (tadkit.evaluate, thumos14 protocol)

The features are made exactly as in ``benchmarks/detect_mltpn.py`` (same
options, same command, deterministic), so the figures sit next to MLTPN's;
``--mltpn-json`` adds that benchmark's figures to the table. Only the
architecture widths are overridden (``CPU_WIDTH``): optimiser, schedule, data
windows, epochs and post-processing are the config's (``--config``, default
``configs/talmts/thumos14.yaml``). ``--paper-epochs N`` also trains the full
model with the paper's settings (``thumos14_paper.yaml`` next to the config)
for N epochs, for the learning curves. ``--levels 2,1 --stored-levels x2,x1``
adds synthetic backbone levels to the features and trains every variant a
second time with its lowest pyramid levels built from them
(``talmts.stored_levels``, issue 13 item 7).

Prints the figures as JSON (``--json`` writes them) and the mAP table as
markdown. Usage::

    python benchmarks/detect_talmts.py --annotations thumos14.json --work /tmp/bench --threads 1 \\
        --feature-dim 256 --stride 4 --fps 30
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_mltpn import (HOUSEKEEPING, add_common_arguments, baseline_figures, environment,  # noqa: E402
                          epoch_overrides, evaluate, prepare, report, train, training_figures)

REPO = Path(__file__).resolve().parents[1]

#: TAL-MTS sized for a 2-core CPU: the paper's 6 levels and 256-snippet clips, narrower maps (0.33 M
#: parameters over 256-dim features instead of 17.3 M at the paper's widths). Nothing else is overridden.
CPU_WIDTH = [
    "talmts.dim=64", "talmts.stt_dim=32", "talmts.fsa_dim=32", "talmts.num_heads=4", "talmts.boundary_dim=16",
    "talmts.stt_temporal_layers=1",
]

#: the paper's ablation rows (Table VI)
VARIANTS = {
    "baseline": ["talmts.rfp=false", "talmts.stt=false", "talmts.fsa=false"],
    "+RFP": ["talmts.rfp=true", "talmts.stt=false", "talmts.fsa=false"],
    "+STT": ["talmts.rfp=false", "talmts.stt=true", "talmts.fsa=false"],
    "+RFP+STT": ["talmts.rfp=true", "talmts.stt=true", "talmts.fsa=false"],
    "TAL-MTS (+RFP+STT+FSA)": ["talmts.rfp=true", "talmts.stt=true", "talmts.fsa=true"],
}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(ap, REPO / "configs" / "talmts" / "thumos14.yaml")
    ap.add_argument("--tag", default="new", help="prefix of the run folders (keeps old and new runs apart)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma-separated subset of: " + ", ".join(VARIANTS) + " (empty: none)")
    ap.add_argument("--paper-epochs", type=int, default=0,
                    help="also train the full model this many epochs with the config's _paper sibling")
    ap.add_argument("--mltpn-json", default=None, help="figures of benchmarks/detect_mltpn.py --json")
    ap.add_argument("--stored-levels", action="append", default=[],
                    help="also train every variant with talmts.stored_levels on these data.levels, finest first "
                         "(e.g. x2,x1 with --levels 2,1); repeat for several sets")
    args = ap.parse_args(argv)
    work, feats = prepare(args)
    width = [] if args.full_width else CPU_WIDTH

    rows = {}
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if name not in VARIANTS:
            sys.exit(f"unknown variant {name!r} (choose from {', '.join(VARIANTS)})")
        overrides = width + HOUSEKEEPING + epoch_overrides(args) + VARIANTS[name] + args.overrides
        rows[name] = _run(args, work, feats, args.config, _slug(f"{args.tag} {name}"), overrides)
        for levels in args.stored_levels:
            stored = ["talmts.stored_levels=true", f"data.levels=[{levels}]"]
            rows[f"{name}, stored levels {levels}"] = _run(
                args, work, feats, args.config, _slug(f"{args.tag} {name} levels {levels}"), overrides + stored)
    if args.paper_epochs:
        paper = args.config.with_name(f"{args.config.stem}_paper.yaml")
        overrides = width + HOUSEKEEPING + [f"train.epochs={args.paper_epochs}"] + args.overrides
        rows[f"TAL-MTS, {paper.name} ({args.paper_epochs} epochs)"] = _run(
            args, work, feats, paper, _slug(f"{args.tag} paper"), overrides)
    if args.baseline:
        rows["linear per-snippet baseline"] = baseline_figures(args.annotations, feats, work / "linear_baseline.json")
    if args.mltpn_json and Path(args.mltpn_json).is_file():
        rows["MLTPN (benchmarks/detect_mltpn.py)"] = json.loads(Path(args.mltpn_json).read_text())
    figures = {"rows": rows, "cpu_width": width, **environment()}
    report(figures, args.json)
    print(markdown_table(rows))
    return figures


def markdown_table(rows: dict[str, dict]) -> str:
    """One markdown row per run: mAP at 0.3..0.7, average, epochs, s/epoch, test videos/s, parameters."""
    head = "| model | 0.3 | 0.4 | 0.5 | 0.6 | 0.7 | avg 0.3:0.7 | epochs | s/epoch | infer videos/s | parameters |"
    lines = [head, "|" + "---|" * 11]
    for name, r in rows.items():
        m = r.get("mAP") or {}
        vals = [m.get(t, m.get(str(t))) for t in (0.3, 0.4, 0.5, 0.6, 0.7)] + [r.get("average_mAP_0.3_0.7")]
        cells = [f"{v:.1f}" if isinstance(v, (int, float)) else "–" for v in vals]
        cells += [str(r.get(k, "–")) for k in ("epochs", "train_seconds_per_epoch", "infer_videos_per_second",
                                                "parameters")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _run(args: argparse.Namespace, work: Path, feats: Path, config: Path, slug: str, overrides: list[str]) -> dict:
    run = work / f"run_{slug}"
    train(f"train {slug}", config, feats, args.annotations, run, overrides)
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    return {"config": str(config), "overrides": overrides, **training_figures(run),
            **evaluate(run, feats, args.annotations, work / f"preds_{slug}.json"),
            "parameters": int(sum(t.numel() for t in state["model"].values() if t.dtype.is_floating_point))}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


if __name__ == "__main__":
    main()
