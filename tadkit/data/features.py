"""The feature-file contract: a crash-safe store of per-video snippet features.

Layout of a store (a directory; see ``docs/feature-format.md``)::

    feats/
      store.h5              master file: provenance attributes and, under
                            /videos, one HDF5 external link per video
      videos/<name>.h5      one self-describing file per video
      failures/<name>.json  videos that could not be processed, and why

Why this shape:

* A video file is built in memory, written under a temporary name and
  published with ``os.replace`` (atomic on POSIX), so a reader never sees a
  half-written video, killing a writer (even ``kill -9``) cannot damage a
  video that was already published and a full disk is one clear error
  (:mod:`tadkit.data.store_files`). A rerun skips published videos.
* Nothing in a store is trusted unchecked: every video file is checked
  (structure, shapes, times, its copy of the provenance, no link outside the
  file) before it is read; a bad one raises :class:`InputError` naming it, and
  readers skip it and go on.
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
import hashlib
import json
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

from tadkit.data.provenance import FEATURE_FIELDS, FORMAT_VERSION, Provenance
from tadkit.data.store_files import (cleanup_stale_tmp, h5_error, inspect_video, locked, read_text_attr,
                                     settings_mismatch, write_atomically, write_h5)
from tadkit.errors import InputError, ProvenanceError, TadkitError

MASTER_NAME = "store.h5"
VIDEOS_DIR = "videos"
FAILURES_DIR = "failures"


class FeatureWarning(UserWarning):
    """Features that are used but look wrong (NaN / inf values, a provenance mismatch allowed by the user)."""


# --------------------------------------------------------------------------- data classes
@dataclass
class VideoFeatures:
    """Features of one video.

    Shapes: ``features [T, C]``, ``times [T]`` (snippet centre times, seconds,
    finite and strictly increasing), optional ``spatial_grid [T, g, g, C']``
    and ``levels`` mapping a level name to ``(features [T_l, C_l], times
    [T_l])``. ``source`` identifies the video file the features were
    extracted from (``tadkit.extract.sources``), when known.
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
    source: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features)
        self.times = np.asarray(self.times, dtype=np.float64)
        problems = []
        if self.features.ndim != 2:
            problems.append(f"features must be [T, C], got shape {self.features.shape}")
        elif self.times.shape != (self.features.shape[0],):
            problems.append(f"times has shape {self.times.shape}, expected ({self.features.shape[0]},)")
        elif not np.isfinite(self.times).all() or not (np.diff(self.times) > 0).all():
            problems.append("times must be finite and strictly increasing")
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
    in the file's ``video_id`` attribute). An id from a file name that is not
    valid UTF-8 (undecodable bytes kept as surrogates, as ``os.fsdecode`` does)
    escapes its raw bytes; such a name does not decode back
    (:func:`unescape_id` raises), which is why extraction refuses those ids.
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
            parts.append("".join(f"%{b:02x}" for b in ch.encode("utf-8", "surrogateescape")))
    name = "".join(parts)
    if len(name) > _MAX_NAME:
        name = "~" + hashlib.sha256(video_id.encode("utf-8", "surrogateescape")).hexdigest()
    return name


def unescape_id(name: str) -> str | None:
    """Inverse of :func:`escape_id`; ``None`` for hashed names (read the attribute).

    Raises ``ValueError`` for a name :func:`escape_id` cannot have made (a
    stray ``^`` or ``%``, bytes that are not UTF-8).
    """
    if name.startswith("~"):
        return None
    out = bytearray()
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "^" and i + 1 < len(name) and "a" <= name[i + 1] <= "z":
            out += name[i + 1].upper().encode()
            i += 2
        elif ch == "%" and re.fullmatch(r"[0-9a-f]{2}", name[i + 1:i + 3]):
            out.append(int(name[i + 1:i + 3], 16))
            i += 3
        elif _SAFE.fullmatch(ch):
            out += ch.encode()
            i += 1
        else:
            raise ValueError(f"{name!r} is not an escaped video id (at {ch!r})")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{name!r} does not decode to UTF-8 text") from None


def printable_id(video_id: str) -> str:
    """``video_id`` with bytes that are not UTF-8 (surrogates from ``os.fsdecode``) shown as ``\\xhh``."""
    return video_id.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# --------------------------------------------------------------------------- store
