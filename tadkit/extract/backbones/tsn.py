"""TSN two-stream ResNet-50 snippet features (mmaction2 layout).

Paper: "Temporal Segment Networks: Towards Good Practices for Deep Action Recognition"
(arXiv:1608.00859). The backbone is a standard
ResNet-50 v1.5 ("pytorch" style: stride on the 3x3 conv, BN eps 1e-5); the
head is mmaction2's ``TSNHead`` (``fc_cls``: Linear(2048, C)).

* RGB stream ``tsn_r50_rgb``: one frame per snippet (the snippet centre),
  ``[N, 3, H, W]`` normalised with the ImageNet mean/std on 0-255 values.
* Flow stream ``tsn_r50_flow``: 5 consecutive flow fields centred on the
  snippet, stacked as 10 channels ``x0, y0, x1, y1, ..., x4, y4`` and
  normalised with mean 128 / std 128 on 0-255 quantised flow.
* Feature: global average of layer4 -> ``[N, 2048]``; optional class-score
  features ``fc_cls(feature)`` (no softmax; C = 200 for the ActivityNet models)
  via :meth:`TSN.class_scores`.

Both streams also accept a clip ``[N, C, T, H, W]`` as the extractor builds it:
RGB needs ``T == 1``; flow ``[N, 2, 5, H, W]`` (x/y per time step) is stacked
into the 10 channels above.

Key layouts: ``mmaction2`` (``backbone.conv1.conv.weight``,
``backbone.layer1.0.conv1.bn.*``, ``backbone.layer1.0.downsample.conv.weight``,
``cls_head.fc_cls.*``; the model's own) and ``torchvision`` (``conv1.weight``,
``bn1.*``, ``layer1.0.bn1.*``, ``downsample.0/1``, ``fc.*``).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ._common import check_format, detect_layout, grid_pool, load_checked, no_classifier_error

FEATURE_DIM = 2048
CHECKPOINT_FORMATS = ("mmaction2", "torchvision")
FLOW_PAIRS = 5
BN_EPS = 1e-5
#: Normalisation on 0-255 values (mmaction2 ActivityNet feature configs).
RGB_MEAN = (123.675, 116.28, 103.53)
RGB_STD = (58.395, 57.12, 57.375)
FLOW_MEAN = 128.0
FLOW_STD = 128.0
INPUT_RECIPE = {
    "rgb": "1 RGB frame at the snippet centre; shorter side 256, centre crop 224 or 256; "
           "(x - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375] on 0-255",
    "flow": "5 flow fields centred on the snippet (centre-2..centre+2), channels x0,y0,...,x4,y4 "
            "(0-255 quantised, bound 20); shorter side 256, centre crop; (v - 128) / 128",
}
#: Intermediate levels returned by ``extract_outputs(levels=True)``: name -> channels.
LEVELS = OrderedDict([("layer1", 256), ("layer2", 512), ("layer3", 1024), ("layer4", 2048)])
_LAYERS = (3, 4, 6, 3)


# --------------------------------------------------------------------------- builders
def build_tsn_r50_rgb(num_classes: int = 400) -> "TSN":
    """TSN R50 RGB stream: ``[N, 3, H, W]`` -> ``[N, 2048]``."""
    return TSN(modality="rgb", num_classes=num_classes)


def build_tsn_r50_flow(num_classes: int = 400, flow_pairs: int = FLOW_PAIRS) -> "TSN":
    """TSN R50 flow stream: ``[N, 2*flow_pairs, H, W]`` -> ``[N, 2048]``."""
    return TSN(modality="flow", num_classes=num_classes, flow_pairs=flow_pairs)


# --------------------------------------------------------------------------- model
class TSN(nn.Module):
    """One TSN stream: ResNet-50 ``backbone`` + ``cls_head.fc_cls``.

    The module tree mirrors mmaction2, so ``state_dict()`` is the mmaction2
    layout key for key (``backbone.`` / ``cls_head.`` prefixes).
    """

    def __init__(self, modality: str = "rgb", num_classes: int = 400, flow_pairs: int = FLOW_PAIRS):
        super().__init__()
        if modality not in ("rgb", "flow"):
            raise ValueError(f"TSN modality must be 'rgb' or 'flow', got {modality!r}")
        self.modality = modality
        self.flow_pairs = flow_pairs
        self.in_channels = 3 if modality == "rgb" else 2 * flow_pairs
        self.backbone = ResNet50(self.in_channels)
        self.cls_head = TSNHead(num_classes)

    @property
    def num_classes(self) -> int:
        return self.cls_head.num_classes

    # -- inference ----------------------------------------------------------------
    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` (or a clip, see the module docstring) -> ``[N, 2048]``."""
        return self.backbone(self._as_image(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extract_features(x)

    def extract_outputs(self, x: torch.Tensor, grid: int = 0, levels: bool = False) -> dict:
        """One forward giving ``{"feature": [N, 2048]}`` plus, on request,
        ``"grid"``: layer4 pooled to ``[N, g, g, 2048]`` and ``"levels"``:
        ``{layer1..layer4: [N, C_l, 1]}`` (spatial means; one time step, the
        snippet's frame -- see :meth:`level_positions`)."""
        maps = self.backbone.stages(self._as_image(x))
        last = maps["layer4"]
        out: dict = {"feature": last.mean(dim=(2, 3))}
        if grid:
            out["grid"] = grid_pool(last, grid)
        if levels:
            out["levels"] = OrderedDict((k, v.mean(dim=(2, 3))[:, :, None]) for k, v in maps.items())
        return out

    def level_positions(self, num_frames: int = 1) -> dict[str, torch.Tensor]:
        """Frame position of each level's single step: the snippet centre.

        ``num_frames`` is the clip the stream reads (1 for RGB, 5 for flow);
        the position is ``(num_frames - 1) / 2`` relative to its first frame.
        """
        centre = torch.tensor([(num_frames - 1) / 2], dtype=torch.float64)
        return OrderedDict((k, centre.clone()) for k in LEVELS)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``[N, C]`` (``fc_cls`` of the feature, no softmax)."""
        return self.class_scores(self.extract_features(x))

    def class_scores(self, features: torch.Tensor) -> torch.Tensor:
        """``[N, 2048]`` features -> ``[N, C]`` scores (the ``--dump-score`` features)."""
        if self.cls_head.fc_cls is None:
            raise no_classifier_error(f"tsn_r50_{self.modality}")
        return self.cls_head.fc_cls(features)

    # -- configuration / checkpoints ---------------------------------------------------
    def set_num_classes(self, num_classes: int) -> None:
        """Replace the classifier (random init); ``0`` removes it."""
        if num_classes != self.num_classes:
            dev = self.backbone.conv1.conv.weight.device
            self.cls_head = TSNHead(num_classes).to(dev)

    def state_dict_as(self, fmt: str = "mmaction2") -> dict[str, torch.Tensor]:
        """The state dict in layout ``fmt`` (key names and order of that layout)."""
        return convert_state_dict(self.state_dict(), src="mmaction2", dst=fmt)

    def load_checkpoint_state(self, state: Mapping[str, torch.Tensor], fmt: str = "auto",
                              source: str = "checkpoint", classifier: str = "auto") -> str:
        """Load a state dict in layout ``fmt`` (``auto`` detects it); returns the layout.

        The classifier is sized from the checkpoint (200 for ActivityNet, 400
        for Kinetics) or removed when the checkpoint has none (see
        :func:`._common.load_checked`). Raises :class:`InputError` naming ``source``.
        """
        fmt = detect_format(state, source) if fmt == "auto" else fmt
        sd = convert_state_dict(state, src=fmt, dst="mmaction2")
        load_checked(self, sd, what=f"TSN R50 {self.modality}", fmt=fmt, source=source,
                     head_prefix="cls_head.fc_cls.", classifier=classifier, hint=self._hint)
        return fmt

    # -- helpers ----------------------------------------------------------------
    def _as_image(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 5:
            n, c, t, h, w = x.shape
            if self.modality == "rgb" and c == 3 and t == 1:
                x = x[:, :, 0]
            elif self.modality == "flow" and c == 2 and 2 * t == self.in_channels:
                x = x.permute(0, 2, 1, 3, 4).reshape(n, 2 * t, h, w)  # x0, y0, x1, y1, ...
            else:
                want = "[N, 3, 1, H, W]" if self.modality == "rgb" else f"[N, 2, {self.flow_pairs}, H, W]"
                raise ValueError(f"TSN {self.modality} expects a clip {want}, got {tuple(x.shape)}")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"TSN {self.modality} expects [N, {self.in_channels}, H, W], got {tuple(x.shape)}")
        return x

    def _hint(self, sd: Mapping[str, torch.Tensor], missing: list, unexpected: list) -> str:
        w = sd.get("backbone.conv1.conv.weight")
        if isinstance(w, torch.Tensor) and w.ndim == 4 and w.shape[1] != self.in_channels:
            return (f"the checkpoint is for {w.shape[1]}-channel input, tsn_r50_{self.modality} takes "
                    f"{self.in_channels} (rgb and flow weights swapped?)")
        return ""


class TSNHead(nn.Module):
    """mmaction2 ``TSNHead`` at inference: ``fc_cls`` (None when there are no classes)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = int(num_classes)
        self.fc_cls = nn.Linear(FEATURE_DIM, num_classes) if num_classes > 0 else None


class ResNet50(nn.Module):
    """ResNet-50 trunk with mmaction2 names (``conv1.conv``, ``layerX.Y.convK.bn``...)."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.conv1 = ConvBN(in_channels, 64, 7, stride=2, padding=3)
        cin = 64
        for i, (blocks, planes) in enumerate(zip(_LAYERS, (64, 128, 256, 512)), start=1):
            stride = 1 if i == 1 else 2
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck(cin, planes, stride if b == 0 else 1))
                cin = planes * Bottleneck.expansion
            self.add_module(f"layer{i}", nn.Sequential(*layer))

    def stages(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """``[N, C, H, W]`` -> the four stage maps (layer4: ``[N, 2048, H/32, W/32]``)."""
        x = F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)
        out = OrderedDict()
        for name in LEVELS:
            x = getattr(self, name)(x)
            out[name] = x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)["layer4"]


class ConvBN(nn.Module):
    """Conv2d (no bias) + BatchNorm2d, keys ``conv.weight``, ``bn.*`` (mmaction2 ``ConvModule``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride here) -> 1x1 (x4 channels), projection shortcut when needed."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = ConvBN(cin, planes, 1)
        self.conv2 = ConvBN(planes, planes, 3, stride=stride, padding=1)
        self.conv3 = ConvBN(planes, cout, 1)
        self.downsample = ConvBN(cin, cout, 1, stride=stride) if (stride != 1 or cin != cout) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


# --------------------------------------------------------------------------- layouts
def detect_format(state: Mapping[str, object], source: str = "checkpoint") -> str:
    """``mmaction2`` or ``torchvision`` from the key names; ``InputError`` otherwise."""
    return detect_layout(state, {"mmaction2": ("backbone.conv1.conv.", "conv1.conv."),
                                 "torchvision": ("bn1.",)}, what="TSN ResNet-50", source=source)


def convert_state_dict(state: Mapping[str, torch.Tensor], src: str, dst: str) -> dict[str, torch.Tensor]:
    """Rename TSN ResNet-50 keys between the ``mmaction2`` and ``torchvision`` layouts.

    Values are shared, not copied; order is kept. An mmaction2 backbone saved
    without the ``backbone.`` prefix is accepted as ``src="mmaction2"``. Keys
    matching no rule are kept (the loader reports them).
    """
    for fmt in (src, dst):
        check_format(fmt, CHECKPOINT_FORMATS, "TSN")
    items = list(state.items())
    if src == "mmaction2" and items and not any(k.startswith(("backbone.", "cls_head.")) for k, _ in items):
        items = [("backbone." + k, v) for k, v in items]
    if src != dst:
        rename = _mm_to_tv if dst == "torchvision" else _tv_to_mm
        items = [(rename(k), v) for k, v in items]
    return dict(items)


_MM_KEY = re.compile(r"^backbone\.(?:(conv1)|(layer\d+\.\d+)\.(conv\d|downsample))\.(conv|bn)\.(\w+)$")
_TV_KEY = re.compile(r"^(?:(conv1|bn1)|(layer\d+\.\d+)\.(conv\d|bn\d|downsample\.[01]))\.(\w+)$")


def _mm_to_tv(key: str) -> str:
    if key.startswith("cls_head.fc_cls."):
        return "fc." + key[len("cls_head.fc_cls."):]
    m = _MM_KEY.match(key)
    if not m:
        return key
    stem, block, part, layer, leaf = m.groups()
    if stem:
        return f"{'conv1' if layer == 'conv' else 'bn1'}.{leaf}"
    if part == "downsample":
        return f"{block}.downsample.{0 if layer == 'conv' else 1}.{leaf}"
    return f"{block}.{part if layer == 'conv' else 'bn' + part[-1]}.{leaf}"


def _tv_to_mm(key: str) -> str:
    if key.startswith("fc."):
        return "cls_head.fc_cls." + key[len("fc."):]
    m = _TV_KEY.match(key)
    if not m:
        return key
    stem, block, part, leaf = m.groups()
    if stem:
        return f"backbone.conv1.{'conv' if stem == 'conv1' else 'bn'}.{leaf}"
    if part.startswith("downsample"):
        return f"backbone.{block}.downsample.{'conv' if part.endswith('0') else 'bn'}.{leaf}"
    return f"backbone.{block}.conv{part[-1]}.{'conv' if part.startswith('conv') else 'bn'}.{leaf}"
