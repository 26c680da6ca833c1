"""Run directories: their files, checkpoints, RNG states, devices and processes.

A run directory (written by :func:`tadkit.detect.training.train`)::

    runs/mltpn/
      config.yaml          the resolved DetectConfig
      run.json             id, head, classes, inputs (every store's path and provenance,
                           streams, channels, levels), videos used, source run (chained)
      normalization.npz    per-channel feature statistics (data.normalize)
      source_proposals.npz the source run's proposals of the training videos (chained runs)
      log.jsonl            one JSON object per logged step / epoch
      tb/                  the same scalars for TensorBoard (when it is installed)
      checkpoints/
        epoch_0005.pt      model + optimizer + scheduler + scaler + EMA + epoch + RNG + selection
        last.pt            the latest epoch (written every epoch; what --resume continues from)
        best.pt            the selected epoch (only with data.holdout_fraction > 0)

A classifier run (``tadkit detect classify --out DIR``) has ``run.json`` with
``"kind": "classifier"`` and ``classifier.npz``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist

from tadkit.checkpoints import compare_weights, few, read_checkpoint
from tadkit.detect.config import DetectConfig
from tadkit.devices import resolve_device
from tadkit.errors import InputError
from tadkit.files import read_json

CHECKPOINT_DIR = "checkpoints"
RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
LOG_FILE = "log.jsonl"
NORM_FILE = "normalization.npz"
SOURCE_PROPOSALS_FILE = "source_proposals.npz"
CLASSIFIER_FILE = "classifier.npz"


def load_run(run: str | os.PathLike) -> tuple[DetectConfig, dict[str, Any]]:
    """``(config, run.json contents)`` of a detection run directory."""
    run = Path(run)
    if not (run / RUN_FILE).is_file() or not (run / CONFIG_FILE).is_file():
        raise InputError(run, f"not a tadkit run directory (no {RUN_FILE} / {CONFIG_FILE})")
    from tadkit.config import load_config

    cfg = load_config(DetectConfig, run / CONFIG_FILE)
    meta = read_json(run / RUN_FILE)
    if not isinstance(meta, dict):
        raise InputError(run / RUN_FILE, f"expected a JSON object, got a {type(meta).__name__}")
    if meta.get("kind", "detection") == "detection":
        if not isinstance(meta.get("classes"), list) or not meta["classes"]:
            raise InputError(run / RUN_FILE, "no 'classes' list: not written by `tadkit detect train`, or edited")
        if type(meta.get("feature_dim")) is not int or meta["feature_dim"] < 1:
            raise InputError(run / RUN_FILE, f"'feature_dim' must be a positive integer, got {meta.get('feature_dim')!r}")
    return cfg, meta


def run_features(meta: Mapping[str, Any]) -> list[str]:
    """The feature store path(s) a run was trained on (older runs record one string)."""
    f = meta.get("features")
    return [f] if isinstance(f, str) else list(f or [])


def run_provenances(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Provenance of every store a run reads, in order."""
    inputs = meta.get("inputs")
    if isinstance(inputs, Mapping) and inputs.get("stores"):
        return [dict(s["provenance"]) for s in inputs["stores"]]
    return [dict(meta["provenance"])]


def checkpoint_path(run: Path, checkpoint: str) -> Path:
    """``last`` / ``best`` / ``epoch_0005`` (or a ``.pt`` path) -> the file; ``InputError`` if absent."""
    p = Path(checkpoint)
    if p.suffix == ".pt" and p.is_file():
        return p
    name = checkpoint if checkpoint.endswith(".pt") else f"{checkpoint}.pt"
    path = run / CHECKPOINT_DIR / name
    if not path.is_file():
        have = sorted(q.name for q in (run / CHECKPOINT_DIR).glob("*.pt")) if (run / CHECKPOINT_DIR).is_dir() else []
        raise InputError(path, f"no such checkpoint (available: {', '.join(have) or 'none'})")
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A run checkpoint: tensors and plain Python values only (``weights_only``: loading never runs code).

    ``InputError`` for a file that is not a checkpoint, would run pickle code,
    or is not a run checkpoint (a dict with ``model`` weights).
    """
    state = read_checkpoint(path)
    if not isinstance(state, dict) or not isinstance(state.get("model"), Mapping):
        what = (f"a dict without 'model' weights (keys: {few([str(k) for k in state])})" if isinstance(state, dict)
                else f"a {type(state).__name__}")
        raise InputError(path, f"not a tadkit run checkpoint: it holds {what}")
    return state


def load_weights(head: torch.nn.Module, weights: Any, path: Path) -> None:
    """Load ``weights`` (from checkpoint ``path``) into ``head``; ``InputError`` naming what does not fit."""
    if not isinstance(weights, Mapping):
        raise InputError(path, f"not a tadkit run checkpoint: its weights are a {type(weights).__name__}")
    mismatch = compare_weights(head, weights)
    if mismatch:
        raise InputError(path, f"the weights do not fit this run's {type(head).__name__}: {mismatch.describe()}")
    head.load_state_dict(weights)


def inference_weights(state: Mapping[str, Any]) -> dict[str, Any]:
    """The weights inference (and model selection) use: the EMA when the run kept one."""
    return state["ema"] if state.get("ema") is not None else state["model"]


def resume_config(out: Path, cfg: DetectConfig) -> tuple[DetectConfig, dict[str, Any]]:
    """The run's saved config (with ``cfg``'s epoch count) and its run.json."""
    saved, meta = load_run(out)
    if cfg.train.epochs != saved.train.epochs:
        saved = dataclasses.replace(saved, train=dataclasses.replace(saved.train, epochs=cfg.train.epochs))
    return saved, meta


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain values (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "numpy": (name, keys.tolist(), pos, has_gauss, cached),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_json(path: Path, doc: Any, indent: int | None = None) -> None:
    """Write ``doc`` atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=indent))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- devices and processes
class DistContext:
    """Rank / world size / device of this process; initialises torch.distributed under torchrun."""

    def __init__(self, rank: int, world_size: int, device: torch.device, owns_group: bool):
        self.rank, self.world_size, self.device, self.owns_group = rank, world_size, device, owns_group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "auto") -> "DistContext":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(0, 1, resolve_device(device), False)
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = resolve_device(device)
        if dev.type == "cuda":
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), dev, owns)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any] | None:
        """Every process's ``obj`` on rank 0 (in rank order), None elsewhere."""
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def autocast(device: torch.device, enabled: bool) -> Any:
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()
