"""The interface between a detection head and the shared engine.

A head sees a batch of padded snippet features (and, when it asks for them,
spatial grids, backbone levels or another run's proposals) and answers three
questions — its raw outputs, its loss, its candidates; everything else (data,
optimisation, checkpoints, DDP, ensembles, post-processing, conversion to
seconds) is the engine's.

Units: every segment a head receives or returns is in *grid units* of its
input — position ``g`` is the centre of input cell ``g`` (see
:mod:`tadkit.timeline`); the engine maps them to seconds with each sample's
:class:`~tadkit.timeline.TimeAxis`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from tadkit.data.batches import LevelInput
from tadkit.detect.postprocess import Detections

#: inputs a head may declare in ``needs``
INPUTS = frozenset({"grid", "levels", "proposals"})

__all__ = ["INPUTS", "DetectionHead", "InputInfo", "LevelInput", "group_parameters", "topk_detections",
           "weighted_mean"]


@dataclass(frozen=True)
class InputInfo:
    """What the engine will feed a head, for builders that need it (``build(..., inputs=info)``).

    ``level_names`` / ``level_dims``: the configured levels (``data.levels``)
    and their channels; ``streams``: the selected streams; ``grid_dim``:
    channels of the spatial grid (0 without one).
    """

    level_names: tuple[str, ...] = ()
    level_dims: tuple[int, ...] = ()
    streams: tuple[str, ...] = ()
    grid_dim: int = 0
    extras: Mapping[str, Any] = field(default_factory=dict)


class DetectionHead(nn.Module):
    """Base class of detection heads.

    ``forward(features, mask, **inputs)``
        ``features (B, C, T)`` float, ``mask (B, T)`` bool (True on real
        snippets, False on padding) -> a dict of raw output tensors. The
        engine passes, for each name in :attr:`needs`:
        ``grid (B, T, g, g, C_g)``; ``levels``: a list of
        :class:`~tadkit.data.datasets.LevelInput` ``(features (B, C_l, T_l),
        mask (B, T_l), positions (B, T_l))`` in ``data.levels`` order (empty
        when none is configured), positions in snippet-grid units;
        ``proposals``: one ``(N_i, 3)`` float tensor ``[start, end, score]``
        per sample, grid units (a chained run's source proposals).
    ``loss(outputs, mask, targets)``
        ``targets``: one dict per sample with ``segments`` float ``[N, 2]``
        (grid units) and ``labels`` long ``[N]`` (class indices, ``0..C-1``;
        given to class-agnostic heads too) -> a dict of scalar tensors,
        ``"loss"`` being the one to minimise.
    ``decode(outputs, mask, topk, min_score)``
        -> one :class:`Detections` per sample (grid units, class-index
        labels; label 0 everywhere for a :attr:`class_agnostic` head), at most
        ``topk`` candidates scoring above ``min_score``.

    Optional hooks (defaults do nothing special): :meth:`on_epoch_start`,
    :meth:`param_groups`, :meth:`average_outputs`.
    """

    num_classes: int
    #: inputs are padded to a multiple of this many cells (the head's total downsampling)
    stride: int = 1
    #: True for proposal heads: candidates are class-agnostic proposals, detections come
    #: from classifier fusion, ``infer --proposals`` writes the official proposal JSON
    class_agnostic: bool = False

    @property
    def needs(self) -> frozenset[str]:
        """What ``forward`` needs beyond the snippet features (a subset of :data:`INPUTS`)."""
        return frozenset()

    @property
    def uses_grid(self) -> bool:
        """``"grid" in needs`` (kept for older callers)."""
        return "grid" in self.needs

    def loss(self, outputs: dict[str, torch.Tensor], mask: torch.Tensor,
             targets: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def decode(self, outputs: dict[str, torch.Tensor], mask: torch.Tensor, topk: int = 2000,
               min_score: float = 0.0) -> list[Detections]:
        raise NotImplementedError

    # -- hooks ---------------------------------------------------------------
    def on_epoch_start(self, epoch: int, total: int) -> None:
        """Called before every training epoch (``epoch`` 0-based of ``total``, also after ``--resume``)."""

    def param_groups(self, optim_cfg: Any) -> list[dict[str, Any]] | None:
        """Optimizer parameter groups (``[{"params": [...], "lr": ..., "weight_decay": ...}]``).

        ``None`` (default): the engine's grouping from ``optim.no_decay`` and
        ``optim.lr_mult`` (see :func:`group_parameters`, which heads may call).
        """
        return None

    def average_outputs(self, outputs: Sequence[dict[str, torch.Tensor]],
                        weights: Sequence[float]) -> dict[str, torch.Tensor]:
        """Raw outputs of several runs of this head on the same batch -> one (ensembles).

        Default: the weighted mean of every floating-point tensor, computed as
        ``x_0 + Σ w_i (x_i − x_0) / Σ w_i`` so that identical runs give exactly
        the first run's output; other tensors (masks, indices) are taken from
        the first run. Tensors of different shapes raise ``ValueError``: a
        head whose runs may differ in size overrides this.
        """
        return weighted_mean(outputs, weights)

    def describe(self) -> dict[str, Any]:
        """Facts worth logging (parameter count, anchors ...)."""
        return {"parameters": sum(p.numel() for p in self.parameters())}


# --------------------------------------------------------------------------- helpers for heads
def topk_detections(segments: torch.Tensor, scores: torch.Tensor, topk: int = 2000,
                    min_score: float = 0.0) -> list[Detections]:
    """Per sample, the best ``topk`` (candidate, class) pairs scoring above ``min_score``.

    ``segments (B, N, 2)`` grid units and ``scores (B, N, C)``: a head's
    candidates with one score per class (zero out invalid candidates first);
    ``topk`` 0 or less keeps every pair. Returns one :class:`Detections` per
    sample, best first, labels the class indices.
    """
    out = []
    num_classes = scores.shape[-1]
    for seg, score in zip(segments, scores):
        flat = score.reshape(-1)
        k = min(int(topk), flat.numel()) if topk and topk > 0 else flat.numel()
        top, idx = flat.topk(k)
        keep = top > min_score
        top, idx = top[keep], idx[keep]
        out.append(Detections(seg[idx // num_classes].cpu().numpy(), top.cpu().numpy(),
                              (idx % num_classes).cpu().numpy()))
    return out


def weighted_mean(outputs: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """The default :meth:`DetectionHead.average_outputs` (see there)."""
    if not outputs:
        raise ValueError("nothing to average")
    if len(weights) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs but {len(weights)} weights")
    total = float(sum(weights))
    if not total > 0:
        raise ValueError(f"ensemble weights must add up to a positive number, got {list(weights)}")
    first = outputs[0]
    out: dict[str, torch.Tensor] = {}
    for key, x0 in first.items():
        if not isinstance(x0, torch.Tensor) or not x0.dtype.is_floating_point:
            out[key] = x0
            continue
        acc = torch.zeros_like(x0, dtype=torch.float32 if x0.dtype != torch.float64 else x0.dtype)
        for o, w in zip(outputs[1:], weights[1:]):
            x = o[key]
            if x.shape != x0.shape:
                raise ValueError(f"cannot average output {key!r}: shapes {tuple(x0.shape)} and {tuple(x.shape)} "
                                 "differ (runs with other grids: fuse candidates instead, --fuse union)")
            acc += (x.to(acc.dtype) - x0.to(acc.dtype)) * (float(w) / total)
        out[key] = (x0.to(acc.dtype) + acc).to(x0.dtype) if len(outputs) > 1 else x0
    return out


def group_parameters(module: nn.Module, weight_decay: float, no_decay: Iterable[str] = (),
                     lr_mult: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Parameter groups: no weight decay on some kinds, learning-rate multipliers by name prefix.

    ``no_decay``: any of ``"norm"`` (parameters of normalisation layers),
    ``"bias"`` (every parameter named ``*bias``), ``"embedding"``
    (``nn.Embedding`` weights and parameters whose name contains ``embed``).
    ``lr_mult``: ``{"module.prefix": multiplier}``; the longest matching prefix
    wins. Each group carries ``lr_mult`` (the engine multiplies its base lr)
    and ``weight_decay``; empty groups are dropped.
    """
    kinds = set(no_decay)
    unknown = kinds - {"norm", "bias", "embedding"}
    if unknown:
        raise ValueError(f"unknown no-decay kind(s) {sorted(unknown)}; use norm, bias, embedding")
    mult = dict(lr_mult or {})
    special: set[int] = set()
    norm_types = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
    for mod_name, mod in module.named_modules():
        for p_name, p in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if (("norm" in kinds and isinstance(mod, norm_types))
                    or ("bias" in kinds and p_name.endswith("bias"))
                    or ("embedding" in kinds and (isinstance(mod, nn.Embedding) or "embed" in full))):
                special.add(id(p))
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        prefix = max((k for k in mult if name == k or name.startswith(k + ".")), key=len, default=None)
        m = float(mult[prefix]) if prefix is not None else 1.0
        groups.setdefault((m, id(p) in special), []).append(p)
    return [{"params": ps, "lr_mult": m, "weight_decay": 0.0 if nd else weight_decay}
            for (m, nd), ps in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1]))]
