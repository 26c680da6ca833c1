"""Ground-truth annotations for the data and detection stages: any format -> one pandas table.

>>> ann = load_annotations("thumos14.json")              # format detected
>>> val = ann.subset("val")                               # names are normalised
>>> segments, labels = val.segments_of("video_validation_0000051")

The files are read by :mod:`tadkit.data.formats` (one reader per format, the
format table is there and in ``docs/data.md``); this module adds the data
stage's policy: a class order (``label_idx``), segments clipped to the video,
inverted instances dropped, every problem reported.

An :class:`Annotations` holds

* ``instances``: a pandas DataFrame, one row per action instance, columns
  ``video`` (str), ``start``, ``end`` (float seconds), ``label`` (str),
  ``label_idx`` (int, index into ``classes``) and ``subset`` (normalised);
* ``videos``: a DataFrame indexed by video id with ``duration`` (seconds,
  NaN if unknown), ``fps`` (NaN if unknown) and ``subset``; it lists videos
  without instances too (e.g. the ActivityNet test set);
* ``classes``: the class names, in label-index order;
* ``ambiguous``: THUMOS14 "Ambiguous" instances (columns ``video``, ``start``,
  ``end``, ``subset``), kept apart from the classes: the official THUMOS14
  evaluation ignores detections that overlap them;
* ``report``: what was clipped, dropped or suspicious while loading.

Video ids: ActivityNet ids appear with (BSN, feature files) and without (the
official JSON) a ``v_`` prefix. Ids are kept as written unless
``video_prefix`` is given: ``""`` strips a leading ``v_``, ``"v_"`` adds it
where missing. ``video_info`` rows are matched to videos with or without the
prefix.

Malformed input raises :class:`tadkit.errors.InputError` naming the file and
the first offending entry; nothing else escapes for bad content.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from tadkit.data.formats import (AMBIGUOUS, FORMATS, UNKNOWN_SUBSET, AnnotationTable, Rows,
                                 detect_format, load_class_list, no_such_subset, normalize_subset,
                                 read_table, strip_v)
from tadkit.errors import InputError

__all__ = ["Annotations", "AnnotationWarning", "LoadReport", "load_annotations", "detect_format",
           "load_class_list", "normalize_subset", "FORMATS", "AMBIGUOUS", "UNKNOWN_SUBSET"]

INSTANCE_COLUMNS = ["video", "start", "end", "label", "label_idx", "subset"]
AMBIGUOUS_COLUMNS = ["video", "start", "end", "subset"]


class AnnotationWarning(UserWarning):
    """Suspicious but usable annotations (clipped, zero-length, duplicates...)."""


# --------------------------------------------------------------------------- report
@dataclass
class LoadReport:
    """Problems found while loading, with up to a few examples each.

    ``clipped``: instances cut to ``[0, duration]``; ``outside``: instances
    starting at or after the stated duration (kept unchanged: the duration is
    the likelier error); ``inverted``: end before
    start (dropped); ``zero_length``: end == start (kept: official ground
    truth has a few); ``duplicates``: repeated (video, start, end, label)
    (kept). Each list holds ``"video [start, end] label"`` strings.
    """

    clipped: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    inverted: list[str] = field(default_factory=list)
    zero_length: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def messages(self, examples: int = 3) -> list[str]:
        """One human-readable line per kind of problem found."""
        out = []
        for name, what in (("clipped", "instances clipped to [0, duration]"),
                           ("outside", "instances starting after the stated duration kept unchanged"),
                           ("inverted", "inverted instances (end < start) dropped"),
                           ("zero_length", "zero-length instances kept"),
                           ("duplicates", "duplicate instances kept")):
            items = getattr(self, name)
            if items:
                ex = "; ".join(items[:examples]) + (" ..." if len(items) > examples else "")
                out.append(f"{len(items)} {what} (e.g. {ex})")
        return out + list(self.notes)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in self.__dict__.items()}


# --------------------------------------------------------------------------- table
@dataclass(eq=False)
class Annotations:
    """Ground truth of a dataset (see the module docstring for the columns)."""

    instances: pd.DataFrame
    videos: pd.DataFrame
    classes: list[str]
    ambiguous: pd.DataFrame
    source: str | None = None
    report: LoadReport = field(default_factory=LoadReport)
    _by_video: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)

    # -- basic queries --------------------------------------------------------
    def __len__(self) -> int:
        return len(self.instances)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def video_ids(self) -> list[str]:
        """Every video of the table (with or without instances), sorted."""
        return sorted(self.videos.index)

    def subsets(self) -> dict[str, int]:
        """Normalised subset name -> number of videos."""
        counts = self.videos["subset"].value_counts()
        return {str(k): int(v) for k, v in sorted(counts.items())}

    def subset(self, names: str | Sequence[str]) -> "Annotations":
        """The videos (and their instances) of one or more subsets.

        Names are normalised (``val``, ``Validation`` -> ``validation``); a
        comma-separated string selects several. A name that matches no video
        raises :class:`InputError` listing the subsets that exist.
        """
        if isinstance(names, str):
            names = [n for n in names.split(",") if n.strip()]
        wanted = [normalize_subset(n) for n in names]
        have = self.subsets()
        missing = [n for n, w in zip(names, wanted) if w not in have]
        if missing or not wanted:
            raise no_such_subset(self.source, missing or names, have)
        keep = self.videos.index[self.videos["subset"].isin(wanted)]
        out = self._select_videos(keep)
        # Ambiguous rows of videos the table does not list follow their own subset.
        orphan = ~self.ambiguous["video"].isin(self.videos.index) & self.ambiguous["subset"].isin(wanted)
        if orphan.any():
            out.ambiguous = pd.concat([out.ambiguous, self.ambiguous[orphan]], ignore_index=True)
        return out

    def select(self, video_ids: Iterable[str]) -> "Annotations":
        """The table restricted to ``video_ids`` (unknown ids are ignored)."""
        ids = pd.Index(list(video_ids))
        return self._select_videos(self.videos.index.intersection(ids))

    def segments_of(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``(segments [N, 2] float64 seconds, label_idx [N] int64)`` of one video.

        An unknown video or one without instances gives empty arrays.
        """
        if self._by_video is None:
            self._by_video = {}
            if len(self.instances):
                groups = self.instances.groupby("video", sort=False).indices
                se = self.instances[["start", "end"]].to_numpy(np.float64)
                lab = self.instances["label_idx"].to_numpy(np.int64)
                for vid, idx in groups.items():
                    self._by_video[vid] = (se[idx], lab[idx])
        segs, labels = self._by_video.get(video_id, (np.zeros((0, 2)), np.zeros(0, np.int64)))
        return segs.copy(), labels.copy()

    def ambiguous_of(self, video_id: str) -> np.ndarray:
        """``[M, 2]`` seconds of the Ambiguous instances of one video."""
        rows = self.ambiguous[self.ambiguous["video"] == video_id]
        return rows[["start", "end"]].to_numpy(np.float64)

    def duration_of(self, video_id: str) -> float:
        """Duration in seconds (NaN if the annotations do not say)."""
        return float(self.videos.at[video_id, "duration"]) if video_id in self.videos.index else math.nan

    def summary(self) -> dict[str, Any]:
        """Counts per subset (videos, instances, classes, ambiguous) as plain types."""
        out: dict[str, Any] = {"source": self.source, "classes": len(self.classes), "subsets": {}}
        for name, nvid in self.subsets().items():
            inst = self.instances[self.instances["subset"] == name]
            amb = self.ambiguous[self.ambiguous["subset"] == name]
            out["subsets"][name] = {
                "videos": nvid,
                "videos_with_instances": int(inst["video"].nunique()),
                "instances": int(len(inst)),
                "classes": int(inst["label"].nunique()),
                "ambiguous": int(len(amb)),
            }
        out["problems"] = self.report.messages()
        return out

    # -- conversions ----------------------------------------------------------
    def with_video_prefix(self, prefix: str) -> "Annotations":
        """Same table with ids renamed: ``""`` strips ``v_``, ``"v_"`` adds it."""
        fix = _prefixer(prefix)
        inst = self.instances.assign(video=self.instances["video"].map(fix))
        amb = self.ambiguous.assign(video=self.ambiguous["video"].map(fix))
        videos = self.videos.rename(index=fix)
        return replace(self, instances=inst, videos=videos, ambiguous=amb, _by_video=None)

    def to_activitynet(self, version: str = "tadkit", include_ambiguous: bool = False) -> dict[str, Any]:
        """The official ActivityNet JSON structure (``json.dump`` it).

        Subsets are written with their normalised names; ``fps`` is added to a
        video entry when known. Ambiguous instances are added with the label
        ``"Ambiguous"`` only if ``include_ambiguous``.
        """
        database: dict[str, Any] = {}
        for vid, row in self.videos.iterrows():
            entry: dict[str, Any] = {"subset": row["subset"], "annotations": []}
            if not math.isnan(row["duration"]):
                entry["duration"] = float(row["duration"])
            if not math.isnan(row["fps"]):
                entry["fps"] = float(row["fps"])
            database[vid] = entry
        for vid, s, e, lab in self.instances[["video", "start", "end", "label"]].itertuples(index=False):
            database[vid]["annotations"].append({"segment": [float(s), float(e)], "label": lab})
        if include_ambiguous:
            for vid, s, e in self.ambiguous[["video", "start", "end"]].itertuples(index=False):
                if vid in database:
                    database[vid]["annotations"].append({"segment": [float(s), float(e)], "label": AMBIGUOUS})
        taxonomy = [{"nodeId": i, "nodeName": c, "parentId": None, "parentName": None}
                    for i, c in enumerate(self.classes)]
        return {"version": version, "taxonomy": taxonomy, "database": database}

    def _select_videos(self, keep: pd.Index) -> "Annotations":
        keep_set = set(keep)
        inst = self.instances[self.instances["video"].isin(keep_set)].reset_index(drop=True)
        amb = self.ambiguous[self.ambiguous["video"].isin(keep_set)].reset_index(drop=True)
        return replace(self, instances=inst, videos=self.videos.loc[sorted(keep_set)],
                       ambiguous=amb, _by_video=None)


