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
import sys
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
        return _load()
    except NativeUnavailable as err:
        warnings.warn(f"{err}; the S4 kernel runs in plain PyTorch (set SASHIMI_NATIVE_KERNEL=0 to skip the "
                      "build)", RuntimeWarning, stacklevel=3)
        return None


def _load():
    if not _EXTENSION.built():
        print("sashimi: building the native S4 kernel ops (once per machine, ~40 s)", file=sys.stderr, flush=True)
    return _EXTENSION.load()
