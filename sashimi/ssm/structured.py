"""Structured matrix products behind the S4 kernels, in pure PyTorch.

Two algorithms live here, each with a plain reference next to it:

* ``vandermonde``: K[h, s, k] = 2 Re sum_n c[s, h, n] z[h, n]^k for k < L. The fast version is *blocked*:
  writing k = a*T + b turns the sum into one batched real matrix product
  (c z^(aT)) @ (z^b), so no (H, N, L) tensor is ever built; extra memory is O(H N sqrt(L)) plus the output.
  The reference builds the full (S, H, N, L) Vandermonde matrix.
* ``cauchy_naive``: r[..., l] = sum_n v_n / (w_l - x_n) over both halves of each conjugate pair, the
  reference for the DPLR kernel (which itself is computed through ``vandermonde``; see kernel.py).
* ``paired_matrix_power``: A^n for the conjugate-paired matrices of a real system in the conjugate-extended
  basis (S4's dense dA), on half-size blocks; ``torch.linalg.matrix_power`` is its reference.
"""
from __future__ import annotations

import math

import torch

from sashimi.ssm import native


def _block_size(L: int, rows: int = 1) -> int:
    """Block length T near sqrt(rows * L), at least 16: balances the two factors of the blocked product
    (the outer factor has ``rows`` copies of L / T blocks, the inner one T columns). A divisor of L within a
    factor 2 of that target is preferred (no padded tail); otherwise the nearest power of two."""
    target = math.sqrt(rows * L)
    divisors = [t for t in range(max(16, math.ceil(target / 2)), math.floor(2 * target) + 1) if L % t == 0]
    if divisors:
        return min(divisors, key=lambda t: abs(math.log(t / target)))
    return max(16, 1 << round(math.log2(max(1.0, target))))


def vandermonde(coef: torch.Tensor, log_z: torch.Tensor, L: int, split: int | None = None):
    """Blocked Vandermonde product.

    coef: (S, H, N) complex; log_z: (H, N) complex (log of the nodes z). Returns (H, S, L) real,
    2 Re sum_n coef z^k; with ``split``, the two tensors for coef[:split] and coef[split:] (sharing the power
    tables, so a caller that treats the rows differently needs no slicing copies). The power tables come from
    exp(k log z) in double precision on small tables (see ``_power_table``); the products run in the dtype of
    ``coef``. The backward pass is analytic (two blocked products the size of the forward one), so no autograd
    graph is kept over the power tables.
    """
    sizes = (coef.shape[0],) if split is None else (split, coef.shape[0] - split)
    grad_z = torch.is_grad_enabled() and log_z.requires_grad  # (inside forward, grad mode is always off)
    # Under mixed precision the products stay in coef's dtype: autocast would run the real matmuls in bf16/fp16,
    # far too coarse for kernel values summed over thousands of powers (and the backward expects one dtype).
    with torch.autocast(coef.device.type, enabled=False):
        out = _Vandermonde.apply(coef, log_z, L, sizes, grad_z)
    return out[0] if split is None else out


