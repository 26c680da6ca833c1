"""The README's first command, measured: ``tadkit demo`` at 1 vs N ``--threads``, side by side.

Runs the full demo (``tadkit demo --force``) once per thread count, each in its own subprocess
with ``OMP_NUM_THREADS=1`` in its environment, and prints per run the wall time, the CPU time
(``RUSAGE_CHILDREN``), the peak RSS and the average mAP; then checks that the runs agree
bit for bit (features, detections, metrics). ``--picture PATH`` copies the first run's
timeline of the first validation video with the most instances there (the README's picture,
``docs/images/``). Usage::

    python benchmarks/demo.py --work /tmp/tadkit-bench-demo --threads 1,2 [--picture docs/images/demo_timeline.png]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/tadkit-bench-demo")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--fast", action="store_true", help="the test-sized demo (tadkit demo --fast)")
    ap.add_argument("--picture", default=None, help="copy a timeline of the first run here (the README picture)")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    counts = [int(t) for t in args.threads.split(",")]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    figures: dict[str, dict] = {}
    for n in counts:
        out = work / f"threads{n}"
        wall, cpu, rss = _demo(out, n, args.fast)
        res = json.loads((out / "report" / "results.json").read_text())
        figures[str(n)] = {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss,
                           "average_mAP": res["average_mAP"], "mAP": res["mAP"],
                           "num_videos": res["num_videos"], "num_ground_truth": res["num_ground_truth"]}
        print(f"threads={n}: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {rss:.0f} MB, "
              f"average mAP {100 * res['average_mAP']:.2f}%", flush=True)

    first = work / f"threads{counts[0]}"
    same = {str(n): _identical(first, work / f"threads{n}") for n in counts[1:]}
    print("\n| --threads | wall s | CPU s | peak RSS MB | average mAP % | mAP@0.5 / 0.75 / 0.95 % |")
    print("|---|---|---|---|---|---|")
    for n in counts:
        f = figures[str(n)]
        m = f["mAP"]
        print(f"| {n} | {f['wall_s']:.1f} | {f['cpu_s']:.1f} | {f['peak_rss_mb']:.0f} | "
              f"{100 * f['average_mAP']:.2f} | {100 * m[0]:.2f} / {100 * m[5]:.2f} / {100 * m[-1]:.2f} |")
    for n, verdict in same.items():
        print(f"threads {counts[0]} vs {n}: {verdict}")
    f0 = figures[str(counts[0])]
    print(f"validation: {f0['num_videos']} videos, {f0['num_ground_truth']} ground-truth instances; "
          f"load average at the end {os.getloadavg()}")
    figures["identical"] = same
    if args.picture:
        gt = json.loads((first / "videos" / "annotations.json").read_text())["database"]
        video = max(sorted(v for v, info in gt.items() if info["subset"] == "validation"),
                    key=lambda v: len(gt[v]["annotations"]))      # the first with the most instances
        Path(args.picture).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(first / "report" / "timelines" / f"{video}.png", args.picture)
        print(f"picture: {args.picture} ({video})")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


def _demo(out: Path, threads: int, fast: bool) -> tuple[float, float, float]:
    """``tadkit demo --out OUT --force --threads N`` in a subprocess: ``(wall s, CPU s, peak RSS MB)``."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("TADKIT_THREADS", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tadkit", "demo", "--out", str(out), "--force",
                    "--threads", str(threads), *(["--fast"] if fast else [])],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss / 1024          # Linux: KiB


def _identical(a: Path, b: Path) -> str:
    """Which of features, detections and metrics two demo folders share bit for bit."""
    from tadkit.data.features import FeatureStore

    sa, sb = FeatureStore.open(a / "features"), FeatureStore.open(b / "features")
    feats = sa.video_ids() == sb.video_ids() and all(
        np.array_equal(sa.read(v).features, sb.read(v).features) for v in sa.video_ids())
    preds = [json.loads((d / "predictions.json").read_text())["results"] for d in (a, b)]
    res = [json.loads((d / "report" / "results.json").read_text()) for d in (a, b)]
    metrics = all(res[0][k] == res[1][k] for k in ("mAP", "average_mAP", "per_class_AP"))
    return (f"features {'identical' if feats else 'DIFFER'}, detections "
            f"{'identical' if preds[0] == preds[1] else 'DIFFER'}, metrics {'identical' if metrics else 'DIFFER'}")


if __name__ == "__main__":
    main()
