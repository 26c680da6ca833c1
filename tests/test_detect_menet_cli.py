"""MENet end to end through the CLI on tiny generated features: train -> proposals JSON -> AR@AN,
detections by classifier fusion -> mAP, and the Base ablation's channel selection."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from synth_annotations import random_annotations
from tadkit.cli import cli
from tadkit.data.annotations import load_annotations
from tadkit.data.synthetic import SynthFeatureConfig, synth_features

pytestmark = pytest.mark.usefixtures("torch_one_thread")

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.length=32", "menet.dim=8", "menet.asp_dim=8", "menet.align_bins=4", "train.epochs=2",
        "menet.generalization_epochs=1", "train.batch_size=4", "schedule.milestones=[1]"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("menet_cli")
    ann = random_annotations(root / "ann.json", videos=8, train=6, duration=30.0, fps=10.0, until=22, seed=4,
                             classes=("Jump", "Run", "Swim"), first=(0.5, 3), length=(2.0, 8.0), gap=(2, 6))
    feats = root / "feats"
    synth_features(load_annotations(ann), feats, SynthFeatureConfig(feature_dim=8, clip_len=4, stride=4, fps=10.0))
    return root, ann, feats


def tadkit(*args: str) -> str:
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


def train_args(ann: Path, feats: Path, out: Path, *extra: str) -> list[str]:
    args = ["detect", "train", "--config", REPO / "configs" / "menet" / "anet_cpu.yaml", "--features", feats,
            "--annotations", ann, "--out", out]
    for o in TINY + list(extra):
        args += ["--set", o]
    return args


@pytest.fixture(scope="module")
def menet_run(data, tmp_path_factory):
    root, ann, feats = data
    run = tmp_path_factory.mktemp("menet_run") / "run"
    tadkit(*train_args(ann, feats, run))
    return run


def test_menet_trains_writes_proposals_and_fused_detections_that_evaluate(data, menet_run, tmp_path):
    root, ann, feats = data
    run = menet_run
    epochs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs if r["event"] == "epoch"] == [1, 2]

    props = tmp_path / "props.json"
    tadkit("detect", "infer", "--run", run, "--features", feats, "--subset", "validation", "--proposals", props)
    doc = json.loads(props.read_text())
    assert set(doc["results"]) == {"vid06", "vid07"}
    entries = [e for v in doc["results"].values() for e in v]
    assert entries and all(set(e) == {"score", "segment"} for e in entries)
    assert all(0.0 <= e["segment"][0] < e["segment"][1] <= 30.0 for e in entries)
    assert max(len(v) for v in doc["results"].values()) <= 100            # postprocess.max_per_video
    report = tmp_path / "ar.json"
    assert "AUC" in tadkit("evaluate", "--dataset", "anet", "--task", "proposal", "--pred", props, "--gt", ann,
                           "--subset", "validation", "--json", report)
    assert 0.0 < json.loads(report.read_text())["AUC"] <= 1.0

    cls = tmp_path / "cls"
    tadkit("detect", "classify", "--features", feats, "--annotations", ann, "--train-subset", "training", "--out", cls,
           "--steps", "50")
    preds = tmp_path / "preds.json"
    tadkit("detect", "infer", "--run", run, "--features", feats, "--subset", "validation", "--classifier-run", cls,
           "--out", preds)
    dets = json.loads(preds.read_text())["results"]
    labels = {d["label"] for v in dets.values() for d in v}
    assert labels and labels <= {"Jump", "Run", "Swim"}
    assert all(len({d["label"] for d in v}) <= 2 for v in dets.values())   # fusion_topk = 2 classes per video
    assert "average mAP" in tadkit("evaluate", "--dataset", "anet", "--pred", preds, "--gt", ann, "--subset",
                                   "validation")


def test_the_base_ablation_selects_half_of_the_channels_and_ensembles_with_menet(data, menet_run, tmp_path):
    root, ann, feats = data
    run = tmp_path / "base"
    # few candidates per layer: this run's anchors differ from the other run's
    tadkit(*train_args(ann, feats, run, "data.channels=[[4, 8]]", "menet.mrem=false", "train.epochs=1",
                       "menet.max_candidates=20"))
    meta = json.loads((run / "run.json").read_text())
    assert meta["feature_dim"] == 4
    counts = {}
    for name, runs in (("base", [run]), ("menet", [menet_run]), ("both", [menet_run, run])):
        props = tmp_path / f"{name}.json"
        tadkit("detect", "infer", *sum((["--run", r] for r in runs), []), "--features", feats, "--subset",
               "validation", "--proposals", props, "--fuse", "mean", "--set", "max_per_video=100000")
        counts[name] = sum(len(v) for v in json.loads(props.read_text())["results"].values())
    assert counts["base"] < counts["menet"] < counts["both"]            # the runs' anchors are pooled
