"""SP-TAD head: level rule, SoI features, TFPN geometry, Hungarian matching, set loss, decode, CLI end to end."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tadkit.cli import cli, main
from tadkit.config import load_config
from tadkit.data.annotations import load_annotations
from tadkit.data.features import FeatureStore
from tadkit.data.synthetic import SynthFeatureConfig, synth_features
from tadkit.detect.config import DetectConfig, SPTADConfig
from tadkit.detect.geometry import segment_iou
from tadkit.detect.heads import InputInfo, build_head
from tadkit.detect.heads.sptad import (SPTAD, TFPN, Level, apply_deltas, fill_positions, level_rule, normalise_segments,
                                       pool_level, positions_to_index, resample, soi_features, to_grid)
from tadkit.detect.inputs import make_source
from tadkit.detect.layers.matching import hungarian_match, match_sets, matching_cost
from tadkit.detect.layers.pyramid import level_centers
from tadkit.errors import ConfigError
from tadkit.timeline import TimeAxis, grid_to_segments
from test_detect_talmts import CLASSES, _batch, _write_store  # the same tiny batch and store

pytestmark = [pytest.mark.usefixtures("torch_one_thread"),
              pytest.mark.filterwarnings("ignore:sptad. the features have no stored backbone levels")]

TINY = dict(dim=16, num_levels=4, num_proposals=12, num_heads=2, attn_heads=2, soi_bins=4, dynamic_dim=4,
            ffn_dim=32)


def _regular_level(values: torch.Tensor, stride: float, valid: int | None = None) -> Level:
    """A level over ``values (B, C, T)`` whose step ``j`` sits at ``(j + 0.5)·stride − 0.5`` grid units."""
    b, _, t = values.shape
    mask = torch.zeros(b, t, dtype=torch.bool)
    mask[:, :valid or t] = True
    pos = ((torch.arange(t) + 0.5) * stride - 0.5).expand(b, -1)
    return Level(values * mask[:, None, :], mask, pos.contiguous(), stride)


# --------------------------------------------------------------------------- level rule and geometry
def test_level_rule_follows_eq1():
    w = torch.tensor([1.0, 0.5, 0.26, 0.25, 0.2499, 0.125, 0.01, 0.0, 2.0, 0.7])
    # l = floor(3 + log2 w), clamped to [0, 3]
    assert level_rule(w, 4).tolist() == [3, 2, 1, 1, 0, 0, 0, 0, 3, 2]
    assert level_rule(w, 1).tolist() == [0] * 10
    assert level_rule(torch.tensor([1.0, 0.3]), 2).tolist() == [1, 0]


def test_positions_to_index_fill_and_pool_by_hand():
    pos = torch.tensor([[1.5, 5.5, 9.5, 13.5]])                                 # stride 4
    idx = positions_to_index(torch.tensor([[-0.5, 1.5, 3.5, 13.5, 17.5]]), pos, 4.0)
    np.testing.assert_allclose(idx.numpy(), [[-0.5, 0.0, 0.5, 3.0, 4.0]])         # extended linearly at both ends
    uneven = torch.tensor([[0.0, 1.0, 4.0]])
    np.testing.assert_allclose(positions_to_index(torch.tensor([[0.5, 2.5, 7.0]]), uneven, 1.0).numpy(),
                               [[0.5, 1.5, 3.0]])
    assert positions_to_index(torch.tensor([[3.0]]), torch.tensor([[1.0]]), 4.0).tolist() == [[0.5]]
    # padding positions are extrapolated from the last real step
    garbage = torch.tensor([[0.0, 2.0, 4.0, -7.0, 99.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False, False], [True, False, False, False, False]])
    assert fill_positions(garbage, mask, 3.0).tolist() == [[0, 2, 4, 6, 8], [1, 4, 7, 10, 13]]
    # a stride-2 pooling: cells at the mean of their two steps; odd tails pair with an extrapolated step
    pooled = pool_level(Level(torch.zeros(1, 1, 5), torch.tensor([[True] * 3 + [False] * 2]),
                              torch.tensor([[0.0, 2.0, 4.0, 6.0, 8.0]]), 2.0))
    assert pooled.positions.tolist() == [[1.0, 5.0, 9.0]] and pooled.mask.tolist() == [[True, True, False]]
    assert pooled.step == 4.0


def test_resample_is_linear_interpolation_at_the_finer_positions():
    coarse = _regular_level(torch.tensor([[[0.0, 10.0, 20.0]]]), 4.0)         # steps at 1.5, 5.5, 9.5
    fine = torch.tensor([[0.5, 1.5, 3.5, 9.5, 10.5, 11.5]])
    # inside: linear; within one step beyond an end: the end value (aligned RoI rule)
    np.testing.assert_allclose(resample(coarse.features, coarse, fine).numpy(),
                               [[[0.0, 0.0, 5.0, 20.0, 20.0, 20.0]]], atol=1e-6)


def _integral_reference(level: Level, b: int, start: float, end: float, bins: int) -> np.ndarray:
    """Oracle: each bin's mean of the level read as a function of grid time, by dense sampling.

    The function is piecewise linear through (positions[j], x[j]) over the real steps,
    holds the end value up to one step beyond each end, and is 0 further out.
    """
    x = level.features[b].double().numpy()
    n = int(level.mask[b].sum())
    pos = level.positions[b, :n].double().numpy()
    step0 = pos[1] - pos[0] if n > 1 else level.step
    step1 = pos[-1] - pos[-2] if n > 1 else level.step
    out = np.zeros((x.shape[0], bins))
    edges = np.linspace(start, end, bins + 1)
    for k in range(bins):
        g = np.linspace(edges[k], edges[k + 1], 4001)
        vals = np.stack([np.interp(g, pos, x[c, :n]) for c in range(x.shape[0])])
        outside = (g < pos[0] - step0) | (g > pos[-1] + step1)
        vals[:, outside] = 0.0
        out[:, k] = vals.mean(1)
    return out


def test_soi_features_match_an_integral_average_on_the_levels_the_rule_picks():
    g = torch.Generator().manual_seed(3)
    b, length = 2, 64
    pyramid = [_regular_level(torch.randn(b, 3, 64, generator=g), 1.0, 64),
               _regular_level(torch.randn(b, 3, 32, generator=g), 2.0, 25),
               _regular_level(torch.randn(b, 3, 16, generator=g), 4.0, 13)]
    lengths = torch.tensor([64.0, 50.0])
    segs = torch.tensor([[[0.10, 0.05], [0.5, 0.3], [0.9, 0.9], [0.02, 0.2]],
                         [[0.50, 0.12], [0.3, 0.4], [0.95, 0.6], [0.60, 1.0]]])  # (centre, width)
    eta, bins = 5.0, 4
    got = soi_features(pyramid, segs, lengths, eta, bins, samples=256).double().numpy()
    for i in range(b):
        for n in range(segs.shape[1]):
            c, w = segs[i, n].tolist()
            lev = int(level_rule(torch.tensor([w]), 3)[0])
            s, e = c - w / 2 - w / eta, c + w / 2 + w / eta
            ref = _integral_reference(pyramid[lev], i, s * float(lengths[i]) - 0.5, e * float(lengths[i]) - 0.5, bins)
            np.testing.assert_allclose(got[i, n], ref, atol=2e-3, err_msg=f"sample {i} proposal {n} level {lev}")


def test_soi_features_on_a_ramp_by_hand():
    # level values = step index, so a bin reads the index at its centre (inside the valid steps)
    ramp = _regular_level(torch.arange(16.0).reshape(1, 1, 16), 4.0)        # 64 cells at stride 4
    pyramid = [_regular_level(torch.zeros(1, 1, 64), 1.0), ramp]
    # width 0.75 -> level floor(1 + log2 0.75) = 0 would read zeros; width 0.5 on 2 levels -> level 0 too
    seg = torch.tensor([[[0.5, 1.0]]])                                       # whole sample -> top level
    out = soi_features(pyramid, seg, torch.tensor([64.0]), eta=1e9, bins=4, samples=1)[0, 0, 0]
    # bins of [-0.5, 63.5] have centres 7.5, 23.5, 39.5, 55.5 -> indices (g + 0.5)/4 − 0.5
    np.testing.assert_allclose(out.numpy(), [1.5, 5.5, 9.5, 13.5], atol=1e-5)
    small = soi_features(pyramid, torch.tensor([[[0.5, 0.25]]]), torch.tensor([64.0]), 1e9, 4, 1)
    assert small.abs().max() == 0  # width 1/4 -> level 0, the zero level


def test_apply_deltas_and_normalised_coordinates():
    seg = torch.tensor([[0.5, 0.2]])
    new = apply_deltas(seg, torch.tensor([[1.0, math.log(2.0)]]))
    np.testing.assert_allclose(new.numpy(), [[0.6, 0.4]], atol=1e-6)       # centre + 1/2·0.2, width × 2
    lengths = torch.tensor([10.0])
    np.testing.assert_allclose(to_grid(torch.tensor([[[0.0, 1.0]]]), lengths).numpy(), [[[-0.5, 9.5]]])
    np.testing.assert_allclose(normalise_segments(torch.tensor([[-0.5, 9.5], [2.0, 4.5]]), 10.0).numpy(),
                               [[0.0, 1.0], [0.25, 0.5]])


# --------------------------------------------------------------------------- TFPN
def _levels(b: int = 2, t: int = 32, valid: int = 20, dims=(5, 6, 7)):
    """Three backbone levels at strides 1/2, 1, 2 snippets (steps of I3D Mixed_3c / 4f / 5c at stride 4)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for d, s in zip(dims, (0.5, 1.0, 2.0)):
        n = int(t / s)
        mask = torch.zeros(b, n, dtype=torch.bool)
        mask[0] = True
        mask[1, :int(math.ceil(valid / s))] = True
        pos = ((torch.arange(n) + 0.5) * s - 0.5).expand(b, -1)
        out.append(SimpleNamespace(features=torch.randn(b, d, n, generator=g), mask=mask, positions=pos))
    return out


