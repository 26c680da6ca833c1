"""Report output: terminal tables in percent, report folders, the reusable timeline plot."""
from __future__ import annotations

import csv

import numpy as np

from tadkit.evaluate import GroundTruth, Predictions, evaluate_detection, evaluate_proposals
from tadkit.evaluate.report import (format_detection_table, format_proposal_table,
                                    plot_detection_timeline, write_report)

GT = GroundTruth.from_records([("v1", 0, 10, "Run"), ("v1", 20, 30, "Jump"), ("v2", 5, 15, "Run")])
PREDS = Predictions.from_records([("v1", 0, 10, "Run", 0.9), ("v1", 21, 30, "Jump", 0.8),
                                  ("v1", 40, 50, "Run", 0.4), ("v2", 6, 15, "Run", 0.7)])


def test_detection_table_is_in_percent_and_lists_the_lowest_classes():
    r = evaluate_detection(GT, PREDS, [0.5, 0.95])
    text = format_detection_table(r, worst=1)
    assert "0.50  100.00" in text and "0.95  " in text
    assert f"average mAP (0.5, 0.95): {100 * r.average_mAP:.2f}" in text
    assert "lowest 1 class " in text


def test_per_class_csv_round_trips_the_ap_table(tmp_path):
    r = evaluate_detection(GT, PREDS, [0.5, 0.95], keep_curves=True)
    write_report(r, tmp_path)
    rows = list(csv.reader(open(tmp_path / "per_class.csv")))
    table = np.array([[float(x) for x in row[1:3]] for row in rows[1:-1]])
    assert [row[0] for row in rows[1:-1]] == r.labels
    assert np.array_equal(table.T, r.ap)          # full precision (repr), not rounded
    assert (tmp_path / "pr_curves.png").stat().st_size > 1000


def test_proposal_report_and_table(tmp_path):
    r = evaluate_proposals(GT, PREDS, [0.5], max_avg_nr_proposals=2, recall_at=(1,))
    files = write_report(r, tmp_path)
    assert {f.name for f in files} == {"results.json", "ar_an.csv", "ar_an.png"}
    assert "AUC (AR-AN" in format_proposal_table(r) and "AR@1 per video" in format_proposal_table(r)


def test_timeline_draws_ground_truth_and_the_top_predictions():
    fig = plot_detection_timeline("v1", GT, PREDS, top_k=2)
    ax = fig.axes[0]
    bars = [p for p in ax.patches if p.get_width() > 0 and p.get_height() > 0]
    assert len(bars) == 2 + 2                     # two GT segments, two predictions
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[-1] == "ground truth" and len(labels) == 3
    assert any("tIoU 1.00" in t.get_text() for t in ax.texts)   # the best prediction
    import matplotlib.pyplot as plt
    plt.close(fig)
