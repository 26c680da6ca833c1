"""SP-TAD: temporal action detection with sparse proposals (Wu, Sun, Chen et al., arXiv 2109.08847).

A query-based detector over offline features::

    backbone levels (B, C_l, T_l) with positions (B, T_l)   [or the snippet features (B, C, T)]
      TFPN (sec. 3.1.2, Table 5 variants, ``tfpn``):
        inter   every backbone level -> 1×1 conv to dim, top-down (coarser level
                resampled at the finer level's positions, added), 3-wide conv;
                then stride-2 max pooling of the top level until num_levels levels
        high    a num_levels pyramid of strided convs over the last level, same top-down
        single  the last level alone (1×1 conv + 3-wide conv)
      N learnable proposals: segments (centre, width) normalised to the sample,
      features (N, dim)
      num_heads iterative detection heads (sec. 3.1.3), each:
        proposal features -> multi-head self-attention + LayerNorm
        each segment widened by width/eta on both sides -> SoI Align (shared
        ``segment_align``) to soi_bins bins on the level of the paper's rule (eq. 1)
        l = floor(l0 + log2(width)), l0 the top level
        dynamic interaction: the proposal feature generates (dim × dynamic_dim)
        and (dynamic_dim × dim) matrices; the SoI feature passes both (+LN, ReLU),
        flatten, Linear -> segment feature (+ residual, LN), FFN (+ residual, LN)
        classifier: Linear -> C sigmoid logits; regression: 3-layer ReLU FFN ->
        (dc, dw): centre += dc/2 · width, width *= exp(dw)
        the refined segments (detached) and segment features feed the next head
      clip-level action classification head (sec. 3.1.4, ``cls_head``): masked
      temporal mean of every input level, concatenated, Linear -> C logits

Coordinates: proposals live in ``[0, 1]`` over each sample's *valid* cells —
0 is the start of cell 0, 1 the end of its last real cell — so grid position
``g = x · L − 0.5`` with ``L`` the sample's valid length (``mask.sum``).

Training (sec. 3.2.1): on every head, Hungarian matching (``scipy``) of the N
predictions with the ground truth under ``cls_weight · focal + l1_weight · L1 +
giou_weight · (−GIoU)`` on normalised ``[start, end]``, then focal loss on all
N × C logits (matched ones take their class) and L1 + (1 − GIoU) on matched
pairs, each summed and divided by the number of ground truths (averaged over
DDP processes); plus ``act_weight`` × BCE of the clip-level logits against the
classes present in the sample. Inference (sec. 3.2.2): the last head's class
probabilities × the clip-level probabilities, top-k over N × C.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from tadkit.detect.config import SPTADConfig
from tadkit.detect.geometry import segment_giou
from tadkit.detect.heads import HEADS, InputInfo
from tadkit.detect.heads.base import DetectionHead, topk_detections
from tadkit.detect.layers.align import segment_align
from tadkit.detect.layers.matching import match_sets
from tadkit.detect.layers.pyramid import TemporalPyramid
from tadkit.detect.losses import sigmoid_focal_loss
from tadkit.detect.postprocess import Detections
from tadkit.errors import ConfigError

DELTA_CENTRE_WEIGHT = 2.0             # Sparse R-CNN's (2, 2, 1, 1) box-delta weights, in 1-D
MAX_LOG_WIDTH_DELTA = math.log(1e5 / 16)
MIN_WIDTH = 1e-4                      # normalised widths are kept above this (level rule, expansion)


class Level(NamedTuple):
    """One temporal level: ``features (B, C, T_l)``, ``mask (B, T_l)`` bool,
    ``positions (B, T_l)`` float — every step's centre in the sample's snippet-grid
    units, increasing, defined on padding too — and ``step``, its nominal
    spacing in grid units (used only where a level has a single step)."""

    features: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    step: float


@HEADS.register("sptad")
def build_sptad(cfg: SPTADConfig, in_dim: int, num_classes: int, inputs: InputInfo | None = None) -> "SPTAD":
    """Registry builder: ``SPTAD(cfg, in_dim, num_classes, level_dims=inputs.level_dims)``."""
    return SPTAD(cfg, in_dim, num_classes, inputs.level_dims if inputs is not None else None)


class SPTAD(DetectionHead):
    """The SP-TAD detector (see the module docstring).

    ``level_dims``: channels of the backbone levels the head reads (``levels=``
    of ``forward``: the engine's ``data.levels``, finest first; a stage name
    such as ``Mixed_4f`` is that stage of every stream, RGB ‖ Flow, as in
    sec. 3.1.1). ``None`` or empty: the snippet features are the only input,
    and ``tfpn: inter`` falls back to ``single`` (``notice`` says so, once, as
    a warning).

    ``forward`` returns ``logits (H, B, N, C)`` and ``segments (H, B, N, 2)``
    (normalised ``[start, end]``) of the ``H`` heads, ``lengths (B,)`` (valid
    cells) and, with the clip-level head, ``act_logits (B, C)``.
    """

    def __init__(self, cfg: SPTADConfig, in_dim: int, num_classes: int, level_dims: Sequence[int] | None = None):
        super().__init__()
        if num_classes < 1:
            raise ValueError("SP-TAD needs at least one action class")
        self.cfg = cfg
        self.in_dim = in_dim
        self.num_classes = num_classes
        self.level_dims = [int(c) for c in level_dims or []]
        self.tfpn_mode = cfg.tfpn
        self.notice: str | None = None
        if cfg.tfpn == "inter" and not self.level_dims:
            self.tfpn_mode = "single"
            self.notice = ("sptad: the features have no stored backbone levels; using the single-level TFPN "
                           "variant (paper Table 5) over the snippet features")
            warnings.warn(self.notice, stacklevel=2)
        inputs = self.level_dims or [in_dim]
        self.tfpn = TFPN(self.tfpn_mode, inputs, cfg.dim, cfg.num_levels)
        self.proposal_segments = nn.Embedding(cfg.num_proposals, 2)       # (centre, width), normalised
        self.proposal_features = nn.Embedding(cfg.num_proposals, cfg.dim)  # N(0, 1)
        with torch.no_grad():
            self.proposal_segments.weight.copy_(initial_segments(cfg.num_proposals, cfg.proposal_init))
        self.heads = nn.ModuleList(DetectionStage(cfg, num_classes) for _ in range(cfg.num_heads))
        self.action = nn.Linear(sum(inputs), num_classes) if cfg.cls_head else None

    @property
    def needs(self) -> frozenset[str]:
        """``{"levels"}`` when the head reads backbone levels, else nothing beyond the snippets."""
        return frozenset({"levels"}) if self.level_dims else frozenset()

    # ------------------------------------------------------------------ forward
    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None,
                levels: Sequence[Any] | None = None) -> dict[str, torch.Tensor]:
        """``features (B, C_in, T)``, ``mask (B, T)`` (right-padded), ``levels``: one
        ``LevelInput(features, mask, positions)`` per entry of ``level_dims``."""
        if features.dim() != 3 or features.shape[1] != self.in_dim:
            raise ValueError(f"SP-TAD expects features (B, {self.in_dim}, T), got {tuple(features.shape)}")
        b, _, t = features.shape
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=features.device)
        inputs = self._inputs(features, mask, levels)
        lengths = mask.sum(1).to(torch.float32).clamp(min=1)
        pyramid = self.tfpn(inputs)
        segs = self.proposal_segments.weight[None].expand(b, -1, -1)
        feats = self.proposal_features.weight[None].expand(b, -1, -1)
        all_logits, all_segs = [], []
        for i, head in enumerate(self.heads):
            logits, segs, feats = head(pyramid, segs if i == 0 else segs.detach(), feats, lengths)
            all_logits.append(logits)
            all_segs.append(to_start_end(segs))
        out = {"logits": torch.stack(all_logits), "segments": torch.stack(all_segs), "lengths": lengths}
        if self.action is not None:
            out["act_logits"] = self.action(torch.cat([masked_mean(x.features, x.mask) for x in inputs], 1))
        return out

    def _inputs(self, features: torch.Tensor, mask: torch.Tensor, levels: Sequence[Any] | None) -> list[Level]:
        """The input levels with filled positions: the backbone levels (finest first), or the snippets
        (positions ``0 .. T-1``)."""
        t = features.shape[-1]
        if not self.level_dims:
            pos = torch.arange(t, dtype=torch.float32, device=features.device).expand(features.shape[0], -1)
            return [Level(features * mask[:, None, :].to(features.dtype), mask, pos, 1.0)]
        if not levels or len(levels) != len(self.level_dims):
            raise ConfigError(f"SP-TAD was built for {len(self.level_dims)} backbone levels but got "
                              f"{len(levels or [])}; check the run's level settings (data.levels)")
        out: list[Level] = []
        for lv, dim in zip(levels, self.level_dims):
            x, m = lv.features, lv.mask
            if x.dim() != 3 or x.shape[1] != dim:
                raise ValueError(f"SP-TAD expects a level (B, {dim}, T_l), got {tuple(x.shape)}")
            if out and x.shape[-1] > out[-1].features.shape[-1]:
                raise ConfigError("list the backbone levels finest first (data.levels): a level has "
                                  f"{x.shape[-1]} steps after one of {out[-1].features.shape[-1]}")
            step = t / max(1, x.shape[-1])
            out.append(Level(x * m[:, None, :].to(x.dtype), m, fill_positions(lv.positions.float(), m, step), step))
        return out

    # ------------------------------------------------------------------ loss
    def loss(self, outputs: dict[str, torch.Tensor], mask: torch.Tensor,
             targets: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Set prediction loss on every head (auxiliary losses) + the clip-level BCE."""
        cfg = self.cfg
        logits_all, segs_all = outputs["logits"].float(), outputs["segments"].float()
        lengths = outputs["lengths"].float()
        gts = [normalise_segments(t["segments"].to(segs_all), lengths[i]) for i, t in enumerate(targets)]
        labels = [t["labels"].to(segs_all.device).long() for t in targets]
        num_gt = _global_count(sum(len(x) for x in labels), segs_all.device)
        weights = dict(cls_weight=cfg.cls_weight, l1_weight=cfg.l1_weight, giou_weight=cfg.giou_weight,
                       alpha=cfg.focal_alpha, gamma=cfg.focal_gamma)
        total = segs_all.new_zeros(())
        terms: dict[str, torch.Tensor] = {}
        for h in range(logits_all.shape[0]):
            logits, segs = logits_all[h], segs_all[h]
            cls_target = torch.zeros_like(logits)
            pred, gt = [], []
            for i in range(logits.shape[0]):
                rows, cols = match_sets(logits[i].detach(), segs[i].detach(), labels[i], gts[i], **weights)
                cls_target[i, rows, labels[i][cols]] = 1.0
                pred.append(segs[i][rows])
                gt.append(gts[i][cols])
            pred, gt = torch.cat(pred), torch.cat(gt)
            l_cls = sigmoid_focal_loss(logits, cls_target, cfg.focal_alpha, cfg.focal_gamma).sum() / num_gt
            l_l1 = (pred - gt).abs().sum() / num_gt
            l_giou = (1.0 - segment_giou(pred, gt)).sum() / num_gt
            total = total + cfg.cls_weight * l_cls + cfg.l1_weight * l_l1 + cfg.giou_weight * l_giou
            terms.update({f"loss_cls_h{h}": l_cls.detach(), f"loss_l1_h{h}": l_l1.detach(),
                          f"loss_giou_h{h}": l_giou.detach()})
        if "act_logits" in outputs:
            act = outputs["act_logits"].float()
            present = torch.zeros_like(act)
            for i, lab in enumerate(labels):
                present[i, lab] = 1.0
            l_act = F.binary_cross_entropy_with_logits(act, present)
            total = total + cfg.act_weight * l_act
            terms["loss_act"] = l_act.detach()
        return {"loss": total, **terms, "num_gt": num_gt.detach()}

    # ------------------------------------------------------------------ decode
    @torch.no_grad()
    def decode(self, outputs: dict[str, torch.Tensor], mask: torch.Tensor | None, topk: int = 2000,
               min_score: float = 0.0) -> list[Detections]:
        """The last head's candidates in grid units, best ``topk`` of ``N × C`` above ``min_score``."""
        probs = torch.sigmoid(outputs["logits"][-1].float())                    # (B, N, C)
        if "act_logits" in outputs:
            probs = probs * torch.sigmoid(outputs["act_logits"].float())[:, None, :]
        lengths = outputs["lengths"].float()
        return topk_detections(to_grid(outputs["segments"][-1].float().clamp(0.0, 1.0), lengths), probs, topk,
                               min_score)

    def average_outputs(self, outputs: Sequence[dict[str, torch.Tensor]],
                        weights: Sequence[float]) -> dict[str, torch.Tensor]:
        """Ensembles pool the runs' proposal sets (proposal ``i`` of two independent runs has nothing in
        common, so index-wise means would be meaningless).

        Each run's last-head probabilities (× its clip-level probabilities) are
        scaled by ``weight / max(weights)`` and its proposals appended: the
        result decodes like one run with ``Σ N`` proposals, as ``--fuse union``
        pools decoded candidates.
        """
        if not outputs or len(weights) != len(outputs):
            raise ValueError(f"{len(outputs)} outputs but {len(weights)} weights")
        top = max(float(w) for w in weights)
        if not top > 0:
            raise ValueError(f"ensemble weights must include a positive one, got {list(weights)}")
        logits, segments = [], []
        for out, w in zip(outputs, weights):
            p = torch.sigmoid(out["logits"][-1].float())
            if "act_logits" in out:
                p = p * torch.sigmoid(out["act_logits"].float())[:, None, :]
            logits.append(torch.logit((p * (float(w) / top)).clamp(1e-12, 1 - 1e-7)))
            segments.append(out["segments"][-1].float())
        return {"logits": torch.cat(logits, 1)[None], "segments": torch.cat(segments, 1)[None],
                "lengths": outputs[0]["lengths"]}

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(tfpn=self.tfpn_mode, pyramid_levels=self.tfpn.num_outputs, proposals=self.cfg.num_proposals,
                    heads=self.cfg.num_heads, cls_head=self.action is not None)
        if self.notice:
            info["notice"] = self.notice
        return info


