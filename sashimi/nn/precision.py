"""Inference copies of a model whose Linear layers run in bfloat16 (``--weights bf16`` for diffusion sampling).

    fast = bf16_linears(model)     # a copy; ``model`` is left as it was

Every ``nn.Linear`` of the copy holds its weight and bias as bfloat16 and casts its input to bfloat16; the matrix
product accumulates in float32 (oneDNN's bf16 GEMM, which uses AVX-512 BF16 / AMX where the CPU has them) and the
output is cast back to the input's dtype. Everything else (the S4 kernels and FFT convolutions, norms, the residual
stream) stays in the model's own precision. On a CPU with AVX-512 BF16 the Linear layers of the diffusion backbone
run 2.3x faster this way; where the CPU lacks it they may run slower (``benchmarks/diffusion.py --weights``).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


class BF16Linear(nn.Module):
    """An inference-only copy of ``linear`` (in -> out features) with bfloat16 weight and bias (buffers, not
    parameters: nothing here trains). x (..., in) of any float dtype -> (..., out) of the same dtype."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach().to(torch.bfloat16).clone())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def bf16_linears(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with every ``nn.Linear`` replaced by a ``BF16Linear``."""
    fast = copy.deepcopy(model).eval()
    for parent in list(fast.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Linear:
                setattr(parent, name, BF16Linear(child))
    return fast
