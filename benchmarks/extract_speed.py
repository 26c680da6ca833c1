"""Extraction speed and memory on a generated video.

Prints, in one run:

* decode-only frames/s (decord ``get_batch`` in batches of 64);
* backbone-only clips/s (``Extractor.forward`` on ready inputs);
* end-to-end clips/s (``Extractor.run``: decode, resize, [flow], forward, write);
* the ratio end-to-end / backbone-only (goal >= 0.9: decoding hidden behind compute);
* peak RSS of an end-to-end run over a short and a long video, each in a fresh process
  (goal: about the same -- memory is bounded by the batch, not the video).

With ``--backbones`` (a comma-separated list of families, or ``all``) it instead prints,
per backbone family (each with its own recipe, clip length and stride), backbone-only and
end-to-end clips/s and their ratio, as a markdown table (``benchmarks/RESULTS.md``,
section "Extract").

Defaults are sized for a 2-core CPU (small crop, RGB only); on a GPU try
``--size 224 --streams rgb,flow --device cuda --batch-size 16``.

    python benchmarks/extract_speed.py [--size 112] [--seconds 20] [--rss-minutes 1 10]
    python benchmarks/extract_speed.py --backbones all --size 64 --seconds 4 --threads 1
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=112, help="crop side (224 = the real recipe)")
    ap.add_argument("--streams", default="rgb")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (on a busy shared CPU, 1 is often fastest)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the speed-test video")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--stride", type=int, default=None,
                    help="snippet stride for the speed test [16; with --backbones: each recipe's]")
    ap.add_argument("--backbones", default=None,
                    help="per-family table: comma-separated families (see tadkit extract --list-backbones) or 'all'")
    ap.add_argument("--repeat", type=int, default=3, help="best-of repetitions of the speed figures")
    ap.add_argument("--rss-minutes", type=float, nargs="*", default=[1.0, 10.0],
                    help="video lengths for the peak-RSS comparison (empty to skip)")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    if args.rss_child:
        return _rss_child(args)

    if args.backbones:
        with tempfile.TemporaryDirectory(prefix="tadkit-bench-") as tmp:
            rows = _measure_backbones(args, Path(tmp))
        print(_markdown(rows, args))
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return 0
    with tempfile.TemporaryDirectory(prefix="tadkit-bench-") as tmp:
        figures = _measure(args, Path(tmp))
    for key, value in figures.items():
        print(f"{key:34s} {value:10.2f}" if isinstance(value, float) else f"{key:34s} {value:>10}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


def _measure(args: argparse.Namespace, work: Path) -> dict[str, float]:
    """All figures of one benchmark run; scratch files go to ``work``."""
    import torch

    from tadkit.extract.runner import ExtractOptions, Extractor
    from tadkit.extract.video import open_video

    if args.threads:
        torch.set_num_threads(args.threads)
    n_frames = int(args.seconds * args.fps)
    video = _make_video(work / "speed.mp4", n_frames, args.width, args.height, args.fps)
    streams = tuple(args.streams.split(","))
    ex = Extractor(ExtractOptions(streams=streams, random_weights=True, size=args.size, device=args.device,
                                  batch_size=args.batch_size, stride=args.stride or 16))
    figures: dict[str, float] = {"threads": torch.get_num_threads(), "size": args.size,
                                 "batch_size": args.batch_size, "frames": n_frames}

    # decode only
    reader = open_video(video)
    t = time.perf_counter()
    for s in range(0, n_frames, 64):
        reader.get_frames(np.arange(s, min(s + 64, n_frames)))
    figures["decode_fps"] = n_frames / (time.perf_counter() - t)
    figures.update(_speed(ex, video, reader, args, work))

    # memory: fresh processes, one per video length
    for minutes in args.rss_minutes:
        path = _make_video(work / f"rss_{minutes:g}min.mp4", int(minutes * 60 * args.fps), 160, 120, args.fps)
        out = subprocess.run([sys.executable, __file__, "--rss-child", str(path), "--size", "32",
                              "--batch-size", "8"], capture_output=True, text=True, check=True)
        figures[f"peak_rss_mb_{minutes:g}min"] = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]
    return figures


def _speed(ex, video: Path, reader, args: argparse.Namespace, work: Path) -> dict[str, float]:
    """Backbone-only and end-to-end clips/s of one extractor on ``video``.

    Backbone only = the first batch's inputs, forwarded once per batch of the
    video; end to end = ``Extractor.run`` (decode, resize, [flow], forward,
    write). Alternated and best-of-``repeat``, so that load changes on a shared
    machine hit both alike.
    """
    from tadkit.extract.video import plan_snippets

    plan = plan_snippets(reader.info, ex.clip_len, ex.stride)
    _, inputs = next(iter(ex.clip_batches(reader, plan)))
    for _ in range(2):  # warm-up (oneDNN / cuDNN pick their kernels per shape)
        ex.forward(inputs)
    batches = len(list(plan.batches(ex.batch_size)))
    backbone_s, e2e_s, snippets = [], [], 0
    for rep in range(args.repeat):
        t = time.perf_counter()
        for _ in range(batches):
            ex.forward(inputs)
        _sync(args.device)
        backbone_s.append(time.perf_counter() - t)
        report = ex.run([video], work / f"feats-{ex.opts.backbone}-{rep}", progress=False)
        if report.failed:
            raise RuntimeError(f"benchmark video failed: {report.failed}")
        e2e_s.append(report.seconds)
        snippets = report.snippets
    out = {"backbone_clips_per_s": batches * ex.batch_size / min(backbone_s),
           "end_to_end_clips_per_s": snippets / min(e2e_s)}
    out["ratio_end_to_end_over_backbone"] = out["end_to_end_clips_per_s"] / out["backbone_clips_per_s"]
    return out


def _measure_backbones(args: argparse.Namespace, work: Path) -> list[dict]:
    """One row per backbone family: its recipe at ``--size``, streams ``--streams`` it has."""
    import torch

    from tadkit.extract import backbones
    from tadkit.extract.runner import ExtractOptions, Extractor
    from tadkit.extract.video import open_video

    if args.threads:
        torch.set_num_threads(args.threads)
    names = [f.name for f in backbones.families()] if args.backbones == "all" else args.backbones.split(",")
    video = _make_video(work / "speed.mp4", int(args.seconds * args.fps), args.width, args.height, args.fps)
    reader = open_video(video)
    rows = []
    for name in names:
        fam = backbones.family(name)
        streams = tuple(s for s in args.streams.split(",") if s in fam.streams) or fam.streams[:1]
        ex = Extractor(ExtractOptions(backbone=name, streams=streams, random_weights=True, size=args.size,
                                      device=args.device, batch_size=args.batch_size, stride=args.stride))
        row = {"backbone": name, "streams": ",".join(streams), "recipe": ex.recipe.name,
               "clip_len": ex.clip_len, "stride": ex.stride, "crop": ex.recipe.crop,
               "threads": torch.get_num_threads(), "batch_size": ex.batch_size}
        row.update(_speed(ex, video, reader, args, work))
        rows.append(row)
        print(f"# {name}: {row['backbone_clips_per_s']:.2f} clips/s backbone, "
              f"{row['end_to_end_clips_per_s']:.2f} end to end", file=sys.stderr, flush=True)
    return rows


def _markdown(rows: list[dict], args: argparse.Namespace) -> str:
    lines = ["| backbone | streams | recipe | clip / stride | backbone-only clips/s | end-to-end clips/s "
             "| end-to-end / backbone |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['backbone']}` | {r['streams']} | `{r['recipe']}` | {r['clip_len']} / {r['stride']} "
                     f"| {r['backbone_clips_per_s']:.2f} | {r['end_to_end_clips_per_s']:.2f} "
                     f"| {r['ratio_end_to_end_over_backbone']:.2f} |")
    return "\n".join(lines)


def _rss_child(args: argparse.Namespace) -> int:
    """End-to-end run over one video in this fresh process; prints its peak RSS."""
    from tadkit.extract.runner import ExtractOptions, Extractor

    ex = Extractor(ExtractOptions(streams=("rgb",), random_weights=True, size=args.size, device="cpu",
                                  batch_size=args.batch_size, clip_len=16, stride=64))
    with tempfile.TemporaryDirectory(prefix="tadkit-rss-") as out:
        report = ex.run([Path(args.rss_child)], out, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    print(json.dumps({"peak_rss_mb": peak, "snippets": report.snippets, "failed": len(report.failed)}))
    return 0


def _make_video(path: Path, n: int, width: int, height: int, fps: int) -> Path:
    """A moving-noise test video, encoded frame by frame (never held in memory)."""
    import av

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height, width + n // 4 + 8, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(n):
            x0 = (k // 4) % (base.shape[1] - width)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, x0:x0 + width]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


if __name__ == "__main__":
    sys.exit(main())
