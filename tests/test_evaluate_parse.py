"""Fast readers and lookups of the evaluate stage == their plain counterparts.

* A results JSON read by the typed msgspec decoder gives the very arrays, notes
  and error messages of the plain path (the standard ``json`` module, entry by
  entry where needed) -- on generated files (hypothesis) and on every kind of
  bad input.
* ``read_json`` with msgspec == the standard library.
* Run-by-run lookups, the integer lookup table and the 16-bit stable sort ==
  per-element lookups and numpy's stable argsort.
* Proposals ranked by one 2-d ``np.argsort`` per proposal count == one 1-d
  ``np.argsort`` per video (the official order, ties included).
"""
from __future__ import annotations

import json
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tadkit.evaluate.io as evio
import tadkit.files as files
from tadkit.errors import InputError
from tadkit.evaluate import load_predictions
from tadkit.evaluate.arrays import distinct, encode, member, stable_argsort
from tadkit.evaluate.proposals import _rank_by_video


@contextmanager
def _without_msgspec():
    """The plain path everywhere: the standard ``json`` module, no typed decoding."""
    saved = evio.msgspec, files.msgspec
    evio.msgspec = files.msgspec = None
    try:
        yield
    finally:
        evio.msgspec, files.msgspec = saved


def _outcome(path, **kw):
    """What load_predictions makes of a file: its arrays, or its error message."""
    try:
        p = load_predictions(path, **kw)
    except InputError as exc:
        return "error", str(exc)
    return ("ok", p.video.tolist(), p.start.tobytes(), p.end.tobytes(),
            None if p.label is None else p.label.tolist(), p.score.dtype.str, p.score.tobytes(),
            p.notes)


def _same_both_ways(path, classes=None, **kw):
    with _without_msgspec():
        plain = _outcome(path, **kw)
    fast = _outcome(path, classes=classes, **kw)
    assert fast == plain
    return fast


# --------------------------------------------------------------------------- generated files
def _number_text(draw, integral_scores=False):
    if integral_scores:
        return str(draw(st.integers(-10**25, 10**25)))
    kind = draw(st.sampled_from(["repr", "decimal", "int", "short"]))
    if kind == "repr":
        return repr(draw(st.floats(allow_nan=False, allow_infinity=False)))
    if kind == "int":
        return str(draw(st.integers(-10**30, 10**30)))
    if kind == "short":
        return f"{draw(st.integers(0, 9999)) / 100:g}"
    sign = draw(st.sampled_from(["", "-"]))
    whole = draw(st.sampled_from(["0", str(draw(st.integers(1, 10**20)))]))
    frac = draw(st.text("0123456789", min_size=1, max_size=30))
    exp = draw(st.sampled_from(["", f"e{draw(st.integers(-330, 330))}",
                                f"E+{draw(st.integers(0, 30))}"]))
    return f"{sign}{whole}.{frac}{exp}"


LABELS = ['"Run"', '"Long Jump"', '"caf\\u00e9"', '"a\\"b"', '"\u00e9t\u00e9"', '3', '""', '" "',
          'null', '2.5', 'true']


@st.composite
def results_file(draw):
    """(JSON text, require_label): a results file, mostly well formed, written with
    the number formats, escapes, key orders and spacing that real files have."""
    require_label = draw(st.booleans())
    integral_scores = draw(st.integers(0, 4)) == 0
    sep = draw(st.sampled_from([(",", ":"), (", ", ": "), (",\n  ", " : ")]))
    bad = draw(st.integers(0, 3)) == 0          # some files with a few odd labels
    videos = []
    for vid in draw(st.lists(st.text(min_size=0, max_size=6), min_size=0, max_size=4, unique=True)):
        entries = []
        for _ in range(draw(st.integers(0, 5))):
            numbers = [_number_text(draw) for _ in range(draw(st.sampled_from([1, 3])) if bad
                                                           and draw(st.integers(0, 9)) == 0 else 2)]
            fields = {"segment": "[" + sep[0].join(numbers) + "]",
                      "score": _number_text(draw, integral_scores)}
            label = draw(st.sampled_from(LABELS if bad else LABELS[:3] + ["missing"]))
            if label != "missing" and (require_label or draw(st.booleans())):
                fields["label"] = label
            if draw(st.integers(0, 5)) == 0:
                fields["extra"] = '[1, {"x": null}, "y"]'
            keys = draw(st.permutations(list(fields)))
            entries.append("{" + sep[0].join(f'"{k}"{sep[1]}{fields[k]}' for k in keys) + "}")
        videos.append(f"{json.dumps(vid)}{sep[1]}[{sep[0].join(entries)}]")
    text = ('{"version"' + sep[1] + '"1.3"' + sep[0] + '"results"' + sep[1] + "{"
            + sep[0].join(videos) + "}" + sep[0] + '"external_data"' + sep[1] + "{}}")
    return text, require_label


