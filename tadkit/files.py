"""Reading the files users hand to tadkit, with errors that name them.

Every stage reads annotation, prediction, score, config and run files through
these functions, so a missing file, a folder, non-UTF-8 bytes, malformed JSON
or a number too long to convert give the same one-line
:class:`~tadkit.errors.InputError` everywhere (PyTorch checkpoints:
:mod:`tadkit.checkpoints`).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from tadkit.errors import InputError


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
    """The file parsed as JSON; malformed JSON names the line and column."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InputError(path, "JSON nested too deeply") from None
    except ValueError as exc:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        raise InputError(path, f"malformed JSON: {number_problem(exc)}") from None


def number_problem(exc: ValueError) -> str:
    """What a ``ValueError`` from parsing a number says, in one short clause."""
    m = re.search(r"limit \((\d+) digits\).*?has (\d+) digits", str(exc))
    if m:
        return f"an integer with {m.group(2)} digits, more than the {m.group(1)} Python converts"
    return " ".join(str(exc).split())[:200]

