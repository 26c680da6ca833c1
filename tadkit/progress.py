"""Progress of long work: a bar on a terminal, plain timed lines in logs and pipes.

:func:`progress_bar` shows a tqdm bar on stderr when it is a terminal (or when forced with
``enabled=True``). :class:`Progress` adds the log-friendly mode: when stderr is a log file or a
pipe it prints one plain line every ``$TADKIT_PROGRESS_INTERVAL`` seconds (30 by default; 0
prints at every step, ``off`` prints nothing), so a long run is never silent in a log::

    epoch 3: 27/47 batches (57%), 31 s, 0.87 batches/s, 23 s left

:func:`track` iterates with a :class:`Progress` (training epochs, inference batches);
:class:`VideoProgress` counts videos but advances within a video, snippet by snippet
(``tadkit extract``).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator, TypeVar

T = TypeVar("T")

#: Seconds between plain progress lines when stderr is not a terminal (``TADKIT_PROGRESS_INTERVAL``).
DEFAULT_INTERVAL = 30.0


def progress_bar(total: int, desc: str, unit: str, enabled: bool | None = None, leave: bool = True) -> Any:
    """A tqdm bar over ``total`` items, or ``None`` when it should stay quiet.

    ``enabled``: ``None`` shows the bar only when stderr is a terminal.
    """
    show = sys.stderr.isatty() if enabled is None else enabled
    if not show or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=leave)


def track(items: Iterable[T], total: int, desc: str, unit: str, enabled: bool | None = None,
          leave: bool = True, interval: float | None = None) -> Iterator[T]:
    """Iterate ``items`` with a :class:`Progress` advanced by one per item (rate and time left shown).

    ``enabled``: ``None`` picks by stderr (bar on a terminal, plain lines otherwise),
    ``True`` forces the bar, ``False`` keeps quiet.
    """
    progress = Progress(total, desc, unit, enabled, interval=interval, leave=leave)
    units = _plural_unit(unit)
    try:
        for item in items:
            yield item
            elapsed = progress.clock() - progress.start
            rate = (progress.done + 1) / elapsed if elapsed > 0 else 0.0
            left = f", {_duration((total - progress.done - 1) / rate)} left" if rate > 0 else ""
            progress.update(1, f"{rate:.2f} {units}/s{left}")
    finally:
        progress.close()


class Progress:
    """Progress of long work over ``total`` units, advanced in fractions of a unit if need be.

    Shown as a tqdm bar when stderr is a terminal (or ``enabled=True``); otherwise (logs, pipes,
    CI) as one plain line every ``interval`` seconds (default ``$TADKIT_PROGRESS_INTERVAL``, else
    :data:`DEFAULT_INTERVAL`; 0: at every update; negative or ``off``: never)::

        extract: 3.4/10 videos (34%), 5 min 12 s, video_test_0000004 1200/4500 snippets, 12.3 snippets/s

    ``enabled=False`` shows nothing. ``status`` is the text after the counts.
    """

    def __init__(self, total: float, desc: str, unit: str, enabled: bool | None = None,
                 interval: float | None = None, stream: Any = None, clock: Any = None, leave: bool = True):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = sys.stderr if stream is None else stream
        self.clock = time.monotonic if clock is None else clock
        self.done, self.status = 0.0, ""
        self.interval = _interval() if interval is None else float(interval)
        tty = enabled is True or (enabled is None and self.stream.isatty())
        self.bar = progress_bar(total, desc, unit, True, leave) if tty else None
        self.lines = enabled is None and not tty and total > 0 and self.interval >= 0
        self.start = self.last = self.clock()

    def update(self, amount: float, status: str | None = None) -> None:
        """Advance by ``amount`` units (may be fractional); ``status`` replaces the status text."""
        self.done = min(self.total, self.done + amount)
        if status is not None:
            self.status = status
        if self.bar is not None:
            self.bar.update(amount)
            if status is not None:
                self.bar.set_postfix_str(status, refresh=False)
        elif self.lines and self.clock() - self.last >= self.interval:
            self.last = self.clock()
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        """The plain progress line."""
        pct = 100.0 * self.done / self.total if self.total else 100.0
        count = f"{self.done:.1f}" if self.done % 1 else f"{int(self.done)}"
        text = (f"{self.desc}: {count}/{self.total:g} {_plural_unit(self.unit)} ({pct:.0f}%), "
                f"{_duration(self.clock() - self.start)}")
        return f"{text}, {self.status}" if self.status else text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class VideoProgress:
    """Progress over videos that advances within a video, snippet by snippet.

    ``start(video, snippets)`` when a video's snippet count is known, ``advance(video, n)`` after
    ``n`` of its snippets, ``finish(video)`` when it is written or failed; a long video thus
    moves the bar (or the plain lines) instead of sitting at 0 % for minutes. The status shows
    the current video, its snippets and the snippet rate.
    """

    def __init__(self, total_videos: int, desc: str, enabled: bool | None = None, **kw: Any):
        self.progress = Progress(total_videos, desc, "video", enabled, **kw)
        self.sizes: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.snippets = 0
        self.failed = 0

    def start(self, video: str, snippets: int | None) -> None:
        """``video`` (re)starts with ``snippets`` to compute (``None``: not known yet)."""
        share = self._fraction(video)  # a restart (another decoder) gives back its share
        self.done[video] = 0
        if snippets:
            self.sizes[video] = int(snippets)
        self.progress.update(-share, self._status(video))

    def advance(self, video: str, n: int) -> None:
        """``n`` more snippets of ``video`` are computed."""
        before = self._fraction(video)
        self.done[video] = self.done.get(video, 0) + int(n)
        self.snippets += int(n)
        self.progress.update(self._fraction(video) - before, self._status(video))

    def finish(self, video: str, failed: bool = False) -> None:
        """``video`` is written (or failed): it counts as one whole video."""
        self.failed += bool(failed)
        self.progress.update(1.0 - self._fraction(video), self._status(video))
        self.sizes.pop(video, None)
        self.done.pop(video, None)

    def close(self) -> None:
        self.progress.close()

    def _fraction(self, video: str) -> float:
        size = self.sizes.get(video)
        return min(1.0, self.done.get(video, 0) / size) if size else 0.0

    def _status(self, video: str) -> str:
        rate = self.snippets / max(1e-9, self.progress.clock() - self.progress.start)
        size = self.sizes.get(video)
        here = f"{video} {self.done.get(video, 0)}/{size} snippets, " if size else ""
        return f"{here}{rate:.1f} snippets/s, {self.failed} failed"


def _plural_unit(unit: str) -> str:
    return unit + ("es" if unit.endswith(("ch", "s", "x")) else "s")


def _interval() -> float:
    """``$TADKIT_PROGRESS_INTERVAL`` in seconds (``off`` or a negative number: -1, no lines)."""
    raw = os.environ.get("TADKIT_PROGRESS_INTERVAL", "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    if raw.lower() == "off":
        return -1.0
    try:
        return float(raw)
    except ValueError:
        return DEFAULT_INTERVAL


def _duration(seconds: float) -> str:
    """``"42 s"``, ``"5 min 12 s"``, ``"2 h 03 min"``."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
