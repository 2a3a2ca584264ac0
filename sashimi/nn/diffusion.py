"""Blocks of the diffusion backbones: the diffusion-step embedding and the step-conditioned S4 block.

Shapes: B = batch, L = length, H = d_model, E = width of the step embedding.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from sashimi.nn.blocks import FFBlock
from sashimi.ssm.s4 import S4


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """DiffWave's embedding of integer steps t (B,): [sin(t f_0) .. sin(t f_{h-1}), cos(t f_0) .. cos(t f_{h-1})]
    with h = dim / 2 frequencies f_j = 10^(-4 j / (h - 1)), from 1 down to 1e-4. Returns (B, dim) float32."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
    angles = t.float()[:, None] * freqs  # (B, half)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class StepEmbedding(nn.Module):
    """t (B,) -> (B, E): sinusoidal of width d_in, then Linear(d_in, d_mid) + swish, Linear(d_mid, E) + swish."""

    def __init__(self, d_in: int = 128, d_mid: int = 512, d_out: int = 512):
        super().__init__()
        self.d_in = d_in
        self.fc1 = nn.Linear(d_in, d_mid)
        self.fc2 = nn.Linear(d_mid, d_out)

    def forward(self, t: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """t (B,) -> (B, E) in ``dtype`` (the model's float dtype: the audio's)."""
        e = sinusoidal_embedding(t, self.d_in).to(dtype)
        return F.silu(self.fc2(F.silu(self.fc1(e))))


class DiffusionBlock(nn.Module):
    """DiffWave's residual block with S4 in place of its dilated convolution, then a feed-forward block:

        x = x + Dropout(S4(LayerNorm(x) + W e))      (W e: this block's projection of the step embedding)
        x = FFBlock(x)                               (x + FF(LayerNorm(x)); skipped when ff = 0)
    """

    def __init__(self, d_model: int, d_embed: int, s4: S4, ff: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.embed_proj = nn.Linear(d_embed, d_model)
        self.layer = s4
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.ff = FFBlock(d_model, ff, dropout) if ff > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x: (B L H), e: (B E) -> (B L H)."""
        y = self.norm(x) + self.embed_proj(e)[:, None, :]  # (B L H)
        return self.ff(x + self.dropout(self.layer(y)))
