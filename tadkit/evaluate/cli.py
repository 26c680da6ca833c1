"""``tadkit evaluate``: official detection mAP or proposal AR@AN from files."""
from __future__ import annotations

import math
from pathlib import Path

import click

from tadkit.data.formats import FORMATS
from tadkit.threads import threads_option

#: protocol names of ``--dataset`` (``tadkit.evaluate.protocols.PROTOCOLS``; a test keeps them equal).
DATASETS = ("anet", "hacs", "thumos14")
#: the largest ``--max-proposals``: far above any published AR@AN curve (AN 100 or 1000).
MAX_PROPOSALS = 1_000_000


def _max_proposals(ctx, param, value: float) -> float:
    if not (math.isfinite(value) and 1 <= value <= MAX_PROPOSALS):
        raise click.BadParameter(f"must be a finite average number of proposals per video in "
                                 f"[1, {MAX_PROPOSALS}], got {value:g}")
    return value


@click.command()
@click.option("--dataset", "dataset", type=click.Choice(DATASETS, case_sensitive=False), default="anet",
              show_default=True,
              help="Protocol: tIoU thresholds, the averaged ones and the default subset "
                   "(anet, hacs: 0.5:0.05:0.95, validation; thumos14: 0.1-0.7 reported, "
                   "0.3-0.7 averaged, test).")
@click.option("--gt", "gt_path", required=True, type=click.Path(),
              help="Ground truth in any annotation format (see --gt-format): ActivityNet/HACS/THUMOS14 "
                   "JSON, results-style JSON, BSN JSON, the THUMOS14 txt folder or file, CSV.")
@click.option("--gt-format", type=click.Choice(("auto",) + FORMATS), default="auto", show_default=True,
              help="Format of --gt; auto detects it from the file.")
@click.option("--video-info", type=click.Path(dir_okay=False), default=None,
              help="CSV giving the ground truth's subsets/durations where the file has none "
                   "(BSN: video_info_new.csv beside the file is used by default).")
@click.option("--pred", "pred_path", required=True, type=click.Path(dir_okay=False),
              help="Predictions: official results JSON or CSV video,start,end,label,score.")
@click.option("--subset", default=None,
              help="Ground-truth subset (validation/val/Validation, test/testing, ...). "
                   "Default: the protocol's.")
@click.option("--task", type=click.Choice(["detection", "proposal"]), default="detection",
              show_default=True,
              help="detection: mAP per tIoU threshold (a label per prediction); proposal: "
                   "class-agnostic AR@AN, AUC and AR with the top N per video.")
@click.option("--tiou", "tiou", default=None,
              help="Custom tIoU thresholds, e.g. 0.3,0.5,0.7 or 0.5:0.95:0.05 (all averaged).")
@click.option("--blocked", "blocked_path", type=click.Path(dir_okay=False), default=None,
              help="Videos to exclude: a JSON list of ids or one id per line.")
@click.option("--ambiguous", type=click.Choice(["anet-style", "official"]), default="anet-style",
              show_default=True,
              help="THUMOS14 Ambiguous rule: ignore them, or drop false positives overlapping them.")
@click.option("--ambiguous-file", type=click.Path(dir_okay=False), default=None,
              help="Ambiguous segments, 'video start end' per line (e.g. Ambiguous_test.txt).")
@click.option("--max-proposals", type=float, default=100.0, show_default=True, callback=_max_proposals,
              help=f"Proposals: the largest average number per video (AN) of the AR-AN curve, "
                   f"in [1, {MAX_PROPOSALS}].")
@click.option("--reject-inverted", is_flag=True,
              help="Refuse predicted segments with end < start (default: score them as the "
                   "official code does, with a note).")
@click.option("--strict-ids", is_flag=True,
              help="Do not match video ids that differ only by a 'v_' prefix.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write machine-readable results (fractions) here.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Report folder: results.json, per-class CSV, PR curves / AR-AN curve PNG.")
@click.option("--timelines", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --out: draw detection timelines of this many videos.")
@click.option("--worst", type=click.IntRange(min=0), default=5, show_default=True,
              help="List this many lowest-AP classes in the terminal table.")
@threads_option
def evaluate(dataset, gt_path, gt_format, video_info, pred_path, subset, task, tiou, blocked_path,
             ambiguous, ambiguous_file, max_proposals, reject_inverted, strict_ids, json_path,
             out_dir, timelines, worst):
    """Evaluate detections (mAP) or proposals (AR@AN, AUC) with the official algorithm."""
    from tadkit.errors import InputError
    from tadkit.evaluate.io import load_ground_truth, load_predictions, load_video_list
    from tadkit.evaluate.protocols import get_protocol, parse_thresholds
    from tadkit.evaluate.report import (REPORT_JSON, format_detection_table, format_proposal_table,
                                        write_json, write_report)

    protocol = get_protocol(dataset)
    if tiou:
        protocol = protocol.with_thresholds(parse_thresholds(tiou))
    if ambiguous == "official" and protocol.name != "thumos14":
        raise InputError(None, "--ambiguous official is the THUMOS14 rule; use --dataset thumos14")
    gt = load_ground_truth(gt_path, subset=subset or protocol.subset, ambiguous_file=ambiguous_file,
                           fmt=gt_format, video_info=video_info)
    if ambiguous == "official" and (gt.ambiguous is None or len(gt.ambiguous) == 0):
        raise InputError(gt_path, "--ambiguous official needs Ambiguous segments: the ground truth "
                                  "has none; pass --ambiguous-file (e.g. Ambiguous_test.txt)")
    preds = load_predictions(pred_path, require_label=(task == "detection"),
                             reject_inverted=reject_inverted, classes=gt.labels)
    blocked = load_video_list(blocked_path) if blocked_path else ()
    if task == "detection":
        result = protocol.evaluate_detection(gt, preds, blocked=blocked, ambiguous=ambiguous,
                                             match_v_prefix=not strict_ids,
                                             keep_curves=out_dir is not None)
        click.echo(format_detection_table(result, worst=worst))
    else:
        result = protocol.evaluate_proposals(gt, preds, blocked=blocked,
                                             max_avg_nr_proposals=max_proposals,
                                             match_v_prefix=not strict_ids)
        click.echo(format_proposal_table(result))
    # the report folder holds the same document: never write it twice to one place
    if json_path and not (out_dir and Path(json_path).resolve() == (Path(out_dir) / REPORT_JSON).resolve()):
        write_json(result, json_path)
        click.echo(f"wrote {json_path}")
    if out_dir:
        files = write_report(result, out_dir, gt=gt, preds=preds, timelines=timelines)
        click.echo(f"wrote {len(files)} report files to {out_dir}")
