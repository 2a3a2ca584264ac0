"""HiPPO transition matrices and their normal-plus-low-rank (NPLR) decomposition.

Dimension letters: N = state size (``d_state``), r = rank of the low-rank correction.

Every HiPPO matrix A used here can be written A = S - P P^T with S "normal" (a multiple of the identity plus a
skew-symmetric matrix). Diagonalizing S unitarily, S = V diag(W) V^*, gives the DPLR form used by S4:
A ~ diag(W) - (V^* P)(V^* P)^*. Only one eigenvalue of each conjugate pair is kept (N/2 of them).
"""
from __future__ import annotations

import math

import torch

from sashimi.errors import ConfigError

MEASURES = ("legs", "legt", "fout")


def transition(measure: str, N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuous-time HiPPO (A (N, N), B (N,)) in float64."""
    n = torch.arange(N, dtype=torch.float64)
    row, col = n[:, None], n[None, :]
    if measure == "legs":
        # A_nk = -sqrt((2n+1)(2k+1)) below the diagonal, -(n+1) on it, 0 above.
        r = torch.sqrt(2 * n + 1)
        A = -torch.where(row > col, r[:, None] * r[None, :], torch.zeros(()))
        A = A - torch.diag(n + 1)
        B = r.clone()
    elif measure == "legt":
        # Translated Legendre, halved so that its timescale matches LegS.
        r = torch.sqrt(2 * n + 1)
        sign = torch.where(row >= col, torch.ones(()), (-1.0) ** (row - col))
        A = -0.5 * r[:, None] * sign * r[None, :]
        B = 0.5 * r
    elif measure == "fout":
        if N % 2:
            raise ConfigError(f"fout needs an even d_state, got {N}")
        freqs = torch.arange(N // 2, dtype=torch.float64)
        d = torch.stack([torch.zeros(N // 2, dtype=torch.float64), freqs], dim=-1).reshape(-1)[1:]
        A = math.pi * (torch.diag(d, -1) - torch.diag(d, 1))
        B = torch.zeros(N, dtype=torch.float64)
        B[0::2] = math.sqrt(2.0)
        B[0] = 1.0
        A = A - B[:, None] * B[None, :]
    else:
        raise ConfigError(f"unknown HiPPO measure {measure!r}; expected one of {MEASURES}")
    return A, B


def rank_correction(measure: str, N: int) -> torch.Tensor:
    """P (r, N) such that A + P^T P is normal."""
    n = torch.arange(N, dtype=torch.float64)
    if measure == "legs":
        return torch.sqrt(n + 0.5)[None, :]
    if measure == "legt":
        p = torch.sqrt(1 + 2 * n) * math.sqrt(0.5)
        p_even, p_odd = p.clone(), p.clone()
        p_even[0::2] = 0.0
        p_odd[1::2] = 0.0
        return torch.stack([p_even, p_odd])
    if measure == "fout":
        return transition("fout", N)[1][None, :]
    raise ConfigError(f"unknown HiPPO measure {measure!r}; expected one of {MEASURES}")


def nplr(measure: str, N: int, B_clip: float | None = 2.0):
    """DPLR form of a HiPPO matrix, keeping one eigenvalue per conjugate pair.

    Returns W (N/2,), P (r, N/2), B (N/2,), V (N, N/2), all complex128, such that
    A = 2 Re-extension of V (diag(W) - P P^*) V^*, i.e. with V_full = [V, conj(V)]:
    A = V_full diag([W, conj W]) V_full^* - P_real P_real^T.
    """
    if N % 2:
        raise ConfigError(f"d_state must be even for the DPLR form, got {N}")
    A, B = transition(measure, N)
    P = rank_correction(measure, N)  # (r N)
    S = A + P.T @ P  # normal part: c I + skew-symmetric
    w_re = torch.diagonal(S).mean()
    w_im, V = torch.linalg.eigh(S.to(torch.complex128) * -1j)  # S - cI is skew, so -iS is Hermitian up to c
    order = torch.argsort(w_im)
    w_im, V_all = w_im[order], V[:, order]
    W = (w_re + 1j * w_im)[: N // 2]
    V = V_all[:, : N // 2].clone()
    zero = (w_im.abs() < 1e-6).nonzero().flatten()
    if len(zero):
        _pair_zero_modes(V, V_all=V_all, zero=zero)
    V_inv = V.conj().T
    B = V_inv @ B.to(V)
    P = (V_inv @ P.T.to(V)).T
    if B_clip is not None:
        B = B.real + 1j * torch.clamp(B.imag, -B_clip, B_clip)
    return W, P, B, V


def _pair_zero_modes(V: torch.Tensor, V_all: torch.Tensor, zero: torch.Tensor) -> None:
    """Zero eigenvalues are their own conjugates (FouT has two): merge them into one complex mode.

    The null space of the real matrix S has a real orthonormal basis (r1, r2); v = (r1 + i r2)/sqrt(2) and its
    conjugate are orthonormal and span it, so the kept half can hold v in place of one zero mode.
    """
    if len(zero) != 2:
        raise ValueError(f"NPLR: expected 0 or 2 zero eigenvalues, found {len(zero)}")
    span = V_all[:, zero]  # (N 2)
    real_basis, _ = torch.linalg.qr(torch.cat([span.real, span.imag], dim=1))
    r1, r2 = real_basis[:, 0], real_basis[:, 1]
    V[:, -1] = (r1 + 1j * r2) / math.sqrt(2)
