"""Reports of evaluation results: terminal tables, CSV, JSON and PNG figures.

The terminal shows percent; files hold fractions. Figures use matplotlib's
Agg backend (no display needed). :func:`plot_detection_timeline` draws one
video's predictions against its ground truth and is meant for reuse (demo).
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from tadkit.evaluate.detection import DetectionResult
from tadkit.evaluate.align import align
from tadkit.evaluate.io import GroundTruth, Predictions
from tadkit.text import plural
from tadkit.evaluate.proposals import ProposalResult

#: the results document inside a report folder (``--out``), the same as ``--json`` writes.
REPORT_JSON = "results.json"
#: named classes drawn in each PR-curve panel besides the mean.
PR_NAMED_CLASSES = 4


# --------------------------------------------------------------------------- text
def format_detection_table(result: DetectionResult, worst: int = 0) -> str:
    """mAP per threshold and the average, in percent; ``worst`` lowest classes too."""
    lines = [f"detection mAP (%) - {len(result.labels)} classes, {result.num_videos} videos, "
             f"{result.num_ground_truth} ground truth, {result.num_predictions} predictions",
             "  tIoU   mAP"]
    for t, m in zip(result.tiou_thresholds, result.mAP):
        lines.append(f"  {t:4.2f}  {100 * m:6.2f}")
    span = ", ".join(f"{t:g}" for t in result.average_over)
    lines.append(f"  average mAP ({span}): {100 * result.average_mAP:.2f}")
    if worst:
        mean_ap = result.class_average_AP
        lines.append(f"  lowest {plural(min(worst, len(mean_ap)), 'class', 'classes')} (AP averaged over {span}):")
        for c in np.argsort(mean_ap, kind="stable")[:worst]:
            lines.append(f"    {100 * mean_ap[c]:6.2f}  {result.labels[c]}")
    lines += [f"  note: {n}" for n in result.notes]
    return "\n".join(lines)


def format_proposal_table(result: ProposalResult) -> str:
    """AR at a few AN, AUC and AR@N, in percent."""
    lines = [f"proposals - {result.num_videos} videos, {result.num_ground_truth} ground truth, "
             f"{result.num_proposals} proposals", "  AN      AR"]
    for j in (0, 4, 9, 19, 49, 99):
        lines.append(f"  {result.AN[j]:6.2f}  {100 * result.AR[j]:6.2f}")
    lines.append(f"  AUC (AR-AN, AN <= {result.AN[-1]:.2f}): {result.AUC_percent:.2f}")
    lines.append(f"  AR at AN={result.AN[-1]:g} (the curve's end): {100 * result.AR[-1]:.2f}")
    for n, v in result.recall_at.items():
        lines.append(f"  AR@{n} per video (top {n} proposals of each video): {100 * v:.2f}")
    lines += [f"  note: {n}" for n in result.notes]
    return "\n".join(lines)


def write_json(result: DetectionResult | ProposalResult, path: str | Path) -> Path:
    """Write ``result.to_json()`` (fractions) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- report folder
