"""Inference copies of a model whose Linear layers run in bfloat16 (``--weights bf16`` for diffusion sampling).

    fast = bf16_linears(model)     # a copy; ``model`` is left as it was

Every ``nn.Linear`` of the copy holds its weight and bias as bfloat16 and casts its input to bfloat16; the matrix
product accumulates in float32 (oneDNN's bf16 GEMM, which uses AVX-512 BF16 / AMX where the CPU has them) and the
output is cast back to the input's dtype. Everything else (the S4 kernels and FFT convolutions, norms, the residual
stream) stays in the model's own precision. On a CPU with AVX-512 BF16 (AMD Zen 4) the Linear layers of
`sc09-diffwave` run 2.3-2.4x faster this way and its sampling 1.32x; a narrow model (d_model 48) gains nothing, the
casts costing what the products save; where the CPU lacks bf16 units it may be slower (``benchmarks/diffusion.py
--weights float32 bf16`` measures it).
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
        bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16).clone()
        # not persistent: a state_dict of the copy lacks them, so it cannot pass for the float32 model's
        self.register_buffer("weight", linear.weight.detach().to(torch.bfloat16).clone(), persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def bf16_linears(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with every ``nn.Linear`` (the exact type, not subclasses) replaced by
    a ``BF16Linear``. For inference of diffusion models; the copy is not meant to be trained, saved or re-cast
    (``.double()`` would cast the bf16 buffers too, and its forward then fails on the dtype mismatch)."""
    fast = copy.deepcopy(model).eval()
    for parent in list(fast.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Linear:
                setattr(parent, name, BF16Linear(child))
    return fast
