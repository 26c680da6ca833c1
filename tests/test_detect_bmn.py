"""BMN head and its layers: BM sampling weights, proposal maps and labels, proposal generation, padding, ensembles."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tadkit.config import load_config
from tadkit.detect.config import BMNConfig, DetectConfig
from tadkit.detect.heads import build_head
from tadkit.detect.heads.bmn import BMN, bmn_labels, resize_curve, resize_map
from tadkit.detect.layers.boundary_matching import BoundaryMatching, sampling_weights
from tadkit.detect.layers.proposal_map import (boundary_labels, cell_overlap, iou_map, map_segments, map_valid,
                                               pair_candidates)
from tadkit.detect.losses import sampled_l2

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = dict(hidden_1d=16, hidden_2d=8, hidden_3d=16, conv_groups=4, num_samples=4, samples_per_bin=2)


# --------------------------------------------------------------------------- BM layer
def _slow_weights(length: int, rows: int, n: int, k: int, context: float) -> np.ndarray:
    """Oracle ``W[t, n, d, s]``: scalar loops over entries, points and the two cells each point reads."""
    w = np.zeros((length, n, rows, length))
    for d in range(rows):
        for s in range(length):
            a, b = s - context * d, s + d + context * d
            points = [a + (b - a) * j / (n * k - 1) for j in range(n * k)]
            for j, p in enumerate(points):
                lo = math.floor(p)
                frac = p - lo
                for cell, weight in ((lo, 1 - frac), (lo + 1, frac)):
                    if 0 <= cell <= length - 1:
                        w[cell, j // k, d, s] += weight / k
    return w


@pytest.mark.parametrize("length,rows,n,k,context", [(1, 1, 2, 1, 0.5), (7, 7, 4, 3, 0.5), (12, 5, 3, 2, 0.25),
                                                     (10, 10, 8, 1, 0.0), (16, 16, 32, 3, 0.5)])
def test_bm_sampling_weights_match_a_slow_reference(length, rows, n, k, context):
    got = sampling_weights(length, rows, n, k, context).numpy()
    np.testing.assert_allclose(got, _slow_weights(length, rows, n, k, context), rtol=0, atol=1e-6)


def test_bm_bins_of_an_interior_proposal_average_the_linear_reading():
    # proposal [4, 8], context 0.5 -> region [2, 10] with 4 bins of 2 points: 2, 3.14.., ..., 10
    w = sampling_weights(16, 5, 4, 2, 0.5)[:, :, 4, 4]                     # (T, N)
    np.testing.assert_allclose(w.sum(0).numpy(), np.ones(4), atol=1e-6)    # inside: every bin sums to 1
    x = torch.arange(16, dtype=torch.float32)                                 # x[t] = t reads positions exactly
    points = torch.linspace(2, 10, 8)
    np.testing.assert_allclose((x @ w).numpy(), points.reshape(4, 2).mean(1).numpy(), atol=1e-5)


def test_fused_bm_layer_equals_conv3d_over_the_bm_features():
    torch.manual_seed(0)
    bm = BoundaryMatching(6, 5, num_samples=4, samples_per_bin=3, context=0.5, max_duration=7)
    x = torch.randn(2, 6, 11, requires_grad=True)
    fused = bm(x)
    feats = bm.features(x)                                                     # (B, C, N, D, T)
    assert feats.shape == (2, 6, 4, 7, 11)
    ref = torch.nn.functional.conv3d(feats, bm.weight[..., None, None], bm.bias, stride=(4, 1, 1))[:, :, 0]
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)
    g_fused = torch.autograd.grad(fused.square().sum(), x)[0]
    g_ref = torch.autograd.grad(ref.square().sum(), x)[0]
    torch.testing.assert_close(g_fused, g_ref, rtol=1e-4, atol=1e-4)


def test_bm_layer_rows_follow_the_input_unless_fixed():
    bm = BoundaryMatching(3, 2, num_samples=2, samples_per_bin=1)
    assert bm(torch.randn(1, 3, 9)).shape == (1, 2, 9, 9)
    assert bm(torch.randn(1, 3, 5)).shape == (1, 2, 5, 5)
    assert BoundaryMatching(3, 2, 2, 1, max_duration=4)(torch.randn(1, 3, 9)).shape == (1, 2, 4, 9)
    with pytest.raises(ValueError, match="at least 2 sample points"):
        BoundaryMatching(3, 2, num_samples=1, samples_per_bin=1)


# --------------------------------------------------------------------------- maps and labels
def test_map_geometry_and_validity():
    segs = map_segments(4, 6)
    assert segs[3, 2].tolist() == [2.0, 5.0] and segs[0, 5].tolist() == [5.0, 5.0]
    valid = map_valid(torch.tensor([6, 3]), 4, 6)
    assert valid.shape == (2, 4, 6)
    assert not valid[:, 0].any()                                              # zero length
    assert valid[0, 3, 2] and not valid[0, 3, 3]                              # [2, 5] ends on cell 5; [3, 6] past it
    assert valid[1].nonzero().tolist() == [[1, 0], [1, 1], [2, 0]]           # length 3: [0,1], [1,2], [0,2]


def test_bmn_label_maps_on_hand_made_segments():
    gt = torch.tensor([[2.0, 6.0], [2.25, 3.0]])
    start, end, iou = bmn_labels(gt, 8, 10, boundary_width=3.0)
    # start regions [0.5, 3.5] and [0.75, 3.75]: cell 1 overlaps 1.0 / 0.75, cell 4 0 / 0.25
    np.testing.assert_allclose(start.numpy(), [0, 1, 1, 1, 0.25, 0, 0, 0, 0, 0])
    # end regions [4.5, 7.5] and [1.5, 4.5]: cells 2-7 fully covered by one of them, cell 1 none
    np.testing.assert_allclose(end.numpy(), [0, 0, 1, 1, 1, 1, 1, 1, 0, 0])
    assert iou[4, 2] == 1.0                                                    # [2, 6]
    assert iou[3, 2] == pytest.approx(3 / 4)                                   # [2, 5] vs [2, 6]
    assert iou[1, 2] == pytest.approx(0.75 / 1.0)                              # [2, 3] vs [2.25, 3]: 0.75 / 1
    assert iou[2, 6] == 0.0 and iou[0].max() == 0.0                            # [6, 8] touches [2, 6]; points
    assert iou[5, 1] == pytest.approx(4 / 5)                                   # [1, 6]
    assert iou_map(torch.zeros(0, 2), 3, 4).eq(0).all()


def test_cell_overlap_is_the_covered_share_of_each_cell():
    np.testing.assert_allclose(cell_overlap(torch.tensor([[0.75, 2.0], [4.5, 4.6]]), 6).numpy(),
                               [0, 0.75, 0.5, 0, 0, 0.1], atol=1e-6)
    assert boundary_labels(torch.zeros(0), 3).tolist() == [0, 0, 0]


@settings(max_examples=30, deadline=None)
@given(s=st.floats(-2, 12), w=st.floats(0.5, 10))
def test_iou_map_matches_pairwise_loop(s, w):
    gt = torch.tensor([[s, s + w]], dtype=torch.float64)
    got = iou_map(gt, 6, 10)
    for d in range(6):
        for start in range(10):
            a, b = start, start + d
            inter = max(0.0, min(b, s + w) - max(a, s))
            union = (b - a) + w - inter
            assert got[d, start] == pytest.approx(inter / union if union > 0 else 0.0, abs=1e-9)


def test_sampled_l2_balances_groups_and_weighs_high_entries_fully():
    target = torch.tensor([0.9, 0.8, 0.5, 0.5, 0.5, 0.5, 0.1, 0.0])
    pred = torch.zeros(8)
    # only highs drawn when the generator never fires for medium / low: draw probability 2/4 and 2/2
    loss_all_high = sampled_l2(pred, target, mask=torch.tensor([1, 1, 0, 0, 0, 0, 0, 0]).bool())
    assert loss_all_high == pytest.approx(0.5 * (0.81 + 0.64) / 2)
    assert sampled_l2(torch.zeros(5), torch.full((5,), 0.2)) == 0.0                     # nothing high: nothing drawn
    counts = torch.zeros(8)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):                                                        # empirical draw rates
        pred_r = torch.full((8,), -1.0, requires_grad=True)
        sampled_l2(pred_r, target, generator=g).backward()
        counts += (pred_r.grad != 0).float()
    rate = counts / 400
    assert rate[:2].tolist() == [1.0, 1.0]
    assert 0.4 < rate[2:6].mean() < 0.6                                          # 2 highs / 4 medium
    assert rate[6:].tolist() == [1.0, 1.0]                                       # 2 highs / 2 low: always


# --------------------------------------------------------------------------- proposal generation
def _logit(p):
    return torch.logit(torch.as_tensor(p, dtype=torch.float32), eps=1e-7)


def test_proposal_generation_pairs_peaks_and_reads_the_map_at_duration_start():
    t = 8
    start = torch.tensor([0.05, 0.9, 0.1, 0.05, 0.3, 0.1, 0.05, 0.05])   # peaks at 1 (0.9) and 4 (local max)
    end = torch.tensor([0.05, 0.05, 0.1, 0.8, 0.1, 0.05, 0.6, 0.1])      # peaks at 3 and 6 (0.6 > 0.4)
    cls = torch.full((t, t), 0.5)
    reg = torch.full((t, t), 0.5)
    cls[2, 1], reg[2, 1] = 0.9, 0.8                                       # [1, 3]
    cls[5, 1], reg[5, 1] = 0.4, 0.5                                       # [1, 6]
    cls[2, 4], reg[2, 4] = 0.7, 0.6                                       # [4, 6]
    outputs = {"start_logits": _logit(start)[None], "end_logits": _logit(end)[None],
               "map_logits": _logit(torch.stack([cls, reg]))[None]}
    head = BMN(BMNConfig(**TINY), 4)
    det = head.decode(outputs, torch.ones(1, t, dtype=torch.bool), topk=10)[0]
    expect = {(1, 3): 0.9 * 0.8 * 0.9 * 0.8, (1, 6): 0.9 * 0.6 * 0.4 * 0.5, (4, 6): 0.3 * 0.6 * 0.7 * 0.6}
    got = {tuple(int(v) for v in seg): score for seg, score in zip(det.segments, det.scores)}
    assert got.keys() == expect.keys()
    for key, value in expect.items():
        assert got[key] == pytest.approx(value, rel=1e-4)
    assert (det.labels == 0).all()

    sqrt_head = BMN(BMNConfig(**TINY, score="sqrt"), 4)
    det = sqrt_head.decode(outputs, torch.ones(1, t, dtype=torch.bool), topk=1)[0]
    assert len(det) == 1 and det.scores[0] == pytest.approx(0.9 * 0.8 * math.sqrt(0.9 * 0.8), rel=1e-4)
    assert len(head.decode(outputs, torch.ones(1, t, dtype=torch.bool), min_score=0.2)[0]) == 1
    # a sample padded after cell 5 never pairs with the end peak at 6
    mask = torch.arange(t)[None] < 6
    det = head.decode(outputs, mask, topk=10)[0]
    assert {tuple(int(v) for v in seg) for seg in det.segments} <= {(1, 3), (1, 5), (4, 5)} and (1, 3) in {
        tuple(int(v) for v in seg) for seg in det.segments}


def test_pair_candidates_limit_durations_and_admit_ends():
    p = torch.tensor([0.1, 0.2, 0.9, 0.2, 0.1, 0.1])
    pairs, entries = pair_candidates(p, p.flip(0), max_duration=3)
    assert pairs.tolist() == [[2, 3]] and entries.tolist() == [[1, 2]]
    pairs, _ = pair_candidates(p, p.flip(0), max_duration=6, include_ends=True)
    assert pairs.tolist() == [[0, 3], [0, 5], [2, 3], [2, 5]]


# --------------------------------------------------------------------------- the head
def test_padded_batch_with_bi_lstm_equals_each_sample_alone():
    torch.manual_seed(0)
    head = BMN(BMNConfig(**TINY, lstm_layers=2), 8).eval()
    long, short = torch.randn(8, 12), torch.randn(8, 7)
    batch = torch.zeros(2, 8, 12)
    batch[0], batch[1, :, :7] = long, short
    batch[1, :, 7:] = 5.0                                                    # garbage in the padding
    mask = torch.arange(12)[None] < torch.tensor([[12], [7]])
    with torch.no_grad():
        out = head(batch, mask)
        alone = head(short[None], torch.ones(1, 7, dtype=torch.bool))
    torch.testing.assert_close(out["start_logits"][1, :7], alone["start_logits"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["end_logits"][1, :7], alone["end_logits"][0], atol=1e-5, rtol=1e-5)
    valid = map_valid(torch.tensor([7]), 7, 7)[0]
    torch.testing.assert_close(out["map_logits"][1, :, :7, :7][:, valid], alone["map_logits"][0][:, valid],
                               atol=1e-5, rtol=1e-5)
    det_batch = head.decode(out, mask)[1]
    det_alone = head.decode(alone, torch.ones(1, 7, dtype=torch.bool))[0]
    np.testing.assert_array_equal(det_batch.segments, det_alone.segments)
    np.testing.assert_allclose(det_batch.scores, det_alone.scores, rtol=1e-4)


def test_bmn_learns_to_rank_the_ground_truth_first():
    torch.manual_seed(0)
    t = 16
    x = torch.randn(1, 6, t) * 0.1
    x[0, 0, 4:11] += 1.0                                                     # the action: cells 4..10
    x[0, 1, 4] += 1.0
    x[0, 2, 10] += 1.0
    gt = torch.tensor([[4.0, 10.0]])
    head = build_head("bmn", BMNConfig(**TINY), 6, 3)
    mask = torch.ones(1, t, dtype=torch.bool)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    targets = [{"segments": gt, "labels": torch.tensor([2])}]
    first = None
    for _ in range(150):
        losses = head.loss(head(x, mask), mask, targets)
        first = first if first is not None else float(losses["loss"].detach())
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    assert float(losses["loss"].detach()) < 0.5 * first
    det = head.decode(head(x, mask), mask, topk=3)[0]
    assert det.segments[0].tolist() == [4.0, 10.0]


def test_loss_reports_terms_and_ignores_padding_labels():
    torch.manual_seed(0)
    head = BMN(BMNConfig(**TINY), 4)
    x = torch.randn(2, 4, 10)
    mask = torch.arange(10)[None] < torch.tensor([[10], [6]])
    targets = [{"segments": torch.tensor([[1.0, 5.0]]), "labels": torch.tensor([0])},
               {"segments": torch.zeros(0, 2), "labels": torch.zeros(0, dtype=torch.long)}]
    losses = head.loss(head(x, mask), mask, targets)
    assert set(losses) == {"loss", "loss_tem", "loss_pem_cls", "loss_pem_reg", "num_pos"}
    assert losses["num_pos"] == 1                                           # only [1, 5] has IoU > 0.9
    assert torch.isfinite(losses["loss"])


# --------------------------------------------------------------------------- ensembles
def test_average_of_identical_runs_equals_one_run():
    torch.manual_seed(0)
    head = BMN(BMNConfig(**TINY), 4).eval()
    x = torch.randn(2, 4, 9)
    mask = torch.ones(2, 9, dtype=torch.bool)
    with torch.no_grad():
        out = head(x, mask)
    avg = head.average_outputs([out, out, out], [0.2, 0.5, 0.3])
    for key in out:
        assert torch.equal(avg[key], out[key])
    one, three = head.decode(out, mask), head.decode(avg, mask)
    for a, b in zip(one, three):
        np.testing.assert_array_equal(a.segments, b.segments)
        np.testing.assert_array_equal(a.scores, b.scores)
    with torch.no_grad():                                                   # a run at twice the length
        longer = head(torch.nn.functional.interpolate(x, size=18, mode="linear"), torch.ones(2, 18).bool())
    mixed = head.average_outputs([out, longer], [1.0, 1.0])
    assert {k: tuple(v.shape) for k, v in mixed.items()} == {k: tuple(v.shape) for k, v in out.items()}
    with pytest.raises(ValueError, match="one weight per run"):
        head.average_outputs([out], [1.0, 1.0])


def test_maps_of_other_lengths_are_resized_in_time_not_in_cells():
    # a quantity linear in (start time, duration) over the video is kept exactly by resizing
    def linear_map(length):
        d = torch.arange(length, dtype=torch.float64)[:, None]
        s = torch.arange(length, dtype=torch.float64)[None, :]
        return (0.3 * (s + 0.5) / length + 0.6 * d / length).expand(length, length)[None, None]

    small, big = linear_map(10), linear_map(20)
    resized = resize_map(small, 20, 20)[0, 0]
    inner = slice(1, 19)                                                      # away from the clamped ends
    torch.testing.assert_close(resized[:19, inner], big[0, 0, :19, inner])
    curve = torch.linspace(0.05, 0.95, 10)[None].double()
    assert resize_curve(curve, 10) is curve and resize_curve(curve, 20).shape == (1, 20)


def test_bmn_config_section_and_validation():
    cfg = load_config(DetectConfig, None, ["head=bmn", "bmn.lstm_layers=2", "bmn.max_duration=64"])
    assert cfg.bmn.lstm_layers == 2 and cfg.bmn.max_duration == 64
    head = build_head("bmn", cfg.bmn, 400, 200)
    assert head.class_agnostic and head.describe()["lstm_layers"] == 2
    with pytest.raises(ValueError, match="divisible by conv_groups"):
        BMNConfig(hidden_1d=30, conv_groups=4)
    with pytest.raises(ValueError, match="reg_low"):
        BMNConfig(reg_low=0.8, reg_high=0.7)
