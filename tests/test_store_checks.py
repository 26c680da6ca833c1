"""Damaged, odd and crafted feature stores: every bad video file is reported and skipped, nothing
outside the store is read, writes that fail (a full disk) leave the store as it was."""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from tadkit.cli import cli, main
from tadkit.data.datasets import WindowDataset, make_dataset
from tadkit.data.features import FeatureStore, FeatureWarning, Provenance, VideoFeatures, escape_id
from tadkit.errors import InputError, OutputError

PROV = Provenance(backbone="i3d", streams=("rgb",), feature_dim=4, clip_len=16, stride=4, fps=25.0,
                  weights={"rgb": {"file": "rgb.pt", "sha256": "ab12"}})


def video(vid: str, t: int = 6, c: int = 4, seed: int = 0) -> VideoFeatures:
    rng = np.random.default_rng(seed)
    return VideoFeatures(vid, rng.standard_normal((t, c)).astype(np.float32), (np.arange(t) * 4 + 8) / 25.0,
                         25.0, 16, 4, t * 4 + 12, (t * 4 + 12) / 25.0)


@pytest.fixture()
def store(tmp_path):
    """A store with a good video ``good`` and a video ``bad`` that a test damages."""
    root = tmp_path / "feats"
    with FeatureStore.create(root, PROV) as w:
        w.write(video("good"))
        w.write(video("bad", seed=1))
    return root


def _rewrite(path, edit):
    """Open a published video file for writing and let ``edit(f)`` damage it."""
    with h5py.File(path, "r+") as f:
        edit(f)


def _replace(f, name, data, **kw):
    del f[name]
    f.create_dataset(name, data=data, **kw)


def _other_store_file(root, tmp_path):
    other = tmp_path / "other"
    with FeatureStore.create(other, Provenance(**{**PROV.__dict__, "stride": 8})) as w:
        w.write(dataclasses.replace(video("bad"), stride=8))
    shutil.copyfile(other / "videos" / "bad.h5", root / "videos" / "bad.h5")


def _other_weights_file(root, tmp_path):
    other = tmp_path / "other"
    with FeatureStore.create(other, Provenance(**{**PROV.__dict__, "weights": {"rgb": {"sha256": "ff00"}}})) as w:
        w.write(video("bad"))
    shutil.copyfile(other / "videos" / "bad.h5", root / "videos" / "bad.h5")


