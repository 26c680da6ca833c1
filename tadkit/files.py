"""Reading the text and JSON files users hand to tadkit, with errors that name them.

Every stage reads annotation, prediction, score and run files through these two
functions, so a missing file, a folder, non-UTF-8 bytes or malformed JSON give
the same one-line :class:`~tadkit.errors.InputError` everywhere.
"""
from __future__ import annotations

import json
import os
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
