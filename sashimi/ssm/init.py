"""Initializations of the state-space parameters (A = Lambda - P P^*, B, C, dt).

Shapes: H = channels (``d_model``), N2 = d_state / 2 kept modes (one per conjugate pair), r = low-rank rank.
"""
from __future__ import annotations

import math

import torch

from sashimi.errors import ConfigError
from sashimi.ssm.hippo import nplr

DPLR_INITS = ("legs", "legt", "fout")
DIAG_INITS = ("legs", "inv", "lin")
MIN_DECAY = 1e-4  # smallest |Re Lambda| at init, so the positive transform log(-Re Lambda) is finite


def dplr_init(init: str, N: int):
    """Lambda (N2,), P (r, N2), B (N2,) complex128 for a DPLR state matrix from a HiPPO measure."""
    if init not in DPLR_INITS:
        raise ConfigError(f"unknown init {init!r} for mode='dplr'; expected one of {DPLR_INITS}")
    W, P, B, _ = nplr(init, N)
    W = torch.complex(torch.clamp(W.real, max=-MIN_DECAY), W.imag)
    return W, P, B


def diag_init(init: str, N: int):
    """Lambda (N2,), B (N2,) complex128 for a diagonal (S4D) state matrix."""
    n = torch.arange(N // 2, dtype=torch.float64)
    if init == "legs":  # S4D-LegS: the diagonal part of the HiPPO-LegS DPLR form
        W, _, B, _ = nplr("legs", N)
        return W, B
    if init == "inv":  # S4D-Inv: imaginary parts follow an inverse law
        W = -0.5 - 1j * (N / math.pi) * (N / (2 * n + 1) - 1)
    elif init == "lin":  # S4D-Lin: imaginary parts are the Fourier frequencies
        W = -0.5 - 1j * math.pi * n
    else:
        raise ConfigError(f"unknown init {init!r} for mode='diag'; expected one of {DIAG_INITS}")
    return W.to(torch.complex128), torch.ones(N // 2, dtype=torch.complex128)


def log_dt_init(H: int, dt_min: float, dt_max: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """log(dt) (H,) drawn uniformly in [log dt_min, log dt_max]."""
    if not 0 < dt_min <= dt_max:
        raise ConfigError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    u = torch.rand(H, dtype=torch.float64, generator=generator)
    return u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)


def c_init(channels: int, H: int, N2: int) -> torch.Tensor:
    """C (channels, H, N2) complex128, standard complex normal."""
    return torch.randn(channels, H, N2, dtype=torch.complex128)
