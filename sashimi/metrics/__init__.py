"""Likelihood metrics of autoregressive token models (negative log-likelihood in nats and bits per sample)."""
from sashimi.metrics.likelihood import LikelihoodTotals, bits_per_sample, token_nll

__all__ = ["LikelihoodTotals", "bits_per_sample", "token_nll"]
