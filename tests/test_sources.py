"""Feature sources: levels on the snippet axis, streams, channels, several stores, normalisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tadkit.data.datasets import collate, make_dataset
from tadkit.data.features import FeatureStore, Provenance, VideoFeatures
from tadkit.data.sources import FeatureSource, Normalization, resample_at, stream_channels
from tadkit.errors import ConfigError, InputError, ProvenanceError
from tadkit.timeline import num_sampled_frames, snippet_centers

FPS, CLIP, STRIDE = 10.0, 4, 2   # snippet i centred on 0.2 + 0.2 i s


def level_times(n_snippets: int, density: float) -> np.ndarray:
    """Steps at ``density`` per snippet over the snippets' span (as backbone levels are)."""
    n = int(np.ceil(n_snippets * density))
    return 0.2 - 0.1 + (np.arange(n) + 0.5) * 0.2 / density


def make_store(root, videos: dict[str, float], streams=("rgb", "flow"), dim: int = 2, stride: int = STRIDE,
               levels: dict[str, float] | None = None, scale: float = 1.0) -> FeatureStore:
    """Stream ``k`` (1-based) holds ``k * 100 + time`` in every channel; level steps hold ``1000 k + 100 time``."""
    prov = Provenance(backbone="test", streams=tuple(streams), feature_dim=dim * len(streams), clip_len=CLIP,
                      stride=stride, fps=FPS)
    with FeatureStore.create(root, prov) as w:
        for vid, duration in videos.items():
            frames = num_sampled_frames(duration, FPS)
            t = snippet_centers(frames, CLIP, stride, FPS)
            feats = np.concatenate([np.repeat((k * 100 + t)[:, None], dim, 1) for k in range(1, len(streams) + 1)],
                                   axis=1) * scale
            lv = {}
            for name, d in (levels or {}).items():
                lt = level_times(len(t), d)
                for k, s in enumerate(streams, 1):
                    lv[f"{s}/{name}"] = (np.repeat((1000 * k + 100 * lt)[:, None], 3, 1), lt)
            w.write(VideoFeatures(vid, feats.astype(np.float32), t, FPS, CLIP, stride, frames, duration, levels=lv))
    return FeatureStore.open(root)


@pytest.fixture
def leveled(tmp_path):
    return make_store(tmp_path / "f", {"a": 10.0, "b": 3.0}, levels={"fine": 2.0, "coarse": 0.5})


def _check_level_alignment(sample, k: int = 1):
    """Every kept level step sits, in grid units, exactly where its stored time is."""
    for lv in sample.levels:
        assert lv.features.shape[1] == lv.positions.shape[0] == lv.mask.shape[0]
        seconds = sample.axis.to_seconds(lv.positions.double().numpy())
        stored = (lv.features[0].double().numpy() - 1000 * k) / 100
        np.testing.assert_allclose(seconds, stored, atol=1e-4)
        assert (lv.positions >= -0.5).all() and (lv.positions < sample.length - 0.5 + 1e-6).all()


def test_window_levels_keep_their_steps_aligned_with_snippet_times(leveled):
    src = FeatureSource([leveled], streams=["rgb"], levels=["fine", "coarse"])
    ds = make_dataset("window", src, None, window=10, overlap=0.5, levels=True)
    assert len(ds) > 4
    for i in range(len(ds)):
        s = ds[i]
        _check_level_alignment(s)
        fine, coarse = s.levels
        # a window of 10 snippet cells holds 20 fine steps and 5 coarse steps
        assert fine.features.shape[1] == 2 * s.length and coarse.features.shape[1] == int(np.ceil(s.length / 2))
        assert torch.allclose(fine.positions[:2], torch.tensor([-0.25, 0.25]))
    # the snippet features of the selected stream are untouched
    assert torch.allclose(ds[1].features[0], torch.tensor(100 + 0.2 + 0.2 * (5 + np.arange(10)), dtype=torch.float32))


def test_resized_and_full_levels_keep_alignment(leveled):
    src = FeatureSource([leveled], streams=["rgb"], levels=["fine", "coarse"])
    resized = make_dataset("resize", src, None, length=16, levels=True)[0]  # video a: 49 snippets -> 16
    fine, coarse = resized.levels
    assert fine.features.shape[1] == round(98 * 16 / 49) and coarse.features.shape[1] == round(25 * 16 / 49)
    _check_level_alignment(resized)
    full = make_dataset("full", src, None, levels=True)[1]  # video b: whole, nothing dropped
    assert full.levels[0].features.shape[1] == 2 * full.length
    _check_level_alignment(full)