class FeatureStore:
    """Read access to a feature store (see the module docstring for the layout).

    Every video file is checked before its features are trusted
    (:func:`tadkit.data.store_files.inspect_video`: attributes, shapes, dtypes,
    times, provenance, nothing outside the file); a file that fails raises
    :class:`InputError` naming it, so callers can skip that video and go on.

    >>> store = FeatureStore.open("feats/", expect={"feature_dim": 2048})
    >>> v = store.read(store.video_ids()[0])
    >>> v.features.shape, v.times[:3]
    """

    def __init__(self, root: Path, provenance: Provenance):
        self.root = root
        self.provenance = provenance
        self._names: dict[str, str] | None = None
        self._bad_names: dict[str, str] = {}
        self._meta: dict[str, dict[str, Any] | InputError] = {}
        self._warned: set[str] = set()

    # -- opening ----------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, expect: Provenance | Mapping[str, Any] | None = None, *,
             allow_mismatch: bool = False, hint: str = "") -> "FeatureStore":
        """Open the store at ``path`` (its directory or its ``store.h5``).

        ``expect`` (a :class:`Provenance`, compared on :data:`FEATURE_FIELDS`,
        or a mapping of fields) raises :class:`ProvenanceError` on mismatch
        (its message ends with ``hint``), or only warns
        (:class:`FeatureWarning`) with ``allow_mismatch``.
        """
        root = Path(path)
        if root.name == MASTER_NAME and root.is_file():
            root = root.parent
        master = root / MASTER_NAME
        if not root.exists():
            raise InputError(root, "no such feature store")
        if not master.is_file():
            raise InputError(root, f"not a tadkit feature store (no {MASTER_NAME} inside)")
        store = cls(root, _read_provenance(master))
        if expect is not None:
            store.check(expect, allow_mismatch=allow_mismatch, hint=hint)
        return store

    @classmethod
    def create(cls, path: str | os.PathLike, provenance: Provenance) -> "FeatureWriter":
        """Open (creating if needed) a store for writing.

        Joining an existing store is allowed only with compatible provenance,
        so a resumed or parallel run cannot mix different features.
        """
        return FeatureWriter(Path(path), provenance)

    def check(self, expect: Provenance | Mapping[str, Any], *, allow_mismatch: bool = False,
              hint: str = "") -> None:
        """Raise :class:`ProvenanceError` if the provenance differs from ``expect`` (see :meth:`open`)."""
        try:
            problems = self.provenance.mismatches(expect)
        except ValueError as exc:
            raise ProvenanceError(f"{self.root}: {exc}") from None
        if not problems:
            return
        if allow_mismatch:
            warnings.warn(f"{self.root}: using features that differ from the expected ones: " + "; ".join(problems),
                          FeatureWarning, stacklevel=3)
            return
        raise ProvenanceError(f"{self.root}: features do not match: " + "; ".join(problems)
                              + (f"; {hint}" if hint else ""))

    # -- listing ----------------------------------------------------------------
    def _index(self) -> dict[str, str]:
        if self._names is None:
            names: dict[str, str] = {}
            bad: dict[str, str] = {}
            vdir = self.root / VIDEOS_DIR
            files = sorted(p for p in vdir.glob("*.h5") if not p.name.startswith(".")) if vdir.is_dir() else []
            for p in files:
                stem = p.name[:-3]
                try:
                    vid = unescape_id(stem)
                    if vid is None:
                        vid = read_text_attr(p, "video_id")
                except (ValueError, InputError) as exc:
                    bad[printable_id(p.name)] = f"cannot tell the video id: {exc}"
                    continue
                names[vid] = stem
            self._names, self._bad_names = names, bad
        return self._names

    def refresh(self) -> None:
        """Forget the cached listing and checks (another process may have added videos)."""
        self._names = None
        self._meta.clear()

    def video_ids(self) -> list[str]:
        """All published video ids, sorted (a file that fails its check is still listed; reading it raises)."""
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
    def meta(self, video_id: str) -> dict[str, Any]:
        """Per-video metadata, shapes and time ranges, without reading the features.

        Returns ``{"video_id", "fps", "clip_len", "stride", "num_frames",
        "duration", "source", "shapes": {array: shape}, "time_ranges": {array:
        [first, last] seconds}}``. ``KeyError`` if the video is not in the store,
        :class:`InputError` if its file fails the check (the result is cached).
        """
        if video_id not in self._index():
            raise KeyError(f"{self.root}: no features for video {video_id!r}")
        got = self._meta.get(video_id)
        if got is None:
            stem = self._index()[video_id]
            try:
                got = inspect_video(self.path_of(video_id), self.provenance,
                                    None if stem.startswith("~") else video_id)
            except InputError as exc:
                got = exc
            self._meta[video_id] = got
        if isinstance(got, InputError):
            raise InputError(got.path, got.problem)  # a new one: re-raising one instance grows its traceback
        return got

    def read(self, video_id: str, rows: slice | None = None, *,
             extras: bool | frozenset[str] | set[str] = True) -> VideoFeatures:
        """Features of ``video_id``; ``rows`` reads only those snippets (lazily).

        ``extras``: read the optional arrays too (True), none of them (False),
        or only those named (``{"spatial_grid"}``, ``{"levels"}``). ``rows``
        applies to the spatial grid as well; levels are always read whole.
        Non-finite feature values give one :class:`FeatureWarning` per video.
        """
        m = self.meta(video_id)
        path = self.path_of(video_id)
        sel = slice(None) if rows is None else rows
        wanted = {"spatial_grid", "levels"} if extras is True else set(extras or ())
        try:
            with h5py.File(path, "r") as f:
                levels = {}
                if "levels" in wanted and "levels" in f:
                    for key in f["levels"]:
                        g = f["levels"][key]
                        levels[g.attrs["name"]] = (g["features"][()], g["times"][()])
                feats = f["features"][sel]
                times = f["times"][sel]
                grid = f["spatial_grid"][sel] if "spatial_grid" in wanted and "spatial_grid" in f else None
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(path, f"unreadable video features ({h5_error(exc)})") from None
        self._warn_non_finite(video_id, path, feats, grid, sel.start or 0)
        try:
            return VideoFeatures(video_id=m["video_id"], features=feats, times=times, fps=float(m["fps"]),
                                 clip_len=int(m["clip_len"]), stride=int(m["stride"]),
                                 num_frames=int(m["num_frames"]), duration=float(m["duration"]),
                                 spatial_grid=grid, levels=levels, source=m["source"])
        except ValueError as exc:  # e.g. an empty row selection
            raise InputError(path, str(exc)) from None

    def failures(self) -> dict[str, str]:
        """Videos recorded as failed (and not written since): id -> reason."""
        fdir = self.root / FAILURES_DIR
        out = {}
        if fdir.is_dir():
            for p in sorted(fdir.glob("*.json")):
                try:
                    rec = json.loads(p.read_text(encoding="utf-8"))
                    out[str(rec["video_id"])] = str(rec["reason"])
                except (OSError, ValueError, KeyError, TypeError):
                    continue
        return out

    def unreadable(self) -> dict[str, str]:
        """Files that fail their check (checking every video): video id or file name -> reason."""
        out = {}
        for vid in self.video_ids():
            try:
                self.meta(vid)
            except InputError as exc:
                out[vid] = exc.problem
        out.update(self._bad_names)
        return out

    def summary(self) -> dict[str, Any]:
        """Provenance, per-video shapes and time ranges, failures and unreadable files, as plain JSON types."""
        bad = self.unreadable()
        good = [vid for vid in self.video_ids() if vid not in bad]
        return {"path": str(self.root), "provenance": self.provenance.to_dict(),
                "videos": {vid: self.meta(vid)["shapes"] for vid in good},
                "time_ranges": {vid: self.meta(vid)["time_ranges"] for vid in good},
                "failures": self.failures(), "unreadable": bad}

    def _warn_non_finite(self, video_id: str, path: Path, feats: np.ndarray, grid: np.ndarray | None,
                         first_row: int) -> None:
        # a sum is one pass without a temporary array; it is finite unless a value is not (or it overflows)
        arrays = [a.reshape(len(a), -1) for a in (feats, grid) if a is not None and a.size]
        with np.errstate(over="ignore", invalid="ignore"):
            if video_id in self._warned or all(np.isfinite(a.sum()) for a in arrays):
                return
        rows = np.flatnonzero(np.any([~np.isfinite(a).all(axis=1) for a in arrays], axis=0)) + first_row
        if len(rows):
            self._warned.add(video_id)
            warnings.warn(f"{path}: video {video_id!r} has NaN or infinite feature values in {len(rows)} "
                          f"snippet(s) ({rows[0]}..{rows[-1]} of those read); the model's output there is "
                          "undefined, so detections may be missing", FeatureWarning, stacklevel=3)


