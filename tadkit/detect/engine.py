"""Training and inference shared by every detection head (the public entry points).

The engine is split along its seams; this module gathers the public API so
callers keep one import::

    from tadkit.detect.engine import train, infer, postprocess_file

* :mod:`tadkit.detect.training` — :func:`train` (a feature store and
  annotations -> a run directory), the :class:`Trainer` loop, model selection
  by held-out loss or mAP / AR@AN, optimiser groups, EMA;
* :mod:`tadkit.detect.inference` — :func:`infer` (one run or an ensemble ->
  official detection / proposal JSON, raw candidates), classifier fusion,
  chained runs' source proposals, :func:`postprocess_file`;
* :mod:`tadkit.detect.inputs` — stores -> feature source -> datasets ->
  batches -> the inputs a head declares;
* :mod:`tadkit.detect.runs` — the run directory's files, checkpoints, RNG
  states, devices and processes.
"""
from __future__ import annotations

from tadkit.detect.inference import apply_postprocess, infer, postprocess_file
from tadkit.detect.runs import load_run, seed_everything
from tadkit.detect.training import (ModelEMA, Trainer, build_optimizer, lr_factor, split_holdout, train)

__all__ = ["train", "infer", "apply_postprocess", "postprocess_file", "load_run", "Trainer",
           "ModelEMA", "build_optimizer", "lr_factor", "split_holdout", "seed_everything"]
