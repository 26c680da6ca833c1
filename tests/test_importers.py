"""``tadkit data import-features``: one small generated source per published layout, with the
snippet times checked against values computed by hand from each release's convention."""
from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from tadkit.cli import cli, main
from tadkit.data.annotations import load_annotations
from tadkit.data.datasets import make_dataset
from tadkit.data.features import FeatureStore
from tadkit.data.importers import LAYOUTS, import_features
from tadkit.errors import ConfigError, InputError


def _feats(t: int, c: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((t, c)).astype(np.float32)


def _anet_json(path, videos: dict) -> str:
    """An ActivityNet-style JSON: ``{id: (subset, duration, fps or None, [(start, end, label)])}``."""
    db = {}
    for vid, (subset, duration, fps, inst) in videos.items():
        db[vid] = {"subset": subset, "duration": duration,
                   "annotations": [{"segment": [s, e], "label": lab} for s, e, lab in inst]}
        if fps is not None:
            db[vid]["fps"] = fps
    path.write_text(json.dumps({"version": "test", "database": db}))
    return str(path)


def _run(args) -> "CliRunner.Result":
    return CliRunner().invoke(cli, ["data", "import-features", *map(str, args)])


# --------------------------------------------------------------------------- ActionFormer THUMOS14 I3D
@pytest.fixture()
def thumos(tmp_path):
    src = tmp_path / "i3d_features"
    src.mkdir()
    np.save(src / "video_test_0000004.npy", _feats(5, 8, 0))
    np.save(src / "video_validation_0000051.npy", _feats(3, 8, 1))
    np.save(src / "video_test_0009999.npy", _feats(2, 8, 2))          # not annotated: not imported
    gt = _anet_json(tmp_path / "thumos14.json", {
        "video_test_0000004": ("Test", 10.0, 30.0, [(0.4, 0.6, "Diving")]),
        "video_validation_0000051": ("Validation", 6.0, 25.0, [(0.5, 1.5, "Diving")]),
        "video_test_0000007": ("Test", 8.0, 30.0, [(2.0, 3.0, "Diving")]),  # no features
    })
    return src, gt


def test_actionformer_thumos_times_follow_feat_stride_and_num_frames(thumos, tmp_path):
    src, gt = thumos
    res = _run([src, "--layout", "actionformer-thumos-i3d", "--annotations", gt, "--out", tmp_path / "feats"])
    assert res.exit_code == 0, res.output
    assert "imported 2 videos" in res.output and "1 annotated video without features" in res.output
    store = FeatureStore.open(tmp_path / "feats")
    assert store.video_ids() == ["video_test_0000004", "video_validation_0000051"]
    v = store.read("video_test_0000004")
    # feature i at frame 4i + 16/2 at the video's 30 fps
    np.testing.assert_allclose(v.times, [8 / 30, 12 / 30, 16 / 30, 20 / 30, 24 / 30])
    np.testing.assert_array_equal(v.features, _feats(5, 8, 0))
    assert (v.fps, v.clip_len, v.stride, v.duration, v.num_frames) == (30.0, 16, 4, 10.0, 300)
    w = store.read("video_validation_0000051")                 # its own fps, 25
    np.testing.assert_allclose(w.times, [0.32, 0.48, 0.64])
    imp = store.provenance.extras["import"]
    assert imp["layout"] == "actionformer-thumos-i3d" and imp["declared_backbone"] == "i3d"
    assert imp["convention"] == "t_i = (i * 4 + 8) / fps seconds, fps = the video's fps"
    assert imp["source"] == str(src.resolve())
    assert store.provenance.backbone == "i3d" and store.provenance.streams == ("rgb", "flow")
    assert store.provenance.fps is None and store.provenance.feature_dim == 8


def test_subset_selects_videos_and_a_rerun_skips_them(thumos, tmp_path):
    src, gt = thumos
    args = [src, "--layout", "actionformer-thumos-i3d", "--annotations", gt, "--subset", "test",
            "--out", tmp_path / "feats"]
    assert _run(args).exit_code == 0
    assert FeatureStore.open(tmp_path / "feats").video_ids() == ["video_test_0000004"]
    again = _run(args)
    assert again.exit_code == 0 and "imported 0 videos, skipped 1 already present" in again.output


@pytest.mark.filterwarnings("ignore::tadkit.data.datasets.DatasetWarning")  # the unmatched videos
def test_imported_times_reach_the_detection_grid(thumos, tmp_path):
    src, gt = thumos
    import_features(src, tmp_path / "feats", LAYOUTS["actionformer-thumos-i3d"],
                    annotations=load_annotations(gt, warn=False))
    ds = make_dataset("full", tmp_path / "feats", load_annotations(gt, warn=False).subset("test"))
    sample = next(s for s in (ds[i] for i in range(len(ds))) if s.video_id == "video_test_0000004")
    assert sample.axis.to_seconds(0) == pytest.approx(8 / 30) and sample.axis.step == pytest.approx(4 / 30)
    # ground truth 0.4-0.6 s in grid units: (t - 8/30) / (4/30)
    np.testing.assert_allclose(sample.segments.numpy(), [[1.0, 2.5]], atol=1e-5)


def test_fps_from_the_annotations_is_required_when_the_layout_has_none(tmp_path):
    src = tmp_path / "f"
    src.mkdir()
    np.save(src / "a.npy", _feats(2, 4, 0))
    np.save(src / "b.npy", _feats(2, 4, 1))
    gt = _anet_json(tmp_path / "gt.json", {"a": ("test", 5.0, 30.0, []), "b": ("test", 5.0, None, [])})
    res = _run([src, "--layout", "actionformer-thumos-i3d", "--annotations", gt, "--out", tmp_path / "s"])
    assert res.exit_code == 3
    assert "failed b" in res.output and "pass --fps" in res.output
    assert FeatureStore.open(tmp_path / "s").video_ids() == ["a"]
    assert "b" in FeatureStore.open(tmp_path / "s").failures()


def test_features_running_past_the_annotated_end_are_reported(tmp_path):
    src = tmp_path / "f"
    src.mkdir()
    np.save(src / "a.npy", _feats(10, 4, 0))      # last feature at (36 + 8) / 30 = 1.47 s
    gt = _anet_json(tmp_path / "gt.json", {"a": ("test", 1.0, 30.0, [])})
    res = _run([src, "--layout", "actionformer-thumos-i3d", "--annotations", gt, "--out", tmp_path / "s"])
    assert res.exit_code == 0 and "run past the annotated end (e.g. a): check --fps / --stride" in res.output


# --------------------------------------------------------------------------- TSP (one HDF5)
def test_tsp_h5_times_at_15_fps_every_16_frames(tmp_path):
    src = tmp_path / "r2plus1d_34-tsp_on_activitynet-valid_features.h5"
    with h5py.File(src, "w") as f:
        f["v_abc"] = _feats(3, 6, 0)
        f["v_xyz"] = _feats(1, 6, 1)
    gt = _anet_json(tmp_path / "anet.json", {"abc": ("validation", 3.0, None, [(0.0, 1.0, "Run")]),
                                             "xyz": ("validation", 1.2, None, [(0.1, 0.9, "Run")])})
    res = _run([src, "--layout", "tsp-h5", "--annotations", gt, "--out", tmp_path / "feats"])
    assert res.exit_code == 0, res.output
    store = FeatureStore.open(tmp_path / "feats")
    assert store.video_ids() == ["abc", "xyz"]                # matched to the ids without v_
    v = store.read("abc")
    np.testing.assert_allclose(v.times, [8 / 15, 24 / 15, 40 / 15])   # (16 i + 8) / 15
    assert (v.fps, v.clip_len, v.stride, v.num_frames) == (15.0, 16, 16, 45)
    np.testing.assert_array_equal(store.read("xyz").features, _feats(1, 6, 1))
    assert store.provenance.fps == 15.0 and store.provenance.backbone == "r2plus1d_34-tsp"


def test_tsp_thumos_release_with_stride_1_and_no_annotations(tmp_path):
    src = tmp_path / "tsp_thumos.h5"
    with h5py.File(src, "w") as f:
        f["video_test_0000004"] = _feats(4, 3, 0)
    res = _run([src, "--layout", "tsp-h5", "--stride", "1", "--out", tmp_path / "feats"])
    assert res.exit_code == 0, res.output
    v = FeatureStore.open(tmp_path / "feats").read("video_test_0000004")
    np.testing.assert_allclose(v.times, [8 / 15, 9 / 15, 10 / 15, 11 / 15])
    # no annotations: the duration is the frames the clips cover, 3 * 1 + 16 = 19 at 15 fps
    assert v.num_frames == 19 and v.duration == pytest.approx(19 / 15)


# --------------------------------------------------------------------------- BMN csv_mean_100
def _bmn_csv(path, rows: np.ndarray) -> None:
    header = ",".join(f"f{i}" for i in range(rows.shape[1]))
    np.savetxt(path, rows, delimiter=",", header=header, comments="", fmt="%.6f")


def test_bmn_csv_rows_are_equal_cells_of_the_video(tmp_path):
    src = tmp_path / "csv_mean_100"
    src.mkdir()
    rows = np.round(_feats(4, 3, 0), 6)
    _bmn_csv(src / "v_abc.csv", rows)
    _bmn_csv(src / "v_def.csv", rows[:2])
    gt = _anet_json(tmp_path / "anet.json", {"abc": ("training", 20.0, None, [(1.0, 5.0, "Run")]),
                                             "def": ("training", 14.07, None, [(1.0, 5.0, "Run")])})
    res = _run([src, "--layout", "bmn-csv", "--annotations", gt, "--out", tmp_path / "feats"])
    assert res.exit_code == 0, res.output
    store = FeatureStore.open(tmp_path / "feats")
    v = store.read("abc")
    np.testing.assert_allclose(v.times, [2.5, 7.5, 12.5, 17.5])           # (i + 1/2) * 20 / 4
    np.testing.assert_allclose(v.features, rows, atol=1e-6)
    assert (v.fps, v.clip_len, v.stride, v.num_frames, v.duration) == (0.2, 1, 1, 4, 20.0)
    assert store.provenance.fps is None and store.provenance.streams == ("rgb", "flow")
    assert store.provenance.extras["import"]["rule"] == "resized"


def test_bmn_csv_span_from_bsn_video_info(tmp_path):
    src = tmp_path / "csv_mean_100"
    src.mkdir()
    _bmn_csv(src / "v_---9CpRcKoU.csv", _feats(4, 2, 0))
    info = tmp_path / "video_info_new.csv"
    info.write_text("video,numFrame,seconds,fps,rfps,subset,featureFrame\n"
                    "v_---9CpRcKoU,418,14.07,30.0,29.7085998579,training,400\n")
    gt = _anet_json(tmp_path / "anet.json", {"---9CpRcKoU": ("training", 14.07, None, [(1.0, 5.0, "Run")])})
    res = _run([src, "--layout", "bmn-csv", "--annotations", gt, "--video-info", info,
                "--out", tmp_path / "feats"])
    assert res.exit_code == 0, res.output
    v = FeatureStore.open(tmp_path / "feats").read("---9CpRcKoU")
    # span = 400 / 418 * 14.07 = 13.464115 s; cells of 3.366029 s
    np.testing.assert_allclose(v.times, [1.683014, 5.049043, 8.415072, 11.781100], atol=1e-6)
    assert v.duration == 14.07


def test_resized_features_need_a_duration(tmp_path):
    src = tmp_path / "csv"
    src.mkdir()
    _bmn_csv(src / "v_a.csv", _feats(2, 2, 0))
    res = _run([src, "--layout", "bmn-csv", "--out", tmp_path / "feats"])  # no annotations: stops at once
    assert isinstance(res.exception, ConfigError) and "over its duration: pass --annotations" in str(res.exception)
    assert not (tmp_path / "feats").exists()
    gt = _anet_json(tmp_path / "gt.json", {"v_a": ("validation", None, None, [])})  # annotations without one
    res = _run([src, "--layout", "bmn-csv", "--annotations", gt, "--out", tmp_path / "feats"])
    assert res.exit_code == 3 and "duration" in res.output


# --------------------------------------------------------------------------- HACS SlowFast, OpenTAD
def test_hacs_slowfast_times_at_15_fps_every_8_frames_centred_on_32(tmp_path):
    src = tmp_path / "slowfast101_15fps_stride8_len32_hacs"
    src.mkdir()
    np.save(src / "-0cu1ZBrJ1A.npy", _feats(3, 5, 0))
    gt = _anet_json(tmp_path / "hacs.json", {"-0cu1ZBrJ1A": ("validation", 2.5, None, [(0.2, 1.0, "Run")])})
    res = _run([src, "--layout", "hacs-slowfast", "--annotations", gt, "--out", tmp_path / "feats"])
    assert res.exit_code == 0, res.output
    v = FeatureStore.open(tmp_path / "feats").read("-0cu1ZBrJ1A")
    np.testing.assert_allclose(v.times, [16 / 15, 24 / 15, 32 / 15])    # (8 i + 16) / 15
    assert (v.clip_len, v.stride, v.fps) == (32, 8, 15.0)


def test_opentad_npy_takes_its_parameters_from_the_command_line(tmp_path):
    src = tmp_path / "feats_npy"
    src.mkdir()
    np.save(src / "v_abc.npy", _feats(3, 4, 0))
    res = _run([src, "--layout", "opentad-npy", "--stride", 4, "--offset-frames", 8, "--fps", 30,
                "--backbone", "videomae_b", "--prefix", "v_", "--out", tmp_path / "feats"])
    assert res.exit_code == 0, res.output
    store = FeatureStore.open(tmp_path / "feats")
    np.testing.assert_allclose(store.read("abc").times, [8 / 30, 12 / 30, 16 / 30])
    assert store.provenance.backbone == "videomae_b" and store.provenance.clip_len == 16
    assert store.provenance.extras["import"]["parameters"] == {"stride": 4, "offset": 8.0, "clip_len": 16,
                                                               "fps": 30.0, "prefix": "v_"}


def test_opentad_without_a_stride_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "f").mkdir()
    code = main(["data", "import-features", str(tmp_path / "f"), "--layout", "opentad-npy",
                 "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "--stride" in err and err.count("\n") == 1
    with pytest.raises(ConfigError, match="--clip-len"):
        LAYOUTS["opentad-npy"].with_overrides(stride=4)


# --------------------------------------------------------------------------- bad input
def test_a_malformed_file_is_recorded_and_the_rest_imported(tmp_path):
    src = tmp_path / "f"
    src.mkdir()
    np.save(src / "good.npy", _feats(2, 4, 0))
    np.save(src / "flat.npy", np.zeros(7, np.float32))
    np.save(src / "nan.npy", np.full((2, 4), np.nan, np.float32))
    (src / "junk.npy").write_bytes(b"not numpy")
    res = _run([src, "--layout", "hacs-slowfast", "--out", tmp_path / "s"])
    assert res.exit_code == 3
    store = FeatureStore.open(tmp_path / "s")
    assert store.video_ids() == ["good"]
    fails = store.failures()
    assert set(fails) == {"flat", "nan", "junk"}
    assert "shape (7,)" in fails["flat"] and "NaN" in fails["nan"] and "unreadable" in fails["junk"]


def test_no_features_and_wrong_source_kinds_are_input_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no npy features"):
        import_features(tmp_path / "empty", tmp_path / "s", LAYOUTS["hacs-slowfast"])
    with pytest.raises(InputError, match="one HDF5 file"):
        import_features(tmp_path / "empty", tmp_path / "s", LAYOUTS["tsp-h5"])
    with pytest.raises(InputError, match="folder"):
        import_features(tmp_path / "nope.npy", tmp_path / "s", LAYOUTS["hacs-slowfast"])


@pytest.mark.parametrize("name, write, problem", [
    ("empty", lambda p: p.write_bytes(b""), "not a NumPy .npy array (no NumPy header)"),
    ("truncated", lambda p: p.write_bytes(_npy_bytes(_feats(4, 4, 0))[:90]), "unreadable features (EOF"),
    ("complex", lambda p: np.save(p, np.ones((2, 4), np.complex64)), "real numbers"),
    ("huge", lambda p: np.save(p, np.full((2, 4), 1e39)), "beyond float32"),
    ("flags", lambda p: np.save(p, np.ones((2, 4), bool)), "real numbers"),
])
def test_hostile_npy_files_are_recorded_not_raised(tmp_path, name, write, problem):
    src = tmp_path / "f"
    src.mkdir()
    np.save(src / "good.npy", _feats(2, 4, 0))
    write(src / f"{name}.npy")
    report = import_features(src, tmp_path / "s", LAYOUTS["hacs-slowfast"])
    assert report.written == ["good"] and list(report.failed) == [name]
    assert report.failed[name].startswith(str(src / f"{name}.npy") + ": ") and problem in report.failed[name]


def test_one_video_of_another_width_fails_alone_even_when_it_is_read_first(tmp_path):
    src = tmp_path / "f"
    src.mkdir()
    np.save(src / "a_odd.npy", _feats(3, 6, 0))           # sorted first
    for i in range(3):
        np.save(src / f"b{i}.npy", _feats(3, 4, i + 1))
    report = import_features(src, tmp_path / "s", LAYOUTS["hacs-slowfast"])
    assert report.written == ["b0", "b1", "b2"] and list(report.failed) == ["a_odd"]
    assert "6 channels, the store's videos have 4" in report.failed["a_odd"]
    assert FeatureStore.open(tmp_path / "s").provenance.feature_dim == 4


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_a_rerun_with_another_time_rule_is_refused_not_mixed_into_the_store(tmp_path, capsys):
    src = tmp_path / "f"
    src.mkdir()
    np.save(src / "a.npy", _feats(4, 4, 0))
    opentad = LAYOUTS["opentad-npy"]
    import_features(src, tmp_path / "s", opentad.with_overrides(stride=4, offset=8, fps=30.0))
    np.save(src / "b.npy", _feats(4, 4, 1))
    code = main(["data", "import-features", str(src), "--layout", "opentad-npy", "--stride", "4",
                 "--offset-frames", "0", "--clip-len", "16", "--fps", "30", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("error: ") and err.count("\n") == 1
    assert "imported with another time rule" in err and "parameters.offset: features have 8" in err
    assert FeatureStore.open(tmp_path / "s").video_ids() == ["a"]
    same = import_features(src, tmp_path / "s", opentad.with_overrides(stride=4, offset=8, fps=30.0))
    assert same.written == ["b"] and same.skipped == ["a"]


@pytest.mark.parametrize("override", [{"fps": math.inf}, {"fps": math.nan}, {"offset": math.nan},
                                      {"offset": math.inf}, {"offset": -1.0}])
def test_non_finite_layout_parameters_are_config_errors(override):
    with pytest.raises(ConfigError, match="finite"):
        LAYOUTS["opentad-npy"].with_overrides(stride=4, clip_len=16, **{"fps": 30.0, **override})


@pytest.mark.parametrize("row", ["v_a,100,inf,100", "v_a,100,nan,100", "v_a,100", "v_a,x,1,1"])
def test_bad_video_info_rows_are_one_line_errors_naming_the_line(tmp_path, row):
    info = tmp_path / "video_info_new.csv"
    info.write_text(f"video,numFrame,seconds,featureFrame\nv_b,10,1,10\n{row}\n")
    src = tmp_path / "csv"
    src.mkdir()
    _bmn_csv(src / "v_a.csv", _feats(2, 2, 0))
    with pytest.raises(InputError, match=r"line 3: numFrame, seconds and featureFrame must be finite"):
        import_features(src, tmp_path / "s", LAYOUTS["bmn-csv"], video_info=info)
    info.write_bytes(b"video,numFrame\n\xff\xfe\n")
    with pytest.raises(InputError, match="not a UTF-8 CSV"):
        import_features(src, tmp_path / "s", LAYOUTS["bmn-csv"], video_info=info)
