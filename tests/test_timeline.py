"""Time conventions: snippet planning and seconds <-> grid round trips."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tadkit import timeline as tl


def test_snippet_plan_worked_example():
    # 100 frames at 25 fps, 16-frame clips every 4 frames: starts 0..84, the
    # last clip (84..99) ends exactly on the last frame.
    starts = tl.snippet_starts(100, 16, 4)
    assert starts[0] == 0 and starts[-1] == 84 and len(starts) == 22
    centers = tl.snippet_centers(100, 16, 4, 25.0)
    assert centers[0] == pytest.approx(8 / 25)       # frames 0..15 -> centre at 0.32 s
    assert centers[1] - centers[0] == pytest.approx(4 / 25)


def test_tail_gets_a_padded_snippet():
    idx = tl.snippet_frame_indices(10, 4, 4)        # frames 0..9
    assert idx.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 9, 9]]


def test_video_shorter_than_a_clip_gets_one_snippet():
    assert tl.snippet_frame_indices(1, 16, 4).tolist() == [[0] * 16]


@given(n=st.integers(1, 5000), clip=st.integers(1, 64), stride=st.integers(1, 64))
def test_every_frame_is_covered_and_no_snippet_is_wasted(n, clip, stride):
    starts = tl.snippet_starts(n, clip, stride)
    assert starts[-1] + clip >= n                    # the last frame is covered
    assert len(starts) == 1 or starts[-2] + clip < n  # the previous one did not reach it
    assert np.all(np.diff(starts) == stride)


def test_resample_indices_pick_the_frame_shown_at_each_time():
    # 30 fps source resampled to 10 fps takes every third frame
    assert tl.resample_indices(9, 30.0, 10.0).tolist() == [0, 3, 6]
    # upsampling repeats frames, never runs past the end
    idx = tl.resample_indices(5, 10.0, 25.0)
    assert idx.max() == 4 and len(idx) == 12


@given(
    origin=st.floats(-100, 100), step=st.floats(1e-3, 10), length=st.integers(1, 5000),
    seconds=st.floats(-1e4, 1e4),
)
def test_axis_round_trip(origin, step, length, seconds):
    axis = tl.TimeAxis(origin, step, length)
    assert axis.to_seconds(axis.to_grid(seconds)) == pytest.approx(seconds, abs=1e-6 * max(1, abs(seconds)))


@given(n=st.integers(2, 400), clip=st.integers(1, 32), stride=st.integers(1, 32),
       fps=st.floats(1, 120))
def test_axis_from_stored_centers_matches_planned_axis(n, clip, stride, fps):
    centers = tl.snippet_centers(n * stride, clip, stride, fps)
    a = tl.TimeAxis.from_centers(centers, fallback_step=stride / fps)
    b = tl.TimeAxis.for_snippets(len(centers), clip, stride, fps)
    assert a.origin == pytest.approx(b.origin) and a.step == pytest.approx(b.step) and a.length == b.length


@given(t=st.integers(2, 300), new=st.integers(2, 300), pos=st.floats(0, 1))
def test_resized_axis_agrees_with_resized_features(t, new, pos):
    # a linear ramp in time stays a linear ramp: the resized feature value at a
    # new cell equals the time the resized axis assigns to that cell
    axis = tl.TimeAxis(0.7, 0.32, t)
    ramp = axis.centers()[:, None]
    resized = tl.resize_features(ramp, new)
    new_axis = axis.resized(new)
    assert np.allclose(resized[:, 0], new_axis.centers())
    g = pos * (new - 1)
    assert axis.to_grid(new_axis.to_seconds(g)) == pytest.approx(g * (t - 1) / (new - 1))


@given(t=st.integers(1, 300), off=st.integers(0, 200), length=st.integers(1, 200))
def test_window_axis_is_a_shift_of_the_full_axis(t, off, length):
    axis = tl.TimeAxis(0.16, 0.16, t)
    win = axis.window(off, length)
    assert np.allclose(win.centers(), axis.to_seconds(np.arange(off, off + length)))


def test_single_snippet_axis_needs_a_step():
    with pytest.raises(ValueError):
        tl.TimeAxis.from_centers(np.array([0.5]))
    assert tl.TimeAxis.from_centers(np.array([0.5]), fallback_step=0.16).step == 0.16


def test_resize_to_one_cell_is_the_mean_at_the_span_centre():
    axis = tl.TimeAxis(1.0, 1.0, 3)
    assert tl.resize_features(np.array([[1.0], [2.0], [6.0]]), 1)[0, 0] == pytest.approx(3.0)
    assert axis.resized(1).centers()[0] == pytest.approx(2.0)


def test_grid_to_segments_clips_to_duration():
    axis = tl.TimeAxis(0.0, 1.0, 10)
    seg = tl.grid_to_segments(np.array([[-2.0, 3.0], [8.0, 12.0]]), axis, duration=10.0)
    assert seg.tolist() == [[0.0, 3.0], [8.0, 10.0]]


# --------------------------------------------------------------------------- published-feature times
def test_strided_feature_times_generalise_snippet_centres():
    for num_frames, clip, stride, fps in [(300, 16, 4, 30.0), (45, 16, 16, 15.0), (1, 8, 2, 25.0), (97, 32, 8, 15.0)]:
        n = len(tl.snippet_starts(num_frames, clip, stride))
        np.testing.assert_allclose(tl.strided_feature_times(n, stride, clip / 2, fps),
                                   tl.snippet_centers(num_frames, clip, stride, fps))
        span = tl.snippet_span_frames(n, clip, stride)   # covers the video; the last snippet starts inside it
        assert span >= num_frames > span - clip
    # OpenTAD-style offset that is not half a clip: feature 0 at frame 0
    np.testing.assert_allclose(tl.strided_feature_times(3, 4, 0, 25.0), [0.0, 0.16, 0.32])


def test_resized_feature_times_are_cell_centres_one_cell_per_frame():
    times = tl.resized_feature_times(4, 20.0)
    np.testing.assert_allclose(times, [2.5, 7.5, 12.5, 17.5])
    rate = tl.resized_feature_rate(4, 20.0)
    assert rate == 0.2
    axis = tl.TimeAxis.from_centers(times)
    assert axis.step == pytest.approx(1 / rate) and axis.start == pytest.approx(0.0) and axis.end == pytest.approx(20.0)
