"""How a feature store's features were made, and when two stores' features are interchangeable.

A :class:`Provenance` is written into every store's master file and copied into
every video file. Comparisons between provenances (joining a store, reading a
video file, ``detect infer`` / ``train --resume`` against the training
features) all use :meth:`Provenance.mismatches`, which compares the fields in
:data:`FEATURE_FIELDS`: everything that changes the features. Inside them,

* leaves matching :data:`DESCRIPTIVE_LEAVES` only describe (a checkpoint's file
  name, prose, a path) and are never compared;
* the optional outputs in :data:`OPTIONAL_OUTPUTS` (spatial grid, levels) are
  compared only when both sides have them: extra arrays beside the features do
  not change the features.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from tadkit import __version__

FORMAT_VERSION = 1

#: Provenance fields that change the features: two stores whose features are interchangeable agree on them.
FEATURE_FIELDS = ("backbone", "streams", "feature_dim", "fps", "clip_len", "stride", "weights", "preprocessing",
                  "extras")
#: Dotted leaves (``fnmatch`` patterns) inside :data:`FEATURE_FIELDS` that only describe and are not compared.
DESCRIPTIVE_LEAVES = ("weights.*.file", "preprocessing.flow.alignment", "extras.video_id", "extras.times",
                      "extras.feature_layout", "extras.annotations", "extras.*.what", "extras.*.layout",
                      "extras.*.times", "extras.*.source")
#: Optional outputs: compared only when both provenances have them.
OPTIONAL_OUTPUTS = ("extras.spatial_grid", "extras.levels")


@dataclass(frozen=True)
class Provenance:
    """How a store's features were made. Shared by every video in the store.

    ``fps`` is the sample fps the extractor resampled to, or ``None`` when each
    video kept its own (the per-video fps is always stored with the video).
    ``weights`` maps a stream to ``{"file": name, "sha256": hex}``, or
    ``{"file": None, "sha256": "random"}`` for randomly initialised weights.
    """

    backbone: str
    streams: tuple[str, ...]
    feature_dim: int
    clip_len: int
    stride: int
    fps: float | None = None
    weights: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)
    tadkit_version: str = __version__
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["streams"] = list(self.streams)
        return json.loads(json.dumps(d))  # plain JSON types only

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Provenance":
        """Inverse of :meth:`to_dict`; ``ValueError`` for unknown fields or wrong types."""
        if not isinstance(d, Mapping):
            raise ValueError(f"provenance must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown provenance fields: {sorted(unknown)}")
        d = dict(d)
        d["streams"] = tuple(d.get("streams", ()))
        try:
            prov = cls(**d)
        except TypeError as exc:  # a required field is missing
            raise ValueError(str(exc)) from None
        if not isinstance(prov.feature_dim, int) or isinstance(prov.feature_dim, bool) or prov.feature_dim < 1:
            raise ValueError(f"feature_dim must be a positive integer, got {prov.feature_dim!r}")
        return prov

    def mismatches(self, expected: "Provenance | Mapping[str, Any]",
                   keys: tuple[str, ...] | None = None) -> list[str]:
        """Human-readable differences ``"key: features have A, expected B"``.

        Compares ``keys`` (default: :data:`FEATURE_FIELDS` for a
        :class:`Provenance`, every given key for a mapping), nested mappings
        leaf by leaf, except the leaves that only describe (see the module docstring).
        """
        have = self.to_dict()
        want = expected.to_dict() if isinstance(expected, Provenance) else dict(expected)
        if keys is None:
            keys = FEATURE_FIELDS if isinstance(expected, Provenance) else tuple(want)
        out = []
        for key in keys:
            if key not in have:
                raise ValueError(f"unknown provenance field {key!r}")
            out.extend(_differences(key, have[key], want.get(key)))
        return out


def _differences(key: str, a: Any, b: Any) -> list[str]:
    """``key: features have A, expected B`` lines; nested mappings name the leaf keys."""
    if any(fnmatch.fnmatchcase(key, pat) for pat in DESCRIPTIVE_LEAVES):
        return []
    if key in OPTIONAL_OUTPUTS and (a is None or b is None):
        return []
    if isinstance(b, tuple):
        b = list(b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out.extend(_differences(f"{key}.{k}", a.get(k), b.get(k)))
        return out
    return [] if _same(a, b) else [f"{key}: features have {a!r}, expected {b!r}"]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, float) or isinstance(b, float):
        try:
            return a is not None and b is not None and abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))
        except (TypeError, ValueError):
            return False
    return a == b
