"""Video input: finding videos, decoding frames, planning snippets.

* :func:`collect_videos` turns command-line inputs (folders, list files,
  paths) into video files; the **video id is the file name stem**
  (``videos/abc.mp4`` -> ``abc``) and two inputs with the same stem are an
  error.
* :func:`open_video` opens a file with decord (batched random access via
  ``get_batch``) or, when decord cannot open it, PyAV (sequential decoding);
  a file neither can read raises :class:`VideoError` with both reasons.
  Readers return RGB ``uint8`` frames ``[N, H, W, 3]`` for the indices asked
  for -- never the whole video.
* :func:`plan_snippets` maps the sample-fps frame grid to source frames
  (``timeline.resample_indices``; by presentation times for variable frame
  rate) and lays snippets over it (``timeline.snippet_frame_indices``: the
  tail gets a snippet padded with the last frame).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Protocol, Sequence

import numpy as np

from tadkit import timeline
from tadkit.errors import InputError

#: Files whose arguments are read as lists of video paths (one per line).
LIST_SUFFIXES = (".txt", ".lst", ".list")


class VideoError(Exception):
    """A video cannot be decoded. ``stage`` says where it failed (open/decode)."""

    def __init__(self, path: str | Path, reason: str, stage: str = "decode"):
        self.path = str(path)
        self.reason = reason
        self.stage = stage
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class VideoInfo:
    """What a reader knows about a video before decoding it.

    ``num_frames`` source frames at average frame rate ``fps`` (frames/s);
    ``frame_times`` are presentation times in seconds (``None`` if unknown);
    ``duration`` in seconds.
    """

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    duration: float
    backend: str
    frame_times: np.ndarray | None = None

    @property
    def variable_frame_rate(self) -> bool:
        """True when frame times stray from the ``k / fps`` grid by over a quarter frame."""
        if self.frame_times is None or len(self.frame_times) < 3:
            return False
        t = self.frame_times - self.frame_times[0]
        grid = timeline.frame_to_seconds(np.arange(len(t)), self.fps)
        return bool(np.max(np.abs(t - grid)) > 0.25 / self.fps)


class VideoReader(Protocol):
    """A decoder: ``info`` and ``get_frames(indices)`` -> ``[N, H, W, 3]`` uint8 RGB."""

    info: VideoInfo

    def get_frames(self, indices: Sequence[int]) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SnippetPlan:
    """Where every snippet of one video reads its frames.

    ``source_index [F]``: source frame of each sample-fps frame;
    ``frame_indices [S, clip_len]``: sample-fps frames of each snippet (tail
    padded with the last frame); ``centers [S]``: snippet centre times in
    seconds; ``fps``: sample fps; ``duration``: seconds of the source video.
    """

    source_index: np.ndarray
    frame_indices: np.ndarray
    centers: np.ndarray
    fps: float
    clip_len: int
    stride: int
    duration: float

    @property
    def num_frames(self) -> int:
        return int(len(self.source_index))

    @property
    def num_snippets(self) -> int:
        return int(self.frame_indices.shape[0])

    def batches(self, batch_size: int) -> Iterator[slice]:
        """Consecutive snippet ranges of at most ``batch_size`` snippets."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        for s0 in range(0, self.num_snippets, batch_size):
            yield slice(s0, min(s0 + batch_size, self.num_snippets))


# --------------------------------------------------------------------------- public API
def video_id(path: str | os.PathLike) -> str:
    """The id of a video file: its name without the last suffix."""
    return Path(path).stem


#: Suffixes a folder scan skips: files that sit next to videos but are never videos.
NOT_VIDEO_SUFFIXES = frozenset({
    ".json", ".txt", ".lst", ".list", ".csv", ".tsv", ".md", ".yaml", ".yml", ".xml", ".log",
    ".h5", ".hdf5", ".npy", ".npz", ".pkl", ".pt", ".pth", ".jpg", ".jpeg", ".png", ".bmp",
    ".srt", ".vtt", ".zip", ".tar", ".gz",
})