def _external_target(tmp_path):
    outside = tmp_path / "outside.h5"
    with h5py.File(outside, "w") as f:
        f["features"] = np.ones((6, 4), np.float32)
    return outside


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# (name, damage(bad_path, store_root, tmp_path), a fragment of the reported problem)
DAMAGE = [
    ("truncated HDF5", lambda p, r, t: _truncate(p), "not a readable HDF5 file (Unable to synchronously open file "
                                                     "(truncated file"),
    ("not HDF5", lambda p, r, t: p.write_bytes(b"hello"), "not a readable HDF5 file"),
    ("missing attribute", lambda p, r, t: _rewrite(p, lambda f: f.attrs.__delitem__("fps")),
     "missing attribute(s) fps"),
    ("integer features", lambda p, r, t: _rewrite(p, lambda f: _replace(f, "features", np.ones((6, 4), np.int64))),
     "'features' has dtype int64, expected floating point"),
    ("string features", lambda p, r, t: _rewrite(p, lambda f: _replace(f, "features", np.array([b"x"] * 6))),
     "'features' has shape (6,), expected 2 dimensions"),
    ("3-d features", lambda p, r, t: _rewrite(p, lambda f: _replace(f, "features", np.ones((6, 4, 1), np.float32))),
     "'features' has shape (6, 4, 1), expected 2 dimensions"),
    ("NaN times", lambda p, r, t: _rewrite(p, lambda f: _replace(f, "times", np.array([0.3, np.nan, 1, 2, 3, 4]))),
     "'times' holds NaN or infinite times"),
    ("unsorted times", lambda p, r, t: _rewrite(p, lambda f: _replace(f, "times", np.array([0.3, 0.2, 1, 2, 3, 4]))),
     "'times' is not strictly increasing"),
    ("times of another length", lambda p, r, t: _rewrite(p, lambda f: _replace(f, "times", np.arange(5.0))),
     "'times' holds 5 times for 6 steps"),
    ("other feature dim", lambda p, r, t: _rewrite(p, lambda f: (_replace(f, "features", np.ones((6, 8), "f4")))),
     "features have 8 channels, the store's feature_dim is 4"),
    ("0 snippets", lambda p, r, t: _rewrite(p, lambda f: (_replace(f, "features", np.ones((0, 4), "f4")),
                                                          _replace(f, "times", np.ones(0)))),
     "features hold 0 snippets"),
    ("no times", lambda p, r, t: _rewrite(p, lambda f: f.__delitem__("times")), "no 'times' dataset"),
    ("invalid fps", lambda p, r, t: _rewrite(p, lambda f: f.attrs.__setitem__("fps", -1.0)),
     "attribute fps must be positive"),
    ("other stride", lambda p, r, t: _rewrite(p, lambda f: f.attrs.__setitem__("stride", 8)),
     "attribute stride is 8, the store's is 4"),
    ("file of another video", lambda p, r, t: _rewrite(p, lambda f: f.attrs.__setitem__("video_id", "good")),
     "holds video 'good' but its file name stands for 'bad'"),
    ("file of another store", lambda p, r, t: _other_store_file(r, t),
     "comes from a store made with other settings: stride: features have 8, expected 4"),
    ("file made with other weights", lambda p, r, t: _other_weights_file(r, t),
     "weights.rgb.sha256: features have 'ff00', expected 'ab12'"),
    ("external link", lambda p, r, t: _rewrite(p, lambda f: (f.__delitem__("features"), f.__setitem__(
        "features", h5py.ExternalLink(str(_external_target(t)), "/features")))),
     "'features' is an external link to"),
    ("external raw storage", lambda p, r, t: _rewrite(p, lambda f: _raw_external(f, t)),
     "'features' keeps its data in external file(s)"),
    ("virtual dataset", lambda p, r, t: _rewrite(p, lambda f: _virtual(f, t)),
     "'features' is a virtual dataset mapping other files"),
    ("soft link", lambda p, r, t: _rewrite(p, lambda f: (f.move("features", "feats"),
                                                         f.__setitem__("features", h5py.SoftLink("/feats")))),
     "'features' is a SoftLink, expected a plain dataset or group"),
]


def _raw_external(f, tmp_path):
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.ones((6, 4), np.float32).tobytes())
    del f["features"]
    f.create_dataset("features", shape=(6, 4), dtype="f4", external=[(str(raw), 0, 96)])


def _virtual(f, tmp_path):
    layout = h5py.VirtualLayout(shape=(6, 4), dtype="f4")
    layout[:] = h5py.VirtualSource(str(_external_target(tmp_path)), "features", shape=(6, 4))
    del f["features"]
    f.create_virtual_dataset("features", layout)