def write_report(result: DetectionResult | ProposalResult, out_dir: str | Path,
                 gt: GroundTruth | None = None, preds: Predictions | None = None,
                 timelines: int = 0) -> list[Path]:
    """Write the report folder; returns the files written.

    Detection: ``results.json`` (the ``--json`` document), ``per_class.csv`` (AP per
    class and threshold),
    ``pr_curves.png`` (one panel per threshold; needs ``result.curves``) and,
    with ``timelines`` > 0 and ``gt``/``preds``, ``timelines/<video>.png`` for the
    first ``timelines`` ground-truth videos. Proposals: ``results.json``,
    ``ar_an.csv``, ``ar_an.png``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_json(result, out / REPORT_JSON)]
    if isinstance(result, ProposalResult):
        written.append(_write_ar_an_csv(result, out / "ar_an.csv"))
        written.append(plot_ar_an(result, out / "ar_an.png"))
        return written
    written.append(_write_per_class_csv(result, out / "per_class.csv"))
    if result.curves is not None:
        written.append(plot_pr_curves(result, out / "pr_curves.png"))
    if timelines and gt is not None and preds is not None:
        tdir = out / "timelines"
        tdir.mkdir(exist_ok=True)
        gt, preds, _ = align(gt, preds, labelled=False)
        colours = class_colours(gt.labels)
        for video in list(dict.fromkeys(gt.video.tolist()))[:timelines]:
            fig = plot_detection_timeline(video, gt, preds, colours=colours)
            path = tdir / f"{_safe_name(video)}.png"
            fig.savefig(path, dpi=110)
            _close(fig)
            written.append(path)
    return written


def plot_pr_curves(result: DetectionResult, path: str | Path) -> Path:
    """One panel per threshold: the class-averaged interpolated precision (bold) and
    the curves of a few named classes spread over the AP ranking (best, middle,
    worst), in the same colours in every panel; the legend sits below the panels."""
    plt = _pyplot()
    T = len(result.tiou_thresholds)
    cols = min(T, 5)
    rows = (T + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.1 * rows + 0.7), squeeze=False,
                             sharex=True, sharey=True)
    grid = np.linspace(0, 1, 101)
    ranking = np.argsort(-result.class_average_AP, kind="stable")
    picks = sorted(set(np.linspace(0, len(ranking) - 1, min(PR_NAMED_CLASSES, len(ranking)))
                       .round().astype(int).tolist()))
    named = [result.labels[ranking[i]] for i in picks]
    colours = class_colours(result.labels)
    for t in range(rows * cols):
        ax = axes[t // cols][t % cols]
        if t >= T:
            ax.axis("off")
            continue
        interp = np.zeros_like(grid)
        for label in result.labels:
            prec, rec = result.curves.get(label, (None, None)) if result.curves else (None, None)
            if prec is None or len(prec[t]) == 0:
                continue
            p, r = np.asarray(prec[t]), np.asarray(rec[t])
            env = np.maximum.accumulate(p[::-1])[::-1]
            idx = np.searchsorted(r, grid, side="left")
            interp += np.where(idx < len(env), env[np.minimum(idx, len(env) - 1)], 0.0)
            if label in named:
                c = result.labels.index(label)
                ax.plot(r, p, color=colours[label], lw=1.0,
                        label=f"{label} (AP {100 * result.class_average_AP[c]:.1f}%)")
        interp /= max(len(result.labels), 1)
        ax.plot(grid, interp, color="k", lw=2.2, label="mean over classes (interpolated)")
        ax.set_title(f"tIoU {result.tiou_thresholds[t]:.2f}: mAP {100 * result.mAP[t]:.1f}%",
                     fontsize=9)
        ax.set_xlim(0, 1); ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if t % cols == 0:
            ax.set_ylabel("precision")
        if t // cols == rows - 1:
            ax.set_xlabel("recall")
    handles, labels = axes[0][0].get_legend_handles_labels()
    by_label = dict(zip(labels, handles))
    fig.legend(list(by_label.values()), list(by_label), loc="lower center", fontsize=7,
               ncol=min(len(by_label), 3), frameon=False)
    which = "each class" if len(named) == len(result.labels) else f"{len(named)} of them by AP rank"
    fig.suptitle(f"precision-recall: mean of {plural(len(result.labels), 'class', 'classes')} and {which} "
                 "(AP averaged over the protocol's thresholds)", fontsize=10)
    fig.tight_layout(rect=(0, 0.7 / (3.1 * rows + 0.7) + 0.02, 1, 1))
    fig.savefig(path, dpi=110)
    _close(fig)
    return Path(path)


def class_colours(labels: Sequence[str]) -> dict[str, tuple]:
    """Class -> colour by its position in ``labels``, so a class keeps its colour in every
    picture drawn from the same ground truth. matplotlib's tab20 holds ten dark / light
    pairs of one hue; the ten dark ones come first (classes 1-10 have ten different
    hues), then the light ones, then the cycle repeats."""
    _pyplot()
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    order = list(range(0, cmap.N, 2)) + list(range(1, cmap.N, 2))
    return {lab: cmap(order[i % cmap.N]) for i, lab in enumerate(labels)}


def plot_ar_an(result: ProposalResult, path: str | Path) -> Path:
    """AR-AN curve (percent) with the recall at each threshold as thin lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for t, thr in enumerate(result.tiou_thresholds):
        ax.plot(result.AN, 100 * result.recall[t], lw=0.7, alpha=0.7, label=f"tIoU {thr:.2f}")
    ax.plot(result.AN, 100 * result.AR, color="k", lw=2.2, label="AR (mean)")
    ax.set_xlabel("average number of proposals per video (AN)")
    ax.set_ylabel("recall (%)")
    ax.set_xlim(0, result.AN[-1]); ax.set_ylim(0, 100)
    ax.set_title(f"AR-AN: AUC {result.AUC_percent:.2f}%, AR at AN={result.AN[-1]:g} "
                 f"{100 * result.AR[-1]:.2f}%")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _close(fig)
    return Path(path)


