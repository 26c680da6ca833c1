"""PyTorch checkpoints users hand to tadkit: loaded without running code, checked against a model.

Backbone weights (``tadkit extract --weights``) and detection run checkpoints
(``tadkit detect infer --checkpoint``) are read with :func:`read_checkpoint`:
``torch.load(weights_only=True)``, so a file whose pickle would run code is
refused with one clear line. :func:`compare_weights` tells how a state dict
does not fit a model (missing, unexpected, mis-shaped keys).
"""
from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from tadkit.errors import InputError


def read_checkpoint(path: str | os.PathLike) -> Any:
    """A PyTorch checkpoint loaded with ``weights_only=True`` (tensors and plain values only).

    A file whose pickle would import or call code is refused, naming what it
    references, instead of torch's advice to disable the check; a file that
    is not a checkpoint at all says so.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such checkpoint file" if not p.exists() else "is a directory, expected a file")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(exc))
        if found or "global" in str(exc).lower():
            what = f" (it references {found.group(1)})" if found else ""
            raise InputError(p, "refused: loading it would run arbitrary pickle code; only plain tensors and "
                             f"values are accepted{what}") from None
        raise InputError(p, "not a readable PyTorch checkpoint (invalid pickle data)") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(p, f"not a readable PyTorch checkpoint ({first[:200]})") from None


@dataclass
class WeightMismatch:
    """How a state dict does not fit a model; false when it loads strictly."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shape)

    def describe(self) -> str:
        """``3 missing keys (a, b, c); 1 unexpected keys (d)``."""
        parts = [(self.missing, "missing keys"), (self.unexpected, "unexpected keys"),
                 (self.wrong_shape, "shape mismatches")]
        return "; ".join(f"{len(items)} {what} ({few(items)})" for items, what in parts if items)


def compare_weights(model: Any, weights: Mapping[str, Any], optional: Iterable[str] = ()) -> WeightMismatch:
    """Compare the state dict ``weights`` with ``model``'s keys and shapes (keys in ``optional`` may be absent)."""
    own = model.state_dict()
    optional = set(optional)
    return WeightMismatch(
        missing=[k for k in own if k not in weights and k not in optional],
        unexpected=[str(k) for k in weights if k not in own],
        wrong_shape=[f"{k} {list(getattr(weights[k], 'shape', []))} (model: {list(own[k].shape)})"
                     for k in own if k in weights and tuple(getattr(weights[k], "shape", ())) != tuple(own[k].shape)])


def few(items: Sequence[str], n: int = 4) -> str:
    """The first ``n`` items, comma-separated, and how many more there are."""
    items = list(items)
    shown = ", ".join(items[:n])
    return shown + (f", ... {len(items) - n} more" if len(items) > n else "")
