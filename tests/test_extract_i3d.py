"""I3D: the parity-critical details of the spec, key layouts and checkpoint loading."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tadkit.errors import ConfigError, InputError
from tadkit.extract import backbones
from tadkit.extract.backbones import build, load_checkpoint, read_state_dict, save_checkpoint
from tadkit.extract.backbones import i3d
from tadkit.registry import Registry

from test_extract_helpers import no_onednn  # noqa: F401


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics so eps and loading mistakes show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.01 + 1e-4)
                m.weight.copy_(1 + 0.1 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
    return model


class _Payload:
    """An arbitrary class: unpickling it would need code from this module."""


# --------------------------------------------------------------------------- padding
@pytest.mark.parametrize("size,k,s,expected", [
    (224, 7, 2, (2, 3)),   # stem on an even size: SAME pads (2, 3), not PyTorch's (3, 3)
    (16, 7, 2, (2, 3)),
    (15, 7, 2, (3, 3)),    # odd size: total = k - size % s = 6
    (56, 3, 2, (0, 1)),    # max-pool 3x3/2: the extra element at the end
    (57, 3, 2, (1, 1)),
    (7, 2, 2, (0, 1)),     # MaxPool3d_5a_2x2 on an odd map
    (8, 2, 2, (0, 0)),
    (10, 3, 1, (1, 1)),
    (10, 1, 1, (0, 0)),
    (3, 7, 2, (3, 3)),     # tiny input: total = 7 - 1
])
def test_tf_same_padding_is_asymmetric_and_size_dependent(size, k, s, expected):
    assert i3d.tf_same_padding(size, k, s) == expected
    front, back = expected
    out = (size + front + back - k) // s + 1
    assert out == -(-size // s)  # SAME keeps ceil(size / stride) outputs


def test_stem_conv_uses_dynamic_same_padding_not_symmetric():
    torch.manual_seed(0)
    unit = i3d.Unit3D(3, 4, (7, 7, 7), stride=(2, 2, 2), batch_norm=False, activation=False)
    x = torch.randn(1, 3, 8, 12, 11)
    got = unit(x)
    # by hand: T 8 -> (2, 3), H 12 -> (2, 3), W 11 -> (3, 3); F.pad takes the last dim first
    ref = F.conv3d(F.pad(x, (3, 3, 2, 3, 2, 3)), unit.conv3d.weight, stride=2)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    symmetric = F.conv3d(x, unit.conv3d.weight, stride=2, padding=3)
    assert got.shape == symmetric.shape and not torch.allclose(got, symmetric)


def test_max_pool_pads_with_zero_at_the_end_only():
    pool = i3d.MaxPool3dSame((1, 3, 3), (1, 2, 2))
    x = -torch.ones(1, 1, 1, 4, 4) - torch.arange(16.0).reshape(1, 1, 1, 4, 4)
    out = pool(x)[0, 0, 0]
    # size 4, k 3, s 2: pad (0, 1); windows rows/cols {0,1,2} and {2,3,pad}
    expected = torch.tensor([[-1.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(out, expected)


# --------------------------------------------------------------------------- pooling / BN
def test_feature_is_two_frame_sliding_average_then_time_mean():
    fmap = torch.zeros(1, 1, 4, 7, 7)
    for t, v in enumerate([1.0, 2.0, 4.0, 8.0]):
        fmap[0, 0, t] = v
    got = i3d.temporal_feature_pool(fmap).item()
    # windows (1+2)/2, (2+4)/2, (4+8)/2 -> mean = (a + 2b + 2c + d) / 6
    assert got == pytest.approx((1 + 2 * 2 + 2 * 4 + 8) / 6)
    assert got != pytest.approx(fmap.mean().item())


def test_feature_pooling_at_224_equals_the_reference_window_for_t16_and_t64():
    torch.manual_seed(0)
    for t_prime, windows in ((2, 1), (8, 7)):
        fmap = torch.randn(2, 5, t_prime, 7, 7)
        pooled = F.avg_pool3d(fmap, (2, 7, 7), stride=1)       # the reference AvgPool3d
        assert pooled.shape == (2, 5, windows, 1, 1)
        torch.testing.assert_close(i3d.temporal_feature_pool(fmap), pooled.mean(dim=(2, 3, 4)))


@pytest.mark.parametrize("T,t_prime", [(16, 2), (64, 8)])
@pytest.mark.parametrize("name,cin", [("i3d_rgb", 3), ("i3d_flow", 2)])
def test_output_shapes_at_224(name, cin, T, t_prime):
    with torch.device("meta"):  # shapes only: no compute
        model = build(name)
        x = torch.empty(2, cin, T, 224, 224)
        fmap = model.trunk(x)
        assert tuple(fmap.shape) == (2, 1024, t_prime, 7, 7)
        assert tuple(model.extract_features(x).shape) == (2, 1024)
        assert tuple(model.classify(x).shape) == (2, 400)


def test_batch_norm_uses_eps_1e3_by_default_and_is_settable():
    torch.manual_seed(0)
    unit = _randomise_bn(i3d.Unit3D(2, 3, (1, 1, 1)), seed=1).eval()
    x = torch.randn(1, 2, 2, 3, 3)
    bn = unit.bn
    z = F.conv3d(x, unit.conv3d.weight)
    shape = (1, -1, 1, 1, 1)
    for eps in (1e-3, 1e-5):
        bn.eps = eps
        ref = (z - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + eps)
        ref = torch.relu(ref * bn.weight.view(shape) + bn.bias.view(shape))
        torch.testing.assert_close(unit(x), ref, rtol=1e-5, atol=1e-6)
    assert build("i3d_rgb").bn_eps == pytest.approx(1e-3)
    m = build("i3d_rgb", bn_eps=1e-5)
    assert all(b.eps == 1e-5 for b in m.modules() if isinstance(b, torch.nn.BatchNorm3d))


# --------------------------------------------------------------------------- key layouts
@pytest.mark.parametrize("stream", ["rgb", "flow"])
@pytest.mark.parametrize("fmt", ["piergiaj", "hassony2"])
def test_state_dict_keys_and_shapes_match_the_reference_files_in_order(stream, fmt, backbone_keys):
    got = [f"{k} {list(v.shape)}" for k, v in build(f"i3d_{stream}").state_dict_as(fmt).items()]
    assert len(got) == 344
    assert got == backbone_keys(f"i3d_{stream}_{fmt}")


def test_layout_conversion_round_trips():
    sd = build("i3d_rgb").state_dict()
    there = i3d.convert_state_dict(sd, "piergiaj", "hassony2")
    back = i3d.convert_state_dict(there, "hassony2", "piergiaj")
    assert list(back) == list(sd)
    assert all(back[k] is sd[k] for k in sd)
    assert "mixed_5b.branch_1.1.batch3d.running_var" in there
    assert "conv3d_0c_1x1.conv3d.bias" in there


# --------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("fmt,eps", [("piergiaj", 1e-3), ("hassony2", 1e-5)])
def test_checkpoint_round_trip_gives_identical_features(tmp_path, fmt, eps):
    torch.manual_seed(0)
    src = _randomise_bn(build("i3d_flow"), seed=3)
    src.set_bn_eps(eps)
    path = save_checkpoint(src, tmp_path / f"flow_{fmt}.pt", fmt=fmt)
    torch.manual_seed(1)
    dst = build("i3d_flow")
    assert load_checkpoint(dst, path) == fmt          # layout detected from the keys
    assert dst.bn_eps == pytest.approx(eps)             # the eps the layout implies
    x = torch.rand(1, 2, 8, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(dst.extract_features(x), src.extract_features(x), rtol=0, atol=0)


def test_bn_eps_changes_features_and_can_be_overridden_on_load(tmp_path):
    torch.manual_seed(0)
    src = _randomise_bn(build("i3d_rgb"), seed=2)
    path = save_checkpoint(src, tmp_path / "model_rgb.pth", fmt="hassony2")
    a, b = build("i3d_rgb"), build("i3d_rgb")
    load_checkpoint(a, path)                       # hassony2 -> 1e-5
    load_checkpoint(b, path, bn_eps=1e-3)          # TF-faithful override
    assert (a.bn_eps, b.bn_eps) == (1e-5, 1e-3)
    x = torch.rand(1, 3, 8, 32, 32) * 2 - 1
    with torch.no_grad():
        fa, fb = a(x), b(x)
    assert not torch.allclose(fa, fb, rtol=1e-4, atol=1e-6)


def test_checkpoints_without_num_batches_tracked_load(tmp_path):
    sd = {k: v for k, v in build("i3d_rgb").state_dict_as("piergiaj").items()
          if not k.endswith("num_batches_tracked")}
    assert len(sd) == 344 - 57
    torch.save(sd, tmp_path / "rgb_imagenet.pt")
    load_checkpoint(build("i3d_rgb"), tmp_path / "rgb_imagenet.pt")


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    sd = build("i3d_rgb").state_dict_as("piergiaj")
    del sd["Mixed_4c.b2b.conv3d.weight"]
    sd["Mixed_9z.b0.conv3d.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(InputError) as err:
        load_checkpoint(build("i3d_rgb"), tmp_path / "bad.pt")
    msg = str(err.value)
    assert "bad.pt" in msg and "1 missing keys (Mixed_4c.b2b.conv3d.weight)" in msg
    assert "1 unexpected keys (Mixed_9z.b0.conv3d.weight)" in msg


def test_rgb_weights_in_a_flow_model_explain_the_swap(tmp_path):
    path = save_checkpoint(build("i3d_rgb"), tmp_path / "rgb.pt")
    with pytest.raises(InputError, match="3-channel input, the model takes 2"):
        load_checkpoint(build("i3d_flow"), path)


def test_charades_classifier_is_resized_from_the_checkpoint(tmp_path):
    src = build("i3d_rgb", num_classes=157)
    path = save_checkpoint(src, tmp_path / "rgb_charades.pt")
    dst = build("i3d_rgb")
    load_checkpoint(dst, path)
    assert dst.num_classes == 157 and dst.logits.conv3d.weight.shape[0] == 157
    assert list(dst.state_dict())[0] == "logits.conv3d.weight"  # layout order kept


def test_wrapped_and_data_parallel_checkpoints_are_unwrapped(tmp_path):
    sd = build("i3d_rgb").state_dict_as("hassony2")
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "w.pt")
    got = read_state_dict(tmp_path / "w.pt")
    assert list(got) == list(sd)
    assert load_checkpoint(build("i3d_rgb"), tmp_path / "w.pt") == "hassony2"


def test_checkpoints_needing_pickle_code_are_refused(tmp_path):
    torch.save({"w": torch.zeros(1), "extra": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="refused"):
        read_state_dict(tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt: not a readable PyTorch checkpoint"):
        read_state_dict(tmp_path / "junk.pt")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a recognised I3D checkpoint"):
        load_checkpoint(build("i3d_rgb"), tmp_path / "other.pt")


# --------------------------------------------------------------------------- registry
def test_registry_lists_names_on_unknown_and_refuses_duplicates():
    reg: Registry = Registry("widget")

    @reg.register("b")
    def make_b():
        return "b"

    reg.register("a")(lambda: "a")
    assert reg.names() == ["a", "b"] and "a" in reg and len(reg) == 2
    assert reg.get("b")() == "b"
    with pytest.raises(ConfigError, match=r"unknown widget 'c'; available: a, b"):
        reg.get("c")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(lambda: "other")


def test_backbone_registry_holds_both_streams_and_the_i3d_family():
    assert {"i3d_rgb", "i3d_flow"} <= set(backbones.BACKBONES.names())
    fam = backbones.family("i3d")
    assert fam.streams == ("rgb", "flow") and fam.stream_dim == 1024
    assert (fam.clip_len, fam.stride) == (16, 4)
    with pytest.raises(ConfigError, match="available: .*i3d_flow"):
        build("i3d_rbg")
    assert not build("i3d_rgb").training


def test_file_sha256_matches_a_known_digest(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"abc")
    assert backbones.file_sha256(tmp_path / "w.pt") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
