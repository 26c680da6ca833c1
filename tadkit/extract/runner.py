"""The extraction run: videos -> snippet features in a FeatureStore.

:func:`extract` is what ``tadkit extract`` calls. For each video (skipping
those already in the store) it plans snippets, decodes only the frames the
next batch of snippets needs, computes flow, runs every stream's backbone and
publishes the video atomically. Properties:

* **Bounded memory.** A batch of ``B`` snippets of ``L`` frames at stride
  ``s`` reads at most ``(B - 1) * s + L + 1`` frames; decoded (resized)
  frames and flow maps are kept only while a later snippet still needs them.
* **Overlap.** Decoding, resizing and flow run in background threads
  (``workers`` videos at a time) and feed a bounded queue; the backbone runs
  in the main thread and never waits for the decoder unless decoding is the
  bottleneck.
* **Deterministic.** Batches never mix videos and always hold the same
  snippets for the same settings, so a resumed or sharded run writes
  bit-identical features to a single uninterrupted one.
* **Crash-safe, resumable.** Videos are published one file at a time by
  :class:`tadkit.data.features.FeatureWriter`; a rerun skips them.
* **Failures.** A video that cannot be decoded (or whose flow folder is
  missing, or whose forward fails) is recorded in the store's ``failures/``
  with the stage and the reason, and the run goes on.
* **Extra outputs.** ``spatial_grid=g`` stores a ``[T, g, g, C]`` grid of
  the last stage per snippet; ``levels=True`` stores intermediate stages as
  ``levels/<stream>/<level>`` with their own times (see :func:`merge_level_steps`).
* **Scale-out.** Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
  in the environment) each rank takes the videos whose position in the
  id-sorted list is ``rank`` modulo ``world_size``.
"""
from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from tadkit import timeline
from tadkit.data.features import FeatureStore, Provenance, VideoFeatures
from tadkit.errors import ConfigError, InputError, ProvenanceError
from tadkit.extract import backbones
from tadkit.extract.flow import (FlowFrames, FlowOptions, encode_flow, next_frame_index, pair_flows,
                                 recode_flow_frames, to_gray)
from tadkit.extract.transforms import Recipe, crop_maps, flow_to_tensor, get_recipe, resize_frames, rgb_to_tensor
from tadkit.extract.video import (SnippetPlan, VideoError, VideoReader, open_video, plan_snippets,
                                  video_id)
from tadkit.progress import VideoProgress

#: Default snippets per forward: small on CPU (3D activations are memory-bound).
DEFAULT_BATCH = {"cpu": 2, "cuda": 16}


@dataclass(frozen=True)
class ExtractOptions:
    """Settings of one extraction run (see ``docs/extraction.md``).

    ``weights`` maps a stream to a local checkpoint path; ``random_weights``
    (seeded by ``seed``) is required when no weights are given.
    ``fps``/``clip_len``/``stride`` default to the recipe's (fps: else the
    video's own); ``size`` shrinks the recipe (tests, quick looks);
    ``device`` ``None`` = CUDA when available; ``batch_size`` ``None`` = 2 on
    CPU, 16 on CUDA; ``amp`` (CUDA only) runs the backbone in float16.
    ``spatial_grid`` (``g >= 1``) and ``levels`` add the extra outputs of the
    module docstring.
    """

    backbone: str = "i3d"
    streams: tuple[str, ...] | None = None
    weights: Mapping[str, str] = field(default_factory=dict)
    random_weights: bool = False
    seed: int = 0
    checkpoint_format: str = "auto"
    bn_eps: float | None = None
    fps: float | None = None
    clip_len: int | None = None
    stride: int | None = None
    recipe: str | None = None
    size: int | None = None
    device: str | None = None
    batch_size: int | None = None
    amp: bool = False
    flow: FlowOptions = field(default_factory=FlowOptions)
    flow_dir: str | None = None
    backend: str = "auto"
    workers: int = 1
    prefetch: int = 2
    spatial_grid: int | None = None
    levels: bool = False
    class_scores: bool = False


@dataclass
class ExtractReport:
    """Outcome of one run (of one rank): video ids done, skipped, failed."""

    total: int = 0
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (video, stage, reason)
    snippets: int = 0
    seconds: float = 0.0
    rank: int = 0
    world_size: int = 1

    @property
    def ok(self) -> bool:
        return not self.failed


