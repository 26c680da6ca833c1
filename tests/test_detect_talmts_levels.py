"""TAL-MTS with stored backbone levels (``talmts.stored_levels``): resampling onto the pyramid's cells, the head,
configuration errors, the CLI end to end on a synthetic store with levels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synth_annotations import random_annotations
from tadkit.cli import main
from tadkit.config import load_config
from tadkit.data.batches import LevelInput
from tadkit.detect.config import DetectConfig, TALMTSConfig
from tadkit.detect.heads import InputInfo, build_head
from tadkit.detect.heads.talmts import TALMTS
from tadkit.detect.layers import TemporalPyramid, level_centers, pyramid_lengths, steps_to_cells
from tadkit.errors import ConfigError

from oracle_pyramid import conv_geometry, receptive_centres

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = dict(dim=16, num_levels=4, first_stride=2, stt_dim=16, fsa_dim=16, num_heads=2, boundary_dim=8,
            stt_temporal_layers=1, mlp_ratio=1.0, stored_levels=True)
CONFIGS = Path(__file__).parents[1] / "configs"


def _positions(t: int, density: float) -> torch.Tensor:
    """Snippet-grid positions of a level with ``density`` steps per snippet over ``t`` snippets (as stored by
    ``tadkit data synth-features --levels``: step ``j`` at ``-1/2 + (j + 1/2) / density``)."""
    n = int(np.ceil(t * density - 1e-9))
    return -0.5 + (torch.arange(n, dtype=torch.float32) + 0.5) / density


def _level(t: int, density: float, channels: int, batch: int = 2, seed: int = 0) -> LevelInput:
    pos = _positions(t, density)
    g = torch.Generator().manual_seed(seed)
    return LevelInput(torch.randn(batch, channels, len(pos), generator=g),
                      torch.ones(batch, len(pos), dtype=torch.bool), pos.expand(batch, -1).clone())


# --------------------------------------------------------------------------- steps -> cells
def test_steps_on_the_cell_centres_are_the_cells():
    f = torch.arange(12.0).reshape(1, 2, 6)
    pos = level_centers(6, 4)[None]                      # steps exactly at the cells' centres 0, 4, ..., 20
    out = steps_to_cells(f, torch.ones(1, 6, dtype=torch.bool), pos, 6, 4)
    torch.testing.assert_close(out, f)


def test_denser_steps_are_averaged_with_triangle_weights_by_hand():
    f = torch.tensor([[[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]]])
    pos = torch.arange(8.0)[None]                        # one step per snippet, cells of 2 snippets
    out = steps_to_cells(f, torch.ones(1, 8, dtype=torch.bool), pos, 4, 2)[0, 0]
    # cell j (centre 2j): weights 1/2, 1, 1/2 on the steps at 2j - 1, 2j, 2j + 1 (only the existing ones)
    expected = [(1 + 0.5 * 2) / 1.5, (0.5 * 2 + 4 + 0.5 * 8) / 2, (0.5 * 8 + 16 + 0.5 * 32) / 2,
                (0.5 * 32 + 64 + 0.5 * 128) / 2]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)


def test_sparser_steps_are_interpolated_linearly_and_padding_is_ignored():
    f = torch.tensor([[[4.0, 8.0, 0.0, 1000.0]]])
    mask = torch.tensor([[True, True, True, False]])     # the last step is padding
    pos = torch.tensor([[0.5, 2.5, 4.5, 6.5]])           # one step per two snippets, cells of one snippet
    out = steps_to_cells(f, mask, pos, 6, 1)[0, 0]
    np.testing.assert_allclose(out.numpy(), [4.0, 0.75 * 4 + 0.25 * 8, 0.25 * 4 + 0.75 * 8, 0.75 * 8, 0.25 * 8, 0.0],
                               rtol=1e-6)
    # samples with different offsets (windows) in one batch: each row uses its own positions
    two = steps_to_cells(torch.cat([f, f]), torch.cat([mask, mask]), torch.cat([pos, pos - 0.5]), 6, 1)
    np.testing.assert_allclose(two[1, 0, :3].numpy(), [4.0, 0.5 * 4 + 0.5 * 8, 8.0])
    assert steps_to_cells(f, torch.zeros_like(mask), pos, 6, 1).abs().sum() == 0  # no real step: zeros


@pytest.mark.parametrize("density", [2.0, 1.0, 0.5])
@pytest.mark.parametrize("stride", [1, 2, 4, 8])
def test_stored_level_cells_line_up_with_the_conv_pyramid_cells(density, stride):
    """Resampling the steps' own positions gives, at every inner cell, the centre of that cell's receptive field
    in the strided-conv pyramid (the oracle): a stored-level cell summarises the time a conv cell sees."""
    t = 256
    pos = _positions(t, density)[None]
    n = pyramid_lengths(t, stride, 1)[0]
    out = steps_to_cells(pos[:, None, :], torch.ones_like(pos, dtype=torch.bool), pos, n, stride)[0, 0]
    pyr = TemporalPyramid(4, 4, 1, stride)
    oracle = receptive_centres([conv_geometry(layer.conv) for layer in pyr.stem], t)
    inner = [j for j in oracle if 2 * stride <= j * stride <= t - 1 - 2 * stride]
    assert len(inner) >= 8
    for j in inner:
        assert float(out[j]) == pytest.approx(oracle[j], abs=1e-4), (j, float(out[j]))
        assert float(level_centers(n, stride)[j]) == oracle[j]


def test_steps_to_cells_is_differentiable_in_the_features():
    lv = _level(20, 2.0, 3, batch=1)
    f = lv.features.requires_grad_(True)
    steps_to_cells(f, lv.mask, lv.positions, 10, 2).sum().backward()
    assert f.grad is not None and f.grad.abs().sum() > 0


# --------------------------------------------------------------------------- the head
def _inputs(t: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(2, 12, t, generator=g)
    mask = torch.ones(2, t, dtype=torch.bool)
    mask[1, 21:] = False
    levels = [_level(t, 1.0, 6, seed=seed + 1), _level(t, 0.5, 5, seed=seed + 2)]
    for lv in levels:  # padding continues the spacing; the padded sample's steps past its end are masked
        lv.mask[1] = lv.positions[1] < 20.5
    return x, mask, levels


def test_a_head_with_stored_levels_builds_its_lowest_levels_from_them():
    torch.manual_seed(0)
    head = TALMTS(TALMTSConfig(**{**TINY, "stt": False, "fsa": False}), 12, 3, level_dims=(6, 5)).eval()
    assert head.needs == frozenset({"levels"})
    x, mask, levels = _inputs()
    out = head(x, mask, levels=levels)
    n = sum(pyramid_lengths(32, 2, 4))
    assert out["coarse_logits"].shape == (2, n, 3) and out["valid"].shape == (2, n)
    # without STT / FSA the snippet features are not read at all: the stored levels are the pyramid
    torch.testing.assert_close(head(torch.randn_like(x), mask, levels=levels)["coarse_logits"], out["coarse_logits"])
    for k in range(2):  # ... and changing either stored level changes the outputs
        changed = [LevelInput(lv.features + (i == k), lv.mask, lv.positions) for i, lv in enumerate(levels)]
        assert not torch.allclose(head(x, mask, levels=changed)["coarse_logits"], out["coarse_logits"])
    # the other levels are stride-2 convs over the last stored one, as in the paper
    assert len(head.pyramid.project) == 2 and len(head.pyramid.down) == 2
    assert head.describe()["stored_levels"] == [6, 5]


def test_stored_levels_with_all_modules_train():
    torch.manual_seed(0)
    head = TALMTS(TALMTSConfig(**TINY), 12, 3, level_dims=(6, 5))
    assert head.needs == frozenset({"levels"})
    x, mask, levels = _inputs()
    for i, (s, e, lab) in enumerate([(3, 9, 0), (10, 18, 2)]):  # class-coded signal in the levels
        for lv in levels:
            inside = (lv.positions[i] >= s) & (lv.positions[i] <= e)
            lv.features[i, lab, inside] += 2.0
    targets = [{"segments": torch.tensor([[3.0, 9.0]]), "labels": torch.tensor([0])},
               {"segments": torch.tensor([[10.0, 18.0]]), "labels": torch.tensor([2])}]
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        terms = head.loss(head(x, mask, levels=levels), mask, targets)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(float(terms["loss"].detach()))
    assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0], losses
    assert head.pyramid.project[1].conv.weight.grad.abs().sum() > 0  # the second stored level trains too


def test_stored_level_configuration_errors():
    cfg = TALMTSConfig(**TINY)
    with pytest.raises(ConfigError, match="needs data.levels"):
        build_head("talmts", cfg, 12, 3, inputs=InputInfo())
    with pytest.raises(ConfigError, match="at most talmts.num_levels"):
        build_head("talmts", cfg, 12, 3, inputs=InputInfo(level_names=tuple("abcde"), level_dims=(4,) * 5))
    with pytest.raises(ConfigError, match="talmts.stored_levels is false"):
        build_head("talmts", TALMTSConfig(**{**TINY, "stored_levels": False}), 12, 3,
                   inputs=InputInfo(level_names=("rgb/x1",), level_dims=(4,)))
    head = build_head("talmts", cfg, 12, 3, inputs=InputInfo(level_names=("rgb/x1", "rgb/x0.5"), level_dims=(6, 5)))
    x, mask, levels = _inputs()
    with pytest.raises(ValueError, match="2 stored levels"):
        head(x, mask, levels=levels[:1])
    with pytest.raises(ValueError, match="channels"):
        head(x, mask, levels=levels[::-1])
    plain = build_head("talmts", TALMTSConfig(**{**TINY, "stored_levels": False}), 12, 3, inputs=InputInfo())
    assert plain.needs == frozenset() and isinstance(plain.pyramid, TemporalPyramid)


def test_levels_config_names_the_i3d_stages():
    cfg = load_config(DetectConfig, CONFIGS / "talmts" / "thumos14_levels.yaml")
    base = load_config(DetectConfig, CONFIGS / "talmts" / "thumos14.yaml")
    assert cfg.talmts.stored_levels and cfg.data.levels == ["Mixed_4f", "Mixed_5c"]
    # everything else is the default recipe
    assert cfg.talmts == TALMTSConfig(**{**vars(base.talmts), "stored_levels": True})
    assert (cfg.optim, cfg.schedule, cfg.train, cfg.postprocess) == (base.optim, base.schedule, base.train,
                                                                     base.postprocess)


# --------------------------------------------------------------------------- CLI end to end
CLI_CONFIG = """\
head: talmts
talmts: {dim: 16, num_levels: 3, first_stride: 2, stt_dim: 16, fsa_dim: 16, num_heads: 2, boundary_dim: 8,
         stt_temporal_layers: 1, mlp_ratio: 1.0, alpha: 1.0, stored_levels: true}
