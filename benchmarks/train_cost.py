"""CPU cost of one training iteration of a head at its THUMOS14 config, on 2048-d I3D-sized input.

Builds the head of ``configs/<head>/thumos14.yaml`` (the paper's widths), runs a few Adam
steps on random windows of 256 snippets with two ground-truth segments each (and, when the
config names I3D levels in ``data.levels``, random two-stream levels of I3D's widths and
strides), and prints the wall and CPU seconds per iteration and the peak RSS. With
``--annotations`` (THUMOS14, ActionFormer's ``thumos14.json``) it also counts the training
windows of the validation videos for I3D snippets (16 frames every 4, each video's fps) and
extrapolates the CPU time of one epoch. Usage::

    python benchmarks/train_cost.py --head mltpn --batch 2 --iters 4 --annotations path/to/thumos14.json
"""
from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

from tadkit import timeline
from tadkit.config import load_config
from tadkit.data.annotations import load_annotations
from tadkit.data.datasets import window_offsets
from tadkit.detect.config import DetectConfig
from tadkit.detect.heads import InputInfo, LevelInput, build_head
from tadkit.extract.backbones.i3d import LEVELS as I3D_LEVELS

SNIPPET_STRIDE = 4  # frames between I3D snippets (the THUMOS14 recipe)

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--head", default="mltpn")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--annotations", default=None, help="THUMOS14 annotations, to extrapolate one epoch")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(DetectConfig, REPO / "configs" / args.head / "thumos14.yaml")
    torch.manual_seed(0)
    length = cfg.data.length
    levels = [i3d_level(name, length, args.batch) for name in cfg.data.levels]
    info = InputInfo(tuple(cfg.data.levels), tuple(lv.features.shape[1] for lv in levels))
    head = build_head(args.head, getattr(cfg, args.head), 2048, 20, inputs=info)
    opt = torch.optim.Adam(head.parameters(), 1e-4)
    x = torch.randn(args.batch, 2048, length)
    mask = torch.ones(args.batch, length, dtype=torch.bool)
    inputs = {"levels": levels} if "levels" in head.needs else {}
    targets = [{"segments": torch.tensor([[10.0, 40.0], [100.0, 160.0]]), "labels": torch.tensor([1, 5])}
               for _ in range(args.batch)]
    cpu = []
    for i in range(args.iters):
        c0, t0 = time.process_time(), time.perf_counter()
        loss = head.loss(head(x, mask, **inputs), mask, targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        cpu.append(time.process_time() - c0)
        print(f"{args.head} batch {args.batch} iteration {i}: {time.perf_counter() - t0:.2f} s wall, "
              f"{cpu[-1]:.2f} s CPU, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB",
              flush=True)
    per_window = min(cpu[1:] or cpu) / args.batch
    figures = {"head": args.head, "params_m": sum(p.numel() for p in head.parameters()) / 1e6,
               "cpu_s_per_window": per_window}
    print(f"{figures['params_m']:.1f} M parameters; {per_window:.2f} CPU-s per window of {length} "
          f"(best iteration after the first)")
    if args.annotations:
        ann = load_annotations(args.annotations, warn=False).subset(cfg.data.train_subset)
        hop = cfg.data.train_stride or max(1, round(length * (1 - cfg.data.train_overlap)))
        windows = 0
        for vid, row in ann.videos.iterrows():
            frames = timeline.num_sampled_frames(row["duration"], row["fps"])
            windows += len(window_offsets(len(timeline.snippet_starts(frames, 16, 4)), length, hop))
        figures.update(windows=windows, epoch_cpu_h=windows * per_window / 3600)
        print(f"THUMOS14 {cfg.data.train_subset}: {windows} windows per epoch (before dropping empty ones) "
              f"-> {figures['epoch_cpu_h']:.2f} CPU-hours per epoch on this machine")
    return figures


def i3d_level(name: str, length: int, batch: int) -> LevelInput:
    """Random two-stream I3D level ``name`` (RGB ‖ Flow) of a window of ``length`` snippets."""
    channels, stride = I3D_LEVELS[name]
    steps = length * SNIPPET_STRIDE // stride
    positions = (torch.arange(steps) + 0.5) * stride / SNIPPET_STRIDE - 0.5
    return LevelInput(torch.randn(batch, 2 * channels, steps), torch.ones(batch, steps, dtype=torch.bool),
                      positions.expand(batch, -1).contiguous())


if __name__ == "__main__":
    main()
