"""``tadkit evaluate`` end to end on tiny files: JSON output, report folder, errors."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tadkit.cli import cli, main

GT = {"version": "1.3", "taxonomy": [], "database": {
    "vid1": {"subset": "validation", "duration": 40.0,
             "annotations": [{"segment": [0, 10], "label": "Run"},
                             {"segment": [20, 30], "label": "Jump"}]},
    "vid2": {"subset": "validation", "annotations": [{"segment": [5, 15], "label": "Run"}]},
    "vid3": {"subset": "training", "annotations": [{"segment": [0, 5], "label": "Run"}]},
}}
PRED = {"version": "1.3", "external_data": {}, "results": {
    "v_vid1": [{"label": "Run", "score": 0.9, "segment": [0, 10]},
               {"label": "Jump", "score": 0.8, "segment": [22, 30]},
               {"label": "Run", "score": 0.3, "segment": [30, 40]}],
    "vid2": [{"label": "Run", "score": 0.7, "segment": [5, 14]}],
}}


@pytest.fixture()
def files(tmp_path):
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    gt.write_text(json.dumps(GT))
    pred.write_text(json.dumps(PRED))
    return tmp_path, gt, pred


def test_detection_json_report_in_fractions(files):
    tmp, gt, pred = files
    out = tmp / "r.json"
    res = CliRunner().invoke(cli, ["evaluate", "--dataset", "anet", "--gt", str(gt), "--pred",
                                   str(pred), "--subset", "Validation", "--json", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["task"] == "detection" and len(doc["tiou_thresholds"]) == 10
    assert doc["num_videos"] == 2 and doc["num_ground_truth"] == 3 and doc["num_predictions"] == 4
    # Jump [22,30] vs [20,30]: tIoU .8 -> AP 1 up to .8, 0 above; Run: TP, TP, FP at low tIoU
    assert doc["per_class_AP"]["Jump"][:7] == [1.0] * 7 and doc["per_class_AP"]["Jump"][7:] == [0] * 3
    assert doc["per_class_AP"]["Run"][0] == 1.0
    assert 0 < doc["average_mAP"] < 1
    assert "mAP (%)" in res.output and "'v_' prefix" in res.output


def test_proposal_task_and_report_folder(files):
    tmp, gt, pred = files
    out_dir, js = tmp / "report", tmp / "p.json"
    res = CliRunner().invoke(cli, ["evaluate", "--gt", str(gt), "--pred", str(pred), "--task",
                                   "proposal", "--max-proposals", "2", "--json", str(js),
                                   "--out", str(out_dir)])
    assert res.exit_code == 0, res.output
    doc = json.loads(js.read_text())
    assert doc["task"] == "proposal" and set(doc["recall_at"]) == {"50", "100", "200", "500"}
    assert (out_dir / "ar_an.png").stat().st_size > 1000
    assert (out_dir / "ar_an.csv").read_text().startswith("AN,AR")


def test_detection_report_folder_has_csv_curves_and_timelines(files):
    tmp, gt, pred = files
    out_dir = tmp / "rep"
    res = CliRunner().invoke(cli, ["evaluate", "--gt", str(gt), "--pred", str(pred), "--tiou",
                                   "0.3,0.5,0.7", "--out", str(out_dir), "--timelines", "2"])
    assert res.exit_code == 0, res.output
    lines = (out_dir / "per_class.csv").read_text().splitlines()
    assert lines[0] == "class,AP@0.30,AP@0.50,AP@0.70,AP_mean" and lines[-1].startswith("mAP,")
    assert (out_dir / "pr_curves.png").stat().st_size > 1000
    assert sorted(p.name for p in (out_dir / "timelines").iterdir()) == ["vid1.png", "vid2.png"]


def test_thumos_official_rule_needs_ambiguous_segments(files, capsys):
    tmp, gt, pred = files
    code = main(["evaluate", "--dataset", "thumos14", "--gt", str(gt), "--pred", str(pred),
                 "--subset", "validation", "--ambiguous", "official"])
    assert code == 1
    assert "needs Ambiguous segments" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--subset", "testing"], "no subset 'testing' in the annotations"),
    (["--tiou", "0.5,abc"], "cannot read tIoU thresholds"),
    (["--tiou", "0,0.5"], "must lie in (0, 1]"),
    (["--dataset", "kinetics"], "'kinetics' is not one of 'anet', 'hacs', 'thumos14'"),
    (["--tiou", "0.5:0.95:1e-12"], "give 450,000,000,001 thresholds; at most 1000"),
    (["--tiou", "0,0.5"], "got 0.0"),
    (["--task", "proposal", "--max-proposals", "nan"], "--max-proposals"),
    (["--task", "proposal", "--max-proposals", "inf"], "in [1, 1000000], got inf"),
    (["--task", "proposal", "--max-proposals", "1e300"], "in [1, 1000000], got 1e+300"),
    (["--task", "proposal", "--max-proposals", "1e-9"], "in [1, 1000000], got 1e-09"),
    (["--worst", "-1"], "--worst"),
    (["--timelines", "-1"], "--timelines"),
])
def test_user_errors_are_one_line_and_exit_nonzero(files, capsys, args, message):
    tmp, gt, pred = files
    code = main(["evaluate", "--gt", str(gt), "--pred", str(pred)] + args)
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("error:") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "np.float64" not in err


def test_malformed_prediction_file_names_the_file(files, capsys):
    tmp, gt, _ = files
    bad = tmp / "bad.json"
    bad.write_text('{"results": {"vid1": [{"label": "Run", "score": NaN, "segment": [0, 1]}]}}')
    code = main(["evaluate", "--gt", str(gt), "--pred", str(bad)])
    err = capsys.readouterr().err
    assert code == 1 and str(bad) in err and "results['vid1'][0]" in err and "NaN" in err


def test_dataset_choices_are_the_protocols():
    from tadkit.evaluate.cli import DATASETS
    from tadkit.evaluate.protocols import PROTOCOLS

    assert DATASETS == tuple(PROTOCOLS)


def test_max_proposals_nan_is_a_range_error(files, capsys):
    _, gt, pred = files
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--task", "proposal",
                 "--max-proposals", "nan"]) == 2
    assert "must be a finite average number of proposals per video in [1, 1000000], got nan" in \
        capsys.readouterr().err


def test_json_inside_the_report_folder_is_written_once(files):
    tmp, gt, pred = files
    out_dir = tmp / "report"
    res = CliRunner().invoke(cli, ["evaluate", "--gt", str(gt), "--pred", str(pred), "--json",
                                   str(out_dir / "results.json"), "--out", str(out_dir)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out_dir.glob("*.json")) == ["results.json"]
    assert json.loads((out_dir / "results.json").read_text())["task"] == "detection"


def test_inverted_predictions_are_scored_with_a_note_or_refused(files, capsys):
    tmp, gt, _ = files
    pred = tmp / "inv.json"
    pred.write_text(json.dumps({"results": {"vid1": [
        {"label": "Run", "score": 0.9, "segment": [0, 10]},
        {"label": "Run", "score": 0.8, "segment": [30, 20]}]}}))
    res = CliRunner().invoke(cli, ["evaluate", "--gt", str(gt), "--pred", str(pred)])
    assert res.exit_code == 0, res.output
    assert "note: 1 inverted predicted segments kept: results['vid1'][1] [30, 20]" in res.output
    code = main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--reject-inverted"])
    err = capsys.readouterr().err
    assert code == 1 and "results['vid1'][1] [30, 20]: inverted segment" in err
