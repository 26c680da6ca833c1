"""Ground truth and predictions for evaluation: readers, checks and id alignment.

Everything is read into two small column containers, :class:`GroundTruth` and
:class:`Predictions` (numpy arrays, times in seconds), in **file order**: the
official ActivityNet code breaks ties by the order in which it read the files,
so the order is part of the result.

Ground truth formats (:func:`load_ground_truth`):

* official ActivityNet / HACS JSON: ``{"database": {video: {"subset",
  "annotations": [{"segment": [s, e], "label"}]}}}`` (``taxonomy`` and
  ``version`` are not required);
* the THUMOS14 ActionFormer-style JSON (same ``database`` layout, subsets
  ``Validation`` / ``Test``); annotations labelled ``Ambiguous`` are kept apart
  in :attr:`GroundTruth.ambiguous`, and ``ambiguous_file`` (``video start end``
  per line, like ``Ambiguous_test.txt``) adds more;
* a results-style JSON used as ground truth (``{"results": {video: [{"segment",
  "label"}]}}``, e.g. ``sample_detection_prediction.json``); it has no subsets;
* CSV with a header ``video,start,end,label[,subset]``.

Prediction formats (:func:`load_predictions`): the official results JSON and CSV
``video,start,end,label,score`` (``label`` may be absent for proposals).

Policy for bad input (also in ``docs/evaluation.md``):

* unreadable or malformed files, missing keys, non-numeric or non-finite times
  or scores, inverted segments (end < start): :class:`~tadkit.errors.InputError`
  naming the file and the first offending entry;
* zero-length segments are kept and evaluated exactly as the official code does;
  their count is reported;
* predictions whose label is not a ground-truth class are skipped and counted
  (the official code would crash on them);
* predictions on videos without ground truth count as false positives (official).

Video ids: a prediction id that is not a ground-truth id but becomes one by
adding or removing a ``v_`` prefix is renamed (see :func:`align`), unless that
would merge it with a prediction id that matches exactly.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from tadkit.errors import InputError
from tadkit.files import read_json, read_text

#: canonical subset names; every spelling on the left maps to the right.
SUBSET_ALIASES: dict[str, str] = {
    "train": "training", "training": "training",
    "val": "validation", "valid": "validation", "validation": "validation",
    "test": "testing", "testing": "testing",
}

AMBIGUOUS_LABEL = "Ambiguous"


# --------------------------------------------------------------------------- containers
@dataclass
class Segments:
    """Ambiguous (or other unlabeled) segments: ``video`` ids, ``start``/``end`` (N,) seconds."""

    video: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.video)


@dataclass
class GroundTruth:
    """Ground-truth instances of one subset, in file order.

    ``video`` (N,) str, ``start``/``end`` (N,) float64 seconds, ``label`` (N,) str.
    ``videos`` lists every video of the subset (also those without instances)
    in file order; ``durations`` maps video -> seconds where the file has them.
    """

    video: np.ndarray
    start: np.ndarray
    end: np.ndarray
    label: np.ndarray
    videos: list[str]
    source: str = "<memory>"
    subset: str | None = None
    ambiguous: Segments | None = None
    durations: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.video)

    @property
    def labels(self) -> list[str]:
        """Classes in order of first appearance (the official class index order)."""
        return list(dict.fromkeys(self.label.tolist()))

    @classmethod
    def from_records(cls, records: Iterable[tuple], source: str = "<memory>",
                     ambiguous: Iterable[tuple] = ()) -> "GroundTruth":
        """Build from ``(video, start, end, label)`` tuples (seconds)."""
        rows = list(records)
        video = np.array([str(r[0]) for r in rows], dtype=object)
        amb = list(ambiguous)
        gt = cls(video=video,
                 start=np.array([float(r[1]) for r in rows], dtype=np.float64),
                 end=np.array([float(r[2]) for r in rows], dtype=np.float64),
                 label=np.array([str(r[3]) for r in rows], dtype=object),
                 videos=list(dict.fromkeys(video.tolist())), source=source,
                 ambiguous=_segments(amb) if amb else None)
        _check_segments(gt.start, gt.end, source, lambda i: f"instance {rows[i]!r}")
        return gt

    def select(self, keep: np.ndarray) -> "GroundTruth":
        """A copy with only the instances where ``keep`` (N,) bool is true."""
        return GroundTruth(self.video[keep], self.start[keep], self.end[keep], self.label[keep],
                           list(self.videos), self.source, self.subset, self.ambiguous,
                           dict(self.durations), list(self.notes))


@dataclass
class Predictions:
    """Predicted segments in file order.

    ``video`` (P,) str, ``start``/``end`` (P,) float64 seconds, ``label`` (P,) str
    or ``None`` (proposals), ``score`` (P,) int64 when every score in the file is
    an integer, float64 otherwise (the dtype the official pandas code would use;
    it decides how ``np.argsort`` orders equal scores).
    """

    video: np.ndarray
    start: np.ndarray
    end: np.ndarray
    label: np.ndarray | None
    score: np.ndarray
    source: str = "<memory>"
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.video)

    @classmethod
    def from_records(cls, records: Iterable[tuple], source: str = "<memory>") -> "Predictions":
        """Build from ``(video, start, end, label, score)`` tuples; ``label`` may be None."""
        rows = list(records)
        scores = [r[4] for r in rows]
        preds = cls(video=np.array([str(r[0]) for r in rows], dtype=object),
                    start=np.array([float(r[1]) for r in rows], dtype=np.float64),
                    end=np.array([float(r[2]) for r in rows], dtype=np.float64),
                    label=(None if rows and all(r[3] is None for r in rows)
                           else np.array([str(r[3]) for r in rows], dtype=object)),
                    score=_score_array(scores), source=source)
        _check_predictions(preds, lambda i: f"prediction {rows[i]!r}")
        return preds

    def select(self, keep: np.ndarray) -> "Predictions":
        """A copy with only the predictions where ``keep`` (P,) bool is true."""
        return Predictions(self.video[keep], self.start[keep], self.end[keep],
                           None if self.label is None else self.label[keep],
                           self.score[keep], self.source, list(self.notes))


@dataclass
class Alignment:
    """What :func:`align` did: counts for the report (never silent)."""

    renamed_ids: int = 0
    renamed_examples: list[str] = field(default_factory=list)
    prefix_conflicts: int = 0
    blocked_videos: int = 0
    blocked_ground_truth: int = 0
    blocked_predictions: int = 0
    unknown_label_predictions: int = 0
    unknown_labels: list[str] = field(default_factory=list)
    unknown_video_predictions: int = 0
    unknown_videos: int = 0

    def notes(self) -> list[str]:
        """Human-readable lines for everything that changed or was skipped."""
        out = []
        if self.renamed_ids:
            out.append(f"{self.renamed_ids} prediction video ids matched the ground truth only after "
                       f"adding/removing the 'v_' prefix (e.g. {', '.join(self.renamed_examples)})")
        if self.prefix_conflicts:
            out.append(f"{self.prefix_conflicts} prediction video ids were not renamed because both "
                       "forms (with and without 'v_') occur in the predictions")
        if self.blocked_videos:
            out.append(f"blocked list: {self.blocked_videos} videos excluded "
                       f"({self.blocked_ground_truth} ground-truth instances, "
                       f"{self.blocked_predictions} predictions)")
        if self.unknown_label_predictions:
            shown = ", ".join(repr(x) for x in self.unknown_labels[:5])
            out.append(f"skipped {self.unknown_label_predictions} predictions whose label is not a "
                       f"ground-truth class ({shown}{', ...' if len(self.unknown_labels) > 5 else ''})")
        if self.unknown_video_predictions:
            out.append(f"{self.unknown_video_predictions} predictions on {self.unknown_videos} videos "
                       "without ground truth count as false positives (official rule)")
        return out


# --------------------------------------------------------------------------- public readers
def load_ground_truth(path: str | Path, subset: str | None = None,
                      ambiguous_file: str | Path | None = None) -> GroundTruth:
    """Read ground truth of ``subset`` (any spelling in :data:`SUBSET_ALIASES`).

    ``subset=None`` keeps every video. A file without subsets (results-style JSON,
    CSV without a ``subset`` column) ignores ``subset`` and says so in ``notes``.
    A subset that matches nothing is an :class:`InputError` listing the subsets
    the file has.
    """
    path = Path(path)
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        rows, subsets, durations = _read_gt_csv(path)
    else:
        data = read_json(path)
        if isinstance(data, dict) and isinstance(data.get("database"), dict):
            rows, subsets, durations = _read_gt_database(path, data["database"])
        elif isinstance(data, dict) and isinstance(data.get("results"), dict):
            rows, subsets, durations = _read_gt_results(path, data["results"])
        else:
            raise InputError(path, "not a ground-truth file: expected a JSON object with a "
                                   "'database' (ActivityNet/HACS/THUMOS14) or 'results' key, or a CSV")
    gt = _build_ground_truth(path, rows, subsets, durations, subset)
    if ambiguous_file is not None:
        extra = load_segments(ambiguous_file)
        keep = np.isin(extra.video.astype(str), np.array(gt.videos, dtype=object).astype(str))
        extra = Segments(extra.video[keep], extra.start[keep], extra.end[keep])
        if gt.ambiguous is not None:
            extra = Segments(np.concatenate([gt.ambiguous.video, extra.video]),
                             np.concatenate([gt.ambiguous.start, extra.start]),
                             np.concatenate([gt.ambiguous.end, extra.end]))
        gt.ambiguous = extra
        gt.notes.append(f"{len(extra)} Ambiguous segments in the evaluated videos "
                        f"(from {ambiguous_file})")
    return gt


def load_predictions(path: str | Path, require_label: bool = True) -> Predictions:
    """Read an official results JSON or a CSV ``video,start,end,label,score``.

    ``require_label=False`` (proposals) lets entries go without a label.
    """
    path = Path(path)
    if path.suffix.lower() in (".csv", ".tsv"):
        columns, scores, where = _read_pred_csv(path, require_label)
    else:
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
            raise InputError(path, "not a results file: expected a JSON object with a 'results' "
                                   "key mapping video ids to lists of {'segment', 'score'"
                                   + (", 'label'" if require_label else "") + "}")
        columns, scores, where = _read_pred_results(path, data["results"], require_label)
    videos, starts, ends, labels = columns
    video = np.empty(len(videos), dtype=object)
    video[:] = videos
    label = None
    if not labels or any(x is not None for x in labels):
        label = np.empty(len(labels), dtype=object)
        label[:] = ["" if x is None else x for x in labels]
    preds = Predictions(video=video, start=np.array(starts, dtype=np.float64),
                        end=np.array(ends, dtype=np.float64), label=label,
                        score=_score_array(scores), source=str(path))
    _check_predictions(preds, where)
    zero = int(np.count_nonzero(preds.end == preds.start))
    if zero:
        preds.notes.append(f"{zero} zero-length predicted segments kept (evaluated as the official "
                           "code does)")
    return preds


def load_segments(path: str | Path) -> Segments:
    """Read ``video start end`` lines (whitespace or comma separated; CRLF ok), e.g. Ambiguous_test.txt."""
    path = Path(path)
    videos, starts, ends = [], [], []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        parts = line.replace(",", " ").split()
        if not parts or parts[0].startswith("#"):
            continue
        if lineno == 1 and parts[:1] == ["video"]:
            continue
        if len(parts) < 3:
            raise InputError(path, f"line {lineno}: expected 'video start end', got {line.strip()!r}")
        try:
            s, e = float(parts[1]), float(parts[2])
        except ValueError:
            raise InputError(path, f"line {lineno}: start/end are not numbers: {line.strip()!r}") from None
        videos.append(parts[0]); starts.append(s); ends.append(e)
    seg = _segments(list(zip(videos, starts, ends)))
    _check_segments(seg.start, seg.end, path, lambda i: f"line with {videos[i]} {starts[i]} {ends[i]}")
    return seg


def load_video_list(path: str | Path) -> list[str]:
    """Read a blocked/missing-video list: a JSON list of ids, or one id per line."""
    path = Path(path)
    text = read_text(path)
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"malformed JSON list ({exc.msg} at line {exc.lineno})") from None
        bad = [x for x in data if not isinstance(x, str)]
        if bad:
            raise InputError(path, f"video ids must be strings, first offending entry: {bad[0]!r}")
        return list(data)
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def normalize_subset(name: str) -> str:
    """Canonical subset name: ``Validation``/``val`` -> ``validation`` etc."""
    key = str(name).strip().lower()
    return SUBSET_ALIASES.get(key, key)


def align(gt: GroundTruth, preds: Predictions, blocked: Sequence[str] = (),
          match_v_prefix: bool = True, labelled: bool = True
          ) -> tuple[GroundTruth, Predictions, Alignment]:
    """Match prediction video ids to ground truth, drop blocked videos and unknown labels.

    * ``v_`` policy (``match_v_prefix``): a prediction id absent from the ground
      truth whose other form (``v_`` added or removed) is a ground-truth id is
      renamed to it -- unless the other form also occurs in the predictions,
      which would merge two videos (counted as a conflict, not renamed).
    * ``blocked``: those videos (either form) leave ground truth and predictions,
      as the official code does with its blocked list.
    * ``labelled``: predictions whose label is not a ground-truth class are dropped
      and counted.
    Returns new containers and an :class:`Alignment` with every count.
    """
    report = Alignment()
    gt_ids = set(gt.videos) | set(gt.video.tolist())
    video = preds.video.copy()
    if match_v_prefix and len(video):
        pred_ids = set(video.tolist())
        mapping = {}
        for vid in pred_ids - gt_ids:
            other = vid[2:] if vid.startswith("v_") else "v_" + vid
            if other in gt_ids:
                if other in pred_ids:
                    report.prefix_conflicts += 1
                else:
                    mapping[vid] = other
        if mapping:
            report.renamed_ids = len(mapping)
            report.renamed_examples = [f"{k} -> {v}" for k, v in sorted(mapping.items())[:3]]
            video = np.array([mapping.get(v, v) for v in video.tolist()], dtype=object)
    preds = Predictions(video, preds.start, preds.end, preds.label, preds.score,
                        preds.source, list(preds.notes))
    if blocked:
        block = set()
        for vid in blocked:
            block.add(vid)
            if match_v_prefix:
                block.add(vid[2:] if vid.startswith("v_") else "v_" + vid)
        report.blocked_videos = len(set(gt.videos) & block)
        gkeep = ~_member(gt.video, block)
        pkeep = ~_member(preds.video, block)
        report.blocked_ground_truth = int((~gkeep).sum())
        report.blocked_predictions = int((~pkeep).sum())
        gt = gt.select(gkeep)
        gt.videos = [v for v in gt.videos if v not in block]
        if gt.ambiguous is not None:
            akeep = ~_member(gt.ambiguous.video, block)
            gt.ambiguous = Segments(gt.ambiguous.video[akeep], gt.ambiguous.start[akeep],
                                    gt.ambiguous.end[akeep])
        preds = preds.select(pkeep)
    if labelled:
        if preds.label is None:
            raise InputError(preds.source, "predictions have no 'label'; detection needs one per "
                                           "entry (use --task proposal for class-agnostic proposals)")
        known = _member(preds.label, set(gt.label.tolist()))
        if not known.all():
            report.unknown_label_predictions = int((~known).sum())
            report.unknown_labels = list(dict.fromkeys(preds.label[~known].tolist()))
            preds = preds.select(known)
    unknown = ~_member(preds.video, set(gt.video.tolist()))
    report.unknown_video_predictions = int(unknown.sum())
    report.unknown_videos = len(set(preds.video[unknown].tolist()))
    return gt, preds, report


def _member(values: np.ndarray, pool: set) -> np.ndarray:
    """(N,) bool: ``values[i] in pool`` (hashed lookups)."""
    import pandas as pd

    if len(values) == 0 or not pool:
        return np.zeros(len(values), dtype=bool)
    index = pd.Index(list(pool), dtype=object)
    return index.get_indexer(np.asarray(values, dtype=object)) >= 0


# --------------------------------------------------------------------------- format readers
def _read_gt_database(path: Path, database: dict):
    rows, subsets, durations = [], {}, {}
    for vid, entry in database.items():
        where = f"database[{vid!r}]"
        if not isinstance(entry, dict):
            raise InputError(path, f"{where} is not an object")
        sub = entry.get("subset")
        subsets[str(vid)] = None if sub is None else str(sub)
        dur = entry.get("duration", entry.get("duration_second"))
        if isinstance(dur, (int, float)) and not isinstance(dur, bool):
            durations[str(vid)] = float(dur)
        anns = entry.get("annotations", [])
        if not isinstance(anns, list):
            raise InputError(path, f"{where}['annotations'] is not a list")
        for k, ann in enumerate(anns):
            s, e = _segment(path, ann, f"{where}['annotations'][{k}]")
            label = _label(path, ann, f"{where}['annotations'][{k}]", required=True)
            rows.append((str(vid), s, e, label))
    return rows, subsets, durations


def _read_gt_results(path: Path, results: dict):
    rows, subsets = [], {}
    for vid, entries in results.items():
        where = f"results[{vid!r}]"
        if not isinstance(entries, list):
            raise InputError(path, f"{where} is not a list")
        subsets[str(vid)] = None
        for k, ann in enumerate(entries):
            s, e = _segment(path, ann, f"{where}[{k}]")
            rows.append((str(vid), s, e, _label(path, ann, f"{where}[{k}]", required=True)))
    return rows, subsets, {}


def _read_gt_csv(path: Path):
    table = _read_csv(path, required=("video", "start", "end", "label"))
    rows, subsets = [], {}
    for lineno, rec in table:
        where = f"line {lineno}"
        s, e = _number(path, rec["start"], f"{where} start"), _number(path, rec["end"], f"{where} end")
        vid = rec["video"].strip()
        if not vid:
            raise InputError(path, f"{where}: empty video id")
        subsets.setdefault(vid, rec.get("subset") or None)
        rows.append((vid, s, e, rec["label"]))
    return rows, subsets, {}


def _read_pred_results(path: Path, results: dict, require_label: bool):
    """Fast path for well-formed files; any doubt re-reads entry by entry, which
    raises an InputError naming the first offending entry."""
    vids, starts, ends, labels, scores = [], [], [], [], []
    try:
        for vid, entries in results.items():
            if not isinstance(entries, list):
                raise TypeError
            for ent in entries:
                s, e = ent["segment"]
                starts.append(s)
                ends.append(e)
                labels.append(ent.get("label"))
                scores.append(ent["score"])
            vids.extend([str(vid)] * len(entries))
        numeric = {int, float}
        ok = ({type(x) for x in starts} <= numeric and {type(x) for x in ends} <= numeric
              and {type(x) for x in scores} <= numeric)
        label_types = {type(x) for x in labels}
        ok = ok and label_types <= ({str, int} if require_label else {str, int, type(None)})
    except (TypeError, KeyError, ValueError, AttributeError):
        ok = False
    if not ok:
        return _read_pred_results_checked(path, results, require_label)
    if int in label_types:
        labels = [None if x is None else str(x) for x in labels]
    return (vids, starts, ends, labels), scores, _entry_locator(results)


def _entry_locator(results: dict):
    """Maps a flat entry index back to ``results[video][k]`` (only used for messages)."""
    def where(i: int) -> str:
        for vid, entries in results.items():
            if i < len(entries):
                return f"results[{vid!r}][{i}]"
            i -= len(entries)
        return f"entry {i}"
    return where


def _read_pred_results_checked(path: Path, results: dict, require_label: bool):
    rows, scores, places = [], [], []
    for vid, entries in results.items():
        where = f"results[{vid!r}]"
        if not isinstance(entries, list):
            raise InputError(path, f"{where} is not a list")
        for k, ent in enumerate(entries):
            place = f"{where}[{k}]"
            s, e = _segment(path, ent, place)
            label = _label(path, ent, place, required=require_label)
            if "score" not in ent:
                raise InputError(path, f"{place} has no 'score'")
            scores.append(_score(path, ent["score"], place))
            rows.append((str(vid), s, e, label))
            places.append(place)
    return _columns(rows), scores, lambda i: places[i]


def _columns(rows: list[tuple]) -> tuple[list, list, list, list]:
    """Rows (video, start, end, label) -> four column lists."""
    if not rows:
        return [], [], [], []
    return tuple(list(col) for col in zip(*rows))


def _read_pred_csv(path: Path, require_label: bool):
    need = ("video", "start", "end", "score") + (("label",) if require_label else ())
    rows, scores, places = [], [], []
    for lineno, rec in _read_csv(path, required=need):
        where = f"line {lineno}"
        s, e = _number(path, rec["start"], f"{where} start"), _number(path, rec["end"], f"{where} end")
        raw = rec["score"].strip()
        try:
            score = int(raw) if raw.lstrip("+-").isdigit() else float(raw)
        except ValueError:
            raise InputError(path, f"{where}: score {raw!r} is not a number") from None
        scores.append(_score(path, score, where))
        label = rec.get("label")
        rows.append((rec["video"].strip(), s, e, label if label not in (None, "") else None))
        places.append(where)
    return _columns(rows), scores, lambda i: places[i]


def _build_ground_truth(path: Path, rows, subsets, durations, subset) -> GroundTruth:
    notes = []
    has_subsets = any(v is not None for v in subsets.values())
    if subset is not None and has_subsets:
        want = normalize_subset(subset)
        chosen = {v for v, s in subsets.items() if s is not None and normalize_subset(s) == want}
        if not chosen:
            found = sorted({s for s in subsets.values() if s is not None})
            raise InputError(path, f"subset {subset!r} matches no video; the file has subsets "
                                   f"{', '.join(repr(s) for s in found)}")
        videos = [v for v in subsets if v in chosen]
    else:
        if subset is not None:
            notes.append(f"{path.name} has no subsets: every video is evaluated ({subset!r} ignored)")
        videos = list(subsets)
    keep = set(videos)
    rows = [r for r in rows if r[0] in keep]
    amb = [r for r in rows if r[3] == AMBIGUOUS_LABEL]
    rows = [r for r in rows if r[3] != AMBIGUOUS_LABEL]
    gt = GroundTruth(
        video=np.array([r[0] for r in rows], dtype=object),
        start=np.array([r[1] for r in rows], dtype=np.float64),
        end=np.array([r[2] for r in rows], dtype=np.float64),
        label=np.array([r[3] for r in rows], dtype=object),
        videos=videos, source=str(path),
        subset=normalize_subset(subset) if subset is not None and has_subsets else None,
        ambiguous=_segments([(r[0], r[1], r[2]) for r in amb]) if amb else None,
        durations={v: d for v, d in durations.items() if v in keep}, notes=notes)
    _check_segments(gt.start, gt.end, path,
                    lambda i: f"instance of video {rows[i][0]!r} {list(rows[i][1:3])} ({rows[i][3]})")
    zero = int(np.count_nonzero(gt.start == gt.end))
    if zero:
        gt.notes.append(f"{zero} zero-length ground-truth segments kept (the official code counts them)")
    if amb:
        gt.notes.append(f"{len(amb)} '{AMBIGUOUS_LABEL}' annotations kept apart from the classes")
    return gt


# --------------------------------------------------------------------------- field checks
def _segment(path: Path, entry, where: str) -> tuple[float, float]:
    if not isinstance(entry, dict):
        raise InputError(path, f"{where} is not an object")
    seg = entry.get("segment")
    if seg is None:
        raise InputError(path, f"{where} has no 'segment'")
    if not isinstance(seg, (list, tuple)) or len(seg) != 2:
        raise InputError(path, f"{where}['segment'] must be [start, end], got {seg!r}")
    return _number(path, seg[0], f"{where}['segment'][0]"), _number(path, seg[1], f"{where}['segment'][1]")


def _label(path: Path, entry, where: str, required: bool):
    if "label" not in entry:
        if required:
            raise InputError(path, f"{where} has no 'label'")
        return None
    label = entry["label"]
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise InputError(path, f"{where}['label'] must be a string, got {label!r}")
    return str(label)


def _number(path: Path, value, where: str) -> float:
    if isinstance(value, bool):
        raise InputError(path, f"{where} is not a number: {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InputError(path, f"{where} is not a number: {value!r}") from None
    if not math.isfinite(out):
        raise InputError(path, f"{where} is not finite: {value!r}")
    return out


def _score(path: Path, value, where: str):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(path, f"{where}: score must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(path, f"{where}: score is {value!r} (NaN/inf scores cannot be ranked)")
    return value


def _score_array(scores: list) -> np.ndarray:
    """int64 when every score is an int (pandas would infer int64), float64 otherwise."""
    if scores and {type(s) for s in scores} <= {int, np.int64}:
        try:
            return np.array(scores, dtype=np.int64)
        except OverflowError:
            pass
    arr = np.array(scores, dtype=np.float64)
    return arr


def _check_predictions(preds: Predictions, where) -> None:
    if preds.score.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(preds.score))
        if bad.size:
            raise InputError(preds.source, f"{where(bad[0])}: score is {float(preds.score[bad[0]])!r} "
                                           "(NaN/inf scores cannot be ranked)")
    _check_segments(preds.start, preds.end, preds.source, where)


def _check_segments(start: np.ndarray, end: np.ndarray, path, where) -> None:
    bad = np.flatnonzero(~(np.isfinite(start) & np.isfinite(end)))
    if bad.size:
        raise InputError(path, f"{where(bad[0])}: segment is not finite")
    bad = np.flatnonzero(end < start)
    if bad.size:
        raise InputError(path, f"{where(bad[0])}: inverted segment (end {end[bad[0]]} < start "
                               f"{start[bad[0]]})")


def _segments(rows: list[tuple]) -> Segments:
    return Segments(np.array([str(r[0]) for r in rows], dtype=object),
                    np.array([float(r[1]) for r in rows], dtype=np.float64),
                    np.array([float(r[2]) for r in rows], dtype=np.float64))


# --------------------------------------------------------------------------- raw file access
def _read_csv(path: Path, required: Sequence[str]):
    text = read_text(path)
    lines = text.splitlines()
    if not lines:
        raise InputError(path, "empty CSV file")
    delim = "\t" if "\t" in lines[0] and "," not in lines[0] else ","
    reader = csv.DictReader(lines, delimiter=delim)
    fields = [f.strip() for f in (reader.fieldnames or [])]
    reader.fieldnames = fields
    missing = [c for c in required if c not in fields]
    if missing:
        raise InputError(path, f"CSV header lacks column(s) {', '.join(missing)} "
                               f"(expected {','.join(required)}; found {','.join(fields)})")
    out = []
    for lineno, rec in enumerate(reader, 2):
        if any(rec.get(c) is None for c in required):
            raise InputError(path, f"line {lineno}: too few fields")
        out.append((lineno, {k: (v.strip() if isinstance(v, str) else v) for k, v in rec.items()}))
    return out