class _Vandermonde(torch.autograd.Function):
    """out[h, s, aT + b] = 2 Re sum_n coef[s, h, n] z[h, n]^(aT) z[h, n]^b, as (2 c z^(aT)) @ (z^b).

    Backward, with G = dloss/dout (real) and the blocked products P = sum_b G[s, aT + b] z^b and
    P' = sum_b (aT + b) G[s, aT + b] z^b = aT P + (G times b z^b), reduced over blocks with z^(aT):
      dloss/dcoef  = 2 conj(sum_a z^(aT) P)                (= 2 sum_k G_k conj(z^k))
      dloss/dlog_z = 2 conj(sum_s coef_s sum_a z^(aT) P')  (= 2 sum_k k G_k conj(coef z^k))
    The rows of coef come in groups (``sizes``), one output tensor per group.
    """

    @staticmethod
    def forward(ctx, coef: torch.Tensor, log_z: torch.Tensor, L: int, sizes: tuple[int, ...], grad_z: bool):
        S, H, N = coef.shape
        T = _block_size(L, S)
        A = math.ceil(L / T)
        ext = native.ops(coef)
        # native, with grad: rows of b z^b below the table's (H 4N T), for the backward pass; the forward uses
        # the top half
        with_b = ext is not None and grad_z
        outer, table = _tables(log_z, T, A, coef.dtype, ext, with_b)  # (H A N) complex, (H 2N or 4N T) real
        right = table[:, : 2 * N]
        # Re(x y) = Re x Re y + Im(conj x) Im y: one real matmul over the contraction axis (n, re/im).
        if ext is not None:
            left = ext.vdm_left(coef.contiguous(), outer)  # (H S A N 2) = conj(2 c z^(aT))
        else:
            c2 = (2 * coef).conj().transpose(0, 1).contiguous()  # (H S N)
            left = torch.view_as_real(c2[:, :, None, :] * outer.conj()[:, None])  # (H S A N 2) = conj(2 c z^(aT))
        outs = []
        for group in left.split(sizes, dim=1):  # (H s A N 2)
            out = torch.matmul(group.reshape(H, -1, 2 * N), right).view(H, group.shape[1], A * T)  # (H s A*T)
            outs.append(out if A * T == L else out[..., :L])
        ctx.save_for_backward(coef, outer, table)
        ctx.L, ctx.ext = L, ext
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        coef, outer, table = ctx.saved_tensors
        need_coef, need_z = ctx.needs_input_grad[:2]
        A, T = outer.shape[1], table.shape[-1]
        pad = A * T - ctx.L
        # (H s*A T): the gradient of each row group in blocks of T
        Gs = [(g.contiguous() if not pad else torch.nn.functional.pad(g, (0, pad))).view(g.shape[0], -1, T)
              for g in grads]
        groups = coef.split([g.shape[1] for g in grads])
        if ctx.ext is not None and all(g.dtype == table.dtype for g in grads):
            native.refuse_double_backward()
            grad_coef, grad_log_z = _backward_native(ctx.ext, Gs, groups, outer, table, need_z)
        else:
            grad_coef, grad_log_z = _backward_torch(Gs, groups, outer, table, need_z)
        return grad_coef if need_coef else None, grad_log_z if need_z else None, None, None, None


def _backward_torch(Gs, groups, outer, table, need_z):
    """The reductions of _Vandermonde.backward in PyTorch ops: (grad_coef (S H N), grad_log_z (H N) or None)."""
    H, A, N = outer.shape
    right = table[:, : 2 * N]
    T = right.shape[-1]
    right_b = right * torch.arange(T, device=right.device, dtype=right.dtype) if need_z else None
    aT = (torch.arange(A, device=right.device, dtype=right.dtype) * T)[:, None]  # (A 1)
    grad_coef, grad_log_z = [], 0
    for G, c in zip(Gs, groups):  # one row group at a time
        blocked = lambda tab: torch.view_as_complex(  # sum_b G[s, aT + b] tab[n, b]: (H s A N)
            torch.matmul(G, tab.transpose(1, 2)).view(H, c.shape[0], A, N, 2))
        P = blocked(right)
        grad_coef.append((outer[:, None] * P).sum(2))  # (H s N)
        if need_z:
            P_k = blocked(right_b) + aT * P  # sum_b (aT + b) G[s, aT + b] z^b
            grad_log_z = grad_log_z + (c.transpose(0, 1) * (outer[:, None] * P_k).sum(2)).sum(1)  # (H N)
    grad_coef = 2 * torch.cat(grad_coef, dim=1).conj().transpose(0, 1)  # (S H N)
    return grad_coef, 2 * grad_log_z.conj() if need_z else None


