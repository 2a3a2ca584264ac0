"""Discrete linear recurrences: the step mode of every SSM kernel.

Dimension letters: B = batch, H = channels, M = state size of the recurrence, T = time.

``DiagonalSystem``  x_t = mu * x_{t-1} + b u_t,  y_t = scale * Re(sum_m c_m x_t[m])   (O(M) per step)
``DenseSystem``     x_t = A x_{t-1} + b u_t,     y_t = Re(c^T x_t)                     (O(M^2) per step)
``LowRankSystem``   the bilinear DPLR step solved with Woodbury on the half state         (O(M) per step)

The two O(M) systems hand out one real-valued folded form for fast steps (``folded()``, see ``folded.py``);
``DenseSystem`` has none (a ZOH DPLR layer: dA = exp(dt A) has no O(M) step).

Both are built from the current parameters by a kernel's ``discretize``; they hold no parameters themselves.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sashimi.ssm.folded import FoldedStep, fold_diagonal, fold_lowrank


@dataclass
class DiagonalSystem:
    mu: torch.Tensor  # (H M) complex
    b: torch.Tensor  # (H M) complex
    c: torch.Tensor  # (H M) complex
    scale: float = 2.0  # 2 when only one mode of each conjugate pair is kept

    def default_state(self, batch_size: int) -> torch.Tensor:
        return self.mu.new_zeros(batch_size, *self.mu.shape)  # (B H M)

    def step(self, u: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u: (B H) real, x: (B H M) complex -> y (B H), new x."""
        x = self.mu * x + self.b * u[..., None]
        return self.scale * (x * self.c).sum(-1).real, x

    def krylov(self, T: int) -> torch.Tensor:
        """(H M T): the state contribution mu^j b of an input j steps in the past."""
        j = torch.arange(T, device=self.mu.device, dtype=self.mu.real.dtype)
        return self.b[..., None] * torch.exp(torch.log(self.mu)[..., None] * j)

    def power(self, T: int) -> torch.Tensor:
        return self.mu**T

    def advance(self, x: torch.Tensor, AT: torch.Tensor) -> torch.Tensor:
        return AT * x

    def folded(self) -> FoldedStep:
        """This step in the form the fast steps consume (``folded.py``)."""
        return fold_diagonal(self.mu, self.b, self.c, self.scale)