def test_tfpn_variants_shapes_positions_and_padding():
    lv = [Level(x.features, x.mask, x.positions, 1.0) for x in _levels()]
    inter = TFPN("inter", [5, 6, 7], 8, 4)(lv)
    assert [tuple(x.features.shape) for x in inter] == [(2, 8, 64), (2, 8, 32), (2, 8, 16), (2, 8, 8)]
    # the max-pooled fourth level: cells at the mean of two level-2 steps (stride 4 snippets)
    np.testing.assert_allclose(inter[3].positions[0].numpy(), np.arange(8) * 4 + 1.5)
    high = TFPN("high", [5, 6, 7], 8, 4)(lv)
    assert [x.features.shape[-1] for x in high] == [16, 8, 4, 2]
    # strided convs (kernel 3, padding 1): cell j of level l sits on step j·2^l of the last input level,
    # the pyramid's shared geometry (level_centers), not between two steps as a pooled cell does
    base = lv[-1].positions[0]
    for level, x in enumerate(high):
        np.testing.assert_allclose(x.positions[0].numpy(), base[level_centers(16 >> level, 2 ** level).long()])
    np.testing.assert_allclose(high[1].positions[0].numpy(), np.arange(8) * 4 + 0.5)
    single = TFPN("single", [5, 6, 7], 8, 4)(lv)
    assert len(single) == 1 and single[0].features.shape == (2, 8, 16)
    # sample 1 has 20 real snippets: a cell is real when its first step is
    for pyramid, real in ((inter, [40, 20, 10, 5]), (high, [10, 5, 3, 2]), (single, [10])):
        assert [int(x.mask[1].sum()) for x in pyramid] == real
        for x in pyramid:
            assert torch.all(x.features.permute(0, 2, 1)[~x.mask] == 0) and x.mask[0].all()
    with pytest.raises(Exception, match="fewer than the 3 backbone levels"):
        TFPN("inter", [5, 6, 7], 8, 2)


