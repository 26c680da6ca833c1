"""Which videos a run extracts: source identity, videos already in the store, ids tadkit refuses.

Every extracted video records its **source** in its file (``source``
attribute): the path, size, modification time and a SHA-256 of a sample of
the file (its first MiB and last 64 KiB). On a rerun a video already in the
store is skipped only if it comes from the same file: same size and, when
the modification time differs, the same sample hash (so copying or moving
videos keeps them; replacing or re-encoding one does not). A changed source
is refused (default) or extracted again (``on_change="reextract"``). A video
whose stored file fails its check is extracted again.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from tadkit.data.features import FeatureWriter, printable_id
from tadkit.errors import ConfigError, InputError
from tadkit.extract.video import video_id

#: What a rerun does with a video whose source file changed.
ON_SOURCE_CHANGE = ("refuse", "reextract")
#: Bytes hashed at the start and at the end of a video file.
HEAD_BYTES, TAIL_BYTES = 1 << 20, 1 << 16


@dataclass
class RunPlan:
    """This run's videos, sorted into what to do with them.

    ``todo``: files to extract (new ones, then ``redo``); ``skipped``: ids
    already in the store from the same source; ``redo``: ``(id, why)`` of
    videos in the store that are extracted again; ``rejected``: ``(id,
    why)`` of files refused before decoding (a file name that is not UTF-8).
    """

    todo: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    redo: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


def plan_run(writer: FeatureWriter, videos: Sequence[Path], on_change: str = "refuse") -> RunPlan:
    """Sort ``videos`` against the store ``writer`` (see the module docstring).

    Raises :class:`InputError` naming the first changed video when sources
    changed and ``on_change`` is ``"refuse"``: nothing is extracted then.
    """
    if on_change not in ON_SOURCE_CHANGE:
        raise ConfigError(f"on_source_change must be one of {', '.join(ON_SOURCE_CHANGE)}, got {on_change!r}")
    plan = RunPlan()
    redo: list[Path] = []
    changed: list[tuple[str, str]] = []
    for path in videos:
        vid = video_id(path)
        problem = id_problem(vid)
        if problem:
            plan.rejected.append((vid, problem))
        elif not writer.has(vid):
            plan.todo.append(path)
        else:
            try:
                recorded = writer.meta(vid)["source"]
            except (InputError, KeyError) as exc:
                redo.append(path)
                plan.redo.append((vid, f"its stored file fails the check ({getattr(exc, 'problem', exc)})"))
                continue
            change = source_change(recorded, path)
            if change is None:
                plan.skipped.append(vid)
            else:
                redo.append(path)
                changed.append((vid, change))
    if changed and on_change == "refuse":
        vid, why = changed[0]
        raise InputError(writer.root, f"{len(changed)} video(s) in the store were extracted from other files than "
                         f"the ones given now, e.g. {vid!r}: {why}; pass --on-source-change reextract to extract "
                         "them again, or use another --out")
    plan.redo.extend((vid, f"its source changed: {why}") for vid, why in changed)
    plan.todo.extend(redo)
    return plan


def id_problem(vid: str) -> str | None:
    """Why tadkit refuses the video id ``vid`` (``None`` if it does not)."""
    try:
        vid.encode("utf-8")
    except UnicodeEncodeError:
        return "the file name is not valid UTF-8, so no annotation file can name this video; rename the file"
    return None


def source_identity(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "size", "mtime", "sample_sha256"}`` of a video file (see the module docstring)."""
    p = Path(path)
    st = p.stat()
    return {"path": printable_id(os.path.abspath(p)), "size": int(st.st_size), "mtime": float(st.st_mtime),
            "sample_sha256": _sample_sha256(p, st.st_size)}


def source_change(recorded: Mapping[str, Any] | None, path: str | os.PathLike) -> str | None:
    """How the file at ``path`` differs from the ``recorded`` source (``None``: the same, or unknown).

    Stores written before sources were recorded, and files that cannot be
    read now, are never called changed.
    """
    if not recorded:
        return None
    try:
        st = Path(path).stat()
        now = printable_id(os.path.abspath(path))
        where = "" if recorded.get("path") == now else f" (extracted from {recorded.get('path')}, now {now})"
        if st.st_size != recorded.get("size"):
            return f"the file had {recorded.get('size')} bytes, now {st.st_size}{where}"
        if st.st_mtime != recorded.get("mtime") and \
                _sample_sha256(Path(path), st.st_size) != recorded.get("sample_sha256"):
            return f"same size, other content{where}"
    except OSError:
        return None
    return None


def _sample_sha256(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(HEAD_BYTES))
        if size > HEAD_BYTES:
            fh.seek(max(HEAD_BYTES, size - TAIL_BYTES))
            h.update(fh.read(TAIL_BYTES))
    return h.hexdigest()
