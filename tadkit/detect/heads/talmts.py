"""TAL-MTS: Temporal Action Localization with Multi-temporal Scales (Gao, Cui, Zhuo et al.).

An anchor-free, coarse-to-fine detector over offline snippet features::

    features (B, C_in, T) [+ grid (B, T, g, g, C_g)] [+ stored levels]
      RFP  strided-conv pyramid, num_levels levels of dim channels, strides
           first_stride·2^l (with ``stored_levels``: the lowest levels are
           stored backbone levels, e.g. I3D Mixed_4f / Mixed_5c, resampled
           onto the cells); top-down refinement: nearest upsample + add (no
           parameters)                                              f_l  (B, dim, T_l)
           frame-level f_a^c = linear interpolation of level 0 to T  (B, dim, T)
      STT  spatial transformer over each snippet's grid tokens, mean over
           tokens, + sinusoidal temporal embedding, temporal transformer over
           snippets (pre-LN MSA), Linear                         f_t  (B, stt_dim, T)
           -> strided convs to the pyramid lengths              f_l' (B, dim, T_l)
      eq. 2-3  f_loc = Conv1(f_l),  f_cls = Conv2([f_l, f_l'])   (shared over levels)
      eq. 4    coarse distances d^s, d^e = stride · exp(scale_l · Conv3(f_loc)),
               coarse class logits φ^c = Conv4(f_cls)
      FSA  patch self-attention over each snippet's grid     f_a^r (B, fsa_dim, T)
           f_a = [f_a^c, f_a^r]
      eq. 6    boundary max pooling (AFSD) around each coarse boundary on f_a and
               on the location's own level of f_loc / f_cls -> refined offsets
               Δ^r and quality ε (localisation branch), refined class logits φ^r

Without a spatial grid (``grid_size: 0``, the default, or no grid passed) a
snippet is one token — its feature vector — for both STT and FSA: the
spatial transformer and FSA then attend over a single token, i.e. they act
as per-snippet residual MLPs, and STT's long-range modelling comes from its
temporal transformer alone.

Locations (input grid units): level ``l`` cell ``j`` is centred at ``p =
j·s_l``, the centre of its receptive field
(:func:`~tadkit.detect.layers.pyramid.level_centers`); its coarse segment is
``[p - d^s, p + d^e]``.
Training (eq. 7-12): a location is positive when its centre lies inside a
ground truth (the shortest one when several; a ground truth containing no
centre claims the nearest valid location), with the classes of every ground
truth sharing that exact segment as targets; focal loss on coarse classes (÷
N^c), ``1 - GIoU`` on coarse segments (÷ N^c); refinement positives are
the positives whose coarse segment has tIoU > ``refine_iou`` with their ground
truth: focal loss on refined classes, Smooth-L1 on offsets (targets by the
inverse of eq. 13), BCE between ε and the tIoU of the refined segment (all ÷
N^r). ``L = L^c_cls + L^r_cls + α(L^c_loc + L^r_loc) + β L_bce``.
Inference (eq. 13): ``t^p = t^c + ½ d^c Δ^r``, score ``½(φ^c + φ^r) · ε``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tadkit.detect.config import TALMTSConfig
from tadkit.detect.geometry import segment_iou
from tadkit.detect.heads import HEADS
from tadkit.detect.heads.base import DetectionHead, InputInfo, LevelInput, topk_detections
from tadkit.detect.layers.attention import TransformerEncoder, grid_patches, sinusoidal_embedding
from tadkit.detect.layers.boundary import boundary_max_pool, boundary_regions
from tadkit.detect.layers.pyramid import (ConvNormReLU, StoredLevelPyramid, TemporalPyramid, frame_level_feature,
                                          level_centers, level_mask, num_groups, refine_top_down, to_level_cells)
from tadkit.detect.layers.targets import instance_classes
from tadkit.detect.losses import giou_loss, sigmoid_focal_loss, smooth_l1
from tadkit.detect.postprocess import Detections
from tadkit.errors import ConfigError

MAX_LOG_DISTANCE = 8.0  # coarse distances are at most e^8 level strides


@HEADS.register("talmts")
def build_talmts(cfg: TALMTSConfig, in_dim: int, num_classes: int, inputs: InputInfo | None = None) -> "TALMTS":
    """Registry builder: ``TALMTS(cfg, in_dim, num_classes)``, with the channels of the ``data.levels``
    when ``cfg.stored_levels`` (errors name the keys to change)."""
    names = inputs.level_names if inputs is not None else ()
    if not cfg.stored_levels:
        if names:
            raise ConfigError(f"data.levels names {', '.join(names)} but talmts.stored_levels is false, so TAL-MTS "
                              "would not read them: set talmts.stored_levels=true or data.levels=[]")
        return TALMTS(cfg, in_dim, num_classes)
    if not names:
        raise ConfigError("talmts.stored_levels needs data.levels: the stored levels that become the lowest pyramid "
                          "levels, finest first (e.g. [Mixed_4f, Mixed_5c]; extract with --levels)")
    if len(names) > cfg.num_levels:
        raise ConfigError(f"data.levels names {len(names)} levels, at most talmts.num_levels={cfg.num_levels} "
                          "can be stored ones")
    return TALMTS(cfg, in_dim, num_classes, level_dims=inputs.level_dims)


class TALMTS(DetectionHead):
    """The TAL-MTS detector (see the module docstring).

    ``forward(features, mask, grid=None)`` returns, with ``N`` the number of
    locations over all levels (level-major): ``points [N]`` and ``strides
    [N]`` (input grid units), ``valid (B, N)``, ``coarse_segments (B, N, 2)``,
    ``coarse_logits (B, N, C)``, ``offsets (B, N, 2)`` (refined Δ in half
    coarse lengths), ``refined_logits (B, N, C)``, ``quality_logits (B, N)``.
    ``level_dims`` (the channels of the stored levels, finest first) builds
    the lowest pyramid levels from stored levels (``forward(..., levels=...)``).
    """

    def __init__(self, cfg: TALMTSConfig, in_dim: int, num_classes: int, level_dims: Sequence[int] = ()):
        super().__init__()
        if num_classes < 1:
            raise ValueError("TAL-MTS needs at least one action class")
        self.cfg = cfg
        self.in_dim = in_dim
        self.num_classes = num_classes
        self.stride = cfg.first_stride * 2 ** (cfg.num_levels - 1)
        grid_dim = cfg.grid_dim or in_dim
        self.pyramid: TemporalPyramid | StoredLevelPyramid = (
            StoredLevelPyramid(level_dims, cfg.dim, cfg.num_levels, cfg.first_stride) if level_dims
            else TemporalPyramid(in_dim, cfg.dim, cfg.num_levels, cfg.first_stride))
        self.stt = SpatialTemporalTransformer(in_dim, grid_dim, cfg) if cfg.stt else None
        self.stt_pyramid = (TemporalPyramid(cfg.stt_dim, cfg.dim, cfg.num_levels, cfg.first_stride)
                            if cfg.stt else None)
        self.fsa = FrameSelfAttention(in_dim, grid_dim, cfg) if cfg.fsa else None
        self.loc_tower = _tower(cfg.dim, cfg.dim, cfg.tower_layers)                              # Conv1
        self.cls_tower = _tower(2 * cfg.dim if cfg.stt else cfg.dim, cfg.dim, cfg.tower_layers)  # Conv2
        self.loc_pred = nn.Conv1d(cfg.dim, 2, 3, padding=1)                                    # Conv3
        self.cls_pred = nn.Conv1d(cfg.dim, num_classes, 3, padding=1)                          # Conv4
        self.scales = nn.Parameter(torch.ones(cfg.num_levels))
        frame_dim = cfg.dim + (cfg.fsa_dim if cfg.fsa else 0)
        self.refine = BoundaryRefinement(cfg.dim, frame_dim, cfg.boundary_dim, num_classes, cfg)
        bias = -math.log((1 - cfg.prior_prob) / cfg.prior_prob)
        nn.init.constant_(self.cls_pred.bias, bias)
        nn.init.normal_(self.loc_pred.weight, std=0.01)
        nn.init.zeros_(self.loc_pred.bias)

    @property
    def needs(self) -> frozenset[str]:
        """``grid`` when the spatial modules read per-snippet grids (``grid_size > 0`` and STT or FSA on),
        ``levels`` when the pyramid starts from stored levels."""
        out = {"levels"} if isinstance(self.pyramid, StoredLevelPyramid) else set()
        if self.cfg.grid_size > 0 and (self.cfg.stt or self.cfg.fsa):
            out.add("grid")
        return frozenset(out)

    # ------------------------------------------------------------------ forward
    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None,
                grid: torch.Tensor | None = None,
                levels: Sequence[LevelInput] | None = None) -> dict[str, torch.Tensor]:
        """``features (B, C_in, T)``, ``mask (B, T)``, optional ``grid (B, T, g, g, C_g)``; ``levels`` (one
        :class:`LevelInput` per stored level, positions in snippet-grid units) when built with ``level_dims``.

        ``mask`` is True on real snippets, which come first in every row
        (padding at the end, as :func:`tadkit.data.datasets.collate` makes);
        None means no padding.
        """
        cfg = self.cfg
        if features.dim() != 3 or features.shape[1] != self.in_dim:
            raise ValueError(f"TAL-MTS expects features (B, {self.in_dim}, T), got {tuple(features.shape)}")
        b, _, t = features.shape
        dev = features.device
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=dev)
        grid = self._check_grid(grid, features)
        features = features * mask[:, None, :].to(features.dtype)

        if isinstance(self.pyramid, StoredLevelPyramid):                       # RFP
            levels = self.pyramid(levels or [], mask)                         # the stored levels become f_l
        else:
            levels = self.pyramid(features, mask)
        strides = self.pyramid.strides
        lengths = [f.shape[-1] for f in levels]
        lmasks = [level_mask(mask, n, s) for n, s in zip(lengths, strides)]
        if cfg.rfp:
            levels = [f * m[:, None, :].to(f.dtype) for f, m in zip(refine_top_down(levels), lmasks)]
        frame = frame_level_feature(levels[0], t, strides[0]) * mask[:, None, :].to(levels[0].dtype)  # f_a^c
        cls_in = levels
        if self.stt is not None:                                               # STT, eq. 1-2
            f_t = self.stt(features, mask, grid)
            cls_in = [torch.cat([f, g], 1) for f, g in zip(levels, self.stt_pyramid(f_t, mask))]
        f_loc = [self.loc_tower(f) * m[:, None, :].to(f.dtype) for f, m in zip(levels, lmasks)]   # eq. 3
        f_cls = [self.cls_tower(f) * m[:, None, :].to(f.dtype) for f, m in zip(cls_in, lmasks)]

        dist, logits = [], []                                                  # eq. 4
        for i, (fl, fc) in enumerate(zip(f_loc, f_cls)):
            d = torch.exp((self.scales[i] * self.loc_pred(fl).float()).clamp(max=MAX_LOG_DISTANCE)) * strides[i]
            dist.append(d.transpose(1, 2))
            logits.append(self.cls_pred(fc).transpose(1, 2))
        points = torch.cat([level_centers(n, s, dev) for n, s in zip(lengths, strides)])
        point_strides = torch.cat([torch.full((n,), float(s), device=dev) for n, s in zip(lengths, strides)])
        dist = torch.cat(dist, 1)                                              # (B, N, 2)
        coarse = torch.stack([points - dist[..., 0], points + dist[..., 1]], -1)

        if self.fsa is not None:                                               # FSA, eq. 5
            frame = torch.cat([frame, self.fsa(features, mask, grid)], 1)
        offsets, refined_logits, quality = self.refine(f_loc, f_cls, frame, mask, coarse.detach(), strides)
        return {"points": points, "strides": point_strides, "valid": torch.cat(lmasks, 1),
                "coarse_segments": coarse, "coarse_logits": torch.cat(logits, 1), "offsets": offsets,
                "refined_logits": refined_logits, "quality_logits": quality}

    # ------------------------------------------------------------------ loss
    def loss(self, outputs: dict[str, torch.Tensor], mask: torch.Tensor,
             targets: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Eq. 7-12 over the batch (see the module docstring); returns ``loss`` and its terms."""
        cfg = self.cfg
        coarse = outputs["coarse_segments"].float()
        coarse_logits = outputs["coarse_logits"].float()
        refined_logits = outputs["refined_logits"].float()
        offsets = outputs["offsets"].float()
        quality = outputs["quality_logits"].float()
        points, valid = outputs["points"], outputs["valid"]
        b, n, c = coarse_logits.shape
        gt_seg = coarse.new_zeros(b, n, 2)
        classes = coarse.new_zeros(b, n, c)
        pos = torch.zeros(b, n, dtype=torch.bool, device=coarse.device)
        for i, t in enumerate(targets):
            segs = t["segments"].to(coarse)
            idx = assign_locations(points, segs, valid[i])
            pos[i] = idx >= 0
            gt_seg[i, pos[i]] = segs[idx[pos[i]]]
            classes[i] = instance_classes(idx, segs, t["labels"].to(coarse.device), c)
        vmask = valid[..., None].to(coarse.dtype)
        n_c = pos.sum().clamp(min=1).to(coarse.dtype)
        target_c = classes * pos[..., None].to(coarse.dtype)
        loss_cls_c = (sigmoid_focal_loss(coarse_logits, target_c, cfg.focal_alpha, cfg.focal_gamma)
                      * vmask).sum() / n_c                                                    # eq. 8
        loss_loc_c = giou_loss(coarse[pos], gt_seg[pos]).sum() / n_c                         # eq. 10

        coarse_d = coarse.detach()
        rpos = pos & (segment_iou(coarse_d, gt_seg) > cfg.refine_iou)
        n_r = rpos.sum().clamp(min=1).to(coarse.dtype)
        target_r = classes * rpos[..., None].to(coarse.dtype)
        loss_cls_r = (sigmoid_focal_loss(refined_logits, target_r, cfg.focal_alpha, cfg.focal_gamma)
                      * vmask).sum() / n_r                                                    # eq. 9
        loss_loc_r = smooth_l1(offsets[rpos], offset_targets(coarse_d[rpos], gt_seg[rpos])).sum() / n_r  # eq. 11
        refined = refine_segments(coarse_d, offsets.detach())
        iou_r = segment_iou(refined[rpos], gt_seg[rpos])
        loss_q = F.binary_cross_entropy_with_logits(quality[rpos], iou_r, reduction="sum") / n_r  # eq. 12
        total = loss_cls_c + loss_cls_r + cfg.alpha * (loss_loc_c + loss_loc_r) + cfg.beta * loss_q  # eq. 7
        return {"loss": total, "loss_cls_coarse": loss_cls_c.detach(), "loss_cls_refined": loss_cls_r.detach(),
                "loss_loc_coarse": loss_loc_c.detach(), "loss_loc_refined": loss_loc_r.detach(),
                "loss_quality": loss_q.detach(), "num_pos": pos.sum().detach().float(),
                "num_refine_pos": rpos.sum().detach().float()}

    # ------------------------------------------------------------------ decode
    @torch.no_grad()
    def decode(self, outputs: dict[str, torch.Tensor], mask: torch.Tensor, topk: int = 2000,
               min_score: float = 0.0) -> list[Detections]:
        """Eq. 13 candidates per sample (grid units, class indices), best ``topk`` above ``min_score``."""
        segs, scores = inference(outputs["coarse_segments"].float(), outputs["offsets"].float(),
                                 outputs["coarse_logits"].float(), outputs["refined_logits"].float(),
                                 outputs["quality_logits"].float())
        return topk_detections(segs, scores.masked_fill(~outputs["valid"][..., None], 0.0), topk, min_score)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(strides=self.pyramid.strides, rfp=self.cfg.rfp, stt=self.cfg.stt, fsa=self.cfg.fsa,
                    spatial_tokens=(self.cfg.grid_size or 1) ** 2,
                    stored_levels=list(getattr(self.pyramid, "level_dims", ())))
        return info

    def _check_grid(self, grid: torch.Tensor | None, features: torch.Tensor) -> torch.Tensor | None:
        """The grid the spatial modules use (None: single-vector fallback); errors on mismatch."""
        cfg = self.cfg
        if cfg.grid_size == 0 or not (cfg.stt or cfg.fsa):
            return None
        if grid is None:
            raise ConfigError(f"talmts.grid_size={cfg.grid_size} needs per-snippet spatial grids, but none were "
                              "given; set talmts.grid_size=0 for the single-vector fallback")
        b, _, t = features.shape
        want = (b, t, cfg.grid_size, cfg.grid_size, cfg.grid_dim or self.in_dim)
        if tuple(grid.shape) != want:
            raise ConfigError(f"spatial grid has shape {tuple(grid.shape)}, expected {want} "
                              "(check talmts.grid_size and talmts.grid_dim)")
        return grid


