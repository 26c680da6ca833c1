"""A deliberately simple, slow re-statement of the ActivityNet evaluation.

One loop per class, one per prediction, one per threshold, one per ground
truth -- the algorithm exactly as the ActivityNet challenge describes it, with
no vectorisation, so that it is easy to check by reading. The fast path in
``tadkit.evaluate`` must agree with it to the last bit.

Inputs are plain lists:
  ground truth: [(video, start, end, label), ...]
  predictions:  [(video, start, end, label, score), ...]   (label None for proposals)
in file order, after any id alignment.
"""
from __future__ import annotations

import numpy as np


def oracle_tiou(p_start, p_end, g_starts, g_ends):
    """tIoU of one prediction against arrays of ground truths (official formula)."""
    g_starts = np.asarray(g_starts, dtype=np.float64)
    g_ends = np.asarray(g_ends, dtype=np.float64)
    inter = (np.minimum(p_end, g_ends) - np.maximum(p_start, g_starts)).clip(0)
    union = (g_ends - g_starts) + (p_end - p_start) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter.astype(float) / union


def oracle_interpolated_ap(prec, rec):
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0] + 1
    return np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx])


def oracle_detection(gt, preds, thresholds, ambiguous=(), score_dtype=None):
    """(ap (T, C), labels, mAP (T,)) with the official rules.

    ``ambiguous``: [(video, start, end)]; when given, a false positive with a
    positive-length intersection with one of them is dropped (THUMOS'14 rule).
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    labels = []
    for row in gt:
        if row[3] not in labels:
            labels.append(row[3])
    scores_all = [p[4] for p in preds]
    if score_dtype is None:
        score_dtype = np.int64 if scores_all and all(isinstance(s, int) for s in scores_all) \
            else np.float64
    ap = np.zeros((len(thresholds), len(labels)))
    gt_by_label, pred_by_label = {}, {}
    for g in gt:
        gt_by_label.setdefault(g[3], []).append(g)
    for p in preds:
        pred_by_label.setdefault(p[3], []).append(p)
    for c, label in enumerate(labels):
        class_gt = gt_by_label[label]
        class_pred = pred_by_label.get(label, [])
        if not class_pred:
            continue
        members_of = {}                      # video -> indices into class_gt, file order
        for j, g in enumerate(class_gt):
            members_of.setdefault(g[0], []).append(j)
        scores = np.array([p[4] for p in class_pred], dtype=score_dtype)
        ranked = [class_pred[i] for i in scores.argsort()[::-1]]
        locked = np.zeros((len(thresholds), len(class_gt)), dtype=bool)
        flags = [[] for _ in thresholds]     # per threshold: 1 = TP, 0 = FP (None = dropped)
        for video, ps, pe, _, _ in ranked:
            members = members_of.get(video, [])
            tiou = oracle_tiou(ps, pe, [class_gt[j][1] for j in members],
                               [class_gt[j][2] for j in members])
            walk = tiou.argsort()[::-1] if members else []
            near_ambiguous = any(v == video and min(pe, e) - max(ps, s) > 0
                                 for v, s, e in ambiguous)
            for t, thr in enumerate(thresholds):
                result = 0
                for k in walk:
                    if tiou[k] < thr:
                        break
                    if locked[t, members[k]]:
                        continue
                    locked[t, members[k]] = True
                    result = 1
                    break
                if result == 0 and near_ambiguous:
                    result = None
                flags[t].append(result)
        for t in range(len(thresholds)):
            kept = [f for f in flags[t] if f is not None]
            if not kept:
                continue
            tp = np.cumsum(np.array(kept, dtype=np.float64))
            fp = np.cumsum(1.0 - np.array(kept, dtype=np.float64))
            rec = tp / float(len(class_gt))
            prec = tp / (tp + fp)
            ap[t, c] = oracle_interpolated_ap(prec, rec)
    return ap, labels, ap.mean(axis=1)


def oracle_proposals(gt, preds, thresholds, max_avg_nr_proposals=100, recall_at=(),
                     score_dtype=None):
    """(recall (T, 100), avg_recall (100,), proposals_per_video (100,), auc, recall_at dict)."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    videos = []
    for row in gt:
        if row[0] not in videos:
            videos.append(row[0])
    scores_all = [p[4] for p in preds]
    if score_dtype is None:
        score_dtype = np.int64 if scores_all and all(isinstance(s, int) for s in scores_all) \
            else np.float64
    ratio = max_avg_nr_proposals * float(len(videos)) / len(preds)
    per_video = []          # (tiou matrix (n_gt, kept) or None, all-proposal tiou matrix)
    total_kept = 0
    gt_by_video, pred_by_video = {}, {}
    for r in gt:
        gt_by_video.setdefault(r[0], []).append(r)
    for r in preds:
        pred_by_video.setdefault(r[0], []).append(r)
    for video in videos:
        g = gt_by_video[video]
        p = pred_by_video.get(video, [])
        if not p:
            per_video.append((len(g), None, None))
            continue
        scores = np.array([r[4] for r in p], dtype=score_dtype)
        p = [p[i] for i in scores.argsort()[::-1]]
        kept = min(int(len(p) * ratio), len(p))
        total_kept += kept
        full = np.empty((len(g), len(p)))
        for k, (_, s, e, _, _) in enumerate(p):
            full[:, k] = oracle_tiou(s, e, [r[1] for r in g], [r[2] for r in g])
        per_video.append((len(g), full[:, :kept], full))
    pcn = np.arange(1, 101) / 100.0 * (max_avg_nr_proposals * float(len(videos)) / total_kept)
    recall = np.empty((len(thresholds), 100))
    positives = sum(n for n, _, _ in per_video)
    for t, thr in enumerate(thresholds):
        matches = np.zeros((len(videos), 100))
        for v, (n, kept, _) in enumerate(per_video):
            if kept is None:
                continue
            hit = kept >= thr
            for j in range(100):
                limit = min(int(kept.shape[1] * pcn[j]), kept.shape[1])
                matches[v, j] = np.count_nonzero(hit[:, :limit].sum(axis=1))
        recall[t] = matches.sum(axis=0) / float(positives)
    avg = recall.mean(axis=0)
    ppv = pcn * (float(total_kept) / len(videos))
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    auc = float(trapezoid(avg, ppv))
    at = {}
    for N in recall_at:
        per_t = []
        for thr in thresholds:
            hit = 0
            for n, _, full in per_video:
                if full is None:
                    continue
                hit += int(np.count_nonzero((full[:, :N] >= thr).any(axis=1)))
            per_t.append(hit / float(positives))
        at[N] = float(np.mean(per_t))
    return recall, avg, ppv, auc, at


