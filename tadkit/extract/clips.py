"""Model inputs of one video, batch by batch, and the assembly of intermediate levels.

:class:`ClipSource` turns a video's snippet plan into the inputs of each
stream's backbone (decoding each frame once, computing flow once per frame
pair, keeping only what a later snippet still needs); :func:`merge_level_steps`
turns per-clip steps of an intermediate level into one sequence with its times.
Both serve :class:`tadkit.extract.runner.Extractor`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from tadkit import timeline
from tadkit.extract.flow import FlowFrames, encode_flow, next_frame_index, pair_flows, recode_flow_frames, to_gray
from tadkit.extract.transforms import crop_maps, flow_to_tensor, resize_frames, rgb_to_tensor
from tadkit.extract.video import SnippetPlan, VideoReader

if TYPE_CHECKING:
    from tadkit.extract.runner import Extractor


class ClipSource:
    """Turns one video's snippet plan into model inputs, batch by batch (see ``clip_batches``)."""

    def __init__(self, ex: "Extractor", reader: VideoReader, plan: SnippetPlan, flow_frames: FlowFrames | None):
        self.ex, self.reader, self.plan, self.flow_frames = ex, reader, plan, flow_frames
        self.recipe = ex.recipe
        self.offsets = {s: ex.recipe.stream_offsets(s, plan.clip_len) for s in ex.streams}
        self.want_rgb = "rgb" in ex.streams
        self.want_flow = "flow" in ex.streams
        self.frames: dict[int, np.ndarray] = {}  # sample index -> resized uint8 [H', W', 3]
        self.flows: dict[int, np.ndarray] = {}   # sample index -> encoded, cropped flow [S, S, 2]

    def batches(self) -> Iterator[tuple[slice, dict[str, torch.Tensor]]]:
        plan = self.plan
        for sl in plan.batches(self.ex.batch_size):
            clip = plan.frame_indices[sl]                     # [B, L] sample-fps frames
            idx = {s: clip[:, self.offsets[s]] for s in self.ex.streams}   # the frames each stream reads
            need = {s: np.unique(i) for s, i in idx.items()}
            decode = [need["rgb"]] if self.want_rgb else []
            if self.want_flow and self.flow_frames is None:
                decode.append(self._flow_pair_frames(need["flow"]))
            if decode:                                        # one request, in increasing order
                self._ensure_frames(np.unique(np.concatenate(decode)))
            inputs: dict[str, torch.Tensor] = {}
            if self.want_flow:
                self._ensure_flow(need["flow"])
                maps = np.stack([self.flows[int(t)] for t in need["flow"]])
                inputs["flow"] = _gather(flow_to_tensor(maps), need["flow"], idx["flow"])
            if self.want_rgb:
                crops = crop_maps(np.stack([self.frames[int(t)] for t in need["rgb"]]), self.recipe)
                inputs["rgb"] = _gather(rgb_to_tensor(crops, self.recipe), need["rgb"], idx["rgb"])
            nxt = plan.frame_indices[sl.stop, 0] if sl.stop < plan.num_snippets else plan.num_frames
            for cache in (self.frames, self.flows):
                for t in [t for t in cache if t < nxt]:
                    del cache[t]
            yield sl, inputs

    def _ensure_frames(self, need: np.ndarray) -> None:
        missing = [int(t) for t in need if int(t) not in self.frames]
        if not missing:
            return
        src = self.plan.source_index[missing]
        uniq, inverse = np.unique(src, return_inverse=True)
        decoded = resize_frames(self.reader.get_frames(uniq), self.recipe)
        for t, j in zip(missing, inverse):
            self.frames[t] = decoded[j]

    def _flow_pair_frames(self, need: np.ndarray) -> np.ndarray:
        """Frames whose decoding the flow of frames ``need`` (not yet computed) requires."""
        todo = np.array([int(t) for t in need if int(t) not in self.flows], dtype=np.int64)
        if len(todo) == 0:
            return todo
        first = next_frame_index(todo, self.plan.num_frames)
        if first[0] < 0:
            return np.array([0], dtype=np.int64)
        return np.concatenate([first, first + 1])

    def _ensure_flow(self, need: np.ndarray) -> None:
        todo = np.array([int(t) for t in need if int(t) not in self.flows], dtype=np.int64)
        if len(todo) == 0:
            return
        if self.flow_frames is not None:
            maps = recode_flow_frames(self.flow_frames.read(self.plan.source_index[todo]), self.recipe.flow_encoding)
            maps = crop_maps(resize_frames(maps, self.recipe), self.recipe)
            for t, m in zip(todo, maps):
                self.flows[int(t)] = m
            return
        first = next_frame_index(todo, self.plan.num_frames)      # pair (first, first + 1)
        if first[0] < 0:                                           # one-frame video: zero flow
            self._ensure_frames(np.array([0]))
            h, w = self.frames[0].shape[:2]
            zero = encode_flow(np.zeros((1, h, w, 2), np.float32), self.recipe.flow_bound,
                               self.recipe.flow_encoding)
            for t in todo:
                self.flows[int(t)] = crop_maps(zero, self.recipe)[0]
            return
        pairs = np.unique(first)
        self._ensure_frames(np.unique(np.concatenate([pairs, pairs + 1])))
        frames = np.stack([self.frames[int(t)] for t in np.concatenate([pairs, pairs + 1])])
        gray = to_gray(frames)
        k = len(pairs)
        raw = pair_flows(gray, [(i, i + k) for i in range(k)], self.ex.opts.flow)
        enc = crop_maps(encode_flow(raw, self.recipe.flow_bound, self.recipe.flow_encoding), self.recipe)
        by_pair = {int(p): enc[i] for i, p in enumerate(pairs)}
        for t, p in zip(todo, first):
            self.flows[int(t)] = by_pair[int(p)]


