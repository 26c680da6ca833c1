"""CPU threads of a run: one ``--threads`` option and one rule for every compute command.

The number of CPU threads a command uses is, in order of precedence:

1. ``--threads N`` on the command line;
2. the ``TADKIT_THREADS`` environment variable;
3. the ``OMP_NUM_THREADS`` environment variable (set by many clusters and by torchrun);
4. :data:`DEFAULT_THREADS` (1).

The default is one thread because small and medium models (detection heads, inference,
post-processing) are fastest on one thread on a machine shared with other jobs, and because
CPU results depend on the thread count: with a fixed count a run is reproducible (see the
README's "Determinism"). Large CPU forwards (feature extraction) may gain from more threads
on an idle machine: pass ``--threads`` (measured figures in ``benchmarks/RESULTS.md``).

:func:`apply_threads` sets torch's intra-op threads, OpenCV's threads (TV-L1 flow, resizing)
and ``TADKIT_THREADS`` / ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``OPENCV_FOR_THREADS_NUM``
for libraries imported later, for commands run in-process afterwards (``tadkit demo``) and for
child processes.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Mapping, TypeVar

import click

from tadkit.errors import ConfigError

#: Threads used when neither ``--threads`` nor the environment names a number.
DEFAULT_THREADS = 1
#: tadkit's own environment variable (read before ``OMP_NUM_THREADS``).
ENV_VAR = "TADKIT_THREADS"
#: Environment variables :func:`apply_threads` sets for libraries imported later, commands run
#: in-process after this one (``tadkit demo``) and child processes.
THREAD_ENV_VARS = (ENV_VAR, "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")

F = TypeVar("F", bound=Callable[..., Any])


def threads_option(command: F) -> F:
    """The ``--threads N`` option of a compute command: resolves and applies the thread count
    before the command body runs (the command itself takes no parameter for it)."""
    return click.option(
        "--threads", type=click.IntRange(min=1), default=None, expose_value=False, metavar="N",
        callback=_apply_option,
        help=f"CPU threads (torch, OpenCV) [default: ${ENV_VAR}, else $OMP_NUM_THREADS, "
             f"else {DEFAULT_THREADS}].")(command)


def resolve_threads(requested: int | None = None, environ: Mapping[str, str] | None = None) -> int:
    """The thread count of a run: ``requested``, else the environment, else :data:`DEFAULT_THREADS`."""
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"--threads must be at least 1, got {requested}")
        return int(requested)
    env = os.environ if environ is None else environ
    for var in (ENV_VAR, "OMP_NUM_THREADS"):
        text = env.get(var, "").strip()
        if text:
            try:
                value = int(text)
            except ValueError:
                value = 0
            if value < 1:
                raise ConfigError(f"environment variable {var}={text!r}: expected a whole number of "
                                  "threads, at least 1")
            return value
    return DEFAULT_THREADS


def apply_threads(n: int) -> None:
    """Use ``n`` CPU threads in this process (torch, OpenCV) and in processes it starts."""
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(n)
    if "torch" in sys.modules:  # otherwise torch reads OMP_NUM_THREADS when it is imported
        sys.modules["torch"].set_num_threads(n)
    if "cv2" in sys.modules:    # otherwise OpenCV reads OPENCV_FOR_THREADS_NUM
        sys.modules["cv2"].setNumThreads(n)


def _apply_option(_ctx: click.Context, _param: click.Parameter, value: int | None) -> int:
    n = resolve_threads(value)
    apply_threads(n)
    return n