class FeatureWriter(FeatureStore):
    """Writes videos into a store, one atomic file per video.

    Use as a context manager; :meth:`close` refreshes the master index. Every
    write goes through :func:`tadkit.data.store_files.write_atomically`: a
    failure (a full disk) raises :class:`~tadkit.errors.OutputError` and leaves
    the store as it was.
    """

    def __init__(self, root: Path, provenance: Provenance):
        try:
            for d in (root, root / VIDEOS_DIR, root / FAILURES_DIR):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(root, f"cannot create the feature store ({exc.strerror or exc})") from None
        master = root / MASTER_NAME
        with locked(root):
            if master.is_file():
                existing = _read_provenance(master)
                # extras (grid, levels, class scores) are checked by the extractor, with their own message
                problems = existing.mismatches(provenance, keys=FEATURE_FIELDS[:-1])
                if problems:
                    raise ProvenanceError(
                        f"{root}: the store was written with different settings; use another output "
                        "directory or the same settings: " + "; ".join(problems))
                provenance = existing
            else:
                _write_master(root, provenance, [])
        super().__init__(root, provenance)
        cleanup_stale_tmp(root, root / VIDEOS_DIR, root / FAILURES_DIR)

    def __enter__(self) -> "FeatureWriter":
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        with contextlib.suppress(TadkitError, OSError):  # keep the error that stopped the run
            self.close()

    def has(self, video_id: str) -> bool:
        """True if ``video_id`` is already published (a rerun skips it)."""
        return (self.root / VIDEOS_DIR / f"{escape_id(video_id)}.h5").is_file()

    def write(self, video: VideoFeatures, compression: str | None = None) -> Path:
        """Publish one video atomically; returns its file."""
        mismatch = settings_mismatch({k: getattr(video, k) for k in ("clip_len", "stride", "fps")}, self.provenance)
        if video.features.shape[1] != self.provenance.feature_dim:
            mismatch = f"features have {video.features.shape[1]} channels, the store's feature_dim is " \
                       f"{self.provenance.feature_dim}"
        if mismatch:  # a file the store's readers would refuse
            raise ValueError(f"video {video.video_id!r}: {mismatch}")
        name = escape_id(video.video_id)
        final = self.root / VIDEOS_DIR / f"{name}.h5"

        def fill(f: h5py.File) -> None:
            a = f.attrs
            a["video_id"] = video.video_id
            a["fps"] = float(video.fps)
            a["clip_len"] = int(video.clip_len)
            a["stride"] = int(video.stride)
            a["num_frames"] = int(video.num_frames)
            a["duration"] = float(video.duration)
            a["format_version"] = FORMAT_VERSION
            a["provenance"] = json.dumps(self.provenance.to_dict())
            if video.source is not None:
                a["source"] = json.dumps(dict(video.source))
            f.create_dataset("features", data=np.asarray(video.features, dtype=np.float32), compression=compression)
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

        write_h5(final, fill)
        failure = self.root / FAILURES_DIR / f"{name}.json"
        with contextlib.suppress(FileNotFoundError):
            failure.unlink()
        if self._names is not None:
            self._names[video.video_id] = name
        self._meta.pop(video.video_id, None)
        return final

    def record_failure(self, video_id: str, reason: str) -> None:
        """Remember that ``video_id`` failed (a later success clears it)."""
        path = self.root / FAILURES_DIR / f"{escape_id(video_id)}.json"
        record = {"video_id": printable_id(video_id), "reason": reason, "time": time.time()}
        write_atomically(path, json.dumps(record).encode())

    def close(self) -> None:
        """Rebuild the master index so plain-h5py readers see every video."""
        self.refresh()
        with locked(self.root):
            _write_master(self.root, self.provenance, sorted(self._index().items()))


# --------------------------------------------------------------------------- helpers
def _read_provenance(master: Path) -> Provenance:
    try:
        with h5py.File(master, "r") as f:
            raw = f.attrs["provenance"]
    except (OSError, KeyError) as exc:
        raise InputError(master, f"unreadable feature store master file ({h5_error(exc)})") from None
    try:
        return Provenance.from_dict(json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise InputError(master, f"invalid provenance ({exc})") from None


def _write_master(root: Path, provenance: Provenance, entries: list[tuple[str, str]]) -> None:
    def fill(f: h5py.File) -> None:
        d = provenance.to_dict()
        f.attrs["provenance"] = json.dumps(d)
        for key in ("backbone", "feature_dim", "clip_len", "stride", "tadkit_version", "format_version"):
            f.attrs[key] = d[key]
        f.attrs["streams"] = ",".join(d["streams"])
        f.attrs["fps"] = np.nan if d["fps"] is None else d["fps"]
        grp = f.create_group(VIDEOS_DIR)
        for _, name in entries:
            grp[name] = h5py.ExternalLink(f"{VIDEOS_DIR}/{name}.h5", "/")

    write_h5(root / MASTER_NAME, fill, tmp_prefix=".tmp-master-")
