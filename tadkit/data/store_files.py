"""The files of a feature store: safe atomic writes and the check of one video file.

Writing. :func:`write_h5` builds an HDF5 file entirely in memory and
:func:`write_atomically` publishes its bytes: a temporary file in the target's
folder, written with plain ``os.write``, ``fsync``, then ``os.replace``. HDF5
never writes to disk itself, so a full disk (or any I/O error) is a plain
``OSError`` turned into one :class:`~tadkit.errors.OutputError` naming the
file, the temporary file is removed, and nothing that was published before
is touched (an HDF5 library writing into a full disk can crash the process
while closing the file).

Reading. :func:`inspect_video` checks one video file before tadkit trusts it:
readable HDF5, required attributes, array ranks, dtypes and shapes, the
feature dimension, finite and increasing times, a provenance equal to the
store's (so a file copied in from another store is noticed) and no link or
raw storage outside the file (a store never reads outside itself).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import h5py
import numpy as np

from tadkit.data.provenance import Provenance
from tadkit.errors import InputError, OutputError

#: Attributes every video file carries (see ``docs/feature-format.md``).
VIDEO_ATTRS = ("video_id", "fps", "clip_len", "stride", "num_frames", "duration", "provenance")

_TMP = re.compile(r"^\.tmp-(?:master-)?(\d+)-[0-9a-f]+\.")


# --------------------------------------------------------------------------- writing
def write_h5(path: Path, fill: Callable[[h5py.File], None], tmp_prefix: str = ".tmp-") -> None:
    """Publish the HDF5 file that ``fill(f)`` builds as ``path`` (see the module docstring)."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        fill(f)
    write_atomically(path, buf.getbuffer(), tmp_prefix)


def write_atomically(path: Path, data: bytes | memoryview, tmp_prefix: str = ".tmp-") -> None:
    """Replace ``path`` by ``data`` atomically; :class:`OutputError` (nothing left behind) on failure."""
    tmp = path.parent / f"{tmp_prefix}{os.getpid()}-{uuid.uuid4().hex}{path.suffix}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except OSError as exc:
        raise OutputError(path, f"cannot write: {describe_os_error(exc)} (nothing half-written is left; "
                          "files written before are intact)") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def describe_os_error(exc: OSError) -> str:
    """``no space left on device`` and the like, without the errno number or file name."""
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return (exc.strerror or type(exc).__name__).lower()


def cleanup_stale_tmp(*folders: Path) -> None:
    """Remove temporary files (``.tmp-<pid>-*``, ``.tmp-master-<pid>-*``) of writers that are gone."""
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            m = _TMP.match(p.name)
            if m and not pid_alive(int(m.group(1))):
                with contextlib.suppress(OSError):
                    p.unlink()


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``root/.lock`` (writers rebuilding the master file)."""
    with open(root / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- reading
def inspect_video(path: Path, store: Provenance, video_id: str | None = None) -> dict[str, Any]:
    """Check the video file ``path`` of a store with provenance ``store``; its metadata.

    ``video_id``: the id its file name stands for (``None`` for hashed names).
    Returns ``{"video_id", "fps", "clip_len", "stride", "num_frames",
    "duration", "source", "shapes": {array: shape}, "time_ranges": {array:
    [first, last] seconds}}``. Raises :class:`InputError` naming the file and
    the first problem.
    """
    try:
        with h5py.File(path, "r") as f:
            return _inspect(f, store, video_id)
    except _Problem as exc:
        raise InputError(path, str(exc)) from None
    except OSError as exc:
        raise InputError(path, f"not a readable HDF5 file ({h5_error(exc)})") from None
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"unreadable video features ({h5_error(exc)})") from None


def read_text_attr(path: Path, key: str) -> str:
    """One string attribute of an HDF5 file (``InputError`` if unreadable or absent)."""
    try:
        with h5py.File(path, "r") as f:
            value = _plain(f.attrs[key])
    except OSError as exc:
        raise InputError(path, f"not a readable HDF5 file ({h5_error(exc)})") from None
    except (KeyError, UnicodeDecodeError):
        raise InputError(path, f"no readable attribute {key!r}") from None
    if not isinstance(value, str) or not value:
        raise InputError(path, f"attribute {key!r} is not a non-empty string")
    return value


def settings_mismatch(video: Mapping[str, Any], store: Provenance) -> str | None:
    """``"stride is 8, the store's is 4"`` if a video's ``clip_len`` / ``stride`` / ``fps`` differ
    from the store's (``fps`` only when the store resampled every video to one rate)."""
    for key in ("clip_len", "stride", "fps"):
        want = getattr(store, key)
        if want is not None and abs(float(video[key]) - want) > 1e-6 * max(1.0, abs(want)):
            return f"{key} is {video[key]!r}, the store's is {want!r}"
    return None


def h5_error(exc: BaseException) -> str:
    """The first line of an h5py error, without its errno prefix."""
    lines = str(exc).strip().splitlines()
    text = re.sub(r"\[Errno -?\d+\]\s*", "", lines[0] if lines else type(exc).__name__)
    return text[:200]


class _Problem(Exception):
    """What is wrong with a video file (becomes an ``InputError`` naming the file)."""


