"""Engine and CLI end to end on tiny synthetic features (CPU, a few seconds)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from synth_annotations import random_annotations
from tadkit.cli import cli, main
from tadkit.config import load_config
from tadkit.data.annotations import load_annotations
from tadkit.data.synthetic import SynthFeatureConfig, synth_features
from tadkit.detect.config import DetectConfig, PostprocessConfig
from tadkit.detect.engine import ModelEMA, apply_postprocess, infer, lr_factor, split_holdout, train
from tadkit.detect.postprocess import Detections
from tadkit.errors import ProvenanceError


pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = """\
head: mltpn
mltpn: {embed_dim: 8, transform_k1: 4, transform_k2: 4, thm_channels: 8, thm_out_channels: 8,
        num_thms: 2, num_scales: 3, mfm_reduction: 4, head_squeeze: 2, dropout: 0.1}
data: {mode: window, length: 32, train_subset: training, test_subset: validation}
optim: {name: adam, lr: 0.003, weight_decay: 0.0}
schedule: {name: cosine, warmup_epochs: 1}
train: {epochs: 2, batch_size: 4, log_every: 2, checkpoint_every: 1}
postprocess: {method: gaussian, sigma: 0.5, max_per_video: 30}
"""


def _make_data(root: Path, dim: int = 8, stride: int = 2, n_train: int = 5, n_val: int = 2) -> tuple[Path, Path]:
    ann_path = random_annotations(root / "ann.json", videos=n_train + n_val, train=n_train, duration=20.0,
                                  fps=10.0, until=15, length=(1.0, 3.5), gap=(1.5, 4.0))
    feats = root / f"feats_{dim}_{stride}"
    synth_features(load_annotations(ann_path), feats,
                   SynthFeatureConfig(feature_dim=dim, clip_len=4, stride=stride, fps=10.0))
    return ann_path, feats


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("detect")
    ann, feats = _make_data(root)
    (root / "tiny.yaml").write_text(TINY)
    return root, ann, feats


@pytest.fixture(scope="module")
def trained(data):
    root, ann, feats = data
    run = root / "run"
    res = CliRunner().invoke(cli, ["detect", "train", "--config", str(root / "tiny.yaml"), "--features", str(feats),
                                   "--annotations", str(ann), "--out", str(run)])
    assert res.exit_code == 0, res.output
    return run


def test_train_writes_run_directory(trained):
    assert {p.name for p in (trained / "checkpoints").iterdir()} == {"epoch_0001.pt", "epoch_0002.pt", "last.pt"}
    meta = json.loads((trained / "run.json").read_text())
    assert meta["classes"] == ["Jump", "Run"] and meta["provenance"]["feature_dim"] == 8
    cfg = load_config(DetectConfig, trained / "config.yaml")
    assert cfg.mltpn.num_thms == 2 and cfg.postprocess.method == "gaussian"
    records = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2] and all(np.isfinite(r["loss"]) for r in epochs)
    assert any(r["event"] == "step" and "lr" in r for r in records)
    state = torch.load(trained / "checkpoints" / "last.pt", weights_only=True)
    assert set(state) >= {"model", "optimizer", "scheduler", "epoch", "rng", "scaler"}
    assert state["epoch"] == 2


def test_infer_writes_official_json_and_postprocess_retunes(data, trained):
    root, ann, feats = data
    pred, raw = root / "pred.json", root / "raw.json"
    res = CliRunner().invoke(cli, ["detect", "infer", "--run", str(trained), "--features", str(feats),
                                   "--subset", "validation", "--out", str(pred), "--raw", str(raw)])
    assert res.exit_code == 0, res.output
    doc = json.loads(pred.read_text())
    assert set(doc) == {"version", "results", "external_data"}
    assert set(doc["results"]) == {"vid05", "vid06"}
    dets = [d for v in doc["results"].values() for d in v]
    assert 0 < len(dets) <= 60
    assert all(d["label"] in ("Jump", "Run") and 0.0 <= d["segment"][0] <= d["segment"][1] <= 20.0 for d in dets)
    assert doc["external_data"]["postprocess"]["sigma"] == 0.5
    # re-tune without the model: hard NMS, top 5 per video
    pred2 = root / "pred2.json"
    res = CliRunner().invoke(cli, ["detect", "postprocess", "--candidates", str(raw), "--out", str(pred2),
                                   "--run", str(trained), "--set", "method=hard", "--set", "max_per_video=5"])
    assert res.exit_code == 0, res.output
    doc2 = json.loads(pred2.read_text())
    assert all(len(v) <= 5 for v in doc2["results"].values())
    assert doc2["external_data"]["postprocess"]["method"] == "hard"
    assert main(["detect", "postprocess", "--candidates", str(raw), "--out", str(pred2),
                 "--set", "method=fancy"]) == 1


def test_infer_refuses_features_with_other_provenance(data, trained, capsys):
    root, ann, _ = data
    _, other = _make_data(root / "other", dim=8, stride=4)
    with pytest.raises(ProvenanceError, match="stride"):
        infer(trained, other, root / "x.json", echo=None)
    assert main(["detect", "infer", "--run", str(trained), "--features", str(other), "--out",
                 str(root / "x.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "stride" in err and "Traceback" not in err


def test_resume_continues_bit_for_bit(data, trained, tmp_path):
    root, ann, feats = data
    resumed = tmp_path / "resumed"
    shutil.copytree(trained, resumed)
    ck = resumed / "checkpoints"
    (ck / "epoch_0002.pt").unlink()
    shutil.copyfile(ck / "epoch_0001.pt", ck / "last.pt")
    cfg = load_config(DetectConfig, root / "tiny.yaml")
    train(cfg, feats, ann, resumed, resume=True, echo=None)
    a = torch.load(trained / "checkpoints" / "epoch_0002.pt", weights_only=True)
    b = torch.load(ck / "epoch_0002.pt", weights_only=True)
    for key, t in a["model"].items():
        assert torch.equal(t, b["model"][key]), key
    for pid, st in a["optimizer"]["state"].items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["optimizer"]["state"][pid][k]))
    assert a["scheduler"] == b["scheduler"]


def test_train_refuses_existing_run_without_resume(data, trained):
    root, ann, feats = data
    assert main(["detect", "train", "--config", str(root / "tiny.yaml"), "--features", str(feats),
                 "--annotations", str(ann), "--out", str(trained)]) == 1


def test_unknown_config_key_is_one_line_error(data, capsys):
    root, ann, feats = data
    assert main(["detect", "train", "--features", str(feats), "--annotations", str(ann), "--out",
                 str(root / "r"), "--set", "mltpn.num_thmz=3"]) == 1
    assert "num_thmz" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_cpu_processes(data, tmp_path):
    root, ann, feats = data
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "tadkit",
         "detect", "train", "--config", str(root / "tiny.yaml"), "--features", str(feats), "--annotations",
         str(ann), "--out", str(out), "--set", "train.epochs=1"],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("trained 1 epochs") == 1, (proc.stdout[-2000:], proc.stderr[-2000:])  # rank 0 only
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    assert (out / "checkpoints" / "last.pt").is_file()


def test_lr_schedules():
    cfg = load_config(DetectConfig, overrides=["schedule.name=step", "schedule.milestones=[2,4]",
                                               "schedule.gamma=0.5", "schedule.warmup_epochs=1"])
    assert [lr_factor(cfg, e) for e in (0.5, 1, 2, 3.9, 4)] == [0.5, 1.0, 0.5, 0.5, 0.25]
    cos = load_config(DetectConfig, overrides=["schedule.name=cosine", "train.epochs=10",
                                               "schedule.min_lr_ratio=0.1"])
    assert lr_factor(cos, 0) == pytest.approx(1.0)
    assert lr_factor(cos, 5) == pytest.approx(0.55)
    assert lr_factor(cos, 10) == pytest.approx(0.1)


def test_holdout_split_is_deterministic_and_disjoint():
    ids = [f"v{i}" for i in range(10)]
    tr, ho = split_holdout(ids, 0.2, seed=3)
    assert (tr, ho) == split_holdout(list(reversed(ids)), 0.2, seed=3)
    assert len(ho) == 2 and not set(tr) & set(ho) and sorted(tr + ho) == ids
    assert split_holdout(ids, 0.0, 0) == (ids, [])


def test_ema_tracks_weights():
    model = torch.nn.Linear(2, 1)
    ema = ModelEMA(model, decay=0.5)
    w0 = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(2.0)
    ema.update(model)
    assert torch.allclose(ema.module.weight, w0 + 1.0)


def test_classifier_fusion_in_pipeline(tmp_path):
    scores = tmp_path / "cls.json"
    scores.write_text(json.dumps({"results": {"v": [0.9, 0.1, 0.4]}, "class": ["A", "B", "C"]}))
    cands = {"v": Detections([[0, 10], [0.5, 10], [30, 40]], [0.81, 0.5, 0.25], [1, 0, 1])}
    pp = PostprocessConfig(method="hard", iou_threshold=0.5, fusion_scores=str(scores), fusion_topk=2)
    out = apply_postprocess(cands, pp, ["A", "B", "C"])["v"]
    # class-agnostic NMS keeps [0,10] (0.81) and [30,40] (0.25); each paired with classes A (0.9) and C (0.4)
    assert len(out) == 4 and set(out.labels.tolist()) == {0, 2}
    assert out.scores[0] == pytest.approx(np.sqrt(0.9 * 0.81))


def test_holdout_selection_and_ema_weights_are_used(data, tmp_path):
    root, ann, feats = data
    cfg = load_config(DetectConfig, root / "tiny.yaml",
                      ["data.holdout_fraction=0.4", "train.ema=true", "train.ema_decay=0.5", "train.epochs=1"])
    run = tmp_path / "ho"
    train(cfg, feats, ann, run, echo=None)
    meta = json.loads((run / "run.json").read_text())
    assert len(meta["holdout_videos"]) == 2 and meta["train_videos"] == 3
    epoch = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()][-1]
    assert np.isfinite(epoch["holdout_loss"])
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["ema"] is not None
    assert any(not torch.equal(best["ema"][k], best["model"][k]) for k in best["model"]
               if best["model"][k].dtype.is_floating_point)
    summary = infer(run, feats, tmp_path / "p.json", checkpoint="best", echo=None)
    assert summary["videos"] == 7  # every video in the store
    with pytest.raises(Exception, match="no such checkpoint"):
        infer(run, feats, tmp_path / "p.json", checkpoint="epoch_0099", echo=None)


def test_detect_group_lists_commands():
    res = CliRunner().invoke(cli, ["detect", "--help"])
    assert res.exit_code == 0 and all(c in res.output for c in ("train", "infer", "postprocess"))


def test_resume_refuses_other_features(data, trained, tmp_path):
    root, ann, _ = data
    _, other = _make_data(root / "other2", dim=6)
    resumed = tmp_path / "r"
    shutil.copytree(trained, resumed)
    with pytest.raises(ProvenanceError, match="feature_dim"):
        train(load_config(DetectConfig, root / "tiny.yaml", ["train.epochs=3"]), other, ann, resumed,
              resume=True, echo=None)


def test_classifier_fusion_needs_every_video(tmp_path):
    scores = tmp_path / "cls.json"
    scores.write_text(json.dumps({"results": {"v": [0.9]}, "class": ["A"]}))
    pp = PostprocessConfig(fusion_scores=str(scores))
    with pytest.raises(Exception, match="cls.json.*no class scores for 1 videos.*'w'"):
        apply_postprocess({"v": Detections.empty(), "w": Detections.empty()}, pp, ["A"])


def test_unreadable_video_is_reported_and_skipped(data, tmp_path, capsys):
    root, ann, feats = data
    broken = tmp_path / "feats"
    shutil.copytree(feats, broken)
    (broken / "videos" / "vid06.h5").write_bytes(b"not hdf5")
    cfg = load_config(DetectConfig, root / "tiny.yaml", ["data.mode=resize", "train.epochs=1",
                                                          "data.train_subset=training,validation"])
    summary = train(cfg, broken, ann, tmp_path / "run", echo=None)
    assert list(summary["failed"]) == ["vid06"] and "vid06.h5" in summary["failed"]["vid06"]
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any(r["event"] == "failed" and "vid06" in r["videos"] for r in log)
    result = infer(tmp_path / "run", broken, tmp_path / "p.json", subset="validation", echo=print)
    assert list(result["failed"]) == ["vid06"]
    assert set(json.loads((tmp_path / "p.json").read_text())["results"]) == {"vid05"}
    assert "1 videos failed" in capsys.readouterr().out


def test_trained_video_classifier_feeds_fusion(data, trained, tmp_path):
    root, ann, feats = data
    scores = tmp_path / "cls.json"
    res = CliRunner().invoke(cli, ["detect", "classify", "--features", str(feats), "--annotations", str(ann),
                                   "--train-subset", "training", "--out", str(scores), "--steps", "200"])
    assert res.exit_code == 0, res.output
    doc = json.loads(scores.read_text())
    assert doc["class"] == ["Jump", "Run"] and len(doc["results"]) == 7
    # on its own training videos the classifier ranks a present class first
    annotations = load_annotations(ann)
    for vid in annotations.subset("training").video_ids():
        _, labels = annotations.segments_of(vid)
        assert int(np.argmax(doc["results"][vid])) in set(labels.tolist())
    pred = tmp_path / "fused.json"
    res = CliRunner().invoke(cli, ["detect", "infer", "--run", str(trained), "--features", str(feats),
                                   "--subset", "validation", "--out", str(pred),
                                   "--set", f"fusion_scores={scores}", "--set", "fusion_topk=1"])
    assert res.exit_code == 0, res.output
    out = json.loads(pred.read_text())
    for vid, dets in out["results"].items():  # top-1 fusion: one label per video, its best class
        best = ["Jump", "Run"][int(np.argmax(doc["results"][vid]))]
        assert dets and {d["label"] for d in dets} == {best}
    assert out["external_data"]["postprocess"]["fusion_topk"] == 1
