"""The HDF5 feature-store contract: round trips, provenance, crash safety, concurrency."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tadkit.data.features import (FeatureStore, Provenance, VideoFeatures, escape_id,
                                  unescape_id)
from tadkit.errors import InputError, ProvenanceError

PROV = Provenance(backbone="i3d", streams=("rgb", "flow"), feature_dim=8, clip_len=16, stride=4,
                  fps=25.0, weights={"rgb": {"file": None, "sha256": "random"}})


def make_video(vid: str, t: int = 6, c: int = 8, seed: int = 0) -> VideoFeatures:
    rng = np.random.default_rng(seed)
    return VideoFeatures(vid, rng.standard_normal((t, c)).astype(np.float32),
                         (np.arange(t) * 4 + 8) / 25.0, 25.0, 16, 4, t * 4 + 12, (t * 4 + 12) / 25.0)


ODD_IDS = ["v_AbC", "v_abc", "a/b c.mp4", "..", ".hidden", "ünï 😀", "x" * 400, "%41", "^a", "~x",
           "with\nnewline", "tab\there", "C:\\videos\\x.avi"]


def test_round_trip_with_odd_video_ids(tmp_path):
    with FeatureStore.create(tmp_path / "s", PROV) as w:
        for i, vid in enumerate(ODD_IDS):
            w.write(make_video(vid, t=3 + i, seed=i))
    store = FeatureStore.open(tmp_path / "s")
    assert store.video_ids() == sorted(ODD_IDS)
    for i, vid in enumerate(ODD_IDS):
        v = store.read(vid)
        ref = make_video(vid, t=3 + i, seed=i)
        assert v.video_id == vid
        np.testing.assert_array_equal(v.features, ref.features)
        np.testing.assert_array_equal(v.times, ref.times)
        assert (v.fps, v.clip_len, v.stride, v.num_frames) == (25.0, 16, 4, ref.num_frames)
    # no file name leaks a raw id character that a file system or HDF5 treats specially
    for name in os.listdir(tmp_path / "s" / "videos"):
        assert "/" not in name and not name.startswith(".") and name == name.lower()


@given(st.text(min_size=1, max_size=60))
def test_escape_id_round_trips_and_is_safe(vid):
    name = escape_id(vid)
    # long names are hashed; the id then lives in the file's video_id attribute
    assert unescape_id(name) == (vid if not name.startswith("~") else None)
    assert len(name) <= 180 or name.startswith("~")
    assert all(ch.isascii() and (ch.isalnum() or ch in "_-%^~") for ch in name)
    assert name == name.lower()  # distinct ids stay distinct on case-insensitive file systems
    assert not name.startswith(".")


def test_case_differing_ids_get_different_files():
    assert escape_id("AbC") != escape_id("abc")


def test_extras_spatial_grid_and_levels_round_trip(tmp_path):
    v = make_video("v1", t=5)
    v.spatial_grid = np.ones((5, 2, 2, 3), np.float32)
    v.levels = {"Mixed_4f": (np.zeros((10, 4)), np.arange(10) * 0.08), "a/b": (np.ones((3, 2)), np.arange(3.0))}
    with FeatureStore.create(tmp_path, PROV) as w:
        w.write(v)
    r = FeatureStore.open(tmp_path).read("v1")
    assert r.spatial_grid.shape == (5, 2, 2, 3)
    assert set(r.levels) == {"Mixed_4f", "a/b"} and r.levels["Mixed_4f"][0].shape == (10, 4)
    assert FeatureStore.open(tmp_path).meta("v1")["shapes"] == {
        "features": [5, 8], "spatial_grid": [5, 2, 2, 3], "levels/Mixed_4f": [10, 4], "levels/a/b": [3, 2]}


def test_partial_read_of_rows(tmp_path):
    with FeatureStore.create(tmp_path, PROV) as w:
        w.write(make_video("v", t=10))
    part = FeatureStore.open(tmp_path).read("v", rows=slice(3, 7))
    np.testing.assert_array_equal(part.features, make_video("v", t=10).features[3:7])
    assert part.times[0] == pytest.approx((3 * 4 + 8) / 25)


def test_plain_h5py_reads_the_master_file_from_any_directory(tmp_path, monkeypatch):
    with FeatureStore.create(tmp_path / "s", PROV) as w:
        w.write(make_video("a/b", t=4))
        w.write(make_video("Z", t=2))
    monkeypatch.chdir("/")
    with h5py.File(tmp_path / "s" / "store.h5", "r") as f:
        assert f.attrs["backbone"] == "i3d" and f.attrs["feature_dim"] == 8
        ids = {f["videos"][k].attrs["video_id"]: f["videos"][k]["features"].shape for k in f["videos"]}
    assert ids == {"a/b": (4, 8), "Z": (2, 8)}


def test_provenance_mismatch_is_reported_field_by_field(tmp_path):
    with FeatureStore.create(tmp_path, PROV) as w:
        w.write(make_video("v"))
    with pytest.raises(ProvenanceError) as err:
        FeatureStore.open(tmp_path, expect={"feature_dim": 2048, "stride": 8, "backbone": "i3d"})
    msg = str(err.value)
    assert "feature_dim: features have 8, expected 2048" in msg and "stride" in msg and "backbone" not in msg
    other = Provenance(backbone="tsn", streams=("rgb",), feature_dim=8, clip_len=16, stride=4, fps=25.0)
    with pytest.raises(ProvenanceError, match="backbone"):
        FeatureStore.open(tmp_path, expect=other)
    FeatureStore.open(tmp_path, expect=PROV)  # identical provenance passes


def test_joining_a_store_with_other_settings_is_refused(tmp_path):
    FeatureStore.create(tmp_path, PROV).close()
    changed = Provenance(**{**PROV.__dict__, "stride": 8})
    with pytest.raises(ProvenanceError, match="stride"):
        FeatureStore.create(tmp_path, changed)


def test_not_a_store_is_a_clear_input_error(tmp_path):
    with pytest.raises(InputError, match="no such feature store"):
        FeatureStore.open(tmp_path / "missing")
    with pytest.raises(InputError, match="not a tadkit feature store"):
        FeatureStore.open(tmp_path)


def test_failures_are_recorded_and_cleared_by_a_later_success(tmp_path):
    with FeatureStore.create(tmp_path, PROV) as w:
        w.record_failure("bad.mp4", "no video stream")
        w.record_failure("later.mp4", "decoder error")
        w.write(make_video("later.mp4"))
    store = FeatureStore.open(tmp_path)
    assert store.failures() == {"bad.mp4": "no video stream"}
    assert store.video_ids() == ["later.mp4"]


def test_invalid_video_arrays_are_rejected_before_writing():
    with pytest.raises(ValueError, match="times"):
        VideoFeatures("v", np.zeros((4, 2)), np.zeros(3), 25.0, 16, 4, 10, 1.0)
    with pytest.raises(ValueError, match="at least one snippet"):
        VideoFeatures("v", np.zeros((0, 2)), np.zeros(0), 25.0, 16, 4, 10, 1.0)


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from tadkit.data.features import FeatureStore, Provenance, VideoFeatures
    root, first, last, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    prov = Provenance(backbone="i3d", streams=("rgb",), feature_dim=256, clip_len=16, stride=4, fps=25.0)
    with FeatureStore.create(root, prov) as w:
        for i in range(first, last):
            vid = f"video_{i:03d}"
            if w.has(vid):
                continue
            feats = np.full((rows, 256), i, dtype=np.float32) + np.arange(rows, dtype=np.float32)[:, None]
            w.write(VideoFeatures(vid, feats, np.arange(rows) * 0.16 + 0.32, 25.0, 16, 4, rows * 4, rows * 0.16))
            print(vid, flush=True)
""")


