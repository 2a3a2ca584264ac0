import numpy as np
import pytest
import soundfile as sf
import torch

from sashimi.audio.io import audio_info, load_audio, read_frames, resample, save_wav
from sashimi.errors import AudioError


def _sine(freq, sr, seconds=1.0, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wave, sr):
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return np.fft.rfftfreq(len(wave), 1 / sr)[spectrum.argmax()]


@pytest.mark.parametrize("orig_sr", [44100, 22050, 48000, 8000])
def test_resampler_keeps_1khz_sine_at_1khz(tmp_path, orig_sr):
    path = save_wav(tmp_path / "sine.wav", _sine(1000, orig_sr), orig_sr)
    wave, sr = load_audio(path, 16000)
    assert sr == 16000 and wave.dtype == np.float32 and abs(len(wave) - 16000) <= 1
    assert abs(_peak_hz(wave, 16000) - 1000) < 2
    assert abs(np.abs(wave).max() - 0.5) < 0.02  # level kept


def test_resampler_does_not_alias_7500hz_sine():
    # 7.5 kHz is below the new Nyquist (8 kHz): it must stay at 7.5 kHz, not fold to 8.5->7.5 image elsewhere
    wave = resample(_sine(7500, 44100, 2.0), 44100, 16000)
    assert abs(_peak_hz(wave, 16000) - 7500) < 2
    # 10 kHz is above the new Nyquist: a band-limited resampler removes it instead of folding it to 6 kHz
    folded = resample(_sine(10000, 44100, 2.0), 44100, 16000)
    assert np.sqrt(np.mean(folded[1000:-1000] ** 2)) < 1e-3
    # naive decimation (what we must not do) would alias it to 6 kHz at full level
    naive = np.interp(np.arange(32000) * 44100 / 16000, np.arange(88200), _sine(10000, 44100, 2.0))
    assert abs(_peak_hz(naive, 16000) - 6000) < 5


def test_stereo_mixdown_and_channel_first(tmp_path):
    left, right = _sine(440, 16000), np.zeros(16000, np.float32)
    path = tmp_path / "st.flac"
    sf.write(path, np.stack([left, right], axis=1), 16000)
    mono, sr = load_audio(path)
    both, _ = load_audio(path, mono=False)
    assert mono.shape == (16000,) and both.shape == (2, 16000) and sr == 16000
    np.testing.assert_allclose(mono, (both[0] + both[1]) / 2, atol=1e-6)
    info = audio_info(path)
    assert (info.channels, info.frames, info.sample_rate, info.format) == (2, 16000, 16000, "FLAC")
    assert info.duration == 1.0


def test_read_frames_random_access(tmp_path):
    wave = np.linspace(-1, 1, 50000, dtype=np.float32)
    path = save_wav(tmp_path / "ramp.wav", wave, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(read_frames(path, 12345, 1000), wave[12345:13345])
    with pytest.raises(AudioError, match="expected 1000 samples from offset 49500"):
        read_frames(path, 49500, 1000)


def test_save_wav_accepts_torch_and_rejects_bad_waves(tmp_path):
    path = save_wav(tmp_path / "sub" / "t.wav", torch.zeros(2, 100), 8000)
    assert audio_info(path).channels == 2
    with pytest.raises(AudioError, match="expected \\[-1, 1\\]"):
        save_wav(tmp_path / "loud.wav", np.full(10, 1.5), 8000)
    with pytest.raises(AudioError, match="NaN"):
        save_wav(tmp_path / "nan.wav", np.array([0.0, np.nan]), 8000)


def test_bad_files_raise_audio_error_naming_the_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage that is not audio" * 10)
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros(0, np.float32), 16000)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.0, np.nan, 0.1], np.float32), 16000, subtype="FLOAT")
    cases = [
        (empty, "empty.wav: file is empty"),
        (corrupt, "corrupt.wav: cannot"),
        (zero, "zero.wav: contains no samples"),
        (nan, "nan.wav: contains 1 NaN"),
        (tmp_path / "missing.wav", "missing.wav: no such audio file"),
    ]
    for path, message in cases:
        with pytest.raises(AudioError, match=message):
            load_audio(path, 16000)
    with pytest.raises(AudioError, match="corrupt.wav: cannot read audio header"):
        audio_info(corrupt)


def test_a_name_that_is_not_utf8_is_a_clear_error(tmp_path):
    import os

    import numpy as np
    import pytest
    import soundfile as sf

    from sashimi.audio.io import audio_info, load_audio
    from sashimi.errors import AudioError

    good = tmp_path / "a.wav"
    sf.write(str(good), np.zeros(100, np.float32), 8000)
    bad = os.path.join(os.fsencode(tmp_path), b"caf\xe9.wav")
    os.rename(os.fsencode(good), bad)
    for read in (audio_info, lambda p: load_audio(p)):
        with pytest.raises(AudioError, match="not valid UTF-8"):
            read(os.fsdecode(bad))
