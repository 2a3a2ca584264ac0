"""The classifier's log-mel features: exactly librosa's, with the settings the official classifier used."""
import librosa
import numpy as np
import pytest

from sashimi.metrics.features import CLIP_LEN, fix_length, log_mel, mel_power


def _clip(seed: int, n: int = CLIP_LEN) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) * np.exp(-2 * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)


def _librosa_direct(wave: np.ndarray) -> np.ndarray:
    """The official transform written out: melspectrogram with librosa < 0.10's defaults, then power_to_db."""
    s = librosa.feature.melspectrogram(y=wave, sr=16000, n_mels=32, n_fft=2048, hop_length=512, power=2.0,
                                       center=True, pad_mode="reflect")
    return librosa.power_to_db(s, ref=np.max)


def test_features_equal_a_direct_librosa_call():
    wave = _clip(0)
    image = log_mel(wave)
    assert image.shape == (32, 32) and image.dtype == np.float32
    np.testing.assert_allclose(image, _librosa_direct(wave), rtol=0, atol=1e-4)
    assert image.max() == 0.0 and image.min() >= -80.0  # ref=max per clip, top_db 80


def test_pinned_pad_mode_is_reflect_not_librosa_0_10_default():
    """librosa 0.10 changed the centred-frame padding from reflect to constant; we pin reflect, the mode
    the official classifier was trained with. The two differ in the edge frames only."""
    wave = _clip(1)
    constant = librosa.feature.melspectrogram(y=wave, sr=16000, n_mels=32, pad_mode="constant")
    reflect = mel_power(wave[None])[0]
    np.testing.assert_allclose(reflect, librosa.feature.melspectrogram(y=wave, sr=16000, n_mels=32,
                                                                       pad_mode="reflect"), rtol=1e-5)
    assert np.abs(reflect[:, 0] / constant[:, 0] - 1).max() > 0.05  # the first frame sees the padding
    np.testing.assert_allclose(reflect[:, 4:28], constant[:, 4:28], rtol=1e-5)  # the middle frames do not


def test_batch_equals_clip_by_clip_each_with_its_own_reference():
    waves = np.stack([_clip(s) * (10.0 ** -s) for s in range(3)])  # very different levels
    batch = log_mel(waves)
    for i in range(3):
        np.testing.assert_allclose(batch[i], log_mel(waves[i]), atol=1e-5)
        assert batch[i].max() == 0.0


def test_clips_are_cut_or_zero_padded_to_one_second():
    long, short = _clip(2, 20000), _clip(3, 9000)
    np.testing.assert_array_equal(fix_length(long), long[:CLIP_LEN])
    padded = fix_length(short)
    assert len(padded) == CLIP_LEN and not padded[9000:].any()
    np.testing.assert_allclose(log_mel(long), log_mel(long[:CLIP_LEN]), atol=1e-6)


@pytest.mark.parametrize("n", [1, 16000])
def test_degenerate_clips_give_finite_images(n):
    assert np.isfinite(log_mel(np.zeros(n, np.float32))).all()
