"""Optical flow for the flow stream: TV-L1 computed here, or precomputed flow frames.

Conventions

* Flow is computed between consecutive *sample-fps* frames on grey images
  (after the recipe's resize, before its crop). ``flow[t]`` is the motion
  from frame ``t`` to ``t + 1`` and is aligned with RGB frame ``t``; channel 0
  is x (positive = rightwards), channel 1 is y (positive = downwards), in
  pixels per frame. The last frame has no successor and **repeats the
  previous flow**; a one-frame video gets zero flow.
* Values are clipped to ``+-bound`` (20 px) and mapped to ``[-1, 1]`` by
  :func:`encode_flow` (8-bit quantisation like denseflow JPEGs by default).
* TV-L1 is OpenCV's ``DualTVL1OpticalFlow`` with its standard parameters
  (5 scales, 5 warps, ...). It costs roughly 0.1-0.3 s per 340x256 pair on
  one CPU core, often more than the I3D forward itself: ``FlowOptions.size``
  computes flow on frames whose shorter side is ``size`` pixels (vectors are
  scaled back up), and ``scales``/``warps`` trade accuracy for speed.
  ``threads`` computes several pairs at once (OpenCV releases the GIL).
* Precomputed flow (``--flow-dir``): a folder per video id holding
  ``x_*.jpg`` / ``y_*.jpg`` (or ``flow_x_*.jpg`` / ``flow_y_*.jpg``), the
  denseflow layout: image ``k`` (in numeric order) is the flow from source
  frame ``k`` to ``k + 1``, grey values ``0..255`` meaning ``-bound..+bound``.
  They are read as ``2v/255 - 1``.
"""
from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from tadkit.errors import InputError

ENCODINGS = ("uint8", "uint8_centred", "video_features", "linear")


@dataclass(frozen=True)
class FlowOptions:
    """TV-L1 solver settings (OpenCV names) and the speed knobs.

    ``size``: shorter side (pixels) of the frames flow is computed on, ``None``
    = the recipe's resized frames. ``threads``: pairs computed in parallel.
    """

    size: int | None = None
    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    scales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    median_filtering: int = 5
    threads: int = 1

    def solver_dict(self) -> dict[str, Any]:
        """The settings that change the flow values (recorded in provenance)."""
        d = {k: getattr(self, k) for k in ("size", "tau", "lambda_", "theta", "scales", "warps", "epsilon",
                                           "inner_iterations", "outer_iterations", "scale_step",
                                           "median_filtering")}
        d["method"] = "opencv_dual_tvl1"
        return d


# --------------------------------------------------------------------------- computing flow
def tvl1_flow(prev_gray: np.ndarray, next_gray: np.ndarray, opts: FlowOptions = FlowOptions()) -> np.ndarray:
    """TV-L1 flow ``[H, W, 2]`` float32 (pixels) from ``prev_gray`` to ``next_gray`` ``[H, W]`` uint8.

    With ``opts.size`` the frames are first downscaled so that their shorter
    side is ``size``; the flow is resized back and its vectors scaled by the
    same factor.
    """
    h, w = prev_gray.shape
    a, b = prev_gray, next_gray
    if opts.size is not None and min(h, w) > opts.size:
        k = opts.size / min(h, w)
        sw, sh = max(1, round(w * k)), max(1, round(h * k))
        a = cv2.resize(a, (sw, sh), interpolation=cv2.INTER_AREA)
        b = cv2.resize(b, (sw, sh), interpolation=cv2.INTER_AREA)
    flow = _solver(opts).calc(a, b, None)
    if flow.shape[:2] != (h, w):
        fy, fx = h / flow.shape[0], w / flow.shape[1]
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
        flow[..., 0] *= fx
        flow[..., 1] *= fy
    return np.asarray(flow, dtype=np.float32)


def to_gray(frames: np.ndarray) -> np.ndarray:
    """``[N, H, W, 3]`` uint8 RGB -> ``[N, H, W]`` uint8 grey (OpenCV luma weights)."""
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]) if len(frames) else \
        np.zeros(frames.shape[:3], np.uint8)


def pair_flows(gray: np.ndarray, pairs: Sequence[tuple[int, int]], opts: FlowOptions = FlowOptions()) -> np.ndarray:
    """Flow ``[P, H, W, 2]`` for each ``(i, j)`` in ``pairs`` of rows of ``gray [N, H, W]``."""
    if len(pairs) == 0:
        return np.zeros((0, *gray.shape[1:], 2), np.float32)
    if opts.threads > 1 and len(pairs) > 1:
        with ThreadPoolExecutor(max_workers=opts.threads) as pool:
            flows = list(pool.map(lambda p: tvl1_flow(gray[p[0]], gray[p[1]], opts), pairs))
    else:
        flows = [tvl1_flow(gray[i], gray[j], opts) for i, j in pairs]
    return np.stack(flows)


