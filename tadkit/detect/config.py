"""Typed configuration of the detect stage (loaded with :func:`tadkit.config.load_config`).

One :class:`DetectConfig` describes a whole run: which head and its settings,
how videos become training samples, optimiser, schedule, training loop and
post-processing. ``configs/<head>/<dataset>.yaml`` holds the papers' settings;
every key can be changed from the command line with ``--set a.b=value``.

Units: lengths in the data section are snippet-grid cells; learning-rate
schedule positions are epochs. ``@config_ranges`` declares each numeric key's
allowed range (checked when a config is loaded or built); a ``__post_init__``
checks only what ties keys together.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from tadkit.config import config_ranges


@config_ranges(embed_dim="[1, inf)", transform_k1="[1, inf)", transform_k2="[1, inf)",
               thm_channels="[1, inf)", thm_out_channels="[1, inf)", num_thms="[1, inf)",
               num_scales="[1, inf)", mfm_reduction="[1, inf)", head_squeeze="[1, inf)",
               num_anchors="[1, inf)", anchor_ratios="(0, inf)", anchor_min_ratio="(0, inf)",
               anchor_max_ratio="(0, inf)", anchor_base="(0, inf)", pos_iou="(0, 1]",
               neg_pos_ratio="[0, inf)", cls_weight="[0, inf)", conf_weight="[0, inf)",
               reg_weight="[0, inf)", dropout="[0, 1)")
@dataclass
class MLTPNConfig:
    """Settings of the MLTPN head (Wang et al.; ``tadkit/detect/heads/mltpn.py``).

    ``embed_dim`` is the width ``c`` of the paper's ``t × c`` map after the two
    stride-2 temporal convs; the transform module, the THMs and the MFM work on
    ``channels × t × c`` maps. ``num_scales`` pyramid levels have strides 4, 8,
    16, ... input cells. Anchors: ``num_anchors`` widths per cell, ``anchor_base
    × stride × ratio`` cells wide, ratios geometric in ``[anchor_min_ratio,
    anchor_max_ratio]`` unless ``anchor_ratios`` lists them. ``classifier``:
    ``softmax`` over ``C+1`` classes (the paper's) or one ``sigmoid`` per class;
    both train every class of ground truths sharing an anchor's segment.
    """

    embed_dim: int = 256
    transform_k1: int = 64
    transform_k2: int = 64
    upsample: Literal["nearest", "linear"] = "nearest"
    thm_channels: int = 128
    thm_out_channels: int = 128
    num_thms: int = 6
    num_scales: int = 5
    mfm_reduction: int = 16
    head_squeeze: int = 4
    num_anchors: int = 7
    anchor_ratios: list[float] = field(default_factory=list)
    anchor_min_ratio: float = 0.5
    anchor_max_ratio: float = 4.0
    anchor_base: float = 1.0
    pos_iou: float = 0.5
    neg_pos_ratio: float = 3.0
    iou_target: Literal["prediction", "anchor"] = "prediction"
    cls_weight: float = 1.0
    conf_weight: float = 10.0
    reg_weight: float = 0.3
    score: Literal["product", "class"] = "product"
    classifier: Literal["softmax", "sigmoid"] = "softmax"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.anchor_ratios and len(self.anchor_ratios) != self.num_anchors:
            raise ValueError(f"anchor_ratios lists {len(self.anchor_ratios)} ratios but num_anchors is "
                             f"{self.num_anchors}")


@config_ranges(dim="[1, inf)", num_levels="[1, inf)", first_stride="[1, inf)", grid_size="[0, inf)",
               grid_dim="[0, inf)", patch_size="[1, inf)", stt_dim="[1, inf)", stt_spatial_layers="[0, inf)",
               stt_temporal_layers="[0, inf)", fsa_dim="[1, inf)", fsa_layers="[0, inf)",
               num_heads="[1, inf)", mlp_ratio="(0, inf)", tower_layers="[1, inf)", boundary_dim="[1, inf)",
               bp_inner="[0, inf)", bp_outer="[0, inf)", bp_min="[0, inf)", refine_iou="[0, 1)",
               alpha="[0, inf)", beta="[0, inf)", focal_alpha="[0, 1]", focal_gamma="[0, inf)",
               prior_prob="(0, 1)", dropout="[0, 1)")
@dataclass
class TALMTSConfig:
    """Settings of the TAL-MTS head (Gao et al.; ``tadkit/detect/heads/talmts.py``).

    Pyramid: ``num_levels`` levels of ``dim`` channels with strides
    ``first_stride · 2^l`` input cells. Ablation switches: ``rfp`` (top-down
    refinement), ``stt`` (spatial-temporal transformer feeding classification),
    ``fsa`` (frame-level patch self-attention feeding refinement). Spatial
    tokens: ``grid_size`` is the side ``g`` of the features' per-snippet grid
    (0: no grid, one token per snippet), ``grid_dim`` its channels (0: the
    feature dim), ``patch_size`` FSA's patch side in grid cells. Boundary
    pooling regions reach ``bp_inner`` / ``bp_outer`` of the coarse length
    inside / outside each boundary, at least ``bp_min`` cells of the pooled
    feature (AFSD: ¼, 1/10, one cell); the quality ``ε`` is predicted from the
    ``quality_branch`` (``loc``, as AFSD, or ``cls``). Loss (eq. 7): ``alpha``
    weighs the localisation terms, ``beta`` the quality BCE; refinement
    positives have coarse tIoU > ``refine_iou``. ``stored_levels``: the lowest
    pyramid levels are the stored backbone levels ``data.levels`` names
    (finest first; the paper: I3D Mixed_4f and Mixed_5c) instead of strided
    convs over the snippet features.
    """

    dim: int = 512
    num_levels: int = 6
    first_stride: int = 4
    rfp: bool = True
    stt: bool = True
    fsa: bool = True
    stored_levels: bool = False
    grid_size: int = 0
    grid_dim: int = 0
    patch_size: int = 1
    stt_dim: int = 256
    stt_spatial_layers: int = 1
    stt_temporal_layers: int = 2
    fsa_dim: int = 256
    fsa_layers: int = 1
    num_heads: int = 8
    mlp_ratio: float = 2.0
    tower_layers: int = 1
    boundary_dim: int = 128
    bp_inner: float = 0.25
    bp_outer: float = 0.1
    bp_min: float = 1.0
    quality_branch: Literal["loc", "cls"] = "loc"
    refine_iou: float = 0.5
    alpha: float = 10.0
    beta: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    prior_prob: float = 0.01
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.first_stride & (self.first_stride - 1):
            raise ValueError(f"first_stride must be a power of two, got {self.first_stride}")
        if self.grid_size and self.grid_size % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} does not divide grid_size {self.grid_size}")
        for name in ("stt_dim", "fsa_dim"):
            if getattr(self, name) % self.num_heads:
                raise ValueError(f"{name}={getattr(self, name)} is not divisible by num_heads={self.num_heads}")


@config_ranges(hidden_1d="[1, inf)", hidden_2d="[1, inf)", hidden_3d="[1, inf)", conv_groups="[1, inf)",
               lstm_layers="[0, inf)", max_duration="[0, inf)", num_samples="[1, inf)", samples_per_bin="[1, inf)",
               context="[0, inf)", boundary_width="(0, inf)", cls_iou="(0, 1)", reg_high="[0, 1)",
               reg_low="[0, 1)", reg_weight="[0, inf)", peak_threshold="[0, 1]")
@dataclass
class BMNConfig:
    """Settings of the BMN head (Lin et al.; HACS-2020 variant; ``tadkit/detect/heads/bmn.py``).

    Widths: ``hidden_1d`` (base module, TEM, PEM's 1-D conv), ``hidden_3d``
    (the BM layer's fused ``(N, 1, 1)`` convolution), ``hidden_2d`` (the map
    convolutions); ``conv_groups`` groups the base / TEM convolutions.
    ``lstm_layers`` Bi-LSTM layers in the base module (HACS-2020: 0, 1, 2).
    Map: ``max_duration`` rows ``D`` (0: the sample length ``T``; entry ``[d,
    s]`` is the proposal ``[s, s + d]`` in grid units), BM sampling
    ``num_samples`` bins of ``samples_per_bin`` points over the proposal
    widened by ``context`` × its length on each side. Labels: boundary regions
    ``boundary_width`` cells wide; PEM classification positives have IoU >
    ``cls_iou``; PEM regression samples IoU > ``reg_high`` entries and as
    many of (``reg_low``, ``reg_high``] and [0, ``reg_low``].
    ``L = L_tem + reg_weight · L_reg + L_cls``. Proposals: boundary peaks
    (local maxima or above ``peak_threshold`` × the maximum; ``include_ends``
    admits the first / last cell), score ``p_s p_e p_c p_r`` (``score:
    product``) or ``p_s p_e sqrt(p_c p_r)`` (``score: sqrt``).
    """

    hidden_1d: int = 256
    hidden_2d: int = 128
    hidden_3d: int = 512
    conv_groups: int = 4
    lstm_layers: int = 0
    max_duration: int = 0
    num_samples: int = 32
    samples_per_bin: int = 3
    context: float = 0.5
    boundary_width: float = 3.0
    cls_iou: float = 0.9
    reg_high: float = 0.7
    reg_low: float = 0.3
    reg_weight: float = 10.0
    peak_threshold: float = 0.5
    include_ends: bool = False
    score: Literal["product", "sqrt"] = "product"

    def __post_init__(self) -> None:
        if self.hidden_1d % self.conv_groups:
            raise ValueError(f"hidden_1d={self.hidden_1d} is not divisible by conv_groups={self.conv_groups}")
        if self.lstm_layers and self.hidden_1d % 2:
            raise ValueError(f"a Bi-LSTM base module needs an even hidden_1d, got {self.hidden_1d}")
        if self.num_samples * self.samples_per_bin < 2:
            raise ValueError("the BM layer needs num_samples × samples_per_bin >= 2")
        if self.reg_low > self.reg_high:
            raise ValueError(f"need reg_low <= reg_high, got {self.reg_low} > {self.reg_high}")


@config_ranges(hidden="[1, inf)", stage_ious="(0, 1)", transformer_layers="[1, inf)", num_heads="[1, inf)",
               mlp_ratio="(0, inf)", bins="[1, inf)", roi_samples="[1, inf)", roi_context="[0, inf)",
               fc_dim="[1, inf)", train_proposals="[0, inf)", iou_weight="[0, inf)", reg_weight="[0, inf)",
               action_weight="[0, inf)", dropout="[0, 1)")
@dataclass
class RefineConfig:
    """Settings of the HACS-2020 cascade Refine Network (``tadkit/detect/heads/refine.py``).

    ``len(stage_ious)`` refine modules (the paper: 3 with positive IoU 0.5,
    0.6, 0.7), each over the video features with ``hidden`` channels.
    Ablation switches: ``action_score`` (supervised per-cell actionness),
    ``transformer`` (global encoder of ``transformer_layers`` layers,
    ``num_heads`` heads, before RoI Align), ``lstm`` (Bi-LSTM over the RoI
    bins), ``non_local`` (a non-local block over the RoI bins). RoI Align
    reads ``bins`` bins (``roi_samples`` points each) over the proposal
    widened by ``roi_context`` × its length on each side; training draws
    ``train_proposals`` of each video's proposals at random every step (0:
    all of them). Loss per module:
    ``iou_weight`` · BCE(IoU) + ``reg_weight`` · Smooth-L1(offsets of the
    positives) + ``action_weight`` · balanced BCE(actionness). Scores:
    ``iou`` (the last module's IoU) or ``product`` (× the input proposal's
    score).
    """

    hidden: int = 256
    stage_ious: list[float] = field(default_factory=lambda: [0.5, 0.6, 0.7])
    action_score: bool = True
    transformer: bool = True
    transformer_layers: int = 1
    num_heads: int = 4
    mlp_ratio: float = 2.0
    lstm: bool = True
    non_local: bool = True
    bins: int = 16
    roi_samples: int = 2
    roi_context: float = 0.25
    fc_dim: int = 256
    train_proposals: int = 0
    iou_weight: float = 1.0
    reg_weight: float = 1.0
    action_weight: float = 1.0
    score: Literal["iou", "product"] = "iou"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not self.stage_ious:
            raise ValueError("stage_ious must list one IoU threshold per refine module")
        if self.transformer and self.hidden % self.num_heads:
            raise ValueError(f"hidden={self.hidden} is not divisible by num_heads={self.num_heads}")
        if self.lstm and self.hidden % 2:
            raise ValueError(f"the RoI Bi-LSTM needs an even hidden, got {self.hidden}")


@config_ranges(dim="[1, inf)", local_kernel="[1, inf)", num_layers="[1, inf)", single_layer="[-1, inf)",
               scale_ranges="[0, 1]", sampling_ratios="(0, 1]", generalization_epochs="[0, inf)",
               max_duration="(0, 1]", align_bins="[1, inf)", align_samples="[1, inf)", align_context="[0, inf)",
               asp_dim="[1, inf)", boundary_radius="[0, inf)", pos_iou="(0, 1)", lambda_reg="[0, inf)",
               lambda_offset="[0, inf)", peak_threshold="[0, 1]", max_candidates="[1, inf)")
@dataclass
class MENetConfig:
    """Settings of the MENet head (Zhao, Wang, Zhao; ``tadkit/detect/heads/menet.py``).

    Widths: ``dim`` channels after the 1-D fuse conv, in MREM and SFPN;
    ``asp_dim`` the hidden width of the anchor score predictors. Ablation
    switches: ``mrem`` (False: the Base model's temporal conv instead of the
    local / forward-LSTM / backward-LSTM paths), ``downsample`` (``ushape``:
    SFPN; ``avgpool`` / ``conv``: a plain pyramid down-sampled by average
    pooling / stride-2 convs), ``single_layer`` (``-1``: the pyramid; ``i``:
    only layer ``i``, ``T / 2^i`` steps, responsible for every scale),
    ``sampling`` (``two_stage``: ``generalization_epochs`` of Generalization,
    then Specialization; or one strategy throughout; ``bias``: only anchors
    inside a layer's range). Layer ``i`` is responsible for anchor scales
    (duration / sample length) in ``scale_ranges[i]`` and samples
    ``sampling_ratios[i]`` of its anchors in training. Anchors are at most
    ``max_duration`` of a layer's length; SAlign reads ``align_bins`` bins
    (``align_samples`` points each) over the anchor widened by
    ``align_context`` of its length on each side. Labels: boundary regions of
    ``± boundary_radius`` layer steps; IoU / offset positives above
    ``pos_iou``. Loss weights ``lambda_reg`` (λ1, the L2 term) and
    ``lambda_offset`` (λ2). Inference: boundary peaks above
    ``peak_threshold`` × the maximum, at most ``max_candidates`` anchors per
    layer and sample.
    """

    dim: int = 256
    mrem: bool = True
    local_kernel: int = 3
    num_layers: int = 3
    downsample: Literal["ushape", "avgpool", "conv"] = "ushape"
    single_layer: int = -1
    scale_ranges: list[list[float]] = field(default_factory=lambda: [[0.0, 0.15], [0.10, 0.75], [0.50, 1.0]])
    sampling_ratios: list[float] = field(default_factory=lambda: [0.5, 0.4, 0.9])
    sampling: Literal["two_stage", "generalization", "specialization", "bias"] = "two_stage"
    generalization_epochs: int = 7
    max_duration: float = 1.0
    align_bins: int = 16
    align_samples: int = 2
    align_context: float = 0.5
    asp_dim: int = 256
    boundary_radius: float = 1.5
    pos_iou: float = 0.9
    lambda_reg: float = 5.0
    lambda_offset: float = 10.0
    peak_threshold: float = 0.5
    max_candidates: int = 1000

    def __post_init__(self) -> None:
        if not -1 <= self.single_layer < self.num_layers:
            raise ValueError(f"single_layer must be -1 (the pyramid) or a layer 0..{self.num_layers - 1}, "
                             f"got {self.single_layer}")
        if len(self.scale_ranges) != self.num_layers or len(self.sampling_ratios) != self.num_layers:
            raise ValueError(f"scale_ranges and sampling_ratios need one entry per layer ({self.num_layers}); got "
                             f"{len(self.scale_ranges)} and {len(self.sampling_ratios)}")
        for lo_hi in self.scale_ranges:
            if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
                raise ValueError(f"each scale range is [min, max] with min <= max, got {lo_hi}")
        if self.local_kernel % 2 == 0:
            raise ValueError(f"local_kernel must be odd, got {self.local_kernel}")


@config_ranges(dim="[1, inf)", num_levels="[1, inf)", num_proposals="[1, inf)", num_heads="[1, inf)",
               attn_heads="[1, inf)", eta="(0, inf)", soi_bins="[1, inf)", soi_samples="[1, inf)",
               dynamic_dim="[1, inf)", ffn_dim="[1, inf)", dropout="[0, 1)", cls_weight="[0, inf)",
               l1_weight="[0, inf)", giou_weight="[0, inf)", act_weight="[0, inf)", focal_alpha="[0, 1]",
               focal_gamma="[0, inf)", prior_prob="(0, 1)")
@dataclass
class SPTADConfig:
    """Settings of the SP-TAD head (Wu et al.; ``tadkit/detect/heads/sptad.py``).

    ``tfpn``: the paper's Table 5 inputs — ``inter`` (pyramid of the backbone
    levels, the default), ``high`` (pyramid built from the last level) or
    ``single`` (the last level alone); ``inter`` without stored levels falls
    back to ``single``. The pyramid has ``num_levels`` levels of ``dim``
    channels (``inter``: the backbone levels, then max-pooled ones).
    ``num_proposals`` learnable proposals (normalised centre and width,
    ``proposal_init`` ``random`` or ``full``) pass ``num_heads`` iterative
    detection heads: multi-head self-attention (``attn_heads``), SoI Align
    of each proposal widened by ``length / eta`` on each side to ``soi_bins``
    bins, dynamic interaction (``dim × dynamic_dim``, ``dynamic_dim × dim``),
    FFN (``ffn_dim``). ``cls_head``: the clip-level action classification
    head, multiplied into the scores. Loss: Hungarian matching and
    ``cls_weight · focal + l1_weight · L1 + giou_weight · (1 − GIoU)`` on every
    head, plus ``act_weight · BCE`` of the clip-level head.
    """

    dim: int = 256
    tfpn: Literal["inter", "high", "single"] = "inter"
    num_levels: int = 4
    num_proposals: int = 50
    proposal_init: Literal["random", "full"] = "random"
    num_heads: int = 4
    attn_heads: int = 8
    eta: float = 5.0
    soi_bins: int = 16
    soi_samples: int = 2
    dynamic_dim: int = 64
    ffn_dim: int = 2048
    dropout: float = 0.0
    cls_head: bool = True
    cls_weight: float = 2.0
    l1_weight: float = 5.0
    giou_weight: float = 2.0
    act_weight: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    prior_prob: float = 0.01

    def __post_init__(self) -> None:
        if self.dim % self.attn_heads:
            raise ValueError(f"dim={self.dim} is not divisible by attn_heads={self.attn_heads}")


@config_ranges(length="[1, inf)", max_length="[1, inf)", train_overlap="[0, 1)", infer_overlap="[0, 1)",
               min_ioi="[0, 1]", holdout_fraction="[0, 1)", num_workers="[0, inf)", train_stride="[1, inf)",
               infer_stride="[1, inf)", infer_batch_size="[1, inf)", proposals_topk="[1, inf)")
@dataclass
class DataConfig:
    """How videos become samples (see :mod:`tadkit.data.datasets`).

    ``mode``: ``full`` (whole sequence, padded per batch; training crops
    videos longer than ``max_length``), ``resize`` (linearly resized to
    ``length`` cells) or ``window`` (sliding windows of ``length`` cells,
    starting every ``train_stride`` / ``infer_stride`` snippets when set, else
    with ``train_overlap`` / ``infer_overlap``). Training windows keep ground
    truth with at least ``min_ioi`` of it inside and skip empty windows when
    ``drop_empty``. ``holdout_fraction`` of the training videos are held out
    for model selection; the evaluation subset is never looked at in training.

    Inputs (:mod:`tadkit.data.sources`): ``streams`` keeps some of the
    stored streams (``[rgb]``, ``[flow]``; empty or ``[both]``: all),
    ``channels`` keeps ``[start, end)`` ranges of the kept channels,
    ``levels`` names stored backbone levels for heads that read them
    (``optional_levels``: a store with no stored level at all runs without
    them, for heads with a single-level fallback), ``normalize``
    standardises every channel with statistics of the training videos
    (stored in the run). ``infer_batch_size``: samples per inference
    batch. ``proposals_topk``: proposals per video a chained run
    (``--from-run``) takes from its source.
    """

    mode: Literal["full", "resize", "window"] = "window"
    length: int = 256
    max_length: Optional[int] = None
    train_overlap: float = 0.25
    infer_overlap: float = 0.5
    train_stride: Optional[int] = None
    infer_stride: Optional[int] = None
    min_ioi: float = 0.75
    drop_empty: bool = True
    train_subset: str = "training"
    test_subset: str = "validation"
    holdout_fraction: float = 0.0
    num_workers: int = 0
    streams: list[str] = field(default_factory=list)
    channels: list[list[int]] = field(default_factory=list)
    levels: list[str] = field(default_factory=list)
    optional_levels: bool = False
    normalize: bool = True
    infer_batch_size: int = 16
    proposals_topk: int = 100


@config_ranges(lr="(0, inf)", momentum="[0, 1)", weight_decay="[0, inf)", betas="[0, 1)", lr_mult="[0, inf)")
@dataclass
class OptimConfig:
    """Optimiser. ``no_decay`` lists parameter kinds without weight decay (``norm``,
    ``bias``, ``embedding``); ``lr_mult`` maps a module-name prefix of the head to a
    learning-rate multiplier (``{backbone: 0.1}``). A head may define its own groups."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    no_decay: list[str] = field(default_factory=list)
    lr_mult: dict[str, float] = field(default_factory=dict)


@config_ranges(milestones="[0, inf)", gamma="(0, inf)", warmup_epochs="[0, inf)", min_lr_ratio="[0, 1]")
@dataclass
class ScheduleConfig:
    """Per-epoch learning-rate schedule with optional linear warm-up (in epochs)."""

    name: Literal["constant", "step", "cosine"] = "step"
    milestones: list[int] = field(default_factory=lambda: [15])
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0


@config_ranges(epochs="[1, inf)", batch_size="[1, inf)", seed="[0, inf)", grad_clip="[0, inf)",
               ema_decay="[0, 1)", checkpoint_every="[1, inf)", log_every="[0, inf)", accumulate="[1, inf)",
               validate_every="[1, inf)", val_tiou="[0, 1]")
@dataclass
class TrainConfig:
    """The training loop.

    ``accumulate``: batches per optimiser step (gradient accumulation; the
    effective batch is ``batch_size × accumulate``). Model selection with
    ``data.holdout_fraction > 0``: every ``validate_every`` epochs the held-out
    videos are scored; ``select_by: loss`` keeps the lowest held-out loss in
    ``best.pt``, ``select_by: metric`` the highest average mAP over
    ``val_tiou`` (AR@AN's AUC for class-agnostic heads), computed in-process
    with the run's post-processing.
    """

    epochs: int = 20
    batch_size: int = 16
    seed: int = 0
    grad_clip: float = 0.0
    amp: bool = True
    ema: bool = False
    ema_decay: float = 0.999
    checkpoint_every: int = 1
    log_every: int = 20
    device: str = "auto"
    accumulate: int = 1
    validate_every: int = 1
    select_by: Literal["loss", "metric"] = "loss"
    val_tiou: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7])


