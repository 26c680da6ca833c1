"""Random ActivityNet-style annotation files for end-to-end tests (one seeded generator)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np


def random_annotations(path: Path, *, videos: int, train: int, duration: float, fps: float, until: float,
                       seed: int = 0, classes: Sequence[str] = ("Jump", "Run"),
                       first: tuple[float, float] = (0.5, 2.0), length: tuple[float, float] = (1.0, 3.0),
                       gap: tuple[float, float] = (1.5, 3.0)) -> Path:
    """Write ``videos`` videos ``vid00``, ``vid01`` ... (the first ``train`` in ``training``, the rest in
    ``validation``) of ``duration`` seconds to ``path`` and return it.

    Each video's actions follow one another: the first starts at ``U(first)`` seconds, each lasts
    ``U(length)`` with a class drawn from ``classes``, the next starts ``U(gap)`` after its end,
    until a start reaches ``until``. Times are rounded to 10 ms.
    """
    rng = np.random.default_rng(seed)
    db = {}
    for i in range(videos):
        anns, t = [], float(rng.uniform(*first))
        while t < until:
            span = float(rng.uniform(*length))
            anns.append({"label": classes[int(rng.integers(len(classes)))],
                         "segment": [round(t, 2), round(t + span, 2)]})
            t += span + float(rng.uniform(*gap))
        db[f"vid{i:02d}"] = {"subset": "training" if i < train else "validation", "duration": duration,
                             "fps": fps, "annotations": anns}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": "test", "database": db}))
    return path
