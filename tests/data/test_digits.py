import json
import re
import stat
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import sashimi.data.espeak as espeak
from sashimi.data import DIGITS, DataConfig, build_dataset
from sashimi.data.digits import split_voices, synth_digits, trim_silence
from sashimi.data.espeak import SynthesisError, open_synthesizer
from sashimi.errors import ConfigError


@pytest.fixture(scope="module")
def digits50(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    summary = synth_digits(root, n_clips=50, seed=0, workers=2, progress=False)
    return root, summary


def _read_list(root, name):
    return (root / name).read_text().split()


def test_clips_are_one_second_nonsilent_unclipped(digits50):
    root, summary = digits50
    files = sorted(root.glob("*/*.wav"))
    assert len(files) == 50 == summary.n_clips and summary.backend == "espeakng-loader"
    assert sorted({f.parent.name for f in files}) == sorted(DIGITS)
    for f in files:
        wave, sr = sf.read(f, dtype="float32")
        info = sf.info(f)
        assert (sr, info.channels, info.subtype, len(wave)) == (16000, 1, "PCM_16", 16000)
        assert 0.2 < np.abs(wave).max() < 0.99  # speech present, never at full scale
        rms = np.sqrt((wave.reshape(100, 160) ** 2).mean(axis=1))  # 10 ms frames
        assert (rms > 0.1 * rms.max()).mean() >= 0.05  # at least 50 ms of speech
        assert (rms < 0.05 * rms.max()).mean() >= 0.05  # and quiet background around the word
        assert np.abs(wave[:800]).max() < 0.05 or np.abs(wave[-800:]).max() < 0.05  # random offset leaves room


def test_split_by_voice(digits50):
    root, summary = digits50
    meta = json.loads((root / "digits.json").read_text())
    voices = {s: set(v) for s, v in meta["voices"].items()}
    assert not (voices["train"] & voices["valid"]) and not (voices["train"] & voices["test"])
    assert not (voices["valid"] & voices["test"]) and all(voices.values())
    by_path = {c["path"]: c for c in meta["clips"]}
    valid, test = _read_list(root, "validation_list.txt"), _read_list(root, "testing_list.txt")
    assert all(by_path[p]["variant"] in voices["valid"] for p in valid)
    assert all(by_path[p]["variant"] in voices["test"] for p in test)
    train = set(by_path) - set(valid) - set(test)
    assert all(by_path[p]["variant"] in voices["train"] for p in train)
    assert summary.clips_per_split == {"train": len(train), "valid": len(valid), "test": len(test)}
    for c in meta["clips"]:
        assert 120 <= c["rate"] <= 240 and 20 <= c["pitch"] <= 80 and c["accent"].startswith("en")


def test_loads_as_a_dataset_like_sc09(digits50):
    root, summary = digits50
    for split, n in summary.clips_per_split.items():
        ds = build_dataset(DataConfig(name="digits", root=str(root)), split)
        assert len(ds) == n and ds.index.bad == []
        if n:
            assert ds[0].shape == (16000,) and 0 <= int(ds[0].min()) and int(ds[0].max()) < 256


def test_reproducible_for_any_worker_count_and_seeded(digits50, tmp_path):
    root, _ = digits50
    again = synth_digits(tmp_path / "again", n_clips=50, seed=0, workers=1, progress=False)
    for f in sorted(root.glob("*/*.wav")):
        assert f.read_bytes() == (Path(again.root) / f.relative_to(root)).read_bytes()
    other = synth_digits(tmp_path / "other", n_clips=20, seed=1, workers=1, progress=False)
    assert sorted(p.name for p in Path(other.root).glob("*/*.wav")) != sorted(
        p.name for p in root.glob("*/*.wav"))[:20]


def test_regenerating_replaces_and_foreign_folder_is_refused(tmp_path):
    root = tmp_path / "d"
    synth_digits(root, n_clips=20, workers=1, progress=False)
    synth_digits(root, n_clips=10, workers=1, progress=False)
    assert len(list(root.glob("*/*.wav"))) == 10
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="is not empty and holds no digits.json"):
        synth_digits(tmp_path / "mine", n_clips=10)
    with pytest.raises(ConfigError, match="n_clips must be an integer >= 10"):
        synth_digits(tmp_path / "x", n_clips=5)


