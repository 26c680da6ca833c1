"""Detection engine on edge inputs: ensembles of mismatched runs, saved candidates, resume, damaged runs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import probe_head  # noqa: F401  (registers the probe heads)
from synth_annotations import random_annotations
from tadkit.cli import cli, main
from tadkit.config import load_config
from tadkit.data.annotations import load_annotations
from tadkit.data.synthetic import SynthFeatureConfig, synth_features
from tadkit.detect.config import DetectConfig
from tadkit.detect.engine import infer, train
from tadkit.errors import ConfigError

pytestmark = pytest.mark.usefixtures("torch_one_thread")

PROBE = ["head=probe", "optim.name=sgd", "optim.lr=0.5", "optim.momentum=0", "optim.weight_decay=0",
         "schedule.name=constant", "train.epochs=1", "train.batch_size=4", "train.amp=false",
         "postprocess.method=hard", "postprocess.max_per_video=20"]


def cfg_of(*extra: str) -> DetectConfig:
    return load_config(DetectConfig, overrides=PROBE + list(extra))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    ann = random_annotations(root / "ann.json", videos=5, train=3, duration=15.0, fps=10.0, until=12, seed=2)
    feats = root / "feats"
    synth_features(load_annotations(ann), feats, SynthFeatureConfig(feature_dim=4, clip_len=4, stride=4, fps=10.0))
    return root, ann, feats


def test_resized_runs_of_other_lengths_are_not_averaged(data, tmp_path):
    """Two resize-mode runs whose ``data.length`` differ give outputs of other sizes: auto fuses candidates."""
    root, ann, feats = data
    a, b = tmp_path / "a", tmp_path / "b"
    train(cfg_of("data.mode=resize", "data.length=16"), feats, ann, a, echo=None)
    train(cfg_of("data.mode=resize", "data.length=24"), feats, ann, b, echo=None)
    assert infer([a, b], feats, tmp_path / "p.json", subset="validation", echo=None)["fuse"] == "union"
    with pytest.raises(ConfigError, match="data.length"):
        infer([a, b], feats, tmp_path / "p.json", subset="validation", fuse="mean", echo=None)


def test_auto_fusion_of_stores_with_other_videos_pools_and_says_why(data, tmp_path):
    """Runs over stores that do not hold the same videos cannot be averaged: auto pools their detections
    (with a note naming a video), an explicit --fuse mean is one error naming it."""
    root, ann, feats = data
    full = load_annotations(ann)
    dropped = sorted(full.subset("validation").video_ids())[0]
    fewer = tmp_path / "fewer"
    synth_features(full.select([v for v in full.video_ids() if v != dropped]), fewer,
                   SynthFeatureConfig(feature_dim=4, clip_len=4, stride=4, fps=10.0))
    a, b = tmp_path / "a", tmp_path / "b"
    train(cfg_of("data.mode=window", "data.length=16"), feats, ann, a, echo=None)
    train(cfg_of("data.mode=window", "data.length=16"), fewer, ann, b, echo=None)
    said: list[str] = []
    summary = infer([a, b], None, tmp_path / "p.json", subset="validation", annotations=ann, echo=said.append)
    assert summary["fuse"] == "union" and summary["videos"] == 2
    assert any(line.startswith("note: ") and dropped in line and "--fuse union" in line for line in said)
    with pytest.raises(ConfigError, match=f"1 videos .e.g. {dropped}. are samples of only one"):
        infer([a, b], None, tmp_path / "q.json", subset="validation", annotations=ann, fuse="mean", echo=None)


def test_postprocessing_saved_proposals_needs_class_scores(data, tmp_path, capsys):
    """Raw candidates of a proposal head carry no class: re-processing them must not label them all
    with the first class."""
    root, ann, feats = data
    run = tmp_path / "prop"
    train(cfg_of("head=probe_proposals"), feats, ann, run, echo=None)
    raw = tmp_path / "c.npz"
    infer(run, feats, None, subset="validation", raw=raw, proposals=tmp_path / "props.json", echo=None)
    assert main(["detect", "postprocess", "--candidates", str(raw), "--out", str(tmp_path / "d.json"),
                 "--run", str(run)]) == 1
    err = capsys.readouterr().err
    assert f"error: {raw}: class-agnostic proposals" in err and "fusion_scores" in err, err
    assert not (tmp_path / "d.json").exists()
    scores = tmp_path / "scores.json"
    classes = json.loads((run / "run.json").read_text())["classes"]
    scores.write_text(json.dumps({"class": classes, "results": {
        v: [0.1] * (len(classes) - 1) + [0.9] for v in ("vid03", "vid04")}}))
    res = CliRunner().invoke(cli, ["detect", "postprocess", "--candidates", str(raw), "--out",
                                   str(tmp_path / "d.json"), "--run", str(run), "--set",
                                   f"fusion_scores={scores}", "--set", "fusion_topk=1"])
    assert res.exit_code == 0, res.output
    labels = {d["label"] for v in json.loads((tmp_path / "d.json").read_text())["results"].values() for d in v}
    assert labels == {classes[-1]}


def test_a_scores_file_without_some_videos_is_an_error_naming_it(data, tmp_path, capsys):
    root, ann, feats = data
    run = tmp_path / "prop"
    train(cfg_of("head=probe_proposals"), feats, ann, run, echo=None)
    scores = tmp_path / "scores.json"
    classes = json.loads((run / "run.json").read_text())["classes"]
    scores.write_text(json.dumps({"class": classes, "results": {"vid03": [0.5] * len(classes)}}))
    assert main(["detect", "infer", "--run", str(run), "--features", str(feats), "--subset", "validation",
                 "--out", str(tmp_path / "d.json"), "--classifier", str(scores)]) == 1
    err = capsys.readouterr().err
    assert f"error: {scores}: no class scores for 1 videos (e.g. 'vid04')" in err, err


def test_a_step_after_a_group_of_unreadable_batches_skips_the_optimiser(tmp_path):
    """All batches of an accumulation group unreadable: no gradient, so no optimiser / AMP-scaler step
    (the scaler asserted: "No inf checks were recorded"), but the schedule still advances."""
    import torch

    from tadkit.detect.runs import DistContext
    from tadkit.detect.training import Trainer

    head = probe_head.Probe(3, 2, frozenset())
    trainer = Trainer(cfg_of("schedule.name=cosine", "train.epochs=4"), head, DistContext(0, 1, torch.device("cpu"), False),
                      tmp_path, echo=None)
    trainer.scaler = torch.amp.GradScaler("cpu", enabled=True)  # what AMP uses on a GPU
    trainer.iters_per_epoch = 2
    trainer.scaler.scale(head.conv.weight.sum() ** 2).backward()
    trainer._step()
    before = {k: v.clone() for k, v in head.state_dict().items()}
    lr = trainer.optimizer.param_groups[0]["lr"]
    trainer._step()  # nothing accumulated
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())
    assert trainer.scheduler.last_epoch == 2 and trainer.optimizer.param_groups[0]["lr"] < lr


def test_resume_keeps_the_recorded_held_out_videos(data, tmp_path):
    """A resumed run holds out the videos it held out before, even when the store gained videos
    (a fresh split would train on videos the selection was measured on)."""
    root, ann, feats = data
    few = root / "few"
    if not few.exists():
        part = load_annotations(ann).select(["vid00", "vid01", "vid02"])
        synth_features(part, few, SynthFeatureConfig(feature_dim=4, clip_len=4, stride=4, fps=10.0))
    extra = tmp_path / "ann.json"
    doc = json.loads(ann.read_text())
    doc["database"] = {k: {**v, "subset": "training"} for k, v in doc["database"].items()}
    extra.write_text(json.dumps(doc))
    run = tmp_path / "run"
    first = train(cfg_of("data.holdout_fraction=0.34"), few, extra, run, echo=None)
    held = json.loads((run / "run.json").read_text())["holdout_videos"]
    assert len(held) == 1 and first["holdout_videos"] == held
    again = train(cfg_of("data.holdout_fraction=0.34", "train.epochs=2"), feats, extra, run, resume=True, echo=None)
    assert again["epochs"] == 2 and again["holdout_videos"] == held


@pytest.mark.parametrize("edit", [lambda d: [d], lambda d: {k: v for k, v in d.items() if k != "classes"},
                                  lambda d: {**d, "feature_dim": "four"}])
def test_a_damaged_run_json_is_a_one_line_error(data, tmp_path, capsys, edit):
    import shutil

    root, ann, feats = data
    base = root / "plain"
    if not base.exists():
        train(cfg_of(), feats, ann, base, echo=None)
    run = tmp_path / "run"
    shutil.copytree(base, run)
    (run / "run.json").write_text(json.dumps(edit(json.loads((run / "run.json").read_text()))))
    assert main(["detect", "infer", "--run", str(run), "--features", str(feats), "--out", str(tmp_path / "p.json")]) == 1
    assert f"error: {run / 'run.json'}: " in capsys.readouterr().err
