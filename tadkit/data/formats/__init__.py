"""One reader per annotation format, each producing the same :class:`AnnotationTable`.

Formats (``fmt``; ``"auto"`` detects them by what decides it):

* ``activitynet`` (:mod:`.activitynet`): the official ActivityNet 1.3 / HACS
  JSON and ActionFormer's ``thumos14.json`` -- a ``database`` key;
* ``activitynet-results`` (:mod:`.activitynet`): a detection file read as
  ground truth -- a ``results`` key;
* ``bsn`` (:mod:`.bsn`): BSN's ``anet_anno_action.json`` -- entries with
  ``duration_second`` or ``annotations``;
* ``thumos-folder`` / ``thumos-txt`` (:mod:`.thumos`): the official THUMOS14
  ``<Class>_<subset>.txt`` files -- a folder / a ``.txt``;
* ``csv`` (:mod:`.csvfile`): ``video,start,end,label[,subset,duration,fps]``
  -- ``.csv`` / ``.tsv``.

:func:`read_table` reads any of them; the data stage
(:func:`tadkit.data.annotations.load_annotations`) and the evaluate stage
(:func:`tadkit.evaluate.load_ground_truth`) both build on it, each with its own
policy. Shared field checks are in :mod:`.checks`. This package imports no
pandas.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tadkit.data.formats import activitynet, bsn, csvfile, thumos
from tadkit.data.formats.table import (AMBIGUOUS, UNKNOWN_SUBSET, AnnotationTable, Rows, Taxonomy,
                                       apply_video_info, is_ambiguous, no_such_subset,
                                       normalize_subset, strip_v)
from tadkit.errors import InputError
from tadkit.files import read_json, read_text

FORMATS = ("activitynet", "activitynet-results", "bsn", "thumos-folder", "thumos-txt", "csv")

__all__ = ["FORMATS", "AMBIGUOUS", "UNKNOWN_SUBSET", "AnnotationTable", "Rows", "Taxonomy",
           "read_table", "detect_format", "load_class_list", "normalize_subset", "is_ambiguous",
           "no_such_subset", "strip_v"]


def read_table(path: str | Path, fmt: str = "auto", *, video_info: str | Path | None = None,
               ambiguous: str | Path | None = None) -> AnnotationTable:
    """Read an annotation file (or THUMOS folder) of format ``fmt`` (``"auto"`` detects it).

    ``video_info``: a CSV filling unknown subsets, durations and fps (for
    ``bsn`` it defaults to ``video_info_new.csv`` beside the file).
    ``ambiguous``: a file of Ambiguous ``video start end`` lines to add.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such annotation file")
    doc = None
    if fmt == "auto":
        if p.is_file() and p.suffix.lower() not in (".csv", ".tsv", ".txt"):
            doc = read_json(p)
        fmt = detect_format(p, doc)
    if fmt not in FORMATS:
        raise InputError(p, f"unknown annotation format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "thumos-folder":
        table = thumos.read_folder(p)
    elif fmt == "thumos-txt":
        table = thumos.read_file(p)
    elif fmt == "csv":
        table = csvfile.read_csv(p)
    else:
        doc = read_json(p) if doc is None else doc
        reader = {"activitynet": activitynet.read_database, "activitynet-results": activitynet.read_results,
                  "bsn": bsn.read_bsn}[fmt]
        table = reader(p, doc)
        if fmt == "bsn" and video_info is None:
            sibling = p.parent / "video_info_new.csv"
            if sibling.is_file():
                video_info = sibling
            else:
                table.notes.append(f"no video_info given and no {sibling.name} beside the file: "
                                   f"subsets are '{UNKNOWN_SUBSET}'")
    if ambiguous is not None:
        table.ambiguous = table.ambiguous.concat(thumos.read_ambiguous(Path(ambiguous)))
    if video_info is not None:
        apply_video_info(table, csvfile.read_video_info(Path(video_info)), Path(video_info).name)
    return table


def detect_format(path: str | Path, doc: Any = None) -> str:
    """Guess the format of ``path`` from its shape (see :data:`FORMATS`).

    ``doc``: the parsed JSON of ``path`` when the caller already has it.
    """
    p = Path(path)
    if p.is_dir():
        if any(p.glob("*_val.txt")) or any(p.glob("*_test.txt")) or any(p.glob("*_validation.txt")):
            return "thumos-folder"
        raise InputError(p, "a folder but not a THUMOS annotation folder (no <Class>_val.txt / _test.txt)")
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix == ".txt":
        return "thumos-txt"
    doc = read_json(p) if doc is None else doc
    if isinstance(doc, dict):
        if "database" in doc:
            return "activitynet"
        if "results" in doc:
            return "activitynet-results"
        first = next(iter(doc.values()), None)
        if isinstance(first, dict) and ("duration_second" in first or "annotations" in first):
            return "bsn"
    raise InputError(p, "cannot tell the annotation format (expected an ActivityNet JSON with 'database', "
                        "a results JSON, a BSN JSON, a CSV or THUMOS .txt files); pass the format explicitly")


def load_class_list(path: str | Path) -> list[str]:
    """Class names from ``detclasslist.txt`` (``id Name``), ``action_name.csv`` or one name a line."""
    p = Path(path)
    lines = [ln.strip() for ln in read_text(p).splitlines() if ln.strip()]
    if p.suffix.lower() == ".csv" and lines and lines[0].lower() in ("action", "label", "class", "name"):
        lines = lines[1:]
    names = []
    for ln in lines:
        parts = ln.split(None, 1)
        if len(parts) == 2 and parts[0].isdigit() and p.suffix.lower() != ".csv":
            names.append(parts[1].strip())
        else:
            names.append(ln)
    if not names:
        raise InputError(p, "empty class list")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise InputError(p, f"class {n!r} is listed twice")
        seen.add(n)
    return names
