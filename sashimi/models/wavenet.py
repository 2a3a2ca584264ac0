"""DiffWave's own denoiser (Kong et al. 2021): a non-causal WaveNet of dilated convolutions, for comparison with
the SaShiMi backbone.

Shapes: B = batch, L = length, C = residual channels, S = skip channels, E = width of the step embedding.

    x (B 1 L) -> Conv1x1(1, C) + ReLU -> res_layers residual layers -> sum of their skips / sqrt(res_layers)
              -> Conv1x1(S, S) + ReLU -> Conv1x1(S, 1), zero-initialised
    residual layer i (dilation d = 2^(i % dilation_cycle)):
        h = x + W e;  h = Conv(C, 2C, kernel 3, dilation d, centred);  g = tanh(h[:C]) * sigmoid(h[C:])
        out = (x + Conv1x1(C, C)(g)) / sqrt(2),  skip = Conv1x1(C, S)(g)

DiffWave wraps its convolutions in weight normalisation; these are plain convolutions with the same (Kaiming
normal) initialisation, so a model has slightly fewer parameters than the official one (1 per output channel).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv(c_in: int, c_out: int, kernel: int = 1, dilation: int = 1) -> nn.Conv1d:
    conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)
    nn.init.kaiming_normal_(conv.weight)
    return conv


class ResidualLayer(nn.Module):
    def __init__(self, C: int, S: int, E: int, dilation: int):
        super().__init__()
        self.C = C
        self.embed_proj = nn.Linear(E, C)
        self.dilated = _conv(C, 2 * C, 3, dilation)
        self.res = _conv(C, C)
        self.skip = _conv(C, S)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B C L), e: (B E) -> residual output (B C L), skip (B S L)."""
        h = self.dilated(x + self.embed_proj(e)[..., None])  # (B 2C L)
        g = torch.tanh(h[:, : self.C]) * torch.sigmoid(h[:, self.C :])
        return (x + self.res(g)) * math.sqrt(0.5), self.skip(g)


class WaveNet(nn.Module):
    """(x (B L), e (B E)) -> predicted noise (B L). ``config``: a DiffWaveConfig with backbone wavenet."""

    length_multiple = 1

    def __init__(self, config):
        super().__init__()
        c = config
        self.input = _conv(1, c.res_channels)
        self.layers = nn.ModuleList(
            ResidualLayer(c.res_channels, c.skip_channels, c.embed_out, 2 ** (i % c.dilation_cycle))
            for i in range(c.res_layers))
        self.head = _conv(c.skip_channels, c.skip_channels)
        self.out = nn.Conv1d(c.skip_channels, 1, 1)
        nn.init.zeros_(self.out.weight)  # training starts from predicting zero noise
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x: (B L), e: (B E) -> (B L)."""
        h = F.relu(self.input(x[:, None]))  # (B C L)
        skip = 0
        for layer in self.layers:
            h, s = layer(h, e)
            skip = skip + s
        skip = skip * math.sqrt(1.0 / len(self.layers))  # (B S L)
        return self.out(F.relu(self.head(skip)))[:, 0]
