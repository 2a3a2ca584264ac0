"""Structured matrix products behind the S4 kernels, in pure PyTorch.

Two algorithms live here, each with a plain reference next to it:

* ``vandermonde``: K[s, h, k] = 2 Re sum_n c[s, h, n] z[h, n]^k for k < L. The fast version is *blocked*:
  writing k = a*T + b turns the sum into one batched real matrix product
  (c z^(aT)) @ (z^b), so no (H, N, L) tensor is ever built; extra memory is O(H N sqrt(L)) plus the output.
  The reference builds the full (S, H, N, L) Vandermonde matrix.
* ``cauchy_naive``: r[..., l] = sum_n v_n / (w_l - x_n) over both halves of each conjugate pair, the
  reference for the DPLR kernel (which itself is computed through ``vandermonde``; see kernel.py).
"""
from __future__ import annotations

import math

import torch


def _block_size(L: int) -> int:
    """Power of two near sqrt(L), at least 16: balances the two factors of the blocked product."""
    return max(16, 1 << math.ceil(math.log2(max(1.0, math.sqrt(L)))))


def vandermonde(coef: torch.Tensor, log_z: torch.Tensor, L: int) -> torch.Tensor:
    """Blocked Vandermonde product.

    coef: (S, H, N) complex; log_z: (H, N) complex (log of the nodes z). Returns (S, H, L) real,
    2 Re sum_n coef z^k. Powers are formed as exp(k log z) in double precision (the phase k*Im(log z) grows
    with k), and the product runs in the real dtype of ``coef``.
    """
    S, H, N = coef.shape
    real_dtype = coef.real.dtype
    T = _block_size(L)
    n_blocks = math.ceil(L / T)
    log_z64 = log_z.to(torch.complex128)
    a = torch.arange(n_blocks, device=coef.device, dtype=torch.float64) * T
    b = torch.arange(T, device=coef.device, dtype=torch.float64)
    z_outer = torch.exp(log_z64[:, :, None] * a).to(coef.dtype)  # (H N A)
    z_inner = torch.exp(log_z64[:, :, None] * b).to(coef.dtype)  # (H N T)
    left = coef[..., None] * z_outer  # (S H N A)
    # Re(x y) = Re x Re y - Im x Im y, as one real matmul over the doubled contraction axis.
    left = torch.cat([left.real, -left.imag], dim=2).permute(1, 0, 3, 2)  # (H S A 2N)
    right = torch.cat([z_inner.real, z_inner.imag], dim=1)  # (H 2N T)
    out = torch.matmul(left.reshape(H, S * n_blocks, 2 * N), right)  # (H S*A T)
    out = out.reshape(H, S, n_blocks * T)[..., :L]
    return 2 * out.transpose(0, 1).to(real_dtype)  # (S H L)


def vandermonde_naive(coef: torch.Tensor, log_z: torch.Tensor, L: int) -> torch.Tensor:
    """Reference: materializes the (S, H, N, L) Vandermonde terms. Same contract as ``vandermonde``."""
    k = torch.arange(L, device=coef.device, dtype=torch.float64)
    powers = torch.exp(log_z.to(torch.complex128)[..., None] * k).to(coef.dtype)  # (H N L)
    return 2 * (coef[..., None] * powers).sum(dim=-2).real


def cauchy_naive(v: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Reference Cauchy product with conjugate pairs.

    v: (..., N) coefficients, x: (..., N) poles (one per conjugate pair), w: (L,) evaluation nodes.
    Returns (..., L): sum_n v_n / (w - x_n) + conj(v_n) / (w - conj(x_n)).
    """
    v = torch.cat([v, v.conj()], dim=-1)[..., None]
    x = torch.cat([x, x.conj()], dim=-1)[..., None]
    return (v / (w - x)).sum(dim=-2)
