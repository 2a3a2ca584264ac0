"""The recurrent state of a fast step, allocated once by the backend that runs it, in that backend's layout.

Dimension letters: B = batch, H = width of a tier, M = modes of a recurrence, p = pool factor.

``StepState`` holds, per S4 block, [Re, Im] of its state (B H M), and per tier the pooling shift registers
``down[i]`` (B H_i p_i, the last inputs) and ``up[i]`` (B H_i p_i, the outputs still due). Every backend reads
and writes these tensors in place; their shapes are the same in both layouts:

- "torch": each tensor its own contiguous block.
- "native" (``native.py``): one buffer from the extension's ``zeros`` (64-byte aligned, on huge pages where
  possible); the SSM states stored with the strides of a (B M H) tensor, channels in SIMD lanes, so that every
  recurrence runs across channels with no horizontal sums; consecutive tensors 384 bytes off a 4 KB boundary
  from each other: the step reads a state's real and imaginary parts side by side, and equal offsets modulo
  4 KB would make the CPU stall their loads behind each other's stores (4K aliasing). 384 is a multiple of
  128: the 32-channel lane groups that different threads update stay on 128-byte pairs of cache lines of their
  own (at widths that are multiples of 32).
"""
from __future__ import annotations

from typing import Callable

import torch

LAYOUTS = ("torch", "native")
_PAD = 96  # floats: 384 bytes between consecutive tensors of the native layout


class StepState:
    """SSM states by ``id(block)`` (``ssm``), pooling registers (``down``, ``up``), in ``layout``."""

    def __init__(self, blocks, registers: list[tuple[int, int]], registers_up: list[tuple[int, int]], batch: int,
                 like: torch.Tensor, layout: str = "torch", zeros: Callable[[int], torch.Tensor] | None = None):
        """blocks: the converted blocks (each with ``state(batch)`` giving its tensors' shapes); registers /
        registers_up: (H_i, p_i) of each tier's down / up register; like: a tensor of the dtype and device."""
        if layout not in LAYOUTS:
            raise ValueError(f"unknown state layout {layout!r}; expected one of {LAYOUTS}")
        self.layout, self.batch = layout, batch
        shapes = {id(b): [t.shape for t in b.state(1)] for b in blocks}
        if layout == "torch":
            new = lambda shape: like.new_zeros(batch, *shape[1:])  # noqa: E731
            self.ssm = {k: [new(s) for s in ss] for k, ss in shapes.items()}
            self.down = [like.new_zeros(batch, h, p) for h, p in registers]
            self.up = [like.new_zeros(batch, h, p) for h, p in registers_up]
            return
        flat_shapes = [(batch, *s[1:]) for ss in shapes.values() for s in ss]
        flat_shapes += [(batch, h, p) for h, p in registers + registers_up]
        buffer = zeros(sum(_slot(s) for s in flat_shapes))
        views, offset = [], 0
        for i, shape in enumerate(flat_shapes):
            n = _numel(shape)
            view = buffer[offset : offset + n]
            ssm = i < sum(len(ss) for ss in shapes.values())
            if ssm:  # (B H M) with the strides of (B M H)
                B, H, M = shape
                views.append(view.view(B, M, H).transpose(1, 2))
            else:
                views.append(view.view(shape))
            offset += _slot(shape)
        it = iter(views)
        self.ssm = {k: [next(it) for _ in ss] for k, ss in shapes.items()}
        self.down = [next(it) for _ in registers]
        self.up = [next(it) for _ in registers_up]

    def tensors(self) -> list[torch.Tensor]:
        """Every state tensor: SSM states in block order, then the down and the up registers."""
        return [t for ts in self.ssm.values() for t in ts] + self.down + self.up


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _slot(shape) -> int:
    """Floats a tensor takes in the native buffer: whole 4 KB pages, then the 384-byte offset."""
    return -(-_numel(shape) // 1024) * 1024 + _PAD