@settings(max_examples=150, deadline=None)
@given(results_file(), st.sampled_from([None, ["Run"], ["Run", "Long Jump", "caf\u00e9", "Run"]]))
def test_typed_decoding_gives_the_plain_paths_arrays_notes_and_errors(tmp_path_factory, case, classes):
    text, require_label = case
    path = tmp_path_factory.mktemp("pred") / "pred.json"
    path.write_text(text, encoding="utf-8")
    _same_both_ways(path, classes=classes, require_label=require_label)


@pytest.mark.parametrize("text,require_label", [
    ('{"version": "1.3", "results": {"v1": [' + '{"label": "Run", "score": 0.5, "segment": [1, 2.5]}, '
     '{"segment": [0.25, 3], "score": 1, "label": "Jump", "extra": [null]}], "v2": []}, '
     '"external_data": {"used": true}}', True),
    ('\ufeff{"results": {"v1": [{"segment": [1, 2], "score": 0.5}]}}', False),
    ('{"results": {"v1": [{"segment": [1, 2], "score": 0.5, "label": null}, '
     '{"segment": [1, 2], "score": 2, "label": "x"}]}}', False),
    ('{"results": {}}', True),
])
def test_well_formed_files_take_the_typed_path(tmp_path, text, require_label):
    # the comparisons above only mean something if the typed decoder reads real files
    path = tmp_path / "pred.json"
    path.write_text(text, encoding="utf-8")
    assert evio._typed_results(path, require_label, ["Run"]) is not None
    assert _same_both_ways(path, require_label=require_label)[0] == "ok"


# --------------------------------------------------------------------------- bad input
ENTRY = '{"segment": [0, 1], "label": "A", "score": 0.5}'


def test_notes_name_entries_across_videos_without_predictions(tmp_path):
    # the column paths locate an entry from per-video counts; the entry-by-entry path keeps
    # every entry's name: both must name the same entries
    inverted = '{"segment": [5, 2], "label": "A", "score": 1}'
    path = tmp_path / "pred.json"
    path.write_text('{"results": {"a": [' + ENTRY + '], "b": [], "c": [' + ENTRY + ", " + inverted
                    + '], "d": [], "e": [' + inverted + "]}}")
    notes = load_predictions(path).notes
    assert "results['c'][1] [5, 2], results['e'][0] [5, 2]" in notes[0]
    results = json.loads(path.read_text())["results"]
    _, where = evio._checked_results(path, results, True)
    _, fast_where = evio._fast_results(path, results, True)
    assert [fast_where(i) for i in range(4)] == [where(i) for i in range(4)]


