"""1-D IoU / GIoU: hand values, properties (hypothesis), numpy == torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tadkit.detect.geometry import pairwise_iou, segment_giou, segment_iou

coord = st.floats(min_value=-100, max_value=100, allow_nan=False, width=64)


@st.composite
def segment(draw):
    a, b = draw(coord), draw(coord)
    return [min(a, b), max(a, b) + draw(st.floats(min_value=1e-3, max_value=50))]


def test_hand_values():
    a = np.array([[0.0, 10.0], [0.0, 10.0], [0.0, 10.0], [0.0, 2.0]])
    b = np.array([[5.0, 15.0], [0.0, 10.0], [12.0, 14.0], [1.0, 3.0]])
    np.testing.assert_allclose(segment_iou(a, b), [5 / 15, 1.0, 0.0, 1 / 3])
    # disjoint [0,10] and [12,14]: hull 14, union 12 -> GIoU = 0 - 2/14
    np.testing.assert_allclose(segment_giou(a, b), [5 / 15, 1.0, -2 / 14, 1 / 3])


@settings(max_examples=200, deadline=None)
@given(segment(), segment())
def test_iou_properties(a, b):
    a, b = np.array(a), np.array(b)
    iou = float(segment_iou(a, b))
    giou = float(segment_giou(a, b))
    assert 0.0 <= iou <= 1.0 + 1e-12
    assert -1.0 - 1e-12 <= giou <= iou + 1e-12
    assert iou == pytest.approx(float(segment_iou(b, a)))
    assert float(segment_iou(a, a)) == pytest.approx(1.0)
    if a[0] <= b[0] and b[1] <= a[1]:  # containment: the hull is the union, GIoU == IoU
        assert giou == pytest.approx(iou, abs=1e-9)
    # slow scalar oracle
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    hull = max(a[1], b[1]) - min(a[0], b[0])
    assert iou == pytest.approx(inter / union, abs=1e-9)
    assert giou == pytest.approx(inter / union - (hull - union) / hull, abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.lists(segment(), min_size=1, max_size=6), st.lists(segment(), min_size=1, max_size=6))
def test_pairwise_matches_aligned_and_torch(a, b):
    a, b = np.array(a), np.array(b)
    m = pairwise_iou(a, b)
    assert m.shape == (len(a), len(b))
    for i in range(len(a)):
        for j in range(len(b)):
            assert m[i, j] == pytest.approx(float(segment_iou(a[i], b[j])))
    t = pairwise_iou(torch.from_numpy(a), torch.from_numpy(b))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), m, rtol=1e-12, atol=1e-12)


def test_giou_has_gradient_for_disjoint_segments():
    pred = torch.tensor([[0.0, 1.0]], requires_grad=True)
    gt = torch.tensor([[3.0, 4.0]])
    assert float(segment_iou(pred.detach(), gt)) == 0.0
    (1 - segment_giou(pred, gt)).sum().backward()
    assert pred.grad is not None and float(pred.grad.abs().sum()) > 0
    assert float(pred.grad[0, 1]) < 0  # moving the end towards gt lowers the loss


def test_degenerate_segments_are_finite():
    z = np.array([[2.0, 2.0]])
    assert float(segment_iou(z, z)[0]) == 0.0
    assert np.isfinite(segment_giou(z, np.array([[5.0, 5.0]]))).all()


# --------------------------------------------------------------------------- losses
from tadkit.detect.losses import giou_loss, sigmoid_focal_loss, smooth_l1  # noqa: E402


@settings(max_examples=100, deadline=None)
@given(st.floats(-10, 10), st.floats(-10, 10), st.floats(0.05, 3))
def test_smooth_l1_matches_torch(p, t, beta):
    a, b = torch.tensor([p], dtype=torch.float64), torch.tensor([t], dtype=torch.float64)
    ours = smooth_l1(a, b, beta=beta)
    ref = torch.nn.functional.smooth_l1_loss(a, b, beta=beta, reduction="none")
    assert float(ours) == pytest.approx(float(ref), abs=1e-12)


def test_giou_loss_range_and_zero_at_match():
    seg = torch.tensor([[1.0, 4.0], [0.0, 1.0]])
    assert torch.allclose(giou_loss(seg, seg), torch.zeros(2))
    far = giou_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([[100.0, 101.0]]))
    assert 1.9 < float(far) <= 2.0


def test_focal_loss_hand_value_and_gamma_zero_is_bce():
    logits = torch.tensor([0.0, 2.0, -1.0])
    targets = torch.tensor([1.0, 0.0, 1.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    assert torch.allclose(sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0.0), bce)
    # p = 0.5 positive: 0.25 * 0.5^2 * log 2
    assert float(sigmoid_focal_loss(logits[:1], targets[:1])) == pytest.approx(0.25 * 0.25 * np.log(2))
