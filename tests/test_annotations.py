"""Annotation loaders: real THUMOS14 / ActivityNet files, the generic CSV, malformed input."""
from __future__ import annotations

import json
import math
import shutil
import warnings
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tadkit.data.annotations import (AnnotationWarning, Annotations, detect_format, load_annotations,
                                     load_class_list, normalize_subset)
from tadkit.errors import InputError

# Instances per class, from the data README (Ambiguous excluded).
THUMOS_TEST_PER_CLASS = {
    "BaseballPitch": 41, "BasketballDunk": 488, "Billiards": 106, "CleanAndJerk": 98, "CliffDiving": 217,
    "CricketBowling": 138, "CricketShot": 170, "Diving": 388, "FrisbeeCatch": 48, "GolfSwing": 36,
    "HammerThrow": 242, "HighJump": 135, "JavelinThrow": 169, "LongJump": 142, "PoleVault": 399,
    "Shotput": 144, "SoccerPenalty": 48, "TennisSwing": 141, "ThrowDiscus": 88, "VolleyballSpiking": 120}
THUMOS_VAL_PER_CLASS = {
    "BaseballPitch": 30, "BasketballDunk": 303, "Billiards": 81, "CleanAndJerk": 42, "CliffDiving": 143,
    "CricketBowling": 178, "CricketShot": 181, "Diving": 499, "FrisbeeCatch": 103, "GolfSwing": 31,
    "HammerThrow": 199, "HighJump": 271, "JavelinThrow": 192, "LongJump": 163, "PoleVault": 120,
    "Shotput": 70, "SoccerPenalty": 66, "TennisSwing": 69, "ThrowDiscus": 120, "VolleyballSpiking": 146}


def quiet_load(*args, **kwargs) -> Annotations:
    kwargs.setdefault("warn", False)
    return load_annotations(*args, **kwargs)


@pytest.fixture(scope="module")
def thumos(shared_data):
    return quiet_load(shared_data / "thumos14.json", ambiguous=shared_data / "Ambiguous_test.txt")


@pytest.fixture(scope="module")
def anet_bsn(shared_data):
    return quiet_load(shared_data / "anet_anno_action.json")


# --------------------------------------------------------------------------- THUMOS14
def test_thumos14_json_counts_per_subset(thumos):
    val, test = thumos.subset("validation"), thumos.subset("test")
    assert (len(val.videos), len(val)) == (200, 3007)
    assert (len(test.videos), len(test)) == (212, 3358)
    assert Counter(val.instances["label"]) == THUMOS_VAL_PER_CLASS
    assert Counter(test.instances["label"]) == THUMOS_TEST_PER_CLASS
    assert thumos.subsets() == {"testing": 212, "validation": 200}


def test_thumos14_classes_follow_detclasslist(thumos, shared_data):
    assert thumos.classes == load_class_list(shared_data / "detclasslist.txt")
    assert len(thumos.classes) == 20 and "Ambiguous" not in thumos.classes
    idx = thumos.instances["label"].map({c: i for i, c in enumerate(thumos.classes)})
    assert (idx == thumos.instances["label_idx"]).all()


def test_thumos14_ambiguous_kept_apart(thumos):
    amb = thumos.ambiguous
    assert len(amb) == 99 and amb["video"].nunique() == 37
    assert set(amb["subset"]) == {"testing"}
    assert "Ambiguous" not in set(thumos.instances["label"])
    # the test video with only Ambiguous instances is not a listed video, yet its rows stay
    assert "video_test_0001292" not in thumos.videos.index
    assert (thumos.subset("test").ambiguous["video"] == "video_test_0001292").any()
    assert len(thumos.subset("val").ambiguous) == 0
    assert thumos.ambiguous_of("video_test_0000278").tolist()[:2] == [[0.0, 1.4], [95.7, 97.2]]


def test_thumos14_cliffdiving_instances_are_also_diving(thumos):
    inst = thumos.instances
    cliff = inst[inst["label"] == "CliffDiving"][["video", "start", "end"]]
    diving = set(map(tuple, inst[inst["label"] == "Diving"][["video", "start", "end"]].itertuples(index=False)))
    assert len(cliff) == 143 + 217
    assert all(tuple(row) in diving for row in cliff.itertuples(index=False))


def test_thumos14_instances_past_the_duration_are_reported_not_dropped(thumos):
    assert len(thumos.report.outside) == 30
    assert any(s.startswith("video_test_0000270") for s in thumos.report.outside)
    with pytest.warns(AnnotationWarning, match="30 instances starting after the stated duration"):
        load_annotations(thumos.source)


