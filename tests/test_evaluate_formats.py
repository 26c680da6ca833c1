"""Evaluate II: one ground truth in every format gives identical numbers; inverted predicted
segments scored like the official code (checked against the slow oracle); report averages."""
from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from oracle_eval import jittered_predictions, oracle_detection, oracle_proposals
from tadkit.cli import cli
from tadkit.evaluate import (ANET_TIOU, GroundTruth, Predictions, evaluate_detection,
                             evaluate_proposals, get_protocol, load_ground_truth, load_predictions)
from tadkit.evaluate.report import format_detection_table, write_report


def _write_three_formats(tmp_path, rows, ambiguous=()):
    """The same ground truth (all 'test') as ActivityNet JSON, THUMOS txt folder and CSV.

    The folder has one file per class (written in class-name order, rows in file order
    within a class), so the instance order differs from the JSON's, as it does for the
    real files."""
    database = {}
    for vid, s, e, label in rows:
        database.setdefault(vid, {"subset": "Test", "annotations": []})["annotations"].append(
            {"segment": [s, e], "label": label})
    as_json = tmp_path / "gt.json"
    as_json.write_text(json.dumps({"database": database}))
    folder = tmp_path / "th14"
    folder.mkdir()
    for label in sorted({r[3] for r in rows}):
        lines = [f"{v}  {s!r} {e!r}" for v, s, e, lab in rows if lab == label]
        (folder / f"{label}_test.txt").write_text("\r\n".join(lines) + "\r\n")
    if ambiguous:
        (folder / "Ambiguous_test.txt").write_text("".join(f"{v} {s!r} {e!r}\n" for v, s, e in ambiguous))
    as_csv = tmp_path / "gt.csv"
    with open(as_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video", "start", "end", "label", "subset"])
        w.writerows([v, repr(s), repr(e), lab, "test"] for v, s, e, lab in rows)
    return as_json, folder, as_csv


def _same_numbers(results):
    first = results[0]
    for r in results[1:]:
        assert r.per_class_AP == first.per_class_AP          # bit-identical AP table, by class
        assert sorted(r.labels) == sorted(first.labels)
        assert (r.num_videos, r.num_ground_truth, r.num_predictions) == \
            (first.num_videos, first.num_ground_truth, first.num_predictions)
        np.testing.assert_allclose(r.mAP, first.mAP, rtol=0, atol=1e-15)   # class order may differ


def test_one_ground_truth_in_three_formats_gives_identical_ap_tables(tmp_path):
    rng = np.random.default_rng(5)
    rows = []
    for v in range(12):
        for _ in range(rng.integers(1, 6)):
            s = float(np.round(rng.uniform(0, 80), 1))
            rows.append((f"video_test_{v:07d}", s, s + float(np.round(rng.uniform(0.5, 20), 1)),
                         ["Diving", "HighJump", "Shotput"][rng.integers(3)]))
    rows.append(rows[0][:3] + ("CliffDiving",))           # a second label on one interval
    preds = Predictions.from_records(jittered_predictions(rows, per_video=15, seed=2, score_decimals=1))
    paths = _write_three_formats(tmp_path, rows, ambiguous=[("video_test_0000001", 1.0, 3.0)])
    protocol = get_protocol("thumos14")
    gts = [load_ground_truth(p, subset="test") for p in paths]
    assert [len(g) for g in gts] == [len(rows)] * 3
    _same_numbers([protocol.evaluate_detection(g, preds) for g in gts])
    proposals = [evaluate_proposals(g, preds, max_avg_nr_proposals=10) for g in gts]
    assert all(np.array_equal(p.recall, proposals[0].recall) for p in proposals)
    # the folder's Ambiguous_test.txt is read with it: the official rule needs no extra file
    assert len(gts[1].ambiguous) == 1
    official = protocol.evaluate_detection(gts[1], preds, ambiguous="official")
    with_file = protocol.evaluate_detection(
        load_ground_truth(paths[0], subset="test", ambiguous_file=paths[1] / "Ambiguous_test.txt"),
        preds, ambiguous="official")
    assert official.per_class_AP == with_file.per_class_AP


def test_thumos14_test_as_json_txt_folder_and_csv_bit_identical(shared_data, tmp_path):
    gt = load_ground_truth(shared_data / "thumos14.json", subset="test")
    rows = list(zip(gt.video.tolist(), gt.start.tolist(), gt.end.tolist(), gt.label.tolist()))
    amb = [tuple(line.split()[:1]) + tuple(float(x) for x in line.split()[1:])
           for line in (shared_data / "Ambiguous_test.txt").read_text().splitlines() if line.strip()]
    paths = _write_three_formats(tmp_path, rows, ambiguous=amb)
    preds = Predictions.from_records(jittered_predictions(rows, per_video=50, seed=1, score_decimals=2))
    protocol = get_protocol("thumos14")
    gts = [load_ground_truth(p, subset="test") for p in paths]
    assert [(len(g), len(g.videos), len(g.labels)) for g in gts] == [(3358, 212, 20)] * 3
    for rule in ("anet-style", "official"):
        if rule == "official":   # the JSON and CSV get the Ambiguous segments from the file
            gts = [load_ground_truth(p, subset="test", ambiguous_file=shared_data / "Ambiguous_test.txt")
                   if p.is_file() else load_ground_truth(p, subset="test") for p in paths]
        _same_numbers([protocol.evaluate_detection(g, preds, ambiguous=rule) for g in gts])


def test_cli_reads_the_thumos_folder_with_gt_format(tmp_path):
    rows = [("video_test_1", 0.0, 10.0, "Diving"), ("video_test_2", 5.0, 9.0, "Shotput")]
    _, folder, _ = _write_three_formats(tmp_path, rows)
    pred = tmp_path / "p.json"
    pred.write_text(json.dumps({"results": {"video_test_1": [
        {"label": "Diving", "score": 1.0, "segment": [0.0, 10.0]}]}}))
    out = tmp_path / "r.json"
    res = CliRunner().invoke(cli, ["evaluate", "--dataset", "thumos14", "--gt", str(folder),
                                   "--gt-format", "thumos-folder", "--pred", str(pred), "--json", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["per_class_AP"]["Diving"] == [1.0] * 7 and doc["per_class_AP"]["Shotput"] == [0.0] * 7


# --------------------------------------------------------------------------- inverted predictions
def _with_inverted(seed):
    rng = np.random.default_rng(seed)
    gt = [("v1", 0.0, 10.0, "A"), ("v1", 20.0, 26.0, "A"), ("v2", 5.0, 5.0, "B"), ("v2", 1.0, 9.0, "B"),
          ("v3", 2.0, 4.0, "A")]
    preds = jittered_predictions(gt, per_video=12, seed=seed, score_decimals=1)
    # inverted segments: one whose (negative) length cancels a 10 s ground truth (tIoU 0/0),
    # one cancelling the 2 s one, others at random
    extra = [("v1", 10.0, 0.0, "A", 0.95), ("v3", 4.0, 2.0, "A", 0.9), ("v2", 9.0, 1.0, "B", 0.5)]
    extra += [(f"v{rng.integers(1, 4)}", float(b), float(a), str(rng.choice(["A", "B"])),
               float(np.round(rng.random(), 1))) for a, b in np.sort(rng.uniform(0, 30, (4, 2)), axis=1)]
    out = preds + extra
    rng.shuffle(out)
    return gt, [tuple(r) for r in out]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inverted_predictions_score_like_the_slow_reference(seed):
    gt_rows, pred_rows = _with_inverted(seed)
    gt, preds = GroundTruth.from_records(gt_rows), Predictions.from_records(pred_rows)
    assert int((preds.end < preds.start).sum()) >= 3
    assert any("inverted predicted segments kept" in n for n in preds.notes)
    r = evaluate_detection(gt, preds, ANET_TIOU)
    ap, labels, mAP = oracle_detection(gt_rows, pred_rows, ANET_TIOU)
    assert r.labels == labels and np.array_equal(r.ap, ap) and np.array_equal(r.mAP, mAP)
    p = evaluate_proposals(gt, preds, ANET_TIOU, max_avg_nr_proposals=5)
    recall, _, _, area, _ = oracle_proposals(gt_rows, pred_rows, ANET_TIOU, 5)
    assert np.array_equal(p.recall, recall) and p.area == area


def test_inverted_prediction_with_zero_union_is_a_match():
    # [10, 0] against [0, 10]: intersection 0, union 10 + (-10) = 0 -> 0/0, which the official walk
    # accepts as a match
    r = evaluate_detection(GroundTruth.from_records([("v", 0, 10, "A")]),
                           Predictions.from_records([("v", 10, 0, "A", 1.0)]), [0.5])
    assert r.ap[0, 0] == 1.0


def test_reject_inverted_names_the_entry(tmp_path):
    from tadkit.errors import InputError

    path = tmp_path / "p.json"
    path.write_text(json.dumps({"results": {"v": [{"segment": [0, 1], "label": "A", "score": 1},
                                                  {"segment": [5, 2], "label": "A", "score": 1}]}}))
    assert len(load_predictions(path)) == 2
    with pytest.raises(InputError, match=r"results\['v'\]\[1\] \[5, 2\]: inverted segment"):
        load_predictions(path, reject_inverted=True)


# --------------------------------------------------------------------------- report averages
def test_thumos_class_averages_use_the_protocols_averaging_set(tmp_path):
    gt = GroundTruth.from_records([("v", 0, 10, "A"), ("v", 20, 30, "B")])
    # A: tIoU .25 with its GT -> AP 1 at thresholds .1, .2 only; B: tIoU 1 -> AP 1 everywhere
    preds = Predictions.from_records([("v", 0, 2.5, "A", 0.9), ("v", 20, 30, "B", 0.8)])
    r = get_protocol("thumos14").evaluate_detection(gt, preds, keep_curves=True)
    assert r.ap[:, 0].tolist() == [1, 1, 0, 0, 0, 0, 0]
    assert r.class_average_AP.tolist() == [0.0, 1.0]          # over 0.3-0.7, like average_mAP
    assert r.average_mAP == r.class_average_AP.mean() == 0.5
    write_report(r, tmp_path)
    rows = list(csv.reader(open(tmp_path / "per_class.csv")))
    assert rows[0][-1] == "AP_mean" and [row[-1] for row in rows[1:]] == ["0.0", "1.0", "0.5"]
    assert "0.00  A" in format_detection_table(r, worst=1).split("lowest 1 class ")[1]


def test_evaluate_imports_no_pandas():
    import subprocess

    code = ("import sys, tadkit, tadkit.cli, tadkit.evaluate, tadkit.evaluate.cli, tadkit.data.formats; "
            "print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_evaluate_run_imports_nothing_heavy(tmp_path):
    # the whole CLI run (both tasks, --json) stays clear of the heavy libraries: they would
    # cost more CPU than the evaluation itself
    import subprocess

    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"database": {"v": {"subset": "validation", "annotations": [
        {"segment": [1, 4], "label": "A"}]}}}))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"results": {"v": [{"segment": [1, 4], "label": "A", "score": 1}]}}))
    code = ("import sys\nfrom tadkit.cli import main\n"
            "for task in ('detection', 'proposal'):\n"
            f"    sys.argv = ['tadkit', 'evaluate', '--gt', {str(gt)!r}, '--pred', {str(pred)!r}, "
            f"'--task', task, '--json', {str(tmp_path / 'r.json')!r}]\n"
            "    try:\n        main()\n    except SystemExit as exc:\n        assert not exc.code\n"
            "heavy = ('pandas', 'torch', 'scipy', 'matplotlib', 'h5py', 'cv2', 'decord', 'av', 'yaml')\n"
            "print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert json.loads((tmp_path / "r.json").read_text())["task"] == "proposal"


def test_timeline_colours_are_stable_per_class():
    from tadkit.evaluate.report import plot_detection_timeline

    gt = GroundTruth.from_records([("v1", 0, 10, "Run"), ("v1", 20, 30, "Jump"), ("v2", 5, 15, "Jump")])
    preds = Predictions.from_records([("v1", 0, 10, "Run", 0.9), ("v2", 5, 15, "Jump", 0.8)])

    def colours(video):
        fig = plot_detection_timeline(video, gt, preds)
        legend = fig.axes[0].get_legend()
        out = {t.get_text(): tuple(h.get_facecolor()) for t, h in zip(legend.get_texts(), legend.legend_handles)}
        import matplotlib.pyplot as plt
        plt.close(fig)
        return out

    one, two = colours("v1"), colours("v2")
    assert set(one) == {"Run", "Jump"} and set(two) == {"Jump"}
    assert one["Jump"] == two["Jump"] != one["Run"]      # v2's only class keeps v1's colour


def test_pr_panel_draws_the_mean_and_a_few_named_classes(monkeypatch, tmp_path):
    from tadkit.evaluate import report

    rows = [(f"v{i}", 0.0, 10.0, f"class{i % 12}") for i in range(48)]
    preds = Predictions.from_records(jittered_predictions(rows, per_video=5, seed=4))
    r = evaluate_detection(GroundTruth.from_records(rows), preds, [0.5, 0.7], keep_curves=True)
    figures = []
    monkeypatch.setattr(report, "_close", figures.append)
    report.plot_pr_curves(r, tmp_path / "pr.png")
    fig = figures[0]
    for ax in fig.axes[:2]:
        assert len(ax.lines) <= report.PR_NAMED_CLASSES + 1 and ax.get_legend() is None
    names = [t.get_text() for t in fig.legends[0].get_texts()]
    assert names[-1].startswith("mean over classes") and len(names) == report.PR_NAMED_CLASSES + 1
    best = r.labels[int(np.argmax(r.class_average_AP))]
    assert any(n.startswith(best + " ") for n in names)


def test_the_first_ten_classes_get_ten_different_hues():
    """tab20 pairs a dark and a light shade of one hue; neighbouring classes must not share one
    (the demo's four classes were blue, light blue, orange, light orange)."""
    import colorsys

    from tadkit.evaluate.report import class_colours

    labels = [f"c{i}" for i in range(21)]
    colours = class_colours(labels)
    hues = {round(colorsys.rgb_to_hsv(*colours[lab][:3])[0], 2) for lab in labels[:10]}
    assert len(hues) == 10
    assert colours["c20"] == colours["c0"] and len(set(colours.values())) == 20   # then the cycle repeats
    assert class_colours(labels[:3]) == {lab: colours[lab] for lab in labels[:3]}  # by position only
