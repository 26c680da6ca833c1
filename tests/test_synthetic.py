"""Synthetic features and videos: determinism, learnable signal, loaders, decoding, the CLI."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from tadkit.cli import cli, main
from tadkit.data.annotations import load_annotations
from tadkit.data.datasets import FullSequenceDataset, WindowDataset
from tadkit.data.features import FeatureStore
from tadkit.data.synthetic import (MOTION_PATTERNS, SynthFeatureConfig, SynthVideoConfig, motion_cycles,
                                   motion_offset, synth_features, synth_video_features, synth_videos)
from tadkit.errors import ProvenanceError
from tadkit.timeline import frame_to_seconds

TINY_VIDEOS = SynthVideoConfig(num_videos=3, num_classes=3, size=64, fps=10.0, min_duration=2.5,
                               max_duration=3.5, max_instances=2, min_instance=0.6, max_instance=1.2)


@pytest.fixture
def small_ann(tmp_path):
    rng = np.random.default_rng(7)
    rows = ["video,start,end,label,subset,duration"]
    for v in range(12):
        t = 2.0
        while True:
            length = rng.uniform(2.0, 6.0)
            if t + length > 58:
                break
            rows.append(f"vid{v},{t:.2f},{t + length:.2f},c{rng.integers(3)},{'train' if v < 8 else 'val'},60")
            t += length + rng.uniform(3.0, 10.0)
    p = tmp_path / "gt.csv"
    p.write_text("\n".join(rows) + "\n")
    return load_annotations(p, warn=False)


# --------------------------------------------------------------------------- features
def test_synthetic_features_are_deterministic_per_seed_and_per_video(small_ann, tmp_path):
    cfg = SynthFeatureConfig(feature_dim=16, seed=3)
    synth_features(small_ann, tmp_path / "a", cfg)
    synth_features(small_ann, tmp_path / "b", cfg, video_ids=["vid5"])  # one video alone
    synth_features(small_ann, tmp_path / "c", SynthFeatureConfig(feature_dim=16, seed=4))
    a, b, c = (FeatureStore.open(tmp_path / x) for x in "abc")
    assert len(a) == 12 and b.video_ids() == ["vid5"]
    va, vb, vc = a.read("vid5"), b.read("vid5"), c.read("vid5")
    assert np.array_equal(va.features, vb.features) and np.array_equal(va.times, vb.times)
    assert not np.allclose(va.features, vc.features)
    assert va.features.dtype == np.float32 and va.features.shape[1] == 16


def test_synthetic_store_has_realistic_provenance_and_timing(small_ann, tmp_path):
    report = synth_features(small_ann, tmp_path / "s", SynthFeatureConfig(feature_dim=8, clip_len=16, stride=8))
    assert len(report.written) == 12 and not report.failed
    store = FeatureStore.open(tmp_path / "s", expect={"backbone": "synthetic", "feature_dim": 8, "stride": 8})
    prov = store.provenance
    assert prov.streams == ("synthetic",) and prov.weights["synthetic"]["sha256"] == "random"
    assert prov.preprocessing["config"]["seed"] == 0 and prov.extras["classes"] == ["c0", "c1", "c2"]
    v = store.read("vid0")
    # 60 s at the default 30 fps: 1800 frames, snippets of 16 every 8 -> 224 centred at (8 i + 8) / 30
    assert v.num_frames == 1800 and v.num_snippets == 224 and v.duration == 60.0
    np.testing.assert_allclose(v.times[:3], [0.2666667, 0.5333333, 0.8], atol=1e-6)  # (8 i + 8) / 30
    # a rerun resumes (skips everything); other settings in the same store are refused
    again = synth_features(small_ann, tmp_path / "s", SynthFeatureConfig(feature_dim=8, clip_len=16, stride=8))
    assert again.written == [] and len(again.skipped) == 12
    with pytest.raises(ProvenanceError, match="feature_dim"):
        synth_features(small_ann, tmp_path / "s", SynthFeatureConfig(feature_dim=4))


def test_synthetic_outputs_pass_the_datasets(small_ann, tmp_path):
    synth_features(small_ann, tmp_path / "s", SynthFeatureConfig(feature_dim=8))
    train = WindowDataset(tmp_path / "s", small_ann, "train", window=64, overlap=0.25)
    val = FullSequenceDataset(tmp_path / "s", small_ann, "val")
    assert not train.report.missing_features and not train.report.unannotated
    assert len(val) == 4 and val[0].features.shape[0] == 8
    segs, _ = small_ann.segments_of(val.video_ids[0])
    np.testing.assert_allclose(val[0].to_seconds(val[0].segments), segs, atol=1e-4)


def test_class_signal_is_learnable_but_not_trivial(small_ann, tmp_path):
    """Nearest-centroid per snippet: far above chance, far from perfect."""
    synth_features(small_ann, tmp_path / "s", SynthFeatureConfig(feature_dim=32))

    def snippets(subset):
        ds = FullSequenceDataset(tmp_path / "s", small_ann, subset)
        xs, ys = [], []
        for i in range(len(ds)):
            s = ds[i]
            y = np.full(s.length, 3)  # 3 = background
            for (a, b), k in zip(s.segments.numpy(), s.labels.numpy()):
                y[int(np.ceil(a)):int(np.floor(b)) + 1] = k
            xs.append(s.features.numpy().T)
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    xtr, ytr = snippets("train")
    xte, yte = snippets("val")
    centroids = np.stack([xtr[ytr == k].mean(0) for k in range(4)])
    pred = np.argmin(((xte[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    fg = yte < 3
    fg_acc = (pred[fg] == yte[fg]).mean()
    bg_acc = (pred[~fg] == 3).mean()
    assert 0.5 < fg_acc < 0.97 and 0.5 < bg_acc < 0.97, (fg_acc, bg_acc)


def test_signal_has_soft_onsets(small_ann, tmp_path):
    """The class response ramps up over several snippets instead of jumping."""
    cfg = SynthFeatureConfig(feature_dim=64, context=0.0, distractor=0.0, boundary=0.0, progress=0.0, onset=0.3)
    vid = "vid0"
    v = synth_video_features(small_ann, vid, cfg)
    segs, labels = small_ann.segments_of(vid)
    rel, resp = [], []
    feats = v.features - v.features.mean(0)
    for (s, e), k in zip(segs, labels):
        inside = (v.times > s) & (v.times < e)
        proto = feats[inside].mean(0)
        proto /= np.linalg.norm(proto)
        near = (v.times > s - 2) & (v.times < s + 2)
        rel.append(v.times[near] - s)
        resp.append(feats[near] @ proto)
    rel, resp = np.concatenate(rel), np.concatenate(resp)
    before, at, after = resp[rel < -1].mean(), resp[np.abs(rel) < 0.3].mean(), resp[rel > 1].mean()
    assert before < at < after


def test_real_thumos14_timeline_is_fast(shared_data, tmp_path):
    ann = load_annotations(shared_data / "thumos14.json", warn=False).subset("val")
    start = time.perf_counter()
    report = synth_features(ann, tmp_path / "th14", SynthFeatureConfig(feature_dim=16))
    elapsed = time.perf_counter() - start
    assert len(report.written) == 200 and not report.failed
    assert elapsed < 20, f"{elapsed:.1f} s"
    store = FeatureStore.open(tmp_path / "th14")
    v = store.read("video_validation_0000051")
    assert v.fps == ann.videos.at["video_validation_0000051", "fps"]
    assert v.times[-1] <= v.duration + 1.0


# --------------------------------------------------------------------------- videos
@pytest.fixture(scope="module")
def tiny_videos(tmp_path_factory):
    return synth_videos(tmp_path_factory.mktemp("vids"), TINY_VIDEOS)


def test_synthetic_videos_decode_with_decord(tiny_videos):
    decord = pytest.importorskip("decord")
    doc = json.loads(tiny_videos.annotation_file.read_text())
    assert len(tiny_videos.videos) == 3
    for path in tiny_videos.videos:
        entry = doc["database"][path.stem]
        vr = decord.VideoReader(str(path))
        assert len(vr) == entry["num_frames"]
        assert vr.get_avg_fps() == pytest.approx(10.0, rel=1e-3)
        assert vr[0].shape == (64, 64, 3)
        assert entry["duration"] == pytest.approx(frame_to_seconds(entry["num_frames"], 10.0))


def test_synthetic_ground_truth_is_official_activitynet_json(tiny_videos):
    doc = json.loads(tiny_videos.annotation_file.read_text())
    assert set(doc) == {"version", "taxonomy", "database"}
    for entry in doc["database"].values():
        assert entry["subset"] in ("training", "validation")
        for a in entry["annotations"]:
            assert set(a) == {"segment", "label"} and 0 <= a["segment"][0] < a["segment"][1] <= entry["duration"]
            assert a["label"] in MOTION_PATTERNS[:3]
    ann = load_annotations(tiny_videos.annotation_file)
    assert ann.subsets() == {"training": 2, "validation": 1}
    for i, vid in enumerate(sorted(doc["database"])):  # video i holds class i mod K: every class is seen
        assert MOTION_PATTERNS[i % 3] in {a["label"] for a in doc["database"][vid]["annotations"]}
    assert ann.classes == list(MOTION_PATTERNS[:3]) == tiny_videos.annotations.classes


def test_synthetic_videos_are_deterministic_per_seed(tiny_videos, tmp_path):
    decord = pytest.importorskip("decord")
    again = synth_videos(tmp_path / "again", TINY_VIDEOS)
    other = synth_videos(tmp_path / "other", SynthVideoConfig(**{**TINY_VIDEOS.__dict__, "seed": 1}))
    first = json.loads(tiny_videos.annotation_file.read_text())
    assert json.loads(again.annotation_file.read_text()) == first
    assert json.loads(other.annotation_file.read_text()) != first
    for x, y in zip(tiny_videos.videos, again.videos):
        assert x.read_bytes() == y.read_bytes()  # the default mpeg4 encoder is bit-reproducible
    a = decord.VideoReader(str(tiny_videos.videos[0])).get_batch([0, 5]).asnumpy()
    c = decord.VideoReader(str(other.videos[0])).get_batch([0, 5]).asnumpy()
    assert not np.array_equal(a[0], c[0])


def test_motion_is_where_the_ground_truth_says(tiny_videos):
    """Frame differences are larger inside instances (the actor moves) than outside."""
    decord = pytest.importorskip("decord")
    inside, outside = [], []
    for path in tiny_videos.videos:
        frames = decord.VideoReader(str(path)).get_batch(list(range(len(decord.VideoReader(str(path)))))).asnumpy()
        energy = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
        segs, _ = tiny_videos.annotations.segments_of(path.stem)
        t = frame_to_seconds(np.arange(1, len(energy) + 1), 10.0)  # time of the later frame of each pair
        mask = np.zeros(len(energy), bool)
        for s, e in segs:
            mask |= (t > s + 0.1) & (t < e - 0.1)
        inside.append(energy[mask])
        outside.append(energy[~mask])
    assert np.concatenate(inside).mean() > 1.1 * np.concatenate(outside).mean()


def test_motion_patterns_are_distinct_and_start_in_place():
    phase = np.linspace(0, 1, 50)
    tracks = [np.concatenate(motion_offset(p, phase, 10.0)) for p in MOTION_PATTERNS]
    for p in MOTION_PATTERNS:  # no jump at the onset
        dx, dy = motion_offset(p, np.array([0.0]), 10.0)
        assert abs(dx[0]) < 1e-9 and abs(dy[0]) < 1e-9
    # on screen, clockwise from the bottom of the circle goes left first; up is -y
    assert motion_offset("circle_clockwise", np.array([0.25]), 10.0)[0][0] < 0
    assert motion_offset("move_up", np.array([1.0]), 10.0)[1][0] == -10.0
    for i in range(len(tracks)):
        for j in range(i + 1, len(tracks)):
            assert np.abs(tracks[i] - tracks[j]).max() > 3.0, (MOTION_PATTERNS[i], MOTION_PATTERNS[j])
    # two cycles: back at the start half-way and at the end, within +-amplitude/3 in between
    dx, _ = motion_offset("swing_horizontal", np.array([0.125, 0.5, 1.0]), 9.0, cycles=2)
    np.testing.assert_allclose(dx, [3.0, 0.0, 0.0], atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(seconds=st.floats(1.5, 20.0), pattern=st.sampled_from(MOTION_PATTERNS))
def test_motion_speed_stays_bounded_whatever_the_instance_length(seconds, pattern):
    """A cycle every CYCLE_SECONDS: the peak speed of every pattern stays under two amplitudes a
    second for instances of at least CYCLE_SECONDS (what TV-L1 flow at a few fps can follow)."""
    cycles = motion_cycles(pattern, seconds)
    assert cycles >= 1 and (cycles == 1 or pattern.startswith(("swing", "circle")))
    t = np.linspace(0.0, seconds, 2001)
    dx, dy = motion_offset(pattern, t / seconds, 1.0, cycles)
    speed = np.hypot(np.diff(dx), np.diff(dy)) / np.diff(t)
    assert speed.max() < 2.0


def test_bad_video_settings_are_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        SynthVideoConfig(num_classes=20)
    with pytest.raises(ValueError, match="even"):
        SynthVideoConfig(size=99)


# --------------------------------------------------------------------------- CLI
def test_cli_synth_videos_then_features_then_stats(tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["data", "synth-videos", "--out", str(tmp_path / "v"), "--num-videos", "2",
                              "--num-classes", "2", "--size", "48", "--fps", "8", "--min-duration", "2.5",
                              "--max-duration", "3", "--max-instances", "1"])
    assert res.exit_code == 0, res.output
    assert "2 videos" in res.output and (tmp_path / "v" / "annotations.json").is_file()
    assert sorted(p.name for p in (tmp_path / "v").glob("*.mp4")) == ["synth_0000.mp4", "synth_0001.mp4"]
    gt = str(tmp_path / "v" / "annotations.json")
    res = runner.invoke(cli, ["data", "synth-features", "--annotations", gt, "--out", str(tmp_path / "f"),
                              "--feature-dim", "4", "--stride", "4", "--subset", "train"])
    assert res.exit_code == 0, res.output
    assert "wrote 1 video," in res.output
    assert FeatureStore.open(tmp_path / "f").provenance.feature_dim == 4
    res = runner.invoke(cli, ["data", "stats", gt, "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["classes"] == 2 and set(summary["subsets"]) == {"training", "validation"}
    assert [s["instances"] for s in summary["subsets"].values()] == [1, 1]


def test_cli_stats_on_real_thumos(shared_data):
    res = CliRunner().invoke(cli, ["data", "stats", str(shared_data / "thumos14.json"),
                                   "--ambiguous", str(shared_data / "Ambiguous_test.txt")])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].endswith("412 videos, 6365 instances, 20 classes")
    assert any(ln.split()[:6] == ["testing", "212", "212", "3358", "20", "99"] for ln in lines)
    assert any(ln.split()[:6] == ["validation", "200", "200", "3007", "20", "0"] for ln in lines)


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"database": {"v": {"annotations": [{"segment": [1, "x"], "label": "a"}]}}}')
    assert main(["data", "stats", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "bad.json" in err and "segment[1]" in err and "\n" not in err
    assert main(["data", "synth-features", "--annotations", str(bad), "--out", str(tmp_path / "o")]) == 1
    assert main(["data", "synth-videos", "--out", str(tmp_path / "v"), "--size", "33"]) == 2
    assert "even" in capsys.readouterr().err
    assert main(["data", "synth-videos", "--out", str(tmp_path / "v"), "--val-fraction", "1"]) == 2
    assert "val_fraction must be in [0, 1)" in capsys.readouterr().err
    ok = tmp_path / "ok.csv"
    ok.write_text("video,start,end,label,subset\nx,1,2,a,val\n")
    assert main(["data", "synth-features", "--annotations", str(ok), "--out", str(tmp_path / "o"),
                 "--subset", "train"]) == 1
    assert "no subset 'train'" in capsys.readouterr().err
