"""Shared detection layers: segment align, masked LSTMs, balanced BCE, boundary peaks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tadkit.detect.layers.align import segment_align, segment_align_batched
from tadkit.detect.layers.peaks import boundary_peaks, peak_pairs
from tadkit.detect.layers.sequence import MaskedLSTM, reverse_padded
from tadkit.detect.losses import balanced_bce

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# --------------------------------------------------------------------------- segment align
def _value(row: np.ndarray, pos: float) -> np.ndarray:
    """The piecewise-linear reading of one sample (C, L) at ``pos`` (independent scalar code)."""
    length = row.shape[1]
    if pos < -1.0 or pos > length:
        return np.zeros(row.shape[0])
    pos = min(max(pos, 0.0), length - 1.0)
    lo = int(math.floor(pos))
    hi = min(lo + 1, length - 1)
    w = pos - lo
    return row[:, lo] * (1 - w) + row[:, hi] * w


def _align_loop(x: np.ndarray, segs: np.ndarray, index: np.ndarray, bins: int, samples: int,
                lengths: np.ndarray) -> np.ndarray:
    out = np.zeros((len(segs), x.shape[1], bins))
    for k, ((s, e), b) in enumerate(zip(segs, index)):
        row = x[b, :, :lengths[b]]
        width = (e - s) / bins
        for i in range(bins):
            pts = [s + (i + (j + 0.5) / samples) * width for j in range(samples)]
            out[k, :, i] = np.mean([_value(row, p) for p in pts], axis=0)
    return out


def _integral_average(row: np.ndarray, a: float, b: float) -> np.ndarray:
    """Exact mean of the reading over [a, b]: it is linear between these breakpoints."""
    length = row.shape[1]
    cuts = {a, b} | {float(i) for i in range(-1, length + 1) if a < i < b}
    pts = sorted(cuts)
    total = sum((q - p) * _value(row, 0.5 * (p + q)) for p, q in zip(pts[:-1], pts[1:]))
    return total / (b - a)


def test_segment_align_matches_a_scalar_loop_with_padding_and_out_of_range_segments():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 12))
    lengths = np.array([12, 7, 3])
    segs = np.array([[0.0, 11.0], [-3.0, 2.5], [5.2, 9.9], [6.0, 14.0], [-0.7, 0.4], [2.0, 2.0],
                     [8.0, 3.0], [-5.0, -2.0]])
    index = np.array([0, 1, 1, 0, 2, 2, 0, 1])
    got = segment_align(torch.from_numpy(x), torch.from_numpy(segs), torch.from_numpy(index), bins=5,
                        samples=3, lengths=torch.from_numpy(lengths))
    want = _align_loop(x, segs, index, 5, 3, lengths)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


def test_segment_align_never_reads_padding():
    x = torch.randn(2, 3, 10)
    lengths = torch.tensor([10, 6])
    segs = torch.tensor([[1.0, 9.5], [2.0, 8.0], [-1.0, 7.0]])
    index = torch.tensor([0, 1, 1])
    a = segment_align(x, segs, index, bins=4, lengths=lengths)
    x2 = x.clone()
    x2[1, :, 6:] = 1e6
    b = segment_align(x2, segs, index, bins=4, lengths=lengths)
    torch.testing.assert_close(a, b)


@settings(max_examples=25, deadline=None)
@given(s=st.floats(-2.0, 12.0), width=st.floats(0.5, 10.0), bins=st.integers(1, 4))
def test_segment_align_tends_to_the_integral_average_of_each_bin(s, width, bins):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 2, 10))
    e = s + width
    got = segment_align(torch.from_numpy(x), torch.tensor([[s, e]]), torch.tensor([0]), bins=bins,
                        samples=4000).numpy()[0]
    for i in range(bins):
        a, b = s + i * width / bins, s + (i + 1) * width / bins
        np.testing.assert_allclose(got[:, i], _integral_average(x[0], a, b), atol=2e-3)


def test_segment_align_gradients_match_finite_differences():
    torch.manual_seed(0)
    x = torch.randn(2, 2, 6, dtype=torch.float64, requires_grad=True)
    segs = torch.tensor([[0.3, 4.6], [1.1, 3.7]], dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 1])
    assert torch.autograd.gradcheck(lambda a, s: segment_align(a, s, index, bins=3, samples=2), (x, segs))


def test_segment_align_batched_equals_flat_calls():
    x = torch.randn(2, 3, 9)
    segs = torch.tensor([[[0.0, 4.0], [2.0, 8.0]], [[1.0, 3.0], [-1.0, 9.0]]])
    got = segment_align_batched(x, segs, bins=6)
    for b in range(2):
        want = segment_align(x, segs[b], torch.full((2,), b), bins=6)
        torch.testing.assert_close(got[b], want)


def test_segment_align_rejects_bad_shapes():
    with pytest.raises(ValueError):
        segment_align(torch.randn(3, 4), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), 2)
    with pytest.raises(ValueError):
        segment_align(torch.randn(1, 3, 4), torch.zeros(2, 2), torch.zeros(1, dtype=torch.long), 2)
    assert segment_align(torch.randn(1, 3, 4), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 2).shape == (0, 3, 2)


# --------------------------------------------------------------------------- masked LSTM
@pytest.mark.parametrize("direction", ["forward", "backward", "both"])
def test_masked_lstm_on_a_padded_batch_equals_each_sequence_alone(direction):
    torch.manual_seed(0)
    lstm = MaskedLSTM(3, 5, num_layers=2, direction=direction).eval()
    lengths = [9, 4, 1]
    seqs = [torch.randn(3, n) for n in lengths]
    x = torch.full((3, 3, 9), 7.0)           # padding holds junk, not zeros
    mask = torch.zeros(3, 9, dtype=torch.bool)
    for i, s in enumerate(seqs):
        x[i, :, :s.shape[1]] = s
        mask[i, :s.shape[1]] = True
    out = lstm(x, mask)
    assert out.shape == (3, lstm.out_dim, 9)
    for i, s in enumerate(seqs):
        alone = lstm(s[None], torch.ones(1, s.shape[1], dtype=torch.bool))[0]
        torch.testing.assert_close(out[i, :, :s.shape[1]], alone, rtol=1e-5, atol=1e-6)
        assert torch.all(out[i, :, s.shape[1]:] == 0)


def test_backward_lstm_reads_each_sequence_from_its_last_real_cell():
    torch.manual_seed(1)
    back = MaskedLSTM(2, 4, direction="backward").eval()
    fwd = MaskedLSTM(2, 4, direction="forward").eval()
    fwd.load_state_dict(back.state_dict())
    s = torch.randn(1, 2, 6)
    got = back(s)
    want = fwd(s.flip(-1)).flip(-1)
    torch.testing.assert_close(got, want)


def test_reverse_padded_keeps_padding_in_place_and_is_an_involution():
    seq = torch.arange(10.0).reshape(2, 5, 1)
    out = reverse_padded(seq, torch.tensor([3, 5]))
    assert out[0, :, 0].tolist() == [2.0, 1.0, 0.0, 3.0, 4.0]
    assert out[1, :, 0].tolist() == [9.0, 8.0, 7.0, 6.0, 5.0]
    torch.testing.assert_close(reverse_padded(out, torch.tensor([3, 5])), seq)


# --------------------------------------------------------------------------- balanced BCE
def test_balanced_bce_hand_computed_value():
    p = torch.tensor([0.8, 0.4, 0.1, 0.3, 0.6])
    t = torch.tensor([0.9, 0.7, 0.2, 0.0, 0.5])        # positives: entries 0, 1 (> 0.5)
    n, npos, nneg = 5, 2, 3
    want = -(0.5 * n / npos * (math.log(0.8) + math.log(0.4))
             + 0.5 * n / nneg * (math.log(0.9) + math.log(0.7) + math.log(0.4))) / n
    got = balanced_bce(p, t, logits=False)
    assert got.item() == pytest.approx(want, rel=1e-6)
    assert balanced_bce(torch.logit(p), t).item() == pytest.approx(want, rel=1e-5)


def test_balanced_bce_mask_and_one_sided_batches():
    p = torch.tensor([0.8, 0.4, 0.1, 0.3])
    t = torch.tensor([1.0, 0.0, 0.0, 0.0])
    mask = torch.tensor([True, True, False, False])
    want = -(0.5 * math.log(0.8) + 0.5 * math.log(0.6))
    assert balanced_bce(p, t, mask, logits=False).item() == pytest.approx(want, rel=1e-6)
    only_neg = balanced_bce(p, torch.zeros(4), logits=False)
    assert only_neg.item() == pytest.approx(-0.5 * np.mean(np.log(1 - p.numpy())), rel=1e-6)
    assert balanced_bce(p, t, torch.zeros(4, dtype=torch.bool), logits=False).item() == 0.0


# --------------------------------------------------------------------------- boundary peaks
def test_boundary_peaks_local_maxima_and_relative_threshold():
    p = torch.tensor([[0.1, 0.3, 0.2, 0.05, 0.9, 0.5, 0.48, 0.1]])
    got = boundary_peaks(p, rel_threshold=0.5)[0].tolist()
    # peaks at 1 (0.3) and 4 (0.9); above 0.45: 4, 5, 6
    assert got == [False, True, False, False, True, True, True, False]


def test_boundary_peaks_respect_each_samples_cells():
    p = torch.tensor([[0.2, 0.1, 0.4, 0.3, 9.0, 9.0],
                      [0.1, 0.5, 0.2, 0.6, 0.1, 0.0]])
    mask = torch.tensor([[True, True, True, True, False, False], [True] * 6])
    got = boundary_peaks(p, mask, rel_threshold=0.9, include_first=True, include_last=True)
    # sample 0: own max 0.4 (padding ignored), peak at 2, first cell 0, last real cell 3
    assert got[0].tolist() == [True, False, True, True, False, False]
    assert got[1].tolist() == [True, True, False, True, False, True]


def test_peak_pairs_orders_and_limits_durations():
    s = torch.tensor([True, False, True, False, False])
    e = torch.tensor([False, True, True, False, True])
    assert peak_pairs(s, e).tolist() == [[0, 1], [0, 2], [0, 4], [2, 4]]
    assert peak_pairs(s, e, max_duration=2).tolist() == [[0, 1], [0, 2], [2, 4]]
