"""The compute device of a run, one rule for every stage (``--device`` / ``train.device``)."""
from __future__ import annotations

import torch

from tadkit.errors import ConfigError


def resolve_device(name: str | None) -> torch.device:
    """``None`` / ``auto`` -> CUDA when available, else the CPU; ``cpu``, ``cuda`` or ``cuda:N``.

    A CUDA request on a machine without CUDA, an unparsable name and other device types are
    :class:`~tadkit.errors.ConfigError`.
    """
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    return dev
