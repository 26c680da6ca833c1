"""Boundary-peak candidates of BSN / BMN-style proposal generators.

A boundary (start or end) probability curve ``p (T,)`` over grid cells yields
candidate locations: local maxima (``p[t] > p[t-1]`` and ``p[t] > p[t+1]``)
and every location above ``rel_threshold × max p`` of its sample. Proposals
are the pairs of a candidate start and a later candidate end
(:func:`peak_pairs`). BMN also always admits the first cell as a start and the
last as an end (``include_first`` / ``include_last``).
"""
from __future__ import annotations

import torch


def boundary_peaks(prob: torch.Tensor, mask: torch.Tensor | None = None, rel_threshold: float = 0.5,
                   include_first: bool = False, include_last: bool = False) -> torch.Tensor:
    """Candidate locations of ``prob (B, T)`` -> bool ``(B, T)``.

    ``mask (B, T)`` (True on real cells, right-padded) limits each sample to
    its own cells: the threshold uses its own maximum, its last real cell is
    its last cell, padding is never a candidate. ``include_first`` /
    ``include_last`` make the first / last real cell a candidate.
    """
    if prob.dim() != 2:
        raise ValueError(f"boundary_peaks needs prob (B, T), got {tuple(prob.shape)}")
    b, t = prob.shape
    valid = torch.ones_like(prob, dtype=torch.bool) if mask is None else mask.bool()
    low = torch.finfo(prob.dtype).min if prob.is_floating_point() else -1
    p = prob.masked_fill(~valid, low)
    left = torch.cat([p.new_full((b, 1), low), p[:, :-1]], 1)
    right = torch.cat([p[:, 1:], p.new_full((b, 1), low)], 1)
    interior = torch.zeros_like(valid)
    interior[:, 1:] = valid[:, :-1]                      # has a real left neighbour
    has_right = torch.zeros_like(valid)
    has_right[:, :-1] = valid[:, 1:]
    interior &= has_right & valid
    peak = interior & (p > left) & (p > right)
    top = p.max(1, keepdim=True).values
    out = (peak | (p > rel_threshold * top)) & valid
    if include_first:
        out[:, 0] |= valid[:, 0]
    if include_last:
        last = valid.sum(1) - 1
        rows = torch.nonzero(last >= 0).flatten()
        out[rows, last[rows]] = True
    return out


def peak_pairs(start_ok: torch.Tensor, end_ok: torch.Tensor, max_duration: int | None = None) -> torch.Tensor:
    """Every ``(s, e)`` with ``start_ok[s]``, ``end_ok[e]``, ``s < e`` (and ``e - s <= max_duration``).

    ``start_ok``, ``end_ok``: bool ``(T,)`` -> long ``(N, 2)`` grid indices,
    ordered by start then end.
    """
    if start_ok.dim() != 1 or start_ok.shape != end_ok.shape:
        raise ValueError(f"peak_pairs needs two (T,) masks, got {tuple(start_ok.shape)} and {tuple(end_ok.shape)}")
    starts = torch.nonzero(start_ok).flatten()
    ends = torch.nonzero(end_ok).flatten()
    ok = ends[None, :] > starts[:, None]
    if max_duration is not None:
        ok &= (ends[None, :] - starts[:, None]) <= max_duration
    i, j = torch.nonzero(ok, as_tuple=True)
    return torch.stack([starts[i], ends[j]], 1)


__all__ = ["boundary_peaks", "peak_pairs"]
