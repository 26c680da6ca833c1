"""Progress for long work: a bar on a terminal, plain lines at a fixed interval elsewhere.

Every stage uses :func:`progress_bar` / :func:`track`, so the rule is the same
everywhere: a bar on stderr when it is a terminal (or when forced with
``enabled=True``); when stderr is a log file or a pipe, :func:`track` prints a
plain line such as ``infer: 120/212 batches (57%), 3.1 batches/s, 39 s left``
every ``interval`` seconds (default 30, or ``TADKIT_PROGRESS_INTERVAL``;
0 turns the lines off), so a long run is never silent in a log.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator, TypeVar

T = TypeVar("T")

#: seconds between plain progress lines when stderr is not a terminal
DEFAULT_INTERVAL = 30.0


def progress_bar(total: int, desc: str, unit: str, enabled: bool | None = None, leave: bool = True) -> Any:
    """A tqdm bar over ``total`` items, or ``None`` when it should not be drawn.

    ``enabled``: ``None`` shows the bar only when stderr is a terminal.
    """
    show = sys.stderr.isatty() if enabled is None else enabled
    if not show or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=leave)


def track(items: Iterable[T], total: int, desc: str, unit: str, enabled: bool | None = None,
          leave: bool = True, interval: float | None = None) -> Iterator[T]:
    """Iterate ``items`` with a bar (terminal) or plain lines every ``interval`` seconds.

    ``enabled``: ``None`` picks by stderr (bar on a terminal, lines otherwise),
    ``True`` forces the bar, ``False`` keeps quiet.
    """
    bar = progress_bar(total, desc, unit, enabled, leave)
    lines = enabled is None and bar is None and total > 0
    every = _interval() if interval is None else float(interval)
    start = last = time.monotonic()
    done = 0
    try:
        for item in items:
            yield item
            done += 1
            if bar is not None:
                bar.update(1)
            elif lines and every > 0 and time.monotonic() - last >= every:
                last = time.monotonic()
                print(progress_line(desc, unit, done, total, last - start), file=sys.stderr, flush=True)
    finally:
        if bar is not None:
            bar.close()


def progress_line(desc: str, unit: str, done: int, total: int, elapsed: float) -> str:
    """``"desc: done/total units (p%), r units/s, s s left"``."""
    rate = done / elapsed if elapsed > 0 else 0.0
    units = unit + ("es" if unit.endswith(("ch", "s")) else "s")
    eta = f", {(total - done) / rate:.0f} s left" if rate > 0 else ""
    return f"{desc}: {done}/{total} {units} ({100 * done / max(total, 1):.0f}%), {rate:.2f} {units}/s{eta}"


def _interval() -> float:
    raw = os.environ.get("TADKIT_PROGRESS_INTERVAL")
    if raw is None:
        return DEFAULT_INTERVAL
    try:
        return max(0.0, float(raw))
    except ValueError:
        return DEFAULT_INTERVAL
