"""Test oracle for pyramid geometry: where a chain of strided convolutions centres each output cell."""
from __future__ import annotations

import torch


def receptive_centres(convs: list[tuple[int, int, int]], length: int) -> dict[int, float]:
    """Centre (input cells) of each output cell's receptive field through ``(kernel, stride, padding)`` convs.

    Backpropagates from every output cell of a chain of all-ones 1-D
    convolutions to an input of ``length`` cells and takes the middle of the
    cells that receive a gradient. Only cells whose receptive field lies wholly
    inside the input are returned (padding would cut the others).
    """
    x = torch.zeros(1, 1, length, requires_grad=True)
    y = x
    for k, s, p in convs:
        y = torch.nn.functional.conv1d(y, torch.ones(1, 1, k), stride=s, padding=p)
    out = {}
    for j in range(y.shape[-1]):
        grad, = torch.autograd.grad(y[0, 0, j], x, retain_graph=True)
        idx = grad[0, 0].nonzero().flatten()
        if idx.min() > 0 and idx.max() < length - 1:
            out[j] = float(idx.min() + idx.max()) / 2
    return out


def conv_geometry(conv: torch.nn.Module) -> tuple[int, int, int]:
    """``(kernel, stride, padding)`` of a Conv1d / Conv2d along time (its first spatial axis)."""
    return conv.kernel_size[0], conv.stride[0], conv.padding[0]
