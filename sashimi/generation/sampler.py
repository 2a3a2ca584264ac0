"""Batched ancestral sampling in recurrent mode, streamed chunk by chunk.

Shapes: B = batch (one sequence per seed), T = prime length, c = chunk length, C = classes.

A ``Sampler`` holds the model state for B sequences and yields their new tokens (B c) one chunk at a time, so
memory stays O(state) however long the output. Sequence i draws its uniforms from its own generator seeded
with ``seeds[i]``: its audio depends on its seed only, not on the batch it was generated in. The exact
log-likelihood of what was sampled, log p(x_T ..), is accumulated in float64 as it goes.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from sashimi.errors import ConfigError, SashimiError
from sashimi.generation.backends import make_step
from sashimi.generation.fast import FastLM
from sashimi.generation.guidance import GuidedStep, check_guidance, guided_labels
from sashimi.generation.sampling import SamplingSettings, sample
from sashimi.models.lm import SaShiMiLM


# A prime is consumed in convolution mode (fast, but its activations grow with its length: ~1 KB per sample of
# the 110k-parameter demo model, more for wider ones) up to this many samples over the batch, and stepped
# through the recurrence after that (O(state) memory), so a prime of any length fits.
PREFILL_CONV_SAMPLES = 1 << 19
FORCE_CHUNK = 4096  # steps per teacher-forced call (its logits are returned: n x B x C floats)


class GenerationError(SashimiError):
    """Sampling went wrong (e.g. the model produced NaN/inf logits); the message names the step."""


class Sampler:
    """Generate ``len(seeds)`` sequences from ``model``, optionally continuing ``prime`` tokens (B T) or (T,);
    ``labels`` (B,): the label of each sequence, for a conditional model (``model.labels``); ``guidance`` w:
    sample from l_u + w (l_c - l_u) (``guidance.py``; needs a model trained with ``model.label_dropout``)."""

    def __init__(self, model: SaShiMiLM, seeds: list[int], settings: SamplingSettings = SamplingSettings(),
                 prime: torch.Tensor | None = None, backend: str | None = None, *, threads: int | None = None,
                 march: str = "native", chunked: bool = True, like: FastLM | None = None,
                 weights: str = "float32", labels: torch.Tensor | list[int] | None = None,
                 guidance: float | None = None):
        if not seeds:
            raise ConfigError("need at least one seed (one per sequence)")
        model.eval()  # dropout off: sampling follows the model's distribution
        self.model, self.settings, self.seeds = model, settings, list(seeds)
        B = len(self.seeds)
        device = model.head.weight.device
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.long, device=device)
        self._rngs = [torch.Generator(device="cpu").manual_seed(int(s)) for s in self.seeds]
        self.guidance = guidance
        if guidance is not None:
            check_guidance(model, guidance)
            model.label_vectors(self.labels, B)  # checked before they are doubled
        rows, step_labels = (B, self.labels) if guidance is None else (2 * B, guided_labels(self.labels))
        like = like.inner if isinstance(like, GuidedStep) else like
        # the step of ``backend`` (backends.make_step: native, inductor, eager or reference; falling back with a
        # warning), reusing the conversion of ``like`` (an earlier Sampler's step for the same model) if given
        self.backend = make_step(model, rows, settings, backend, threads=threads, march=march, chunked=chunked,
                                 like=like, weights=weights, labels=step_labels)
        if guidance is not None:  # the inner step runs each sequence twice: with its label and without
            self.backend = GuidedStep(self.backend, guidance, settings, model.n_classes)
        self._step_labels = step_labels
        self.log_likelihood = torch.zeros(B, dtype=torch.float64)  # nats, of the generated samples
        self.n_generated = 0
        self._token = torch.full((B,), model.bos, dtype=torch.long, device=device)
        self._pending = None  # logits (B C) of the next sample when a prime was consumed by prefill
        self.prime = self._prefill(prime, B) if prime is not None else None

    def _prefill(self, prime: torch.Tensor, B: int) -> torch.Tensor:
        prime = torch.as_tensor(prime, dtype=torch.long, device=self._token.device)
        prime = prime.expand(B, -1) if prime.dim() == 1 else prime
        if prime.dim() != 2 or prime.shape[0] != B:
            raise ConfigError(f"prime must be (T,) or ({B}, T) tokens, got shape {tuple(prime.shape)}")
        if prime.shape[1] == 0:
            return prime
        rows = prime if self.guidance is None else prime.repeat(2, 1)  # guided: both halves consume the prime
        head = max(1, min(prime.shape[1], PREFILL_CONV_SAMPLES // len(rows)))  # convolution mode's memory ~ B*T
        logits, state = self.model.prefill(rows[:, :head], self._step_labels)
        self.backend.load_state(state)
        self._pending = self._teacher_force(prime[:, head:], logits)
        return prime

    @torch.no_grad()
    def _teacher_force(self, tokens: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Step the rest of a long prime (B T') through the recurrent step (``forced``), in O(state) memory and
        chunks of FORCE_CHUNK steps; returns the step's logits (B C, guided: 2B C) of the sample after it."""
        for start in range(0, tokens.shape[1], FORCE_CHUNK):
            logits = self.backend.forced(tokens[:, start:start + FORCE_CHUNK].T)[-1]  # (B C), guided (2B C)
        return logits

    def _uniforms(self, n: int) -> torch.Tensor:
        """(n B) uniforms, column i from sequence i's own generator."""
        return torch.stack([torch.rand(n, generator=g, dtype=torch.float64) for g in self._rngs], dim=1).float()

    def chunks(self, n_samples: int, chunk_size: int = 4000) -> Iterator[torch.Tensor]:
        """Yield the next ``n_samples`` tokens of every sequence as (B c) chunks of up to ``chunk_size``."""
        if n_samples < 0 or chunk_size <= 0:
            raise ConfigError(f"n_samples must be >= 0 and chunk_size > 0, got {n_samples}, {chunk_size}")
        for start in range(0, n_samples, chunk_size):
            yield self._chunk(min(chunk_size, n_samples - start))

    @torch.no_grad()
    def _chunk(self, n: int) -> torch.Tensor:
        u = self._uniforms(n).to(self._token.device)  # (n B)
        tokens = torch.empty(n, len(self.seeds), dtype=torch.long, device=u.device)
        logps = torch.empty(n, len(self.seeds), dtype=torch.float32, device=u.device)
        token, k = self._token, 0
        if self._pending is not None:  # first sample after a prime: its logits came from prefill
            token, logp = self._draw(self._pending, u[0])
            self._pending = None
            tokens[0], logps[0], k = token, logp, 1
        if k < n:  # the rest, each sample fed back (the native backend runs this loop in C++)
            tokens[k:], logps[k:], _ = self.backend.steps(token, u[k:])
            token = tokens[n - 1].clone()
        self._check(logps)
        self._token = token
        self.log_likelihood += logps.double().sum(0).cpu()
        self.n_generated += n
        return tokens.T.contiguous()  # (B n)

    def _draw(self, logits: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.guidance is None:
            return sample(logits, u, self.settings)
        return self.backend.draw(logits, u)[:2]

    def _check(self, logps: torch.Tensor) -> None:
        bad = ~torch.isfinite(logps)
        if bad.any():
            k, b = (int(i) for i in bad.nonzero()[0])
            offset = 0 if self.prime is None else self.prime.shape[1]
            raise GenerationError(f"the model produced NaN/inf logits at generated sample {self.n_generated + k} "
                                  f"(audio sample {offset + self.n_generated + k}) of sequence {b} "
                                  f"(seed {self.seeds[b]}); stopping")

    @property
    def bits_per_sample(self) -> torch.Tensor:
        """(B) average negative log2-likelihood of the generated samples."""
        return -self.log_likelihood / max(self.n_generated, 1) / math.log(2)


@dataclass
class Generation:
    tokens: torch.Tensor  # (B T+n): the prime (if any) followed by the generated samples
    log_likelihood: torch.Tensor  # (B) float64, nats, of the generated samples only
    bits_per_sample: torch.Tensor  # (B)
    seeds: list[int]


def generate(model: SaShiMiLM, n_samples: int, seeds: list[int], settings: SamplingSettings = SamplingSettings(),
             prime: torch.Tensor | None = None, backend: str | None = None, chunk_size: int = 4000,
             threads: int | None = None, labels: torch.Tensor | list[int] | None = None,
             guidance: float | None = None) -> Generation:
    """Generate everything in memory (convenient for short outputs; use ``Sampler.chunks`` to stream).
    ``backend``: see ``backends.make_step``; ``labels`` (B,): one per seed, for a conditional model;
    ``guidance``: see ``Sampler``."""
    sampler = Sampler(model, seeds, settings, prime=prime, backend=backend, threads=threads, labels=labels,
                      guidance=guidance)
    parts = [] if sampler.prime is None else [sampler.prime]
    parts += list(sampler.chunks(n_samples, chunk_size))
    tokens = torch.cat(parts, dim=1) if parts else torch.empty(len(seeds), 0, dtype=torch.long)
    return Generation(tokens, sampler.log_likelihood, sampler.bits_per_sample, sampler.seeds)
