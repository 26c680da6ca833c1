"""What a user sees of the CLI: help, option texts, --debug, --threads, the config reference, plurals."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tadkit.cli import cli, main
from tadkit.data.features import FeatureStore, Provenance, VideoFeatures
from tadkit.detect.config import DetectConfig, PostprocessConfig
from tadkit.detect.config_reference import KEY_HELP, config_keys, markdown_reference, train_overrides
from tadkit.errors import ConfigError, InputError
from tadkit.text import plural
from tadkit.threads import DEFAULT_THREADS, apply_threads, resolve_threads

REPO = Path(__file__).resolve().parents[1]
#: Commands that compute (and so take --threads).
COMPUTE = {"extract", "evaluate", "demo", "detect train", "detect infer", "detect classify",
           "detect classify-ensemble", "detect postprocess", "data synth-features", "data synth-videos", "data import-features"}


def _commands() -> dict[str, click.Command]:
    ctx = click.Context(cli)
    out = {}

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), path + [name])
        else:
            out[" ".join(path)] = cmd
    walk(cli, [])
    return out


COMMANDS = _commands()


# --------------------------------------------------------------------------- help
@pytest.mark.parametrize("args", [[], ["detect"], ["data"]])
def test_a_group_without_a_command_prints_its_help_and_exits_0(args, capsys):
    assert main(args) == 0
    out = capsys.readouterr()
    assert out.out.startswith("Usage: tadkit") and "Commands:" in out.out and out.err == ""


@pytest.mark.parametrize("group", [[], ["detect"], ["data"]])
def test_command_summaries_are_whole_sentences(group):
    text = CliRunner().invoke(cli, [*group, "--help"], terminal_width=80).output
    listing = text.split("Commands:")[1]
    assert "..." not in listing and "…" not in listing


#: Options another branch is reworking (evaluate --task / --dataset): checked once it is merged.
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help_and_shows_its_default_or_choices(name):
    for p in COMMANDS[name].params:
        if not isinstance(p, click.Option) or p.name == "help":
            continue
        assert p.help, f"tadkit {name} {p.opts[0]} has no help text"
        if p.is_flag or p.multiple or p.required or p.default is None:
            continue
        shown = p.show_default or "default" in p.help or isinstance(p.type, click.Choice)
        assert shown, f"tadkit {name} {p.opts[0]} hides its default {p.default!r}"


def test_compute_commands_take_threads_and_others_do_not():
    with_threads = {n for n, c in COMMANDS.items() if any(p.name == "threads" for p in c.params)}
    assert with_threads == COMPUTE


def test_backbone_choices_are_the_registered_families():
    from tadkit.extract import backbones
    from tadkit.extract.cli import BACKBONE_FAMILIES

    assert sorted(BACKBONE_FAMILIES) == sorted(f.name for f in backbones.families())


def test_synth_features_signal_default_is_the_generator_default():
    from tadkit.data.synthetic import SynthFeatureConfig

    opt = next(p for p in COMMANDS["data synth-features"].params if p.name == "signal")
    assert opt.default == SynthFeatureConfig.signal


# --------------------------------------------------------------------------- --debug
def test_debug_after_a_sub_command_shows_the_traceback(tmp_path):
    with pytest.raises(InputError):
        main(["info", str(tmp_path), "--debug"])


def test_debug_keeps_usage_errors_to_one_line(capsys):
    assert main(["data", "stats", "/no/such/file.json", "--debug"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_debug_after_double_dash_is_an_argument():
    from tadkit.cli import _hoist_debug

    assert _hoist_debug(["data", "--debug", "--", "--debug"]) == (["--debug", "data", "--", "--debug"], True)
    assert _hoist_debug(["data"]) == (["data"], False)


# --------------------------------------------------------------------------- --threads
def test_threads_come_from_the_option_then_the_environment_then_the_default():
    assert resolve_threads(3, {"TADKIT_THREADS": "2"}) == 3
    assert resolve_threads(None, {"TADKIT_THREADS": "2", "OMP_NUM_THREADS": "4"}) == 2
    assert resolve_threads(None, {"OMP_NUM_THREADS": "4"}) == 4
    assert resolve_threads(None, {}) == DEFAULT_THREADS == 1
    with pytest.raises(ConfigError, match="TADKIT_THREADS"):
        resolve_threads(None, {"TADKIT_THREADS": "many"})
    with pytest.raises(ConfigError, match="OMP_NUM_THREADS"):
        resolve_threads(None, {"OMP_NUM_THREADS": "0"})


def test_threads_option_sets_torch_and_the_environment(tmp_path, monkeypatch):
    for var in ("TADKIT_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM"):
        monkeypatch.setenv(var, os.environ.get(var, "1"))  # restored after the test
    before = torch.get_num_threads()
    try:
        res = CliRunner().invoke(cli, ["data", "synth-videos", "--out", str(tmp_path / "v"), "--num-videos", "1",
                                       "--size", "32", "--min-duration", "1", "--max-duration", "1",
                                       "--threads", "2"])
        assert res.exit_code == 0, res.output
        assert torch.get_num_threads() == 2
        assert os.environ["OMP_NUM_THREADS"] == os.environ["TADKIT_THREADS"] == "2"
        import cv2
        assert cv2.getNumThreads() == 2
        apply_threads(1)
        assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
    finally:
        torch.set_num_threads(before)


def test_threads_must_be_positive(capsys):
    assert main(["evaluate", "--gt", "a.json", "--pred", "b.json", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err


# --------------------------------------------------------------------------- config reference
def test_every_config_key_has_help():
    keys = [k.key for k in config_keys()]
    missing = [k for k in keys if not KEY_HELP.get(k)]
    assert not missing, f"add these keys to KEY_HELP in tadkit/detect/config_reference.py: {missing}"
    assert not set(KEY_HELP) - set(keys), "KEY_HELP names keys the config does not have"


def test_the_config_reference_page_is_current():
    page = (REPO / "docs" / "config-reference.md").read_text()
    assert page == markdown_reference(), \
        "regenerate: tadkit detect config --markdown > docs/config-reference.md"


def test_config_show_lists_values_types_and_help_for_one_head():
    res = CliRunner().invoke(cli, ["detect", "config", "--show", "--head", "talmts", "--set", "sigma=0.25",
                                   "--set", "train.epochs=3"])
    assert res.exit_code == 0, res.output
    assert "talmts.num_levels = 6  (int)" in res.output
    assert "postprocess.sigma = 0.25  (float)" in res.output
    assert "train.epochs = 3" in res.output
    assert "postprocess.method = hard  (one of: none, hard, linear, gaussian)" in res.output
    assert "mltpn." not in res.output
    assert KEY_HELP["talmts.rfp"] in res.output.replace("\n      ", " ")
    bad = CliRunner().invoke(cli, ["detect", "config", "--show", "--head", "nope"])
    assert bad.exit_code != 0 and "mltpn, talmts" in str(bad.exception)


def test_config_without_show_prints_loadable_yaml(tmp_path):
    from tadkit.config import load_config

    res = CliRunner().invoke(cli, ["detect", "config", "--set", "postprocess.sigma=0.3", "--set", "head=talmts"])
    assert res.exit_code == 0, res.output
    (tmp_path / "c.yaml").write_text(res.output)
    cfg = load_config(DetectConfig, tmp_path / "c.yaml")
    assert cfg.postprocess.sigma == 0.3 and cfg.head == "talmts"


def test_config_with_an_unknown_head_is_an_error_not_a_printed_config(capsys):
    assert main(["detect", "config", "--set", "head=nosuch"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown detection head 'nosuch'") and "sptad" in err and len(err.splitlines()) == 1


def test_train_accepts_post_processing_keys_with_or_without_the_prefix():
    assert train_overrides(["sigma=0.7", "postprocess.method=gaussian", "optim.lr=1e-3"], device="cpu") == \
        ["postprocess.sigma=0.7", "postprocess.method=gaussian", "optim.lr=1e-3", "train.device=cpu"]
    assert {f.name for f in __import__("dataclasses").fields(PostprocessConfig)}.isdisjoint(
        {f.name for f in __import__("dataclasses").fields(DetectConfig)})


def test_detect_train_reads_a_bare_post_processing_key(tmp_path, capsys):
    # a wrong value shows which key the bare name became (the config is checked before any data is read)
    code = main(["detect", "train", "--features", str(tmp_path), "--annotations", str(tmp_path / "a.json"),
                 "--out", str(tmp_path / "run"), "--set", "sigma=abc"])
    assert code == 1 and "postprocess.sigma" in capsys.readouterr().err


# --------------------------------------------------------------------------- words and info
def test_plural():
    assert plural(1, "video") == "1 video" and plural(0, "video") == "0 videos"
    assert plural(2, "class", "classes") == "2 classes" and plural(1, "class", "classes") == "1 class"


def test_stats_of_one_video_says_video(tmp_path):
    p = tmp_path / "gt.csv"
    p.write_text("video,start,end,label,subset\nv1,1.0,2.0,Jump,validation\n")
    res = CliRunner().invoke(cli, ["data", "stats", str(p)])
    assert res.exit_code == 0, res.output
    assert "1 video, 1 instance, 1 class" in res.output


def test_info_prints_weights_and_preprocessing_one_entry_per_line(tmp_path):
    prov = Provenance(backbone="i3d", streams=("rgb", "flow"), feature_dim=4, clip_len=16, stride=4,
                      weights={"rgb": {"file": "rgb_imagenet.pt", "sha256": "ab" * 32, "format": "piergiaj"},
                               "flow": {"file": None, "sha256": "random", "seed": 1}},
                      preprocessing={"recipe": {"name": "i3d_thumos", "crop": 224, "mean": [0.5] * 3},
                                     "flow": {"levels": list(range(40))}})
    with FeatureStore.create(tmp_path / "f", prov) as w:
        w.write(VideoFeatures("v", np.zeros((2, 4)), np.array([0.3, 0.5]), 30.0, 16, 4, 20, 0.7))
    res = CliRunner().invoke(cli, ["info", str(tmp_path / "f")])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(len(line) for line in lines) < 100
    assert "      file        rgb_imagenet.pt" in lines and "      format      piergiaj" in lines
    assert "      crop        224" in lines and "      mean        0.5, 0.5, 0.5" in lines
    assert any(line.strip() == "levels      [0, 1, 2, 3, 4, 5, ...] (40 items)" for line in lines)
    assert json.loads(CliRunner().invoke(cli, ["info", str(tmp_path / "f"), "--json"]).output)[
        "provenance"]["preprocessing"]["flow"]["levels"] == list(range(40))
