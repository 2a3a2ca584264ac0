"""Down- and up-pooling between SaShiMi tiers (causal for the autoregressive model).

DownPool: (B, L, H) -> (B, L/p, H*expand): fold p consecutive steps into features, then Linear.
UpPool:   (B, L/p, H*expand) -> (B, L, H): Linear to H*p features, unfold into p steps, and (``causal=True``,
the default) shift right by one pooled step so that output position t only depends on pooled steps that end
before t. The diffusion backbone sees the whole sequence and uses ``causal=False``: no shift.
Feature order when folding/unfolding is (h, s): feature h*p + s is channel h at sub-step s.

Step mode: each keeps a preallocated buffer (B, H, p), updated in place; ``tau`` is the step index at the
pool's own tier.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DownPool(nn.Module):
    def __init__(self, d_input: int, expand: int, pool: int):
        super().__init__()
        self.d_input, self.pool = d_input, pool
        self.d_output = d_input * expand
        self.linear = nn.Linear(d_input * pool, self.d_output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B L H) with L divisible by p -> (B L/p H*expand)."""
        B, L, H = x.shape
        x = x.reshape(B, L // self.pool, self.pool, H).transpose(-1, -2)  # (B L/p H p)
        return self.linear(x.reshape(B, L // self.pool, H * self.pool))

    def default_state(self, batch_size: int) -> torch.Tensor:
        w = self.linear.weight
        return w.new_zeros(batch_size, self.d_input, self.pool)  # (B H p)

    def step(self, x: torch.Tensor, state: torch.Tensor, tau: int) -> torch.Tensor | None:
        """Buffer x (B H); every p-th step return the pooled (B H*expand) vector, else None."""
        state[..., tau % self.pool] = x
        if tau % self.pool != self.pool - 1:
            return None
        return self.linear(state.flatten(1))

    def state_from(self, x: torch.Tensor, n: int) -> torch.Tensor:
        state = self.default_state(x.shape[0])
        r = n % self.pool
        if r:
            state[..., :r] = x[:, n - r : n].transpose(1, 2)
        return state


class UpPool(nn.Module):
    def __init__(self, d_input: int, expand: int, pool: int, causal: bool = True):
        super().__init__()
        self.pool, self.causal = pool, causal
        self.d_output = d_input // expand
        self.linear = nn.Linear(d_input, self.d_output * pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B L/p H*expand) -> (B L H), shifted one pooled step to the right when causal."""
        B, Lp, _ = x.shape
        x = self.linear(x)  # (B L/p H*p)
        if self.causal:
            x = F.pad(x[:, :-1], (0, 0, 1, 0))  # causal shift by one pooled step
        x = x.reshape(B, Lp, self.d_output, self.pool).transpose(-1, -2)  # (B L/p p H)
        return x.reshape(B, Lp * self.pool, self.d_output)

    def default_state(self, batch_size: int) -> torch.Tensor:
        return self.linear.weight.new_zeros(batch_size, self.d_output, self.pool)  # (B H p)

    def step(self, x: torch.Tensor | None, state: torch.Tensor, tau: int) -> torch.Tensor:
        """Return the buffered output for this step; on the last sub-step refill from x (B H*expand)."""
        y = state[..., tau % self.pool].clone()
        if tau % self.pool == self.pool - 1:
            state.copy_(self.linear(x).view(x.shape[0], self.d_output, self.pool))
        return y

    def state_from(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """x: the deeper tier's output sequence (B k' H*expand); n: steps consumed at this tier."""
        state = self.default_state(x.shape[0])
        k = n // self.pool
        if k:
            state.copy_(self.linear(x[:, k - 1]).view(x.shape[0], self.d_output, self.pool))
        return state