# --------------------------------------------------------------------------- modules
class TFPN(nn.Module):
    """Temporal feature pyramid (sec. 3.1.2): ``list[Level]`` inputs -> ``list[Level]`` of ``dim`` channels.

    ``mode``: ``inter`` reads every input level (finest first, as given) and
    max-pools the top one (stride 2) until ``num_levels`` levels; ``high``
    builds ``num_levels`` levels from the last input with strided convs
    (:class:`~tadkit.detect.layers.pyramid.TemporalPyramid`); ``single`` keeps
    the last input alone. Then FPN-style: 1×1 lateral convs, top-down
    (each coarser output linearly resampled at the finer level's positions
    and added), 3-wide output convs; padding stays zero.
    """

    def __init__(self, mode: str, in_dims: Sequence[int], dim: int, num_levels: int):
        super().__init__()
        self.mode = mode
        self.bottom_up = TemporalPyramid(in_dims[-1], dim, num_levels, 1) if mode == "high" else None
        if mode == "inter":
            if len(in_dims) > num_levels:
                raise ConfigError(f"sptad.num_levels={num_levels} is fewer than the {len(in_dims)} backbone levels")
            lateral = list(in_dims)
            self.extra = num_levels - len(in_dims)
        else:
            lateral = [dim] * num_levels if mode == "high" else [in_dims[-1]]
            self.extra = 0
        self.lateral = nn.ModuleList(nn.Conv1d(c, dim, 1) for c in lateral)
        self.output = nn.ModuleList(nn.Conv1d(dim, dim, 3, padding=1) for _ in lateral)

    @property
    def num_outputs(self) -> int:
        return len(self.lateral) + self.extra

    def forward(self, inputs: Sequence[Level]) -> list[Level]:
        if self.mode != "inter":
            inputs = [inputs[-1]]
        if self.bottom_up is not None:
            base = inputs[0]
            maps = self.bottom_up(base.features, base.mask)
            inputs = [base._replace(features=maps[0])]
            for f in maps[1:]:
                inputs.append(pool_level(inputs[-1], conv=True)._replace(features=f))
        lat = [_zero_padding(conv(x.features), x.mask) for conv, x in zip(self.lateral, inputs)]
        for i in range(len(lat) - 2, -1, -1):
            up = resample(lat[i + 1], inputs[i + 1], inputs[i].positions)
            lat[i] = _zero_padding(lat[i] + up, inputs[i].mask)
        out = [x._replace(features=_zero_padding(conv(f), x.mask))
               for conv, f, x in zip(self.output, lat, inputs)]
        for _ in range(self.extra):
            top = out[-1]
            pooled = pool_level(top)
            x = top.features.masked_fill(~top.mask[:, None, :], -math.inf)
            x = F.max_pool1d(x, 2, 2, ceil_mode=True)
            out.append(pooled._replace(features=_zero_padding(x.masked_fill(~torch.isfinite(x), 0.0),
                                                              pooled.mask)))
        return out


