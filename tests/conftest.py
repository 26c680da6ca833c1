"""Shared fixtures: paths to the real annotation files beside the repository."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real THUMOS14 / ActivityNet files); skip if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real annotation files not found at {SHARED_DATA}")
    return SHARED_DATA


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
