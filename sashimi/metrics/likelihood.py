"""Exact dataset negative log-likelihood: sums over every real (unpadded) sample, divided once at the end.

Shapes: B = batch, L = length, C = 2^bits classes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def bits_per_sample(nll_nats: float) -> float:
    """Mean NLL per sample in nats -> bits (the number the papers report)."""
    return nll_nats / math.log(2)


def token_nll(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """logits (B L C), tokens (B L) -> NLL in nats (B L), computed in float32 or better."""
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    # over the last (class) axis: ~2.5x faster forward+backward than cross-entropy over a transposed axis
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1), reduction="none")
    return nll.view(tokens.shape)


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """lengths (B,) -> mask (B L): True at real samples, False at right padding."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


@dataclass
class LikelihoodTotals:
    """Running sums over a dataset: NLL (nats), samples, correct argmax predictions."""

    nll: float = 0.0
    samples: int = 0
    correct: int = 0

    def add(self, logits: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor | None = None) -> None:
        """Accumulate a batch: logits (B L C), tokens (B L), lengths (B,) or None (no padding)."""
        nll = token_nll(logits, tokens)  # (B L)
        hit = logits.argmax(-1) == tokens  # (B L)
        if lengths is not None:
            mask = length_mask(lengths, tokens.shape[1])
            nll, hit = nll[mask], hit[mask]
        self.nll += float(nll.double().sum())
        self.samples += int(nll.numel())
        self.correct += int(hit.sum())

    def merge(self, other: "LikelihoodTotals") -> "LikelihoodTotals":
        return LikelihoodTotals(self.nll + other.nll, self.samples + other.samples, self.correct + other.correct)

    @property
    def loss(self) -> float:
        """Mean NLL per sample in nats."""
        return self.nll / max(self.samples, 1)

    @property
    def bits_per_sample(self) -> float:
        return bits_per_sample(self.loss)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.samples, 1)

    def to_dict(self) -> dict:
        return {"loss": self.loss, "bits_per_sample": self.bits_per_sample, "accuracy": self.accuracy,
                "samples": self.samples, "nll_nats_total": self.nll}