# --------------------------------------------------------------------------- loading
def load_annotations(path: str | Path, fmt: str = "auto", *,
                     classes: Sequence[str] | str | Path | None = None,
                     video_info: str | Path | None = None,
                     ambiguous: str | Path | None = None,
                     video_prefix: str | None = None,
                     results_subset: str = "validation",
                     clip: bool = True,
                     warn: bool = True) -> Annotations:
    """Load ground truth from ``path`` into an :class:`Annotations`.

    Parameters
    ----------
    fmt:
        One of :data:`FORMATS` or ``"auto"``.
    classes:
        The class list (label-index order): a sequence of names or a file
        (``detclasslist.txt`` lines ``id Name``, ``action_name.csv`` with a
        header, or one name per line). Default: a THUMOS folder's
        ``detclasslist.txt``, else the file's own ``label_id`` order when it has
        one, else the taxonomy's leaves (a label outside the taxonomy is an
        error), else the sorted labels. A label outside an explicit list is an
        error.
    video_info:
        A CSV with a ``video`` (or ``filename``) column and any of
        ``subset``, ``duration``/``seconds``/``video-duration`` and ``fps``;
        it fills what the annotation file lacks (BSN subsets, THUMOS
        durations). For ``bsn`` it defaults to ``video_info_new.csv`` beside
        ``path``.
    ambiguous:
        A THUMOS ``Ambiguous_<subset>.txt`` to attach to ``ambiguous``.
    video_prefix:
        ``None`` keeps ids, ``""`` strips ``v_``, ``"v_"`` adds it.
    results_subset:
        The subset of an ``activitynet-results`` file (it has none of its own).
    clip:
        Clip instances to ``[0, duration]`` (counted in ``report``).
    warn:
        Emit one :class:`AnnotationWarning` summarising ``report``.
    """
    p = Path(path)
    table = read_table(p, fmt, video_info=video_info, ambiguous=ambiguous)
    if table.fmt == "activitynet-results":
        _set_unknown_subsets(table, normalize_subset(results_subset))
    if classes is None and table.fmt == "thumos-folder" and (p / "detclasslist.txt").is_file():
        classes = p / "detclasslist.txt"
    ann = _build(table, _resolve_classes(table, classes), clip=clip)
    if video_prefix is not None:
        ann = ann.with_video_prefix(video_prefix)
    if warn:
        msgs = ann.report.messages()
        if msgs:
            warnings.warn(f"{p}: " + " | ".join(msgs), AnnotationWarning, stacklevel=2)
    return ann


