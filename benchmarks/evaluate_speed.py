"""End-to-end speed of ``tadkit evaluate`` on an ActivityNet-1.3-validation-sized input, side by side
with the official ActivityNet code (when given) and the slow oracle.

Input: the ActivityNet 1.3 validation ground truth (4,926 videos, 7,654 instances,
200 classes; rebuilt from ``sample_detection_prediction.json`` found with ``--data`` (default: the test suite's
real-data folder, ``TADKIT_REAL_DATA``, see ``tests/conftest.py``),
or a synthetic look-alike when absent) and 100 deterministic noisy predictions per
video (492,600; scores rounded to 2 decimals, so ties are frequent), 10 tIoU
thresholds, written as official JSON files.

Measured, each in a fresh process, CPU time (user + system) next to wall time:

* the whole ``tadkit evaluate`` CLI run (detection, then ``--task proposal``), with
  ``--json``; best of ``--repeat``;
* tadkit's breakdown: import / parse ground truth / parse predictions / evaluate / write;
* ``--official DIR``: the official ``eval_detection.py`` / ``eval_proposal.py``
  (activitynet/ActivityNet, ``Evaluation/``) run from DIR on the same files, single
  process, with the same breakdown; its numbers must equal tadkit's bit for bit. DIR is
  a scratch copy made runnable under Python 3 (see ``benchmarks/RESULTS.md``); nothing
  of it is part of tadkit.
* unless ``--no-oracle``: the oracle of ``tests/oracle_eval.py`` (bit-identical check);
* the floor: what any reader of the predictions file pays (interpreter, numpy, reading the
  bytes, scanning the JSON), and so the largest ratio any tadkit could reach.

    python benchmarks/evaluate_speed.py [--official DIR] [--no-oracle] [--repeat 3] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import REAL_DATA as DATA  # noqa: E402  (tests/ is on the path)
ENV = dict(os.environ, OMP_NUM_THREADS="1")

# Timed in a child process: import / parse / evaluate / write, CPU and wall per stage.
_TADKIT_BREAKDOWN = """
import json, sys, time
def now(): return time.perf_counter(), time.process_time()
t = [now()]
from tadkit.evaluate.io import load_ground_truth, load_predictions
from tadkit.evaluate.protocols import get_protocol
from tadkit.evaluate.report import write_json
t.append(now())
task, gt_path, pred_path, out = sys.argv[1:5]
gt = load_ground_truth(gt_path, subset="validation"); t.append(now())
preds = load_predictions(pred_path, require_label=task == "detection", classes=gt.labels)
t.append(now())
p = get_protocol("anet")
r = p.evaluate_detection(gt, preds) if task == "detection" else p.evaluate_proposals(gt, preds)
t.append(now())
write_json(r, out); t.append(now())
names = ["import", "parse ground truth", "parse predictions", "evaluate", "write"]
print(json.dumps({n: [t[i + 1][0] - t[i][0], t[i + 1][1] - t[i][1]] for i, n in enumerate(names)}))
"""

_OFFICIAL_BREAKDOWN = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
def now(): return time.perf_counter(), time.process_time()
t = [now()]
task, gt_path, pred_path, out = sys.argv[1:5]
import numpy as np
if task == "detection":
    from eval_detection import ANETdetection as Evaluation
else:
    from eval_proposal import ANETproposal as Evaluation
t.append(now())
kw = dict(tiou_thresholds=np.linspace(0.5, 0.95, 10), subset="validation", verbose=False,
          check_status=False)
if task == "proposal":
    kw["max_avg_nr_proposals"] = 100
ev = Evaluation(gt_path, pred_path, **kw); t.append(now())
ev.evaluate(); t.append(now())
if task == "detection":
    doc = {"ap": ev.ap.tolist(), "mAP": ev.mAP.tolist(), "average_mAP": float(ev.average_mAP)}
else:
    doc = {"recall": ev.recall.tolist(), "AR": ev.avg_recall.tolist(), "AN": ev.proposals_per_video.tolist()}
json.dump(doc, open(out, "w")); t.append(now())
names = ["import", "parse", "evaluate", "write"]
print(json.dumps({n: [t[i + 1][0] - t[i][0], t[i + 1][1] - t[i][1]] for i, n in enumerate(names)}))
"""


