"""Ground truth and predictions for evaluation: containers, readers and the evaluation's input policy.

Everything is read into small column containers, :class:`GroundTruth` and
:class:`Predictions` (numpy arrays, times in seconds), in **file order**: the
official ActivityNet code breaks ties by the order in which it read the files,
so the order is part of the result.

Ground truth (:func:`load_ground_truth`) comes in every format the data stage
reads -- the readers live in :mod:`tadkit.data.formats` (ActivityNet / HACS /
ActionFormer JSON, a results-style JSON, BSN's JSON, the official THUMOS14
txt files or folder, CSV); ``Ambiguous`` annotations are kept apart in
:attr:`GroundTruth.ambiguous`. This module adds the evaluation's policy: one
subset chosen (a file without subsets is evaluated whole, with a note), no
clipping to durations, and inverted ground truth is an error.

Predictions (:func:`load_predictions`): the official results JSON and CSV
``video,start,end,label,score`` (``label`` may be absent for proposals). A
results JSON is decoded by msgspec straight into typed entries (two numbers
per segment, a number per score, a string or nothing per label), which checks
the types while it parses; the columns are then built without a Python loop
per entry. A file the typed decoder refuses (or msgspec missing) takes the
general path: the file parsed as plain JSON (:func:`tadkit.files.read_json`),
columns in bulk when the entries are well formed, else entry by entry, which
names the first offending entry. Both paths give the same arrays and the same
messages.

Policy for bad input (also in ``docs/evaluation.md``):

* unreadable or malformed files, missing keys, non-numeric or non-finite times
  or scores: :class:`~tadkit.errors.InputError` naming the file and the first
  offending entry; inverted ground truth (end < start) too;
* inverted *predicted* segments are kept and scored as the official code scores
  them (a false positive; a 0/0 tIoU counts as a match), with a note --
  ``reject_inverted=True`` makes them an error;
* zero-length segments are kept and evaluated exactly as the official code does;
  their count is reported;
* predictions whose label is not a ground-truth class are skipped and counted
  (the official code would crash on them);
* predictions on videos without ground truth count as false positives (official).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections import defaultdict
from itertools import chain, count
from operator import attrgetter, itemgetter, methodcaller
from pathlib import Path
from typing import Callable, Iterable, Literal, Optional, Sequence, Union

import numpy as np

from tadkit.data.formats import UNKNOWN_SUBSET, no_such_subset, normalize_subset, read_table
from tadkit.data.formats import checks as ck
from tadkit.data.formats.csvfile import read_rows
from tadkit.data.formats.table import objects
from tadkit.data.formats.thumos import read_segment_lines
from tadkit.errors import InputError
from tadkit.evaluate.arrays import member
from tadkit.files import BOM, gc_paused, read_json, read_text

try:  # typed decoding of results files; without it the general path reads them, slower
    import msgspec
except ImportError:  # pragma: no cover
    msgspec = None

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
        video = objects([str(r[0]) for r in rows])
        amb = list(ambiguous)
        gt = cls(video=video,
                 start=np.array([float(r[1]) for r in rows], dtype=np.float64),
                 end=np.array([float(r[2]) for r in rows], dtype=np.float64),
                 label=objects([str(r[3]) for r in rows]),
                 videos=list(dict.fromkeys(video.tolist())), source=source,
                 ambiguous=_segments(amb) if amb else None)
        _check_ground_truth(gt, lambda i: f"instance {rows[i]!r}")
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
    def from_records(cls, records: Iterable[tuple], source: str = "<memory>",
                     reject_inverted: bool = False) -> "Predictions":
        """Build from ``(video, start, end, label, score)`` tuples; ``label`` may be None."""
        rows = list(records)
        preds = cls(video=objects([str(r[0]) for r in rows]),
                    start=np.array([float(r[1]) for r in rows], dtype=np.float64),
                    end=np.array([float(r[2]) for r in rows], dtype=np.float64),
                    label=(None if rows and all(r[3] is None for r in rows)
                           else objects([str(r[3]) for r in rows])),
                    score=_score_array([r[4] for r in rows]), source=source)
        _check_predictions(preds, lambda i: f"prediction {rows[i]!r}", reject_inverted)
        return preds

    def select(self, keep: np.ndarray) -> "Predictions":
        """A copy with only the predictions where ``keep`` (P,) bool is true."""
        return Predictions(self.video[keep], self.start[keep], self.end[keep],
                           None if self.label is None else self.label[keep],
                           self.score[keep], self.source, list(self.notes))


# --------------------------------------------------------------------------- ground truth
def load_ground_truth(path: str | Path, subset: str | None = None,
                      ambiguous_file: str | Path | None = None, *, fmt: str = "auto",
                      video_info: str | Path | None = None) -> GroundTruth:
    """Read ground truth of ``subset`` (any spelling :func:`normalize_subset` knows).

    ``fmt``: any format of :data:`tadkit.data.formats.FORMATS` or ``"auto"``.
    ``subset=None`` keeps every video. A file without subsets (results-style
    JSON, CSV without a ``subset`` column, BSN without video info) ignores
    ``subset`` and says so in ``notes``. A subset that matches nothing is an
    :class:`InputError` listing the subsets the file has. ``ambiguous_file``:
    ``video start end`` lines (e.g. ``Ambiguous_test.txt``) added to the
    Ambiguous segments of the evaluated videos. ``video_info``: a CSV giving
    subsets (BSN) -- see :func:`tadkit.data.formats.read_table`.
    """
    table = read_table(path, fmt, video_info=video_info)
    notes = list(table.notes)
    videos = list(table.videos)
    counts = table.subset_counts()
    has_subsets = any(s != UNKNOWN_SUBSET for s in counts)
    chosen = None
    if subset is not None and has_subsets:
        chosen = normalize_subset(subset)
        if chosen not in counts:
            raise no_such_subset(table.source, [subset], counts)
        videos = [v for v, info in table.videos.items() if info["subset"] == chosen]
    elif subset is not None:
        notes.append(f"{Path(path).name} has no subsets: every video is evaluated ({subset!r} ignored)")
    keep = set(videos)
    inst = table.instances
    rows = inst.take(member(inst.video, keep)) if chosen is not None else inst
    amb = table.ambiguous
    amb = amb.take(member(amb.video, keep))
    amb_video, amb_start, amb_end = amb.video, amb.start, amb.end
    if len(amb):
        notes.append(f"{len(amb)} '{AMBIGUOUS_LABEL}' annotations kept apart from the classes")
    if ambiguous_file is not None:
        extra = load_segments(ambiguous_file)
        inside = member(extra.video, keep)
        amb_video = np.concatenate([amb_video, extra.video[inside]])
        amb_start = np.concatenate([amb_start, extra.start[inside]])
        amb_end = np.concatenate([amb_end, extra.end[inside]])
    gt = GroundTruth(video=rows.video, start=rows.start, end=rows.end, label=rows.label,
                     videos=videos, source=table.source, subset=chosen,
                     ambiguous=Segments(amb_video, amb_start, amb_end) if len(amb_video) else None,
                     durations={v: table.videos[v]["duration"] for v in videos
                                if not math.isnan(table.videos[v]["duration"])},
                     notes=notes)
    _check_ground_truth(gt, lambda i: f"instance {rows.describe(i)}")
    zero = int(np.count_nonzero(gt.start == gt.end))
    if zero:
        gt.notes.append(f"{zero} zero-length ground-truth segments kept (the official code counts them)")
    if ambiguous_file is not None:
        gt.notes.append(f"{int(inside.sum())} Ambiguous segments in the evaluated videos "
                        f"(from {ambiguous_file})")
    return gt


def load_segments(path: str | Path) -> Segments:
    """Read ``video start end`` lines (whitespace or comma separated; CRLF ok), e.g. Ambiguous_test.txt."""
    path = Path(path)
    lines = read_segment_lines(path)
    seg = _segments(lines)
    bad = np.flatnonzero(seg.end < seg.start)
    if bad.size:
        v, s, e = lines[bad[0]]
        raise InputError(path, f"segment {v} [{s:g}, {e:g}]: inverted segment (end < start)")
    return seg


def load_video_list(path: str | Path) -> list[str]:
    """Read a blocked/missing-video list: a JSON list of ids, or one id per line."""
    path = Path(path)
    text = read_text(path)
    if text.lstrip().startswith("["):
        data = read_json(path)
        bad = [x for x in data if not isinstance(x, str)]
        if bad:
            raise InputError(path, f"video ids must be strings, first offending entry: {bad[0]!r}")
        return list(data)
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


# --------------------------------------------------------------------------- predictions
def load_predictions(path: str | Path, require_label: bool = True,
                     reject_inverted: bool = False, classes: Sequence[str] | None = None
                     ) -> Predictions:
    """Read an official results JSON or a CSV ``video,start,end,label,score``.

    ``require_label=False`` (proposals) lets entries go without a label.
    ``reject_inverted``: an inverted segment (end < start) is an error instead
    of being scored as the official code scores it. ``classes``: the class names
    the labels are expected to be (the ground truth's): a results JSON whose
    labels are all among them decodes faster; any other label is read all the
    same (only slower).
    """
    path = Path(path)
    if path.suffix.lower() in (".csv", ".tsv"):
        preds, where = _read_pred_csv(path, require_label)
    else:
        # the parsed file is built and freed with the collector paused: no collection
        # ever walks its millions of objects (see tadkit.files.gc_paused)
        with gc_paused():
            preds, where = (_typed_results(path, require_label, classes)
                            or _general_results(path, require_label))
    _check_predictions(preds, where, reject_inverted)
    return preds


def _typed_results(path: Path, require_label: bool, classes: Sequence[str] | None = None):
    """``(Predictions, locator)`` of a results JSON decoded by msgspec into typed
    entries; None when msgspec is missing or refuses the file or anything is in
    doubt (the general path then reads it, and names what is wrong)."""
    if msgspec is None:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    view = memoryview(data)[len(BOM):] if data.startswith(BOM) else data
    results = None
    expected = tuple(dict.fromkeys(c for c in classes or () if type(c) is str))
    for labels in ([expected] if expected else []) + [None]:
        try:
            results = _results_decoder(labels).decode(view).results
            break
        except msgspec.ValidationError:  # a label outside ``classes``: any string next
            continue
        except (msgspec.DecodeError, ValueError, RecursionError):
            return None
    del view, data
    if results is None:
        return None
    entries = list(chain.from_iterable(results.values()))
    return _columns(path, results, len(entries), map(attrgetter("segment.start"), entries),
                    map(attrgetter("segment.end"), entries),
                    lambda: map(attrgetter("score"), entries), map(attrgetter("label"), entries),
                    require_label)


def _results_decoder(classes: tuple[str, ...] | None):
    """A msgspec decoder of official results files: ``results`` maps video ids to
    entries with two numbers per ``segment``, a number per ``score``, and a
    string, null or nothing per ``label`` -- one of ``classes`` when given (each
    label is then decoded as that very string object). Other keys are skipped."""
    label = Optional[Literal[classes]] if classes else Optional[str]
    segment = msgspec.defstruct("Segment", [("start", float), ("end", float)], array_like=True,
                                forbid_unknown_fields=True, gc=False)   # exactly [start, end]
    entry = msgspec.defstruct("ResultsEntry", [("segment", segment), ("score", Union[int, float]),
                                               ("label", label, None)], gc=False)
    return msgspec.json.Decoder(msgspec.defstruct("ResultsFile",
                                                  [("results", dict[str, list[entry]])], gc=False))


def _general_results(path: Path, require_label: bool):
    """``(Predictions, locator)`` of a results JSON parsed as plain JSON: columns in
    bulk when every entry is well formed, else entry by entry (which raises at the
    first malformed one)."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise InputError(path, "not a results file: expected a JSON object with a 'results' "
                               "key mapping video ids to lists of {'segment', 'score'"
                               + (", 'label'" if require_label else "") + "}")
    results = data["results"]
    return _fast_results(path, results, require_label) or _checked_results(path, results,
                                                                           require_label)