def test_inter_level_head_reads_levels_and_padding_never_matters():
    torch.manual_seed(0)
    head = SPTAD(SPTADConfig(**TINY), 12, 3, level_dims=[5, 6, 7]).eval()
    assert head.needs == {"levels"} and head.tfpn_mode == "inter" and head.notice is None
    x = torch.randn(2, 12, 32)
    mask = torch.ones(2, 32, dtype=torch.bool)
    mask[1, 20:] = False
    levels = _levels()
    out = head(x, mask, levels=levels)
    assert out["logits"].shape == (2, 2, 12, 3) and out["act_logits"].shape == (2, 3)
    assert out["lengths"].tolist() == [32.0, 20.0]
    # garbage in the padding of every level changes nothing
    for lv in levels:
        lv.features = lv.features.masked_fill(~lv.mask[:, None, :], 1e3)
    again = head(x, mask, levels=levels)
    torch.testing.assert_close(again["logits"], out["logits"])
    torch.testing.assert_close(again["act_logits"], out["act_logits"])
    with pytest.raises(Exception, match="built for 3 backbone levels"):
        head(x, mask)


def test_levels_must_come_finest_first():
    lv = _levels()
    head = SPTAD(SPTADConfig(**TINY), 12, 3, level_dims=[7, 5])
    x, mask = torch.randn(2, 12, 32), torch.ones(2, 32, dtype=torch.bool)
    with pytest.raises(ConfigError, match="finest first"):
        head(x, mask, levels=[lv[2], lv[0]])


