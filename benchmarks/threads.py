"""Wall and CPU time of the compute commands at 1 vs N CPU threads (``--threads``), side by side.

Generates a few small videos once, then runs, for each thread count in turn (alternating, so a
change in machine load hits every count alike), a subprocess of each command:

* ``tadkit extract`` (I3D two-stream, random weights, 64-pixel crops, TV-L1 flow);
* ``tadkit detect train`` (a small MLTPN, the demo's settings, a few epochs);
* ``tadkit detect infer`` on the validation videos.

Prints the best wall time of each command per thread count, the CPU seconds of that run
(``RUSAGE_CHILDREN``) and the ratio to one thread. Usage::

    python benchmarks/threads.py --work /tmp/tadkit-threads --threads 1,2 --repeat 3
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

STAGES = ("extract", "train", "infer")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/tadkit-bench-threads")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    counts = [int(t) for t in args.threads.split(",")]
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    videos = work / "videos"
    _tadkit(["data", "synth-videos", "--out", videos, "--num-videos", 6, "--num-classes", 3, "--size", 64,
             "--fps", 8, "--min-duration", 10, "--max-duration", 12, "--seed", 0], threads=1)

    best: dict[tuple[str, int], tuple[float, float]] = {}
    for rep in range(args.repeat):
        for n in counts:
            feats, run, preds = work / f"feats{n}", work / f"run{n}", work / f"preds{n}.json"
            for p in (feats, run):
                shutil.rmtree(p, ignore_errors=True)
            commands = {
                "extract": ["extract", "--backbone", "i3d", videos, "--out", feats, "--random-weights",
                            "--size", 64, "--flow-size", 64, "--flow-scales", 2, "--flow-warps", 1,
                            "--batch-size", 8, "--device", "cpu"],
                "train": ["detect", "train", "--features", feats, "--annotations", videos / "annotations.json",
                          "--out", run, "--device", "cpu", *_sets({
                              "head": "mltpn", "data.mode": "resize", "data.length": 64,
                              "data.train_subset": "training", "data.test_subset": "validation",
                              "mltpn.embed_dim": 64, "mltpn.thm_channels": 32, "mltpn.thm_out_channels": 32,
                              "mltpn.num_thms": 2, "mltpn.num_scales": 3, "mltpn.transform_k1": 16,
                              "mltpn.transform_k2": 16, "optim.name": "adam", "optim.lr": 3e-3,
                              "train.epochs": args.epochs, "train.batch_size": 4,
                              "train.checkpoint_every": args.epochs})],
                "infer": ["detect", "infer", "--run", run, "--features", feats, "--annotations",
                          videos / "annotations.json", "--subset", "validation", "--out", preds,
                          "--device", "cpu"],
            }
            for stage in STAGES:
                wall, cpu = _tadkit(commands[stage], threads=n)
                print(f"repeat {rep + 1}: {stage:8s} threads={n}: {wall:7.2f} s wall, {cpu:7.2f} s CPU",
                      flush=True)
                if (stage, n) not in best or wall < best[(stage, n)][0]:
                    best[(stage, n)] = (wall, cpu)

    print("\n| command | " + " | ".join(f"{n} thread{'s' if n > 1 else ''}: wall / CPU s" for n in counts)
          + " | wall ratio to 1 thread |")
    print("|---|" + "---|" * (len(counts) + 1))
    figures = {}
    for stage in STAGES:
        cells = [f"{best[(stage, n)][0]:.2f} / {best[(stage, n)][1]:.2f}" for n in counts]
        ratios = [f"{best[(stage, n)][0] / best[(stage, counts[0])][0]:.2f}" for n in counts]
        print(f"| {stage} | " + " | ".join(cells) + " | " + " / ".join(ratios) + " |")
        figures[stage] = {str(n): {"wall_s": best[(stage, n)][0], "cpu_s": best[(stage, n)][1]} for n in counts}
    figures["load_average"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


def _sets(pairs: dict[str, object]) -> list[str]:
    return [a for k, v in pairs.items() for a in ("--set", f"{k}={v}")]


def _tadkit(args: list[object], threads: int) -> tuple[float, float]:
    """Run ``tadkit ARGS --threads N`` in a subprocess; ``(wall s, CPU s)``."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "TADKIT_THREADS")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tadkit", *map(str, args), "--threads", str(threads)],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


if __name__ == "__main__":
    main()
