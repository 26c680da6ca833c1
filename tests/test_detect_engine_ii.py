"""Engine II: inputs a head declares, streams and provenance, normalisation, hooks, groups, accumulation."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import probe_head
from tadkit.cli import cli, main
from tadkit.config import load_config
from tadkit.data.annotations import load_annotations
from tadkit.data.synthetic import SynthFeatureConfig, synth_features
from tadkit.detect.config import DetectConfig
from tadkit.detect.engine import build_optimizer, infer, train
from tadkit.detect.heads import group_parameters
from tadkit.errors import ConfigError, InputError, ProvenanceError

pytestmark = pytest.mark.usefixtures("torch_one_thread")

PROBE = ["head=probe", "data.mode=window", "data.length=16", "optim.name=sgd", "optim.lr=0.5",
         "optim.momentum=0", "optim.weight_decay=0", "schedule.name=constant", "train.epochs=2",
         "train.batch_size=4", "train.amp=false", "postprocess.method=hard", "postprocess.max_per_video=20"]


def make_annotations(root, n_train: int = 5, n_val: int = 2, extra: dict | None = None):
    rng = np.random.default_rng(1)
    db = {}
    for i in range(n_train + n_val):
        anns, t = [], float(rng.uniform(0.5, 2))
        while t < 12:
            length = float(rng.uniform(1.0, 3.0))
            anns.append({"label": ["Jump", "Run"][int(rng.integers(2))], "segment": [round(t, 2), round(t + length, 2)]})
            t += length + float(rng.uniform(1.5, 3))
        db[f"vid{i:02d}"] = {"subset": "training" if i < n_train else "validation", "duration": 15.0,
                             "fps": 10.0, "annotations": anns}
    db.update(extra or {})
    path = root / "ann.json"
    path.write_text(json.dumps({"version": "test", "database": db}))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine2")
    ann = make_annotations(root)
    feats = root / "two"
    synth_features(load_annotations(ann), feats, SynthFeatureConfig(
        feature_dim=4, clip_len=4, stride=4, fps=10.0, streams=("rgb", "flow"), levels=(2.0, 0.5)))
    one = root / "one"
    synth_features(load_annotations(ann), one, SynthFeatureConfig(feature_dim=8, clip_len=4, stride=4, fps=10.0))
    return root, ann, feats, one


def cfg_of(*extra: str) -> DetectConfig:
    return load_config(DetectConfig, overrides=PROBE + list(extra))


@pytest.fixture(autouse=True)
def fresh_probe():
    probe_head.SETTINGS.update(needs=frozenset(), class_agnostic=False)
    for v in probe_head.SEEN.values():
        v.clear()


def test_stream_selection_is_recorded_and_checked_at_inference(data, tmp_path):
    root, ann, feats, one = data
    run = tmp_path / "rgb"
    train(cfg_of("data.streams=[flow]"), feats, ann, run, echo=None)
    meta = json.loads((run / "run.json").read_text())
    assert meta["feature_dim"] == 4 and meta["inputs"]["streams"] == ["flow"]
    assert meta["inputs"]["stores"][0]["provenance"]["streams"] == ["rgb", "flow"]
    assert probe_head.SEEN["built"][0]["in_dim"] == 4
    probe_head.SEEN["inputs"].clear()
    infer(run, feats, tmp_path / "p.json", subset="validation", echo=None)
    fed = probe_head.SEEN["inputs"][0]["features"]
    assert fed.shape[1] == 4
    with pytest.raises(ProvenanceError, match="streams"):
        infer(run, one, tmp_path / "p.json", echo=None)
    assert main(["detect", "train", "--features", str(one), "--annotations", str(ann), "--out",
                 str(tmp_path / "x"), *sum((["--set", s] for s in PROBE + ["data.streams=[flow]"]), [])]) == 1


def test_normalisation_is_fitted_on_training_videos_and_used_at_inference(data, tmp_path):
    root, ann, feats, _ = data
    run = tmp_path / "n"
    train(cfg_of("train.epochs=1", "data.holdout_fraction=0.2"), feats, ann, run, echo=None)
    meta = json.loads((run / "run.json").read_text())
    assert meta["normalization"] == "normalization.npz" and meta["train_videos"] == 4
    with np.load(run / "normalization.npz") as z:
        mean = z["mean"]
    # statistics of the 4 training videos only (not the held-out or validation ones)
    from tadkit.data.features import FeatureStore

    store = FeatureStore.open(feats)
    train_ids = sorted(set(f"vid{i:02d}" for i in range(5)) - set(meta["holdout_videos"]))
    np.testing.assert_allclose(mean, np.concatenate([store.read(v).features for v in train_ids]).mean(0), rtol=1e-5)
    probe_head.SEEN["inputs"].clear()
    infer(run, feats, tmp_path / "p.json", subset="training", videos=train_ids, echo=None, batch_size=64)
    x = torch.cat([s["features"].permute(0, 2, 1)[s["mask"]] for s in probe_head.SEEN["inputs"]])
    assert x.shape[0] > 100  # one big batch (inference batch size is its own option)
    assert len(probe_head.SEEN["inputs"]) == 1
    off = train(cfg_of("train.epochs=1", "data.normalize=false"), feats, ann, tmp_path / "off", echo=None)
    assert off["epochs"] == 1 and not (tmp_path / "off" / "normalization.npz").exists()


def test_levels_reach_a_head_that_declares_them(data, tmp_path):
    root, ann, feats, _ = data
    probe_head.SETTINGS["needs"] = frozenset({"levels"})
    train(cfg_of("train.epochs=1", "data.levels=[x2, flow/x0.5]"), feats, ann, tmp_path / "lv", echo=None)
    info = probe_head.SEEN["built"][0]["inputs"]
    assert info.level_names == ("x2", "flow/x0.5") and info.level_dims == (8, 4)
    seen = probe_head.SEEN["inputs"][0]["levels"]
    assert [lv.features.shape[1:] for lv in seen] == [(8, 32), (4, 8)]  # windows of 16 padded to 16 cells
    assert all(lv.mask.any() for lv in seen)
    probe_head.SETTINGS["needs"] = frozenset()  # a head without levels gets no level keyword
    probe_head.SEEN["inputs"].clear()
    train(cfg_of("train.epochs=1", "data.levels=[x2]"), feats, ann, tmp_path / "nolv", echo=None)
    assert "levels" not in probe_head.SEEN["inputs"][0]


def test_on_epoch_start_once_per_epoch_also_after_resume(data, tmp_path):
    root, ann, feats, _ = data
    run = tmp_path / "hooks"
    train(cfg_of("train.epochs=2"), feats, ann, run, echo=None)
    assert probe_head.SEEN["epochs"] == [(0, 2), (1, 2)]
    probe_head.SEEN["epochs"].clear()
    train(cfg_of("train.epochs=4"), feats, ann, run, resume=True, echo=None)
    assert probe_head.SEEN["epochs"] == [(2, 4), (3, 4)]


def test_gradient_accumulation_equals_one_big_batch(data, tmp_path):
    root, ann, feats, _ = data
    # 2 videos of 38 snippets, windows of 16 every 8 (the last one ends on the last snippet): 8 windows
    same = ["train.epochs=1", "data.train_subset=validation", "data.train_stride=8", "data.drop_empty=false"]
    big = train(cfg_of(*same, "train.batch_size=8"), feats, ann, tmp_path / "big", echo=None)
    acc = train(cfg_of(*same, "train.batch_size=4", "train.accumulate=2"), feats, ann, tmp_path / "acc", echo=None)
    assert big["epochs"] == acc["epochs"] == 1
    a = torch.load(tmp_path / "big" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "acc" / "checkpoints" / "last.pt", weights_only=True)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]  # same number of optimiser steps
    for k, v in a["model"].items():
        torch.testing.assert_close(v, b["model"][k], rtol=1e-5, atol=1e-6)


def test_parameter_groups_without_decay_and_with_lr_multipliers():
    model = torch.nn.Sequential(torch.nn.Conv1d(3, 4, 1), torch.nn.LayerNorm(4), torch.nn.Embedding(5, 4))
    groups = group_parameters(model, 0.1, no_decay=["norm", "bias", "embedding"], lr_mult={"0": 0.5})
    by = {(g["lr_mult"], g["weight_decay"]): {id(p) for p in g["params"]} for g in groups}
    assert by[(0.5, 0.1)] == {id(model[0].weight)} and by[(0.5, 0.0)] == {id(model[0].bias)}
    assert by[(1.0, 0.0)] == {id(model[1].weight), id(model[1].bias), id(model[2].weight)}
    cfg = load_config(DetectConfig, overrides=["optim.lr=0.2", "optim.weight_decay=0.1",
                                               "optim.no_decay=[bias]", "optim.lr_mult={'0': 0.5}"])
    opt = build_optimizer(cfg, model)
    assert sorted((g["lr"], g["weight_decay"]) for g in opt.param_groups) == [(0.1, 0.0), (0.1, 0.1),
                                                                                (0.2, 0.0), (0.2, 0.1)]
    with pytest.raises(ValueError, match="no-decay kind"):
        group_parameters(model, 0.1, no_decay=["bn"])


def test_missing_videos_warn_with_count_and_run_records_what_was_used(data, tmp_path, capsys):
    root, ann, feats, _ = data
    extra = {"ghost1": {"subset": "training", "duration": 5.0, "annotations": []},
             "ghost2": {"subset": "training", "duration": 5.0, "annotations": []}}
    ann2 = make_annotations(tmp_path, extra=extra)
    train(cfg_of("train.epochs=1"), feats, ann2, tmp_path / "m", echo=print)
    out = capsys.readouterr().out
    assert "warning: 2 of the 7 annotated training videos have no features" in out
    assert out.index("warning: 2 of") < out.index("training probe")  # before training starts
    meta = json.loads((tmp_path / "m" / "run.json").read_text())
    assert meta["train_videos"] == 5 and meta["missing_videos"] == 2


def test_empty_training_set_is_a_one_line_error(data, tmp_path, capsys):
    root, ann, feats, _ = data
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"version": "x", "database": {
        "vid00": {"subset": "training", "duration": 15.0, "annotations": []},
        "ghost": {"subset": "validation", "duration": 5.0, "annotations": [{"label": "Run", "segment": [1, 2]}]}}}))
    with pytest.raises(InputError, match="no training samples.*drop_empty"):
        train(cfg_of(), feats, empty, tmp_path / "e", echo=None)
    args = ["detect", "train", "--features", str(feats), "--annotations", str(empty), "--out", str(tmp_path / "e2")]
    assert main(args + sum((["--set", s] for s in PROBE), [])) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_prints_annotation_warnings_before_training(data, tmp_path):
    root, ann, feats, _ = data
    doc = json.loads(ann.read_text())
    doc["database"]["vid00"]["annotations"].append({"label": "Run", "segment": [14.0, 19.0]})
    bad = tmp_path / "outside.json"
    bad.write_text(json.dumps(doc))
    res = CliRunner().invoke(cli, ["detect", "train", "--features", str(feats), "--annotations", str(bad),
                                   "--out", str(tmp_path / "w"), *sum((["--set", s] for s in PROBE), [])])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    warn = next(i for i, x in enumerate(lines) if x.startswith("warning:") and "vid00" in x)
    assert warn < next(i for i, x in enumerate(lines) if x.startswith("training probe"))


def test_several_feature_stores_train_and_infer(data, tmp_path):
    root, ann, feats, one = data
    run = tmp_path / "two_stores"
    res = CliRunner().invoke(cli, ["detect", "train", "--features", str(feats), "--features", str(one),
                                   "--annotations", str(ann), "--out", str(run),
                                   *sum((["--set", s] for s in PROBE + ["train.epochs=1"]), [])])
    assert res.exit_code == 0, res.output
    meta = json.loads((run / "run.json").read_text())
    assert meta["feature_dim"] == 16 and len(meta["inputs"]["stores"]) == 2
    with pytest.raises(ProvenanceError, match="2 feature store"):
        infer(run, [feats], tmp_path / "p.json", echo=None)
    summary = infer(run, None, tmp_path / "p.json", subset="validation", echo=None)  # the run's own stores
    assert summary["videos"] == 2


def test_config_errors_name_the_key(data, tmp_path):
    root, ann, feats, _ = data
    with pytest.raises(ConfigError, match=r"data.channels.*\[0, 99\]"):
        train(cfg_of("data.channels=[[0, 99]]"), feats, ann, tmp_path / "c", echo=None)
    shutil.rmtree(tmp_path / "c", ignore_errors=True)
