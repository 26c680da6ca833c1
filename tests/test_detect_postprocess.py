"""Post-processing against slow reference loops and hand-made cases."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tadkit.detect.config import PostprocessConfig
from tadkit.detect.postprocess import (Detections, detections_to_json, fuse_classifier, load_candidates,
                                       load_classifier_scores, merge_windows, nms, postprocess_video,
                                       save_candidates, score_voting, soft_nms, to_seconds)
from tadkit.errors import InputError
from tadkit.timeline import TimeAxis


def _iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def reference_soft_nms(segments, scores, labels, method, sigma, thr, min_score, agnostic, max_keep):
    """Textbook greedy loop over Python lists, one candidate at a time."""
    items = [[float(s), (float(a), float(b)), int(l), i]
             for i, ((a, b), s, l) in enumerate(zip(segments, scores, labels)) if s > min_score]
    out = []
    while items and len(out) < max_keep:
        best_k = 0
        for k in range(1, len(items)):
            if items[k][0] > items[best_k][0]:
                best_k = k
        best = items.pop(best_k)
        out.append((best[3], best[0]))
        rest = []
        for it in items:
            iou = _iou(it[1], best[1]) if (agnostic or it[2] == best[2]) else 0.0
            if method == "hard":
                if iou > thr:
                    continue
            elif method == "linear":
                if iou > thr:
                    it[0] *= 1.0 - iou
            else:
                it[0] *= math.exp(-iou * iou / sigma)
            if method == "hard" or it[0] > min_score:
                rest.append(it)
        items = rest
    return out


def _random_candidates(rng, n, classes=3):
    start = rng.uniform(0, 50, n)
    seg = np.stack([start, start + rng.uniform(0.5, 15, n)], 1)
    return seg, rng.uniform(0.01, 1, n), rng.integers(0, classes, n)


@pytest.mark.parametrize("method", ["hard", "linear", "gaussian"])
@pytest.mark.parametrize("agnostic", [False, True])
def test_soft_nms_matches_reference_loop(method, agnostic):
    rng = np.random.default_rng(0)
    for trial in range(8):
        seg, sc, lab = _random_candidates(rng, int(rng.integers(1, 60)))
        min_score = -np.inf if method == "hard" else 0.05
        keep, scores = soft_nms(seg, sc, lab, method=method, sigma=0.4, iou_threshold=0.3,
                                min_score=min_score, class_agnostic=agnostic, max_keep=25)
        ref = reference_soft_nms(seg, sc, lab, method, 0.4, 0.3, min_score, agnostic, 25)
        assert keep.tolist() == [i for i, _ in ref]
        np.testing.assert_allclose(scores, [s for _, s in ref], rtol=1e-12)


def test_hard_nms_hand_case():
    seg = np.array([[0, 10], [1, 10], [20, 30], [0, 9], [21, 29]], dtype=float)
    sc = np.array([0.9, 0.8, 0.7, 0.6, 0.95])
    lab = np.array([0, 0, 0, 1, 0])
    # per class: [21,29] (0.95) suppresses [20,30]; [0,10] suppresses [1,10]; [0,9] is class 1
    assert nms(seg, sc, lab, iou_threshold=0.5).tolist() == [4, 0, 3]
    assert nms(seg, sc, lab, iou_threshold=0.5, class_agnostic=True).tolist() == [4, 0]


def test_gaussian_decay_formula():
    seg = np.array([[0.0, 10.0], [5.0, 15.0]])
    keep, scores = soft_nms(seg, np.array([1.0, 0.8]), np.zeros(2), method="gaussian", sigma=0.5,
                            min_score=0.0)
    iou = 5 / 15
    assert keep.tolist() == [0, 1]
    assert scores[1] == pytest.approx(0.8 * math.exp(-iou ** 2 / 0.5))


def test_score_voting_weighted_mean():
    pool = Detections([[0, 10], [2, 12], [40, 50], [1, 11]], [0.9, 0.3, 0.8, 0.5], [0, 0, 0, 1])
    kept = pool.select(np.array([0, 2]))
    voted = score_voting(kept, pool, iou_threshold=0.6)
    # [0,10] votes with [2,12] (IoU 8/12 >= 0.6), not with [1,11] (other class)
    np.testing.assert_allclose(voted.segments[0], [(0.9 * 0 + 0.3 * 2) / 1.2, (0.9 * 10 + 0.3 * 12) / 1.2])
    np.testing.assert_allclose(voted.segments[1], [40, 50])
    agn = score_voting(kept, pool, iou_threshold=0.6, class_agnostic=True)
    np.testing.assert_allclose(agn.segments[0, 0], (0.3 * 2 + 0.5 * 1) / 1.7)


def test_postprocess_pipeline_min_score_and_topk():
    rng = np.random.default_rng(1)
    seg, sc, lab = _random_candidates(rng, 300)
    cfg = PostprocessConfig(method="gaussian", sigma=0.5, min_score=0.2, max_per_video=10)
    out = postprocess_video(Detections(seg, sc, lab), cfg)
    assert len(out) == 10
    assert np.all(np.diff(out.scores) <= 0)
    assert np.all(out.scores > 0.2)
    hard = postprocess_video(Detections(seg, sc, lab), PostprocessConfig(method="hard", iou_threshold=0.2,
                                                                          max_per_video=1000))
    for c in range(3):  # no two kept segments of one class overlap more than the threshold
        s = hard.segments[hard.labels == c]
        for i in range(len(s)):
            for j in range(i + 1, len(s)):
                assert _iou(s[i], s[j]) <= 0.2


def test_merge_windows_then_nms_removes_duplicates():
    axis = TimeAxis(origin=0.5, step=1.0, length=100)
    w0, w1 = axis.window(0, 32), axis.window(16, 32)
    # the same action (seconds 20.5..26.5) seen by both windows, in their own grid units
    a = to_seconds(Detections([[20, 26]], [0.9], [1]), w0)
    b = to_seconds(Detections([[4, 10], [20, 25]], [0.8, 0.4], [1, 2]), w1)
    merged = merge_windows([("v", a), ("u", Detections.empty()), ("v", b)])
    assert list(merged) == ["v", "u"] and len(merged["v"]) == 3
    np.testing.assert_allclose(merged["v"].segments[:2], [[20.5, 26.5], [20.5, 26.5]])
    np.testing.assert_allclose(merged["v"].segments[2], [36.5, 41.5])
    out = postprocess_video(merged["v"], PostprocessConfig(method="hard", iou_threshold=0.5))
    assert sorted(out.labels.tolist()) == [1, 2] and out.scores[0] == 0.9


def test_classifier_fusion_topk_sqrt():
    props = Detections([[0, 5], [10, 20]], [0.64, 0.25], [0, 0])
    out = fuse_classifier(props, np.array([0.1, 0.81, 0.36, 0.0]), topk=2)
    got = sorted(zip(out.labels.tolist(), out.scores.round(6).tolist(), out.segments[:, 0].tolist()))
    assert got == [(1, 0.45, 10.0), (1, 0.72, 0.0), (2, 0.3, 10.0), (2, 0.48, 0.0)]
    assert np.all(np.diff(out.scores) <= 0)


def test_load_classifier_scores_reorders_and_validates(tmp_path):
    p = tmp_path / "cls.json"
    p.write_text(json.dumps({"results": {"v1": [0.1, 0.7, 0.2]}, "class": ["b", "a", "c"]}))
    got = load_classifier_scores(p, ["a", "b"])
    np.testing.assert_allclose(got["v1"], [0.7, 0.1])
    with pytest.raises(InputError, match="cls.json.*no scores for classes \\['z'\\]"):
        load_classifier_scores(p, ["a", "z"])
    p.write_text(json.dumps({"results": {"v1": [0.1]}, "class": ["b", "a", "c"]}))
    with pytest.raises(InputError, match="v1"):
        load_classifier_scores(p, ["a"])
    p.write_text("{oops")
    with pytest.raises(InputError, match="malformed JSON: .* at line 1 column 2"):
        load_classifier_scores(p, ["a"])


def test_official_json_clips_and_names(tmp_path):
    det = Detections([[-2.0, 5.0], [8.0, 14.0], [10.5, 12.0]], [0.3, 0.9, 0.95], [1, 0, 0])
    doc = detections_to_json({"v": det}, ["Jump", "Run"], {"v": 10.0}, settings={"sigma": 0.5})
    assert doc["results"]["v"] == [{"label": "Jump", "score": 0.9, "segment": [8.0, 10.0]},
                                   {"label": "Run", "score": 0.3, "segment": [0.0, 5.0]}]
    assert doc["external_data"]["postprocess"] == {"sigma": 0.5}
    save_candidates(tmp_path / "c.json", {"v": det}, {"v": 10.0}, ["Jump", "Run"], {"k": 1})
    cands, dur, names, meta = load_candidates(tmp_path / "c.json")
    np.testing.assert_array_equal(cands["v"].segments, det.segments)  # raw: unclipped, all kept
    assert dur == {"v": 10.0} and names == ["Jump", "Run"] and meta == {"k": 1}
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match="not a tadkit candidates file"):
        load_candidates(tmp_path / "bad.json")