@config_ranges(iou_threshold="[0, 1]", sigma="(0, inf)", min_score="[0, 1]", pre_nms_topk="[1, inf)",
               max_per_video="[1, inf)", voting_iou="[0, 1]", fusion_topk="[1, inf)", raw_topk="[0, inf)",
               raw_min_score="[0, 1]")
@dataclass
class PostprocessConfig:
    """Post-processing (``tadkit.detect.postprocess``); written into every predictions file.

    ``method``: ``hard`` NMS, ``linear`` / ``gaussian`` soft-NMS or ``none``;
    ``sigma`` is the Gaussian's σ in ``exp(-IoU² / σ)``. ``max_per_video`` is
    the top-k per video. ``fusion_scores`` names a CUHK-format file of
    video-level class scores: candidates become class-agnostic proposals fused
    with the ``fusion_topk`` best classes (score ``sqrt(cls · proposal)``).
    ``raw_topk`` / ``raw_min_score``: the looser per-sample cap of the raw
    candidates ``infer --raw`` stores (so ``detect postprocess`` can loosen
    ``pre_nms_topk`` / ``min_score`` later).
    """

    method: Literal["none", "hard", "linear", "gaussian"] = "hard"
    iou_threshold: float = 0.2
    sigma: float = 0.5
    class_agnostic: bool = False
    min_score: float = 0.001
    pre_nms_topk: int = 2000
    max_per_video: int = 200
    voting: bool = False
    voting_iou: float = 0.7
    fusion_scores: Optional[str] = None
    fusion_topk: int = 2
    raw_topk: int = 5000
    raw_min_score: float = 0.0


@dataclass
class DetectConfig:
    """A whole detection run. ``head`` names the registered head whose section is used."""

    head: str = "mltpn"
    mltpn: MLTPNConfig = field(default_factory=MLTPNConfig)
    talmts: TALMTSConfig = field(default_factory=TALMTSConfig)
    menet: MENetConfig = field(default_factory=MENetConfig)
    bmn: BMNConfig = field(default_factory=BMNConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    sptad: SPTADConfig = field(default_factory=SPTADConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
