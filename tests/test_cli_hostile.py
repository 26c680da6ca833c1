"""The CLI under input a new user gets wrong: each case is one ``error:`` line (or a warning) and a
non-zero exit, never a traceback, a silently ignored option or a run that trains on nothing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tadkit.cli import main
from tadkit.data.features import FeatureStore

from test_detect_engine import TINY, _make_data
from test_detect_hacs2020 import BMN, REFINE

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny data, a class head run (MLTPN), a proposal run (BMN) and a refine run chained on it."""
    root = tmp_path_factory.mktemp("hostile")
    ann, feats = _make_data(root)
    (root / "tiny.yaml").write_text(TINY)
    common = ["--features", str(feats), "--annotations", str(ann)]
    assert main(["detect", "train", "--config", str(root / "tiny.yaml"), *common, "--out", str(root / "mltpn"),
                 "--set", "train.epochs=1"]) == 0
    assert main(["detect", "train", "--config", str(CONFIGS / "bmn" / "anet_cpu.yaml"), *common,
                 "--out", str(root / "bmn"), *BMN, "--set", "train.epochs=1"]) == 0
    assert main(["detect", "train", "--config", str(CONFIGS / "refine" / "anet_cpu.yaml"), *common,
                 "--out", str(root / "refine"), "--from-run", str(root / "bmn"), *REFINE]) == 0
    return root, ann, feats


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err
    return err[-1]


