"""Ground-truth annotations: every supported format -> one tidy table.

>>> ann = load_annotations("thumos14.json")              # format detected
>>> val = ann.subset("val")                               # names are normalised
>>> segments, labels = val.segments_of("video_validation_0000051")

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

Formats (``fmt``; ``"auto"`` detects them):

``activitynet``
    The official ActivityNet 1.3 / HACS JSON ``{"version", "taxonomy"?,
    "database": {id: {"subset", "duration", "annotations": [{"segment",
    "label"}]}}}``. ActionFormer's ``thumos14.json`` is the same shape (plus
    ``fps``), so it loads as this format.
``activitynet-results``
    A detection file ``{"results": {id: [{"segment", "label", "score"?}]}}``
    read as ground truth (the official ``sample_detection_prediction.json`` is
    the ActivityNet 1.3 validation ground truth); ``results_subset`` names
    its subset.
``bsn``
    BSN's ``anet_anno_action.json`` (``{"v_id": {"duration_second",
    "annotations", ...}}``). Its subsets come from ``video_info`` (by default
    ``video_info_new.csv`` beside the file).
``thumos-folder`` / ``thumos-txt``
    The official THUMOS14 per-class files ``<Class>_val.txt`` /
    ``<Class>_test.txt`` (lines ``video start end``), a folder of them or one
    file. ``Ambiguous_*.txt`` files go to ``ambiguous``; a ``detclasslist.txt``
    in the folder fixes the class list.
``csv``
    A generic CSV with a header ``video,start,end,label`` and optional
    ``subset``, ``duration`` and ``fps`` columns.

Video ids: ActivityNet ids appear with (BSN, feature files) and without (the
official JSON) a ``v_`` prefix. Ids are kept as written unless
``video_prefix`` is given: ``""`` strips a leading ``v_``, ``"v_"`` adds it
where missing. ``video_info`` rows are matched to videos with or without the
prefix.

Malformed input raises :class:`tadkit.errors.InputError` naming the file and
the first offending entry; nothing else escapes for bad content.
"""
from __future__ import annotations

import csv
import io
import math
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from tadkit.errors import InputError
from tadkit.files import read_json

FORMATS = ("activitynet", "activitynet-results", "bsn", "thumos-folder", "thumos-txt", "csv")
AMBIGUOUS = "Ambiguous"
INSTANCE_COLUMNS = ["video", "start", "end", "label", "label_idx", "subset"]
AMBIGUOUS_COLUMNS = ["video", "start", "end", "subset"]

_SUBSET_ALIASES = {
    "train": "training", "training": "training", "trn": "training",
    "val": "validation", "valid": "validation", "validation": "validation", "validate": "validation",
    "test": "testing", "testing": "testing", "tst": "testing",
}
UNKNOWN_SUBSET = "unknown"


class AnnotationWarning(UserWarning):
    """Suspicious but usable annotations (clipped, zero-length, duplicates...)."""


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
            listing = ", ".join(f"{k} ({v} videos)" for k, v in have.items()) or "none"
            asked = ", ".join(repr(m) for m in (missing or names)) or "''"
            raise InputError(self.source, f"no subset {asked} in the annotations; subsets: {listing}")
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
        header, or one name per line). Default: the file's own ``label_id``
        order when it has one, else the sorted labels. A label outside an
        explicit list is an error.
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
    clip:
        Clip instances to ``[0, duration]`` (counted in ``report``).
    warn:
        Emit one :class:`AnnotationWarning` summarising ``report``.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such annotation file")
    auto = fmt == "auto" and p.is_file() and p.suffix.lower() not in (".csv", ".txt")
    doc = read_json(p) if auto else None
    fmt = detect_format(p, doc) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise InputError(p, f"unknown annotation format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "thumos-folder":
        raw = _read_thumos_folder(p)
        if classes is None and (p / "detclasslist.txt").is_file():
            classes = p / "detclasslist.txt"
    elif fmt == "thumos-txt":
        raw = _read_thumos_txt(p)
    elif fmt == "csv":
        raw = _read_csv(p)
    else:
        doc = read_json(p) if doc is None else doc
        if fmt == "activitynet":
            raw = _read_activitynet(p, doc)
        elif fmt == "activitynet-results":
            raw = _read_results(p, doc, normalize_subset(results_subset))
        else:
            raw = _read_bsn(p, doc)
            if video_info is None:
                sibling = p.parent / "video_info_new.csv"
                if sibling.is_file():
                    video_info = sibling
                else:
                    raw.notes.append(f"no video_info given and no {sibling.name} beside the file: "
                                     f"subsets are '{UNKNOWN_SUBSET}'")
    if ambiguous is not None:
        amb = _read_thumos_txt(Path(ambiguous))
        raw.ambiguous.extend(amb.ambiguous + [(v, s, e, AMBIGUOUS, sub) for v, s, e, _, sub in amb.instances])
    if video_info is not None:
        _apply_video_info(raw, Path(video_info))
    class_list = _resolve_classes(p, raw, classes)
    ann = _build(p, raw, class_list, clip=clip)
    if video_prefix is not None:
        ann = ann.with_video_prefix(video_prefix)
    if warn:
        msgs = ann.report.messages()
        if msgs:
            warnings.warn(f"{p}: " + " | ".join(msgs), AnnotationWarning, stacklevel=2)
    return ann


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
    if suffix == ".csv":
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
                        "a results JSON, a BSN JSON, a CSV or THUMOS .txt files); pass fmt explicitly")


