"""TAL-MTS head and its shared layers: boundary pooling, pyramids, eq. 13, losses, CLI end to end."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from tadkit.cli import cli, main
from tadkit.config import load_config
from tadkit.data.features import FeatureStore, Provenance, VideoFeatures
from tadkit.detect.config import DetectConfig, TALMTSConfig
from tadkit.detect.heads import build_head, get_head
from tadkit.detect.heads.talmts import TALMTS, assign_locations, fuse_scores, offset_targets, refine_segments
from tadkit.detect.layers import (TemporalPyramid, TransformerEncoder, boundary_max_pool, boundary_regions,
                                  frame_level_feature, grid_patches, instance_classes, level_centers, level_mask,
                                  pyramid_lengths, range_max_table, refine_top_down, sinusoidal_embedding,
                                  to_level_cells)
from tadkit.detect.layers.boundary import region_cells
from tadkit.errors import ConfigError
from tadkit.timeline import num_sampled_frames, snippet_centers

from oracle_pyramid import conv_geometry, receptive_centres


pytestmark = pytest.mark.usefixtures("torch_one_thread")


TINY = dict(dim=16, num_levels=4, first_stride=1, stt_dim=16, fsa_dim=16, num_heads=2, boundary_dim=8,
            stt_temporal_layers=1, mlp_ratio=1.0)


# --------------------------------------------------------------------------- boundary pooling
def _slow_boundary_pool(x: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Oracle: a Python loop over samples and regions, cells chosen by the documented rule."""
    b, c, length = x.shape
    out = torch.empty(b, c, regions.shape[1], dtype=x.dtype)
    for i in range(b):
        for n in range(regions.shape[1]):
            a, e = float(regions[i, n, 0]), float(regions[i, n, 1])
            lo = min(max(math.ceil(a - 0.5), 0), length - 1)
            hi = min(max(math.floor(e + 0.5), 0), length - 1)
            cells = list(range(lo, max(hi, lo) + 1))
            out[i, :, n] = x[i][:, cells].max(1).values
    return out


@pytest.mark.parametrize("length", [1, 2, 5, 37, 64, 100])
def test_boundary_pooling_matches_slow_loop(length):
    g = torch.Generator().manual_seed(length)
    x = torch.randn(2, 3, length, generator=g)
    regions = torch.sort(torch.rand(2, 40, 2, generator=g) * (length + 8) - 4, -1).values
    np.testing.assert_array_equal(boundary_max_pool(x, regions).numpy(), _slow_boundary_pool(x, regions).numpy())


@settings(max_examples=40, deadline=None)
@given(length=st.integers(1, 40), a=st.floats(-5, 45), w=st.floats(0, 50), seed=st.integers(0, 1000))
def test_boundary_pooling_property_any_region(length, a, w, seed):
    x = torch.randn(1, 2, length, generator=torch.Generator().manual_seed(seed))
    regions = torch.tensor([[[a, a + w]]], dtype=torch.float32)
    torch.testing.assert_close(boundary_max_pool(x, regions), _slow_boundary_pool(x, regions), rtol=0, atol=0)


def test_boundary_pooling_gradient_reaches_the_argmax_cells():
    x = torch.tensor([[[0.0, 3.0, 1.0, 5.0, 2.0]]], requires_grad=True)
    regions = torch.tensor([[[0.0, 2.0], [2.6, 4.0], [-9.0, -3.0]]])  # cells 0-2, 3-4 and (clamped) 0
    out = boundary_max_pool(x, regions)
    assert out.tolist() == [[[3.0, 5.0, 0.0]]]
    out.sum().backward()
    assert x.grad.tolist() == [[[1.0, 1.0, 0.0, 1.0, 0.0]]]


