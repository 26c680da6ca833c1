"""Optical flow: TV-L1 direction and range, encodings, alignment, precomputed frames."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from tadkit.errors import InputError
from tadkit.extract.flow import (FlowFrames, FlowOptions, encode_flow, next_frame_index, pair_flows,
                                 to_gray, tvl1_flow)
from tadkit.extract.runner import ExtractOptions, Extractor
from tadkit.extract.video import plan_snippets

from test_extract_helpers import ArrayReader, moving_frames, no_onednn  # noqa: F401


def _interior(flow: np.ndarray, margin: int = 10) -> np.ndarray:
    return flow[..., margin:-margin, margin:-margin, :]


# --------------------------------------------------------------------------- TV-L1
@pytest.mark.parametrize("dx,dy", [(2.0, 0.0), (-1.0, 0.0), (0.0, 3.0), (1.0, -1.0)])
def test_tvl1_recovers_translation_direction_and_size(dx, dy):
    gray = to_gray(moving_frames(2, 48, 64, dx=dx, dy=dy)[:, :, :, :])
    gray[:, :8, :8] = gray[:, 8:16, 8:16]  # hide the frame-index mark
    flow = tvl1_flow(gray[0], gray[1])
    assert flow.shape == (48, 64, 2) and flow.dtype == np.float32
    med = np.median(_interior(flow).reshape(-1, 2), axis=0)
    np.testing.assert_allclose(med, [dx, dy], atol=0.25)  # x right-positive, y down-positive


def test_downscaled_flow_is_rescaled_to_full_resolution_pixels():
    gray = to_gray(moving_frames(2, 64, 96, dx=4.0))
    full = tvl1_flow(gray[0], gray[1])
    half = tvl1_flow(gray[0], gray[1], FlowOptions(size=32))
    assert half.shape == full.shape
    assert np.median(_interior(half)[..., 0]) == pytest.approx(4.0, abs=0.6)


def test_pair_flows_threads_give_identical_results():
    gray = to_gray(moving_frames(4, 32, 40, dx=1.0))
    pairs = [(0, 1), (1, 2), (2, 3)]
    a = pair_flows(gray, pairs, FlowOptions(threads=1))
    b = pair_flows(gray, pairs, FlowOptions(threads=3))
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- encodings
def test_encode_flow_golden_values():
    f = np.array([0.0, 5.0, 20.0, -25.0, 30.0], np.float32)
    u8 = encode_flow(f, 20.0, "uint8")
    q = np.array([128, 159, 255, 0, 255])                 # round((f + 20) * 255 / 40)
    np.testing.assert_allclose(u8, 2 * q / 255 - 1, atol=1e-7)
    vf = encode_flow(f, 20.0, "video_features")
    qv = np.array([128, 160, 256, 0, 256])                # round(128 + 6.375 f): 159.875 -> 160, 255.5 -> 256
    np.testing.assert_allclose(vf, 2 * qv / 255 - 1, atol=1e-7)
    np.testing.assert_allclose(encode_flow(f, 20.0, "linear"), [0, 0.25, 1, -1, 1])
    with pytest.raises(ValueError, match="unknown flow encoding"):
        encode_flow(f, 20.0, "png")


def test_uint8_encoding_stays_on_the_8_bit_grid_within_minus_one_one():
    f = np.random.default_rng(0).normal(0, 15, (1000,)).astype(np.float32)
    v = encode_flow(f)
    assert v.min() >= -1 and v.max() <= 1
    q = (v + 1) * 255 / 2
    np.testing.assert_allclose(q, np.round(q), atol=1e-4)


def test_last_frame_repeats_the_previous_pair():
    np.testing.assert_array_equal(next_frame_index(np.arange(5), 5), [0, 1, 2, 3, 3])
    np.testing.assert_array_equal(next_frame_index(np.array([0]), 1), [-1])


# --------------------------------------------------------------------------- in the pipeline
def _flow_extractor(**kw) -> Extractor:
    opts = ExtractOptions(streams=("flow",), random_weights=True, size=32, device="cpu", batch_size=2, **kw)
    return Extractor(opts)


def test_flow_input_is_aligned_with_frame_t_and_signed_by_direction():
    # frames 0..5 move right by 2 px/frame, then left by 2 px/frame
    right = moving_frames(6, 48, 64, dx=2.0)
    back = np.stack([np.roll(right[5], -2 * (k + 1), axis=1) for k in range(5)])  # continues leftwards
    frames = np.concatenate([right, back])
    frames[:, :8, :8] = 128  # hide the frame-index mark
    ex = _flow_extractor(clip_len=11, stride=11)
    reader = ArrayReader(frames)
    plan = plan_snippets(reader.info, 11, 11)
    (sl, inputs), = list(ex.clip_batches(reader, plan))
    x = inputs["flow"]
    assert tuple(x.shape) == (1, 2, 11, 32, 32)
    assert x.min() >= -1 and x.max() <= 1
    u = x[0, 0, :, 8:-8, 8:-8].median(dim=-1).values.median(dim=-1).values  # per frame
    # pair (t, t+1): t = 0..4 rightwards, t = 5..9 leftwards, t = 10 repeats pair (9, 10)
    # resize 64 -> 49 px wide scales 2 px to about 1.5 px: encoded about +-1.5/20
    assert (u[:5] > 0.03).all() and (u[5:] < -0.03).all()
    torch.testing.assert_close(x[0, :, 10], x[0, :, 9])


def test_one_frame_video_gets_zero_flow():
    ex = _flow_extractor()
    reader = ArrayReader(moving_frames(1))
    plan = plan_snippets(reader.info, 16, 4)
    (_, inputs), = list(ex.clip_batches(reader, plan))
    np.testing.assert_allclose(inputs["flow"].numpy(), encode_flow(np.zeros(1))[0])


def test_precomputed_flow_frames_are_read_as_2v_over_255_minus_1(tmp_path):
    folder = tmp_path / "vid"
    folder.mkdir()
    for k in range(4):
        cv2.imwrite(str(folder / f"x_{k:05d}.png"), np.full((37, 49), 10 * k, np.uint8))
        cv2.imwrite(str(folder / f"y_{k:05d}.png"), np.full((37, 49), 255 - 10 * k, np.uint8))
    ff = FlowFrames(folder)
    assert len(ff) == 4
    got = ff.read([0, 3, 4])  # frame 4 has no successor: repeats image 3
    np.testing.assert_allclose(got[:, 0, 0, 0], 2 * np.array([0, 30, 30]) / 255 - 1, atol=1e-6)
    np.testing.assert_allclose(got[:, 0, 0, 1], 2 * np.array([255, 225, 225]) / 255 - 1, atol=1e-6)
    # through the extractor: 5 frames, flow k read from image min(k, 3), cropped to 32x32
    ex = _flow_extractor(flow_dir=str(tmp_path), clip_len=5, stride=5)
    reader = ArrayReader(moving_frames(5, 37, 49))
    plan = plan_snippets(reader.info, 5, 5)
    (_, inputs), = list(ex.clip_batches(reader, plan, ex._flow_frames("vid")))
    np.testing.assert_allclose(inputs["flow"][0, 0, :, 5, 5].numpy(),
                               2 * np.array([0, 10, 20, 30, 30]) / 255 - 1, atol=1e-6)
    assert reader.requests == []  # precomputed flow needs no decoding for a flow-only run


def test_precomputed_flow_folder_problems_are_named(tmp_path):
    with pytest.raises(InputError, match="no precomputed flow folder"):
        FlowFrames(tmp_path / "none")
    (tmp_path / "v").mkdir()
    with pytest.raises(InputError, match="no flow images"):
        FlowFrames(tmp_path / "v")
    cv2.imwrite(str(tmp_path / "v" / "flow_x_00001.jpg"), np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match="do not pair up"):
        FlowFrames(tmp_path / "v")
