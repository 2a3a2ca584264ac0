"""The converted blocks of the fast step: every residual block of a SaShiMiLM as real-valued tensors, built once
from the model's current parameters. Below both the torch fast step (``fast.py``) and the native step
(``native.py``), which read these blocks and derive nothing themselves: the S4 recurrences come from
``sashimi.ssm`` (``FoldedStep``, ``DenseSystem``).

Dimension letters: B = batch, H = width, M = modes of a recurrence (N/2), r = rank.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn as nn
import torch.nn.functional as F

from sashimi.errors import ConfigError
from sashimi.nn.blocks import FFBlock, ResidualS4Block
from sashimi.runtime import usable_cpus


def _frozen(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone().contiguous(), requires_grad=False)


def _real(z: torch.Tensor) -> tuple[nn.Parameter, nn.Parameter]:
    """Real and imaginary parts of a complex tensor, as frozen float32 parameters."""
    return _frozen(z.real.float()), _frozen(z.imag.float())


class FastS4Block(nn.Module):
    """x + GLU(Linear(GELU(SSM(u) + D u))), u = LayerNorm(x), with the SSM stepped in real arithmetic.

    S4D layers (``DiagonalSystem``) and bilinear DPLR layers (``LowRankSystem``, the exact O(N) Woodbury step on
    the N/2 modes kept per conjugate pair) step the folded form that ``sashimi.ssm`` hands out
    (``system.folded()``, see ``sashimi/ssm/folded.py``), kept as ``self.folded`` (float64) and as float32 real
    and imaginary parts:
        k_j = beta_j u + Re(sum_m G_j x),   x' = DE x - sum_j Q_j k_j + Db u,   y = Re(sum_m c x') + D u.
    A ZOH DPLR layer steps dA = exp(dt A), which has no O(N) form: it steps the dense N x N recurrence
    (``DenseSystem``; the native step has none, so FastLM falls back to a torch step for such models).
    Diagonalizing the DPLR matrix instead (``DenseSystem.diagonalize``) is exact in float64 but useless in
    float32: the HiPPO eigenvectors are so ill-conditioned (cond ~ 1e7) that the residues reach 1e6 and cancel,
    giving output errors of order 1.
    """

    def __init__(self, block: ResidualS4Block):
        super().__init__()
        layer = block.layer
        self.norm, self.output_linear, self.D = block.norm, layer.output_linear, _frozen(layer.D)
        self.dplr, self.eager_step_mode = layer.mode == "dplr", layer.step_mode
        self.dense = self.dplr and layer.kernel.disc != "bilinear"
        self.folded = None  # FoldedStep (float64) of the O(N) layers
        with torch.no_grad():
            if self.dense:
                system = layer.kernel.discretize("dense")  # full conjugate-extended basis: A (H N N), b, c (H N)
                self.A_re, self.A_im = _real(system.A)
                self.b_re, self.b_im = _real(system.b)
                self.c_re, self.c_im = _real(system.c)
            else:
                self.folded = layer.kernel.discretize("linear" if self.dplr else "diagonal").folded()
                f = self.folded
                self.DE_re, self.DE_im = _real(f.DE)  # (H M)
                self.Db_re, self.Db_im = _real(f.Db)
                self.c_re, self.c_im = _real(f.c)
                self.Q_re, self.Q_im = _real(f.Q)  # (r H M)
                self.G_re, self.G_im = _real(f.G)
                self.beta = _frozen(f.beta.T.float())  # (r H)
        self.modes = self.c_re.shape[-1]
        self.rank = 0 if self.folded is None else self.folded.rank

    def state(self, batch_size: int) -> list[torch.Tensor]:
        """[Re, Im] zeros (B H M)."""
        z = self.c_re.new_zeros(batch_size, *self.c_re.shape)
        return [z, z.clone()]

    def load_state(self, state: list[torch.Tensor], model_state: torch.Tensor) -> None:
        """Copy an eager layer state (B H M') complex: S4D as is; DPLR ('linear' or 'dense' step mode) its
        first N/2 modes, one per conjugate pair."""
        if self.dplr and self.eager_step_mode not in ("linear", "dense"):
            raise ConfigError("fast step: a DPLR layer's state must come from the 'linear' or 'dense' step mode "
                              f"(got {self.eager_step_mode!r}); call setup_step('linear')")
        x = model_state[..., : self.modes]
        state[0].copy_(x.real)
        state[1].copy_(x.imag)

    def forward(self, x: torch.Tensor, state: list[torch.Tensor]) -> torch.Tensor:
        """x (B H) -> (B H); state [Re, Im] (B H M) updated in place."""
        u = self.norm(x)
        re, im = state
        new_re, new_im = (self._dense if self.dense else self._folded)(u[..., None], re, im)
        re.copy_(new_re)
        im.copy_(new_im)
        z = (self.c_re * new_re - self.c_im * new_im).sum(-1) + self.D * u  # (B H)
        return x + F.glu(self.output_linear(F.gelu(z)), dim=-1)

    def _folded(self, u, re, im):
        """x' = DE x - sum_j Q_j k_j + Db u, k_j = beta_j u + Re(sum G_j x). u (B H 1), re/im (B H M)."""
        new_re = self.DE_re * re - self.DE_im * im + self.Db_re * u
        new_im = self.DE_re * im + self.DE_im * re + self.Db_im * u
        if self.rank:
            k = self.beta * u[:, None, :, 0] + (self.G_re * re[:, None] - self.G_im * im[:, None]).sum(-1)  # (B r H)
            new_re = new_re - (self.Q_re * k[..., None]).sum(1)
            new_im = new_im - (self.Q_im * k[..., None]).sum(1)
        return new_re, new_im

    def _dense(self, u, re, im):
        """x' = dA x + dB u with the full N x N dA (ZOH DPLR). u (B H 1), re/im (B H N)."""
        mv = lambda a, x: torch.einsum("hmn,bhn->bhm", a, x)  # noqa: E731
        return (mv(self.A_re, re) - mv(self.A_im, im) + self.b_re * u,
                mv(self.A_re, im) + mv(self.A_im, re) + self.b_im * u)


class FastFFBlock(nn.Module):
    def __init__(self, block: FFBlock):
        super().__init__()
        self.norm, self.linear_in, self.linear_out = block.norm, block.linear_in, block.linear_out

    def state(self, batch_size: int) -> list[torch.Tensor]:
        return []

    def forward(self, x: torch.Tensor, state: list[torch.Tensor]) -> torch.Tensor:
        return x + self.linear_out(F.gelu(self.linear_in(self.norm(x))))


def fast_block(block: nn.Module) -> nn.Module:
    if isinstance(block, ResidualS4Block):
        return FastS4Block(block)
    if isinstance(block, FFBlock):
        return FastFFBlock(block)
    raise ConfigError(f"fast step: unsupported block {type(block).__name__}")


def fast_blocks(blocks: list[nn.Module]) -> dict[int, nn.Module]:
    """The fast version of every block, by ``id(block)``. Built on up to four threads, largest first: most of
    a FastLM's set-up is the float64 discretization of its S4 layers, whose torch ops release the GIL (sc09:
    2.3-2.8 s on two threads against 3.2-4.9 s on one)."""

    def convert(block: nn.Module) -> nn.Module:
        with torch.no_grad():  # grad mode is per thread
            return fast_block(block)

    order = sorted(blocks, key=lambda b: -sum(p.numel() for p in b.parameters()))
    with ThreadPoolExecutor(max(1, min(4, usable_cpus(), len(blocks)))) as pool:
        return {id(b): f for b, f in zip(order, pool.map(convert, order))}
