"""The one home of time: seconds <-> frames <-> snippet grid.

Conventions (used by every stage; see ``docs/feature-format.md``):

* **Frames.** Frames are sampled at ``fps`` (the *sample* fps, after any
  resampling of the source). Frame ``k`` is shown during ``[k/fps, (k+1)/fps)``
  seconds, so its time stamp is ``k / fps``.
* **Snippets.** Snippet ``i`` is the clip of ``clip_len`` frames starting at
  frame ``i * stride``. It covers ``[i*stride/fps, (i*stride + clip_len)/fps)``
  seconds and its *centre time* is ``(i*stride + clip_len/2) / fps``. The
  centre time is the time stamp of snippet ``i``; feature files store it.
* **Coverage.** :func:`snippet_starts` plans snippets so that every frame of
  the video lies in at least one snippet: the tail gets a snippet too, whose
  missing frames are filled by repeating the last frame.
* **Grid.** Detection heads work on a uniform 1-D grid: index ``g`` (a float,
  so boundaries can fall between cells) maps to ``origin + g * step``
  seconds. :class:`TimeAxis` holds that affine map; it is created from the
  stored snippet centre times, shifted by sliding-window offsets and rescaled
  by fixed-length resizing, and always maps grid positions back to seconds.

Nothing outside this module multiplies or divides by fps or stride.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

ArrayLike = Union[float, np.ndarray]


# --------------------------------------------------------------------------- frames
def seconds_to_frame(seconds: ArrayLike, fps: float) -> ArrayLike:
    """Index (float) of the frame shown at ``seconds``: ``seconds * fps``."""
    return np.asarray(seconds, dtype=np.float64) * fps


def frame_to_seconds(frame: ArrayLike, fps: float) -> ArrayLike:
    """Time stamp in seconds of frame ``frame`` (may be fractional)."""
    return np.asarray(frame, dtype=np.float64) / fps


def num_sampled_frames(duration: float, fps: float) -> int:
    """Frames in ``duration`` seconds sampled at ``fps`` (at least 1)."""
    return max(1, int(np.floor(duration * fps + 1e-6)))


def resample_indices(num_source_frames: int, source_fps: float, target_fps: float) -> np.ndarray:
    """Source frame index for every frame of a video resampled to ``target_fps``.

    Target frame ``k`` (time ``k / target_fps``) takes the source frame shown
    at that time, ``floor(k * source_fps / target_fps)``.
    """
    if num_source_frames <= 0:
        raise ValueError("a video needs at least one frame")
    duration = num_source_frames / source_fps
    n = num_sampled_frames(duration, target_fps)
    idx = np.floor(np.arange(n) * (source_fps / target_fps) + 1e-9).astype(np.int64)
    return np.minimum(idx, num_source_frames - 1)


def resample_timestamps(frame_times: np.ndarray, duration: float, target_fps: float) -> np.ndarray:
    """Source frame index for every frame of a variable-frame-rate video resampled to ``target_fps``.

    ``frame_times`` are the source frames' presentation times in seconds
    (sorted). Target frame ``k`` (time ``k / target_fps``) takes the last
    source frame shown at or before that time (the first frame before it
    starts). ``duration`` (seconds) sets the number of target frames as in
    :func:`num_sampled_frames`.
    """
    t = np.asarray(frame_times, dtype=np.float64)
    if t.ndim != 1 or len(t) == 0:
        raise ValueError("a video needs at least one frame time")
    n = num_sampled_frames(duration, target_fps)
    target = np.arange(n) / target_fps
    idx = np.searchsorted(t, target + 1e-6, side="right") - 1  # decoders round times to ~1e-7 s
    return np.clip(idx, 0, len(t) - 1).astype(np.int64)


# --------------------------------------------------------------------------- snippets
def snippet_starts(num_frames: int, clip_len: int, stride: int) -> np.ndarray:
    """First frame of every snippet, covering all ``num_frames`` frames.

    Snippets start every ``stride`` frames; the last one is the first whose
    clip reaches the last frame. A video shorter than a clip gets one snippet.
    """
    if num_frames <= 0:
        raise ValueError("a video needs at least one frame")
    if clip_len <= 0 or stride <= 0:
        raise ValueError("clip_len and stride must be positive")
    count = 1 + max(0, int(np.ceil((num_frames - clip_len) / stride)))
    return np.arange(count, dtype=np.int64) * stride


def snippet_frame_indices(num_frames: int, clip_len: int, stride: int) -> np.ndarray:
    """``[num_snippets, clip_len]`` frame indices, tail padded with the last frame."""
    starts = snippet_starts(num_frames, clip_len, stride)
    idx = starts[:, None] + np.arange(clip_len)[None, :]
    return np.minimum(idx, num_frames - 1)


def snippet_centers(num_frames: int, clip_len: int, stride: int, fps: float) -> np.ndarray:
    """Centre time in seconds of every snippet (see the module conventions)."""
    starts = snippet_starts(num_frames, clip_len, stride)
    return (starts + clip_len / 2.0) / fps


def snippet_span_frames(num_snippets: int, clip_len: int, stride: int) -> int:
    """Frames covered by ``num_snippets`` snippets from frame 0: ``(num_snippets - 1)*stride + clip_len``."""
    return (int(num_snippets) - 1) * int(stride) + int(clip_len)


def strided_feature_times(num: int, stride: float, offset: float, fps: float) -> np.ndarray:
    """Time stamps in seconds of ``num`` features taken every ``stride`` frames, feature ``i``
    stamped at frame ``i*stride + offset``: ``(i*stride + offset) / fps``.

    The convention of published strided features (ActionFormer: ``offset = num_frames / 2``;
    OpenTAD: ``offset = offset_frames``); with ``offset = clip_len / 2`` it is
    :func:`snippet_centers`.
    """
    return (np.arange(num, dtype=np.float64) * stride + offset) / fps


def resized_feature_times(num: int, span: float) -> np.ndarray:
    """Time stamps in seconds of ``num`` features that split ``[0, span)`` seconds into equal
    cells (features resized to a fixed length, e.g. BMN's 100): cell centres ``(i + 1/2) * span / num``."""
    return (np.arange(num, dtype=np.float64) + 0.5) * (span / num)


def resized_feature_rate(num: int, span: float) -> float:
    """Cells per second of ``num`` resized features over ``span`` seconds (``num / span``): the
    sample rate at which each cell is one frame, so the grid step ``1 / rate`` is one cell."""
    return float(num) / float(span)


def snippet_bounds(centers: np.ndarray, clip_len: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """``(start, end)`` seconds covered by the snippets with these centre times."""
    half = clip_len / (2.0 * fps)
    c = np.asarray(centers, dtype=np.float64)
    return c - half, c + half


def level_step_times(clip_starts: np.ndarray, positions: np.ndarray, fps: float) -> np.ndarray:
    """Centre times in seconds of the steps of an intermediate backbone level, per clip.

    ``clip_starts [S]``: first sample-fps frame each clip reads; ``positions
    [P]``: frame position (float) of each level step relative to that frame --
    the mean index of the frames the step summarises. Frames ``a..b`` are
    shown during ``[a/fps, (b+1)/fps)``, so a step at position ``p`` is centred
    at ``(start + p + 1/2) / fps``; a step summarising a whole clip (position
    ``(clip_len - 1)/2``) thus sits exactly at the snippet centre
    ``(start + clip_len/2) / fps``. Returns ``[S, P]`` seconds.
    """
    starts = np.asarray(clip_starts, dtype=np.float64).reshape(-1, 1)
    pos = np.asarray(positions, dtype=np.float64).reshape(1, -1)
    return (starts + pos + 0.5) / fps


# --------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class TimeAxis:
    """Affine map between a grid of ``length`` cells and seconds.

    Grid position ``g`` (float) is at ``origin + g * step`` seconds. Cell ``i``
    is centred on position ``i``; it spans ``[i - 0.5, i + 0.5)``.
    """

    origin: float
    step: float
    length: int

    def __post_init__(self) -> None:
        if not self.step > 0:
            raise ValueError(f"TimeAxis step must be positive, got {self.step}")
        if self.length < 1:
            raise ValueError(f"TimeAxis length must be at least 1, got {self.length}")

    # construction ---------------------------------------------------------
    @classmethod
    def from_centers(cls, centers: np.ndarray, fallback_step: float | None = None) -> "TimeAxis":
        """Axis through stored snippet centre times (uniformly spaced).

        A single snippet has no spacing of its own: ``fallback_step`` (usually
        ``stride / fps``) supplies it.
        """
        c = np.asarray(centers, dtype=np.float64)
        if c.ndim != 1 or len(c) == 0:
            raise ValueError("snippet centre times must be a non-empty 1-D array")
        if len(c) == 1:
            if fallback_step is None:
                raise ValueError("one snippet: pass fallback_step (stride / fps)")
            return cls(float(c[0]), float(fallback_step), 1)
        step = (c[-1] - c[0]) / (len(c) - 1)
        return cls(float(c[0]), float(step), len(c))

    @classmethod
    def for_snippets(cls, num_snippets: int, clip_len: int, stride: int, fps: float) -> "TimeAxis":
        """Axis of the snippets planned by :func:`snippet_starts`."""
        return cls(clip_len / (2.0 * fps), stride / fps, num_snippets)

    # conversions ------------------------------------------------------------
    def to_seconds(self, grid: ArrayLike) -> ArrayLike:
        """Seconds of grid position(s) ``grid``."""
        return self.origin + np.asarray(grid, dtype=np.float64) * self.step

    def to_grid(self, seconds: ArrayLike) -> ArrayLike:
        """Grid position(s) (float) of ``seconds``."""
        return (np.asarray(seconds, dtype=np.float64) - self.origin) / self.step

    def centers(self) -> np.ndarray:
        """Seconds of every cell centre."""
        return self.to_seconds(np.arange(self.length))

    @property
    def start(self) -> float:
        """Seconds at the left edge of the first cell."""
        return float(self.to_seconds(-0.5))

    @property
    def end(self) -> float:
        """Seconds at the right edge of the last cell."""
        return float(self.to_seconds(self.length - 0.5))

    # derived axes -------------------------------------------------------------
    def window(self, offset: int, length: int) -> "TimeAxis":
        """Axis of cells ``offset .. offset + length - 1`` (a sliding window)."""
        return TimeAxis(float(self.to_seconds(offset)), self.step, length)

    def resized(self, new_length: int) -> "TimeAxis":
        """Axis after linear resizing to ``new_length`` cells (align-corners).

        The first and last new cells sit on the first and last old cells, as
        :func:`resize_features` computes them.
        """
        if new_length < 1:
            raise ValueError("new_length must be at least 1")
        if new_length == 1:  # one cell: the mean, centred on the old span
            return TimeAxis(float(self.to_seconds((self.length - 1) / 2)), self.step * self.length, 1)
        if self.length == 1:  # one old cell spread evenly over its own span
            step = self.step / new_length
            return TimeAxis(self.origin - self.step / 2 + step / 2, step, new_length)
        step = self.step * (self.length - 1) / (new_length - 1)
        return TimeAxis(self.origin, step, new_length)


def resize_features(features: np.ndarray, new_length: int) -> np.ndarray:
    """Linear interpolation of ``[T, C]`` features to ``[new_length, C]``.

    Align-corners sampling: new cell ``j`` reads old position
    ``j * (T - 1) / (new_length - 1)``, matching :meth:`TimeAxis.resized`.
    """
    feats = np.asarray(features)
    t = feats.shape[0]
    if t == 1 or new_length == 1:
        return np.repeat(feats.mean(axis=0, keepdims=True) if new_length == 1 else feats[:1],
                         new_length, axis=0)
    pos = np.linspace(0.0, t - 1, new_length)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, t - 1)
    w = (pos - lo)[:, None].astype(feats.dtype)
    return feats[lo] * (1 - w) + feats[hi] * w


def segments_to_grid(segments: np.ndarray, axis: TimeAxis) -> np.ndarray:
    """``[N, 2]`` segments in seconds -> grid positions on ``axis``."""
    return np.asarray(axis.to_grid(np.asarray(segments, dtype=np.float64)))


def grid_to_segments(grid: np.ndarray, axis: TimeAxis, duration: float | None = None) -> np.ndarray:
    """``[N, 2]`` grid positions -> seconds, clipped to ``[0, duration]`` if given."""
    sec = np.asarray(axis.to_seconds(np.asarray(grid, dtype=np.float64)))
    if duration is not None:
        sec = np.clip(sec, 0.0, duration)
    return sec
