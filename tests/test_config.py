"""Typed configs: YAML + overrides, with errors that name the key."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from tadkit.config import load_config, parse_override, save_config, to_dict
from tadkit.errors import ConfigError


@dataclass
class Optim:
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 1e-3
    milestones: list[int] = field(default_factory=lambda: [15])


@dataclass
class Train:
    epochs: int = 10
    seed: Optional[int] = 0
    tag: str = "run"
    amp: bool = False
    optim: Optim = field(default_factory=Optim)


def test_defaults_without_file():
    cfg = load_config(Train)
    assert cfg == Train()


def test_yaml_then_overrides_applied_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 20\noptim:\n  name: adam\n  lr: 1.0e-4\n")
    cfg = load_config(Train, path, overrides=["optim.lr=0.5", "optim.milestones=[3, 7]", "seed=null"])
    assert cfg.epochs == 20
    assert cfg.optim.name == "adam"
    assert cfg.optim.lr == 0.5
    assert cfg.optim.milestones == [3, 7]
    assert cfg.seed is None


def test_yaml_scientific_notation_without_dot_is_a_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-4\n")  # YAML 1.1 parses this as a string
    assert load_config(Train, path).optim.lr == pytest.approx(1e-4)


@pytest.mark.parametrize("override, fragment", [
    ("optim.lrr=1", "optim.lrr"),
    ("nope=1", "'nope'"),
    ("epochs=ten", "'epochs' expects int"),
    ("epochs=1.5", "'epochs' expects int"),
    ("amp=3", "'amp' expects bool"),
    ("optim.name=rmsprop", "must be one of"),
    ("optim.milestones=[1, x]", "optim.milestones[1]"),
    ("optim=3", "optim"),
])
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=None) as err:
        load_config(Train, overrides=[override])
    assert fragment in str(err.value)


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  momentm: 0.9\n")
    with pytest.raises(ConfigError) as err:
        load_config(Train, path)
    assert "bad.yaml" in str(err.value) and "optim.momentm" in str(err.value)


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "a: [1,\n"])
def test_malformed_yaml_is_a_config_error(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(Train, path)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Train, tmp_path / "missing.yaml")


@pytest.mark.parametrize("item", ["novalue", "=3", "a..b=1"])
def test_malformed_override_syntax(item):
    with pytest.raises(ConfigError):
        parse_override(item)


def test_saved_config_loads_back_identically(tmp_path):
    cfg = load_config(Train, overrides=["optim.name=adamw", "optim.lr=3e-4", "tag=a b"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(Train, tmp_path / "resolved.yaml")
    assert again == cfg
    assert to_dict(again)["optim"]["name"] == "adamw"
