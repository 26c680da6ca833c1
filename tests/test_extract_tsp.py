"""The TSP side of R(2+1)D-34 / MFE: the TSP release key layout, the ``tsp`` recipe, MFE's classifier.

TSP (Alwassel et al., arXiv 2011.11479) releases R(2+1)D-34 checkpoints as
``{"model": {"features.<torchvision VideoResNet key>": ..., "fc.*"}}`` (one
head, TAC) or with ``fc1.*`` / ``fc2.*`` (two heads, TSP). The expected key
names below are written out by hand from that layout, not derived through
tadkit's converter.
"""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tadkit.errors import ConfigError, InputError
from tadkit.extract import backbones as bb
from tadkit.extract.backbones import r2plus1d as r21d
from tadkit.extract.runner import ExtractOptions, Extractor
from tadkit.extract.transforms import crop_maps, get_recipe, resize_frames

from test_backbones_ii import close, randomised
from test_extract_helpers import ArrayReader, moving_frames, no_onednn  # noqa: F401

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CLIP = (2, 3, 4, 16, 16)


def tsp_file(model: torch.nn.Module, heads: dict[str, tuple[int, int]]) -> dict[str, torch.Tensor]:
    """A TSP-release state dict: the trunk of ``model`` under ``features.`` plus linear ``heads``."""
    g = torch.Generator().manual_seed(7)
    sd = {"features." + k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    for name, (out_dim, in_dim) in heads.items():
        sd[f"{name}.weight"] = torch.randn(out_dim, in_dim, generator=g) * 0.01
        sd[f"{name}.bias"] = torch.randn(out_dim, generator=g) * 0.01
    return sd


# --------------------------------------------------------------------------- key layout
def test_tsp_layout_keys_are_the_trunk_under_features_then_the_head():
    sd = bb.build("r2plus1d_34").state_dict_as("tsp")
    keys = list(sd)
    assert len(keys) == 416                                   # as many as the ig65m layout
    assert keys[0] == "features.stem.0.weight" and keys[-2:] == ["fc.weight", "fc.bias"]
    assert all(k.startswith("features.") for k in keys[:-2])
    shapes = {k: list(v.shape) for k, v in sd.items()}
    assert shapes["features.stem.0.weight"] == [45, 3, 1, 7, 7]
    assert shapes["features.stem.3.weight"] == [64, 45, 3, 1, 1]
    assert shapes["features.layer2.0.conv1.0.0.weight"] == [230, 64, 1, 3, 3]
    assert shapes["features.layer2.0.conv2.0.0.weight"] == [288, 128, 1, 3, 3]   # the ig65m / TSP override
    assert shapes["features.layer4.0.downsample.0.weight"] == [512, 256, 1, 1, 1]
    assert shapes["features.layer4.2.conv2.1.running_var"] == [512]
    assert shapes["fc.weight"] == [400, 512]
    assert r21d.detect_format(sd) == "tsp"
    assert r21d.detect_format(bb.build("r2plus1d_34").state_dict()) == "ig65m"


@pytest.mark.parametrize("name", ["r2plus1d_34", "mfe"])
def test_a_one_head_tac_release_loads_auto_detected_strict_and_weights_only(tmp_path, name):
    src = randomised(bb.build(name), seed=21)
    path = tmp_path / "r2plus1d_34-tac_on_kinetics.pth"
    torch.save({"model": tsp_file(src, {"fc": (400, 512)})}, path)
    dst = bb.build(name, num_classes=7)
    assert bb.load_checkpoint(dst, path) == "tsp"
    assert dst.num_classes == 400
    x = torch.randn(*CLIP, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert close(dst.extract_features(x), src.extract_features(x), rel=1e-6)
        head = torch.load(path)["model"]
        clip_feature = r21d.R2Plus1D34.extract_features(src, x)         # F(x), 512-d, for MFE too
        logits = F.linear(clip_feature, head["fc.weight"], head["fc.bias"])
        assert close(dst.classify(x), logits, rel=1e-6)


def test_a_two_head_tsp_release_keeps_the_action_head_and_leaves_out_the_region_head(tmp_path):
    src = randomised(bb.build("r2plus1d_34"), seed=22)
    sd = tsp_file(src, {"fc1": (200, 512), "fc2": (2, 1024)})
    path = tmp_path / "r2plus1d_34-tsp_on_activitynet.pth"
    torch.save({"model": sd}, path)
    dst = bb.build("mfe")
    assert bb.load_checkpoint(dst, path) == "tsp"
    assert dst.num_classes == 200 and torch.equal(dst.fc.weight, sd["fc1.weight"])
    dropped = bb.build("mfe")
    bb.load_checkpoint(dropped, path, classifier="drop")
    assert dropped.fc is None


def test_the_tsp_layout_is_strict_about_the_trunk(tmp_path):
    sd = tsp_file(bb.build("r2plus1d_34"), {"fc": (400, 512)})
    del sd["features.layer3.1.conv1.0.3.weight"]
    sd["features.layer5.0.weight"] = torch.zeros(1)
    with pytest.raises(InputError) as err:
        bb.build("mfe").load_checkpoint_state(sd, source="tac.pth")
    msg = str(err.value)
    assert msg.startswith("tac.pth: not a R(2+1)D-34 checkpoint in the tsp layout")
    assert "1 missing keys (layer3.1.conv1.0.3.weight)" in msg and "1 unexpected keys (layer5.0.weight)" in msg


def test_a_training_checkpoint_that_pickles_its_args_is_refused(tmp_path):
    """TSP's training script also saves ``args`` (an argparse.Namespace): loading that needs pickle code."""
    path = tmp_path / "epoch_5.pth"
    torch.save({"model": tsp_file(bb.build("r2plus1d_34"), {"fc": (400, 512)}),
                "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(InputError, match="refused: loading it would run arbitrary pickle code"):
        bb.load_checkpoint(bb.build("mfe"), path)


def test_state_dict_as_tsp_round_trips():
    src = randomised(bb.build("r2plus1d_34"), seed=23)
    dst = bb.build("r2plus1d_34")
    assert dst.load_checkpoint_state(src.state_dict_as("tsp")) == "tsp"
    for (k, a), (k2, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


# --------------------------------------------------------------------------- MFE classifier
def test_mfe_classify_scores_the_clip_path_with_the_512_d_classifier():
    mfe = randomised(bb.build("mfe"), seed=24)
    plain = bb.build("r2plus1d_34")
    plain.load_checkpoint_state(mfe.state_dict())
    x = torch.randn(*CLIP, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        scores = mfe.classify(x)
        assert scores.shape == (2, 400)
        assert close(scores, plain.classify(x), rel=1e-6)
    mfe.set_num_classes(0)
    with pytest.raises(ConfigError, match="mfe has no classifier"):
        mfe.classify(x)


# --------------------------------------------------------------------------- the tsp recipe
def test_tsp_recipe_is_16_frames_every_16_at_15_fps_resized_to_171x128_without_antialias():
    r = get_recipe("tsp")
    assert (r.clip_len, r.stride, r.fps, r.crop) == (16, 16, 15.0, 112)
    assert r.resized_size(360, 640) == (128, 171) and r.crop_box(128, 171) == (8, 30)   # round(29.5) = 30
    frames = moving_frames(2, 96, 160)
    got = resize_frames(frames, r)
    t = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    plain = F.interpolate(t, size=(128, 171), mode="bilinear", align_corners=False, antialias=False)
    np.testing.assert_array_equal(got, plain.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    assert np.array_equal(crop_maps(got, r), got[:, 8:120, 30:142])
    # the fields only the tsp recipe sets are in its provenance, and absent from the others'
    assert {"fps": 15.0, "antialias": False, "crop_offset": "round"}.items() <= r.to_dict().items()
    assert not {"fps", "antialias", "crop_offset"} & set(get_recipe("mfe_menet").to_dict())


@pytest.mark.parametrize("family", ["mfe", "r2plus1d_34"])
def test_tsp_recipe_runs_with_mfe_and_r2plus1d_at_its_own_fps(family):
    ex = Extractor(ExtractOptions(backbone=family, recipe="tsp", random_weights=True, size=32, device="cpu"))
    assert (ex.clip_len, ex.stride, ex.fps) == (16, 16, 15.0)
    reader = ArrayReader(moving_frames(60, 40, 64), fps=30.0)       # 2 s at 30 fps -> 30 frames at 15 fps
    plan = ex.plan(reader)
    assert plan.fps == 15.0 and len(plan.source_index) == 30
    np.testing.assert_array_equal(plan.source_index[:4], [0, 2, 4, 6])
    np.testing.assert_allclose(plan.centers[:2], [8 / 15, 24 / 15])
    assert ex._provenance().fps == 15.0
    _, inputs = next(iter(ex.clip_batches(reader, plan)))
    assert tuple(inputs["rgb"].shape[1:3]) == (3, 16)
    override = Extractor(ExtractOptions(backbone=family, recipe="tsp", fps=10.0, random_weights=True, size=32,
                                        device="cpu"))
    assert override.fps == 10.0


def test_another_familys_recipe_is_still_refused_for_mfe():
    with pytest.raises(ConfigError, match="recipe 'slowfast_kinetics' does not fit backbone mfe"):
        Extractor(ExtractOptions(backbone="mfe", recipe="slowfast_kinetics", random_weights=True, device="cpu"))