def load_class_list(path: str | Path) -> list[str]:
    """Class names from ``detclasslist.txt`` (``id Name``), ``action_name.csv`` or one name a line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(p, f"unreadable class list ({exc})") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
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
    dup = [n for i, n in enumerate(names) if n in names[:i]]
    if dup:
        raise InputError(p, f"class {dup[0]!r} is listed twice")
    return names


# --------------------------------------------------------------------------- raw records
@dataclass
class _Raw:
    """What a reader found, before validation: plain Python records."""

    instances: list[tuple[str, float, float, str, str]] = field(default_factory=list)  # vid, s, e, label, subset
    ambiguous: list[tuple[str, float, float, str, str]] = field(default_factory=list)
    videos: dict[str, dict[str, Any]] = field(default_factory=dict)  # vid -> duration, fps, subset
    label_ids: dict[str, int] = field(default_factory=dict)
    taxonomy: list[str] | None = None
    notes: list[str] = field(default_factory=list)

    def add_video(self, vid: str, duration: float = math.nan, fps: float = math.nan,
                  subset: str = UNKNOWN_SUBSET) -> None:
        self.videos.setdefault(vid, {"duration": duration, "fps": fps, "subset": subset})

    def add(self, vid: str, start: float, end: float, label: str, subset: str) -> None:
        rec = (vid, start, end, label, subset)
        (self.ambiguous if label.lower() == AMBIGUOUS.lower() else self.instances).append(rec)


def _read_activitynet(p: Path, doc: Any) -> _Raw:
    obj = _mapping(p, doc, "top level")
    db = _mapping(p, obj.get("database"), "'database'")
    raw = _Raw()
    if "taxonomy" in obj and obj["taxonomy"] not in (None, []):
        raw.taxonomy = _taxonomy_leaves(p, obj["taxonomy"])
    for vid, entry in db.items():
        where = f"database[{vid!r}]"
        _video_id(p, vid, where)
        entry = _mapping(p, entry, where)
        subset = normalize_subset(_opt_str(p, entry.get("subset"), f"{where}.subset"))
        duration = _opt_number(p, entry.get("duration"), f"{where}.duration", positive=True)
        fps = _opt_number(p, entry.get("fps"), f"{where}.fps", positive=True)
        raw.add_video(vid, duration, fps, subset)
        for j, a in enumerate(_annotation_list(p, entry, where)):
            w = f"{where}.annotations[{j}]"
            a = _mapping(p, a, w)
            s, e = _segment(p, a.get("segment"), f"{w}.segment")
            label = _label(p, a.get("label"), f"{w}.label")
            raw.add(vid, s, e, label, subset)
            if "label_id" in a and label.lower() != AMBIGUOUS.lower():
                lid = a["label_id"]
                if isinstance(lid, int) and not isinstance(lid, bool):
                    raw.label_ids.setdefault(label, lid)
    return raw


def _read_results(p: Path, doc: Any, subset: str) -> _Raw:
    obj = _mapping(p, doc, "top level")
    res = _mapping(p, obj.get("results"), "'results'")
    raw = _Raw()
    for vid, items in res.items():
        where = f"results[{vid!r}]"
        _video_id(p, vid, where)
        raw.add_video(vid, subset=subset)
        for j, a in enumerate(_sequence(p, items, where)):
            w = f"{where}[{j}]"
            a = _mapping(p, a, w)
            s, e = _segment(p, a.get("segment"), f"{w}.segment")
            raw.add(vid, s, e, _label(p, a.get("label"), f"{w}.label"), subset)
    return raw


def _read_bsn(p: Path, doc: Any) -> _Raw:
    obj = _mapping(p, doc, "top level")
    raw = _Raw()
    for vid, entry in obj.items():
        where = f"[{vid!r}]"
        _video_id(p, vid, where)
        entry = _mapping(p, entry, where)
        duration = _opt_number(p, entry.get("duration_second", entry.get("duration")),
                               f"{where}.duration_second", positive=True)
        subset = normalize_subset(_opt_str(p, entry.get("subset"), f"{where}.subset"))
        raw.add_video(vid, duration, math.nan, subset)
        for j, a in enumerate(_annotation_list(p, entry, where)):
            w = f"{where}.annotations[{j}]"
            a = _mapping(p, a, w)
            s, e = _segment(p, a.get("segment"), f"{w}.segment")
            raw.add(vid, s, e, _label(p, a.get("label"), f"{w}.label"), subset)
    return raw


_THUMOS_NAME = re.compile(r"^(?P<label>.+?)_(?P<subset>val|validation|test|testing|train|training)$", re.I)


def _read_thumos_folder(p: Path) -> _Raw:
    raw = _Raw()
    files = sorted(f for f in p.glob("*.txt") if _THUMOS_NAME.match(f.stem))
    if not files:
        raise InputError(p, "no <Class>_val.txt / <Class>_test.txt files in the folder")
    for f in files:
        part = _read_thumos_txt(f)
        raw.instances += part.instances
        raw.ambiguous += part.ambiguous
        for vid, info in part.videos.items():
            raw.add_video(vid, **info)
    return raw


def _read_thumos_txt(p: Path) -> _Raw:
    m = _THUMOS_NAME.match(p.stem)
    if m is None:
        raise InputError(p, "a THUMOS file must be named <Class>_val.txt or <Class>_test.txt")
    label, subset = m.group("label"), normalize_subset(m.group("subset"))
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InputError(p, f"unreadable ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise InputError(p, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    raw = _Raw()
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise InputError(p, f"line {n}: expected 'video start end', got {line.strip()!r}")
        vid = parts[0]
        s = _parse_float(p, parts[1], f"line {n}: start")
        e = _parse_float(p, parts[2], f"line {n}: end")
        raw.add_video(vid, subset=subset)
        raw.add(vid, s, e, label, subset)
    return raw


def _read_csv(p: Path) -> _Raw:
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InputError(p, f"unreadable ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise InputError(p, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise InputError(p, f"not a valid CSV ({exc})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise InputError(p, "empty CSV (expected a header video,start,end,label[,subset])")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in ("video", "start", "end", "label") if c not in header]
    if missing:
        raise InputError(p, f"CSV header lacks column(s) {', '.join(missing)} "
                            f"(expected video,start,end,label[,subset,duration,fps]; got {','.join(header)})")
    col = {name: header.index(name) for name in header if name}
    raw = _Raw()
    for n, r in enumerate(rows[1:], 2):
        where = f"row {n - 1} (video {r[col['video']].strip()!r})" if len(r) > col["video"] else f"row {n - 1}"
        if len(r) != len(header):
            raise InputError(p, f"{where}: {len(r)} fields, the header has {len(header)}")
        get = {k: r[i].strip() for k, i in col.items()}
        vid = get["video"]
        if not vid:
            raise InputError(p, f"row {n - 1}: empty video id")
        s = _parse_float(p, get["start"], f"{where}: start")
        e = _parse_float(p, get["end"], f"{where}: end")
        label = get["label"]
        if not label:
            raise InputError(p, f"{where}: empty label")
        subset = normalize_subset(get.get("subset"))
        duration = _parse_float(p, get["duration"], f"{where}: duration", positive=True) \
            if get.get("duration") else math.nan
        fps = _parse_float(p, get["fps"], f"{where}: fps", positive=True) if get.get("fps") else math.nan
        if vid in raw.videos:
            known = raw.videos[vid]
            if known["subset"] != subset:
                raise InputError(p, f"{where}: subset {subset!r} but earlier rows say {known['subset']!r}")
            for key, val in (("duration", duration), ("fps", fps)):
                if not math.isnan(val):
                    if math.isnan(known[key]):
                        known[key] = val
                    elif abs(known[key] - val) > 1e-6:
                        raise InputError(p, f"{where}: {key} {val} but earlier rows say {known[key]}")
        raw.add_video(vid, duration, fps, subset)
        raw.add(vid, s, e, label, subset)
    return raw


def _apply_video_info(raw: _Raw, info_path: Path) -> None:
    """Fill missing subset / duration / fps of ``raw.videos`` from a CSV."""
    info = _read_info_csv(info_path)
    bare = {_strip_v(k): v for k, v in info.items()}
    unmatched = 0
    for vid, entry in raw.videos.items():
        row = info.get(vid) or bare.get(_strip_v(vid))
        if row is None:
            unmatched += 1
            continue
        if entry["subset"] == UNKNOWN_SUBSET and row.get("subset"):
            entry["subset"] = row["subset"]
        for key in ("duration", "fps"):
            if math.isnan(entry[key]) and not math.isnan(row.get(key, math.nan)):
                entry[key] = row[key]
    if unmatched:
        raw.notes.append(f"{unmatched} videos not found in {info_path.name}")
    subsets = {v: e["subset"] for v, e in raw.videos.items()}
    raw.instances = [(v, s, e, lab, subsets[v]) for v, s, e, lab, _ in raw.instances]
    raw.ambiguous = [(v, s, e, lab, subsets.get(v, sub)) for v, s, e, lab, sub in raw.ambiguous]


def _read_info_csv(p: Path) -> dict[str, dict[str, Any]]:
    try:
        text = p.read_bytes().decode("utf-8-sig")
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except OSError as exc:
        raise InputError(p, f"unreadable ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
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
        if not any(c.strip() for c in r):
            continue
        if len(r) != len(header):
            raise InputError(p, f"row {n}: {len(r)} fields, the header has {len(header)}")
        vid = r[vcol].strip()
        if header[vcol] == "filename":
            vid = re.sub(r"\.(mp4|mkv|webm|avi|mov|m4v|flv)$", "", vid, flags=re.I)
        rec: dict[str, Any] = {}
        if dcol is not None and r[dcol].strip():
            rec["duration"] = _parse_float(p, r[dcol], f"row {n} ({vid!r}): duration", positive=True)
        if fcol is not None and r[fcol].strip():
            rec["fps"] = _parse_float(p, r[fcol], f"row {n} ({vid!r}): fps", positive=True)
        if scol is not None and r[scol].strip():
            rec["subset"] = normalize_subset(r[scol])
        out[vid] = rec
    return out


# --------------------------------------------------------------------------- building
def _resolve_classes(p: Path, raw: _Raw, classes: Sequence[str] | str | Path | None) -> list[str]:
    labels = {rec[3] for rec in raw.instances}
    if classes is not None:
        names = load_class_list(classes) if isinstance(classes, (str, Path)) else [str(c) for c in classes]
        unknown = sorted(labels - set(names))
        if unknown:
            first = next(r for r in raw.instances if r[3] == unknown[0])
            raise InputError(p, f"label {unknown[0]!r} (video {first[0]!r}) is not in the class list "
                                f"({len(names)} classes)")
        return names
    ids = raw.label_ids
    if ids and set(ids) == labels and len(set(ids.values())) == len(ids):
        return sorted(labels, key=lambda lab: ids[lab])
    if raw.taxonomy and labels <= set(raw.taxonomy):
        return sorted(set(raw.taxonomy))
    return sorted(labels)


def _build(p: Path, raw: _Raw, classes: list[str], *, clip: bool) -> Annotations:
    report = LoadReport(notes=list(raw.notes))
    videos = pd.DataFrame.from_dict(raw.videos, orient="index", columns=["duration", "fps", "subset"])
    videos = videos.astype({"duration": np.float64, "fps": np.float64, "subset": object})
    videos.index.name = "video"
    videos = videos.sort_index()
    index = {c: i for i, c in enumerate(classes)}

    def table(records: list[tuple[str, float, float, str, str]], kind: str) -> pd.DataFrame:
        if not records:
            return pd.DataFrame({"video": pd.Series(dtype=object), "start": pd.Series(dtype=np.float64),
                                 "end": pd.Series(dtype=np.float64), "label": pd.Series(dtype=object),
                                 "subset": pd.Series(dtype=object)})
        vid, s, e, lab, sub = zip(*records)
        df = pd.DataFrame({"video": list(vid), "start": np.array(s, np.float64), "end": np.array(e, np.float64),
                           "label": list(lab), "subset": list(sub)})
        return _check_segments(df, videos["duration"], report if kind == "instances" else None, clip)

    inst = table(raw.instances, "instances")
    inst.insert(4, "label_idx", inst["label"].map(index).astype(np.int64))
    inst = inst[INSTANCE_COLUMNS].reset_index(drop=True)
    amb = table(raw.ambiguous, "ambiguous")[AMBIGUOUS_COLUMNS].reset_index(drop=True)
    if len(inst):
        dup = inst.duplicated(["video", "start", "end", "label"], keep="first")
        report.duplicates = _describe(inst[dup])
    return Annotations(inst, videos, list(classes), amb, str(p), report)


def _check_segments(df: pd.DataFrame, durations: pd.Series, report: LoadReport | None,
                    clip: bool) -> pd.DataFrame:
    """Drop inverted segments; clip to ``[0, duration]`` those that overlap the video.

    Instances that start at or after the stated duration are kept unchanged
    (the duration is the likelier error: THUMOS14 has 30 such instances) and
    reported as ``outside``.
    """
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


# --------------------------------------------------------------------------- field checks
def _mapping(p: Path, x: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(x, dict):
        raise InputError(p, f"{where}: expected an object, got {_kind(x)}")
    return x


def _sequence(p: Path, x: Any, where: str) -> list[Any]:
    if not isinstance(x, list):
        raise InputError(p, f"{where}: expected a list, got {_kind(x)}")
    return x


def _annotation_list(p: Path, entry: Mapping[str, Any], where: str) -> list[Any]:
    """An entry's ``annotations`` (missing or null means none)."""
    items = entry.get("annotations")
    return [] if items is None else _sequence(p, items, f"{where}.annotations")