def test_thumos14_official_txt_folder_matches_the_json(thumos, shared_data, tmp_path):
    # Write the official per-class layout from the JSON, then read it back independently.
    folder = tmp_path / "th14"
    folder.mkdir()
    test = thumos.subset("test")
    for label, rows in test.instances.groupby("label"):
        lines = [f"{v} {s:.1f} {e:.1f}" for v, s, e in rows[["video", "start", "end"]].itertuples(index=False)]
        (folder / f"{label}_test.txt").write_text("\r\n".join(lines) + "\r\n")
    shutil.copy(shared_data / "Ambiguous_test.txt", folder)
    shutil.copy(shared_data / "detclasslist.txt", folder)
    assert detect_format(folder) == "thumos-folder"
    loaded = quiet_load(folder)
    assert loaded.classes == thumos.classes
    key = ["video", "start", "end", "label"]
    a = test.instances[key].sort_values(key).reset_index(drop=True)
    b = loaded.instances[key].sort_values(key).reset_index(drop=True)
    assert a["video"].tolist() == b["video"].tolist() and a["label"].tolist() == b["label"].tolist()
    np.testing.assert_allclose(a[["start", "end"]], b[["start", "end"]], atol=1e-9)
    assert len(loaded.ambiguous) == 99 and set(loaded.subsets()) == {"testing"}
    assert loaded.videos["duration"].isna().all()  # the txt files carry no durations


# --------------------------------------------------------------------------- ActivityNet
def test_bsn_file_subsets_match_video_info(anet_bsn, shared_data):
    s = anet_bsn.summary()["subsets"]
    assert (s["training"]["videos"], s["training"]["instances"], s["training"]["classes"]) == (9649, 14859, 200)
    assert (s["validation"]["videos"], s["validation"]["instances"], s["validation"]["classes"]) == (4728, 7293, 200)
    assert (s["testing"]["videos"], s["testing"]["instances"]) == (4851, 0)
    assert set(anet_bsn.classes) == set(load_class_list(shared_data / "action_name.csv"))
    assert all(v.startswith("v_") for v in anet_bsn.videos.index)


def test_results_file_is_the_validation_ground_truth(shared_data):
    # clip=False: the evaluation needs the official segments, not ones cut to measured durations
    gt = quiet_load(shared_data / "sample_detection_prediction.json",
                    video_info=shared_data / "activitynet_v1-3_valid_metadata.csv", clip=False)
    assert detect_format(shared_data / "sample_detection_prediction.json") == "activitynet-results"
    assert (len(gt.videos), len(gt), len(gt.classes)) == (4926, 7654, 200)
    assert gt.subsets() == {"validation": 4926}
    assert len(gt.report.zero_length) == 3
    assert {z.split()[0] for z in gt.report.zero_length} == {"QhiKgeJV3k0", "e6J_ygZ779A", "6kgJx6ahgq0"}
    assert not gt.videos["duration"].isna().any()  # filled from the metadata CSV (v_ prefix ignored)
    # the BSN val set, with the v_ prefix stripped, has bit-identical segments and labels
    bsn_val = quiet_load(shared_data / "anet_anno_action.json", clip=False, video_prefix="").subset("val")
    assert set(bsn_val.video_ids()) < set(gt.video_ids())
    key = ["video", "start", "end", "label"]
    a = bsn_val.instances[key].sort_values(key).reset_index(drop=True)
    b = gt.instances[gt.instances["video"].isin(bsn_val.video_ids())][key].sort_values(key).reset_index(drop=True)
    assert a.equals(b)


def test_video_prefix_option_adds_and_strips(shared_data, tmp_path):
    doc = {"database": {"abc": {"subset": "validation", "duration": 10.0,
                                "annotations": [{"segment": [1, 2], "label": "x"}]}}}
    p = tmp_path / "gt.json"
    p.write_text(json.dumps(doc))
    assert quiet_load(p, video_prefix="v_").video_ids() == ["v_abc"]
    assert quiet_load(p, video_prefix="v_").with_video_prefix("").video_ids() == ["abc"]
    assert quiet_load(p).segments_of("abc")[0].tolist() == [[1.0, 2.0]]


def test_official_json_with_taxonomy_round_trips_through_to_activitynet(thumos, tmp_path):
    p = tmp_path / "out.json"
    p.write_text(json.dumps(thumos.to_activitynet(include_ambiguous=True)))
    back = quiet_load(p)
    assert back.classes == thumos.classes
    assert back.subsets() == thumos.subsets()
    key = ["video", "start", "end", "label", "label_idx", "subset"]
    a = thumos.instances[key].sort_values(key[:4]).reset_index(drop=True)
    b = back.instances[key].sort_values(key[:4]).reset_index(drop=True)
    assert a.equals(b)
    known = thumos.ambiguous[thumos.ambiguous["video"].isin(thumos.videos.index)]
    assert len(back.ambiguous) == len(known) == 96  # 3 rows belong to the unlisted video_test_0001292


