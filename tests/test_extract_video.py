"""Decoding, input collection and snippet planning."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tadkit import timeline
from tadkit.errors import InputError
from tadkit.extract.video import (DecordReader, PyAVReader, VideoError, VideoInfo, collect_videos,
                                  open_video, plan_snippets, video_id)

from test_extract_helpers import make_video, moving_frames, write_video


def _info(n: int, fps: float = 25.0, times: np.ndarray | None = None) -> VideoInfo:
    duration = float(timeline.frame_to_seconds(n, fps))
    return VideoInfo("x.mp4", n, fps, 64, 48, duration, "test", times)


# --------------------------------------------------------------------------- planning
@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 400), clip_len=st.integers(1, 64), stride=st.integers(1, 64))
def test_snippets_cover_every_frame_including_the_tail(n, clip_len, stride):
    plan = plan_snippets(_info(n), clip_len, stride)
    idx = plan.frame_indices
    assert idx.shape == (plan.num_snippets, clip_len)
    assert idx.min() == 0 and idx.max() == n - 1
    if stride <= clip_len:                                        # no gaps between snippets
        assert set(np.unique(idx)) == set(range(n))
    starts = np.arange(plan.num_snippets) * stride
    assert starts[-1] + clip_len >= n                             # the tail has a snippet
    if plan.num_snippets > 1:
        assert starts[-2] + clip_len < n                          # no snippet is superfluous
    # inside the video frames are consecutive; past the end the last frame repeats
    np.testing.assert_array_equal(idx, np.minimum(starts[:, None] + np.arange(clip_len), n - 1))
    np.testing.assert_allclose(plan.centers, (starts + clip_len / 2) / 25.0)


def test_plan_golden_values_for_the_thumos_recipe():
    plan = plan_snippets(_info(40, fps=30.0), 16, 4)
    # starts 0, 4, ..., 24 (24 + 16 = 40 reaches the end): 7 snippets
    np.testing.assert_array_equal(plan.frame_indices[:, 0], [0, 4, 8, 12, 16, 20, 24])
    np.testing.assert_allclose(plan.centers, [(8 + 4 * i) / 30.0 for i in range(7)])
    assert plan.duration == pytest.approx(40 / 30)
    short = plan_snippets(_info(5), 16, 4)
    np.testing.assert_array_equal(short.frame_indices, [[0, 1, 2, 3, 4] + [4] * 11])


def test_target_fps_resamples_by_index_for_constant_frame_rate():
    plan = plan_snippets(_info(50, fps=25.0), 4, 4, fps=10.0)
    assert plan.fps == 10.0 and plan.num_frames == 20
    np.testing.assert_array_equal(plan.source_index, np.floor(np.arange(20) * 2.5).astype(int))


def test_variable_frame_rate_is_resampled_by_presentation_time():
    times = np.array([0.0, 0.04, 0.08, 0.2, 0.24, 0.4])  # gaps after frames 2 and 4
    info = VideoInfo("v.mkv", 6, 25.0, 64, 48, 0.44, "test", times)
    assert info.variable_frame_rate
    plan = plan_snippets(info, 2, 2)
    # at 25 fps: t = 0, .04, ..., .40 -> the last frame shown at or before t
    np.testing.assert_array_equal(plan.source_index, [0, 1, 2, 2, 2, 3, 4, 4, 4, 4, 5])
    assert not _info(10, times=np.arange(10) / 25.0).variable_frame_rate


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 300), src=st.sampled_from([24.0, 25.0, 29.97, 30.0, 50.0, 60.0]),
       tgt=st.sampled_from([5.0, 10.0, 15.0, 25.0, 30.0, 60.0]))
def test_timestamp_resampling_equals_index_resampling_for_constant_frame_rate(n, src, tgt):
    times = np.arange(n) / src
    by_time = timeline.resample_timestamps(times, n / src, tgt)
    by_index = timeline.resample_indices(n, src, tgt)
    np.testing.assert_array_equal(by_time, by_index)


def test_batches_split_snippets_in_order():
    plan = plan_snippets(_info(100), 16, 4)
    sl = list(plan.batches(7))
    assert [s.start for s in sl] == list(range(0, plan.num_snippets, 7))
    assert sl[-1].stop == plan.num_snippets


# --------------------------------------------------------------------------- readers
def test_decord_and_pyav_return_the_same_frames(tmp_path):
    path = make_video(tmp_path / "v.avi", n=15)
    d, p = DecordReader(path), PyAVReader(path)
    assert (d.info.num_frames, d.info.width, d.info.height) == (p.info.num_frames, p.info.width, p.info.height)
    idx = [0, 3, 4, 14]
    fd, fp = d.get_frames(idx), p.get_frames(idx)
    assert fd.shape == (4, 48, 64, 3) and fd.dtype == np.uint8
    assert np.abs(fd.astype(int) - fp.astype(int)).mean() < 2.0
    # PyAV restarts for an earlier frame and handles repeats and any order
    again = p.get_frames([14, 0, 0])
    np.testing.assert_array_equal(again, fp[[3, 0, 0]])


def test_frames_come_back_in_request_order_with_their_content(tmp_path):
    path = make_video(tmp_path / "v.avi", n=12)
    reader = open_video(path)
    marks = reader.get_frames([9, 2, 5])[:, 2:6, 2:6].mean(axis=(1, 2, 3))
    np.testing.assert_allclose(marks, [36, 8, 20], atol=4)


def test_odd_sized_video_decodes(tmp_path):
    path = write_video(tmp_path / "odd.avi", moving_frames(6, height=33, width=47), codec="mjpeg")
    reader = open_video(path)
    assert (reader.info.width, reader.info.height) == (47, 33)
    assert reader.get_frames([5]).shape == (1, 33, 47, 3)


def test_single_frame_video_gives_one_padded_snippet(tmp_path):
    reader = open_video(make_video(tmp_path / "one.avi", n=1))
    plan = plan_snippets(reader.info, 16, 4)
    assert plan.num_snippets == 1 and plan.num_frames == 1
    np.testing.assert_array_equal(plan.frame_indices, np.zeros((1, 16), int))


def test_variable_frame_rate_file_is_detected(tmp_path):
    pts = [0, 40, 80, 200, 240, 400, 440, 480]
    path = write_video(tmp_path / "vfr.mkv", moving_frames(8), pts=pts, time_base=Fraction(1, 1000))
    for reader in (open_video(path, "decord"), open_video(path, "pyav")):
        assert reader.info.variable_frame_rate
        np.testing.assert_allclose(reader.info.frame_times, np.array(pts) / 1000, atol=1e-6)
        plan = plan_snippets(reader.info, 4, 4)
        np.testing.assert_array_equal(plan.source_index[:7], [0, 1, 2, 2, 2, 3, 4])


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in s.encode(frame):
            c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    with pytest.raises(VideoError, match="no video stream") as err:
        open_video(path)
    assert err.value.stage == "open"


def test_unreadable_inputs_give_clear_reasons(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(VideoError, match="not a readable video file"):
        open_video(tmp_path / "notes.txt")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty file"):
        open_video(tmp_path / "empty.mp4")
    with pytest.raises(VideoError, match="no such file"):
        open_video(tmp_path / "missing.mp4")


def test_truncated_file_is_reported_not_silently_shortened(tmp_path):
    data = make_video(tmp_path / "full.avi", n=40).read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(VideoError, match="truncated or corrupt: the container declares 40 frames") as err:
        open_video(tmp_path / "cut.avi")
    assert err.value.stage == "truncated"


# --------------------------------------------------------------------------- collecting inputs
def test_collect_videos_from_folders_lists_and_paths(tmp_path):
    d = tmp_path / "videos"
    d.mkdir()
    for name in ("b.mp4", "a.avi", ".hidden.mp4", "notes.txt", "annotations.json", "clip.weird"):
        (d / name).write_bytes(b"x")
    (d / "sub").mkdir()
    other = tmp_path / "c.mkv"
    other.write_bytes(b"x")
    lst = tmp_path / "list.txt"
    lst.write_text("# my videos\nc.mkv\n\nvideos/a.avi  # again\n")
    got = collect_videos([d, lst, other])
    # known non-video suffixes are left out of folder scans; unknown ones are kept (and reported if bad)
    assert [p.name for p in got] == ["a.avi", "b.mp4", "clip.weird", "c.mkv"]
    assert [video_id(p) for p in got] == ["a", "b", "clip", "c"]


def test_two_files_with_one_stem_are_an_error(tmp_path):
    (tmp_path / "x.mp4").write_bytes(b"x")
    (tmp_path / "x.avi").write_bytes(b"x")
    with pytest.raises(InputError, match="video id 'x'.* also used by"):
        collect_videos([tmp_path])
    with pytest.raises(InputError, match="no such file or folder"):
        collect_videos([tmp_path / "nope.mp4"])
    (tmp_path / "l.txt").write_text("gone.mp4\n")
    with pytest.raises(InputError, match="l.txt: line 1: no such video file 'gone.mp4'"):
        collect_videos([tmp_path / "l.txt"])
