"""Synthetic datasets on disk (tones, not speech) for tests, benchmarks and trying the pipeline quickly.

`make_speech_commands_tree` writes a small Speech Commands v0.02 style tree; `make_long_recordings` writes
a folder of long files like YouTubeMix/Beethoven. Content is deterministic.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from sashimi.data.datasets import DIGITS, SPLIT_LISTS


def tone(n: int, sr: int = 16000, freq: float = 440.0, amp: float = 0.3, phase: float = 0.0) -> np.ndarray:
    """A sine `(n,)` float32."""
    t = np.arange(n) / sr
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def make_speech_commands_tree(root: str | Path, speakers=("aaaa1111", "bbbb2222", "cccc3333", "dddd4444"),
                              extra_words=("yes", "marvin"), lengths=(16000, 12000)) -> dict[str, list[str]]:
    """Write one clip per (word, speaker), the `_background_noise_` folder and the two split lists.

    The third speaker is listed for validation and the fourth for test. Returns the expected digit clips
    ("word/file.wav") of each split.
    """
    root = Path(root)
    rels = []
    for w, word in enumerate(list(DIGITS) + list(extra_words)):
        for s, spk in enumerate(speakers):
            rel = f"{word}/{spk}_nohash_0.wav"
            (root / word).mkdir(parents=True, exist_ok=True)
            n = lengths[(w + s) % len(lengths)]
            sf.write(root / rel, tone(n, freq=200 + 50 * w + 7 * s), 16000, subtype="PCM_16")
            rels.append(rel)
    (root / "_background_noise_").mkdir(exist_ok=True)
    sf.write(root / "_background_noise_" / "white.wav", tone(48000), 16000)
    valid = [r for r in rels if len(speakers) > 2 and speakers[2] in r]
    test = [r for r in rels if len(speakers) > 3 and speakers[3] in r]
    (root / SPLIT_LISTS["valid"]).write_text("".join(f"{r}\n" for r in valid))
    (root / SPLIT_LISTS["test"]).write_text("".join(f"{r}\n" for r in test))
    digits = [r for r in rels if r.split("/")[0] in DIGITS]
    return {
        "train": sorted(r for r in digits if r not in valid and r not in test),
        "valid": sorted(r for r in digits if r in valid),
        "test": sorted(r for r in digits if r in test),
    }


def make_long_recordings(root: str | Path, lengths, sr: int = 16000, prefix: str = "track",
                         subtype: str = "FLOAT") -> list[str]:
    """One WAV per entry of `lengths` (samples), named `<prefix>000.wav`, ...; returns the names."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i, n in enumerate(lengths):
        name = f"{prefix}{i:03d}.wav"
        sf.write(root / name, tone(n, sr, freq=100 + 30 * i, phase=i), sr, subtype=subtype)
        names.append(name)
    return names