# --------------------------------------------------------------------------- subsets
@pytest.mark.parametrize("name,canonical", [("Validation", "validation"), ("val", "validation"),
                                            ("VALID", "validation"), ("Test", "testing"), ("train", "training"),
                                            ("  Training ", "training"), ("hold-out", "hold_out")])
def test_subset_names_are_normalised(name, canonical):
    assert normalize_subset(name) == canonical


def test_unknown_subset_is_an_error_listing_the_subsets(thumos):
    with pytest.raises(InputError) as exc:
        thumos.subset("training")
    msg = str(exc.value)
    assert "thumos14.json" in msg and "'training'" in msg
    assert "testing (212 videos)" in msg and "validation (200 videos)" in msg
    both = thumos.subset("val,test")
    assert len(both) == 3007 + 3358


# --------------------------------------------------------------------------- CSV
CSV_TEXT = """video,start,end,label,subset,duration
a,1.0,2.5,jump,train,10
a,8.0,12.0,run,train,10
a,1.0,2.5,jump,train,10
b,0.0,0.0,run,Validation,5
b,4.0,3.0,jump,Validation,5
b,-1.0,1.0,Ambiguous,Validation,5
"""


def test_generic_csv_with_clipping_duplicates_and_bad_segments(tmp_path):
    p = tmp_path / "mine.csv"
    p.write_text(CSV_TEXT)
    with pytest.warns(AnnotationWarning) as rec:
        ann = load_annotations(p)
    text = str(rec[0].message)
    assert "1 instances clipped" in text and "1 inverted" in text and "1 duplicate" in text
    assert ann.classes == ["jump", "run"]
    assert ann.subsets() == {"training": 1, "validation": 1}
    segs, labels = ann.segments_of("a")
    assert segs.tolist() == [[1.0, 2.5], [8.0, 10.0], [1.0, 2.5]]  # clipped to the duration
    assert labels.tolist() == [0, 1, 0]
    assert ann.segments_of("b")[0].tolist() == [[0.0, 0.0]]  # zero-length kept, inverted dropped
    assert ann.ambiguous[["video", "start", "end"]].values.tolist() == [["b", 0.0, 1.0]]
    assert ann.duration_of("a") == 10.0 and math.isnan(ann.videos.at["a", "fps"])
    assert len(ann.report.zero_length) == 1 and len(ann.report.inverted) == 1


def test_csv_without_subset_column_gets_unknown_subset(tmp_path):
    p = tmp_path / "plain.csv"
    p.write_text("video,start,end,label\nx,1,2,a\n")
    ann = quiet_load(p)
    assert ann.subsets() == {"unknown": 1}
    assert math.isnan(ann.duration_of("x"))


@pytest.mark.parametrize("text,needle", [
    ("video,start,label\na,1,x\n", "lacks column(s) end"),
    ("video,start,end,label\na,one,2,x\n", "row 1 (video 'a'): start: expected a number"),
    ("video,start,end,label\na,1,2,x\nb,1,inf,y\n", "row 2 (video 'b'): end: expected a finite number"),
    ("video,start,end,label\na,1,2\n", "row 1 (video 'a'): 3 fields"),
    ("video,start,end,label\n,1,2,x\n", "row 1: empty video id"),
    ("video,start,end,label\na,1,2,\n", "empty label"),
    ("", "empty CSV"),
])
def test_malformed_csv_names_file_and_entry(tmp_path, text, needle):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(InputError) as exc:
        quiet_load(p)
    assert "bad.csv" in str(exc.value) and needle in str(exc.value)