data: {mode: window, length: 32, train_stride: 16, infer_stride: 16, train_subset: training,
       test_subset: validation, levels: [x1, x0.5]}
optim: {name: adam, lr: 0.003, weight_decay: 0.0}
schedule: {name: constant}
train: {epochs: 4, batch_size: 4, log_every: 0, checkpoint_every: 4}
postprocess: {method: gaussian, sigma: 0.5, max_per_video: 30}
"""


def _annotations(path: Path, videos: int = 8) -> Path:
    return random_annotations(path, videos=videos, train=6, duration=30.0, fps=8.0, until=24, first=(1, 3),
                              length=(2, 5), gap=(2, 5))


def test_cli_trains_and_infers_with_stored_levels_of_a_synthetic_store(tmp_path, monkeypatch):
    ann = _annotations(tmp_path / "ann.json")
    feats = tmp_path / "feats"
    assert main(["data", "synth-features", "--annotations", str(ann), "--out", str(feats), "--feature-dim", "8",
                 "--clip-len", "8", "--stride", "4", "--streams", "rgb", "--levels", "2,1,0.5"]) == 0
    (tmp_path / "talmts.yaml").write_text(CLI_CONFIG)
    seen = []
    forward = TALMTS.forward

    def spy(self, features, mask=None, grid=None, levels=None):
        seen.append([(tuple(lv.features.shape), float(lv.positions[0, 1] - lv.positions[0, 0])) for lv in levels])
        return forward(self, features, mask, grid, levels)

    monkeypatch.setattr(TALMTS, "forward", spy)
    run, pred, report = tmp_path / "run", tmp_path / "pred.json", tmp_path / "eval.json"
    assert main(["detect", "train", "--config", str(tmp_path / "talmts.yaml"), "--features", str(feats),
                 "--annotations", str(ann), "--out", str(run)]) == 0
    # windows of 32 snippets: 32 steps of x1 (one snippet apart) and 16 of x0.5 (two apart)
    assert seen and all(s == [((s[0][0][0], 8, 32), 1.0), ((s[0][0][0], 8, 16), 2.0)] for s in seen)
    epochs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in epochs) and epochs[-1]["loss"] < epochs[0]["loss"]
    seen.clear()
    assert main(["detect", "infer", "--run", str(run), "--features", str(feats), "--subset", "validation",
                 "--out", str(pred)]) == 0
    assert seen
    assert main(["evaluate", "--dataset", "anet", "--gt", str(ann), "--pred", str(pred), "--subset", "validation",
                 "--tiou", "0.3,0.5,0.7", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["num_videos"] == 2