def _fast_results(path: Path, results: dict, require_label: bool):
    """Columns of a well-formed plain-JSON results dict without a Python loop per
    entry (``map`` and ``itemgetter`` run in C); None at the first doubt."""
    if not all(type(x) is list for x in results.values()):
        return None
    entries = list(chain.from_iterable(results.values()))
    try:  # entries that are not objects, or lack a key, raise here
        segs = list(map(itemgetter("segment"), entries))
        scores = list(map(itemgetter("score"), entries))
        labels = list(map(itemgetter("label") if require_label else methodcaller("get", "label"),
                          entries))
        # two numbers per segment: a list of another length, a string, an object or a
        # number fails one test
        if entries and not (set(map(len, segs)) == {2}
                            and set(map(type, chain.from_iterable(segs))) <= {int, float}
                            and set(map(type, scores)) <= {int, float}):
            return None
    except (KeyError, TypeError, AttributeError):
        return None
    return _columns(path, results, len(entries), map(itemgetter(0), segs), map(itemgetter(1), segs),
                    lambda: scores, labels, require_label)


def _columns(path: Path, results: dict, n: int, starts: Iterable, ends: Iterable,
             scores: Callable[[], Iterable], labels: Iterable, require_label: bool):
    """``(Predictions, locator)`` from the ``n`` entries of a results dict, in file
    order: segment ``starts`` and ``ends`` (numbers), ``scores()`` a fresh iterable
    of the scores (ints or floats), ``labels`` (anything: checked here). None when
    a label is not a non-empty string or an integer class id (``None`` allowed
    unless ``require_label``), or a number overflows a float."""
    # class codes in first-seen order, by one dictionary pass (labels repeat: few distinct)
    codes = defaultdict(count().__next__)
    code = np.fromiter(map(codes.__getitem__, labels), dtype=np.int64, count=n)
    names = list(codes)
    allowed = (str, int) if require_label else (str, int, type(None))
    if any(type(x) not in allowed or (type(x) is str and not x.strip()) for x in names):
        return None
    try:
        start = np.fromiter(starts, dtype=np.float64, count=n)
        end = np.fromiter(ends, dtype=np.float64, count=n)
        score = np.fromiter(scores(), dtype=np.float64, count=n)
    except OverflowError:           # an integer beyond a float's range
        return None
    if n and np.all(score == np.floor(score)):  # all integral: int64 if every score is an int
        score = _score_array(list(scores()))
    label = None
    if names != [None]:             # entries without a label (proposals) read as ""
        label = objects(["" if x is None else str(x) for x in names])[code]
    counts = np.fromiter(map(len, results.values()), dtype=np.int64, count=len(results))
    videos = list(results)
    video = np.repeat(objects(videos), counts)
    return (Predictions(video, start, end, label, score, str(path)),
            _entry_locator(videos, counts))


