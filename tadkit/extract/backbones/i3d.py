"""I3D: Inception-v1 inflated to 3D (Carreira & Zisserman 2017), RGB and flow streams.

Built to reproduce the public PyTorch ports of the DeepMind checkpoints
("Quo Vadis, Action Recognition? A New Model and the Kinetics Dataset", arXiv:1705.07750):

* every convolution and max-pool uses TensorFlow "SAME" padding computed from
  the actual input size in each forward (asymmetric: the extra element goes at
  the end; max-pool pads with 0, equal to TF after a ReLU);
* BatchNorm eps is ``1e-3`` (TF / piergiaj); the hassony2 port vendored in
  video_features used PyTorch's ``1e-5``, selectable with ``bn_eps``;
* the feature is ``mean_t(AvgPool3d((2, 7, 7), stride 1)(Mixed_5c(x)))`` ->
  ``[B, 1024]`` -- a 2-frame sliding average before the time mean, not a
  plain global mean.

For inputs smaller than 224x224 (fast tests, ``--size``) the pooling window
shrinks to the map (``min(2, T')``, ``min(7, H')``, ``min(7, W')``) and the
result is averaged over every remaining position; at 224x224 this is exactly
the reference feature.

State-dict keys follow the piergiaj layout (``Conv3d_1a_7x7.conv3d.weight``,
``Mixed_3b.b1b.bn.running_var``, ``logits.conv3d.bias`` ...). The hassony2
layout (``conv3d_1a_7x7.batch3d.*``, ``mixed_3b.branch_1.1.*``,
``conv3d_0c_1x1.*``) is converted on load/save (:func:`convert_state_dict`).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tadkit.errors import InputError

from ._common import few, grid_pool, load_strict, strided_positions

FEATURE_DIM = 1024
CHECKPOINT_FORMATS = ("piergiaj", "hassony2")
#: BatchNorm eps each checkpoint layout implies (the code that published it).
FORMAT_BN_EPS = {"piergiaj": 1e-3, "hassony2": 1e-5}
TF_BN_EPS = 1e-3

#: Intermediate levels of ``extract_outputs(levels=True)``: name -> (channels, temporal stride).
LEVELS = OrderedDict([("Mixed_3c", (480, 2)), ("Mixed_4f", (832, 4)), ("Mixed_5c", (1024, 8))])

#: Inception module channels ``[c0, c1a, c1b, c2a, c2b, c3]`` (spec table 1.1).
INCEPTION_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


# --------------------------------------------------------------------------- public API
class InceptionI3d(nn.Module):
    """One I3D stream.

    Input ``x``: ``[B, C, T, H, W]`` float in ``[-1, 1]`` (``C`` = 3 for RGB,
    2 for flow). :meth:`extract_features` (and ``forward``) return
    ``[B, 1024]``; :meth:`classify` returns the classifier scores ``[B, classes]``.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 400, bn_eps: float = TF_BN_EPS):
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        # Registered first, as in the piergiaj reference, so state_dict order matches it.
        self.logits = Unit3D(FEATURE_DIM, num_classes, (1, 1, 1), activation=False,
                             batch_norm=False, bias=True)
        blocks: list[tuple[str, nn.Module]] = [
            ("Conv3d_1a_7x7", Unit3D(in_channels, 64, (7, 7, 7), stride=(2, 2, 2), bn_eps=bn_eps)),
            ("MaxPool3d_2a_3x3", MaxPool3dSame((1, 3, 3), (1, 2, 2))),
            ("Conv3d_2b_1x1", Unit3D(64, 64, (1, 1, 1), bn_eps=bn_eps)),
            ("Conv3d_2c_3x3", Unit3D(64, 192, (3, 3, 3), bn_eps=bn_eps)),
            ("MaxPool3d_3a_3x3", MaxPool3dSame((1, 3, 3), (1, 2, 2))),
        ]
        cin = 192
        pools = {"Mixed_4b": ("MaxPool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
                 "Mixed_5b": ("MaxPool3d_5a_2x2", (2, 2, 2), (2, 2, 2))}
        for name, ch in INCEPTION_CHANNELS.items():
            if name in pools:
                pname, k, s = pools[name]
                blocks.append((pname, MaxPool3dSame(k, s)))
            module = InceptionModule(cin, ch, bn_eps=bn_eps)
            blocks.append((name, module))
            cin = module.out_channels
        self.block_names: tuple[str, ...] = tuple(n for n, _ in blocks)
        for name, module in blocks:
            self.add_module(name, module)

    # -- inference ----------------------------------------------------------------
    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W]`` -> Mixed_5c map ``[B, 1024, T', H', W']`` (T' = ceil(T/8))."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"I3D expects [B, {self.in_channels}, T, H, W], got {tuple(x.shape)}")
        for name in self.block_names:
            x = getattr(self, name)(x)
        return x

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W]`` -> ``[B, 1024]``: pooled Mixed_5c, mean over time."""
        return temporal_feature_pool(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extract_features(x)

    def extract_outputs(self, x: torch.Tensor, grid: int = 0, levels: bool = False) -> dict:
        """One forward: ``{"feature": [B, 1024]}`` (exactly :meth:`extract_features`)
        plus, on request, ``"grid"``: Mixed_5c averaged over time and pooled to
        ``[B, g, g, 1024]``, and ``"levels"``: ``{Mixed_3c, Mixed_4f, Mixed_5c:
        [B, C_l, T_l]}`` spatial means (480 / 832 / 1024 channels at temporal
        strides 2 / 4 / 8, ``T_l = ceil(T / stride)``; SP-TAD's inter-level pyramid)."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"I3D expects [B, {self.in_channels}, T, H, W], got {tuple(x.shape)}")
        maps = {}
        for name in self.block_names:
            x = getattr(self, name)(x)
            if levels and name in LEVELS:
                maps[name] = x.mean(dim=(3, 4))
        out: dict = {"feature": temporal_feature_pool(x)}
        if grid:
            out["grid"] = grid_pool(x.mean(dim=2), grid)
        if levels:
            out["levels"] = OrderedDict((k, maps[k]) for k in LEVELS)
        return out

    def level_positions(self, num_frames: int) -> dict[str, torch.Tensor]:
        """Frame position (from the clip start) of every level step of a ``num_frames`` clip.

        Step ``j`` of a level with temporal stride ``s`` summarises frames
        ``[j*s, (j+1)*s)``; its position is their centre ``j*s + (s-1)/2``.
        """
        out = OrderedDict()
        for name, (_, stride) in LEVELS.items():
            out[name] = strided_positions(-(-num_frames // stride), stride)
        return out

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``[B, num_classes]`` (time-averaged logits, no softmax)."""
        return self.logits(_pool_window(self.trunk(x))).mean(dim=(2, 3, 4))

    # -- configuration ----------------------------------------------------------------
    @property
    def bn_eps(self) -> float:
        return float(self.Conv3d_1a_7x7.bn.eps)

    def set_bn_eps(self, eps: float) -> None:
        """Set the eps of every BatchNorm (see the module docstring)."""
        for m in self.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.eps = float(eps)

    def reset_classes(self, num_classes: int) -> None:
        """Replace the classifier by one with ``num_classes`` outputs (random init)."""
        if num_classes != self.num_classes:
            dev = self.Conv3d_1a_7x7.conv3d.weight.device
            self.logits = Unit3D(FEATURE_DIM, num_classes, (1, 1, 1), activation=False,
                                             batch_norm=False, bias=True).to(dev)
            self.num_classes = num_classes

    # -- checkpoints ----------------------------------------------------------------
    def state_dict_as(self, fmt: str = "piergiaj") -> dict[str, torch.Tensor]:
        """The state dict in a public layout (key names and order of that layout)."""
        return convert_state_dict(self.state_dict(), src="piergiaj", dst=fmt)

    def load_checkpoint_state(self, state: Mapping[str, torch.Tensor], fmt: str = "auto",
                              bn_eps: float | str | None = "auto", source: str = "checkpoint") -> str:
        """Load a state dict in layout ``fmt`` (``auto`` detects it); returns the layout.

        ``bn_eps="auto"`` sets the eps the layout implies (:data:`FORMAT_BN_EPS`),
        a number sets that eps, ``None`` keeps the model's. The classifier is
        resized to the checkpoint's classes (e.g. 157 for Charades).
        ``num_batches_tracked`` entries are optional (2018 checkpoints lack them).
        Raises :class:`InputError` naming ``source`` on missing, unexpected or
        mis-shaped keys.
        """
        fmt = detect_format(state, source) if fmt == "auto" else fmt
        sd = convert_state_dict(state, src=fmt, dst="piergiaj")
        logits_w = sd.get("logits.conv3d.weight")
        if isinstance(logits_w, torch.Tensor) and logits_w.ndim == 5 and logits_w.shape[1] == FEATURE_DIM:
            self.reset_classes(int(logits_w.shape[0]))
        load_strict(self, sd, what="I3D", fmt=fmt, source=source, hint=self._swap_hint)
        if bn_eps == "auto":
            self.set_bn_eps(FORMAT_BN_EPS[fmt])
        elif bn_eps is not None:
            self.set_bn_eps(float(bn_eps))
        return fmt


    def _swap_hint(self, sd: Mapping[str, torch.Tensor], missing: list[str], unexpected: list[str]) -> str:
        stem = sd.get("Conv3d_1a_7x7.conv3d.weight")
        if isinstance(stem, torch.Tensor) and stem.ndim == 5 and stem.shape[1] != self.in_channels:
            return (f"the checkpoint is for {stem.shape[1]}-channel input, the model takes "
                    f"{self.in_channels} (rgb and flow weights swapped?)")
        return ""


def temporal_feature_pool(fmap: torch.Tensor) -> torch.Tensor:
    """Mixed_5c map ``[B, C, T', H', W']`` -> feature ``[B, C]``.

    AvgPool3d with kernel ``(2, 7, 7)`` (clamped to the map) and stride 1,
    then the mean over the remaining positions (the spec's time mean).
    """
    return _pool_window(fmap).mean(dim=(2, 3, 4))


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding ``(front, back)`` of one dimension of ``size``."""
    if size % stride == 0:
        total = max(kernel - stride, 0)
    else:
        total = max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def detect_format(state: Mapping[str, object], source: str = "checkpoint") -> str:
    """``"piergiaj"`` or ``"hassony2"`` from the key names; ``InputError`` otherwise."""
    keys = list(state)
    if any(k.startswith("Conv3d_1a_7x7.") for k in keys):
        return "piergiaj"
    if any(k.startswith("conv3d_1a_7x7.") for k in keys):
        return "hassony2"
    raise InputError(source, "not a recognised I3D checkpoint (expected piergiaj keys like "
                     f"'Conv3d_1a_7x7.conv3d.weight' or hassony2 keys like "
                     f"'conv3d_1a_7x7.conv3d.weight'; found {few(keys)})")


def convert_state_dict(state: Mapping[str, torch.Tensor], src: str, dst: str) -> dict[str, torch.Tensor]:
    """Rename I3D keys between the ``piergiaj`` and ``hassony2`` layouts.

    Values are shared, not copied. The result is ordered as the destination
    layout orders its keys (piergiaj: classifier first; hassony2: last).
    Keys that match no rule are kept unchanged (the loader reports them).
    """
    for fmt in (src, dst):
        if fmt not in CHECKPOINT_FORMATS:
            raise ValueError(f"unknown I3D checkpoint format {fmt!r}; known: {', '.join(CHECKPOINT_FORMATS)}")
    items = list(state.items())
    if src != dst:
        rename = _to_hassony2 if dst == "hassony2" else _to_piergiaj
        items = [(rename(k), v) for k, v in items]
    head = [(k, v) for k, v in items if _is_classifier(k, dst)]
    body = [(k, v) for k, v in items if not _is_classifier(k, dst)]
    return dict(head + body if dst == "piergiaj" else body + head)


# --------------------------------------------------------------------------- layers
class Unit3D(nn.Module):
    """Conv3d (SAME padding, no bias) -> BatchNorm3d -> ReLU; keys ``conv3d.*``, ``bn.*``."""

    def __init__(self, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int] = (1, 1, 1),
                 activation: bool = True, batch_norm: bool = True, bias: bool = False,
                 bn_eps: float = TF_BN_EPS):
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.activation = activation
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, stride=self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=bn_eps, momentum=0.01) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _pad_same(x, self.kernel, self.stride)
        x = self.conv3d(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.Module):
    """Max-pool with TF SAME padding filled with zeros (inputs are post-ReLU)."""

    def __init__(self, kernel: Sequence[int], stride: Sequence[int]):
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four parallel branches, concatenated on channels (b0, b1, b2, b3)."""

    def __init__(self, cin: int, ch: Sequence[int], bn_eps: float = TF_BN_EPS):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = ch
        self.b0 = Unit3D(cin, c0, (1, 1, 1), bn_eps=bn_eps)
        self.b1a = Unit3D(cin, c1a, (1, 1, 1), bn_eps=bn_eps)
        self.b1b = Unit3D(c1a, c1b, (3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit3D(cin, c2a, (1, 1, 1), bn_eps=bn_eps)
        self.b2b = Unit3D(c2a, c2b, (3, 3, 3), bn_eps=bn_eps)
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, c3, (1, 1, 1), bn_eps=bn_eps)
        self.out_channels = c0 + c1b + c2b + c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                          self.b3b(self.b3a(x))], dim=1)


# --------------------------------------------------------------------------- helpers
def _pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        pads.extend(tf_same_padding(int(size), k, s))  # F.pad wants the last dim first
    if not any(pads):
        return x
    return F.pad(x, pads, mode="constant", value=0.0)


def _pool_window(fmap: torch.Tensor) -> torch.Tensor:
    t, h, w = fmap.shape[2:]
    return F.avg_pool3d(fmap, (min(2, t), min(7, h), min(7, w)), stride=1)


_BRANCH_TO_H = {"b0": "branch_0", "b1a": "branch_1.0", "b1b": "branch_1.1",
                "b2a": "branch_2.0", "b2b": "branch_2.1", "b3b": "branch_3.1"}
_BRANCH_TO_P = {v: k for k, v in _BRANCH_TO_H.items()}
_P_KEY = re.compile(r"^(Conv3d_\w+?|Mixed_\w+?)\.(?:(b0|b1a|b1b|b2a|b2b|b3b)\.)?(conv3d|bn)\.(\w+)$")
_H_KEY = re.compile(r"^(conv3d_\w+?|mixed_\w+?)\.(?:(branch_0|branch_[123]\.[01])\.)?(conv3d|batch3d)\.(\w+)$")


def _to_hassony2(key: str) -> str:
    if key.startswith("logits.conv3d."):
        return "conv3d_0c_1x1.conv3d." + key[len("logits.conv3d."):]
    m = _P_KEY.match(key)
    if not m:
        return key
    block, branch, layer, leaf = m.groups()
    parts = [block[0].lower() + block[1:]]
    if branch:
        parts.append(_BRANCH_TO_H[branch])
    parts += ["batch3d" if layer == "bn" else "conv3d", leaf]
    return ".".join(parts)


def _to_piergiaj(key: str) -> str:
    if key.startswith("conv3d_0c_1x1.conv3d."):
        return "logits.conv3d." + key[len("conv3d_0c_1x1.conv3d."):]
    m = _H_KEY.match(key)
    if not m or m.group(2) not in (None, *_BRANCH_TO_P):
        return key
    block, branch, layer, leaf = m.groups()
    parts = [block[0].upper() + block[1:]]
    if branch:
        parts.append(_BRANCH_TO_P[branch])
    parts += ["bn" if layer == "batch3d" else "conv3d", leaf]
    return ".".join(parts)


def _is_classifier(key: str, fmt: str) -> bool:
    return key.startswith("logits." if fmt == "piergiaj" else "conv3d_0c_1x1.")


