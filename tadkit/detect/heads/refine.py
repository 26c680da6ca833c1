"""The cascade Refine Network of the HACS-2020 winning system (Qing, Wang, Sang et al., 2020).

Refines another run's proposals (a chained run, e.g. BMN's) over the same
snippet features, with ``len(stage_ious)`` refine modules in cascade
(Cai & Vasconcelos' Cascade R-CNN; the paper: 3 modules, positive IoU 0.5,
0.6, 0.7)::

    features (B, C_in, T), proposals [(N_i, 3) = start, end, score] (grid units)
    for each refine module k (own weights):
      Conv1d(k3, hidden) + ReLU                                     h (B, H, T)
      action score    Conv1d(k1) -> per-cell actionness logits,     (action_score)
                      supervised: intermediate supervision of h
      Transformer     sinusoidal positions + pre-LN encoder over    (transformer)
                      the video's real cells -> global context      h (B, H, T)
      RoI Align       segment_align of each proposal widened by
                      roi_context × its length on each side -> bins  r (K, H, bins)
      Bi-LSTM         over the bins, added residually               (lstm)
      Non-local       embedded-Gaussian block over the bins         (non_local)
      FC              flatten -> fc_dim -> IoU logit, offsets (Δs, Δe)
      proposals_{k+1} = [s + Δs·w, e + Δe·w]   (w = e − s; detached)

Training (module ``k`` on its own input proposals): each proposal takes its
best-overlapping ground truth; BCE between the IoU logit and that tIoU (all
proposals), Smooth-L1 on the offsets of the positives (tIoU ≥
``stage_ious[k]``) against ``((g_s − s) / w, (g_e − e) / w)``, and the
re-weighted BCE of the actionness (label: share of each cell inside an
action, positive above ½). Inference: every module runs (each refines the
previous one's output); only the last module's proposals and IoU are kept,
scored ``IoU`` or ``IoU × input score``. Proposals have label 0
(``class_agnostic``); classes come from classifier fusion.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tadkit.detect.config import RefineConfig
from tadkit.detect.geometry import pairwise_iou
from tadkit.detect.heads import HEADS
from tadkit.detect.heads.base import DetectionHead
from tadkit.detect.layers.align import segment_align
from tadkit.detect.layers.attention import TransformerEncoder, sinusoidal_embedding
from tadkit.detect.layers.non_local import NonLocal1d
from tadkit.detect.layers.proposal_map import cell_overlap, proposal_detections
from tadkit.detect.layers.sequence import MaskedLSTM
from tadkit.detect.losses import balanced_bce, smooth_l1
from tadkit.detect.postprocess import Detections
from tadkit.errors import ConfigError

MIN_WIDTH = 1e-3  # grid cells; refined proposals are never shorter


@HEADS.register("refine")
def build_refine(cfg: RefineConfig, in_dim: int, num_classes: int) -> "RefineNetwork":
    """Registry builder: ``RefineNetwork(cfg, in_dim)`` (class-agnostic: ``num_classes`` is not used)."""
    return RefineNetwork(cfg, in_dim, num_classes)


class RefineNetwork(DetectionHead):
    """Cascade of refine modules over given proposals (see the module docstring).

    ``forward(features, mask, proposals)`` with ``proposals`` a list of
    ``(N_i, 3)`` tensors ``[start, end, score]`` (grid units of each sample)
    returns, with ``N = max N_i`` and ``S`` modules: ``segments (B, N, 2)``
    and ``scores (B, N)`` (the last module's refined proposals and scores),
    ``valid (B, N)``, ``input_scores (B, N)``, ``stage_inputs (B, S, N, 2)``
    (each module's input proposals), ``stage_iou_logits (B, S, N)``,
    ``stage_offsets (B, S, N, 2)`` and, with ``action_score``,
    ``action_logits (B, S, T)``.
    """

    class_agnostic = True
    needs = frozenset({"proposals"})

    def __init__(self, cfg: RefineConfig, in_dim: int, num_classes: int = 1):
        super().__init__()
        self.cfg = cfg
        self.in_dim = in_dim
        self.num_classes = num_classes
        self.stages = nn.ModuleList(RefineModule(in_dim, cfg) for _ in cfg.stage_ious)

    # ------------------------------------------------------------------ forward
    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None,
                proposals: Sequence[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """``features (B, C_in, T)``, ``mask (B, T)`` (right-padded), ``proposals``: see the class docstring."""
        if features.dim() != 3 or features.shape[1] != self.in_dim:
            raise ValueError(f"the refine network expects features (B, {self.in_dim}, T), "
                             f"got {tuple(features.shape)}")
        b, _, t = features.shape
        if proposals is None:
            raise ConfigError("the refine head needs another run's proposals: train it with --from-run RUN")
        if len(proposals) != b:
            raise ValueError(f"got proposals for {len(proposals)} samples, expected {b}")
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=features.device)
        if self.training and self.cfg.train_proposals:
            proposals = [draw(p, self.cfg.train_proposals) for p in proposals]
        boxes, input_scores, valid = pad_proposals(proposals, features.device)
        batch_index, slot = valid.nonzero(as_tuple=True)
        cur = boxes
        inputs, ious, offsets, actions = [], [], [], []
        for stage in self.stages:
            iou_k, off_k, action_k = stage(features, mask, cur[batch_index, slot], batch_index)
            iou_full = cur.new_zeros(valid.shape)
            off_full = cur.new_zeros(*valid.shape, 2)
            iou_full[batch_index, slot] = iou_k.to(iou_full.dtype)
            off_full[batch_index, slot] = off_k.to(off_full.dtype)
            inputs.append(cur)
            ious.append(iou_full)
            offsets.append(off_full)
            if action_k is not None:
                actions.append(action_k)
            cur = apply_offsets(cur, off_full.detach()) * valid[..., None].to(cur.dtype)
        iou = torch.sigmoid(ious[-1].detach()).masked_fill(~valid, 0.0)
        scores = iou * input_scores if self.cfg.score == "product" else iou
        out = {"segments": cur, "scores": scores, "valid": valid, "input_scores": input_scores,
               "stage_inputs": torch.stack(inputs, 1), "stage_iou_logits": torch.stack(ious, 1),
               "stage_offsets": torch.stack(offsets, 1)}
        if actions:
            out["action_logits"] = torch.stack(actions, 1)
        return out

    # ------------------------------------------------------------------ loss
    def loss(self, outputs: dict[str, torch.Tensor], mask: torch.Tensor,
             targets: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Sum over modules of the IoU, offset and actionness losses (see the module docstring)."""
        cfg = self.cfg
        valid = outputs["valid"]
        stage_inputs = outputs["stage_inputs"].float()
        ious, offsets = outputs["stage_iou_logits"].float(), outputs["stage_offsets"].float()
        t = mask.shape[1]
        gts = [tg["segments"].to(stage_inputs) for tg in targets]
        total = stage_inputs.new_zeros(())
        terms: dict[str, torch.Tensor] = {}
        for k, threshold in enumerate(cfg.stage_ious):
            iou_t, matched, pos = zip(*(cascade_targets(stage_inputs[i, k], g, threshold) for i, g in enumerate(gts)))
            iou_t, matched, pos = torch.stack(iou_t), torch.stack(matched), torch.stack(pos) & valid
            loss_iou = (F.binary_cross_entropy_with_logits(ious[:, k][valid], iou_t[valid], reduction="sum")
                        / valid.sum().clamp(min=1))
            reg_t = offset_targets(stage_inputs[:, k][pos], matched[pos])
            loss_reg = smooth_l1(offsets[:, k][pos], reg_t, beta=0.1).sum() / pos.sum().clamp(min=1)
            stage_loss = cfg.iou_weight * loss_iou + cfg.reg_weight * loss_reg
            terms[f"loss_iou_{k + 1}"] = loss_iou.detach()
            terms[f"loss_reg_{k + 1}"] = loss_reg.detach()
            terms[f"num_pos_{k + 1}"] = pos.sum().detach().float()
            if "action_logits" in outputs:
                labels = torch.stack([cell_overlap(g, t) for g in gts])
                loss_act = balanced_bce(outputs["action_logits"][:, k].float(), labels, mask)
                stage_loss = stage_loss + cfg.action_weight * loss_act
                terms[f"loss_action_{k + 1}"] = loss_act.detach()
            total = total + stage_loss
        return {"loss": total, **terms}

    # ------------------------------------------------------------------ decode
    @torch.no_grad()
    def decode(self, outputs: dict[str, torch.Tensor], mask: torch.Tensor, topk: int = 2000,
               min_score: float = 0.0) -> list[Detections]:
        """The last module's refined proposals per sample (grid units, label 0)."""
        return [proposal_detections(segs[valid], scores[valid], topk, min_score)
                for segs, scores, valid in zip(outputs["segments"].float(), outputs["scores"].float(),
                                               outputs["valid"])]

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        cfg = self.cfg
        info.update(stages=len(cfg.stage_ious), stage_ious=list(cfg.stage_ious), action_score=cfg.action_score,
                    transformer=cfg.transformer, lstm=cfg.lstm, non_local=cfg.non_local, class_agnostic=True)
        return info


class RefineModule(nn.Module):
    """One refine module: ``(features, mask, segments (K, 2), batch_index (K,))`` -> IoU logits, offsets, actionness.

    Returns ``iou_logits (K,)``, ``offsets (K, 2)`` (in proposal lengths) and
    ``action_logits (B, T)`` (None without ``action_score``).
    """

    def __init__(self, in_dim: int, cfg: RefineConfig):
        super().__init__()
        h = cfg.hidden
        self.bins, self.samples, self.context = cfg.bins, cfg.roi_samples, cfg.roi_context
        self.embed = nn.Conv1d(in_dim, h, 3, padding=1)
        self.action = nn.Conv1d(h, 1, 1) if cfg.action_score else None
        self.encoder = (TransformerEncoder(h, cfg.transformer_layers, cfg.num_heads, cfg.mlp_ratio, cfg.dropout)
                        if cfg.transformer else None)
        self.lstm = MaskedLSTM(h, h // 2, 1, "both") if cfg.lstm else None
        self.non_local = NonLocal1d(h) if cfg.non_local else None
        self.fc = nn.Sequential(nn.Linear(h * cfg.bins, cfg.fc_dim), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.iou = nn.Linear(cfg.fc_dim, 1)
        self.offset = nn.Linear(cfg.fc_dim, 2)
        nn.init.zeros_(self.offset.weight)      # the first refinement starts as the identity
        nn.init.zeros_(self.offset.bias)

    def forward(self, features: torch.Tensor, mask: torch.Tensor, segments: torch.Tensor,
                batch_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        m = mask[:, None, :].to(features.dtype)
        h = F.relu(self.embed(features * m)) * m
        action = self.action(h)[:, 0] if self.action is not None else None
        if self.encoder is not None:
            tokens = h.transpose(1, 2) + sinusoidal_embedding(h.shape[-1], h.shape[1], h.device, h.dtype)[None]
            h = self.encoder(tokens, mask).transpose(1, 2) * m
        if segments.shape[0] == 0:
            return h.new_zeros(0), h.new_zeros(0, 2), action
        roi = segment_align(h, widen(segments, self.context), batch_index, self.bins, self.samples,
                            lengths=mask.sum(1))
        if self.lstm is not None:
            roi = roi + self.lstm(roi)
        if self.non_local is not None:
            roi = self.non_local(roi)
        z = self.fc(roi.flatten(1))
        return self.iou(z)[:, 0], self.offset(z), action


# --------------------------------------------------------------------------- geometry & targets
def pad_proposals(proposals: Sequence[torch.Tensor], device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(N_i, 3)`` per sample -> ``boxes (B, N, 2)``, ``scores (B, N)``, ``valid (B, N)`` (N = max N_i)."""
    n = max([len(p) for p in proposals] + [0])
    b = len(proposals)
    boxes = torch.zeros(b, n, 2, device=device)
    scores = torch.zeros(b, n, device=device)
    valid = torch.zeros(b, n, dtype=torch.bool, device=device)
    for i, p in enumerate(proposals):
        p = torch.as_tensor(p, dtype=torch.float32, device=device).reshape(-1, 3)
        boxes[i, :len(p)] = p[:, :2]
        scores[i, :len(p)] = p[:, 2]
        valid[i, :len(p)] = True
    return boxes, scores, valid


def draw(proposals: torch.Tensor, k: int) -> torch.Tensor:
    """``k`` of ``proposals (N, 3)`` drawn at random without replacement (all of them when ``N <= k``)."""
    if len(proposals) <= k:
        return proposals
    return proposals[torch.randperm(len(proposals))[:k].to(proposals.device)]


def widen(segments: torch.Tensor, context: float) -> torch.Tensor:
    """``[s − c·w, e + c·w]`` of ``segments [..., 2]`` (``w = e − s``)."""
    w = (segments[..., 1] - segments[..., 0])[..., None]
    return segments + context * w * segments.new_tensor([-1.0, 1.0])


def apply_offsets(segments: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Refined ``[s + Δs·w, e + Δe·w]`` (``w = e − s``), ends ordered and at least ``MIN_WIDTH`` apart."""
    w = (segments[..., 1] - segments[..., 0]).clamp(min=MIN_WIDTH)[..., None]
    moved = segments + offsets * w
    lo, hi = moved.min(-1).values, moved.max(-1).values
    return torch.stack([lo, torch.maximum(hi, lo + MIN_WIDTH)], -1)


def offset_targets(segments: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`apply_offsets`: ``((g_s − s) / w, (g_e − e) / w)`` for ``[..., 2]`` segments."""
    w = (segments[..., 1] - segments[..., 0]).clamp(min=MIN_WIDTH)[..., None]
    return (gt - segments) / w


def cascade_targets(segments: torch.Tensor, gt: torch.Tensor, threshold: float
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Targets of one module for ``segments (N, 2)`` and ground truth ``gt (M, 2)``.

    Returns ``(iou (N,), matched (N, 2), positive (N,))``: each proposal's best
    tIoU, the ground truth giving it (the proposal itself without ground
    truth) and whether that tIoU reaches ``threshold``.
    """
    if gt.numel() == 0 or segments.numel() == 0:
        return segments.new_zeros(len(segments)), segments.clone(), segments.new_zeros(len(segments), dtype=torch.bool)
    best, idx = pairwise_iou(segments, gt).max(1)
    return best, gt[idx], best >= threshold


__all__ = ["RefineNetwork", "RefineModule", "build_refine", "pad_proposals", "draw", "widen", "apply_offsets",
           "offset_targets", "cascade_targets"]
