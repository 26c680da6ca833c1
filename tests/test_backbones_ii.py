"""Extraction stage II backbones: TSN R50, SlowFast R50/R101, R(2+1)D-34, MENet MFE.

Key layouts are compared line by line with the reference dumps in ``tests/data/backbone_keys``; forward
passes are checked against small functional oracles written here from the spec
(they read the *other* layout's key names, so they also check the renaming).
All tensors are tiny (32x32 or 64x64 frames, batch 1-2) to keep CPU time low.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tadkit.errors import ConfigError, InputError
from tadkit.extract import backbones as bb
from tadkit.extract.backbones import mfe as mfe_mod
from tadkit.extract.backbones import r2plus1d as r21d
from tadkit.extract.backbones import slowfast as sf
from tadkit.extract.backbones import tsn as tsn_mod

LAYOUT_CASES = [
    ("tsn_r50_rgb", {"num_classes": 200}, "mmaction2", "tsn_r50_rgb_mmaction2"),
    ("tsn_r50_flow", {"num_classes": 200}, "mmaction2", "tsn_r50_flow_mmaction2"),
    ("r2plus1d_34", {}, "ig65m", "r2plus1d_34"),
    ("mfe", {}, "ig65m", "r2plus1d_34"),
    ("slowfast_r50", {}, "pyslowfast", "slowfast_r50_pyslowfast"),
    ("slowfast_r50", {}, "pytorchvideo", "slowfast_r50_ptv"),
    ("slowfast_r101", {}, "pyslowfast", "slowfast_r101_pyslowfast"),
    ("slowfast_r101", {}, "pytorchvideo", "slowfast_r101_ptv"),
]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics/affine parameters (so eps and
    BN placement matter), and the model eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 0.05 + 0.002)
                m.weight.copy_(torch.rand(c, generator=g) * 0.1 + 0.1)
                m.bias.copy_(torch.rand(c, generator=g) * 0.1 - 0.05)
    return model.eval()


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> bool:
    """max |a - b| <= rel * max |b| (the spec's parity criterion)."""
    return a.shape == b.shape and float((a - b).abs().max()) <= rel * float(b.abs().max())


# --------------------------------------------------------------------------- key layouts
@pytest.mark.parametrize("name,kw,fmt,keyfile", LAYOUT_CASES)
def test_state_dict_layout_matches_the_reference_key_file_line_by_line(name, kw, fmt, keyfile, backbone_keys):
    model = bb.build(name, **kw)
    got = [f"{k} {list(v.shape)}" for k, v in model.state_dict_as(fmt).items()]
    want = backbone_keys(keyfile)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"line {i + 1}"


@pytest.mark.parametrize("name,fmt,wrapper", [
    ("tsn_r50_rgb", "mmaction2", "state_dict"), ("tsn_r50_rgb", "torchvision", None),
    ("tsn_r50_flow", "mmaction2", None), ("r2plus1d_34", "ig65m", None),
    ("slowfast_r50", "pyslowfast", None), ("slowfast_r50", "pytorchvideo", "model_state"),
])
def test_save_then_load_in_each_layout_gives_identical_outputs(tmp_path, name, fmt, wrapper):
    src = randomised(bb.build(name), seed=1)
    sd = src.state_dict_as(fmt)
    dst = bb.build(name)
    if wrapper:                                                 # through a file, as users have them
        path = tmp_path / f"{name}_{fmt}.pth"
        torch.save({wrapper: sd, "meta": {"epoch": 3}}, path)
        assert bb.load_checkpoint(dst, path) == fmt             # layout auto-detected
    else:
        assert dst.load_checkpoint_state(sd) == fmt
    loaded = dst.state_dict()
    for k, v in src.state_dict().items():
        assert torch.equal(loaded[k], v), k
    x = _input(name, seed=2)
    with torch.no_grad():
        assert torch.equal(dst.extract_features(x), src.extract_features(x))
        assert torch.equal(dst.classify(x), src.classify(x))


def test_slowfast_r101_round_trips_through_both_layouts_and_runs():
    a = randomised(bb.build("slowfast_r101"), seed=3)
    b = bb.build("slowfast_r101")
    ptv = a.state_dict_as("pytorchvideo")
    assert b.load_checkpoint_state(ptv, source="r101.pyth") == "pytorchvideo"
    loaded = b.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in a.state_dict().items())
    assert sf.convert_state_dict(ptv, "pytorchvideo", "pyslowfast").keys() == a.state_dict().keys()
    with torch.no_grad():
        f = b.extract_features(torch.randn(1, 3, 4, 32, 32))
    assert f.shape == (1, 2304) and torch.isfinite(f).all()