def test_collate_pads_levels_with_masks_and_continued_positions(leveled):
    src = FeatureSource([leveled], streams=["rgb"], levels=["fine"])
    ds = make_dataset("window", src, None, window=32, overlap=0.5, levels=True)
    short = [ds[i] for i in range(len(ds)) if ds[i].video_id == "b"][0]  # 14 snippets < one window
    batch = collate([ds[0], short], stride=4, pad_to=32)
    lv = batch.levels[0]
    assert lv.features.shape == (2, 3, 64) and lv.mask[0].all() and lv.mask[1].sum() == 28
    np.testing.assert_allclose(lv.positions[1, 27:30].numpy(), [13.25, 13.75, 14.25])


def test_streams_channels_and_level_streams(leveled):
    both = FeatureSource([leveled], levels=["fine"])
    v = both.read("a", levels=True)
    assert v.features.shape[1] == 4 and v.levels["fine"][0].shape[1] == 6  # rgb/fine ‖ flow/fine
    flow = FeatureSource([leveled], streams=["flow"], levels=["fine", "rgb/coarse"])
    v = flow.read("a", levels=True)
    assert flow.feature_dim == 2 and np.all(v.features >= 200)
    assert np.all(v.levels["fine"][0] >= 2000) and np.all(v.levels["rgb/coarse"][0] < 2000)
    cols = FeatureSource([leveled], channels=[[1, 3]])
    np.testing.assert_allclose(cols.read("a").features[0], [100.2, 200.2], rtol=1e-6)
    assert stream_channels(leveled.provenance) == {"rgb": slice(0, 2), "flow": slice(2, 4)}
    with pytest.raises(ConfigError, match="no stream 'depth'.*rgb, flow"):
        FeatureSource([leveled], streams=["depth"])
    with pytest.raises(ConfigError, match=r"range \[3, 9\]"):
        FeatureSource([leveled], channels=[[3, 9]])
    with pytest.raises(InputError, match="no stored level 'mid'.*rgb/fine"):
        FeatureSource([leveled], levels=["mid"]).read("a", levels=True)


def test_several_stores_are_concatenated_on_the_first_stores_snippets(tmp_path):
    a = make_store(tmp_path / "a", {"v": 6.0, "w": 2.0}, streams=("rgb",))
    same = make_store(tmp_path / "same", {"v": 6.0}, streams=("flow",), dim=3)
    coarse = make_store(tmp_path / "coarse", {"v": 6.0}, streams=("slow",), stride=4)
    src = FeatureSource([a, same, coarse])
    assert src.video_ids() == ["v"] and src.feature_dim == 2 + 3 + 2
    v = src.read("v", rows=slice(3, 7))
    t = v.times
    np.testing.assert_allclose(v.features[:, 2], 100 + t, rtol=1e-6)   # same snippets: same rows
    np.testing.assert_allclose(v.features[:, 5], 100 + t, rtol=1e-6)   # other stride: interpolated in time
    desc = src.describe()
    assert [s["provenance"]["stride"] for s in desc["stores"]] == [2, 2, 4]


def test_normalization_is_fitted_saved_and_applied(tmp_path):
    store = make_store(tmp_path / "f", {"a": 10.0, "b": 3.0}, levels={"fine": 2.0}, scale=1e-6)
    src = FeatureSource([store], levels=["fine"])
    norm = Normalization.fit(src, ["a"])
    norm.save(tmp_path / "n.npz")
    again = Normalization.load(tmp_path / "n.npz")
    np.testing.assert_array_equal(again.mean, norm.mean)
    assert set(again.levels) == {"fine"} and again.snippets == 49
    src.normalization = again
    v = src.read("a", levels=True)
    np.testing.assert_allclose(v.features.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(v.features.std(0), 1, atol=1e-4)   # 1e-6-scale features are standardised
    np.testing.assert_allclose(v.levels["fine"][0].std(0), 1, atol=1e-4)
    assert src.without_normalization().read("a").features.max() < 1e-3


def test_resample_at_is_linear_and_clamped():
    t = np.array([0.0, 1.0, 3.0])
    x = np.array([[0.0], [10.0], [30.0]])
    np.testing.assert_allclose(resample_at(t, x, np.array([-1, 0.5, 2.0, 5.0])), [[0], [5], [20], [30]])


def test_window_stride_overrides_overlap(leveled):
    ds = make_dataset("window", leveled, None, window=10, overlap=0.5, stride=3)
    assert ds.hop == 3 and [o for v, o, _ in ds.windows if v == "a"][:4] == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="stride"):
        make_dataset("window", leveled, None, window=10, stride=0)
    with pytest.raises(ProvenanceError):
        FeatureSource([leveled], streams=["rgb"]).store.check({"feature_dim": 3})


