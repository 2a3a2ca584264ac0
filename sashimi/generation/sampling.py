"""Sampling one token per sequence from logits: temperature, top-k, top-p (nucleus), by inverse CDF.

Shapes: B = batch, C = classes. The randomness comes in as uniforms u (B,) in [0, 1), drawn by the caller from
per-sequence generators, so a sequence's samples depend only on its seed (not on the batch it is in) and the
same function runs in the eager reference step and inside the compiled fast step.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from sashimi.errors import ConfigError


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 1.0  # > 0; logits are divided by it before filtering
    top_p: float = 1.0  # in (0, 1]: keep the smallest set of tokens whose probability reaches top_p
    top_k: int = 0  # 0: off; else keep the k most likely tokens

    def __post_init__(self):
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ConfigError(f"temperature must be > 0, got {self.temperature!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ConfigError(f"top_k must be a non-negative integer (0 = off), got {self.top_k!r}")

    @property
    def filtered(self) -> bool:
        return self.top_p < 1 or self.top_k > 0

    def to_dict(self) -> dict:
        return asdict(self)


def sample(logits: torch.Tensor, u: torch.Tensor, settings: SamplingSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B C), u (B) uniform in [0, 1) -> token (B) long, log p(token) (B) under the model itself.

    The log-probability is the model's (temperature 1, unfiltered), so summing it gives the likelihood a
    teacher-forced forward pass assigns to the generated audio.
    """
    logp = F.log_softmax(logits.float(), dim=-1)  # (B C)
    scaled = logits.float() / settings.temperature
    if settings.filtered:
        scaled, order = scaled.sort(dim=-1, descending=True, stable=True)  # (B C), most likely first; ties by class
        probs = F.softmax(scaled, dim=-1)
        keep = probs.cumsum(-1) - probs < settings.top_p  # the most likely token is always kept
        if settings.top_k:
            keep &= torch.arange(probs.shape[-1], device=probs.device) < settings.top_k
        token = order.gather(-1, _inverse_cdf(probs * keep, u)[:, None])[:, 0]
    else:
        token = _inverse_cdf(F.softmax(scaled, dim=-1), u)
    return token, logp.gather(-1, token[:, None])[:, 0]


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Index of the first class whose cumulative (unnormalised) probability exceeds u * total. (B C) -> (B)."""
    cdf = probs.cumsum(-1)
    target = u[:, None] * cdf[:, -1:]
    return (cdf <= target).sum(-1).clamp(max=probs.shape[-1] - 1)
