"""MLTPN head: anchors and target assignment by hand, shapes, loss, decoding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tadkit.detect.config import MLTPNConfig
from tadkit.detect.heads import HEADS, build_head, get_head
from tadkit.detect.heads.mltpn import (MLTPN, TemporalHModule, anchor_ratios, anchor_validity, assign_targets,
                                       build_mltpn, decode_segments, generate_anchors, mine_negatives)
from tadkit.errors import ConfigError

from oracle_pyramid import conv_geometry, receptive_centres


pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = dict(embed_dim=8, transform_k1=4, transform_k2=4, thm_channels=8, thm_out_channels=8,
            num_thms=2, num_scales=3, mfm_reduction=4, head_squeeze=2)


def test_anchor_generation_hand_values():
    a = generate_anchors([2, 2], [4, 8], [0.5, 1.0], base=1.0)
    # scale 0: centres 0, 4, widths 2 and 4; scale 1: centres 0, 8, widths 4 and 8
    expected = [[-1, 1], [-2, 2], [3, 5], [2, 6], [-2, 2], [-4, 4], [6, 10], [4, 12]]
    np.testing.assert_allclose(a.numpy(), expected)


def test_anchor_centres_are_the_receptive_field_centres():
    head = build_head("mltpn", MLTPNConfig(**{**TINY, "num_scales": 4}), in_dim=6, num_classes=3).eval()
    convs = [conv_geometry(head.base[0]), conv_geometry(head.base[2])]
    convs += [conv_geometry(block[0]) for block in head.thms[0].encoder]  # the THM encoder: (3,1) s(2,1) p(1,0)
    length = 512
    anchors = head(torch.randn(1, 6, length))["anchors"].reshape(-1, len(head.ratios), 2)
    centres = anchors.mean(-1)
    assert torch.all(centres == centres[:, :1])  # every ratio of a cell shares its centre
    offset = 0
    for scale, s in enumerate(head.strides()):
        n = length // s
        oracle = receptive_centres(convs[:2 + scale], length)
        assert len(oracle) >= 2, (scale, oracle)
        for j, centre in oracle.items():
            assert float(centres[offset + j, 0]) == centre
        offset += n


def test_anchor_ratios_config_switches():
    assert anchor_ratios(MLTPNConfig()) == pytest.approx([0.5 * 2 ** (k / 2) for k in range(7)])
    assert len(anchor_ratios(MLTPNConfig(num_anchors=5))) == 5
    assert anchor_ratios(MLTPNConfig(num_anchors=2, anchor_ratios=[1, 3])) == [1.0, 3.0]
    with pytest.raises(ValueError, match="num_anchors"):
        MLTPNConfig(num_anchors=3, anchor_ratios=[1.0])


def test_assign_targets_hand_case():
    anchors = torch.tensor([[0.0, 4.0], [2.0, 6.0], [10.0, 20.0], [30.0, 31.0], [50.0, 60.0]])
    gt = torch.tensor([[0.0, 5.0], [29.0, 40.0]])
    labels = torch.tensor([3, 1])
    lab, matched, max_iou = assign_targets(anchors, gt, labels, pos_iou=0.5)
    # IoUs: a0-g0 4/5, a1-g0 3/6, a2 none, a3-g1 1/11 (forced: g1's best), a4 none
    np.testing.assert_allclose(max_iou.numpy(), [0.8, 0.5, 0.0, 1 / 11, 0.0], rtol=1e-6)
    assert lab.tolist() == [4, 4, 0, 2, 0]
    assert matched.tolist() == [0, 0, -1, 1, -1]
    valid = torch.tensor([True, True, True, False, True])
    lab, matched, _ = assign_targets(anchors, gt, labels, pos_iou=0.5, valid=valid)
    assert lab.tolist() == [4, 4, 0, -1, 0]  # g1's only overlapping anchor is padding: ignored


def test_assign_targets_without_ground_truth_is_all_background():
    anchors = generate_anchors([3], [4], [1.0])
    lab, matched, max_iou = assign_targets(anchors, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    assert lab.tolist() == [0, 0, 0] and matched.tolist() == [-1, -1, -1]


@pytest.mark.parametrize("classifier", ["softmax", "sigmoid"])
def test_twin_segments_train_both_classes_alike(classifier):
    # THUMOS14 annotates every CliffDiving instance as Diving too: both classes need the same targets
    torch.manual_seed(0)
    head = build_head("mltpn", MLTPNConfig(**{**TINY, "classifier": classifier}), in_dim=6, num_classes=3)
    out = head(torch.randn(1, 6, 64))
    logits = torch.zeros_like(out["cls_logits"], requires_grad=True)  # every class equally likely
    twin, labels = torch.tensor([[8.0, 24.0], [8.0, 24.0]]), torch.tensor([0, 2])
    head.loss({**out, "cls_logits": logits}, None, [{"segments": twin, "labels": labels}])["loss"].backward()
    pos = assign_targets(out["anchors"], twin, labels)[0] > 0
    assert pos.sum() >= 2
    k = 1 if classifier == "softmax" else 0  # logit of class 0 (the softmax has background first)
    grad = logits.grad[0, pos]
    assert torch.all(grad[:, k] < 0)                   # both twin classes are pushed up ...
    torch.testing.assert_close(grad[:, k], grad[:, k + 2])  # ... by the same amount on every positive
    assert torch.all(grad[:, k + 1] > 0)               # the third class is pushed down


def test_hard_negative_mining_quota():
    labels = torch.tensor([[1, 0, 0, 0, 0, -1], [0, 0, 0, 0, 0, 0]])
    ce = torch.tensor([[9.0, 1.0, 5.0, 3.0, 0.5, 99.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    got = mine_negatives(ce, labels, ratio=2)
    assert got.tolist() == [[False, False, True, True, False, False],
                            [False, False, False, False, True, True]]
    assert mine_negatives(ce, labels, ratio=0).sum() == 10


def test_decode_inverts_perfect_deltas_and_validity():
    anchors = torch.tensor([[0.0, 4.0], [4.0, 12.0]])
    deltas = torch.tensor([[0.25, 0.0], [0.0, float(np.log(0.5))]])
    np.testing.assert_allclose(decode_segments(anchors, deltas).numpy(), [[1.0, 5.0], [6.0, 10.0]], rtol=1e-6)
    mask = torch.tensor([[True] * 6 + [False] * 10])
    assert anchor_validity(anchors, mask).tolist() == [[True, False]]  # centres 2 and 8; valid up to 5.5


def test_thm_shapes_halve_time_keep_width():
    thm = TemporalHModule(6, 8, 5, num_scales=4)
    outs = thm(torch.randn(2, 6, 13, 7))
    assert [tuple(o.shape) for o in outs] == [(2, 5, 13, 7), (2, 5, 7, 7), (2, 5, 4, 7), (2, 5, 2, 7)]


def test_head_forward_loss_backward_decode():
    torch.manual_seed(0)
    head = build_head("mltpn", MLTPNConfig(**TINY), in_dim=6, num_classes=3)
    assert isinstance(head, MLTPN)
    x = torch.randn(2, 6, 40)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 25:] = False
    out = head(x, mask)
    a = (10 + 5 + 3) * 7  # t = 40/4 = 10 cells, then 5, 3
    assert out["cls_logits"].shape == (2, a, 4) and out["deltas"].shape == (2, a, 2)
    assert out["anchors"].shape == (a, 2)
    targets = [{"segments": torch.tensor([[2.0, 9.0], [20.0, 36.0]]), "labels": torch.tensor([0, 2])},
               {"segments": torch.zeros(0, 2), "labels": torch.zeros(0, dtype=torch.long)}]
    losses = head.loss(out, mask, targets)
    assert set(losses) >= {"loss", "loss_cls", "loss_conf", "loss_reg"}
    assert torch.isfinite(losses["loss"]) and losses["num_pos"] >= 2
    losses["loss"].backward()
    assert all(p.grad is not None for p in head.cls_heads.parameters())
    dets = head.decode(out, mask, topk=15, min_score=0.0)
    assert len(dets) == 2 and len(dets[0]) == 15
    assert np.all(np.diff(dets[0].scores) <= 0) and dets[0].labels.max() < 3
    assert len(dets[1]) == 15
    unmasked = head(x)  # no mask: every anchor of every sample counts
    assert torch.isfinite(head.loss(unmasked, None, targets)["loss"])
    assert [len(d) for d in head.decode(unmasked, None, topk=5)] == [5, 5]
    mask[1] = False  # no real snippet: nothing to propose
    assert len(head.decode(head(x, mask), mask, topk=15, min_score=0.0)[1]) == 0


def test_head_learns_a_single_clip():
    """A few steps on one clip lower the loss (the pieces are wired together)."""
    torch.manual_seed(0)
    head = build_head("mltpn", MLTPNConfig(**TINY), in_dim=4, num_classes=2)
    x = torch.zeros(1, 4, 32)
    x[0, 1, 8:16] = 3.0
    target = [{"segments": torch.tensor([[7.5, 15.5]]), "labels": torch.tensor([1])}]
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = head.loss(head(x), None, target)["loss"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first


def test_unknown_head_lists_names():
    assert get_head("mltpn") is build_mltpn and "mltpn" in HEADS.names()
    with pytest.raises(ConfigError, match="unknown detection head 'nope'.*mltpn"):
        get_head("nope")


def test_transform_module_concatenates_two_resolutions():
    from tadkit.detect.heads.mltpn import TransformModule

    for mode in ("nearest", "linear"):
        out = TransformModule(3, 5, mode)(torch.randn(2, 1, 11, 6))
        assert tuple(out.shape) == (2, 8, 11, 6)


def test_ablation_switches_change_the_network():
    x = torch.randn(1, 6, 64)
    five = build_head("mltpn", MLTPNConfig(**{**TINY, "num_anchors": 5}), 6, 3)
    assert five(x)["cls_logits"].shape[1] == (16 + 8 + 4) * 5
    four_thms = build_head("mltpn", MLTPNConfig(**{**TINY, "num_thms": 4}), 6, 3)
    assert len(four_thms.thms) == 4 and len(four_thms.join_prev) == 3
    assert four_thms.mfm.residual[0][0].in_channels == 4 * TINY["thm_out_channels"]
