"""Generated data with known ground truth: snippet features and small videos.

Synthetic features (:func:`synth_features`)
    Given any :class:`~tadkit.data.annotations.Annotations` (e.g. the real
    THUMOS14 timeline), write a feature store whose snippets follow that
    ground truth. Each snippet vector (``C`` channels, per-channel noise std
    about 1) is the sum of

    * a **class signal**: inside an instance of class ``k``, a class prototype
      ``P[k]`` plus a drift ``(progress - 0.5) * Q[k]`` along the instance,
      weighted by a soft window ``sigmoid((t-s)/tau) * sigmoid((e-t)/tau)``
      (``tau`` a fraction of the instance length: soft onsets and offsets),
      with a random amplitude per instance;
    * **boundary cues**: class-agnostic onset / offset bumps at ``s`` and ``e``;
    * **scene context**: a per-video vector shared by all snippets, partly
      pointing at the classes the video contains (as a pool hints at diving)
      and drifting slowly;
    * **distractors**: random intervals (about ``distractors_per_minute``,
      1-8 s long, anywhere in the video) carrying a weakened prototype of a
      random class mixed with a distractor pattern;
    * **temporally correlated noise**: AR(1) noise along time.

    Learnable, not trivial: with the defaults a per-snippet linear classifier
    trained on the THUMOS14 validation timeline labels about 62 % of the test
    foreground snippets and 95 % of the background snippets correctly.
    Generation is deterministic: prototypes come from ``seed`` and each
    video's randomness from ``(seed, video id)``, so a video's features do
    not depend on which other videos are generated.

    **Two streams** (``streams=("rgb", "flow")``): each stream has
    ``feature_dim`` channels (stored concatenated, ``extras["stream_dims"]``),
    its own prototypes and its own noise, over the same instances,
    amplitudes and distractors. Their evidence is partly complementary, as
    appearance and motion are: class ``k`` is seen with gain ``g[k]`` in
    ``rgb`` and ``1.6 − g[k]`` in ``flow`` (``g`` uniform in ``[0.4, 1.2]``), and
    ``rgb`` carries more scene context (×1) and less boundary / progress
    evidence (×0.5) while ``flow`` carries little context (×0.3) and more
    boundary / progress evidence (×1.5). Other stream names get gain 1.

    **Levels** (``levels=(2, 1, 0.5)``): for each stream, a backbone-like
    level ``<stream>/x<d>`` with ``d`` steps per snippet (``feature_dim``
    channels), rendered from the same instances at the level's step times
    ``t_0 − s/2 + (j + ½)·s/d`` (``s`` the snippet step, ``j <
    ceil(T·d)``): a level of density 1 sits on the snippet centres, density 2
    splits each snippet cell in two, density ½ pairs snippets.

Synthetic videos (:func:`synth_videos`)
    Short mp4 files (MPEG-4 Part 2 by default, or H.264, via PyAV) of a
    softly textured, grainy background with one bright disk whose motion
    during an action instance defines the class (:data:`MOTION_PATTERNS`:
    translation, oscillation, circling ...); outside instances it idles or
    walks back home after a move, and a dark distractor square drifts at
    random. Made for what a backbone with *random* weights keeps (the demo's
    case): the class is in the motion (TV-L1 flow follows it: constant
    brightness, speeds bounded by :func:`motion_cycles`), and the look varies
    little from video to video (random RGB features mostly encode the look).
    The ground truth is written as official ActivityNet JSON with
    ``training`` and ``validation`` subsets. The default ``mpeg4`` encoder
    gives identical bytes for a seed; ``libx264`` output may vary from run to
    run (the frames given to it and the ground truth do not).

All time conversions go through :mod:`tadkit.timeline`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import uuid
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from scipy.signal import lfilter

from tadkit.data.annotations import Annotations, load_annotations
from tadkit.data.features import FeatureStore, Provenance, VideoFeatures
from tadkit.errors import InputError
from tadkit.timeline import frame_to_seconds, num_sampled_frames, snippet_centers

SYNTH_VERSION = 1


# --------------------------------------------------------------------------- features
@dataclass(frozen=True)
class SynthFeatureConfig:
    """Settings of :func:`synth_features` (amplitudes relative to noise std 1).

    ``fps``: the sample fps of every video; ``None`` uses each video's own
    fps from the annotations (``default_fps`` when unknown). ``clip_len`` and
    ``stride`` are in frames at that fps.
    """

    feature_dim: int = 32
    clip_len: int = 16
    stride: int = 8
    fps: float | None = None
    default_fps: float = 30.0
    signal: float = 0.8
    progress: float = 0.4
    boundary: float = 0.5
    onset: float = 0.15
    context: float = 0.6
    context_hint: float = 0.5
    distractors_per_minute: float = 3.0
    distractor: float = 0.6
    noise_rho: float = 0.7
    seed: int = 0
    streams: tuple[str, ...] = ()
    levels: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "streams", tuple(self.streams))
        object.__setattr__(self, "levels", tuple(float(d) for d in self.levels))
        if self.feature_dim < 1 or self.clip_len < 1 or self.stride < 1:
            raise ValueError("feature_dim, clip_len and stride must be positive")
        if len(set(self.streams)) != len(self.streams) or any(not s or "/" in s for s in self.streams):
            raise ValueError(f"streams must be distinct names without '/', got {list(self.streams)}")
        if any(not d > 0 for d in self.levels) or len(set(self.levels)) != len(self.levels):
            raise ValueError(f"levels must be distinct positive steps per snippet, got {list(self.levels)}")
        if not 0.0 <= self.noise_rho < 1.0:
            raise ValueError(f"noise_rho must be in [0, 1), got {self.noise_rho}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")


@dataclass
class SynthReport:
    """What :func:`synth_features` did: videos written, skipped (already there) and failed."""

    store: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def synth_features(annotations: Annotations, out: str | Path, config: SynthFeatureConfig | None = None,
                   *, video_ids: Iterable[str] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> SynthReport:
    """Write synthetic features for the videos of ``annotations`` into the store ``out``.

    Videos already in the store are skipped (reruns resume); a video that
    cannot be generated is recorded in the store's failures and the report,
    and the run goes on. ``video_ids`` restricts the videos; ``progress`` is
    called as ``progress(done, total)``.
    """
    cfg = config or SynthFeatureConfig()
    ids = annotations.video_ids() if video_ids is None else list(video_ids)
    out = Path(out)
    if out.name == "store.h5":
        out = out.parent
    report = SynthReport(store=out)
    protos = _Prototypes.make(annotations.num_classes, cfg)
    with FeatureStore.create(out, synthetic_provenance(annotations, cfg)) as writer:
        for n, vid in enumerate(ids, 1):
            if writer.has(vid):
                report.skipped.append(vid)
            else:
                try:
                    writer.write(synth_video_features(annotations, vid, cfg, protos))
                    report.written.append(vid)
                except (ValueError, KeyError) as exc:
                    writer.record_failure(vid, str(exc))
                    report.failed[vid] = str(exc)
            if progress is not None:
                progress(n, len(ids))
    return report


def synthetic_provenance(annotations: Annotations, cfg: SynthFeatureConfig) -> Provenance:
    """The provenance :func:`synth_features` writes (backbone ``"synthetic"``)."""
    streams = cfg.streams or ("synthetic",)
    extras: dict[str, Any] = {"annotations": annotations.source, "classes": list(annotations.classes)}
    if cfg.streams:
        extras["stream_dims"] = {s: cfg.feature_dim for s in streams}
        extras["feature_layout"] = "cat(" + ", ".join(streams) + ")"
    if cfg.levels:
        extras["levels"] = {"names": [f"{s}/{_level_name(d)}" for s in streams for d in cfg.levels],
                            "steps_per_snippet": {_level_name(d): d for d in cfg.levels}}
    config = dataclasses.asdict(cfg)
    if not cfg.streams and not cfg.levels:  # stores written before these options keep their provenance
        del config["streams"], config["levels"]
    return Provenance(
        backbone="synthetic", streams=streams, feature_dim=cfg.feature_dim * len(streams),
        clip_len=cfg.clip_len, stride=cfg.stride, fps=cfg.fps,
        weights={s: {"file": None, "sha256": "random"} for s in streams},
        preprocessing={"generator": "tadkit.data.synthetic.synth_features",
                       "generator_version": SYNTH_VERSION, "config": config},
        extras=extras,
    )


def synth_video_features(annotations: Annotations, video_id: str, cfg: SynthFeatureConfig,
                         protos: "_Prototypes | None" = None) -> VideoFeatures:
    """Synthetic ``[T, C]`` features of one annotated video (see the module docstring).

    The duration comes from the annotations, or, when unknown, from the last
    instance end plus 5 s.
    """
    protos = protos or _Prototypes.make(annotations.num_classes, cfg)
    segs, labels = annotations.segments_of(video_id)
    duration = annotations.duration_of(video_id)
    if math.isnan(duration):
        if video_id not in annotations.videos.index:
            raise KeyError(f"video {video_id!r} is not in the annotations")
        duration = float(segs[:, 1].max()) + 5.0 if len(segs) else 60.0
    fps = cfg.fps
    if fps is None:
        known = float(annotations.videos.at[video_id, "fps"])
        fps = cfg.default_fps if math.isnan(known) else known
    num_frames = num_sampled_frames(duration, fps)
    t = snippet_centers(num_frames, cfg.clip_len, cfg.stride, fps)
    step = float(t[1] - t[0]) if len(t) > 1 else duration
    key = [cfg.seed, zlib.crc32(video_id.encode("utf-8"))]
    if not cfg.streams and not cfg.levels:
        feats = _render(t, step, duration, segs, labels, protos, cfg, np.random.default_rng(key))
        return VideoFeatures(video_id, feats.astype(np.float32), t, fps, cfg.clip_len, cfg.stride,
                             num_frames, duration)
    parts, levels = [], {}
    for stream in cfg.streams or ("synthetic",):
        s_protos, s_cfg = _stream_view(protos, cfg, stream, annotations.num_classes)
        code = zlib.crc32(stream.encode("utf-8"))
        # the same instances, amplitudes and distractors (event rng) in every stream and level
        parts.append(_render(t, step, duration, segs, labels, s_protos, s_cfg, np.random.default_rng(key),
                             np.random.default_rng(key + [code])))
        for d in cfg.levels:
            n = max(1, int(math.ceil(len(t) * d - 1e-9)))
            lt = t[0] - step / 2 + (np.arange(n) + 0.5) * step / d
            name = _level_name(d)
            lf = _render(lt, step / d, duration, segs, labels, s_protos, s_cfg, np.random.default_rng(key),
                         np.random.default_rng(key + [code, zlib.crc32(name.encode())]))
            levels[f"{stream}/{name}"] = (lf.astype(np.float32), lt)
    return VideoFeatures(video_id, np.concatenate(parts, axis=1).astype(np.float32), t, fps, cfg.clip_len,
                         cfg.stride, num_frames, duration, levels=levels)


@dataclass(frozen=True)
class _Prototypes:
    """Fixed random directions shared by all videos of one seed."""

    cls: np.ndarray          # [K, C] class prototypes
    drift: np.ndarray        # [K, C] within-instance drift
    onset: np.ndarray        # [C]
    offset: np.ndarray       # [C]
    distract: np.ndarray     # [D, C] distractor patterns

    @classmethod
    def make(cls, num_classes: int, cfg: SynthFeatureConfig) -> "_Prototypes":
        rng = np.random.default_rng([cfg.seed, 0x5EED])
        k, c = max(num_classes, 1), cfg.feature_dim
        return cls(rng.standard_normal((k, c)), rng.standard_normal((k, c)), rng.standard_normal(c),
                   rng.standard_normal(c), rng.standard_normal((4, c)))


def _render(t: np.ndarray, step: float, duration: float, segs: np.ndarray, labels: np.ndarray,
            protos: _Prototypes, cfg: SynthFeatureConfig, rng: np.random.Generator,
            noise_rng: np.random.Generator | None = None) -> np.ndarray:
    """``[T, C]`` features at snippet times ``t`` (seconds).

    ``rng`` draws the video's events (scene, amplitudes, distractors);
    ``noise_rng`` (default ``rng``) the noise along time.
    """
    noise_rng = rng if noise_rng is None else noise_rng
    n_t, c = len(t), cfg.feature_dim
    # temporally correlated noise: stationary AR(1) with unit variance
    white = noise_rng.standard_normal((n_t, c))
    gain = math.sqrt(1.0 - cfg.noise_rho ** 2)
    noise = lfilter([gain], [1.0, -cfg.noise_rho], white, axis=0)
    noise[0] = white[0]
    # scene context: a per-video vector, hinting at the classes present, drifting slowly
    scene = rng.standard_normal(c)
    if len(labels):
        hint = protos.cls[np.unique(labels)].mean(axis=0)
        scene = math.sqrt(1 - cfg.context_hint ** 2) * scene + cfg.context_hint * hint
    drift = lfilter([math.sqrt(1 - 0.995 ** 2)], [1.0, -0.995], noise_rng.standard_normal((n_t, 1)), axis=0)
    feats = noise + cfg.context * (scene[None, :] * (1.0 + 0.3 * drift))
    # class signal with soft onsets / offsets, drifting along the instance
    if len(segs):
        s, e = segs[:, 0], segs[:, 1]
        length = np.maximum(e - s, 1e-6)
        tau = np.maximum(cfg.onset * length, 0.25 * step)
        act = _soft_window(t, s, e, tau)                                  # [T, N]
        amp = act * rng.uniform(0.7, 1.3, size=len(segs))                # [T, N]
        phase = np.clip((t[:, None] - s[None, :]) / length[None, :], 0.0, 1.0) - 0.5
        feats += cfg.signal * amp @ protos.cls[labels] + cfg.progress * (amp * phase) @ protos.drift[labels]
        width = np.maximum(0.1 * length, 0.5 * step)
        feats += cfg.boundary * np.exp(-0.5 * ((t[:, None] - s) / width) ** 2).sum(1, keepdims=True) * protos.onset
        feats += cfg.boundary * np.exp(-0.5 * ((t[:, None] - e) / width) ** 2).sum(1, keepdims=True) * protos.offset
    # distractors: weakened prototypes of random classes mixed with distractor patterns
    n_d = rng.poisson(cfg.distractors_per_minute * duration / 60.0)
    if n_d and cfg.distractor:
        ds = rng.uniform(0.0, duration, n_d)
        de = np.minimum(ds + rng.uniform(1.0, 8.0, n_d), duration)
        mix = 0.5 * protos.cls[rng.integers(0, len(protos.cls), n_d)] + \
            0.7 * protos.distract[rng.integers(0, len(protos.distract), n_d)]
        act = _soft_window(t, ds, de, np.maximum(0.2 * (de - ds), 0.25 * step))
        feats += cfg.distractor * act @ mix
    return feats


#: per-stream emphasis: (context, boundary, progress) multipliers; class gains are drawn per class
STREAM_PROFILES = {"rgb": (1.0, 0.5, 0.5), "flow": (0.3, 1.5, 1.5)}


def _stream_view(protos: _Prototypes, cfg: SynthFeatureConfig, stream: str,
                 num_classes: int) -> tuple[_Prototypes, SynthFeatureConfig]:
    """Prototypes and settings of one stream of a multi-stream store (see the module docstring)."""
    rng = np.random.default_rng([cfg.seed, 0x5EED, zlib.crc32(stream.encode("utf-8"))])
    own = _Prototypes.make(num_classes, dataclasses.replace(cfg, seed=int(rng.integers(2 ** 31))))
    if stream not in STREAM_PROFILES:
        return own, cfg
    gain = np.random.default_rng([cfg.seed, 0x6A1]).uniform(0.4, 1.2, len(own.cls))
    if stream == "flow":
        gain = 1.6 - gain
    context, boundary, progress = STREAM_PROFILES[stream]
    scaled = dataclasses.replace(own, cls=own.cls * gain[:, None])
    return scaled, dataclasses.replace(cfg, context=cfg.context * context, boundary=cfg.boundary * boundary,
                                       progress=cfg.progress * progress)


def _level_name(density: float) -> str:
    return f"x{density:g}"


def _soft_window(t: np.ndarray, s: np.ndarray, e: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """``[T, N]``: ``sigmoid((t-s)/tau) * sigmoid((e-t)/tau)`` (numerically safe)."""
    a = np.clip((t[:, None] - s[None, :]) / tau[None, :], -60, 60)
    b = np.clip((e[None, :] - t[:, None]) / tau[None, :], -60, 60)
    return 1.0 / (1.0 + np.exp(-a)) / (1.0 + np.exp(-b))


# --------------------------------------------------------------------------- videos
#: Motion of the object during an instance of class ``k`` (the first ``K`` are used).
MOTION_PATTERNS = ("move_right", "move_up", "swing_horizontal", "swing_vertical",
                   "circle_clockwise", "move_left", "move_down", "circle_counterclockwise")
#: Seconds per back-and-forth swing or turn of a circle (:func:`motion_cycles`).
CYCLE_SECONDS = 1.5
#: Seconds the actor takes to walk back home after a move (instances are at least this far apart).
WALK_BACK_SECONDS = 1.5
#: Version of the video generator, written into ``annotations.json`` ("version").
SYNTH_VIDEO_VERSION = 2


@dataclass(frozen=True)
class SynthVideoConfig:
    """Settings of :func:`synth_videos` (sizes in pixels, times in seconds).

    Instance lengths default to ``max_instance = min(3.0, min_duration / 2)``
    and ``min_instance = min(1.5, max_instance)``. The last ``val_fraction``
    of the videos (rounded; at least one of each subset from two videos on) are
    ``validation``, the others ``training``. The first instance of video ``i``
    is of class ``i mod num_classes``, so a subset of at least ``num_classes``
    consecutive videos holds every class.
    """

    num_videos: int = 8
    num_classes: int = 4
    size: int = 128
    fps: float = 15.0
    min_duration: float = 4.0
    max_duration: float = 8.0
    max_instances: int = 3
    min_instance: float | None = None
    max_instance: float | None = None
    val_fraction: float = 0.25
    codec: str = "mpeg4"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_instance is None:
            object.__setattr__(self, "max_instance", min(3.0, self.min_duration / 2))
        if self.min_instance is None:
            object.__setattr__(self, "min_instance", min(1.5, self.max_instance))
        if not 1 <= self.num_classes <= len(MOTION_PATTERNS):
            raise ValueError(f"num_classes must be in 1..{len(MOTION_PATTERNS)}, got {self.num_classes}")
        if self.num_videos < 1 or self.max_instances < 1:
            raise ValueError("num_videos and max_instances must be at least 1")
        if self.size < 32 or self.size % 2:
            raise ValueError(f"size must be an even number of pixels >= 32, got {self.size}")
        if not (0 < self.min_instance <= self.max_instance and self.min_duration <= self.max_duration):
            raise ValueError("need 0 < min_instance <= max_instance and min_duration <= max_duration")
        if self.max_instance >= self.min_duration:
            raise ValueError("max_instance must be shorter than min_duration")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class SynthVideos:
    """Result of :func:`synth_videos`: the files and the loaded ground truth."""

    root: Path
    videos: list[Path]
    annotation_file: Path
    annotations: Annotations


def synth_videos(out: str | Path, config: SynthVideoConfig | None = None) -> SynthVideos:
    """Write ``config.num_videos`` mp4 files and ``annotations.json`` into ``out``.

    Video ``synth_000k`` is ``synth_000k.mp4``; ``annotations.json`` is the
    official ActivityNet format (with ``fps`` and ``num_frames`` per video).
    Each file is written under a temporary name and renamed when complete.
    """
    cfg = config or SynthVideoConfig()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    codec = _pick_codec(cfg.codec)
    classes = list(MOTION_PATTERNS[:cfg.num_classes])
    n_train = cfg.num_videos - int(round(cfg.num_videos * cfg.val_fraction))
    if cfg.num_videos >= 2:
        n_train = min(max(n_train, 1), cfg.num_videos - 1)
    database: dict[str, Any] = {}
    paths = []
    for i in range(cfg.num_videos):
        vid = f"synth_{i:04d}"
        rng = np.random.default_rng([cfg.seed, 0xC0FFEE, i])
        frames, instances = _make_clip(cfg, rng, first_class=i % cfg.num_classes)
        path = root / f"{vid}.mp4"
        _encode(frames, path, cfg.fps, codec)
        paths.append(path)
        num_frames = frames.shape[0]
        database[vid] = {
            "subset": "training" if i < n_train else "validation",
            "duration": float(frame_to_seconds(num_frames, cfg.fps)),
            "fps": float(cfg.fps), "num_frames": int(num_frames),
            "resolution": f"{cfg.size}x{cfg.size}",
            "annotations": [{"segment": [float(frame_to_seconds(a, cfg.fps)), float(frame_to_seconds(b, cfg.fps))],
                             "label": classes[k]} for a, b, k in instances],
        }
    doc = {"version": f"tadkit-synthetic-videos-{SYNTH_VIDEO_VERSION}",
           "taxonomy": [{"nodeId": k, "nodeName": c, "parentId": None, "parentName": None}
                        for k, c in enumerate(classes)],
           "database": database}
    ann_path = root / "annotations.json"
    tmp = root / f".tmp-{uuid.uuid4().hex}.json"
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, ann_path)
    return SynthVideos(root, paths, ann_path, load_annotations(ann_path, classes=classes, warn=False))


def motion_offset(pattern: str, phase: np.ndarray, amplitude: float,
                  cycles: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(dx, dy)`` pixels of the object at ``phase`` in [0, 1] of an instance.

    Moves travel ``amplitude``; swings go ``cycles`` times back and forth
    within ``±amplitude/3``; circles go round ``cycles`` times on a circle of
    radius ``amplitude/3``. Every pattern starts at ``(0, 0)`` (no jump at the
    onset); swings and circles end there too, moves end ``amplitude`` away
    (the actor then walks back, outside the instance). ``dy`` grows downwards
    (image rows): "up" is negative ``dy`` and "clockwise" is as seen on screen.
    """
    p = np.asarray(phase, dtype=np.float64)
    zero = np.zeros_like(p)
    lin = p * amplitude
    ang = 2 * np.pi * cycles * p
    r = amplitude / 3
    swing = np.sin(ang) * r
    # circles through the start point, centre r above it
    table = {
        "move_right": (lin, zero), "move_left": (-lin, zero),
        "move_up": (zero, -lin), "move_down": (zero, lin),
        "swing_horizontal": (swing, zero), "swing_vertical": (zero, swing),
        "circle_clockwise": (-r * np.sin(ang), -r * (1 - np.cos(ang))),
        "circle_counterclockwise": (r * np.sin(ang), -r * (1 - np.cos(ang))),
    }
    if pattern not in table:
        raise ValueError(f"unknown motion pattern {pattern!r}")
    return table[pattern]


