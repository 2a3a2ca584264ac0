"""The folded form of an O(M) recurrence: what a fast step (generation/) consumes, owned here with the systems.

Dimension letters: B = batch, H = channels, M = modes (one per conjugate pair), r = low rank (0 for diagonal).

Both O(M) systems of ``recurrence.py`` step in one form, with real scalars k_j per channel:

    k_j = beta_j u + Re(sum_m G_j x)                  (j < r)
    x'  = DE x - sum_j Q_j k_j + Db u
    y   = Re(sum_m c x')

``DiagonalSystem``: DE = mu, Db = b, c = scale c, r = 0. ``LowRankSystem`` (the bilinear DPLR step,
(I - h A) x' = (I + h A) x + dt B u with A = Lambda - P P^*, h = dt / 2, inner products <p, y> = 2 Re(sum conj(p) y)
over the conjugate-extended state): with D = (I - h Lambda)^-1, E = I + h Lambda, W = (I + h <P, D P>)^-1,
Woodbury gives x' = D E x + D b u - h D P k with k = W (<P, x> + <P, D E x> + <P, D b> u), so

    DE = D E,  Db = D b,  Q_j = h D P_j,  G_j = sum_i W_ji 2 conj(P_i) (1 + D E),  beta = W <P, D b>,  c = 2 c.

All products are formed in float64 from the system's tensors (``FoldedStep`` holds complex128 / float64); a fast
step casts what it needs. ``chunk_tables`` derives the tables of the chunked recurrence (the native step) from
this form, so that no consumer re-derives the recurrence.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FoldedStep:
    DE: torch.Tensor  # (H M) complex128
    Db: torch.Tensor  # (H M) complex128
    c: torch.Tensor  # (H M) complex128: y = Re(sum c x')
    Q: torch.Tensor  # (r H M) complex128
    G: torch.Tensor  # (r H M) complex128
    beta: torch.Tensor  # (H r) float64

    @property
    def rank(self) -> int:
        return self.Q.shape[0]

    def default_state(self, batch_size: int) -> torch.Tensor:
        return self.DE.new_zeros(batch_size, *self.DE.shape)  # (B H M)

    def step(self, u: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u (B H) real, x (B H M) complex -> y (B H), new x (the reference of every fast step)."""
        u = u.to(self.beta.dtype)
        x = x.to(self.DE.dtype)
        k = self.beta * u[..., None] + torch.einsum("rhm,bhm->bhr", self.G, x).real  # (B H r)
        x = self.DE * x - torch.einsum("rhm,bhr->bhm", self.Q, k.to(self.Q.dtype)) + self.Db * u[..., None]
        return (self.c * x).sum(-1).real, x

    def input_response(self) -> torch.Tensor:
        """Bt (H M): the state an input u = 1 adds, Db - sum_j Q_j beta_j."""
        return self.Db - (self.Q * self.beta.T[..., None].to(self.Q.dtype)).sum(0)

    def apply_transition(self, x: torch.Tensor) -> torch.Tensor:
        """Abar x for x (... H M): DE x - sum_j Q_j Re(G_j x)."""
        k = torch.einsum("rhm,...hm->...hr", self.G, x).real
        return self.DE * x - torch.einsum("rhm,...hr->...hm", self.Q, k.to(self.Q.dtype))

    def apply_adjoint(self, a: torch.Tensor) -> torch.Tensor:
        """The functional a (H M) composed with Abar: x -> Re(sum a Abar x), as a -> a DE - sum_j Re(sum a Q_j) G_j."""
        s = torch.einsum("hm,rhm->hr", a, self.Q).real
        return a * self.DE - torch.einsum("hr,rhm->hm", s.to(self.G.dtype), self.G)

    def chunk_tables(self, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The chunked recurrence over T steps from a state x_0: y_i = Re(sum_m F_im x_0m) + sum_{j<=i} h_{i-j} u_j.
        Returns F (H M T) complex128, the functionals F_i = c Abar^(i+1), and h (H T) float64, the impulse
        response h_n = Re(c Abar^n Bt) (without a skip term)."""
        v, a, F, h = self.input_response(), self.c, [], []
        for _ in range(T):
            h.append((self.c * v).sum(-1).real)
            v = self.apply_transition(v)
            a = self.apply_adjoint(a)
            F.append(a)
        return torch.stack(F, dim=-1), torch.stack(h, dim=-1)


def fold_diagonal(mu: torch.Tensor, b: torch.Tensor, c: torch.Tensor, scale: float) -> FoldedStep:
    """x' = mu x + b u, y = scale Re(sum c x')."""
    mu, b, c = (t.to(torch.complex128) for t in (mu, b, c))
    H = mu.shape[0]
    empty = mu.new_zeros(0, *mu.shape)
    return FoldedStep(mu, b, scale * c, empty, empty, torch.zeros(H, 0, dtype=torch.float64, device=mu.device))


def fold_lowrank(E: torch.Tensor, D: torch.Tensor, P: torch.Tensor, h: torch.Tensor, W: torch.Tensor,
                 b: torch.Tensor, c: torch.Tensor) -> FoldedStep:
    """The Woodbury step of ``LowRankSystem`` (its fields, see there) folded as in the module docstring."""
    E, D, P, b, c = (t.to(torch.complex128) for t in (E, D, P, b, c))
    h, W = h.double(), W.double()  # (H), (H r r)
    DE, Db = D * E, D * b
    Q = h[:, None] * D * P  # (r H M)
    Pc2 = 2 * P.conj()
    inner_Db = (Pc2 * Db).sum(-1).real.T  # (H r): <P_i, D b>
    beta = torch.einsum("hji,hi->hj", W, inner_Db)
    G = torch.einsum("hji,ihm->jhm", W.to(P.dtype), Pc2 * (1 + DE))
    return FoldedStep(DE, Db, 2 * c, Q, G, beta)