@pytest.mark.parametrize("text", [
    "{not json",
    '{"foo": {}}',
    '{"results": null}',
    '{"results": {"v": [{"segment": [0, 1], "label": "A"}]}}',
    '{"results": {"v": [{"segment": [0, 1], "label": "A", "score": NaN}]}}',
    '{"results": {"v": [{"segment": [0, 1], "label": "A", "score": Infinity}]}}',
    '{"results": {"v": [{"segment": [0, 1e400], "label": "A", "score": 1}]}}',
    '{"results": {"v": [{"segment": [0, 1], "label": "A", "score": 1e400}]}}',
    '{"results": {"v": [{"segment": [0, 1], "label": "A", "score": 1' + "0" * 400 + '}]}}',
    '{"results": {"v": [{"segment": [0, 1' + "0" * 400 + '], "label": "A", "score": 1}]}}',
    '{"results": {"v": [{"segment": [0, 1], "label": "A", "score": 1' + "0" * 4400 + '}]}}',
    '{"results": {"v": [{"segment": [0], "label": "A", "score": 1}]}}',
    '{"results": {"v": [{"segment": [0, 1, 2], "label": "A", "score": 1}]}}',
    '{"results": {"v": [{"segment": {"start": 0, "end": 1}, "label": "A", "score": 1}]}}',
    '{"results": {"v": [{"segment": [], "label": "A", "score": 1}]}}',
    '{"results": {"v": [{"segment": 5, "label": "A", "score": 1}]}}',
    '{"results": {"v": [{"segment": null, "label": "A", "score": 1}]}}',
    '{"results": {"v": [{"segment": "01", "label": "A", "score": 1}]}}',
    '{"results": {"v": [{"segment": [0, "x"], "label": "A", "score": 1}]}}',
    '{"results": {"v": [{"segment": ["0.5", 2], "label": "A", "score": 1}]}}',
    '{"results": {"v": [{"segment": [0, 1], "score": 1}]}}',
    '{"results": {"v": [{"segment": [0, 1], "label": null, "score": 1}]}}',
    '{"results": {"v": [{"segment": [0, 1], "label": "", "score": 1}]}}',
    '{"results": {"v": [{"segment": [0, 1], "label": "  ", "score": 1}]}}',
    '{"results": {"v": [{"segment": [0, 1], "label": true, "score": 1}]}}',
    '{"results": {"v": [{"segment": [0, 1], "label": 7, "score": 1}]}}',
    '{"results": {"v": [{"segment": [0, 1], "label": "A", "score": "high"}]}}',
    '{"results": {"v": [{"segment": [0, 1], "label": "A", "score": true}]}}',
    '{"results": {"v": [{"segment": [0, 1], "label": "A", "score": "x", "score": 2}]}}',
    '{"results": {"v": {"segment": [0, 1]}}}',
    '{"results": {"v": [3]}}',
    '{"results": {"v": [' + ENTRY + ', {"segment": [5, 2], "label": "A", "score": 1}]}}',
    '{"results": {"\\ud800": [' + ENTRY + ']}}',
    '{"results": {"v": [' + ENTRY + ']}, "results": {"w": [' + ENTRY + ']}}',
    '{"results": {"v": [' + ENTRY + '], "v": []}, "external_data": {"x": NaN}}',
    '\ufeff{"results": {"v": [' + ENTRY + ']}}',
    '{"results": {"v": [' + "[" * 3000 + "]" * 3000 + "]}}",
])
@pytest.mark.parametrize("require_label", [True, False])
def test_bad_or_odd_files_give_the_plain_paths_result(tmp_path, text, require_label):
    path = tmp_path / "pred.json"
    path.write_text(text, encoding="utf-8")
    _same_both_ways(path, classes=["A"], require_label=require_label)


def test_non_utf8_bytes_give_the_plain_paths_error(tmp_path):
    path = tmp_path / "pred.json"
    path.write_bytes(b'{"results": {"v\xff": [' + ENTRY.encode() + b"]}}")
    assert _same_both_ways(path)[0] == "error"


def test_integers_beyond_a_float_are_an_input_error_naming_the_entry(tmp_path):
    path = tmp_path / "pred.json"
    path.write_text('{"results": {"v": [' + ENTRY + ', {"segment": [0, 1], "label": "A", '
                    '"score": 1' + "0" * 400 + '}]}}')
    with pytest.raises(InputError, match=r"results\['v'\]\[1\].score: score 1000.*beyond a float"):
        load_predictions(path)


def test_labels_outside_the_expected_classes_are_read_all_the_same(tmp_path):
    path = tmp_path / "pred.json"
    path.write_text(json.dumps({"results": {"v": [
        {"segment": [0, 1], "label": "A", "score": 0.5},
        {"segment": [2, 3], "label": "Z", "score": 0.25}]}}))
    for classes in (None, ["A"], ["A", "Z"], ["Z", "A", "A"], [], [None, 3, "A"]):
        assert load_predictions(path, classes=classes).label.tolist() == ["A", "Z"]


def test_integer_scores_keep_int64_on_the_typed_path_and_mixed_ones_are_float(tmp_path):
    path = tmp_path / "pred.json"
    path.write_text('{"results": {"v": [' + ENTRY.replace("0.5", "2") + ", "
                    + ENTRY.replace("0.5", "-3") + "]}}")
    assert load_predictions(path).score.dtype == np.int64
    path.write_text('{"results": {"v": [' + ENTRY.replace("0.5", "2") + ", "
                    + ENTRY.replace("0.5", "3.0") + "]}}")
    s = load_predictions(path).score
    assert s.dtype == np.float64 and s.tolist() == [2.0, 3.0]


