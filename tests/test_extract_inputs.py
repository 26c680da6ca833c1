"""Odd inputs of an extraction run: file names, links, changed sources, damaged stored files, a full
disk, decoder noise, non-finite features. Each ends as one recorded failure or one clear line."""
from __future__ import annotations

import errno
import os
import shutil

import h5py
import numpy as np

from tadkit.cli import main
from tadkit.data.features import FeatureStore
from tadkit.extract.runner import Extractor

from test_extract_helpers import make_video, no_onednn  # noqa: F401

SMALL = ["--streams", "rgb", "--size", "32", "--device", "cpu", "--random-weights", "--no-progress"]


def _extract(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["extract", *args, *SMALL])
    out = capsys.readouterr()
    return code, out.out, out.err


def _features(out) -> dict[str, np.ndarray]:
    store = FeatureStore.open(out)
    return {vid: store.read(vid).features for vid in store.video_ids()}


def test_a_file_name_that_is_not_utf8_is_one_recorded_failure(tmp_path, capsys):
    vids = tmp_path / "videos"
    vids.mkdir()
    make_video(vids / "good.avi", n=8)
    os.link(vids / "good.avi", os.fsencode(vids) + b"/bad\xffname.avi")
    code, out, err = _extract(capsys, str(vids), "--out", str(tmp_path / "feats"))
    assert code == 3 and "1 extracted, 0 already present, 1 failed, of 2 videos" in out
    assert "bad\\xffname [input]: the file name is not valid UTF-8" in err
    store = FeatureStore.open(tmp_path / "feats")
    assert store.video_ids() == ["good"]
    assert store.failures()["bad\\xffname"].startswith("input: the file name is not valid UTF-8")
    assert main(["info", str(tmp_path / "feats")]) == 0


def test_dangling_links_and_link_loops_in_a_folder_are_reported(tmp_path, capsys):
    vids = tmp_path / "videos"
    vids.mkdir()
    make_video(vids / "good.avi", n=8)
    os.symlink("gone.avi", vids / "dangling.avi")
    os.symlink("loop.avi", vids / "loop.avi")
    code, out, err = _extract(capsys, str(vids), "--out", str(tmp_path / "feats"))
    assert code == 3 and "1 extracted, 0 already present, 2 failed, of 3 videos" in out
    assert "dangling [open]: broken symbolic link (its target 'gone.avi' does not exist)" in err
    assert "loop [open]: symbolic link loop" in err