def _check_intact(root, expected_rows):
    store = FeatureStore.open(root)
    for vid in store.video_ids():
        i = int(vid.split("_")[1])
        v = store.read(vid)
        assert v.features.shape == (expected_rows, 256)
        assert v.features[0, 0] == i and v.features[-1, 0] == i + expected_rows - 1
    return store


def test_sigkill_mid_write_leaves_published_videos_intact_and_a_rerun_finishes(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    root = tmp_path / "store"
    rows = 4000  # ~4 MB per video, so the kill very likely lands inside a write
    proc = subprocess.Popen([sys.executable, str(script), str(root), "0", "40", str(rows)],
                            stdout=subprocess.PIPE, text=True)
    done = [proc.stdout.readline() for _ in range(3)]  # three videos published
    assert all(line.startswith("video_") for line in done)
    time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = _check_intact(root, rows)
    assert 3 <= len(store) < 40
    # the rerun skips published videos, cleans the dead writer's temporary file, writes the rest
    out = subprocess.run([sys.executable, str(script), str(root), "0", "40", str(rows)],
                         capture_output=True, text=True, check=True).stdout.split()
    assert len(out) == 40 - len(store)
    final = _check_intact(root, rows)
    assert len(final) == 40
    assert not [p for p in os.listdir(root / "videos") if p.startswith(".tmp")]
    with h5py.File(root / "store.h5", "r") as f:
        assert len(f["videos"]) == 40


def test_two_concurrent_writer_processes_do_not_collide(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    root = tmp_path / "store"
    # overlapping ranges: both processes may write videos 10..19
    procs = [subprocess.Popen([sys.executable, str(script), str(root), a, b, "50"],
                              stdout=subprocess.DEVNULL) for a, b in (("0", "20"), ("10", "30"))]
    assert [p.wait() for p in procs] == [0, 0]
    store = _check_intact(root, 50)
    assert store.video_ids() == [f"video_{i:03d}" for i in range(30)]
    with h5py.File(root / "store.h5", "r") as f:
        assert len(f["videos"]) == 30


def test_nested_provenance_differences_name_only_the_leaves_that_differ(tmp_path):
    a = Provenance(**{**PROV.__dict__, "preprocessing": {"recipe": {"crop": 224, "mean": 0.5}, "rgb": "x"}})
    b = Provenance(**{**PROV.__dict__, "preprocessing": {"recipe": {"crop": 64, "mean": 0.5}, "rgb": "x"}})
    FeatureStore.create(tmp_path, a).close()
    with pytest.raises(ProvenanceError) as err:
        FeatureStore.create(tmp_path, b)
    msg = str(err.value)
    assert "preprocessing.recipe.crop: features have 224, expected 64" in msg
    assert "mean" not in msg and "rgb" not in msg