@pytest.mark.parametrize("name,damage,problem", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_bad_video_file_is_reported_and_skipped_everywhere(store, tmp_path, name, damage, problem):
    bad = store / "videos" / "bad.h5"
    damage(bad, store, tmp_path)
    opened = FeatureStore.open(store)
    assert opened.video_ids() == ["bad", "good"]
    with pytest.raises(InputError) as err:
        opened.read("bad")
    assert str(bad) in str(err.value) and problem in str(err.value)
    np.testing.assert_array_equal(opened.read("good").features, video("good").features)
    # tadkit info: lists the good video and the bad one with its reason, exit 0
    res = CliRunner().invoke(cli, ["info", str(store)])
    assert res.exit_code == 0, res.output
    assert "videos          1" in res.output and "good: features=(6, 4)" in res.output
    assert "unreadable      1" in res.output and problem in res.output
    doc = json.loads(CliRunner().invoke(cli, ["info", str(store), "--json"]).output)
    assert list(doc["videos"]) == ["good"] and problem in doc["unreadable"]["bad"]
    # window mode (index built from every file): the bad video is skipped with a warning
    with pytest.warns(FeatureWarning, match="skipping unreadable video bad"):
        ds = WindowDataset(store, window=4, overlap=0.5)
    assert ds.video_ids == ["good"] and {w[0] for w in ds.windows} == {"good"}
    assert problem in ds.report.unreadable["bad"]
    # full and resize mode read lazily: the bad video raises InputError, which training records and skips
    for mode in ("full", "resize"):
        ds = make_dataset(mode, store, warn=False)
        with pytest.raises(InputError):
            ds[ds.video_ids.index("bad")]


def test_file_names_that_do_not_decode_are_listed_as_unreadable(store):
    shutil.copyfile(store / "videos" / "good.h5", store / "videos" / "%ff%fe.h5")      # not UTF-8
    shutil.copyfile(store / "videos" / "good.h5", store / "videos" / "x^.h5")          # a stray escape
    (store / "videos" / f"~{'0' * 64}.h5").write_bytes(b"junk")                        # hashed name, unreadable
    opened = FeatureStore.open(store)
    assert opened.video_ids() == ["bad", "good"]
    bad = opened.unreadable()
    assert set(bad) == {"%ff%fe.h5", "x^.h5", f"~{'0' * 64}.h5"}
    assert "does not decode to UTF-8" in bad["%ff%fe.h5"] and "not an escaped video id" in bad["x^.h5"]
    res = CliRunner().invoke(cli, ["info", str(store)])
    assert res.exit_code == 0 and "unreadable      3" in res.output


def test_nan_and_inf_features_warn_once_naming_the_video(tmp_path):
    feats = video("v", t=8).features.copy()
    feats[2, 1], feats[5, 0] = np.nan, np.inf
    with FeatureStore.create(tmp_path / "s", PROV) as w:
        w.write(VideoFeatures("v", feats, (np.arange(8) * 4 + 8) / 25.0, 25.0, 16, 4, 44, 1.76))
        w.write(video("ok"))
        w.write(VideoFeatures("huge", np.full((8, 4), 3e38, np.float32), (np.arange(8) * 4 + 8) / 25.0, 25.0,
                              16, 4, 44, 1.76))                        # finite, though their sum overflows
    store = FeatureStore.open(tmp_path / "s")
    with pytest.warns(FeatureWarning, match=r"video 'v' has NaN or infinite feature values in 2 snippet\(s\) \(2..5"):
        store.read("v")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.read("v")          # once per video
        store.read("ok")
        store.read("huge")


def test_stale_temporary_files_of_dead_writers_are_removed(store):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    leftovers = [store / f".tmp-master-{dead}-{'a' * 32}.h5", store / "videos" / f".tmp-{dead}-{'b' * 32}.h5",
                 store / "failures" / f".tmp-{dead}-{'c' * 32}.json"]
    mine = store / f".tmp-master-{os.getpid()}-{'d' * 32}.h5"          # a live writer's file stays
    for p in [*leftovers, mine]:
        p.write_bytes(b"partial")
    FeatureStore.create(store, PROV).close()
    assert [p.exists() for p in leftovers] == [False, False, False] and mine.exists()


def test_a_failing_write_leaves_the_store_as_it_was(store, monkeypatch):
    real_write = os.write

    def full_disk(fd, data):
        if len(data) > 100:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    before = sorted(p.name for p in store.rglob("*"))
    monkeypatch.setattr(os, "write", full_disk)
    w = FeatureStore.create(store, PROV)
    with pytest.raises(OutputError) as err:
        w.write(video("new", t=50))
    assert str(err.value).startswith(f"{store / 'videos' / 'new.h5'}: cannot write: no space left on device")
    with pytest.raises(OutputError, match="store.h5: cannot write: no space left on device"):
        w.close()
    monkeypatch.setattr(os, "write", real_write)
    assert sorted(p.name for p in store.rglob("*")) == before                      # no temporary file left
    opened = FeatureStore.open(store)
    assert opened.video_ids() == ["bad", "good"] and not opened.unreadable()


def _limit_file_size():  # runs in the child: files may not grow past 48 KB (EFBIG instead of SIGXFSZ)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (48_000, 48_000))


WRITER = ("import sys; from tadkit.cli import main; sys.exit(main(['data', 'synth-features', '--annotations', "
          "sys.argv[1], '--out', sys.argv[2], '--feature-dim', '512', '--fps', '30']))")


def test_a_full_disk_during_a_run_is_one_error_line_and_the_store_stays_consistent(tmp_path):
    ann = tmp_path / "ann.json"
    db = {f"v{i}": {"subset": "training", "duration": d, "annotations": []} for i, d in enumerate((2.0, 3.0, 60.0))}
    ann.write_text(json.dumps({"version": "test", "database": db}))
    out = tmp_path / "feats"
    proc = subprocess.run([sys.executable, "-c", WRITER, str(ann), str(out)], capture_output=True, text=True,
                          preexec_fn=_limit_file_size, timeout=120)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "cannot write: file too large" in err[0], proc.stderr
    assert str(out / "videos" / "v2.h5") in err[0] and "Traceback" not in proc.stderr
    assert not [p for p in out.rglob(".tmp-*")]
    store = FeatureStore.open(out)
    assert store.video_ids() == ["v0", "v1"] and not store.unreadable()


def test_escaped_names_of_ids_that_are_not_utf8_stay_distinct():
    assert escape_id("a\udcff") == "a%ff" and escape_id("a\udcfe") == "a%fe"


def test_the_writer_refuses_a_video_its_readers_would_refuse(tmp_path):
    with FeatureStore.create(tmp_path / "s", PROV) as w:
        with pytest.raises(ValueError, match="video 'v': stride is 8, the store's is 4"):
            w.write(dataclasses.replace(video("v"), stride=8))
        with pytest.raises(ValueError, match="video 'v': features have 3 channels, the store's feature_dim is 4"):
            w.write(video("v", c=3))
        with pytest.raises(ValueError, match="times must be finite and strictly increasing"):
            dataclasses.replace(video("v"), times=np.array([0.3, 0.2, 1, 2, 3, 4]))
    assert FeatureStore.open(tmp_path / "s").video_ids() == []


def test_indexing_skips_a_video_whose_file_fails_in_any_store(store, tmp_path):
    """Window indexes, level widths and head inputs read per-video files of every store: a bad one is skipped."""
    from tadkit.data.sources import FeatureSource
    from tadkit.detect.inputs import input_info

    second = tmp_path / "second"
    shutil.copytree(store, second)
    _truncate(second / "videos" / "bad.h5")          # intact in the first store, damaged in the second
    source = FeatureSource([store, second])
    with pytest.warns(FeatureWarning, match="skipping unreadable video bad"):
        ds = WindowDataset(source, window=4, overlap=0.5)
    assert {w[0] for w in ds.windows} == {"good"} and "not a readable HDF5 file" in ds.report.unreadable["bad"]
    assert source.first_readable() == "good"
    with pytest.raises(InputError, match=r"none of the 1 videos has a readable feature file \(e.g. .*bad.h5"):
        source.first_readable(["bad"])

    levels = tmp_path / "levels"                      # the first video ("bad") is damaged, "good" has levels
    with FeatureStore.create(levels, PROV) as w:
        for vid in ("bad", "good"):
            v = video(vid)
            v.levels = {"rgb/x2": (np.ones((12, 3), np.float32), (np.arange(12) * 2 + 8) / 50.0)}
            w.write(v)
    _truncate(levels / "videos" / "bad.h5")
    with_levels = FeatureSource([levels], levels=["x2"])
    assert with_levels.level_dims() == [3]
    assert input_info(with_levels).level_dims == (3,)