# --------------------------------------------------------------------------- modules
class SpatialTemporalTransformer(nn.Module):
    """STT (eq. 1): ``f_s = MSA(LN(v_i))`` per snippet, ``f_t = Linear(MSA(LN(f_s + PE_t)))``.

    ``features (B, C, T)``, ``mask (B, T)``, ``grid (B, T, g, g, C_g)`` or
    None -> ``f_t (B, stt_dim, T)`` (zero on padding). Spatial tokens are the
    grid cells (one token, the snippet vector, without a grid) with a learned
    position embedding; the spatial encoder runs on real snippets only.
    """

    def __init__(self, in_dim: int, grid_dim: int, cfg: TALMTSConfig):
        super().__init__()
        d = cfg.stt_dim
        self.tokens = SnippetTokens(in_dim, grid_dim, cfg.grid_size, 1, d)
        self.spatial = TransformerEncoder(d, cfg.stt_spatial_layers, cfg.num_heads, cfg.mlp_ratio, cfg.dropout)
        self.temporal = TransformerEncoder(d, cfg.stt_temporal_layers, cfg.num_heads, cfg.mlp_ratio,
                                           cfg.dropout)
        self.out = nn.Linear(d, d)

    def forward(self, features: torch.Tensor, mask: torch.Tensor,
                grid: torch.Tensor | None = None) -> torch.Tensor:
        b, _, t = features.shape
        tokens = self.tokens(features, mask, grid)                             # (n_real, Z, D)
        f_s = features.new_zeros(b, t, tokens.shape[-1])
        f_s[mask] = self.spatial(tokens).mean(1).to(f_s.dtype)
        f_s = f_s + sinusoidal_embedding(t, f_s.shape[-1], f_s.device, f_s.dtype)[None]
        f_t = self.out(self.temporal(f_s, mask))
        return (f_t * mask[..., None].to(f_t.dtype)).transpose(1, 2)