def test_without_levels_inter_falls_back_to_single_with_one_notice():
    with pytest.warns(UserWarning, match="single-level TFPN variant") as caught:
        head = SPTAD(SPTADConfig(**TINY), 12, 3)
    assert len(caught) == 1
    assert head.tfpn_mode == "single" and head.needs == frozenset() and "notice" in head.describe()
    assert head.describe()["pyramid_levels"] == 1
    assert SPTAD(SPTADConfig(**{**TINY, "tfpn": "high"}), 12, 3).describe()["pyramid_levels"] == 4


# --------------------------------------------------------------------------- matching
def test_matching_cost_by_hand():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    segs = torch.tensor([[0.1, 0.3], [0.5, 0.9]])
    gt_seg = torch.tensor([[0.2, 0.4]])
    cost = matching_cost(logits, segs, torch.tensor([1]), gt_seg, cls_weight=2, l1_weight=5, giou_weight=2,
                         alpha=0.25, gamma=2.0)

    def expected(logit, seg):
        p = 1 / (1 + math.exp(-logit))
        focal = 0.25 * (1 - p) ** 2 * -math.log(p) - 0.75 * p ** 2 * -math.log(1 - p)
        l1 = abs(seg[0] - 0.2) + abs(seg[1] - 0.4)
        inter = max(0.0, min(seg[1], 0.4) - max(seg[0], 0.2))
        union = (seg[1] - seg[0]) + 0.2 - inter
        hull = max(seg[1], 0.4) - min(seg[0], 0.2)
        giou = inter / union - (hull - union) / hull
        return 2 * focal + 5 * l1 - 2 * giou

    np.testing.assert_allclose(cost.numpy(), [[expected(2.0, (0.1, 0.3))], [expected(0.5, (0.5, 0.9))]], rtol=1e-5)
    assert matching_cost(logits, segs, torch.zeros(0, dtype=torch.long), torch.zeros(0, 2)).shape == (2, 0)


def test_hungarian_finds_the_global_optimum_not_the_greedy_one():
    cost = torch.tensor([[1.0, 2.0], [1.0, 10.0]])      # greedy: 0->0, 1->1 (11); optimum: 0->1, 1->0 (3)
    rows, cols = hungarian_match(cost)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]


def test_hungarian_more_proposals_than_ground_truth_and_ties():
    cost = torch.tensor([[5.0, 5.0], [0.0, 9.0], [9.0, 9.0], [3.0, 1.0], [5.0, 5.0]])
    rows, cols = hungarian_match(cost)
    assert rows.tolist() == [1, 3] and cols.tolist() == [0, 1]
    tied = torch.ones(6, 3)
    rows, cols = hungarian_match(tied)
    assert len(rows) == 3 and len(set(rows.tolist())) == 3 and sorted(cols.tolist()) == [0, 1, 2]
    assert hungarian_match(tied)[0].tolist() == rows.tolist()          # deterministic
    rows, cols = hungarian_match(torch.ones(2, 4))                     # more ground truth than proposals
    assert len(rows) == 2 and len(set(cols.tolist())) == 2


def test_matching_without_ground_truth_or_with_nan():
    rows, cols = hungarian_match(torch.zeros(5, 0))
    assert rows.numel() == 0 and cols.numel() == 0
    rows, cols = match_sets(torch.zeros(4, 3), torch.rand(4, 2), torch.zeros(0, dtype=torch.long), torch.zeros(0, 2))
    assert rows.numel() == 0
    with pytest.raises(ValueError, match="NaN"):
        hungarian_match(torch.tensor([[0.0, float("nan")]]))


