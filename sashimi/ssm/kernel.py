"""S4 convolution kernels: diagonal (S4D) and diagonal-plus-low-rank (S4, Hurwitz-stable form).

Dimension letters: H = channels (d_model), N = d_state, N2 = N/2 modes kept (one per conjugate pair),
r = rank of the low-rank term, S = output channels of the kernel (2 for bidirectional), L = length.

Parameters (stored as real tensors; complex ones as real views with a trailing dimension of 2):
  log_dt (H)          dt = exp(log_dt)
  A_real (H N2)       Re Lambda = -exp(A_real) < 0   (the positive transform that keeps A Hurwitz)
  A_imag (H N2)       Im Lambda = -A_imag
  B (H N2 2), C (S H N2 2), and for DPLR P (r H N2 2): A = diag(Lambda) - P P^*
For bilinear DPLR, ``C`` holds C~ = C (I - dA^l) for the kernel length l in the ``l_kernel`` buffer (0: plain
C), as in the S4 paper; ``discretize`` recovers the plain C for stepping. ZOH DPLR and S4D learn plain C.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from sashimi.errors import ConfigError
from sashimi.ssm import native
from sashimi.ssm.cmath import cexpm1, clog
from sashimi.ssm.init import c_init, diag_init, dplr_init, log_dt_init
from sashimi.ssm.recurrence import DenseSystem, DiagonalSystem, LowRankSystem
from sashimi.ssm.structured import _block_size, paired_matrix_power, vandermonde
from sashimi.ssm.woodbury import dplr_kernel

CHUNK_BYTES = 64 * 2**20  # budget for the per-chunk intermediate of the kernel computation


def _r2c(x: torch.Tensor) -> torch.Tensor:
    """Real view (..., 2) -> complex; half and bfloat16 weights are computed with in float32."""
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    return torch.view_as_complex(x.contiguous())


class _SSMKernel(nn.Module):
    """Parameters shared by both kernels and the per-parameter optimizer hints."""

    ssm_param_names: tuple[str, ...] = ("log_dt", "A_real", "A_imag", "B")

    def __init__(self, H: int, N: int, channels: int, Lambda: torch.Tensor, B: torch.Tensor,
                 dt_min: float, dt_max: float, lr: float | None):
        super().__init__()
        self.H, self.N, self.channels, self.lr = H, N, channels, lr
        N2 = N // 2
        self.log_dt = nn.Parameter(log_dt_init(H, dt_min, dt_max).float())
        self.A_real = nn.Parameter(torch.log(-Lambda.real).expand(H, N2).float().clone())
        self.A_imag = nn.Parameter((-Lambda.imag).expand(H, N2).float().clone())
        self.B = nn.Parameter(torch.view_as_real(B.expand(H, N2)).float().clone())
        self.C = nn.Parameter(torch.view_as_real(c_init(channels, H, N2)).float().clone())

    def optim_hints(self) -> dict[str, dict]:
        """{param name: {"lr", "weight_decay"}} for the SSM parameters (C is an ordinary weight)."""
        if self.lr is None:
            return {}
        return {name: {"lr": self.lr, "weight_decay": 0.0} for name in self.ssm_param_names}

    def _params(self):
        dt = torch.exp(self.log_dt)  # (H)
        Lam = torch.complex(-torch.exp(self.A_real), -self.A_imag)  # (H N2)
        return dt, Lam, _r2c(self.B), _r2c(self.C)

    def _dt_lambda64(self):
        """dt (H) and Lambda (H N2) computed in double precision. The kernels raise the discrete poles to
        powers up to L, so log z must carry more than single precision: a relative error eps in Im(log z)
        becomes a phase error L |Im(log z)| eps (~3e-3 at L = 16k in float32)."""
        dt = torch.exp(self.log_dt.double())
        return dt, torch.complex(-torch.exp(self.A_real.double()), -self.A_imag.double())

    def _chunked(self, fn, L: int, per_channel_rows: int, *tensors: torch.Tensor,
                 checkpointed: bool = False) -> torch.Tensor:
        """Apply fn(*tensors[h0:h1]) -> (S h L) over channel chunks that fit CHUNK_BYTES; concat on h.

        The fused paths (Vandermonde, rank-1 Woodbury) keep only O(h N sqrt(L) + h L) complex numbers for their
        backward pass, so chunking bounds the forward transients; an autograd path (``checkpointed``) would
        keep every chunk's intermediates, so its chunks are recomputed in the backward pass instead."""
        per_h = per_channel_rows * L * 2 * tensors[0].element_size()  # real sequences plus their spectra
        h = max(1, CHUNK_BYTES // per_h)
        if h >= self.H:
            return fn(*tensors)
        outs = []
        for h0 in range(0, self.H, h):
            part = [t[..., h0 : h0 + h, :] if t.dim() > 1 else t[h0 : h0 + h] for t in tensors]
            if checkpointed and torch.is_grad_enabled() and any(t.requires_grad for t in part):
                outs.append(checkpoint(fn, *part, use_reentrant=False))
            else:
                outs.append(fn(*part))
        return torch.cat(outs, dim=-2)


class DiagKernel(_SSMKernel):
    """S4D: K[k] = 2 Re sum_n C_n dB_n dA_n^k, with ZOH or bilinear discretization."""

    def __init__(self, H: int, N: int, *, channels: int = 1, init: str = "legs", disc: str = "zoh",
                 dt_min: float = 0.001, dt_max: float = 0.1, lr: float | None = 0.001):
        if disc not in ("zoh", "bilinear"):
            raise ConfigError(f"unknown disc {disc!r} for mode='diag'; expected 'zoh' or 'bilinear'")
        Lambda, B = diag_init(init, N)
        super().__init__(H, N, channels, Lambda, B, dt_min, dt_max, lr)
        self.disc = disc

    def _discrete(self):
        """dA (H N2), dB (H N2), C (S H N2) in the parameters' precision, and log dA in double precision."""
        B, C = _r2c(self.B), _r2c(self.C)
        dt, Lam = self._dt_lambda64()
        dtA = dt[:, None] * Lam
        if self.disc == "zoh":
            dA, dB, log_dA = torch.exp(dtA), cexpm1(dtA) / Lam, dtA
        else:
            dA = (1 + dtA / 2) / (1 - dtA / 2)
            dB, log_dA = dt[:, None] / (1 - dtA / 2), clog(dA)
        return dA.to(B.dtype), B * dB.to(B.dtype), C, log_dA

    def forward(self, L: int) -> torch.Tensor:
        """Kernel (S H L)."""
        _, dB, C, log_dA = self._discrete()
        coef = C * dB  # (S H N2)
        fn = lambda c, z: vandermonde(c, z, L).transpose(0, 1)
        return self._chunked(fn, L, self.channels, coef, log_dA)

    @torch.no_grad()
    def discretize(self, mode: str = "diagonal") -> DiagonalSystem:
        if self.channels != 1:
            raise ConfigError("a bidirectional (two-sided) kernel has no recurrent step mode")
        if mode not in ("diagonal", "dense"):
            raise ConfigError(f"unknown step mode {mode!r}; expected 'diagonal' or 'dense'")
        dA, dB, C, _ = self._discrete()
        return DiagonalSystem(dA, dB, C[0], scale=2.0)


class DPLRKernel(_SSMKernel):
    """S4: A = diag(Lambda) - P P^*.

    ``disc="bilinear"`` (default, as in S4): kernel through Cauchy + Woodbury. The Cauchy products at the
    roots of unity are computed as the DFT of blocked Vandermonde products (for a pole x, sum over roots w of
    v/(w - x) equals the DFT of a geometric sequence), so memory stays O(H L + H N sqrt(L)) and the work is
    one batched matmul plus FFTs. ``C`` holds C~ for ``l_kernel``.

    ``disc="zoh"``: dA = exp(dt A) has no Cauchy form, so the kernel C dA^k dB is built as a blocked Krylov
    product (C dA^(aT)) @ (dA^b dB) from O(log L) N x N products; A is dissipative, so dA is a contraction and
    its powers stay bounded. ``C`` is the plain C (``l_kernel`` stays 0). Step modes: dense or diagonal.

    Inits in ``DOUBLE_INITS`` (LegT, FouT) compute their kernel in float64 whatever the parameters' dtype. In
    float32 their Woodbury correction loses the gradients of log_dt, A_real and A_imag (up to 60-100% relative
    error, ``benchmarks/kernel_precision.py``); in float64 they are exact to float32 rounding, for about twice
    the time. LegS stays in float32 (its log_dt gradient is up to ~1% off, the rest < 4e-4).
    """

    ssm_param_names = _SSMKernel.ssm_param_names + ("P",)
    DOUBLE_INITS = ("legt", "fout")

    def __init__(self, H: int, N: int, *, channels: int = 1, init: str = "legs", l_max: int | None = None,
                 disc: str = "bilinear", dt_min: float = 0.001, dt_max: float = 0.1, lr: float | None = 0.001):
        if disc not in ("bilinear", "zoh"):
            raise ConfigError(f"unknown disc {disc!r} for mode='dplr'; expected 'bilinear' or 'zoh'")
        Lambda, P, B = dplr_init(init, N)
        super().__init__(H, N, channels, Lambda, B, dt_min, dt_max, lr)
        self.disc = disc
        self.in_double = init in self.DOUBLE_INITS
        l_max = l_max if disc == "bilinear" else None
        self.rank = P.shape[0]
        self.P = nn.Parameter(torch.view_as_real(P[:, None, :].expand(-1, H, -1)).float().contiguous())
        # With l_max, the random init is taken as C~ for that length directly (C~ is what is learned; for the
        # decaying modes C~ ~= C anyway), which avoids N x N matrix powers when building big models.
        self.register_buffer("l_kernel", torch.tensor(l_max or 0, dtype=torch.long))

    # ----- dense (N x N) form, used for step mode and for changing the kernel length -----
    def _dense(self):
        """dA (H N N), dB (H N), C~ (S H N) in the full (conjugate-extended) basis."""
        dt, Lam, B, Ct = self._params()
        P = _r2c(self.P)  # (r H N2)
        full = lambda x: torch.cat([x, x.conj()], dim=-1)
        A = torch.diag_embed(full(Lam)) - torch.einsum("rhm,rhn->hmn", full(P), full(P).conj())
        eye = torch.eye(self.N, dtype=A.dtype, device=A.device)
        if self.disc == "zoh":  # dA = exp(dt A), dB = A^-1 (dA - I) B
            dA = torch.linalg.matrix_exp(dt[:, None, None] * A)
            dB = torch.linalg.solve(A, ((dA - eye) @ full(B)[..., None]))[..., 0]
            return dA, dB, full(Ct)
        half = (dt[:, None, None] / 2) * A
        rhs = torch.cat([eye + half, (dt[:, None] * full(B))[..., None]], dim=-1)  # one factorization for both
        solved = torch.linalg.solve(eye - half, rhs)
        return solved[..., :-1], solved[..., -1], full(Ct)

    def _c_tilde(self, L: int) -> torch.Tensor:
        """C~ for kernel length L (S H N2), from the stored C~ (or plain C when l_kernel is 0)."""
        dA, _, Ct = self._dense()
        eye = torch.eye(self.N, dtype=dA.dtype, device=dA.device)
        out = torch.einsum("hmn,shm->shn", eye - paired_matrix_power(dA, L), self._plain_c(dA, Ct))
        return out[..., : self.N // 2]

    def _plain_c(self, dA: torch.Tensor, Ct: torch.Tensor) -> torch.Tensor:
        """Plain C (S H N) from the stored C~ (full basis): C^T = C~^T (I - dA^l)^-1; C itself when l is 0."""
        lk = int(self.l_kernel)
        if not lk:
            return Ct
        eye = torch.eye(self.N, dtype=dA.dtype, device=dA.device)
        return torch.linalg.solve((eye - paired_matrix_power(dA, lk)).mT, Ct.unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def discretize(self, mode: str = "linear"):
        """The recurrence for the current parameters: 'linear' (O(N) Woodbury step), 'dense' or 'diagonal'."""
        if self.channels != 1:
            raise ConfigError("a bidirectional (two-sided) kernel has no recurrent step mode")
        if mode not in ("linear", "dense", "diagonal"):
            raise ConfigError(f"unknown step mode {mode!r}; expected 'linear', 'dense' or 'diagonal'")
        if mode == "linear" and self.disc == "zoh":
            raise ConfigError("step mode 'linear' solves the bilinear step; with disc='zoh' use 'dense' or 'diagonal'")
        dA, dB, Ct = self._dense()
        C = self._plain_c(dA, Ct)[0]
        if mode == "linear":
            return self._lowrank_system(C[..., : self.N // 2])
        system = DenseSystem(dA, dB, C)
        if mode == "diagonal":
            try:
                return system.diagonalize()
            except ValueError as err:
                raise ConfigError(f"step mode 'diagonal': {err}") from None
        return system

    def _lowrank_system(self, c: torch.Tensor) -> LowRankSystem:
        dt, Lam, B, _ = self._params()
        P = _r2c(self.P)  # (r H N2)
        h = dt / 2
        D = 1 / (1 - h[:, None] * Lam)
        PDP = 2 * torch.einsum("ihm,hm,jhm->hij", P.conj(), D, P).real  # (H r r)
        eye = torch.eye(self.rank, dtype=PDP.dtype, device=PDP.device)
        W = torch.linalg.inv(eye + h[:, None, None] * PDP)
        return LowRankSystem(1 + h[:, None] * Lam, D, P, h, W, dt[:, None] * B, c)

    # ----- convolution kernel -----
    def forward(self, L: int) -> torch.Tensor:
        """Kernel (S H L): computed at length max(L, l_kernel), truncated to L."""
        if self.in_double and self.B.dtype != torch.float64:  # the same kernel on float64 copies of the parameters
            params = {name: p.double() for name, p in self.named_parameters()}
            return torch.func.functional_call(self, params, (L,)).float()
        if self.disc == "zoh":
            return self._krylov_kernel(L)
        lk = int(self.l_kernel)
        Lk = max(L, lk)
        B, C = _r2c(self.B), _r2c(self.C)
        if Lk != lk:
            C = self._c_tilde(Lk)
        coef, log_z = self._coefficients(Lk, B, C, _r2c(self.P))
        fn = lambda c, z: dplr_kernel(c, z, Lk, self.rank, self.channels)
        k = self._chunked(fn, Lk, coef.shape[0], coef, log_z, checkpointed=self.rank > 1)
        return k[..., :L]

    def _coefficients(self, L: int, B: torch.Tensor, C: torch.Tensor, P: torch.Tensor):
        """Cauchy coefficients ((1+r)(S+r) H N2) for b in (B, P_1..P_r) and c in (C~_1..C~_S, conj P_1..conj P_r),
        and log z (H N2) in double precision, for kernel length L (fused in the native kernel ops where they
        apply; this code is their reference)."""
        ext = native.ops(B, C, P, self.log_dt, self.A_real, self.A_imag)
        if ext is not None:
            return native.dplr_coefficients(ext, self.log_dt, self.A_real, self.A_imag, B, C, P, L)
        dt, Lam = self._dt_lambda64()
        dtA = dt[:, None] * Lam  # (H N2)
        log_z = clog((2 + dtA) / (2 - dtA))  # log of the bilinear-discretized diagonal, in double precision
        # 1/(w - x) over the L-th roots w becomes a geometric sequence z^k / (1 - z^L) (see class docstring).
        scale = (2 * dt[:, None] / ((2 - dtA) * -cexpm1(L * log_z))).to(B.dtype)  # (H N2)
        b_side = torch.cat([B[None], P])  # (1+r H N2)
        c_side = torch.cat([C, P.conj()])  # (S+r H N2)
        return (b_side[:, None] * c_side[None] * scale).flatten(0, 1), log_z  # ((1+r)(S+r) H N2)

    def _krylov_kernel(self, L: int) -> torch.Tensor:
        """K[s, h, k] = Re(C_s^T dA^k dB) for k < L, as one blocked product (S H L)."""
        dA, dB, C = self._dense()  # (H N N) (H N) (S H N)
        T = _block_size(L)
        n_blocks = math.ceil(L / T)
        right, power = dB[..., None], dA  # right: (H N t) = [dB, dA dB, ...]; power = dA^t
        while right.shape[-1] < T:
            right, power = torch.cat([right, power @ right], dim=-1), power @ power
        right = right[..., :T]
        step = torch.linalg.matrix_power(dA, T)  # dA^T
        left, power = C.transpose(0, 1), step  # left: (H S*a N) rows C^T dA^(aT)
        while left.shape[1] < self.channels * n_blocks:
            left = torch.cat([left, left @ power], dim=1)
            power = power @ power
        left = left.unflatten(1, (-1, self.channels))[:, :n_blocks].transpose(1, 2)  # (H S A N)
        K = (left.flatten(1, 2) @ right).real  # (H S*A T)
        return K.view(self.H, self.channels, n_blocks * T)[..., :L].transpose(0, 1)