# --------------------------------------------------------------------------- test inputs
def jittered_predictions(gt, per_video=100, seed=0, jitter=0.15, random_fraction=0.3,
                         wrong_label_fraction=0.4, score_decimals=2, labels=None):
    """Deterministic noisy predictions for ground-truth rows [(video, start, end, label)].

    Each video gets ``per_video`` predictions: a ground truth of the video with
    boundaries moved by N(0, jitter * length), or (``random_fraction``) a random
    segment; the label is the ground truth's, or (``wrong_label_fraction``) a
    random class; scores are rounded to ``score_decimals`` (None: not rounded) so
    ties are common.
    Returns [(video, start, end, label, score)] grouped by video.
    """
    rng = np.random.default_rng(seed)
    labels = sorted({r[3] for r in gt}) if labels is None else list(labels)
    by_video = {}
    for r in gt:
        by_video.setdefault(r[0], []).append(r)
    out = []
    for video, rows in by_video.items():
        starts = np.array([r[1] for r in rows])
        ends = np.array([r[2] for r in rows])
        horizon = max(float(ends.max()), 3.0) * 1.1
        pick = rng.integers(len(rows), size=per_video)
        length = np.maximum(ends[pick] - starts[pick], 0.5)
        s = starts[pick] + rng.normal(0, jitter, per_video) * length
        e = ends[pick] + rng.normal(0, jitter, per_video) * length
        rand = rng.random(per_video) < random_fraction
        s[rand] = rng.uniform(0, horizon, rand.sum())
        e[rand] = s[rand] + rng.uniform(0.5, horizon / 3, rand.sum())
        s, e = np.minimum(s, e), np.maximum(s, e)
        s = np.clip(s, 0, None)
        e = np.maximum(e, s)
        wrong = rng.random(per_video) < wrong_label_fraction
        lab_idx = rng.integers(len(labels), size=per_video)
        score = rng.random(per_video)
        if score_decimals is not None:
            score = np.round(score, score_decimals)
        for k in range(per_video):
            label = labels[lab_idx[k]] if wrong[k] else rows[pick[k]][3]
            out.append((video, float(s[k]), float(e[k]), label, float(score[k])))
    return out


def load_anet_val_rows(path):
    """ActivityNet 1.3 validation ground truth rows from sample_detection_prediction.json."""
    import json

    with open(path) as fh:
        results = json.load(fh)["results"]
    return [(vid, float(a["segment"][0]), float(a["segment"][1]), a["label"])
            for vid, anns in results.items() for a in anns]
