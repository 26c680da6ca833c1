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
  :class:`tadkit.data.features.FeatureWriter`; a rerun skips them if they
  come from the same source file (:mod:`tadkit.extract.sources`: a changed
  source is refused, or extracted again with ``on_source_change="reextract"``).
  A write that fails (a full disk) stops the run with one
  :class:`~tadkit.errors.OutputError`; what was published stays.
* **Failures.** A video that cannot be decoded (or whose flow folder is
  missing, or whose forward fails, or whose file name is not UTF-8) is
  recorded in the store's ``failures/`` with the stage and the reason, and
  the run goes on. Decoder log lines are silenced unless ``decoder_logs``.
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

from tadkit.data.features import FeatureStore, Provenance, VideoFeatures, printable_id
from tadkit.devices import resolve_device
from tadkit.errors import ConfigError, InputError, OutputError, ProvenanceError
from tadkit.extract import backbones
from tadkit.extract.clips import ClipSource, merge_level_steps  # noqa: F401 (merge_level_steps re-exported)
from tadkit.extract.flow import FlowFrames, FlowOptions
from tadkit.extract.sources import ON_SOURCE_CHANGE, plan_run, source_identity
from tadkit.extract.transforms import Recipe, get_recipe
from tadkit.extract.video import (SnippetPlan, VideoError, VideoReader, open_video, plan_snippets,
                                  set_decoder_logging, video_id)
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
    module docstring. ``on_source_change``: ``"refuse"`` or ``"reextract"``
    videos already in the store whose source file changed;
    ``decoder_logs`` lets FFmpeg's log lines through (``--debug``).
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
    on_source_change: str = "refuse"
    decoder_logs: bool = False


@dataclass
class ExtractReport:
    """Outcome of one run (of one rank): video ids done, skipped, failed, extracted again; warnings."""

    total: int = 0
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (video, stage, reason)
    redone: list[tuple[str, str]] = field(default_factory=list)        # (video, why it was extracted again)
    warnings: list[tuple[str, str]] = field(default_factory=list)      # (video, what looks wrong)
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
        if opts.on_source_change not in ON_SOURCE_CHANGE:
            raise ConfigError(f"--on-source-change must be one of {', '.join(ON_SOURCE_CHANGE)}, "
                              f"got {opts.on_source_change!r}")
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
        return ClipSource(self, reader, plan, flow_frames).batches()

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
        set_decoder_logging(self.opts.decoder_logs)
        with FeatureStore.create(out, self.provenance) as writer:
            _check_extra_outputs(writer, self.provenance)
            planned = plan_run(writer, mine, self.opts.on_source_change)
            todo, report.skipped, report.redone = planned.todo, planned.skipped, planned.redo
            for vid, reason in planned.rejected:
                writer.record_failure(vid, f"input: {reason}")
                report.failed.append((printable_id(vid), "input", reason))
            paths = {video_id(p): p for p in todo}
            tracker = VideoProgress(len(todo), f"extract[{rank}]" if rank else "extract", progress)
            try:
                for event in self._events(todo, tracker):
                    kind, vid = event[0], event[1]
                    if kind == "video":
                        feats = event[2]
                        feats.source = source_identity(paths[vid])
                        writer.write(feats)
                        report.done.append(vid)
                        report.snippets += feats.num_snippets
                        _note_non_finite(feats, report)
                    else:
                        stage, reason = event[2], event[3]
                        writer.record_failure(vid, f"{stage}: {reason}")
                        report.failed.append((vid, stage, reason))
                    tracker.finish(vid, failed=kind != "video")
            except OutputError as exc:  # e.g. a full disk: stop; what is published stays
                raise OutputError(exc.path, f"{exc.problem}; extraction stopped after {len(report.done)} new "
                                  "video(s), which are kept: free space and rerun the same command to finish") from None
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


# --------------------------------------------------------------------------- helpers
def _check_extra_outputs(store: FeatureStore, mine: Provenance) -> None:
    """A store written with other ``--spatial-grid`` / ``--levels`` / ``--class-scores`` settings cannot be joined."""
    for key, flag in (("spatial_grid", "--spatial-grid"), ("levels", "--levels"), ("class_scores", "--class-scores")):
        have, want = store.provenance.extras.get(key), mine.extras.get(key)
        if have != want:
            def said(v: Any) -> str:
                return f"without {flag}" if v is None else f"with {flag}" + (f" {v['size']}" if "size" in v else "")
            raise ProvenanceError(f"{store.root}: the store was written {said(have)}, this run is {said(want)}; "
                                  "use another output directory or the same settings")


def _note_non_finite(feats: VideoFeatures, report: ExtractReport) -> None:
    """Warn about NaN / inf in a video's features (a backbone overflow, e.g. under --amp)."""
    arrays = [feats.features] + ([] if feats.spatial_grid is None else [feats.spatial_grid])
    bad = sum(int((~np.isfinite(a.reshape(len(a), -1))).any(axis=1).sum()) for a in arrays)
    if bad:
        report.warnings.append((feats.video_id, f"{bad} snippet(s) with NaN or infinite feature values"))


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
