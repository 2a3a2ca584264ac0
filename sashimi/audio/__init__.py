"""Audio I/O (soundfile + soxr) and token quantizers."""
from sashimi.audio.io import AUDIO_EXTENSIONS, AudioInfo, audio_info, load_audio, read_frames, resample, save_wav
from sashimi.audio.quantize import LinearQuantizer, MuLawQuantizer, make_quantizer

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioInfo",
    "LinearQuantizer",
    "MuLawQuantizer",
    "audio_info",
    "load_audio",
    "make_quantizer",
    "read_frames",
    "resample",
    "save_wav",
]
