"""``tadkit demo --fast``: the whole pipeline end to end, as the README's first command runs it."""
from __future__ import annotations

import json
import math

import pytest

from tadkit.cli import main
from tadkit.data.features import FeatureStore


@pytest.mark.slow
def test_fast_demo_runs_every_stage_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for stage in ("data synth-videos", "extract --backbone i3d", "detect train", "detect infer", "evaluate"):
        assert f"$ tadkit {stage}" in printed
    assert "demo finished" in printed and str(out / "report") in printed

    doc = json.loads((out / "videos" / "annotations.json").read_text())
    gt = doc["database"]
    validation = sorted(v for v, info in gt.items() if info["subset"] == "validation")
    store = FeatureStore.open(out / "features")
    assert store.video_ids() == sorted(gt)                      # every video extracted
    assert store.provenance.backbone == "i3d" and store.provenance.feature_dim == 2048

    preds = json.loads((out / "predictions.json").read_text())
    classes = {node["nodeName"] for node in doc["taxonomy"]}
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

    # a second run reuses every finished stage and reports the same numbers
    assert main(["demo", "--fast", "--out", str(out)]) == 0
    again = json.loads((out / "report" / "results.json").read_text())
    assert again["mAP"] == results["mAP"]