def test_matching_trades_class_against_location():
    # proposal 0 sits on the ground truth but is sure of the wrong class; proposal 1 is nearby and right
    logits = torch.tensor([[-6.0, 6.0], [6.0, -6.0]])
    segs = torch.tensor([[0.2, 0.4], [0.22, 0.42]])
    gt_labels, gt = torch.tensor([0]), torch.tensor([[0.2, 0.4]])
    assert match_sets(logits, segs, gt_labels, gt)[0].tolist() == [1]
    assert match_sets(logits, segs, gt_labels, gt, cls_weight=0.0)[0].tolist() == [0]


# --------------------------------------------------------------------------- loss and decode
@pytest.mark.parametrize("num_heads", [1, 2, 4, 6])
def test_auxiliary_losses_on_every_head(num_heads):
    torch.manual_seed(0)
    head = SPTAD(SPTADConfig(**{**TINY, "num_heads": num_heads}), 12, 3)
    x, mask, targets, _ = _batch()
    out = head(x, mask)
    assert out["logits"].shape[0] == num_heads and out["segments"].shape[0] == num_heads
    terms = head.loss(out, mask, targets)
    for h in range(num_heads):
        assert {f"loss_cls_h{h}", f"loss_l1_h{h}", f"loss_giou_h{h}"} <= set(terms)
        assert terms[f"loss_giou_h{h}"] > 0
    assert f"loss_cls_h{num_heads}" not in terms and terms["num_gt"] == 4
    terms["loss"].backward()
    # a head's classifier and last regression layer feed nothing downstream: only its own loss trains them
    for stage in head.heads:
        assert stage.classifier.weight.grad.abs().sum() > 0
        assert stage.regressor[-1].weight.grad.abs().sum() > 0
    assert head.proposal_segments.weight.grad.abs().sum() > 0 and head.proposal_features.weight.grad.abs().sum() > 0


def test_each_head_is_matched_and_weighted_separately():
    head = SPTAD(SPTADConfig(**{**TINY, "num_heads": 2, "act_weight": 0.0}), 12, 3)
    x, mask, targets, _ = _batch()
    out = head(x, mask)
    terms = head.loss(out, mask, targets)
    cfg = head.cfg
    expected = sum(cfg.cls_weight * terms[f"loss_cls_h{h}"] + cfg.l1_weight * terms[f"loss_l1_h{h}"]
                   + cfg.giou_weight * terms[f"loss_giou_h{h}"] for h in range(2))
    torch.testing.assert_close(terms["loss"].detach(), expected)
    # the last head's terms equal a direct computation with its own matching
    logits, segs, lengths = out["logits"][1].detach(), out["segments"][1].detach(), out["lengths"]
    l1 = 0.0
    for i, t in enumerate(targets):
        gt = normalise_segments(t["segments"], lengths[i])
        rows, cols = match_sets(logits[i], segs[i], t["labels"], gt)
        l1 += float((segs[i][rows] - gt[cols]).abs().sum())
    assert terms["loss_l1_h1"].item() == pytest.approx(l1 / 4, rel=1e-5)


def test_clip_level_head_targets_and_switch():
    head = SPTAD(SPTADConfig(**TINY), 12, 3)
    x, mask, targets, _ = _batch()
    out = head(x, mask)
    present = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    want = torch.nn.functional.binary_cross_entropy_with_logits(out["act_logits"], present)
    torch.testing.assert_close(head.loss(out, mask, targets)["loss_act"], want.detach())
    off = SPTAD(SPTADConfig(**{**TINY, "cls_head": False}), 12, 3)
    out = off(x, mask)
    assert "act_logits" not in out and "loss_act" not in off.loss(out, mask, targets) and off.action is None


