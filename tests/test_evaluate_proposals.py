"""Proposal AR@AN / AUC / AR@N: a hand-computed case and fast path == oracle."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracle_eval import oracle_proposals
from tadkit.errors import InputError
from tadkit.evaluate import GroundTruth, Predictions, evaluate_proposals

GT = [("v1", 0, 10, "A"), ("v2", 0, 10, "A"), ("v2", 20, 30, "B")]
PROPS = [("v1", 0, 10, None, 0.9), ("v1", 50, 60, None, 0.8),
         ("v2", 20, 30, None, 0.9), ("v2", 0, 4, None, 0.8)]


def test_hand_computed_ar_an_curve_and_auc():
    # 4 proposals, 2 videos, max AN 2 -> ratio 1, every proposal kept, pcn_j = j/100,
    # AN_j = 2j/100. A video uses int(2 * j/100) proposals: 0 below j=50, then its top one
    # (both top proposals hit a GT: recall 2/3), the second ones add nothing at tIoU .5.
    r = evaluate_proposals(GroundTruth.from_records(GT), Predictions.from_records(PROPS), [0.5],
                           max_avg_nr_proposals=2, recall_at=(1, 2))
    assert np.allclose(r.AN, np.arange(1, 101) / 50)
    assert (r.AR[:49] == 0).all() and np.allclose(r.AR[49:], 2 / 3)
    # area: ramp from AN .98 to 1.0 (0 -> 2/3) plus 2/3 over [1, 2]; AUC = area / AN[-1]
    area = 0.02 * (2 / 3) / 2 + 1.0 * (2 / 3)
    assert r.area == pytest.approx(area, abs=1e-12)
    assert r.AUC == pytest.approx(area / 2, abs=1e-12)
    assert r.AUC_percent == pytest.approx(100 * area / 2, abs=1e-10)
    assert r.recall_at == {1: pytest.approx(2 / 3), 2: pytest.approx(2 / 3)}


def test_recall_at_n_counts_lower_overlaps_at_lower_thresholds():
    # at tIoU .3 the second proposal of v2 ([0,4], tIoU .4) recalls the third GT
    r = evaluate_proposals(GroundTruth.from_records(GT), Predictions.from_records(PROPS),
                           [0.3], max_avg_nr_proposals=2, recall_at=(1, 2))
    assert r.recall_at[1] == pytest.approx(2 / 3)
    assert r.recall_at[2] == 1.0


def test_json_document_has_the_documented_keys():
    r = evaluate_proposals(GroundTruth.from_records(GT), Predictions.from_records(PROPS), [0.5],
                           max_avg_nr_proposals=2, recall_at=(50,))
    doc = r.to_json()
    assert doc["task"] == "proposal" and len(doc["AN"]) == len(doc["AR"]) == 100
    assert set(doc["recall_at"]) == {"50"} and 0 <= doc["AUC"] <= 1


def test_no_proposal_on_any_ground_truth_video_is_an_error():
    with pytest.raises(InputError, match="no proposal is kept"):
        evaluate_proposals(GroundTruth.from_records(GT),
                           Predictions.from_records([("other", 0, 1, None, 1.0)]), [0.5])


@st.composite
def proposal_case(draw):
    gt = [(f"v{v}", float(s), float(s + d), "x")
          for v, s, d in draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 12),
                                                 st.integers(0, 5)), min_size=1, max_size=12))]
    # integer scores give an int64 array (as pandas would), whose argsort differs from float64's
    scores = st.sampled_from([1, 2, 2, 3] if draw(st.booleans()) else [0.2, 0.5, 0.5, 0.9])
    props = [(f"v{v}", float(s), float(s + d), None, draw(scores))
             for v, s, d in draw(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 12),
                                                    st.integers(0, 5)), min_size=1, max_size=80))]
    return gt, props


@settings(max_examples=120, deadline=None)
@given(proposal_case(), st.sampled_from([None, 1, 3, 10, 100]))
def test_fast_path_equals_oracle_bit_for_bit(case, max_avg):
    gt_rows, props = case
    n_videos = len({g[0] for g in gt_rows})
    effective = max_avg or float(len(props)) / n_videos
    thresholds = (0.1, 0.5, 0.75)
    try:
        expected = oracle_proposals(gt_rows, props, thresholds, effective, recall_at=(1, 5))
    except ZeroDivisionError:       # the official code divides by the kept total too
        with pytest.raises(InputError):
            evaluate_proposals(GroundTruth.from_records(gt_rows), Predictions.from_records(props),
                               thresholds, max_avg_nr_proposals=max_avg)
        return
    recall, avg, ppv, area, at = expected
    r = evaluate_proposals(GroundTruth.from_records(gt_rows), Predictions.from_records(props),
                           thresholds, max_avg_nr_proposals=max_avg, recall_at=(1, 5))
    assert np.array_equal(r.recall, recall)
    assert np.array_equal(r.AR, avg) and np.array_equal(r.AN, ppv)
    assert r.area == area
    assert r.recall_at == at
