"""Benchmark: RGB-only, Flow-only and late-fused MLTPN and TAL-MTS on two-stream synthetic features.

The papers' stream tables (MLTPN Table 1, TAL-MTS Tables IV-V) on CPU::

    tadkit data synth-features --annotations thumos14.json --subset validation,test \\
        --streams rgb,flow --out WORK/feats                     (partly complementary streams)
    for head in mltpn, talmts; for stream in rgb, flow:
        tadkit detect train --config configs/<head>/thumos14.yaml --features WORK/feats \\
            --annotations thumos14.json --out WORK/<head>_<stream> --set data.streams=[<stream>] ...
        tadkit detect infer --run WORK/<head>_<stream> --features WORK/feats --subset test --out ...
    tadkit detect infer --run WORK/<head>_rgb --run WORK/<head>_flow --fuse mean  ...   (raw outputs averaged)
    tadkit detect infer --run WORK/<head>_rgb --run WORK/<head>_flow --fuse union ...   (candidates pooled)
    THUMOS14 mAP@0.3:0.7 (tadkit.evaluate, thumos14 protocol)

``--norm-check N`` also trains the RGB MLTPN for N epochs on the same features
scaled by 1e-6 (as random-weight backbone features are) with and without
``data.normalize``, and on the unscaled features without it (with it, the
scaled and unscaled features are the same after standardisation), to measure
what feature normalisation does.

The heads use the CPU widths and optimisers of ``benchmarks/detect_mltpn.py``
and ``benchmarks/detect_talmts.py`` (TAL-MTS without RFP, its best variant
there). Prints wall and CPU seconds, the mAP tables (markdown) and writes the
figures as JSON (``--json``). Usage::

    python benchmarks/detect_fusion.py --annotations path/to/thumos14.json --work /tmp/bench-fusion
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_mltpn import CPU_OVERRIDES as MLTPN_CPU  # noqa: E402
from detect_mltpn import run_tadkit  # noqa: E402
from detect_talmts import CPU_OVERRIDES as TALMTS_CPU  # noqa: E402
from tadkit.data.features import FeatureStore, VideoFeatures
from tadkit.evaluate import get_protocol, load_ground_truth, load_predictions

REPO = Path(__file__).resolve().parents[1]

HEADS = {
    "mltpn": ("MLTPN", MLTPN_CPU + ["schedule.milestones=[{m}]"]),
    "talmts": ("TAL-MTS", TALMTS_CPU + ["talmts.rfp=false"]),
}
QUIET = ["train.log_every=0", "train.checkpoint_every=100"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--annotations", default=str(REPO.parent / "shared" / "data" / "thumos14.json"))
    ap.add_argument("--work", default="/tmp/tadkit-bench-fusion")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--heads", default="mltpn,talmts")
    ap.add_argument("--feature-dim", type=int, default=32, help="channels per stream")
    ap.add_argument("--norm-check", type=int, default=0, help="epochs of the normalisation check (0: skip)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    feats = work / "feats"
    cpu0, wall0 = _cpu(), time.perf_counter()
    run_tadkit("synthetic two-stream features", [
        "data", "synth-features", "--annotations", args.annotations, "--subset", "validation,test",
        "--streams", "rgb,flow", "--feature-dim", str(args.feature_dim), "--out", str(feats)])
    protocol = get_protocol("thumos14")
    gt = load_ground_truth(args.annotations, subset="test")
    figures: dict = {"epochs": args.epochs, "threads": args.threads, "rows": {},
                     "tiou": [round(float(t), 2) for t in protocol.tiou_thresholds]}

    def evaluate(name: str, preds: Path, seconds: float, cpu: float, train_s: float | None = None) -> None:
        res = protocol.evaluate_detection(gt, load_predictions(preds))
        figures["rows"][name] = {"mAP": np.round(res.mAP * 100, 1).tolist(), "avg": round(res.average_mAP * 100, 2),
                                 "infer_s": round(seconds, 1), "infer_cpu_s": round(cpu, 1),
                                 "train_s_per_epoch": train_s}
        print(f"{name}: average mAP {res.average_mAP * 100:.2f}", flush=True)

    for head in [h for h in args.heads.split(",") if h]:
        label, cpu_overrides = HEADS[head]
        runs = {}
        for stream in ("rgb", "flow"):
            runs[stream] = work / f"{head}_{stream}"
            overrides = [o.format(m=max(1, args.epochs * 3 // 4)) for o in cpu_overrides] + QUIET + [
                f"train.epochs={args.epochs}", f"data.streams=[{stream}]"]
            _train(f"train {label} {stream}", head, feats, args.annotations, runs[stream], overrides)
        for name, extra in ((f"{label} RGB", ["--run", str(runs["rgb"])]),
                            (f"{label} Flow", ["--run", str(runs["flow"])]),
                            (f"{label} late fusion: mean of raw outputs",
                             ["--run", str(runs["rgb"]), "--run", str(runs["flow"]), "--fuse", "mean"]),
                            (f"{label} late fusion: union of candidates",
                             ["--run", str(runs["rgb"]), "--run", str(runs["flow"]), "--fuse", "union"])):
            preds = work / f"{name.replace(' ', '_').replace(':', '')}.json"
            t0, c0 = time.perf_counter(), _cpu()
            run_tadkit(f"infer {name}", ["detect", "infer", *extra, "--features", str(feats), "--subset", "test",
                                         "--out", str(preds)])
            per_epoch = None
            if "fusion" not in name:
                per_epoch = _seconds_per_epoch(runs["rgb" if name.endswith("RGB") else "flow"])
            evaluate(name, preds, time.perf_counter() - t0, _cpu() - c0, per_epoch)

    if args.norm_check:
        tiny = work / "feats_1e-6"
        _scaled_copy(feats, tiny, 1e-6)
        label, cpu_overrides = HEADS["mltpn"]
        for scale, store, norm in (("x1e-6", tiny, "false"), ("x1e-6", tiny, "true"), ("x1", feats, "false")):
            run = work / f"mltpn_rgb_{scale}_norm_{norm}"
            overrides = [o.format(m=max(1, args.norm_check * 3 // 4)) for o in cpu_overrides] + QUIET + [
                f"train.epochs={args.norm_check}", "data.streams=[rgb]", f"data.normalize={norm}"]
            _train(f"train MLTPN rgb {scale} normalize={norm}", "mltpn", store, args.annotations, run, overrides)
            preds = work / f"mltpn_rgb_{scale}_norm_{norm}.json"
            t0, c0 = time.perf_counter(), _cpu()
            run_tadkit("infer", ["detect", "infer", "--run", str(run), "--features", str(store), "--subset", "test",
                                 "--out", str(preds)])
            evaluate(f"MLTPN RGB, features {scale}, data.normalize={norm} ({args.norm_check} epochs)", preds,
                     time.perf_counter() - t0, _cpu() - c0, _seconds_per_epoch(run))
            last = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()][-1]
            figures["rows"][list(figures["rows"])[-1]]["final_loss"] = round(last["loss"], 4)

    figures["wall_s"] = round(time.perf_counter() - wall0, 1)
    figures["cpu_s"] = round(_cpu() - cpu0, 1)
    print(json.dumps(figures, indent=1))
    print(markdown(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return figures


def markdown(figures: dict) -> str:
    """The papers' layout: one row per stream setting, mAP per tIoU and the average over 0.3..0.7."""
    tiou = figures["tiou"]
    lines = ["| features | " + " | ".join(f"{t:g}" for t in tiou) + " | avg 0.3–0.7 | train s/epoch | test infer s (cpu s) |",
             "|---|" + "---|" * (len(tiou) + 3)]
    for name, r in figures["rows"].items():
        per = "–" if r["train_s_per_epoch"] is None else f"{r['train_s_per_epoch']:.1f}"
        lines.append(f"| {name} | " + " | ".join(f"{x:.1f}" for x in r["mAP"]) + f" | **{r['avg']:.2f}** | {per} | "
                     f"{r['infer_s']:.1f} ({r['infer_cpu_s']:.1f}) |")
    return "\n".join(lines)


def _train(name: str, head: str, feats: Path, annotations: str, run: Path, overrides: list[str]) -> None:
    if (run / "checkpoints" / "last.pt").exists():
        return
    argv = ["detect", "train", "--config", str(REPO / "configs" / head / "thumos14.yaml"), "--features", str(feats),
            "--annotations", annotations, "--out", str(run)]
    run_tadkit(name, argv + sum((["--set", o] for o in overrides), []))


def _seconds_per_epoch(run: Path) -> float:
    secs = [r["seconds"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["event"] == "epoch"]
    return round(float(np.median(secs)), 1)


def _scaled_copy(src: Path, dst: Path, scale: float) -> None:
    """The store ``src`` with every feature multiplied by ``scale`` (same provenance otherwise)."""
    store = FeatureStore.open(src)
    with FeatureStore.create(dst, store.provenance) as w:
        for vid in store.video_ids():
            if w.has(vid):
                continue
            v = store.read(vid, extras=False)
            w.write(VideoFeatures(vid, v.features * scale, v.times, v.fps, v.clip_len, v.stride, v.num_frames,
                                  v.duration))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


if __name__ == "__main__":
    main()
