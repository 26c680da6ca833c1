"""R(2+1)D-34 with the IG-65M layout (moabitcoin/ig65m-pytorch on torchvision VideoResNet).

Papers: "A Closer Look at Spatiotemporal Convolutions for Action Recognition" (arXiv:1711.11248)
and "Large-scale weakly-supervised pre-training for video action recognition" (IG-65M, arXiv:1905.00561).

* (2+1)D convolution = Conv3d ``(1,3,3)`` stride ``(1,s,s)`` -> BN(mid) ->
  ReLU -> Conv3d ``(3,1,1)`` stride ``(s,1,1)``, no biases.
* Mid-plane width ``floor(in*out*27 / (9*in + 3*out))`` of the block's
  ``(in, out)``, applied to both convs of a block -- except the IG-65M
  (Caffe2) override: conv2 of the first block of layers 2-4 uses ``(out, out)``,
  giving 288 / 576 / 1152 instead of 230 / 460 / 921 (:func:`midplanes`).
* Every BatchNorm has ``eps = 1e-3``.
* Input ``[B, 3, T, H, W]`` (8 or 32 frames at 112x112 for the IG-65M weights),
  RGB ``x/255`` normalised with the Kinetics mean/std below.
* Feature: global mean of layer4 over T, H, W -> ``[B, 512]``.

The module tree mirrors torchvision's ``VideoResNet`` so ``state_dict()`` is
the ``ig65m`` layout (``stem.0.weight``, ``layer2.0.conv2.0.0.weight``, ...,
``fc.*``). The classifier is sized from the checkpoint (487 / 359 / 400
classes) or dropped.

Layout ``tsp``: the checkpoints released with TSP (Alwassel et al.,
"TSP: Temporally-Sensitive Pretraining of Video Encoders for Localization
Tasks", arXiv 2011.11479), e.g. ``r2plus1d_34-tac_on_kinetics``: the same
trunk under ``features.`` (``features.stem.0.weight``, ...; the trunk's own fc
is removed) and the classifier heads beside it -- ``fc.*`` for the one-head
TAC models (Kinetics-400, ActivityNet or THUMOS14 actions), ``fc1.*`` (action
classes) and ``fc2.*`` (foreground / background, over ``[feature, GVF]``) for
the two-head TSP models. ``fc`` / ``fc1`` become the model's classifier;
``fc2`` has no counterpart in the backbone and is left out.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ._common import (check_format, detect_layout, grid_pool, load_checked, no_classifier_error,
                      strided_positions)

FEATURE_DIM = 512
CHECKPOINT_FORMATS = ("ig65m", "tsp")
#: key prefix of the trunk in the ``tsp`` layout
TSP_TRUNK = "features."
BN_EPS = 1e-3
MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)
INPUT_RECIPE = ("RGB x/255, mean [0.43216, 0.394666, 0.37645], std [0.22803, 0.22145, 0.216989]; "
                "shorter side 128 + centre crop 112 (video_features: resize 128x171, crop 112); "
                "8- or 32-frame clips")
#: Intermediate levels: name -> (channels, temporal stride in input frames).
LEVELS = OrderedDict([("layer1", (64, 1)), ("layer2", (128, 2)), ("layer3", (256, 4)), ("layer4", (512, 8))])
BLOCKS = (3, 4, 6, 3)
PLANES = (64, 128, 256, 512)


# --------------------------------------------------------------------------- builders
def build_r2plus1d_34(num_classes: int = 400) -> "R2Plus1D34":
    """R(2+1)D-34, ``[B, 3, T, 112, 112]`` -> ``[B, 512]``."""
    return R2Plus1D34(num_classes=num_classes)


def midplanes(cin: int, cout: int) -> int:
    """Width of the (2+1)D factorisation: ``floor(cin*cout*27 / (9*cin + 3*cout))``.

    Chosen so the (1,3,3)+(3,1,1) pair has the parameter count of one 3x3x3
    conv; e.g. ``midplanes(64, 128) == 230``, ``midplanes(128, 128) == 288``.
    """
    return (cin * cout * 3 * 3 * 3) // (cin * 3 * 3 + 3 * cout)


# --------------------------------------------------------------------------- model
class R2Plus1D34(nn.Module):
    """R(2+1)D-34 trunk (``stem``, ``layer1``-``layer4``) + ``fc``."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(3, 45, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            _bn(45), nn.ReLU(inplace=True),
            nn.Conv3d(45, 64, (3, 1, 1), stride=1, padding=(1, 0, 0), bias=False),
            _bn(64), nn.ReLU(inplace=True))
        cin = 64
        for i, (blocks, planes) in enumerate(zip(BLOCKS, PLANES), start=1):
            stride = 1 if i == 1 else 2
            layer = []
            for b in range(blocks):
                layer.append(BasicBlock(cin, planes, stride if b == 0 else 1))
                cin = planes
            self.add_module(f"layer{i}", nn.Sequential(*layer))
        self.num_classes = int(num_classes)
        self.fc = nn.Linear(FEATURE_DIM, num_classes) if num_classes > 0 else None

    # -- inference ----------------------------------------------------------------
    def stages(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """``[B, 3, T, H, W]`` -> layer maps (layer4: ``[B, 512, ceil(T/8), H/16, W/16]``)."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"R(2+1)D expects [B, 3, T, H, W], got {tuple(x.shape)}")
        x = self.stem(x)
        out = OrderedDict()
        for name in LEVELS:
            x = getattr(self, name)(x)
            out[name] = x
        return out

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W]`` -> ``[B, 512]``: global mean of layer4."""
        return self.stages(x)["layer4"].mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extract_features(x)

    def extract_outputs(self, x: torch.Tensor, grid: int = 0, levels: bool = False) -> dict:
        """One forward: ``{"feature": [B, 512]}`` plus, on request, ``"grid"``
        (layer4 averaged over time, pooled to ``[B, g, g, 512]``) and
        ``"levels"`` (``{layer1..layer4: [B, C_l, T_l]}`` spatial means, with
        ``T_l = ceil(T / stride_l)``, strides 1/2/4/8)."""
        return maps_to_outputs(self.stages(x), grid, levels)

    def level_positions(self, num_frames: int) -> dict[str, torch.Tensor]:
        """Frame position of each level step for a ``num_frames`` clip.

        Step ``j`` of a level with stride ``s`` summarises frames
        ``[j*s, (j+1)*s)``; its position is their centre (frames from the clip start).
        """
        return OrderedDict((k, strided_positions(-(-num_frames // s), s)) for k, (_, s) in LEVELS.items())

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``[B, C]`` (no softmax)."""
        if self.fc is None:
            raise no_classifier_error("r2plus1d_34")
        return self.fc(self.extract_features(x))

    # -- configuration / checkpoints ---------------------------------------------------
    def set_num_classes(self, num_classes: int) -> None:
        """Replace the classifier (random init); ``0`` removes it."""
        if num_classes != self.num_classes:
            dev = self.stem[0].weight.device
            self.fc = nn.Linear(FEATURE_DIM, num_classes).to(dev) if num_classes > 0 else None
            self.num_classes = int(num_classes)

    def state_dict_as(self, fmt: str = "ig65m") -> dict[str, torch.Tensor]:
        """The state dict in layout ``fmt`` (``ig65m``: the model's own; ``tsp``: a one-head TAC file)."""
        return convert_state_dict(self.state_dict(), src="ig65m", dst=fmt)

    def load_checkpoint_state(self, state: Mapping[str, torch.Tensor], fmt: str = "auto",
                              source: str = "checkpoint", classifier: str = "auto") -> str:
        """Load an IG-65M / torchvision- or TSP-layout state dict; returns the layout name.

        The fc is sized from the checkpoint or removed if it has none. Raises
        :class:`InputError` naming ``source`` on missing, unexpected or
        mis-shaped keys (e.g. a stock torchvision ``r2plus1d_18``-rule model).
        """
        fmt = detect_format(state, source) if fmt == "auto" else fmt
        sd = convert_state_dict(state, src=fmt, dst="ig65m")
        load_checked(self, sd, what="R(2+1)D-34", fmt=fmt, source=source, head_prefix="fc.",
                     classifier=classifier, hint=_hint)
        return fmt


class Conv2Plus1D(nn.Sequential):
    """``0``: Conv3d (1,3,3)/(1,s,s) -> ``1``: BN(mid) -> ``2``: ReLU -> ``3``: Conv3d (3,1,1)/(s,1,1)."""

    def __init__(self, cin: int, cout: int, mid: int, stride: int = 1):
        super().__init__(
            nn.Conv3d(cin, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
            _bn(mid), nn.ReLU(inplace=True),
            nn.Conv3d(mid, cout, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False))


class BasicBlock(nn.Module):
    """Two (2+1)D convs with BN, identity or 1x1x1/(s,s,s) projection shortcut.

    Mid-planes: conv1 ``midplanes(cin, planes)``; conv2 the same in torchvision,
    but ``midplanes(planes, planes)`` in IG-65M (differs only when ``cin != planes``).
    """

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Sequential(Conv2Plus1D(cin, planes, midplanes(cin, planes), stride),
                                   _bn(planes), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(Conv2Plus1D(planes, planes, midplanes(planes, planes)), _bn(planes))
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv3d(cin, planes, 1, stride=stride, bias=False), _bn(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv2(self.conv1(x)) + residual)


def maps_to_outputs(maps: Mapping[str, torch.Tensor], grid: int, levels: bool) -> dict:
    """Stage maps ``{name: [B, C, T, H, W]}`` -> feature / grid / levels (see ``extract_outputs``)."""
    last = maps["layer4"]
    out: dict = {"feature": last.mean(dim=(2, 3, 4))}
    if grid:
        out["grid"] = grid_pool(last.mean(dim=2), grid)
    if levels:
        out["levels"] = OrderedDict((k, v.mean(dim=(3, 4))) for k, v in maps.items())
    return out


# --------------------------------------------------------------------------- layouts
def detect_format(state: Mapping[str, object], source: str = "checkpoint") -> str:
    """``ig65m`` (torchvision VideoResNet keys) or ``tsp`` (the same under ``features.``); ``InputError`` otherwise."""
    return detect_layout(state, {"ig65m": ("stem.0.", "layer1.0.conv1.0.0."),
                                 "tsp": (TSP_TRUNK + "stem.0.", TSP_TRUNK + "layer1.0.conv1.0.0.")},
                         what="R(2+1)D-34", source=source)


def convert_state_dict(state: Mapping[str, torch.Tensor], src: str, dst: str) -> dict[str, torch.Tensor]:
    """Rename keys between the ``ig65m`` and ``tsp`` layouts (values shared, order kept).

    ``tsp`` -> ``ig65m`` strips ``features.`` from the trunk, renames a
    two-head file's action head ``fc1.`` to ``fc.`` and leaves out its
    foreground / background head ``fc2.*`` (nothing in the backbone reads
    it); ``ig65m`` -> ``tsp`` adds ``features.`` to the trunk (a one-head TAC
    layout).
    """
    for fmt in (src, dst):
        check_format(fmt, CHECKPOINT_FORMATS, "R(2+1)D-34")
    if src == dst:
        return dict(state)
    if src == "tsp":
        return {_from_tsp(k): v for k, v in state.items() if not k.startswith("fc2.")}
    return {(k if k.startswith("fc.") else TSP_TRUNK + k): v for k, v in state.items()}


def _bn(channels: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels, eps=BN_EPS, momentum=0.1)


def _from_tsp(key: str) -> str:
    if key.startswith(TSP_TRUNK):
        return key[len(TSP_TRUNK):]
    return "fc." + key[len("fc1."):] if key.startswith("fc1.") else key


def _hint(sd: Mapping[str, torch.Tensor], missing: list, unexpected: list) -> str:
    w = sd.get("layer2.0.conv2.0.0.weight")
    if isinstance(w, torch.Tensor) and w.ndim == 5 and w.shape[0] == midplanes(64, 128):
        return ("layer2.0.conv2 has the torchvision mid-plane width 230, not the IG-65M 288: "
                "this is not an IG-65M R(2+1)D-34 checkpoint")
    if any(k.startswith("layer3.5.") for k in missing):
        return "the checkpoint has fewer blocks than R(2+1)D-34 (an R(2+1)D-18?)"
    return ""
