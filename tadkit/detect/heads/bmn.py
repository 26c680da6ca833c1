"""BMN: Boundary-Matching Network (Lin et al., ICCV 2019, arXiv 1907.09702), with the HACS-2020 Bi-LSTM.

A class-agnostic proposal generator over snippet features (usually resized
to ``T`` cells per video)::

    features (B, C_in, T)
      base module   2 × Conv1d(k3, hidden_1d, groups) + ReLU
                    [+ Bi-LSTM, lstm_layers layers, added residually]   (HACS-2020)
      TEM           start / end: Conv1d(k3, groups) + ReLU, Conv1d(k1) -> logits (B, T)
      PEM           Conv1d(k3) + ReLU -> BM layer fused with its (N, 1, 1) Conv3d + ReLU
                    -> (B, hidden_3d, D, T) -> Conv2d 1×1, 3×3, 3×3 (+ ReLU), Conv2d 1×1
                    -> BM confidence map logits (B, 2, D, T): channel 0 classification
                       (p_c), channel 1 regression (p_r)

Map entry ``[d, s]`` is the proposal ``[s, s + d]`` in grid units (see
:mod:`~tadkit.detect.layers.proposal_map`); entries whose proposal does not
end on a real cell of its sample are zeroed after every map layer, so
padding never changes a real proposal (a padded batch equals each sample
alone).

Training: TEM labels are the share of each cell inside a ``boundary_width``
region around a ground-truth start / end; the IoU map holds each proposal's
best tIoU. ``L = L_tem + reg_weight · L_reg + L_cls`` with ``L_tem`` the
re-weighted BCE (positives: label > 0.5) of start and end, ``L_cls`` the
re-weighted BCE of ``p_c`` (positives: IoU > ``cls_iou``), ``L_reg`` BMN's
sampled L2 between ``p_r`` and the IoU map.

Inference: start / end candidates are boundary peaks (local maxima or above
``peak_threshold`` × the sample's maximum); every candidate pair ``s < e``
within ``D`` cells is a proposal ``[s, e]`` scored ``p_s · p_e · p_c · p_r``
(or ``p_s · p_e · sqrt(p_c · p_r)``). Soft-NMS is the engine's
post-processing. All proposals have label 0 (``class_agnostic``).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tadkit.detect.config import BMNConfig
from tadkit.detect.heads import HEADS
from tadkit.detect.heads.base import DetectionHead
from tadkit.detect.layers.boundary_matching import BoundaryMatching
from tadkit.detect.layers.proposal_map import (boundary_labels, iou_map, map_valid, pair_candidates,
                                               proposal_detections)
from tadkit.detect.layers.sequence import MaskedLSTM
from tadkit.detect.losses import balanced_bce, sampled_l2
from tadkit.detect.postprocess import Detections

PROB_EPS = 1e-6  # probabilities averaged over runs are stored back as logits within [eps, 1 - eps]


@HEADS.register("bmn")
def build_bmn(cfg: BMNConfig, in_dim: int, num_classes: int) -> "BMN":
    """Registry builder: ``BMN(cfg, in_dim)`` (class-agnostic: ``num_classes`` is not used)."""
    return BMN(cfg, in_dim, num_classes)


class BMN(DetectionHead):
    """The BMN proposal generator (see the module docstring).

    ``forward(features, mask)`` returns ``start_logits (B, T)``,
    ``end_logits (B, T)`` and ``map_logits (B, 2, D, T)`` (channel 0:
    classification, 1: regression); ``decode`` gives class-agnostic proposals
    (label 0) in grid units.
    """

    class_agnostic = True

    def __init__(self, cfg: BMNConfig, in_dim: int, num_classes: int = 1):
        super().__init__()
        self.cfg = cfg
        self.in_dim = in_dim
        self.num_classes = num_classes
        h1, h2, h3, g = cfg.hidden_1d, cfg.hidden_2d, cfg.hidden_3d, cfg.conv_groups
        self.base = nn.ModuleList([nn.Conv1d(in_dim, h1, 3, padding=1, groups=g if in_dim % g == 0 else 1),
                                   nn.Conv1d(h1, h1, 3, padding=1, groups=g)])
        self.lstm = MaskedLSTM(h1, h1 // 2, cfg.lstm_layers, "both") if cfg.lstm_layers else None
        self.tem = nn.ModuleList(nn.ModuleList([nn.Conv1d(h1, h1, 3, padding=1, groups=g), nn.Conv1d(h1, 1, 1)])
                                 for _ in range(2))                      # start, end
        self.pem_1d = nn.Conv1d(h1, h1, 3, padding=1)
        self.bm = BoundaryMatching(h1, h3, cfg.num_samples, cfg.samples_per_bin, cfg.context, cfg.max_duration)
        self.pem_2d = nn.ModuleList([nn.Conv2d(h3, h2, 1), nn.Conv2d(h2, h2, 3, padding=1),
                                     nn.Conv2d(h2, h2, 3, padding=1)])
        self.map_out = nn.Conv2d(h2, 2, 1)

    # ------------------------------------------------------------------ forward
    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``features (B, C_in, T)``, ``mask (B, T)`` (True on real cells, right-padded; None: no padding)."""
        if features.dim() != 3 or features.shape[1] != self.in_dim:
            raise ValueError(f"BMN expects features (B, {self.in_dim}, T), got {tuple(features.shape)}")
        b, _, t = features.shape
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=features.device)
        m1 = mask[:, None, :].to(features.dtype)
        x = features * m1
        for conv in self.base:
            x = F.relu(conv(x)) * m1
        if self.lstm is not None:
            x = x + self.lstm(x, mask).to(x.dtype)
        start, end = (head[1](F.relu(head[0](x)) * m1)[:, 0] for head in self.tem)
        p = F.relu(self.pem_1d(x)) * m1
        valid = map_valid(mask.sum(1), self.bm.rows(t), t)[:, None].to(x.dtype)   # (B, 1, D, T)
        y = F.relu(self.bm(p)) * valid
        for conv in self.pem_2d:
            y = F.relu(conv(y)) * valid
        return {"start_logits": start, "end_logits": end, "map_logits": self.map_out(y)}

    # ------------------------------------------------------------------ loss
    def loss(self, outputs: dict[str, torch.Tensor], mask: torch.Tensor,
             targets: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """TEM + PEM losses over the batch (see the module docstring); labels are ignored."""
        cfg = self.cfg
        start, end = outputs["start_logits"].float(), outputs["end_logits"].float()
        maps = outputs["map_logits"].float()
        d, t = maps.shape[-2:]
        labels = [bmn_labels(tg["segments"].to(maps), d, t, cfg.boundary_width) for tg in targets]
        start_lab, end_lab, iou = (torch.stack(x) for x in zip(*labels))
        valid = map_valid(mask.sum(1), d, t)
        loss_tem = balanced_bce(start, start_lab, mask) + balanced_bce(end, end_lab, mask)
        loss_cls = balanced_bce(maps[:, 0], iou, valid, threshold=cfg.cls_iou)
        loss_reg = sampled_l2(torch.sigmoid(maps[:, 1]), iou, valid, cfg.reg_high, cfg.reg_low)
        total = loss_tem + cfg.reg_weight * loss_reg + loss_cls
        return {"loss": total, "loss_tem": loss_tem.detach(), "loss_pem_cls": loss_cls.detach(),
                "loss_pem_reg": loss_reg.detach(), "num_pos": ((iou > cfg.cls_iou) & valid).sum().float()}

    # ------------------------------------------------------------------ decode
    @torch.no_grad()
    def decode(self, outputs: dict[str, torch.Tensor], mask: torch.Tensor, topk: int = 2000,
               min_score: float = 0.0) -> list[Detections]:
        """Boundary-peak proposals per sample (grid units, label 0), best ``topk`` above ``min_score``."""
        start = torch.sigmoid(outputs["start_logits"].float())
        end = torch.sigmoid(outputs["end_logits"].float())
        maps = torch.sigmoid(outputs["map_logits"].float())
        d = maps.shape[-2]
        out = []
        for i, length in enumerate(mask.sum(1).tolist()):
            pairs, entries = pair_candidates(start[i, :length], end[i, :length], d, self.cfg.peak_threshold,
                                             self.cfg.include_ends)
            conf = maps[i][:, entries[:, 0], entries[:, 1]]                            # (2, K)
            mixed = conf[0] * conf[1] if self.cfg.score == "product" else (conf[0] * conf[1]).sqrt()
            scores = start[i, pairs[:, 0]] * end[i, pairs[:, 1]] * mixed
            out.append(proposal_detections(pairs, scores, topk, min_score))
        return out

    # ------------------------------------------------------------------ ensembles
    def average_outputs(self, outputs: Sequence[dict[str, torch.Tensor]],
                        weights: Sequence[float]) -> dict[str, torch.Tensor]:
        """Weighted sum of the runs' start / end curves and BM maps (probabilities), HACS-2020 sec. 2.2.

        Runs resized to other lengths ``T_r`` (or with other ``D_r``) are
        brought to the first run's ``(D, T)`` by linear interpolation first:
        start positions map by cell centres (``q = (p + ½) T / T_r − ½``),
        durations by scale (``d = d_r · T / T_r``). ``weights`` are normalised
        to sum to 1. Returns logits of the averaged probabilities, computed as
        ``x_0 + logit(p̄) − logit(p_0)`` so that identical runs give the first
        run's output exactly.
        """
        if len(outputs) != len(weights) or not outputs:
            raise ValueError("average_outputs needs one weight per run")
        total = float(sum(weights))
        if not total > 0:
            raise ValueError(f"ensemble weights must add up to a positive number, got {list(weights)}")
        d, t = outputs[0]["map_logits"].shape[-2:]
        first = outputs[0]
        out = {}
        for key in ("start_logits", "end_logits", "map_logits"):
            resize = (lambda p: resize_map(p, d, t)) if key == "map_logits" else (lambda p: resize_curve(p, t))
            p0 = torch.sigmoid(first[key].float())
            mean = p0.clone()
            for o, w in zip(outputs[1:], weights[1:]):
                mean += (resize(torch.sigmoid(o[key].float())) - p0) * (float(w) / total)
            logit = lambda p: torch.logit(p, eps=PROB_EPS)  # noqa: E731
            out[key] = (first[key].float() + (logit(mean) - logit(p0))).to(first[key].dtype)
        return out

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(lstm_layers=self.cfg.lstm_layers, max_duration=self.cfg.max_duration or "T",
                    num_samples=self.cfg.num_samples, class_agnostic=True)
        return info


# --------------------------------------------------------------------------- labels
def bmn_labels(gt_segments: torch.Tensor, max_duration: int, length: int,
               boundary_width: float = 3.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BMN's training labels of one sample: ``(start (T,), end (T,), IoU map (D, T))``.

    ``gt_segments (N, 2)`` in grid units. Start / end labels come from
    :func:`~tadkit.detect.layers.proposal_map.boundary_labels` with regions
    ``boundary_width`` cells wide; the IoU map holds every entry's best tIoU.
    """
    gt = gt_segments.reshape(-1, 2)
    return (boundary_labels(gt[:, 0], length, boundary_width), boundary_labels(gt[:, 1], length, boundary_width),
            iou_map(gt, max_duration, length))


# --------------------------------------------------------------------------- resizing (ensembles)
def resize_curve(curve: torch.Tensor, length: int) -> torch.Tensor:
    """``(B, T_r)`` values at cell centres -> ``(B, length)`` by linear interpolation (centres aligned)."""
    if curve.shape[-1] == length:
        return curve
    return F.interpolate(curve[:, None], size=length, mode="linear", align_corners=False)[:, 0]


def resize_map(maps: torch.Tensor, rows: int, length: int) -> torch.Tensor:
    """``(B, C, D_r, T_r)`` maps -> ``(B, C, rows, length)`` in the target grid (see :meth:`BMN.average_outputs`)."""
    d_r, t_r = maps.shape[-2:]
    if (d_r, t_r) == (rows, length):
        return maps
    scale = t_r / length
    q = torch.arange(length, dtype=torch.float64)
    maps = _interp(maps, -1, ((q + 0.5) * scale - 0.5).clamp(0, t_r - 1))
    return _interp(maps, -2, (torch.arange(rows, dtype=torch.float64) * scale).clamp(0, d_r - 1))


def _interp(x: torch.Tensor, dim: int, src: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``x`` along ``dim`` at float source positions ``src`` (within range)."""
    lo = src.floor().long()
    hi = torch.clamp(lo + 1, max=x.shape[dim] - 1)
    w = (src - lo).to(x.dtype).to(x.device)
    shape = [1] * x.dim()
    shape[dim] = -1
    w = w.reshape(shape)
    return x.index_select(dim, lo.to(x.device)) * (1 - w) + x.index_select(dim, hi.to(x.device)) * w


__all__ = ["BMN", "build_bmn", "bmn_labels", "resize_curve", "resize_map"]