def motion_cycles(pattern: str, seconds: float) -> int:
    """Back-and-forth swings or turns of a circle in an instance of ``seconds``: one per
    :data:`CYCLE_SECONDS`, at least one (moves: 1). Fixing the period instead of the count keeps
    the speed of every pattern within what optical flow at a few frames per second resolves."""
    if pattern.startswith("move"):
        return 1
    return max(1, int(round(seconds / CYCLE_SECONDS)))


def _make_clip(cfg: SynthVideoConfig, rng: np.random.Generator,
               first_class: int) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """``(frames [N, H, W, 3] uint8, [(start_frame, end_frame, class)])``; end is exclusive."""
    size = cfg.size
    duration = rng.uniform(cfg.min_duration, cfg.max_duration)
    n = num_sampled_frames(duration, cfg.fps)
    back = max(2, num_sampled_frames(WALK_BACK_SECONDS, cfg.fps))
    instances = _place_instances(n, cfg, rng, first_class, gap=back)
    # background: a smooth low-contrast texture with a slight tint (the same look in every
    # frame: optical flow assumes constant brightness) plus sensor grain
    coarse = rng.uniform(0, 1, (size // 16 + 2, size // 16 + 2, 3))
    yy = np.linspace(0, coarse.shape[0] - 1.001, size)
    xx = np.linspace(0, coarse.shape[1] - 1.001, size)
    y0, x0 = yy.astype(int), xx.astype(int)
    wy, wx = (yy - y0)[:, None, None], (xx - x0)[None, :, None]
    tex = (coarse[y0][:, x0] * (1 - wy) * (1 - wx) + coarse[y0 + 1][:, x0] * wy * (1 - wx)
           + coarse[y0][:, x0 + 1] * (1 - wy) * wx + coarse[y0 + 1][:, x0 + 1] * wy * wx)
    bg = 95 + 30 * tex + rng.uniform(-10, 10, 3)
    # the actor, a bright disk: idles (jittering around home) outside instances; after a
    # move it walks back home, slowly (motion that is not an action)
    radius = size / 8
    amp = 0.25 * size
    home = rng.uniform(0.4, 0.6, 2) * size
    offset = np.zeros((n, 2))
    starts = [a for a, _, _ in instances] + [n]
    for (a, b, k), nxt in zip(instances, starts[1:]):
        pattern = MOTION_PATTERNS[k]
        cycles = motion_cycles(pattern, (b - a) / cfg.fps)
        dx, dy = motion_offset(pattern, np.linspace(0.0, 1.0, b - a), amp, cycles)
        offset[a:b, 0], offset[a:b, 1] = dx, dy
        r = min(back, nxt - b)
        if r > 0:
            offset[b:b + r] = offset[b - 1] * np.linspace(1.0, 0.0, r + 1)[1:, None]
    jitter = np.cumsum(rng.normal(0, 0.3, (n, 2)), axis=0).clip(-2, 2)
    pos = np.clip(home[None, :] + offset + jitter, radius, size - radius)
    color = 230 + rng.uniform(-10, 10, 3)
    # the distractor: a small dark square drifting on a slow random walk
    walk = np.cumsum(rng.normal(0, 0.01 * size, (n, 2)), axis=0)
    dpos = np.clip(rng.uniform(0.2, 0.8, 2) * size + walk, size / 16, size - size / 16)
    dcolor = 40 + rng.uniform(-10, 10, 3)
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    for f in range(n):
        img = bg + rng.normal(0, 2, (size, size, 1))
        sq = (np.abs(grid_x - dpos[f, 0]) < size / 16) & (np.abs(grid_y - dpos[f, 1]) < size / 16)
        img[sq] = dcolor
        disk = (grid_x - pos[f, 0]) ** 2 + (grid_y - pos[f, 1]) ** 2 < radius ** 2
        img[disk] = color
        frames[f] = np.clip(img, 0, 255).astype(np.uint8)
    return frames, instances


def _place_instances(n: int, cfg: SynthVideoConfig, rng: np.random.Generator, first_class: int,
                     gap: int = 1) -> list[tuple[int, int, int]]:
    """Up to ``max_instances`` instances (at least one), as frames, at least ``gap`` frames apart;
    the first one placed is of class ``first_class``, the others of random classes."""
    lo = max(2, num_sampled_frames(cfg.min_instance, cfg.fps))
    hi = max(lo, num_sampled_frames(cfg.max_instance, cfg.fps))
    want = int(rng.integers(1, cfg.max_instances + 1))
    out: list[tuple[int, int, int]] = []
    for _ in range(50 * want):
        if len(out) == want:
            break
        length = int(rng.integers(lo, hi + 1))
        if length >= n:
            continue
        a = int(rng.integers(0, n - length + 1))
        b = a + length
        if all(b + gap <= s or a >= e + gap for s, e, _ in out):
            out.append((a, b, first_class if not out else int(rng.integers(0, cfg.num_classes))))
    if not out:  # a video too short for the requested lengths: one instance in the middle
        out.append((n // 4, max(n // 4 + 1, 3 * n // 4), first_class))
    return sorted(out)


def _pick_codec(name: str) -> str:
    import av

    for codec in (name, "mpeg4", "libx264"):
        if codec in av.codecs_available:
            return codec
    raise InputError(None, f"no usable video encoder ({name}, libx264, mpeg4) in this PyAV build")


def _encode(frames: np.ndarray, path: Path, fps: float, codec: str) -> None:
    """Encode ``[N, H, W, 3]`` uint8 RGB frames to ``path`` atomically."""
    import av

    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}{path.suffix}")
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.thread_count = 1
            if codec == "libx264":
                stream.options = {"crf": "20", "preset": "veryfast"}
            else:
                stream.bit_rate = 1_000_000
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
