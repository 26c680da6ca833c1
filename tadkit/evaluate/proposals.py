"""Proposal metrics: AR@AN, AUC and recall at fixed numbers per video.

AR@AN follows ``Evaluation/eval_proposal.py`` of activitynet/ActivityNet to
the bit:

* videos are the ground-truth videos with at least one instance (class-agnostic);
* each video's proposals are ranked by ``np.argsort(scores)[::-1]`` (scores in
  file order, so ties land where the official code puts them);
* ``ratio = max_avg_nr_proposals * n_videos / n_proposals`` where
  ``n_proposals`` counts *every* proposal given (also those on other videos),
  and a video keeps ``min(int(n_v * ratio), n_v)`` proposals;
* for AN fraction ``pcn_j = j/100 * max_avg * n_videos / kept_total``
  (j = 1..100) a video uses its first ``min(int(kept_v * pcn_j), kept_v)``
  proposals; a ground truth is recalled at threshold t if one of them has
  tIoU >= t (a 0/0 tIoU never counts);
* AR = recall averaged over the thresholds; AN = ``pcn * kept_total / n_videos``;
  AUC = trapezoid area of AR over AN divided by the last AN (the official
  prints ``100 * area / AN[-1]``; we keep the fraction).

Recall at N per video (AR@50/100/200/500, the THUMOS14 proposal convention):
each video's top ``N`` proposals, recall averaged over the same thresholds.

Speed: the tIoU of every (ground truth, proposal of its video) pair is computed
once; for each ground truth and threshold we keep only the rank of the first
proposal that reaches it, which answers every AN at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from tadkit.errors import InputError
from tadkit.evaluate.detection import ANET_TIOU, check_thresholds, segment_tiou
from tadkit.evaluate.align import Alignment, align
from tadkit.evaluate.arrays import distinct, encode
from tadkit.evaluate.io import GroundTruth, Predictions

#: the THUMOS14 proposal convention's fixed proposal numbers per video.
RECALL_AT = (50, 100, 200, 500)


@dataclass
class ProposalResult:
    """AR–AN curve and summaries (fractions, not percent).

    ``recall`` (T, 100) at each threshold and AN step; ``AR`` (100,) its mean
    over thresholds; ``AN`` (100,) average proposals per video; ``AUC`` area
    under AR–AN divided by ``AN[-1]``; ``AUC_percent`` the official print
    ``100 * area / AN[-1]``; ``recall_at`` {N: AR with N proposals per video}.
    """

    tiou_thresholds: np.ndarray
    recall: np.ndarray
    AR: np.ndarray
    AN: np.ndarray
    area: float
    AUC: float
    AUC_percent: float
    recall_at: dict[int, float]
    num_videos: int
    num_ground_truth: int
    num_proposals: int
    max_avg_nr_proposals: float
    notes: list[str] = field(default_factory=list)
    alignment: Alignment | None = None

    def to_json(self) -> dict:
        """The ``--json`` document (fractions)."""
        return {
            "task": "proposal",
            "tiou_thresholds": [float(t) for t in self.tiou_thresholds],
            "AN": [float(x) for x in self.AN],
            "AR": [float(x) for x in self.AR],
            "AUC": float(self.AUC),
            "recall_at": {str(k): float(v) for k, v in self.recall_at.items()},
            "max_avg_nr_proposals": float(self.max_avg_nr_proposals),
            "num_videos": self.num_videos,
            "num_ground_truth": self.num_ground_truth,
            "num_proposals": self.num_proposals,
            "notes": list(self.notes),
        }


def evaluate_proposals(gt: GroundTruth, proposals: Predictions,
                       tiou_thresholds: Sequence[float] = ANET_TIOU, *,
                       max_avg_nr_proposals: float | None = 100,
                       recall_at: Sequence[int] = RECALL_AT, blocked: Sequence[str] = (),
                       match_v_prefix: bool = True) -> ProposalResult:
    """AR@AN / AUC (official ActivityNet) and AR@N of class-agnostic ``proposals``.

    ``max_avg_nr_proposals=None`` uses all proposals (the official default,
    ``n_proposals / n_videos``). Labels of proposals and ground truth are ignored.
    """
    thresholds = check_thresholds(tiou_thresholds)
    gt, proposals, report = align(gt, proposals, blocked=blocked,
                                  match_v_prefix=match_v_prefix, labelled=False)
    if len(gt) == 0:
        raise InputError(gt.source, "no ground-truth instances to evaluate")
    if len(proposals) == 0:
        raise InputError(proposals.source, "no proposals to evaluate")
    videos = distinct(gt.video)
    gv, pv = encode(videos, gt.video), encode(videos, proposals.video)
    curve = average_recall_curve(gv, gt.start, gt.end, pv, proposals.start, proposals.end,
                                 proposals.score, len(videos), thresholds,
                                 max_avg_nr_proposals, recall_at, source=proposals.source)
    recall, AR, AN, at = curve
    trapezoid = getattr(np, "trapezoid", None) or getattr(np, "trapz")
    area = float(trapezoid(AR, AN))
    notes = list(gt.notes) + list(proposals.notes) + report.notes()
    max_avg = (float(len(proposals)) / len(videos) if not max_avg_nr_proposals
               else float(max_avg_nr_proposals))
    return ProposalResult(
        tiou_thresholds=thresholds, recall=recall, AR=AR, AN=AN, area=area,
        AUC=area / AN[-1], AUC_percent=100. * area / AN[-1], recall_at=at,
        num_videos=len(videos), num_ground_truth=len(gt), num_proposals=len(proposals),
        max_avg_nr_proposals=max_avg, notes=notes, alignment=report)


def average_recall_curve(gt_video: np.ndarray, gt_start: np.ndarray, gt_end: np.ndarray,
                         prop_video: np.ndarray, prop_start: np.ndarray, prop_end: np.ndarray,
                         prop_score: np.ndarray, num_videos: int, tiou_thresholds: np.ndarray,
                         max_avg_nr_proposals: float | None = 100,
                         recall_at: Sequence[int] = RECALL_AT, source: str | None = None):
    """AR–AN on integer-coded inputs.

    ``gt_video`` (G,) codes in [0, V) (every code present), ``prop_video`` (N,)
    codes or -1 for videos without ground truth, times in seconds, scores in
    file order. Returns ``recall`` (T, 100), ``AR`` (100,), ``AN`` (100,),
    ``recall_at`` {N: float}.
    """
    thr = np.asarray(tiou_thresholds, dtype=np.float64)
    T, G, V = len(thr), len(gt_video), num_videos
    if not max_avg_nr_proposals:
        max_avg_nr_proposals = float(len(prop_video)) / V
    ratio = max_avg_nr_proposals * float(V) / len(prop_video)
    # rank proposals inside each ground-truth video (official tie order)
    known = np.flatnonzero(prop_video >= 0)
    order, counts = _rank_by_video(prop_video[known], prop_score[known], V)
    order = known[order]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    kept = np.minimum((counts * ratio).astype(np.int64), counts)      # int(n_v * ratio)
    total_kept = int(kept[counts > 0].sum())
    if total_kept == 0:
        raise InputError(source, "no proposal is kept for any ground-truth video (too few "
                                 "proposals on the ground-truth videos for max_avg_nr_proposals)")
    pcn = np.arange(1, 101) / 100.0 * (max_avg_nr_proposals * float(V) / total_kept)
    AN = pcn * (float(total_kept) / V)
    first_hit = _first_hit_rank(gt_video, gt_start, gt_end, order, offsets, counts,
                                prop_start, prop_end, thr)                 # (G, T)
    # proposals of a video counted at each AN step: non-decreasing along the steps
    limit = np.minimum((kept[:, None] * pcn[None, :]).astype(np.int64), kept[:, None])  # (V, 100)
    limit[counts == 0] = 0
    # a ground truth is found at a step once its first hit ranks below that step's limit:
    # from step k0 on, k0 = how many of its video's limits are <= the rank
    steps = limit.shape[1]
    width = int(limit.max()) + 1                   # rows of limit, one after another, sorted
    keyed = (limit + (np.arange(V) * width)[:, None]).ravel()
    row = (gt_video * width)[:, None]
    k0 = np.searchsorted(keyed, row + np.minimum(first_hit, width - 1), "right") \
        - (gt_video * steps)[:, None]                                       # (G, T) in [0, steps]
    found = np.bincount((np.arange(T) * (steps + 1) + k0).ravel(), minlength=T * (steps + 1))
    matches = np.cumsum(found.reshape(T, steps + 1), axis=1)[:, :steps]      # (T, steps) counts
    recall = matches.astype(np.float64) / float(G)
    AR = recall.mean(axis=0)
    at = {}
    for N in recall_at:
        lim = np.minimum(int(N), counts)[gt_video]
        per_t = (first_hit < lim[:, None]).sum(axis=0) / float(G)
        at[int(N)] = float(np.mean(per_t))
    return recall, AR, AN, at


# --------------------------------------------------------------------------- helpers
def _rank_by_video(video: np.ndarray, score: np.ndarray, V: int):
    """Permutation grouping by video (code order) and ranking each video's proposals
    as ``np.argsort(scores)[::-1]`` over its scores in file order; plus counts (V,).

    Videos with the same number of proposals are ranked by one ``np.argsort``
    along the rows of a (videos, n) matrix: numpy sorts each row with the very
    routine (and tie order) a 1-d call on that row uses."""
    counts = np.bincount(video, minlength=V)
    order = np.argsort(video, kind="stable")                # file order inside each video
    first = np.concatenate([[0], np.cumsum(counts)])[:-1]
    for n in np.unique(counts[counts > 1]).tolist():
        slots = first[counts == n][:, None] + np.arange(n)  # (videos, n) positions in order
        rows = order[slots]
        ranked = np.argsort(score[rows], axis=1)[:, ::-1]
        order[slots] = np.take_along_axis(rows, ranked, axis=1)
    return order, counts


def _first_hit_rank(gt_video, gt_start, gt_end, order, offsets, counts, ps, pe, thr):
    """(G, T) rank of the first proposal of the ground truth's video whose tIoU
    reaches each threshold; a large number where none does."""
    G, T = len(gt_video), len(thr)
    big = np.iinfo(np.int64).max // 4
    n = counts[gt_video]
    owner = np.repeat(np.arange(G), n)
    if owner.size == 0:
        return np.full((G, T), big, dtype=np.int64)
    starts = np.repeat(np.cumsum(n) - n, n)
    prop = order[np.repeat(offsets[gt_video], n) + np.arange(owner.size) - starts]
    tiou = segment_tiou(ps[prop], pe[prop], gt_start[owner], gt_end[owner])
    # number of thresholds reached (thresholds are searched in sorted order)
    thr_order = np.argsort(thr, kind="stable")
    reached = np.searchsorted(thr[thr_order], np.where(np.isnan(tiou), -np.inf, tiou), "right")
    # running maximum per ground truth, made global by an offset of T + 1 per owner
    best = np.maximum.accumulate(reached + owner * (T + 1))
    # ranks whose running maximum is <= j precede the first that reaches threshold j
    below = np.cumsum(np.bincount(best, minlength=G * (T + 1)).reshape(G, T + 1), axis=1)[:, :T]
    out = np.empty((G, T), dtype=np.int64)
    out[:, thr_order] = np.where(below < n[:, None], below, big)
    return out
