"""The shipped MLTPN / TAL-MTS configs: default recipes that learn, the papers' settings, windows, soft-NMS."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tadkit.config import load_config
from tadkit.data.features import FeatureStore, Provenance, VideoFeatures
from tadkit.detect.config import DetectConfig
from tadkit.detect.engine import train
from tadkit.detect.heads import DetectionHead
from tadkit.detect.inputs import make_dataset, make_source, open_stores
from tadkit.detect.postprocess import Detections, postprocess_video
from tadkit.timeline import snippet_centers

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CONFIGS = Path(__file__).parents[1] / "configs"
DEFAULTS = ["mltpn/thumos14", "mltpn/anet", "talmts/thumos14", "talmts/anet"]
#: test-sized widths: the configs' optimiser, schedule, batch, losses and data rules stay as shipped
TINY = {
    "mltpn": ["mltpn.embed_dim=8", "mltpn.transform_k1=4", "mltpn.transform_k2=4", "mltpn.thm_channels=8",
              "mltpn.thm_out_channels=8", "mltpn.num_thms=2", "mltpn.num_scales=3", "mltpn.mfm_reduction=4",
              "mltpn.head_squeeze=2"],
    "talmts": ["talmts.dim=16", "talmts.num_levels=4", "talmts.stt_dim=16", "talmts.fsa_dim=16", "talmts.num_heads=2",
               "talmts.boundary_dim=8", "talmts.stt_temporal_layers=1"],
}
CLASSES = ["Jump", "Run", "Throw"]


def _config(name: str, *overrides: str) -> DetectConfig:
    return load_config(DetectConfig, CONFIGS / f"{name}.yaml", overrides=list(overrides))


def _store(root: Path, videos: int, snippets: int, dim: int = 16, seed: int = 0) -> tuple[Path, Path]:
    """``videos`` synthetic videos of ``snippets`` snippets (1 per second), class-coded actions; training subset."""
    rng = np.random.default_rng(seed)
    fps, clip_len, stride = 4.0, 4, 4
    times = snippet_centers(snippets * stride, clip_len, stride, fps)
    duration = snippets * stride / fps
    prov = Provenance(backbone="unit-test", streams=("rgb",), feature_dim=dim, clip_len=clip_len, stride=stride,
                      fps=fps, weights={"rgb": {"file": None, "sha256": "random"}})
    db = {}
    with FeatureStore.create(root / "feats", prov) as writer:
        for i in range(videos):
            feats = rng.normal(0.0, 0.5, (len(times), dim)).astype(np.float32)
            anns, t = [], float(rng.uniform(2, 10))
            while t < duration - 14:
                length, label = float(rng.uniform(4, 12)), int(rng.integers(len(CLASSES)))
                inside = (times >= t) & (times <= t + length)
                feats[inside, label * 4:(label + 1) * 4] += 1.5
                anns.append({"label": CLASSES[label], "segment": [round(t, 2), round(t + length, 2)]})
                t += length + float(rng.uniform(4, 14))
            vid = f"vid{i:03d}"
            db[vid] = {"subset": "training", "duration": duration, "fps": fps, "annotations": anns}
            writer.write(VideoFeatures(vid, feats, times, fps, clip_len, stride, len(times) * stride, duration))
    ann = root / "ann.json"
    ann.write_text(json.dumps({"version": "unit-test", "database": db}))
    return ann, root / "feats"


# --------------------------------------------------------------------------- defaults learn
@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """384 one-window videos: 24 batches of 16 per epoch for window and resize configs alike."""
    return _store(tmp_path_factory.mktemp("configs"), videos=384, snippets=64)


@pytest.mark.parametrize("name", DEFAULTS)
def test_a_few_epochs_of_each_default_config_clearly_reduce_the_loss(name, small_store, tmp_path):
    ann, feats = small_store
    head = name.split("/")[0]
    cfg = _config(name, *TINY[head], "data.length=64", "data.train_subset=training", "train.epochs=4",
                  "train.log_every=0", "train.checkpoint_every=100")
    summary = train(cfg, feats, ann, tmp_path / "run", echo=None)
    losses = [json.loads(x)["loss"] for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert summary["epochs"] == 4 and all(math.isfinite(v) for v in losses)
    # measured (data.normalize on): the defaults end at 0.64-0.78 of their first epoch's loss; the *_paper
    # optimisers at 0.97-1.00
    assert losses[-1] < 0.8 * losses[0], losses


# --------------------------------------------------------------------------- the papers' settings
def test_defaults_keep_the_papers_architecture_and_the_paper_files_its_optimiser():
    for name in DEFAULTS:
        default, paper = _config(name), _config(f"{name}_paper")
        head = default.head
        assert paper.head == head and getattr(default, head) == getattr(paper, head)
        assert default.postprocess == paper.postprocess and default.data.mode == paper.data.mode
        assert default.optim.name == "adam" and default.optim.lr == 1e-3 and default.train.batch_size == 16
    sgd = _config("mltpn/thumos14_paper")
    assert (sgd.optim.name, sgd.optim.lr, sgd.optim.momentum, sgd.optim.weight_decay) == ("sgd", 1e-3, 0.9, 1e-4)
    assert (sgd.schedule.name, sgd.schedule.milestones, sgd.train.batch_size) == ("step", [15], 16)
    assert (_config("mltpn/anet_paper").optim.name, _config("mltpn/anet_paper").optim.lr) == ("adam", 1e-4)
    for name, alpha in (("talmts/thumos14_paper", 10.0), ("talmts/anet_paper", 1.0)):
        cfg = _config(name)
        assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay) == ("adam", 1e-5, 1e-3)
        assert (cfg.train.batch_size, cfg.train.epochs, cfg.talmts.alpha) == (1, 25, alpha)


# --------------------------------------------------------------------------- TAL-MTS windows (AFSD's clip strides)
def test_talmts_thumos14_windows_start_every_30_snippets_in_training_and_128_in_testing(tmp_path):
    ann, feats = _store(tmp_path, videos=1, snippets=700)
    from tadkit.data.annotations import load_annotations

    annotations = load_annotations(ann)

    def starts(cfg: DetectConfig, training: bool) -> list[int]:
        source = make_source(cfg, open_stores(feats))
        return [w[1] for w in make_dataset(cfg, source, annotations, training, DetectionHead()).windows]

    for name in ("talmts/thumos14", "talmts/thumos14_paper"):
        cfg = _config(name, "data.drop_empty=false")
        assert (cfg.data.length, cfg.data.train_stride, cfg.data.infer_stride) == (256, 30, 128)
        assert starts(cfg, True) == list(range(0, 444, 30)) + [444]  # the last window ends on the last snippet
        assert starts(cfg, False) == [0, 128, 256, 384, 444]
    # a stride overrides the overlap; without one the overlap rules
    cfg = _config("talmts/thumos14", "data.drop_empty=false", "data.train_stride=null", "data.train_overlap=0.5")
    assert starts(cfg, True) == [0, 128, 256, 384, 444]


# --------------------------------------------------------------------------- TAL-MTS soft-NMS (AFSD's sigma)
@pytest.mark.parametrize("name,sigma", [("talmts/thumos14", 0.3), ("talmts/anet", 0.85),
                                        ("talmts/thumos14_paper", 0.3), ("talmts/anet_paper", 0.85)])
def test_talmts_soft_nms_is_gaussian_with_the_papers_value_as_sigma(name, sigma):
    pp = _config(name).postprocess
    assert (pp.method, pp.sigma) == ("gaussian", sigma)
    # two candidates of one class at tIoU 0.8: the second decays by exp(-0.8² / sigma); linear soft-NMS at
    # "threshold 0.85" would not touch it at all
    det = Detections(np.array([[0.0, 10.0], [0.0, 8.0]]), np.array([0.9, 0.8]), np.array([1, 1]))
    out = postprocess_video(det, pp)
    np.testing.assert_allclose(np.sort(out.scores)[::-1], [0.9, 0.8 * math.exp(-0.64 / sigma)])