def test_proposals_of_a_class_head_are_written_without_labels(runs):
    root, _, feats = runs
    out = root / "class_props.json"
    assert main(["detect", "infer", "--run", str(root / "mltpn"), "--features", str(feats), "--subset", "validation",
                 "--proposals", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    entries = [e for es in results.values() for e in es]
    assert entries and all(set(e) == {"score", "segment"} for e in entries)


@pytest.mark.parametrize("option,value", [("--lr", "nan"), ("--lr", "-1"), ("--weight-decay", "-0.1"),
                                          ("--weight-decay", "inf"), ("--steps", "0")])
def test_classify_refuses_numbers_it_cannot_train_with(runs, tmp_path, capsys, option, value):
    _, ann, feats = runs
    code = main(["detect", "classify", "--features", str(feats), "--annotations", str(ann), "--train-subset",
                 "training", "--out", str(tmp_path / "s.json"), "--steps", "3", option, value])
    assert code == 2 and option in _error_line(capsys)
    assert not (tmp_path / "s.json").exists()


def test_a_chained_run_is_no_source_run(runs, tmp_path, capsys):
    root, ann, feats = runs
    code = main(["detect", "train", "--config", str(CONFIGS / "refine" / "anet_cpu.yaml"), "--features", str(feats),
                 "--annotations", str(ann), "--out", str(tmp_path / "r2"), "--from-run", str(root / "refine"),
                 *REFINE])
    line = _error_line(capsys)
    assert code == 1 and "refine" in line and "reads proposals itself" in line and str(root / "bmn") in line
    code = main(["detect", "infer", "--run", str(root / "refine"), "--subset", "validation",
                 "--proposals", str(tmp_path / "p.json"), "--from-run", str(root / "refine")])
    assert code == 1 and "reads proposals itself" in _error_line(capsys)


def test_infer_from_run_on_runs_that_read_no_proposals_is_an_error(runs, tmp_path, capsys):
    root, _, _ = runs
    code = main(["detect", "infer", "--run", str(root / "mltpn"), "--subset", "validation",
                 "--out", str(tmp_path / "p.json"), "--from-run", str(root / "bmn")])
    assert code == 1 and "--from-run" in _error_line(capsys)
    assert not (tmp_path / "p.json").exists()


def _relabel(ann: Path, out: Path, change) -> Path:
    doc = json.loads(ann.read_text())
    for entry in doc["database"].values():
        change(entry)
    out.write_text(json.dumps(doc))
    return out


def test_training_videos_without_any_instance_are_an_error(runs, tmp_path, capsys):
    root, ann, feats = runs

    def drop_training(entry):
        if entry["subset"] == "training":
            entry["annotations"] = []

    empty = _relabel(ann, tmp_path / "no_train_gt.json", drop_training)
    # BMN reads whole (resized) videos, so no window is dropped: without this check it trained on nothing
    code = main(["detect", "train", "--config", str(CONFIGS / "bmn" / "anet_cpu.yaml"), "--features", str(feats),
                 "--annotations", str(empty), "--out", str(tmp_path / "bmn"), *BMN])
    line = _error_line(capsys)
    assert code == 1 and str(empty) in line and "no action instance" in line and "'training'" in line
    assert not (tmp_path / "bmn").exists()


def test_classes_seen_only_outside_the_training_videos_are_a_warning(runs, tmp_path, capsys):
    root, ann, feats = runs

    def split_classes(entry):
        for inst in entry["annotations"]:
            inst["label"] = "Jump" if entry["subset"] == "training" else "Swim"

    ann2 = _relabel(ann, tmp_path / "val_only.json", split_classes)
    code = main(["detect", "train", "--config", str(root / "tiny.yaml"), "--features", str(feats),
                 "--annotations", str(ann2), "--out", str(tmp_path / "run"), "--set", "train.epochs=1"])
    out = capsys.readouterr().out  # printed with the run's other lines, before training starts
    assert code == 0 and "warning: 1 of the 2 classes has no instance in the training videos (Swim)" in out


def test_an_interrupted_run_says_how_to_go_on(runs, tmp_path, capsys, monkeypatch):
    root, ann, feats = runs
    from tadkit.detect.training import Trainer

    args = ["detect", "train", "--config", str(root / "tiny.yaml"), "--features", str(feats), "--annotations",
            str(ann), "--out", str(tmp_path / "run"), "--set", "train.epochs=2"]

    def interrupted(self, *_a, **_k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # stopped before the first checkpoint: only config and run.json exist
        m.setattr(Trainer, "fit", interrupted)
        assert main(args) == 130
    capsys.readouterr()
    assert main([*args, "--resume"]) == 1
    assert "rerun without --resume" in _error_line(capsys)
    shutil.copytree(root / "mltpn", tmp_path / "run", dirs_exist_ok=True)  # now with a checkpoint
    monkeypatch.setattr(Trainer, "fit", interrupted)
    assert main([*args, "--resume"]) == 130
    err = capsys.readouterr().err
    assert "checkpoints/last.pt is kept: add --resume to the same command to continue" in err


# --------------------------------------------------------------------------- import-features
def test_import_without_the_fps_or_durations_the_layout_needs_stops_before_writing(tmp_path, capsys):
    src = tmp_path / "npy"
    src.mkdir()
    np.save(src / "a.npy", np.ones((3, 4), np.float32))
    code = main(["data", "import-features", str(src), "--layout", "actionformer-thumos-i3d",
                 "--out", str(tmp_path / "s")])
    line = _error_line(capsys)
    assert code == 1 and "actionformer-thumos-i3d" in line and "--annotations" in line and "--fps" in line
    assert not (tmp_path / "s").exists()
    assert main(["data", "import-features", str(src), "--layout", "actionformer-thumos-i3d", "--fps", "30",
                 "--out", str(tmp_path / "s")]) == 0


def test_a_npy_file_that_is_no_array_says_so(tmp_path, capsys):
    src = tmp_path / "npy"
    src.mkdir()
    np.save(src / "a.npy", np.ones((3, 4), np.float32))
    (src / "b.npy").write_bytes(b"not an array at all")
    code = main(["data", "import-features", str(src), "--layout", "hacs-slowfast", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 3 and "b.npy: unreadable features: not a NumPy .npy array" in err and "allow_pickle" not in err
    assert FeatureStore.open(tmp_path / "s").video_ids() == ["a"]
