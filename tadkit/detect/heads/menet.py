"""MENet: Movement Enhance Network (Zhao, Wang, Zhao), a class-agnostic proposal head.

Over MFE features ``cat(F_Movement, F_Total)`` (``tadkit extract --backbone mfe``)::

    features (B, C_in, T)
      1-D conv k1 + ReLU (fuse the semantic dimension)                 (B, dim, T)
      MREM: local conv k ‖ forward LSTM ‖ backward LSTM, concatenated,
            1×1 conv + ReLU                                           (B, dim, T)
            (Base ablation, ``mrem: false``: one temporal conv k3 instead)
      SFPN U-shape: down  e_0 = conv(x), e_i = conv(avgpool(e_{i-1}))
                    up    u_last = e_last, u_i = conv([e_i, convT(u_{i+1})])
                                                            layer i (B, dim, T / 2^i)
      per layer i (own parameters):
        Boundary Predictor  conv k3 + ReLU, conv 1×1 -> start / end logits (B, L_i)
        anchors (s, e), s < e, in layer steps: sampled in training (two-stage
          strategy), boundary-peak pairs of the layer's scale range at inference
        SAlign  segment_align of the anchor (widened by align_context)  (K, dim, S)
        IoU-ASP     MLP -> (M_cls, M_reg) logits
        Offset-ASP  MLP -> (Δc, Δd)

Geometry: layer ``i`` has stride ``2^i`` input cells; its step ``j`` is centred
at input position ``j·2^i + (2^i − 1)/2``. An anchor ``(s, e)`` runs from the
centre of step ``s`` to the centre of step ``e``; its *scale* is ``(e − s) /
L`` with ``L`` the sample's valid steps on that layer (the video, or the
window, on that layer).

Training (paper §3.4-3.5): boundary labels = overlap of each step with
``[t* ± 1.5]`` steps (BSN / BMN); G_IoU = best tIoU with the ground truth;
anchors with tIoU > 0.9 are IoU positives and train the offsets ``Δc = (c* −
c)/d``, ``Δd = log(d*/d)``. Per layer ``L_B(P_s) + L_B(P_e) + L_asp(M_cls) +
λ1·L2(M_reg) + λ2·(SmoothL1(Δc) + SmoothL1(Δd))``, summed over layers (eq. 3-8;
``L_B`` / ``L_asp`` are the mean BCE of the positives plus that of the
negatives, twice :func:`~tadkit.detect.losses.balanced_bce`). Anchor sampling
(§3.4): layer ``i`` samples ``round(n·r_i)`` of its ``n`` valid anchors
uniformly (Generalization), or ``min(1, 2r_i)`` of those inside its scale
range and ``r_i`` of the others (Specialization); ``bias`` takes ``r_i`` of
those inside only. ``two_stage`` switches from Generalization to
Specialization at epoch ``generalization_epochs`` through
:meth:`MENet.on_epoch_start`.

Inference (§3.5): start / end candidates are local peaks or above ``0.5 ×``
the sample's maximum; every pair inside the layer's scale range is an
anchor; refined by eq. 9; scored ``p_s · p_e · M_cls · M_reg``; label 0
(class-agnostic proposals; soft-NMS and classifier fusion are the engine's).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tadkit.detect.config import MENetConfig
from tadkit.detect.heads import HEADS
from tadkit.detect.heads.base import DetectionHead, weighted_mean
from tadkit.detect.layers.align import segment_align_batched
from tadkit.detect.layers.anchors import anchor_map, apply_offsets, match_anchors, offset_targets
from tadkit.detect.layers.peaks import boundary_peaks, peak_pairs
from tadkit.detect.layers.proposal_map import boundary_labels
from tadkit.detect.layers.pyramid import level_mask
from tadkit.detect.layers.sequence import MaskedLSTM
from tadkit.detect.losses import balanced_bce, smooth_l1
from tadkit.detect.postprocess import Detections

STAGES = ("generalization", "specialization", "bias")


@HEADS.register("menet")
def build_menet(cfg: MENetConfig, in_dim: int, num_classes: int) -> "MENet":
    """Registry builder: ``MENet(cfg, in_dim, num_classes)``."""
    return MENet(cfg, in_dim, num_classes)


class MENet(DetectionHead):
    """The MENet proposal generator (see the module docstring).

    ``forward`` returns, for every detector layer ``i`` (pyramid order):
    ``start_i``, ``end_i`` ``(B, L_i)`` boundary logits; ``anchors_i (B, K_i,
    2)`` long layer steps ``(s, e)`` and ``anchor_mask_i (B, K_i)`` (False on
    padding); ``iou_i (B, K_i, 2)`` logits of ``(M_cls, M_reg)``;
    ``offsets_i (B, K_i, 2)`` = ``(Δc, Δd)``.
    """

    class_agnostic = True

    def __init__(self, cfg: MENetConfig, in_dim: int, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.in_dim = in_dim
        self.num_classes = num_classes
        d = cfg.dim
        self.fuse = nn.Conv1d(in_dim, d, 1)
        self.mrem = MREM(d, cfg.local_kernel) if cfg.mrem else None
        self.temporal = None if cfg.mrem else nn.Conv1d(d, d, 3, padding=1)
        if cfg.single_layer < 0:
            self.levels = list(range(cfg.num_layers))
            self.sfpn = SFPN(d, cfg.num_layers, cfg.downsample)
            self.scale_ranges = [tuple(r) for r in cfg.scale_ranges]
        else:  # one layer T / 2^i, responsible for every scale; reached by the plain down path
            self.levels = [cfg.single_layer]
            down = "avgpool" if cfg.downsample == "ushape" else cfg.downsample
            self.sfpn = SFPN(d, cfg.single_layer + 1, down)
            self.scale_ranges = [(0.0, 1.0)]
        self.ratios = [cfg.sampling_ratios[i] for i in self.levels]
        self.strides = [2 ** i for i in self.levels]
        self.stride = 2 ** (self.sfpn.num_levels - 1)
        self.heads = nn.ModuleList(LayerHead(d, cfg.align_bins, cfg.asp_dim) for _ in self.levels)
        self.stage = self.stage_at(0)

    # ------------------------------------------------------------------ schedule
    def stage_at(self, epoch: int) -> str:
        """The anchor sampling stage of (0-based) training epoch ``epoch``."""
        if self.cfg.single_layer >= 0:
            return "generalization"   # one layer covers every scale: nothing to specialise in
        if self.cfg.sampling == "two_stage":
            return "generalization" if epoch < self.cfg.generalization_epochs else "specialization"
        return self.cfg.sampling

    def on_epoch_start(self, epoch: int, total: int) -> None:
        """Engine hook before every training epoch: Generalization, then Specialization."""
        self.stage = self.stage_at(epoch)

    # ------------------------------------------------------------------ forward
    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``features (B, C_in, T)``, ``mask (B, T)`` (right-padded) -> raw outputs (class docstring)."""
        if features.dim() != 3 or features.shape[1] != self.in_dim:
            raise ValueError(f"MENet expects features (B, {self.in_dim}, T), got {tuple(features.shape)}")
        b, _, t = features.shape
        if t % self.stride:
            raise ValueError(f"MENet needs T a multiple of {self.stride} (pad the batch), got {t}")
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=features.device)
        m = mask[:, None, :].to(features.dtype)
        x = F.relu(self.fuse(features * m)) * m
        x = self.mrem(x, mask) if self.mrem is not None else F.relu(self.temporal(x)) * m
        masks = [level_mask(mask, t // 2 ** i, 2 ** i) for i in range(self.sfpn.num_levels)]
        maps = self.sfpn(x, masks)
        out: dict[str, torch.Tensor] = {}
        for i, (level, head) in enumerate(zip(self.levels, self.heads)):
            feat, lmask = maps[level], masks[level]
            lengths = lmask.sum(1)
            logits = head.boundary(feat)                               # (B, 2, L)
            start, end = logits[:, 0], logits[:, 1]
            if self.training:
                anchors = [self._sampled(int(n), i) for n in lengths]
            else:
                ps, pe = torch.sigmoid(start.detach().float()), torch.sigmoid(end.detach().float())
                anchors = [self._candidates(ps[j], pe[j], int(n), i) for j, n in enumerate(lengths)]
            anchors, amask = _pad(anchors, feat.device)
            iou, offsets = head.score(feat, anchors, lengths, self.cfg)
            out.update({f"start_{i}": start, f"end_{i}": end, f"anchors_{i}": anchors, f"anchor_mask_{i}": amask,
                        f"iou_{i}": iou, f"offsets_{i}": offsets})
        return out

    def _sampled(self, length: int, layer: int) -> torch.Tensor:
        return sample_anchors(length, self._max_duration(length), self.scale_ranges[layer], self.ratios[layer],
                              self.stage, device=self.fuse.weight.device)

    def _candidates(self, p_start: torch.Tensor, p_end: torch.Tensor, length: int, layer: int) -> torch.Tensor:
        return candidate_anchors(p_start[:length], p_end[:length], self.scale_ranges[layer],
                                 self._max_duration(length), self.cfg.peak_threshold, self.cfg.max_candidates)

    def _max_duration(self, length: int) -> int:
        return max(1, int(round(self.cfg.max_duration * (length - 1))))

    # ------------------------------------------------------------------ loss
    def loss(self, outputs: dict[str, torch.Tensor], mask: torch.Tensor,
             targets: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Paper eq. 3-8 summed over the layers (see the module docstring)."""
        cfg = self.cfg
        total = 0.0
        parts = {"loss_boundary": 0.0, "loss_iou_cls": 0.0, "loss_iou_reg": 0.0, "loss_offset": 0.0}
        num_pos = 0
        for i, stride in enumerate(self.strides):
            start, end = outputs[f"start_{i}"].float(), outputs[f"end_{i}"].float()
            length = start.shape[1]
            lmask = level_mask(mask, length, stride, start.shape[0], start.device)
            gts = [to_layer(t["segments"].to(start), stride) for t in targets]
            width = 2 * cfg.boundary_radius
            g_start = torch.stack([boundary_labels(g[:, 0], length, width) for g in gts])
            g_end = torch.stack([boundary_labels(g[:, 1], length, width) for g in gts])
            l_bound = 2 * (balanced_bce(start, g_start, lmask) + balanced_bce(end, g_end, lmask))

            anchors = outputs[f"anchors_{i}"].to(start.dtype)
            amask = outputs[f"anchor_mask_{i}"]
            iou_logits = outputs[f"iou_{i}"].float()
            iou_t, matched = (torch.stack(x) for x in zip(*[match_anchors(a, g) for a, g in zip(anchors, gts)]))
            l_cls = 2 * balanced_bce(iou_logits[..., 0], iou_t, amask, threshold=cfg.pos_iou)
            n = amask.sum().clamp(min=1)
            l_reg = ((torch.sigmoid(iou_logits[..., 1]) - iou_t) ** 2 * amask).sum() / n
            pos = amask & (iou_t > cfg.pos_iou)
            offsets = outputs[f"offsets_{i}"].float()
            if pos.any():
                gt_seg = torch.stack([g[m.clamp(min=0)] if len(g) else torch.zeros_like(a)
                                      for g, m, a in zip(gts, matched, anchors)])
                target = offset_targets(anchors[pos], gt_seg[pos])
                l_off = smooth_l1(offsets[pos], target).mean(0).sum()      # SmoothL1(Δc) + SmoothL1(Δd)
            else:
                l_off = offsets.sum() * 0.0
            total = total + l_bound + l_cls + cfg.lambda_reg * l_reg + cfg.lambda_offset * l_off
            for key, value in zip(parts, (l_bound, l_cls, l_reg, l_off)):
                parts[key] = parts[key] + value.detach()
            num_pos += int(pos.sum())
        out = {"loss": total, **parts}
        out["num_pos"] = torch.tensor(float(num_pos))
        return out

    def average_outputs(self, outputs: Sequence[dict[str, torch.Tensor]],
                        weights: Sequence[float]) -> dict[str, torch.Tensor]:
        """Ensembles (``detect infer --fuse mean``) of runs whose candidates differ.

        Runs that score the same anchors (e.g. identical runs) are averaged
        entirely (the default weighted mean). Otherwise the boundary logits are
        averaged and each layer's anchors are pooled over the runs, each with
        its own run's ASP outputs and the weight ``w / max(w)`` of that run
        (``anchor_weight_i``); decoding then scores every anchor with the
        averaged boundary probabilities, and NMS merges what several runs found.
        """
        keys = [f"{k}_{i}" for i in range(len(self.strides)) for k in ("anchors", "anchor_mask")]
        if all(o[k].shape == outputs[0][k].shape and torch.equal(o[k], outputs[0][k]) for o in outputs for k in keys):
            return weighted_mean(outputs, weights)
        merged = weighted_mean([{k: v for k, v in o.items() if k.startswith(("start_", "end_"))} for o in outputs],
                               weights)
        top = max(weights)
        for i in range(len(self.strides)):
            for key in ("anchors", "anchor_mask", "iou", "offsets"):
                merged[f"{key}_{i}"] = torch.cat([o[f"{key}_{i}"] for o in outputs], 1)
            merged[f"anchor_weight_{i}"] = torch.cat([torch.full(o[f"anchor_mask_{i}"].shape, w / top)
                                                      for o, w in zip(outputs, weights)], 1)
        return merged

    # ------------------------------------------------------------------ decode
    @torch.no_grad()
    def decode(self, outputs: dict[str, torch.Tensor], mask: torch.Tensor, topk: int = 2000,
               min_score: float = 0.0) -> list[Detections]:
        """Proposals per sample (input grid units, label 0), scored ``p_s · p_e · M_cls · M_reg``."""
        segs, scores, masks = [], [], []
        for i, stride in enumerate(self.strides):
            ps, pe = torch.sigmoid(outputs[f"start_{i}"].float()), torch.sigmoid(outputs[f"end_{i}"].float())
            anchors = outputs[f"anchors_{i}"]
            p_iou = torch.sigmoid(outputs[f"iou_{i}"].float()).prod(-1)
            score = ps.gather(1, anchors[..., 0]) * pe.gather(1, anchors[..., 1]) * p_iou
            scores.append(score * outputs[f"anchor_weight_{i}"].to(score) if f"anchor_weight_{i}" in outputs
                          else score)
            segs.append(apply_offsets(anchors.float(), outputs[f"offsets_{i}"].float()) * stride + (stride - 1) / 2)
            masks.append(outputs[f"anchor_mask_{i}"])
        seg_all, score_all, mask_all = torch.cat(segs, 1), torch.cat(scores, 1), torch.cat(masks, 1)
        out = []
        for seg, sc, keep in zip(seg_all, score_all, mask_all):
            seg, sc = seg[keep], sc[keep]
            keep = sc > min_score
            seg, sc = seg[keep], sc[keep]
            if topk and topk > 0 and len(sc) > topk:
                sc, idx = sc.topk(topk)
                seg = seg[idx]
            out.append(Detections(seg.cpu().numpy(), sc.cpu().numpy(), torch.zeros(len(sc), dtype=torch.long)))
        return out

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(layers=self.levels, strides=self.strides, scale_ranges=self.scale_ranges,
                    sampling=self.cfg.sampling, stage=self.stage)
        return info


# --------------------------------------------------------------------------- modules
class MREM(nn.Module):
    """Multi-Relation Enhance Module: ``(B, dim, T)``, mask -> ``(B, dim, T)``, zero on padding.

    Local path: conv k + ReLU; forward / backward paths: LSTMs over each
    sample's own cells (:class:`~tadkit.detect.layers.sequence.MaskedLSTM`);
    the three are concatenated and merged by a 1×1 conv + ReLU.
    """

    def __init__(self, dim: int, kernel: int = 3):
        super().__init__()
        self.local = nn.Conv1d(dim, dim, kernel, padding=kernel // 2)
        self.forward_path = MaskedLSTM(dim, dim, direction="forward")
        self.backward_path = MaskedLSTM(dim, dim, direction="backward")
        self.merge = nn.Conv1d(3 * dim, dim, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask[:, None, :].to(x.dtype)
        paths = [F.relu(self.local(x)) * m, self.forward_path(x, mask), self.backward_path(x, mask)]
        return F.relu(self.merge(torch.cat(paths, 1))) * m


class SFPN(nn.Module):
    """Scale feature pyramid: ``(B, dim, T)`` -> ``num_levels`` maps ``(B, dim, T / 2^i)``.

    ``ushape``: down path conv k3 + ReLU, average pooling between levels;
    up path from the coarsest level: transposed conv (k2, s2) + ReLU,
    concatenated with the down map of that level, conv k3 + ReLU. ``avgpool``
    / ``conv``: the down path alone (``conv``: stride-2 convs instead of
    pooling). ``T`` must be a multiple of ``2^(num_levels - 1)``; ``masks``
    (one ``(B, T_i)`` per level) zero the padding after every layer.
    """

    def __init__(self, dim: int, num_levels: int, downsample: str = "ushape"):
        super().__init__()
        self.num_levels = num_levels
        self.downsample = downsample
        self.down = nn.ModuleList(
            nn.Conv1d(dim, dim, 3, stride=2 if downsample == "conv" and i > 0 else 1, padding=1)
            for i in range(num_levels))
        ups = num_levels - 1 if downsample == "ushape" else 0
        self.up = nn.ModuleList(nn.ConvTranspose1d(dim, dim, 2, stride=2) for _ in range(ups))
        self.merge = nn.ModuleList(nn.Conv1d(2 * dim, dim, 3, padding=1) for _ in range(ups))

    def forward(self, x: torch.Tensor, masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        ms = [m[:, None, :].to(x.dtype) for m in masks]
        down = []
        for i, conv in enumerate(self.down):
            if i > 0 and self.downsample != "conv":
                x = F.avg_pool1d(x, 2)
            x = F.relu(conv(x)) * ms[i]
            down.append(x)
        if not len(self.up):
            return down
        out = [down[-1]]
        for i in range(self.num_levels - 2, -1, -1):
            up = F.relu(self.up[i](out[0])) * ms[i]               # the bias would leak into padding
            out.insert(0, F.relu(self.merge[i](torch.cat([down[i], up], 1))) * ms[i])
        return out


class LayerHead(nn.Module):
    """One SFPN layer's detector: boundary predictor, SAlign, IoU-ASP and Offset-ASP."""

    def __init__(self, dim: int, bins: int, asp_dim: int):
        super().__init__()
        self.boundary = nn.Sequential(nn.Conv1d(dim, dim, 3, padding=1), nn.ReLU(inplace=True), nn.Conv1d(dim, 2, 1))
        self.iou_asp = _asp(dim * bins, asp_dim)
        self.offset_asp = _asp(dim * bins, asp_dim)
        nn.init.zeros_(self.offset_asp[-1].weight)
        nn.init.zeros_(self.offset_asp[-1].bias)

    def score(self, feat: torch.Tensor, anchors: torch.Tensor, lengths: torch.Tensor,
              cfg: MENetConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """ASP outputs ``(B, K, 2)`` ×2 for ``anchors (B, K, 2)`` (layer steps) of ``feat (B, dim, L)``."""
        a = anchors.to(feat.dtype)
        reach = cfg.align_context * (a[..., 1] - a[..., 0])
        segs = torch.stack([a[..., 0] - reach, a[..., 1] + reach], -1)
        aligned = segment_align_batched(feat, segs, cfg.align_bins, cfg.align_samples, lengths)  # (B, K, dim, S)
        flat = aligned.flatten(2)
        return self.iou_asp(flat), self.offset_asp(flat)


# --------------------------------------------------------------------------- anchors
def sample_anchors(length: int, max_duration: int, scale_range: tuple[float, float], ratio: float,
                   stage: str, device: torch.device | str | None = None) -> torch.Tensor:
    """Training anchors ``(K, 2)`` long of a layer with ``length`` valid steps (paper §3.4).

    Of the valid anchors (``s < e < length``, ``e − s <= max_duration``),
    ``generalization`` draws ``round(n · ratio)`` uniformly without
    replacement; ``specialization`` draws ``min(1, 2·ratio)`` of those whose
    scale ``(e − s) / length`` lies in ``scale_range`` and ``ratio`` of the
    others; ``bias`` draws ``ratio`` of those inside only. Uses torch's global
    RNG (the engine seeds it per epoch).
    """
    if stage not in STAGES:
        raise ValueError(f"unknown sampling stage {stage!r}; choose one of {', '.join(STAGES)}")
    if length < 2:
        return torch.zeros(0, 2, dtype=torch.long, device=device)
    grid, valid = anchor_map(length, min(max_duration, length - 1), device=device)
    anchors = grid[valid].long()                                          # (n, 2)
    scale = (anchors[:, 1] - anchors[:, 0]).float() / length
    inside = (scale >= scale_range[0]) & (scale <= scale_range[1])
    if stage == "generalization":
        groups = [(torch.ones_like(inside), ratio)]
    elif stage == "specialization":
        groups = [(inside, min(1.0, 2 * ratio)), (~inside, ratio)]
    else:
        groups = [(inside, ratio)]
    picked = []
    for region, rate in groups:
        index = torch.nonzero(region).flatten()
        k = int(round(len(index) * rate))
        picked.append(index[torch.randperm(len(index), device=index.device)[:k]])
    return anchors[torch.cat(picked)]


def candidate_anchors(p_start: torch.Tensor, p_end: torch.Tensor, scale_range: tuple[float, float],
                      max_duration: int, rel_threshold: float = 0.5, max_candidates: int = 1000) -> torch.Tensor:
    """Inference anchors ``(K, 2)`` long from one sample's boundary probabilities ``(L,)`` (paper §3.5).

    Pairs of start and end candidates (local peaks, or above ``rel_threshold``
    × the curve's maximum) with scale ``(e − s) / L`` in ``scale_range``; the
    ``max_candidates`` with the highest ``p_s · p_e`` when there are more.
    """
    length = p_start.shape[0]
    ok_s = boundary_peaks(p_start[None], rel_threshold=rel_threshold)[0]
    ok_e = boundary_peaks(p_end[None], rel_threshold=rel_threshold)[0]
    pairs = peak_pairs(ok_s, ok_e, max_duration)
    scale = (pairs[:, 1] - pairs[:, 0]).float() / max(1, length)
    pairs = pairs[(scale >= scale_range[0]) & (scale <= scale_range[1])]
    if len(pairs) > max_candidates:
        order = (p_start[pairs[:, 0]] * p_end[pairs[:, 1]]).topk(max_candidates).indices
        pairs = pairs[order]
    return pairs


def to_layer(segments: torch.Tensor, stride: int) -> torch.Tensor:
    """Input grid positions -> steps of a layer with ``stride`` (step ``j`` centred at ``j·s + (s − 1)/2``)."""
    return (segments - (stride - 1) / 2) / stride


# --------------------------------------------------------------------------- helpers
def _asp(in_dim: int, hidden: int) -> nn.Sequential:
    """Anchor Score Predictor: flattened SAlign features -> 2 outputs."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                         nn.ReLU(inplace=True), nn.Linear(hidden, 2))


def _pad(anchors: Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(K_b, 2)`` anchors -> ``(B, K, 2)`` long (padding ``(0, 1)``) and mask ``(B, K)``."""
    k = max((len(a) for a in anchors), default=0)
    out = torch.zeros(len(anchors), k, 2, dtype=torch.long, device=device)
    out[..., 1] = 1
    mask = torch.zeros(len(anchors), k, dtype=torch.bool, device=device)
    for b, a in enumerate(anchors):
        out[b, :len(a)] = a
        mask[b, :len(a)] = True
    return out, mask