def test_a_changed_source_is_refused_or_extracted_again(tmp_path, capsys):
    vids = tmp_path / "videos"
    vids.mkdir()
    make_video(vids / "a.avi", n=8, seed=0)
    make_video(vids / "b.avi", n=8, seed=1)
    out = tmp_path / "feats"
    assert _extract(capsys, str(vids), "--out", str(out))[0] == 0
    first = _features(out)
    # the same videos copied elsewhere (new path, new modification time): still the same sources
    moved = tmp_path / "moved"
    shutil.copytree(vids, moved)
    os.utime(moved / "a.avi", (1e9, 1e9))
    code, stdout, _ = _extract(capsys, str(moved), "--out", str(out))
    assert code == 0 and "0 extracted, 2 already present" in stdout
    # another video under the same name: refused before anything runs, the store is unchanged
    make_video(vids / "a.avi", n=20, seed=5)
    code, _, err = _extract(capsys, str(vids), "--out", str(out))
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "1 video(s) in the store were extracted from other files than the ones given now, e.g. 'a': " \
           "the file had" in err and "--on-source-change reextract" in err
    for vid, feats in _features(out).items():
        np.testing.assert_array_equal(feats, first[vid])
    # same size, other content
    data = bytearray((moved / "b.avi").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (moved / "b.avi").write_bytes(bytes(data))
    code, _, err = _extract(capsys, str(moved / "b.avi"), "--out", str(out))
    assert code == 1 and "'b': same size, other content (extracted from" in err
    # extracted again when asked
    code, stdout, err = _extract(capsys, str(vids), "--out", str(out), "--on-source-change", "reextract")
    assert code == 0 and "1 extracted, 1 already present" in stdout
    assert "note: extracted a again: its source changed: the file had" in err
    again = _features(out)
    assert again["a"].shape[0] > first["a"].shape[0]
    np.testing.assert_array_equal(again["b"], first["b"])
    assert FeatureStore.open(out).meta("a")["source"]["path"] == str((vids / "a.avi").resolve())


def test_a_damaged_stored_file_is_extracted_again(tmp_path, capsys):
    vids = tmp_path / "videos"
    vids.mkdir()
    make_video(vids / "a.avi", n=8)
    out = tmp_path / "feats"
    assert _extract(capsys, str(vids), "--out", str(out))[0] == 0
    first = _features(out)["a"]
    with h5py.File(out / "videos" / "a.h5", "r+") as f:
        del f.attrs["fps"]
    code, stdout, err = _extract(capsys, str(vids), "--out", str(out))
    assert code == 0 and "1 extracted, 0 already present" in stdout
    assert "note: extracted a again: its stored file fails the check (missing attribute(s) fps" in err
    np.testing.assert_array_equal(_features(out)["a"], first)


def test_a_full_disk_stops_the_run_with_one_line_and_keeps_what_was_published(tmp_path, capsys, monkeypatch):
    vids = tmp_path / "videos"
    vids.mkdir()
    for name in ("a", "b"):
        make_video(vids / f"{name}.avi", n=8)
    out = tmp_path / "feats"
    assert _extract(capsys, str(vids / "a.avi"), "--out", str(out))[0] == 0
    real_write = os.write

    def full_disk(fd, data):
        if len(data) > 1000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    code, _, err = _extract(capsys, str(vids), "--out", str(out))
    monkeypatch.setattr(os, "write", real_write)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {out / 'videos' / 'b.h5'}: cannot write: no space left on device")
    assert "extraction stopped after 0 new video(s)" in err
    assert not list(out.rglob(".tmp-*"))
    assert FeatureStore.open(out).video_ids() == ["a"]
    assert _extract(capsys, str(vids), "--out", str(out))[0] == 0          # space again: the rerun finishes


def test_decoder_log_lines_only_with_debug(tmp_path, capfd):
    mp4 = bytearray(make_video(tmp_path / "full.mp4", n=40).read_bytes())
    mp4[len(mp4) // 3: len(mp4) // 3 + 3000] = np.random.default_rng(0).integers(0, 256, 3000, np.uint8).tobytes()
    vids = tmp_path / "videos"
    vids.mkdir()
    (vids / "damaged.mp4").write_bytes(bytes(mp4))
    args = ["extract", str(vids), "--out", str(tmp_path / "feats"), "--backend", "decord", *SMALL]
    assert main(args) == 3
    err = capfd.readouterr().err
    assert "  damaged [" in err                       # [open] or [decode]: decord's threads decide which
    assert not [line for line in err.splitlines() if line.startswith("[")], err    # no "[mpeg4 @ 0x...] ..."
    assert main(["--debug", *args]) == 3
    debug = capfd.readouterr().err
    assert any(line.startswith("[mpeg4 @") for line in debug.splitlines()), debug


def test_non_finite_features_are_warned_about_with_the_video(tmp_path, capsys, monkeypatch):
    vids = tmp_path / "videos"
    vids.mkdir()
    make_video(vids / "a.avi", n=8)                                     # one snippet
    forward = Extractor.forward

    def overflowing(self, inputs):                                      # as a float16 backbone may
        out = forward(self, inputs)
        out[0, 3] = np.inf
        return out

    monkeypatch.setattr(Extractor, "forward", overflowing)
    code, _, err = _extract(capsys, str(vids / "a.avi"), "--out", str(tmp_path / "feats"))
    assert code == 0 and "warning: a: 1 snippet(s) with NaN or infinite feature values" in err
