"""The data side of the engine: stores -> source -> datasets -> batches -> head inputs.

:func:`make_source` turns a run's ``data`` section and its feature stores into
a :class:`~tadkit.data.sources.FeatureSource` (streams, channels, levels,
normalisation); :func:`make_dataset` builds the training or inference dataset
a head needs (spatial grids, levels, a chained run's proposals);
:func:`forward` calls the head with exactly the inputs it declares in
``needs``. Unreadable samples never stop a loop: :class:`Guarded` turns them
into ``(batch or None, {video: reason})`` pairs.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from tadkit.data.features import FeatureStore
from tadkit.data.sources import FeatureSource, Normalization
from tadkit.detect.config import DetectConfig
from tadkit.detect.heads import DetectionHead, InputInfo
from tadkit.detect.heads.base import INPUTS
from tadkit.errors import ConfigError, InputError, ProvenanceError, TadkitError

#: How to go on when a run's features differ from the given ones (the end of the ProvenanceError)
PROVENANCE_HINT = "extract them with the training settings, or pass --allow-provenance-mismatch to use them anyway"


def open_stores(paths: Sequence[str | os.PathLike] | str | os.PathLike,
                expect: Sequence[Mapping[str, Any]] | None = None, *,
                allow_mismatch: bool = False) -> list[FeatureStore]:
    """Open every store; with ``expect`` (recorded provenances) refuse features made differently
    (see ``Provenance.mismatches``), or only warn with ``allow_mismatch``."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ConfigError("no feature store given (--features)")
    if expect is not None and len(expect) != len(paths):
        raise ProvenanceError(f"the run reads {len(expect)} feature store(s) but {len(paths)} were given "
                              "(repeat --features once per store, in the training order)")
    from tadkit.data.features import Provenance

    return [FeatureStore.open(p, expect=None if expect is None else Provenance.from_dict(e),
                              allow_mismatch=allow_mismatch, hint=PROVENANCE_HINT)
            for p, e in zip(paths, expect or [None] * len(paths))]


def make_source(cfg: DetectConfig, stores: Sequence[FeatureStore],
                normalization: Normalization | None = None) -> FeatureSource:
    """The :class:`FeatureSource` of ``cfg.data`` (streams, channels, levels) over ``stores``.

    With ``data.optional_levels``, stores without any stored level give a source without levels.
    """
    d = cfg.data
    levels = d.levels if not d.optional_levels or any(_has_levels(s) for s in stores) else []
    return FeatureSource(stores, streams=d.streams, channels=d.channels, levels=levels,
                         normalization=normalization)


def _has_levels(store: FeatureStore) -> bool:
    """Whether the store holds backbone levels (its provenance lists them; no video file is read)."""
    return bool(store.provenance.extras.get("levels"))


def input_info(source: FeatureSource, video_id: str | None = None) -> InputInfo:
    """What a head builder may want to know about its inputs (read from ``video_id``'s files,
    default the first video whose files pass their checks)."""
    vid = video_id or source.first_readable()
    grid = source.store.meta(vid)["shapes"].get("spatial_grid")
    return InputInfo(level_names=tuple(source.level_names), level_dims=tuple(source.level_dims(vid)),
                     streams=tuple(source.streams or source.provenance.streams),
                     grid_dim=int(grid[-1]) if grid else 0)


def make_dataset(cfg: DetectConfig, source: FeatureSource, annotations: Any, training: bool,
                 head: DetectionHead, proposals: Mapping[str, np.ndarray] | None = None,
                 videos: Sequence[str] | None = None) -> Any:
    """Training or inference dataset of ``cfg.data`` with the inputs ``head`` needs."""
    from tadkit.data.datasets import make_dataset as build

    d = cfg.data
    needs = head.needs
    if not needs <= INPUTS:
        raise ValueError(f"head {cfg.head!r} declares unknown inputs {sorted(needs - INPUTS)} (known: {sorted(INPUTS)})")
    if "proposals" in needs and proposals is None:
        raise ConfigError(f"head {cfg.head!r} reads another run's proposals: train it with --from-run RUN")
    if d.mode == "window":
        kwargs = dict(window=d.length, overlap=d.train_overlap if training else d.infer_overlap,
                      stride=d.train_stride if training else d.infer_stride,
                      min_ioi=d.min_ioi, drop_empty=d.drop_empty and training)
    elif d.mode == "resize":
        kwargs = dict(length=d.length)
    else:
        kwargs = dict(max_length=d.max_length if training else None, min_ioi=d.min_ioi)
    return build(d.mode, source, annotations, None, warn=False, grid="grid" in needs,
                 levels="levels" in needs, proposals=proposals if "proposals" in needs else None,
                 videos=videos, **kwargs)


def collate_fn(cfg: DetectConfig, head: DetectionHead) -> "GuardedCollate":
    from tadkit.data.datasets import PadCollate

    return GuardedCollate(PadCollate(stride=max(1, int(getattr(head, "stride", 1))),
                                     pad_to=cfg.data.length if cfg.data.mode == "window" else None))


def forward(model: torch.nn.Module, head: DetectionHead, b: Any) -> dict[str, torch.Tensor]:
    """``model`` (the head, or its DDP wrapper) on a batch, with the inputs ``head.needs``."""
    kwargs: dict[str, Any] = {}
    for name in head.needs:
        if name == "grid":
            kwargs["grid"] = b.grid
        elif name == "levels":
            kwargs["levels"] = b.levels if b.levels is not None else []
        elif name == "proposals":
            kwargs["proposals"] = b.proposals
    return model(b.features, b.mask, **kwargs)


def targets(b: Any) -> list[dict[str, torch.Tensor]]:
    """The per-sample ``{"segments", "labels"}`` of a batch (grid units)."""
    return [{"segments": s, "labels": lab} for s, lab in zip(b.segments, b.labels)]


def fit_normalization(cfg: DetectConfig, source: FeatureSource, video_ids: Sequence[str]) -> Normalization | None:
    """Statistics of ``video_ids`` when ``data.normalize`` (levels included when configured)."""
    if not cfg.data.normalize:
        return None
    return Normalization.fit(source, video_ids)


# --------------------------------------------------------------------------- unreadable samples
class Guarded(torch.utils.data.Dataset):
    """A dataset whose unreadable items become :class:`Failed` records instead of exceptions."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except (TadkitError, OSError, KeyError, ValueError) as exc:
            return Failed(video_at(self.dataset, index), " ".join(str(exc).split()))


@dataclasses.dataclass(frozen=True)
class Failed:
    video_id: str
    reason: str


@dataclasses.dataclass(frozen=True)
class GuardedCollate:
    """``(batch of the good samples or None, {video: reason} of the failed ones)``."""

    inner: Any

    def __call__(self, items: Sequence[Any]) -> tuple[Any, dict[str, str]]:
        good = [x for x in items if not isinstance(x, Failed)]
        bad = {x.video_id: x.reason for x in items if isinstance(x, Failed)}
        return (self.inner(good) if good else None), bad


def video_at(dataset: Any, index: int) -> str:
    windows = getattr(dataset, "windows", None)
    if windows is not None:
        return str(windows[index][0])
    videos = getattr(dataset, "video_ids", None)
    return str(videos[index]) if videos is not None else f"item {index}"


def check_not_empty(dataset: Any, what: str, where: Any) -> None:
    """One-line error instead of a DataLoader failure on an empty dataset."""
    if len(dataset) == 0:
        hint = " (every window was dropped as empty: set data.drop_empty=false or check the annotations)" \
            if getattr(dataset, "drop_empty", False) else ""
        raise InputError(where, f"no {what} samples{hint}")
