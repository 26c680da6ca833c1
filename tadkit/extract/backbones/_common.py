"""Pieces shared by the backbones (I3D, TSN, SlowFast, R(2+1)D, MFE).

* :func:`load_strict` -- strict state-dict loading with one readable error
  that lists missing, unexpected and mis-shaped keys; ``num_batches_tracked``
  is optional (older checkpoints lack it). Used by every backbone, I3D too.
* :func:`load_checked` -- :func:`load_strict` after sizing the classifier
  from the checkpoint (or dropping it when the checkpoint has none).
* :func:`detect_layout` -- pick a key layout from signature prefixes, or say
  that ``fmt=`` is needed.
* :func:`grid_pool` -- the ``--spatial-grid`` output ``[B, g, g, C]``.

Every backbone model here exposes the same surface:
``extract_features(x) -> [B, D]``, ``extract_outputs(x, grid=0, levels=False)``
(one forward giving the feature, the optional grid and the optional
intermediate levels), ``level_positions(num_frames)``, ``classify(x)``,
``state_dict_as(fmt)`` and ``load_checkpoint_state(state, fmt=, source=, classifier=)``.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tadkit.checkpoints import compare_weights, few
from tadkit.errors import ConfigError, InputError

#: Values of the ``classifier=`` argument of every ``load_checkpoint_state``.
CLASSIFIER_MODES = ("auto", "drop")


def load_checked(model: nn.Module, state: Mapping[str, torch.Tensor], *, what: str, fmt: str,
                 source: str, head_prefix: str, classifier: str = "auto",
                 hint: Callable[[Mapping[str, torch.Tensor], list[str], list[str]], str] | None = None,
                 ) -> None:
    """Load ``state`` (already in the model's native layout) into ``model``.

    ``head_prefix`` names the classifier keys (e.g. ``"fc."``). With
    ``classifier="auto"`` a checkpoint classifier resizes the model's
    (``model.set_num_classes(n)``) and a checkpoint without one removes it
    (``set_num_classes(0)``: features still work, ``classify`` raises).
    ``classifier="drop"`` ignores the checkpoint's classifier keys (e.g. the
    EPIC-KITCHENS two-head SlowFast). ``hint(state, missing, unexpected)`` may
    return one extra sentence for the error. Raises :class:`InputError`
    naming ``source``.
    """
    if classifier not in CLASSIFIER_MODES:
        raise ConfigError(f"classifier must be one of {', '.join(CLASSIFIER_MODES)}, got {classifier!r}")
    sd = dict(state)
    if classifier == "drop":
        sd = {k: v for k, v in sd.items() if not k.startswith(head_prefix)}
    weight = sd.get(head_prefix + "weight")
    if isinstance(weight, torch.Tensor) and weight.ndim == 2:
        model.set_num_classes(int(weight.shape[0]))
    elif not any(k.startswith(head_prefix) for k in sd):
        model.set_num_classes(0)
    load_strict(model, sd, what=what, fmt=fmt, source=source, hint=hint)


def load_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], *, what: str, fmt: str, source: str,
                hint: Callable[[Mapping[str, torch.Tensor], list[str], list[str]], str] | None = None,
                ) -> None:
    """Load ``sd`` (the model's own key names) exactly, or raise one readable error.

    Every key must be present with its shape, except ``num_batches_tracked``
    (older checkpoints lack it; the model's value is kept). The
    :class:`InputError` names ``source`` and lists a few missing, unexpected
    and mis-shaped keys; ``hint(sd, missing, unexpected)`` may add a sentence.
    """
    own = model.state_dict()
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    mismatch = compare_weights(model, sd, optional)
    if mismatch:
        extra = hint(sd, mismatch.missing, mismatch.unexpected) if hint is not None else ""
        article = "an" if what[:1].upper() in "AEIOU" else "a"
        raise InputError(source, f"not {article} {what} checkpoint in the {fmt} layout: " + mismatch.describe()
                         + (f"; {extra}" if extra else ""))
    full = dict(sd)
    for k in optional:
        full.setdefault(k, own[k])
    model.load_state_dict(full, strict=True)


def detect_layout(state: Mapping[str, object], signatures: Mapping[str, Sequence[str]], *,
                  what: str, source: str) -> str:
    """The one layout whose signature prefixes occur in ``state``'s keys.

    ``signatures`` maps a layout name to key prefixes typical of it. Zero or
    several matches raise :class:`InputError` asking for ``fmt=``.
    """
    keys = list(state)
    hits = [fmt for fmt, prefixes in signatures.items()
            if any(k.startswith(p) for k in keys for p in prefixes)]
    if len(hits) == 1:
        return hits[0]
    known = ", ".join(signatures)
    if not hits:
        raise InputError(source, f"not a recognised {what} checkpoint layout (keys start like {few(keys)}); "
                         f"pass fmt= one of: {known}")
    raise InputError(source, f"ambiguous {what} checkpoint layout (looks like {', '.join(hits)}); "
                     f"pass fmt= one of: {known}")


def check_format(fmt: str, formats: Sequence[str], what: str) -> None:
    """``ConfigError`` unless ``fmt`` is one of ``formats``."""
    if fmt not in formats:
        raise ConfigError(f"unknown {what} checkpoint format {fmt!r}; known: {', '.join(formats)}")


def grid_pool(fmap: torch.Tensor, grid: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, g, g, C]`` by adaptive average pooling."""
    if grid < 1:
        raise ConfigError(f"spatial grid must be >= 1, got {grid}")
    return F.adaptive_avg_pool2d(fmap, grid).permute(0, 2, 3, 1).contiguous()


def strided_positions(length: int, stride: int) -> torch.Tensor:
    """Frame positions of a map with ``length`` steps of ``stride`` frames each.

    Step ``j`` summarises frames ``[j*stride, (j+1)*stride)``; its position is
    their centre ``j*stride + (stride-1)/2`` (frames, relative to the clip start).
    """
    return torch.arange(length, dtype=torch.float64) * stride + (stride - 1) / 2


def no_classifier_error(name: str) -> ConfigError:
    return ConfigError(f"{name} has no classifier (the loaded checkpoint had none, or it was dropped); "
                       "class scores are unavailable")