def _video_id(p: Path, vid: Any, where: str) -> None:
    if not isinstance(vid, str) or not vid.strip():
        raise InputError(p, f"{where}: empty video id")


def _number(p: Path, x: Any, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise InputError(p, f"{where}: expected a number, got {_kind(x)}")
    try:
        v = float(x)
    except OverflowError:
        v = math.inf
    if not math.isfinite(v):
        raise InputError(p, f"{where}: expected a finite number, got {_short(x)}")
    return v


def _opt_number(p: Path, x: Any, where: str, positive: bool = False) -> float:
    if x is None:
        return math.nan
    if isinstance(x, str):  # some tools write numbers as strings
        return _parse_float(p, x, where, positive=positive)
    v = _number(p, x, where)
    if positive and v <= 0:
        raise InputError(p, f"{where}: must be positive, got {x!r}")
    return v


def _opt_str(p: Path, x: Any, where: str) -> str | None:
    if x is None or isinstance(x, str):
        return x
    raise InputError(p, f"{where}: expected a string, got {_kind(x)}")


def _segment(p: Path, x: Any, where: str) -> tuple[float, float]:
    if not isinstance(x, (list, tuple)) or len(x) != 2:
        raise InputError(p, f"{where}: expected [start, end] in seconds, got {_short(x)}")
    return _number(p, x[0], f"{where}[0]"), _number(p, x[1], f"{where}[1]")


def _label(p: Path, x: Any, where: str) -> str:
    if not isinstance(x, str) or not x.strip():
        raise InputError(p, f"{where}: expected a non-empty class name, got {_short(x)}")
    return x


def _parse_float(p: Path, text: str, where: str, positive: bool = False) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise InputError(p, f"{where}: expected a number, got {_short(text)}") from None
    if not math.isfinite(v):
        raise InputError(p, f"{where}: expected a finite number, got {_short(text)}")
    if positive and v <= 0:
        raise InputError(p, f"{where}: must be positive, got {_short(text)}")
    return v


def _taxonomy_leaves(p: Path, tax: Any) -> list[str]:
    nodes = _sequence(p, tax, "'taxonomy'")
    names, parents = [], set()
    for i, node in enumerate(nodes):
        node = _mapping(p, node, f"taxonomy[{i}]")
        name = node.get("nodeName")
        if isinstance(name, str):
            names.append(name)
        parent = node.get("parentName")
        if isinstance(parent, str):
            parents.add(parent)
    return [n for n in names if n not in parents]


def _kind(x: Any) -> str:
    return "null" if x is None else f"{type(x).__name__} {_short(x)}"


def _short(x: Any, limit: int = 40) -> str:
    text = repr(x)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _strip_v(vid: str) -> str:
    return vid[2:] if vid.startswith("v_") else vid


def _prefixer(prefix: str):
    if prefix == "":
        return _strip_v
    if prefix == "v_":
        return lambda vid: vid if vid.startswith("v_") else "v_" + vid
    raise ValueError(f"video_prefix must be '' (strip 'v_') or 'v_' (add it), got {prefix!r}")