def test_region_cells_and_boundary_regions_by_hand():
    lo, hi = region_cells(torch.tensor([[[3.0, 3.0], [3.5, 3.5], [1.2, 2.4], [7.0, 9.0]]]), 8)
    assert lo.tolist() == [[3, 3, 1, 7]] and hi.tolist() == [[3, 4, 2, 7]]
    start, end = boundary_regions(torch.tensor([[10.0, 18.0], [4.0, 4.5]]), inner=0.25, outer=0.125,
                                  min_extent=0.5)
    # w = 8: start [10 - 1, 10 + 2], end [18 - 2, 18 + 1]; w = 0.5: every reach clamps to 0.5
    np.testing.assert_allclose(start.numpy(), [[9.0, 12.0], [3.5, 4.5]])
    np.testing.assert_allclose(end.numpy(), [[16.0, 19.0], [4.0, 5.0]])


def test_boundary_regions_default_to_afsd():
    # AFSD: a quarter of the segment inside, a tenth outside, at least one cell each way
    start, end = boundary_regions(torch.tensor([[10.0, 50.0], [4.0, 6.0]]))
    np.testing.assert_allclose(start.numpy(), [[6.0, 20.0], [3.0, 5.0]])
    np.testing.assert_allclose(end.numpy(), [[40.0, 54.0], [5.0, 7.0]])
    cfg = TALMTSConfig()
    assert (cfg.bp_inner, cfg.bp_outer, cfg.bp_min, cfg.quality_branch) == (0.25, 0.1, 1.0, "loc")


def test_range_max_table_by_hand():
    t = range_max_table(torch.tensor([[[1.0, 4.0, 2.0, 0.0, 3.0]]]), 3)
    assert t[0, 0].tolist() == [[1, 4, 2, 0, 3], [4, 4, 2, 3, 3], [4, 4, 3, 3, 3]]


