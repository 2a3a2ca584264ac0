"""A small Speech-Commands-layout dataset of tones on disk, and configs sized for CPU tests."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def make_tone_dataset(root: Path, n_speakers: int = 4, n_samples: int = 1200, sr: int = 16000) -> Path:
    """10 words x n_speakers clips of decaying tones; speaker 0 is validation, speaker 1 test."""
    rng = np.random.default_rng(0)
    valid, test = [], []
    for w, word in enumerate(DIGITS):
        for s in range(n_speakers):
            rel = f"{word}/spk{s:04d}_nohash_0.wav"
            t = np.arange(n_samples) / sr
            wave = 0.5 * np.exp(-3 * t) * np.sin(2 * np.pi * (150 + 40 * w + 5 * s) * t)
            wave += 0.01 * rng.standard_normal(n_samples)
            (root / word).mkdir(parents=True, exist_ok=True)
            sf.write(root / rel, wave.astype(np.float32), sr, subtype="PCM_16")
            (valid if s == 0 else test if s == 1 else []).append(rel)
    (root / "validation_list.txt").write_text("\n".join(valid) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.fixture(scope="session")
def tone_root(tmp_path_factory) -> Path:
    return make_tone_dataset(tmp_path_factory.mktemp("tones"), n_speakers=6)


@pytest.fixture(scope="session")
def tiny():
    return tiny_overrides


def tiny_overrides(root: Path, **extra) -> list[str]:
    """demo.yaml shortened: tiny model, 512-sample clips, a handful of steps, no progress bar."""
    values = {
        "data.name": "sc09", "data.root": str(root), "data.sample_len": 512, "model.l_max": 512,
        "trainer.batch_size": 4, "trainer.max_steps": 6, "trainer.val_every": 3, "trainer.checkpoint_every": 2,
        "trainer.log_every": 1, "trainer.progress_bar": "false", "trainer.val_batches": 2,
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]
