"""Preprocessing recipes: resize, crop and normalise frames the way a backbone expects.

Three I3D recipes (spec ``backbones.md`` section 1.5):

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

Stage-II recipes (one per backbone family; spec sections 2.2, 3.4, 4.3, 4.4):

``tsn_mmaction2`` (mmaction2 ActivityNet feature configs)
    shorter side 256, centre crop 256; 16-frame snippets every 16 frames of
    which RGB reads **1 frame** (the centre, clip offset 8) and flow **5
    frames** centred on it (offsets 6..10, stacked ``x0, y0, ..., x4, y4``);
    RGB ``(x - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]`` on 0-255;
    flow quantised to 8 bits like denseflow JPEGs, then ``(q - 128) / 128``.
``slowfast_kinetics`` (PySlowFast / ActionFormer EPIC-KITCHENS features)
    shorter side 256, centre crop 224; 32-frame clips every 16 frames; RGB
    ``(x/255 - 0.45) / 0.225``.
``r2plus1d_ig65m`` (IG-65M R(2+1)D-34; tadkit's default for it)
    shorter side 128, centre crop 112; 32-frame clips every 32 frames; RGB
    ``(x/255 - [0.43216, 0.394666, 0.37645]) / [0.22803, 0.22145, 0.216989]``.
``r2plus1d_video_features``
    as ``r2plus1d_ig65m`` but every frame resized to exactly 171x128 (WxH,
    aspect not kept) before the 112 crop, as v-iashin/video_features does.
``mfe_menet`` (MENet movement features)
    as ``r2plus1d_ig65m`` with 32-frame snippets every 16 frames (sigma = 16).
``tsp`` (TSP / TAC R(2+1)D-34 releases, Alwassel et al., arXiv 2011.11479)
    16-frame clips every 16 frames at **15 fps**; every frame resized to
    exactly 171x128 (WxH) *without* antialiasing (plain bilinear, as
    ``F.interpolate`` in the TSP code), centre crop 112 at offsets
    ``round((H - 112) / 2)``, ``round((W - 112) / 2)`` (Python rounding: rows
    8, cols 30); RGB normalised as ``r2plus1d_ig65m``. For ``r2plus1d_34``
    and ``mfe``.

Resizing is bilinear with antialiasing (as PIL's bilinear filter; ``tsp``:
without) and the result is rounded to 8 bits, like a decoded JPEG frame. ``Recipe.scaled(size)``
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


#: RGB mean / std of the stage-II recipes (spec sections 2.2, 3.4, 4.3).
TSN_RGB_MEAN = (123.675, 116.28, 103.53)      # on 0-255 values
TSN_RGB_STD = (58.395, 57.12, 57.375)
SLOWFAST_MEAN = (0.45, 0.45, 0.45)            # on x/255
SLOWFAST_STD = (0.225, 0.225, 0.225)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)  # on x/255 (R(2+1)D IG-65M)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


@dataclass(frozen=True)
class Recipe:
    """How frames become backbone input.

    ``resize``: ``"fixed"`` (``resize_to = (W, H)``) or ``"short_side"``
    (``resize_to = side``); ``crop``: output side in pixels; ``crop_mode``:
    ``"center"`` or ``"resize"`` (the resized frame scaled to ``crop x crop``);
    ``flow_encoding``: ``"uint8"``, ``"video_features"`` or ``"linear"``
    (see :func:`tadkit.extract.flow.encode_flow`); ``clip_len``/``stride``:
    defaults in sample-fps frames. RGB normalisation: ``rgb_mean``/``rgb_std``
    ``None`` -> ``2x/255 - 1`` (I3D); otherwise ``(x' - mean) / std`` per
    channel where ``x' = x / (255 / rgb_range)`` (``rgb_range`` 255: raw 0-255
    values, 1: ``x/255``). ``rgb_frames``/``flow_frames``: frames of each
    snippet a stream reads, centred on the snippet (``None``: all of them; see
    :meth:`stream_offsets`). ``fps``: the sample rate the recipe is made for
    (``None``: each video's own; ``--fps`` overrides it); ``antialias``:
    antialiased resizing; ``crop_offset``: the centre crop starts at
    ``(H - crop) // 2`` (``"floor"``) or ``round((H - crop) / 2)`` (``"round"``).
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
    rgb_range: float = 255.0
    rgb_mean: tuple[float, ...] | None = None
    rgb_std: tuple[float, ...] | None = None
    rgb_frames: int | None = None
    flow_frames: int | None = None
    fps: float | None = None
    antialias: bool = True
    crop_offset: str = "floor"

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
        if self.crop_offset == "round":
            return max(0, round((height - self.crop) / 2)), max(0, round((width - self.crop) / 2))
        return max(0, (height - self.crop) // 2), max(0, (width - self.crop) // 2)

    def stream_offsets(self, stream: str, clip_len: int | None = None) -> np.ndarray:
        """Positions within a ``clip_len``-frame snippet (default: the recipe's) that ``stream`` reads.

        All ``clip_len`` frames, or ``n`` consecutive frames centred on the
        snippet: offsets ``clip_len//2 - n//2 ... + n - 1`` (TSN: RGB 1 frame at
        8, flow 5 frames 6..10 of a 16-frame snippet).
        """
        length = int(self.clip_len if clip_len is None else clip_len)
        n = {"rgb": self.rgb_frames, "flow": self.flow_frames}.get(stream)
        if n is None:
            return np.arange(length, dtype=np.int64)
        if n > length:
            raise ConfigError(f"recipe {self.name}: the {stream} stream reads {n} frames per snippet, "
                              f"more than --clip-len {length}")
        return length // 2 - n // 2 + np.arange(n, dtype=np.int64)

    def rgb_normalisation(self) -> str:
        """How RGB values are normalised, in words (recorded in the store provenance)."""
        if self.rgb_mean is None:
            return "2x/255-1"
        x = "x" if self.rgb_range == 255.0 else ("x/255" if self.rgb_range == 1.0 else f"x*{self.rgb_range:g}/255")
        return f"({x} - {list(self.rgb_mean)}) / {list(self.rgb_std or ())}"

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
        """Plain-JSON fields for the store provenance. Stage-II fields left at their
        defaults (I3D's ``2x/255 - 1``, whole clips) are omitted, so I3D stores keep
        the provenance -- and stay resumable -- as written by earlier versions."""
        d = dataclasses.asdict(self)
        if self.rgb_mean is None:
            for key in ("rgb_range", "rgb_mean", "rgb_std"):
                d.pop(key)
        for key, default in (("rgb_frames", None), ("flow_frames", None), ("fps", None),
                             ("antialias", True), ("crop_offset", "floor")):
            if d[key] == default:
                d.pop(key)
        for key in ("resize_to", "rgb_mean", "rgb_std"):
            if isinstance(d.get(key), tuple):
                d[key] = list(d[key])
        return d


RECIPES: dict[str, Recipe] = {
    "i3d_thumos": Recipe("i3d_thumos", "fixed", (340, 256), 224, "center", "uint8", 20.0, 16, 4),
    "i3d_thumos_resize": Recipe("i3d_thumos_resize", "fixed", (340, 256), 224, "resize", "uint8", 20.0, 16, 4),
    "i3d_video_features": Recipe("i3d_video_features", "short_side", 256, 224, "center", "video_features",
                                 20.0, 64, 64),
    "tsn_mmaction2": Recipe("tsn_mmaction2", "short_side", 256, 256, "center", "uint8_centred", 20.0, 16, 16,
                            rgb_range=255.0, rgb_mean=TSN_RGB_MEAN, rgb_std=TSN_RGB_STD,
                            rgb_frames=1, flow_frames=5),
    "slowfast_kinetics": Recipe("slowfast_kinetics", "short_side", 256, 224, "center", "uint8", 20.0, 32, 16,
                                rgb_range=1.0, rgb_mean=SLOWFAST_MEAN, rgb_std=SLOWFAST_STD),
    "r2plus1d_ig65m": Recipe("r2plus1d_ig65m", "short_side", 128, 112, "center", "uint8", 20.0, 32, 32,
                             rgb_range=1.0, rgb_mean=KINETICS_MEAN, rgb_std=KINETICS_STD),
    "r2plus1d_video_features": Recipe("r2plus1d_video_features", "fixed", (171, 128), 112, "center", "uint8",
                                      20.0, 32, 32, rgb_range=1.0, rgb_mean=KINETICS_MEAN, rgb_std=KINETICS_STD),
    "mfe_menet": Recipe("mfe_menet", "short_side", 128, 112, "center", "uint8", 20.0, 32, 16,
                        rgb_range=1.0, rgb_mean=KINETICS_MEAN, rgb_std=KINETICS_STD),
    "tsp": Recipe("tsp", "fixed", (171, 128), 112, "center", "uint8", 20.0, 16, 16, rgb_range=1.0,
                  rgb_mean=KINETICS_MEAN, rgb_std=KINETICS_STD, fps=15.0, antialias=False, crop_offset="round"),
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
    return resize_maps(frames, th, tw, recipe.antialias)


def resize_maps(maps: np.ndarray, height: int, width: int, antialias: bool = True) -> np.ndarray:
    """Bilinear (by default antialiased) resize of ``[N, H, W, C]`` maps; uint8 input is rounded back to uint8.

    Values are resampled, not rescaled (flow vectors keep their magnitude).
    """
    if maps.shape[1:3] == (height, width):
        return maps
    is_u8 = maps.dtype == np.uint8
    t = torch.from_numpy(np.ascontiguousarray(maps)).permute(0, 3, 1, 2)
    t = t.float() if is_u8 else t
    t = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False, antialias=antialias)
    if is_u8:
        t = t.round_().clamp_(0, 255).to(torch.uint8)
    return t.permute(0, 2, 3, 1).contiguous().numpy()


def crop_maps(maps: np.ndarray, recipe: Recipe) -> np.ndarray:
    """``[N, H', W', C]`` resized frames (or flow maps) -> ``[N, crop, crop, C]``.

    Centre crop, or for ``crop_mode="resize"`` a resize to the crop size.
    """
    n, h, w, c = maps.shape
    if recipe.crop_mode == "resize":
        return resize_maps(maps, recipe.crop, recipe.crop, recipe.antialias)
    if h < recipe.crop or w < recipe.crop:
        raise ValueError(f"resized frame {w}x{h} is smaller than the crop {recipe.crop}")
    y, x = recipe.crop_box(h, w)
    return maps[:, y:y + recipe.crop, x:x + recipe.crop]


def rgb_to_tensor(frames: np.ndarray, recipe: Recipe | None = None) -> torch.Tensor:
    """``[N, H, W, 3]`` uint8 RGB -> float32 ``[3, N, H, W]``, normalised as ``recipe`` says.

    Without a recipe (or with ``rgb_mean=None``): ``2x/255 - 1`` in ``[-1, 1]``
    (I3D); otherwise ``(x' - mean) / std`` per channel (see :class:`Recipe`).
    """
    t = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float()
    if recipe is None or recipe.rgb_mean is None:
        return t.mul_(2.0 / 255.0).sub_(1.0)
    if recipe.rgb_range != 255.0:
        t = t.div_(255.0 / recipe.rgb_range)
    mean = torch.tensor(recipe.rgb_mean, dtype=torch.float32).view(3, 1, 1, 1)
    std = torch.tensor(recipe.rgb_std, dtype=torch.float32).view(3, 1, 1, 1)
    return t.sub_(mean).div_(std)


def flow_to_tensor(flow: np.ndarray) -> torch.Tensor:
    """``[N, H, W, 2]`` encoded flow in ``[-1, 1]`` -> float32 ``[2, N, H, W]`` (x then y)."""
    return torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32)).permute(3, 0, 1, 2).contiguous()
