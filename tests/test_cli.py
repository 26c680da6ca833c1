"""The CLI's shape and its error behaviour: one ``error:`` line, non-zero exit."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from tadkit import __version__
from tadkit.cli import cli, main
from tadkit.data.features import FeatureStore, Provenance, VideoFeatures


@pytest.fixture()
def store(tmp_path):
    prov = Provenance(backbone="i3d", streams=("rgb", "flow"), feature_dim=4, clip_len=16, stride=4, fps=25.0)
    with FeatureStore.create(tmp_path / "feats", prov) as w:
        w.write(VideoFeatures("v_a b", np.zeros((3, 4)), np.array([0.32, 0.48, 0.64]), 25.0, 16, 4, 24, 0.96))
        w.record_failure("broken.mp4", "no video stream")
    return tmp_path / "feats"


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_help_lists_every_stage():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert _listed(result.output) == {"extract", "detect", "evaluate", "data", "demo", "info"}
    assert {"train", "infer", "config"} <= _listed(CliRunner().invoke(cli, ["detect", "--help"]).output)


def _listed(help_text: str) -> set[str]:
    """Command names of a help text (summaries may wrap onto deeper-indented lines)."""
    rows = help_text.split("Commands:")[1].splitlines()
    return {line.split()[0] for line in rows if line.startswith("  ") and not line.startswith("   ")}


def test_info_text_and_json(store):
    text = CliRunner().invoke(cli, ["info", str(store)])
    assert text.exit_code == 0, text.output
    assert "i3d" in text.output and "v_a b" in text.output and "broken.mp4" in text.output
    as_json = CliRunner().invoke(cli, ["info", str(store / "store.h5"), "--json"])
    data = json.loads(as_json.output)
    assert data["provenance"]["streams"] == ["rgb", "flow"]
    assert data["videos"] == {"v_a b": {"features": [3, 4]}}
    assert data["failures"] == {"broken.mp4": "no video stream"}


def test_expected_errors_are_one_line_without_traceback(tmp_path, capsys):
    code = main(["info", str(tmp_path)])  # a directory that is not a store
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert str(tmp_path) in err


def test_usage_errors_are_one_line_too(capsys):
    assert main(["info"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert main(["no-such-command"]) == 2


def test_debug_flag_shows_the_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tadkit", "--debug", "info", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_console_entry_point_runs_as_module():
    proc = subprocess.run([sys.executable, "-m", "tadkit", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and __version__ in proc.stdout
