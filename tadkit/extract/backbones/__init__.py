"""Video backbones: ``build(name)`` -> an eval-ready module with ``extract_features``.

>>> model = build("i3d_rgb")                       # random weights, bn_eps=1e-3
>>> load_checkpoint(model, "rgb_imagenet.pt")       # layout detected from the keys
>>> model.extract_features(clips)                   # [B, 3, 16, 224, 224] -> [B, 1024]

Models (described in ``docs/backbones.md``): ``i3d_rgb``, ``i3d_flow``,
``tsn_r50_rgb``, ``tsn_r50_flow``, ``slowfast_r50``, ``slowfast_r101``,
``r2plus1d_34``, ``mfe``. A *family* is what ``tadkit extract --backbone``
names: it groups the per-stream models of a backbone (the two-stream ``i3d``
feature is ``cat(rgb, flow)`` = 2048, streams in the order given, RGB first by
convention) with its default sampling and preprocessing recipes. Families:
``i3d``, ``tsn``, ``slowfast_r50``, ``slowfast_r101``, ``r2plus1d_34``, ``mfe``. Checkpoints are only ever read from local
files the user names, with ``torch.load(weights_only=True)``: a file that needs
arbitrary pickle code to load is refused.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from tadkit.errors import ConfigError, InputError
from tadkit.checkpoints import read_checkpoint
from tadkit.registry import Registry

from . import i3d as _i3d
from . import mfe as _mfe
from . import r2plus1d as _r2plus1d
from . import slowfast as _slowfast
from . import tsn as _tsn

#: name -> builder returning an ``nn.Module`` with ``extract_features``.
BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone")


@dataclass(frozen=True)
class Family:
    """A (possibly multi-stream) backbone as the extractor sees it.

    ``models`` maps a stream (``rgb``/``flow``) to its registered model name;
    ``stream_dim`` is each stream's feature size; ``clip_len``/``stride`` are
    frames at the sample fps (those of the default recipe); ``recipes`` names
    the preprocessing recipes (:mod:`tadkit.extract.transforms`), the first
    being the default. ``input_recipe`` describes the input in words;
    ``bn_eps``: the BatchNorm eps can be set (I3D); ``clip_multiple``: the
    clip length must be a multiple of it (SlowFast: alpha = 4).
    """

    name: str
    models: Mapping[str, str]
    stream_dim: int
    clip_len: int
    stride: int
    recipes: tuple[str, ...]
    checkpoint_formats: tuple[str, ...] = ()
    notes: str = ""
    input_recipe: Mapping[str, str] = field(default_factory=dict)
    bn_eps: bool = False
    clip_multiple: int = 1

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self.models)


FAMILIES: Registry[Family] = Registry("backbone family")


def build(name: str, **kw: Any) -> nn.Module:
    """Model ``name`` with random weights, in eval mode; ``kw`` go to its builder."""
    model = BACKBONES.get(name)(**kw)
    return model.eval()


def family(name: str) -> Family:
    """The :class:`Family` ``name`` (``ConfigError`` listing the known ones)."""
    return FAMILIES.get(name)


def load_checkpoint(model: nn.Module, path: str | os.PathLike, fmt: str = "auto", **kw: Any) -> str:
    """Load the local checkpoint ``path`` into ``model``; returns the detected layout.

    ``fmt`` names the key layout (for I3D ``piergiaj`` or ``hassony2``;
    ``auto`` detects it). Extra ``kw`` go to the model's loader (I3D:
    ``bn_eps``). Missing, unexpected or mis-shaped keys raise
    :class:`InputError` listing a few of them.
    """
    loader = getattr(model, "load_checkpoint_state", None)
    if loader is None:
        raise ConfigError(f"{type(model).__name__} cannot load checkpoints")
    return loader(read_state_dict(path), fmt=fmt, source=str(path), **kw)


def save_checkpoint(model: nn.Module, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write ``model``'s weights as a plain state dict in layout ``fmt``.

    ``None`` writes the model's own layout (I3D ``piergiaj``, TSN
    ``mmaction2``, SlowFast ``pyslowfast``, R(2+1)D / MFE ``ig65m``).
    """
    path = Path(path)
    torch.save(model.state_dict_as() if fmt is None else model.state_dict_as(fmt), path)
    return path