def test_checkpoints_without_num_batches_tracked_load():
    src = randomised(bb.build("r2plus1d_34"), seed=4)
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    dst = bb.build("r2plus1d_34")
    dst.load_checkpoint_state(sd)
    x = torch.randn(1, 3, 4, 16, 16)
    with torch.no_grad():
        assert torch.equal(dst.extract_features(x), src.extract_features(x))


# --------------------------------------------------------------------------- load errors
def test_missing_and_unexpected_keys_are_listed_with_the_file_name():
    sd = bb.build("r2plus1d_34").state_dict()
    sd.pop("layer3.2.conv1.0.0.weight")
    sd["layer9.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(InputError) as err:
        bb.build("r2plus1d_34").load_checkpoint_state(sd, source="bad.pth")
    msg = str(err.value)
    assert msg.startswith("bad.pth: ") and "1 missing keys (layer3.2.conv1.0.0.weight)" in msg
    assert "1 unexpected keys (layer9.0.extra.weight)" in msg


def test_unrecognised_layout_asks_for_fmt():
    with pytest.raises(InputError, match=r"pass fmt= one of: pyslowfast, pytorchvideo"):
        bb.build("slowfast_r50").load_checkpoint_state({"encoder.weight": torch.zeros(2)}, source="x.pyth")
    with pytest.raises(ConfigError, match="unknown TSN checkpoint format 'caffe'"):
        bb.build("tsn_r50_rgb").load_checkpoint_state({}, fmt="caffe")


def test_rgb_weights_into_the_flow_stream_are_named_as_swapped():
    rgb = bb.build("tsn_r50_rgb").state_dict_as("mmaction2")
    with pytest.raises(InputError, match="rgb and flow weights swapped"):
        bb.build("tsn_r50_flow").load_checkpoint_state(rgb, source="tsn_rgb.pth")


def test_r101_checkpoint_into_r50_says_which_model_to_build():
    sd = bb.build("slowfast_r101").state_dict()
    with pytest.raises(InputError, match="build slowfast_r101"):
        bb.build("slowfast_r50").load_checkpoint_state(sd, source="SLOWFAST_8x8_R101.pyth")


def test_torchvision_midplane_rule_checkpoint_is_rejected_with_a_reason():
    sd = bb.build("r2plus1d_34").state_dict()
    sd["layer2.0.conv2.0.0.weight"] = torch.zeros(230, 128, 1, 3, 3)
    with pytest.raises(InputError, match="mid-plane width 230, not the IG-65M 288"):
        bb.build("r2plus1d_34").load_checkpoint_state(sd, source="r21d.pth")


def test_classifier_is_sized_from_the_checkpoint_or_dropped(tmp_path):
    src = randomised(bb.build("r2plus1d_34", num_classes=487), seed=5)
    dst = bb.build("r2plus1d_34")
    dst.load_checkpoint_state(src.state_dict())
    assert dst.num_classes == 487 and dst.fc.weight.shape == (487, 512)
    trunk = {k: v for k, v in src.state_dict().items() if not k.startswith("fc.")}
    dst.load_checkpoint_state(trunk)
    x = torch.randn(1, 3, 4, 16, 16)
    with torch.no_grad():
        assert torch.equal(dst.extract_features(x), src.extract_features(x))
    with pytest.raises(ConfigError, match="no classifier"):
        dst.classify(x)


def test_epic_two_head_slowfast_loads_with_classifier_drop():
    sd = bb.build("slowfast_r50").state_dict()
    sd.pop("head.projection.weight"), sd.pop("head.projection.bias")
    sd["head.projection_verb.weight"] = torch.zeros(97, 2304)
    sd["head.projection_noun.weight"] = torch.zeros(300, 2304)
    model = bb.build("slowfast_r50")
    with pytest.raises(InputError, match="classifier='drop'"):
        model.load_checkpoint_state(sd, source="SlowFast.pyth")
    assert model.load_checkpoint_state(sd, classifier="drop") == "pyslowfast"
    assert model.num_classes == 0


# --------------------------------------------------------------------------- TSN
def test_tsn_feature_equals_a_functional_resnet50_on_torchvision_keys():
    model = randomised(bb.build("tsn_r50_rgb", num_classes=200), seed=6)
    tv = model.state_dict_as("torchvision")
    assert "fc.weight" in tv and "layer1.0.downsample.1.running_var" in tv and "bn1.weight" in tv
    assert list(tsn_mod.convert_state_dict(tv, "torchvision", "mmaction2")) == list(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feat = model.extract_features(x)
        assert close(feat, _resnet50_oracle(tv, x))
        assert close(model.class_scores(feat), F.linear(feat, tv["fc.weight"], tv["fc.bias"]))
    assert feat.shape == (2, 2048)


def test_tsn_flow_clip_is_stacked_x0_y0_to_x4_y4():
    model = randomised(bb.build("tsn_r50_flow"), seed=7)
    clip = torch.randn(1, 2, 5, 32, 32)                    # [N, (x, y), 5 steps, H, W]
    stacked = torch.stack([clip[:, c, t] for t in range(5) for c in range(2)], dim=1)
    with torch.no_grad():
        assert torch.equal(model.extract_features(clip), model.extract_features(stacked))
    with pytest.raises(ValueError, match=r"\[N, 2, 5, H, W\]"):
        model.extract_features(torch.randn(1, 2, 4, 32, 32))
    with pytest.raises(ValueError, match=r"\[N, 10, H, W\]"):
        model.extract_features(torch.randn(1, 3, 32, 32))


def test_tsn_outputs_grid_and_levels():
    model = randomised(bb.build("tsn_r50_rgb"), seed=8)
    with torch.no_grad():
        out = model.extract_outputs(torch.randn(1, 3, 1, 64, 64), grid=2, levels=True)
    assert out["grid"].shape == (1, 2, 2, 2048)            # layer4 is 2x2 at 64x64
    assert close(out["grid"].mean(dim=(1, 2)), out["feature"])
    assert {k: tuple(v.shape) for k, v in out["levels"].items()} == {
        "layer1": (1, 256, 1), "layer2": (1, 512, 1), "layer3": (1, 1024, 1), "layer4": (1, 2048, 1)}
    assert torch.equal(out["levels"]["layer4"][:, :, 0], out["feature"])
    assert model.level_positions(5)["layer2"].tolist() == [2.0]


def test_tsn_bn_eps_is_pytorch_default():
    assert {m.eps for m in bb.build("tsn_r50_rgb").modules() if isinstance(m, nn.BatchNorm2d)} == {1e-5}


# --------------------------------------------------------------------------- R(2+1)D-34
def test_midplanes_follow_the_spec_formula_and_ig65m_override():
    assert [r21d.midplanes(i, o) for i, o in [(64, 64), (64, 128), (128, 128), (128, 256),
                                             (256, 256), (256, 512), (512, 512)]] == \
        [144, 230, 288, 460, 576, 921, 1152]
    model = bb.build("r2plus1d_34")
    for layer, (m1, m2) in {"layer2": (230, 288), "layer3": (460, 576), "layer4": (921, 1152)}.items():
        block = getattr(model, layer)[0]
        assert block.conv1[0][0].out_channels == m1 and block.conv2[0][0].out_channels == m2
        assert getattr(model, layer)[1].conv1[0][0].out_channels == m2
    assert {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm3d)} == {1e-3}


def test_r2plus1d_feature_equals_a_functional_oracle_with_bn_eps_1e3():
    model = randomised(bb.build("r2plus1d_34"), seed=9)
    x = torch.randn(1, 3, 4, 16, 16)
    with torch.no_grad():
        feat = model.extract_features(x)
        sd = model.state_dict_as("ig65m")
        assert close(feat, _r2plus1d_oracle(sd, x, eps=1e-3))
        assert not close(feat, _r2plus1d_oracle(sd, x, eps=1e-5), rel=1e-3)   # eps matters here
    assert feat.shape == (1, 512)


def test_r2plus1d_levels_grid_and_positions():
    model = randomised(bb.build("r2plus1d_34"), seed=10)
    with torch.no_grad():
        out = model.extract_outputs(torch.randn(1, 3, 8, 32, 32), grid=2, levels=True)
    assert {k: tuple(v.shape) for k, v in out["levels"].items()} == {
        "layer1": (1, 64, 8), "layer2": (1, 128, 4), "layer3": (1, 256, 2), "layer4": (1, 512, 1)}
    assert out["grid"].shape == (1, 2, 2, 512) and close(out["grid"].mean(dim=(1, 2)), out["feature"])
    pos = model.level_positions(8)
    assert pos["layer1"].tolist() == list(range(8)) and pos["layer2"].tolist() == [0.5, 2.5, 4.5, 6.5]
    assert pos["layer4"].tolist() == [3.5]                     # the clip centre
    assert [len(v) for v in model.level_positions(5).values()] == [5, 3, 2, 1]


# --------------------------------------------------------------------------- SlowFast
def test_slow_indices_are_linspace_truncated_not_every_fourth():
    assert sf.slow_indices(32).tolist() == [0, 4, 8, 13, 17, 22, 26, 31]
    assert sf.slow_indices(32, alpha=8).tolist() == [0, 10, 20, 31]
    for t in range(4, 80, 4):
        assert sf.slow_indices(t).tolist() == np.linspace(0, t - 1, t // 4).astype(int).tolist()


def test_slow_pathway_sees_exactly_the_slow_frames():
    model = randomised(bb.build("slowfast_r50"), seed=11)
    seen = {}

    def remember(name):
        def hook(module, inputs, output):
            seen.setdefault(name, inputs[0])
        return hook

    model.s1.pathway0_stem.register_forward_hook(remember("slow"))
    model.s1.pathway1_stem.register_forward_hook(remember("fast"))
    x = torch.randn(1, 3, 32, 16, 16)
    with torch.no_grad():
        feat = model.extract_features(x)
        pair = model.extract_features([x[:, :, [0, 4, 8, 13, 17, 22, 26, 31]], x])
    assert torch.equal(seen["slow"], x[:, :, [0, 4, 8, 13, 17, 22, 26, 31]]) and torch.equal(seen["fast"], x)
    assert torch.equal(feat, pair)
    with pytest.raises(ValueError, match="divisible by alpha=4"):
        model.extract_features(torch.randn(1, 3, 30, 32, 32))


def test_slowfast_feature_equals_a_functional_oracle_on_pytorchvideo_keys():
    model = randomised(bb.build("slowfast_r50"), seed=12)
    x = torch.randn(1, 3, 16, 32, 32)
    with torch.no_grad():
        feat = model.extract_features(x)
        assert close(feat, _slowfast_oracle(model.state_dict_as("pytorchvideo"), x))
    assert feat.shape == (1, 2304)


def test_slowfast_feature_is_slow_mean_then_fast_mean_and_levels_line_up():
    model = randomised(bb.build("slowfast_r50"), seed=13)
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        maps = model.stages(x)
        out = model.extract_outputs(x, grid=2, levels=True)
    assert maps["s5_slow"].shape == (1, 2048, 2, 2, 2) and maps["s5_fast"].shape == (1, 256, 8, 2, 2)
    assert torch.equal(out["feature"][:, :2048], maps["s5_slow"].mean(dim=(2, 3, 4)))
    assert torch.equal(out["feature"][:, 2048:], maps["s5_fast"].mean(dim=(2, 3, 4)))
    assert out["grid"].shape == (1, 2, 2, 2304) and close(out["grid"].mean(dim=(1, 2)), out["feature"])
    pos = model.level_positions(8)
    for name, lvl in out["levels"].items():
        assert lvl.shape[1] == sf.LEVELS[name] and lvl.shape[2] == len(pos[name])
    assert pos["s3_slow"].tolist() == [0.0, 7.0] and pos["s3_fast"].tolist() == list(range(8))


# --------------------------------------------------------------------------- MFE
def test_mfe_is_movement_then_total_with_shared_weights():
    mfe = randomised(bb.build("mfe"), seed=14)
    plain = bb.build("r2plus1d_34")
    plain.load_checkpoint_state(mfe.state_dict())
    x = torch.randn(2, 3, 8, 16, 16)
    static = x[:, :, 4:5].expand(-1, -1, 8, -1, -1)        # middle frame T // 2 = 4, repeated
    with torch.no_grad():
        total, still = plain.extract_features(x), plain.extract_features(static)
        out = mfe.extract_features(x)
    assert out.shape == (2, 1024)
    assert close(out[:, 512:], total) and close(out[:, :512], total - still, rel=1e-4)


def test_mfe_of_a_static_clip_has_zero_movement():
    mfe = randomised(bb.build("mfe", static_path="naive"), seed=15)
    clip = torch.randn(1, 3, 1, 16, 16).expand(-1, -1, 8, -1, -1)
    with torch.no_grad():
        out = mfe.extract_features(clip)
        assert torch.equal(out[:, :512], torch.zeros(1, 512))
        mfe.static_path = "runs"
        out = mfe.extract_features(clip)
    assert float(out[:, :512].abs().max()) <= 1e-5 * float(out[:, 512:].abs().max())


@pytest.mark.parametrize("frames,middle", [(8, None), (5, None), (1, None), (8, 0), (8, -1)])
def test_mfe_static_runs_path_equals_the_naive_path(frames, middle):
    mfe = randomised(bb.build("mfe", middle_index=middle), seed=16)
    x = torch.randn(1, 3, frames, 16, 16)
    with torch.no_grad():
        fast = mfe.extract_outputs(x, grid=2, levels=True)
        mfe.static_path = "naive"
        slow = mfe.extract_outputs(x, grid=2, levels=True)
    assert close(fast["feature"], slow["feature"]) and close(fast["grid"], slow["grid"])
    for k in slow["levels"]:
        assert close(fast["levels"][k], slow["levels"][k]), k


def test_mfe_static_path_does_a_third_less_work_at_32_frames():
    mfe = bb.build("mfe")
    frame = torch.randn(1, 3, 8, 8)

    def flops(path):
        mfe.static_path = path
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            mfe.static_outputs(frame, 32)
        return fc.get_total_flops()

    assert flops("runs") < 0.7 * flops("naive")


def test_mfe_middle_index_outside_the_clip_is_an_error():
    with pytest.raises(ValueError, match="middle_index 9 is outside a 8-frame clip"):
        bb.build("mfe", middle_index=9).extract_features(torch.randn(1, 3, 8, 16, 16))


@settings(max_examples=40, deadline=None)
@given(frames=st.integers(1, 12), kt=st.sampled_from([1, 3, 5]), stride=st.integers(1, 3),
       pad=st.integers(0, 2), pattern=st.lists(st.integers(0, 2), min_size=12, max_size=12))
def test_temporal_runs_conv_and_add_match_the_dense_tensor(frames, kt, stride, pad, pattern):
    assume(frames + 2 * pad >= kt)
    torch.manual_seed(0)
    index = torch.tensor(pattern[:frames])
    used = int(index.max()) + 1
    runs = mfe_mod.TemporalRuns(torch.randn(1, 2, used, 3, 3), index)
    conv = nn.Conv3d(2, 3, (kt, 3, 3), stride=(stride, 1, 1), padding=(pad, 1, 1), bias=True)
    dense = runs.expand()
    with torch.no_grad():
        out = runs.conv3d(conv)
        assert close(out.expand(), conv(dense))
        other = mfe_mod.TemporalRuns(torch.randn(1, 2, 1, 3, 3), torch.zeros(frames, dtype=torch.long))
        assert torch.equal(runs.add(other).expand(), dense + other.expand())
        assert close(runs.mean_thw(), dense.mean(dim=(2, 3, 4)))


# --------------------------------------------------------------------------- registry
def test_every_stage_two_backbone_is_registered_and_built_in_eval_mode():
    for name in ("tsn_r50_rgb", "tsn_r50_flow", "slowfast_r50", "slowfast_r101", "r2plus1d_34", "mfe"):
        assert name in bb.BACKBONES
    assert not bb.build("tsn_r50_flow").training
    with pytest.raises(ConfigError, match="unknown backbone 'slowfast_r152'"):
        bb.build("slowfast_r152")


def test_a_bad_checkpoint_file_is_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "bad.pyth"
    torch.save({"model_state": {"x.weight": torch.zeros(1)}}, bad)
    with pytest.raises(InputError) as err:
        bb.load_checkpoint(bb.build("slowfast_r50"), bad)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{bad}: ")


# --------------------------------------------------------------------------- helpers / oracles
def _input(name: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = {"tsn_r50_rgb": (1, 3, 32, 32), "tsn_r50_flow": (1, 10, 32, 32),
             "r2plus1d_34": (1, 3, 4, 16, 16)}.get(name, (1, 3, 8, 32, 32))
    return torch.randn(*shape, generator=g)


def _bn(t, sd, p, eps):
    return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                        sd[p + ".bias"], False, 0.0, eps)


def _resnet50_oracle(sd, x):
    """ResNet-50 v1.5 on torchvision key names -> global average of layer4."""
    x = F.relu(_bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), sd, "bn1", 1e-5))
    x = F.max_pool2d(x, 3, 2, 1)
    for layer, blocks in enumerate((3, 4, 6, 3), start=1):
        for b in range(blocks):
            p, s = f"layer{layer}.{b}", (2 if b == 0 and layer > 1 else 1)
            y = F.relu(_bn(F.conv2d(x, sd[p + ".conv1.weight"]), sd, p + ".bn1", 1e-5))
            y = F.relu(_bn(F.conv2d(y, sd[p + ".conv2.weight"], stride=s, padding=1), sd, p + ".bn2", 1e-5))
            y = _bn(F.conv2d(y, sd[p + ".conv3.weight"]), sd, p + ".bn3", 1e-5)
            if b == 0:
                x = _bn(F.conv2d(x, sd[p + ".downsample.0.weight"], stride=s), sd, p + ".downsample.1", 1e-5)
            x = F.relu(y + x)
    return x.mean(dim=(2, 3))


