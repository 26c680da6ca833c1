"""Every key of the detect config with its type, default and meaning: ``tadkit detect config``.

* ``tadkit detect config [--config FILE] [--set K=V]`` prints the resolved config as YAML
  (what ``detect train`` would run with);
* ``--show [--head NAME]`` lists every key with its value (the default, or what the file and
  ``--set`` make of it), type and meaning;
* ``--markdown`` prints the reference page ``docs/config-reference.md`` (defaults only).

The meaning of each key lives in :data:`KEY_HELP` (kept here, beside neither dataclass, so
that ``tadkit/detect/config.py`` stays a plain list of fields). A test checks that every key of
:class:`~tadkit.detect.config.DetectConfig` has an entry and that the docs page is current:
a new key needs a line here, then ``tadkit detect config --markdown > docs/config-reference.md``.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import textwrap
import typing
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import click
import yaml

from tadkit.config import load_config, to_dict
from tadkit.detect.config import DetectConfig, PostprocessConfig
from tadkit.detect.heads import get_head
from tadkit.errors import ConfigError

#: The sections of a detect config that are not a head's settings.
CORE_SECTIONS = ("data", "optim", "schedule", "train", "postprocess")

#: Meaning of every config key (dotted path), in plain words; units in brackets.
KEY_HELP: dict[str, str] = {
    "head": "The detection head to train; its section (mltpn, talmts, ...) holds its settings.",
    # -- MLTPN
    "mltpn.embed_dim": "Width c of the t x c map made by the two stride-2 temporal convs (the feature "
                       "width the THMs keep along their second axis).",
    "mltpn.transform_k1": "Output channels of the Transform module's stride-1 conv (Conv1).",
    "mltpn.transform_k2": "Output channels of the Transform module's stride-2 conv (Conv2), upsampled back.",
    "mltpn.upsample": "Upsampling in the Transform module and the THM decoders: nearest or linear.",
    "mltpn.thm_channels": "Channels inside each Temporal H-shaped Module.",
    "mltpn.thm_out_channels": "Output channels of each THM at every scale (paper: 128).",
    "mltpn.num_thms": "Cascaded THMs (paper: 6).",
    "mltpn.num_scales": "Pyramid scales; scale i has stride 4 * 2^i input cells.",
    "mltpn.mfm_reduction": "Channel reduction of the Merge Feature Module's channel-wise attention.",
    "mltpn.head_squeeze": "Channels of the 1x1 squeeze before a scale's map is flattened for the heads.",
    "mltpn.num_anchors": "Anchor widths per cell (paper: 7).",
    "mltpn.anchor_ratios": "Explicit anchor width ratios (num_anchors of them); empty: geometric between "
                           "anchor_min_ratio and anchor_max_ratio.",
    "mltpn.anchor_min_ratio": "Smallest anchor ratio when anchor_ratios is empty.",
    "mltpn.anchor_max_ratio": "Largest anchor ratio when anchor_ratios is empty.",
    "mltpn.anchor_base": "Anchor width = anchor_base x stride x ratio [input cells].",
    "mltpn.pos_iou": "An anchor is positive when its tIoU with a ground truth reaches this.",
    "mltpn.neg_pos_ratio": "Hard-mined negatives per positive in the classification loss.",
    "mltpn.iou_target": "The confidence regresses the tIoU of the predicted segment (prediction) or of "
                        "the anchor (anchor) with its ground truth.",
    "mltpn.cls_weight": "Weight of the classification loss.",
    "mltpn.conf_weight": "Weight of the IoU-confidence loss (paper: 10).",
    "mltpn.reg_weight": "Weight of the boundary (1 - GIoU) loss (paper: 0.3).",
    "mltpn.score": "Detection score: product = p(class) x confidence, class = p(class).",
    "mltpn.classifier": "Class scores: softmax over C+1 classes (the paper's) or one sigmoid per class; "
                        "both train every class of ground truths sharing an anchor's segment.",
    "mltpn.dropout": "Dropout before the prediction heads.",
    # -- TAL-MTS
    "talmts.dim": "Channels of every pyramid level (paper: 512).",
    "talmts.num_levels": "Pyramid levels (paper: 6).",
    "talmts.first_stride": "Stride of the first level [input cells, a power of two]; level l has "
                           "first_stride * 2^l.",
    "talmts.rfp": "Ablation switch: top-down refinement of the pyramid (RFP).",
    "talmts.stt": "Ablation switch: the spatial-temporal transformer feeding classification (STT).",
    "talmts.fsa": "Ablation switch: frame-level patch self-attention feeding refinement (FSA).",
    "talmts.stored_levels": "Build the lowest pyramid levels from the stored levels data.levels names (finest "
                            "first; the paper: [Mixed_4f, Mixed_5c]), resampled onto the levels' cells.",
    "talmts.grid_size": "Side g of the features' per-snippet spatial grid (tadkit extract --spatial-grid); "
                        "0: no grid, one token per snippet.",
    "talmts.grid_dim": "Channels of the spatial grid; 0: the feature dim.",
    "talmts.patch_size": "FSA patch side [grid cells]; must divide grid_size.",
    "talmts.stt_dim": "Width of the STT transformers (divisible by num_heads).",
    "talmts.stt_spatial_layers": "Layers of the STT's spatial transformer.",
    "talmts.stt_temporal_layers": "Layers of the STT's temporal transformer.",
    "talmts.fsa_dim": "Width of the FSA transformer (divisible by num_heads).",
    "talmts.fsa_layers": "Layers of the FSA transformer.",
    "talmts.num_heads": "Attention heads of the STT and FSA transformers.",
    "talmts.mlp_ratio": "Hidden width of the transformers' MLPs, as a multiple of their width.",
    "talmts.tower_layers": "Conv layers of the localisation and classification towers (Conv1, Conv2).",
    "talmts.boundary_dim": "Channels of the boundary-pooling refinement branch.",
    "talmts.bp_inner": "Boundary pooling reaches this fraction of the coarse segment length inside "
                       "each boundary.",
    "talmts.bp_outer": "... and this fraction outside it (AFSD: 1/10).",
    "talmts.bp_min": "Boundary regions span at least this many cells of the pooled feature (AFSD: 1).",
    "talmts.quality_branch": "Branch the quality score is predicted from: loc (AFSD's) or cls.",
    "talmts.refine_iou": "Refinement positives: positives whose coarse segment has tIoU above this with "
                         "their ground truth.",
    "talmts.alpha": "Weight of the localisation losses (paper: 10 on THUMOS14, 1 on ActivityNet).",
    "talmts.beta": "Weight of the quality (BCE) loss.",
    "talmts.focal_alpha": "Focal loss alpha.",
    "talmts.focal_gamma": "Focal loss gamma.",
    "talmts.prior_prob": "Initial foreground probability of the classifiers (bias initialisation).",
    "talmts.dropout": "Dropout in the transformers.",
    # -- MENet
    "menet.dim": "Channels after the fuse conv, in MREM and in every SFPN layer (paper: not given).",
    "menet.mrem": "Ablation switch: MREM's local / forward-LSTM / backward-LSTM paths (false: the Base "
                  "model's single temporal conv).",
    "menet.local_kernel": "Kernel of MREM's local path (odd).",
    "menet.num_layers": "SFPN layers; layer i has stride 2^i input cells (paper: 3).",
    "menet.downsample": "Ablation switch: ushape (SFPN), or a plain down path by avgpool or stride-2 conv.",
    "menet.single_layer": "Ablation switch: -1 the pyramid; i only layer i (T / 2^i steps) for every scale.",
    "menet.scale_ranges": "Per layer, the anchor scales [min, max] it trains on in Specialization and "
                          "outputs at inference [fraction of the sample's length].",
    "menet.sampling_ratios": "Per layer, the fraction r_i of its anchors sampled per training sample.",
    "menet.sampling": "Anchor sampling: two_stage (Generalization, then Specialization), generalization, "
                      "specialization or bias (only inside the layer's range).",
    "menet.generalization_epochs": "two_stage: epochs of Generalization before Specialization.",
    "menet.max_duration": "Longest anchor [fraction of a layer's length; 1: every anchor].",
    "menet.align_bins": "SAlign bins S per anchor.",
    "menet.align_samples": "SAlign points averaged per bin.",
    "menet.align_context": "SAlign widens each anchor by this fraction of its length on both sides.",
    "menet.asp_dim": "Hidden width of the IoU and Offset anchor score predictors.",
    "menet.boundary_radius": "Boundary label regions reach this many layer steps around each start / end "
                             "(paper: 1.5).",
    "menet.pos_iou": "Anchors with tIoU above this are IoU positives and train the offsets (paper: 0.9).",
    "menet.lambda_reg": "Weight of the L2 loss of M_reg (paper: lambda_1 = 5).",
    "menet.lambda_offset": "Weight of the offset loss (paper: lambda_2 = 10).",
    "menet.peak_threshold": "Inference: boundary candidates are local peaks or above this x the maximum.",
    "menet.max_candidates": "Inference: most anchors per layer and sample (the highest p_s x p_e).",
    # -- BMN
    "bmn.hidden_1d": "Channels of the base module, TEM and PEM's 1-D conv (paper: 256).",
    "bmn.hidden_2d": "Channels of the 2-D convs over the BM map (paper: 128).",
    "bmn.hidden_3d": "Output channels of the BM layer's fused (N, 1, 1) 3-D conv (paper: 512).",
    "bmn.conv_groups": "Groups of the base-module and TEM convs (BMN's code: 4).",
    "bmn.lstm_layers": "Bi-LSTM layers added residually to the base module (HACS-2020: 0, 1 or 2).",
    "bmn.max_duration": "Rows D of the BM map: proposals of up to D - 1 cells; 0: D = the sample length T.",
    "bmn.num_samples": "Bins N sampled along each proposal by the BM layer (paper: 32).",
    "bmn.samples_per_bin": "Points averaged per BM bin (BMN's code: 3).",
    "bmn.context": "The BM layer samples the proposal widened by this x its length on each side.",
    "bmn.boundary_width": "Width of the start / end label regions around a ground-truth boundary [cells].",
    "bmn.cls_iou": "PEM classification positives: map entries with IoU above this (paper: 0.9).",
    "bmn.reg_high": "PEM regression: entries with IoU above this all count ...",
    "bmn.reg_low": "... and as many from (reg_low, reg_high] and from [0, reg_low] are drawn.",
    "bmn.reg_weight": "Weight of the PEM regression loss (paper: 10).",
    "bmn.peak_threshold": "Boundary candidates: local maxima or above this x the sample's maximum.",
    "bmn.include_ends": "Also take the first cell as a start and the last as an end candidate.",
    "bmn.score": "Proposal score: product (p_s p_e p_c p_r, BMN's code) or sqrt (p_s p_e sqrt(p_c p_r), paper).",
    # -- HACS-2020 refine network
    "refine.hidden": "Channels of each refine module (its conv, transformer and RoI features).",
    "refine.stage_ious": "Positive tIoU of each refine module in the cascade (paper: 0.5, 0.6, 0.7).",
    "refine.action_score": "Ablation switch: the supervised per-cell action score.",
    "refine.transformer": "Ablation switch: the global transformer over the video before RoI Align.",
    "refine.transformer_layers": "Layers of that transformer.",
    "refine.num_heads": "Attention heads of that transformer.",
    "refine.mlp_ratio": "Hidden width of the transformer's MLP, as a multiple of hidden.",
    "refine.lstm": "Ablation switch: the Bi-LSTM over the RoI bins.",
    "refine.non_local": "Ablation switch: the non-local block over the RoI bins.",
    "refine.bins": "RoI Align bins per proposal.",
    "refine.roi_samples": "Points averaged per RoI bin.",
    "refine.roi_context": "RoI Align reads the proposal widened by this x its length on each side.",
    "refine.fc_dim": "Width of the fully connected layer before the IoU and offset outputs.",
    "refine.train_proposals": "Proposals drawn at random per video and training step; 0: all of them.",
    "refine.iou_weight": "Weight of the IoU loss of every module.",
    "refine.reg_weight": "Weight of the offset loss of every module.",
    "refine.action_weight": "Weight of the action-score loss of every module.",
    "refine.score": "Refined proposals' score: iou (the last module's IoU) or product (x the input score).",
    "refine.dropout": "Dropout after the fully connected layer and in the transformer.",
    # -- SP-TAD
    "sptad.dim": "Model width d: pyramid channels and proposal features (paper: 256).",
    "sptad.tfpn": "Temporal feature pyramid (Table 5): inter (the backbone levels of data.levels, then "
                  "max-pooled levels), high (strided convs over the last level) or single (the last level "
                  "alone); inter without stored levels falls back to single.",
    "sptad.num_levels": "Pyramid levels of inter and high (paper: 4; inter: the backbone levels, then "
                        "stride-2 max pooling of the top one).",
    "sptad.num_proposals": "Learnable proposals N (paper: 50 on THUMOS14, 100 on ActivityNet).",
    "sptad.proposal_init": "Initial proposals: random (centres uniform, widths log-uniform in [1/16, 1] of "
                           "the sample) or full (every proposal covers the sample).",
    "sptad.num_heads": "Stacked iterative detection heads, each with its auxiliary loss (Table 6; paper: 4).",
    "sptad.attn_heads": "Attention heads of the proposals' self-attention (divides dim).",
    "sptad.eta": "A proposal of length l is widened by l / eta on each side before SoI Align (paper: 5).",
    "sptad.soi_bins": "Bins T' of SoI Align (the aligned temporal resolution).",
    "sptad.soi_samples": "Points averaged per SoI Align bin.",
    "sptad.dynamic_dim": "Hidden width d_h of the dynamic interaction (d x d_h, then d_h x d).",
    "sptad.ffn_dim": "Hidden width of each head's two-layer FFN.",
    "sptad.dropout": "Dropout in self-attention, dynamic interaction and FFN residuals.",
    "sptad.cls_head": "Ablation switch: the clip-level action classification head (Table 7), multiplied "
                      "into the detection scores.",
    "sptad.cls_weight": "Weight of the focal classification term, in matching and loss (Sparse R-CNN: 2).",
    "sptad.l1_weight": "Weight of the L1 term on normalised boundaries (Sparse R-CNN: 5).",
    "sptad.giou_weight": "Weight of the GIoU term (Sparse R-CNN: 2).",
    "sptad.act_weight": "Weight of the clip-level head's BCE.",
    "sptad.focal_alpha": "Focal loss alpha.",
    "sptad.focal_gamma": "Focal loss gamma.",
    "sptad.prior_prob": "Initial class probability of the detection heads (bias initialisation).",
    # -- data
    "data.mode": "How videos become samples: full (whole sequence, padded per batch), resize (to length "
                 "cells) or window (sliding windows of length cells).",
    "data.length": "Cells of a resized video or of a window.",
    "data.max_length": "full mode: training crops videos longer than this many snippets (null: never).",
    "data.train_overlap": "Overlap of consecutive training windows [fraction of length].",
    "data.infer_overlap": "Overlap of consecutive inference windows [fraction of length].",
    "data.train_stride": "Start a training window every this many snippets (overrides train_overlap; "
                         "null: use the overlap).",
    "data.infer_stride": "Start an inference window every this many snippets (overrides infer_overlap; "
                         "null: use the overlap).",
    "data.min_ioi": "A ground truth is kept in a window or crop when at least this fraction of it lies "
                    "inside.",
    "data.drop_empty": "Skip training windows without ground truth.",
    "data.train_subset": "Annotation subset to train on (e.g. training, or validation for THUMOS14).",
    "data.test_subset": "Annotation subset to detect by default; never used in training.",
    "data.holdout_fraction": "Fraction of the training videos held out to pick best.pt (0: none).",
    "data.num_workers": "DataLoader worker processes (0: load in the main process).",
    "data.streams": "Stored streams to read, e.g. [rgb] or [flow] (empty or [both]: all, in stored order).",
    "data.channels": "[start, end) channel ranges kept after stream selection, e.g. [[512, 1024]] for the "
                     "total half of MFE features, MENet's Base ablation (empty: all).",
    "data.levels": "Stored backbone levels a head reads (e.g. [rgb/Mixed_4f, rgb/Mixed_5c]; empty: none).",
    "data.optional_levels": "A store without any stored level runs without data.levels (heads that read "
                            "levels fall back to a single-level variant) instead of failing.",
    "data.normalize": "Standardise every channel with mean / std of the training features (stored in the "
                      "run, applied at inference).",
    "data.infer_batch_size": "Samples per inference forward pass (detect infer --batch-size overrides it).",
    "data.proposals_topk": "Chained runs (--from-run): best proposals per video taken from the source run.",
    # -- optim
    "optim.name": "Optimiser: sgd, adam or adamw.",
    "optim.lr": "Base learning rate.",
    "optim.momentum": "SGD momentum.",
    "optim.weight_decay": "Weight decay.",
    "optim.betas": "Adam / AdamW betas.",
    "optim.no_decay": "Parameter kinds trained without weight decay: any of norm, bias, embedding.",
    "optim.lr_mult": "Learning-rate multiplier per module-name prefix of the head, e.g. {tfpn: 0.1}.",
    # -- schedule
    "schedule.name": "Learning-rate schedule per epoch: constant, step or cosine.",
    "schedule.milestones": "step: epochs after which the rate is multiplied by gamma.",
    "schedule.gamma": "step: factor applied at each milestone.",
    "schedule.warmup_epochs": "Linear warm-up from 0 over this many epochs (fractions allowed).",
    "schedule.min_lr_ratio": "cosine: the final rate as a fraction of the base rate.",
    # -- train
    "train.epochs": "Training epochs.",
    "train.batch_size": "Samples per step, over all processes (torchrun splits it).",
    "train.seed": "Seed of initialisation, shuffling and augmentation.",
    "train.grad_clip": "Clip the gradient norm to this (0: no clipping).",
    "train.amp": "Mixed precision on CUDA (ignored on CPU).",
    "train.ema": "Keep an exponential moving average of the weights (used for inference when present).",
    "train.ema_decay": "Decay of the weight average.",
    "train.checkpoint_every": "Write checkpoints/epoch_NNNN.pt every this many epochs (last.pt always).",
    "train.log_every": "Log the losses every this many steps.",
    "train.device": "auto (CUDA when available), cpu, cuda or cuda:N; detect train --device sets it.",
    "train.accumulate": "Batches per optimiser step (gradient accumulation; effective batch = batch_size x "
                        "accumulate).",
    "train.validate_every": "Score the held-out videos every this many epochs (needs data.holdout_fraction > 0).",
    "train.select_by": "best.pt by held-out loss (loss) or by held-out average mAP / AR@AN AUC (metric).",
    "train.val_tiou": "tIoU thresholds of the held-out mAP when select_by is metric.",
    # -- postprocess
    "postprocess.method": "Suppression: hard NMS, linear or gaussian soft-NMS, or none.",
    "postprocess.iou_threshold": "tIoU above which hard / linear NMS suppresses or decays a candidate.",
    "postprocess.sigma": "gaussian soft-NMS: scores decay by exp(-IoU^2 / sigma).",
    "postprocess.class_agnostic": "Suppress across classes (otherwise within each class).",
    "postprocess.min_score": "Drop candidates scoring below this.",
    "postprocess.pre_nms_topk": "Best candidates per video kept before suppression.",
    "postprocess.max_per_video": "Detections per video kept after suppression (top-k).",
    "postprocess.voting": "Score voting: refine each kept segment by the candidates overlapping it.",
    "postprocess.voting_iou": "tIoU of the candidates that vote for a kept segment.",
    "postprocess.fusion_scores": "Video-level class scores (CUHK JSON, e.g. from detect classify) fused "
                                 "with class-agnostic candidates; null: no fusion.",
    "postprocess.fusion_topk": "Fusion: the best classes of a video each candidate is paired with.",
    "postprocess.raw_topk": "Candidates per sample stored by detect infer --raw (looser than pre_nms_topk, so "
                            "detect postprocess can loosen it; 0: no cap).",
    "postprocess.raw_min_score": "Lowest score stored by detect infer --raw (looser than min_score).",
}


@dataclass(frozen=True)
class KeyInfo:
    """One config key: dotted ``key``, ``type`` in words, ``value`` (plain data) and ``help``."""

    key: str
    type: str
    value: Any
    help: str

    @property
    def section(self) -> str:
        """The section a key belongs to (``""`` for top-level keys such as ``head``)."""
        return self.key.split(".")[0] if "." in self.key else ""


def config_keys(cfg: DetectConfig | None = None, head: str | None = None) -> list[KeyInfo]:
    """Every key of ``cfg`` (default: the defaults), in declaration order; ``head`` keeps only
    that head's section of the head sections."""
    cfg = DetectConfig() if cfg is None else cfg
    heads = head_sections()
    if head is not None and head not in heads:
        raise ConfigError(f"unknown head {head!r}; heads: {', '.join(heads)}")
    out: list[KeyInfo] = []
    for f, value, tp in _fields(cfg):
        if head is not None and f.name in heads and f.name != head:
            continue
        if dataclasses.is_dataclass(value):
            out += [KeyInfo(f"{f.name}.{g.name}", type_words(t), _plain(v), KEY_HELP.get(f"{f.name}.{g.name}", ""))
                    for g, v, t in _fields(value)]
        else:
            out.append(KeyInfo(f.name, type_words(tp), _plain(value), KEY_HELP.get(f.name, "")))
    return out


