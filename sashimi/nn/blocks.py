"""Residual blocks of the SaShiMi backbone, each with the same recurrent API.

Shapes: B = batch, L = length, H = d_model. Convolution mode takes (B L H); step mode takes (B H).
Every block has ``forward``, ``default_state(batch_size)``, ``step(x, state) -> (y, state)`` and
``state_from(x_seq, n)``: the state after its first n inputs, given the block's input sequence.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from sashimi.ssm.s4 import S4


class ResidualS4Block(nn.Module):
    """x + Dropout(S4(LayerNorm(x)))."""

    def __init__(self, d_model: int, s4: S4, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.layer = s4
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.layer(self.norm(x)))

    def default_state(self, batch_size: int) -> torch.Tensor:
        return self.layer.default_state(batch_size)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, state = self.layer.step(self.norm(x), state)
        return x + y, state

    @torch.no_grad()
    def start_as_identity_(self) -> None:
        """Zero the value half of the output GLU: the block returns its input until training moves it (the
        gate half keeps its values, so the gradient reaches the zeroed weights from the first step)."""
        out = self.layer.output_linear
        half = out.out_features // 2
        out.weight[:half].zero_()
        out.bias[:half].zero_()

    def state_from(self, x: torch.Tensor, n: int) -> torch.Tensor:
        if n == 0:
            return self.default_state(x.shape[0])
        return self.layer.forward_state(self.norm(x[:, :n]))


class FFBlock(nn.Module):
    """x + Dropout(Linear(GELU(Linear(LayerNorm(x))))): position-wise, stateless."""

    def __init__(self, d_model: int, expand: int = 2, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.linear_in = nn.Linear(d_model, expand * d_model)
        self.linear_out = nn.Linear(expand * d_model, d_model)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.dropout(F.gelu(self.linear_in(self.norm(x))))
        return x + self.dropout(self.linear_out(z))

    @torch.no_grad()
    def start_as_identity_(self) -> None:
        """Zero the output projection: the block returns its input until training moves it."""
        self.linear_out.weight.zero_()
        self.linear_out.bias.zero_()

    def default_state(self, batch_size: int) -> None:
        return None

    def step(self, x: torch.Tensor, state: None) -> tuple[torch.Tensor, None]:
        return self.forward(x), None

    def state_from(self, x: torch.Tensor, n: int) -> None:
        return None
