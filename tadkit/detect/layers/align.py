"""1-D RoI align (segment align): a segment's features as a fixed number of bins.

Used wherever a head needs a fixed-size feature of a variable-length segment:
SP-TAD's *SoI Align*, MENet's *SAlign*, the RoI align of the HACS-2020 refine
network. Pure torch, vectorised over all segments of a batch, differentiable
with respect to the features and the segment positions.

Positions are grid units of the input ``x (B, C, T)``: cell ``i`` has centre
``i`` (see :mod:`tadkit.timeline`). Each sample is read as the piecewise-linear
function through its cell centres, over its own valid cells ``0 .. L_b - 1``
(``lengths``; padding is never read):

* a point at ``p`` in ``[0, L_b - 1]`` interpolates linearly between cells
  ``floor(p)`` and ``floor(p) + 1``;
* a point in ``[-1, 0)`` or ``(L_b - 1, L_b]`` reads the end cell;
* a point further out reads 0.

(This is the rule of torchvision's ``roi_align`` with ``aligned=True`` on
pixel-centred coordinates, in one dimension.) A segment ``[s, e]`` is cut into
``bins`` equal bins; bin ``k`` is the mean of ``samples`` evenly spaced points
inside it, at ``s + (k + (j + ½) / samples) · (e − s) / bins`` for
``j = 0 .. samples − 1``. With many samples a bin tends to the integral average
of the function over the bin.
"""
from __future__ import annotations

import torch


def segment_align(x: torch.Tensor, segments: torch.Tensor, batch_index: torch.Tensor, bins: int,
                  samples: int = 2, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Features of ``segments (K, 2)`` (grid units) of samples ``batch_index (K,)`` -> ``(K, C, bins)``.

    ``x (B, C, T)``; ``lengths (B,)`` valid cells per sample (default ``T``).
    Reversed segments (``e < s``) are read backwards; a zero-length segment
    gives ``bins`` copies of the value at its position.
    """
    if x.dim() != 3:
        raise ValueError(f"segment_align needs x (B, C, T), got {tuple(x.shape)}")
    if segments.dim() != 2 or segments.shape[-1] != 2:
        raise ValueError(f"segment_align needs segments (K, 2), got {tuple(segments.shape)}")
    if batch_index.shape != segments.shape[:1]:
        raise ValueError(f"batch_index {tuple(batch_index.shape)} does not match segments {tuple(segments.shape)}")
    if bins < 1 or samples < 1:
        raise ValueError(f"bins and samples must be at least 1, got {bins} and {samples}")
    b, c, t = x.shape
    k = segments.shape[0]
    if k == 0:
        return x.new_zeros(0, c, bins)
    batch_index = batch_index.long()
    n = bins * samples
    frac = (torch.arange(n, device=x.device, dtype=segments.dtype) + 0.5) / n          # (n,)
    start, end = segments[:, :1], segments[:, 1:]
    pos = start + frac * (end - start)                                                  # (K, n)
    if lengths is None:
        length = torch.full((k, 1), float(t), device=x.device, dtype=pos.dtype)
    else:
        length = lengths.to(device=x.device, dtype=pos.dtype)[batch_index][:, None].clamp(1, t)
    inside = (pos >= -1.0) & (pos <= length)
    p = torch.minimum(pos.clamp(min=0.0), length - 1)
    lo = p.detach().floor().clamp(max=t - 1)
    w = (p - lo).to(x.dtype)
    lo = lo.long()
    hi = torch.minimum(lo + 1, (length - 1).long())
    table = x.transpose(1, 2).reshape(b * t, c)                                         # (B·T, C)
    base = (batch_index * t)[:, None]
    values = table[base + lo] * (1 - w)[..., None] + table[base + hi] * w[..., None]    # (K, n, C)
    values = values * inside.to(x.dtype)[..., None]
    return values.reshape(k, bins, samples, c).mean(2).transpose(1, 2)


def segment_align_batched(x: torch.Tensor, segments: torch.Tensor, bins: int, samples: int = 2,
                          lengths: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`segment_align` of ``segments (B, N, 2)``, segment ``n`` of sample ``b`` -> ``(B, N, C, bins)``."""
    if segments.dim() != 3 or segments.shape[0] != x.shape[0] or segments.shape[-1] != 2:
        raise ValueError(f"segment_align_batched needs segments (B, N, 2) with B = {x.shape[0]}, "
                         f"got {tuple(segments.shape)}")
    b, n = segments.shape[:2]
    index = torch.arange(b, device=segments.device).repeat_interleave(n)
    out = segment_align(x, segments.reshape(b * n, 2), index, bins, samples, lengths)
    return out.reshape(b, n, x.shape[1], bins)


__all__ = ["segment_align", "segment_align_batched"]
