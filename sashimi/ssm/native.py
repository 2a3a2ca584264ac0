"""Fused CPU loops for the S4 kernel (``csrc/kernel_ops.cpp``), used where they apply, PyTorch elsewhere.

The kernel's blocked Vandermonde product and its rank-1 Woodbury correction (``structured.py``,
``woodbury.py``) are matrix products and FFTs joined by chains of small element-wise ops: power tables, the
backward reductions over blocks, the Woodbury factors. On a CPU those chains cost about as much as the matrix
products, one temporary per op. The extension runs each chain as one pass.

``ops(*tensors)`` returns the extension module when every tensor is a float32/complex64 CPU tensor and the
extension is available, else ``None`` (the caller then runs its PyTorch code, which is the reference the
extension is tested against: tests/ssm/test_native.py). ``SASHIMI_NATIVE_KERNEL=0`` turns it off. The first
use builds it (``sashimi.jit``, about 40 s, once per machine); if that fails (no C++ compiler), a warning says
so once and the PyTorch code runs.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from sashimi.jit import Extension, NativeUnavailable

_EXTENSION = Extension("sashimi_kernel_ops", Path(__file__).resolve().parent / "csrc" / "kernel_ops.cpp",
                       "the native S4 kernel ops", openmp=True)
_SINGLE = (torch.float32, torch.complex64)


def enabled() -> bool:
    """Whether the native kernel ops may be used (``SASHIMI_NATIVE_KERNEL``, default on)."""
    return os.environ.get("SASHIMI_NATIVE_KERNEL", "1").strip() not in ("0", "false", "no", "off")


def ops(*tensors: torch.Tensor):
    """The extension module if it applies to ``tensors`` (single precision, CPU) and can be had, else None."""
    if not enabled() or _EXTENSION.failed():
        return None
    if not all(t.device.type == "cpu" and t.dtype in _SINGLE for t in tensors):
        return None
    try:
        return _EXTENSION.load()
    except NativeUnavailable as err:
        warnings.warn(f"{err}; the S4 kernel runs in plain PyTorch (set SASHIMI_NATIVE_KERNEL=0 to skip the "
                      "build)", RuntimeWarning, stacklevel=3)
        return None


def refuse_double_backward() -> None:
    """Called by the backward passes that run native ops: those are opaque to autograd, so a backward pass
    recorded for a second derivative (create_graph=True) would be silently wrong."""
    if torch.is_grad_enabled():
        raise RuntimeError("second derivatives through the native S4 kernel ops are not supported; "
                           "set SASHIMI_NATIVE_KERNEL=0 for double backward")


class _DPLRCoefficients(torch.autograd.Function):
    """The DPLR kernel's Cauchy coefficients and log z from its parameters (``DPLRKernel._coefficients``), in
    one native pass each way (the forward pass also returns the per-mode intermediates the backward needs)."""

    @staticmethod
    def forward(ctx, ext, log_dt, A_real, A_imag, B, C, P, L: int):
        params = [t.detach().contiguous() for t in (log_dt, A_real, A_imag, B, C, P)]
        coef, log_z, saved = ext.dplr_coef(*params, L)
        ctx.save_for_backward(*params, saved)
        ctx.ext, ctx.L = ext, L
        return coef, log_z

    @staticmethod
    def backward(ctx, g_coef, g_log_z):
        refuse_double_backward()
        g_coef = None if g_coef is None else g_coef.to(torch.complex64).contiguous()
        g_log_z = None if g_log_z is None else g_log_z.to(torch.complex128).contiguous()
        *params, saved = ctx.saved_tensors
        grads = ctx.ext.dplr_coef_backward(*params, saved, ctx.L, g_coef, g_log_z)
        return (None, *grads, None)


def dplr_coefficients(ext, log_dt, A_real, A_imag, B, C, P, L: int):
    """coef ((1+r)(S+r) H N2) complex64 and log z (H N2) complex128; see csrc/kernel_ops.cpp (dplr_coef)."""
    return _DPLRCoefficients.apply(ext, log_dt, A_real, A_imag, B, C, P, L)
