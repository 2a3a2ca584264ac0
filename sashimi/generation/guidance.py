"""Classifier-free guidance for a conditional model trained with ``model.label_dropout``.

One inner step (any backend) runs 2B rows: rows 0..B-1 with each sequence's label, rows B..2B-1 with
``NO_LABEL`` (the zero label vector, the unconditional mode label dropout trains). Every sample is drawn from

    l = l_u + w (l_c - l_u)        (B C): w = 1 is plain conditional sampling, w > 1 leans on the label

and fed back to both halves, so the two rows of a sequence always hold the same audio. Shapes: B sequences,
C classes, n steps.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from sashimi.errors import ConfigError
from sashimi.generation import loop
from sashimi.generation.sampling import SamplingSettings, sample
from sashimi.models.lm import NO_LABEL, SaShiMiLM


def check_guidance(model: SaShiMiLM, weight: float) -> None:
    """A one-line error unless ``model`` can be guided with ``weight``."""
    if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
        raise ConfigError(f"guidance must be a finite number >= 0 (1 = plain conditional sampling), got {weight!r}")
    if not model.n_labels:
        raise ConfigError("guidance needs a conditional model (model.labels); this one is unconditional")
    if not model.config.label_dropout:
        raise ConfigError("guidance needs a model trained with model.label_dropout > 0 (its unconditional mode); "
                          "this one was trained with every label")


def guided_labels(labels: torch.Tensor) -> torch.Tensor:
    """labels (B,) -> (2B,): the labels, then NO_LABEL for each sequence's unconditional row."""
    return torch.cat([labels, torch.full_like(labels, NO_LABEL)])


class GuidedStep:
    """The step interface (``step``, ``steps``, ``forced``, ``load_state``, ``backend``, ``threads``) over an
    inner step of 2B rows built with ``guided_labels``. ``forced`` and prefill logits are the inner rows'
    (n 2B C); ``draw`` turns such logits into a sample."""

    def __init__(self, inner, weight: float, settings: SamplingSettings, n_classes: int):
        self.inner, self.weight, self.settings, self.n_classes = inner, float(weight), settings, n_classes
        self.backend = inner.backend

    @property
    def threads(self) -> int:
        return self.inner.threads

    def load_state(self, state) -> None:
        self.inner.load_state(state)  # a state of 2B rows (prefill with guided_labels)

    def mix(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., 2B, C) inner logits -> (..., B, C) guided logits."""
        cond, uncond = logits.chunk(2, dim=-2)
        return uncond + self.weight * (cond - uncond)

    def draw(self, logits: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """inner logits (2B C), u (B) -> token (B), its log-prob under the conditional model (B), guided (B C)."""
        guided = self.mix(logits)
        token, _ = sample(guided, u, self.settings)
        cond = logits[: token.shape[0]]
        logp = F.log_softmax(cond.float(), dim=-1).gather(-1, token[:, None])[:, 0]
        return token, logp, guided

    def step(self, token: torch.Tensor, u: torch.Tensor):
        """token (B), u (B) -> token (B), log-prob (B), guided logits (B C)."""
        logits = self.inner.step(token.repeat(2), u.repeat(2))[2]  # (2B C); the inner step's own sample unused
        return self.draw(logits, u)

    def steps(self, token: torch.Tensor, u: torch.Tensor):
        """u (n B): n steps, each sample fed back -> tokens (n B), log-probs (n B), last guided logits (B C)."""
        threads = contextlib.nullcontext() if self.backend == "native" else loop.torch_threads(self.threads)
        with threads:
            return loop.steps(self.step, token, u, self.n_classes)

    def forced(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (n B) consumed in turn by both halves -> the inner logits of every step (n 2B C)."""
        return self.inner.forced(tokens.repeat(1, 2))