def _checked_results(path: Path, results: dict, require_label: bool):
    """Entry by entry, raising at the first malformed one."""
    rows, scores, places = [], [], []
    for vid, entries in results.items():
        where = f"results[{vid!r}]"
        for k, ent in enumerate(ck.sequence(path, entries, where)):
            place = f"{where}[{k}]"
            ent = ck.mapping(path, ent, place)
            s, e = ck.segment(path, ent, place)
            label = ck.label(path, ent, place, required=require_label)
            scores.append(ck.score(path, ent, place))
            rows.append((str(vid), s, e, label))
            places.append(place)
    return _from_rows(path, rows, scores), places.__getitem__


def _entry_locator(videos: list[str], counts: np.ndarray) -> Callable[[int], str]:
    """Maps a flat entry index back to ``results[video][k]`` (only used for messages)."""
    ends = np.cumsum(counts)

    def where(i: int) -> str:
        v = int(np.searchsorted(ends, i, side="right"))
        return f"results[{videos[v]!r}][{i - int(ends[v] - counts[v])}]"
    return where


def _read_pred_csv(path: Path, require_label: bool):
    need = ("video", "start", "end", "score") + (("label",) if require_label else ())
    col, table = read_rows(path, need, "video,start,end,label,score")
    rows, scores, places = [], [], []
    for n, r in table:
        get = {k: r[i] for k, i in col.items()}
        where = f"row {n} (video {get['video']!r})"
        s = ck.parse_float(path, get["start"], f"{where}: start")
        e = ck.parse_float(path, get["end"], f"{where}: end")
        raw = get["score"]
        try:
            value = int(raw) if raw.lstrip("+-").isdigit() else float(raw)
        except ValueError:
            raise InputError(path, f"{where}: score {raw!r} is not a number") from None
        scores.append(ck.score(path, {"score": value}, where))
        label = get.get("label")
        rows.append((get["video"], s, e, label if label else None))
        places.append(where)
    return _from_rows(path, rows, scores), places.__getitem__


