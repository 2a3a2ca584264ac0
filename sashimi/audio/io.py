"""Reading, resampling and writing audio with soundfile (libsndfile) and soxr.

Arrays are float32. Mono waveforms are `(L,)`; multi-channel ones are channel-first `(C, L)`.
Every failure raises `AudioError` with the file name and what was expected.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from sashimi.errors import AudioError, ConfigError

# Extensions a folder scan picks up. MP3 needs libsndfile >= 1.1 (bundled with recent soundfile wheels).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")


@dataclass(frozen=True)
class AudioInfo:
    """What the file header says, without decoding the samples."""

    path: str
    sample_rate: int
    frames: int
    channels: int
    format: str  # e.g. "WAV", "FLAC"
    subtype: str  # e.g. "PCM_16", "FLOAT"

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def _check_file(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # libsndfile opens paths as UTF-8: such a name cannot be opened at all
        raise AudioError(f"{path.encode('utf-8', 'backslashreplace').decode()}: the file name is not valid UTF-8; "
                         "rename the file") from None
    if not os.path.isfile(path):
        raise AudioError(f"{path}: no such audio file")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: file is empty (0 bytes); expected audio data")
    return path


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Header information of an audio file (sample rate, frames, channels, format)."""
    path = _check_file(path)
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(f"{path}: cannot read audio header ({err}); expected WAV/FLAC/OGG/MP3") from None
    return AudioInfo(path, int(info.samplerate), int(info.frames), int(info.channels), info.format, info.subtype)


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling with soxr (high quality). `wave` is `(L,)` or `(C, L)`; the shape kind is kept."""
    for name, sr in (("orig_sr", orig_sr), ("target_sr", target_sr)):
        if not isinstance(sr, (int, np.integer)) or sr <= 0:
            raise ConfigError(f"{name} must be a positive integer sample rate, got {sr!r}")
    if orig_sr == target_sr:
        return np.asarray(wave, dtype=np.float32)
    wave = np.asarray(wave, dtype=np.float32)
    # soxr wants (L,) or (L, C)
    out = soxr.resample(wave.T if wave.ndim == 2 else wave, int(orig_sr), int(target_sr), quality="HQ")
    return np.ascontiguousarray(out.T if wave.ndim == 2 else out, dtype=np.float32)


def _decode(path: str, start: int = 0, frames: int = -1) -> tuple[np.ndarray, int]:
    """(C, L) float32 samples and the file's sample rate."""
    try:
        data, sr = sf.read(path, start=start, frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(f"{path}: cannot decode audio ({err}); the file is corrupt or not a supported format") from None
    return np.ascontiguousarray(data.T), int(sr)


def _validate(path: str, data: np.ndarray) -> None:
    if data.shape[1] == 0:
        raise AudioError(f"{path}: contains no samples (zero-length audio)")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(f"{path}: contains {bad} NaN or infinite samples; expected finite values in [-1, 1]")


def load_audio(path: str | os.PathLike, sample_rate: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """Decode a whole file, optionally mix down to mono and resample.

    Returns `(wave, sr)`: `wave` is float32 `(L,)` when `mono` (channels averaged) and `(C, L)` otherwise;
    `sr` is `sample_rate` when given, else the file's own rate.
    """
    path = _check_file(path)
    data, sr = _decode(path)  # (C, L)
    _validate(path, data)
    wave = data.mean(axis=0) if mono else data
    if sample_rate is not None and sample_rate != sr:
        wave = resample(wave, sr, sample_rate)
        sr = sample_rate
    return wave.astype(np.float32, copy=False), sr


def read_frames(path: str | os.PathLike, start: int, frames: int) -> np.ndarray:
    """Random access: `frames` samples from `start` (no resampling), mixed to mono, float32 `(frames,)`.

    Only the requested range is decoded (libsndfile seeks). Raises `AudioError` if the file ends early.
    """
    path = os.fspath(path)
    data, _ = _decode(path, start=start, frames=frames)
    if data.shape[1] != frames:
        raise AudioError(f"{path}: expected {frames} samples from offset {start}, got {data.shape[1]}; file changed?")
    return data.mean(axis=0) if data.shape[0] > 1 else data[0]


def save_wav(path: str | os.PathLike, wave, sample_rate: int, subtype: str = "PCM_16") -> Path:
    """Write a WAV file (parent folders are created). `wave` is `(L,)` or `(C, L)`, numpy or torch, in [-1, 1].

    Samples outside [-1, 1] are an error for integer subtypes rather than being clipped silently.
    """
    path = Path(path)
    wave = np.asarray(wave.detach().cpu().numpy() if hasattr(wave, "detach") else wave, dtype=np.float32)
    if wave.ndim not in (1, 2) or wave.shape[-1] == 0:
        raise AudioError(f"{path}: cannot write a waveform of shape {wave.shape}; expected (L,) or (C, L) with L > 0")
    if not np.isfinite(wave).all():
        raise AudioError(f"{path}: refusing to write NaN or infinite samples")
    if subtype.startswith("PCM") and np.abs(wave).max() > 1.0:
        raise AudioError(f"{path}: samples reach {np.abs(wave).max():.3f}; expected [-1, 1] for {subtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave.T if wave.ndim == 2 else wave, int(sample_rate), subtype=subtype, format="WAV")
    return path