class Extractor:
    """Models and settings of a run; :meth:`run` processes a list of video files.

    Separated from :func:`extract` so tests and benchmarks can drive the
    pieces (``clip_batches``, ``forward``) directly.
    """

    def __init__(self, opts: ExtractOptions):
        self.opts = opts
        self.family = backbones.family(opts.backbone)
        self.streams = _check_streams(opts.streams, self.family)
        recipe = get_recipe(opts.recipe or self.family.recipes[0])
        if recipe.name not in self.family.recipes:
            raise ConfigError(f"recipe {recipe.name!r} does not fit backbone {self.family.name}; "
                              f"use one of: {', '.join(self.family.recipes)}")
        self.recipe: Recipe = recipe.scaled(opts.size)
        self.clip_len = int(opts.clip_len or self.recipe.clip_len)
        self.stride = int(opts.stride or self.recipe.stride)
        #: sample fps: --fps, else the recipe's (TSP: 15), else each video's own (None)
        self.fps = opts.fps if opts.fps is not None else self.recipe.fps
        if self.clip_len < 1 or self.stride < 1:
            raise ConfigError("--clip-len and --stride must be positive")
        if self.clip_len % self.family.clip_multiple:
            raise ConfigError(f"{self.family.name} needs --clip-len a multiple of {self.family.clip_multiple}, "
                              f"got {self.clip_len}")
        #: positions within a snippet that each stream reads (TSN: the centre frame / 5 centred flows)
        self.offsets = {s: self.recipe.stream_offsets(s, self.clip_len) for s in self.streams}
        if opts.spatial_grid is not None and opts.spatial_grid < 1:
            raise ConfigError(f"--spatial-grid must be at least 1, got {opts.spatial_grid}")
        if opts.bn_eps is not None and not self.family.bn_eps:
            raise ConfigError(f"--bn-eps applies to i3d only; {self.family.name} uses its published eps")
        if opts.checkpoint_format != "auto" and opts.checkpoint_format not in self.family.checkpoint_formats:
            raise ConfigError(f"checkpoint format {opts.checkpoint_format!r} is not one of {self.family.name}'s: "
                              f"{', '.join(self.family.checkpoint_formats)} (or auto)")
        if opts.fps is not None and not opts.fps > 0:
            raise ConfigError("--fps must be positive")
        self.device = resolve_device(opts.device)
        if opts.amp and self.device.type != "cuda":
            raise ConfigError("--amp needs a CUDA device (CPU runs in float32)")
        self.batch_size = int(opts.batch_size or DEFAULT_BATCH[self.device.type])
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be at least 1")
        if opts.flow_dir is not None and not Path(opts.flow_dir).is_dir():
            raise InputError(opts.flow_dir, "no such flow folder")
        self.models, self.weights = self._load_models()
        if opts.class_scores:
            self._check_class_scores()
        self.provenance = self._provenance()

    # -- models -----------------------------------------------------------------
    def _load_models(self) -> tuple[dict[str, torch.nn.Module], dict[str, dict[str, Any]]]:
        opts = self.opts
        unknown = sorted(set(opts.weights) - set(self.family.streams))
        if unknown:
            raise ConfigError(f"--weights for unknown stream(s) {unknown}; {self.family.name} has "
                              f"{', '.join(self.family.streams)}")
        unused = sorted(set(opts.weights) - set(self.streams))
        if unused:
            raise ConfigError(f"--weights given for stream(s) {unused} that are not extracted (--streams)")
        missing = [s for s in self.streams if s not in opts.weights]
        if missing and not opts.random_weights:
            raise ConfigError(f"no weights for stream(s) {', '.join(missing)}: pass --weights "
                              f"{missing[0]}=PATH, or --random-weights for a test run")
        if opts.random_weights and not missing:
            raise ConfigError("--random-weights given but every stream has --weights")
        models, weights = {}, {}
        for i, stream in enumerate(self.streams):
            torch.manual_seed(opts.seed + i)
            kw = {} if opts.bn_eps is None else {"bn_eps": float(opts.bn_eps)}
            model = backbones.build(self.family.models[stream], **kw)
            if stream in opts.weights:
                path = Path(opts.weights[stream])
                load_kw = {"bn_eps": "auto" if opts.bn_eps is None else opts.bn_eps} if self.family.bn_eps else {}
                fmt = backbones.load_checkpoint(model, path, fmt=opts.checkpoint_format, **load_kw)
                weights[stream] = {"file": path.name, "sha256": backbones.file_sha256(path), "format": fmt}
            else:
                weights[stream] = {"file": None, "sha256": "random", "seed": opts.seed + i}
            if hasattr(model, "bn_eps"):
                weights[stream]["bn_eps"] = model.bn_eps
            models[stream] = model.to(self.device).eval()
        return models, weights

    def _check_class_scores(self) -> None:
        if self.opts.spatial_grid or self.opts.levels:
            raise ConfigError("--class-scores stores classifier scores; it does not combine with "
                              "--spatial-grid or --levels")
        for stream, model in self.models.items():
            if not hasattr(model, "class_scores"):
                raise ConfigError(f"--class-scores needs a backbone whose features feed a classifier "
                                  f"(tsn); {self.family.name} does not offer them")
            if not getattr(model, "num_classes", 0):
                raise ConfigError(f"--class-scores: the {stream} checkpoint has no classifier")

    @property
    def feature_dim(self) -> int:
        """Channels of a stored snippet: streams' features (or class scores) concatenated."""
        if self.opts.class_scores:
            return sum(int(m.num_classes) for m in self.models.values())
        return self.family.stream_dim * len(self.streams)

    def _features(self, stream: str, x: torch.Tensor) -> torch.Tensor:
        """One stream's ``[B, D]`` output: pooled features, or class scores with ``--class-scores``."""
        model = self.models[stream]
        f = model.extract_features(x)
        return model.class_scores(f) if self.opts.class_scores else f

    def _provenance(self) -> Provenance:
        flow: dict[str, Any] = {}
        if "flow" in self.streams:
            if self.opts.flow_dir is not None:
                flow = {"method": "precomputed_frames",
                        "decoding": "(v-128)/128" if self.recipe.flow_encoding == "uint8_centred" else "2v/255-1"}
            else:
                flow = dict(self.opts.flow.solver_dict(), encoding=self.recipe.flow_encoding,
                            bound=self.recipe.flow_bound)
            flow["alignment"] = "flow(t, t+1) with frame t; last frame repeats the previous flow"
        return Provenance(
            backbone=self.opts.backbone,
            streams=self.streams,
            feature_dim=self.feature_dim,
            clip_len=self.clip_len,
            stride=self.stride,
            fps=None if self.fps is None else float(self.fps),
            weights=self.weights,
            preprocessing={"recipe": self.recipe.to_dict(), "flow": flow,
                           "rgb": self.recipe.rgb_normalisation() if "rgb" in self.streams else None},
            extras=dict({"models": {s: self.family.models[s] for s in self.streams},
                         "feature_layout": "cat(" + ", ".join(self.streams) + ")",
                         "video_id": "file name stem",
                         "times": "snippet centre, (start + clip_len/2) / fps seconds"},
                        **self._extra_outputs()),
        )

    def _extra_outputs(self) -> dict[str, Any]:
        """Provenance of ``--spatial-grid`` / ``--levels`` (only when requested, so that
        stores written without them keep their provenance)."""
        out: dict[str, Any] = {}
        if self.opts.class_scores:
            out["class_scores"] = {
                "classes": {s: int(m.num_classes) for s, m in self.models.items()},
                "what": "classifier logits per stream (before softmax) instead of pooled features"}
        if self.opts.spatial_grid:
            out["spatial_grid"] = {"size": int(self.opts.spatial_grid),
                                   "layout": "[T, g, g, C]: last stage pooled to g x g per snippet, "
                                             "streams concatenated on C in stream order"}
        if self.opts.levels:
            frames = {}
            for s in self.streams:
                offsets = self.offsets[s]
                pos = self.models[s].level_positions(len(offsets))
                frames.update({f"{s}/{k}": [float(v) + float(offsets[0]) for v in p.tolist()]
                               for k, p in pos.items()})
            out["levels"] = {
                "names": list(frames),
                "frame_positions": frames,
                "times": "step at frame position p of a clip starting at frame s: (s + p + 1/2) / fps seconds; "
                         "steps of overlapping clips at the same frame position are averaged; steps "
                         "centred after the last frame are dropped, except the first step of each clip",
            }
        return out

    # -- inputs -----------------------------------------------------------------
    def plan(self, reader: VideoReader) -> SnippetPlan:
        """Snippet plan of an opened video with this run's fps / clip / stride."""
        return plan_snippets(reader.info, self.clip_len, self.stride, self.fps)

    def clip_batches(self, reader: VideoReader, plan: SnippetPlan,
                     flow_frames: FlowFrames | None = None) -> Iterator[tuple[slice, dict[str, torch.Tensor]]]:
        """Model inputs per batch of snippets: ``(snippets, {stream: [B, C, L, S, S]})``.

        Reads from ``reader`` only frames not already cached, at most
        ``(B - 1) * stride + clip_len + 1`` per batch, in increasing order.
        """
        return _ClipSource(self, reader, plan, flow_frames).batches()

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> np.ndarray:
        """``{stream: [B, C, L, S, S]}`` -> features ``[B, D]`` float32, streams concatenated in order."""
        outs = []
        with torch.inference_mode():
            for stream in self.streams:
                x = inputs[stream].to(self.device, non_blocking=True)
                if self.opts.amp:
                    with torch.autocast("cuda", dtype=torch.float16):
                        f = self._features(stream, x)
                else:
                    f = self._features(stream, x)
                outs.append(f.float().cpu())
        return torch.cat(outs, dim=1).numpy()

    def forward_outputs(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """Like :meth:`forward`, plus the requested extra outputs, as float32 numpy arrays.

        Returns ``{"feature": [B, D]}``, with ``"grid"`` ``[B, g, g, C]``
        (streams concatenated on ``C``) when ``spatial_grid`` is set and
        ``"levels"`` ``{"<stream>/<level>": [B, C_l, T_l]}`` when ``levels`` is.
        """
        grid, levels = int(self.opts.spatial_grid or 0), bool(self.opts.levels)
        if not grid and not levels:
            return {"feature": self.forward(inputs)}
        feats, grids, lvls = [], [], {}
        with torch.inference_mode():
            for stream in self.streams:
                x = inputs[stream].to(self.device, non_blocking=True)
                if self.opts.amp:
                    with torch.autocast("cuda", dtype=torch.float16):
                        o = self.models[stream].extract_outputs(x, grid=grid, levels=levels)
                else:
                    o = self.models[stream].extract_outputs(x, grid=grid, levels=levels)
                feats.append(o["feature"].float().cpu())
                if grid:
                    grids.append(o["grid"].float().cpu())
                for k, v in o.get("levels", {}).items():
                    lvls[f"{stream}/{k}"] = v.float().cpu().numpy()
        out: dict[str, Any] = {"feature": torch.cat(feats, dim=1).numpy()}
        if grid:
            out["grid"] = torch.cat(grids, dim=3).numpy()
        if levels:
            out["levels"] = lvls
        return out

    def video_features(self, vid: str, plan: SnippetPlan, parts: Sequence[Mapping[str, Any]]) -> VideoFeatures:
        """Assemble one video's :class:`VideoFeatures` from the outputs of its batches, in order."""
        feats = np.concatenate([p["feature"] for p in parts], axis=0)
        grid = np.concatenate([p["grid"] for p in parts], axis=0) if self.opts.spatial_grid else None
        levels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if self.opts.levels:
            starts = plan.frame_indices[:, 0]
            for stream in self.streams:
                offsets = self.recipe.stream_offsets(stream, plan.clip_len)
                positions = self.models[stream].level_positions(len(offsets))
                for k, pos in positions.items():
                    name = f"{stream}/{k}"
                    values = np.concatenate([p["levels"][name] for p in parts], axis=0)   # [S, C_l, T_l]
                    levels[name] = merge_level_steps(values, starts + offsets[0], pos.numpy(), plan.fps,
                                                     plan.num_frames)
        return VideoFeatures(video_id=vid, features=feats, times=plan.centers, fps=plan.fps,
                             clip_len=plan.clip_len, stride=plan.stride, num_frames=plan.num_frames,
                             duration=plan.duration, spatial_grid=grid, levels=levels)

    # -- the run ---------------------------------------------------------------
    def run(self, videos: Sequence[Path], out: str | os.PathLike, rank: int = 0, world_size: int = 1,
            progress: bool | None = None) -> ExtractReport:
        """Extract ``videos`` (this rank's shard) into the store at ``out``."""
        t0 = time.perf_counter()
        mine = shard(videos, rank, world_size)
        report = ExtractReport(total=len(mine), rank=rank, world_size=world_size)
        with FeatureStore.create(out, self.provenance) as writer:
            _check_extra_outputs(writer, self.provenance)
            todo = [p for p in mine if not writer.has(video_id(p))]
            report.skipped = [video_id(p) for p in mine if writer.has(video_id(p))]
            tracker = VideoProgress(len(todo), f"extract[{rank}]" if rank else "extract", progress)
            try:
                for event in self._events(todo, tracker):
                    kind, vid = event[0], event[1]
                    if kind == "video":
                        feats = event[2]
                        writer.write(feats)
                        report.done.append(vid)
                        report.snippets += feats.num_snippets
                    else:
                        stage, reason = event[2], event[3]
                        writer.record_failure(vid, f"{stage}: {reason}")
                        report.failed.append((vid, stage, reason))
                    tracker.finish(vid, failed=kind != "video")
            finally:
                tracker.close()
        report.seconds = time.perf_counter() - t0
        return report

    def _events(self, todo: Sequence[Path], progress: VideoProgress | None = None) -> Iterator[tuple]:
        """``("video", id, VideoFeatures)`` or ``("failed", id, stage, reason)`` per video, in
        completion order. Decoding runs in ``workers`` background threads. ``progress`` hears
        of every video's start (with its snippet count) and of every batch of snippets."""
        if not todo:
            return
        jobs: queue.Queue = queue.Queue()
        for p in todo:
            jobs.put(p)
        out: queue.Queue = queue.Queue(maxsize=max(1, self.opts.prefetch))
        stop = threading.Event()
        n_workers = max(1, min(self.opts.workers, len(todo)))
        threads = [threading.Thread(target=self._produce, args=(jobs, out, stop), daemon=True,
                                    name=f"tadkit-decode-{i}") for i in range(n_workers)]
        for t in threads:
            t.start()
        parts: dict[str, list[dict[str, Any]]] = {}
        dead: set[str] = set()
        alive = n_workers
        try:
            while alive:
                msg = out.get()
                kind = msg[0]
                if kind == "worker_done":
                    alive -= 1
                elif kind == "start":
                    parts[msg[1]] = []
                    dead.discard(msg[1])
                    if progress is not None:
                        progress.start(msg[1], msg[2])
                elif kind == "batch":
                    vid = msg[1]
                    if vid in dead:
                        continue
                    try:
                        parts[vid].append(self.forward_outputs(msg[2]))
                        if progress is not None:
                            progress.advance(vid, len(next(iter(msg[2].values()))))
                    except RuntimeError as exc:  # e.g. out of memory on one long video
                        dead.add(vid)
                        parts.pop(vid, None)
                        yield ("failed", vid, "model", _one_line(exc))
                elif kind == "done":
                    vid, plan = msg[1], msg[2]
                    if vid in dead:
                        continue
                    yield ("video", vid, self.video_features(vid, plan, parts.pop(vid)))
                elif kind == "failed":
                    parts.pop(msg[1], None)
                    if msg[1] not in dead:
                        yield ("failed", msg[1], msg[2], msg[3])
        finally:
            stop.set()
            while any(t.is_alive() for t in threads):
                try:
                    out.get(timeout=0.05)
                except queue.Empty:
                    pass

    def _produce(self, jobs: queue.Queue, out: queue.Queue, stop: threading.Event) -> None:
        def put(msg: tuple) -> bool:
            while not stop.is_set():
                try:
                    out.put(msg, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        while not stop.is_set():
            try:
                path = jobs.get_nowait()
            except queue.Empty:
                break
            vid = video_id(path)
            backends = ["decord", "pyav"] if self.opts.backend == "auto" else [self.opts.backend]
            for attempt, backend in enumerate(backends):
                last = attempt == len(backends) - 1
                reader = None
                stage = "open"
                try:
                    # "auto" opens with decord, or PyAV if decord cannot open the file at all
                    reader = open_video(path, "auto" if attempt == 0 and self.opts.backend == "auto" else backend)
                    if reader.info.backend == "pyav":
                        last = True
                    stage = "flow"
                    flow_frames = self._flow_frames(vid)
                    stage = "decode"
                    plan = self.plan(reader)
                    if not put(("start", vid, plan.num_snippets)):
                        return
                    for _, inputs in self.clip_batches(reader, plan, flow_frames):
                        if not put(("batch", vid, inputs)):
                            return
                    put(("done", vid, plan))
                    break
                except VideoError as exc:
                    if last or exc.stage != "decode":
                        put(("failed", vid, exc.stage, exc.reason))
                        break
                    # decord opened the file but failed mid-way: start over with PyAV
                    put(("start", vid, None))
                except InputError as exc:
                    put(("failed", vid, stage, str(exc)))
                    break
                except Exception as exc:  # noqa: BLE001 - one bad video must not stop the run
                    put(("failed", vid, stage, f"{type(exc).__name__}: {_one_line(exc)}"))
                    break
                finally:
                    if reader is not None:
                        reader.close()
        put(("worker_done",))

    def _flow_frames(self, vid: str) -> FlowFrames | None:
        if "flow" not in self.streams or self.opts.flow_dir is None:
            return None
        return FlowFrames(Path(self.opts.flow_dir) / vid)


def extract(videos: Sequence[Path], out: str | os.PathLike, opts: ExtractOptions,
            rank: int | None = None, world_size: int | None = None,
            progress: bool | None = None) -> ExtractReport:
    """Extract features of ``videos`` into the store ``out``; see the module docstring.

    ``rank``/``world_size`` default to the ``RANK``/``WORLD_SIZE`` environment
    (torchrun); ``progress`` ``None`` shows a bar on a terminal and timed plain lines elsewhere
    (:class:`tadkit.progress.VideoProgress`), ``False`` nothing.
    """
    env_rank, env_world = distributed_env()
    rank = env_rank if rank is None else rank
    world_size = env_world if world_size is None else world_size
    if opts.device is None and torch.cuda.is_available() and world_size > 1:
        opts = dataclasses.replace(opts, device=f"cuda:{int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count()}")
    return Extractor(opts).run(videos, out, rank=rank, world_size=world_size, progress=progress)


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


def shard(videos: Sequence[Path], rank: int, world_size: int) -> list[Path]:
    """This rank's videos: every ``world_size``-th of the id-sorted list, from ``rank``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"invalid rank {rank} of world size {world_size}")
    ordered = sorted(videos, key=lambda p: video_id(p))
    return ordered[rank::world_size]


def distributed_env() -> tuple[int, int]:
    """``(rank, world_size)`` from the torchrun environment (``(0, 1)`` when absent)."""
    try:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise ConfigError("RANK / WORLD_SIZE in the environment are not integers") from None


def resolve_device(name: str | None) -> torch.device:
    """``None``/``auto`` -> CUDA when available, else CPU; a CUDA request without CUDA is an error."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r} (use cpu, cuda or cuda:N)")
    return dev


# --------------------------------------------------------------------------- helpers
class _ClipSource:
    """Turns one video's snippet plan into model inputs, batch by batch (see ``clip_batches``)."""

    def __init__(self, ex: Extractor, reader: VideoReader, plan: SnippetPlan, flow_frames: FlowFrames | None):
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


def _check_extra_outputs(store: FeatureStore, mine: Provenance) -> None:
    """A store written with other ``--spatial-grid`` / ``--levels`` / ``--class-scores`` settings cannot be joined."""
    for key, flag in (("spatial_grid", "--spatial-grid"), ("levels", "--levels"), ("class_scores", "--class-scores")):
        have, want = store.provenance.extras.get(key), mine.extras.get(key)
        if have != want:
            def said(v: Any) -> str:
                return f"without {flag}" if v is None else f"with {flag}" + (f" {v['size']}" if "size" in v else "")
            raise ProvenanceError(f"{store.root}: the store was written {said(have)}, this run is {said(want)}; "
                                  "use another output directory or the same settings")


def _check_streams(streams: Sequence[str] | None, fam: backbones.Family) -> tuple[str, ...]:
    if streams is None or len(streams) == 0:
        return fam.streams
    out = tuple(s.strip() for s in streams)
    bad = [s for s in out if s not in fam.models]
    if bad:
        raise ConfigError(f"unknown stream(s) {bad} for backbone {fam.name}; available: {', '.join(fam.streams)}")
    if len(set(out)) != len(out):
        raise ConfigError(f"a stream is repeated in --streams {','.join(out)}")
    return out


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:400] + ("..." if len(text) > 400 else "")
