"""Builders of small fake datasets on disk (Speech Commands trees, folders of long recordings)."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sashimi.data.datasets import DIGITS


def tone(n: int, sr: int = 16000, freq: float = 440.0, amp: float = 0.3, phase: float = 0.0) -> np.ndarray:
    t = np.arange(n) / sr
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def make_speech_commands(root: Path, speakers=("aaaa1111", "bbbb2222", "cccc3333", "dddd4444"),
                         extra_words=("yes", "marvin"), lengths=(16000, 12000)) -> dict[str, list[str]]:
    """A tiny Speech Commands v0.02 tree: speaker 2 is validation, speaker 3 test, the rest train."""
    rels = []
    for w, word in enumerate(list(DIGITS) + list(extra_words)):
        for s, spk in enumerate(speakers):
            rel = f"{word}/{spk}_nohash_0.wav"
            n = lengths[(w + s) % len(lengths)]
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, tone(n, freq=200 + 50 * w + 7 * s), 16000, subtype="PCM_16")
            rels.append(rel)
    (root / "_background_noise_").mkdir(exist_ok=True)
    sf.write(root / "_background_noise_" / "white.wav", tone(48000), 16000)
    valid = [r for r in rels if speakers[2:3] and speakers[2] in r]
    test = [r for r in rels if speakers[3:4] and speakers[3] in r]
    (root / "validation_list.txt").write_text("\n".join(valid) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    digits = [r for r in rels if r.split("/")[0] in DIGITS]
    return {
        "train": sorted(r for r in digits if r not in valid and r not in test),
        "valid": sorted(r for r in digits if r in valid),
        "test": sorted(r for r in digits if r in test),
    }


def make_long_files(root: Path, lengths, sr: int = 16000, prefix: str = "track") -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i, n in enumerate(lengths):
        name = f"{prefix}{i:03d}.wav"
        sf.write(root / name, tone(n, sr, freq=100 + 30 * i, phase=i), sr, subtype="FLOAT")
        names.append(name)
    return names


@pytest.fixture
def sc_root(tmp_path):
    root = tmp_path / "speech_commands"
    expected = make_speech_commands(root)
    return root, expected
