"""HACS-2020 cascade Refine Network: cascade targets per stage, offsets, padding, ablation switches, learning."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tadkit.config import load_config
from tadkit.detect.config import DetectConfig, RefineConfig
from tadkit.detect.geometry import pairwise_iou
from tadkit.detect.heads import build_head
from tadkit.detect.heads.refine import (RefineNetwork, apply_offsets, cascade_targets, offset_targets,
                                        pad_proposals, widen)
from tadkit.detect.layers.non_local import NonLocal1d
from tadkit.errors import ConfigError

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = dict(hidden=8, fc_dim=8, bins=4, num_heads=2, mlp_ratio=1.0)


def _targets(*gts):
    return [{"segments": torch.tensor(g, dtype=torch.float32).reshape(-1, 2),
             "labels": torch.zeros(len(g), dtype=torch.long)} for g in gts]


# --------------------------------------------------------------------------- geometry
def test_cascade_targets_by_hand():
    segs = torch.tensor([[0.0, 10.0], [1.0, 10.0], [20.0, 24.0], [50.0, 60.0]])
    gt = torch.tensor([[0.0, 10.0], [20.0, 25.0]])
    iou, matched, pos = cascade_targets(segs, gt, 0.85)
    np.testing.assert_allclose(iou.numpy(), [1.0, 0.9, 0.8, 0.0], atol=1e-6)
    assert matched[:3].tolist() == [[0, 10], [0, 10], [20, 25]]
    assert pos.tolist() == [True, True, False, False]
    iou, matched, pos = cascade_targets(segs, torch.zeros(0, 2), 0.5)
    assert not pos.any() and torch.equal(matched, segs) and iou.eq(0).all()


@settings(max_examples=50, deadline=None)
@given(s=st.floats(-20, 20), w=st.floats(0.5, 30), gs=st.floats(-20, 20), gw=st.floats(0.5, 30))
def test_offsets_round_trip(s, w, gs, gw):
    seg = torch.tensor([[s, s + w]], dtype=torch.float64)
    gt = torch.tensor([[gs, gs + gw]], dtype=torch.float64)
    torch.testing.assert_close(apply_offsets(seg, offset_targets(seg, gt)), gt)


def test_apply_offsets_orders_ends_and_widen():
    out = apply_offsets(torch.tensor([[2.0, 4.0]]), torch.tensor([[2.0, -2.0]]))   # ends cross: 6 and 0
    assert out.tolist() == [[0.0, 6.0]]
    assert widen(torch.tensor([[2.0, 6.0]]), 0.25).tolist() == [[1.0, 7.0]]


# --------------------------------------------------------------------------- the head
def test_cascade_thresholds_are_applied_per_stage():
    head = RefineNetwork(RefineConfig(**TINY), 4)
    # proposals with IoU 0.55, 0.65, 0.75, 0.95 and 0.2 with the ground truth [0, 20]
    props = torch.tensor([[0.0, 11.0, 1.0], [0.0, 13.0, 1.0], [0.0, 15.0, 1.0], [0.0, 19.0, 1.0], [0.0, 4.0, 1.0]])
    out = head(torch.randn(1, 4, 24), None, proposals=[props])
    # fresh offset heads are the identity, so every module sees the same proposals
    for k in range(3):
        torch.testing.assert_close(out["stage_inputs"][0, k], props[:, :2])
    losses = head.loss(out, torch.ones(1, 24, dtype=torch.bool), _targets([[0.0, 20.0]]))
    assert [int(losses[f"num_pos_{k}"]) for k in (1, 2, 3)] == [4, 3, 2]


def test_each_module_refines_the_previous_modules_output():
    torch.manual_seed(0)
    head = RefineNetwork(RefineConfig(**TINY, stage_ious=[0.5, 0.7], score="product"), 4)
    with torch.no_grad():
        head.stages[0].offset.bias.copy_(torch.tensor([-0.1, 0.2]))
        head.stages[1].offset.bias.copy_(torch.tensor([0.05, 0.0]))
    props = torch.tensor([[2.0, 12.0, 0.5]])
    with torch.no_grad():
        out = head(torch.randn(1, 4, 20), None, proposals=[props])
    assert out["stage_inputs"][0, 1, 0].tolist() == pytest.approx([1.0, 14.0])       # [2 - 1, 12 + 2]
    assert out["segments"][0, 0].tolist() == pytest.approx([1.65, 14.0])              # + 0.05 × 13
    iou_last = torch.sigmoid(out["stage_iou_logits"][0, 1, 0])
    assert float(out["scores"][0, 0]) == pytest.approx(float(iou_last) * 0.5, rel=1e-5)  # score: product
    head.cfg.score = "iou"
    with torch.no_grad():
        out = head(torch.randn(1, 4, 20), None, proposals=[props])
    assert float(out["scores"][0, 0]) == pytest.approx(float(torch.sigmoid(out["stage_iou_logits"][0, 1, 0])))


def test_padded_batch_equals_each_sample_alone():
    torch.manual_seed(0)
    head = RefineNetwork(RefineConfig(**TINY), 6).eval()
    a, b = torch.randn(6, 16), torch.randn(6, 9)
    feats = torch.full((2, 6, 16), 3.0)                                     # garbage in the padding
    feats[0], feats[1, :, :9] = a, b
    mask = torch.arange(16)[None] < torch.tensor([[16], [9]])
    pa = torch.tensor([[1.0, 8.0, 0.9], [3.0, 14.0, 0.5], [0.0, 2.0, 0.1]])
    pb = torch.tensor([[2.0, 7.0, 0.8]])
    with torch.no_grad():
        out = head(feats, mask, proposals=[pa, pb])
        alone = head(b[None], None, proposals=[pb])
    assert out["valid"].tolist() == [[True, True, True], [True, False, False]]
    torch.testing.assert_close(out["segments"][1, :1], alone["segments"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["scores"][1, :1], alone["scores"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["action_logits"][1, :, :9], alone["action_logits"][0], atol=1e-5, rtol=1e-5)
    dets = head.decode(out, mask)
    assert [len(d) for d in dets] == [3, 1] and (dets[0].labels == 0).all()


@pytest.mark.parametrize("switch", ["action_score", "transformer", "lstm", "non_local"])
def test_each_ablation_switch_removes_its_module(switch):
    full = RefineNetwork(RefineConfig(**TINY), 4)
    cut = RefineNetwork(RefineConfig(**{**TINY, switch: False}), 4)
    attr = {"action_score": "action", "transformer": "encoder", "lstm": "lstm", "non_local": "non_local"}[switch]
    assert getattr(full.stages[0], attr) is not None and getattr(cut.stages[0], attr) is None
    assert cut.describe()["parameters"] < full.describe()["parameters"]
    out = cut(torch.randn(1, 4, 12), None, proposals=[torch.tensor([[1.0, 6.0, 1.0]])])
    losses = cut.loss(out, torch.ones(1, 12, dtype=torch.bool), _targets([[1.0, 5.0]]))
    assert ("loss_action_1" in losses) == (switch != "action_score")
    assert ("action_logits" in out) == (switch != "action_score")


def test_refine_network_improves_jittered_proposals():
    torch.manual_seed(0)
    t = 32
    x = torch.randn(1, 4, t) * 0.1
    x[0, 0, 8:21] += 1.0                                                     # the action: [7.5, 20.5]
    gt = torch.tensor([[7.5, 20.5]])
    g = torch.Generator().manual_seed(1)
    starts = 7.5 + torch.randn(24, generator=g) * 2
    ends = 20.5 + torch.randn(24, generator=g) * 2
    props = torch.stack([starts, ends, torch.rand(24, generator=g)], 1)
    head = build_head("refine", RefineConfig(**{**TINY, "hidden": 16, "fc_dim": 16}), 4, 1)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    mask = torch.ones(1, t, dtype=torch.bool)
    for _ in range(80):
        losses = head.loss(head(x, mask, proposals=[props]), mask, _targets([[7.5, 20.5]]))
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    out = head(x, mask, proposals=[props])
    before = pairwise_iou(props[:, :2], gt)[:, 0]
    after = pairwise_iou(out["segments"][0], gt)[:, 0]
    assert after.mean() > before.mean() + 0.1
    # the first module's IoU prediction ranks its input proposals (Spearman correlation)
    predicted = out["stage_iou_logits"][0, 0]
    rank = lambda v: v.argsort().argsort().float()  # noqa: E731
    assert torch.corrcoef(torch.stack([rank(predicted), rank(before)]))[0, 1] > 0.6


def test_refine_needs_proposals_and_handles_videos_without_any():
    head = RefineNetwork(RefineConfig(**TINY), 4)
    with pytest.raises(ConfigError, match="--from-run"):
        head(torch.randn(1, 4, 8), None)
    out = head(torch.randn(2, 4, 8), None, proposals=[torch.zeros(0, 3), torch.zeros(0, 3)])
    assert out["segments"].shape == (2, 0, 2) and [len(d) for d in head.decode(out, torch.ones(2, 8).bool())] == [0, 0]
    losses = head.loss(out, torch.ones(2, 8, dtype=torch.bool), _targets([[1.0, 3.0]], []))
    assert torch.isfinite(losses["loss"])
    boxes, scores, valid = pad_proposals([torch.tensor([[1.0, 2.0, 0.3]]), torch.zeros(0, 3)], torch.device("cpu"))
    assert boxes.shape == (2, 1, 2) and valid.tolist() == [[True], [False]] and scores[0, 0] == pytest.approx(0.3)


def test_non_local_block_starts_as_identity_and_ignores_masked_positions():
    torch.manual_seed(0)
    block = NonLocal1d(6)
    x = torch.randn(2, 6, 5)
    torch.testing.assert_close(block(x), x)
    torch.nn.init.normal_(block.out.weight)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    y = block(x, mask)
    x2 = x.clone()
    x2[1, :, 3:] = 100.0
    torch.testing.assert_close(block(x2, mask)[1, :, :3], y[1, :, :3])


def test_refine_config_section_and_validation():
    cfg = load_config(DetectConfig, None, ["head=refine", "refine.stage_ious=[0.5,0.7]", "refine.lstm=false"])
    assert cfg.refine.stage_ious == [0.5, 0.7] and cfg.refine.lstm is False
    head = build_head("refine", cfg.refine, 32, 5)
    assert len(head.stages) == 2 and head.class_agnostic and head.needs == {"proposals"}
    with pytest.raises(ValueError, match="stage_ious"):
        RefineConfig(stage_ious=[0.5, 1.2])
    with pytest.raises(ValueError, match="num_heads"):
        RefineConfig(hidden=10, num_heads=4)


def test_training_draws_train_proposals_per_video_and_inference_keeps_all():
    torch.manual_seed(0)
    head = RefineNetwork(RefineConfig(**TINY, train_proposals=2), 4)
    props = torch.tensor([[0.0, 4.0, 0.1], [1.0, 5.0, 0.2], [2.0, 6.0, 0.3], [3.0, 7.0, 0.4]])
    out = head(torch.randn(2, 4, 10), None, proposals=[props, props[:1]])
    assert out["valid"].sum(1).tolist() == [2, 1]
    drawn = out["stage_inputs"][0, 0][out["valid"][0]]
    assert all(any(torch.equal(row, p[:2]) for p in props) for row in drawn)   # rows of the input, no repeats
    assert not torch.equal(drawn[0], drawn[1])
    head.eval()
    assert head(torch.randn(2, 4, 10), None, proposals=[props, props[:1]])["valid"].sum(1).tolist() == [4, 1]
