"""Evaluation protocols: which thresholds, subset and rules a dataset uses.

=========  ==========================  ==================  =====================
protocol   tIoU thresholds             averaged over       default subset
=========  ==========================  ==================  =====================
anet       0.5:0.05:0.95 (10)          all                 validation
hacs       0.5:0.05:0.95 (10)          all                 validation
thumos14   0.1, 0.2, ..., 0.7          0.3, 0.4, ..., 0.7  test
=========  ==========================  ==================  =====================

ActivityNet/HACS thresholds are built as the official code builds them,
``np.linspace(0.5, 0.95, 10)``; THUMOS14 thresholds are the decimal literals
papers put in their configs (``[0.3, 0.4, 0.5, 0.6, 0.7]``). The exact float
matters only when a tIoU equals a threshold, but then it decides the answer.

THUMOS14 ``Ambiguous`` annotations have two rules (``ambiguous``):
``anet-style`` (default; what recent papers use: they are not ground truth and
change nothing) and ``official`` (the THUMOS'14 toolkit: a false positive that
overlaps an Ambiguous segment of its video is removed from the ranked list).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tadkit.errors import InputError
from tadkit.evaluate.detection import ANET_TIOU, DetectionResult, evaluate_detection
from tadkit.evaluate.io import GroundTruth, Predictions
from tadkit.evaluate.proposals import RECALL_AT, ProposalResult, evaluate_proposals

AMBIGUOUS_RULES = ("anet-style", "official")
#: the most tIoU thresholds one evaluation takes (the official ones are 10; memory grows with it).
MAX_THRESHOLDS = 1000


@dataclass(frozen=True)
class Protocol:
    """A dataset's evaluation settings.

    ``tiou_thresholds`` (T,) reported; ``average_over`` those averaged into
    ``average_mAP``; ``subset`` the default ground-truth subset;
    ``proposal_tiou`` thresholds for AR@AN; ``ambiguous`` the default rule.
    """

    name: str
    tiou_thresholds: tuple[float, ...]
    average_over: tuple[float, ...]
    subset: str
    proposal_tiou: tuple[float, ...] = tuple(ANET_TIOU.tolist())
    ambiguous: str = "anet-style"
    recall_at: tuple[int, ...] = RECALL_AT

    def with_thresholds(self, thresholds: Sequence[float]) -> "Protocol":
        """The same protocol with custom thresholds (all of them averaged)."""
        values = tuple(float(t) for t in thresholds)
        return Protocol(self.name, values, values, self.subset, values, self.ambiguous,
                        self.recall_at)

    def evaluate_detection(self, gt: GroundTruth, preds: Predictions, *, blocked=(),
                           ambiguous: str | None = None, match_v_prefix: bool = True,
                           keep_curves: bool = False) -> DetectionResult:
        """:func:`~tadkit.evaluate.detection.evaluate_detection` with this protocol."""
        return evaluate_detection(gt, preds, self.tiou_thresholds, average_over=self.average_over,
                                  blocked=blocked, ambiguous=ambiguous or self.ambiguous,
                                  match_v_prefix=match_v_prefix, keep_curves=keep_curves)

    def evaluate_proposals(self, gt: GroundTruth, proposals: Predictions, *, blocked=(),
                           max_avg_nr_proposals: float | None = 100,
                           match_v_prefix: bool = True) -> ProposalResult:
        """:func:`~tadkit.evaluate.proposals.evaluate_proposals` with this protocol."""
        return evaluate_proposals(gt, proposals, self.proposal_tiou,
                                  max_avg_nr_proposals=max_avg_nr_proposals,
                                  recall_at=self.recall_at, blocked=blocked,
                                  match_v_prefix=match_v_prefix)


_THUMOS_TIOU = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)

PROTOCOLS: dict[str, Protocol] = {
    "anet": Protocol("anet", tuple(ANET_TIOU.tolist()), tuple(ANET_TIOU.tolist()), "validation"),
    "hacs": Protocol("hacs", tuple(ANET_TIOU.tolist()), tuple(ANET_TIOU.tolist()), "validation"),
    "thumos14": Protocol("thumos14", _THUMOS_TIOU, _THUMOS_TIOU[2:], "testing"),
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name`` (``anet``, ``hacs``, ``thumos14``; a few aliases)."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    key = {"activitynet": "anet", "anet13": "anet", "activitynet13": "anet",
           "thumos": "thumos14", "th14": "thumos14"}.get(key, key)
    if key not in PROTOCOLS:
        raise InputError(None, f"unknown dataset protocol {name!r} (known: {', '.join(PROTOCOLS)})")
    return PROTOCOLS[key]


def parse_thresholds(text: str) -> list[float]:
    """``"0.3,0.5,0.7"`` or ``"0.5:0.95:0.05"`` (start:stop:step, inclusive) -> floats.

    At most :data:`MAX_THRESHOLDS` thresholds (a tiny step would otherwise ask
    for billions of them).
    """
    text = text.strip()
    usage = "use e.g. 0.3,0.5,0.7 or 0.5:0.95:0.05"
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if not (math.isfinite(start) and math.isfinite(stop) and math.isfinite(step)) \
                    or step <= 0 or stop < start:
                raise InputError(None, f"cannot read tIoU thresholds {text!r}: start:stop:step needs "
                                       f"finite numbers, start <= stop and step > 0 ({usage})")
            count = round((stop - start) / step) + 1
            if count > MAX_THRESHOLDS:
                raise InputError(None, f"tIoU thresholds {text!r} give {count:,} thresholds; at most "
                                       f"{MAX_THRESHOLDS} are allowed (use a larger step)")
            end = start + (count - 1) * step
            return np.linspace(start, stop if abs(end - stop) < 1e-9 else end, count).tolist()
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(None, f"cannot read tIoU thresholds {text!r} ({usage})") from None
    if len(values) > MAX_THRESHOLDS:
        raise InputError(None, f"{len(values)} tIoU thresholds given; at most {MAX_THRESHOLDS} are allowed")
    return values