class FrameSelfAttention(nn.Module):
    """FSA (eq. 5): patch tokens + position embedding -> transformer -> mean -> Linear.

    ``-> f_a^r (B, fsa_dim, T)`` (zero on padding). Patches are
    ``patch_size × patch_size`` grid cells (``(g / patch_size)²`` tokens); one
    token (the snippet vector) without a grid.
    """

    def __init__(self, in_dim: int, grid_dim: int, cfg: TALMTSConfig):
        super().__init__()
        d = cfg.fsa_dim
        self.tokens = SnippetTokens(in_dim, grid_dim, cfg.grid_size, cfg.patch_size, d)
        self.encoder = TransformerEncoder(d, cfg.fsa_layers, cfg.num_heads, cfg.mlp_ratio, cfg.dropout)
        self.out = nn.Linear(d, d)

    def forward(self, features: torch.Tensor, mask: torch.Tensor,
                grid: torch.Tensor | None = None) -> torch.Tensor:
        b, _, t = features.shape
        enc = self.out(self.encoder(self.tokens(features, mask, grid)).mean(1))
        out = features.new_zeros(b, t, enc.shape[-1])
        out[mask] = enc.to(out.dtype)
        return out.transpose(1, 2)


class SnippetTokens(nn.Module):
    """Embedded spatial tokens of the real snippets: ``(n_real, Z, D)`` with position embedding.

    With a grid: ``(g / patch)²`` patches of ``patch² · C_g`` values each;
    without (``grid_size`` 0 or ``grid`` None): one token, the snippet vector.
    """

    def __init__(self, in_dim: int, grid_dim: int, grid_size: int, patch: int, dim: int):
        super().__init__()
        self.patch = patch
        self.num_tokens = (grid_size // patch) ** 2 if grid_size else 1
        self.embed = nn.Linear(patch * patch * grid_dim if grid_size else in_dim, dim)
        self.position = nn.Parameter(torch.zeros(self.num_tokens, dim))
        nn.init.trunc_normal_(self.position, std=0.02)

    def forward(self, features: torch.Tensor, mask: torch.Tensor,
                grid: torch.Tensor | None = None) -> torch.Tensor:
        if grid is None:
            tokens = features.transpose(1, 2)[mask][:, None, :]               # (n_real, 1, C)
        else:
            tokens = grid_patches(grid, self.patch)[mask]                      # (n_real, Z, p²C_g)
        return self.embed(tokens) + self.position


class BoundaryRefinement(nn.Module):
    """Eq. 6: boundary-pooled features -> refined offsets, refined class logits, quality logits.

    For every location, with its (detached) coarse segment: start / end
    regions (:func:`~tadkit.detect.layers.boundary.boundary_regions`) are
    max-pooled on the frame-level feature ``f_a`` (input resolution) and on the
    location's own pyramid level of ``f_loc`` (localisation branch) or
    ``f_cls`` (classification branch); with the location's own feature the
    five ``boundary_dim``-channel parts are fused by a 1×1 conv. The
    localisation branch predicts the offsets and (``quality_branch: loc``, as
    AFSD) the quality ``ε``, the classification branch the refined class logits.
    Regions reach ``bp_inner`` / ``bp_outer`` of the coarse length inside /
    outside a boundary, at least ``bp_min`` cells of the pooled feature.
    """

    def __init__(self, dim: int, frame_dim: int, bdim: int, num_classes: int, cfg: TALMTSConfig):
        super().__init__()
        self.bdim, self.inner, self.outer, self.min_extent = bdim, cfg.bp_inner, cfg.bp_outer, cfg.bp_min
        self.quality_branch = 0 if cfg.quality_branch == "loc" else 1
        self.frame = nn.ModuleList(ConvNormReLU(frame_dim, 2 * bdim) for _ in range(2))
        self.level = nn.ModuleList(nn.Sequential(nn.Conv1d(dim, 2 * bdim, 1), nn.ReLU()) for _ in range(2))
        self.center = nn.ModuleList(nn.Sequential(nn.Conv1d(dim, bdim, 1), nn.ReLU()) for _ in range(2))
        self.fuse = nn.ModuleList(
            nn.Sequential(nn.Conv1d(5 * bdim, dim, 1), nn.GroupNorm(num_groups(dim), dim), nn.ReLU(),
                          nn.Dropout(cfg.dropout)) for _ in range(2))
        self.offset_pred = nn.Conv1d(dim, 2, 1)
        self.cls_pred = nn.Conv1d(dim, num_classes, 1)
        self.quality_pred = nn.Conv1d(dim, 1, 1)
        nn.init.constant_(self.cls_pred.bias, -math.log((1 - cfg.prior_prob) / cfg.prior_prob))
        nn.init.normal_(self.offset_pred.weight, std=0.01)
        nn.init.zeros_(self.offset_pred.bias)

    def forward(self, f_loc: Sequence[torch.Tensor], f_cls: Sequence[torch.Tensor], frame: torch.Tensor,
                mask: torch.Tensor, coarse: torch.Tensor, strides: Sequence[int]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> ``offsets (B, N, 2)``, ``refined logits (B, N, C)``, ``quality logits (B, N)``."""
        m = mask[:, None, :].to(frame.dtype)
        start, end = boundary_regions(coarse, self.inner, self.outer, self.min_extent)  # input grid units
        feats = []
        for branch, levels in enumerate((f_loc, f_cls)):
            fa = self.frame[branch](frame) * m
            frame_start = boundary_max_pool(fa[:, :self.bdim], start)         # (B, bdim, N)
            frame_end = boundary_max_pool(fa[:, self.bdim:], end)
            centers, lvl_start, lvl_end = [], [], []
            lo = 0
            for f, s in zip(levels, strides):
                n = f.shape[-1]
                seg = to_level_cells(coarse[:, lo:lo + n], s)                  # level cell units
                ls, le = boundary_regions(seg, self.inner, self.outer, self.min_extent)
                fl = self.level[branch](f)
                lvl_start.append(boundary_max_pool(fl[:, :self.bdim], ls))
                lvl_end.append(boundary_max_pool(fl[:, self.bdim:], le))
                centers.append(self.center[branch](f))
                lo += n
            feat = torch.cat([torch.cat(centers, -1), torch.cat(lvl_start, -1), torch.cat(lvl_end, -1),
                              frame_start, frame_end], 1)                      # (B, 5·bdim, N)
            feats.append(self.fuse[branch](feat))
        offsets = self.offset_pred(feats[0]).transpose(1, 2)
        logits = self.cls_pred(feats[1]).transpose(1, 2)
        quality = self.quality_pred(feats[self.quality_branch])[:, 0]
        return offsets, logits, quality


# --------------------------------------------------------------------------- targets & inference
def assign_locations(points: torch.Tensor, gt_segments: torch.Tensor,
                     valid: torch.Tensor | None = None) -> torch.Tensor:
    """Ground-truth index ``[N]`` of every location (``-1``: background).

    A valid location whose centre lies inside a ground truth (ends included)
    takes the shortest such ground truth. A ground truth containing no valid
    centre claims the valid location nearest its midpoint (when two claim the
    same location, one of them gets it), so no action is left without a positive.
    """
    n = points.shape[0]
    out = torch.full((n,), -1, dtype=torch.long, device=points.device)
    if gt_segments.numel() == 0:
        return out
    valid = torch.ones(n, dtype=torch.bool, device=points.device) if valid is None else valid
    p = points[:, None]
    inside = (p >= gt_segments[None, :, 0]) & (p <= gt_segments[None, :, 1]) & valid[:, None]
    length = (gt_segments[:, 1] - gt_segments[:, 0])[None, :].expand(n, -1)
    best, idx = length.masked_fill(~inside, math.inf).min(1)
    out = torch.where(torch.isfinite(best), idx, out)
    uncovered = (~inside.any(0)).nonzero().flatten()
    if len(uncovered) and valid.any():
        mid = gt_segments[uncovered].mean(1)
        dist = (points[:, None] - mid[None, :]).abs().masked_fill(~valid[:, None], math.inf)
        out[dist.argmin(0)] = uncovered  # index_put keeps the last write for duplicates
    return out


def offset_targets(coarse: torch.Tensor, gt: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Inverse of eq. 13: ``Δ = (t^gt - t^c) / (½ d^c)`` for ``[..., 2]`` segments."""
    half = (0.5 * (coarse[..., 1] - coarse[..., 0])).clamp(min=eps)[..., None]
    return (gt - coarse) / half


def refine_segments(coarse: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Eq. 13 boundaries: ``t^p = t^c + ½ d^c Δ^r`` with ``d^c = t^c_e - t^c_s``; ``[..., 2]``."""
    half = 0.5 * (coarse[..., 1] - coarse[..., 0])
    return coarse + half[..., None] * offsets


def fuse_scores(coarse_prob: torch.Tensor, refined_prob: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Eq. 13 scores: ``½ (φ^c + φ^r) · ε``; probabilities ``[..., C]`` and quality ``[...]``."""
    return 0.5 * (coarse_prob + refined_prob) * quality[..., None]


def inference(coarse: torch.Tensor, offsets: torch.Tensor, coarse_logits: torch.Tensor,
              refined_logits: torch.Tensor, quality_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 13 from raw outputs: ``(segments (B, N, 2), scores (B, N, C))`` (sigmoid probabilities)."""
    return (refine_segments(coarse, offsets),
            fuse_scores(torch.sigmoid(coarse_logits), torch.sigmoid(refined_logits), torch.sigmoid(quality_logits)))


# --------------------------------------------------------------------------- helpers
def _tower(in_dim: int, dim: int, layers: int) -> nn.Sequential:
    return nn.Sequential(*[ConvNormReLU(in_dim if i == 0 else dim, dim) for i in range(layers)])




__all__ = ["TALMTS", "build_talmts", "SpatialTemporalTransformer", "FrameSelfAttention", "SnippetTokens",
           "BoundaryRefinement", "assign_locations", "offset_targets", "refine_segments",
           "fuse_scores", "inference"]
