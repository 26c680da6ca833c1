"""Detection against features, checkpoints and runs that are not what they should be: one clear line each."""
from __future__ import annotations

import json
import os
import pickle
import shutil

import h5py
import pytest
import torch
from click.testing import CliRunner

from tadkit.cli import cli, main
from tadkit.config import load_config
from tadkit.data.features import FeatureStore, Provenance
from tadkit.detect.config import DetectConfig
from tadkit.detect.engine import infer, train
from tadkit.errors import ProvenanceError

from test_detect_engine import TINY, _make_data

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    ann, feats = _make_data(root)
    (root / "tiny.yaml").write_text(TINY)
    out = root / "run"
    res = CliRunner().invoke(cli, ["detect", "train", "--config", str(root / "tiny.yaml"), "--features", str(feats),
                                   "--annotations", str(ann), "--out", str(out), "--set", "train.epochs=1"])
    assert res.exit_code == 0, res.output
    return root, ann, feats, out


def _restamp(src, dst, **changes):
    """A copy of the store ``src`` whose provenance differs by ``changes`` (same feature values)."""
    store = FeatureStore.open(src)
    prov = Provenance.from_dict({**store.provenance.to_dict(), **changes})
    with FeatureStore.create(dst, prov) as w:
        for vid in store.video_ids():
            w.write(store.read(vid))
    return dst


def _infer_cli(out, feats, pred, *extra):
    return main(["detect", "infer", "--run", str(out), "--features", str(feats), "--out", str(pred), *extra])


@pytest.mark.parametrize("changes,difference", [
    ({"weights": {"synthetic": {"file": "w.pt", "sha256": "ab12"}}},
     "weights.synthetic.sha256: features have 'ab12', expected 'random'"),
    ("recipe", "preprocessing.config.signal: features have 0.3"),
])
def test_features_made_differently_are_refused_unless_the_user_means_it(run, tmp_path, capsys, changes, difference):
    root, ann, feats, out = run
    if changes == "recipe":
        prov = FeatureStore.open(feats).provenance.to_dict()
        prov["preprocessing"]["config"]["signal"] = 0.3
        changes = {"preprocessing": prov["preprocessing"]}
    other = _restamp(feats, tmp_path / "other", **changes)
    with pytest.raises(ProvenanceError, match="features do not match: " + difference.replace("(", r"\(")):
        infer(out, other, tmp_path / "p.json", echo=None)
    assert _infer_cli(out, other, tmp_path / "p.json") == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and difference in err and "--allow-provenance-mismatch" in err
    assert _infer_cli(out, other, tmp_path / "p.json", "--allow-provenance-mismatch") == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "using features that differ from the expected ones: " + difference in err
    # train --resume compares the same fields and takes the same flag
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    args = ["detect", "train", "--features", str(other), "--annotations", str(ann), "--out", str(resumed),
            "--resume", "--set", "train.epochs=2"]
    assert main(args) == 1 and difference in capsys.readouterr().err
    assert main([*args, "--allow-provenance-mismatch"]) == 0


def test_a_renamed_checkpoint_file_is_not_a_difference(run, tmp_path):
    root, ann, feats, out = run
    prov = FeatureStore.open(feats).provenance.to_dict()
    prov["weights"]["synthetic"]["file"] = "renamed.pt"
    other = _restamp(feats, tmp_path / "other", weights=prov["weights"])
    assert infer(out, other, tmp_path / "p.json", echo=None)["videos"] == 7


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_wrong_checkpoint_files_are_one_line_errors(run, tmp_path, capsys):
    root, ann, feats, out = run
    other_head = torch.nn.Linear(3, 2).state_dict()
    cases = {
        "list.pt": ([1, 2, 3], "not a tadkit run checkpoint: it holds a list"),
        "nomodel.pt": ({"epoch": 3, "weights": {}}, "not a tadkit run checkpoint: it holds a dict without 'model' "
                                                     "weights (keys: epoch, weights)"),
        "other.pt": ({"model": other_head}, "the weights do not fit this run's MLTPN: "),
        "ema.pt": ({"model": {}, "ema": [1, 2]}, "not a tadkit run checkpoint: its weights are a list"),
        "payload.pt": ({"model": _Payload(tmp_path / "ran")}, "refused: loading it would run arbitrary pickle code"),
    }
    for name, (obj, message) in cases.items():
        torch.save(obj, tmp_path / name)
        assert _infer_cli(out, feats, tmp_path / "p.json", "--checkpoint", str(tmp_path / name)) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {tmp_path / name}: {message}") and len(err.strip().splitlines()) == 1, err
    assert "unexpected keys (weight, bias)" in _last_error(out, feats, tmp_path, "other.pt", capsys)
    assert "it references posix.system" in _last_error(out, feats, tmp_path, "payload.pt", capsys)
    assert not (tmp_path / "ran").exists()
    (tmp_path / "junk.pt").write_bytes(pickle.dumps("x")[:-3])
    assert "not a readable PyTorch checkpoint" in _last_error(out, feats, tmp_path, "junk.pt", capsys)