def test_voice_split_and_trim_helpers():
    voices = split_voices([f"v{i}" for i in range(20)], seed=3)
    assert [len(voices[s]) for s in ("train", "valid", "test")] == [16, 2, 2]
    assert split_voices([f"v{i}" for i in range(20)], seed=3) == voices
    with pytest.raises(SynthesisError, match="at least 3 distinct"):
        split_voices(["a", "b"], 0)
    wave = np.concatenate([np.zeros(1600), 0.5 * np.ones(3200), 1e-4 * np.ones(1600)])
    assert len(trim_silence(wave)) == 3200


def test_missing_espeak_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import fails
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SynthesisError, match="pip install espeakng-loader.*apt-get install espeak-ng"):
        open_synthesizer()


FAKE_ESPEAK = """\
#!{python} -S
# stands in for the espeak-ng program (stdlib only, starts fast): a tone whose length follows the rate
import math, struct, sys, wave
args = sys.argv[1:]
if args == ["--version"]:
    print("eSpeak NG text-to-speech: 1.51  Data at: {data}")
    sys.exit(0)
voice = args[args.index("-v") + 1]
if voice.split("+")[0] not in ("en", "en-us"):
    sys.exit(1)
if "-w" in args:
    rate = int(args[args.index("-s") + 1]) if "-s" in args else 175
    n = int(22050 * 60 / rate)
    samples = [int(9000 * math.sin(2 * math.pi * 300 * i / 22050)) for i in range(n)]
    with wave.open(args[args.index("-w") + 1], "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(22050)
        w.writeframes(struct.pack(f"<{{n}}h", *samples))
"""


def test_falls_back_to_the_espeak_program(tmp_path, monkeypatch):
    data = tmp_path / "espeak-ng-data"
    (data / "voices" / "!v").mkdir(parents=True)
    for v in ("m1", "m2", "f1", "f2"):
        (data / "voices" / "!v" / v).write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "espeak-ng"
    exe.write_text(textwrap.dedent(FAKE_ESPEAK.format(python=sys.executable, data=data)))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(espeak, "LibEspeak", lambda: (_ for _ in ()).throw(SynthesisError("no wheel")))
    synth = open_synthesizer("auto")
    assert synth.name == "espeak-ng program" and synth.variants == ["f1", "f2", "m1", "m2"]
    summary = synth_digits(tmp_path / "out", n_clips=10, workers=1, progress=False)
    assert summary.backend == "espeak-ng program" and summary.accents == ["en-us", "en"]
    for f in (tmp_path / "out").glob("*/*.wav"):
        wave, sr = sf.read(f)
        assert sr == 16000 and len(wave) == 16000 and np.abs(wave).max() > 0.2


def test_no_noise_gives_the_same_clips_without_their_background(digits50, tmp_path):
    root, _ = digits50
    clean = tmp_path / "clean"
    synth_digits(clean, n_clips=50, seed=0, workers=1, progress=False, noise=False)
    meta_noisy = json.loads((root / "digits.json").read_text())
    meta_clean = json.loads((clean / "digits.json").read_text())
    assert meta_noisy["background_noise"] is True and meta_clean["background_noise"] is False
    for name in ("validation_list.txt", "testing_list.txt"):
        assert _read_list(root, name) == _read_list(clean, name)
    for noisy_clip, clean_clip in zip(meta_noisy["clips"], meta_clean["clips"]):
        assert clean_clip["snr_db"] is None
        assert {k: v for k, v in clean_clip.items() if k != "snr_db"} == \
            {k: v for k, v in noisy_clip.items() if k != "snr_db"}
        noisy, _ = sf.read(root / noisy_clip["path"], dtype="float64")
        speech, _ = sf.read(clean / clean_clip["path"], dtype="float64")
        assert (speech == 0).mean() > 0.2 and (noisy == 0).mean() < 0.1  # digital silence only without noise
        loud = np.abs(speech) > 0  # the word (the noise is measured against the word's RMS)
        snr = 10 * np.log10(np.mean(speech[loud] ** 2) / np.mean((noisy - speech) ** 2))
        assert 24 < snr < 46 + 3, (noisy_clip["path"], snr, noisy_clip["snr_db"])


def test_voices_and_accents_narrow_the_set(tmp_path):
    summary = synth_digits(tmp_path / "plain", n_clips=20, seed=0, workers=1, progress=False, noise=False,
                           voices=["m3", "f1", "m1"], accents=["en-us"])
    assert summary.accents == ["en-us"]
    split = summary.voices_per_split
    assert sorted(v for vs in split.values() for v in vs) == ["f1", "m1", "m3"]
    assert all(len(vs) == 1 for vs in split.values())  # still one unseen voice for valid and for test
    meta = json.loads((tmp_path / "plain" / "digits.json").read_text())
    assert {c["accent"] for c in meta["clips"]} == {"en-us"}
    assert {c["variant"] for c in meta["clips"]} <= {"f1", "m1", "m3"}


