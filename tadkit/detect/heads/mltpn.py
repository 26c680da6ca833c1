"""MLTPN: Multi-Level Temporal Pyramid Network (Wang, Gao, Zhang, Sang).

A one-stage, anchor-based detector over offline snippet features::

    features (B, C_in, T)
      -> two temporal convs k3 s2 (+ReLU)                     (B, c, t),  t = T/4
      -> Transform module: as a 1×t×c map; Conv1 k(3,1) s1 ‖ up(Conv2 k(3,1) s2)
                                                              (B, k1+k2, t, c)
      -> num_thms cascaded Temporal H-shaped Modules (THM), joined by the
         1×1 "Conv" (two 1×1 convs + concat); each THM returns num_scales
         maps (B, thm_out, t / 2^i, c)
      -> Merge Feature Module: per scale concat of all THMs (B, L·thm_out, t_i, c),
         a small residual module shared across scales, channel-wise attention
      -> per scale: classification (C+1), IoU confidence and boundary
         regression for num_anchors anchors per cell.

The ``c`` axis is the feature width: THM convolutions run along time only
(kernel (3,1), stride (2,1)), so the width survives until the heads, where a
1×1 squeeze and a flatten turn each cell into a vector.

Anchors (grid units of the input): scale ``i`` has stride ``s = 4·2^i``
input cells; cell ``j`` is centred at ``j·s``, the centre of its receptive
field through the kernel-3, stride-2, padding-1 convolutions
(:func:`~tadkit.detect.layers.pyramid.level_centers`), and holds
``num_anchors`` anchors of width ``anchor_base · s · r`` for each ratio ``r``.

Losses (paper eq. 7): softmax cross-entropy over ``C+1`` classes on positives
and hard-mined negatives, Smooth-L1 between the sigmoid confidence and the IoU
of the (detached) predicted segment with its closest ground truth, and
``1 - GIoU`` between predicted and matched segments on positives; weights
1 / 10 / 0.3, each term averaged over its own sample count. A positive anchor's
class target covers every ground truth with exactly its matched segment
(THUMOS14's CliffDiving / Diving twins): the softmax target is spread evenly
over those classes (``classifier: sigmoid`` instead trains ``C`` independent
sigmoids against the multi-hot target with binary cross-entropy).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tadkit.detect.config import MLTPNConfig
from tadkit.detect.geometry import pairwise_iou, segment_iou
from tadkit.detect.heads import HEADS
from tadkit.detect.heads.base import DetectionHead, topk_detections
from tadkit.detect.layers.pyramid import level_centers
from tadkit.detect.layers.targets import instance_classes, softmax_targets
from tadkit.detect.losses import giou_loss, smooth_l1
from tadkit.detect.postprocess import Detections

BASE_STRIDE = 4  # the two stride-2 temporal convs
MAX_LOG_SCALE = math.log(1000.0 / 16)


@HEADS.register("mltpn")
def build_mltpn(cfg: MLTPNConfig, in_dim: int, num_classes: int) -> "MLTPN":
    """Registry builder: ``MLTPN(cfg, in_dim, num_classes)``."""
    return MLTPN(cfg, in_dim, num_classes)


class MLTPN(DetectionHead):
    """The MLTPN detector (see the module docstring for the architecture).

    ``forward`` returns ``cls_logits (B, A, K)`` (``K = C+1`` for the softmax
    classifier, index 0 background; ``K = C`` for sigmoids), ``conf_logits (B, A)``,
    ``deltas (B, A, 2)`` and ``anchors (A, 2)`` (grid units), where ``A`` is
    the number of anchors over all scales (scale-major, then cell, then ratio).
    """

    def __init__(self, cfg: MLTPNConfig, in_dim: int, num_classes: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError("MLTPN needs at least one action class")
        self.cfg = cfg
        self.in_dim = in_dim
        self.num_classes = num_classes
        self.ratios = anchor_ratios(cfg)
        self.stride = BASE_STRIDE * 2 ** (cfg.num_scales - 1)
        c = cfg.embed_dim
        self.base = nn.Sequential(
            nn.Conv1d(in_dim, c, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv1d(c, c, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.transform = TransformModule(cfg.transform_k1, cfg.transform_k2, cfg.upsample)
        k = cfg.transform_k1 + cfg.transform_k2
        half = max(1, cfg.thm_channels // 2)
        self.first_join = _conv_bn_relu(k, cfg.thm_channels, (1, 1), (1, 1), (0, 0))
        # "Conv" between THMs: two 1×1 reductions (base, previous THM) and a concat
        self.join_base = nn.ModuleList(
            _conv_bn_relu(k, half, (1, 1), (1, 1), (0, 0)) for _ in range(cfg.num_thms - 1))
        self.join_prev = nn.ModuleList(
            _conv_bn_relu(cfg.thm_out_channels, cfg.thm_channels - half, (1, 1), (1, 1), (0, 0))
            for _ in range(cfg.num_thms - 1))
        self.thms = nn.ModuleList(
            TemporalHModule(cfg.thm_channels, cfg.thm_channels, cfg.thm_out_channels, cfg.num_scales,
                            cfg.upsample) for _ in range(cfg.num_thms))
        merged = cfg.num_thms * cfg.thm_out_channels
        self.mfm = MergeFeatureModule(merged, cfg.thm_out_channels, cfg.num_scales, cfg.mfm_reduction)
        width = cfg.head_squeeze * c
        a = len(self.ratios)
        self.squeeze = nn.ModuleList(
            nn.Sequential(nn.Conv2d(merged, cfg.head_squeeze, 1), nn.ReLU(inplace=True))
            for _ in range(cfg.num_scales))
        self.dropout = nn.Dropout(cfg.dropout)
        self.num_logits = num_classes + (1 if cfg.classifier == "softmax" else 0)
        self.cls_heads = nn.ModuleList(nn.Conv1d(width, a * self.num_logits, 3, padding=1)
                                       for _ in range(cfg.num_scales))
        self.conf_heads = nn.ModuleList(nn.Conv1d(width, a, 3, padding=1) for _ in range(cfg.num_scales))
        self.reg_heads = nn.ModuleList(nn.Conv1d(width, a * 2, 3, padding=1) for _ in range(cfg.num_scales))
        for head in self.reg_heads:
            nn.init.normal_(head.weight, std=1e-3)
            nn.init.zeros_(head.bias)

    # ------------------------------------------------------------------ forward
    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``features (B, C_in, T)``, ``mask (B, T)`` -> raw outputs (see the class docstring)."""
        if features.dim() != 3 or features.shape[1] != self.in_dim:
            raise ValueError(f"MLTPN expects features (B, {self.in_dim}, T), got {tuple(features.shape)}")
        if mask is not None:
            features = features * mask[:, None, :].to(features.dtype)
        x = self.base(features)                       # (B, c, t)
        base = self.transform(x.transpose(1, 2).unsqueeze(1))  # (B, k, t, c)
        pyramids = []
        thm_in = self.first_join(base)
        for i, thm in enumerate(self.thms):
            if i > 0:
                thm_in = torch.cat([self.join_base[i - 1](base), self.join_prev[i - 1](pyramids[-1][0])], 1)
            pyramids.append(thm(thm_in))
        merged = self.mfm([torch.cat([p[s] for p in pyramids], 1) for s in range(self.cfg.num_scales)])
        cls_out, conf_out, reg_out, lengths = [], [], [], []
        a, b = len(self.ratios), features.shape[0]
        for s, fmap in enumerate(merged):
            z = self.squeeze[s](fmap)                  # (B, q, t_s, c)
            t_s = z.shape[2]
            z = self.dropout(z.permute(0, 1, 3, 2).reshape(b, -1, t_s))  # (B, q·c, t_s)
            cls_out.append(self.cls_heads[s](z).reshape(b, a, self.num_logits, t_s)
                           .permute(0, 3, 1, 2).reshape(b, t_s * a, self.num_logits))
            conf_out.append(self.conf_heads[s](z).reshape(b, a, t_s).permute(0, 2, 1).reshape(b, t_s * a))
            reg_out.append(self.reg_heads[s](z).reshape(b, a, 2, t_s).permute(0, 3, 1, 2).reshape(b, t_s * a, 2))
            lengths.append(t_s)
        anchors = generate_anchors(lengths, self.strides(), self.ratios, self.cfg.anchor_base,
                                   device=features.device)
        return {"cls_logits": torch.cat(cls_out, 1), "conf_logits": torch.cat(conf_out, 1),
                "deltas": torch.cat(reg_out, 1), "anchors": anchors}

    def strides(self) -> list[int]:
        """Stride (input cells) of every pyramid scale."""
        return [BASE_STRIDE * 2 ** i for i in range(self.cfg.num_scales)]

    # ------------------------------------------------------------------ loss
    def loss(self, outputs: dict[str, torch.Tensor], mask: torch.Tensor,
             targets: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Paper eq. 7 over the batch (see the module docstring)."""
        cfg = self.cfg
        anchors = outputs["anchors"]
        cls_logits = outputs["cls_logits"].float()
        conf = torch.sigmoid(outputs["conf_logits"].float())
        pred = decode_segments(anchors, outputs["deltas"].float())       # (B, A, 2)
        valid = anchor_validity(anchors, mask, cls_logits.shape[0])      # (B, A)
        labels, matched, _ = zip(*[assign_targets(anchors, t["segments"].to(anchors), t["labels"],
                                                  cfg.pos_iou, valid[i])
                                   for i, t in enumerate(targets)])
        labels = torch.stack(labels)                                     # (B, A): -1 ignore, 0 bg
        matched = torch.stack(matched)                                   # (B, A): gt index or -1
        pos = labels > 0
        classes = torch.stack([instance_classes(torch.where(pos[i], matched[i], -1), t["segments"].to(anchors),
                                                t["labels"].to(anchors.device), self.num_classes)
                               for i, t in enumerate(targets)])         # (B, A, C) multi-hot on positives
        if cfg.classifier == "softmax":
            ce = -(softmax_targets(classes) * F.log_softmax(cls_logits, -1)).sum(-1)
        else:
            ce = F.binary_cross_entropy_with_logits(cls_logits, classes, reduction="none").sum(-1)
        chosen = pos | mine_negatives(ce.detach(), labels, cfg.neg_pos_ratio)
        n_cls = chosen.sum().clamp(min=1)
        loss_cls = (ce * chosen).sum() / n_cls

        gt_seg = torch.zeros_like(pred)
        iou_target = torch.zeros_like(conf)
        for i, t in enumerate(targets):
            segs = t["segments"].to(pred)
            if len(segs) == 0:
                continue
            m = matched[i].clamp(min=0)
            gt_seg[i] = segs[m]
            ref = anchors if cfg.iou_target == "anchor" else pred[i].detach()
            iou_target[i] = torch.where(matched[i] >= 0, segment_iou(ref, segs[m]), torch.zeros_like(conf[i]))
        loss_conf = (smooth_l1(conf, iou_target) * chosen).sum() / n_cls
        n_reg = pos.sum()
        if n_reg > 0:
            loss_reg = giou_loss(pred[pos], gt_seg[pos]).sum() / n_reg
        else:
            loss_reg = pred.sum() * 0.0
        total = cfg.cls_weight * loss_cls + cfg.conf_weight * loss_conf + cfg.reg_weight * loss_reg
        return {"loss": total, "loss_cls": loss_cls.detach(), "loss_conf": loss_conf.detach(),
                "loss_reg": loss_reg.detach(), "num_pos": n_reg.detach().float()}

    # ------------------------------------------------------------------ decode
    @torch.no_grad()
    def decode(self, outputs: dict[str, torch.Tensor], mask: torch.Tensor, topk: int = 2000,
               min_score: float = 0.0) -> list[Detections]:
        """Candidates per sample: score ``p(class) · conf`` (or ``p(class)``), grid units."""
        anchors = outputs["anchors"]
        logits = outputs["cls_logits"].float()
        probs = torch.softmax(logits, -1)[..., 1:] if self.cfg.classifier == "softmax" else torch.sigmoid(logits)
        if self.cfg.score == "product":
            probs = probs * torch.sigmoid(outputs["conf_logits"].float())[..., None]
        segs = decode_segments(anchors, outputs["deltas"].float())
        valid = anchor_validity(anchors, mask, probs.shape[0])
        return topk_detections(segs, probs.masked_fill(~valid[..., None], 0.0), topk, min_score)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(strides=self.strides(), anchor_ratios=[round(r, 4) for r in self.ratios])
        return info


# --------------------------------------------------------------------------- modules
class TransformModule(nn.Module):
    """``(B, 1, t, c)`` -> ``(B, k1 + k2, t, c)``: Conv1 k(3,1) s1 ‖ upsampled Conv2 k(3,1) s(2,1)."""

    def __init__(self, k1: int, k2: int, upsample: str = "nearest"):
        super().__init__()
        self.conv1 = _conv_bn_relu(1, k1, (3, 1), (1, 1), (1, 0))
        self.conv2 = _conv_bn_relu(1, k2, (3, 1), (2, 1), (1, 0))
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(x)
        b = _resize_time(self.conv2(x), a.shape[2], self.upsample)
        return torch.cat([a, b], 1)


class TemporalHModule(nn.Module):
    """Temporal H-shaped Module: an encoder-decoder pyramid along time only.

    Encoder: ``num_scales - 1`` convs k(3,1) s(2,1); the input and their
    outputs are the reference maps. Decoder: from the coarsest map down, upsample,
    conv k(3,1), add the lateral reference map. Each decoded scale goes through a
    1×1 conv to ``out_ch`` channels. Returns ``num_scales`` maps, finest first:
    ``(B, out_ch, ceil(t / 2^i), c)``.
    """

    def __init__(self, in_ch: int, planes: int, out_ch: int, num_scales: int, upsample: str = "nearest"):
        super().__init__()
        self.upsample = upsample
        self.encoder = nn.ModuleList(
            _conv_bn_relu(in_ch if i == 0 else planes, planes, (3, 1), (2, 1), (1, 0))
            for i in range(num_scales - 1))
        self.lateral0 = (nn.Identity() if in_ch == planes
                         else _conv_bn_relu(in_ch, planes, (1, 1), (1, 1), (0, 0)))
        self.decoder = nn.ModuleList(_conv_bn_relu(planes, planes, (3, 1), (1, 1), (1, 0))
                                     for _ in range(num_scales - 1))
        self.smooth = nn.ModuleList(_conv_bn_relu(planes, out_ch, (1, 1), (1, 1), (0, 0))
                                    for _ in range(num_scales))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        refs = [self.lateral0(x)]
        h = x
        for conv in self.encoder:
            h = conv(h)
            refs.append(h)
        dec = [refs[-1]]
        for i in range(len(refs) - 2, -1, -1):
            up = _resize_time(dec[0], refs[i].shape[2], self.upsample)
            dec.insert(0, self.decoder[i](up) + refs[i])
        return [smooth(d) for smooth, d in zip(self.smooth, dec)]


class MergeFeatureModule(nn.Module):
    """MFM: a bottleneck residual block shared by all scales, then per-scale channel attention."""

    def __init__(self, channels: int, mid: int, num_scales: int, reduction: int = 16):
        super().__init__()
        self.residual = nn.Sequential(
            _conv_bn_relu(channels, mid, (1, 1), (1, 1), (0, 0)),
            _conv_bn_relu(mid, mid, (3, 1), (1, 1), (1, 0)),
            nn.Conv2d(mid, channels, 1, bias=False), nn.BatchNorm2d(channels))
        hidden = max(1, channels // max(1, reduction))
        self.attention = nn.ModuleList(
            nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
            for _ in range(num_scales))

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for x, att in zip(maps, self.attention):
            x = F.relu(x + self.residual(x))
            w = torch.sigmoid(att(x.mean(dim=(2, 3))))  # (B, channels)
            out.append(x * w[:, :, None, None])
        return out


# --------------------------------------------------------------------------- anchors & targets
def anchor_ratios(cfg: MLTPNConfig) -> list[float]:
    """Anchor width ratios: ``cfg.anchor_ratios`` or ``num_anchors`` geometric steps."""
    if cfg.anchor_ratios:
        return [float(r) for r in cfg.anchor_ratios]
    if cfg.num_anchors == 1:
        return [math.sqrt(cfg.anchor_min_ratio * cfg.anchor_max_ratio)]
    return [float(r) for r in np.geomspace(cfg.anchor_min_ratio, cfg.anchor_max_ratio, cfg.num_anchors)]


def generate_anchors(lengths: Sequence[int], strides: Sequence[int], ratios: Sequence[float],
                     base: float = 1.0, device: torch.device | str | None = None) -> torch.Tensor:
    """Anchors ``[Σ_i lengths[i] · len(ratios), 2]`` in input grid units.

    Scale ``i`` with stride ``s``: cell ``j`` centred at ``j·s`` (its receptive
    field's centre, :func:`~tadkit.detect.layers.pyramid.level_centers`), one
    anchor of width ``base · s · r`` per ratio ``r``; order scale, cell, ratio.
    """
    out = []
    r = torch.tensor(list(ratios), dtype=torch.float32, device=device)
    for n, s in zip(lengths, strides):
        centers = level_centers(n, s, device)
        half = 0.5 * base * s * r
        out.append(torch.stack([centers[:, None] - half[None, :], centers[:, None] + half[None, :]], -1)
                   .reshape(-1, 2))
    return torch.cat(out, 0)


def decode_segments(anchors: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Anchors ``[A, 2]`` + deltas ``(..., A, 2)`` (centre shift in anchor widths, log width ratio)."""
    center = 0.5 * (anchors[:, 0] + anchors[:, 1])
    width = anchors[:, 1] - anchors[:, 0]
    c = center + deltas[..., 0] * width
    w = width * torch.exp(deltas[..., 1].clamp(max=MAX_LOG_SCALE))
    return torch.stack([c - 0.5 * w, c + 0.5 * w], -1)


def anchor_validity(anchors: torch.Tensor, mask: torch.Tensor | None, batch: int = 1) -> torch.Tensor:
    """``(B, A)`` True where the anchor's centre lies on a real (unpadded) snippet.

    Without a mask every anchor of the ``batch`` samples is valid.
    """
    if mask is None:
        return torch.ones(batch, anchors.shape[0], dtype=torch.bool, device=anchors.device)
    valid_len = mask.sum(1).to(anchors.dtype)  # (B,)
    center = 0.5 * (anchors[:, 0] + anchors[:, 1])
    return center[None, :] < valid_len[:, None] - 0.5 + 1e-6


def assign_targets(anchors: torch.Tensor, gt_segments: torch.Tensor, gt_labels: torch.Tensor,
                   pos_iou: float = 0.5, valid: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Match anchors ``[A, 2]`` to ground truth ``[N, 2]`` (grid units) with labels ``[N]``.

    An anchor is positive if its best IoU with a ground truth is at least
    ``pos_iou``; besides, every ground truth claims its best valid anchor
    (so short or odd-sized actions are never left without one). Anchors
    outside ``valid`` are ignored.

    Returns ``(labels [A], matched [A], max_iou [A])``: ``labels`` is ``-1``
    (ignored), ``0`` (background) or ``class + 1``; ``matched`` is the index of
    the closest ground truth (highest IoU; ``-1`` when there is none).
    """
    a = anchors.shape[0]
    dev = anchors.device
    valid = torch.ones(a, dtype=torch.bool, device=dev) if valid is None else valid.reshape(-1)
    if gt_segments.numel() == 0:
        labels = torch.zeros(a, dtype=torch.long, device=dev)
        return labels.masked_fill(~valid, -1), torch.full((a,), -1, dtype=torch.long, device=dev), \
            torch.zeros(a, device=dev)
    iou = pairwise_iou(anchors, gt_segments)  # (A, N)
    max_iou, closest = iou.max(1)
    matched = torch.where(max_iou > 0, closest, torch.full_like(closest, -1))
    pos = (max_iou >= pos_iou) & valid
    iou_valid = iou.masked_fill(~valid[:, None], -1.0)
    best_anchor = iou_valid.argmax(0)  # (N,)
    best_ok = iou_valid[best_anchor, torch.arange(len(best_anchor), device=dev)] > 0
    for n in range(len(best_anchor)):  # forced matches; a later ground truth wins a shared anchor
        if best_ok[n]:
            pos[best_anchor[n]] = True
            matched[best_anchor[n]] = n
    labels = torch.where(pos, gt_labels.to(dev).long()[matched.clamp(min=0)] + 1, torch.zeros_like(matched))
    labels = labels.masked_fill(~valid, -1)
    return labels, matched, max_iou


def mine_negatives(ce: torch.Tensor, labels: torch.Tensor, ratio: float) -> torch.Tensor:
    """Hard negative mining: ``(B, A)`` mask of the ``ratio · #pos`` highest-loss negatives per sample.

    A sample without positives keeps ``ratio`` negatives (at least one);
    ``ratio <= 0`` keeps every negative.
    """
    neg = labels == 0
    if ratio <= 0:
        return neg
    num_pos = (labels > 0).sum(1, keepdim=True)
    quota = torch.clamp(torch.ceil(ratio * num_pos.clamp(min=1).float()), min=1).long()
    loss = ce.masked_fill(~neg, -1.0)
    order = loss.argsort(1, descending=True)
    rank = order.argsort(1)
    return neg & (rank < quota)


# --------------------------------------------------------------------------- helpers
def _conv_bn_relu(cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int],
                  padding: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _resize_time(x: torch.Tensor, length: int, mode: str) -> torch.Tensor:
    """Resize ``(B, C, t, c)`` along time to ``length`` (nearest or linear)."""
    if x.shape[2] == length:
        return x
    if mode == "nearest":
        return F.interpolate(x, size=(length, x.shape[3]), mode="nearest")
    return F.interpolate(x, size=(length, x.shape[3]), mode="bilinear", align_corners=False)
