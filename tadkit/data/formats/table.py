"""The one table every annotation reader produces: columns in file order.

An :class:`AnnotationTable` holds what a file says and nothing more: no
clipping, no class order, no subset chosen. The data stage
(:mod:`tadkit.data.annotations`) and the evaluate stage
(:mod:`tadkit.evaluate.io`) each apply their own policy on top of it.

* ``instances`` / ``ambiguous``: :class:`Rows` (video, start, end, label,
  subset columns) in **file order** -- the official ActivityNet evaluation breaks
  ties by the order it read the file, so the order is part of the result.
  ``Ambiguous`` rows (THUMOS14; any letter case) are never instances.
* ``videos``: video id -> ``{"duration", "fps", "subset"}`` in file order
  (NaN where unknown; videos without instances too).
* ``label_ids`` (label -> the file's own class id), ``taxonomy`` (node names
  and leaves of an ActivityNet taxonomy, or None), ``notes``.

Subsets are normalised (:func:`normalize_subset`); a file that does not say
gives :data:`UNKNOWN_SUBSET`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from tadkit.errors import InputError

AMBIGUOUS = "Ambiguous"
UNKNOWN_SUBSET = "unknown"

_SUBSET_ALIASES = {
    "train": "training", "training": "training", "trn": "training",
    "val": "validation", "valid": "validation", "validation": "validation", "validate": "validation",
    "test": "testing", "testing": "testing", "tst": "testing",
}


def normalize_subset(name: Any) -> str:
    """Canonical subset name: ``training``, ``validation``, ``testing`` or lower case.

    >>> normalize_subset("Validation"), normalize_subset("val"), normalize_subset("Test")
    ('validation', 'validation', 'testing')
    """
    if name is None:
        return UNKNOWN_SUBSET
    key = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
    if key == "":
        return UNKNOWN_SUBSET
    return _SUBSET_ALIASES.get(key, key)


def is_ambiguous(label: str) -> bool:
    """THUMOS14's ``Ambiguous`` label, in any letter case."""
    return label.lower() == "ambiguous"


def no_such_subset(source: Any, asked: Iterable[str], counts: dict[str, int]) -> InputError:
    """The error for subsets that match no video, listing those that exist."""
    listing = ", ".join(f"{k} ({v} videos)" for k, v in sorted(counts.items())) or "none"
    names = ", ".join(repr(a) for a in asked) or "''"
    return InputError(source, f"no subset {names} in the annotations; subsets: {listing}")


@dataclass
class Rows:
    """Annotated segments as columns: ``video``, ``label``, ``subset`` (N,) object,
    ``start``, ``end`` (N,) float64 seconds."""

    video: np.ndarray
    start: np.ndarray
    end: np.ndarray
    label: np.ndarray
    subset: np.ndarray

    def __len__(self) -> int:
        return len(self.video)

    @classmethod
    def from_records(cls, records: list[tuple[str, float, float, str, str]]) -> "Rows":
        """From ``(video, start, end, label, subset)`` tuples."""
        cols = list(zip(*records)) if records else [(), (), (), (), ()]
        return cls(objects(cols[0]), np.array(cols[1], dtype=np.float64),
                   np.array(cols[2], dtype=np.float64), objects(cols[3]), objects(cols[4]))

    def take(self, keep: np.ndarray) -> "Rows":
        """The rows where ``keep`` (bool mask or indices) selects."""
        return Rows(self.video[keep], self.start[keep], self.end[keep], self.label[keep],
                    self.subset[keep])

    def concat(self, other: "Rows") -> "Rows":
        """These rows followed by ``other``'s."""
        return Rows(*(np.concatenate([a, b]) for a, b in
                      zip(self._columns(), other._columns())))

    def describe(self, i: int) -> str:
        """``video [start, end] label`` of row ``i`` (for messages and reports)."""
        return f"{self.video[i]} [{self.start[i]:g}, {self.end[i]:g}] {self.label[i]}"

    def _columns(self):
        return self.video, self.start, self.end, self.label, self.subset


@dataclass
class Taxonomy:
    """An ActivityNet ``taxonomy``: every node name and the leaves (the classes)."""

    names: list[str]
    leaves: list[str]


@dataclass
class AnnotationTable:
    """What one annotation file says (see the module docstring)."""

    instances: Rows
    ambiguous: Rows
    videos: dict[str, dict[str, Any]]
    source: str
    fmt: str
    label_ids: dict[str, int] = field(default_factory=dict)
    taxonomy: Taxonomy | None = None
    notes: list[str] = field(default_factory=list)

    def subset_counts(self) -> dict[str, int]:
        """Subset -> number of videos."""
        out: dict[str, int] = {}
        for info in self.videos.values():
            out[info["subset"]] = out.get(info["subset"], 0) + 1
        return out


class TableBuilder:
    """Collects a reader's records (plain Python) and builds the table once."""

    def __init__(self) -> None:
        self.instances: list[tuple[str, float, float, str, str]] = []
        self.ambiguous: list[tuple[str, float, float, str, str]] = []
        self.videos: dict[str, dict[str, Any]] = {}
        self.label_ids: dict[str, int] = {}
        self.taxonomy: Taxonomy | None = None
        self.notes: list[str] = []

    def add_video(self, vid: str, duration: float = math.nan, fps: float = math.nan,
                  subset: str = UNKNOWN_SUBSET) -> None:
        """Register a video (the first registration wins)."""
        self.videos.setdefault(vid, {"duration": duration, "fps": fps, "subset": subset})

    def add(self, vid: str, start: float, end: float, label: str, subset: str) -> None:
        """One annotated segment; ``Ambiguous`` ones go apart."""
        rec = (vid, start, end, label, subset)
        (self.ambiguous if is_ambiguous(label) else self.instances).append(rec)

    def extend(self, other: "TableBuilder") -> None:
        """Append another builder's records (a folder of files)."""
        self.instances += other.instances
        self.ambiguous += other.ambiguous
        for vid, info in other.videos.items():
            self.add_video(vid, **info)
        self.notes += other.notes

    def build(self, source: Any, fmt: str) -> AnnotationTable:
        return AnnotationTable(Rows.from_records(self.instances), Rows.from_records(self.ambiguous),
                               self.videos, str(source), fmt, self.label_ids, self.taxonomy,
                               self.notes)


def apply_video_info(table: AnnotationTable, info: dict[str, dict[str, Any]], name: str) -> None:
    """Fill unknown subsets, durations and fps of ``table.videos`` from ``info``
    (video id -> values; ids match with or without a ``v_`` prefix), in place."""
    bare = {strip_v(k): v for k, v in info.items()}
    unmatched = 0
    for vid, entry in table.videos.items():
        row = info.get(vid) or bare.get(strip_v(vid))
        if row is None:
            unmatched += 1
            continue
        if entry["subset"] == UNKNOWN_SUBSET and row.get("subset"):
            entry["subset"] = row["subset"]
        for key in ("duration", "fps"):
            if math.isnan(entry[key]) and not math.isnan(row.get(key, math.nan)):
                entry[key] = row[key]
    if unmatched:
        table.notes.append(f"{unmatched} videos not found in {name}")
    for rows in (table.instances, table.ambiguous):
        for i, vid in enumerate(rows.video.tolist()):
            if vid in table.videos:
                rows.subset[i] = table.videos[vid]["subset"]


def strip_v(vid: str) -> str:
    """The id without a leading ``v_`` (ActivityNet ids appear with and without it)."""
    return vid[2:] if vid.startswith("v_") else vid


def objects(values) -> np.ndarray:
    """A 1-d object array of ``values`` (never a 2-d array of tuples or characters)."""
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out
