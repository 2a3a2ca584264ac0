"""Waveform augmentation for training the evaluation classifier, after the official recipe.

Each transform is applied with probability ``p`` (0.5 in the official recipe), in this order:
amplitude (scale by U(0.7, 1.1)), speed and pitch together (resample by linear interpolation with a factor
1 + U(-0.2, 0.2)), the clip cut or padded back to one second, time shift (by up to 0.2 s, zero-filled), and
background noise mixed in as ``wave * (1 - a) + noise * a`` with a ~ U(0, 0.45). The official code mixed in
the recordings of Speech Commands' ``_background_noise_`` folder; where a dataset has none (the built-in
digits) the noise is synthetic: white noise through a random one-pole low-pass (white to brown), at a random
level. Every draw comes from the numpy Generator passed in, so an item's augmentation is fixed by its seed.

Shapes: L = samples (16,000 at 16 kHz).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from sashimi.errors import ConfigError
from sashimi.metrics.features import fix_length


@dataclass
class AugmentConfig:
    p: float = 0.5  # probability of each transform
    amplitude: tuple[float, ...] = (0.7, 1.1)
    speed: float = 0.2  # max relative speed change (also changes pitch)
    shift_seconds: float = 0.2
    noise: float = 0.45  # max mixing weight of the background noise
    noise_rms: tuple[float, ...] = (0.003, 0.08)  # level of the synthetic noise

    def __post_init__(self):
        self.amplitude, self.noise_rms = tuple(self.amplitude), tuple(self.noise_rms)
        if not 0 <= self.p <= 1 or not 0 <= self.noise < 1 or not 0 <= self.speed < 1 or self.shift_seconds < 0:
            raise ConfigError("augment: p in [0, 1], noise in [0, 1), speed in [0, 1), shift_seconds >= 0")
        if len(self.amplitude) != 2 or len(self.noise_rms) != 2:
            raise ConfigError("augment.amplitude and augment.noise_rms: two numbers [low, high]")


def change_speed(wave: np.ndarray, factor: float) -> np.ndarray:
    """(L,) -> (about L / factor,): play ``factor`` times faster (pitch moves with it)."""
    positions = np.arange(0, len(wave), factor)
    return np.interp(positions, np.arange(len(wave)), wave).astype(np.float32)


def time_shift(wave: np.ndarray, shift: int) -> np.ndarray:
    """(L,) -> (L,): content moved ``shift`` samples later (earlier if negative), zeros shifted in."""
    out = np.zeros_like(wave)
    if shift >= 0:
        out[shift:] = wave[:len(wave) - shift]
    else:
        out[:shift] = wave[-shift:]
    return out


def synthetic_noise(length: int, rng: np.random.Generator, rms_range: tuple[float, float]) -> np.ndarray:
    """(length,) coloured noise: white through a one-pole low-pass with a random pole, at a random RMS."""
    pole = rng.uniform(0.0, 0.99)
    noise = lfilter([1.0], [1.0, -pole], rng.standard_normal(length))
    noise *= rng.uniform(*rms_range) / max(np.sqrt(np.mean(noise**2)), 1e-12)
    return noise.astype(np.float32)


def augment(wave: np.ndarray, rng: np.random.Generator, config: AugmentConfig, *, length: int,
            sample_rate: int, noise_bank: list[np.ndarray] | None = None) -> np.ndarray:
    """(L,) float32 -> (length,) float32, augmented with the draws of ``rng``."""
    c = config
    if rng.random() < c.p:
        wave = wave * np.float32(rng.uniform(*c.amplitude))
    if rng.random() < c.p:
        wave = change_speed(wave, 1.0 / (1.0 + rng.uniform(-c.speed, c.speed)))
    wave = fix_length(wave, length)
    if rng.random() < c.p:
        max_shift = int(c.shift_seconds * sample_rate)
        wave = time_shift(wave, int(rng.integers(-max_shift, max_shift + 1)))
    if rng.random() < c.p:
        wave = _mix_noise(wave, rng, c, noise_bank)
    return wave.astype(np.float32)


def _mix_noise(wave: np.ndarray, rng: np.random.Generator, c: AugmentConfig,
               noise_bank: list[np.ndarray] | None) -> np.ndarray:
    if noise_bank:
        source = noise_bank[int(rng.integers(len(noise_bank)))]
        start = int(rng.integers(0, max(1, len(source) - len(wave) + 1)))
        noise = fix_length(source[start:start + len(wave)], len(wave))
    else:
        noise = synthetic_noise(len(wave), rng, c.noise_rms)
    weight = np.float32(rng.uniform(0.0, c.noise))
    return wave * (1 - weight) + noise * weight
