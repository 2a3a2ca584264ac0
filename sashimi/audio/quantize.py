"""Quantizers: float waveforms in [-1, 1] <-> integer tokens in [0, 2**bits).

Both quantizers are small stateless objects with the same interface, so the model and the data pipeline only
ever see `encode`, `decode`, `bits` and `n_classes`. Shapes are preserved: `encode` maps a float tensor of any
shape `(*)` to a LongTensor of the same shape, `decode` the other way.

The arithmetic is done in float64 so that `encode(decode(t)) == t` holds exactly for every token at any
`bits` in 2..16 (float32 is not precise enough for 16-bit mu-law near full scale).
"""
from __future__ import annotations

import math

import torch

from sashimi.errors import AudioError, ConfigError

MIN_BITS, MAX_BITS = 2, 16
QUANTIZATION_KINDS = ("mu-law", "linear")


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"bits must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    return bits


def _as_float64(wave: torch.Tensor) -> torch.Tensor:
    wave = torch.as_tensor(wave)
    if not wave.is_floating_point():
        raise AudioError(f"quantizer expects a float waveform in [-1, 1], got dtype {wave.dtype}")
    if not bool(torch.isfinite(wave).all()):
        raise AudioError("quantizer got a waveform with NaN or infinite samples")
    return wave.to(torch.float64).clamp(-1.0, 1.0)


def _check_tokens(tokens: torch.Tensor, n_classes: int) -> torch.Tensor:
    tokens = torch.as_tensor(tokens)
    if tokens.is_floating_point() or tokens.is_complex():
        raise ConfigError(f"decode expects integer tokens, got dtype {tokens.dtype}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= n_classes):
        raise ConfigError(f"tokens must lie in [0, {n_classes}), got range [{int(tokens.min())}, {int(tokens.max())}]")
    return tokens.to(torch.float64)


class MuLawQuantizer:
    """mu-law companding with mu = 2**bits - 1, then uniform rounding of the companded value.

    encode: y = sign(x) * log1p(mu |x|) / log1p(mu) in [-1, 1];  t = round((y + 1) / 2 * mu) in [0, mu].
    decode: y = 2 t / mu - 1;  x = sign(y) * ((1 + mu)**|y| - 1) / mu.
    The reconstruction error of a sample is at most half the width of its (non-uniform) bin.
    """

    kind = "mu-law"

    def __init__(self, bits: int = 8):
        self.bits = _check_bits(bits)
        self.n_classes = 2**bits
        self.mu = float(self.n_classes - 1)

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        x = _as_float64(wave)
        y = torch.sign(x) * torch.log1p(self.mu * x.abs()) / math.log1p(self.mu)
        return torch.round((y + 1.0) / 2.0 * self.mu).long()

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        y = 2.0 * _check_tokens(tokens, self.n_classes) / self.mu - 1.0
        x = torch.sign(y) * torch.expm1(y.abs() * math.log1p(self.mu)) / self.mu
        return x.to(torch.float32)

    def __repr__(self) -> str:
        return f"MuLawQuantizer(bits={self.bits})"


class LinearQuantizer:
    """Uniform bins over [-1, 1]: t = floor((x + 1) / 2 * n) clamped to [0, n - 1]; decode gives the bin centre.

    The reconstruction error is at most half a bin, 1 / n.
    """

    kind = "linear"

    def __init__(self, bits: int = 8):
        self.bits = _check_bits(bits)
        self.n_classes = 2**bits

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        x = _as_float64(wave)
        return torch.floor((x + 1.0) / 2.0 * self.n_classes).clamp(0, self.n_classes - 1).long()

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        t = _check_tokens(tokens, self.n_classes)
        return ((t + 0.5) / self.n_classes * 2.0 - 1.0).to(torch.float32)

    def __repr__(self) -> str:
        return f"LinearQuantizer(bits={self.bits})"


Quantizer = MuLawQuantizer | LinearQuantizer


def make_quantizer(kind: str, bits: int = 8) -> Quantizer:
    """Build a quantizer from its config name: "mu-law" or "linear"."""
    if kind == "mu-law":
        return MuLawQuantizer(bits)
    if kind == "linear":
        return LinearQuantizer(bits)
    raise ConfigError(f"quantization must be one of {', '.join(QUANTIZATION_KINDS)}; got {kind!r}")
