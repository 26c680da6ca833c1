"""Shared fixtures: optional real annotation files, the backbone key lists, one torch thread."""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Callable

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
#: Real THUMOS14 / ActivityNet annotation files (not part of the repository): the folder named by
#: ``TADKIT_REAL_DATA``. Tests using them skip when it is not set.
REAL_DATA = Path(os.environ["TADKIT_REAL_DATA"]) if os.environ.get("TADKIT_REAL_DATA") else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real annotation files (see :data:`REAL_DATA`); skip if absent."""
    if REAL_DATA is None:
        pytest.skip("real annotation files: set TADKIT_REAL_DATA to their folder")
    if not REAL_DATA.is_dir():
        pytest.skip(f"real annotation files not found at {REAL_DATA} (TADKIT_REAL_DATA)")
    return REAL_DATA


@pytest.fixture(scope="session")
def backbone_keys() -> Callable[[str], list[str]]:
    """``name -> ["key [shape]", ...]``: a reference checkpoint layout, one state-dict entry per line.

    ``tests/data/backbone_keys/<name>.txt.gz`` are dumps of the published checkpoints' key
    names and shapes, in their order (piergiaj / hassony2 I3D, mmaction2 TSN, PySlowFast and
    PyTorchVideo SlowFast, IG-65M R(2+1)D-34).
    """
    def read(name: str) -> list[str]:
        text = gzip.decompress((DATA / "backbone_keys" / f"{name}.txt.gz").read_bytes()).decode()
        return [line.strip() for line in text.splitlines() if line.strip()]
    return read


@pytest.fixture(scope="module")
def torch_one_thread():
    """One intra-op thread for a test module of tiny models.

    Tiny forwards are fastest on one thread, and two OpenMP threads spinning on
    a busy 2-core machine can make them tens of times slower. Bit-exact resume
    checks also need a fixed thread count.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