def plot_detection_timeline(video: str, gt: GroundTruth, preds: Predictions, top_k: int = 10,
                            min_score: float | None = None, duration: float | None = None,
                            ax=None, colours: dict[str, tuple] | None = None):
    """Draw one video's ground truth and its ``top_k`` highest-scoring predictions.

    Ground truth on the top lane, then one lane per prediction (best first),
    bar colour by class, opacity by score, its tIoU with the best ground truth
    of its class written on the bar. Times in seconds. ``colours``: class ->
    colour (default :func:`class_colours` of all of ``gt``'s classes, so one
    class has one colour in every timeline of the same ground truth). Returns
    the matplotlib Figure (``ax`` given: drawn there, its figure returned).
    """
    plt = _pyplot()
    g = gt.video == video
    p = preds.video == video
    if min_score is not None:
        p &= preds.score >= min_score
    g_idx, p_idx = np.flatnonzero(g), np.flatnonzero(p)
    p_idx = p_idx[np.argsort(-preds.score[p_idx].astype(np.float64), kind="stable")][:top_k]
    labels = list(dict.fromkeys(gt.label[g_idx].tolist()
                                + ([] if preds.label is None else preds.label[p_idx].tolist())))
    if colours is None:
        colours = class_colours(gt.labels + [lab for lab in labels if lab not in set(gt.label.tolist())])
    colour = {lab: colours.get(lab, "0.5") for lab in labels}
    if duration is None:
        duration = gt.durations.get(video)
    ends = np.concatenate([gt.end[g_idx], preds.end[p_idx], [duration or 0.0]])
    horizon = float(ends.max()) if ends.size else 1.0
    if ax is None:
        fig, ax = plt.subplots(figsize=(10.5, 1.4 + 0.32 * (len(p_idx) + 1)))
    else:
        fig = ax.figure
    lanes = len(p_idx) + 1
    for i in g_idx:
        lab = gt.label[i]
        ax.barh(lanes - 1, max(gt.end[i] - gt.start[i], horizon * 0.003), left=gt.start[i],
                color=colour[lab], edgecolor="k", height=0.8)
    scores = preds.score[p_idx].astype(np.float64)
    hi = scores.max() if scores.size else 1.0
    lo = scores.min() if scores.size else 0.0
    for lane, i in enumerate(p_idx):
        y = lanes - 2 - lane
        lab = None if preds.label is None else preds.label[i]
        alpha = 0.35 + 0.65 * ((preds.score[i] - lo) / (hi - lo) if hi > lo else 1.0)
        ax.barh(y, max(preds.end[i] - preds.start[i], horizon * 0.003), left=preds.start[i],
                color=colour.get(lab, "0.5"), alpha=float(alpha), height=0.7)
        same = g_idx if lab is None else g_idx[gt.label[g_idx] == lab]
        best = 0.0
        if same.size:
            inter = np.clip(np.minimum(preds.end[i], gt.end[same])
                            - np.maximum(preds.start[i], gt.start[same]), 0, None)
            union = (gt.end[same] - gt.start[same]) + (preds.end[i] - preds.start[i]) - inter
            with np.errstate(divide="ignore", invalid="ignore"):
                best = float(np.nanmax(np.where(union > 0, inter / union, 0.0)))
        note = f"tIoU {best:.2f}" if same.size else "no GT of this class"
        ax.text(preds.start[i], y, f" {float(preds.score[i]):.2f} | {note}", va="center",
                fontsize=7)
    ax.set_yticks(range(lanes))
    ax.set_yticklabels([f"pred {lanes - 1 - k}" for k in range(lanes - 1)] + ["ground truth"],
                       fontsize=7)
    ax.set_xlim(0, horizon * 1.02)
    ax.set_xlabel("time (s)")
    ax.set_title(f"{video}: ground truth vs top {len(p_idx)} predictions", fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[lab]) for lab in labels]
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  frameon=False, title="class", title_fontsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- helpers
def _write_per_class_csv(result: DetectionResult, path: Path) -> Path:
    """AP per class and threshold; ``AP_mean`` averages the thresholds the headline
    average mAP averages (``result.average_over``), as its last row does."""
    mean = result.class_average_AP
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class"] + [f"AP@{t:.2f}" for t in result.tiou_thresholds] + ["AP_mean"])
        for c, label in enumerate(result.labels):
            w.writerow([label] + [repr(float(x)) for x in result.ap[:, c]]
                       + [repr(float(mean[c]))])
        w.writerow(["mAP"] + [repr(float(x)) for x in result.mAP] + [repr(float(result.average_mAP))])
    return path


def _write_ar_an_csv(result: ProposalResult, path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["AN", "AR"] + [f"recall@{t:.2f}" for t in result.tiou_thresholds])
        for j in range(len(result.AN)):
            w.writerow([repr(float(result.AN[j])), repr(float(result.AR[j]))]
                       + [repr(float(x)) for x in result.recall[:, j]])
    return path


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:120] or "video"


def _pyplot():
    import sys

    import matplotlib
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")       # files only; leave a caller's chosen backend alone
    import matplotlib.pyplot as plt
    return plt


def _close(fig) -> None:
    import matplotlib.pyplot as plt
    plt.close(fig)
