"""The feature-file contract: a crash-safe store of per-video snippet features.

Layout of a store (a directory; see ``docs/feature-format.md``)::

    feats/
      store.h5              master file: provenance attributes and, under
                            /videos, one HDF5 external link per video
      videos/<name>.h5      one self-describing file per video
      failures/<name>.json  videos that could not be processed, and why

Why this shape:

* A video file is written under a temporary name and published with
  ``os.replace`` (atomic on POSIX), so a reader never sees a half-written video
  and killing a writer (even ``kill -9``) cannot damage a video that was
  already published. A rerun skips published videos.
* Writers never modify a shared HDF5 file in place, so concurrent writers
  (processes, torchrun ranks) cannot collide. The master file is derived data:
  it is rebuilt under a file lock from the directory listing and replaced
  atomically. Readers of this module use the directory itself.
* ``<name>`` is an escaped form of the video id (:func:`escape_id`): ids may
  hold any character, yet never become raw file or HDF5 path components. The
  exact id is stored in each video file's ``video_id`` attribute.
* Everything is plain HDF5: ``h5py.File("feats/store.h5")["videos"]`` lists
  every video without tadkit.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

from tadkit import __version__
from tadkit.errors import InputError, ProvenanceError

FORMAT_VERSION = 1
MASTER_NAME = "store.h5"
VIDEOS_DIR = "videos"
FAILURES_DIR = "failures"

#: Provenance fields that must agree for features to be interchangeable.
COMPATIBILITY_KEYS = ("backbone", "streams", "feature_dim", "fps", "clip_len", "stride")


# --------------------------------------------------------------------------- data classes
@dataclass(frozen=True)
class Provenance:
    """How a store's features were made. Shared by every video in the store.

    ``fps`` is the sample fps the extractor resampled to, or ``None`` when each
    video kept its own (the per-video fps is always stored with the video).
    ``weights`` maps a stream to ``{"file": name, "sha256": hex}``, or
    ``{"file": None, "sha256": "random"}`` for randomly initialised weights.
    """

    backbone: str
    streams: tuple[str, ...]
    feature_dim: int
    clip_len: int
    stride: int
    fps: float | None = None
    weights: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)
    tadkit_version: str = __version__
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["streams"] = list(self.streams)
        return json.loads(json.dumps(d))  # plain JSON types only

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Provenance":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown provenance fields: {sorted(unknown)}")
        d = dict(d)
        d["streams"] = tuple(d.get("streams", ()))
        return cls(**d)

    def mismatches(self, expected: "Provenance | Mapping[str, Any]",
                   keys: tuple[str, ...] | None = None) -> list[str]:
        """Human-readable differences on ``keys`` (all given keys for a mapping)."""
        have = self.to_dict()
        want = expected.to_dict() if isinstance(expected, Provenance) else dict(expected)
        if keys is None:
            keys = COMPATIBILITY_KEYS if isinstance(expected, Provenance) else tuple(want)
        out = []
        for key in keys:
            if key not in have:
                raise ValueError(f"unknown provenance field {key!r}")
            out.extend(_differences(key, have[key], want.get(key)))
        return out


def _differences(key: str, a: Any, b: Any) -> list[str]:
    """``key: features have A, expected B`` lines; nested mappings name the leaf keys."""
    if isinstance(b, tuple):
        b = list(b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out.extend(_differences(f"{key}.{k}", a.get(k), b.get(k)))
        return out
    return [] if _same(a, b) else [f"{key}: features have {a!r}, expected {b!r}"]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))
    return a == b


@dataclass
class VideoFeatures:
    """Features of one video.

    Shapes: ``features [T, C]``, ``times [T]`` (snippet centre times, seconds),
    optional ``spatial_grid [T, g, g, C']`` and ``levels`` mapping a level name
    to ``(features [T_l, C_l], times [T_l])``.
    """

    video_id: str
    features: np.ndarray
    times: np.ndarray
    fps: float
    clip_len: int
    stride: int
    num_frames: int
    duration: float
    spatial_grid: np.ndarray | None = None
    levels: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features)
        self.times = np.asarray(self.times, dtype=np.float64)
        problems = []
        if self.features.ndim != 2:
            problems.append(f"features must be [T, C], got shape {self.features.shape}")
        elif self.times.shape != (self.features.shape[0],):
            problems.append(f"times has shape {self.times.shape}, expected ({self.features.shape[0]},)")
        if self.features.ndim == 2 and self.features.shape[0] == 0:
            problems.append("a video needs at least one snippet")
        if self.spatial_grid is not None:
            g = np.asarray(self.spatial_grid)
            if g.ndim != 4 or g.shape[0] != self.features.shape[0] or g.shape[1] != g.shape[2]:
                problems.append(f"spatial_grid must be [T, g, g, C], got {g.shape}")
        for name, (f, t) in self.levels.items():
            if np.asarray(f).ndim != 2 or np.asarray(t).shape != (np.asarray(f).shape[0],):
                problems.append(f"level {name!r} needs features [T_l, C] and times [T_l]")
        if not (self.fps > 0 and self.clip_len > 0 and self.stride > 0):
            problems.append("fps, clip_len and stride must be positive")
        if problems:
            raise ValueError(f"video {self.video_id!r}: " + "; ".join(problems))

    @property
    def num_snippets(self) -> int:
        return int(self.features.shape[0])

    def shapes(self) -> dict[str, Any]:
        out: dict[str, Any] = {"features": list(self.features.shape)}
        if self.spatial_grid is not None:
            out["spatial_grid"] = list(np.asarray(self.spatial_grid).shape)
        for name, (f, _) in self.levels.items():
            out[f"levels/{name}"] = list(np.asarray(f).shape)
        return out


# --------------------------------------------------------------------------- id escaping
_SAFE = re.compile(r"[a-z0-9_-]")
_MAX_NAME = 180


def escape_id(video_id: str) -> str:
    """A file- and HDF5-safe name for ``video_id`` that decodes back exactly.

    Lower-case ASCII letters, digits, ``_`` and ``-`` stay; an upper-case letter
    ``X`` becomes ``^x`` (safe on case-insensitive file systems); every other
    byte of the UTF-8 encoding becomes ``%hh``, so names hold no upper-case
    letter at all. Names longer than 180
    characters are replaced by ``~`` + a SHA-256 of the id (the id itself is
    in the file's ``video_id`` attribute).
    """
    if not isinstance(video_id, str) or video_id == "":
        raise ValueError(f"video id must be a non-empty string, got {video_id!r}")
    parts = []
    for ch in video_id:
        if _SAFE.fullmatch(ch):
            parts.append(ch)
        elif "A" <= ch <= "Z":
            parts.append("^" + ch.lower())
        else:
            parts.append("".join(f"%{b:02x}" for b in ch.encode("utf-8")))
    name = "".join(parts)
    if len(name) > _MAX_NAME:
        name = "~" + hashlib.sha256(video_id.encode("utf-8")).hexdigest()
    return name


def unescape_id(name: str) -> str | None:
    """Inverse of :func:`escape_id`; ``None`` for hashed names (read the attribute)."""
    if name.startswith("~"):
        return None
    out = bytearray()
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "^":
            out += name[i + 1].upper().encode()
            i += 2
        elif ch == "%":
            out.append(int(name[i + 1:i + 3], 16))
            i += 3
        else:
            out += ch.encode()
            i += 1
    return out.decode("utf-8")


# --------------------------------------------------------------------------- store
class FeatureStore:
    """Read access to a feature store (see the module docstring for the layout).

    >>> store = FeatureStore.open("feats/", expect={"feature_dim": 2048})
    >>> v = store.read(store.video_ids()[0])
    >>> v.features.shape, v.times[:3]
    """

    def __init__(self, root: Path, provenance: Provenance):
        self.root = root
        self.provenance = provenance
        self._names: dict[str, str] | None = None

    # -- opening ----------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike,
             expect: Provenance | Mapping[str, Any] | None = None) -> "FeatureStore":
        """Open the store at ``path`` (its directory or its ``store.h5``).

        ``expect`` (a :class:`Provenance`, compared on the compatibility keys,
        or a mapping of fields) raises :class:`ProvenanceError` on mismatch.
        """
        root = Path(path)
        if root.name == MASTER_NAME and root.is_file():
            root = root.parent
        master = root / MASTER_NAME
        if not root.exists():
            raise InputError(root, "no such feature store")
        if not master.is_file():
            raise InputError(root, f"not a tadkit feature store (no {MASTER_NAME} inside)")
        prov = _read_provenance(master)
        store = cls(root, prov)
        if expect is not None:
            store.check(expect)
        return store

    @classmethod
    def create(cls, path: str | os.PathLike, provenance: Provenance) -> "FeatureWriter":
        """Open (creating if needed) a store for writing.

        Joining an existing store is allowed only with compatible provenance,
        so a resumed or parallel run cannot mix different features.
        """
        return FeatureWriter(Path(path), provenance)

    def check(self, expect: Provenance | Mapping[str, Any]) -> None:
        """Raise :class:`ProvenanceError` if the provenance differs from ``expect``."""
        try:
            problems = self.provenance.mismatches(expect)
        except ValueError as exc:
            raise ProvenanceError(f"{self.root}: {exc}") from None
        if problems:
            raise ProvenanceError(f"{self.root}: features do not match: " + "; ".join(problems))

    # -- listing ----------------------------------------------------------------
    def _index(self) -> dict[str, str]:
        if self._names is None:
            names: dict[str, str] = {}
            vdir = self.root / VIDEOS_DIR
            files = sorted(p for p in vdir.glob("*.h5") if not p.name.startswith(".")) if vdir.is_dir() else []
            for p in files:
                stem = p.name[:-3]
                vid = unescape_id(stem)
                if vid is None:
                    vid = _read_attr(p, "video_id")
                names[vid] = stem
            self._names = names
        return self._names

    def refresh(self) -> None:
        """Forget the cached listing (another process may have added videos)."""
        self._names = None

    def video_ids(self) -> list[str]:
        """All published video ids, sorted."""
        return sorted(self._index())

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._index()

    def __len__(self) -> int:
        return len(self._index())

    def __iter__(self) -> Iterator[str]:
        return iter(self.video_ids())

    def path_of(self, video_id: str) -> Path:
        """File holding ``video_id`` (it may not exist yet)."""
        name = self._index().get(video_id, escape_id(video_id))
        return self.root / VIDEOS_DIR / f"{name}.h5"

    # -- reading ----------------------------------------------------------------
    def read(self, video_id: str, rows: slice | None = None, *,
             extras: bool | frozenset[str] | set[str] = True) -> VideoFeatures:
        """Features of ``video_id``; ``rows`` reads only those snippets (lazily).

        ``extras``: read the optional arrays too (True), none of them (False),
        or only those named (``{"spatial_grid"}``, ``{"levels"}``). ``rows``
        applies to the spatial grid as well; levels are always read whole.
        """
        if video_id not in self._index():
            raise KeyError(f"{self.root}: no features for video {video_id!r}")
        path = self.path_of(video_id)
        sel = slice(None) if rows is None else rows
        wanted = {"spatial_grid", "levels"} if extras is True else set(extras or ())
        try:
            with h5py.File(path, "r") as f:
                a = f.attrs
                levels = {}
                if "levels" in wanted and "levels" in f:
                    for key in f["levels"]:
                        g = f["levels"][key]
                        levels[g.attrs["name"]] = (g["features"][()], g["times"][()])
                return VideoFeatures(
                    video_id=str(a["video_id"]),
                    features=f["features"][sel],
                    times=f["times"][sel],
                    fps=float(a["fps"]),
                    clip_len=int(a["clip_len"]),
                    stride=int(a["stride"]),
                    num_frames=int(a["num_frames"]),
                    duration=float(a["duration"]),
                    spatial_grid=f["spatial_grid"][sel] if "spatial_grid" in wanted and "spatial_grid" in f else None,
                    levels=levels,
                )
        except (OSError, KeyError) as exc:
            raise InputError(path, f"unreadable video features ({exc})") from None

    def meta(self, video_id: str) -> dict[str, Any]:
        """Per-video metadata and shapes without reading the arrays."""
        path = self.path_of(video_id)
        with h5py.File(path, "r") as f:
            out = {k: _plain(f.attrs[k]) for k in
                   ("video_id", "fps", "clip_len", "stride", "num_frames", "duration")}
            out["shapes"] = {"features": list(f["features"].shape)}
            if "spatial_grid" in f:
                out["shapes"]["spatial_grid"] = list(f["spatial_grid"].shape)
            if "levels" in f:
                for key in f["levels"]:
                    g = f["levels"][key]
                    out["shapes"][f"levels/{g.attrs['name']}"] = list(g["features"].shape)
        return out

    def failures(self) -> dict[str, str]:
        """Videos recorded as failed (and not written since): id -> reason."""
        fdir = self.root / FAILURES_DIR
        out = {}
        if fdir.is_dir():
            for p in sorted(fdir.glob("*.json")):
                try:
                    rec = json.loads(p.read_text())
                    out[rec["video_id"]] = rec["reason"]
                except (OSError, ValueError, KeyError):
                    continue
        return out

    def summary(self) -> dict[str, Any]:
        """Provenance, per-video shapes and failures as plain JSON types."""
        videos = {vid: self.meta(vid)["shapes"] for vid in self.video_ids()}
        return {"path": str(self.root), "provenance": self.provenance.to_dict(),
                "videos": videos, "failures": self.failures()}


class FeatureWriter(FeatureStore):
    """Writes videos into a store, one atomic file per video.

    Use as a context manager; :meth:`close` refreshes the master index.
    """

    def __init__(self, root: Path, provenance: Provenance):
        root.mkdir(parents=True, exist_ok=True)
        (root / VIDEOS_DIR).mkdir(exist_ok=True)
        (root / FAILURES_DIR).mkdir(exist_ok=True)
        master = root / MASTER_NAME
        with _locked(root):
            if master.is_file():
                existing = _read_provenance(master)
                problems = existing.mismatches(provenance, keys=COMPATIBILITY_KEYS + ("weights", "preprocessing"))
                if problems:
                    raise ProvenanceError(
                        f"{root}: the store was written with different settings; use another output "
                        "directory or the same settings: " + "; ".join(problems))
                provenance = existing
            else:
                _write_master(root, provenance, [])
        super().__init__(root, provenance)
        self._cleanup_stale_tmp()

    def __enter__(self) -> "FeatureWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def has(self, video_id: str) -> bool:
        """True if ``video_id`` is already published (a rerun skips it)."""
        return (self.root / VIDEOS_DIR / f"{escape_id(video_id)}.h5").is_file()

    def write(self, video: VideoFeatures, compression: str | None = None) -> Path:
        """Publish one video atomically; returns its file."""
        name = escape_id(video.video_id)
        final = self.root / VIDEOS_DIR / f"{name}.h5"
        tmp = self.root / VIDEOS_DIR / f".tmp-{os.getpid()}-{uuid.uuid4().hex}.h5"
        try:
            with h5py.File(tmp, "w") as f:
                a = f.attrs
                a["video_id"] = video.video_id
                a["fps"] = float(video.fps)
                a["clip_len"] = int(video.clip_len)
                a["stride"] = int(video.stride)
                a["num_frames"] = int(video.num_frames)
                a["duration"] = float(video.duration)
                a["format_version"] = FORMAT_VERSION
                a["provenance"] = json.dumps(self.provenance.to_dict())
                f.create_dataset("features", data=np.asarray(video.features, dtype=np.float32),
                                 compression=compression)
                f.create_dataset("times", data=video.times)
                if video.spatial_grid is not None:
                    f.create_dataset("spatial_grid", data=np.asarray(video.spatial_grid, dtype=np.float32),
                                     compression=compression)
                if video.levels:
                    grp = f.create_group("levels")
                    for lname, (lf, lt) in video.levels.items():
                        g = grp.create_group(escape_id(lname))
                        g.attrs["name"] = lname
                        g.create_dataset("features", data=np.asarray(lf, dtype=np.float32))
                        g.create_dataset("times", data=np.asarray(lt, dtype=np.float64))
            _fsync_path(tmp)
            os.replace(tmp, final)
            _fsync_path(final.parent)
        finally:
            if tmp.exists():
                tmp.unlink()
        failure = self.root / FAILURES_DIR / f"{name}.json"
        if failure.exists():
            failure.unlink()
        if self._names is not None:
            self._names[video.video_id] = name
        return final

    def record_failure(self, video_id: str, reason: str) -> None:
        """Remember that ``video_id`` failed (a later success clears it)."""
        name = escape_id(video_id)
        path = self.root / FAILURES_DIR / f"{name}.json"
        tmp = path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex}.json")
        tmp.write_text(json.dumps({"video_id": video_id, "reason": reason, "time": time.time()}))
        os.replace(tmp, path)

    def close(self) -> None:
        """Rebuild the master index so plain-h5py readers see every video."""
        self.refresh()
        with _locked(self.root):
            _write_master(self.root, self.provenance, sorted(self._index().items()))

    def _cleanup_stale_tmp(self) -> None:
        for p in (self.root / VIDEOS_DIR).glob(".tmp-*"):
            try:
                pid = int(p.name.split("-")[1])
            except (IndexError, ValueError):
                continue
            if not _pid_alive(pid):
                with contextlib.suppress(OSError):
                    p.unlink()


# --------------------------------------------------------------------------- helpers
def _read_provenance(master: Path) -> Provenance:
    try:
        with h5py.File(master, "r") as f:
            raw = f.attrs["provenance"]
    except (OSError, KeyError) as exc:
        raise InputError(master, f"unreadable feature store master file ({exc})") from None
    try:
        return Provenance.from_dict(json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise InputError(master, f"invalid provenance ({exc})") from None


def _write_master(root: Path, provenance: Provenance, entries: list[tuple[str, str]]) -> None:
    tmp = root / f".tmp-master-{os.getpid()}-{uuid.uuid4().hex}.h5"
    try:
        with h5py.File(tmp, "w") as f:
            d = provenance.to_dict()
            f.attrs["provenance"] = json.dumps(d)
            for key in ("backbone", "feature_dim", "clip_len", "stride", "tadkit_version", "format_version"):
                f.attrs[key] = d[key]
            f.attrs["streams"] = ",".join(d["streams"])
            f.attrs["fps"] = np.nan if d["fps"] is None else d["fps"]
            grp = f.create_group(VIDEOS_DIR)
            for vid, name in entries:
                grp[name] = h5py.ExternalLink(f"{VIDEOS_DIR}/{name}.h5", "/")
        _fsync_path(tmp)
        os.replace(tmp, root / MASTER_NAME)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_attr(path: Path, key: str) -> Any:
    with h5py.File(path, "r") as f:
        return _plain(f.attrs[key])


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    with open(root / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
