"""What the feature store's safety costs: in-memory writes, checks on reading, source identity on a rerun.

Side by side in one run (alternating call by call; medians of wall and CPU time per call):

* **write** -- ``FeatureWriter.write`` (HDF5 built in memory, published with
  ``os.write`` + ``fsync`` + ``os.replace``) against writing the HDF5 file on
  disk directly (the previous writer: ``h5py.File(tmp, "w")``, ``fsync``,
  ``os.replace``);
* **read** -- ``FeatureStore.read`` of a whole video and of a 256-snippet
  window, first read of a store object (the file's check runs once) and later
  reads, against plain ``h5py`` reads of the same rows;
* **rerun planning** -- ``plan_run`` per video already in the store: the
  stored file's check plus the source comparison (same modification time: a
  ``stat``; other modification time: the sample hash too).

    python benchmarks/store_speed.py [--videos 10] [--snippets 2000] [--dim 2048]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from tadkit.data.features import FeatureStore, Provenance, VideoFeatures
from tadkit.extract.sources import plan_run, source_identity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=10)
    ap.add_argument("--snippets", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    prov = Provenance(backbone="i3d", streams=("rgb", "flow"), feature_dim=args.dim, clip_len=16, stride=4,
                      fps=30.0)
    rng = np.random.default_rng(0)
    videos = [_video(f"v{i:03d}", args.snippets, args.dim, rng) for i in range(args.videos)]
    mb = args.snippets * args.dim * 4 / 1e6
    print(f"{args.videos} videos of {args.snippets} x {args.dim} float32 ({mb:.1f} MB each), {args.repeat} rounds")
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        tmp = Path(tmp)
        new, old = [], []  # per video, alternating, so that the machine's noise hits both alike
        for r in range(args.repeat):
            with FeatureStore.create(tmp / f"new{r}", prov) as writer:
                (tmp / f"old{r}" / "videos").mkdir(parents=True)
                for v in videos:
                    new.append(_timed(lambda: writer.write(v)))
                    old.append(_timed(lambda: _write_old(tmp / f"old{r}", v)))
        _row("write, in memory + os.write", new)
        _row("write, h5py on disk (the previous writer)", old)

        root = tmp / "new0"
        rows = slice(0, min(256, args.snippets))
        for label, sel in (("whole video", None), ("256-snippet window", rows)):
            first, later, raw = [], [], []
            for _ in range(args.repeat):
                store = FeatureStore.open(root)  # a new store object checks each file on its first read
                for v in videos:
                    first.append(_timed(lambda: store.read(v.video_id, sel, extras=False)))
                    later.append(_timed(lambda: store.read(v.video_id, sel, extras=False)))
                    raw.append(_timed(lambda: _raw_read(root, v.video_id, sel or slice(None))))
            _row(f"read {label}, first read (checks the file)", first)
            _row(f"read {label}, later reads", later)
            _row(f"read {label}, plain h5py", raw)

        sources = tmp / "sources"
        sources.mkdir()
        paths = []
        for v in videos:  # stand-in video files of 5 MB with their source recorded
            p = sources / f"{v.video_id}.mp4"
            p.write_bytes(rng.integers(0, 256, 5_000_000, dtype=np.uint8).tobytes())
            paths.append(p)
        with FeatureStore.create(tmp / "rerun", prov) as w:
            for v, p in zip(videos, paths):
                v.source = source_identity(p)
                w.write(v)
        recorded = {p: p.stat().st_mtime_ns for p in paths}
        same, touched = [], []
        for _ in range(args.repeat):
            for p in paths:
                os.utime(p, ns=(recorded[p], recorded[p]))
            same.append(_per(_timed(lambda: plan_run(FeatureStore.create(tmp / "rerun", prov), paths)), len(paths)))
            for p in paths:
                os.utime(p)
            touched.append(_per(_timed(lambda: plan_run(FeatureStore.create(tmp / "rerun", prov), paths)),
                                len(paths)))
        _row("rerun planning per video in the store, same mtime", same)
        _row("rerun planning per video in the store, other mtime (hash)", touched)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def _video(vid: str, t: int, c: int, rng: np.random.Generator) -> VideoFeatures:
    return VideoFeatures(vid, rng.standard_normal((t, c), dtype=np.float32), (np.arange(t) * 4 + 8) / 30.0,
                         30.0, 16, 4, t * 4 + 12, (t * 4 + 12) / 30.0)


def _write_old(root: Path, v: VideoFeatures) -> None:
    """The previous writer's I/O: the HDF5 library writes the temporary file on disk, then the same
    fsyncs and rename."""
    tmp = root / "videos" / f".tmp-{v.video_id}.h5"
    with h5py.File(tmp, "w") as f:
        for key in ("video_id", "fps", "clip_len", "stride", "num_frames", "duration"):
            f.attrs[key] = getattr(v, key)
        f.attrs["provenance"] = "{}"
        f.create_dataset("features", data=v.features)
        f.create_dataset("times", data=v.times)
    for path in (tmp, root / "videos"):
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    os.replace(tmp, root / "videos" / f"{v.video_id}.h5")


def _raw_read(root: Path, vid: str, rows: slice = slice(None)) -> np.ndarray:
    with h5py.File(root / "videos" / f"{vid}.h5", "r") as f:
        return f["features"][rows], f["times"][rows]


def _timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def _per(wall_cpu: tuple[float, float], n: int) -> tuple[float, float]:
    return wall_cpu[0] / n, wall_cpu[1] / n


def _row(what: str, samples: list[tuple[float, float]]) -> None:
    wall, cpu = np.median(np.asarray(samples), axis=0)
    print(f"  {what:58s} {1e3 * wall:8.2f} ms wall {1e3 * cpu:8.2f} ms CPU   (median of {len(samples)})")


if __name__ == "__main__":
    sys.exit(main())
