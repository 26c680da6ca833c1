"""MENet's Movement Feature Extractor (MFE): a siamese R(2+1)D-34 with shared weights.

Paper: "Movement Enhancement toward Multi-Scale Video Feature Representation for Temporal
Action Detection" (Zhao, Wang, Zhao; ICCV 2023). For a clip ``x`` of ``T`` frames

* ``total  = F(x)``, the R(2+1)D-34 feature (512);
* ``static = F(s)`` where ``s`` repeats the clip's middle frame
  ``x[:, :, m]`` ``T`` times (``m = T // 2`` unless ``middle_index`` is set);
* ``movement = total - static``; output ``cat(movement, total)`` -> ``[B, 1024]``
  (movement first, as in the paper's ``F_MT``).

The model *is* an :class:`R2Plus1D34` (same weights, same checkpoint keys);
only the feature differs.

Efficient static path
---------------------
``s`` is constant in time, so every time slice of every activation is
determined by where it sits relative to the clip borders: after the stem only
1 distinct slice exists, and each temporal (3,1,1) convolution adds at most one
new distinct slice per border (the zero padding). :class:`TemporalRuns` keeps
only the distinct slices plus an index ``[T] -> slice``; convolutions are run
on the distinct input windows (gathered ``(k_t, 1, 1)`` neighbourhoods, the
same weights and arithmetic), pointwise layers on the distinct slices, the
residual sum on distinct index pairs. The result equals running the network
on the full static clip up to float32 summation order (tested to 1e-5
relative); at 32 frames roughly a third of the static path's work is saved
(layer1 runs on ~8 of 32 slices on average). ``static_path="naive"`` runs
the plain network on the repeated frame instead.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .r2plus1d import LEVELS, BasicBlock, R2Plus1D34, maps_to_outputs
from ._common import grid_pool, no_classifier_error

FEATURE_DIM = 1024
STATIC_PATHS = ("runs", "naive")


def build_mfe(num_classes: int = 400, middle_index: int | None = None,
              static_path: str = "runs") -> "MovementFeatureExtractor":
    """MFE on R(2+1)D-34: ``[B, 3, T, 112, 112]`` -> ``[B, 1024]`` = cat(movement, total)."""
    return MovementFeatureExtractor(num_classes=num_classes, middle_index=middle_index,
                                    static_path=static_path)


class MovementFeatureExtractor(R2Plus1D34):
    """R(2+1)D-34 whose feature is ``cat(F(x) - F(static(x)), F(x))``.

    ``middle_index``: the frame copied into the static clip (negative values
    count from the end); ``None`` -> ``T // 2`` (16 for 32 frames, 4 for 8).
    ``static_path``: ``"runs"`` (distinct-slice computation, default) or ``"naive"``.
    """

    def __init__(self, num_classes: int = 400, middle_index: int | None = None, static_path: str = "runs"):
        super().__init__(num_classes=num_classes)
        if static_path not in STATIC_PATHS:
            raise ValueError(f"static_path must be one of {STATIC_PATHS}, got {static_path!r}")
        self.middle_index = middle_index
        self.static_path = static_path

    # -- inference ----------------------------------------------------------------
    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W]`` -> ``[B, 1024]`` = ``cat(total - static, total)``."""
        total, static = self.total_and_static(x)
        return torch.cat([total - static, total], dim=1)

    def total_and_static(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two siamese features ``(F(x), F(static(x)))``, each ``[B, 512]``."""
        total = super().extract_features(x)
        static = self.static_outputs(self.middle_frame(x), x.shape[2])["feature"]
        return total, static

    def extract_outputs(self, x: torch.Tensor, grid: int = 0, levels: bool = False) -> dict:
        """Feature ``[B, 1024]``; ``"grid"`` ``[B, g, g, 1024]`` and ``"levels"``
        ``{layer_l: [B, 2*C_l, T_l]}`` are likewise ``cat(total - static, total)``."""
        total = maps_to_outputs(self.stages(x), grid, levels)
        static = self.static_outputs(self.middle_frame(x), x.shape[2], grid, levels)
        out = {"feature": torch.cat([total["feature"] - static["feature"], total["feature"]], dim=1)}
        if grid:
            out["grid"] = torch.cat([total["grid"] - static["grid"], total["grid"]], dim=3)
        if levels:
            out["levels"] = OrderedDict((k, torch.cat([v - static["levels"][k], v], dim=1))
                                        for k, v in total["levels"].items())
        return out

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``[B, C]`` (no softmax) of the clip path: the checkpoint's
        classifier reads the 512-d R(2+1)D feature ``F(x)``, not the 1024-d MFE output."""
        if self.fc is None:
            raise no_classifier_error("mfe")
        return self.fc(super().extract_features(x))

    def middle_frame(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W]`` -> the frame copied into the static clip, ``[B, 3, H, W]``."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"MFE expects [B, 3, T, H, W], got {tuple(x.shape)}")
        t = x.shape[2]
        m = t // 2 if self.middle_index is None else self.middle_index
        if not -t <= m < t:
            raise ValueError(f"MFE middle_index {m} is outside a {t}-frame clip")
        return x[:, :, m]

    def static_outputs(self, frame: torch.Tensor, num_frames: int, grid: int = 0,
                       levels: bool = False) -> dict:
        """Outputs (as :meth:`extract_outputs` of the plain R(2+1)D) of the clip
        that repeats ``frame`` ``[B, 3, H, W]`` ``num_frames`` times."""
        if self.static_path == "naive":
            clip = frame[:, :, None].expand(-1, -1, num_frames, -1, -1)
            return maps_to_outputs(self.stages(clip), grid, levels)
        runs = TemporalRuns(frame[:, :, None], torch.zeros(num_frames, dtype=torch.long, device=frame.device))
        runs = _run_sequential(self.stem, runs)
        maps: "OrderedDict[str, TemporalRuns]" = OrderedDict()
        for name in LEVELS:
            for block in getattr(self, name):
                runs = _run_block(block, runs)
            maps[name] = runs
        last = maps["layer4"]
        out: dict = {"feature": last.mean_thw()}
        if grid:
            out["grid"] = grid_pool(last.expand().mean(dim=2), grid)
        if levels:
            out["levels"] = OrderedDict((k, v.data.mean(dim=(3, 4))[:, :, v.index]) for k, v in maps.items())
        return out


@dataclass
class TemporalRuns:
    """A ``[B, C, T, H, W]`` tensor stored as distinct time slices.

    ``data``: ``[B, C, U, H, W]`` distinct slices; ``index``: ``[T]`` long,
    slice ``t`` of the full tensor is ``data[:, :, index[t]]``.
    """

    data: torch.Tensor
    index: torch.Tensor

    @property
    def num_frames(self) -> int:
        return int(self.index.numel())

    def expand(self) -> torch.Tensor:
        """The full ``[B, C, T, H, W]`` tensor."""
        return self.data[:, :, self.index]

    def map(self, fn) -> "TemporalRuns":
        """Apply a per-element / per-channel function (BN in eval, ReLU)."""
        return TemporalRuns(fn(self.data), self.index)

    def conv3d(self, conv: nn.Conv3d) -> "TemporalRuns":
        """``conv`` (any temporal kernel/stride/padding, zero padded) on the full tensor."""
        (kt, _, _), (st, sh, sw), (pt, ph, pw) = conv.kernel_size, conv.stride, conv.padding
        if conv.groups != 1 or conv.dilation != (1, 1, 1) or not isinstance(pt, int):
            raise NotImplementedError("TemporalRuns supports plain, undilated, ungrouped convolutions")
        t_out = (self.num_frames + 2 * pt - kt) // st + 1
        dev = self.index.device
        taps = torch.arange(t_out, device=dev)[:, None] * st + torch.arange(kt, device=dev) - pt  # [t_out, kt]
        inside = (taps >= 0) & (taps < self.num_frames)
        zero = self.data.shape[2]                         # id of an all-zero padding slice
        ids = torch.where(inside, self.index[taps.clamp(0, self.num_frames - 1)], torch.full_like(taps, zero))
        windows, inverse = torch.unique(ids, dim=0, return_inverse=True)     # [U', kt], [t_out]
        b, c, _, h, w = self.data.shape
        padded = torch.cat([self.data, self.data.new_zeros(b, c, 1, h, w)], dim=2)
        u = windows.shape[0]
        gathered = padded[:, :, windows.reshape(-1)].reshape(b, c, u, kt, h, w)
        gathered = gathered.permute(0, 2, 1, 3, 4, 5).reshape(b * u, c, kt, h, w)
        out = F.conv3d(gathered, conv.weight, conv.bias, stride=(1, sh, sw), padding=(0, ph, pw))
        out = out.reshape(b, u, out.shape[1], out.shape[3], out.shape[4]).permute(0, 2, 1, 3, 4)
        return TemporalRuns(out.contiguous(), inverse)

    def add(self, other: "TemporalRuns") -> "TemporalRuns":
        """Element-wise sum of two tensors of the same full shape."""
        pairs, inverse = torch.unique(torch.stack([self.index, other.index], dim=1), dim=0, return_inverse=True)
        return TemporalRuns(self.data[:, :, pairs[:, 0]] + other.data[:, :, pairs[:, 1]], inverse)

    def mean_thw(self) -> torch.Tensor:
        """Mean over T, H, W of the full tensor -> ``[B, C]``."""
        counts = torch.bincount(self.index, minlength=self.data.shape[2]).to(self.data.dtype)
        per_slice = self.data.mean(dim=(3, 4))           # [B, C, U]
        return (per_slice * counts).sum(dim=2) / self.num_frames


def _run_sequential(seq: nn.Sequential, runs: TemporalRuns) -> TemporalRuns:
    for m in seq:
        if isinstance(m, nn.Conv3d):
            runs = runs.conv3d(m)
        elif isinstance(m, nn.Sequential):
            runs = _run_sequential(m, runs)
        elif isinstance(m, (nn.BatchNorm3d, nn.ReLU)):
            if isinstance(m, nn.BatchNorm3d) and m.training:
                raise RuntimeError("the static path needs BatchNorm in eval mode (call model.eval())")
            runs = runs.map(F.relu if isinstance(m, nn.ReLU) else m)
        else:
            raise NotImplementedError(f"TemporalRuns cannot run {type(m).__name__}")
    return runs


def _run_block(block: BasicBlock, runs: TemporalRuns) -> TemporalRuns:
    residual = runs if block.downsample is None else _run_sequential(block.downsample, runs)
    out = _run_sequential(block.conv2, _run_sequential(block.conv1, runs))
    return out.add(residual).map(F.relu)
