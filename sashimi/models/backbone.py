"""The SaShiMi backbone: S4 tiers at decreasing rates joined by causal pooling (paper Figure 1).

Shapes: B = batch, L = length, H = d_model (wider at lower tiers: H * expand^i at tier i).

Tier i (0 = outer, full rate) runs [U-Net blocks] -> DownPool -> tier i+1 -> UpPool (+ skip) -> blocks (+ skip).
The centre tier is ``n_layers`` (S4, FF) block pairs with a skip around them. Both the convolution pass and the
recurrent step follow that one recursion, so they agree by construction of the same graph.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from sashimi.errors import ConfigError
from sashimi.nn.blocks import FFBlock, ResidualS4Block
from sashimi.nn.pool import DownPool, UpPool
from sashimi.ssm.s4 import S4

LAYERS = {"s4": "dplr", "s4d": "diag"}


def _apply(module: nn.Module, x: torch.Tensor, tau: None) -> torch.Tensor:
    return module(x)


@dataclass
class BackboneState:
    """Recurrent state: step counter t and one entry per stateful module (``SaShiMi.stateful``), in place."""

    t: int
    layers: list = field(default_factory=list)


class SaShiMi(nn.Module):
    """(B, L, H) -> (B, L, H). L is padded internally to a multiple of prod(pool); outputs stay causal."""

    def __init__(self, d_model: int = 64, n_layers: int = 8, pool: tuple[int, ...] = (4, 4), expand: int = 2,
                 ff: int = 2, layer: str = "s4", unet: bool = False, bidirectional: bool = False,
                 dropout: float = 0.0, d_state: int = 64, l_max: int | None = None, init: str | None = None,
                 disc: str | None = None, dt_min: float = 0.001, dt_max: float = 0.1, ssm_lr: float | None = 0.001):
        super().__init__()
        self.init_kwargs = dict(d_model=d_model, n_layers=n_layers, pool=list(pool), expand=expand, ff=ff,
                                layer=layer, unet=unet, bidirectional=bidirectional, dropout=dropout,
                                d_state=d_state, l_max=l_max, init=init, disc=disc, dt_min=dt_min,
                                dt_max=dt_max, ssm_lr=ssm_lr)
        if layer not in LAYERS:
            raise ConfigError(f"unknown layer {layer!r}; expected one of {tuple(LAYERS)}")
        if any(int(p) < 1 for p in pool) or expand < 1 or n_layers < 0 or ff < 0:
            raise ConfigError(f"invalid backbone sizes: pool={pool}, expand={expand}, n_layers={n_layers}, ff={ff}")
        self.d_model, self.pool, self.unet = d_model, tuple(int(p) for p in pool), unet
        s4_args = dict(d_state=d_state, mode=LAYERS[layer], init=init or "legs", disc=disc,
                       bidirectional=bidirectional, dropout=dropout, dt_min=dt_min, dt_max=dt_max, ssm_lr=ssm_lr)

        def stack(dim: int, length: int | None) -> nn.ModuleList:
            blocks = []
            for _ in range(n_layers):
                lm = length if LAYERS[layer] == "dplr" else None
                blocks.append(ResidualS4Block(dim, S4(dim, l_max=lm, **s4_args), dropout))
                if ff > 0:
                    blocks.append(FFBlock(dim, ff, dropout))
            return nn.ModuleList(blocks)

        H, length = d_model, l_max
        self.down_blocks, self.down, self.up, self.up_blocks = (nn.ModuleList() for _ in range(4))
        for p in self.pool:
            self.down_blocks.append(stack(H, length) if unet else nn.ModuleList())
            self.down.append(DownPool(H, expand, p))
            self.up.append(UpPool(H * expand, expand, p))
            self.up_blocks.append(stack(H, length))
            H, length = H * expand, (length // p if length else None)
        self.center = stack(H, length)
        self.norm = nn.LayerNorm(d_model)

    # ----- convolution mode -----
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B L H) -> (B L H)."""
        L = x.shape[1]
        return self.norm(self._tier(0, self._pad(x), _apply))[:, :L]

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        m = self.total_pool
        extra = -x.shape[1] % m
        return torch.nn.functional.pad(x, (0, 0, 0, extra)) if extra else x

    @property
    def total_pool(self) -> int:
        out = 1
        for p in self.pool:
            out *= p
        return out

    def _tier(self, i: int, x: torch.Tensor, run, tau: int | None = None) -> torch.Tensor:
        """Tier i on x: a sequence (B L_i H_i) in convolution mode, or one step (B H_i) at tier step ``tau``.

        ``run(module, input, tau)`` applies a module in the current mode; in step mode a DownPool returns None
        until its p inputs are complete, and the deeper tiers are then skipped for this step.
        """
        if i == len(self.pool):
            return self._blocks(self.center, x, run) + x
        skips = [x]
        for blk in self.down_blocks[i]:
            x = run(blk, x, tau)
            skips.append(x)
        pooled = run(self.down[i], x, tau)
        deeper = None
        if pooled is not None:
            deeper = self._tier(i + 1, pooled, run, None if tau is None else tau // self.pool[i])
        y = run(self.up[i], deeper, tau) + skips.pop()
        if self.unet:
            for blk in self.up_blocks[i]:
                y = run(blk, y, tau) + skips.pop()
            return y
        return self._blocks(self.up_blocks[i], y, run) + y

    @property
    def stacks(self) -> list[nn.ModuleList]:
        """Every block stack (the U-Net down stacks, the up stacks, the centre): ``n_layers`` layers each."""
        return list(self.down_blocks) + list(self.up_blocks) + [self.center]

    @property
    def blocks_per_layer(self) -> int:
        """Blocks one layer adds to a stack: (S4, FF), or S4 alone where ff is 0."""
        return 2 if self.init_kwargs["ff"] > 0 else 1

    @staticmethod
    def _blocks(blocks, x, run):
        for blk in blocks:
            x = run(blk, x, None)
        return x

    # ----- recurrent mode -----
    @property
    def stateful(self) -> list[nn.Module]:
        """Modules that carry state, in the order of ``BackboneState.layers``."""
        mods = []
        for i in range(len(self.pool)):
            mods += list(self.down_blocks[i]) + [self.down[i], self.up[i]] + list(self.up_blocks[i])
        return mods + list(self.center)

    def default_state(self, batch_size: int) -> BackboneState:
        return BackboneState(0, [m.default_state(batch_size) for m in self.stateful])

    def step(self, x: torch.Tensor, state: BackboneState) -> tuple[torch.Tensor, BackboneState]:
        """x: (B H) -> (B H). ``state`` is updated in place and returned."""
        index = {id(m): k for k, m in enumerate(self.stateful)}

        def run(m, v, tau):
            k = index[id(m)]
            if isinstance(m, (DownPool, UpPool)):
                return m.step(v, state.layers[k], tau)
            y, state.layers[k] = m.step(v, state.layers[k])
            return y

        y = self._tier(0, x, run, state.t)
        state.t += 1
        return self.norm(y), state

    @torch.no_grad()
    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, BackboneState]:
        """Consume x (B T H) in convolution mode; return the outputs (B T H) and the exact state after them."""
        T = x.shape[1]
        seen: dict = {}

        def record(m, v, tau):
            seen[m] = v
            return m(v)

        y = self.norm(self._tier(0, self._pad(x), record))[:, :T]
        steps = self._steps_per_module(T)
        layers = [m.state_from(seen[m], steps[id(m)]) if m in seen else m.default_state(x.shape[0])
                  for m in self.stateful]
        return y, BackboneState(T, layers)

    def _steps_per_module(self, T: int) -> dict[int, int]:
        """How many steps each stateful module has consumed after T steps at the outer tier."""
        out, n = {}, T
        for i, p in enumerate(self.pool):
            for m in list(self.down_blocks[i]) + [self.down[i], self.up[i]] + list(self.up_blocks[i]):
                out[id(m)] = n
            n //= p
        for m in self.center:
            out[id(m)] = n
        return out
