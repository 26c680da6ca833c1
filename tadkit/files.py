"""Reading the text and JSON files users hand to tadkit, with errors that name them.

Every stage reads annotation, prediction, score and run files through these two
functions, so a missing file, a folder, non-UTF-8 bytes or malformed JSON give
the same one-line :class:`~tadkit.errors.InputError` everywhere.
"""
from __future__ import annotations

import gc
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tadkit.errors import InputError

try:  # optional, faster parser
    import orjson
except ImportError:  # pragma: no cover - the standard library does the same, slower
    orjson = None


def read_text(path: str | os.PathLike) -> str:
    """The file's text (UTF-8, a leading byte-order mark ignored)."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(p, "file not found") from None
    except IsADirectoryError:
        raise InputError(p, "is a directory, expected a file") from None
    except UnicodeDecodeError as exc:
        raise InputError(p, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputError(p, f"unreadable ({exc.strerror or exc})") from None


def read_json(path: str | os.PathLike) -> Any:
    """The file parsed as JSON; malformed JSON names the line and column.

    orjson parses when it is installed (several times faster on the large
    prediction files); whatever it refuses (``NaN`` literals, numbers beyond a
    double's range, lone surrogates, malformed JSON) is parsed again by the
    standard library, so what is accepted and the error messages are the
    standard library's. One difference remains: orjson reads an integer of
    2**64 or more as a float (as a score or a time it ends up the same float64
    either way).
    """
    if orjson is not None:
        try:
            data = Path(path).read_bytes()
            with gc_paused():
                return orjson.loads(data[3:] if data.startswith(b"\xef\xbb\xbf") else data)
        except (OSError, orjson.JSONDecodeError):
            pass
    text = read_text(path)
    try:
        with gc_paused():
            return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InputError(path, "JSON nested too deeply") from None
    except ValueError:  # Python refuses integers of more than 4,300 digits
        raise InputError(path, "malformed JSON: a number has more than 4300 digits") from None


@contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector while a large tree of fresh objects is built.

    Parsing creates millions of lists and dicts, each of which counts towards
    the next collection, and every collection walks all of them again: with
    the collector running, parsing a 50 MB prediction file takes several times
    longer. Nothing cyclic is created meanwhile, so nothing is lost.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
