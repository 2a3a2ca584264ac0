"""Complex log and expm1 built from real element-wise ops.

PyTorch's CPU kernels for complex transcendental functions are scalar loops (``log`` of a complex128 tensor
costs ~100-200 ns per element); the real functions they reduce to are vectorized. Both are differentiable
through autograd like the built-ins and agree with them to rounding (tests/ssm/test_cmath.py).
"""
from __future__ import annotations

import torch


def clog(z: torch.Tensor) -> torch.Tensor:
    """Principal log of a complex tensor: log|z| + i arg z."""
    return torch.complex(torch.log(z.abs()), z.angle())


def cexpm1(w: torch.Tensor) -> torch.Tensor:
    """exp(w) - 1 for complex w without cancellation near 0:
    Re = expm1(x) cos y - 2 sin^2(y/2),  Im = exp(x) sin y   (w = x + i y)."""
    x, y = w.real, w.imag
    half = torch.sin(y / 2)
    return torch.complex(torch.expm1(x) * torch.cos(y) - 2 * half * half, torch.exp(x) * torch.sin(y))