def _from_rows(path: Path, rows: list[tuple], scores: list) -> Predictions:
    cols = list(zip(*rows)) if rows else [(), (), (), ()]
    labels = list(cols[3])
    label = None
    if not labels or any(x is not None for x in labels):
        label = objects(["" if x is None else x for x in labels])
    return Predictions(objects(list(cols[0])), np.array(cols[1], dtype=np.float64),
                       np.array(cols[2], dtype=np.float64), label, _score_array(scores), str(path))


# --------------------------------------------------------------------------- checks
def _check_ground_truth(gt: GroundTruth, where: Callable[[int], str]) -> None:
    bad = ck.first_nonfinite(gt.start, gt.end)
    if bad is not None:
        raise InputError(gt.source, f"{where(bad)}: segment is not finite")
    inv = np.flatnonzero(ck.inverted(gt.start, gt.end))
    if inv.size:
        raise InputError(gt.source, f"{where(inv[0])}: inverted segment (end {gt.end[inv[0]]:g} < "
                                    f"start {gt.start[inv[0]]:g})")


def _check_predictions(preds: Predictions, where: Callable[[int], str], reject_inverted: bool) -> None:
    if preds.score.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(preds.score))
        if bad.size:
            raise InputError(preds.source, f"{where(bad[0])}: score is {float(preds.score[bad[0]])!r} "
                                           "(NaN/inf scores cannot be ranked)")
    bad = ck.first_nonfinite(preds.start, preds.end)
    if bad is not None:
        raise InputError(preds.source, f"{where(bad)}: segment is not finite")
    inv = np.flatnonzero(ck.inverted(preds.start, preds.end))
    if inv.size:
        first = f"{where(inv[0])} [{preds.start[inv[0]]:g}, {preds.end[inv[0]]:g}]"
        if reject_inverted:
            raise InputError(preds.source, f"{first}: inverted segment (end < start)")
        more = ", ".join(f"{where(i)} [{preds.start[i]:g}, {preds.end[i]:g}]" for i in inv[1:3])
        preds.notes.append(f"{inv.size} inverted predicted segments kept: {first}"
                           + (f", {more}" if more else "") + (" ..." if inv.size > 3 else "")
                           + " (scored as the official code scores them; --reject-inverted refuses "
                             "them)")
    zero = int(np.count_nonzero(preds.end == preds.start))
    if zero:
        preds.notes.append(f"{zero} zero-length predicted segments kept (evaluated as the official "
                           "code does)")


def _score_array(scores: list) -> np.ndarray:
    """int64 when every score is an int (pandas would infer int64), float64 otherwise."""
    if scores and set(map(type, scores)) <= {int, np.int64}:
        try:
            return np.array(scores, dtype=np.int64)
        except OverflowError:
            pass
    return np.array(scores, dtype=np.float64)


def _segments(rows: list[tuple]) -> Segments:
    return Segments(objects([str(r[0]) for r in rows]),
                    np.array([float(r[1]) for r in rows], dtype=np.float64),
                    np.array([float(r[2]) for r in rows], dtype=np.float64))

