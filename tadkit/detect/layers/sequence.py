"""Recurrent blocks over padded batches of temporal features.

:class:`MaskedLSTM` runs an LSTM over ``(B, C, T)`` features whose samples are
right-padded (``mask (B, T)`` True on the first ``L_b`` cells): sequences are
packed, so the padding never reaches a real step, in either direction. A
*backward* LSTM reads each sequence from its own last real cell to its first
(reversing the padded tensor instead would feed the padding first). Outputs on
padding are zero.

Used by MENet's MREM (separate forward and backward paths) and by the
HACS-2020 BMN base module and refine network (bidirectional).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

Direction = Literal["forward", "backward", "both"]


class MaskedLSTM(nn.Module):
    """LSTM over right-padded ``(B, C, T)`` sequences -> ``(B, out_dim, T)``, zero on padding.

    ``direction``: ``"forward"`` (first to last real cell), ``"backward"``
    (last to first, within each sample's length) or ``"both"`` (a
    bidirectional LSTM; the two directions' outputs are concatenated, forward
    first). ``out_dim = hidden × (2 if both else 1)``.
    """

    def __init__(self, in_dim: int, hidden: int, num_layers: int = 1, direction: Direction = "both",
                 dropout: float = 0.0):
        super().__init__()
        if direction not in ("forward", "backward", "both"):
            raise ValueError(f"direction must be forward, backward or both, got {direction!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        self.direction = direction
        self.out_dim = hidden * (2 if direction == "both" else 1)
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=num_layers, batch_first=True,
                            bidirectional=direction == "both", dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, _, t = x.shape
        lengths = (torch.full((b,), t, dtype=torch.long) if mask is None
                   else mask.sum(1).long().cpu())
        seq = x.transpose(1, 2)                                       # (B, T, C)
        if self.direction == "backward":
            seq = reverse_padded(seq, lengths)
        packed = pack_padded_sequence(seq, lengths.clamp(min=1), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=t)   # zeros past each length
        if self.direction == "backward":
            out = reverse_padded(out, lengths)
        if mask is not None:
            out = out * mask[..., None].to(out.dtype)                 # an empty sample stays zero
        return out.transpose(1, 2).contiguous()


def reverse_padded(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse every ``(B, T, ...)`` sequence within its own length; padding stays in place.

    Cell ``t < L_b`` of sample ``b`` receives cell ``L_b - 1 - t``; cells past
    ``L_b`` are unchanged. Applying it twice gives the input back.
    """
    b, t = seq.shape[:2]
    pos = torch.arange(t, device=seq.device).expand(b, t)
    length = lengths.to(seq.device)[:, None]
    index = torch.where(pos < length, length - 1 - pos, pos)
    index = index.reshape(b, t, *([1] * (seq.dim() - 2))).expand_as(seq)
    return seq.gather(1, index)


__all__ = ["MaskedLSTM", "reverse_padded"]
