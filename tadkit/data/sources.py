"""What a detection run reads per video: stores, streams, channels, levels, normalisation.

A :class:`FeatureSource` sits between the feature store(s) and the datasets
of :mod:`tadkit.data.datasets`. For every video it returns one
:class:`~tadkit.data.features.VideoFeatures` with

* the snippet features of **one or more stores** concatenated on channels
  (e.g. I3D + SlowFast of the same videos). The first store defines the
  snippet axis; a later store with other snippet times is linearly
  interpolated onto it (clamped at the ends);
* only the selected **streams** (``streams=["rgb"]`` of an ``rgb + flow``
  store; see :func:`stream_channels` for how a store's channels split into
  streams), then only the selected **channel ranges** (``[[0, 512]]``:
  half-open ranges into the selected streams' concatenation, e.g. one half of
  MFE's ``cat(movement, total)``);
* the requested intermediate **levels** (``levels=["Mixed_4f"]``): a name
  without a ``/`` means that stage of every selected stream
  (``rgb/Mixed_4f`` ‖ ``flow/Mixed_4f``, the second resampled onto the first
  one's times if they differ); ``rgb/Mixed_4f`` names one stored level;
* per-channel **normalisation** (:class:`Normalization`): statistics fitted on
  the training videos, stored in the run, applied to snippets and levels.

Shapes and units: features ``[T, C]``, level features ``[T_l, C_l]`` with
their own times ``[T_l]`` in seconds (never assume a fixed level step).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from tadkit.data.features import FeatureStore, Provenance, VideoFeatures
from tadkit.errors import ConfigError, InputError, ProvenanceError

#: ``data.streams`` value meaning every stored stream
ALL_STREAMS = "both"


# --------------------------------------------------------------------------- public API
def stream_channels(provenance: Provenance) -> dict[str, slice]:
    """Channels of each stored stream in a snippet vector (streams are concatenated in order).

    Widths come from ``extras["stream_dims"]`` when the store records them,
    from the per-stream class counts of ``--class-scores`` stores, and
    otherwise from an even split of ``feature_dim`` (what ``tadkit extract``
    writes: every stream of a backbone has the same width).
    """
    streams = list(provenance.streams)
    extras = provenance.extras or {}
    dims: list[int]
    if isinstance(extras.get("stream_dims"), Mapping):
        dims = [int(extras["stream_dims"][s]) for s in streams]
    elif isinstance(extras.get("class_scores"), Mapping) and isinstance(extras["class_scores"].get("classes"), Mapping):
        dims = [int(extras["class_scores"]["classes"][s]) for s in streams]
    else:
        if not streams or provenance.feature_dim % len(streams):
            raise ProvenanceError(f"cannot split {provenance.feature_dim} channels into the streams {streams}")
        dims = [provenance.feature_dim // len(streams)] * len(streams)
    if sum(dims) != provenance.feature_dim:
        raise ProvenanceError(f"stream widths {dict(zip(streams, dims))} do not add up to the feature dim "
                              f"{provenance.feature_dim}")
    out, start = {}, 0
    for s, d in zip(streams, dims):
        out[s] = slice(start, start + d)
        start += d
    return out


@dataclass
class Normalization:
    """Per-channel standardisation ``(x - mean) / std`` of snippets and of each level.

    ``mean`` / ``std`` ``[C]`` float64 for the (selected) snippet features;
    ``levels`` maps a level name to its ``(mean [C_l], std [C_l])``. Channels
    with zero variance keep ``std = 1``.
    """

    mean: np.ndarray
    std: np.ndarray
    levels: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    videos: int = 0
    snippets: int = 0

    @classmethod
    def fit(cls, source: "FeatureSource", video_ids: Sequence[str]) -> "Normalization":
        """Statistics over every snippet (and level step) of ``video_ids`` read through ``source``.

        ``source``'s own normalisation is ignored while fitting. Unreadable
        videos are skipped, and so are snippets (level steps) holding NaN or inf;
        no readable video is an :class:`InputError`.
        """
        raw = source.without_normalization()
        acc = _Moments()
        lacc: dict[str, _Moments] = {}
        used = 0
        for vid in video_ids:
            try:
                v = raw.read(vid, levels=True)
            except (InputError, OSError, KeyError, ValueError):
                continue
            used += 1
            acc.add(v.features)
            for name, (f, _) in v.levels.items():
                lacc.setdefault(name, _Moments()).add(f)
        if not used or not acc.n:
            raise InputError(source.root, "no readable video with finite features to fit the feature "
                                          "normalisation on")
        mean, std = acc.result()
        return cls(mean, std, {k: m.result() for k, m in lacc.items() if m.n}, used, acc.n)

    def apply(self, features: np.ndarray, level: str | None = None) -> np.ndarray:
        """``[T, C]`` -> standardised float32 (a level's statistics when ``level`` is named)."""
        mean, std = (self.mean, self.std) if level is None else self.levels[level]
        return ((np.asarray(features, dtype=np.float64) - mean) / std).astype(np.float32)

    def save(self, path: str | os.PathLike) -> None:
        """Write an ``.npz`` (atomically)."""
        arrays: dict[str, Any] = {"mean": self.mean, "std": self.std,
                                  "count": np.array([self.videos, self.snippets], dtype=np.int64)}
        names = list(self.levels)
        arrays["level_names"] = np.array(names, dtype=str)
        for i, name in enumerate(names):
            arrays[f"level{i}_mean"], arrays[f"level{i}_std"] = self.levels[name]
        p = Path(path)
        tmp = p.with_name(f".{p.name}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, p)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Normalization":
        try:
            with np.load(path, allow_pickle=False) as z:
                levels = {str(n): (z[f"level{i}_mean"], z[f"level{i}_std"])
                          for i, n in enumerate(z["level_names"].tolist())}
                count = z["count"]
                return cls(z["mean"], z["std"], levels, int(count[0]), int(count[1]))
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(path, f"unreadable normalisation statistics ({exc})") from None


class FeatureSource:
    """One or more stores read as one (see the module docstring).

    Parameters
    ----------
    stores:
        :class:`FeatureStore` objects or paths; the first defines the snippet
        axis and the video list is the intersection of all stores'.
    streams:
        Streams to keep (names from the first store's provenance; empty or
        ``["both"]``: all). Applied to every store that has those streams;
        a store with other streams is kept whole.
    channels:
        ``[start, end)`` ranges into the concatenation of the kept channels
        (empty: all).
    levels:
        Level names to read with every video (see the module docstring).
    normalization:
        Applied after selection, when given.
    """

    def __init__(self, stores: Sequence[FeatureStore | str | os.PathLike], streams: Sequence[str] = (),
                 channels: Sequence[Sequence[int]] = (), levels: Sequence[str] = (),
                 normalization: Normalization | None = None):
        if not stores:
            raise ConfigError("a feature source needs at least one store")
        self.stores = [s if isinstance(s, FeatureStore) else FeatureStore.open(s) for s in stores]
        self.streams = [s for s in streams if s != ALL_STREAMS] if streams else []
        self.channel_ranges = [list(map(int, r)) for r in channels]
        self.level_names = list(levels)
        self.normalization = normalization
        self._stream_cols = [self._columns_of(s) for s in self.stores]
        width = sum(len(c) for c in self._stream_cols)
        self._channels = _channel_index(self.channel_ranges, width)
        self._levels: dict[tuple, list[tuple[int, str]]] = {}   # cache of _level_parts

    # -- description ---------------------------------------------------------
    @property
    def store(self) -> FeatureStore:
        """The first store (it defines the snippet axis)."""
        return self.stores[0]

    @property
    def root(self) -> Path:
        return self.store.root

    @property
    def provenance(self) -> Provenance:
        return self.store.provenance

    @property
    def feature_dim(self) -> int:
        """Channels of a snippet after stream and channel selection."""
        if self._channels is not None:
            return len(self._channels)
        return sum(len(c) for c in self._stream_cols)

    def level_dims(self, video_id: str | None = None) -> list[int]:
        """Channels of each requested level (read from ``video_id``'s files, default the first readable video)."""
        if not self.level_names:
            return []
        vid = video_id or self.first_readable()
        shapes = [s.meta(vid)["shapes"] for s in self.stores]
        stored = [{k[len("levels/"):] for k in sh if k.startswith("levels/")} for sh in shapes]
        return [sum(int(shapes[i][f"levels/{n}"][1]) for i, n in self._level_parts(name, stored))
                for name in self.level_names]

    def describe(self) -> dict[str, Any]:
        """What a run records: every store's path and provenance and the selection."""
        return {"stores": [{"path": str(s.root.resolve()), "provenance": s.provenance.to_dict()}
                           for s in self.stores],
                "streams": list(self.streams), "channels": [list(r) for r in self.channel_ranges],
                "levels": list(self.level_names), "feature_dim": self.feature_dim}

    def without_normalization(self) -> "FeatureSource":
        out = object.__new__(FeatureSource)
        out.__dict__.update(self.__dict__)
        out.normalization = None
        return out

    # -- videos ------------------------------------------------------------------
    def video_ids(self) -> list[str]:
        """Videos every store holds, sorted."""
        ids = set(self.stores[0].video_ids())
        for s in self.stores[1:]:
            ids &= set(s.video_ids())
        return sorted(ids)

    def __contains__(self, video_id: object) -> bool:
        return all(video_id in s for s in self.stores)

    def check(self, video_id: str) -> None:
        """:class:`InputError` when ``video_id``'s file fails its check in any store (see ``FeatureStore.meta``)."""
        for s in self.stores:
            s.meta(video_id)

    def first_readable(self, video_ids: Sequence[str] | None = None) -> str:
        """The first of ``video_ids`` (default: all) whose files pass their checks in every store.

        :class:`InputError` when there is none (naming the first failure).
        """
        ids = self.video_ids() if video_ids is None else list(video_ids)
        first_problem = None
        for vid in ids:
            try:
                self.check(vid)
                return vid
            except InputError as exc:
                first_problem = first_problem or exc
        detail = f" (e.g. {first_problem})" if first_problem is not None else ""
        raise InputError(self.root, f"none of the {len(ids)} videos has a readable feature file{detail}")

    def num_snippets(self, video_id: str) -> int:
        return int(self.store.meta(video_id)["shapes"]["features"][0])

    def has_grid(self, video_id: str) -> bool:
        return bool(self.store.provenance.extras.get("spatial_grid")) or \
            "spatial_grid" in self.store.meta(video_id)["shapes"]

    def read(self, video_id: str, rows: slice | None = None, *, grid: bool = False,
             levels: bool = False) -> VideoFeatures:
        """Selected (and normalised) features of ``video_id``; ``rows`` of the first store's snippets.

        ``levels``: also read the requested levels (always whole; keyed by the
        requested names). ``grid``: also the first store's spatial grid rows.
        """
        extras: set[str] = {"spatial_grid"} if grid else set()
        if levels and self.level_names:
            extras.add("levels")
        first = self.store.read(video_id, rows=rows, extras=extras)
        parts = [first.features[:, self._stream_cols[0]]]
        stored_levels = [first.levels]
        for i, s in enumerate(self.stores[1:], 1):
            v = self._read_aligned(s, video_id, rows, first, extras - {"spatial_grid"})
            parts.append(v.features[:, self._stream_cols[i]])
            stored_levels.append(v.levels)
        feats = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        if self._channels is not None:
            feats = feats[:, self._channels]
        if self.normalization is not None:
            feats = self.normalization.apply(feats)
        out_levels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if levels and self.level_names:
            stored = [set(lv) for lv in stored_levels]
            for name in self.level_names:
                pieces = [stored_levels[i][n] for i, n in self._level_parts(name, stored)]
                times = pieces[0][1]
                f = np.concatenate([pieces[0][0]] + [resample_at(t, x, times) for x, t in pieces[1:]], axis=1)
                if self.normalization is not None and name in self.normalization.levels:
                    f = self.normalization.apply(f, name)
                out_levels[name] = (np.asarray(f, dtype=np.float32), times)
        return VideoFeatures(video_id, feats, first.times, first.fps, first.clip_len, first.stride,
                             first.num_frames, first.duration, spatial_grid=first.spatial_grid, levels=out_levels)

    # -- helpers ---------------------------------------------------------------
    def _columns_of(self, store: FeatureStore) -> np.ndarray:
        prov = store.provenance
        if not self.streams:
            return np.arange(prov.feature_dim)
        have = stream_channels(prov)
        missing = [s for s in self.streams if s not in have]
        if missing:
            raise ConfigError(f"data.streams: {store.root} has no stream {missing[0]!r} "
                              f"(its streams: {', '.join(prov.streams)})")
        return np.concatenate([np.arange(have[s].start, have[s].stop) for s in self.streams])

    def _level_parts(self, name: str, stored: Sequence[set[str]]) -> list[tuple[int, str]]:
        """``[(store index, stored level name)]`` making up level ``name``; ``stored``: each store's levels."""
        key = (name, tuple(frozenset(s) for s in stored))
        if key in self._levels:
            return self._levels[key]
        parts: list[tuple[int, str]] = []
        for i, names in enumerate(stored):
            if name in names:
                parts.append((i, name))
                continue
            if "/" in name:
                continue
            streams = self.streams or list(self.stores[i].provenance.streams)
            parts.extend((i, f"{s}/{name}") for s in streams if f"{s}/{name}" in names)
        if not parts:
            have = sorted(set().union(*stored))
            raise InputError(self.root, f"no stored level {name!r} for data.levels "
                             f"(levels here: {', '.join(have) or 'none; extract with --levels'})")
        self._levels[key] = parts
        return parts

    def _read_aligned(self, store: FeatureStore, video_id: str, rows: slice | None, first: VideoFeatures,
                      extras: set[str]) -> VideoFeatures:
        """A later store's video on the first store's snippets (same rows, or interpolated)."""
        a, b = self.store.meta(video_id), store.meta(video_id)
        same = all(a[k] == b[k] for k in ("fps", "clip_len", "stride", "num_frames")) and \
            a["shapes"]["features"][0] == b["shapes"]["features"][0]
        if same:
            return store.read(video_id, rows=rows, extras=extras)
        v = store.read(video_id, extras=extras)
        v.features = resample_at(v.times, v.features, first.times)
        return v


def resample_at(times: np.ndarray, values: np.ndarray, new_times: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``values [N, C]`` given at sorted ``times [N]`` onto ``new_times [M]``.

    Values outside the known range take the nearest end (no extrapolation).
    """
    t = np.asarray(times, dtype=np.float64)
    x = np.asarray(values)
    q = np.asarray(new_times, dtype=np.float64)
    if len(t) == 1:
        return np.repeat(x[:1], len(q), axis=0)
    hi = np.clip(np.searchsorted(t, q, side="right"), 1, len(t) - 1)
    lo = hi - 1
    w = np.clip((q - t[lo]) / np.maximum(t[hi] - t[lo], 1e-12), 0.0, 1.0)[:, None]
    return (x[lo] * (1 - w) + x[hi] * w).astype(x.dtype, copy=False)


# --------------------------------------------------------------------------- helpers
class _Moments:
    """Streaming per-channel mean and variance (float64, shifted sums)."""

    def __init__(self) -> None:
        self.n = 0
        self.shift: np.ndarray | None = None
        self.s1: np.ndarray | None = None
        self.s2: np.ndarray | None = None

    def add(self, x: np.ndarray) -> None:
        """Add the rows of ``x [N, C]``; rows holding NaN or inf are left out (one such snippet
        would otherwise turn its channels' mean into NaN for every video)."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            x = x[finite]
        if not len(x):
            return
        if self.shift is None:
            self.shift = x[0].copy()
            self.s1 = np.zeros_like(self.shift)
            self.s2 = np.zeros_like(self.shift)
        d = x - self.shift
        self.s1 += d.sum(0)
        self.s2 += (d * d).sum(0)
        self.n += len(x)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        m = self.s1 / self.n
        var = np.maximum(self.s2 / self.n - m * m, 0.0)
        std = np.sqrt(var)
        return self.shift + m, np.where(std > 0, std, 1.0)


def _channel_index(ranges: Sequence[Sequence[int]], width: int) -> np.ndarray | None:
    if not ranges:
        return None
    parts = []
    for r in ranges:
        if len(r) != 2 or not 0 <= r[0] < r[1] <= width:
            raise ConfigError(f"data.channels: range {list(r)} is not [start, end) within the {width} "
                              "selected channels")
        parts.append(np.arange(r[0], r[1]))
    return np.concatenate(parts)
