"""CSV files: annotations ``video,start,end,label[,subset,duration,fps]``, video info, and the
row reader the prediction CSV shares.

A header row names the columns (any order, letter case ignored, extra columns
ignored); a tab-separated file (``.tsv``, or tabs and no commas in the header)
works too. Errors name the row: ``row 3 (video 'abc'): end: expected a number``.
"""
from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Any, Sequence

from tadkit.data.formats import checks as ck
from tadkit.data.formats.table import AnnotationTable, TableBuilder, normalize_subset
from tadkit.errors import InputError
from tadkit.files import read_text

ANNOTATION_COLUMNS = ("video", "start", "end", "label")


def read_rows(p: Path, required: Sequence[str], expected: str) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """Header column -> index, and ``(row number, stripped cells)`` of every non-blank row.

    ``required`` columns must be in the header (``expected`` is shown when not);
    every row must have as many cells as the header.
    """
    text = read_text(p)
    first = text.split("\n", 1)[0]
    delim = "\t" if p.suffix.lower() == ".tsv" or ("\t" in first and "," not in first) else ","
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delim))
    except csv.Error as exc:
        raise InputError(p, f"not a valid CSV ({exc})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise InputError(p, f"empty CSV (expected a header {expected})")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(p, f"CSV header lacks column(s) {', '.join(missing)} "
                            f"(expected {expected}; got {','.join(header)})")
    col = {name: header.index(name) for name in header if name}
    out = []
    for n, r in enumerate(rows[1:], 1):
        if len(r) != len(header):
            where = f"row {n} (video {r[col['video']].strip()!r})" \
                if "video" in col and len(r) > col["video"] else f"row {n}"
            raise InputError(p, f"{where}: {len(r)} fields, the header has {len(header)}")
        out.append((n, [c.strip() for c in r]))
    return col, out


def read_csv(p: Path) -> AnnotationTable:
    """An annotation CSV; one subset, duration and fps per video."""
    col, rows = read_rows(p, ANNOTATION_COLUMNS, "video,start,end,label[,subset,duration,fps]")
    out = TableBuilder()
    for n, r in rows:
        get = {k: r[i] for k, i in col.items()}
        vid = get["video"]
        if not vid:
            raise InputError(p, f"row {n}: empty video id")
        where = f"row {n} (video {vid!r})"
        s = ck.parse_float(p, get["start"], f"{where}: start")
        e = ck.parse_float(p, get["end"], f"{where}: end")
        label = get["label"]
        if not label:
            raise InputError(p, f"{where}: empty label")
        subset = normalize_subset(get.get("subset"))
        duration = ck.parse_float(p, get["duration"], f"{where}: duration", positive=True) \
            if get.get("duration") else math.nan
        fps = ck.parse_float(p, get["fps"], f"{where}: fps", positive=True) if get.get("fps") else math.nan
        known = out.videos.get(vid)
        if known is not None:
            if known["subset"] != subset:
                raise InputError(p, f"{where}: subset {subset!r} but earlier rows say {known['subset']!r}")
            for key, val in (("duration", duration), ("fps", fps)):
                if not math.isnan(val):
                    if math.isnan(known[key]):
                        known[key] = val
                    elif abs(known[key] - val) > 1e-6:
                        raise InputError(p, f"{where}: {key} {val} but earlier rows say {known[key]}")
        out.add_video(vid, duration, fps, subset)
        out.add(vid, s, e, label, subset)
    return out.build(p, "csv")


def read_video_info(p: Path) -> dict[str, dict[str, Any]]:
    """Video id -> ``subset`` / ``duration`` / ``fps`` from a CSV with a ``video``
    (or ``filename``, extension dropped) column and any of ``subset``,
    ``duration``/``seconds``/``video-duration``/``duration_second`` and ``fps``."""
    text = read_text(p)
    try:
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in r)]
    except csv.Error as exc:
        raise InputError(p, f"not a readable CSV ({exc})") from None
    if not rows:
        raise InputError(p, "empty video info CSV")
    header = [h.strip().lower() for h in rows[0]]
    vcol = next((header.index(c) for c in ("video", "filename", "video_id", "id") if c in header), None)
    if vcol is None:
        raise InputError(p, f"video info CSV needs a 'video' or 'filename' column (got {','.join(header)})")
    dcol = next((header.index(c) for c in ("duration", "seconds", "video-duration", "duration_second")
                 if c in header), None)
    fcol = header.index("fps") if "fps" in header else None
    scol = header.index("subset") if "subset" in header else None
    out = {}
    for n, r in enumerate(rows[1:], 1):
        if len(r) != len(header):
            raise InputError(p, f"row {n}: {len(r)} fields, the header has {len(header)}")
        vid = r[vcol].strip()
        if header[vcol] == "filename":
            vid = re.sub(r"\.(mp4|mkv|webm|avi|mov|m4v|flv)$", "", vid, flags=re.I)
        rec: dict[str, Any] = {}
        if dcol is not None and r[dcol].strip():
            rec["duration"] = ck.parse_float(p, r[dcol], f"row {n} ({vid!r}): duration", positive=True)
        if fcol is not None and r[fcol].strip():
            rec["fps"] = ck.parse_float(p, r[fcol], f"row {n} ({vid!r}): fps", positive=True)
        if scol is not None and r[scol].strip():
            rec["subset"] = normalize_subset(r[scol])
        out[vid] = rec
    return out
