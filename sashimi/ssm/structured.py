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


def _block_size(L: int) -> int:
    """Power of two near sqrt(L), at least 16: balances the two factors of the blocked product."""
    return max(16, 1 << math.ceil(math.log2(max(1.0, math.sqrt(L)))))


def vandermonde(coef: torch.Tensor, log_z: torch.Tensor, L: int) -> torch.Tensor:
    """Blocked Vandermonde product.

    coef: (S, H, N) complex; log_z: (H, N) complex (log of the nodes z). Returns (H, S, L) real,
    2 Re sum_n coef z^k. Powers are formed in real arithmetic as e^{k Re} (cos, sin)(k Im) with k in double
    precision (the phase k Im(log z) grows with k); the product runs in the real dtype of ``coef``.
    """
    S, H, N = coef.shape
    dtype = coef.real.dtype
    T = _block_size(L)
    n_blocks = math.ceil(L / T)
    a = torch.arange(n_blocks, device=coef.device, dtype=torch.float64) * T
    b = torch.arange(T, device=coef.device, dtype=torch.float64)
    outer_r, outer_i = _exp_real(log_z, a, dtype)  # (H N A) each
    inner_r, inner_i = _exp_real(log_z, b, dtype)  # (H N T)
    cr, ci = coef.real[..., None], coef.imag[..., None]  # (S H N 1)
    # left = coef z^(aT) and Re(left z^b) = Re(left) Re(z^b) - Im(left) Im(z^b): one real matmul over 2N.
    left = torch.cat([cr * outer_r - ci * outer_i, -(cr * outer_i + ci * outer_r)], dim=2)  # (S H 2N A)
    left = left.permute(1, 0, 3, 2).reshape(H, S * n_blocks, 2 * N)
    right = torch.cat([inner_r, inner_i], dim=1)  # (H 2N T)
    out = torch.matmul(left, right).view(H, S, n_blocks * T)  # (H S A*T)
    out = out if n_blocks * T == L else out[..., :L]
    return 2 * out


def _exp_real(log_z: torch.Tensor, k: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of z^k = exp(k log z): log_z (H N) complex, k (K) float64 -> (H N K) each."""
    re = log_z.real.double()[..., None] * k
    im = log_z.imag.double()[..., None] * k
    mag = torch.exp(re)
    return (mag * torch.cos(im)).to(dtype), (mag * torch.sin(im)).to(dtype)


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