def _last_error(out, feats, tmp_path, name, capsys):
    assert _infer_cli(out, feats, tmp_path / "p.json", "--checkpoint", str(tmp_path / name)) == 1
    return capsys.readouterr().err


def test_non_finite_weights_after_the_last_step_stop_training(run, tmp_path, capsys, monkeypatch):
    root, ann, feats, _ = run
    step = torch.optim.Adam.step

    def overflow(self, *args, **kwargs):  # what a too large learning rate does to the last update
        out = step(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("inf"))
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", overflow)
    args = ["detect", "train", "--config", str(root / "tiny.yaml"), "--features", str(feats), "--annotations",
            str(ann), "--out", str(tmp_path / "r"), "--set", "train.epochs=1", "--set", "train.batch_size=1000"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: training diverged: 1 weight tensor(s) are NaN or infinite after epoch 1")
    assert not (tmp_path / "r" / "checkpoints" / "last.pt").exists()


def test_window_mode_skips_a_video_whose_file_fails_its_check(run, tmp_path, capsys):
    root, ann, feats, out = run
    broken = tmp_path / "feats"
    shutil.copytree(feats, broken)
    for vid in ("vid00", "vid06"):  # the first training video (its files describe the inputs) and a validation one
        with h5py.File(broken / "videos" / f"{vid}.h5", "r+") as f:
            f.attrs["video_id"] = "someone else"
    cfg = load_config(DetectConfig, root / "tiny.yaml", ["train.epochs=1"])
    with pytest.warns(UserWarning, match="skipping unreadable video vid00"):
        train(cfg, broken, ann, tmp_path / "r", echo=None)
    assert _infer_cli(tmp_path / "r", broken, tmp_path / "p.json", "--subset", "validation") == 0
    captured = capsys.readouterr()
    assert "warning: skipping unreadable video vid06" in captured.err
    assert "1 videos failed" in captured.out and "vid06: " in captured.out
    assert set(json.loads((tmp_path / "p.json").read_text())["results"]) == {"vid05"}


def test_nan_features_are_a_warning_line_naming_the_video(run, tmp_path, capsys):
    root, ann, feats, out = run
    nan = tmp_path / "feats"
    shutil.copytree(feats, nan)
    with h5py.File(nan / "videos" / "vid05.h5", "r+") as f:
        f["features"][3:5] = float("nan")
    assert _infer_cli(out, nan, tmp_path / "p.json", "--subset", "validation") == 0
    err = capsys.readouterr().err
    assert "vid05.h5: video 'vid05' has NaN or infinite feature values in 2 snippet(s)" in err


@pytest.mark.parametrize("override,message", [
    ("train.epochs=0", "key 'train.epochs' must be >= 1, got 0"),
    ("train.batch_size=-3", "key 'train.batch_size' must be >= 1, got -3"),
    ("optim.lr=nan", "key 'optim.lr' must be > 0, got nan"),
    ("data.length=0", "key 'data.length' must be >= 1, got 0"),
    ("data.train_overlap=1.5", "key 'data.train_overlap' must be in [0, 1), got 1.5"),
])
def test_values_out_of_range_are_one_line_errors_before_training(run, tmp_path, capsys, override, message):
    root, ann, feats, _ = run
    assert main(["detect", "train", "--features", str(feats), "--annotations", str(ann), "--out",
                 str(tmp_path / "r"), "--set", override]) == 1
    assert capsys.readouterr().err == f"error: --set: {message}\n"
    assert not (tmp_path / "r").exists()


def test_provenance_comparison_rules():
    base = Provenance(backbone="i3d", streams=("rgb",), feature_dim=4, clip_len=16, stride=4,
                      weights={"rgb": {"file": "a.pt", "sha256": "11"}},
                      extras={"models": {"rgb": "i3d_rgb"}, "times": "prose"})
    same = {"weights": {"rgb": {"file": "b.pt", "sha256": "11"}}, "extras": {"models": {"rgb": "i3d_rgb"},
                                                                             "times": "other prose",
                                                                             "spatial_grid": {"size": 7}}}
    assert base.mismatches(Provenance(**{**base.__dict__, **same})) == []
    grid = Provenance(**{**base.__dict__, "extras": {**base.extras, "spatial_grid": {"size": 7}}})
    assert grid.mismatches(Provenance(**{**base.__dict__, "extras": {**base.extras, "spatial_grid": {"size": 4}}})) \
        == ["extras.spatial_grid.size: features have 7, expected 4"]
    scores = Provenance(**{**base.__dict__, "extras": {**base.extras, "class_scores": {"classes": {"rgb": 200}}}})
    assert scores.mismatches(base) == ["extras.class_scores: features have {'classes': {'rgb': 200}}, expected None"]
    assert base.mismatches({"feature_dim": 8}) == ["feature_dim: features have 4, expected 8"]
