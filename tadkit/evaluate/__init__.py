"""Evaluate stage: official ActivityNet / THUMOS14 metrics, bit-for-bit, vectorised.

Python API::

    from tadkit.evaluate import load_ground_truth, load_predictions, evaluate_detection
    gt = load_ground_truth("activity_net.v1-3.min.json", subset="validation")
    preds = load_predictions("results.json")
    result = evaluate_detection(gt, preds)          # DetectionResult
    result.mAP, result.average_mAP, result.per_class_AP

Protocols (``get_protocol("anet" | "hacs" | "thumos14")``) bundle thresholds,
default subset and the THUMOS14 Ambiguous rule; see ``docs/evaluation.md``.
"""
from __future__ import annotations

from tadkit.evaluate.detection import ANET_TIOU, DetectionResult, evaluate_detection
from tadkit.data.formats import normalize_subset
from tadkit.evaluate.align import Alignment, align
from tadkit.evaluate.io import (GroundTruth, Predictions, Segments, load_ground_truth,
                                load_predictions, load_segments, load_video_list)
from tadkit.evaluate.proposals import RECALL_AT, ProposalResult, evaluate_proposals
from tadkit.evaluate.protocols import PROTOCOLS, Protocol, get_protocol, parse_thresholds

__all__ = [
    "ANET_TIOU", "DetectionResult", "evaluate_detection", "GroundTruth", "Predictions", "Alignment",
    "Segments", "align", "load_ground_truth", "load_predictions", "load_segments",
    "load_video_list", "normalize_subset", "RECALL_AT", "ProposalResult", "evaluate_proposals",
    "PROTOCOLS", "Protocol", "get_protocol", "parse_thresholds",
]
