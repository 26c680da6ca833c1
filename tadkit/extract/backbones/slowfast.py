"""SlowFast R50 / R101, 8x8 setting (PySlowFast and pytorchvideo key layouts).

Paper: "SlowFast Networks for Video Recognition" (arXiv:1812.03982).

* Input: one full-rate clip ``[B, 3, T, H, W]`` (T = 32). The fast pathway
  sees all ``T`` frames; the slow pathway the ``T // alpha`` frames at
  :func:`slow_indices` = ``linspace(0, T-1, T//alpha)`` truncated (alpha = 4:
  ``[0, 4, 8, 13, 17, 22, 26, 31]``, not ``::4``). A ``[slow, fast]`` pair is
  accepted as well.
* Slow stem 1x7x7 (3->64), fast stem 5x7x7 (3->8), both stride (1,2,2) + max-pool
  1x3x3/(1,2,2); fast->slow lateral fusion after s1-s4: Conv (k,1,1)/(alpha,1,1)
  (k = 7 for R50, 5 for R101) + BN + ReLU, concatenated to the slow pathway.
  Bottleneck stages s2-s5 (R50: 3/4/6/3 blocks, R101: 3/4/23/3), temporal
  kernel of conv ``a``: slow 1/1/3/3, fast 3; no temporal striding. BN eps 1e-5.
* Feature: ``cat(mean_{T,H,W}(slow s5), mean_{T,H,W}(fast s5))`` -> ``[B, 2304]``,
  slow first (global mean at any crop size).

``state_dict()`` is the PySlowFast layout (``s1.pathway0_stem.conv.weight``,
``s2_fuse.conv_f2s.weight``, ``s3.pathway1_res0.branch2.a_bn.*``,
``head.projection.*``); the pytorchvideo layout (``blocks.0.multipathway_blocks.0.conv.*``,
``blocks.6.proj.*``) is a 1:1 renaming (:func:`convert_state_dict`).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._common import check_format, detect_layout, grid_pool, load_checked, no_classifier_error

FEATURE_DIM = 2304
CHECKPOINT_FORMATS = ("pyslowfast", "pytorchvideo")
ALPHA = 4
BN_EPS = 1e-5
MEAN = (0.45, 0.45, 0.45)
STD = (0.225, 0.225, 0.225)
INPUT_RECIPE = ("RGB x/255, mean 0.45, std 0.225; shorter side 256, centre crop 224 (or 256); "
                "32 consecutive frames (slow pathway = linspace(0, 31, 8) of them)")
#: depth -> (blocks per stage s2..s5, fusion temporal kernel)
DEPTHS = {50: ((3, 4, 6, 3), 7), 101: ((3, 4, 23, 3), 5)}
_SLOW_WIDTH = 64          # slow stem channels; fast = slow / beta_inv
_BETA_INV = 8
_FUSION_RATIO = 2
_SLOW_TEMPORAL = (1, 1, 3, 3)   # conv-a temporal kernel of s2..s5
_FAST_TEMPORAL = (3, 3, 3, 3)
_STAGE_STRIDE = (1, 2, 2, 2)
#: Intermediate levels (stage outputs before fusion): name -> channels.
LEVELS = OrderedDict((f"s{k}_{p}", c) for k in range(2, 6)
                     for p, c in (("slow", 256 * 2 ** (k - 2)), ("fast", 32 * 2 ** (k - 2))))


# --------------------------------------------------------------------------- builders
def build_slowfast_r50(num_classes: int = 400, alpha: int = ALPHA) -> "SlowFast":
    """SlowFast R50 8x8: ``[B, 3, 32, H, W]`` -> ``[B, 2304]``."""
    return SlowFast(depth=50, num_classes=num_classes, alpha=alpha)


def build_slowfast_r101(num_classes: int = 400, alpha: int = ALPHA) -> "SlowFast":
    """SlowFast R101 8x8: ``[B, 3, 32, H, W]`` -> ``[B, 2304]``."""
    return SlowFast(depth=101, num_classes=num_classes, alpha=alpha)


def slow_indices(num_frames: int, alpha: int = ALPHA) -> torch.Tensor:
    """Frames of a ``num_frames`` clip fed to the slow pathway (PySlowFast / pytorchvideo rule).

    ``linspace(0, T-1, T // alpha)`` truncated to integers, e.g. T=32, alpha=4 ->
    ``[0, 4, 8, 13, 17, 22, 26, 31]``.
    """
    if num_frames < alpha:
        raise ValueError(f"a SlowFast clip needs at least alpha={alpha} frames, got {num_frames}")
    return torch.linspace(0, num_frames - 1, num_frames // alpha).long()


# --------------------------------------------------------------------------- model
class SlowFast(nn.Module):
    """SlowFast network with PySlowFast module names (``s1`` ... ``s5``, ``s{k}_fuse``, ``head``)."""

    def __init__(self, depth: int = 50, num_classes: int = 400, alpha: int = ALPHA):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"SlowFast depth must be one of {sorted(DEPTHS)}, got {depth}")
        blocks, fusion_kernel = DEPTHS[depth]
        self.depth = depth
        self.alpha = alpha
        slow, fast = _SLOW_WIDTH, _SLOW_WIDTH // _BETA_INV
        self.s1 = nn.Module()
        self.s1.add_module("pathway0_stem", PathwayStem(3, slow, temporal_kernel=1))
        self.s1.add_module("pathway1_stem", PathwayStem(3, fast, temporal_kernel=5))
        self.s1_fuse = FuseFastToSlow(fast, fusion_kernel, alpha)
        slow_in, fast_in = slow + fast * _FUSION_RATIO, fast
        for i, n in enumerate(blocks):
            k = i + 2
            inner_s, inner_f = slow * 2 ** i, fast * 2 ** i
            out_s, out_f = inner_s * 4, inner_f * 4
            stage = nn.Module()
            for p, (cin, inner, cout, kt) in enumerate(((slow_in, inner_s, out_s, _SLOW_TEMPORAL[i]),
                                                        (fast_in, inner_f, out_f, _FAST_TEMPORAL[i]))):
                for b in range(n):
                    stage.add_module(f"pathway{p}_res{b}", ResBlock(
                        cin if b == 0 else cout, inner, cout, kt, _STAGE_STRIDE[i] if b == 0 else 1))
            self.add_module(f"s{k}", stage)
            if k < 5:
                self.add_module(f"s{k}_fuse", FuseFastToSlow(out_f, fusion_kernel, alpha))
            slow_in, fast_in = out_s + out_f * _FUSION_RATIO, out_f
        self.blocks_per_stage = tuple(blocks)
        self.num_classes = 0
        self.head = nn.Module()
        self.set_num_classes(num_classes)

    # -- inference ----------------------------------------------------------------
    def pathways(self, x: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """A full-rate clip ``[B, 3, T, H, W]`` -> ``(slow, fast)`` inputs; a pair is checked and passed on."""
        if isinstance(x, (list, tuple)):
            if len(x) != 2:
                raise ValueError(f"SlowFast expects a clip or a [slow, fast] pair, got {len(x)} tensors")
            slow, fast = x
        else:
            if x.ndim != 5 or x.shape[1] != 3:
                raise ValueError(f"SlowFast expects [B, 3, T, H, W], got {tuple(x.shape)}")
            slow, fast = x.index_select(2, slow_indices(x.shape[2], self.alpha).to(x.device)), x
        if fast.shape[2] % self.alpha or slow.shape[2] * self.alpha != fast.shape[2]:
            raise ValueError(f"SlowFast needs T divisible by alpha={self.alpha} and T/alpha slow frames; "
                             f"got slow T={slow.shape[2]}, fast T={fast.shape[2]}")
        return slow, fast

    def stages(self, x: torch.Tensor | Sequence[torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
        """Stage outputs before fusion: ``s{k}_slow`` ``[B, C, T/alpha, h, w]``, ``s{k}_fast`` ``[B, C, T, h, w]``."""
        slow, fast = self.pathways(x)
        slow, fast = self.s1.pathway0_stem(slow), self.s1.pathway1_stem(fast)
        slow = self.s1_fuse(slow, fast)
        out = OrderedDict()
        for k in range(2, 6):
            stage = getattr(self, f"s{k}")
            for b in range(self.blocks_per_stage[k - 2]):
                slow = getattr(stage, f"pathway0_res{b}")(slow)
                fast = getattr(stage, f"pathway1_res{b}")(fast)
            out[f"s{k}_slow"], out[f"s{k}_fast"] = slow, fast
            if k < 5:
                slow = getattr(self, f"s{k}_fuse")(slow, fast)
        return out

    def extract_features(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Clip -> ``[B, 2304]`` = ``cat(mean slow s5, mean fast s5)``."""
        maps = self.stages(x)
        return torch.cat([maps["s5_slow"].mean(dim=(2, 3, 4)), maps["s5_fast"].mean(dim=(2, 3, 4))], dim=1)

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        return self.extract_features(x)

    def extract_outputs(self, x: torch.Tensor | Sequence[torch.Tensor], grid: int = 0,
                        levels: bool = False) -> dict:
        """One forward: ``{"feature": [B, 2304]}`` plus, on request, ``"grid"``
        ``[B, g, g, 2304]`` (each pathway's s5 averaged over time, pooled, slow
        channels first) and ``"levels"`` ``{s2_slow, s2_fast, ..., s5_fast: [B, C, T_l]}``
        (spatial means; slow steps sit at :func:`slow_indices`, fast at every frame)."""
        maps = self.stages(x)
        slow, fast = maps["s5_slow"], maps["s5_fast"]
        out: dict = {"feature": torch.cat([slow.mean(dim=(2, 3, 4)), fast.mean(dim=(2, 3, 4))], dim=1)}
        if grid:
            out["grid"] = torch.cat([grid_pool(slow.mean(dim=2), grid), grid_pool(fast.mean(dim=2), grid)], dim=3)
        if levels:
            out["levels"] = OrderedDict((k, v.mean(dim=(3, 4))) for k, v in maps.items())
        return out

    def level_positions(self, num_frames: int) -> dict[str, torch.Tensor]:
        """Frame position (from the clip start) of every level step: the slow
        pathway's source frames, or each fast frame."""
        slow = slow_indices(num_frames, self.alpha).to(torch.float64)
        fast = torch.arange(num_frames, dtype=torch.float64)
        return OrderedDict((k, (slow if k.endswith("slow") else fast).clone()) for k in LEVELS)

    def classify(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Class scores ``[B, C]`` = ``projection(feature)`` (no softmax)."""
        if self.head.projection is None:
            raise no_classifier_error(f"slowfast_r{self.depth}")
        return self.head.projection(self.extract_features(x))

    # -- configuration / checkpoints ---------------------------------------------------
    def set_num_classes(self, num_classes: int) -> None:
        """Replace ``head.projection`` (random init); ``0`` removes it."""
        if num_classes != self.num_classes or not hasattr(self.head, "projection"):
            dev = self.s1.pathway0_stem.conv.weight.device
            self.head.projection = nn.Linear(FEATURE_DIM, num_classes).to(dev) if num_classes > 0 else None
            self.num_classes = int(num_classes)

    def state_dict_as(self, fmt: str = "pyslowfast") -> dict[str, torch.Tensor]:
        """The state dict in layout ``fmt`` (``pyslowfast`` or ``pytorchvideo``)."""
        return convert_state_dict(self.state_dict(), src="pyslowfast", dst=fmt)

    def load_checkpoint_state(self, state: Mapping[str, torch.Tensor], fmt: str = "auto",
                              source: str = "checkpoint", classifier: str = "auto") -> str:
        """Load a PySlowFast or pytorchvideo state dict; returns the layout.

        ``classifier="drop"`` loads the trunk only (e.g. the EPIC-KITCHENS
        checkpoints with ``head.projection_verb`` / ``_noun``). Raises
        :class:`InputError` naming ``source``; an R50/R101 mix-up is named in the message.
        """
        fmt = detect_format(state, source) if fmt == "auto" else fmt
        sd = convert_state_dict(state, src=fmt, dst="pyslowfast")
        head_prefix = "head.projection."
        if classifier == "drop":
            sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
        load_checked(self, sd, what=f"SlowFast R{self.depth}", fmt=fmt, source=source,
                     head_prefix=head_prefix, classifier=classifier, hint=self._hint)
        return fmt

    def _hint(self, sd: Mapping[str, torch.Tensor], missing: list, unexpected: list) -> str:
        s4 = {int(m.group(1)) for k in sd if (m := re.match(r"s4\.pathway0_res(\d+)\.", k))}
        if s4 and max(s4) + 1 != self.blocks_per_stage[2]:
            other = [d for d, (b, _) in DEPTHS.items() if b[2] == max(s4) + 1]
            if other:
                return f"the checkpoint is a SlowFast R{other[0]}; build slowfast_r{other[0]}"
        if any(k.startswith("head.") and not k.startswith("head.projection.") for k in unexpected):
            return "the checkpoint has other classifier heads; pass classifier='drop' to load the trunk only"
        return ""


class PathwayStem(nn.Module):
    """Conv (kt,7,7)/(1,2,2) -> BN -> ReLU -> max-pool (1,3,3)/(1,2,2) pad (0,1,1)."""

    def __init__(self, cin: int, cout: int, temporal_kernel: int):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, (temporal_kernel, 7, 7), stride=(1, 2, 2),
                              padding=(temporal_kernel // 2, 3, 3), bias=False)
        self.bn = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        return F.max_pool3d(x, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))


class FuseFastToSlow(nn.Module):
    """Lateral connection: Conv (k,1,1)/(alpha,1,1) on fast (C -> 2C) + BN + ReLU, cat to slow."""

    def __init__(self, fast_channels: int, kernel: int, alpha: int):
        super().__init__()
        self.conv_f2s = nn.Conv3d(fast_channels, fast_channels * _FUSION_RATIO, (kernel, 1, 1),
                                  stride=(alpha, 1, 1), padding=(kernel // 2, 0, 0), bias=False)
        self.bn = _bn(fast_channels * _FUSION_RATIO)

    def forward(self, slow: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
        return torch.cat([slow, F.relu(self.bn(self.conv_f2s(fast)))], dim=1)


class ResBlock(nn.Module):
    """Bottleneck residual block (PySlowFast ``ResBlock``: ``branch1``, ``branch1_bn``, ``branch2``)."""

    def __init__(self, cin: int, inner: int, cout: int, temporal_kernel: int, stride: int):
        super().__init__()
        if cin != cout or stride != 1:
            self.branch1 = nn.Conv3d(cin, cout, 1, stride=(1, stride, stride), bias=False)
            self.branch1_bn = _bn(cout)
        else:
            self.branch1 = None
        self.branch2 = BottleneckTransform(cin, inner, cout, temporal_kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.branch1 is None else self.branch1_bn(self.branch1(x))
        return F.relu(shortcut + self.branch2(x))


class BottleneckTransform(nn.Module):
    """``a``: (kt,1,1) -> ``b``: (1,3,3)/(1,s,s) -> ``c``: 1x1x1, each with BN (``a_bn``...)."""

    def __init__(self, cin: int, inner: int, cout: int, temporal_kernel: int, stride: int):
        super().__init__()
        self.a = nn.Conv3d(cin, inner, (temporal_kernel, 1, 1), padding=(temporal_kernel // 2, 0, 0), bias=False)
        self.a_bn = _bn(inner)
        self.b = nn.Conv3d(inner, inner, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)
        self.b_bn = _bn(inner)
        self.c = nn.Conv3d(inner, cout, 1, bias=False)
        self.c_bn = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.a_bn(self.a(x)))
        x = F.relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


# --------------------------------------------------------------------------- layouts
def detect_format(state: Mapping[str, object], source: str = "checkpoint") -> str:
    """``pyslowfast`` or ``pytorchvideo`` from the key names; ``InputError`` otherwise."""
    return detect_layout(state, {"pyslowfast": ("s1.pathway0_stem.", "s2.pathway0_res0."),
                                 "pytorchvideo": ("blocks.0.multipathway_blocks.",)},
                         what="SlowFast", source=source)


def convert_state_dict(state: Mapping[str, torch.Tensor], src: str, dst: str) -> dict[str, torch.Tensor]:
    """Rename SlowFast keys between the ``pyslowfast`` and ``pytorchvideo`` layouts.

    A 1:1 renaming that keeps the order (both layouts order keys alike);
    values are shared. Keys matching no rule are kept (the loader reports them).
    """
    for fmt in (src, dst):
        check_format(fmt, CHECKPOINT_FORMATS, "SlowFast")
    if src == dst:
        return dict(state)
    rules = _TO_PTV if dst == "pytorchvideo" else _TO_PYSF
    return {_rename(k, rules): v for k, v in state.items()}


_TO_PTV = [
    (re.compile(r"^s1\.pathway(\d)_stem\.conv\."), r"blocks.0.multipathway_blocks.\1.conv."),
    (re.compile(r"^s1\.pathway(\d)_stem\.bn\."), r"blocks.0.multipathway_blocks.\1.norm."),
    (re.compile(r"^s(\d)_fuse\.conv_f2s\."),
     lambda m: f"blocks.{int(m[1]) - 1}.multipathway_fusion.conv_fast_to_slow."),
    (re.compile(r"^s(\d)_fuse\.bn\."), lambda m: f"blocks.{int(m[1]) - 1}.multipathway_fusion.norm."),
    (re.compile(r"^s(\d)\.pathway(\d)_res(\d+)\.branch1\."),
     lambda m: f"blocks.{int(m[1]) - 1}.multipathway_blocks.{m[2]}.res_blocks.{m[3]}.branch1_conv."),
    (re.compile(r"^s(\d)\.pathway(\d)_res(\d+)\.branch1_bn\."),
     lambda m: f"blocks.{int(m[1]) - 1}.multipathway_blocks.{m[2]}.res_blocks.{m[3]}.branch1_norm."),
    (re.compile(r"^s(\d)\.pathway(\d)_res(\d+)\.branch2\.([abc])\."),
     lambda m: f"blocks.{int(m[1]) - 1}.multipathway_blocks.{m[2]}.res_blocks.{m[3]}.branch2.conv_{m[4]}."),
    (re.compile(r"^s(\d)\.pathway(\d)_res(\d+)\.branch2\.([abc])_bn\."),
     lambda m: f"blocks.{int(m[1]) - 1}.multipathway_blocks.{m[2]}.res_blocks.{m[3]}.branch2.norm_{m[4]}."),
    (re.compile(r"^head\.projection\."), "blocks.6.proj."),
]
_TO_PYSF = [
    (re.compile(r"^blocks\.0\.multipathway_blocks\.(\d)\.conv\."), r"s1.pathway\1_stem.conv."),
    (re.compile(r"^blocks\.0\.multipathway_blocks\.(\d)\.norm\."), r"s1.pathway\1_stem.bn."),
    (re.compile(r"^blocks\.(\d)\.multipathway_fusion\.conv_fast_to_slow\."),
     lambda m: f"s{int(m[1]) + 1}_fuse.conv_f2s."),
    (re.compile(r"^blocks\.(\d)\.multipathway_fusion\.norm\."), lambda m: f"s{int(m[1]) + 1}_fuse.bn."),
    (re.compile(r"^blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)\.branch1_conv\."),
     lambda m: f"s{int(m[1]) + 1}.pathway{m[2]}_res{m[3]}.branch1."),
    (re.compile(r"^blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)\.branch1_norm\."),
     lambda m: f"s{int(m[1]) + 1}.pathway{m[2]}_res{m[3]}.branch1_bn."),
    (re.compile(r"^blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)\.branch2\.conv_([abc])\."),
     lambda m: f"s{int(m[1]) + 1}.pathway{m[2]}_res{m[3]}.branch2.{m[4]}."),
    (re.compile(r"^blocks\.(\d)\.multipathway_blocks\.(\d)\.res_blocks\.(\d+)\.branch2\.norm_([abc])\."),
     lambda m: f"s{int(m[1]) + 1}.pathway{m[2]}_res{m[3]}.branch2.{m[4]}_bn."),
    (re.compile(r"^blocks\.6\.proj\."), "head.projection."),
]


def _rename(key: str, rules) -> str:
    for pattern, repl in rules:
        new, n = pattern.subn(repl, key, count=1)
        if n:
            return new
    return key


def _bn(channels: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels, eps=BN_EPS)
