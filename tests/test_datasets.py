"""Feature datasets: the three modes, grid targets, round trips to seconds, collation, reports."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from tadkit.data.annotations import load_annotations
from tadkit.data.datasets import (Batch, DatasetWarning, FullSequenceDataset, PadCollate, ResizedDataset,
                                  Sample, WindowDataset, collate, make_dataset, targets_on_axis,
                                  window_offsets)
from tadkit.data.features import FeatureStore, Provenance, VideoFeatures
from tadkit.errors import InputError, ProvenanceError
from tadkit.timeline import TimeAxis, num_sampled_frames, snippet_centers

FPS, CLIP, STRIDE = 10.0, 4, 2  # snippet i is centred on (2 i + 2) / 10 s: origin 0.2 s, step 0.2 s


def make_store(root, videos: dict[str, float], dim: int = 3, fps: float = FPS, clip: int = CLIP,
               stride: int = STRIDE) -> FeatureStore:
    """Store whose feature [i, c] = 1000 * (video number) + 10 * i + c (easy to recognise)."""
    prov = Provenance(backbone="test", streams=("rgb",), feature_dim=dim, clip_len=clip, stride=stride, fps=fps)
    with FeatureStore.create(root, prov) as w:
        for n, (vid, duration) in enumerate(sorted(videos.items())):
            frames = num_sampled_frames(duration, fps)
            t = snippet_centers(frames, clip, stride, fps)
            feats = 1000 * n + 10 * np.arange(len(t))[:, None] + np.arange(dim)[None, :]
            w.write(VideoFeatures(vid, feats.astype(np.float32), t, fps, clip, stride, frames, duration))
    return FeatureStore.open(root)


def make_annotations(tmp_path, rows: list[tuple], name: str = "gt.csv"):
    p = tmp_path / name
    lines = ["video,start,end,label,subset,duration"] + [",".join(map(str, r)) for r in rows]
    p.write_text("\n".join(lines) + "\n")
    return load_annotations(p, warn=False)


@pytest.fixture
def simple(tmp_path):
    store = make_store(tmp_path / "feats", {"a": 10.0, "b": 4.0})
    ann = make_annotations(tmp_path, [("a", 1.0, 2.0, "jump", "train", 10.0), ("a", 5.0, 9.0, "run", "train", 10.0),
                                      ("b", 0.5, 1.5, "run", "val", 4.0)])
    return store, ann


# --------------------------------------------------------------------------- full sequences
def test_full_sequence_sample_fields_and_golden_targets(simple):
    store, ann = simple
    ds = FullSequenceDataset(store, ann, "train")
    assert len(ds) == 1 and ds.video_ids == ["a"] and ds.classes == ["jump", "run"] and ds.feature_dim == 3
    s = ds[0]
    assert isinstance(s, Sample)
    assert s.features.shape == (3, 49) and s.features.dtype == torch.float32  # 100 frames -> 49 snippets
    assert s.features[2, 5].item() == 52.0  # channels first: [c, t] = 10 t + c
    assert s.mask.all() and s.mask.shape == (49,)
    assert s.axis.origin == pytest.approx(0.2) and s.axis.step == pytest.approx(0.2) and s.axis.length == 49
    # 1.0 s -> (1.0 - 0.2) / 0.2 = 4; 2.0 s -> 9; 5 s -> 24; 9 s -> 44
    np.testing.assert_allclose(s.segments.numpy(), [[4, 9], [24, 44]], atol=1e-5)
    assert s.labels.tolist() == [0, 1] and s.labels.dtype == torch.int64
    assert s.duration == 10.0 and s.offset == 0
    np.testing.assert_allclose(s.to_seconds(s.segments), [[1, 2], [5, 9]], atol=1e-5)


def test_ground_truth_is_clipped_to_the_cells(tmp_path):
    store = make_store(tmp_path / "f", {"a": 3.0})  # 14 snippets: cells span [0.1, 2.9] s
    ann = make_annotations(tmp_path, [("a", 0.0, 1.0, "x", "train", 3.0), ("a", 2.5, 3.0, "x", "train", 3.0)])
    s = FullSequenceDataset(store, ann)[0]
    np.testing.assert_allclose(s.segments.numpy(), [[-0.5, 4.0], [11.5, 13.5]], atol=1e-6)


def test_random_crop_of_long_videos_is_seeded_and_consistent(simple):
    store, ann = simple
    ds = FullSequenceDataset(store, ann, "train", max_length=16, min_ioi=0.5)
    torch.manual_seed(3)
    first = [ds[0] for _ in range(5)]
    torch.manual_seed(3)
    again = [ds[0] for _ in range(5)]
    assert [s.offset for s in first] == [s.offset for s in again]
    full = FullSequenceDataset(store, ann, "train")[0]
    for s in first:
        assert s.length == 16 and 0 <= s.offset <= 49 - 16
        assert torch.equal(s.features, full.features[:, s.offset:s.offset + 16])
        assert s.axis.origin == pytest.approx(full.axis.to_seconds(s.offset))
        for seg in s.to_seconds(s.segments):  # every kept piece lies inside an original instance
            assert any(a - 1e-6 <= seg[0] and seg[1] <= b + 1e-6 for a, b in [(1, 2), (5, 9)])


# --------------------------------------------------------------------------- resize
def test_resized_sequence_maps_back_to_seconds(simple):
    store, ann = simple
    ds = ResizedDataset(store, ann, "train", length=100)
    s = ds[0]
    assert s.features.shape == (3, 100)
    # first and last resized cells sit on the first and last snippets (align corners)
    assert s.features[0, 0].item() == pytest.approx(0.0) and s.features[0, -1].item() == pytest.approx(480.0)
    assert s.axis.to_seconds(0) == pytest.approx(0.2) and s.axis.to_seconds(99) == pytest.approx(9.8)
    np.testing.assert_allclose(s.to_seconds(s.segments), [[1, 2], [5, 9]], atol=1e-5)


# --------------------------------------------------------------------------- windows
def test_window_offsets_cover_the_sequence():
    assert window_offsets(10, 4, 2).tolist() == [0, 2, 4, 6]
    assert window_offsets(11, 4, 3).tolist() == [0, 3, 6, 7]
    assert window_offsets(3, 4, 2).tolist() == [0]
    assert window_offsets(4, 4, 2).tolist() == [0]


def test_windows_read_only_their_rows_and_carry_their_offset(simple):
    store, ann = simple
    ds = WindowDataset(store, ann, "train", window=16, overlap=0.5, min_ioi=0.0)
    assert ds.hop == 8
    assert [(v, o, n) for v, o, n in ds.windows] == [("a", 0, 16), ("a", 8, 16), ("a", 16, 16),
                                                     ("a", 24, 16), ("a", 32, 16), ("a", 33, 16)]
    full = FullSequenceDataset(store, ann, "train")[0]
    for i in range(len(ds)):
        s = ds[i]
        assert torch.equal(s.features, full.features[:, s.offset:s.offset + s.length])
        assert s.axis.origin == pytest.approx(full.axis.to_seconds(s.offset))
        assert s.axis.step == pytest.approx(full.axis.step)


def test_window_keeps_instances_by_intersection_over_instance(tmp_path):
    store = make_store(tmp_path / "f", {"a": 10.0})
    # instance [1.0, 3.0] s = grid [4, 14]; a window of cells 0..9 spans grid [-0.5, 9.5]: 55% inside
    ann = make_annotations(tmp_path, [("a", 1.0, 3.0, "x", "train", 10.0)])
    strict = WindowDataset(store, ann, window=10, overlap=0.0, min_ioi=0.75)
    loose = WindowDataset(store, ann, window=10, overlap=0.0, min_ioi=0.5)
    assert strict[0].segments.shape == (0, 2)
    np.testing.assert_allclose(loose[0].segments.numpy(), [[4.0, 9.5]])
    second = loose[1]  # offset 10: the instance is grid [-6, 4] there, 45% inside
    assert second.offset == 10 and second.segments.shape == (0, 2)
    dropped = WindowDataset(store, ann, window=10, overlap=0.0, min_ioi=0.5, drop_empty=True)
    assert [o for _, o, _ in dropped.windows] == [0]


def test_short_video_gives_one_short_window_padded_by_collate(simple):
    store, ann = simple
    ds = WindowDataset(store, ann, "val", window=64)
    assert len(ds) == 1 and ds[0].length == 19
    batch = PadCollate(stride=1, pad_to=64)([ds[0]])
    assert batch.features.shape == (1, 3, 64) and batch.mask.sum().item() == 19


# --------------------------------------------------------------------------- round trips (property)
def _video_strategy():
    return st.tuples(st.sampled_from([10.0, 24.0, 25.0, 29.97, 30.0]), st.sampled_from([1, 8, 16]),
                     st.sampled_from([4, 8, 16]), st.floats(3.0, 20.0))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(video=_video_strategy(), data=st.data())
def test_round_trip_segment_grid_seconds_in_all_modes(tmp_path_factory, video, data):
    fps, clip, stride, duration = video
    root = tmp_path_factory.mktemp("rt")
    store = make_store(root / "f", {"v": duration}, fps=fps, clip=clip, stride=stride)
    axis = TimeAxis.from_centers(store.read("v").times, fallback_step=TimeAxis.for_snippets(1, clip, stride, fps).step)
    lo, hi = max(axis.start, 0.0), min(axis.end, duration)
    if hi - lo < 0.2:
        return
    s = data.draw(st.floats(lo, hi - 0.1))
    e = data.draw(st.floats(s + 0.05, hi))
    ann = make_annotations(root, [("v", s, e, "x", "val", duration)])
    half = axis.step / 2
    # full sequence: an affine map, exact up to rounding
    full = FullSequenceDataset(store, ann)[0]
    np.testing.assert_allclose(full.to_seconds(full.segments), [[s, e]], atol=1e-4)
    # resizing: exact too, except that the resized cells' span (where targets are clipped)
    # differs from the original cells' span by less than half an original snippet
    resized = ResizedDataset(store, ann, length=data.draw(st.integers(2, 300)))[0]
    np.testing.assert_allclose(resized.to_seconds(resized.segments), [[s, e]], atol=half + 1e-6)
    inner = resized.axis.to_grid(np.array([s, e]))
    if -0.5 <= inner[0] and inner[1] <= resized.length - 0.5:
        np.testing.assert_allclose(resized.to_seconds(resized.segments), [[s, e]], atol=1e-4)
    # windows: each window holds a clipped piece; together they give the segment back
    window = data.draw(st.integers(8, 64))
    overlap = data.draw(st.sampled_from([0.0, 0.25, 0.5, 0.75]))
    wds = WindowDataset(store, ann, window=window, overlap=overlap, min_ioi=0.0)
    pieces = []
    for i in range(len(wds)):
        sample = wds[i]
        assert sample.axis.origin == pytest.approx(axis.to_seconds(sample.offset))
        for seg in sample.to_seconds(sample.segments):
            assert sample.axis.start - 1e-6 <= seg[0] <= seg[1] <= sample.axis.end + 1e-6
            pieces.append(seg)
    assert pieces
    pieces = np.array(pieces)
    assert abs(pieces[:, 0].min() - s) <= half + 1e-6 and abs(pieces[:, 1].max() - e) <= half + 1e-6


@given(seg=st.tuples(st.floats(-50, 50), st.floats(0, 40)), length=st.integers(1, 50),
       min_ioi=st.floats(0, 1))
def test_targets_on_axis_keep_rule(seg, length, min_ioi):
    axis = TimeAxis(0.0, 1.0, length)
    start, size = seg
    end = start + size
    size = end - start  # what the floats really hold
    grid, keep = targets_on_axis(np.array([[start, end]]), axis, min_ioi)
    inter = max(0.0, min(end, length - 0.5) - max(start, -0.5))
    if size == 0:
        expected = -0.5 <= start <= length - 0.5
    else:
        expected = inter > 0 and inter / size >= min_ioi
    assert bool(keep[0]) == expected
    if expected:
        assert -0.5 <= grid[0, 0] <= grid[0, 1] <= length - 0.5


# --------------------------------------------------------------------------- collation
def test_collate_pads_to_a_multiple_of_the_stride(simple):
    store, ann = simple
    ds = FullSequenceDataset(store, ann)
    samples = [ds[0], ds[1]]  # 49 and 19 snippets
    batch = collate(samples, stride=16)
    assert isinstance(batch, Batch) and len(batch) == 2
    assert batch.features.shape == (2, 3, 64)
    assert batch.mask.sum(1).tolist() == [49, 19]
    assert (batch.features[1, :, 19:] == 0).all()
    assert batch.video_ids == ["a", "b"] and batch.offsets.tolist() == [0, 0]
    assert batch.durations.tolist() == [10.0, 4.0]
    assert batch.origins.dtype == torch.float64
    assert [len(s) for s in batch.segments] == [2, 1]
    np.testing.assert_allclose(batch.to_seconds(1, batch.segments[1]), [[0.5, 1.5]], atol=1e-5)
    with pytest.raises(ValueError, match="pad_to=32 is shorter"):
        collate(samples, pad_to=32)
    assert collate(samples, stride=1).features.shape[-1] == 49
    moved = batch.to("cpu")
    assert torch.equal(moved.features, batch.features)


def test_dataloader_with_pad_collate(simple):
    store, ann = simple
    ds = WindowDataset(store, ann, window=16, overlap=0.25)
    batches = list(DataLoader(ds, batch_size=3, collate_fn=PadCollate(stride=4)))
    assert sum(len(b) for b in batches) == len(ds)
    assert all(b.features.shape[-1] % 4 == 0 for b in batches)


def test_predictions_in_seconds_are_clipped_to_the_duration(simple):
    store, ann = simple
    s = FullSequenceDataset(store, ann, "val")[0]
    np.testing.assert_allclose(s.to_seconds(np.array([[-10.0, 500.0]])), [[0.0, 4.0]])


# --------------------------------------------------------------------------- reports
def test_missing_videos_are_reported_both_ways(tmp_path):
    store = make_store(tmp_path / "f", {"a": 5.0, "extra": 5.0})
    ann = make_annotations(tmp_path, [("a", 1, 2, "x", "val", 5), ("gone", 1, 2, "x", "val", 5)])
    with pytest.warns(DatasetWarning, match="1 annotated videos have no features \\(gone\\)"):
        ds = FullSequenceDataset(store, ann, "val")
    assert ds.report.missing_features == ["gone"] and ds.report.unannotated == ["extra"]
    assert ds.video_ids == ["a"]


def test_prefix_mismatch_gives_a_hint(tmp_path):
    store = make_store(tmp_path / "f", {"v_abc": 5.0})
    ann = make_annotations(tmp_path, [("abc", 1, 2, "x", "val", 5)])
    with pytest.raises(InputError, match="video_prefix='v_'"):
        FullSequenceDataset(store, ann, warn=False)
    fixed = ann.with_video_prefix("v_")
    assert FullSequenceDataset(store, fixed)[0].labels.tolist() == [0]


def test_inference_without_annotations_reads_every_video(simple):
    store, _ = simple
    ds = make_dataset("window", store, None, window=32, drop_empty=True)  # nothing to drop without GT
    assert ds.video_ids == ["a", "b"] and ds.classes == [] and len(ds) == 3 + 1
    s = ds[0]
    assert s.segments.shape == (0, 2) and s.labels.shape == (0,) and s.duration == 10.0


def test_wrong_subset_mode_and_provenance_are_errors(simple):
    store, ann = simple
    with pytest.raises(InputError, match="no subset 'testing'"):
        FullSequenceDataset(store, ann, "testing")
    with pytest.raises(ValueError, match="unknown dataset mode"):
        make_dataset("crop", store, ann)
    with pytest.raises(ProvenanceError, match="feature_dim"):
        FullSequenceDataset(store, ann, expect={"feature_dim": 2048})


def test_store_path_is_accepted_and_loading_is_lazy(simple, monkeypatch):
    store, ann = simple
    reads = []
    original = FeatureStore.read
    monkeypatch.setattr(FeatureStore, "read", lambda self, *a, **k: reads.append(a) or original(self, *a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = FullSequenceDataset(str(store.root), ann)
    assert reads == []  # nothing read until an item is asked for
    ds[1]
    assert reads == [("b",)]


def test_datasets_pickle_for_dataloader_workers(simple):
    import pickle

    store, ann = simple
    for ds in (FullSequenceDataset(store, ann), ResizedDataset(store, ann, length=8),
               WindowDataset(store, ann, window=16)):
        clone = pickle.loads(pickle.dumps(ds))
        assert len(clone) == len(ds)
        assert torch.equal(clone[len(ds) - 1].features, ds[len(ds) - 1].features)
    with pytest.raises(ValueError, match="a subset needs annotations"):
        FullSequenceDataset(store, None, "val")


# --------------------------------------------------------------------------- spatial grids
def test_spatial_grids_follow_the_features_in_every_mode(tmp_path):
    # grid[i, y, x, c] = feature[i, c] + 100 * (2y + x): time-aligned, cell-identifiable
    prov = Provenance(backbone="test", streams=("rgb",), feature_dim=2, clip_len=CLIP, stride=STRIDE, fps=FPS,
                      extras={"spatial_grid": {"size": 2}})
    frames = num_sampled_frames(6.0, FPS)
    t = snippet_centers(frames, CLIP, STRIDE, FPS)
    feats = (10 * np.arange(len(t))[:, None] + np.arange(2)[None, :]).astype(np.float32)
    cells = 100 * np.arange(4, dtype=np.float32).reshape(2, 2)
    grid = feats[:, None, None, :] + cells[None, :, :, None]
    with FeatureStore.create(tmp_path / "f", prov) as w:
        w.write(VideoFeatures("a", feats, t, FPS, CLIP, STRIDE, frames, 6.0, spatial_grid=grid))
        w.write(VideoFeatures("b", feats[:7], t[:7], FPS, CLIP, STRIDE, 16, 1.6, spatial_grid=grid[:7]))
    ann = make_annotations(tmp_path, [("a", 1.0, 2.0, "jump", "train", 6.0), ("b", 0.2, 1.0, "jump", "train", 1.6)])

    full = FullSequenceDataset(tmp_path / "f", ann, grid=True)[0]
    assert full.grid.shape == (len(t), 2, 2, 2)
    torch.testing.assert_close(full.grid[:, 1, 0, :], full.features.T + 200)

    resized = ResizedDataset(tmp_path / "f", ann, length=10, grid=True)[0]
    assert resized.grid.shape == (10, 2, 2, 2)
    torch.testing.assert_close(resized.grid[:, 0, 1, :], resized.features.T + 100)  # resized like the features

    windows = WindowDataset(tmp_path / "f", ann, window=8, overlap=0.5, grid=True)
    second = windows[1]
    assert second.offset == 4 and second.grid.shape == (8, 2, 2, 2)
    torch.testing.assert_close(second.grid[:, 1, 1, 0], torch.from_numpy(feats[4:12, 0] + 300))

    batch = collate([FullSequenceDataset(tmp_path / "f", ann, grid=True)[i] for i in range(2)], stride=4)
    assert batch.grid.shape == (2, batch.features.shape[-1], 2, 2, 2)
    assert batch.grid[1, 7:].abs().sum() == 0 and batch.grid[1, :7].abs().sum() > 0   # padding is zero
    assert collate([FullSequenceDataset(tmp_path / "f", ann)[0]]).grid is None         # not asked for


def test_asking_for_grids_from_features_without_them_is_an_input_error(simple, tmp_path):
    store, ann = simple
    with pytest.raises(InputError, match="no spatial grid"):
        FullSequenceDataset(store, ann, "train", grid=True)
