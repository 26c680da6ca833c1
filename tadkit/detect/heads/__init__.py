"""Detection heads: the registry and the interface every head implements.

A head is registered under a name with ``@HEADS.register("name")`` on a
builder ``build(cfg_section, in_dim, num_classes) -> DetectionHead``; the
engine builds ``HEADS.get(cfg.head)(getattr(cfg, cfg.head), in_dim,
num_classes)``, adding ``inputs=InputInfo(...)`` (level names and channels,
streams, grid channels) when the builder has an ``inputs`` parameter. Head modules are imported lazily by :func:`get_head` so
importing the package stays cheap.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

from tadkit.detect.heads.base import DetectionHead, InputInfo, LevelInput, group_parameters, weighted_mean
from tadkit.registry import Registry

HEADS: Registry[Callable[..., DetectionHead]] = Registry("detection head")

#: head name -> module that registers it (imported on first use).
HEAD_MODULES = {"mltpn": "tadkit.detect.heads.mltpn", "talmts": "tadkit.detect.heads.talmts",
                "menet": "tadkit.detect.heads.menet", "bmn": "tadkit.detect.heads.bmn",
                "refine": "tadkit.detect.heads.refine", "sptad": "tadkit.detect.heads.sptad"}


def get_head(name: str) -> Callable[..., DetectionHead]:
    """The builder of head ``name`` (``ConfigError`` listing the names if unknown)."""
    if name not in HEADS and name in HEAD_MODULES:
        importlib.import_module(HEAD_MODULES[name])
    if name not in HEADS:
        for module in HEAD_MODULES.values():
            importlib.import_module(module)
    return HEADS.get(name)


def build_head(name: str, section: Any, in_dim: int, num_classes: int,
               inputs: InputInfo | None = None) -> DetectionHead:
    """Build the registered head ``name`` from its config section (``inputs`` for builders that take it)."""
    builder = get_head(name)
    try:
        takes_inputs = "inputs" in inspect.signature(builder).parameters
    except (TypeError, ValueError):
        takes_inputs = False
    if takes_inputs:
        return builder(section, in_dim, num_classes, inputs=inputs or InputInfo())
    return builder(section, in_dim, num_classes)


__all__ = ["HEADS", "DetectionHead", "InputInfo", "LevelInput", "get_head", "build_head", "group_parameters",
           "weighted_mean"]
