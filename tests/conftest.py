import os
from pathlib import Path

import pytest
import torch

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "official_sashimi_small.pt"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def reference_path() -> Path:
    path = Path(os.environ.get("SASHIMI_REFERENCE", REFERENCE))
    if not path.exists():
        pytest.fail(f"reference fixture missing: {path} (set SASHIMI_REFERENCE)")
    return path


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def unroll(module, x: torch.Tensor):
    """Step ``module`` over x (B L ...) from its default state: (outputs stacked on dim 1, final state)."""
    state = module.default_state(x.shape[0])
    ys = []
    for t in range(x.shape[1]):
        y, state = module.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, dim=1), state


DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def make_digit_tones(root: Path, n_speakers: int = 5, sr: int = 16000, seconds: float = 1.0) -> Path:
    """A Speech Commands layout of one-second tones a classifier can tell apart: class w is a tone at
    200 * 1.35^w Hz, each speaker with its own level and vibrato; speaker 0 is validation, speaker 1 test."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(int(sr * seconds)) / sr
    valid, test = [], []
    for w, word in enumerate(DIGIT_WORDS):
        for s in range(n_speakers):
            rel = f"{word}/spk{s:04d}_nohash_0.wav"
            f0 = 200 * 1.35**w * (1 + 0.01 * np.sin(2 * np.pi * (3 + s) * t))
            wave = (0.2 + 0.1 * s / n_speakers) * np.sin(2 * np.pi * np.cumsum(f0) / sr) + 0.005 * rng.standard_normal(len(t))
            (root / word).mkdir(parents=True, exist_ok=True)
            sf.write(root / rel, wave.astype(np.float32), sr, subtype="PCM_16")
            (valid if s == 0 else test if s == 1 else []).append(rel)
    (root / "validation_list.txt").write_text("\n".join(valid) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.fixture(scope="session")
def digit_tones(tmp_path_factory) -> Path:
    return make_digit_tones(tmp_path_factory.mktemp("digit_tones"))