def test_synthetic_two_stream_store_with_levels(tmp_path):
    import json

    from click.testing import CliRunner

    from tadkit.cli import cli

    ann = tmp_path / "gt.json"
    ann.write_text(json.dumps({"version": "t", "database": {"v": {
        "subset": "validation", "duration": 20.0, "fps": 10.0,
        "annotations": [{"label": "A", "segment": [3.0, 8.0]}, {"label": "B", "segment": [12.0, 15.0]}]}}}))
    res = CliRunner().invoke(cli, ["data", "synth-features", "--annotations", str(ann), "--out", str(tmp_path / "f"),
                                   "--feature-dim", "6", "--clip-len", "4", "--stride", "4",
                                   "--streams", "rgb,flow", "--levels", "2,1,0.5"])
    assert res.exit_code == 0, res.output
    store = FeatureStore.open(tmp_path / "f")
    prov = store.provenance
    assert prov.streams == ("rgb", "flow") and prov.feature_dim == 12
    assert stream_channels(prov) == {"rgb": slice(0, 6), "flow": slice(6, 12)}
    v = store.read("v")
    step = v.times[1] - v.times[0]
    assert sorted(v.levels) == ["flow/x0.5", "flow/x1", "flow/x2", "rgb/x0.5", "rgb/x1", "rgb/x2"]
    np.testing.assert_allclose(v.levels["rgb/x1"][1], v.times)                    # density 1: snippet centres
    np.testing.assert_allclose(v.levels["rgb/x2"][1][:2], v.times[0] + np.array([-0.25, 0.25]) * step)
    np.testing.assert_allclose(v.levels["rgb/x0.5"][1][0], v.times[0] + 0.5 * step)
    assert v.levels["flow/x2"][0].shape == (2 * v.num_snippets, 6)
    rgb, flow = v.features[:, :6], v.features[:, 6:]
    assert not np.allclose(rgb, flow)  # own prototypes and noise
    # the single-stream default is unchanged by these options
    from tadkit.data.annotations import load_annotations
    from tadkit.data.synthetic import SynthFeatureConfig, synth_video_features

    a = load_annotations(ann)
    plain = synth_video_features(a, "v", SynthFeatureConfig(feature_dim=6, clip_len=4, stride=4))
    again = synth_video_features(a, "v", SynthFeatureConfig(feature_dim=6, clip_len=4, stride=4, streams=()))
    np.testing.assert_array_equal(plain.features, again.features)
    assert plain.levels == {}


def test_a_snippet_with_nan_does_not_poison_the_normalization(tmp_path):
    store = make_store(tmp_path / "f", {"a": 10.0, "b": 3.0})
    clean = Normalization.fit(FeatureSource([store]), ["a", "b"])
    prov = store.provenance
    with FeatureStore.create(tmp_path / "g", prov) as w:
        for vid in ("a", "b"):
            v = store.read(vid)
            if vid == "a":   # one more snippet, wholly or partly non-finite: left out of the statistics
                feats = np.concatenate([v.features[:1] * np.float32(np.nan), v.features])
                feats[0, 1] = 1.0
                times = np.concatenate([[v.times[0] - 0.2], v.times])
                v = VideoFeatures(vid, feats, times, v.fps, v.clip_len, v.stride, v.num_frames, v.duration)
            w.write(v)
    with pytest.warns(UserWarning, match="NaN"):
        norm = Normalization.fit(FeatureSource([FeatureStore.open(tmp_path / "g")]), ["a", "b"])
    assert np.isfinite(norm.mean).all() and np.isfinite(norm.std).all()
    np.testing.assert_allclose(norm.mean, clean.mean)
    np.testing.assert_allclose(norm.std, clean.std)
    assert norm.snippets == clean.snippets
