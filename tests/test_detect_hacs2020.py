"""The HACS-2020 chain end to end through the CLI, on tiny generated features with HACS-format annotations.

BMN train -> BMN ensemble proposals -> refine train --from-run -> classifiers + learned ensemble ->
infer with classifier fusion -> evaluate (hacs protocol). Tiny widths and one or two epochs: this
checks that the commands fit together, not accuracy (see benchmarks/detect_hacs2020.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tadkit.cli import main
from tadkit.data.annotations import load_annotations
from tadkit.data.synthetic import SynthFeatureConfig, synth_features
from tadkit.files import read_json

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CLASSES = ["Archery", "Bathing dog", "Cumbia"]
BMN = ["--set", "train.epochs=2", "--set", "bmn.hidden_1d=8", "--set", "bmn.hidden_2d=4", "--set", "bmn.hidden_3d=8",
       "--set", "bmn.num_samples=4", "--set", "data.length=16", "--set", "train.batch_size=4"]
REFINE = ["--set", "train.epochs=1", "--set", "refine.hidden=8", "--set", "refine.fc_dim=8", "--set", "refine.bins=4",
          "--set", "refine.num_heads=2", "--set", "train.batch_size=4"]


def hacs_annotations(root):
    """HACS Segments layout: ids without ``v_``, ``url``, training / validation / testing subsets."""
    rng = np.random.default_rng(3)
    db = {}
    for i in range(22):
        subset = "training" if i < 14 else "validation" if i < 20 else "testing"
        duration = float(rng.uniform(20, 40))
        start = float(rng.uniform(1, duration / 2))
        end = min(duration - 0.5, start + float(rng.uniform(4, duration / 2)))
        label = CLASSES[i % 3]
        anns = [] if subset == "testing" else [{"label": label, "segment": [round(start, 2), round(end, 2)]}]
        db[f"hacs{i:03d}Xy"] = {"subset": subset, "duration": round(duration, 2),
                                "url": f"https://www.youtube.com/watch?v=hacs{i:03d}Xy", "annotations": anns}
    path = root / "HACS_segments_v1.1.1.json"
    path.write_text(json.dumps({"database": db, "taxonomy": [{"nodeName": c} for c in CLASSES],
                                "version": "HACS Segments v1.1.1"}))
    return path


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("hacs2020")
    ann = hacs_annotations(root)
    feats = root / "feats"
    synth_features(load_annotations(ann), feats, SynthFeatureConfig(feature_dim=8, clip_len=8, stride=8, fps=10.0))
    return root, ann, feats


def _run(*args: str) -> None:
    assert main(list(args)) == 0, " ".join(args)


def test_the_whole_hacs2020_chain_runs_on_hacs_format_annotations(chain, capsys):
    root, ann, feats = chain
    common = ["--features", str(feats), "--annotations", str(ann)]
    for seed, lstm in ((0, 0), (1, 1)):                                          # two BMN runs, one with a Bi-LSTM
        _run("detect", "train", "--config", str(CONFIGS / "bmn" / "hacs.yaml"), *common, "--out", str(root / f"bmn_{seed}"),
             "--set", f"train.seed={seed}", "--set", f"bmn.lstm_layers={lstm}", *BMN)
    bmn = ["--run", str(root / "bmn_0"), "--run", str(root / "bmn_1")]
    _run("detect", "infer", *bmn, "--features", str(feats), "--subset", "validation",
         "--proposals", str(root / "bmn_props.json"))
    props = read_json(root / "bmn_props.json")["results"]
    assert len(props) == 6 and all(0 < len(v) <= 100 for v in props.values())
    _run("evaluate", "--dataset", "hacs", "--task", "proposal", "--gt", str(ann), "--pred", str(root / "bmn_props.json"))
    assert "AUC" in capsys.readouterr().out

    _run("detect", "train", "--config", str(CONFIGS / "refine" / "hacs.yaml"), *common, "--out", str(root / "refine"),
         "--from-run", str(root / "bmn_0"), "--from-run", str(root / "bmn_1"), *REFINE)
    assert [r["path"] for r in read_json(root / "refine" / "run.json")["from_run"]["runs"]] == \
        [str((root / f"bmn_{k}").resolve()) for k in (0, 1)]

    for seed in (1, 2):
        _run("detect", "classify", *common, "--train-subset", "training", "--holdout-fraction", "0.3",
             "--seed", str(seed), "--lr", str(0.01 * seed), "--out", str(root / f"cls_{seed}"))
    held = [read_json(root / f"cls_{s}" / "run.json")["holdout_videos"] for s in (1, 2)]
    assert held[0] == held[1] and len(held[0]) == 4                             # 30 % of 14, the same for both
    _run("detect", "classify-ensemble", "--classifier-run", str(root / "cls_1"), "--classifier-run",
         str(root / "cls_2"), "--out", str(root / "cls"))
    ens = read_json(root / "cls" / "run.json")
    assert ens["kind"] == "classifier-ensemble" and len(ens["weights"]) == 2 and ens["holdout_videos"] == held[0]

    _run("detect", "infer", "--run", str(root / "refine"), "--features", str(feats), "--subset", "validation",
         "--classifier-run", str(root / "cls"), "--out", str(root / "preds.json"),
         "--proposals", str(root / "refined.json"))
    preds = read_json(root / "preds.json")["results"]
    assert set(preds) == set(props) and {d["label"] for v in preds.values() for d in v} <= set(CLASSES)
    capsys.readouterr()
    _run("evaluate", "--dataset", "hacs", "--gt", str(ann), "--pred", str(root / "preds.json"))
    assert "average mAP" in capsys.readouterr().out
    _run("evaluate", "--dataset", "hacs", "--task", "proposal", "--gt", str(ann), "--pred", str(root / "refined.json"))


def test_an_ensemble_of_identical_bmn_runs_equals_the_run(chain, tmp_path):
    root, ann, feats = chain
    run = tmp_path / "bmn"
    _run("detect", "train", "--config", str(CONFIGS / "bmn" / "anet_cpu.yaml"), "--features", str(feats), "--annotations",
         str(ann), "--out", str(run), *BMN)
    one, three = tmp_path / "one.json", tmp_path / "three.json"
    _run("detect", "infer", "--run", str(run), "--features", str(feats), "--subset", "validation", "--proposals", str(one))
    _run("detect", "infer", "--run", str(run), "--run", str(run), "--run", str(run), "--weights", "1,2,3",
         "--features", str(feats), "--subset", "validation", "--proposals", str(three))
    assert read_json(one)["results"] == read_json(three)["results"]


def test_classify_ensemble_needs_held_out_videos(chain, tmp_path, capsys):
    root, ann, feats = chain
    for k in (1, 2):
        _run("detect", "classify", "--features", str(feats), "--annotations", str(ann), "--train-subset", "training",
             "--out", str(tmp_path / f"c{k}"), "--seed", str(k))
    capsys.readouterr()
    assert main(["detect", "classify-ensemble", "--classifier-run", str(tmp_path / "c1"), "--classifier-run",
                 str(tmp_path / "c2"), "--out", str(tmp_path / "ens")]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--holdout-fraction" in err
