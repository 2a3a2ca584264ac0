"""Loading a priming prefix: checked strictly, because a silently resampled or down-mixed prime would make
"continue this audio" continue something else."""
from __future__ import annotations

import os

import numpy as np
import torch

from sashimi.audio.io import audio_info, load_audio
from sashimi.audio.quantize import make_quantizer
from sashimi.errors import AudioError, ConfigError
from sashimi.models.config import SaShiMiConfig


def load_prime(path: str | os.PathLike, config: SaShiMiConfig, seconds: float | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """The first ``seconds`` (all if None) of a mono file at the model's sample rate -> (wave (T,), tokens (T,))."""
    if seconds is not None and not seconds > 0:
        raise ConfigError(f"--prime-seconds must be > 0, got {seconds}")
    info = audio_info(path)  # AudioError for missing, empty or corrupt files
    if info.sample_rate != config.sample_rate:
        raise AudioError(f"{path}: prime is sampled at {info.sample_rate} Hz but the model generates at "
                         f"{config.sample_rate} Hz; resample it first")
    if info.channels != 1:
        raise AudioError(f"{path}: prime has {info.channels} channels; expected mono audio")
    n = info.frames if seconds is None else int(round(seconds * config.sample_rate))
    if n > info.frames:
        raise AudioError(f"{path}: prime is {info.duration:.3f} s long, shorter than the requested {seconds} s")
    wave, _ = load_audio(path)
    wave = wave[:n]
    tokens = make_quantizer(config.quantization, config.bits).encode(torch.from_numpy(wave))
    return wave, tokens
