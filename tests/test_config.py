"""Typed configs: YAML + overrides, with errors that name the key."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from tadkit.config import config_ranges, load_config, parse_override, save_config, to_dict
from tadkit.detect.config import MENetConfig
from tadkit.errors import ConfigError, InputError, TadkitError
from tadkit.files import read_json


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


# --------------------------------------------------------------------------- ranges and odd files
@config_ranges(epochs="[1, inf)", lr="(0, inf)", overlap="[0, 1)", milestones="[0, inf)", cap="[0, inf]",
               mult="[0, inf)")
@dataclass
class Ranged:
    epochs: int = 10
    lr: float = 0.1
    overlap: float = 0.5
    milestones: list[int] = field(default_factory=lambda: [5])
    cap: float = 1.0
    loose: float = 0.0
    seed: Optional[int] = None
    mult: dict[str, float] = field(default_factory=dict)


@pytest.mark.parametrize("override, message", [
    ("epochs=0", "key 'epochs' must be >= 1, got 0"),
    ("epochs=-1", "key 'epochs' must be >= 1, got -1"),
    ("lr=0", "key 'lr' must be > 0, got 0.0"),
    ("lr=-1e-3", "key 'lr' must be > 0, got -0.001"),
    ("lr=nan", "key 'lr' must be > 0, got nan"),
    ("lr=.inf", "key 'lr' must be > 0, got inf"),
    ("overlap=1", "key 'overlap' must be in [0, 1), got 1.0"),
    ("overlap=1.5", "key 'overlap' must be in [0, 1), got 1.5"),
    ("milestones=[3, -2]", "key 'milestones[1]' must be >= 0, got -2"),
    ("mult={head: -0.5}", "key 'mult[head]' must be >= 0, got -0.5"),
    ("mult={head: .nan}", "key 'mult[head]' must be >= 0, got nan"),
    ("loose=nan", "key 'loose' must be a finite number, got nan"),
    ("loose=-inf", "key 'loose' must be a finite number, got -inf"),
])
def test_values_out_of_range_name_the_key_and_the_range(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(Ranged, overrides=[override])
    assert str(err.value) == f"--set: {message}"


def test_values_in_range_pass_and_a_closed_inf_bound_allows_inf():
    cfg = load_config(Ranged, overrides=["epochs=1", "lr=1e-9", "overlap=0", "cap=.inf", "seed=null"])
    assert (cfg.epochs, cfg.overlap, cfg.cap, cfg.seed) == (1, 0.0, float("inf"), None)


def test_a_config_built_in_code_checks_the_same_ranges_before_its_own_post_init():
    with pytest.raises(ValueError, match=r"^Ranged: key 'epochs' must be >= 1, got 0$"):
        Ranged(epochs=0)
    with pytest.raises(ValueError, match=r"key 'mult\[head\]' must be >= 0, got -1"):
        Ranged(mult={"head": -1.0})
    with pytest.raises(ValueError, match=r"MENetConfig: key 'dim' must be >= 1, got 0"):
        MENetConfig(dim=0)
    with pytest.raises(ValueError, match="local_kernel must be odd"):    # the class's own check still runs
        MENetConfig(local_kernel=4)
    assert Ranged(epochs=1).epochs == 1


@config_ranges(spans="[0, 1]")
@dataclass
class Nested:
    spans: list[list[float]] = field(default_factory=lambda: [[0.0, 0.5]])


def test_nested_lists_are_checked_element_by_element():
    with pytest.raises(ConfigError, match=r"--set: key 'spans\[1\]\[0\]' must be in \[0, 1\], got 1.5"):
        load_config(Nested, overrides=["spans=[[0, 0.2], [1.5, 2]]"])
    with pytest.raises(ValueError, match=r"key 'spans\[0\]\[1\]' must be in \[0, 1\], got -0.5"):
        Nested(spans=[[0.0, -0.5]])


def test_ranges_apply_to_yaml_files_and_name_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 0\n")
    with pytest.raises(ConfigError, match=r"c.yaml: key 'epochs' must be >= 1, got 0"):
        load_config(Ranged, path)


def test_every_detect_default_lies_in_its_range_and_every_numeric_key_has_one():
    import dataclasses
    import typing

    from tadkit.config import from_dict
    from tadkit.detect.config import DetectConfig

    cfg = DetectConfig()
    assert from_dict(DetectConfig, to_dict(cfg)) == cfg
    unranged = []
    for section, cls in typing.get_type_hints(DetectConfig).items():
        if not dataclasses.is_dataclass(cls):
            continue
        for name, tp in typing.get_type_hints(cls).items():
            kinds = set(typing.get_args(tp)) | {typing.get_origin(tp) or tp}
            if kinds & {int, float} and name not in cls.__config_ranges__:
                unranged.append(f"{section}.{name}")
    assert unranged == []


def test_a_range_on_an_unknown_field_is_a_programming_error():
    with pytest.raises(TypeError, match="no such field"):
        config_ranges(epoch="[1, inf)")(Ranged)
    with pytest.raises(ValueError, match="not an interval"):
        config_ranges(epochs=">= 1")


def test_a_config_file_that_is_not_utf8_is_one_error_naming_it(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("tag: caf\xe9\n".encode("latin-1"))
    with pytest.raises(TadkitError, match=r"latin1.yaml: not UTF-8 text \(invalid continuation byte at byte 8\)"):
        load_config(Train, path)


def test_an_integer_of_thousands_of_digits_is_one_error(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("epochs: " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"big.yaml: invalid YAML \(a number has more than 4300 digits\)$"):
        load_config(Train, path)
    with pytest.raises(ConfigError,
                       match=r"override epochs: cannot parse the value \(a number has more than 4300 digits\)$"):
        load_config(Train, overrides=["epochs=" + "9" * 5000])


def test_json_with_an_integer_of_thousands_of_digits_is_one_error(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"epochs": ' + "9" * 5000 + "}")
    with pytest.raises(InputError, match=r"run.json: malformed JSON: a number has more than 4300 digits$"):
        read_json(path)
    from tadkit.evaluate.io import load_video_list

    blocked = tmp_path / "blocked.json"
    blocked.write_text('["v1", ' + "9" * 5000 + "]")
    with pytest.raises(InputError, match=r"blocked.json: malformed JSON: a number has more than 4300 digits$"):
        load_video_list(blocked)