def collect_videos(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Video files named by ``inputs``, in order, without repeats.

    Each input is a folder (every non-hidden regular file directly inside,
    sorted; files with a suffix in :data:`NOT_VIDEO_SUFFIXES` -- annotations,
    lists, images, checkpoints -- are left out, any other file, and any
    dangling or looping symbolic link, is kept so that a broken or unknown one
    is reported, not silently skipped), a list file (``.txt``/``.lst``/``.list``: one path per line,
    relative to the list file; ``#`` starts a comment) or a video path.
    Raises :class:`InputError` for a missing input or two videos with the
    same id (file stem).
    """
    found: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found.extend(sorted(c for c in p.iterdir() if (c.is_file() or _broken_link(c))
                                and not c.name.startswith(".") and c.suffix.lower() not in NOT_VIDEO_SUFFIXES))
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            found.extend(_read_list_file(p))
        elif p.is_file():
            found.append(p)
        else:
            raise InputError(p, "no such file or folder")
    unique: list[Path] = []
    seen: dict[str, Path] = {}
    for p in found:
        vid = video_id(p)
        if vid in seen:
            if seen[vid].resolve() == p.resolve():
                continue
            raise InputError(p, f"video id {vid!r} (the file name stem) is also used by {seen[vid]}; "
                             "rename one of them")
        seen[vid] = p
        unique.append(p)
    return unique


def open_video(path: str | os.PathLike, backend: str = "auto") -> VideoReader:
    """A reader for ``path``: ``decord``, ``pyav``, or ``auto`` (decord, then PyAV).

    Raises :class:`VideoError` (stage ``open``) with a reason naming what is
    wrong: no such file, no video stream, no decodable frames, ...; and
    (stage ``truncated``) when fewer frames are readable than the container
    declares (a cut-off or damaged file: extracting it would silently lose
    its end).
    """
    path = Path(path)
    if _broken_link(path):
        raise VideoError(path, _link_problem(path), stage="open")
    if not path.is_file():
        raise VideoError(path, "no such file", stage="open")
    if path.stat().st_size == 0:
        raise VideoError(path, "empty file", stage="open")
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"unknown video backend {backend!r}")
    declared = _probe(path)  # clear reasons (not a video, no video stream) before decord's own noise
    errors = []
    if backend in ("auto", "decord"):
        try:
            reader: VideoReader = DecordReader(path)
            _check_complete(reader.info, *declared)
            return reader
        except VideoError as exc:
            if backend == "decord" or exc.stage == "truncated":
                raise
            errors.append(f"decord: {exc.reason}")
    try:
        reader = PyAVReader(path)
        _check_complete(reader.info, *declared)
        return reader
    except VideoError as exc:
        if not errors:
            raise
        errors.append(f"pyav: {exc.reason}")
    raise VideoError(path, "cannot be decoded (" + "; ".join(errors) + ")", stage="open")


def set_decoder_logging(verbose: bool) -> None:
    """Let FFmpeg's log lines (decord's and PyAV's) through, or silence them.

    Silenced, a damaged video gives one failure reason instead of dozens of
    ``[h264 @ 0x...]`` lines; ``tadkit --debug extract`` lets them through.
    """
    import av.logging

    av.logging.set_level(av.logging.WARNING if verbose else None)
    try:
        import decord
    except ImportError:  # pragma: no cover - decord is a dependency
        return
    decord.logging.set_level(decord.logging.WARNING if verbose else decord.logging.QUIET)


def plan_snippets(info: VideoInfo, clip_len: int, stride: int, fps: float | None = None) -> SnippetPlan:
    """Snippets covering the whole video at sample fps ``fps`` (default: the video's own).

    Constant-frame-rate videos are resampled by frame index
    (``timeline.resample_indices``); variable-frame-rate videos by presentation
    time (``timeline.resample_timestamps``), also when no ``fps`` is given
    (they are then sampled at their average fps).
    """
    if info.num_frames < 1:
        raise VideoError(info.path, "the video has no frames")
    target = float(fps) if fps else float(info.fps)
    if info.variable_frame_rate:
        times = info.frame_times - info.frame_times[0]
        source = timeline.resample_timestamps(times, info.duration, target)
    elif fps:
        source = timeline.resample_indices(info.num_frames, info.fps, target)
    else:
        source = np.arange(info.num_frames, dtype=np.int64)
    n = len(source)
    return SnippetPlan(
        source_index=source,
        frame_indices=timeline.snippet_frame_indices(n, clip_len, stride),
        centers=timeline.snippet_centers(n, clip_len, stride, target),
        fps=target,
        clip_len=int(clip_len),
        stride=int(stride),
        duration=info.duration if info.variable_frame_rate
        else float(timeline.frame_to_seconds(info.num_frames, info.fps)),
    )


# --------------------------------------------------------------------------- readers
class DecordReader:
    """decord-backed reader: random access, batched decoding with ``get_batch``."""

    def __init__(self, path: Path, num_threads: int = 1):
        try:
            import decord
        except ImportError as exc:  # pragma: no cover - decord is a dependency
            raise VideoError(path, f"decord is not installed ({exc})", stage="open") from None
        try:
            vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=num_threads)
            n = len(vr)
            if n < 1:
                raise VideoError(path, "no frames", stage="open")
            fps = float(vr.get_avg_fps())
            h, w = vr[0].shape[:2]
            vr.seek(0)
            times = np.asarray(vr.get_frame_timestamp(np.arange(n)), dtype=np.float64)[:, 0]
        except VideoError:
            raise
        except Exception as exc:  # decord raises its own DECORDError / RuntimeError
            raise VideoError(path, _short(exc), stage="open") from None
        if not fps > 0 or not np.isfinite(fps):
            raise VideoError(path, f"invalid frame rate {fps}", stage="open")
        self._vr = vr
        duration = _duration(times, n, fps)
        self.info = VideoInfo(str(path), n, fps, int(w), int(h), duration, "decord",
                              times if np.all(np.isfinite(times)) else None)

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) == 0:
            return np.zeros((0, self.info.height, self.info.width, 3), np.uint8)
        if idx.min() < 0 or idx.max() >= self.info.num_frames:
            raise IndexError(f"frame index out of range 0..{self.info.num_frames - 1}")
        try:
            frames = self._vr.get_batch(idx.tolist()).asnumpy()
        except Exception as exc:
            raise VideoError(self.info.path, f"decoding failed at frames {idx.min()}..{idx.max()}: "
                             f"{_short(exc)}") from None
        return _check_frames(frames, len(idx), self.info)

    def close(self) -> None:
        self._vr = None


class PyAVReader:
    """PyAV-backed reader: sequential decoding; requests should come in increasing order.

    Frames are counted by demuxing packets (no decoding). A request for an
    earlier frame than the decoder's position restarts decoding from the start.
    """

    def __init__(self, path: Path):
        import av

        self._path = path
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise VideoError(path, "no video stream", stage="open")
                stream = container.streams.video[0]
                tb = float(stream.time_base) if stream.time_base else None
                pts = []
                for packet in container.demux(stream):
                    if packet.size == 0:
                        continue
                    stamp = packet.pts if packet.pts is not None else packet.dts
                    pts.append(np.nan if stamp is None or tb is None else stamp * tb)
                rate = stream.average_rate or stream.guessed_rate or stream.base_rate
                w, h = stream.codec_context.width, stream.codec_context.height
        except VideoError:
            raise
        except Exception as exc:  # av.error.* (InvalidDataError, ...)
            raise VideoError(path, _short(exc), stage="open") from None
        n = len(pts)
        if n == 0:
            raise VideoError(path, "the video stream holds no frames", stage="open")
        fps = float(rate) if rate else float("nan")
        times = np.sort(np.asarray(pts, dtype=np.float64))
        if not (fps > 0 and np.isfinite(fps)):
            if np.all(np.isfinite(times)) and n > 1 and times[-1] > times[0]:
                fps = (n - 1) / (times[-1] - times[0])
            else:
                raise VideoError(path, "unknown frame rate", stage="open")
        self.info = VideoInfo(str(path), n, fps, int(w), int(h), _duration(times, n, fps), "pyav",
                              times if np.all(np.isfinite(times)) else None)
        self._container = None
        self._frames: Iterator | None = None
        self._pos = 0

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        out = np.zeros((len(idx), self.info.height, self.info.width, 3), np.uint8)
        if len(idx) == 0:
            return out
        if idx.min() < 0 or idx.max() >= self.info.num_frames:
            raise IndexError(f"frame index out of range 0..{self.info.num_frames - 1}")
        order = np.argsort(idx, kind="stable")
        last_i, last_frame = -1, None
        for j in order:
            i = int(idx[j])
            if i == last_i:
                out[j] = last_frame
                continue
            if self._frames is None or i < self._pos:
                self._restart()
            while self._pos <= i:
                frame = self._next_frame(i)
                self._pos += 1
            last_i, last_frame = i, frame
            out[j] = frame
        return out

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._frames = None, None

    def _restart(self) -> None:
        import av

        self.close()
        try:
            self._container = av.open(str(self._path))
            stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            self._frames = self._container.decode(stream)
        except Exception as exc:
            raise VideoError(self._path, _short(exc)) from None
        self._pos = 0

    def _next_frame(self, wanted: int) -> np.ndarray:
        try:
            frame = next(self._frames)
        except StopIteration:
            raise VideoError(self._path, f"the decoder ended at frame {self._pos} while frame {wanted} "
                             f"of {self.info.num_frames} was needed (truncated or corrupt data)") from None
        except Exception as exc:
            raise VideoError(self._path, f"decoding failed at frame {self._pos}: {_short(exc)}") from None
        arr = frame.to_ndarray(format="rgb24")
        if arr.shape[:2] != (self.info.height, self.info.width):
            raise VideoError(self._path, f"frame {self._pos} has size {arr.shape[1]}x{arr.shape[0]}, "
                             f"the stream {self.info.width}x{self.info.height}")
        return arr


# --------------------------------------------------------------------------- helpers
def _probe(path: Path) -> tuple[int, float | None]:
    """The container's declared ``(frames, video duration in s)`` of its first video stream.

    Raises :class:`VideoError` if FFmpeg (via PyAV) sees no container or no
    video stream. ``frames`` is 0 and the duration ``None`` when not declared.
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams}) or ["no streams"]
                raise VideoError(path, f"no video stream (the file has: {', '.join(kinds)})", stage="open")
            stream = container.streams.video[0]
            frames = int(stream.frames or 0)
            duration = None
            if stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            else:
                tag = (stream.metadata or {}).get("DURATION")  # Matroska per-stream tag
                m = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d*)?)", tag or "")
                if m:
                    duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
            return frames, duration
    except VideoError:
        raise
    except Exception as exc:
        raise VideoError(path, f"not a readable video file ({_short(exc)})", stage="open") from None


