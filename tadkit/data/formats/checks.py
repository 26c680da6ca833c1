"""Field checks shared by every annotation reader and the prediction reader.

Each check takes the file ``p`` and a ``where`` that locates the value in it
(``database['v'].annotations[2].segment``) and either returns a clean value or
raises :class:`~tadkit.errors.InputError` naming both. Numbers may be JSON
numbers or numeric strings (the official ActivityNet code reads segments with
``float()``, so ``"12.5"`` is a number there too); booleans never are.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from tadkit.errors import InputError


def mapping(p: Path | str, x: Any, where: str) -> Mapping[str, Any]:
    """``x`` if it is a JSON object."""
    if not isinstance(x, dict):
        raise InputError(p, f"{where}: expected an object, got {kind(x)}")
    return x


def sequence(p: Path | str, x: Any, where: str) -> list[Any]:
    """``x`` if it is a JSON list."""
    if not isinstance(x, list):
        raise InputError(p, f"{where}: expected a list, got {kind(x)}")
    return x


def video_id(p: Path | str, vid: Any, where: str) -> str:
    """A non-empty video id."""
    if not isinstance(vid, str) or not vid.strip():
        raise InputError(p, f"{where}: empty video id")
    return vid


def number(p: Path | str, x: Any, where: str) -> float:
    """A finite float from a JSON number or a numeric string."""
    if isinstance(x, str):
        return parse_float(p, x, where)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise InputError(p, f"{where}: expected a number, got {kind(x)}")
    try:
        v = float(x)
    except OverflowError:
        v = math.inf
    if not math.isfinite(v):
        raise InputError(p, f"{where}: expected a finite number, got {short(x)}")
    return v


def opt_number(p: Path | str, x: Any, where: str, positive: bool = False) -> float:
    """:func:`number`, NaN for a missing (``None``) value; ``positive`` refuses <= 0."""
    if x is None:
        return math.nan
    v = number(p, x, where)
    if positive and v <= 0:
        raise InputError(p, f"{where}: must be positive, got {short(x)}")
    return v


def opt_str(p: Path | str, x: Any, where: str) -> str | None:
    """A string or ``None``."""
    if x is None or isinstance(x, str):
        return x
    raise InputError(p, f"{where}: expected a string, got {kind(x)}")


def segment(p: Path | str, entry: Mapping[str, Any], where: str) -> tuple[float, float]:
    """``entry["segment"]`` as ``(start, end)`` seconds (not yet checked for order)."""
    if "segment" not in entry:
        raise InputError(p, f"{where} has no 'segment'")
    x = entry["segment"]
    if not isinstance(x, (list, tuple)) or len(x) != 2:
        raise InputError(p, f"{where}.segment: expected [start, end] in seconds, got {short(x)}")
    return number(p, x[0], f"{where}.segment[0]"), number(p, x[1], f"{where}.segment[1]")


def label(p: Path | str, entry: Mapping[str, Any], where: str, required: bool = True) -> str | None:
    """``entry["label"]``: a non-empty class name; an integer class id becomes its
    decimal string (the official code takes integer labels too)."""
    if "label" not in entry:
        if required:
            raise InputError(p, f"{where} has no 'label'")
        return None
    x = entry["label"]
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    if not isinstance(x, str) or not x.strip():
        raise InputError(p, f"{where}.label: expected a non-empty class name, got {short(x)}")
    return x


def score(p: Path | str, entry: Mapping[str, Any], where: str) -> int | float:
    """``entry["score"]`` as written (int or float: the dtype decides how ties rank)."""
    if "score" not in entry:
        raise InputError(p, f"{where} has no 'score'")
    x = entry["score"]
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise InputError(p, f"{where}.score: score must be a number, got {kind(x)}")
    if isinstance(x, float) and not math.isfinite(x):
        raise InputError(p, f"{where}.score: score is {x!r} (NaN/inf scores cannot be ranked)")
    if isinstance(x, int):
        try:
            float(x)
        except OverflowError:
            raise InputError(p, f"{where}.score: score {short(x)} is beyond a float's range") from None
    return x


def parse_float(p: Path | str, text: str, where: str, positive: bool = False) -> float:
    """A finite float from text (CSV cells, txt columns, numeric JSON strings)."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise InputError(p, f"{where}: expected a number, got {short(text)}") from None
    if not math.isfinite(v):
        raise InputError(p, f"{where}: expected a finite number, got {short(text)}")
    if positive and v <= 0:
        raise InputError(p, f"{where}: must be positive, got {short(text)}")
    return v


def first_nonfinite(start: np.ndarray, end: np.ndarray) -> int | None:
    """Index of the first row whose start or end is NaN/inf, or None."""
    bad = np.flatnonzero(~(np.isfinite(start) & np.isfinite(end)))
    return int(bad[0]) if bad.size else None


def inverted(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """(N,) bool: end before start."""
    return end < start


def kind(x: Any) -> str:
    """``null`` or the type name and a short repr, for messages."""
    return "null" if x is None else f"{type(x).__name__} {short(x)}"


def short(x: Any, limit: int = 40) -> str:
    """``repr(x)`` cut to ``limit`` characters."""
    text = repr(x)
    return text if len(text) <= limit else text[:limit - 3] + "..."
