"""The denoising objective: predict the noise eps of x_t = q_sample(x0, t, eps), scored by its mean squared error
(Ho et al. 2020, L_simple; DiffWave's loss).

Each example draws its step and noise from its own generator, seeded by the example's identity (its position in
the training stream, or its index in an evaluation split): a loss does not depend on how examples are batched,
on the number of processes, or on a resume.

Evaluation splits the T steps into ``N_BANDS`` bands of equal width ([0, 50), [50, 100), ... for T = 200) and
scores every example once per band, at a step drawn uniformly inside it, so each band's loss says how well the
model denoises at that noise level; their mean is an unbiased estimate of the training objective.

Shapes: B = batch, L = length (the longest item; ``lengths`` (B,) marks the real samples of each row).
"""
from __future__ import annotations

import torch

N_BANDS = 4


def example_generator(seed: int, index: int) -> torch.Generator:
    """The generator of example ``index`` under ``seed`` (distinct for indices below 2^40)."""
    return torch.Generator().manual_seed((int(seed) * (1 << 40) + int(index)) % (1 << 63))


def _draw(generators: list[torch.Generator], lengths: list[int], L: int, low: int, high: int, like: torch.Tensor):
    """Per row: a step in [low, high) and unit normal noise over its first lengths[b] samples (zeros after)."""
    t = torch.cat([torch.randint(low, high, (1,), generator=g) for g in generators])  # (B,)
    eps = torch.zeros(len(generators), L)
    for b, (g, n) in enumerate(zip(generators, lengths)):
        eps[b, :n] = torch.randn(n, generator=g)
    return t.to(like.device), eps.to(device=like.device, dtype=like.dtype)  # (B,), (B L)


def denoising_loss(model, x0: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """Mean squared error of the predicted noise over x0 (B L), each row at a uniformly drawn step."""
    B, L = x0.shape
    t, eps = _draw(generators, [L] * B, L, 0, model.schedule.T, x0)
    x_t = model.schedule.q_sample(x0, t, eps)
    return torch.mean((model(x_t, t) - eps) ** 2)


def band_edges(T: int, n_bands: int = N_BANDS) -> list[tuple[int, int]]:
    """[(low, high), ...]: the steps 0 .. T-1 cut into min(n_bands, T) bands of (nearly) equal width."""
    n = min(n_bands, T)
    cuts = [round(k * T / n) for k in range(n + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def band_name(low: int, high: int, T: int) -> str:
    """Metric name of a band: ``loss_t000_050`` for [0, 50) (zero-padded to T's digits)."""
    w = len(str(T))
    return f"loss_t{low:0{w}d}_{high:0{w}d}"


class BandTotals:
    """Summed squared errors and sample counts per band of diffusion steps (float64; summable over processes)."""

    def __init__(self, T: int, sse: torch.Tensor | None = None, count: torch.Tensor | None = None):
        n = len(band_edges(T))
        self.T = T
        self.sse = torch.zeros(n, dtype=torch.float64) if sse is None else sse  # (bands,)
        self.count = torch.zeros(n, dtype=torch.float64) if count is None else count  # (bands,)

    @torch.no_grad()
    def add(self, model, x0: torch.Tensor, lengths: torch.Tensor, generators: list[torch.Generator]) -> None:
        """Score every row of x0 (B L) once per band (``generators``: one per row, drawn band after band)."""
        B, L = x0.shape
        mask = (torch.arange(L, device=x0.device)[None] < lengths.to(x0.device)[:, None]).to(x0.dtype)  # (B L)
        for k, (low, high) in enumerate(band_edges(self.T)):
            t, eps = _draw(generators, lengths.tolist(), L, low, high, x0)
            x_t = model.schedule.q_sample(x0, t, eps)  # zero where x0 is padding (x0 = eps = 0)
            err = (model(x_t, t) - eps) ** 2 * mask
            self.sse[k] += err.sum().double().cpu()
            self.count[k] += mask.sum().double().cpu()

    def to_tensor(self) -> torch.Tensor:
        """(2, bands): for a sum over processes; ``BandTotals.from_tensor`` reads it back."""
        return torch.stack([self.sse, self.count])

    @classmethod
    def from_tensor(cls, T: int, sums: torch.Tensor) -> "BandTotals":
        sums = sums.double().cpu()
        return cls(T, sums[0].clone(), sums[1].clone())

    def losses(self) -> dict[str, float]:
        """{"loss": mean of the band losses, "loss_t000_050": ..., ...}: mean squared error per noise sample."""
        per_band = (self.sse / self.count.clamp_min(1)).tolist()
        names = [band_name(low, high, self.T) for low, high in band_edges(self.T)]
        return {"loss": sum(per_band) / len(per_band), **dict(zip(names, per_band))}

    @property
    def samples(self) -> int:
        """Audio samples scored (each once per band)."""
        return int(self.count[0]) if len(self.count) else 0
