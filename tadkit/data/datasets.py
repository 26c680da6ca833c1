"""torch Datasets over a feature store and its annotations.

Three ways to turn a video's ``[T, C]`` snippet features into model inputs
(the same three OpenTAD offers; pick with :func:`make_dataset`):

``"full"`` -- :class:`FullSequenceDataset`
    The whole sequence; :func:`collate` pads a batch to a multiple of the
    model's stride and returns a mask. Optional ``max_length`` takes a random
    crop of longer videos (training).
``"resize"`` -- :class:`ResizedDataset`
    Linear interpolation to a fixed ``length`` (ActivityNet-style 100 / 128 /
    200 / 768); the resized :class:`~tadkit.timeline.TimeAxis` maps grid
    positions back to seconds exactly.
``"window"`` -- :class:`WindowDataset`
    Sliding windows of ``window`` snippets with a configurable ``overlap``
    (THUMOS-style 256 snippets, 0.25 for training, 0.5 for inference).

Every item is a :class:`~tadkit.data.batches.Sample` (samples, batches and
:func:`~tadkit.data.batches.collate` live in :mod:`tadkit.data.batches` and
are importable from here):

==============  ==========================  ===========================================
field           type / shape                meaning
==============  ==========================  ===========================================
``video_id``    str
``features``    float32 tensor ``(C, T)``   channels first, as 1-D conv heads want
``mask``        bool tensor ``(T,)``        True on real snippets (all True per sample)
``axis``        ``TimeAxis``                grid position ``g`` -> ``axis.to_seconds(g)``
``duration``    float                       seconds (annotations, else the features)
``segments``    float32 tensor ``(N, 2)``   ground truth ``[start, end]`` in grid units
``labels``      int64 tensor ``(N,)``       class indices into ``dataset.classes``
``offset``      int                         first snippet of the sample in the video
``grid``        ``(T, g, g, C_g)`` or None  spatial grids (``grid=True``)
``levels``      list of :class:`LevelInput` stored levels (``levels=True``), steps kept
                or None                     when their position lies in the sample's cells
``proposals``   ``(N, 3)`` or None          another run's ``[start, end, score]``, grid
                                            units (chained runs; those overlapping the cells)
==============  ==========================  ===========================================

Grid units: cell ``i`` is snippet ``i`` of the sample (its centre time is
``axis.to_seconds(i)``); a segment ``[a, b]`` in grid units is
``axis.to_seconds([a, b])`` seconds. Ground truth is clipped to the cells'
span ``[-0.5, T - 0.5]``; an instance is kept if its intersection with that
span over its own length is at least ``min_ioi`` (windows, crops) or it
overlaps at all (full sequences, resizing). Predictions go back to seconds
with ``sample.to_seconds(grid)`` or ``batch.to_seconds(i, grid)`` (which
clip to ``[0, duration]``). All time conversions use :mod:`tadkit.timeline`.

Videos listed in the annotations but absent from the features, and features
of videos the annotations do not list, are reported in ``dataset.report``
(and in one :class:`DatasetWarning`); a dataset with no usable video is an
:class:`~tadkit.errors.InputError`. Reading is lazy: features are read from
HDF5 in ``__getitem__`` (only the window's rows for windows).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from tadkit.data.annotations import Annotations
from tadkit.data.batches import Batch, LevelInput, PadCollate, Sample, collate
from tadkit.data.features import FeatureStore, FeatureWarning, Provenance, VideoFeatures
from tadkit.data.sources import FeatureSource, resample_at
from tadkit.errors import InputError
from tadkit.timeline import TimeAxis, resize_features, segments_to_grid

MODES = ("full", "resize", "window")

__all__ = ["MODES", "Batch", "DatasetReport", "DatasetWarning", "FeatureDataset", "FullSequenceDataset",
           "LevelInput", "PadCollate", "ResizedDataset", "Sample", "WindowDataset", "collate", "level_on_axis",
           "make_dataset", "prefix_hint", "proposals_on_axis", "targets_on_axis", "window_offsets"]


class DatasetWarning(UserWarning):
    """Annotated videos without features, or features without annotations."""


# --------------------------------------------------------------------------- report
@dataclass
class DatasetReport:
    """Which videos a dataset uses and which it could not.

    ``missing_features``: annotated videos (of the selected subsets) with no
    features; ``unannotated``: videos in the store that the annotations do
    not list at all; ``unreadable``: videos skipped because their file fails
    its check (video -> reason); ``hint``: a likely cause (e.g. a ``v_``
    prefix mismatch).
    """

    videos: list[str] = field(default_factory=list)
    missing_features: list[str] = field(default_factory=list)
    unannotated: list[str] = field(default_factory=list)
    hint: str = ""
    unreadable: dict[str, str] = field(default_factory=dict)

    def messages(self, examples: int = 3) -> list[str]:
        out = []
        for name, what in (("missing_features", "annotated videos have no features"),
                           ("unannotated", "videos with features are not in the annotations")):
            items = getattr(self, name)
            if items:
                ex = ", ".join(items[:examples]) + (" ..." if len(items) > examples else "")
                out.append(f"{len(items)} {what} ({ex})")
        if self.hint:
            out.append(self.hint)
        return out


# --------------------------------------------------------------------------- datasets
class FeatureDataset(Dataset):
    """Shared machinery of the three modes; not used directly.

    Parameters
    ----------
    store:
        A :class:`FeatureStore`, its path, or a
        :class:`~tadkit.data.sources.FeatureSource` (several stores, stream /
        channel / level selection, normalisation).
    annotations:
        Ground truth, or ``None`` for inference over every video in the store
        (samples then have no targets).
    subset:
        Subset name(s) to use (normalised; see :meth:`Annotations.subset`).
    expect:
        Provenance the features must match (else ``ProvenanceError``).
    warn:
        Emit a :class:`DatasetWarning` when videos are missing.
    grid:
        Also read every snippet's spatial grid (``sample.grid (T, g, g, C)``,
        resized or windowed like the features); the store must have been
        extracted with ``--spatial-grid``.
    levels:
        Also give every sample the source's levels (``sample.levels``; pass a
        :class:`~tadkit.data.sources.FeatureSource` naming them).
    proposals:
        ``video -> [N, 3]`` ``[start, end, score]`` in seconds (another run's
        proposals): ``sample.proposals`` holds those overlapping the sample's
        cells in grid units (unclipped); videos not listed get none.
    videos:
        Use only these videos (e.g. one process's share); may leave none.
    """

    def __init__(self, store: FeatureStore | FeatureSource | str | Path, annotations: Annotations | None = None,
                 subset: str | Sequence[str] | None = None, *,
                 expect: Provenance | Mapping[str, Any] | None = None, warn: bool = True,
                 grid: bool = False, levels: bool = False,
                 proposals: Mapping[str, np.ndarray] | None = None, videos: Sequence[str] | None = None):
        if annotations is None and subset:
            raise ValueError("a subset needs annotations")
        self.source = store if isinstance(store, FeatureSource) else FeatureSource([store])
        self.store = self.source.store
        if expect is not None:
            self.store.check(expect)
        self.grid = grid
        self.levels = levels and bool(self.source.level_names)
        self.proposals = proposals
        full = annotations
        self.annotations = annotations.subset(subset) if annotations is not None and subset else annotations
        self.report = self._match_videos(full)
        if videos is not None:
            wanted = set(videos)
            self.report.videos = [v for v in self.report.videos if v in wanted]
        if grid and self.report.videos and not self.source.has_grid(self.source.first_readable(self.report.videos)):
            raise InputError(self.store.root, "these features have no spatial grid; extract them with "
                             "--spatial-grid G (or use a head setting without grids)")
        if warn and (self.report.missing_features or self.report.unannotated):
            warnings.warn(f"{self.store.root}: " + " | ".join(self.report.messages()), DatasetWarning,
                          stacklevel=3)

    # -- public ------------------------------------------------------------------
    @property
    def video_ids(self) -> list[str]:
        """Videos this dataset reads (annotated and with features), sorted."""
        return list(self.report.videos)

    @property
    def classes(self) -> list[str]:
        return [] if self.annotations is None else list(self.annotations.classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def feature_dim(self) -> int:
        return int(self.source.feature_dim)

    # -- helpers for the modes ------------------------------------------------------
    def _read(self, video_id: str, rows: slice | None = None) -> VideoFeatures:
        v = self.source.read(video_id, rows=rows, grid=self.grid, levels=self.levels)
        if self.grid and v.spatial_grid is None:
            raise InputError(self.store.path_of(video_id), "no spatial grid stored for this video")
        return v

    def _duration(self, video_id: str, feats: VideoFeatures) -> float:
        d = self.annotations.duration_of(video_id) if self.annotations is not None else math.nan
        return float(feats.duration) if math.isnan(d) else d

    def _ground_truth(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
        if self.annotations is None:
            return np.zeros((0, 2)), np.zeros(0, np.int64)
        return self.annotations.segments_of(video_id)

    def _sample(self, video_id: str, feats: np.ndarray, axis: TimeAxis, duration: float,
                offset: int, min_ioi: float, keep_span: tuple[float, float] | None = None,
                spatial: np.ndarray | None = None, levels: Mapping[str, tuple] | None = None,
                resize: float | None = None) -> Sample:
        """``levels``: the video's whole levels (``name -> (features, times)``); ``resize``:
        the snippet resize ratio (new / stored length) when the sample was resized."""
        segs, labels = self._ground_truth(video_id)
        grid, keep = targets_on_axis(segs, axis, min_ioi, keep_span)
        return Sample(
            levels=None if not self.levels else [level_on_axis(*levels[n], axis, resize)
                                                 for n in self.source.level_names],
            proposals=None if self.proposals is None else proposals_on_axis(self.proposals.get(video_id), axis),
            grid=None if spatial is None else torch.from_numpy(np.ascontiguousarray(spatial, dtype=np.float32)),
            video_id=video_id,
            features=torch.from_numpy(np.ascontiguousarray(feats.T, dtype=np.float32)),
            mask=torch.ones(feats.shape[0], dtype=torch.bool),
            axis=axis, duration=duration,
            segments=torch.from_numpy(grid.astype(np.float32)).reshape(-1, 2),
            labels=torch.from_numpy(labels[keep].astype(np.int64)),
            offset=offset,
        )

    def _match_videos(self, full: Annotations | None) -> DatasetReport:
        have = set(self.source.video_ids())
        if self.annotations is None:
            if not have:
                raise InputError(self.store.root, "the feature store holds no videos")
            return DatasetReport(videos=sorted(have))
        wanted = set(self.annotations.video_ids())
        listed = set(full.video_ids()) if full is not None else wanted
        report = DatasetReport(videos=sorted(wanted & have), missing_features=sorted(wanted - have),
                               unannotated=sorted(have - listed))
        if report.missing_features:
            report.hint = prefix_hint(report.missing_features, have)
        if not report.videos:
            raise InputError(self.store.root, f"none of the {len(wanted)} annotated videos has features here "
                             f"({len(have)} videos in the store). {report.hint}".strip())
        return report


class FullSequenceDataset(FeatureDataset):
    """Whole videos, one sample each; batch them with :class:`PadCollate`.

    ``max_length``: videos longer than this many snippets are cropped to a
    random window of that length on every read (training, as ActionFormer
    does; seed with ``torch.manual_seed``); ground truth inside the crop is
    kept if at least ``min_ioi`` of it lies in the crop.
    """

    def __init__(self, store: FeatureStore | str | Path, annotations: Annotations | None = None,
                 subset: str | Sequence[str] | None = None, *, max_length: int | None = None,
                 min_ioi: float = 0.5, **kwargs: Any):
        super().__init__(store, annotations, subset, **kwargs)
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        self.max_length = max_length
        self.min_ioi = min_ioi

    def __len__(self) -> int:
        return len(self.report.videos)

    def __getitem__(self, index: int) -> Sample:
        vid = self.report.videos[index]
        v = self._read(vid)
        axis = _axis_of(v)
        duration = self._duration(vid, v)
        t = v.num_snippets
        if self.max_length is None or t <= self.max_length:
            return self._sample(vid, v.features, axis, duration, 0, 0.0, spatial=v.spatial_grid, levels=v.levels)
        offset = int(torch.randint(0, t - self.max_length + 1, (1,)).item())
        crop = slice(offset, offset + self.max_length)
        return self._sample(vid, v.features[crop], axis.window(offset, self.max_length), duration, offset,
                            self.min_ioi, spatial=None if v.spatial_grid is None else v.spatial_grid[crop],
                            levels=v.levels)


class ResizedDataset(FeatureDataset):
    """Whole videos linearly resized to ``length`` snippets (align-corners).

    The sample's axis is ``TimeAxis.resized(length)`` of the stored axis, so
    grid positions on the resized sequence map back to seconds exactly.
    Ground truth overlapping the stored snippets is kept and clipped to the
    resized cells, whose span differs from the stored snippets' span by less
    than half a stored snippet at each end.
    """

    def __init__(self, store: FeatureStore | str | Path, annotations: Annotations | None = None,
                 subset: str | Sequence[str] | None = None, *, length: int = 100, **kwargs: Any):
        super().__init__(store, annotations, subset, **kwargs)
        if length < 1:
            raise ValueError(f"length must be at least 1, got {length}")
        self.length = length

    def __len__(self) -> int:
        return len(self.report.videos)

    def __getitem__(self, index: int) -> Sample:
        vid = self.report.videos[index]
        v = self._read(vid)
        stored = _axis_of(v)
        axis = stored.resized(self.length)
        feats = resize_features(np.asarray(v.features, dtype=np.float32), self.length)
        # keep what the stored snippets cover; the resized cells span slightly less at the ends
        span = tuple(axis.to_grid(np.array([stored.start, stored.end])))
        spatial = None
        if v.spatial_grid is not None:  # resized along time exactly like the features
            g = np.asarray(v.spatial_grid, dtype=np.float32)
            spatial = resize_features(g.reshape(g.shape[0], -1), self.length).reshape(self.length, *g.shape[1:])
        return self._sample(vid, feats, axis, self._duration(vid, v), 0, 0.0, span, spatial=spatial,
                            levels=v.levels, resize=self.length / v.num_snippets)


class WindowDataset(FeatureDataset):
    """Sliding windows of ``window`` snippets over every video.

    Windows start every ``stride`` snippets when given, else every
    ``max(1, round(window * (1 - overlap)))`` snippets; the last one ends on the last snippet, and a video shorter than a window
    gives one shorter sample (pad it with ``PadCollate(pad_to=window)``).
    Ground truth is kept when at least ``min_ioi`` of the instance lies in the
    window, clipped to it. ``drop_empty`` skips windows without ground truth
    (training; ignored without annotations). ``sample.offset`` is the window's first snippet and
    ``sample.axis`` already includes it.

    Building the window index opens each video's file once (shapes and the
    first two snippet times); features are read per window.
    """

    def __init__(self, store: FeatureStore | str | Path, annotations: Annotations | None = None,
                 subset: str | Sequence[str] | None = None, *, window: int = 256, overlap: float = 0.5,
                 stride: int | None = None, min_ioi: float = 0.75, drop_empty: bool = False, **kwargs: Any):
        super().__init__(store, annotations, subset, **kwargs)
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        if stride is not None and stride < 1:
            raise ValueError(f"stride must be at least 1 snippet, got {stride}")
        self.window, self.overlap, self.min_ioi, self.drop_empty = window, overlap, min_ioi, drop_empty
        self.hop = int(stride) if stride is not None else max(1, int(round(window * (1.0 - overlap))))
        self.windows: list[tuple[str, int, int]] = []  # video, offset, length
        self._axes: dict[str, TimeAxis] = {}
        for vid in list(self.report.videos):
            try:
                self.source.check(vid)  # its file in every store
                t = self.source.num_snippets(vid)
                head = self.store.read(vid, rows=slice(0, 2), extras=False)
            except InputError as exc:  # skip it, as the other modes do when reading
                self.report.unreadable[vid] = exc.problem
                self.report.videos.remove(vid)
                warnings.warn(f"skipping unreadable video {vid}: {exc}", FeatureWarning, stacklevel=2)
                continue
            axis = TimeAxis(_axis_of(head).origin, _axis_of(head).step, t)
            self._axes[vid] = axis
            segs, _ = self._ground_truth(vid)
            for off in window_offsets(t, window, self.hop):
                length = min(window, t - off)
                if (drop_empty and self.annotations is not None
                        and not targets_on_axis(segs, axis.window(off, length), min_ioi)[1].any()):
                    continue
                self.windows.append((vid, off, length))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> Sample:
        vid, off, length = self.windows[index]
        v = self._read(vid, rows=slice(off, off + length))
        axis = self._axes[vid].window(off, length)
        return self._sample(vid, v.features, axis, self._duration(vid, v), off, self.min_ioi,
                            spatial=v.spatial_grid, levels=v.levels)


def make_dataset(mode: str, store: FeatureStore | FeatureSource | str | Path, annotations: Annotations | None = None,
                 subset: str | Sequence[str] | None = None, **kwargs: Any) -> FeatureDataset:
    """Build the dataset of ``mode`` (``"full"``, ``"resize"`` or ``"window"``).

    ``kwargs`` go to the class: ``max_length``/``min_ioi`` (full), ``length``
    (resize), ``window``/``overlap``/``stride``/``min_ioi``/``drop_empty``
    (window), and ``grid``/``levels``/``proposals``/``expect``/``warn`` (all).
    """
    classes: dict[str, Callable[..., FeatureDataset]] = {
        "full": FullSequenceDataset, "resize": ResizedDataset, "window": WindowDataset}
    if mode not in classes:
        raise ValueError(f"unknown dataset mode {mode!r}; choose one of {', '.join(MODES)}")
    return classes[mode](store, annotations, subset, **kwargs)


# --------------------------------------------------------------------------- grid targets
def targets_on_axis(segments: np.ndarray, axis: TimeAxis, min_ioi: float = 0.0,
                    keep_span: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth in seconds -> grid units on ``axis``, clipped to its cells.

    Returns ``(grid [K, 2] float64, keep [N] bool)``: ``keep`` marks the
    instances that overlap ``keep_span`` (grid units; default the cells'
    span ``[-0.5, length - 0.5]``) and have at least ``min_ioi`` of their
    length inside it (a zero-length instance counts when it lies inside);
    ``grid`` holds the kept ones, clipped to the cells' span.
    """
    segs = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    grid = segments_to_grid(segs, axis).reshape(-1, 2)
    lo, hi = (-0.5, axis.length - 0.5) if keep_span is None else keep_span
    inside = np.clip(grid, lo, hi)
    clipped = np.clip(grid, -0.5, axis.length - 0.5)
    inter = inside[:, 1] - inside[:, 0]
    size = grid[:, 1] - grid[:, 0]
    point = size <= 0
    inside_point = point & (grid[:, 0] >= lo) & (grid[:, 0] <= hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        ioi = np.where(point, 0.0, inter / np.where(point, 1.0, size))
    keep = inside_point | ((inter > 0) & (ioi >= min_ioi))
    return clipped[keep], keep


def level_on_axis(features: np.ndarray, times: np.ndarray, axis: TimeAxis,
                  resize: float | None = None) -> LevelInput:
    """One stored level (``features [T_l, C_l]``, step ``times [T_l]`` seconds) on a sample's axis.

    Without ``resize`` the steps whose position ``axis.to_grid(time)`` lies in
    the sample's cells ``[-0.5, length - 0.5)`` are kept (windows, crops, whole
    videos). With ``resize`` (new / stored snippet count) the level is
    resampled linearly over its own time span to ``max(1, round(T_l ·
    resize))`` evenly spaced steps, as the snippets were. Returns an unbatched
    :class:`LevelInput` (``features (C_l, n)``, positions in grid units).
    """
    t = np.asarray(times, dtype=np.float64)
    f = np.asarray(features, dtype=np.float32)
    if resize is not None:
        n = max(1, int(round(len(t) * resize)))
        new_t = np.linspace(t[0], t[-1], n) if n > 1 else np.array([t.mean()])
        f, t = resample_at(t, f, new_t), new_t
        pos = np.asarray(axis.to_grid(t))
    else:
        pos = np.asarray(axis.to_grid(t))
        keep = (pos >= -0.5) & (pos < axis.length - 0.5)
        f, pos = f[keep], pos[keep]
    return LevelInput(torch.from_numpy(np.ascontiguousarray(f.T, dtype=np.float32)),
                      torch.ones(len(pos), dtype=torch.bool), torch.from_numpy(pos.astype(np.float32)))


def proposals_on_axis(proposals: np.ndarray | None, axis: TimeAxis) -> torch.Tensor:
    """``[N, 3]`` ``[start, end, score]`` in seconds -> those overlapping the axis' cells, grid units."""
    if proposals is None or not len(proposals):
        return torch.zeros((0, 3), dtype=torch.float32)
    p = np.asarray(proposals, dtype=np.float64).reshape(-1, 3)
    g = np.asarray(axis.to_grid(p[:, :2]))
    keep = (g[:, 1] > -0.5) & (g[:, 0] < axis.length - 0.5)
    return torch.from_numpy(np.concatenate([g[keep], p[keep, 2:]], axis=1).astype(np.float32))


def window_offsets(num_snippets: int, window: int, hop: int) -> np.ndarray:
    """First snippet of every window of ``window`` snippets every ``hop``.

    The last window ends on the last snippet; a sequence shorter than one
    window has a single window at 0.
    """
    if num_snippets <= window:
        return np.zeros(1, dtype=np.int64)
    last = num_snippets - window
    offs = np.arange(0, last + 1, hop, dtype=np.int64)
    if offs[-1] != last:
        offs = np.append(offs, last)
    return offs


# --------------------------------------------------------------------------- helpers
def _axis_of(v: VideoFeatures) -> TimeAxis:
    """Axis through a video's stored snippet centre times."""
    single = TimeAxis.for_snippets(1, v.clip_len, v.stride, v.fps).step
    return TimeAxis.from_centers(v.times, fallback_step=single)


def prefix_hint(missing: Sequence[str], have: set[str]) -> str:
    """A hint when annotated ids and stored ids differ only by a ``v_`` prefix (else "")."""
    swapped = [m[2:] if m.startswith("v_") else "v_" + m for m in missing[:50]]
    if any(s in have for s in swapped):
        return ("hint: ids differ by a 'v_' prefix between annotations and features; "
                "load the annotations with video_prefix='v_' or video_prefix=''")
    return ""
