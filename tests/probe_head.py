"""A tiny registered head for engine tests: declares what tests ask for and records what it sees."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tadkit.detect.heads import HEADS, DetectionHead
from tadkit.detect.postprocess import Detections

#: what the next built ``probe`` declares / records (tests set and read these)
SETTINGS: dict[str, Any] = {"needs": frozenset()}
SEEN: dict[str, list] = {"epochs": [], "inputs": [], "built": []}


@HEADS.register("probe")
def build_probe(cfg: Any, in_dim: int, num_classes: int, inputs: Any = None) -> "Probe":
    SEEN["built"].append({"in_dim": in_dim, "inputs": inputs})
    return Probe(in_dim, num_classes, SETTINGS["needs"])


@HEADS.register("probe_proposals")
def build_probe_proposals(cfg: Any, in_dim: int, num_classes: int) -> "Probe":
    """A class-agnostic probe (a proposal head)."""
    return Probe(in_dim, num_classes, frozenset(), class_agnostic=True)


@HEADS.register("probe_refine")
def build_probe_refine(cfg: Any, in_dim: int, num_classes: int) -> "Probe":
    """A probe that reads a source run's proposals (a chained run)."""
    SEEN["built"].append({"in_dim": in_dim, "inputs": None})
    return Probe(in_dim, num_classes, frozenset({"proposals"}))


class Probe(DetectionHead):
    """Per-cell class scores from a 1x1 conv; loss: per-sample mean squared error to per-cell targets."""

    def __init__(self, in_dim: int, num_classes: int, needs: frozenset[str], class_agnostic: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self._needs = frozenset(needs)
        self.class_agnostic = class_agnostic
        self.norm = nn.GroupNorm(1, in_dim)
        self.conv = nn.Conv1d(in_dim, num_classes, 1)

    @property
    def needs(self) -> frozenset[str]:
        return self._needs

    def forward(self, features: torch.Tensor, mask: torch.Tensor, **inputs: Any) -> dict[str, torch.Tensor]:
        SEEN["inputs"].append({"features": features.detach().clone(), "mask": mask.clone(), **inputs})
        return {"logits": self.conv(self.norm(features)), "mask": mask}

    def loss(self, outputs, mask, targets):
        logits = outputs["logits"]
        b, c, t = logits.shape
        goal = torch.zeros_like(logits)
        cells = torch.arange(t, device=logits.device)
        for i, tg in enumerate(targets):
            for (s, e), lab in zip(tg["segments"].tolist(), tg["labels"].tolist()):
                goal[i, 0 if self.class_agnostic else lab] = torch.maximum(
                    goal[i, 0 if self.class_agnostic else lab], ((cells >= s) & (cells <= e)).float())
        per = ((torch.sigmoid(logits) - goal) ** 2 * mask[:, None]).sum((1, 2)) / mask.sum(1).clamp(min=1)
        return {"loss": per.mean()}

    @torch.no_grad()
    def decode(self, outputs, mask, topk=2000, min_score=0.0):
        probs = torch.sigmoid(outputs["logits"].float())
        out = []
        for i in range(probs.shape[0]):
            n = int(mask[i].sum())
            p = probs[i, :, :n]
            cells = torch.arange(n, dtype=torch.float64)
            segs = torch.stack([cells - 1.5, cells + 1.5], 1).repeat(p.shape[0], 1)
            scores = p.reshape(-1).double()
            labels = torch.arange(p.shape[0]).repeat_interleave(n)
            if self.class_agnostic:
                labels = torch.zeros_like(labels)
            order = torch.argsort(scores, descending=True, stable=True)
            if topk and topk > 0:
                order = order[:topk]
            order = order[scores[order] > min_score]
            out.append(Detections(segs[order].numpy(), scores[order].numpy(), labels[order].numpy()))
        return out

    def on_epoch_start(self, epoch: int, total: int) -> None:
        SEEN["epochs"].append((epoch, total))
