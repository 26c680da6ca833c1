"""Detection mAP at tIoU thresholds: the ActivityNet algorithm, vectorised.

The numbers equal ``Evaluation/eval_detection.py`` of activitynet/ActivityNet
bit for bit (same float operations in the same order), including its corner
cases:

* per class, predictions are ranked with ``np.argsort(scores)[::-1]`` on the
  class's scores in file order (equal scores fall where numpy's default
  introsort puts them; we call the very same ``np.argsort`` on the very same
  array, so ties land identically on the same numpy);
* each prediction takes the unmatched ground truth (same class and video) of
  highest tIoU, walking ``np.argsort(tiou)[::-1]``; a tIoU below the threshold
  ends the walk (false positive); a zero-length prediction against a
  zero-length ground truth has tIoU 0/0 = NaN, which the official walk accepts
  as a match, and so do we;
* AP is the VOC-2011 interpolated area (precision envelope from the right);
  a class without predictions scores 0; mAP is the mean over ground-truth
  classes in order of first appearance; predictions on videos without ground
  truth of that class are false positives.

Speed: greedy matching is sequential only among predictions of the same
(class, video). We gather, for every prediction, its *candidate* ground truths
(tIoU >= the smallest threshold, or NaN) in preference order, and then run the
greedy step for the k-th prediction of all (class, video) groups at once, for
all thresholds at once. Only the AP sums are per class and threshold (they
must be ``np.sum`` over the same compact array to round identically).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from tadkit.errors import InputError
from tadkit.evaluate.align import Alignment, align
from tadkit.evaluate.arrays import encode, stable_argsort
from tadkit.evaluate.io import GroundTruth, Predictions

#: ActivityNet thresholds exactly as the official code builds them.
ANET_TIOU = np.linspace(0.5, 0.95, 10)


@dataclass
class DetectionResult:
    """mAP per threshold (fractions, not percent).

    ``ap`` (T, C): AP of class ``labels[c]`` at ``tiou_thresholds[t]``;
    ``mAP`` (T,) = ``ap.mean(axis=1)``; ``average_mAP`` = mean of ``mAP`` over
    the thresholds in ``average_over`` (all of them by default).
    ``curves`` (when asked for) maps class -> (precision (T, n), recall (T, n))
    in ranked order.
    """

    tiou_thresholds: np.ndarray
    labels: list[str]
    ap: np.ndarray
    mAP: np.ndarray
    average_mAP: float
    average_over: np.ndarray
    num_videos: int
    num_ground_truth: int
    num_predictions: int
    ambiguous_rule: str = "anet-style"
    notes: list[str] = field(default_factory=list)
    alignment: Alignment | None = None
    curves: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def per_class_AP(self) -> dict[str, list[float]]:
        """class -> AP at every threshold."""
        return {lab: self.ap[:, c].tolist() for c, lab in enumerate(self.labels)}

    @property
    def class_average_AP(self) -> np.ndarray:
        """(C,) each class's AP averaged over the thresholds in ``average_over`` -- the
        set the headline ``average_mAP`` averages (THUMOS14: 0.3-0.7 of 0.1-0.7)."""
        return self.ap[np.isin(self.tiou_thresholds, self.average_over)].mean(axis=0)

    def to_json(self) -> dict:
        """The ``--json`` document (fractions)."""
        return {
            "task": "detection",
            "tiou_thresholds": [float(t) for t in self.tiou_thresholds],
            "mAP": [float(x) for x in self.mAP],
            "average_mAP": float(self.average_mAP),
            "average_over": [float(t) for t in self.average_over],
            "per_class_AP": self.per_class_AP,
            "num_videos": self.num_videos,
            "num_ground_truth": self.num_ground_truth,
            "num_predictions": self.num_predictions,
            "ambiguous": self.ambiguous_rule,
            "notes": list(self.notes),
        }


def evaluate_detection(gt: GroundTruth, preds: Predictions,
                       tiou_thresholds: Sequence[float] = ANET_TIOU, *,
                       average_over: Sequence[float] | None = None,
                       blocked: Sequence[str] = (), ambiguous: str = "anet-style",
                       match_v_prefix: bool = True, keep_curves: bool = False) -> DetectionResult:
    """Official ActivityNet detection mAP of ``preds`` against ``gt``.

    ``tiou_thresholds``: values in (0, 1]. ``average_over``: the subset of them
    averaged into ``average_mAP`` (THUMOS14 reports 0.1-0.7 but averages 0.3-0.7).
    ``ambiguous``: ``"anet-style"`` ignores ``gt.ambiguous``; ``"official"``
    applies the THUMOS'14 toolkit rule (a false positive overlapping an
    Ambiguous segment of its video is dropped from the ranked list).
    """
    thresholds = check_thresholds(tiou_thresholds)
    avg = thresholds if average_over is None else check_thresholds(average_over)
    sel = np.array([np.flatnonzero(thresholds == t)[0] if np.any(thresholds == t) else -1 for t in avg])
    if (sel < 0).any():
        raise InputError(None, f"average_over {avg.tolist()} is not a subset of the thresholds "
                               f"{thresholds.tolist()}")
    if ambiguous not in ("anet-style", "official"):
        raise InputError(None, f"unknown ambiguous rule {ambiguous!r} (use anet-style or official)")
    gt, preds, report = align(gt, preds, blocked=blocked, match_v_prefix=match_v_prefix)
    if len(gt) == 0:
        raise InputError(gt.source, "no ground-truth instances to evaluate (after subset and "
                                    "blocked-video filtering)")
    labels = gt.labels
    videos = list(dict.fromkeys(gt.video.tolist()))
    gl, pl = encode(labels, gt.label), encode(labels, preds.label)
    gv, pv = encode(videos, gt.video), encode(videos, preds.video)

    exempt = None
    if ambiguous == "official" and gt.ambiguous is not None and len(gt.ambiguous):
        exempt = overlaps_any(preds.video, preds.start, preds.end, gt.ambiguous.video,
                              gt.ambiguous.start, gt.ambiguous.end)
    ap, curves = average_precision_table(gv, gt.start, gt.end, gl, pv, preds.start, preds.end, pl,
                                         preds.score, len(labels), thresholds,
                                         fp_exempt=exempt, keep_curves=keep_curves)
    mAP = ap.mean(axis=1)
    average = float(mAP[sel].mean()) if len(sel) != len(thresholds) else float(mAP.mean())
    notes = list(gt.notes) + list(preds.notes) + report.notes()
    if exempt is not None:
        notes.append(f"THUMOS'14 Ambiguous rule: {int(exempt.sum())} predictions overlap an "
                     "Ambiguous segment and are dropped whenever they are false positives")
    return DetectionResult(
        tiou_thresholds=thresholds, labels=labels, ap=ap, mAP=mAP, average_mAP=average,
        average_over=avg, num_videos=len(gt.videos), num_ground_truth=len(gt),
        num_predictions=len(preds), ambiguous_rule=ambiguous, notes=notes, alignment=report,
        curves=None if curves is None else {labels[c]: pr for c, pr in curves.items()})


def average_precision_table(gt_video: np.ndarray, gt_start: np.ndarray, gt_end: np.ndarray,
                            gt_label: np.ndarray, pred_video: np.ndarray, pred_start: np.ndarray,
                            pred_end: np.ndarray, pred_label: np.ndarray, pred_score: np.ndarray,
                            num_classes: int, tiou_thresholds: np.ndarray,
                            fp_exempt: np.ndarray | None = None, keep_curves: bool = False):
    """AP of every class at every threshold, on integer-coded inputs.

    ``gt_*`` (G,): video code >= 0, start/end seconds, class code in [0, C).
    ``pred_*`` (P,): video code (-1: no ground truth in that video), seconds,
    class code, score (int64 or float64), all in file order. ``fp_exempt`` (P,)
    bool marks predictions whose false positives are dropped. Returns ``ap``
    (T, C) float64 and, with ``keep_curves``, {class: (precision, recall)}.
    """
    thr = np.asarray(tiou_thresholds, dtype=np.float64)
    T, C = len(thr), num_classes
    order, bounds = _rank_by_class(pred_label, pred_score, C)
    tp = _greedy_match(gt_video, gt_start, gt_end, gt_label, pred_video[order], pred_start[order],
                       pred_end[order], pred_label[order], thr)
    npos = np.bincount(gt_label, minlength=C)
    removed = None
    if fp_exempt is not None:
        removed = ~tp & fp_exempt[order][None, :]
    ap = np.zeros((T, C))
    curves = {} if keep_curves else None
    tp_cum_all = np.cumsum(tp.view(np.uint8), axis=1, dtype=np.int32)   # int32: half the memory traffic
    for c in range(C):
        a, b = bounds[c], bounds[c + 1]
        if a == b:
            continue
        n = float(npos[c])
        if removed is None or not removed[:, a:b].any():
            # running counts are integers, exact in float64: slicing a global cumsum
            # gives the very numbers a per-class cumsum would
            tp_cum = (tp_cum_all[:, a:b] - (tp_cum_all[:, a - 1:a] if a else 0)).astype(np.float64)
            fp_cum = np.arange(1.0, b - a + 1.0) - tp_cum
            rec = tp_cum / n
            prec = tp_cum / (tp_cum + fp_cum)
            ap[:, c] = interpolated_ap_rows(prec, rec)
            if curves is not None:
                curves[c] = (prec, rec)
        else:
            precs, recs = [], []
            for t in range(T):
                keep = ~removed[t, a:b]
                tpt = tp[t, a:b][keep]
                if tpt.size == 0:
                    precs.append(np.zeros(0)); recs.append(np.zeros(0))
                    continue
                tp_cum = np.cumsum(tpt, dtype=np.float64)
                fp_cum = np.cumsum(~tpt, dtype=np.float64)
                rec = tp_cum / n
                prec = tp_cum / (tp_cum + fp_cum)
                ap[t, c] = interpolated_ap_rows(prec[None], rec[None])[0]
                precs.append(prec); recs.append(rec)
            if curves is not None:
                curves[c] = (precs, recs)
    return ap, curves


def interpolated_ap_rows(prec: np.ndarray, rec: np.ndarray) -> np.ndarray:
    """VOC-2011 interpolated AP of each row of ``prec``/``rec`` (R, n) -> (R,).

    Pads with precision 0 / recall 0 in front and precision 0 / recall 1 at the
    end, makes precision non-increasing from the right, and sums
    ``(r[i] - r[i-1]) * p[i]`` where recall changes -- with ``np.sum`` over the
    same compact array as the official code, so the rounding is identical.
    """
    R = prec.shape[0]
    zeros = np.zeros((R, 1))
    mprec = np.concatenate([zeros, prec, zeros], axis=1)
    mrec = np.concatenate([zeros, rec, np.ones((R, 1))], axis=1)
    env = np.maximum.accumulate(mprec[:, ::-1], axis=1)[:, ::-1]
    change = mrec[:, 1:] != mrec[:, :-1]
    terms = (mrec[:, 1:] - mrec[:, :-1]) * env[:, 1:]
    return np.array([np.sum(terms[r][change[r]]) for r in range(R)], dtype=np.float64)


def segment_tiou(pred_start, pred_end, gt_start, gt_end):
    """tIoU of paired segments, element-wise (seconds in, ratio out).

    Same float expression as the official ``segment_iou``: intersection
    ``max(min(ends) - max(starts), 0)``, union ``len_gt + len_pred - inter``;
    two zero-length segments give NaN (0/0), as there.
    """
    inter = np.minimum(pred_end, gt_end) - np.maximum(pred_start, gt_start)
    inter = inter.clip(0)
    union = (gt_end - gt_start) + (pred_end - pred_start) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter.astype(float, copy=False) / union


def overlaps_any(video, start, end, seg_video, seg_start, seg_end) -> np.ndarray:
    """(P,) bool: segment ``i`` has a positive-length intersection with a segment
    of the same video in ``seg_*`` (the THUMOS'14 toolkit's "overlaps")."""
    out = np.zeros(len(video), dtype=bool)
    if len(seg_video) == 0 or len(video) == 0:
        return out
    keys = list(dict.fromkeys(np.asarray(seg_video).tolist()))
    sv, pv = encode(keys, seg_video), encode(keys, video)
    so = np.argsort(sv, kind="stable")
    lo = np.searchsorted(sv[so], pv, "left")
    hi = np.searchsorted(sv[so], pv, "right")
    cnt = np.where(pv >= 0, hi - lo, 0)
    pi, si = _expand(lo, cnt)
    si = so[si]
    inter = np.minimum(end[pi], seg_end[si]) - np.maximum(start[pi], seg_start[si])
    np.logical_or.at(out, pi[inter > 0], True)
    return out


def check_thresholds(values: Sequence[float]) -> np.ndarray:
    """tIoU thresholds as float64 (T,), each in (0, 1]; an InputError otherwise."""
    arr = np.asarray(list(values), dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise InputError(None, "no tIoU thresholds given")
    bad = arr[~((arr > 0) & (arr <= 1))]
    if bad.size:
        raise InputError(None, f"tIoU thresholds must lie in (0, 1], got {float(bad[0])!r}")
    return arr


# --------------------------------------------------------------------------- helpers
def _rank_by_class(pred_label: np.ndarray, pred_score: np.ndarray, C: int):
    """Global permutation: class blocks in class order, each ranked as the official
    ``scores.argsort()[::-1]`` on the class's scores in file order. Returns
    (order (P,), bounds (C+1,))."""
    by_class = stable_argsort(pred_label)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(pred_label, minlength=C))])
    order = np.empty(len(pred_label), dtype=np.int64)
    for c in range(C):
        a, b = bounds[c], bounds[c + 1]
        if a < b:
            seg = by_class[a:b]
            order[a:b] = seg[pred_score[seg].argsort()[::-1]]
    return order, bounds


def _greedy_match(gv, gs, ge, gl, pv, ps, pe, pl, thr) -> np.ndarray:
    """True-positive flags (T, P) of ranked predictions (class blocks, score order)."""
    T, P, G = len(thr), len(pv), len(gv)
    tp = np.zeros((T, P), dtype=bool)
    if P == 0 or G == 0:
        return tp
    V = int(gv.max()) + 1
    gkey = gl * V + gv
    gorder = np.argsort(gkey, kind="stable")          # groups in file order inside
    gkey_sorted = gkey[gorder]
    group_first = np.flatnonzero(np.r_[True, gkey_sorted[1:] != gkey_sorted[:-1]])
    group_size = np.diff(np.append(group_first, G))
    pkey = pl * V + np.where(pv >= 0, pv, 0)
    gid = encode(gkey_sorted[group_first], pkey)      # group of each prediction, -1: none
    gid[pv < 0] = -1
    lo = np.where(gid >= 0, group_first[gid], 0)
    hi = lo + np.where(gid >= 0, group_size[gid], 0)
    cnt = hi - lo
    pair_p, pair_s = _expand(lo, cnt)                 # pair_s: position in gorder
    if pair_p.size == 0:
        return tp
    tiou = segment_tiou(ps[pair_p], pe[pair_p], gs[gorder[pair_s]], ge[gorder[pair_s]])
    cand = ~(tiou < thr.min())                        # NaN stays a candidate
    pair_p, pair_s, tiou = pair_p[cand], pair_s[cand], tiou[cand]
    if pair_p.size == 0:
        return tp
    # preference order: descending tIoU, NaN first (the reversed ascending argsort);
    # pairs are grouped by prediction already, only blocks of several need sorting
    key = np.where(np.isnan(tiou), -np.inf, -tiou)
    multi = np.r_[pair_p[1:] == pair_p[:-1], False] | np.r_[False, pair_p[1:] == pair_p[:-1]]
    if multi.any():
        m = np.flatnonzero(multi)
        o = np.arange(pair_p.size)
        o[m] = m[np.lexsort((-pair_s[m], key[m], pair_p[m]))]
        pair_p, pair_s, tiou, key = pair_p[o], pair_s[o], tiou[o], key[o]
    tied = (pair_p[1:] == pair_p[:-1]) & (key[1:] == key[:-1])
    if tied.any():
        pair_p, pair_s = _exact_tie_order(pair_p, pair_s, np.unique(pair_p[1:][tied]),
                                          lo, hi, gorder, gs, ge, ps, pe, thr.min())
        tiou = segment_tiou(ps[pair_p], pe[pair_p], gs[gorder[pair_s]], ge[gorder[pair_s]])
    # one row per prediction with candidates; its candidates are pair_*[first:first+count]
    pair_gt = gorder[pair_s]
    first = np.flatnonzero(np.r_[True, pair_p[1:] != pair_p[:-1]])
    rows_p = pair_p[first]
    counts = np.diff(np.append(first, pair_p.size))
    # rank of each row inside its (class, video) group, in score order
    grp = pkey[rows_p]
    g_o = np.argsort(grp, kind="stable")
    g_sorted = grp[g_o]
    starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
    rank = np.empty(rows_p.size, dtype=np.int64)
    rank[g_o] = np.arange(rows_p.size) - np.repeat(starts, np.diff(np.append(starts, rows_p.size)))
    by_rank = stable_argsort(rank)
    rank_bounds = np.searchsorted(rank[by_rank], np.arange(int(rank.max()) + 2))
    locked = np.zeros((G + 1, T), dtype=bool)                        # row G: padding
    tp_rows = np.zeros((rows_p.size, T), dtype=bool)
    single = counts == 1
    for k in range(len(rank_bounds) - 1):
        rows = by_rank[rank_bounds[k]:rank_bounds[k + 1]]
        # rows of this step belong to distinct groups: their ground truths are disjoint
        one = rows[single[rows]]
        if one.size:
            g1 = pair_gt[first[one]]
            ok = ~(tiou[first[one]][:, None] < thr) & ~locked[g1]    # (n, T); NaN passes
            locked[g1] |= ok
            tp_rows[one] = ok
        many = rows[~single[rows]]
        if many.size:
            width = int(counts[many].max())
            j = np.arange(width)
            valid = j[None, :] < counts[many][:, None]
            idx = np.where(valid, first[many][:, None] + j[None, :], 0)
            cg = np.where(valid, pair_gt[idx], G)                    # (n, K)
            ci = np.where(valid, tiou[idx], -np.inf)
            ok = ~(ci[:, :, None] < thr) & ~locked[cg]               # (n, K, T)
            pick = np.take_along_axis(cg, ok.argmax(axis=1), axis=1)  # (n, T)
            has = ok.any(axis=1)
            n_i, t_i = np.nonzero(has)
            locked[pick[n_i, t_i], t_i] = True
            tp_rows[many] = has
    tp[:, rows_p] = tp_rows.T
    return tp


def _exact_tie_order(pair_p, pair_s, tied_preds, lo, hi, gorder, gs, ge, ps, pe, thr_min):
    """Reorder the candidates of predictions with equal tIoUs exactly as the official
    ``np.argsort(tiou_row)[::-1]`` over the prediction's whole ground-truth group."""
    rank = np.arange(pair_p.size, dtype=np.int64)
    block_lo = np.searchsorted(pair_p, tied_preds, "left")
    block_hi = np.searchsorted(pair_p, tied_preds, "right")
    for p, a, b in zip(tied_preds.tolist(), block_lo.tolist(), block_hi.tolist()):
        slots = np.arange(lo[p], hi[p])
        row = segment_tiou(ps[p], pe[p], gs[gorder[slots]], ge[gorder[slots]])
        walk = slots[row.argsort()[::-1]]
        walk = walk[~(segment_tiou(ps[p], pe[p], gs[gorder[walk]], ge[gorder[walk]]) < thr_min)]
        position = {s: i for i, s in enumerate(walk.tolist())}
        rank[a:b] = a + np.array([position[s] for s in pair_s[a:b].tolist()])
    o = np.argsort(rank, kind="stable")
    return pair_p[o], pair_s[o]


def _expand(lo: np.ndarray, cnt: np.ndarray):
    """Pairs (i, lo[i] + j) for j < cnt[i]: returns (owner (N,), slot (N,))."""
    total = int(cnt.sum())
    owner = np.repeat(np.arange(len(cnt)), cnt)
    offset = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    return owner, lo[owner] + offset
