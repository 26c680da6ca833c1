"""Matching prediction ids and labels to the ground truth.

:func:`align` applies the evaluation's id policy (``v_`` prefixes, blocked
videos, unknown labels) and says what it did in an :class:`Alignment`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from tadkit.data.formats.table import objects
from tadkit.errors import InputError
from tadkit.evaluate.arrays import distinct, member
from tadkit.evaluate.io import GroundTruth, Predictions, Segments


@dataclass
class Alignment:
    """What :func:`align` did: counts for the report (never silent)."""

    renamed_ids: int = 0
    renamed_examples: list[str] = field(default_factory=list)
    prefix_conflicts: int = 0
    blocked_videos: int = 0
    blocked_ground_truth: int = 0
    blocked_predictions: int = 0
    unknown_label_predictions: int = 0
    unknown_labels: list[str] = field(default_factory=list)
    unknown_video_predictions: int = 0
    unknown_videos: int = 0

    def notes(self) -> list[str]:
        """Human-readable lines for everything that changed or was skipped."""
        out = []
        if self.renamed_ids:
            out.append(f"{self.renamed_ids} prediction video ids matched the ground truth only after "
                       f"adding/removing the 'v_' prefix (e.g. {', '.join(self.renamed_examples)})")
        if self.prefix_conflicts:
            out.append(f"{self.prefix_conflicts} prediction video ids were not renamed because both "
                       "forms (with and without 'v_') occur in the predictions")
        if self.blocked_videos:
            out.append(f"blocked list: {self.blocked_videos} videos excluded "
                       f"({self.blocked_ground_truth} ground-truth instances, "
                       f"{self.blocked_predictions} predictions)")
        if self.unknown_label_predictions:
            shown = ", ".join(repr(x) for x in self.unknown_labels[:5])
            out.append(f"skipped {self.unknown_label_predictions} predictions whose label is not a "
                       f"ground-truth class ({shown}{', ...' if len(self.unknown_labels) > 5 else ''})")
        if self.unknown_video_predictions:
            out.append(f"{self.unknown_video_predictions} predictions on {self.unknown_videos} videos "
                       "without ground truth count as false positives (official rule)")
        return out


def align(gt: GroundTruth, preds: Predictions, blocked: Sequence[str] = (),
          match_v_prefix: bool = True, labelled: bool = True
          ) -> tuple[GroundTruth, Predictions, Alignment]:
    """Match prediction video ids to ground truth, drop blocked videos and unknown labels.

    * ``v_`` policy (``match_v_prefix``): a prediction id absent from the ground
      truth whose other form (``v_`` added or removed) is a ground-truth id is
      renamed to it -- unless the other form also occurs in the predictions,
      which would merge two videos (counted as a conflict, not renamed).
    * ``blocked``: those videos (either form) leave ground truth and predictions,
      as the official code does with its blocked list.
    * ``labelled``: predictions whose label is not a ground-truth class are dropped
      and counted.
    Returns new containers and an :class:`Alignment` with every count.
    """
    report = Alignment()
    gt_ids = set(gt.videos) | set(gt.video.tolist())
    video = preds.video.copy()
    if match_v_prefix and len(video):
        pred_ids = set(distinct(video))
        mapping = {}
        for vid in pred_ids - gt_ids:
            other = vid[2:] if vid.startswith("v_") else "v_" + vid
            if other in gt_ids:
                if other in pred_ids:
                    report.prefix_conflicts += 1
                else:
                    mapping[vid] = other
        if mapping:
            report.renamed_ids = len(mapping)
            report.renamed_examples = [f"{k} -> {v}" for k, v in sorted(mapping.items())[:3]]
            video = objects([mapping.get(v, v) for v in video.tolist()])
    preds = Predictions(video, preds.start, preds.end, preds.label, preds.score,
                        preds.source, list(preds.notes))
    if blocked:
        block = set()
        for vid in blocked:
            block.add(vid)
            if match_v_prefix:
                block.add(vid[2:] if vid.startswith("v_") else "v_" + vid)
        report.blocked_videos = len(set(gt.videos) & block)
        gkeep = ~member(gt.video, block)
        pkeep = ~member(preds.video, block)
        report.blocked_ground_truth = int((~gkeep).sum())
        report.blocked_predictions = int((~pkeep).sum())
        gt = gt.select(gkeep)
        gt.videos = [v for v in gt.videos if v not in block]
        if gt.ambiguous is not None:
            akeep = ~member(gt.ambiguous.video, block)
            gt.ambiguous = Segments(gt.ambiguous.video[akeep], gt.ambiguous.start[akeep],
                                    gt.ambiguous.end[akeep])
        preds = preds.select(pkeep)
    if labelled:
        if preds.label is None:
            raise InputError(preds.source, "predictions have no 'label'; detection needs one per "
                                           "entry (use --task proposal for class-agnostic proposals)")
        known = member(preds.label, set(gt.label.tolist()))
        if not known.all():
            report.unknown_label_predictions = int((~known).sum())
            report.unknown_labels = list(dict.fromkeys(preds.label[~known].tolist()))
            preds = preds.select(known)
    unknown = ~member(preds.video, set(gt.video.tolist()))
    report.unknown_video_predictions = int(unknown.sum())
    report.unknown_videos = len(distinct(preds.video[unknown]))
    return gt, preds, report