@pytest.mark.parametrize("doc,needle", [
    ({"database": []}, "'database': expected an object"),
    ({"database": {"v": {"subset": "val", "annotations": [{"segment": [1], "label": "a"}]}}},
     "database['v'].annotations[0].segment: expected [start, end]"),
    ({"database": {"v": {"subset": "val", "annotations": [{"segment": [1, "x"], "label": "a"}]}}},
     "database['v'].annotations[0].segment[1]: expected a number"),
    ({"database": {"v": {"subset": "val", "annotations": [{"segment": [1, 2], "label": True}]}}},
     "database['v'].annotations[0].label: expected a non-empty class name, got True"),
    ({"database": {"v": {"subset": "val", "duration": -1, "annotations": []}}},
     "database['v'].duration: must be positive"),
    ({"database": {"v": {"subset": 5, "annotations": []}}}, "database['v'].subset: expected a string"),
    ({"database": {"v": {"subset": "val", "annotations": {}}}}, "database['v'].annotations: expected a list"),
    ({"database": {"v": {"subset": "val", "annotations": [{"segment": [True, 2], "label": "a"}]}}},
     "segment[0]: expected a number"),
    ({"database": {"v": {"annotations": [{"segment": [1, 1e400], "label": "a"}]}}}, "finite number"),
    ({"something": 1}, "cannot tell the annotation format"),
])
def test_malformed_json_names_file_and_field(tmp_path, doc, needle):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc).replace("Infinity", "1e400"))
    with pytest.raises(InputError) as exc:
        quiet_load(p)
    assert "bad.json" in str(exc.value) and needle in str(exc.value), str(exc.value)


def test_label_outside_explicit_class_list_is_an_error(tmp_path, shared_data):
    p = tmp_path / "g.csv"
    p.write_text("video,start,end,label\nvid1,1,2,Diving\nvid2,1,2,Dancing\n")
    with pytest.raises(InputError, match="label 'Dancing' \\(video 'vid2'\\) is not in the class list"):
        quiet_load(p, classes=shared_data / "detclasslist.txt")
    assert quiet_load(p, classes=["Dancing", "Diving"]).instances["label_idx"].tolist() == [1, 0]


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(InputError, match="no such annotation file"):
        load_annotations(tmp_path / "nope.json")
    p = tmp_path / "bin.json"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="bin.json: not UTF-8"):
        load_annotations(p)


# --------------------------------------------------------------------------- property tests
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12)


def _valid_doc() -> dict:
    return {"version": "x", "database": {
        "v1": {"subset": "validation", "duration": 20.0,
               "annotations": [{"segment": [1.0, 4.0], "label": "a"}, {"segment": [5.0, 9.0], "label": "b"}]},
        "v2": {"subset": "training", "duration": 12.0, "annotations": [{"segment": [0.5, 3.0], "label": "a"}]}}}


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), value=json_values)
def test_mutated_activitynet_json_loads_or_raises_input_error(tmp_path, data, value):
    doc = _valid_doc()
    paths = [p for p in _paths(doc) if p]
    where = data.draw(st.sampled_from(paths))
    node = doc
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = value
    p = tmp_path / "mutated.json"
    p.write_text(json.dumps(doc, allow_nan=True))
    try:
        ann = quiet_load(p, fmt="activitynet")
    except InputError as exc:
        assert "mutated.json" in str(exc)
        return
    assert isinstance(ann, Annotations)
    assert np.isfinite(ann.instances[["start", "end"]].to_numpy()).all()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=json_values, fmt=st.sampled_from(["auto", "activitynet", "activitynet-results", "bsn"]))
def test_random_json_never_crashes(tmp_path, doc, fmt):
    p = tmp_path / "random.json"
    p.write_text(json.dumps(doc, allow_nan=True))
    try:
        quiet_load(p, fmt=fmt)
    except InputError as exc:
        assert "random.json" in str(exc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(st.text(alphabet="ab1.-e,\"\n x", max_size=6), min_size=0, max_size=7),
                     max_size=5),
       header=st.sampled_from(["video,start,end,label", "video,start,end,label,subset",
                               "video,start,end,label,duration,fps", "video,end"]))
def test_random_csv_never_crashes(tmp_path, rows, header):
    p = tmp_path / "random.csv"
    p.write_text(header + "\n" + "\n".join(",".join(r) for r in rows))
    try:
        ann = quiet_load(p)
    except InputError as exc:
        assert "random.csv" in str(exc)
        return
    assert (ann.instances["end"] >= ann.instances["start"]).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=60), suffix=st.sampled_from([".json", ".csv", "_test.txt"]))
def test_random_bytes_never_crash(tmp_path, data, suffix):
    p = tmp_path / f"Blob{suffix}"
    p.write_bytes(data)
    try:
        quiet_load(p)
    except InputError as exc:
        assert "Blob" in str(exc)


def test_warning_is_single_and_can_be_silenced(tmp_path):
    p = tmp_path / "mine.csv"
    p.write_text(CSV_TEXT)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        load_annotations(p)
        load_annotations(p, warn=False)
    assert len([w for w in rec if issubclass(w.category, AnnotationWarning)]) == 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.sampled_from(["a", "b", "v_c", "d e"]), st.floats(0, 100), st.floats(0, 50),
                               st.sampled_from(["run", "jump", "Ambiguous"]),
                               st.sampled_from(["train", "Validation", "test"])), min_size=1, max_size=12))