def _check_complete(info: VideoInfo, frames: int, duration: float | None) -> None:
    """``VideoError`` (stage ``truncated``) if ``info`` has clearly fewer frames than declared.

    Allows one frame of slack (and 2 % of a declared duration) for containers
    that count a little differently.
    """
    short_frames = frames > 0 and info.num_frames < frames - 1
    slack = max(2.0 / info.fps, 0.02 * duration) if duration else 0.0
    short_time = duration is not None and frames <= 0 and info.duration < duration - slack
    if short_frames or short_time:
        declared = f"{frames} frames" if frames > 0 else f"{duration:.2f} s"
        raise VideoError(info.path, f"truncated or corrupt: the container declares {declared}, only "
                         f"{info.num_frames} frames ({info.duration:.2f} s) are readable", stage="truncated")


def _broken_link(path: Path) -> bool:
    """A symbolic link whose target does not exist (or that loops)."""
    return path.is_symlink() and not path.exists()


def _link_problem(path: Path) -> str:
    try:
        path.resolve(strict=True)
    except FileNotFoundError:
        return f"broken symbolic link (its target {os.readlink(path)!r} does not exist)"
    except (RuntimeError, OSError):
        return "symbolic link loop"
    return "unreadable symbolic link"


def _read_list_file(path: Path) -> list[Path]:
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"unreadable list file ({exc})") from None
    for lineno, line in enumerate(lines, 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        p = Path(entry)
        if not p.is_absolute():
            p = path.parent / p
        if not p.is_file():
            raise InputError(path, f"line {lineno}: no such video file {entry!r}")
        out.append(p)
    return out


def _duration(times: np.ndarray, n: int, fps: float) -> float:
    """Seconds from the first frame's start to the last frame's end."""
    if times is not None and len(times) == n and np.all(np.isfinite(times)) and n > 1:
        span = float(times[-1] - times[0])
        if span > 0:
            return span + span / (n - 1)
    return float(timeline.frame_to_seconds(n, fps))


def _check_frames(frames: np.ndarray, n: int, info: VideoInfo) -> np.ndarray:
    if frames.ndim != 4 or frames.shape[0] != n or frames.shape[3] != 3:
        raise VideoError(info.path, f"the decoder returned frames of shape {frames.shape}, expected "
                         f"[{n}, H, W, 3]")
    return np.ascontiguousarray(frames, dtype=np.uint8)


def _short(exc: BaseException) -> str:
    """One short line for an exception: no file path, no errno, no C++ source location."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else type(exc).__name__
    text = re.sub(r"\[Errno -?\d+\]\s*", "", text)
    text = re.sub(r"\[\d\d:\d\d:\d\d\]\s*\S+:\d+:\s*", "", text)
    text = re.sub(r":\s*'[^']*'$", "", text)
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}" if lines else text