# --------------------------------------------------------------------------- policy
def _set_unknown_subsets(table: AnnotationTable, subset: str) -> None:
    for info in table.videos.values():
        if info["subset"] == UNKNOWN_SUBSET:
            info["subset"] = subset
    for rows in (table.instances, table.ambiguous):
        rows.subset[rows.subset == UNKNOWN_SUBSET] = subset


def _resolve_classes(table: AnnotationTable, classes: Sequence[str] | str | Path | None) -> list[str]:
    inst = table.instances
    labels = set(inst.label.tolist())

    def first_row_of(label: str) -> str:
        return inst.video[inst.label.tolist().index(label)]

    if classes is not None:
        names = load_class_list(classes) if isinstance(classes, (str, Path)) else [str(c) for c in classes]
        unknown = sorted(labels - set(names))
        if unknown:
            raise InputError(table.source, f"label {unknown[0]!r} (video {first_row_of(unknown[0])!r}) "
                                           f"is not in the class list ({len(names)} classes)")
        return names
    tax = table.taxonomy
    if tax is not None:
        unknown = sorted(labels - set(tax.names))
        if unknown:
            raise InputError(table.source, f"label {unknown[0]!r} (video {first_row_of(unknown[0])!r}) "
                                           f"is not in the file's taxonomy ({len(tax.leaves)} classes; "
                                           f"{len(unknown)} unknown label(s): "
                                           f"{', '.join(map(repr, unknown[:5]))}); fix the label or pass "
                                           "an explicit class list")
    ids = table.label_ids
    if ids and set(ids) == labels and len(set(ids.values())) == len(ids):
        return sorted(labels, key=lambda lab: ids[lab])
    if tax is not None:
        return sorted(set(tax.leaves) | labels)
    return sorted(labels)


