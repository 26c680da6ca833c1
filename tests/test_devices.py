"""One device rule for every stage."""
from __future__ import annotations

import pytest
import torch

from tadkit.devices import resolve_device
from tadkit.errors import ConfigError


def test_auto_and_none_pick_cuda_only_when_present():
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == want and resolve_device("auto").type == want
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name, text", [("gpu0", "unknown device 'gpu0'"), ("meta", "unsupported device 'meta'")])
def test_bad_names_are_config_errors(name, text):
    with pytest.raises(ConfigError, match=text):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match="'cuda:1' requested but CUDA is not available"):
        resolve_device("cuda:1")