# --------------------------------------------------------------------------- pyramid
@pytest.mark.parametrize("length,first_stride,levels,expected", [
    (37, 4, 6, [10, 5, 3, 2, 1, 1]),
    (37, 1, 3, [37, 19, 10]),
    (1, 2, 4, [1, 1, 1, 1]),
    (255, 2, 5, [128, 64, 32, 16, 8]),
    (256, 4, 6, [64, 32, 16, 8, 4, 2]),  # the paper's T_l
])
def test_pyramid_shapes_for_odd_lengths(length, first_stride, levels, expected):
    assert pyramid_lengths(length, first_stride, levels) == expected
    pyr = TemporalPyramid(3, 8, levels, first_stride)
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[1, length // 2 + 1:] = False
    out = pyr(torch.randn(2, 3, length), mask)
    assert [tuple(f.shape) for f in out] == [(2, 8, n) for n in expected]
    assert pyr.strides == [first_stride * 2 ** i for i in range(levels)]
    for f, s in zip(out, pyr.strides):  # cells covering only padding are zero
        dead = ~level_mask(mask, f.shape[-1], s)
        assert torch.all(f.permute(0, 2, 1)[dead] == 0)


def test_rfp_refinement_is_nearest_top_down_addition():
    a = torch.arange(5.0).reshape(1, 1, 5)
    b = torch.tensor([[[10.0, 20.0, 30.0]]])
    c = torch.tensor([[[100.0, 200.0]]])
    ra, rb, rc = refine_top_down([a, b, c])
    assert rc.tolist() == c.tolist()
    assert rb.tolist() == [[[110.0, 120.0, 230.0]]]                    # c at indices 0, 0, 1
    assert ra.tolist() == [[[110.0, 111.0, 122.0, 123.0, 234.0]]]      # rb at indices 0, 0, 1, 1, 2


def test_frame_level_feature_reads_the_level_at_its_cell_centres():
    # a level whose cells hold their own centres (0, 4, 8, 12) must give every input cell its position
    level = level_centers(4, 4).reshape(1, 1, 4)  # stride 4 over 16 input cells
    out = frame_level_feature(level, 16, 4)[0, 0]
    np.testing.assert_allclose(out.numpy(), torch.arange(16.0).clamp(max=12).numpy(), atol=1e-6)
    two = torch.stack([level[0, 0], -level[0, 0]])[None]  # channels and batch go along
    np.testing.assert_allclose(frame_level_feature(two, 16, 4)[0, 1].numpy(), -out.numpy(), atol=1e-6)
    assert frame_level_feature(level, 4, 1).tolist() == level.tolist()  # stride 1: the cells themselves


@pytest.mark.parametrize("first_stride", [1, 2, 4])
def test_level_centers_are_the_receptive_field_centres(first_stride):
    head = TALMTS(TALMTSConfig(**{**TINY, "first_stride": first_stride, "num_levels": 5}), 12, 3).eval()
    pyr = head.pyramid
    convs = [conv_geometry(layer.conv) for layer in list(pyr.stem) + list(pyr.down)]
    first = len(pyr.stem)
    length = 512
    points = head(torch.randn(1, 12, length))["points"]
    offset = 0
    for level, (n, s) in enumerate(zip(pyramid_lengths(length, first_stride, 5), pyr.strides)):
        oracle = receptive_centres(convs[:first + level], length)
        assert len(oracle) >= 2, (level, oracle)
        for j, centre in oracle.items():
            assert float(level_centers(n, s)[j]) == centre
            assert float(points[offset + j]) == centre  # the head's locations use them
            assert float(to_level_cells(torch.tensor(centre), s)) == j
        offset += n


def test_level_centers_and_mask_by_hand():
    assert level_centers(3, 4).tolist() == [0.0, 4.0, 8.0]
    mask = torch.tensor([[True] * 9 + [False] * 3])
    assert level_mask(mask, 3, 4).tolist() == [[True, True, True]]
    assert level_mask(mask, 3, 4)[0].tolist() == level_mask(mask[:, :9], 3, 4)[0].tolist()
    assert level_mask(torch.tensor([[True] * 8 + [False] * 4]), 3, 4).tolist() == [[True, True, False]]


# --------------------------------------------------------------------------- attention
def test_grid_patches_order():
    grid = torch.arange(16.0).reshape(1, 1, 4, 4, 1)  # value = 4 * row + col
    p = grid_patches(grid, 2)
    assert p.shape == (1, 1, 4, 4)
    assert p[0, 0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    with pytest.raises(ValueError, match="patches"):
        grid_patches(grid, 3)


def test_transformer_ignores_padding_tokens():
    torch.manual_seed(0)
    enc = TransformerEncoder(8, depth=2, num_heads=2).eval()
    x = torch.randn(1, 5, 8)
    padded = torch.cat([x, 100 * torch.randn(1, 3, 8)], 1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    torch.testing.assert_close(enc(padded, mask)[:, :5], enc(x), rtol=1e-5, atol=1e-5)


def test_sinusoidal_embedding_values():
    pe = sinusoidal_embedding(3, 4)
    # frequencies 1 and 10000^(-1/2) = 0.01; channels (sin f0, cos f0, sin f1, cos f1)
    np.testing.assert_allclose(pe[2].numpy(), [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)], atol=1e-6)


# --------------------------------------------------------------------------- eq. 13 and targets
def test_inference_formula_on_a_hand_made_case():
    coarse = torch.tensor([[10.0, 20.0], [4.0, 8.0]])
    offsets = torch.tensor([[0.2, -0.1], [-0.5, 1.0]])
    # d = 10: start 10 + 5 * 0.2 = 11, end 20 - 5 * 0.1 = 19.5; d = 4: 4 - 1 = 3, 8 + 2 = 10
    np.testing.assert_allclose(refine_segments(coarse, offsets).numpy(), [[11.0, 19.5], [3.0, 10.0]])
    score = fuse_scores(torch.tensor([[0.6, 0.2]]), torch.tensor([[0.8, 0.4]]), torch.tensor([0.5]))
    np.testing.assert_allclose(score.numpy(), [[0.35, 0.15]], atol=1e-7)  # ½(0.6+0.8)·0.5, ½(0.2+0.4)·0.5
    # offset targets invert the boundary formula
    gt = torch.tensor([[11.0, 19.5], [3.0, 10.0]])
    np.testing.assert_allclose(offset_targets(coarse, gt).numpy(), offsets.numpy(), atol=1e-6)


def test_decode_applies_eq13_to_raw_outputs():
    head = TALMTS(TALMTSConfig(**TINY), 4, 2)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    outputs = {
        "coarse_segments": torch.tensor([[[10.0, 20.0], [0.0, 2.0]]]),
        "offsets": torch.tensor([[[0.2, -0.1], [0.0, 0.0]]]),
        "coarse_logits": torch.tensor([[[logit(0.6), logit(0.2)], [logit(0.9), logit(0.9)]]]),
        "refined_logits": torch.tensor([[[logit(0.8), logit(0.4)], [logit(0.9), logit(0.9)]]]),
        "quality_logits": torch.tensor([[logit(0.5), logit(0.9)]]),
        "valid": torch.tensor([[True, False]]),  # the second location lies on padding
    }
    det = head.decode(outputs, torch.ones(1, 20, dtype=torch.bool), topk=10, min_score=0.01)[0]
    np.testing.assert_allclose(det.scores, [0.35, 0.15], atol=1e-6)
    np.testing.assert_allclose(det.segments, [[11.0, 19.5], [11.0, 19.5]], atol=1e-5)
    assert det.labels.tolist() == [0, 1]
    assert len(head.decode(outputs, None, topk=1)[0]) == 1


def test_location_assignment_by_hand():
    points = torch.tensor([0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 1.5, 5.5, 9.5])
    gt = torch.tensor([[1.0, 9.0], [3.5, 6.5], [10.2, 10.6]])
    valid = torch.ones(9, dtype=torch.bool)
    idx = assign_locations(points, gt, valid)
    # inside gt0 only: 2, 8, 1.5; inside both: 4, 6, 5.5 -> shorter gt1; 9.5 outside both;
    # gt2 holds no centre and claims the nearest location (10.0)
    assert idx.tolist() == [-1, 0, 1, 1, 0, 2, 0, 1, -1]
    valid[5] = False  # then 9.5 is the nearest valid location to gt2's midpoint
    assert assign_locations(points, gt, valid).tolist() == [-1, 0, 1, 1, 0, -1, 0, 1, 2]
    assert assign_locations(points, torch.zeros(0, 2), valid).tolist() == [-1] * 9


def test_identical_ground_truth_segments_give_multi_label_targets():
    # THUMOS14 labels every CliffDiving instance as Diving too: both classes must be targets
    gt = torch.tensor([[0.0, 5.0], [0.0, 5.0], [2.0, 8.0]])
    labels = torch.tensor([1, 3, 0])
    out = instance_classes(torch.tensor([0, 1, 2, -1]), gt, labels, 4)
    assert out.tolist() == [[0, 1, 0, 1], [0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert instance_classes(torch.tensor([-1, -1]), torch.zeros(0, 2), torch.zeros(0), 4).sum() == 0


# --------------------------------------------------------------------------- head
def _batch(t: int = 32, dim: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(2, dim, t, generator=g)
    mask = torch.ones(2, t, dtype=torch.bool)
    mask[1, 21:] = False
    targets = [{"segments": torch.tensor([[3.0, 9.0], [14.0, 25.0]]), "labels": torch.tensor([0, 2])},
               {"segments": torch.tensor([[2.0, 4.5], [10.0, 18.0]]), "labels": torch.tensor([1, 0])}]
    for i, tg in enumerate(targets):  # a class-coded signal inside each action
        for (s, e), lab in zip(tg["segments"].tolist(), tg["labels"].tolist()):
            x[i, lab * 4:(lab + 1) * 4, int(s):int(e) + 1] += 1.5
    grid = 0.3 * torch.randn(2, t, 4, 4, 6, generator=g) + x[:, :6].permute(0, 2, 1)[:, :, None, None, :]
    return x, mask, targets, grid


@pytest.mark.parametrize("switches", [
    dict(), dict(rfp=False, stt=False, fsa=False), dict(stt=False), dict(fsa=False),
    dict(grid_size=4, grid_dim=6, patch_size=2), dict(grid_size=4, grid_dim=6, patch_size=4, rfp=False),
])
def test_loss_is_finite_and_decreases(switches):
    torch.manual_seed(0)
    head = TALMTS(TALMTSConfig(**{**TINY, **switches}), 12, 3)
    x, mask, targets, grid = _batch()
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        out = head(x, mask, grid=grid)
        terms = head.loss(out, mask, targets)
        assert all(torch.isfinite(v) for v in terms.values()), terms
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(float(terms["loss"].detach()))
    assert losses[-1] < 0.7 * losses[0], losses
    assert terms["num_pos"] > 0 and terms["num_refine_pos"] > 0


def test_forward_shapes_on_odd_length_and_padding():
    head = TALMTS(TALMTSConfig(**{**TINY, "first_stride": 2}), 12, 3).eval()
    x = torch.randn(2, 12, 37)
    mask = torch.ones(2, 37, dtype=torch.bool)
    mask[1, 10:] = False
    out = head(x, mask)
    n = sum(pyramid_lengths(37, 2, 4))  # 19 + 10 + 5 + 3
    assert out["points"].shape == (n,) and out["coarse_segments"].shape == (2, n, 2)
    assert out["coarse_logits"].shape == (2, n, 3) and out["refined_logits"].shape == (2, n, 3)
    assert out["offsets"].shape == (2, n, 2) and out["quality_logits"].shape == (2, n)
    assert out["valid"][0].all() and 0 < out["valid"][1].sum() < n
    seg = out["coarse_segments"]
    assert torch.all(seg[..., 0] <= out["points"]) and torch.all(seg[..., 1] >= out["points"])
    assert head.stride == 16 and head.describe()["strides"] == [2, 4, 8, 16]


@pytest.mark.parametrize("branch,used,unused", [("loc", 0, 1), ("cls", 1, 0)])
def test_quality_comes_from_the_configured_branch(branch, used, unused):
    # AFSD (and the default) predicts the quality ε from the localisation branch's boundary features
    torch.manual_seed(0)
    x, mask, _, _ = _batch()
    head = TALMTS(TALMTSConfig(**{**TINY, "quality_branch": branch}), 12, 3)
    head(x, mask)["quality_logits"].sum().backward()
    assert head.refine.fuse[used][0].weight.grad.abs().sum() > 0
    assert head.refine.fuse[unused][0].weight.grad is None


def test_loss_without_ground_truth_is_finite():
    head = TALMTS(TALMTSConfig(**TINY), 12, 3)
    x, mask, _, _ = _batch()
    empty = [{"segments": torch.zeros(0, 2), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    terms = head.loss(head(x, mask), mask, empty)
    assert torch.isfinite(terms["loss"]) and terms["num_pos"] == 0
    terms["loss"].backward()


def test_ablation_switches_change_the_architecture():
    def params(**kw):
        return sum(p.numel() for p in TALMTS(TALMTSConfig(**{**TINY, **kw}), 12, 3).parameters())
    full = TALMTS(TALMTSConfig(**TINY), 12, 3)
    assert full.stt is not None and full.fsa is not None
    bare = TALMTS(TALMTSConfig(**{**TINY, "stt": False, "fsa": False}), 12, 3)
    assert bare.stt is None and bare.fsa is None and bare.stt_pyramid is None
    assert params(stt=False) < params() and params(fsa=False) < params()
    assert params(rfp=False) == params()  # RFP's refinement has no parameters
    # patch size sets the FSA token count: (4 / p)^2 tokens of p*p*C values
    assert TALMTS(TALMTSConfig(**{**TINY, "grid_size": 4, "grid_dim": 6, "patch_size": 2}), 12, 3) \
        .fsa.tokens.num_tokens == 4


def test_grid_configuration_errors():
    x, mask, _, grid = _batch()
    head = TALMTS(TALMTSConfig(**{**TINY, "grid_size": 4, "grid_dim": 6}), 12, 3)
    with pytest.raises(ConfigError, match="grid_size=4 needs per-snippet spatial grids"):
        head(x, mask)
    with pytest.raises(ConfigError, match="expected"):
        head(x, mask, grid=grid[..., :5])
    # grid_size 0 is the single-vector fallback even when a grid is passed
    plain = TALMTS(TALMTSConfig(**TINY), 12, 3).eval()
    torch.testing.assert_close(plain(x, mask, grid=grid)["coarse_logits"], plain(x, mask)["coarse_logits"])
    with pytest.raises(ValueError, match="does not divide"):
        TALMTSConfig(grid_size=4, patch_size=3)
    with pytest.raises(ValueError, match="power of two"):
        TALMTSConfig(first_stride=3)


def test_registry_builds_talmts_from_config_files():
    for name in ("thumos14", "anet", "thumos14_paper", "anet_paper"):
        cfg = load_config(DetectConfig, Path(__file__).parents[1] / "configs" / "talmts" / f"{name}.yaml")
        assert cfg.head == "talmts" and cfg.talmts.alpha == (10.0 if name.startswith("thumos14") else 1.0)
        assert pyramid_lengths(cfg.data.length, cfg.talmts.first_stride, cfg.talmts.num_levels) == [64, 32, 16, 8, 4, 2]
    head = build_head("talmts", TALMTSConfig(**TINY), 12, 3)
    assert isinstance(head, TALMTS) and get_head("talmts") is get_head("talmts")


# --------------------------------------------------------------------------- CLI end to end
CLI_CONFIG = """\
head: talmts
talmts: {dim: 16, num_levels: 3, first_stride: 1, stt_dim: 16, fsa_dim: 16, num_heads: 2, boundary_dim: 8,
         stt_temporal_layers: 1, mlp_ratio: 1.0, alpha: 1.0}
data: {mode: window, length: 32, train_overlap: 0.25, infer_overlap: 0.5, train_subset: training,
       test_subset: validation}
optim: {name: adam, lr: 0.003, weight_decay: 0.0}
schedule: {name: constant}
train: {epochs: 6, batch_size: 4, log_every: 0, checkpoint_every: 3}
postprocess: {method: linear, iou_threshold: 0.3, max_per_video: 30}
"""
CLASSES = ["Jump", "Run"]


def _write_store(root: Path, n_train: int = 4, n_val: int = 2, dim: int = 8,
                 with_grid: bool = True) -> tuple[Path, Path]:
    """A tiny store via :class:`FeatureStore` (with 2x2 spatial grids) and its annotations."""
    rng = np.random.default_rng(0)
    fps, clip_len, stride, duration = 10.0, 4, 2, 12.0
    num_frames = num_sampled_frames(duration, fps)
    times = snippet_centers(num_frames, clip_len, stride, fps)
    db = {}
    prov = Provenance(backbone="unit-test", streams=("rgb",), feature_dim=dim, clip_len=clip_len, stride=stride,
                      fps=fps, weights={"rgb": {"file": None, "sha256": "random"}})
    with FeatureStore.create(root / "feats", prov) as writer:
        for i in range(n_train + n_val):
            anns, t = [], float(rng.uniform(0.3, 1.5))
            feats = rng.normal(0.0, 0.3, (len(times), dim)).astype(np.float32)
            while t < duration - 2.5:
                length, label = float(rng.uniform(1.0, 2.5)), int(rng.integers(2))
                inside = (times >= t) & (times <= t + length)
                feats[inside, label * 4:(label + 1) * 4] += 1.5
                anns.append({"label": CLASSES[label], "segment": [round(t, 2), round(t + length, 2)]})
                t += length + float(rng.uniform(1.0, 2.5))
            vid = f"vid{i:02d}"
            db[vid] = {"subset": "training" if i < n_train else "validation", "duration": duration,
                       "fps": fps, "annotations": anns}
            grid = np.repeat(feats[:, None, None, :], 2, 1).repeat(2, 2)
            writer.write(VideoFeatures(vid, feats, times, fps, clip_len, stride, num_frames, duration,
                                       spatial_grid=grid if with_grid else None))
    ann = root / "ann.json"
    ann.write_text(json.dumps({"version": "unit-test", "database": db}))
    return ann, root / "feats"


def test_cli_train_infer_evaluate_end_to_end(tmp_path):
    ann, feats = _write_store(tmp_path)
    (tmp_path / "talmts.yaml").write_text(CLI_CONFIG)
    run, pred, report = tmp_path / "run", tmp_path / "pred.json", tmp_path / "eval.json"
    runner = CliRunner()
    res = runner.invoke(cli, ["detect", "train", "--config", str(tmp_path / "talmts.yaml"), "--features",
                              str(feats), "--annotations", str(ann), "--out", str(run)])
    assert res.exit_code == 0, res.output
    epochs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs] == list(range(1, 7))
    assert all(np.isfinite(r["loss"]) for r in epochs) and epochs[-1]["loss"] < epochs[0]["loss"]
    assert {"loss_cls_refined", "loss_quality"} <= set(epochs[0])
    assert load_config(DetectConfig, run / "config.yaml").talmts.num_levels == 3

    res = runner.invoke(cli, ["detect", "infer", "--run", str(run), "--features", str(feats), "--subset",
                              "validation", "--out", str(pred)])
    assert res.exit_code == 0, res.output
    doc = json.loads(pred.read_text())
    assert set(doc["results"]) == {"vid04", "vid05"}
    dets = [d for v in doc["results"].values() for d in v]
    assert 0 < len(dets) <= 60
    assert all(d["label"] in CLASSES and 0.0 <= d["segment"][0] <= d["segment"][1] <= 12.0 for d in dets)
    assert doc["external_data"]["postprocess"]["method"] == "linear"

    res = runner.invoke(cli, ["evaluate", "--dataset", "anet", "--gt", str(ann), "--pred", str(pred), "--subset",
                              "validation", "--tiou", "0.3,0.5,0.7", "--json", str(report)])
    assert res.exit_code == 0, res.output
    result = json.loads(report.read_text())
    assert result["num_videos"] == 2 and result["average_over"] == [0.3, 0.5, 0.7]
    # the class-coded actions are easy: 6 epochs reach ~0.75 mAP (an untrained head scores ~0)
    assert result["average_mAP"] > 0.4, result["mAP"]


def test_cli_grid_config_without_grids_is_a_one_line_error(tmp_path, capsys):
    ann, feats = _write_store(tmp_path, n_train=2, n_val=1, with_grid=False)
    (tmp_path / "talmts.yaml").write_text(CLI_CONFIG)
    code = main(["detect", "train", "--config", str(tmp_path / "talmts.yaml"), "--features", str(feats),
                 "--annotations", str(ann), "--out", str(tmp_path / "run"), "--set", "talmts.grid_size=2",
                 "--set", "train.epochs=1"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error:") and "no spatial grid" in err and "--spatial-grid" in err
    assert "Traceback" not in err


def test_cli_trains_and_infers_with_spatial_grids_from_the_store(tmp_path, monkeypatch):
    ann, feats = _write_store(tmp_path)
    (tmp_path / "talmts.yaml").write_text(CLI_CONFIG)
    seen = []
    forward = TALMTS.forward

    def spy(self, features, mask=None, grid=None):
        seen.append(None if grid is None else tuple(grid.shape))
        return forward(self, features, mask, grid)

    monkeypatch.setattr(TALMTS, "forward", spy)
    run, pred = tmp_path / "run", tmp_path / "pred.json"
    grid_args = ["--set", "talmts.grid_size=2", "--set", "talmts.grid_dim=8", "--set", "train.epochs=2"]
    assert main(["detect", "train", "--config", str(tmp_path / "talmts.yaml"), "--features", str(feats),
                 "--annotations", str(ann), "--out", str(run), *grid_args]) == 0
    assert seen and all(shape is not None and shape[2:] == (2, 2, 8) for shape in seen)
    seen.clear()
    assert main(["detect", "infer", "--run", str(run), "--features", str(feats), "--subset", "validation",
                 "--out", str(pred)]) == 0
    assert seen and all(shape is not None and shape[1] == 32 for shape in seen)  # windows of 32 snippets
    assert set(json.loads(pred.read_text())["results"]) == {"vid04", "vid05"}