def test_csv_to_activitynet_json_round_trip(tmp_path, rows):
    subset_of = {}
    lines = ["video,start,end,label,subset"]
    for vid, start, size, label, subset in rows:
        subset = subset_of.setdefault(vid, subset)  # one subset per video
        lines.append(f"{vid},{start!r},{start + size!r},{label},{subset}")
    p = tmp_path / "rt.csv"
    p.write_text("\n".join(lines) + "\n")
    ann = quiet_load(p)
    assert len(ann) + len(ann.ambiguous) == len(rows)
    out = tmp_path / "rt.json"
    out.write_text(json.dumps(ann.to_activitynet(include_ambiguous=True)))
    back = quiet_load(out)
    assert back.classes == ann.classes and back.subsets() == ann.subsets()
    key = ["video", "start", "end", "label", "label_idx", "subset"]
    assert back.instances[key].sort_values(key).reset_index(drop=True).equals(
        ann.instances[key].sort_values(key).reset_index(drop=True))
    assert len(back.ambiguous) == len(ann.ambiguous)


def test_single_thumos_txt_and_video_info_durations(tmp_path):
    (tmp_path / "Diving_val.txt").write_text("video_validation_1  1.0 2.5\r\nvideo_validation_2 3 9\r\n\r\n")
    info = tmp_path / "info.csv"
    info.write_text("video,duration,fps\nvideo_validation_1,10,30\nvideo_validation_2,8,25\n")
    ann = quiet_load(tmp_path / "Diving_val.txt", video_info=info)
    assert ann.classes == ["Diving"] and ann.subsets() == {"validation": 2}
    assert ann.videos["duration"].tolist() == [10.0, 8.0] and ann.videos["fps"].tolist() == [30.0, 25.0]
    assert ann.segments_of("video_validation_2")[0].tolist() == [[3.0, 8.0]]  # clipped to the info duration
    (tmp_path / "Diving_val2.txt").write_text("x 1 2\n")
    with pytest.raises(InputError, match="must be named <Class>_val.txt"):
        quiet_load(tmp_path / "Diving_val2.txt")
    (tmp_path / "Run_test.txt").write_text("video_test_1 1.0\n")
    with pytest.raises(InputError, match="Run_test.txt: line 1: expected 'video start end'"):
        quiet_load(tmp_path / "Run_test.txt")


# --------------------------------------------------------------------------- taxonomy, huge numbers
def _taxonomy(*leaves):
    return [{"nodeId": 0, "nodeName": "Root", "parentId": None, "parentName": None}] + [
        {"nodeId": i + 1, "nodeName": n, "parentId": 0, "parentName": "Root"} for i, n in enumerate(leaves)]


def test_label_outside_the_files_taxonomy_is_an_error(tmp_path):
    doc = {"taxonomy": _taxonomy("Run", "Jump", "Swim"), "database": {
        "v1": {"subset": "training", "annotations": [{"segment": [1, 2], "label": "Run"}]},
        "v2": {"subset": "training", "annotations": [{"segment": [1, 2], "label": "Runing"}]}}}
    p = tmp_path / "tax.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"label 'Runing' \(video 'v2'\) is not in the file's taxonomy "
                                         r"\(3 classes; 1 unknown label\(s\): 'Runing'\)"):
        quiet_load(p)
    # an explicit class list decides instead; without the typo every leaf is a class
    assert quiet_load(p, classes=["Run", "Runing"]).classes == ["Run", "Runing"]
    doc["database"]["v2"]["annotations"][0]["label"] = "Run"
    p.write_text(json.dumps(doc))
    assert quiet_load(p).classes == ["Jump", "Run", "Swim"]


@pytest.mark.parametrize("name,text", [
    ("gt.json", '{"database": {"v": {"subset": "val", "annotations": [{"segment": [0, %s], "label": "a"}]}}}'),
    ("res.json", '{"results": {"v": [{"segment": [0, 1], "label": "a", "score": %s}]}}'),
])
def test_integer_of_more_than_4300_digits_is_a_one_line_error(tmp_path, name, text):
    from tadkit.evaluate import load_predictions

    p = tmp_path / name
    p.write_text(text % ("9" * 5000))
    with pytest.raises(InputError, match=f"{name}: malformed JSON: a number has more than 4300 digits"):
        quiet_load(p) if name == "gt.json" else load_predictions(p)