# What any reader of the predictions file pays before a single number is in an array, timed
# inside one fresh process (CPU s): reading the bytes, msgspec checking the JSON and skipping
# every value (it still makes one empty object per entry and a list per video), decoding it
# into typed entries (tadkit's decoder, labels as any string), freeing those entries.
_FLOOR = """
import json, sys, time
from pathlib import Path
import msgspec
from tadkit.evaluate.io import _results_decoder
def now(): return time.process_time()
skip = msgspec.defstruct("Skip", [], gc=False)
scan = msgspec.json.Decoder(msgspec.defstruct("File", [("results", dict[str, list[skip]])], gc=False))
typed = _results_decoder(None)
out = {}
for _ in range(int(sys.argv[2])):
    t = [now()]
    data = Path(sys.argv[1]).read_bytes(); t.append(now())
    doc = scan.decode(data); t.append(now())
    del doc; t.append(now())
    doc = typed.decode(data); t.append(now())
    del doc, data; t.append(now())
    for name, i in (("read", 0), ("scan, skip every value", 1), ("decode typed", 3),
                    ("free typed entries", 4)):
        out[name] = min(out.get(name, 9e9), t[i + 1] - t[i])
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, default=None,
                        help="folder with the official eval_detection.py / eval_proposal.py (Python 3)")
    parser.add_argument("--no-oracle", action="store_true", help="skip the slow oracle")
    parser.add_argument("--repeat", type=int, default=3, help="best of N for tadkit timings")
    parser.add_argument("--per-video", type=int, default=100)
    parser.add_argument("--data", type=Path, default=DATA, help="folder with sample_detection_prediction.json")
    parser.add_argument("--keep", type=Path, default=None, help="write the input files here and keep them")
    args = parser.parse_args()

    from oracle_eval import jittered_predictions, load_anet_val_rows

    sample = args.data / "sample_detection_prediction.json"
    gt_rows = load_anet_val_rows(sample) if sample.exists() else _synthetic_gt()
    pred_rows = jittered_predictions(gt_rows, per_video=args.per_video, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        gt_file, pred_file = folder / "gt.json", folder / "pred.json"
        _write(gt_rows, pred_rows, gt_file, pred_file)
        print(f"input: {len({r[0] for r in gt_rows})} videos, {len(gt_rows)} ground truth, "
              f"{len({r[3] for r in gt_rows})} classes, {len(pred_rows)} predictions "
              f"({pred_file.stat().st_size / 1e6:.0f} MB JSON), 10 tIoU thresholds "
              f"({'real ANet 1.3 val GT' if sample.exists() else 'synthetic GT'}); "
              f"cpus: {os.cpu_count()}; one thread")
        floor = _floor(pred_file, args.repeat)
        results = {}
        for task in ("detection", "proposal"):
            results[task] = _run_task(task, gt_file, pred_file, folder, args)
        if not args.no_oracle:
            _check_oracle(gt_rows, pred_rows, folder)
    print("\nsummary (CPU s; ratio = official CPU / tadkit CLI CPU)")
    for task, r in results.items():
        line = f"  {task:9s} tadkit CLI {r['cli_cpu']:.2f} s CPU ({r['cli_wall']:.2f} s wall)"
        if "official_cpu" in r:
            line += (f"; official {r['official_cpu']:.1f} s CPU ({r['official_wall']:.1f} s wall): "
                     f"x{r['official_cpu'] / r['cli_cpu']:.0f} CPU, identical: {r['identical']}")
        print(line)
    base = floor["python"] + floor["import numpy"] + floor["read"] + floor["scan, skip every value"]
    print(f"  floor: interpreter + numpy + reading + scanning the predictions = {base:.3f} s CPU"
          + "".join(f"; {task} can be at most x{r['official_cpu'] / base:.0f}"
                    for task, r in results.items() if "official_cpu" in r))


def _floor(pred_file: Path, repeat: int) -> dict:
    """Best-of-``repeat`` CPU s of the costs no reader of ``pred_file`` avoids (printed)."""
    python = min(_timed([sys.executable, "-c", "pass"])[0] for _ in range(max(3, repeat)))
    numpy_ = min(_timed([sys.executable, "-c", "import numpy"])[0] for _ in range(max(3, repeat)))
    out = {"python": python, "import numpy": max(numpy_ - python, 0.0)}
    out.update(_stages([sys.executable, "-c", _FLOOR, str(pred_file), str(max(3, repeat))]))
    print("\nfloor (CPU s, best of repeats): " + ", ".join(f"{k} {v:.3f}" for k, v in out.items()))
    return out


def _run_task(task: str, gt_file: Path, pred_file: Path, folder: Path, args) -> dict:
    out = folder / f"tadkit_{task}.json"
    cli = [sys.executable, "-m", "tadkit", "evaluate", "--gt", str(gt_file), "--pred", str(pred_file),
           "--task", task, "--json", str(out)]
    runs = [_timed(cli) for _ in range(max(1, args.repeat))]
    cli_cpu, cli_wall = min(runs)
    print(f"\n[{task}] tadkit evaluate CLI end to end: {cli_cpu:.2f} s CPU, {cli_wall:.2f} s wall "
          f"(best of {len(runs)}; all CPU: {', '.join(f'{c:.2f}' for c, _ in runs)})")
    breakdown = _stages([sys.executable, "-c", _TADKIT_BREAKDOWN, task, str(gt_file), str(pred_file),
                         str(folder / f"breakdown_{task}.json")])
    _print_stages("tadkit", breakdown)
    result = {"cli_cpu": cli_cpu, "cli_wall": cli_wall}
    if args.official is not None:
        official_out = folder / f"official_{task}.json"
        cmd = [sys.executable, "-c", _OFFICIAL_BREAKDOWN, task, str(gt_file), str(pred_file), str(official_out)]
        t0, c0 = time.perf_counter(), _children_cpu()
        stages = _stages(cmd, cwd=args.official)
        result["official_wall"], result["official_cpu"] = time.perf_counter() - t0, _children_cpu() - c0
        _print_stages("official", stages)
        result["identical"] = _same(task, json.loads(out.read_text()), json.loads(official_out.read_text()))
        print(f"  official end to end {result['official_cpu']:.1f} s CPU, {result['official_wall']:.1f} s wall;"
              f" tadkit CLI is x{result['official_cpu'] / cli_cpu:.0f} (CPU), "
              f"x{result['official_wall'] / cli_wall:.0f} (wall); numbers identical: {result['identical']}")
    return result


def _same(task: str, ours: dict, official: dict) -> bool:
    if task == "detection":
        ap = np.array(list(ours["per_class_AP"].values())).T
        return (np.array_equal(ap, np.array(official["ap"])) and ours["mAP"] == official["mAP"]
                and ours["average_mAP"] == official["average_mAP"])
    return ours["AR"] == official["AR"] and ours["AN"] == official["AN"]


def _check_oracle(gt_rows, pred_rows, folder: Path) -> None:
    from oracle_eval import oracle_detection, oracle_proposals

    from tadkit.evaluate import ANET_TIOU

    det = json.loads((folder / "tadkit_detection.json").read_text())
    prop = json.loads((folder / "tadkit_proposal.json").read_text())
    t0 = time.perf_counter()
    ap, labels, mAP = oracle_detection(gt_rows, pred_rows, ANET_TIOU)
    same_det = labels == list(det["per_class_AP"]) and np.array_equal(
        ap, np.array(list(det["per_class_AP"].values())).T) and mAP.tolist() == det["mAP"]
    print(f"\noracle detection {time.perf_counter() - t0:.1f} s wall; identical: {same_det}")
    t0 = time.perf_counter()
    recall, avg, ppv, area, at = oracle_proposals(gt_rows, pred_rows, ANET_TIOU, 100)
    same_prop = avg.tolist() == prop["AR"] and ppv.tolist() == prop["AN"]
    print(f"oracle proposals {time.perf_counter() - t0:.1f} s wall; identical: {same_prop}")
    if not (same_det and same_prop):
        sys.exit("MISMATCH between tadkit and the oracle")


def _timed(cmd: list[str]) -> tuple[float, float]:
    """(CPU s of the child: user + system, wall s)."""
    c0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run(cmd, check=True, env=ENV, stdout=subprocess.DEVNULL)
    return _children_cpu() - c0, time.perf_counter() - t0


def _stages(cmd: list[str], cwd: Path | None = None) -> dict:
    out = subprocess.run(cmd, check=True, env=ENV, cwd=cwd, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _print_stages(who: str, stages: dict) -> None:
    parts = ", ".join(f"{k} {c:.3f}" for k, (w, c) in stages.items())
    print(f"  {who} breakdown (CPU s, in-process clock): {parts}")


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _write(gt_rows, pred_rows, gt_file: Path, pred_file: Path) -> None:
    database = {}
    for vid, s, e, label in gt_rows:
        database.setdefault(vid, {"subset": "validation", "annotations": []})["annotations"].append(
            {"segment": [s, e], "label": label})
    gt_file.write_text(json.dumps({"version": "1.3", "taxonomy": [], "database": database}))
    results = {}
    for vid, s, e, label, score in pred_rows:
        results.setdefault(vid, []).append({"label": label, "score": score, "segment": [s, e]})
    pred_file.write_text(json.dumps({"version": "1.3", "results": results, "external_data": {}}))


def _synthetic_gt(n_videos: int = 4926, n_classes: int = 200, seed: int = 7):
    rng = np.random.default_rng(seed)
    rows = []
    for v in range(n_videos):
        duration = float(rng.uniform(30, 240))
        label = f"class_{rng.integers(n_classes):03d}"
        for _ in range(1 + rng.poisson(0.55)):
            s = float(rng.uniform(0, duration * 0.8))
            rows.append((f"video_{v:05d}", s, float(min(duration, s + rng.uniform(2, 60))), label))
    return rows


if __name__ == "__main__":
    main()
