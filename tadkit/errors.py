"""Exceptions for problems a user can fix.

Every expected failure (a missing file, malformed input, a provenance mismatch,
a bad option) raises a subclass of :class:`TadkitError`. The CLI turns these
into a single ``error: ...`` line and a non-zero exit code; anything else is a
bug and keeps its traceback.
"""
from __future__ import annotations

from pathlib import Path


class TadkitError(Exception):
    """Base class of every error the user can act on."""


class InputError(TadkitError):
    """A file the user gave is missing, unreadable or malformed.

    The message always names the file and, where there is one, the first
    offending entry.
    """

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


class OutputError(TadkitError):
    """A file tadkit writes cannot be written (no space left, no permission, ...).

    The message names the file; nothing half-written is left behind.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ConfigError(TadkitError):
    """A configuration key is unknown, missing or has the wrong type."""


class ProvenanceError(TadkitError):
    """Features do not match what the caller (or a checkpoint) expects."""
