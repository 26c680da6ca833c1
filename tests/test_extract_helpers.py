"""Tiny generated videos for the extraction tests (and tests that the generator is sound).

Other ``test_extract_*`` modules import the helpers from here.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tadkit.extract.video import VideoInfo, open_video


@pytest.fixture(autouse=True)
def no_onednn():
    """Run tiny CPU forwards without oneDNN: it spends seconds on every new input shape.

    Modules that import this fixture use it automatically.
    """
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    yield
    torch.backends.mkldnn.enabled = before


#: ``python -c`` prefix running the tadkit CLI in a subprocess without oneDNN (see ``no_onednn``).
CLI_NO_ONEDNN = ("import sys, torch; torch.backends.mkldnn.enabled = False; "
                 "from tadkit.cli import main; sys.exit(main(sys.argv[1:]))")


class ArrayReader:
    """An in-memory video (``[N, H, W, 3]`` uint8) with the reader interface; logs requests."""

    def __init__(self, frames: np.ndarray, fps: float = 25.0):
        self.frames = frames
        n, h, w, _ = frames.shape
        self.info = VideoInfo("mem.mp4", n, fps, w, h, n / fps, "memory")
        self.requests: list[list[int]] = []

    def get_frames(self, indices):
        self.requests.append([int(i) for i in indices])
        return self.frames[np.asarray(indices, dtype=np.int64)]

    def close(self):
        pass


def moving_frames(n: int, height: int = 48, width: int = 64, dx: float = 1.0, dy: float = 0.0,
                  seed: int = 0) -> np.ndarray:
    """``[n, H, W, 3]`` uint8 frames of a smooth random texture translating by ``(dx, dy)`` px/frame.

    The top-left 8x8 block's brightness encodes the frame index (``4 * k``)
    so a test can tell which frame it got back.
    """
    rng = np.random.default_rng(seed)
    pad = int(abs(dx) * n + abs(dy) * n) + 16
    big_h, big_w = height + 2 * pad, width + 2 * pad
    coarse = rng.uniform(0, 255, (big_h // 8 + 2, big_w // 8 + 2, 3)).astype(np.float32)
    import cv2

    tex = cv2.resize(coarse, (big_w, big_h), interpolation=cv2.INTER_CUBIC)
    out = np.empty((n, height, width, 3), np.uint8)
    for k in range(n):
        # content moves by (+dx, +dy): the window moves the other way
        y0 = int(round(pad - k * dy))
        x0 = int(round(pad - k * dx))
        frame = np.clip(tex[y0:y0 + height, x0:x0 + width], 0, 255)
        frame[:8, :8] = min(255, 4 * k)
        out[k] = frame.astype(np.uint8)
    return out


def write_video(path: Path, frames: np.ndarray, fps: int = 25, codec: str = "mpeg4",
                pts: list[int] | None = None, time_base: Fraction | None = None) -> Path:
    """Encode ``frames [N, H, W, 3]`` uint8 RGB to ``path``.

    ``pts`` (in ``time_base`` units) makes a variable-frame-rate file.
    """
    path = Path(path)
    n, h, w, _ = frames.shape
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p" if codec in ("mpeg4", "libx264") else stream.pix_fmt
        if codec == "mjpeg":
            stream.pix_fmt = "yuvj444p"
        if codec == "mpeg4":
            stream.options = {"qscale": "2"}
            stream.codec_context.qmin = 1
            stream.codec_context.qmax = 3
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        for k in range(n):
            frame = av.VideoFrame.from_ndarray(frames[k], format="rgb24")
            if pts is not None:
                frame.pts = pts[k]
                frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_video(path: Path, n: int = 20, height: int = 48, width: int = 64, fps: int = 25,
               codec: str = "mpeg4", seed: int = 0, dx: float = 1.0) -> Path:
    """A tiny translating-texture video."""
    return write_video(path, moving_frames(n, height, width, dx=dx, seed=seed), fps=fps, codec=codec)


# --------------------------------------------------------------------------- tests of the generator
def test_generated_video_decodes_with_expected_frames_and_index_marks(tmp_path):
    path = make_video(tmp_path / "a.avi", n=12)
    reader = open_video(path)
    assert reader.info.num_frames == 12
    assert abs(reader.info.fps - 25) < 1e-6
    assert (reader.info.width, reader.info.height) == (64, 48)
    frames = reader.get_frames([0, 5, 11])
    marks = frames[:, 2:6, 2:6].mean(axis=(1, 2, 3))
    np.testing.assert_allclose(marks, [0, 20, 44], atol=4)


def test_moving_frames_translate_by_the_requested_step():
    f = moving_frames(3, dx=2, dy=0)
    np.testing.assert_array_equal(f[1, 10:40, 12:50], f[0, 10:40, 10:48])
