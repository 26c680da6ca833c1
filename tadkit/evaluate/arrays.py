"""Vectorised lookups the evaluation uses instead of pandas (which costs half a second to import).

Prediction columns such as ``video`` are object arrays made of long runs of one
value (a results file lists each video's predictions together): lookups then
go once per run, not once per entry.
"""
from __future__ import annotations

from itertools import repeat
from typing import Sequence

import numpy as np

#: a lookup goes run by run when the first ``_PROBE`` values hold fewer than
#: ``_PROBE // _RUN_RATIO`` runs (and the whole column as well).
_PROBE = 4096
_RUN_RATIO = 8


def encode(keys: Sequence, values: np.ndarray) -> np.ndarray:
    """(N,) int64 position of each value in ``keys`` (unique); -1 where absent.

    Integer keys and values: a table indexed by value when the keys span a range
    not much larger than the inputs, else a binary search over the sorted keys;
    anything else: one dictionary lookup per value, or per run of equal values
    (in C, via ``map``).
    """
    values = np.asarray(values)
    if isinstance(keys, np.ndarray) and keys.dtype.kind in "iu" and values.dtype.kind in "iu":
        if len(keys) == 0:
            return np.full(len(values), -1, dtype=np.int64)
        low, high = int(keys.min()), int(keys.max())
        if high - low < 4 * (len(keys) + len(values)):
            table = np.full(high - low + 2, -1, dtype=np.int64)     # last slot: outside the range
            table[keys - low] = np.arange(len(keys))
            outside = (values < low) | (values > high)
            return table[np.where(outside, high - low + 1, values - low)]
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        pos = np.minimum(np.searchsorted(sorted_keys, values), len(keys) - 1)
        return np.where(sorted_keys[pos] == values, order[pos], -1).astype(np.int64)
    found = _by_runs(values)
    if found is not None:
        starts, lengths = found
        return np.repeat(encode(keys, values[starts]), lengths)
    index = {k: i for i, k in enumerate(keys.tolist() if isinstance(keys, np.ndarray) else keys)}
    return np.fromiter(map(index.get, values.tolist(), repeat(-1)), dtype=np.int64, count=len(values))


def member(values: np.ndarray, pool: set) -> np.ndarray:
    """(N,) bool: ``values[i] in pool``."""
    if len(values) == 0 or not pool:
        return np.zeros(len(values), dtype=bool)
    values = np.asarray(values)
    found = _by_runs(values)
    if found is not None:
        starts, lengths = found
        return np.repeat(member(values[starts], pool), lengths)
    return np.fromiter(map(pool.__contains__, values.tolist()), dtype=bool, count=len(values))


def distinct(values: np.ndarray) -> list:
    """The distinct values of a 1-d array in order of first appearance."""
    values = np.asarray(values)
    found = _by_runs(values)
    return list(dict.fromkeys((values[found[0]] if found is not None else values).tolist()))


def stable_argsort(codes: np.ndarray) -> np.ndarray:
    """``np.argsort(codes, kind="stable")`` of integer codes; codes that fit 16 bits are
    sorted as int16, which numpy radix-sorts (a stable order is unique: same result)."""
    if len(codes) and codes.dtype.kind in "iu" and -(1 << 15) <= codes.min() and codes.max() < 1 << 15:
        codes = codes.astype(np.int16)
    return np.argsort(codes, kind="stable")


def runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of equal consecutive values: (first index (R,), length (R,)), int64."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return starts, np.diff(np.append(starts, n))


# --------------------------------------------------------------------------- helpers
def _by_runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`runs` of an object column when its runs are long, else None (a probe of
    the first values decides whether the full pass is worth it)."""
    n = len(values)
    if values.dtype != object or n < 2 * _PROBE:
        return None
    head = values[:_PROBE]
    if np.count_nonzero(head[1:] != head[:-1]) >= _PROBE // _RUN_RATIO:
        return None
    starts, lengths = runs(values)
    return (starts, lengths) if len(starts) * _RUN_RATIO <= n else None
