"""The extraction run: batching, failures, resume after SIGKILL, sharding, the CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from tadkit import timeline
from tadkit.cli import cli, main
from tadkit.data.features import FeatureStore
from tadkit.extract import backbones
from tadkit.extract.runner import ExtractOptions, Extractor, extract, shard
from tadkit.extract.video import collect_videos, plan_snippets

from test_extract_helpers import CLI_NO_ONEDNN, ArrayReader, make_video, moving_frames, no_onednn  # noqa: F401

SMALL = ["--size", "32", "--device", "cpu", "--random-weights", "--no-progress"]


def _rgb_extractor(**kw) -> Extractor:
    base = dict(streams=("rgb",), random_weights=True, size=32, device="cpu", batch_size=2)
    base.update(kw)
    return Extractor(ExtractOptions(**base))


def _features(store_dir: Path) -> dict[str, np.ndarray]:
    store = FeatureStore.open(store_dir)
    return {vid: store.read(vid).features for vid in store.video_ids()}


# --------------------------------------------------------------------------- batching
@pytest.mark.parametrize("batch,stride,clip,streams", [
    (3, 4, 16, ("rgb",)), (2, 16, 16, ("rgb",)), (4, 1, 8, ("rgb",)), (2, 20, 8, ("rgb",)),
    (3, 4, 16, ("rgb", "flow")), (2, 20, 8, ("flow",)),
])
def test_reader_requests_are_bounded_by_the_batch_and_never_repeat(batch, stride, clip, streams):
    frames = moving_frames(40, 40, 48)
    reader = ArrayReader(frames)
    ex = _rgb_extractor(batch_size=batch, clip_len=clip, stride=stride, streams=streams)
    plan = plan_snippets(reader.info, clip, stride)
    seen = sum(1 for _ in ex.clip_batches(reader, plan))
    assert seen == len(list(plan.batches(batch)))
    bound = (batch - 1) * stride + clip + 1
    assert max(len(r) for r in reader.requests) <= bound
    flat = [i for r in reader.requests for i in r]
    assert len(flat) == len(set(flat))                        # every frame decoded once
    assert flat == sorted(flat)                               # in increasing order (PyAV-friendly)
    needed = set(np.unique(plan.frame_indices))
    if "flow" in streams:  # flow of frame t also reads t + 1 (t - 1 for the last frame)
        needed |= {min(t + 1, 39) for t in needed} | ({38} if 39 in needed else set())
    assert set(flat) == needed


def test_clips_hold_the_planned_frames_normalised_to_minus_one_one():
    n = 23
    frames = np.stack([np.full((40, 48, 3), 10 * k, np.uint8) for k in range(n)])
    ex = _rgb_extractor(batch_size=3)
    reader = ArrayReader(frames)
    plan = plan_snippets(reader.info, 16, 4)
    clips = torch.cat([x["rgb"] for _, x in ex.clip_batches(reader, plan)])
    assert tuple(clips.shape) == (plan.num_snippets, 3, 16, 32, 32)
    expected = 2 * (10 * plan.frame_indices) / 255 - 1        # [S, L]; the tail repeats frame 22
    np.testing.assert_allclose(clips[:, 1, :, 7, 9].numpy(), expected, atol=1e-6)


def test_two_stream_feature_is_rgb_then_flow():
    ex = Extractor(ExtractOptions(random_weights=True, size=32, device="cpu", batch_size=2))
    assert ex.streams == ("rgb", "flow") and ex.provenance.feature_dim == 2048
    reader = ArrayReader(moving_frames(8, 40, 48))
    plan = plan_snippets(reader.info, 8, 8)
    (_, inputs), = list(ex.clip_batches(reader, plan))
    feats = ex.forward(inputs)
    assert feats.shape == (1, 2048) and feats.dtype == np.float32
    with torch.no_grad():
        np.testing.assert_array_equal(feats[:, :1024], ex.models["rgb"](inputs["rgb"]).numpy())
        np.testing.assert_array_equal(feats[:, 1024:], ex.models["flow"](inputs["flow"]).numpy())


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 40), world=st.integers(1, 5))
def test_shards_partition_the_videos(n, world):
    videos = [Path(f"v{i:03d}.mp4") for i in np.random.default_rng(n).permutation(n)]
    parts = [shard(videos, r, world) for r in range(world)]
    flat = [p for part in parts for p in part]
    assert sorted(flat) == sorted(videos) and len(flat) == len(set(flat))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


# --------------------------------------------------------------------------- runs
def test_bad_videos_are_recorded_and_the_rest_is_extracted(tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    make_video(vids / "good.avi", n=20)
    data = make_video(tmp_path / "full.avi", n=40).read_bytes()
    (vids / "cut.avi").write_bytes(data[: len(data) * 6 // 10])            # truncated
    mp4 = make_video(tmp_path / "full.mp4", n=40).read_bytes()
    noisy = bytearray(mp4)
    noisy[len(mp4) // 3: len(mp4) // 3 + 3000] = np.random.default_rng(0).integers(0, 256, 3000, np.uint8).tobytes()
    (vids / "corrupt.mp4").write_bytes(bytes(noisy))                       # damaged data
    (vids / "readme.dat").write_text("not a video")                        # not a video
    (vids / "annotations.json").write_text("{}")                           # skipped by the scan
    out = tmp_path / "feats"
    runner = CliRunner()
    res = runner.invoke(cli, ["extract", str(vids), "--out", str(out), "--streams", "rgb", *SMALL])
    assert res.exit_code == 3, res.output
    assert "1 extracted, 0 already present, 3 failed, of 4 videos" in res.output
    assert "cut [truncated]: truncated or corrupt" in res.output
    assert "readme [open]: not a readable video file" in res.output
    assert "corrupt [" in res.output
    store = FeatureStore.open(out)
    assert store.video_ids() == ["good"]
    assert set(store.failures()) == {"cut", "corrupt", "readme"}
    assert store.failures()["readme"].startswith("open: ")
    # a rerun skips the finished video and retries (and again reports) the failed ones
    res = runner.invoke(cli, ["extract", str(vids), "--out", str(out), "--streams", "rgb", *SMALL])
    assert res.exit_code == 3 and "0 extracted, 1 already present, 3 failed" in res.output


def test_cli_end_to_end_two_stream_store_follows_the_sampling_settings(tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    make_video(vids / "a.avi", n=20, fps=25)
    make_video(vids / "b.avi", n=9, fps=25, seed=1)
    out = tmp_path / "feats"
    args = ["extract", "--backbone", "i3d", "--streams", "rgb,flow", str(vids), "--out", str(out), *SMALL]
    assert main(args) == 0
    store = FeatureStore.open(out)
    prov = store.provenance
    assert prov.backbone == "i3d" and prov.streams == ("rgb", "flow") and prov.feature_dim == 2048
    assert (prov.clip_len, prov.stride, prov.fps) == (16, 4, None)
    assert prov.weights["rgb"]["sha256"] == "random" and prov.weights["flow"]["seed"] == 1
    assert prov.preprocessing["recipe"]["name"] == "i3d_thumos@32"
    assert prov.preprocessing["flow"]["method"] == "opencv_dual_tvl1"
    for vid, n in (("a", 20), ("b", 9)):
        v = store.read(vid)
        assert v.features.shape == (len(timeline.snippet_starts(n, 16, 4)), 2048)
        np.testing.assert_allclose(v.times, timeline.snippet_centers(n, 16, 4, 25.0))
        assert (v.fps, v.num_frames, v.clip_len, v.stride) == (25.0, n, 16, 4)
        assert v.duration == pytest.approx(n / 25)
        assert np.isfinite(v.features).all()
    with h5py.File(out / "store.h5", "r") as f:                # plain h5py sees both videos
        assert sorted(f["videos"]) == ["a", "b"]
    before = {p.name: p.stat().st_mtime_ns for p in (out / "videos").iterdir()}
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0 and "0 extracted, 2 already present" in res.output
    assert {p.name: p.stat().st_mtime_ns for p in (out / "videos").iterdir()} == before


def test_target_fps_and_clip_settings_are_applied_and_recorded(tmp_path):
    path = make_video(tmp_path / "v.avi", n=30, fps=25)
    report = extract([path], tmp_path / "f", ExtractOptions(
        streams=("rgb",), random_weights=True, size=32, device="cpu", fps=10, clip_len=4, stride=2))
    assert report.done == ["v"]
    store = FeatureStore.open(tmp_path / "f")
    v = store.read("v")
    assert store.provenance.fps == 10.0 and v.fps == 10.0 and v.num_frames == 12
    np.testing.assert_allclose(v.times, timeline.snippet_centers(12, 4, 2, 10.0))


def test_checkpoint_weights_are_recorded_and_give_the_seeded_features(tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    make_video(vids / "a.avi", n=16)
    torch.manual_seed(0)  # the seed --random-weights --seed 0 uses for the first stream
    ckpt = backbones.save_checkpoint(backbones.build("i3d_rgb"), tmp_path / "rgb_imagenet.pt", "piergiaj")
    common = ["extract", str(vids), "--streams", "rgb", "--size", "32", "--device", "cpu", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "w"), "--weights", f"rgb={ckpt}"]) == 0
    assert main([*common, "--out", str(tmp_path / "r"), "--random-weights"]) == 0
    w = FeatureStore.open(tmp_path / "w")
    assert w.provenance.weights["rgb"] == {"file": "rgb_imagenet.pt", "sha256": backbones.file_sha256(ckpt),
                                           "format": "piergiaj", "bn_eps": 1e-3}
    np.testing.assert_array_equal(_features(tmp_path / "w")["a"], _features(tmp_path / "r")["a"])


def test_parallel_decode_workers_give_the_same_features(tmp_path):
    videos = [make_video(tmp_path / f"v{i}.avi", n=16 + 4 * i, seed=i) for i in range(3)]
    ex = _rgb_extractor()
    ex.run(videos, tmp_path / "one", progress=False)
    ex2 = _rgb_extractor(workers=3)
    report = ex2.run(videos, tmp_path / "three", progress=False)
    assert sorted(report.done) == ["v0", "v1", "v2"]
    one, three = _features(tmp_path / "one"), _features(tmp_path / "three")
    for vid in one:
        np.testing.assert_array_equal(one[vid], three[vid])


def test_decord_failing_mid_video_falls_back_to_pyav(tmp_path, monkeypatch):
    from tadkit.extract import video as video_mod

    path = make_video(tmp_path / "v.avi", n=30)
    ref = _rgb_extractor(backend="pyav").run([path], tmp_path / "pyav", progress=False)
    assert ref.done == ["v"]
    calls = []

    def flaky(self, indices):
        calls.append(len(indices))
        if len(calls) == 2:
            raise video_mod.VideoError(self.info.path, "simulated decoder error")
        return self._vr.get_batch(list(indices)).asnumpy()

    monkeypatch.setattr(video_mod.DecordReader, "get_frames", flaky)
    report = _rgb_extractor().run([path], tmp_path / "auto", progress=False)
    assert report.done == ["v"] and not report.failed and len(calls) == 2
    np.testing.assert_array_equal(_features(tmp_path / "auto")["v"], _features(tmp_path / "pyav")["v"])


def test_expected_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    vids = tmp_path / "videos"
    vids.mkdir()
    make_video(vids / "a.avi", n=4)
    out = ["--out", str(tmp_path / "f")]
    cases = [
        ([str(vids), *out], "error: no weights for stream(s) rgb, flow: pass --weights rgb=PATH"),
        ([str(vids), *out, "--weights", "rgb"], "error: --weights expects STREAM=PATH"),
        ([str(vids), *out, "--weights", "depth=x.pt"], "error: x.pt: no such checkpoint file"),
        ([str(vids), *out, "--random-weights", "--amp", "--device", "cpu"], "error: --amp needs a CUDA device"),
        ([str(vids), *out, "--random-weights", "--streams", "rgb,audio"], "error: unknown stream(s) ['audio']"),
        ([str(vids), *out, "--random-weights", "--recipe", "nope"], "error: unknown preprocessing recipe 'nope'"),
        ([str(tmp_path / "missing"), *out, "--random-weights"], "no such file or folder"),
    ]
    for args, message in cases:
        assert main(["extract", *args]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert main(["extract", str(vids), *out, "--backbone", "c3d", "--random-weights"]) == 2  # a usage error
    assert "'c3d' is not one of 'i3d', 'tsn'" in capsys.readouterr().err
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["extract", str(vids), *out, "--random-weights", "--distributed"]) == 1
    assert "error: --distributed needs the torchrun environment" in capsys.readouterr().err


# --------------------------------------------------------------------------- crash safety and scale-out
def _cmd(vids: Path, out: Path) -> list[str]:
    return [sys.executable, "-c", CLI_NO_ONEDNN, "extract", str(vids), "--out", str(out), "--streams", "rgb",
            "--batch-size", "2", *SMALL]


def _published(out: Path) -> int:
    d = out / "videos"
    return len([p for p in d.glob("*.h5") if not p.name.startswith(".")]) if d.is_dir() else 0


@pytest.mark.slow
def test_sigkill_at_any_moment_then_rerun_matches_an_uninterrupted_run(tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    for i in range(4):  # the last video is long, so the kill after three lands while it is computed
        make_video(vids / f"v{i}.avi", n=18 + 3 * i if i < 3 else 120, seed=i)
    out = tmp_path / "killed"
    env = dict(os.environ)
    jitter = np.random.default_rng(5).uniform(0.0, 0.3, size=2)
    for target, delay in zip((1, 3), jitter):  # after one, then three published videos, plus a random delay
        proc = subprocess.Popen(_cmd(vids, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while _published(out) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _published(out) < 4, "the run finished before it could be killed"
    done = subprocess.run(_cmd(vids, out), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ref = tmp_path / "reference"  # uninterrupted, in this process, same settings as _cmd
    _rgb_extractor(batch_size=2).run(collect_videos([vids]), ref, progress=False)
    got, want = _features(out), _features(ref)
    assert sorted(got) == [f"v{i}" for i in range(4)]
    assert sorted(p.name for p in (out / "videos").iterdir()) == [f"v{i}.h5" for i in range(4)]  # no leftovers
    for vid in want:
        np.testing.assert_array_equal(got[vid], want[vid])


@pytest.mark.slow
def test_two_ranks_split_the_videos_without_duplicates(tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    for i in range(4):
        make_video(vids / f"v{i}.avi", n=16, seed=i)
    out = tmp_path / "feats"
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([*_cmd(vids, out), "--distributed"], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "rank 0/2: 2 extracted" in outputs[0][0] and "rank 1/2: 2 extracted" in outputs[1][0]
    store = FeatureStore.open(out)
    assert store.video_ids() == [f"v{i}" for i in range(4)]
    with h5py.File(out / "store.h5", "r") as f:
        assert len(f["videos"]) == 4
    ids = collect_videos([vids])
    assert [p.stem for p in shard(ids, 0, 2)] == ["v0", "v2"]
    meta = json.loads(json.dumps(store.summary()))
    assert all(shape["features"] == [1, 1024] for shape in meta["videos"].values())
