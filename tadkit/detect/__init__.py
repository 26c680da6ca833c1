"""Detect stage: detection heads trained over offline snippet features.

* :mod:`tadkit.detect.config` — the typed run configuration (``DetectConfig``).
* :mod:`tadkit.detect.heads` — the head registry and interface; ``mltpn`` first.
* :mod:`tadkit.detect.geometry` / :mod:`tadkit.detect.losses` — 1-D IoU / GIoU and losses.
* :mod:`tadkit.detect.postprocess` — NMS family, voting, window merging, classifier fusion.
* :mod:`tadkit.detect.classifier` — a video-level classifier whose scores feed the fusion.
* :mod:`tadkit.detect.engine` — the public entry points: ``train``, ``infer``, ``postprocess_file`` ...,
  implemented in :mod:`~tadkit.detect.training` (checkpoints, resume, EMA, DDP, model selection),
  :mod:`~tadkit.detect.inference` (runs, ensembles, proposals, classifier fusion, chained runs),
  :mod:`~tadkit.detect.inputs` (stores -> samples -> head inputs) and :mod:`~tadkit.detect.runs`
  (run directories, checkpoints, devices).
* :mod:`tadkit.detect.cli` — ``tadkit detect train | infer | postprocess | classify``.
"""