VOICES = {"voices": ["m3", "f1", "m1"], "accents": ["en-us"]}


@pytest.fixture(scope="module")
def default_meta(tmp_path_factory) -> dict:
    """digits.json of 20 noiseless clips drawn with the default ranges: what a narrowed set is compared with."""
    summary = synth_digits(tmp_path_factory.mktemp("default"), n_clips=20, seed=0, workers=1, progress=False,
                           noise=False, **VOICES)
    return json.loads((Path(summary.root) / "digits.json").read_text())


def narrowed(root: Path, default: dict, keep: tuple[str, ...], **ranges) -> dict:
    """The same 20 clips with narrower ``ranges``; asserts that the draws named in ``keep`` did not change."""
    summary = synth_digits(root, n_clips=20, seed=0, workers=1, progress=False, noise=False, **VOICES, **ranges)
    meta = json.loads((Path(summary.root) / "digits.json").read_text())
    assert [[c[k] for k in keep] for c in meta["clips"]] == [[c[k] for k in keep] for c in default["clips"]]
    return meta


def test_rate_and_pitch_ranges_narrow_the_draws_and_keep_the_rest(tmp_path, default_meta):
    meta = narrowed(tmp_path / "narrow", default_meta, ("word", "variant", "accent", "peak", "offset", "split"),
                    rates=(170, 170), pitches=(40, 50))
    assert meta["rates"] == [170, 170] and meta["pitches"] == [40, 50] and default_meta["rates"] == [120, 240]
    assert {c["rate"] for c in meta["clips"]} == {170}
    assert all(40 <= c["pitch"] <= 50 for c in meta["clips"])


def test_word_start_places_each_word_and_keeps_the_rest(tmp_path, default_meta):
    meta = narrowed(tmp_path / "fixed", default_meta, ("word", "variant", "accent", "peak", "offset", "split"),
                    starts=(100, 150))
    assert meta["starts"] == [100, 150] and default_meta["starts"] is None
    assert all(100 <= c["start_ms"] <= 150 for c in meta["clips"])
    assert {c["start_ms"] for c in default_meta["clips"]} == {None}
    for clip in meta["clips"]:  # the word begins where asked (its first sample above a whisper)
        wave, rate = sf.read(tmp_path / "fixed" / clip["path"])
        first = np.flatnonzero(np.abs(wave) > 1e-3)[0] / rate * 1000
        assert clip["start_ms"] <= first < clip["start_ms"] + 15, (clip["path"], first)


def test_a_peak_range_sets_each_words_level_and_keeps_the_rest(tmp_path, default_meta):
    meta = narrowed(tmp_path / "level", default_meta, ("word", "variant", "accent", "rate", "pitch", "offset",
                                                        "split"), peaks=(60, 60))
    assert meta["peaks"] == [60, 60] and default_meta["peaks"] == [25, 85]
    assert {c["peak"] for c in meta["clips"]} == {0.6}
    assert all(0.25 <= c["peak"] <= 0.85 for c in default_meta["clips"])
    for clip in meta["clips"]:
        wave, _ = sf.read(tmp_path / "level" / clip["path"])
        assert abs(np.abs(wave).max() - 0.6) < 1e-3, clip["path"]


@pytest.mark.parametrize("value", [(100, 90), (10, 100), (170,), (1.5, 2), 170, "170"])
def test_a_bad_rate_range_is_a_one_line_error(tmp_path, value):
    with pytest.raises(ConfigError, match=r"^rates: expected \(low, high\) integers with 80 <= low <= high <= 450, "
                                          rf"got {re.escape(repr(value))}$"):
        synth_digits(tmp_path / "x", n_clips=10, progress=False, rates=value)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("field, value, message", [
    ("voices", ["m1", "no-such-voice"], "no-such-voice not available; choose from"),
    ("accents", ["en-xx"], "en-xx not available; choose from"),
    ("voices", [], "none given; choose from"),
    ("voices", ["m1", "m2"], r"need at least 3 \(one each for train, valid and test\), got m1, m2"),
])
def test_unknown_voice_or_accent_is_a_one_line_error(tmp_path, field, value, message):
    with pytest.raises(ConfigError, match=f"^{field}: {message}"):
        synth_digits(tmp_path / "x", n_clips=10, progress=False, **{field: value})
    assert not (tmp_path / "x").exists()  # refused before anything is written