def _build(table: AnnotationTable, classes: list[str], *, clip: bool) -> Annotations:
    report = LoadReport(notes=list(table.notes))
    videos = pd.DataFrame.from_dict(table.videos, orient="index", columns=["duration", "fps", "subset"])
    videos = videos.astype({"duration": np.float64, "fps": np.float64, "subset": object})
    videos.index.name = "video"
    videos = videos.sort_index()
    inst = _check_segments(table.instances, videos["duration"], report, clip)
    index = {c: i for i, c in enumerate(classes)}
    inst.insert(4, "label_idx", inst["label"].map(index).astype(np.int64))
    inst = inst[INSTANCE_COLUMNS].reset_index(drop=True)
    amb = _check_segments(table.ambiguous, videos["duration"], None, clip)
    amb = amb[AMBIGUOUS_COLUMNS].reset_index(drop=True)
    if len(inst):
        dup = inst.duplicated(["video", "start", "end", "label"], keep="first")
        report.duplicates = _describe(inst[dup])
    return Annotations(inst, videos, list(classes), amb, table.source, report)


def _check_segments(rows: Rows, durations: pd.Series, report: LoadReport | None,
                    clip: bool) -> pd.DataFrame:
    """Rows as a DataFrame: inverted segments dropped, those overlapping the video
    clipped to ``[0, duration]``.

    Instances that start at or after the stated duration are kept unchanged
    (the duration is the likelier error: THUMOS14 has 30 such instances) and
    reported as ``outside``.
    """
    if len(rows):
        df = pd.DataFrame({"video": rows.video.tolist(), "start": rows.start, "end": rows.end,
                           "label": rows.label.tolist(), "subset": rows.subset.tolist()})
    else:
        df = pd.DataFrame({k: pd.Series(dtype=np.float64 if k in ("start", "end") else object)
                           for k in ("video", "start", "end", "label", "subset")})
    dur = durations.reindex(df["video"]).to_numpy(np.float64)
    s, e = df["start"].to_numpy(), df["end"].to_numpy()
    inverted = e < s
    hi = np.where(np.isnan(dur), np.inf, dur)
    outside = ~inverted & (s >= hi) & (s > 0)
    if report is not None:
        report.inverted = _describe(df[inverted])
        report.outside = _describe(df[outside])
    keep = ~inverted
    if clip:
        cut = keep & ~outside & ((s < 0) | (e > hi))
        if report is not None:
            report.clipped = _describe(df[cut])
        df = df.assign(start=np.where(cut, np.clip(s, 0.0, hi), s), end=np.where(cut, np.clip(e, 0.0, hi), e))
    df = df[keep]
    if report is not None:
        report.zero_length = _describe(df[df["end"] == df["start"]])
    return df


def _describe(rows: pd.DataFrame) -> list[str]:
    return [f"{v} [{s:g}, {e:g}] {lab}" for v, s, e, lab in
            rows[["video", "start", "end", "label"]].itertuples(index=False)]


def _prefixer(prefix: str):
    if prefix == "":
        return strip_v
    if prefix == "v_":
        return lambda vid: vid if vid.startswith("v_") else "v_" + vid
    raise ValueError(f"video_prefix must be '' (strip 'v_') or 'v_' (add it), got {prefix!r}")
