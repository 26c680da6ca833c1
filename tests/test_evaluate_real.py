"""Regression on the real annotation files (ActivityNet 1.3 val, THUMOS14 test).

Predictions are deterministic noisy copies of the ground truth
(``oracle_eval.jittered_predictions``). The frozen numbers come from the fast
path and were checked once, in full, against the oracle (benchmarks/RESULTS.md);
here the oracle re-checks a deterministic subset with frequent equal scores,
and THUMOS14 in full.
"""
from __future__ import annotations

import numpy as np
import pytest

from oracle_eval import (jittered_predictions, load_anet_val_rows, oracle_detection,
                         oracle_proposals)
from tadkit.evaluate import (ANET_TIOU, GroundTruth, Predictions, evaluate_detection,
                             evaluate_proposals, get_protocol, load_ground_truth)

ANET_MAP = [0.3100514999383405, 0.30464238944873173, 0.2968786173597657, 0.28310214849643334,
            0.2614763711954871, 0.2253131519271877, 0.1747947361621549, 0.11396083162199386,
            0.05477502810838858, 0.011905603347913941]
ANET_AVERAGE_MAP = 0.20369003776063974
ANET_AUC = 0.8210107133524954
ANET_AR_100 = 0.8539195192056441
THUMOS_MAP = [0.24856587956947504, 0.22409402839312037, 0.2112560909992899, 0.20462796290071567,
              0.19760089761955485, 0.18263610048488596, 0.1536521217085985]
THUMOS_AVERAGE_MAP = 0.18995463474260896
THUMOS_OFFICIAL_AVERAGE_MAP = 0.19303508020733612


@pytest.fixture(scope="module")
def anet(shared_data):
    rows = load_anet_val_rows(shared_data / "sample_detection_prediction.json")
    return rows, jittered_predictions(rows, per_video=20, seed=0, score_decimals=None)


@pytest.fixture(scope="module")
def thumos(shared_data):
    gt = load_ground_truth(shared_data / "thumos14.json", subset="test",
                           ambiguous_file=shared_data / "Ambiguous_test.txt")
    rows = list(zip(gt.video.tolist(), gt.start.tolist(), gt.end.tolist(), gt.label.tolist()))
    return gt, rows, jittered_predictions(rows, per_video=50, seed=1, score_decimals=None)


def test_anet_val_ground_truth_rebuilt_from_the_sample_file(shared_data):
    gt = load_ground_truth(shared_data / "sample_detection_prediction.json", subset="validation")
    assert (len(gt.videos), len(gt), len(gt.labels)) == (4926, 7654, 200)
    assert int((gt.start == gt.end).sum()) == 3


def test_anet_val_detection_numbers_are_frozen(anet):
    rows, preds = anet
    r = evaluate_detection(GroundTruth.from_records(rows), Predictions.from_records(preds))
    assert r.mAP.tolist() == ANET_MAP
    assert r.average_mAP == ANET_AVERAGE_MAP


def test_anet_val_proposal_numbers_are_frozen(anet):
    rows, preds = anet
    r = evaluate_proposals(GroundTruth.from_records(rows), Predictions.from_records(preds))
    assert r.AUC == ANET_AUC and r.AR[-1] == ANET_AR_100


def test_anet_val_subset_with_tied_scores_equals_oracle(anet):
    rows, _ = anet
    videos = sorted({r[0] for r in rows})[::25]          # 198 videos, deterministic
    keep = set(videos)
    sub = [r for r in rows if r[0] in keep]
    preds = jittered_predictions(sub, per_video=30, seed=3, score_decimals=2)
    gt, pr = GroundTruth.from_records(sub), Predictions.from_records(preds)
    r = evaluate_detection(gt, pr, ANET_TIOU)
    ap, labels, mAP = oracle_detection(sub, preds, ANET_TIOU)
    assert r.labels == labels and np.array_equal(r.ap, ap) and np.array_equal(r.mAP, mAP)
    p = evaluate_proposals(gt, pr, ANET_TIOU, max_avg_nr_proposals=20)
    recall, avg, _, area, _ = oracle_proposals(sub, preds, ANET_TIOU, 20)
    assert np.array_equal(p.recall, recall) and p.area == area


def test_thumos14_test_numbers_frozen_and_equal_to_oracle(thumos):
    gt, rows, preds = thumos
    protocol = get_protocol("thumos14")
    pr = Predictions.from_records(preds)
    anet_style = protocol.evaluate_detection(gt, pr)
    official = protocol.evaluate_detection(gt, pr, ambiguous="official")
    assert (len(gt), len(gt.videos), len(gt.labels)) == (3358, 212, 20)
    assert anet_style.mAP.tolist() == THUMOS_MAP
    assert anet_style.average_mAP == THUMOS_AVERAGE_MAP
    assert official.average_mAP == THUMOS_OFFICIAL_AVERAGE_MAP
    ap, _, _ = oracle_detection(rows, preds, protocol.tiou_thresholds)
    assert np.array_equal(anet_style.ap, ap)
    amb = list(zip(gt.ambiguous.video.tolist(), gt.ambiguous.start.tolist(),
                   gt.ambiguous.end.tolist()))
    ap, _, _ = oracle_detection(rows, preds, protocol.tiou_thresholds, ambiguous=amb)
    assert np.array_equal(official.ap, ap)
