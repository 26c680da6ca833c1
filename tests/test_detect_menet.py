"""MENet head: labels on hand-made segments, anchor sampling per stage, peak candidates,
padding invariance of the LSTM paths, decoding, ablation switches and a tiny overfit.

The anchor label functions themselves are tested in ``test_detect_anchors.py``."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tadkit.config import load_config
from tadkit.detect.config import DetectConfig, MENetConfig
from tadkit.detect.geometry import segment_iou
from tadkit.detect.heads import build_head
from tadkit.detect.heads.menet import MREM, candidate_anchors, sample_anchors, to_layer
from tadkit.detect.layers.anchors import anchor_map
from tadkit.errors import ConfigError

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = dict(dim=16, asp_dim=16, align_bins=4, max_candidates=200)


def tiny_head(in_dim: int = 8, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_head("menet", MENetConfig(**{**TINY, **kw}), in_dim, 3)


def target(*segments: tuple[float, float]) -> dict[str, torch.Tensor]:
    return {"segments": torch.tensor(segments, dtype=torch.float32).reshape(-1, 2),
            "labels": torch.zeros(len(segments), dtype=torch.long)}


# --------------------------------------------------------------------------- labels
def test_layer_steps_are_centred_on_their_input_cells():
    # a stride-4 step j covers input cells 4j..4j+3 and sits at 4j + 1.5
    np.testing.assert_allclose(to_layer(torch.tensor([[1.5, 41.5]]), 4).numpy(), [[0.0, 10.0]])
    np.testing.assert_allclose(to_layer(torch.tensor([[3.0, 7.0]]), 1).numpy(), [[3.0, 7.0]])


def test_iou_positives_are_the_anchors_above_0_9_with_all_anchors_sampled():
    """Single layer 0, every anchor sampled: of the anchors near [10, 20] only [10, 20], [9, 20]
    and [10, 21] have tIoU > 0.9 ([11, 20] has exactly 0.9)."""
    head = tiny_head(single_layer=0, sampling_ratios=[1.0, 0.4, 0.9]).train()
    x = torch.randn(1, 8, 32)
    losses = head.loss(head(x), torch.ones(1, 32, dtype=torch.bool), [target((10.0, 20.0))])
    assert losses["num_pos"] == 3
    assert torch.isfinite(losses["loss"]) and losses["loss_offset"] > 0


# --------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("stage,inside_rate,outside_rate", [
    ("generalization", 0.3, 0.3), ("specialization", 0.6, 0.3), ("bias", 0.3, 0.0)])
def test_anchor_sampling_rates_per_stage_measured_over_many_draws(stage, inside_rate, outside_rate):
    torch.manual_seed(1)
    length, rng = 30, (0.1, 0.5)
    grid, valid = anchor_map(length)
    every = grid[valid].long()
    scale = (every[:, 1] - every[:, 0]).float() / length
    inside = (scale >= rng[0]) & (scale <= rng[1])
    code = lambda a: a[:, 0] * length + a[:, 1]                               # noqa: E731
    counts = torch.zeros(length * length)
    draws = 400
    for _ in range(draws):
        got = sample_anchors(length, length - 1, rng, 0.3, stage)
        assert len(torch.unique(code(got))) == len(got)                      # without replacement
        gs = (got[:, 1] - got[:, 0]).float() / length
        got_in = ((gs >= rng[0]) & (gs <= rng[1])).sum()
        if stage == "generalization":
            assert len(got) == round(0.3 * len(every))
        else:
            assert got_in == round(inside_rate * inside.sum().item())
            assert len(got) - got_in == round(outside_rate * (~inside).sum().item())
        counts.index_add_(0, code(got), torch.ones(len(got)))
    freq = counts[code(every)] / draws                                        # per-anchor inclusion rate
    assert abs(freq[inside].mean() - inside_rate) < 0.01 and abs(freq[~inside].mean() - outside_rate) < 0.01
    # uniform: every anchor of a region is drawn at its rate (binomial spread, 400 draws)
    assert (freq[inside] - inside_rate).abs().max() < 0.1
    assert (freq[~inside] - outside_rate).abs().max() < 0.1


def test_two_stage_switches_from_generalization_to_specialization_by_the_epoch_hook():
    head = tiny_head(generalization_epochs=2).train()
    x, mask = torch.randn(4, 8, 40), torch.ones(4, 40, dtype=torch.bool)
    rates = []
    for epoch in range(4):
        head.on_epoch_start(epoch, 4)
        torch.manual_seed(epoch)
        out = head(x, mask)
        a, m = out["anchors_0"][0], out["anchor_mask_0"][0]                  # layer 0: 40 steps, range [0, 0.15]
        scale = (a[m, 1] - a[m, 0]).float() / 40
        rates.append(int((scale <= 0.15).sum()))
    n_inside = sum(40 - d for d in range(1, 7))                             # durations 1..6 fit [0, 0.15]
    assert [head.stage_at(e) for e in range(4)] == ["generalization"] * 2 + ["specialization"] * 2
    assert rates[2:] == [n_inside] * 2                                       # 2 · 0.5 = 100 % inside the range
    assert all(r < n_inside for r in rates[:2])
    assert tiny_head(sampling="bias").stage_at(0) == "bias"
    assert tiny_head(single_layer=1).stage_at(9) == "generalization"


# --------------------------------------------------------------------------- candidates
def test_candidates_pair_peaks_and_high_cells_within_the_scale_range():
    p_s = torch.tensor([0.1, 0.3, 0.2, 0.9, 0.2, 0.1, 0.05, 0.1, 0.1, 0.1])
    p_e = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.1, 0.6, 0.8, 0.1])
    # starts: peaks 1, 3 (and nothing else above 0.45); ends: peak 5, cells 7, 8 above 0.4
    got = candidate_anchors(p_s, p_e, (0.0, 1.0), max_duration=9)
    assert got.tolist() == [[1, 5], [1, 7], [1, 8], [3, 5], [3, 7], [3, 8]]
    scaled = candidate_anchors(p_s, p_e, (0.3, 0.5), max_duration=9)      # (e - s) / 10 in [0.3, 0.5]
    assert scaled.tolist() == [[1, 5], [3, 7], [3, 8]]
    assert candidate_anchors(p_s, p_e, (0.0, 1.0), max_duration=3).tolist() == [[3, 5]]
    top = candidate_anchors(p_s, p_e, (0.0, 1.0), max_duration=9, max_candidates=2)
    assert top.tolist() == [[3, 8], [3, 7]]                                  # highest p_s · p_e


def test_decode_refines_by_eq9_and_scores_ps_pe_iou_in_input_units():
    head = tiny_head().eval()
    out = {}
    for i, length in enumerate((16, 8, 4)):
        out[f"start_{i}"] = torch.zeros(1, length)
        out[f"end_{i}"] = torch.zeros(1, length)
        out[f"anchors_{i}"] = torch.tensor([[[0, 1]]])
        out[f"anchor_mask_{i}"] = torch.tensor([[i == 2]])
        out[f"iou_{i}"] = torch.zeros(1, 1, 2)
        out[f"offsets_{i}"] = torch.zeros(1, 1, 2)
    out["anchors_2"] = torch.tensor([[[1, 3]]])
    out["offsets_2"] = torch.tensor([[[0.25, math.log(2.0)]]])
    out["start_2"][0, 1] = 2.0
    det = head.decode(out, torch.ones(1, 16, dtype=torch.bool))[0]
    # layer 2 (stride 4): [1, 3] -> c 2 + 2·0.25 = 2.5, d 4 -> [0.5, 4.5] steps -> 4·x + 1.5
    np.testing.assert_allclose(det.segments, [[3.5, 19.5]], atol=1e-5)
    sig = lambda v: 1 / (1 + math.exp(-v))                                    # noqa: E731
    np.testing.assert_allclose(det.scores, [sig(2.0) * 0.5 * 0.5 * 0.5], rtol=1e-6)
    assert det.labels.tolist() == [0] and head.class_agnostic


def test_ensembles_average_boundaries_and_pool_the_runs_anchors():
    x, mask = torch.randn(1, 8, 32), torch.ones(1, 32, dtype=torch.bool)
    a = tiny_head().eval()
    torch.manual_seed(5)
    b = build_head("menet", MENetConfig(**TINY), 8, 3).eval()
    with torch.no_grad():
        oa, ob = a(x, mask), b(x, mask)
        # untrained runs may peak everywhere and share every anchor: let run b drop one candidate per layer
        for i in range(3):
            ob[f"anchor_mask_{i}"][0, int(ob[f"anchor_mask_{i}"][0].sum()) - 1] = False
        # identical runs: exactly the single run
        same = a.decode(a.average_outputs([oa, oa], [1.0, 2.0]), mask)[0]
        one = a.decode(oa, mask)[0]
        np.testing.assert_array_equal(same.segments, one.segments)
        np.testing.assert_array_equal(same.scores, one.scores)
        # different runs: every anchor of both, scored with the averaged boundaries and w / max(w)
        both = a.average_outputs([oa, ob], [1.0, 3.0])
        torch.testing.assert_close(both["start_0"], 0.25 * oa["start_0"] + 0.75 * ob["start_0"])
        det = a.decode(both, mask)[0]
    n = [int(o[f"anchor_mask_{i}"].sum()) for o in (oa, ob) for i in range(3)]
    assert len(det) == sum(n)
    ps = torch.sigmoid(both["start_0"][0])
    pe = torch.sigmoid(both["end_0"][0])
    s, e = oa["anchors_0"][0, 0]
    want = float(ps[s] * pe[e] * torch.sigmoid(oa["iou_0"][0, 0]).prod() / 3.0)
    assert np.isclose(det.scores, want, rtol=1e-5).any()


# --------------------------------------------------------------------------- padding
def test_mrem_paths_are_invariant_to_right_padding():
    torch.manual_seed(2)
    mrem = MREM(6, 3).eval()
    x = torch.randn(1, 6, 12)
    padded = torch.cat([x, 100 * torch.randn(1, 6, 5)], 2)
    mask = torch.zeros(1, 17, dtype=torch.bool)
    mask[:, :12] = True
    with torch.no_grad():
        alone = mrem(x, torch.ones(1, 12, dtype=torch.bool))
        batch = mrem(padded * mask[:, None], mask)
    torch.testing.assert_close(batch[..., :12], alone, rtol=1e-5, atol=1e-6)
    assert not batch[..., 12:].any()


@pytest.mark.parametrize("kw", [{}, {"downsample": "conv"}, {"mrem": False}])
def test_the_whole_head_gives_the_same_proposals_with_and_without_padding(kw):
    head = tiny_head(**kw).eval()
    x = torch.randn(1, 8, 24)
    batch = torch.cat([torch.cat([x, 50 * torch.randn(1, 8, 8)], 2), torch.randn(1, 8, 32)])
    mask = torch.ones(2, 32, dtype=torch.bool)
    mask[0, 24:] = False
    with torch.no_grad():
        alone = head.decode(head(x, torch.ones(1, 24, dtype=torch.bool)), None)[0]
        padded = head.decode(head(batch, mask), mask)[0]
    assert len(alone) > 0
    np.testing.assert_allclose(padded.segments, alone.segments, atol=1e-4)
    np.testing.assert_allclose(padded.scores, alone.scores, rtol=1e-4)


# --------------------------------------------------------------------------- switches
TWO_LAYERS = {"num_layers": 2, "scale_ranges": [[0, 0.3], [0.2, 1]], "sampling_ratios": [0.5, 0.9]}


@pytest.mark.parametrize("kw,levels", [({}, [0, 1, 2]), ({"downsample": "avgpool"}, [0, 1, 2]),
                                       ({"downsample": "conv"}, [0, 1, 2]), ({"mrem": False}, [0, 1, 2]),
                                       ({"single_layer": 1}, [1]), (TWO_LAYERS, [0, 1])])
def test_every_ablation_switch_builds_trains_and_decodes(kw, levels):
    head = tiny_head(**kw).train()
    assert head.levels == levels and head.stride == 2 ** (max(levels))
    x, mask = torch.randn(2, 8, 32), torch.ones(2, 32, dtype=torch.bool)
    out = head(x, mask)
    assert sorted(k for k in out if k.startswith("start_")) == [f"start_{i}" for i in range(len(levels))]
    assert out["start_0"].shape == (2, 32 // 2 ** levels[0])
    losses = head.loss(out, mask, [target((3.0, 12.0)), target((20.0, 30.0))])
    losses["loss"].backward()
    head.eval()
    with torch.no_grad():
        assert len(head.decode(head(x, mask), mask, topk=5)) == 2
    lstm = any("forward_path" in name for name, _ in head.named_parameters())
    assert lstm == kw.get("mrem", True)


def test_menet_config_is_checked_and_registered():
    cfg = load_config(DetectConfig, overrides=["head=menet", "menet.sampling=bias", "menet.single_layer=2"])
    assert cfg.menet.sampling == "bias" and cfg.menet.single_layer == 2
    with pytest.raises(ConfigError, match=r"^--set: menet: scale_ranges and sampling_ratios need one entry per layer"):
        load_config(DetectConfig, overrides=["menet.sampling_ratios=[0.5, 0.5]"])
    with pytest.raises(ConfigError, match="single_layer"):
        load_config(DetectConfig, overrides=["menet.single_layer=3"])
    with pytest.raises(ConfigError, match="must be one of"):
        load_config(DetectConfig, overrides=["menet.downsample=maxpool"])
    with pytest.raises(ValueError, match="multiple of 4"):
        tiny_head()(torch.randn(1, 8, 30))


# --------------------------------------------------------------------------- learning
def test_a_tiny_menet_overfits_two_videos():
    """Features mark one action per video; after a short Adam run the best proposal finds it."""
    torch.manual_seed(3)
    t, dim = 32, 8
    gts = [(6.0, 14.0), (15.0, 28.0)]
    x = 0.1 * torch.randn(2, dim, t)
    for b, (s, e) in enumerate(gts):
        x[b, :4, int(s):int(e) + 1] += 1.0
        x[b, 4, int(s)] += 2.0
        x[b, 5, int(e)] += 2.0
    mask = torch.ones(2, t, dtype=torch.bool)
    targets = [target(g) for g in gts]
    head = tiny_head(dim)
    opt = torch.optim.Adam(head.parameters(), lr=5e-3)
    first = None
    for step in range(60):
        head.train()
        loss = head.loss(head(x, mask), mask, targets)["loss"]
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    head.eval()
    with torch.no_grad():
        dets = head.decode(head(x, mask), mask)
    for det, g in zip(dets, gts):
        best = det.segments[np.argmax(det.scores)]
        assert segment_iou(best, np.array(g)) > 0.7