def test_loss_without_ground_truth_is_finite_and_trains_background():
    head = SPTAD(SPTADConfig(**TINY), 12, 3)
    x, mask, _, _ = _batch()
    empty = [{"segments": torch.zeros(0, 2), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    terms = head.loss(head(x, mask), mask, empty)
    assert torch.isfinite(terms["loss"]) and terms["num_gt"] == 1 and terms["loss_l1_h0"] == 0
    terms["loss"].backward()
    assert head.heads[0].classifier.bias.grad.abs().sum() > 0


def test_loss_decreases_and_decode_finds_the_actions():
    torch.manual_seed(0)
    head = SPTAD(SPTADConfig(**{**TINY, "tfpn": "high", "num_levels": 3}), 12, 3)
    x, mask, targets, _ = _batch()
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        terms = head.loss(head(x, mask), mask, targets)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(float(terms["loss"].detach()))
    assert losses[-1] < 0.3 * losses[0], losses[::5]
    head.eval()
    for det, t in zip(head.decode(head(x, mask), mask, topk=5), targets):
        ious = segment_iou(torch.tensor(det.segments[:1]), t["segments"])  # the top candidate vs each action
        assert ious.max() > 0.5, (det.segments[0], t["segments"])


def test_decode_maps_normalised_segments_to_grid_and_seconds_at_window_edges():
    head = SPTAD(SPTADConfig(**{**TINY, "num_heads": 1}), 12, 2)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    lengths = torch.tensor([16.0, 10.0])     # a full window and a short padded sample (a video's only window)
    outputs = {
        "logits": torch.tensor([[[[logit(0.8), logit(0.1)], [logit(0.3), logit(0.6)]],
                                 [[logit(0.9), logit(0.2)], [logit(0.5), logit(0.5)]]]]),
        "segments": torch.tensor([[[[0.0, 0.25], [0.9, 1.2]], [[-0.1, 0.5], [0.5, 1.0]]]]),
        "act_logits": torch.tensor([[logit(0.5), logit(1 - 1e-7)], [logit(1.0 - 1e-7), logit(0.5)]]),
        "lengths": lengths,
    }
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0] = True
    mask[1, :10] = True
    d0, d1 = head.decode(outputs, mask, topk=3)
    # sample 0: scores 0.8·0.5, 0.6·1, 0.3·0.5 -> top 3; segments clipped to [0, 1] then x·16 − 0.5
    np.testing.assert_allclose(d0.scores, [0.6, 0.4, 0.15], atol=1e-6)
    assert d0.labels.tolist() == [1, 0, 0]
    np.testing.assert_allclose(d0.segments, [[13.9, 15.5], [-0.5, 3.5], [13.9, 15.5]], atol=1e-5)
    np.testing.assert_allclose(d1.segments[0], [-0.5, 4.5], atol=1e-5)   # 0.9: [max(0, -0.1), 0.5] · 10 − 0.5
    # in seconds: a window at snippet 40 of a video with snippets every 0.5 s from 0.25 s
    video = TimeAxis(0.25, 0.5, 56)
    window = video.window(40, 16)
    np.testing.assert_allclose(grid_to_segments(d0.segments[1:2], window, 28.0), [[20.0, 22.0]])  # starts on its edge
    np.testing.assert_allclose(grid_to_segments(d0.segments[:1], window, 28.0), [[27.2, 28.0]])   # the video's end
    short = TimeAxis(0.25, 0.5, 10)                                      # a 5 s video in one padded window
    np.testing.assert_allclose(grid_to_segments(d1.segments[:1], short, 5.0), [[0.0, 2.5]])


def test_ensembles_pool_the_runs_proposals_with_weighted_scores():
    torch.manual_seed(0)
    x, mask, _, _ = _batch()
    runs = [SPTAD(SPTADConfig(**TINY), 12, 3).eval() for _ in range(2)]
    outs = [r(x, mask) for r in runs]
    pooled = runs[0].average_outputs(outs, [1.0, 3.0])
    assert pooled["logits"].shape == (1, 2, 24, 3) and pooled["segments"].shape == (1, 2, 24, 2)
    k = 24 * 3
    got = runs[0].decode(pooled, mask, topk=k)
    for i in range(2):  # the union of both runs' candidates, the first run's scores x 1/3
        parts = [runs[j].decode(outs[j], mask, topk=k)[i] for j in range(2)]
        scores = np.concatenate([parts[0].scores / 3.0, parts[1].scores])
        np.testing.assert_allclose(np.sort(got[i].scores), np.sort(scores), rtol=1e-4, atol=1e-7)
        segs = np.concatenate([parts[0].segments, parts[1].segments])
        np.testing.assert_allclose(np.sort(got[i].segments, 0), np.sort(segs, 0), atol=1e-5)
    with pytest.raises(ValueError, match="weights"):
        runs[0].average_outputs(outs, [1.0])


# --------------------------------------------------------------------------- registry and CLI
def test_registry_builds_sptad_from_the_engines_input_info():
    head = build_head("sptad", SPTADConfig(**TINY), 12, 3, inputs=InputInfo(("x2", "x1"), (5, 6)))
    assert isinstance(head, SPTAD) and head.describe()["heads"] == 2 and head.level_dims == [5, 6]
    assert head.needs == {"levels"} and head.tfpn.num_outputs == 4
    with pytest.warns(UserWarning, match="single-level"):
        assert build_head("sptad", SPTADConfig(**TINY), 12, 3, inputs=InputInfo()).needs == frozenset()
    with pytest.raises(ValueError, match="divisible"):
        SPTADConfig(dim=10, attn_heads=4)
    with pytest.raises(ConfigError, match="key 'sptad.eta' must be > 0"):
        load_config(DetectConfig, None, ["sptad.eta=0"])


CONFIGS = Path(__file__).parents[1] / "configs" / "sptad"


def test_configs_hold_the_papers_recipe_and_its_cpu_size():
    paper = {name: load_config(DetectConfig, CONFIGS / f"{name}.yaml") for name in ("thumos14", "anet")}
    cpu = {name: load_config(DetectConfig, CONFIGS / f"{name}_cpu.yaml") for name in ("thumos14", "anet")}
    for name, cfg in {**paper, **{k + "_cpu": v for k, v in cpu.items()}}.items():
        assert cfg.head == "sptad" and cfg.sptad.tfpn == "inter" and cfg.sptad.num_heads == 4 and cfg.sptad.cls_head
        assert (cfg.sptad.eta, cfg.sptad.cls_weight, cfg.sptad.l1_weight, cfg.sptad.giou_weight) == (5.0, 2.0, 5.0, 2.0)
        assert cfg.data.levels == ["Mixed_3c", "Mixed_4f", "Mixed_5c"] and cfg.data.optional_levels, name
        assert (cfg.optim.name, cfg.optim.weight_decay, cfg.train.batch_size) == ("adamw", 1e-4, 16), name
        assert cfg.optim.no_decay == ["norm", "embedding"] and cfg.postprocess.method == "gaussian"
    for cfg in paper.values():  # sec. 4.1: lr 1e-4 for 12 epochs, then 1e-5 for 4
        assert (cfg.sptad.dim, cfg.optim.lr, cfg.train.epochs, cfg.schedule.milestones) == (256, 1e-4, 16, [12])
    thumos, anet = paper["thumos14"], paper["anet"]
    assert (thumos.data.mode, thumos.data.length, thumos.data.train_stride, thumos.data.infer_stride) == \
        ("window", 256, 30, 128)
    assert (thumos.sptad.num_proposals, anet.sptad.num_proposals, anet.data.mode) == (50, 100, "resize")
    for name, cfg in cpu.items():  # the same recipe, narrower and shorter
        assert cfg.data == paper[name].data and cfg.sptad.num_proposals == paper[name].sptad.num_proposals
        assert cfg.sptad.dim < paper[name].sptad.dim and cfg.train.epochs < paper[name].train.epochs
    head = build_head("sptad", thumos.sptad, 64, 20, inputs=InputInfo(tuple(thumos.data.levels), (960, 1664, 2048)))
    assert head.tfpn.num_outputs == 4 and head.describe()["proposals"] == 50


CLI_CONFIG = """\
head: sptad
sptad: {dim: 16, num_levels: 4, num_proposals: 10, num_heads: 2, attn_heads: 2, soi_bins: 4, dynamic_dim: 4,
        ffn_dim: 32}
data: {mode: window, length: 32, train_stride: 8, infer_stride: 16, min_ioi: 0.5, train_subset: training,
       test_subset: validation, levels: [x2, x1, x0.5], optional_levels: true}
optim: {name: adamw, lr: 0.005, weight_decay: 0.0001, no_decay: [norm, embedding]}
schedule: {name: constant}
train: {epochs: 12, batch_size: 4, log_every: 0, checkpoint_every: 100}
postprocess: {method: gaussian, sigma: 0.5, max_per_video: 30}
"""


def test_cli_train_infer_evaluate_on_levels_and_the_fallback_without_them(tmp_path, capsys):
    ann, snippets_only = _write_store(tmp_path, n_train=6, with_grid=False)
    levels = tmp_path / "levels"  # the same timeline, with levels of 2, 1 and 1/2 steps per snippet
    synth_features(load_annotations(ann), levels, SynthFeatureConfig(feature_dim=8, clip_len=4, stride=2, fps=10.0,
                                                                      levels=(2, 1, 0.5), signal=3.0))
    (tmp_path / "sptad.yaml").write_text(CLI_CONFIG)
    run, pred, report = tmp_path / "run", tmp_path / "pred.json", tmp_path / "eval.json"
    runner = CliRunner()
    train = ["detect", "train", "--config", str(tmp_path / "sptad.yaml"), "--annotations", str(ann)]
    res = runner.invoke(cli, train + ["--features", str(levels), "--out", str(run)])
    assert res.exit_code == 0, res.output
    assert "single-level" not in res.output
    meta = json.loads((run / "run.json").read_text())
    assert meta["input_info"]["level_names"] == ["x2", "x1", "x0.5"] and meta["input_info"]["level_dims"] == [8] * 3
    epochs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if '"epoch"' in x]
    epochs = [r for r in epochs if r.get("event") == "epoch"]
    assert len(epochs) == 12 and epochs[-1]["loss"] < epochs[0]["loss"]
    assert {"loss_giou_h0", "loss_giou_h1", "loss_act"} <= set(epochs[0])

    res = runner.invoke(cli, ["detect", "infer", "--run", str(run), "--features", str(levels), "--subset", "validation",
                              "--out", str(pred)])
    assert res.exit_code == 0, res.output
    doc = json.loads(pred.read_text())
    assert set(doc["results"]) == {"vid06", "vid07"}
    dets = [d for v in doc["results"].values() for d in v]
    assert 0 < len(dets) <= 60
    assert all(d["label"] in CLASSES and 0.0 <= d["segment"][0] <= d["segment"][1] <= 12.0 for d in dets)
    res = runner.invoke(cli, ["evaluate", "--dataset", "anet", "--gt", str(ann), "--pred", str(pred), "--subset",
                              "validation", "--tiou", "0.3,0.5,0.7", "--json", str(report)])
    assert res.exit_code == 0, res.output
    result = json.loads(report.read_text())
    assert result["num_videos"] == 2
    assert result["average_mAP"] > 0.3, result["mAP"]  # 12 epochs reach ~0.54; an untrained head ~0

    # ActivityNet's recipe: videos resized (levels resized with them), 100 proposals
    anet = tmp_path / "anet"
    res = runner.invoke(cli, ["detect", "train", "--config", str(CONFIGS / "anet_cpu.yaml"), "--annotations", str(ann),
                              "--features", str(levels), "--out", str(anet), "--set", "data.levels=[x2,x1,x0.5]",
                              "--set", "data.length=48", "--set", "train.epochs=1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["detect", "infer", "--run", str(anet), "--features", str(levels), "--subset",
                              "validation", "--out", str(tmp_path / "anet.json")])
    assert res.exit_code == 0, res.output
    assert len(json.loads((tmp_path / "anet.json").read_text())["results"]["vid06"]) > 0

    # a store without levels: the single-level variant, with one line saying so
    res = runner.invoke(cli, train + ["--features", str(snippets_only), "--out", str(tmp_path / "fallback"),
                                      "--set", "train.epochs=1"])
    assert res.exit_code == 0, res.output
    assert res.output.count("single-level TFPN variant") == 1
    assert json.loads((tmp_path / "fallback" / "run.json").read_text())["input_info"]["level_names"] == []
    code = main(train + ["--features", str(snippets_only), "--out", str(tmp_path / "strict"),
                         "--set", "data.optional_levels=false"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error:") and "no stored level 'x2'" in err and "Traceback" not in err


def test_optional_levels_go_by_the_stores_provenance_not_its_first_file(tmp_path):
    ann, snippets_only = _write_store(tmp_path, n_train=2, with_grid=False)
    levels = tmp_path / "levels"
    synth_features(load_annotations(ann), levels, SynthFeatureConfig(feature_dim=4, clip_len=4, stride=2, fps=10.0,
                                                                      levels=(2, 1)))
    first = sorted((levels / "videos").glob("*.h5"))[0]
    with h5py.File(first, "r+") as f:  # the first video's file fails its check
        f.attrs["video_id"] = "someone else"
    cfg = load_config(DetectConfig, None, ["data.levels=[x2,x1]", "data.optional_levels=true"])
    assert make_source(cfg, [FeatureStore.open(levels)]).level_names == ["x2", "x1"]
    assert make_source(cfg, [FeatureStore.open(snippets_only)]).level_names == []
