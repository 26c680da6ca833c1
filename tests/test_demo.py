"""``tadkit demo --fast``: the whole pipeline end to end, as the README's first command runs it."""
from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import yaml

from tadkit.cli import main
from tadkit.data.features import FeatureStore
from tadkit.demo import FAST

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fast_demo(tmp_path_factory):
    """One ``tadkit demo --fast --threads 1`` run: ``(out folder, what it printed)``."""
    out = tmp_path_factory.mktemp("demo") / "threads1"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--fast", "--out", str(out), "--threads", "1"]) == 0
    return out, printed.getvalue()


def test_fast_demo_runs_every_stage_and_writes_the_report(fast_demo):
    out, printed = fast_demo
    for stage in ("data synth-videos", "extract --backbone i3d", "detect train", "detect infer", "evaluate"):
        assert f"$ tadkit {stage}" in printed
    assert "demo finished" in printed and str(out / "report") in printed

    doc = json.loads((out / "videos" / "annotations.json").read_text())
    gt = doc["database"]
    validation = sorted(v for v, info in gt.items() if info["subset"] == "validation")
    classes = {node["nodeName"] for node in doc["taxonomy"]}
    assert {a["label"] for v in validation for a in gt[v]["annotations"]} == classes  # every class validated
    store = FeatureStore.open(out / "features")
    assert store.video_ids() == sorted(gt)                      # every video extracted
    assert store.provenance.backbone == "i3d" and store.provenance.feature_dim == 2048

    preds = json.loads((out / "predictions.json").read_text())
    assert preds["results"] and set(preds["results"]) <= set(validation)
    for vid, dets in preds["results"].items():
        for d in dets:
            assert 0.0 <= d["segment"][0] <= d["segment"][1] <= gt[vid]["duration"] + 1e-6
            assert d["label"] in classes and 0.0 <= d["score"] <= 1.0

    results = json.loads((out / "report" / "results.json").read_text())
    assert results["task"] == "detection" and len(results["mAP"]) == 10
    assert math.isfinite(results["average_mAP"]) and 0.0 <= results["average_mAP"] <= 1.0
    assert (out / "report" / "per_class.csv").is_file()
    assert (out / "report" / "pr_curves.png").stat().st_size > 10_000
    timelines = sorted(p.stem for p in (out / "report" / "timelines").glob("*.png"))
    assert timelines == validation


def test_fast_demo_trains_the_detector_it_writes(fast_demo):
    """The run trains the config the demo wrote (TAL-MTS, normalised features) and its loss falls."""
    out, _ = fast_demo
    config = yaml.safe_load((out / "detect.yaml").read_text())
    assert config["head"] == "talmts" and config["train"]["epochs"] == FAST.epochs
    assert (out / "run" / "normalization.npz").is_file()
    epochs = [json.loads(line) for line in (out / "run" / "log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in epochs if e.get("event") == "epoch"]
    assert len(losses) == FAST.epochs and losses[-1] < 0.6 * losses[0], losses


def test_fast_demo_gives_the_same_numbers_at_two_threads(fast_demo, tmp_path):
    out1, _ = fast_demo
    out2 = tmp_path / "threads2"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["demo", "--fast", "--out", str(out2), "--threads", "2"]) == 0
    a, b = FeatureStore.open(out1 / "features"), FeatureStore.open(out2 / "features")
    for vid in a.video_ids():                                   # bit-identical features ...
        assert np.array_equal(a.read(vid).features, b.read(vid).features), vid
    p1, p2 = (json.loads((o / "predictions.json").read_text()) for o in (out1, out2))
    assert p1["results"] == p2["results"]                       # ... detections ...
    r1, r2 = (json.loads((o / "report" / "results.json").read_text()) for o in (out1, out2))
    assert r1["mAP"] == r2["mAP"] and r1["per_class_AP"] == r2["per_class_AP"]   # ... and metrics


def test_a_rerun_reuses_every_finished_stage(fast_demo):
    out, _ = fast_demo
    before = json.loads((out / "report" / "results.json").read_text())
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--fast", "--out", str(out)]) == 0
    assert "$ tadkit data synth-videos" not in printed.getvalue()
    assert "$ tadkit detect train" not in printed.getvalue()
    assert "0 extracted" in printed.getvalue()
    assert json.loads((out / "report" / "results.json").read_text())["mAP"] == before["mAP"]