@dataclass
class DenseSystem:
    A: torch.Tensor  # (H M M) complex
    b: torch.Tensor  # (H M) complex
    c: torch.Tensor  # (H M) complex

    def default_state(self, batch_size: int) -> torch.Tensor:
        return self.b.new_zeros(batch_size, *self.b.shape)

    def step(self, u: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.einsum("hmn,bhn->bhm", self.A, x) + self.b * u[..., None]
        return (x * self.c).sum(-1).real, x

    def krylov(self, T: int) -> torch.Tensor:
        """(H M T) = [b, A b, A^2 b, ...], built by doubling (log T matrix products)."""
        K, P = self.b[..., None], self.A
        while K.shape[-1] < T:
            K = torch.cat([K, P @ K], dim=-1)
            P = P @ P
        return K[..., :T]

    def power(self, T: int) -> torch.Tensor:
        return torch.linalg.matrix_power(self.A, T)

    def advance(self, x: torch.Tensor, AT: torch.Tensor) -> torch.Tensor:
        return torch.einsum("hmn,bhn->bhm", AT, x)

    def diagonalize(self, tol: float = 1e-3) -> DiagonalSystem:
        """Eigen-decompose A (in float64) into an equivalent diagonal system.

        Raises ValueError when the eigenvectors are too ill-conditioned for the diagonal form to be trusted
        in this dtype: rounding errors in the state grow by up to cond(V), so cond(V) * eps must stay < tol.
        HiPPO-LegS is the classic bad case (its eigenvectors are exponentially ill-conditioned).
        """
        A = self.A.to(torch.complex128)
        mu, V = torch.linalg.eig(A)
        V_inv = torch.linalg.inv(V)
        bound = torch.linalg.cond(V).max().item() * torch.finfo(self.A.real.dtype).eps
        if not bound < tol:
            raise ValueError(f"state matrix is not stably diagonalizable in {self.A.real.dtype}: cond(V) * eps = "
                             f"{bound:.1e} > {tol:.0e}; use the 'linear' or 'dense' step")
        b = torch.einsum("hmn,hn->hm", V_inv, self.b.to(A))
        c = torch.einsum("hnm,hn->hm", V, self.c.to(A))
        dt = self.A.dtype
        return DiagonalSystem(mu.to(dt), b.to(dt), c.to(dt), scale=1.0)


@dataclass
class LowRankSystem:
    """Bilinear step of A = Lambda - P P^* in O(M), on one mode per conjugate pair (half state).

    (I - h A) x' = (I + h A) x + dt B u with h = dt/2 is solved with the Woodbury identity:
      rhs = E x - h P s1 + b u,   s1 = P^* x
      x'  = D (rhs - h P W (P^* D rhs)),   D = (I - h Lambda)^-1,  W = (I + h P^* D P)^-1
    Inner products over the full (conjugate-extended) state are 2 Re of the half sums, hence real.
    """

    E: torch.Tensor  # (H M) complex, 1 + h Lambda
    D: torch.Tensor  # (H M) complex, 1 / (1 - h Lambda)
    P: torch.Tensor  # (r H M) complex
    h: torch.Tensor  # (H) real, dt / 2
    W: torch.Tensor  # (H r r) real
    b: torch.Tensor  # (H M) complex, dt B
    c: torch.Tensor  # (H M) complex; y = 2 Re(c . x)

    def default_state(self, batch_size: int) -> torch.Tensor:
        return self.b.new_zeros(batch_size, *self.b.shape)

    def _inner(self, x: torch.Tensor) -> torch.Tensor:
        """2 Re sum_m conj(P_r) x (B H M) -> (B H r)."""
        return 2 * torch.einsum("rhm,bhm->bhr", self.P.conj(), x).real

    def _lowrank(self, s: torch.Tensor) -> torch.Tensor:
        """h P s for s (B H r) -> (B H M)."""
        return self.h[:, None] * torch.einsum("rhm,bhr->bhm", self.P, s.to(self.P.dtype))

    def step(self, u: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rhs = self.E * x - self._lowrank(self._inner(x)) + self.b * u[..., None]
        t = torch.einsum("hij,bhj->bhi", self.W, self._inner(self.D * rhs))
        x = self.D * (rhs - self._lowrank(t))
        return 2 * (x * self.c).sum(-1).real, x

    def folded(self) -> FoldedStep:
        """This step in the form the fast steps consume (``folded.py``)."""
        return fold_lowrank(self.E, self.D, self.P, self.h, self.W, self.b, self.c)


def forward_state(system, u: torch.Tensor, x0: torch.Tensor | None = None, chunk: int = 256) -> torch.Tensor:
    """State after consuming u (B H T) from x0 (B H M), without T Python steps.

    Works in chunks of ``chunk`` steps: x <- A^c x + sum_j (A^j b) u[t+c-1-j], one matmul per chunk.
    """
    Bsz, H, T = u.shape
    x = system.default_state(Bsz) if x0 is None else x0
    K = system.krylov(min(chunk, T)).flip(-1)  # (H M c): column i weighs the input at chunk position i
    Ac = system.power(K.shape[-1])
    for start in range(0, T, K.shape[-1]):
        u_c = u[..., start : start + K.shape[-1]].to(K.dtype)  # (B H c')
        c = u_c.shape[-1]
        if c == K.shape[-1]:
            x = system.advance(x, Ac) + torch.einsum("hmc,bhc->bhm", K, u_c)
        else:  # last, shorter chunk
            x = system.advance(x, system.power(c)) + torch.einsum("hmc,bhc->bhm", K[..., -c:], u_c)
    return x