class DetectionStage(nn.Module):
    """One iterative detection head (sec. 3.1.3).

    ``(pyramid, segments (B, N, 2) normalised (centre, width), proposal features
    (B, N, dim), lengths (B,))`` -> ``(logits (B, N, C), refined segments
    (B, N, 2) (centre, width), segment features (B, N, dim))``.
    """

    def __init__(self, cfg: SPTADConfig, num_classes: int):
        super().__init__()
        d = cfg.dim
        self.eta, self.bins, self.samples = cfg.eta, cfg.soi_bins, cfg.soi_samples
        self.attention = nn.MultiheadAttention(d, cfg.attn_heads, dropout=cfg.dropout, batch_first=True)
        self.interaction = DynamicInteraction(d, cfg.dynamic_dim, cfg.soi_bins)
        self.ffn = nn.Sequential(nn.Linear(d, cfg.ffn_dim), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout),
                                 nn.Linear(cfg.ffn_dim, d))
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(3))
        self.drop = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(d, num_classes)
        self.regressor = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, d), nn.ReLU(inplace=True),
                                       nn.Linear(d, 2))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        nn.init.constant_(self.classifier.bias, -math.log((1 - cfg.prior_prob) / cfg.prior_prob))

    def forward(self, pyramid: Sequence[Level], segments: torch.Tensor, features: torch.Tensor,
                lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        soi = soi_features(pyramid, segments, lengths, self.eta, self.bins, self.samples)   # (B, N, d, T')
        x = self.norms[0](features + self.drop(self.attention(features, features, features, need_weights=False)[0]))
        x = self.norms[1](x + self.drop(self.interaction(x, soi)))
        x = self.norms[2](x + self.drop(self.ffn(x)))
        return self.classifier(x), apply_deltas(segments, self.regressor(x)), x


class DynamicInteraction(nn.Module):
    """Sparse interaction (Fig. 3): ``proposal features (B, N, d)``, ``SoI (B, N, d, T')`` -> ``(B, N, d)``.

    A Linear maps each proposal feature to ``W1 (d × d_h)`` and ``W2 (d_h × d)``;
    the SoI feature ``(T', d)`` goes through ``·W1`` (+LayerNorm, ReLU) and ``·W2``
    (+LayerNorm, ReLU) — two 1×1 convolutions whose weights belong to the
    proposal — then is flattened and projected back to ``d`` (+LayerNorm, ReLU).
    """

    def __init__(self, dim: int, hidden: int, bins: int):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.generate = nn.Linear(dim, 2 * dim * hidden)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(hidden), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.out = nn.Linear(dim * bins, dim)

    def forward(self, features: torch.Tensor, soi: torch.Tensor) -> torch.Tensor:
        b, n, d = features.shape
        params = self.generate(features).reshape(b * n, 2, d * self.hidden)
        w1 = params[:, 0].reshape(b * n, d, self.hidden)
        w2 = params[:, 1].reshape(b * n, self.hidden, d)
        x = soi.reshape(b * n, d, -1).transpose(1, 2)                          # (B·N, T', d)
        x = F.relu(self.norm1(torch.bmm(x, w1)))
        x = F.relu(self.norm2(torch.bmm(x, w2)))
        return F.relu(self.norm3(self.out(x.flatten(1)))).reshape(b, n, d)


# --------------------------------------------------------------------------- geometry
def level_rule(widths: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Eq. 1: pyramid level ``floor(l0 + log2(width))`` of normalised ``widths``, in ``[0, l0]``.

    ``l0 = num_levels - 1`` is the top (coarsest) level: a proposal as long as
    the sample reads the top level, one half as long the level below, and so on.
    """
    top = num_levels - 1
    lev = torch.floor(top + torch.log2(widths.clamp(min=MIN_WIDTH)))
    return lev.clamp(0, top).long()


def soi_features(pyramid: Sequence[Level], segments: torch.Tensor, lengths: torch.Tensor, eta: float,
                 bins: int, samples: int = 2) -> torch.Tensor:
    """SoI Align of every proposal on its level: ``segments (B, N, 2)`` (centre, width) -> ``(B, N, C, bins)``.

    Each segment ``[s, e]`` is widened to ``[s − w/eta, e + w/eta]`` (sec. 3.1.3),
    mapped to grid units ``x · L − 0.5`` and then to the chosen level's step
    indices through its positions, and read by
    :func:`~tadkit.detect.layers.align.segment_align` over the level's valid steps.
    """
    b, n, _ = segments.shape
    centre, width = segments[..., 0], segments[..., 1].clamp(min=MIN_WIDTH)
    reach = 0.5 * width + width / eta
    grid = to_grid(torch.stack([centre - reach, centre + reach], -1), lengths)   # (B, N, 2)
    level = level_rule(width.detach(), len(pyramid))
    out = segments.new_zeros(b, n, pyramid[0].features.shape[1], bins, dtype=pyramid[0].features.dtype)
    for l, lv in enumerate(pyramid):
        sel = level == l
        if not bool(sel.any()):
            continue
        bi, ni = sel.nonzero(as_tuple=True)
        index = positions_to_index(grid.reshape(b, 2 * n), lv.positions, lv.step).reshape(b, n, 2)
        out[bi, ni] = segment_align(lv.features, index[bi, ni], bi, bins, samples, lv.mask.sum(1))
    return out


def initial_segments(n: int, how: str = "random") -> torch.Tensor:
    """``(n, 2)`` initial proposals (centre, width), normalised.

    ``random`` (tadkit's choice; the paper: "placed randomly ... any size"):
    centres uniform in ``[0, 1]``, widths log-uniform in ``[1/16, 1]`` so the
    proposals start spread over the pyramid levels; ``full``: every proposal
    covers the whole sample (Sparse R-CNN's whole-image boxes).
    """
    if how == "full":
        return torch.tensor([[0.5, 1.0]]).repeat(n, 1)
    centre = torch.rand(n)
    width = torch.exp2(-4.0 * torch.rand(n))
    return torch.stack([centre, width], -1)


def apply_deltas(segments: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Refine ``(centre, width)`` by ``(dc, dw)``: ``centre + dc/2 · width``, ``width · exp(dw)``."""
    centre, width = segments[..., 0], segments[..., 1]
    new_centre = centre + deltas[..., 0] / DELTA_CENTRE_WEIGHT * width
    new_width = width * torch.exp(deltas[..., 1].clamp(max=MAX_LOG_WIDTH_DELTA))
    return torch.stack([new_centre, new_width.clamp(min=MIN_WIDTH)], -1)


def to_start_end(segments: torch.Tensor) -> torch.Tensor:
    """``(centre, width)`` -> ``[start, end]`` (``[..., 2]``)."""
    half = 0.5 * segments[..., 1]
    return torch.stack([segments[..., 0] - half, segments[..., 0] + half], -1)


def to_grid(segments: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Normalised ``(B, N, 2)`` positions -> grid units: ``x · L_b − 0.5`` (0 and 1 are the valid cells' outer edges)."""
    return segments * lengths[:, None, None] - 0.5


def normalise_segments(segments: torch.Tensor, length: torch.Tensor | float) -> torch.Tensor:
    """Grid-unit ``[N, 2]`` segments of a sample with ``length`` valid cells -> normalised: ``(g + 0.5) / L``."""
    return (segments + 0.5) / length


def fill_positions(positions: torch.Tensor, mask: torch.Tensor, step: float) -> torch.Tensor:
    """``positions (B, T)`` with padding steps (``~mask``, right-padded) extrapolated by the last real step.

    A sample with a single real step extrapolates by ``step`` grid units.
    """
    t = positions.shape[1]
    n = mask.sum(1).clamp(min=1)
    last = positions.gather(1, (n - 1)[:, None])
    prev = positions.gather(1, (n - 2).clamp(min=0)[:, None])
    spacing = torch.where((n >= 2)[:, None], last - prev, torch.full_like(last, step))
    idx = torch.arange(t, device=positions.device)[None, :]
    return torch.where(idx < n[:, None], positions, last + (idx - (n - 1)[:, None]) * spacing)


def positions_to_index(points: torch.Tensor, positions: torch.Tensor, step: float) -> torch.Tensor:
    """Grid positions ``points (B, K)`` -> fractional step indices of a level with ``positions (B, T)``.

    Piecewise linear through ``(positions[j], j)``, extended linearly beyond
    both ends (exact for evenly spaced levels); a single-step level maps
    ``p`` to ``(p − positions[0]) / step``.
    """
    t = positions.shape[1]
    if t == 1:
        return (points - positions[:, :1]) / step
    j = (torch.searchsorted(positions.contiguous(), points.contiguous(), right=True) - 1).clamp(0, t - 2)
    p0, p1 = positions.gather(1, j), positions.gather(1, j + 1)
    return j.to(points.dtype) + (points - p0) / (p1 - p0).clamp(min=1e-6)


def resample(x: torch.Tensor, level: Level, positions: torch.Tensor) -> torch.Tensor:
    """Read ``x (B, C, T_l)`` of ``level`` at grid ``positions (B, T')`` (linear interpolation) -> ``(B, C, T')``."""
    b, t = positions.shape
    index = positions_to_index(positions, level.positions, level.step).reshape(-1)
    batch = torch.arange(b, device=x.device).repeat_interleave(t)
    out = segment_align(x, torch.stack([index, index], -1), batch, bins=1, samples=1, lengths=level.mask.sum(1))
    return out.reshape(b, t, -1).transpose(1, 2)


def pool_level(level: Level, conv: bool = False) -> Level:
    """Geometry of a stride-2 pooling of ``level``: cell ``j`` covers steps ``2j, 2j+1``.

    Positions are the mean of the two covered steps' positions (the last step
    of an odd-length level is paired with its extrapolated neighbour); a cell
    is real when its first step is. ``conv``: the geometry of a stride-2,
    kernel-3, padding-1 convolution instead (the ``high`` pyramid), whose cell
    ``j`` reads steps ``2j − 1 .. 2j + 1`` and sits on step ``2j`` (see
    :mod:`tadkit.detect.layers.pyramid`). Features are left as they are (the
    caller replaces them).
    """
    pos, m = level.positions, level.mask
    if conv:
        return Level(level.features, m[:, 0::2], pos[:, 0::2], 2 * level.step)
    if pos.shape[1] % 2:
        nxt = 2 * pos[:, -1:] - pos[:, -2:-1] if pos.shape[1] > 1 else pos[:, -1:] + level.step
        pos = torch.cat([pos, nxt], 1)
    pooled = 0.5 * (pos[:, 0::2] + pos[:, 1::2])
    return Level(level.features, m[:, 0::2], pooled, 2 * level.step)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x (B, C, T)`` over the real steps of ``mask (B, T)`` -> ``(B, C)``."""
    w = mask.to(x.dtype)[:, None, :]
    return (x * w).sum(-1) / w.sum(-1).clamp(min=1)


# --------------------------------------------------------------------------- helpers
def _zero_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x * mask[:, None, :].to(x.dtype)


def _global_count(n: int, device: torch.device) -> torch.Tensor:
    """``n`` averaged over DDP processes (at least 1): the loss normaliser of Sparse R-CNN / DETR."""
    count = torch.tensor(float(n), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return count.clamp(min=1.0)


__all__ = ["SPTAD", "build_sptad", "Level", "TFPN", "DetectionStage", "DynamicInteraction", "level_rule",
           "soi_features", "initial_segments", "apply_deltas", "to_start_end", "to_grid", "normalise_segments",
           "fill_positions", "positions_to_index", "resample", "pool_level", "masked_mean"]
