"""Anchors of BSN / BMN-style proposal maps (``tadkit.detect.layers.anchors``) and the boundary labels MENet reads."""
from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tadkit.detect.layers.anchors import anchor_map, apply_offsets, match_anchors, offset_targets
from tadkit.detect.layers.proposal_map import boundary_labels


def start_end_labels(segments: torch.Tensor, length: int, radius: float = 1.5):
    """MENet's use: start and end labels of ``segments (N, 2)`` in regions ``± radius`` cells."""
    return (boundary_labels(segments[:, 0], length, 2 * radius), boundary_labels(segments[:, 1], length, 2 * radius))


def test_boundary_labels_are_the_cell_overlap_with_the_region_around_each_boundary():
    start, end = start_end_labels(torch.tensor([[10.25, 20.0]]), 24, radius=1.5)
    # start region [8.75, 11.75]: cell 9 = [8.5, 9.5] overlaps 0.75, cells 10-11 fully, cell 12 by 0.25
    want = np.zeros(24)
    want[[9, 10, 11, 12]] = [0.75, 1.0, 1.0, 0.25]
    np.testing.assert_allclose(start.numpy(), want, atol=1e-6)
    want = np.zeros(24)                                          # end region [18.5, 21.5]
    want[[19, 20, 21]] = 1.0
    np.testing.assert_allclose(end.numpy(), want, atol=1e-6)
    # regions [2.5, 3.5] and [3.1, 4.1]: cell 3 = max(1, 0.4), cell 4 = 0.6
    two, _ = start_end_labels(torch.tensor([[3.0, 6.0], [3.6, 9.0]]), 10, radius=0.5)
    np.testing.assert_allclose(two.numpy(), [0, 0, 0, 1.0, 0.6, 0, 0, 0, 0, 0], atol=1e-6)
    none_s, none_e = start_end_labels(torch.zeros(0, 2), 5)
    assert not none_s.any() and not none_e.any()


def test_anchor_map_rows_are_durations_and_mask_what_ends_inside():
    anchors, valid = anchor_map(5, 3)
    assert anchors.shape == (3, 5, 2)
    assert anchors[0, 2].tolist() == [2, 3] and anchors[2, 1].tolist() == [1, 4]
    assert valid.sum() == 4 + 3 + 2 and not valid[2, 2]


def test_anchor_ious_matches_and_offsets_on_hand_made_segments():
    gts = torch.tensor([[10.0, 20.0], [30.0, 40.0]])
    anchors = torch.tensor([[10.0, 20.0], [12.0, 20.0], [31.0, 41.0], [0.0, 5.0]])
    iou, idx = match_anchors(anchors, gts)
    np.testing.assert_allclose(iou.numpy(), [1.0, 0.8, 9 / 11, 0.0], atol=1e-6)
    assert idx[:3].tolist() == [0, 0, 1]
    iou, idx = match_anchors(anchors, torch.zeros(0, 2))
    assert not iou.any() and (idx == -1).all()
    d = offset_targets(torch.tensor([10.0, 20.0]), torch.tensor([12.0, 17.0]))    # c 15 -> 14.5, d 10 -> 5
    np.testing.assert_allclose(d.numpy(), [-0.05, math.log(0.5)], atol=1e-6)
    np.testing.assert_allclose(apply_offsets(torch.tensor([10.0, 20.0]), d).numpy(), [12.0, 17.0], atol=1e-5)


@settings(max_examples=50, deadline=None)
@given(a=st.floats(-50, 50), da=st.floats(0.5, 40), b=st.floats(-50, 50), db=st.floats(0.5, 40))
def test_offsets_invert_each_other(a, da, b, db):
    anchor = torch.tensor([a, a + da], dtype=torch.float64)
    gt = torch.tensor([b, b + db], dtype=torch.float64)
    np.testing.assert_allclose(apply_offsets(anchor, offset_targets(anchor, gt)).numpy(), gt.numpy(),
                               rtol=1e-9, atol=1e-9)


def test_boundary_labels_never_exceed_one_and_cover_every_boundary_cell():
    segs = torch.tensor([[0.0, 3.0], [2.2, 7.9], [7.5, 9.0]])
    start, end = start_end_labels(segs, 10, radius=1.5)
    assert float(start.max()) <= 1.0 and float(end.max()) <= 1.0
    for t in (0, 2, 7):                                       # the cell holding a start is fully in its region
        assert start[t] == 1.0
    for t in (3, 8, 9):
        assert end[t] == 1.0
