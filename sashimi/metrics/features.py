"""The SC09 evaluation classifier's input: a 1x32x32 log-mel image per one-second clip at 16 kHz.

This is the feature of the official SaShiMi evaluation protocol (state-spaces/s4,
``models/sashimi/sc09_classifier``), computed with librosa itself so the numbers are librosa's:

1. the clip is cut, or zero-padded at the end, to 16,000 samples;
2. ``librosa.feature.melspectrogram`` with 32 mel bands and the STFT settings that librosa used by default
   when the official classifier was trained: n_fft 2048, hop 512, Hann window, power 2, centred frames
   padded in **reflect** mode (librosa 0.10 changed the default pad mode to "constant"; we pin "reflect"),
   Slaney mel filters from 0 Hz to 8 kHz;
3. ``librosa.power_to_db(S, ref=np.max)`` per clip (amin 1e-10, top_db 80: values in [-80, 0] dB).

16,000 samples with a hop of 512 and centred frames give 1 + 16000 // 512 = 32 frames.

Shapes: B = clips, L = samples, M = 32 mel bands, F = 32 frames.
"""
from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
CLIP_LEN = 16000
N_MELS = 32
N_FFT = 2048
HOP = 512
PAD_MODE = "reflect"  # librosa < 0.10's default, which the official classifier was trained with


def fix_length(waves: np.ndarray, length: int = CLIP_LEN) -> np.ndarray:
    """(..., L) -> (..., length): cut at the end or zero-pad at the end."""
    n = waves.shape[-1]
    if n >= length:
        return waves[..., :length]
    pad = [(0, 0)] * (waves.ndim - 1) + [(0, length - n)]
    return np.pad(waves, pad)


def mel_power(waves: np.ndarray) -> np.ndarray:
    """(B, L) float waves at 16 kHz -> (B, M, F) mel power spectrograms (librosa, batched)."""
    import librosa

    waves = fix_length(np.asarray(waves, dtype=np.float32))
    return librosa.feature.melspectrogram(y=waves, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, power=2.0,
                                          center=True, pad_mode=PAD_MODE, n_mels=N_MELS)


def power_to_db_per_clip(power: np.ndarray) -> np.ndarray:
    """(B, M, F) -> (B, M, F): ``librosa.power_to_db(ref=np.max)`` of each clip on its own."""
    import librosa

    return np.stack([librosa.power_to_db(p, ref=np.max) for p in power]).astype(np.float32)


def log_mel(waves: np.ndarray) -> np.ndarray:
    """(B, L) or (L,) float waves at 16 kHz -> (B, 32, 32) float32 log-mel images (one per clip)."""
    waves = np.asarray(waves)
    single = waves.ndim == 1
    images = power_to_db_per_clip(mel_power(waves[None] if single else waves))
    return images[0] if single else images