def head_sections() -> list[str]:
    """Names of the config sections that hold a head's settings (``mltpn``, ``talmts``, ...)."""
    return [f.name for f in dataclasses.fields(DetectConfig)
            if f.name not in CORE_SECTIONS and dataclasses.is_dataclass(f.default_factory)]


def type_words(tp: Any) -> str:
    """A type in words: ``int``, ``one of: a, b``, ``list of float``, ``int or null``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin is typing.Union:
        rest = [a for a in args if a is not type(None)]
        return " or ".join(type_words(a) for a in rest) + (" or null" if len(rest) < len(args) else "")
    if origin in (list, Sequence):
        return f"list of {type_words(args[0])}" if args else "list"
    if origin is tuple:
        return "pair of " + type_words(args[0]) if len(args) == 2 and args[0] == args[1] else \
            "tuple of " + ", ".join(type_words(a) for a in args)
    return getattr(tp, "__name__", str(tp))


def format_keys(keys: Sequence[KeyInfo], width: int = 100) -> str:
    """The terminal listing: one section title per section, then ``key = value  (type)`` and the
    meaning, wrapped and indented below."""
    lines: list[str] = []
    section = None
    for k in keys:
        if k.section != section:
            section = k.section
            lines.append(f"\n[{section}]  {_section_title(section)}" if section else "")
        lines.append(f"  {k.key} = {_yaml_value(k.value)}  ({k.type})")
        lines += textwrap.wrap(k.help, width, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines).strip("\n") + "\n"


def markdown_reference() -> str:
    """The page ``docs/config-reference.md``: one table per section, defaults only."""
    out = ["# Detect config reference", "",
           "Every key of a `tadkit detect train` config, with its type, default and meaning. "
           "Set a key in a YAML file (`configs/<head>/<dataset>.yaml`) or with `--set key=value`; "
           "`tadkit detect config --show [--head NAME]` prints the same list in the terminal, "
           "with the values a config file and `--set` give. See [configs.md](configs.md) for how "
           "files and overrides combine.", "",
           "Generated by `tadkit detect config --markdown > docs/config-reference.md`; do not edit by hand."]
    section = None
    for k in config_keys():
        if k.section != section:
            section = k.section
            out += ["", f"## `{section}` — {_section_title(section)}" if section else "## top level", "",
                    "| key | type | default | meaning |", "|---|---|---|---|"]
        cell = _yaml_value(k.value).replace("|", "\\|")
        out.append(f"| `{k.key}` | {k.type.replace('|', '/')} | `{cell}` | {k.help.replace('|', '/')} |")
    return "\n".join(out) + "\n"


@click.command("config")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML config to resolve (e.g. configs/mltpn/thumos14.yaml); defaults apply without one.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, as in detect train (repeatable).")
@click.option("--show", is_flag=True, help="List every key with its value, type and meaning.")
@click.option("--head", default=None, help="With --show: list only this head's section of the head sections.")
@click.option("--markdown", is_flag=True, help="Print the reference page docs/config-reference.md (defaults).")
def config_cmd(config_path: str | None, overrides: Sequence[str], show: bool, head: str | None,
               markdown: bool) -> None:
    """Print the resolved config as YAML, or list every key with its meaning (--show)."""
    if markdown:
        click.echo(markdown_reference(), nl=False)
        return
    cfg = load_config(DetectConfig, config_path, train_overrides(overrides))
    get_head(cfg.head)  # an unknown head is the error train would give, not a printed config
    if show:
        click.echo(format_keys(config_keys(cfg, head)), nl=False)
    else:
        if head is not None:
            raise click.UsageError("--head goes with --show")
        click.echo(yaml.safe_dump(to_dict(cfg), sort_keys=False), nl=False)


def train_overrides(overrides: Sequence[str], device: str | None = None) -> list[str]:
    """``--set`` items of ``detect train`` (and ``--device``) as config overrides: a bare
    post-processing key (``sigma=0.7``) means ``postprocess.sigma``, as in ``detect infer``."""
    keys = {f.name for f in dataclasses.fields(PostprocessConfig)}
    out = [f"postprocess.{item.strip()}" if item.partition("=")[0].strip() in keys else item for item in overrides]
    return out + ([f"train.device={device}"] if device else [])


# --------------------------------------------------------------------------- helpers
def _fields(obj: Any) -> list[tuple[dataclasses.Field, Any, Any]]:
    hints = typing.get_type_hints(type(obj))
    return [(f, getattr(obj, f.name), hints[f.name]) for f in dataclasses.fields(obj)]


def _section_title(name: str) -> str:
    """First sentence of a section's dataclass docstring (or its name)."""
    cls = type(getattr(DetectConfig(), name)) if name else DetectConfig
    doc = inspect.getdoc(cls) or ""
    if not doc or doc.startswith(cls.__name__ + "("):  # dataclass's generated signature
        return f"{name} settings"
    first = doc.split("\n\n")[0].replace("\n", " ").split(". ")[0].rstrip(".")
    return re.sub(r":\w+:`", "`", first.replace("``", "`"))   # reST roles and literals -> `x`


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
