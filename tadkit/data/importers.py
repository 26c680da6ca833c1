"""Published snippet features -> a tadkit feature store (``tadkit data import-features``).

Most users start from features others released. Each :class:`Layout` names one such release:
how its files are organised (one ``.npy`` per video, one CSV per video, or one HDF5 file for
all videos, each array ``[T, C]``) and the rule that gives feature ``i`` its time stamp:

``strided``
    feature ``i`` at frame ``i * stride + offset`` of the video sampled at ``fps``:
    ``t_i = (i * stride + offset) / fps`` (:func:`tadkit.timeline.strided_feature_times`).
    ActionFormer writes ``feat_stride`` / ``num_frames`` (``offset = num_frames / 2``, the
    clip centre), OpenTAD ``feature_stride`` / ``offset_frames``.
``resized``
    the ``T`` rows split the video into equal cells, row ``i`` centred at
    ``t_i = (i + 1/2) * span / T`` (:func:`tadkit.timeline.resized_feature_times`); ``span``
    is the duration, or, with BSN's ``video_info_new.csv``, the part of the video the
    features were computed on, ``featureFrame / numFrame * seconds``.

The store records the layout, its rule and parameters, and the declared backbone in its
provenance (``extras.import``), so ``tadkit info`` says where the features came from. Videos
are matched to annotation ids as named (minus ``prefix``), with or without ActivityNet's
``v_``; the annotations give per-video fps and durations. One unreadable or malformed file is
recorded as failed and the import goes on; a rerun skips videos already imported.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import h5py
import numpy as np

from tadkit import timeline
from tadkit.data.annotations import Annotations
from tadkit.data.features import FeatureStore, Provenance, VideoFeatures
from tadkit.errors import ConfigError, InputError, ProvenanceError


@dataclass(frozen=True)
class Layout:
    """A published feature release: files, time rule and what the features are.

    ``files``: ``npy`` (a folder of ``<id>.npy``), ``csv`` (a folder of ``<id>.csv`` with a
    header row) or ``h5`` (one file, one ``[T, C]`` dataset per video). ``rule``: ``strided``
    (needs ``stride`` and ``offset`` in frames, and ``fps`` or per-video fps from the
    annotations) or ``resized``. ``clip_len`` is the frames each feature saw (recorded; the
    times come from the rule). ``prefix`` is stripped from file / key names to give video ids.
    """

    name: str
    files: Literal["npy", "csv", "h5"]
    rule: Literal["strided", "resized"]
    backbone: str
    streams: tuple[str, ...]
    stride: int | None = None
    offset: float | None = None
    clip_len: int | None = None
    fps: float | None = None
    prefix: str = ""
    source: str = ""

    def convention(self) -> str:
        """The time rule in words, as recorded in the provenance."""
        if self.rule == "resized":
            return "t_i = (i + 1/2) * span / T seconds, span = the video's duration " \
                   "(or featureFrame / numFrame * seconds with video_info)"
        stride = "stride" if self.stride is None else f"{self.stride:g}"
        offset = "offset_frames" if self.offset is None else f"{self.offset:g}"
        fps = "the video's fps" if self.fps is None else f"{self.fps:g} fps"
        return f"t_i = (i * {stride} + {offset}) / fps seconds, fps = {fps}"

    def with_overrides(self, **kw: Any) -> "Layout":
        """The layout with the given (non-``None``) fields replaced; checked."""
        out = dataclasses.replace(self, **{k: v for k, v in kw.items() if v is not None})
        if out.rule == "strided":
            if out.stride is None or not out.stride > 0:
                raise ConfigError(f"layout {out.name}: give the frames between features (--stride > 0)")
            if out.clip_len is None and out.offset is None:
                raise ConfigError(f"layout {out.name}: give --clip-len (frames per feature) or --offset-frames")
            if out.offset is None:
                out = dataclasses.replace(out, offset=out.clip_len / 2)
            if out.clip_len is None:
                out = dataclasses.replace(out, clip_len=max(1, round(2 * out.offset)))
            if not 0 <= out.offset < math.inf or out.clip_len < 1:
                raise ConfigError(f"layout {out.name}: --offset-frames must be a finite number >= 0 and "
                                  "--clip-len >= 1")
        if out.fps is not None and not 0 < out.fps < math.inf:
            raise ConfigError(f"layout {out.name}: --fps must be a finite positive number")
        return out


#: The releases tadkit knows (``--layout``); every parameter can be overridden on the command line.
LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout("actionformer-thumos-i3d", "npy", "strided", "i3d", ("rgb", "flow"), stride=4, offset=8, clip_len=16,
           source="ActionFormer's THUMOS14 I3D features: <video id>.npy [T, 2048], feat_stride 4, "
                  "num_frames 16, at each video's fps (its thumos14.json)"),
    Layout("tsp-h5", "h5", "strided", "r2plus1d_34-tsp", ("rgb",), stride=16, offset=8, clip_len=16, fps=15.0,
           source="TSP R(2+1)D-34 features: one HDF5 of [T, 512] per video name, 16-frame clips at 15 fps "
                  "every 16 frames (ActivityNet; the THUMOS14 release uses stride 1)"),
    Layout("bmn-csv", "csv", "resized", "tsn", ("rgb", "flow"),
           source="BSN / BMN / G-TAD ActivityNet TSN features (csv_mean_100): <video id>.csv, a header and "
                  "100 rows [100, 400] evenly covering the video"),
    Layout("hacs-slowfast", "npy", "strided", "slowfast_r101", ("rgb",), stride=8, offset=16, clip_len=32,
           fps=15.0, source="HACS SlowFast-R101 features (TCANet, as distributed by OpenTAD): <video id>.npy "
                            "[T, 2304], 32-frame clips at 15 fps every 8 frames"),
    Layout("opentad-npy", "npy", "strided", "unknown", ("rgb",),
           source="OpenTAD features: <video id>.npy [T, C]; give feature_stride (--stride), offset_frames "
                  "(--offset-frames) and fps (--fps, or per video from the annotations)"),
)}


@dataclass
class ImportReport:
    """Outcome of an import: video ids written, skipped (already in the store), failed
    (id -> reason); annotated videos without features; videos whose features run past the
    annotated end (a sign of a wrong fps / stride)."""

    store: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    overrun: list[str] = field(default_factory=list)
    seconds: float = 0.0


#: readable videos whose most common feature width becomes the store's
DIM_SAMPLE = 5


def import_features(source: str | Path, out: str | Path, layout: Layout, *,
                    annotations: Annotations | None = None, video_info: str | Path | None = None,
                    compression: str | None = None) -> ImportReport:
    """Write the features of ``source`` (a folder or an HDF5 file, see :class:`Layout`) into the
    store ``out``. ``annotations`` (already restricted to the wanted subsets) selects the videos
    and gives their fps and durations; ``video_info`` (BSN's ``video_info_new.csv``) the span of
    ``resized`` features."""
    t0 = time.perf_counter()
    source = Path(source)
    reader = _reader(source, layout)
    spans = _feature_spans(Path(video_info)) if video_info is not None else {}
    found = reader.names()
    ids = {name: _video_id(name, layout.prefix, annotations) for name in found}
    names = found if annotations is None else [n for n in found if ids[n] in annotations.videos.index]
    if not names:
        raise InputError(source, f"no {layout.files} features found" +
                         (" for the annotated videos" if found else ""))
    report = ImportReport(store=Path(out))
    if annotations is not None:
        report.missing = sorted(set(annotations.videos.index) - {ids[n] for n in names})
    dims: list[int] = []
    for name in names:  # the most common width of the first few readable videos: one odd file fails alone
        try:
            dims.append(int(reader.read(name).shape[1]))
        except InputError as exc:
            report.failed[ids[name]] = str(exc)
        if len(dims) == DIM_SAMPLE:
            break
    if not dims:
        raise InputError(source, f"none of the {len(names)} feature files is readable; the first: "
                                 f"{next(iter(report.failed.values()))}")
    prov = _provenance(layout, source, max(dims, key=dims.count))
    with FeatureStore.create(out, prov) as writer:
        # joining a store checks the feature fields; the time rule lives in extras: a rerun with
        # another --offset-frames (say) would stamp the new videos differently from the old ones
        changed = writer.provenance.mismatches(prov, keys=("extras",))
        if changed:  # the convention is the parameters in words: name the parameters first
            changed.sort(key=lambda line: ".convention:" in line)
            raise ProvenanceError(f"{writer.root}: the store was imported with another time rule; use another "
                                  "output directory or the same layout and parameters: " + "; ".join(changed[:2]))
        for name in names:
            vid = ids[name]
            if writer.has(vid):
                report.skipped.append(vid)
                continue
            if vid in report.failed:
                writer.record_failure(vid, report.failed[vid])
                continue
            try:
                feats = reader.read(name)
                if feats.shape[1] != prov.feature_dim:
                    raise InputError(reader.where(name), f"{feats.shape[1]} channels, the store's videos have "
                                                         f"{prov.feature_dim}")
                video = _video(vid, feats, layout, annotations, spans, reader.where(name))
            except InputError as exc:
                writer.record_failure(vid, str(exc))
                report.failed[vid] = str(exc)
                continue
            writer.write(video, compression=compression)
            report.written.append(vid)
            if video.times[-1] > video.duration + _cell(video):
                report.overrun.append(vid)
    report.seconds = time.perf_counter() - t0
    return report


# --------------------------------------------------------------------------- helpers
class _Reader:
    """Lists and reads the ``[T, C]`` arrays of a source."""

    def __init__(self, root: Path, kind: str):
        self.root, self.kind = root, kind

    def names(self) -> list[str]:
        if self.kind == "h5":
            try:
                with h5py.File(self.root, "r") as f:
                    return sorted(k for k in f if isinstance(f[k], h5py.Dataset))
            except OSError as exc:
                raise InputError(self.root, f"not a readable HDF5 file ({exc})") from None
        return sorted(p.stem for p in self.root.glob(f"*.{self.kind}") if not p.name.startswith("."))

    def where(self, name: str) -> str:
        return f"{self.root}[{name}]" if self.kind == "h5" else str(self.root / f"{name}.{self.kind}")

    def read(self, name: str) -> np.ndarray:
        where = self.where(name)
        try:
            if self.kind == "npy":
                with open(where, "rb") as fh:
                    if fh.read(6) != b"\x93NUMPY":
                        raise InputError(where, "unreadable features: not a NumPy .npy array (no NumPy header)")
                arr = np.load(where, allow_pickle=False)
            elif self.kind == "csv":
                with warnings.catch_warnings():  # an empty file: reported below as shape (0, 1)
                    warnings.simplefilter("ignore", UserWarning)
                    arr = np.loadtxt(where, delimiter=",", skiprows=1, ndmin=2, dtype=np.float32)
            else:
                with h5py.File(self.root, "r") as f:
                    arr = f[name][()]
        except ValueError as exc:
            if self.kind == "npy" and "allow_pickle" in str(exc):  # numpy's words for an object array
                raise InputError(where, "unreadable features: not a NumPy .npy array of numbers (pickled "
                                        "objects are never loaded)") from None
            raise InputError(where, f"unreadable features ({' '.join(str(exc).split())})") from None
        except (OSError, KeyError, EOFError) as exc:  # EOFError: an empty .npy
            raise InputError(where, f"unreadable features ({' '.join(str(exc).split()) or 'empty file'})") from None
        arr = np.asarray(arr)
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise InputError(where, f"expected features [T, C] with T, C >= 1, got shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise InputError(where, f"expected real numbers, got dtype {arr.dtype}")
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: caught below
            arr = arr.astype(np.float32, copy=False)
        if not np.isfinite(arr).all():
            raise InputError(where, "features hold NaN or infinite values (or values beyond float32)")
        return arr


def _reader(source: Path, layout: Layout) -> _Reader:
    if layout.files == "h5":
        if not source.is_file():
            raise InputError(source, f"layout {layout.name} reads one HDF5 file; no such file")
    elif not source.is_dir():
        raise InputError(source, f"layout {layout.name} reads a folder of .{layout.files} files; no such folder")
    return _Reader(source, layout.files)


def _video_id(name: str, prefix: str, annotations: Annotations | None) -> str:
    """The video id of a file / key name: ``name`` minus ``prefix``; with annotations, the
    annotated id that matches it with or without a ``v_`` prefix."""
    vid = name[len(prefix):] if prefix and name.startswith(prefix) else name
    if annotations is None or vid in annotations.videos.index:
        return vid
    other = vid[2:] if vid.startswith("v_") else "v_" + vid
    return other if other in annotations.videos.index else vid


def _video(vid: str, feats: np.ndarray, layout: Layout, annotations: Annotations | None,
           spans: Mapping[str, float], where: str) -> VideoFeatures:
    """One video's features (read from ``where``) with the layout's time stamps."""
    n = len(feats)
    duration = annotations.duration_of(vid) if annotations is not None else math.nan
    if layout.rule == "resized":
        span = spans.get(vid, spans.get(vid[2:] if vid.startswith("v_") else "v_" + vid, duration))
        if not span > 0:
            raise InputError(where, "resized features need the video's duration: pass --annotations "
                                    "that give it (or --video-info)")
        times = timeline.resized_feature_times(n, span)
        fps = timeline.resized_feature_rate(n, span)
        return VideoFeatures(vid, feats, times, fps, 1, 1, n, duration if duration > 0 else span)
    fps = layout.fps
    if fps is None:
        fps = annotations.videos.at[vid, "fps"] if annotations is not None and vid in annotations.videos.index \
            else math.nan
        if not fps > 0:
            raise InputError(where, f"layout {layout.name} takes each video's fps from the annotations, "
                                    "and they give none for this video: pass --fps")
    times = timeline.strided_feature_times(n, layout.stride, layout.offset, fps)
    if duration > 0:
        num_frames = timeline.num_sampled_frames(duration, fps)
    else:  # the frames the features cover
        num_frames = timeline.snippet_span_frames(n, layout.clip_len, layout.stride)
        duration = float(timeline.frame_to_seconds(num_frames, fps))
    try:
        return VideoFeatures(vid, feats, times, float(fps), int(layout.clip_len), int(layout.stride), num_frames,
                             float(duration))
    except ValueError as exc:  # e.g. an fps in the annotations too large for distinct times
        raise InputError(where, str(exc)) from None


def _cell(video: VideoFeatures) -> float:
    """Seconds between features (one feature of slack before a feature counts as past the end)."""
    return float(video.times[1] - video.times[0]) if len(video.times) > 1 else 1.0 / video.fps


def _provenance(layout: Layout, source: Path, dim: int) -> Provenance:
    params = {k: getattr(layout, k) for k in ("stride", "offset", "clip_len", "fps", "prefix")
              if getattr(layout, k) not in (None, "")}
    strided = layout.rule == "strided"
    return Provenance(
        backbone=layout.backbone, streams=layout.streams, feature_dim=dim,
        clip_len=int(layout.clip_len) if strided else 1,
        stride=int(layout.stride) if strided else 1,
        fps=layout.fps if strided else None,
        extras={"import": {"layout": layout.name, "files": layout.files, "rule": layout.rule,
                           "convention": layout.convention(), "parameters": params,
                           "declared_backbone": layout.backbone, "source": str(source.resolve()),
                           "release": layout.source},
                "times": layout.convention()},
    )


def _feature_spans(path: Path) -> dict[str, float]:
    """Seconds covered by each video's features from BSN's ``video_info_new.csv``:
    ``featureFrame / numFrame * seconds`` (columns ``video, numFrame, seconds, featureFrame``)."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InputError(path, f"unreadable ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"not a UTF-8 CSV file ({exc})") from None
    need = ("video", "numFrame", "seconds", "featureFrame")
    if not rows or any(c not in rows[0] for c in need):
        raise InputError(path, f"video info CSV needs the columns {', '.join(need)}")
    out = {}
    for n, row in enumerate(rows, 2):
        try:  # a short row gives None: a TypeError
            frames, seconds, feat = (float(row[c]) for c in need[1:])
        except (TypeError, ValueError):
            frames = seconds = feat = math.nan
        if not all(map(math.isfinite, (frames, seconds, feat))):
            raise InputError(path, f"line {n}: numFrame, seconds and featureFrame must be finite numbers")
        if frames > 0 and seconds > 0 and feat > 0:
            out[row["video"]] = feat / frames * seconds
    return out


