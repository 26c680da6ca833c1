"""The official THUMOS14 annotation files: ``<Class>_<subset>.txt`` with ``video start end`` lines.

``thumos-folder``: a folder of them (``BaseballPitch_test.txt``, ...,
``Ambiguous_test.txt``; files are read in name order, lines in file order), and
``detclasslist.txt`` beside them fixes the class list. ``thumos-txt``: one such
file. The class and subset come from the file name; the lines carry no
durations. ``Ambiguous`` lines are kept apart and register no video (the test
video that has only Ambiguous segments is not a video of the benchmark).
"""
from __future__ import annotations

import re
from pathlib import Path

from tadkit.data.formats import checks as ck
from tadkit.data.formats.table import (AMBIGUOUS, UNKNOWN_SUBSET, AnnotationTable, Rows, TableBuilder,
                                       is_ambiguous, normalize_subset)
from tadkit.errors import InputError
from tadkit.files import read_text

NAME = re.compile(r"^(?P<label>.+?)_(?P<subset>val|validation|test|testing|train|training)$", re.I)


def read_folder(p: Path) -> AnnotationTable:
    """Every ``<Class>_<subset>.txt`` of the folder ``p``."""
    files = sorted(f for f in p.glob("*.txt") if NAME.match(f.stem))
    if not files:
        raise InputError(p, "no <Class>_val.txt / <Class>_test.txt files in the folder")
    out = TableBuilder()
    for f in files:
        out.extend(_read_class_file(f))
    return out.build(p, "thumos-folder")


def read_file(p: Path) -> AnnotationTable:
    """One ``<Class>_<subset>.txt``."""
    return _read_class_file(p).build(p, "thumos-txt")


def read_segment_lines(p: Path) -> list[tuple[str, float, float]]:
    """``(video, start, end)`` of each ``video start end`` line (whitespace or commas;
    blank lines, ``#`` comments and a ``video,start,end`` header skipped)."""
    out = []
    for n, line in enumerate(read_text(p).splitlines(), 1):
        parts = line.replace(",", " ").split()
        if not parts or parts[0].startswith("#") or (not out and parts[0] == "video"):
            continue
        if len(parts) != 3:
            raise InputError(p, f"line {n}: expected 'video start end', got {ck.short(line.strip())}")
        out.append((parts[0], ck.parse_float(p, parts[1], f"line {n}: start"),
                    ck.parse_float(p, parts[2], f"line {n}: end")))
    return out


def read_ambiguous(p: Path) -> Rows:
    """An Ambiguous segment file under any name; ``Ambiguous_<subset>.txt`` gives the subset."""
    m = NAME.match(p.stem)
    subset = normalize_subset(m.group("subset")) if m else UNKNOWN_SUBSET
    return Rows.from_records([(v, s, e, AMBIGUOUS, subset) for v, s, e in read_segment_lines(p)])


def _read_class_file(p: Path) -> TableBuilder:
    m = NAME.match(p.stem)
    if m is None:
        raise InputError(p, "a THUMOS file must be named <Class>_val.txt or <Class>_test.txt")
    label, subset = m.group("label"), normalize_subset(m.group("subset"))
    out = TableBuilder()
    for vid, s, e in read_segment_lines(p):
        if not is_ambiguous(label):
            out.add_video(vid, subset=subset)
        out.add(vid, s, e, label, subset)
    return out