@pytest.mark.parametrize("text", [
    '{"a": 18446744073709551616, "b": -9223372036854775809, "c": -0, "d": -0.0}',
    '{"a": 1, "a": 2}', '[1e-400, 2.4703282292062328e-324, 1.7976931348623157e308]',
    '{"x": NaN}', '[1e400]', '"\\ud800"', "[1,]", "\ufeff[1]", "[" * 3000 + "]" * 3000,
    "1" * 4400, '{"s": "caf\\u00e9 \\"q\\""}',
])
def test_read_json_with_msgspec_equals_the_standard_library(tmp_path, text):
    path = tmp_path / "doc.json"
    path.write_text(text, encoding="utf-8")

    def read():
        try:
            return "ok", repr(files.read_json(path))
        except InputError as exc:
            return "error", str(exc)
    with _without_msgspec():
        plain = read()
    assert read() == plain


# --------------------------------------------------------------------------- lookups
@st.composite
def run_column(draw):
    """An object column of runs (lengths 1..3000) over a few ids, and some keys."""
    ids = [f"vid{i}" for i in range(draw(st.integers(1, 6)))]
    parts = draw(st.lists(st.tuples(st.sampled_from(ids), st.integers(1, 3000)), min_size=1,
                          max_size=12))
    values = np.empty(sum(n for _, n in parts), dtype=object)
    values[:] = [v for v, n in parts for _ in range(n)]
    keys = draw(st.lists(st.sampled_from(ids + ["other"]), unique=True))
    return values, keys


@settings(max_examples=60, deadline=None)
@given(run_column())
def test_run_by_run_lookups_equal_per_element_ones(case):
    values, keys = case
    index = {k: i for i, k in enumerate(keys)}
    assert encode(keys, values).tolist() == [index.get(v, -1) for v in values.tolist()]
    assert member(values, set(keys)).tolist() == [v in set(keys) for v in values.tolist()]
    assert distinct(values) == list(dict.fromkeys(values.tolist()))


def test_lookups_on_short_runs_and_mixed_columns():
    values = np.empty(20_000, dtype=object)
    values[:] = [f"x{i % 7}" for i in range(20_000)]          # runs of one: the per-element path
    values[5000:15000] = "same"
    keys = ["x3", "same", "nope"]
    assert encode(keys, values).tolist() == [{"x3": 0, "same": 1}.get(v, -1) for v in values]
    assert distinct(values) == list(dict.fromkeys(values.tolist()))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(-3000, 3000), unique=True, max_size=40),
       st.lists(st.integers(-3500, 3500), max_size=60), st.sampled_from([0, -2**40, 2**40]),
       st.sampled_from([1, 10**6]))
def test_integer_lookup_table_equals_binary_search(keys, others, shift, spread):
    # spread 1: a dense range (the table); 10**6: a sparse one (the binary search)
    k = np.array(keys, dtype=np.int64) * spread + shift
    v = np.array(keys[::2] + others, dtype=np.int64) * spread + shift
    index = {x: i for i, x in enumerate(k.tolist())}
    assert encode(k, v).tolist() == [index.get(x, -1) for x in v.tolist()]


@pytest.mark.parametrize("low,high", [(0, 200), (-1, 5000), (-(1 << 15), (1 << 15) - 1),
                                      (0, 1 << 15), (-(1 << 15) - 1, 10), (0, 1 << 40)])
def test_stable_argsort_equals_numpys(low, high):
    codes = np.random.default_rng(high).integers(low, high + 1, size=5000)
    codes[:2] = low, high
    assert np.array_equal(stable_argsort(codes), np.argsort(codes, kind="stable"))


# --------------------------------------------------------------------------- ranking
@pytest.mark.parametrize("dtype", [np.float64, np.int64])
def test_proposals_ranked_per_count_equal_one_argsort_per_video(dtype):
    rng = np.random.default_rng(3)
    counts = [1, 2, 16, 17, 40, 100, 100, 100, 129, 300, 0, 1000]
    video = np.repeat(np.arange(len(counts)), counts)
    rng.shuffle(video)                                     # videos interleaved in the file
    score = (np.round(rng.random(len(video)), 1) if dtype is np.float64
             else rng.integers(0, 5, len(video))).astype(dtype)
    order, got_counts = _rank_by_video(video, score, len(counts))
    assert got_counts.tolist() == counts
    expected = []
    for v in range(len(counts)):
        rows = np.flatnonzero(video == v)                 # this video's proposals in file order
        expected.extend(rows[score[rows].argsort()[::-1]].tolist())
    assert order.tolist() == expected