def _conv3d(t, w, stride=(1, 1, 1)):
    return F.conv3d(t, w, stride=stride, padding=tuple(k // 2 for k in w.shape[2:]))


def _r2plus1d_oracle(sd, x, eps):
    """R(2+1)D-34 on ig65m key names (widths taken from the weights) -> global mean of layer4."""
    x = F.relu(_bn(_conv3d(x, sd["stem.0.weight"], (1, 2, 2)), sd, "stem.1", eps))
    x = F.relu(_bn(_conv3d(x, sd["stem.3.weight"]), sd, "stem.4", eps))

    def conv2plus1d(t, p, s):
        t = F.relu(_bn(_conv3d(t, sd[p + ".0.0.weight"], (1, s, s)), sd, p + ".0.1", eps))
        return _conv3d(t, sd[p + ".0.3.weight"], (s, 1, 1))

    for layer, blocks in enumerate((3, 4, 6, 3), start=1):
        for b in range(blocks):
            p, s = f"layer{layer}.{b}", (2 if b == 0 and layer > 1 else 1)
            y = F.relu(_bn(conv2plus1d(x, p + ".conv1", s), sd, p + ".conv1.1", eps))
            y = _bn(conv2plus1d(y, p + ".conv2", 1), sd, p + ".conv2.1", eps)
            if p + ".downsample.0.weight" in sd:
                x = _bn(F.conv3d(x, sd[p + ".downsample.0.weight"], stride=s), sd, p + ".downsample.1", eps)
            x = F.relu(y + x)
    return x.mean(dim=(2, 3, 4))


def _slowfast_oracle(sd, x, alpha=4, eps=1e-5):
    """SlowFast on pytorchvideo key names -> cat(mean slow, mean fast)."""
    t = x.shape[2]
    paths = [x[:, :, np.linspace(0, t - 1, t // alpha).astype(int).tolist()], x]
    for p in (0, 1):
        pre = f"blocks.0.multipathway_blocks.{p}"
        y = F.relu(_bn(_conv3d(paths[p], sd[pre + ".conv.weight"], (1, 2, 2)), sd, pre + ".norm", eps))
        paths[p] = F.max_pool3d(y, (1, 3, 3), (1, 2, 2), (0, 1, 1))

    def fuse(k):
        pre = f"blocks.{k}.multipathway_fusion"
        lateral = F.relu(_bn(_conv3d(paths[1], sd[pre + ".conv_fast_to_slow.weight"], (alpha, 1, 1)),
                             sd, pre + ".norm", eps))
        paths[0] = torch.cat([paths[0], lateral], dim=1)

    fuse(0)
    for k in range(1, 5):
        for p in (0, 1):
            i = 0
            while f"blocks.{k}.multipathway_blocks.{p}.res_blocks.{i}.branch2.conv_a.weight" in sd:
                pre = f"blocks.{k}.multipathway_blocks.{p}.res_blocks.{i}"
                s, h = (2 if i == 0 and k > 1 else 1), paths[p]
                y = F.relu(_bn(_conv3d(h, sd[pre + ".branch2.conv_a.weight"]), sd, pre + ".branch2.norm_a", eps))
                y = F.relu(_bn(_conv3d(y, sd[pre + ".branch2.conv_b.weight"], (1, s, s)), sd,
                               pre + ".branch2.norm_b", eps))
                y = _bn(_conv3d(y, sd[pre + ".branch2.conv_c.weight"]), sd, pre + ".branch2.norm_c", eps)
                if pre + ".branch1_conv.weight" in sd:
                    h = _bn(_conv3d(h, sd[pre + ".branch1_conv.weight"], (1, s, s)), sd, pre + ".branch1_norm", eps)
                paths[p] = F.relu(y + h)
                i += 1
        if k < 4:
            fuse(k)
    return torch.cat([paths[0].mean(dim=(2, 3, 4)), paths[1].mean(dim=(2, 3, 4))], dim=1)
