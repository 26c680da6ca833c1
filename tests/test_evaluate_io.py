"""Readers and id alignment: formats, subsets, v_ prefixes, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tadkit.errors import InputError
from tadkit.evaluate import (GroundTruth, Predictions, align, load_ground_truth, load_predictions,
                             load_segments, load_video_list, normalize_subset)

DATABASE = {
    "version": "1.3", "taxonomy": [],
    "database": {
        "vidA": {"subset": "validation", "duration": 30.0,
                 "annotations": [{"segment": [1.0, 5.0], "label": "Run"},
                                 {"segment": [7, 9], "label": "Jump"}]},
        "vidB": {"subset": "training", "annotations": [{"segment": [0, 3], "label": "Run"}]},
        "vidC": {"subset": "validation", "annotations": []},
    },
}


def _write(tmp_path, name, obj):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_database_json_keeps_the_subset_in_file_order(tmp_path):
    gt = load_ground_truth(_write(tmp_path, "gt.json", DATABASE), subset="Val")
    assert gt.video.tolist() == ["vidA", "vidA"]
    assert gt.label.tolist() == ["Run", "Jump"] and gt.labels == ["Run", "Jump"]
    assert gt.start.tolist() == [1.0, 7.0] and gt.end.dtype == np.float64
    assert gt.videos == ["vidA", "vidC"] and gt.subset == "validation"
    assert gt.durations == {"vidA": 30.0}


@pytest.mark.parametrize("name,canonical", [("Validation", "validation"), ("val", "validation"),
                                            ("Test", "testing"), ("train", "training")])
def test_subset_spellings_are_normalised(name, canonical):
    assert normalize_subset(name) == canonical


def test_subset_that_matches_nothing_lists_the_existing_ones(tmp_path):
    path = _write(tmp_path, "gt.json", DATABASE)
    with pytest.raises(InputError, match=r"no subset 'testing'.*subsets: training \(1 videos\), validation \(2 videos\)"):
        load_ground_truth(path, subset="testing")


def test_results_style_ground_truth_ignores_the_subset_and_says_so(tmp_path):
    path = _write(tmp_path, "gt.json", {"results": {"x": [{"segment": [0, 1], "label": "A",
                                                            "score": 1.0}]}})
    gt = load_ground_truth(path, subset="validation")
    assert len(gt) == 1 and any("no subsets" in n for n in gt.notes)


def test_csv_ground_truth_and_predictions(tmp_path):
    gt_csv = _write(tmp_path, "gt.csv", "video,start,end,label,subset\nv1,0,10,A,val\nv2,1,2,B,test\n")
    gt = load_ground_truth(gt_csv, subset="validation")
    assert gt.video.tolist() == ["v1"]
    pred_csv = _write(tmp_path, "p.csv", "video,start,end,label,score\nv1,0,10,A,0.5\nv1,1,3,A,1\n")
    preds = load_predictions(pred_csv)
    assert preds.score.dtype == np.float64 and preds.label.tolist() == ["A", "A"]


def test_integer_scores_keep_the_integer_dtype_like_pandas(tmp_path):
    path = _write(tmp_path, "p.json", {"results": {"v": [{"segment": [0, 1], "label": "A",
                                                          "score": 1}]}})
    assert load_predictions(path).score.dtype == np.int64


def test_ambiguous_annotations_are_kept_apart_and_the_file_adds_more(tmp_path):
    db = {"database": {"video_test_1": {"subset": "Test", "annotations": [
        {"segment": [0, 2], "label": "Ambiguous"}, {"segment": [3, 4], "label": "HighJump"}]}}}
    amb = _write(tmp_path, "amb.txt", "video_test_1  5.0 6.0\r\nvideo_test_9  1 2\r\n")
    gt = load_ground_truth(_write(tmp_path, "gt.json", db), subset="test", ambiguous_file=amb)
    assert gt.label.tolist() == ["HighJump"]
    assert gt.ambiguous.video.tolist() == ["video_test_1", "video_test_1"]
    assert gt.ambiguous.start.tolist() == [0.0, 5.0]


def test_segments_file_reads_crlf_and_double_spaces(tmp_path):
    seg = load_segments(_write(tmp_path, "a.txt", "v1  0.0 1.4\r\nv2  95.7 97.2\r\n"))
    assert seg.video.tolist() == ["v1", "v2"] and seg.end.tolist() == [1.4, 97.2]


def test_video_list_json_or_lines(tmp_path):
    assert load_video_list(_write(tmp_path, "b.json", '["a", "b"]')) == ["a", "b"]
    assert load_video_list(_write(tmp_path, "b.txt", "a\n\nb\n")) == ["a", "b"]
    with pytest.raises(InputError, match="must be strings"):
        load_video_list(_write(tmp_path, "c.json", '["a", 3]'))


def test_v_prefix_is_matched_when_unambiguous_and_reported():
    gt = GroundTruth.from_records([("v_abc", 0, 1, "A"), ("xyz", 0, 1, "A")])
    preds = Predictions.from_records([("abc", 0, 1, "A", 1.0), ("v_xyz", 0, 1, "A", 1.0)])
    _, aligned, report = align(gt, preds)
    assert aligned.video.tolist() == ["v_abc", "xyz"]
    assert report.renamed_ids == 2 and "v_" in report.notes()[0]
    _, strict, report = align(gt, preds, match_v_prefix=False)
    assert strict.video.tolist() == ["abc", "v_xyz"] and report.unknown_video_predictions == 2


def test_v_prefix_is_not_applied_when_both_forms_are_predicted():
    gt = GroundTruth.from_records([("v_abc", 0, 1, "A")])
    preds = Predictions.from_records([("abc", 0, 1, "A", 1.0), ("v_abc", 0, 1, "A", 1.0)])
    _, aligned, report = align(gt, preds)
    assert aligned.video.tolist() == ["abc", "v_abc"] and report.prefix_conflicts == 1


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("content,message", [
    ("{not json", "malformed JSON"),
    ({"foo": {}}, "expected a JSON object with a 'results' key"),
    ({"results": {"v": [{"segment": [0, 1], "label": "A"}]}}, r"results\['v'\]\[0\] has no 'score'"),
    ({"results": {"v": [{"segment": [0, 1], "label": "A", "score": float("nan")}]}},
     r"results\['v'\]\[0\]: score is nan"),
    ({"results": {"v": [{"segment": [0], "label": "A", "score": 1}]}}, r"results\['v'\]\[0\].segment: expected \[start, end\]"),
    ({"results": {"v": [{"segment": [0, "x"], "label": "A", "score": 1}]}}, r"segment\[1\]: expected a number"),
    ({"results": {"v": [{"segment": [0, 1], "score": 1}]}}, "has no 'label'"),
    ({"results": {"v": [{"segment": [0, 1], "label": "A", "score": "high"}]}}, "score must be a number"),
    ({"results": {"v": {"segment": [0, 1]}}}, r"results\['v'\]: expected a list"),
])
def test_bad_predictions_name_the_file_and_first_offending_entry(tmp_path, content, message):
    text = content if isinstance(content, str) else json.dumps(content)
    path = _write(tmp_path, "pred.json", text)
    with pytest.raises(InputError, match=message) as info:
        load_predictions(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content,message", [
    ({"database": {"v": {"subset": "validation", "annotations": [{"segment": [3, 1],
                                                                   "label": "A"}]}}},
     "inverted segment"),
    ({"database": {"v": {"subset": "validation", "annotations": [{"label": "A"}]}}},
     r"database\['v'\].annotations\[0\] has no 'segment'"),
    ({"database": {"v": {"subset": "validation", "annotations": [{"segment": [0, 1]}]}}},
     "has no 'label'"),
    ([1, 2], "cannot tell the annotation format"),
])
def test_bad_ground_truth_is_an_input_error(tmp_path, content, message):
    with pytest.raises(InputError, match=message):
        load_ground_truth(_write(tmp_path, "gt.json", content), subset="validation")


def test_missing_file_and_bad_csv_header(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_predictions(tmp_path / "nope.json")
    with pytest.raises(InputError, match="lacks column"):
        load_predictions(_write(tmp_path, "p.csv", "video,begin,end,label,score\nv,0,1,A,1\n"))


def test_zero_length_predictions_are_kept_and_counted(tmp_path):
    path = _write(tmp_path, "p.json", {"results": {"v": [{"segment": [2, 2], "label": "A",
                                                          "score": 0.5}]}})
    preds = load_predictions(path)
    assert len(preds) == 1 and "1 zero-length" in preds.notes[0]


def test_empty_results_file_evaluates_to_zero(tmp_path):
    from tadkit.evaluate import evaluate_detection

    preds = load_predictions(_write(tmp_path, "p.json", {"results": {}}))
    assert len(preds) == 0
    gt = GroundTruth.from_records([("v", 0, 1, "A")])
    assert evaluate_detection(gt, preds).average_mAP == 0.0


def test_csv_errors_name_the_line(tmp_path):
    path = _write(tmp_path, "p.csv", "video,start,end,label,score\nv,0,1,A,0.5\nv,0,1,A,high\n")
    with pytest.raises(InputError, match="row 2 \\(video 'v'\\): score 'high' is not a number"):
        load_predictions(path)
    path = _write(tmp_path, "g.csv", "video,start,end,label\nv,0,1,A\nv,4,2,A\n")
    with pytest.raises(InputError, match="inverted segment"):
        load_ground_truth(path)


def test_integer_labels_and_numeric_strings_are_read_as_the_official_code_reads_them(tmp_path):
    # the official code keys classes by the label as written and reads segments with float()
    gt = load_ground_truth(_write(tmp_path, "gt.json", {"database": {"v": {
        "subset": "validation", "annotations": [{"segment": ["1.5", 4], "label": 3}]}}}), "val")
    assert gt.label.tolist() == ["3"] and gt.start.tolist() == [1.5]
    preds = load_predictions(_write(tmp_path, "p.json", {"results": {"v": [
        {"segment": [1.5, 4], "label": 3, "score": 1}]}}))
    assert preds.label.tolist() == ["3"]


def test_proposals_with_some_labels_read_the_missing_ones_as_empty(tmp_path):
    path = _write(tmp_path, "p.json", {"results": {"v": [{"segment": [0, 1], "score": 0.5},
                                                         {"segment": [0, 2], "score": 0.4, "label": "A"}]}})
    assert load_predictions(path, require_label=False).label.tolist() == ["", "A"]
    path = _write(tmp_path, "q.json", {"results": {"v": [{"segment": [0, 1], "score": 0.5}]}})
    assert load_predictions(path, require_label=False).label is None
