"""Reading the files users hand to tadkit, with errors that name them.

Every stage reads annotation, prediction, score, config and run files through
these functions, so a missing file, a folder, non-UTF-8 bytes, malformed JSON
or a number too long to convert give the same one-line
:class:`~tadkit.errors.InputError` everywhere (PyTorch checkpoints:
:mod:`tadkit.checkpoints`).
"""
from __future__ import annotations

import gc
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tadkit.errors import InputError

try:  # optional, faster parser
    import msgspec
except ImportError:  # pragma: no cover - the standard library does the same, slower
    msgspec = None

#: the UTF-8 byte-order mark some editors write in front of a file (ignored).
BOM = b"\xef\xbb\xbf"


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

    msgspec parses when it is installed (several times faster than the standard
    library on the large prediction files, and it reads every number as the
    standard library does: integers of any size stay integers); whatever it
    refuses (``NaN`` literals, numbers beyond a double's range, lone surrogates,
    malformed JSON) is parsed again by the standard library, so what is accepted
    and the error messages are the standard library's.
    """
    if msgspec is not None:
        try:
            data = Path(path).read_bytes()
            with gc_paused():
                return msgspec.json.decode(memoryview(data)[len(BOM):] if data.startswith(BOM)
                                           else data)
        except (OSError, msgspec.DecodeError, ValueError, RecursionError):
            pass
    text = read_text(path)
    try:
        with gc_paused():
            return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InputError(path, "JSON nested too deeply") from None
    except ValueError as exc:  # Python refuses integers of more than 4,300 digits (sys.get_int_max_str_digits)
        raise InputError(path, f"malformed JSON: {number_problem(exc)}") from None


def number_problem(exc: ValueError) -> str:
    """What a ``ValueError`` from parsing a number says, in one short clause."""
    m = re.search(r"limit \((\d+) digits\)", str(exc))
    if m:
        return f"a number has more than {m.group(1)} digits"
    return " ".join(str(exc).split())[:200]


@contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector while a large tree of fresh objects is built.

    Parsing creates millions of lists and dicts, each of which counts towards
    the next collection, and every collection walks all of them again: with
    the collector running, parsing a 50 MB prediction file takes several times
    longer. Nothing cyclic is created meanwhile, so nothing is lost. The next
    collection after the pause still walks every container object created during
    it that is alive then: a caller that only needs arrays from a large file
    should build them and drop the parsed tree inside the pause.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
