"""Preprocessing recipes: resize, crop and normalise frames the way a backbone expects.

Two published I3D recipes (spec ``backbones.md`` section 1.5):

``i3d_thumos`` (default; Finspire13 / ActionFormer THUMOS14 features)
    every frame resized to 340x256 (WxH), centre crop 224 (rows 16:240,
    cols 58:282); RGB ``2x/255 - 1``; TV-L1 flow on the 340x256 grey frames,
    clipped to +-20 and quantised to 8 bits like denseflow JPEGs
    (``q = round((f + 20) * 255 / 40)``, then ``2q/255 - 1``); 16-frame clips
    every 4 frames.
``i3d_thumos_resize``
    as above, but the whole 340x256 frame is resized to 224x224 (Finspire13's
    ``resize`` mode) instead of cropped.
``i3d_video_features`` (v-iashin/video_features)
    shorter side resized to 256 (the other ``int(256 * long / short)``),
    centre crop 224 at offset ``(H - 224) // 2``; RGB ``2x/255 - 1``; flow
    clipped to +-20, ``q = round(128 + 255/40 f)`` kept as float, then
    ``2q/255 - 1`` (video_features computes RAFT flow; tadkit uses TV-L1);
    64-frame clips every 64 frames.

Resizing is bilinear with antialiasing (as PIL's bilinear filter) and the
result is rounded to 8 bits, like a decoded JPEG frame. ``Recipe.scaled(size)``
shrinks every size in proportion (crop 224 -> ``size``), for quick runs and
tests; the scaled recipe is recorded under its own description.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tadkit.errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    """How frames become backbone input.

    ``resize``: ``"fixed"`` (``resize_to = (W, H)``) or ``"short_side"``
    (``resize_to = side``); ``crop``: output side in pixels; ``crop_mode``:
    ``"center"`` or ``"resize"`` (the resized frame scaled to ``crop x crop``);
    ``flow_encoding``: ``"uint8"``, ``"video_features"`` or ``"linear"``
    (see :func:`tadkit.extract.flow.encode_flow`); ``clip_len``/``stride``:
    defaults in sample-fps frames.
    """

    name: str
    resize: str
    resize_to: Any
    crop: int
    crop_mode: str = "center"
    flow_encoding: str = "uint8"
    flow_bound: float = 20.0
    clip_len: int = 16
    stride: int = 4

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """``(H, W)`` after the resize step for a ``height x width`` frame."""
        if self.resize == "fixed":
            w, h = self.resize_to
            return int(h), int(w)
        side = int(self.resize_to)
        if height <= width:
            return side, int(side * width / height)
        return int(side * height / width), side

    def crop_box(self, height: int, width: int) -> tuple[int, int]:
        """Top-left ``(y, x)`` of the centre crop in a resized ``height x width`` frame."""
        return max(0, (height - self.crop) // 2), max(0, (width - self.crop) // 2)

    def scaled(self, size: int | None) -> "Recipe":
        """This recipe with crop side ``size`` and the resize target scaled alike."""
        if size is None or size == self.crop:
            return self
        if size < 8:
            raise ConfigError(f"--size must be at least 8 pixels, got {size}")
        k = size / self.crop
        if self.resize == "fixed":
            to: Any = (max(size, round(self.resize_to[0] * k)), max(size, round(self.resize_to[1] * k)))
        else:
            to = max(size, round(self.resize_to * k))
        return dataclasses.replace(self, name=f"{self.name}@{size}", resize_to=to, crop=size)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if isinstance(d["resize_to"], tuple):
            d["resize_to"] = list(d["resize_to"])
        return d


RECIPES: dict[str, Recipe] = {
    "i3d_thumos": Recipe("i3d_thumos", "fixed", (340, 256), 224, "center", "uint8", 20.0, 16, 4),
    "i3d_thumos_resize": Recipe("i3d_thumos_resize", "fixed", (340, 256), 224, "resize", "uint8", 20.0, 16, 4),
    "i3d_video_features": Recipe("i3d_video_features", "short_side", 256, 224, "center", "video_features",
                                 20.0, 64, 64),
}


def get_recipe(name: str) -> Recipe:
    """The recipe ``name`` (``ConfigError`` listing the known ones)."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"unknown preprocessing recipe {name!r}; available: {', '.join(sorted(RECIPES))}") from None


def resize_frames(frames: np.ndarray, recipe: Recipe) -> np.ndarray:
    """``[N, H, W, C]`` frames (or flow maps) -> ``[N, H', W', C]`` after the recipe's resize step."""
    n, h, w, c = frames.shape
    th, tw = recipe.resized_size(h, w)
    return resize_maps(frames, th, tw)


def resize_maps(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear antialiased resize of ``[N, H, W, C]`` maps; uint8 input is rounded back to uint8.

    Values are resampled, not rescaled (flow vectors keep their magnitude).
    """
    if maps.shape[1:3] == (height, width):
        return maps
    is_u8 = maps.dtype == np.uint8
    t = torch.from_numpy(np.ascontiguousarray(maps)).permute(0, 3, 1, 2)
    t = t.float() if is_u8 else t
    t = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    if is_u8:
        t = t.round_().clamp_(0, 255).to(torch.uint8)
    return t.permute(0, 2, 3, 1).contiguous().numpy()


def crop_maps(maps: np.ndarray, recipe: Recipe) -> np.ndarray:
    """``[N, H', W', C]`` resized frames (or flow maps) -> ``[N, crop, crop, C]``.

    Centre crop, or for ``crop_mode="resize"`` a resize to the crop size.
    """
    n, h, w, c = maps.shape
    if recipe.crop_mode == "resize":
        return resize_maps(maps, recipe.crop, recipe.crop)
    if h < recipe.crop or w < recipe.crop:
        raise ValueError(f"resized frame {w}x{h} is smaller than the crop {recipe.crop}")
    y, x = recipe.crop_box(h, w)
    return maps[:, y:y + recipe.crop, x:x + recipe.crop]


def rgb_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``[N, H, W, 3]`` uint8 RGB -> float32 ``[3, N, H, W]`` in ``[-1, 1]`` (``2x/255 - 1``)."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float()
    return t.mul_(2.0 / 255.0).sub_(1.0)


def flow_to_tensor(flow: np.ndarray) -> torch.Tensor:
    """``[N, H, W, 2]`` encoded flow in ``[-1, 1]`` -> float32 ``[2, N, H, W]`` (x then y)."""
    return torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32)).permute(3, 0, 1, 2).contiguous()