def families() -> list[Family]:
    """Every registered family, sorted by name (``--list-backbones``)."""
    return [FAMILIES.get(name) for name in FAMILIES.names()]


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A plain ``{key: tensor}`` state dict from a local checkpoint file.

    Accepts the bare dict or the usual wrappers (``state_dict``,
    ``model_state``, ``model``) and strips a DataParallel ``module.`` prefix.
    Pickles that need code execution (``weights_only=False``) are refused.
    """
    path = Path(path)
    obj = read_checkpoint(path)
    for _ in range(3):
        if isinstance(obj, Mapping):
            inner = [obj[k] for k in ("state_dict", "model_state", "model") if isinstance(obj.get(k), Mapping)]
            if inner and not any(isinstance(v, torch.Tensor) for v in obj.values()):
                obj = inner[0]
                continue
        break
    if not isinstance(obj, Mapping) or not obj:
        raise InputError(path, "the checkpoint holds no state dict")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise InputError(path, "the checkpoint holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (checkpoints are recorded by name + hash)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- registrations
@BACKBONES.register("i3d_rgb")
def i3d_rgb(bn_eps: float = _i3d.TF_BN_EPS, num_classes: int = 400) -> nn.Module:
    """I3D RGB stream: ``[B, 3, T, H, W]`` in [-1, 1] -> ``[B, 1024]``."""
    return _i3d.InceptionI3d(in_channels=3, num_classes=num_classes, bn_eps=bn_eps)


@BACKBONES.register("i3d_flow")
def i3d_flow(bn_eps: float = _i3d.TF_BN_EPS, num_classes: int = 400) -> nn.Module:
    """I3D flow stream: ``[B, 2, T, H, W]`` (x, y flow in [-1, 1]) -> ``[B, 1024]``."""
    return _i3d.InceptionI3d(in_channels=2, num_classes=num_classes, bn_eps=bn_eps)


FAMILIES.register("i3d")(Family(
    name="i3d",
    models={"rgb": "i3d_rgb", "flow": "i3d_flow"},
    stream_dim=_i3d.FEATURE_DIM,
    clip_len=16,
    stride=4,
    recipes=("i3d_thumos", "i3d_video_features", "i3d_thumos_resize"),
    checkpoint_formats=_i3d.CHECKPOINT_FORMATS,
    notes="THUMOS14 / ActionFormer recipe by default: 16-frame clips every 4 frames",
    input_recipe={"rgb": "RGB 2x/255-1; 340x256 frames, centre crop 224; 16-frame clips",
                  "flow": "TV-L1 (x, y) clipped to +-20, 8-bit quantised, 2q/255-1; 16-frame clips"},
    bn_eps=True,
))


# Stage-II models (builders live in their modules).
BACKBONES.register("tsn_r50_rgb")(_tsn.build_tsn_r50_rgb)
BACKBONES.register("tsn_r50_flow")(_tsn.build_tsn_r50_flow)
BACKBONES.register("slowfast_r50")(_slowfast.build_slowfast_r50)
BACKBONES.register("slowfast_r101")(_slowfast.build_slowfast_r101)
BACKBONES.register("r2plus1d_34")(_r2plus1d.build_r2plus1d_34)
BACKBONES.register("mfe")(_mfe.build_mfe)

FAMILIES.register("tsn")(Family(
    name="tsn",
    models={"rgb": "tsn_r50_rgb", "flow": "tsn_r50_flow"},
    stream_dim=_tsn.FEATURE_DIM,
    clip_len=16,
    stride=16,
    recipes=("tsn_mmaction2",),
    checkpoint_formats=_tsn.CHECKPOINT_FORMATS,
    notes="mmaction2 ActivityNet features: snippet centres every 16 frames (8, 24, ...)",
    input_recipe=dict(_tsn.INPUT_RECIPE),
))
for _depth in (50, 101):
    FAMILIES.register(f"slowfast_r{_depth}")(Family(
        name=f"slowfast_r{_depth}",
        models={"rgb": f"slowfast_r{_depth}"},
        stream_dim=_slowfast.FEATURE_DIM,
        clip_len=32,
        stride=16,
        recipes=("slowfast_kinetics",),
        checkpoint_formats=_slowfast.CHECKPOINT_FORMATS,
        notes="8x8: 32 fast frames, 8 slow; ActionFormer EPIC-KITCHENS / Ego4D: 32 frames every 16",
        input_recipe={"rgb": _slowfast.INPUT_RECIPE},
        clip_multiple=_slowfast.ALPHA,
    ))
del _depth
FAMILIES.register("r2plus1d_34")(Family(
    name="r2plus1d_34",
    models={"rgb": "r2plus1d_34"},
    stream_dim=_r2plus1d.FEATURE_DIM,
    clip_len=32,
    stride=32,
    recipes=("r2plus1d_ig65m", "r2plus1d_video_features", "tsp"),
    checkpoint_formats=_r2plus1d.CHECKPOINT_FORMATS,
    notes="IG-65M: non-overlapping 32-frame clips (8-frame checkpoints: --clip-len 8 --stride 8)",
    input_recipe={"rgb": _r2plus1d.INPUT_RECIPE},
))
FAMILIES.register("mfe")(Family(
    name="mfe",
    models={"rgb": "mfe"},
    stream_dim=_mfe.FEATURE_DIM,
    clip_len=32,
    stride=16,
    recipes=("mfe_menet", "r2plus1d_ig65m", "tsp"),
    checkpoint_formats=_r2plus1d.CHECKPOINT_FORMATS,
    notes="MENet: cat(F(clip) - F(middle frame repeated), F(clip)); snippets every 16 frames",
    input_recipe={"rgb": _r2plus1d.INPUT_RECIPE},
))


__all__ = ["BACKBONES", "FAMILIES", "Family", "build", "family", "families", "load_checkpoint",
           "save_checkpoint", "read_state_dict", "file_sha256"]
