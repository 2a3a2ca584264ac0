"""The noise schedule of a DDPM (Ho et al. 2020) and every closed form of its forward process.

This module owns the formulas; the samplers, the training loss and the evaluation only call them.

Indexing follows DiffWave's code: the T diffusion steps are t = 0 .. T-1, and step t is the paper's step t + 1.
The state "before step 0" is the data x0 itself, so ``alpha_bar_prev[0] = 1``.

    beta_t                  noise variance added at step t (linear from beta_start to beta_end)
    alpha_t = 1 - beta_t,   alpha_bar_t = prod_{s <= t} alpha_s
    q(x_t | x0)             = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I)
    q(x_{t-1} | x_t, x0)    = N(posterior_mean(x0, x_t, t), posterior_variance(t) I)
        mean     = [sqrt(alpha_bar_{t-1}) beta_t x0 + sqrt(alpha_t) (1 - alpha_bar_{t-1}) x_t] / (1 - alpha_bar_t)
        variance = beta~_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t      (0 at t = 0)

Shapes: t is (B,) integer, one step per batch row; x0, x_t and eps are (B, ...). The schedule is kept in float64
on the CPU; each coefficient is gathered per row and cast to the tensor it multiplies.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sashimi.errors import ConfigError


@dataclass(frozen=True)
class Schedule:
    betas: torch.Tensor  # (T,) float64

    @classmethod
    def linear(cls, steps: int, beta_start: float, beta_end: float) -> "Schedule":
        """DiffWave's schedule: ``steps`` betas evenly spaced from beta_start to beta_end (T=200, 1e-4..0.02)."""
        if steps < 1 or not 0 < beta_start <= beta_end < 1:
            raise ConfigError(f"diffusion schedule needs steps >= 1 and 0 < beta_start <= beta_end < 1, got "
                              f"steps={steps}, beta_start={beta_start}, beta_end={beta_end}")
        return cls(torch.linspace(beta_start, beta_end, steps, dtype=torch.float64))

    @property
    def T(self) -> int:
        return len(self.betas)

    @property
    def alphas(self) -> torch.Tensor:
        return 1 - self.betas

    @property
    def alpha_bar(self) -> torch.Tensor:
        return torch.cumprod(self.alphas, 0)

    @property
    def alpha_bar_prev(self) -> torch.Tensor:
        """alpha_bar_{t-1}, with 1 (the data) before step 0."""
        return torch.cat([self.betas.new_ones(1), self.alpha_bar[:-1]])

    def posterior_variances(self) -> torch.Tensor:
        """beta~_t for every t (T,): the variance of q(x_{t-1} | x_t, x0); 0 at t = 0."""
        return (1 - self.alpha_bar_prev) / (1 - self.alpha_bar) * self.betas

    # ----- the forward process
    def q_mean_std(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t), per row of ``like``: x_t = mean * x0 + std * eps."""
        ab = self.alpha_bar
        return _at(ab.sqrt(), t, like), _at((1 - ab).sqrt(), t, like)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps: a draw of q(x_t | x0) given the noise eps."""
        mean, std = self.q_mean_std(t, x0)
        return mean * x0 + std * eps

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The x0 that q_sample would turn into x_t with noise eps (q_sample solved for x0)."""
        mean, std = self.q_mean_std(t, x_t)
        return (x_t - std * eps) / mean

    # ----- the posterior q(x_{t-1} | x_t, x0)
    def posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab, ab_prev = self.alpha_bar, self.alpha_bar_prev
        c0 = ab_prev.sqrt() * self.betas / (1 - ab)
        ct = self.alphas.sqrt() * (1 - ab_prev) / (1 - ab)
        return _at(c0, t, x0) * x0 + _at(ct, t, x_t) * x_t

    def posterior_variance(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return _at(self.posterior_variances(), t, like)


def _at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] as a (B, 1, ...) tensor that broadcasts against ``like`` (B, ...), in its dtype and device."""
    picked = values[t.long().cpu()].to(device=like.device, dtype=like.dtype)  # (B,)
    return picked.view(-1, *([1] * (like.dim() - 1)))
