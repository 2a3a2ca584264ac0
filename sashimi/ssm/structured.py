"""Structured matrix products behind the S4 kernels, in pure PyTorch.

Two algorithms live here, each with a plain reference next to it:

* ``vandermonde``: K[h, s, k] = 2 Re sum_n c[s, h, n] z[h, n]^k for k < L. The fast version is *blocked*:
  writing k = a*T + b turns the sum into one batched real matrix product
  (c z^(aT)) @ (z^b), so no (H, N, L) tensor is ever built; extra memory is O(H N sqrt(L)) plus the output.
  The reference builds the full (S, H, N, L) Vandermonde matrix.
* ``cauchy_naive``: r[..., l] = sum_n v_n / (w_l - x_n) over both halves of each conjugate pair, the
  reference for the DPLR kernel (which itself is computed through ``vandermonde``; see kernel.py).
"""
from __future__ import annotations

import math

import torch


def _block_size(L: int, rows: int = 1) -> int:
    """Power of two near sqrt(rows * L), at least 16: balances the two factors of the blocked product
    (the outer factor has ``rows`` copies of L / T blocks, the inner one T columns)."""
    return max(16, 1 << round(math.log2(max(1.0, math.sqrt(rows * L)))))


def vandermonde(coef: torch.Tensor, log_z: torch.Tensor, L: int) -> torch.Tensor:
    """Blocked Vandermonde product.

    coef: (S, H, N) complex; log_z: (H, N) complex (log of the nodes z). Returns (H, S, L) real,
    2 Re sum_n coef z^k. Powers are formed as exp(k log z) with k in double precision (the phase
    k Im(log z) grows with k); the product runs in the dtype of ``coef``.
    """
    S, H, N = coef.shape
    T = _block_size(L, S)
    n_blocks = math.ceil(L / T)
    a = torch.arange(n_blocks, device=coef.device, dtype=torch.float64) * T
    b = torch.arange(T, device=coef.device, dtype=torch.float64)
    outer = _powers(log_z[:, None, :], a[:, None], coef.dtype)  # (H A N)
    inner = _powers(log_z[:, :, None], b, coef.dtype)  # (H N T)
    # Re(x y) = Re x Re y + Im x (-Im y): one real matmul over the contraction axis (n, re/im).
    left = torch.view_as_real(coef.transpose(0, 1).contiguous()[:, :, None, :] * outer[:, None])  # (H S A N 2)
    right = torch.stack([inner.real, -inner.imag], dim=2)  # (H N 2 T)
    out = torch.matmul(left.reshape(H, S * n_blocks, 2 * N), right.reshape(H, 2 * N, T))  # (H S*A T)
    out = out.view(H, S, n_blocks * T)
    out = out if n_blocks * T == L else out[..., :L]
    return 2 * out


def _powers(log_z: torch.Tensor, k: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """z^k = exp(k log z), broadcasting log_z (complex) against k (float64), as a complex ``dtype`` tensor.

    Built from real exp/cos/sin in double precision (complex exp is several times slower on CPU).
    """
    re = log_z.real.double() * k
    im = log_z.imag.double() * k
    # Powers that would be subnormal in ``dtype`` are set to exactly 0: they are below rounding anyway, and
    # subnormal operands make the matmul ~10x slower on x86 CPUs.
    cutoff = 0.5 * math.log(torch.finfo(dtype).tiny)
    mag = torch.where(re > cutoff, torch.exp(re), 0.0)
    return torch.complex(mag * torch.cos(im), mag * torch.sin(im)).to(dtype)


def vandermonde_naive(coef: torch.Tensor, log_z: torch.Tensor, L: int) -> torch.Tensor:
    """Reference: materializes the (S, H, N, L) Vandermonde terms. Same contract as ``vandermonde``."""
    k = torch.arange(L, device=coef.device, dtype=torch.float64)
    powers = torch.exp(log_z.to(torch.complex128)[..., None] * k).to(coef.dtype)  # (H N L)
    return 2 * (coef[..., None] * powers).sum(dim=-2).real.transpose(0, 1)


def cauchy_naive(v: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Reference Cauchy product with conjugate pairs.

    v: (..., N) coefficients, x: (..., N) poles (one per conjugate pair), w: (L,) evaluation nodes.
    Returns (..., L): sum_n v_n / (w - x_n) + conj(v_n) / (w - conj(x_n)).
    """
    v = torch.cat([v, v.conj()], dim=-1)[..., None]
    x = torch.cat([x, x.conj()], dim=-1)[..., None]
    return (v / (w - x)).sum(dim=-2)
