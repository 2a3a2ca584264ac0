import logging
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from sashimi.data.synthetic import make_speech_commands_tree as make_speech_commands, tone

from sashimi.audio.quantize import MuLawQuantizer
from sashimi.data import DIGITS, DataConfig, build_dataset
from sashimi.errors import AudioError, ConfigError


def _cfg(root, **kw):
    return DataConfig(name="sc09", root=str(root), **kw)


def test_split_follows_the_lists_and_keeps_only_digits(sc_root):
    root, expected = sc_root
    for split in ("train", "valid", "test"):
        ds = build_dataset(_cfg(root), split)
        assert [ds.index.files[i].path for i in ds.file_ids] == expected[split]
        assert ds.labels == [DIGITS.index(p.split("/")[0]) for p in expected[split]]
    assert (len(expected["train"]), len(expected["valid"]), len(expected["test"])) == (20, 10, 10)


def test_items_are_padded_token_clips(sc_root):
    root, expected = sc_root
    ds = build_dataset(_cfg(root), "train")
    q = MuLawQuantizer(8)
    for i in range(len(ds)):
        item = ds[i]
        assert item.dtype == torch.long and item.shape == (16000,)
        wave, _ = sf.read(root / expected["train"][i], dtype="float32")
        assert torch.equal(item[: len(wave)], q.encode(torch.from_numpy(wave)))
        assert bool((item[len(wave):] == q.encode(torch.zeros(1))).all())  # padded with silence
    assert len({len(sf.read(root / p)[0]) for p in expected["train"]}) == 2  # both lengths were exercised


def test_linear_16_bit_and_other_sample_rate(sc_root):
    root, _ = sc_root
    ds = build_dataset(_cfg(root, quantization="linear", bits=16, sample_rate=8000, sample_len=8000), "valid")
    item = ds[0]
    assert item.shape == (8000,) and int(item.max()) < 2**16
    # the resampled copies live in the cache, the originals are untouched
    assert ".sashimi_cache" in ds.index.files[0].read_path


def test_index_is_cached_and_rebuilt_when_files_change(sc_root, monkeypatch):
    root, expected = sc_root
    build_dataset(_cfg(root), "train")
    calls = []
    import sashimi.data.index as index_mod
    real = index_mod._index_one
    monkeypatch.setattr(index_mod, "_index_one", lambda *a: calls.append(a[1]) or real(*a))
    build_dataset(_cfg(root), "test")
    assert calls == []  # served from the cache
    path = root / expected["train"][0]
    sf.write(path, tone(8000), 16000)
    os.utime(path, ns=(1, 1))
    ds = build_dataset(_cfg(root), "train")
    assert len(calls) == 40 and len(ds) == 20


def test_bad_clips_are_skipped_listed_or_fatal_with_strict(sc_root, caplog):
    root, expected = sc_root
    (root / "one" / "empty_nohash_0.wav").write_bytes(b"")
    (root / "two" / "corrupt_nohash_0.wav").write_bytes(b"RIFF....WAVEfmt junk" * 20)
    sf.write(root / "three" / "stereo_nohash_0.wav", np.zeros((16000, 2), np.float32), 16000)
    sf.write(root / "four" / "rate_nohash_0.wav", tone(22050, 22050), 22050)
    sf.write(root / "five" / "long_nohash_0.wav", tone(20000), 16000)
    sf.write(root / "six" / "nan_nohash_0.wav", np.full(100, np.nan, np.float32), 16000, subtype="FLOAT")
    sf.write(root / "seven" / "zero_nohash_0.wav", np.zeros(0, np.float32), 16000)
    with caplog.at_level(logging.WARNING, logger="sashimi.data"):
        ds = build_dataset(_cfg(root), "train")
    assert len(ds) == 20  # bad ones skipped
    assert "skipped 7 bad audio file(s) of 47" in caplog.text
    listed = dict(line.split("\t") for line in open(ds.index.bad_list_path).read().splitlines())
    assert sorted(listed) == sorted(["one/empty_nohash_0.wav", "two/corrupt_nohash_0.wav",
                                     "three/stereo_nohash_0.wav", "four/rate_nohash_0.wav",
                                     "five/long_nohash_0.wav", "six/nan_nohash_0.wav", "seven/zero_nohash_0.wav"])
    assert "empty (0 bytes)" in listed["one/empty_nohash_0.wav"]
    assert "2 channels; expected a mono clip" in listed["three/stereo_nohash_0.wav"]
    assert "22050 Hz; expected 16000 Hz" in listed["four/rate_nohash_0.wav"]
    assert "20000 samples; expected a clip of at most 16000" in listed["five/long_nohash_0.wav"]
    assert "NaN" in listed["six/nan_nohash_0.wav"] and "no samples" in listed["seven/zero_nohash_0.wav"]
    with pytest.raises(AudioError, match="7 bad audio file\\(s\\).*strict mode"):
        build_dataset(_cfg(root, strict=True), "train")
    with pytest.raises(AudioError, match="five/long_nohash_0.wav: 20000 samples"):
        build_dataset(_cfg(root, strict=True, cache_dir=str(root.parent / "fresh")), "train")


def test_missing_lists_folders_and_bad_split(tmp_path, sc_root):
    root, _ = sc_root
    with pytest.raises(ConfigError, match="split must be one of train, valid, test; got 'validation'"):
        build_dataset(_cfg(root), "validation")
    (root / "testing_list.txt").unlink()
    with pytest.raises(ConfigError, match="testing_list.txt is missing"):
        build_dataset(_cfg(root), "train")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ConfigError, match="missing folder\\(s\\) zero, one"):
        build_dataset(_cfg(tmp_path / "elsewhere"), "train")
    with pytest.raises(ConfigError, match="does not exist"):
        build_dataset(_cfg(tmp_path / "nope"), "train")


def test_all_bad_is_an_error(tmp_path):
    root = tmp_path / "sc"
    make_speech_commands(root, speakers=("a", "b", "c"), extra_words=())
    for word in DIGITS:
        for spk in "abc":
            (root / word / f"{spk}_nohash_0.wav").write_bytes(b"")
    with pytest.raises(ConfigError, match="no usable audio files .* all 30 are bad"):
        build_dataset(_cfg(root), "train")
