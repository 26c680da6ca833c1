"""Progress bars for long work: shown on a terminal, silent otherwise.

Every stage uses :func:`progress_bar`, so the rule is the same everywhere:
a bar on stderr when it is a terminal (or when forced with ``enabled=True``),
nothing at all in logs, pipes and CI.
"""
from __future__ import annotations

import sys
from typing import Any, Iterable, Iterator, TypeVar

T = TypeVar("T")


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
          leave: bool = True) -> Iterator[T]:
    """Iterate ``items``, advancing a :func:`progress_bar` (if shown) by one per item."""
    bar = progress_bar(total, desc, unit, enabled, leave)
    try:
        for item in items:
            yield item
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
