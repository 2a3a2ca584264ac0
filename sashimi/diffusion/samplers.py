"""Samplers of a trained noise predictor: ancestral DDPM over all T steps, and deterministic DDIM on a subsequence.

``eps_fn(x_t, t) -> eps`` is the network: x_t (B, L), t (B,) integer steps, the predicted noise (B, L).
Each row of the batch draws its noise from its own generator (``SeededNoise``), so a seed gives the same audio
whatever the batch it is generated in. The formulas are the schedule's (``sashimi.diffusion.schedule``):

    DDPM (Ho et al. 2020), t = T-1 .. 0:  x0^ = predict_x0(x_t, t, eps);  x_{t-1} = posterior_mean(x0^, x_t, t)
                                          + sqrt(beta~_t) z   (no noise at t = 0, where beta~ is 0)
    DDIM (Song et al. 2021, eta = 0) on steps t_S > ... > t_1:  x_{t'} = q_sample(x0^, t', eps), the previous
                                          step t' of the subsequence; after t_1 the sample is x0^.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from sashimi.diffusion.schedule import Schedule
from sashimi.errors import ConfigError

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SeededNoise:
    """Standard normal draws, one generator per batch row (seeded with that row's seed), made on the CPU in
    float32 and moved to ``device``/``dtype``: a row's draws depend on its seed only."""

    def __init__(self, seeds: list[int], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.device, self.dtype = device, dtype

    def normal(self, length: int) -> torch.Tensor:
        """(B, length)."""
        rows = [torch.randn(length, generator=g) for g in self.generators]
        return torch.stack(rows).to(device=self.device, dtype=self.dtype)


def ddim_steps(T: int, steps: int) -> list[int]:
    """The subsequence of ``steps`` diffusion steps DDIM visits, last step first: evenly spaced over 0 .. T-1,
    always including T-1 (where sampling starts from pure noise) and 0."""
    if not 1 <= steps <= T:
        raise ConfigError(f"DDIM steps must be in 1..{T} (the model's diffusion steps), got {steps}")
    if steps == 1:
        return [T - 1]
    picked = torch.linspace(0, T - 1, steps, dtype=torch.float64).round().long().unique()
    return picked.flip(0).tolist()


@torch.no_grad()
def ddpm_sample(eps_fn: EpsFn, schedule: Schedule, noise: SeededNoise, length: int,
                on_step: Callable[[], None] | None = None) -> torch.Tensor:
    """Ancestral sampling over all T steps with the posterior variance beta~; returns x0 (B, length)."""
    x = noise.normal(length)  # x_{T-1} ~ N(0, I)
    for step in reversed(range(schedule.T)):
        t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
        x0 = schedule.predict_x0(x, t, eps_fn(x, t))
        x = schedule.posterior_mean(x0, x, t)
        if step > 0:
            x = x + schedule.posterior_variance(t, x).sqrt() * noise.normal(length)
        if on_step is not None:
            on_step()
    return x


@torch.no_grad()
def ddim_sample(eps_fn: EpsFn, schedule: Schedule, noise: SeededNoise, length: int, steps: int,
                on_step: Callable[[], None] | None = None) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) with ``steps`` network evaluations; returns x0 (B, length)."""
    visit = ddim_steps(schedule.T, steps)
    x = noise.normal(length)
    for k, step in enumerate(visit):
        t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
        eps = eps_fn(x, t)
        x0 = schedule.predict_x0(x, t, eps)
        if k + 1 < len(visit):
            x = schedule.q_sample(x0, torch.full_like(t, visit[k + 1]), eps)
        else:
            x = x0
        if on_step is not None:
            on_step()
    return x
