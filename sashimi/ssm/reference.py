"""Plain reference kernels: the textbook algorithms, materializing every intermediate.

They exist to test the fast kernels in kernel.py against, and as the "naive" column of the benchmark.
Memory: O(S H N L) — do not call them at long L.
"""
from __future__ import annotations

import math

import torch

from sashimi.ssm.kernel import DiagKernel, DPLRKernel, _r2c
from sashimi.ssm.structured import cauchy_naive, vandermonde_naive


def dplr_kernel_naive(kernel: DPLRKernel, L: int) -> torch.Tensor:
    """S4 kernel (S H L) via the Cauchy product at the bilinear nodes and the Woodbury identity (bilinear), or
    by stepping the dense recurrence one power of dA at a time (ZOH)."""
    if kernel.disc == "zoh":
        dA, dB, C = kernel._dense()
        x, out = dB, []
        for _ in range(L):
            out.append(torch.einsum("shn,hn->sh", C, x).real)
            x = torch.einsum("hmn,hn->hm", dA, x)
        return torch.stack(out, dim=-1)
    lk = int(kernel.l_kernel)
    Lk = max(L, lk)
    dt, Lam, B, C = kernel._params()
    if Lk != lk:
        C = kernel._c_tilde(Lk)
    P = _r2c(kernel.P)
    omega = torch.exp(-2j * math.pi * torch.arange(Lk // 2 + 1, dtype=torch.float64) / Lk).to(B.device)
    nodes = (2 * (1 - omega) / (1 + omega)).to(B.dtype)  # bilinear image of the roots of unity
    b_side = torch.cat([B[None], P])  # (1+r H N2)
    c_side = torch.cat([C, P.conj()])  # (S+r H N2)
    v = b_side[:, None] * c_side[None] * dt[:, None]  # (1+r S+r H N2)
    r = cauchy_naive(v, dt[:, None] * Lam, nodes)  # (1+r S+r H F)
    S, R = kernel.channels, kernel.rank
    r00, r01, r10, r11 = r[0, :S], r[0, S:], r[1:, :S], r[1:, S:]
    M = r11.permute(2, 3, 1, 0)  # (H F i j): term(P_j, Q_i)
    eye = torch.eye(R, dtype=M.dtype, device=M.device)
    solved = torch.linalg.solve(eye + M, r01.permute(1, 2, 0)[..., None])[..., 0]  # (H F r)
    k_f = (r00 - torch.einsum("jshf,hfj->shf", r10, solved)) * 2 / (1 + omega).to(B.dtype)
    return torch.fft.irfft(k_f, n=Lk)[..., :L]


def diag_kernel_naive(kernel: DiagKernel, L: int) -> torch.Tensor:
    """S4D kernel (S H L) from the fully materialized Vandermonde matrix."""
    _, dB, C, log_dA = kernel._discrete()
    return vandermonde_naive(C * dB, log_dA, L).transpose(0, 1)


def naive_kernel(kernel, L: int) -> torch.Tensor:
    return dplr_kernel_naive(kernel, L) if isinstance(kernel, DPLRKernel) else diag_kernel_naive(kernel, L)