def encode_flow(flow: np.ndarray, bound: float = 20.0, encoding: str = "uint8") -> np.ndarray:
    """Pixel flow -> network input in ``[-1, 1]`` (float32, same shape).

    * ``uint8`` (default, denseflow JPEGs): ``q = round((clip(f) + b) * 255 / 2b)``,
      then ``2q/255 - 1``; zero flow becomes ``1/255``.
    * ``video_features``: ``q = round(128 + 255 / 2b * clip(f))`` kept as float
      (so ``q`` spans 0..256), then ``2q/255 - 1``.
    * ``uint8_centred`` (TSN, mmaction2): the same 8-bit ``q``, then
      ``(q - 128) / 128`` (mean 128, std 128); zero flow becomes ``0``.
    * ``linear``: ``clip(f) / b`` (no quantisation).

    ``clip`` clamps to ``[-b, b]``; rounding is half-to-even (numpy).
    """
    f = np.clip(np.asarray(flow, dtype=np.float32), -bound, bound)
    if encoding == "linear":
        return f / np.float32(bound)
    if encoding in ("uint8", "uint8_centred"):
        q = np.clip(np.round((f + bound) * (255.0 / (2.0 * bound))), 0, 255)
        if encoding == "uint8_centred":
            return ((q - 128.0) / 128.0).astype(np.float32)
    elif encoding == "video_features":
        q = np.round(128.0 + (255.0 / (2.0 * bound)) * f)
    else:
        raise ValueError(f"unknown flow encoding {encoding!r}; known: {', '.join(ENCODINGS)}")
    return (q * (2.0 / 255.0) - 1.0).astype(np.float32)


def recode_flow_frames(values: np.ndarray, encoding: str) -> np.ndarray:
    """Precomputed flow read as ``2v/255 - 1`` (:meth:`FlowFrames.read`) -> ``encoding``'s scale.

    ``uint8_centred`` recovers the grey value ``v`` and returns ``(v - 128) / 128``;
    every other encoding keeps ``2v/255 - 1`` (how denseflow JPEGs are read for I3D).
    """
    if encoding != "uint8_centred":
        return values
    v = np.round((np.asarray(values, dtype=np.float32) + 1.0) * 127.5)
    return ((v - 128.0) / 128.0).astype(np.float32)


def next_frame_index(t: np.ndarray, num_frames: int) -> np.ndarray:
    """Partner frame of each frame ``t`` in its flow pair: ``t + 1``, or ``t - 1`` for the last frame.

    The returned pair ``(t', t' + 1)`` is the one whose flow frame ``t`` uses:
    ``t' = t`` except for the last frame, which repeats the previous pair.
    For a one-frame video the result is ``-1`` (zero flow).
    """
    t = np.asarray(t, dtype=np.int64)
    if num_frames < 2:
        return np.full_like(t, -1)
    return np.minimum(t, num_frames - 2)


# --------------------------------------------------------------------------- precomputed frames
class FlowFrames:
    """Precomputed flow images of one video (denseflow layout, see the module docstring)."""

    _PATTERN = re.compile(r"^(?:flow_)?([xy])_0*(\d+)\.(?:jpg|jpeg|png)$", re.IGNORECASE)

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(self.folder, "no precomputed flow folder for this video")
        xs: dict[int, Path] = {}
        ys: dict[int, Path] = {}
        for p in self.folder.iterdir():
            m = self._PATTERN.match(p.name)
            if m:
                (xs if m.group(1).lower() == "x" else ys)[int(m.group(2))] = p
        if not xs:
            raise InputError(self.folder, "no flow images (expected x_00000.jpg / y_00000.jpg ...)")
        if sorted(xs) != sorted(ys):
            missing = sorted(set(xs) ^ set(ys))[:5]
            raise InputError(self.folder, f"x and y flow images do not pair up (e.g. number {missing})")
        order = sorted(xs)
        self._x = [xs[i] for i in order]
        self._y = [ys[i] for i in order]

    def __len__(self) -> int:
        return len(self._x)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Flow for source frames ``indices``: ``[N, H, W, 2]`` float32 in ``[-1, 1]``.

        Frame ``k`` reads image ``min(k, len - 1)`` (the last frame repeats
        the previous flow).
        """
        out = []
        for k in np.minimum(np.asarray(indices, dtype=np.int64), len(self) - 1):
            x = cv2.imread(str(self._x[k]), cv2.IMREAD_GRAYSCALE)
            y = cv2.imread(str(self._y[k]), cv2.IMREAD_GRAYSCALE)
            if x is None or y is None or x.shape != y.shape:
                raise InputError(self._x[k], "unreadable flow image (or x/y sizes differ)")
            out.append(np.stack([x, y], axis=-1))
        if out and len({o.shape for o in out}) > 1:
            raise InputError(self.folder, "flow images of different sizes")
        v = np.stack(out).astype(np.float32) if out else np.zeros((0, 1, 1, 2), np.float32)
        return v * np.float32(2.0 / 255.0) - np.float32(1.0)


# --------------------------------------------------------------------------- helpers
_LOCAL = threading.local()


def _solver(opts: FlowOptions) -> Any:
    """One OpenCV TV-L1 solver per thread and settings (the object is not thread-safe)."""
    cache = getattr(_LOCAL, "solvers", None)
    if cache is None:
        cache = _LOCAL.solvers = {}
    key = tuple(opts.solver_dict().items())
    solver = cache.get(key)
    if solver is None:
        solver = cv2.optflow.DualTVL1OpticalFlow_create(
            tau=opts.tau, lambda_=opts.lambda_, theta=opts.theta, nscales=opts.scales, warps=opts.warps,
            epsilon=opts.epsilon, innnerIterations=opts.inner_iterations,
            outerIterations=opts.outer_iterations, scaleStep=opts.scale_step, gamma=0.0,
            medianFiltering=opts.median_filtering, useInitialFlow=False)
        cache[key] = solver
    return solver
