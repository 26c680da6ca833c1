"""Extraction stage II through the runner and the CLI: every backbone family, its
preprocessing recipe, ``--spatial-grid`` / ``--levels`` and their times, ``--list-backbones``."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from tadkit import timeline
from tadkit.cli import cli, main
from tadkit.data.features import FeatureStore
from tadkit.extract import backbones
from tadkit.extract.flow import encode_flow, recode_flow_frames
from tadkit.extract.runner import ExtractOptions, Extractor, merge_level_steps
from tadkit.extract.transforms import get_recipe, rgb_to_tensor
from tadkit.extract.video import plan_snippets

from test_extract_helpers import ArrayReader, make_video, moving_frames, no_onednn  # noqa: F401

TINY = ["--size", "32", "--device", "cpu", "--random-weights", "--no-progress", "--flow-scales", "1",
        "--flow-warps", "1"]
#: family -> (feature dim, clip_len, stride, recipe)
FAMILIES = {
    "i3d": (2048, 16, 4, "i3d_thumos"),
    "tsn": (4096, 16, 16, "tsn_mmaction2"),
    "slowfast_r50": (2304, 32, 16, "slowfast_kinetics"),
    "slowfast_r101": (2304, 32, 16, "slowfast_kinetics"),
    "r2plus1d_34": (512, 32, 32, "r2plus1d_ig65m"),
    "mfe": (1024, 32, 16, "mfe_menet"),
}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


# --------------------------------------------------------------------------- recipes
def test_each_recipe_normalises_rgb_as_its_backbone_expects():
    px = np.array([255, 0, 128], np.uint8).reshape(1, 1, 1, 3)          # one pixel, R G B
    got = {name: rgb_to_tensor(px, get_recipe(name))[:, 0, 0, 0].tolist()
           for name in ("i3d_thumos", "tsn_mmaction2", "slowfast_kinetics", "r2plus1d_ig65m", "mfe_menet")}
    np.testing.assert_allclose(got["i3d_thumos"], [1.0, -1.0, 2 * 128 / 255 - 1], atol=1e-6)
    np.testing.assert_allclose(got["tsn_mmaction2"], [(255 - 123.675) / 58.395, (0 - 116.28) / 57.12,
                                                      (128 - 103.53) / 57.375], rtol=1e-6)
    np.testing.assert_allclose(got["slowfast_kinetics"], [(1 - 0.45) / 0.225, -0.45 / 0.225,
                                                          (128 / 255 - 0.45) / 0.225], rtol=1e-6)
    kinetics = [(1 - 0.43216) / 0.22803, -0.394666 / 0.22145, (128 / 255 - 0.37645) / 0.216989]
    np.testing.assert_allclose(got["r2plus1d_ig65m"], kinetics, rtol=1e-6)
    np.testing.assert_allclose(got["mfe_menet"], kinetics, rtol=1e-6)
    # without a recipe (stage-I callers) the I3D scaling is unchanged, bit for bit
    assert torch.equal(rgb_to_tensor(px), rgb_to_tensor(px, get_recipe("i3d_thumos")))


def test_tsn_flow_is_quantised_to_8_bits_then_centred_on_128():
    f = np.array([-25.0, -20.0, 0.0, 20.0, 0.08], np.float32)
    # q = round((f + 20) * 255 / 40): 0, 0, 128 (127.5 rounds to even), 255, 128 (128.01); then (q - 128) / 128
    np.testing.assert_array_equal(encode_flow(f, 20.0, "uint8_centred"), [-1.0, -1.0, 0.0, 127 / 128, 0.0])
    v = np.arange(256, dtype=np.float32)                                 # precomputed grey values
    np.testing.assert_array_equal(recode_flow_frames(2 * v / 255 - 1, "uint8_centred"), (v - 128) / 128)
    np.testing.assert_array_equal(recode_flow_frames(2 * v / 255 - 1, "uint8"), 2 * v / 255 - 1)


def test_tsn_rgb_reads_only_the_centre_frame_and_flow_five_centred_frames():
    n = 40
    frames = moving_frames(n, 40, 48)
    frames[:, 8:, :, :] = (5 * np.arange(n, dtype=np.uint8))[:, None, None, None]   # brightness = 5 * index
    ex = Extractor(ExtractOptions(backbone="tsn", random_weights=True, size=32, device="cpu", batch_size=2))
    assert ex.recipe.stream_offsets("rgb").tolist() == [8]
    assert ex.recipe.stream_offsets("flow").tolist() == [6, 7, 8, 9, 10]
    reader = ArrayReader(frames)
    plan = plan_snippets(reader.info, 16, 16)                            # starts 0, 16, 32
    batches = list(ex.clip_batches(reader, plan))
    rgb = torch.cat([x["rgb"] for _, x in batches])
    flow = torch.cat([x["flow"] for _, x in batches])
    assert tuple(rgb.shape) == (3, 3, 1, 32, 32) and tuple(flow.shape) == (3, 2, 5, 32, 32)
    centre = np.minimum([8, 24, 40], n - 1)                              # the last snippet is padded
    expected_red = (5 * centre - 123.675) / 58.395
    np.testing.assert_allclose(rgb[:, 0, 0, -1, 16].numpy(), expected_red, rtol=1e-5)
    # decoded: frames 6..11 (flow pairs) of each snippet, never more
    flat = sorted(i for r in reader.requests for i in r)
    assert flat == [*range(6, 12), *range(22, 28), *range(38, 40)]
    # flow values are centred 8-bit codes
    q = flow.numpy() * 128 + 128
    np.testing.assert_allclose(q, np.round(q), atol=1e-4)
    feats = ex.forward(batches[0][1])
    assert feats.shape == (2, 4096) and np.isfinite(feats).all()


# --------------------------------------------------------------------------- levels and times
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 200), clip=st.integers(1, 64), stride=st.integers(1, 32),
       fps=st.floats(1.0, 60.0))
def test_a_level_step_spanning_the_whole_clip_sits_at_the_snippet_centre(n, clip, stride, fps):
    starts = timeline.snippet_starts(n, clip, stride)
    t = timeline.level_step_times(starts, [(clip - 1) / 2], fps)
    np.testing.assert_allclose(t[:, 0], timeline.snippet_centers(n, clip, stride, fps), rtol=1e-12)


def test_level_steps_of_overlapping_clips_are_averaged_and_tail_padding_dropped():
    # two clips starting at frames 0 and 4, steps of stride 4 at positions 1.5 and 5.5, 8-frame video
    values = np.array([[[1.0, 2.0]], [[4.0, 8.0]]], np.float32)          # [S=2, C=1, P=2]
    feats, times = merge_level_steps(values, np.array([0, 4]), np.array([1.5, 5.5]), 10.0, 8)
    # positions 1.5 | 5.5 (clip 0 step 1 and clip 1 step 0: averaged) | 9.5 past the end: dropped
    np.testing.assert_array_equal(feats[:, 0], [1.0, (2.0 + 4.0) / 2])
    np.testing.assert_allclose(times, [0.2, 0.6])
    # the first step of every clip is kept even past the end (each snippet stays represented)
    feats, times = merge_level_steps(values, np.array([0, 7]), np.array([3.5, 11.5]), 10.0, 8)
    np.testing.assert_array_equal(feats[:, 0], [1.0, 4.0])
    np.testing.assert_allclose(times, [0.4, 1.1])                          # (7 + 3.5 + 0.5) / 10


def test_i3d_extra_outputs_come_from_the_same_forward():
    model = backbones.build("i3d_rgb")
    x = torch.randn(2, 3, 16, 32, 32)
    with torch.no_grad():
        out = model.extract_outputs(x, grid=1, levels=True)
        feat = model.extract_features(x)
    assert torch.equal(out["feature"], feat)
    assert {k: tuple(v.shape) for k, v in out["levels"].items()} == {
        "Mixed_3c": (2, 480, 8), "Mixed_4f": (2, 832, 4), "Mixed_5c": (2, 1024, 2)}
    # a 1x1 grid is the mean of the last level over time and space
    torch.testing.assert_close(out["grid"][:, 0, 0], out["levels"]["Mixed_5c"].mean(dim=2), rtol=1e-5, atol=1e-6)
    assert model.level_positions(16)["Mixed_5c"].tolist() == [3.5, 11.5]


# --------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("family", list(FAMILIES))
def test_cli_extracts_every_family_with_grid_and_levels(tmp_path, family):
    dim, clip, stride, recipe = FAMILIES[family]
    n, fps = 20, 25.0
    (tmp_path / "videos").mkdir()
    make_video(tmp_path / "videos" / "a.avi", n=n)
    out = tmp_path / "feats"
    streams = ["--streams", "rgb"] if family == "i3d" else []            # i3d flow is covered in stage I
    res = CliRunner().invoke(cli, ["extract", str(tmp_path / "videos"), "--out", str(out), "--backbone", family,
                                   *streams, *TINY, "--spatial-grid", "2", "--levels"])
    assert res.exit_code == 0, res.output
    store = FeatureStore.open(out)
    prov = store.provenance
    dim = dim // 2 if family == "i3d" else dim
    assert (prov.backbone, prov.feature_dim, prov.clip_len, prov.stride) == (family, dim, clip, stride)
    assert prov.preprocessing["recipe"]["name"] == f"{recipe}@32"
    assert prov.extras["spatial_grid"]["size"] == 2
    v = store.read("a")
    starts = timeline.snippet_starts(n, clip, stride)
    assert v.features.shape == (len(starts), dim) and np.isfinite(v.features).all()
    np.testing.assert_allclose(v.times, timeline.snippet_centers(n, clip, stride, fps))
    assert v.spatial_grid.shape == (len(starts), 2, 2, dim)
    assert sorted(v.levels) == sorted(prov.extras["levels"]["names"])
    for name, (f, t) in v.levels.items():
        assert f.shape[0] == len(t) >= 1 and np.isfinite(f).all()
        assert np.all(np.diff(t) > 0), name                              # one step per position, sorted
        pos = np.asarray(prov.extras["levels"]["frame_positions"][name])  # per clip, from the clip start
        want = np.unique((starts[:, None] + pos[None, :]).ravel())
        want = want[(want <= n - 0.5) | np.isin(want, starts + pos[0])]
        np.testing.assert_allclose(t, (want + 0.5) / fps)
    text = CliRunner().invoke(cli, ["info", str(out)]).output
    first = sorted(v.levels)[0]
    t0, t1 = v.levels[first][1][[0, -1]]
    assert f"levels/{first}=" in text and f"{t0:.3f}-{t1:.3f} s" in text and "spatial_grid=" in text
    ranges = json.loads(CliRunner().invoke(cli, ["info", str(out), "--json"]).output)["time_ranges"]["a"]
    assert ranges["features"] == [v.times[0], v.times[-1]] and ranges[f"levels/{first}"] == [t0, t1]


def test_level_channels_follow_each_family():
    """The level names and sizes each family stores (one tiny run per family would be slow:
    this checks them through the Extractor on in-memory frames)."""
    reader = ArrayReader(moving_frames(32, 40, 48))
    want = {"slowfast_r50": {"rgb/s2_slow": 256, "rgb/s5_fast": 256, "rgb/s5_slow": 2048},
            "r2plus1d_34": {"rgb/layer1": 64, "rgb/layer4": 512},
            "mfe": {"rgb/layer1": 128, "rgb/layer4": 1024}}
    for family, sizes in want.items():
        ex = Extractor(ExtractOptions(backbone=family, random_weights=True, size=32, device="cpu", levels=True))
        plan = plan_snippets(reader.info, ex.clip_len, ex.stride)
        _, inputs = next(iter(ex.clip_batches(reader, plan)))
        out = ex.forward_outputs(inputs)
        for name, c in sizes.items():
            assert out["levels"][name].shape[1] == c, (family, name)
        np.testing.assert_allclose(out["feature"], ex.forward(inputs), rtol=1e-5, atol=1e-6)


def test_tsn_checkpoint_in_its_own_layout_gives_the_seeded_features(tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    make_video(vids / "a.avi", n=20)
    torch.manual_seed(0)                       # the seed --random-weights --seed 0 uses for the first stream
    ckpt = backbones.save_checkpoint(backbones.build("tsn_r50_rgb"), tmp_path / "tsn_rgb.pth")
    assert next(iter(backbones.read_state_dict(ckpt))) == "backbone.conv1.conv.weight"   # mmaction2 layout
    common = ["extract", str(vids), "--backbone", "tsn", "--streams", "rgb", "--size", "32", "--device", "cpu",
              "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "w"), "--weights", f"rgb={ckpt}"]) == 0
    assert main([*common, "--out", str(tmp_path / "r"), "--random-weights"]) == 0
    w, r = FeatureStore.open(tmp_path / "w"), FeatureStore.open(tmp_path / "r")
    assert w.provenance.weights["rgb"]["format"] == "mmaction2" and "bn_eps" not in w.provenance.weights["rgb"]
    np.testing.assert_array_equal(w.read("a").features, r.read("a").features)


def test_tsn_class_scores_are_the_classifier_logits_of_the_pooled_features(tmp_path, capsys):
    vids = tmp_path / "videos"
    vids.mkdir()
    make_video(vids / "a.avi", n=20)
    common = ["extract", str(vids), "--backbone", "tsn", "--streams", "rgb", "--size", "32", "--device", "cpu",
              "--no-progress", "--random-weights"]
    assert main([*common, "--out", str(tmp_path / "feats")]) == 0
    assert main([*common, "--out", str(tmp_path / "scores"), "--class-scores"]) == 0
    feats, scores = FeatureStore.open(tmp_path / "feats"), FeatureStore.open(tmp_path / "scores")
    assert scores.provenance.feature_dim == 400 and feats.provenance.feature_dim == 2048
    assert scores.provenance.extras["class_scores"]["classes"] == {"rgb": 400}
    # the same seeded model: scores = its classifier applied to the stored pooled features
    torch.manual_seed(0)
    model = backbones.build("tsn_r50_rgb").eval()
    with torch.no_grad():
        expected = model.class_scores(torch.from_numpy(feats.read("a").features)).numpy()
    np.testing.assert_allclose(scores.read("a").features, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(scores.read("a").times, feats.read("a").times)
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "scores"), "--class-scores"]) == 0   # a rerun: nothing to do
    assert "0 extracted, 1 already present" in capsys.readouterr().out
    assert main([*common, "--out", str(tmp_path / "scores")]) == 1          # the same store without the flag
    assert "feature_dim: features have 400, expected 2048" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "x"), "--class-scores", "--levels"]) == 1
    assert "does not combine" in capsys.readouterr().err
    assert main(["extract", str(vids), "--out", str(tmp_path / "y"), "--random-weights", "--device", "cpu",
                 "--class-scores"]) == 1                                          # i3d has no classifier scores here
    assert "--class-scores needs a backbone" in capsys.readouterr().err


def test_stores_keep_their_extra_output_settings(tmp_path, capsys):
    vids = tmp_path / "videos"
    vids.mkdir()
    make_video(vids / "a.avi", n=8)
    out = tmp_path / "feats"
    args = ["extract", str(vids), "--out", str(out), "--streams", "rgb", *TINY]
    assert main(args) == 0
    prov = FeatureStore.open(out).provenance
    assert "spatial_grid" not in prov.extras and "levels" not in prov.extras   # i3d defaults unchanged
    assert prov.preprocessing["rgb"] == "2x/255-1"
    # the recipe is recorded exactly as stage I wrote it, so stage-I stores stay resumable
    assert set(prov.preprocessing["recipe"]) == {"name", "resize", "resize_to", "crop", "crop_mode",
                                                 "flow_encoding", "flow_bound", "clip_len", "stride"}
    assert main([*args, "--levels"]) == 1
    err = capsys.readouterr().err
    assert "written without --levels, this run is with --levels" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- the CLI surface
def test_list_backbones_names_recipe_dim_and_checkpoint_formats():
    res = CliRunner().invoke(cli, ["extract", "--list-backbones"])       # no videos or --out needed
    assert res.exit_code == 0, res.output
    text = res.output
    for family, (dim, clip, stride, recipe) in FAMILIES.items():
        assert f"\n{family}\n" in f"\n{text}"
        assert f"default {recipe}: {clip}-frame clips every {stride} frames" in text
    assert "feature dim   4096 (2048 + 2048)" in text and "feature dim   512 (512)" in text
    for fmt in ("piergiaj, hassony2", "mmaction2, torchvision", "pyslowfast, pytorchvideo", "ig65m"):
        assert f"checkpoints   {fmt}" in text
    assert "(x - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]" in text


def test_settings_that_do_not_fit_the_backbone_are_one_line_errors(tmp_path, capsys):
    vids = tmp_path / "videos"
    vids.mkdir()
    make_video(vids / "a.avi", n=4)
    base = [str(vids), "--out", str(tmp_path / "f"), "--random-weights", "--device", "cpu"]
    cases = [
        (["--backbone", "tsn", "--bn-eps", "1e-3"], "--bn-eps applies to i3d only"),
        (["--backbone", "tsn", "--checkpoint-format", "pyslowfast"], "checkpoint format 'pyslowfast' is not one of"),
        (["--backbone", "tsn", "--recipe", "i3d_thumos"], "recipe 'i3d_thumos' does not fit backbone tsn"),
        (["--backbone", "slowfast_r50", "--clip-len", "30"], "slowfast_r50 needs --clip-len a multiple of 4"),
        (["--backbone", "tsn", "--clip-len", "4"], "the flow stream reads 5 frames per snippet"),
        (["--spatial-grid", "0"], "--spatial-grid must be at least 1"),
    ]
    for args, message in cases:
        assert main(["extract", *base, *args]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
