"""Engine II: inputs a head declares, streams and provenance, normalisation, hooks, groups, accumulation."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import probe_head
from synth_annotations import random_annotations
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
    path = random_annotations(root / "ann.json", videos=n_train + n_val, train=n_train, duration=15.0, fps=10.0,
                              until=12, seed=1)
    if extra:
        data = json.loads(path.read_text())
        data["database"].update(extra)
        path.write_text(json.dumps(data))
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
    probe_head.SETTINGS.update(needs=frozenset())
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
    with pytest.raises(InputError, match="no action instance in the 1 training videos"):
        train(cfg_of(), feats, empty, tmp_path / "e", echo=None)
    args = ["detect", "train", "--features", str(feats), "--annotations", str(empty), "--out", str(tmp_path / "e2")]
    assert main(args + sum((["--set", s] for s in PROBE), [])) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_windows_that_drop_every_instance_are_a_one_line_error(data, tmp_path):
    root, ann, feats, _ = data
    # one instance over the whole 15 s video: a window of 16 snippets (6.4 s) holds < min_ioi of it
    whole = tmp_path / "whole.json"
    whole.write_text(json.dumps({"version": "x", "database": {
        "vid00": {"subset": "training", "duration": 15.0, "annotations": [{"label": "Run", "segment": [0, 15]}]}}}))
    with pytest.raises(InputError, match="no training samples .every window was dropped as empty"):
        train(cfg_of(), feats, whole, tmp_path / "w", echo=None)


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


# --------------------------------------------------------------------------- proposal heads and classifier fusion
@pytest.fixture(scope="module")
def proposal_run(data, tmp_path_factory):
    root, ann, feats, _ = data
    run = tmp_path_factory.mktemp("prop") / "run"
    train(cfg_of("head=probe_proposals", "train.epochs=2", "postprocess.max_per_video=30"), feats, ann, run,
          echo=None)
    return run


def test_proposal_head_writes_the_official_proposal_json(data, proposal_run, tmp_path):
    root, ann, feats, _ = data
    props = tmp_path / "props.json"
    res = CliRunner().invoke(cli, ["detect", "infer", "--run", str(proposal_run), "--features", str(feats),
                                   "--subset", "validation", "--proposals", str(props)])
    assert res.exit_code == 0, res.output
    doc = json.loads(props.read_text())
    entries = [e for v in doc["results"].values() for e in v]
    assert entries and all(set(e) == {"score", "segment"} for e in entries)
    assert f"wrote {len(entries)} proposals to {props} for 2 videos" in res.output
    res = CliRunner().invoke(cli, ["evaluate", "--dataset", "anet", "--task", "proposal", "--pred", str(props),
                                   "--gt", str(ann), "--subset", "validation"])
    assert res.exit_code == 0, res.output
    assert "AUC" in res.output
    # detections of a proposal head need video-level class scores
    assert main(["detect", "infer", "--run", str(proposal_run), "--features", str(feats), "--subset",
                 "validation", "--out", str(tmp_path / "d.json")]) == 1


def test_proposals_fused_with_a_scores_file_or_classifier_runs(data, proposal_run, tmp_path):
    root, ann, feats, _ = data
    cls_run = tmp_path / "cls"
    res = CliRunner().invoke(cli, ["detect", "classify", "--features", str(feats), "--annotations", str(ann),
                                   "--train-subset", "training", "--subset", "validation", "--out", str(cls_run),
                                   "--steps", "100"])
    assert res.exit_code == 0, res.output
    assert json.loads((cls_run / "run.json").read_text())["kind"] == "classifier"
    scores = json.loads((cls_run / "scores.json").read_text())
    assert set(scores["results"]) == {"vid05", "vid06"}
    by_run, by_file = tmp_path / "by_run.json", tmp_path / "by_file.json"
    base = ["detect", "infer", "--run", str(proposal_run), "--features", str(feats), "--subset", "validation",
            "--set", "fusion_topk=1"]
    res = CliRunner().invoke(cli, base + ["--out", str(by_run), "--classifier-run", str(cls_run)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, base + ["--out", str(by_file), "--classifier", str(cls_run / "scores.json")])
    assert res.exit_code == 0, res.output
    a, b = json.loads(by_run.read_text()), json.loads(by_file.read_text())
    for vid in ("vid05", "vid06"):
        best = scores["class"][int(np.argmax(scores["results"][vid]))]
        assert {d["label"] for d in a["results"][vid]} == {best}
        assert [d["segment"] for d in a["results"][vid]] == [d["segment"] for d in b["results"][vid]]
        np.testing.assert_allclose([d["score"] for d in a["results"][vid]], [d["score"] for d in b["results"][vid]],
                                   atol=2e-6)  # the file's scores are rounded to 6 decimals
    assert a["external_data"]["postprocess"]["classifier_runs"] == [str(cls_run)]


# --------------------------------------------------------------------------- chained runs
def test_chained_run_sees_its_sources_proposals_at_the_right_grid_positions(data, proposal_run, tmp_path):
    root, ann, feats, _ = data
    props = tmp_path / "props.json"
    infer(proposal_run, feats, None, subset="training", proposals=props, echo=None,
          postprocess=load_config(DetectConfig, proposal_run / "config.yaml").postprocess)
    expected = {v: np.array([e["segment"] + [e["score"]] for e in es])
                for v, es in json.loads(props.read_text())["results"].items()}
    run = tmp_path / "refine"
    train(cfg_of("head=probe_refine", "train.epochs=1", "data.proposals_topk=30"), feats, ann, run, echo=None, from_run=[proposal_run])
    meta = json.loads((run / "run.json").read_text())
    src_meta = json.loads((proposal_run / "run.json").read_text())
    assert meta["from_run"]["runs"][0]["run_id"] == src_meta["run_id"] and meta["from_run"]["topk"] == 30
    fed = [seen for seen in probe_head.SEEN["inputs"] if "proposals" in seen]
    assert fed and all(len(seen["proposals"]) == seen["features"].shape[0] for seen in fed)
    assert all(p.shape[1] == 3 for seen in fed for p in seen["proposals"])
    checked = 0
    # every sample's proposals, mapped back through its axis, are the source's proposals overlapping the window
    from tadkit.detect.inference import load_member
    from tadkit.detect.inputs import make_dataset as engine_dataset

    member = load_member(run, None, "last", torch.device("cpu"))
    cached = dict(np.load(run / "source_proposals.npz"))
    ds = engine_dataset(member.cfg, member.source, load_annotations(ann).subset("training"), False, member.head,
                        proposals={v: np.concatenate([cached["segments"][cached["offsets"][i]:cached["offsets"][i + 1]],
                                                      cached["scores"][cached["offsets"][i]:cached["offsets"][i + 1], None]], 1)
                                   for i, v in enumerate(cached["videos"].tolist())})
    for i in range(len(ds)):
        s = ds[i]
        got = s.axis.to_seconds(s.proposals[:, :2].double().numpy())
        want = expected[s.video_id]
        lo, hi = s.axis.start + 1e-3, s.axis.end - 1e-3  # (the JSON rounds to ms: skip edge cases)
        inside = want[(want[:, 1] > lo) & (want[:, 0] < hi)]
        keep = (got[:, 1] > lo) & (got[:, 0] < hi)
        np.testing.assert_allclose(np.sort(got[keep], 0), np.sort(inside[:, :2], 0), atol=2e-3)
        np.testing.assert_allclose(np.sort(s.proposals[keep, 2].numpy()), np.sort(inside[:, 2]), atol=2e-6)
        checked += len(got)
    assert checked > 0
    # inference runs the source again on the videos it detects; another source is refused unless asked for
    summary = infer(run, feats, tmp_path / "p.json", subset="validation", echo=None)
    assert summary["videos"] == 2
    other = tmp_path / "other_source"
    shutil.copytree(proposal_run, other)
    doc = json.loads((other / "run.json").read_text())
    doc["run_id"] = "someone-else"
    (other / "run.json").write_text(json.dumps(doc))
    meta["from_run"]["runs"][0]["path"] = str(other)
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="not the run"):
        infer(run, feats, tmp_path / "p.json", subset="validation", echo=None)
    assert infer(run, feats, tmp_path / "p.json", subset="validation", echo=None, from_run=[other])["videos"] == 2
    with pytest.raises(ConfigError, match="--from-run"):
        train(cfg_of("head=probe_refine", "train.epochs=1"), feats, ann, tmp_path / "nosource", echo=None)
    with pytest.raises(ConfigError, match="does not read proposals"):
        train(cfg_of("train.epochs=1"), feats, ann, tmp_path / "nosource", echo=None, from_run=[proposal_run])


# --------------------------------------------------------------------------- ensembles, late fusion, raw candidates
@pytest.fixture(scope="module")
def stream_runs(data, tmp_path_factory):
    root, ann, feats, _ = data
    base = tmp_path_factory.mktemp("streams")
    for s in ("rgb", "flow"):
        train(cfg_of("train.epochs=2", f"data.streams=[{s}]"), feats, ann, base / s, echo=None)
    return base / "rgb", base / "flow"


def test_averaging_two_identical_runs_gives_the_single_run_exactly(data, stream_runs, tmp_path):
    root, ann, feats, _ = data
    rgb, _ = stream_runs
    twin = tmp_path / "twin"
    shutil.copytree(rgb, twin)
    infer(rgb, feats, tmp_path / "one.json", subset="validation", raw=tmp_path / "one.npz", echo=None)
    summary = infer([rgb, twin], feats, tmp_path / "two.json", subset="validation", raw=tmp_path / "two.npz",
                    fuse="mean", weights=[0.3, 0.7], echo=None)
    assert summary["fuse"] == "mean"
    assert (tmp_path / "one.json").read_text() == (tmp_path / "two.json").read_text()
    from tadkit.detect.postprocess import load_candidates

    a, _, _, _ = load_candidates(tmp_path / "one.npz")
    b, _, _, meta = load_candidates(tmp_path / "two.npz")
    assert meta["weights"] == [0.3, 0.7]
    for vid in a:
        np.testing.assert_array_equal(a[vid].scores, b[vid].scores)
        np.testing.assert_array_equal(a[vid].segments, b[vid].segments)


def test_outputs_are_averaged_with_weights_before_decoding(data, stream_runs, tmp_path):
    from tadkit.detect.heads.base import weighted_mean

    x = {"a": torch.tensor([1.0, 2.0]), "m": torch.tensor([True, False])}
    y = {"a": torch.tensor([3.0, 6.0]), "m": torch.tensor([False, False])}
    out = weighted_mean([x, y], [1.0, 3.0])
    assert torch.allclose(out["a"], torch.tensor([2.5, 5.0])) and torch.equal(out["m"], x["m"])
    with pytest.raises(ValueError, match="shapes"):
        weighted_mean([x, {"a": torch.zeros(3), "m": x["m"]}], [1, 1])
    # two runs on different streams of one store: raw outputs can be averaged (same head and windows)
    root, ann, feats, _ = data
    rgb, flow = stream_runs
    res = infer([rgb, flow], feats, tmp_path / "mean.json", subset="validation", echo=None)
    assert res["fuse"] == "mean" and res["detections"] > 0


def test_candidate_level_fusion_pools_the_runs_candidates(data, stream_runs, tmp_path):
    root, ann, feats, _ = data
    rgb, flow = stream_runs
    from tadkit.detect.postprocess import load_candidates

    for r in (rgb, flow):
        infer(r, feats, tmp_path / f"{r.name}.json", subset="validation", raw=tmp_path / f"{r.name}.npz", echo=None)
    infer([rgb, flow], feats, tmp_path / "u.json", subset="validation", raw=tmp_path / "u.npz", fuse="union",
          weights=[1.0, 0.5], echo=None)
    a, _, _, _ = load_candidates(tmp_path / "rgb.npz")
    b, _, _, _ = load_candidates(tmp_path / "flow.npz")
    u, _, _, meta = load_candidates(tmp_path / "u.npz")
    assert meta["fuse"] == "union"
    for vid in u:
        assert len(u[vid]) == len(a[vid]) + len(b[vid])
        np.testing.assert_allclose(np.sort(u[vid].scores), np.sort(np.concatenate([a[vid].scores, 0.5 * b[vid].scores])))
    # the fused predictions are the union post-processed
    from tadkit.detect.engine import postprocess_file

    postprocess_file(tmp_path / "u.npz", tmp_path / "again.json", load_config(DetectConfig, rgb / "config.yaml").postprocess)
    assert json.loads((tmp_path / "again.json").read_text())["results"] == json.loads((tmp_path / "u.json").read_text())["results"]
    with pytest.raises(ConfigError, match="2 --weights for 1 runs|one weight per"):
        infer([rgb], feats, tmp_path / "x.json", weights=[1, 2], echo=None)


def test_runs_that_sample_differently_are_fused_by_candidates(data, stream_runs, tmp_path):
    root, ann, feats, _ = data
    rgb, _ = stream_runs
    other = tmp_path / "short"
    train(cfg_of("train.epochs=1", "data.length=8", "data.streams=[rgb]"), feats, ann, other, echo=None)
    assert infer([rgb, other], feats, tmp_path / "a.json", subset="validation", echo=None)["fuse"] == "union"
    with pytest.raises(ConfigError, match="data.length.*--fuse union"):
        infer([rgb, other], feats, tmp_path / "a.json", subset="validation", fuse="mean", echo=None)


def test_raw_candidates_are_compact_and_keep_a_looser_cap(data, stream_runs, tmp_path, capsys):
    root, ann, feats, _ = data
    rgb, _ = stream_runs
    strict = ["postprocess.min_score=0.3", "postprocess.pre_nms_topk=10"]
    pp = load_config(DetectConfig, rgb / "config.yaml", strict).postprocess
    infer(rgb, feats, tmp_path / "plain.json", subset="validation", postprocess=pp, echo=None)
    res = infer(rgb, feats, tmp_path / "p.json", subset="validation", postprocess=pp, raw=tmp_path / "c.npz",
                echo=print)
    # --raw does not change the predictions ...
    assert (tmp_path / "plain.json").read_text() == (tmp_path / "p.json").read_text()
    written = sum(len(v) for v in json.loads((tmp_path / "p.json").read_text())["results"].values())
    assert res["detections"] == written and f"wrote {written} detections" in capsys.readouterr().out
    assert (tmp_path / "c.npz").read_bytes()[:4] == b"PK\x03\x04"
    # ... but keeps candidates below min_score / beyond pre_nms_topk, so postprocess can loosen them
    from tadkit.detect.postprocess import load_candidates

    cands, _, _, _ = load_candidates(tmp_path / "c.npz")
    assert min(d.scores.min() for d in cands.values()) < 0.3
    loose = tmp_path / "loose.json"
    res = CliRunner().invoke(cli, ["detect", "postprocess", "--candidates", str(tmp_path / "c.npz"), "--out",
                                   str(loose), "--run", str(rgb), "--set", "min_score=0.01", "--set",
                                   "pre_nms_topk=1000"])
    assert res.exit_code == 0, res.output
    n_loose = sum(len(v) for v in json.loads(loose.read_text())["results"].values())
    assert n_loose > written
    # re-processing at the strict settings gives the predictions again
    same = tmp_path / "same.json"
    res = CliRunner().invoke(cli, ["detect", "postprocess", "--candidates", str(tmp_path / "c.npz"), "--out",
                                   str(same), "--run", str(rgb), "--set", "min_score=0.3", "--set", "pre_nms_topk=10"])
    assert json.loads(same.read_text())["results"] == json.loads((tmp_path / "p.json").read_text())["results"]


# --------------------------------------------------------------------------- model selection
def test_map_validation_selects_the_epoch_an_offline_evaluation_would(data, tmp_path):
    root, ann, feats, _ = data
    from tadkit.evaluate import evaluate_detection, load_ground_truth, load_predictions

    run = tmp_path / "sel"
    summary = train(cfg_of("train.epochs=4", "optim.lr=2.0", "data.holdout_fraction=0.4", "train.select_by=metric",
                           "train.ema=true", "train.ema_decay=0.5", "train.val_tiou=[0.3, 0.5]"),
                    feats, ann, run, echo=None)
    meta = json.loads((run / "run.json").read_text())
    held = meta["holdout_videos"]
    logged = [json.loads(x)["holdout_mAP"] for x in (run / "log.jsonl").read_text().splitlines()
              if json.loads(x)["event"] == "epoch"]
    gt = load_ground_truth(ann, subset="training")
    gt = gt.select(np.isin(gt.video, held))
    offline = []
    for epoch in range(1, 5):
        pred = tmp_path / f"e{epoch}.json"
        infer(run, feats, pred, subset="training", videos=held, checkpoint=f"epoch_{epoch:04d}", echo=None)
        offline.append(100 * evaluate_detection(gt, load_predictions(pred), [0.3, 0.5]).average_mAP)
    np.testing.assert_allclose(logged, offline, atol=1e-9)
    assert len(set(np.round(offline, 6))) > 1  # the epochs differ, so the choice means something
    best = int(np.argmax(offline)) + 1
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert state["selection"] == {"by": "mAP", "value": pytest.approx(max(offline)), "epoch": best}
    assert summary["selection"]["epoch"] == best
    ref = torch.load(run / "checkpoints" / f"epoch_{best:04d}.pt", weights_only=True)
    for k in ref["ema"]:
        assert torch.equal(state["ema"][k], ref["ema"][k])


def test_best_checkpoint_is_right_after_resume(data, tmp_path):
    root, ann, feats, _ = data
    run = tmp_path / "res"
    base = ["optim.lr=3.0", "data.holdout_fraction=0.4"]
    train(cfg_of("train.epochs=2", *base), feats, ann, run, echo=None)
    train(cfg_of("train.epochs=5", *base), feats, ann, run, resume=True, echo=None)
    losses = [json.loads(x)["holdout_loss"] for x in (run / "log.jsonl").read_text().splitlines()
              if json.loads(x)["event"] == "epoch"]
    assert len(losses) == 5
    for epoch in range(1, 6):  # every checkpoint carries the best up to and including its own epoch
        state = torch.load(run / "checkpoints" / f"epoch_{epoch:04d}.pt", weights_only=True)
        upto = losses[:epoch]
        assert state["selection"]["value"] == pytest.approx(min(upto))
        assert state["selection"]["epoch"] == int(np.argmin(upto)) + 1
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    ref = torch.load(run / "checkpoints" / f"epoch_{int(np.argmin(losses)) + 1:04d}.pt", weights_only=True)
    assert best["epoch"] == ref["epoch"]
    for k in ref["model"]:
        assert torch.equal(best["model"][k], ref["model"][k])


# --------------------------------------------------------------------------- processes and progress
def test_inference_under_torchrun_splits_videos_and_merges_one_output(data, tmp_path):
    import os
    import subprocess
    import sys

    root, ann, feats, _ = data
    rgb = tmp_path / "mltpn"
    tiny = ["head=mltpn", "mltpn.embed_dim=8", "mltpn.transform_k1=4", "mltpn.transform_k2=4", "mltpn.thm_channels=8",
            "mltpn.thm_out_channels=8", "mltpn.num_thms=1", "mltpn.num_scales=2", "mltpn.mfm_reduction=4",
            "mltpn.head_squeeze=2", "train.epochs=1"]
    train(cfg_of(*tiny), feats, ann, rgb, echo=None)  # (the subprocesses do not know the test heads)
    infer(rgb, feats, tmp_path / "single.json", echo=None)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # "--": torchrun would read --run as an abbreviation of its own --run-path
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "tadkit",
         "--", "detect", "infer", "--run", str(rgb), "--features", str(feats), "--out", str(tmp_path / "ddp.json")],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("wrote ") == 1 and "for 7 videos" in proc.stdout
    a = json.loads((tmp_path / "single.json").read_text())["results"]
    b = json.loads((tmp_path / "ddp.json").read_text())["results"]
    assert a == b


def test_progress_lines_when_not_on_a_terminal(monkeypatch, capsys):
    from tadkit.progress import track

    items = list(track(range(3), 3, "infer", "batch", interval=1e-9))
    assert items == [0, 1, 2]
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("infer: 3/3 batches (100%)") and len(err) == 3
    monkeypatch.setenv("TADKIT_PROGRESS_INTERVAL", "off")
    list(track(range(3), 3, "infer", "batch"))
    assert capsys.readouterr().err == ""
