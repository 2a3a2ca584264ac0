"""The bidirectional SaShiMi U-Net that denoises in the SaShiMi paper's diffusion experiments (DiffWave + SaShiMi).

Shapes: B = batch, L = length, H = d_model (H * expand^i at stage i), E = width of the step embedding.

    x (B L) -> Linear(1, H) + ReLU -> stage 0 -> LayerNorm -> Linear(H, H) + ReLU -> Linear(H, 1), zero-initialised

Stage i runs [n_layers DiffusionBlocks] -> DownPool -> stage i+1 -> UpPool -> [n_layers DiffusionBlocks], with
additive U-Net skips: the input of every down block (and of the DownPool) is added to the output of the matching
up block (and of the UpPool), in reverse order; the centre stage is n_layers blocks with a skip around them.
Nothing is causal: every S4 layer is bidirectional (one two-sided kernel) and UpPool does not shift, so the
output at t depends on the whole input. ``unet=False`` drops the down blocks (and their skips).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from sashimi.nn.diffusion import DiffusionBlock
from sashimi.nn.pool import DownPool, UpPool
from sashimi.ssm.s4 import S4

LAYERS = {"s4": "dplr", "s4d": "diag"}


class DiffusionSaShiMi(nn.Module):
    """(x (B L), e (B E)) -> predicted noise (B L). ``config``: a DiffWaveConfig with backbone sashimi."""

    def __init__(self, config):
        super().__init__()
        c = config
        self.pool, self.unet = tuple(c.pool), c.unet
        self.length_multiple = c.length_multiple
        mode = LAYERS[c.layer]

        def stack(h: int, length: int | None) -> nn.ModuleList:
            def s4() -> S4:
                return S4(h, c.d_state, mode=mode, init=c.init or "legs", disc=c.disc, bidirectional=True,
                          l_max=length if mode == "dplr" else None, dropout=c.dropout, dt_min=c.dt_min,
                          dt_max=c.dt_max, ssm_lr=c.ssm_lr)
            return nn.ModuleList(DiffusionBlock(h, c.embed_out, s4(), c.ff, c.dropout) for _ in range(c.n_layers))

        self.input = nn.Linear(1, c.d_model)
        H, length = c.d_model, c.l_max
        self.down_blocks, self.down, self.up, self.up_blocks = (nn.ModuleList() for _ in range(4))
        for p in self.pool:
            self.down_blocks.append(stack(H, length) if c.unet else nn.ModuleList())
            self.down.append(DownPool(H, c.expand, p))
            self.up.append(UpPool(H * c.expand, c.expand, p, causal=False))
            self.up_blocks.append(stack(H, length))
            H, length = H * c.expand, (length // p if length else None)
        self.center = stack(H, length)
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.d_model)
        self.out = nn.Linear(c.d_model, 1)
        nn.init.zeros_(self.out.weight)  # training starts from predicting zero noise
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x: (B L) noisy audio, e: (B E) step embedding -> (B L). L is padded at the end to a multiple of
        prod(pool) inside, and the output cut back to L."""
        L = x.shape[1]
        x = F.pad(x, (0, -L % self.length_multiple))
        h = F.relu(self.input(x[..., None]))  # (B L' H)
        h = self.norm(self._stage(0, h, e))
        return self.out(F.relu(self.head(h)))[:, :L, 0]

    def _stage(self, i: int, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Stage i on x (B L_i H_i)."""
        if i == len(self.pool):
            return self._blocks(self.center, x, e) + x
        skips = []
        for blk in self.down_blocks[i]:
            skips.append(x)
            x = blk(x, e)
        skips.append(x)
        y = self.up[i](self._stage(i + 1, self.down[i](x), e)) + skips.pop()
        if not self.unet:
            return self._blocks(self.up_blocks[i], y, e)
        for blk in self.up_blocks[i]:
            y = blk(y, e) + skips.pop()
        return y

    @staticmethod
    def _blocks(blocks: nn.ModuleList, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        for blk in blocks:
            x = blk(x, e)
        return x