def _gather(per_frame: torch.Tensor, need: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    """``[C, U, S, S]`` maps of the unique frames ``need`` -> clips ``[B, C, L, S, S]`` for ``idx [B, L]``."""
    pos = torch.from_numpy(np.searchsorted(need, idx))               # [B, L]
    clips = per_frame[:, pos]                                         # [C, B, L, S, S]
    return clips.permute(1, 0, 2, 3, 4).contiguous()


def merge_level_steps(values: np.ndarray, clip_starts: np.ndarray, positions: np.ndarray, fps: float,
                      num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """One video's sequence of an intermediate level from its per-clip steps.

    ``values [S, C, P]``: the level of each of ``S`` clips (``P`` steps each);
    ``clip_starts [S]``: first sample-fps frame each clip reads; ``positions
    [P]``: frame position of each step from the clip start. A step's frame
    position is ``start + position``. Steps centred after the video ends
    (position above ``num_frames - 1/2``: they summarise tail padding) are
    dropped, except the first step of each clip, so that every snippet is
    represented; steps of overlapping clips at the same position are averaged.
    Returns ``(features [T_l, C], times [T_l])`` sorted by time, times from
    :func:`tadkit.timeline.level_step_times`.
    """
    c = values.shape[1]
    frame_pos = (np.asarray(clip_starts, dtype=np.float64)[:, None]
                 + np.asarray(positions, dtype=np.float64)[None, :])                       # [S, P]
    times = timeline.level_step_times(clip_starts, positions, fps)                          # [S, P]
    keep = frame_pos <= num_frames - 0.5
    keep[:, 0] = True
    flat = values.transpose(0, 2, 1)[keep]                                                  # [K, C]
    uniq, first, inverse = np.unique(frame_pos[keep], return_index=True, return_inverse=True)
    sums = np.zeros((len(uniq), c), dtype=np.float64)
    np.add.at(sums, inverse, flat)
    counts = np.bincount(inverse, minlength=len(uniq)).astype(np.float64)
    return (sums / counts[:, None]).astype(np.float32), times[keep][first]