def _inspect(f: h5py.File, store: Provenance, video_id: str | None) -> dict[str, Any]:
    a = f.attrs
    missing = [k for k in VIDEO_ATTRS if k not in a]
    if missing:
        raise _Problem(f"missing attribute(s) {', '.join(missing)}: not a tadkit video file")
    meta = {k: _plain(a[k]) for k in VIDEO_ATTRS[:-1]}
    vid = meta["video_id"]
    if not isinstance(vid, str) or not vid:
        raise _Problem(f"attribute video_id must be a non-empty string, got {vid!r}")
    if video_id is not None and vid != video_id:
        raise _Problem(f"holds video {vid!r} but its file name stands for {video_id!r} (copied or renamed by hand?)")
    _check_scalars(meta)
    try:
        prov = Provenance.from_dict(json.loads(_plain(a["provenance"])))
    except (ValueError, TypeError) as exc:
        raise _Problem(f"invalid provenance attribute ({exc})") from None
    differences = prov.mismatches(store)
    if differences:
        raise _Problem("the file comes from a store made with other settings: " + "; ".join(differences[:3])
                       + ("; ..." if len(differences) > 3 else ""))
    problem = settings_mismatch(meta, store)
    if problem:
        raise _Problem(f"attribute {problem}")
    feats = _dataset(f, "features", ndim=2, kind="f")
    t, c = feats.shape
    if t == 0:
        raise _Problem("features hold 0 snippets")
    if c != store.feature_dim:
        raise _Problem(f"features have {c} channels, the store's feature_dim is {store.feature_dim}")
    meta["shapes"] = {"features": [t, c]}
    times = _times(f, "times", t)
    meta["time_ranges"] = {"features": [float(times[0]), float(times[-1])]}
    if f.get("spatial_grid", getlink=True) is not None:
        grid = _dataset(f, "spatial_grid", ndim=4, kind="f")
        if grid.shape[0] != t or grid.shape[1] != grid.shape[2]:
            raise _Problem(f"spatial_grid has shape {grid.shape}, expected [{t}, g, g, C]")
        meta["shapes"]["spatial_grid"] = list(grid.shape)
        meta["time_ranges"]["spatial_grid"] = meta["time_ranges"]["features"]
    if f.get("levels", getlink=True) is not None:
        _hard_link(f, "levels")
        if not isinstance(f["levels"], h5py.Group):
            raise _Problem("'levels' is not a group")
        for key in f["levels"]:
            path = f"levels/{key}"
            _hard_link(f, path)
            name = _plain(f[path].attrs.get("name"))
            if not isinstance(name, str) or not name:
                raise _Problem(f"'{path}' has no name attribute")
            lf = _dataset(f, f"{path}/features", ndim=2, kind="f")
            lt = _times(f, f"{path}/times", lf.shape[0])
            meta["shapes"][f"levels/{name}"] = list(lf.shape)
            if len(lt):
                meta["time_ranges"][f"levels/{name}"] = [float(lt[0]), float(lt[-1])]
    meta["source"] = _source(a)
    return meta


def _check_scalars(meta: dict[str, Any]) -> None:
    """fps > 0; clip_len, stride positive integers; num_frames, duration >= 0; all finite."""
    for key in ("fps", "clip_len", "stride", "num_frames", "duration"):
        v = meta[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise _Problem(f"attribute {key} must be a finite number, got {v!r}")
        if key in ("clip_len", "stride") and (v < 1 or v != int(v)):
            raise _Problem(f"attribute {key} must be a positive integer, got {v!r}")
        if v < 0 or key == "fps" and v == 0:
            raise _Problem(f"attribute {key} must be {'positive' if key == 'fps' else 'non-negative'}, got {v!r}")


def _hard_link(f: h5py.File, name: str) -> None:
    link = f.get(name, getlink=True)
    if isinstance(link, h5py.ExternalLink):
        raise _Problem(f"'{name}' is an external link to {link.filename!r}; a store never reads outside itself")
    if not isinstance(link, h5py.HardLink):
        raise _Problem(f"'{name}' is a {type(link).__name__}, expected a plain dataset or group")


def _dataset(f: h5py.File, name: str, ndim: int, kind: str) -> h5py.Dataset:
    if f.get(name, getlink=True) is None:
        raise _Problem(f"no '{name}' dataset")
    _hard_link(f, name)
    ds = f[name]
    if not isinstance(ds, h5py.Dataset):
        raise _Problem(f"'{name}' is a group, expected a dataset")
    if ds.external:
        raise _Problem(f"'{name}' keeps its data in external file(s) ({ds.external[0][0]!r}); "
                       "a store never reads outside itself")
    if ds.is_virtual:
        raise _Problem(f"'{name}' is a virtual dataset mapping other files; a store never reads outside itself")
    if ds.ndim != ndim:
        raise _Problem(f"'{name}' has shape {ds.shape}, expected {ndim} dimensions")
    if ds.dtype.kind not in kind:
        raise _Problem(f"'{name}' has dtype {ds.dtype}, expected floating point")
    return ds


def _times(f: h5py.File, name: str, n: int) -> np.ndarray:
    ds = _dataset(f, name, ndim=1, kind="fiu")
    if ds.shape[0] != n:
        raise _Problem(f"'{name}' holds {ds.shape[0]} times for {n} steps")
    t = np.asarray(ds[()], dtype=np.float64)
    if not np.isfinite(t).all():
        raise _Problem(f"'{name}' holds NaN or infinite times")
    if n > 1 and not (np.diff(t) > 0).all():
        raise _Problem(f"'{name}' is not strictly increasing")
    return t


def _source(attrs: Any) -> dict[str, Any] | None:
    if "source" not in attrs:
        return None
    try:
        value = json.loads(_plain(attrs["source"]))
    except (ValueError, TypeError):
        raise _Problem("invalid source attribute") from None
    if not isinstance(value, dict):
        raise _Problem("invalid source attribute")
    return value


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v
