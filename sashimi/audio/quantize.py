"""Quantizers: float waveforms in [-1, 1] <-> integer tokens in [0, 2**bits).

Both quantizers are small stateless objects with the same interface, so the model and the data pipeline only
ever see `encode`, `decode`, `bits` and `n_classes`. Shapes are preserved: `encode` maps a float tensor of any
shape `(*)` to a LongTensor of the same shape, `decode` the other way.

The arithmetic is done in float64 numpy so that `encode(decode(t)) == t` holds exactly for every token at
any `bits` in 2..16 (float32 is not precise enough for 16-bit mu-law near full scale); `encode_array` /
`decode_array` are the numpy versions the data pipeline uses directly.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from sashimi.errors import AudioError, ConfigError

MIN_BITS, MAX_BITS = 2, 16
QUANTIZATION_KINDS = ("mu-law", "linear")
FLOAT_WAVE = "none"  # data.quantization for models of float waveforms (diffusion): no tokens, samples in [-1, 1]


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"bits must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    return bits


def _wave_array(wave: np.ndarray) -> np.ndarray:
    wave = np.asarray(wave)
    if not np.issubdtype(wave.dtype, np.floating):
        raise AudioError(f"quantizer expects a float waveform in [-1, 1], got dtype {wave.dtype}")
    if not np.isfinite(wave).all():
        raise AudioError("quantizer got a waveform with NaN or infinite samples")
    return np.clip(wave.astype(np.float64), -1.0, 1.0)


def _token_array(tokens: np.ndarray, n_classes: int) -> np.ndarray:
    tokens = np.asarray(tokens)
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ConfigError(f"decode expects integer tokens, got dtype {tokens.dtype}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= n_classes):
        raise ConfigError(f"tokens must lie in [0, {n_classes}), got range [{tokens.min()}, {tokens.max()}]")
    return tokens.astype(np.float64)


class _Quantizer:
    """Tensor interface over the numpy math of a subclass (`encode_array` / `decode_array`).

    The math runs in numpy (single-threaded, float64) so that DataLoader items are cheap and exact; the
    tensor methods move data to the CPU and back to the input's device.
    """

    kind: str

    def __init__(self, bits: int = 8):
        self.bits = _check_bits(bits)
        self.n_classes = 2**bits

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """Float waveform `(*)` in [-1, 1] (values outside are clamped) -> LongTensor `(*)` of tokens."""
        wave = torch.as_tensor(wave)
        if not wave.is_floating_point():
            raise AudioError(f"quantizer expects a float waveform in [-1, 1], got dtype {wave.dtype}")
        tokens = self.encode_array(wave.detach().cpu().numpy())
        return torch.from_numpy(tokens).to(wave.device)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """LongTensor `(*)` of tokens -> float32 waveform `(*)`."""
        tokens = torch.as_tensor(tokens)
        if tokens.is_floating_point() or tokens.is_complex():
            raise ConfigError(f"decode expects integer tokens, got dtype {tokens.dtype}")
        return torch.from_numpy(self.decode_array(tokens.detach().cpu().numpy())).to(tokens.device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bits={self.bits})"


class MuLawQuantizer(_Quantizer):
    """mu-law companding with mu = 2**bits - 1, then uniform rounding of the companded value.

    encode: y = sign(x) * log1p(mu |x|) / log1p(mu) in [-1, 1];  t = round((y + 1) / 2 * mu) in [0, mu].
    decode: y = 2 t / mu - 1;  x = sign(y) * ((1 + mu)**|y| - 1) / mu.
    The reconstruction error of a sample is at most half the width of its (non-uniform) bin.
    """

    kind = "mu-law"

    def __init__(self, bits: int = 8):
        super().__init__(bits)
        self.mu = float(self.n_classes - 1)

    def encode_array(self, wave: np.ndarray) -> np.ndarray:
        x = _wave_array(wave)
        y = np.sign(x) * np.log1p(self.mu * np.abs(x)) / math.log1p(self.mu)
        return np.rint((y + 1.0) / 2.0 * self.mu).astype(np.int64)

    def decode_array(self, tokens: np.ndarray) -> np.ndarray:
        y = 2.0 * _token_array(tokens, self.n_classes) / self.mu - 1.0
        return (np.sign(y) * np.expm1(np.abs(y) * math.log1p(self.mu)) / self.mu).astype(np.float32)


class LinearQuantizer(_Quantizer):
    """Uniform bins over [-1, 1]: t = floor((x + 1) / 2 * n) clamped to [0, n - 1]; decode gives the bin centre.

    The reconstruction error is at most half a bin, 1 / n.
    """

    kind = "linear"

    def encode_array(self, wave: np.ndarray) -> np.ndarray:
        x = _wave_array(wave)
        return np.clip(np.floor((x + 1.0) / 2.0 * self.n_classes), 0, self.n_classes - 1).astype(np.int64)

    def decode_array(self, tokens: np.ndarray) -> np.ndarray:
        t = _token_array(tokens, self.n_classes)
        return ((t + 0.5) / self.n_classes * 2.0 - 1.0).astype(np.float32)


Quantizer = MuLawQuantizer | LinearQuantizer


def make_quantizer(kind: str, bits: int = 8) -> Quantizer:
    """Build a quantizer from its config name: "mu-law" or "linear"."""
    if kind == "mu-law":
        return MuLawQuantizer(bits)
    if kind == "linear":
        return LinearQuantizer(bits)
    raise ConfigError(f"quantization must be one of {', '.join(QUANTIZATION_KINDS)}; got {kind!r}")
