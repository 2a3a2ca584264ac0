import numpy as np
import pytest
import soundfile as sf

import sashimi
from sashimi.audio.quantize import make_quantizer
from sashimi.errors import AudioError, ConfigError
from sashimi.generation.prime import load_prime

CFG = sashimi.preset("tiny", sample_rate=8000)


def _wav(path, sr=8000, channels=1, seconds=0.5):
    wave = 0.3 * np.sin(np.linspace(0, 200, int(sr * seconds)))
    sf.write(str(path), np.stack([wave] * channels, 1) if channels > 1 else wave, sr, subtype="PCM_16")
    return path


def test_prime_is_cut_and_encoded(tmp_path):
    wave, tokens = load_prime(_wav(tmp_path / "p.wav"), CFG, seconds=0.25)
    assert wave.shape == (2000,) and tokens.shape == (2000,)
    assert np.allclose(make_quantizer("mu-law", 8).decode(tokens).numpy(), wave, atol=0.02)


@pytest.mark.parametrize("make,match", [
    (lambda p: _wav(p, sr=16000), "16000 Hz.*8000 Hz"),
    (lambda p: _wav(p, channels=2), "2 channels.*mono"),
    (lambda p: p.write_bytes(b"RIFF\x00\x00not really a wave file" * 10) and p, "cannot read audio header"),
    (lambda p: p.write_bytes(b"") or p, "empty"),
    (lambda p: p, "no such audio file"),
])
def test_bad_primes_give_clear_errors(tmp_path, make, match):
    path = make(tmp_path / "prime.wav")
    with pytest.raises(AudioError, match=match):
        load_prime(path, CFG)


def test_prime_shorter_than_requested(tmp_path):
    with pytest.raises(AudioError, match="shorter than the requested 2"):
        load_prime(_wav(tmp_path / "p.wav"), CFG, seconds=2)
    with pytest.raises(ConfigError, match="prime-seconds"):
        load_prime(tmp_path / "p.wav", CFG, seconds=-1)