def _backward_native(ext, Gs, groups, outer, table, need_z):
    """The same with the native kernel ops: one product per group with the stacked table [z^b; b z^b] (just
    z^b without need_z), then the reductions over blocks fused (``vdm_backward``)."""
    H, A, N = outer.shape
    rows = table if need_z else table[:, : 2 * N]
    grad_log_z = torch.zeros(H, N, dtype=outer.dtype) if need_z else None  # each group adds 2 conj(...) to it
    grad_coef = []
    for G, c in zip(Gs, groups):
        PP = torch.matmul(G, rows.transpose(1, 2)).view(H, c.shape[0], A, rows.shape[1] // (2 * N), N, 2)
        grad_coef.append(ext.vdm_backward(torch.view_as_complex(PP), outer, c.contiguous(), table.shape[-1],
                                          need_z, grad_log_z))
    return torch.cat(grad_coef), grad_log_z


def _tables(log_z: torch.Tensor, T: int, A: int, dtype: torch.dtype, ext, with_b: bool = False):
    """The two factors' powers: outer z^(aT) (H A N) complex ``dtype``; right (H 2N T) real, rows (n, re/im) of
    z^b for b < T. With ``ext`` (the native kernel ops), in one pass from exp(log z) and exp(T log z), and with
    ``with_b`` the rows of b z^b follow (H 4N T)."""
    H, N = log_z.shape
    if ext is not None:
        log_z = log_z.to(torch.complex128).contiguous()
        right, outer = ext.vdm_tables(torch.exp(log_z), torch.exp(T * log_z), log_z.real.contiguous(), T, A, with_b)
        return outer, right
    a = torch.arange(A, device=log_z.device, dtype=torch.float64) * T
    outer = _powers(log_z[:, None, :], a[:, None], dtype)  # (H A N)
    inner = _power_table(log_z, T, dtype)  # (H N T)
    return outer, torch.view_as_real(inner).transpose(-1, -2).reshape(H, 2 * N, T)


def _powers(log_z: torch.Tensor, k: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """z^k = exp(k log z), broadcasting log_z (complex) against k (float64), as a complex ``dtype`` tensor.

    Computed from real exp/cos/sin in double precision (the phase k Im(log z) grows with k; complex exp is
    several times slower on CPU). Powers below sqrt(tiny) of ``dtype`` are set to exactly 0: they are below
    rounding anyway, subnormal operands make the matmul ~10x slower on x86 CPUs, and the product of two
    powers that survive the cutoff is never subnormal.
    """
    re = log_z.real.double() * k
    im = log_z.imag.double() * k
    cutoff = 0.5 * math.log(torch.finfo(dtype.to_real()).tiny)
    mag = torch.where(re > cutoff, torch.exp(re), 0.0)
    return torch.complex(mag * torch.cos(im), mag * torch.sin(im)).to(dtype)


def _power_table(log_z: torch.Tensor, T: int, dtype: torch.dtype) -> torch.Tensor:
    """z^b for b < T (..., N, T): the product of two small double-precision tables z^(i lo) and z^j with
    b = i lo + j, so only O(sqrt T) powers per node are computed in float64."""
    lo = max((d for d in range(1, math.isqrt(T) + 1) if T % d == 0))
    if lo < math.isqrt(T) // 2:  # T has no divisor near sqrt(T): round the table up and cut it
        lo = math.isqrt(T)
    hi = math.ceil(T / lo)
    k = lambda n, step: torch.arange(n, device=log_z.device, dtype=torch.float64) * step
    high = _powers(log_z[..., None, None], k(hi, lo)[:, None], dtype)  # (... N hi 1)
    low = _powers(log_z[..., None, None], k(lo, 1), dtype)  # (... N 1 lo)
    table = (high * low).flatten(-2)  # (... N hi*lo)
    return table if hi * lo == T else table[..., :T]


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


def paired_matrix_power(A: torch.Tensor, n: int) -> torch.Tensor:
    """A^n (n >= 0) for complex (..., 2m, 2m) matrices of the form [[X, Y], [conj Y, conj X]].

    A real linear system written in the conjugate-extended basis has this form (S4's dense dA, with modes
    (x, conj x)), and products keep it: (X1, Y1)(X2, Y2) = (X1 X2 + Y1 conj Y2, X1 Y2 + Y1 conj X2). Squaring on
    the blocks takes four m x m products instead of one 2m x 2m product (eight): half the work of
    ``torch.linalg.matrix_power``. Only the top blocks of A are read."""
    m = A.shape[-1] // 2
    if A.shape[-1] != 2 * m or A.shape[-2] != A.shape[-1]:
        raise ValueError(f"expected square matrices of even size, got {tuple(A.shape[-2:])}")

    def mul(a, b):
        return a[0] @ b[0] + a[1] @ b[1].conj(), a[0] @ b[1] + a[1] @ b[0].conj()

    result, base = None, (A[..., :m, :m], A[..., :m, m:])
    while n:
        if n & 1:
            result = base if result is None else mul(result, base)
        n >>= 1
        if n:
            base = mul(base, base)
    if result is None:  # A^0
        eye = torch.eye(m, dtype=A.dtype, device=A.device).expand(A.shape[:-2] + (m, m))
        result = (eye, torch.zeros_like(eye))
    X, Y = result
    return torch.cat([torch.cat([X, Y], -1), torch.cat([Y.conj(), X.conj()], -1)], -2)
