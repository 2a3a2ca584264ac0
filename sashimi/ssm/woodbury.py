"""The low-rank (Woodbury) correction of the DPLR kernel, applied in frequency.

``dplr_kernel`` builds real sequences q (h, (1+r)(S+r), L) whose DFTs at the L-th roots of unity are the Cauchy sums
Q[i, j] = sum_n b_i c_j / (w - x_n) for b in (B, P_1..P_r) and c in (C~_1..C~_S, conj P_1..conj P_r).
and returns the kernel (S, h, L), the inverse DFT of

    k_f = Q00 - s Q10 (I + s Q11)^-1 Q01,   s = (1 + w) / 2,

where Q00 = Q[B, C~], Q01 = Q[B, P], Q10 = Q[P, C~], Q11 = Q[P, P].

``woodbury_kernel_autograd`` is the plain autograd version for any rank (and the reference in the tests). For
rank 1 (LegS, the default) the whole map q -> k is one autograd Function with an analytic backward: the adjoints of rfft and irfft meet around the
element-wise Jacobian and their one-sided weights cancel, so the backward pass is one rfft, a few
element-wise products and one irfft. The Q00 term is linear, so it stays in the time domain (k = q00 - ...),
which saves one of the four transforms each way.
"""
from __future__ import annotations

import functools
import math

import torch

from sashimi.ssm import native
from sashimi.ssm.fft import rfft
from sashimi.ssm.structured import vandermonde


@functools.lru_cache(maxsize=32)
def _half_one_plus_roots(L: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(1 + w) / 2 for the roots of unity w = exp(-2 pi i l / L), l = 0..L/2 (a constant; memoized)."""
    omega = torch.exp(-2j * math.pi * torch.arange(L // 2 + 1, dtype=torch.float64) / L)
    return ((1 + omega) / 2).to(device=device, dtype=dtype)


def dplr_kernel(coef: torch.Tensor, log_z: torch.Tensor, L: int, rank: int, channels: int) -> torch.Tensor:
    """coef ((1+r)(S+r) h N2) Cauchy coefficients, log_z (h N2) -> kernel (S h L). The Cauchy sums are DFTs
    of blocked Vandermonde products (``vandermonde``); rank 1 takes the fused path, other ranks autograd."""
    if rank == 1:  # B C~ rows separately: they stay in the time domain
        S = channels
        return _Rank1Woodbury.apply(*vandermonde(coef, log_z, L, split=S), L)
    return woodbury_kernel_autograd(vandermonde(coef, log_z, L), L, rank, channels)


def woodbury_kernel_autograd(q: torch.Tensor, L: int, rank: int, channels: int) -> torch.Tensor:
    """Reference for any rank, differentiated by autograd."""
    r, S = rank, channels
    Q = rfft(q, L).unflatten(1, (1 + r, S + r))  # (h 1+r S+r F)
    s = _half_one_plus_roots(L, q.device, Q.dtype)  # (F)
    rows = Q.unbind(1)  # B row, then one row per P_j; each (h S+r F)
    Q00, Q01 = rows[0].split([S, r], dim=1)  # (h S F) (h r F)
    if r == 1:
        Q10, Q11 = rows[1].split([S, r], dim=1)
        k_f = Q00 - s * Q10 * (Q01 / (1 + s * Q11))
    else:
        Q10, Q11 = torch.stack(rows[1:], dim=1).split([S, r], dim=2)  # (h r S F) (h r r F): [j, i]
        M = Q11.permute(0, 3, 2, 1)  # (h F i j) = term(P_j, Q_i)
        eye = torch.eye(r, dtype=M.dtype, device=M.device)
        solved = torch.linalg.solve(eye + s[:, None, None] * M, Q01.transpose(1, 2)[..., None])[..., 0]
        k_f = Q00 - s * torch.einsum("hjsf,hfj->hsf", Q10, solved)  # solved: (h F r)
    return torch.fft.irfft(k_f, n=L).transpose(0, 1)  # (S h L)


class _Rank1Woodbury(torch.autograd.Function):
    """Rank 1: k = q00 - irfft(t Q10 Q01) with t = s / (1 + s Q11); the B C~ row never leaves the time domain.

    Adjoints (holomorphic maps: grad_in = conj(d out / d in) grad_out), g = rfft(grad), m = sum_s conj(Q10_s) g_s:
      gq00 = grad,  gQ10 = -conj(t Q01) g,  gQ01 = -conj(t) m,  gQ11 = -conj(t Q01) gQ01.
    """

    @staticmethod
    def forward(ctx, q00: torch.Tensor, q_rest: torch.Tensor, L: int) -> torch.Tensor:
        """q00 (h S L): the B C~ rows; q_rest (h S+2 L): B conj(P), P C~ (S rows), P conj(P)."""
        S = q00.shape[1]
        Q = torch.fft.rfft(q_rest, n=L)  # (h S+2 F)
        s = _half_one_plus_roots(L, Q.device, Q.dtype)  # (F)
        ext = native.ops(Q)
        ctx.L, ctx.ext = L, ext
        if ext is not None:  # the same products, fused
            W, t, tQ01 = ext.woodbury_forward(Q, s)
            ctx.save_for_backward(t, tQ01, Q)
            corr = torch.fft.irfft(W, n=L)
            return torch.sub(q00, corr, out=corr).transpose(0, 1)  # (S h L), in the correction's memory
        Q01, Q10, Q11 = Q.split([1, S, 1], dim=1)
        t = s / (1 + s * Q11)  # (h 1 F)
        tQ01 = t * Q01
        ctx.save_for_backward(t, tQ01, Q10)
        return (q00 - torch.fft.irfft(tQ01 * Q10, n=L)).transpose(0, 1)  # (S h L)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        t, tQ01, Q_rows = ctx.saved_tensors  # all of Q on the native path, its Q10 rows otherwise
        L = ctx.L
        # irfft's adjoint is rfft / L with interior bins doubled; rfft's adjoint is irfft * L with interior bins
        # halved. Between them sits an element-wise map, so the weights cancel: only the plain pair remains.
        grad = grad.transpose(0, 1)  # (h S L)
        if ctx.ext is not None:  # the fused op applies the correction's minus sign itself
            native.refuse_double_backward()
            g = torch.fft.rfft(grad, n=L).contiguous()  # (h S F)
            return grad, torch.fft.irfft(ctx.ext.woodbury_backward(g, t, tQ01, Q_rows), n=L), None
        Q10 = Q_rows
        h, S, F = Q10.shape
        g = -torch.fft.rfft(grad, n=L)  # (h S F), the spectrum of the correction's gradient
        gQ = torch.empty(h, S + 2, F, dtype=g.dtype, device=g.device)  # rows of q_rest
        gQ01, gQ10, gQ11 = gQ.split([1, S, 1], dim=1)
        tQ01_c = tQ01.conj_physical()
        torch.mul(tQ01_c, g, out=gQ10)
        m = (Q10.conj_physical() * g).sum(1, keepdim=True) if S > 1 else Q10.conj_physical().mul_(g)  # (h 1 F)
        torch.mul(m, t.conj(), out=gQ01)
        torch.mul(tQ01_c, gQ01, out=gQ11).neg_()
        return grad, torch.fft.irfft(gQ, n=L), None
