import logging

import numpy as np
import pytest
import soundfile as sf
import torch
from sashimi.data.synthetic import make_long_recordings as make_long_files, tone
from torch.utils.data import DataLoader

from sashimi.audio.quantize import LinearQuantizer
from sashimi.data import DataConfig, ResumableSampler, build_dataset, collate_tokens
from sashimi.data.datasets import eval_windows, split_counts, train_windows
from sashimi.errors import AudioError, ConfigError


def _cfg(root, name="folder", **kw):
    return DataConfig(name=name, root=str(root), **kw)


def test_split_counts_match_the_papers():
    assert split_counts(241) == (212, 14, 15)  # YouTubeMix
    assert split_counts(3808) == (3351, 228, 229)  # Beethoven
    assert split_counts(3) == (1, 1, 1)
    assert split_counts(10) == (8, 1, 1)
    with pytest.raises(ConfigError, match="need at least 3 audio files"):
        split_counts(2)


def test_train_windows_cover_the_file_with_overlap():
    assert train_windows(10, 4, 0) == [(0, 4), (4, 4), (6, 4)]
    assert train_windows(10, 4, 2) == [(0, 4), (2, 4), (4, 4), (6, 4)]
    assert train_windows(3, 4, 0) == [(0, 3)]
    assert eval_windows(10, 4) == [(0, 4), (4, 4), (8, 2)]
    assert eval_windows(10, None) == [(0, 10)]


@pytest.mark.parametrize("eval_len", [None, 1000, 4096])
def test_eval_items_cover_every_sample_exactly_once(tmp_path, eval_len):
    lengths = [5000, 7777, 3000, 12345, 4096, 100, 9000, 6000, 8000, 2500]
    names = make_long_files(tmp_path, lengths)
    q = LinearQuantizer(16)
    for split, ids in (("valid", [8]), ("test", [9])):
        ds = build_dataset(_cfg(tmp_path, sample_len=4096, quantization="linear", bits=16, eval_len=eval_len), split)
        covered = {}
        for i in range(len(ds)):
            f, start, length = ds.windows[i]
            item = ds[i]
            assert item.dtype == torch.long and item.ndim == 1 and len(item) == length
            for k in range(start, start + length):
                covered[(int(f), k)] = covered.get((int(f), k), 0) + 1
            wave = sf.read(tmp_path / ds.index.files[f].path, dtype="float32")[0]
            assert torch.equal(item, q.encode(torch.from_numpy(wave[start:start + length])))
        assert [ds.index.files[f].path for f in sorted({int(w[0]) for w in ds.windows})] == [names[i] for i in ids]
        expected = {(int(ds.windows[0][0]), k) for k in range(lengths[ids[0]])}
        assert set(covered) == expected and set(covered.values()) == {1}


def test_train_items_are_fixed_length_windows(tmp_path):
    lengths = [20000, 3000, 16384, 9000, 9000, 9000, 9000, 9000, 9000, 9000]
    names = make_long_files(tmp_path, lengths)
    ds = build_dataset(_cfg(tmp_path, name="youtubemix", sample_len=4096, overlap=1024), "train")
    assert len({int(w[0]) for w in ds.windows}) == 8
    for i in range(len(ds)):
        assert ds[i].shape == (4096,)
    f0 = [tuple(w[1:]) for w in ds.windows if ds.index.files[w[0]].path == names[0]]
    assert f0[:3] == [(0, 4096), (3072, 4096), (6144, 4096)] and f0[-1] == (20000 - 4096, 4096)
    short = [i for i, w in enumerate(ds.windows) if ds.index.files[w[0]].path == names[1]]
    assert len(short) == 1 and bool((ds[short[0]][3000:] == 128).all())  # zero-padded silence (mu-law 128)


def test_resampled_mixed_down_and_compressed_files(tmp_path):
    sf.write(tmp_path / "a_stereo44k.flac", np.stack([tone(44100, 44100), tone(44100, 44100)], 1), 44100)
    sf.write(tmp_path / "b_ogg.ogg", tone(32000, 32000), 32000, format="OGG", subtype="VORBIS")
    sf.write(tmp_path / "c_mono16k.wav", tone(16000), 16000)
    sf.write(tmp_path / "d_8k.wav", tone(8000, 8000), 8000)
    ds = build_dataset(_cfg(tmp_path, eval_len=None), "test")
    files = {f.path: f for f in ds.index.files}
    assert files["a_stereo44k.flac"].frames == 16000 and files["a_stereo44k.flac"].channels == 2
    assert files["b_ogg.ogg"].frames == 16000 and files["b_ogg.ogg"].read_path.endswith("b_ogg.ogg.wav")
    assert files["c_mono16k.wav"].read_path == str(tmp_path / "c_mono16k.wav")  # read in place
    assert files["d_8k.wav"].frames == 16000
    assert len(ds) == 1 and ds[0].shape == (16000,)


def test_loader_with_workers_and_resumable_sampler(tmp_path):
    make_long_files(tmp_path, [30000] * 10)
    ds = build_dataset(_cfg(tmp_path, sample_len=2048), "train")
    sampler = ResumableSampler(len(ds), seed=3)
    sampler.set_epoch(1)
    full = torch.cat(list(DataLoader(ds, batch_size=4, sampler=sampler, num_workers=2)))
    sampler.set_epoch(1)
    sampler.set_start(8)
    resumed = torch.cat(list(DataLoader(ds, batch_size=4, sampler=sampler, num_workers=0)))
    assert torch.equal(resumed, full[8:])
    valid = build_dataset(_cfg(tmp_path, sample_len=2048), "valid")
    tokens, lengths = next(iter(DataLoader(valid, batch_size=2, collate_fn=collate_tokens)))
    assert tokens.shape == (1, 30000) and lengths.tolist() == [30000]


def test_bad_files_in_a_folder(tmp_path, caplog):
    make_long_files(tmp_path / "music", [5000] * 6)
    sub = tmp_path / "music" / "more"
    sub.mkdir()
    (sub / "empty.wav").write_bytes(b"")
    (sub / "corrupt.flac").write_bytes(b"fLaC" + bytes(range(256)) * 4)
    sf.write(sub / "nan.wav", np.array([0.1, np.inf], np.float32), 16000, subtype="FLOAT")
    sf.write(sub / "zero.wav", np.zeros(0, np.float32), 16000)
    (sub / "notes.txt").write_text("not audio, not scanned")
    with caplog.at_level(logging.WARNING, logger="sashimi.data"):
        ds = build_dataset(_cfg(tmp_path / "music"), "train")
    assert "skipped 4 bad audio file(s) of 10" in caplog.text and "bad_files.txt" in caplog.text
    bad = open(ds.index.bad_list_path).read()
    for name in ("more/empty.wav", "more/corrupt.flac", "more/nan.wav", "more/zero.wav"):
        assert name in bad
    # the split is over all 10 scanned files (8/1/1); bad ones sorted first are dropped from train only
    assert len(ds.index.files) == 6 and len({int(w[0]) for w in ds.windows}) == 4
    with pytest.raises(AudioError, match="strict mode"):
        build_dataset(_cfg(tmp_path / "music", strict=True), "train")


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no audio")
    with pytest.raises(ConfigError, match="no audio files found under .*empty"):
        build_dataset(_cfg(tmp_path / "empty"), "train")
    with pytest.raises(ConfigError, match="does not exist"):
        build_dataset(_cfg(tmp_path / "missing"), "train")
    make_long_files(tmp_path / "two", [100, 100])
    with pytest.raises(ConfigError, match="need at least 3 audio files"):
        build_dataset(_cfg(tmp_path / "two"), "train")


def test_unwritable_cache_is_a_clear_error(tmp_path):
    make_long_files(tmp_path / "music", [1000] * 3)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should go")
    with pytest.raises(ConfigError, match="cannot write the dataset index to .*set data.cache_dir"):
        build_dataset(_cfg(tmp_path / "music", cache_dir=str(blocker)), "train")


def _split_of_each_file(cfg) -> dict[str, str]:
    out = {}
    for split in ("train", "valid", "test"):
        ds = build_dataset(cfg, split)
        out.update({ds.index.files[int(f)].path: split for f in {int(w[0]) for w in ds.windows}})
    return out


def test_a_files_split_does_not_depend_on_other_files_being_readable(tmp_path):
    # 20 files split 17/1/2. Breaking one train file (005) and one test file (018) must leave every other
    # file where it was; a split over the 18 readable files (15/1/2) would move 016 to valid and 017 to test.
    names = make_long_files(tmp_path / "music", [3000] * 20)
    before = _split_of_each_file(_cfg(tmp_path / "music", sample_len=1024))
    assert [before[n] for n in names] == ["train"] * 17 + ["valid"] + ["test"] * 2
    (tmp_path / "music" / names[5]).write_bytes(b"RIFF not really")
    (tmp_path / "music" / names[18]).unlink()
    (tmp_path / "music" / names[18]).symlink_to(names[18])  # a link loop
    after = _split_of_each_file(_cfg(tmp_path / "music", sample_len=1024))
    assert after == {n: s for n, s in before.items() if n not in (names[5], names[18])}


def test_undecodable_names_and_link_loops_are_bad_files(tmp_path):
    import json
    import os

    root = tmp_path / "music"
    make_long_files(root, [3000] * 4)
    (root / "bad_name_\udcff.wav").write_bytes((root / "track000.wav").read_bytes())  # b"\xff": not UTF-8
    (root / "loop.wav").symlink_to("loop.wav")
    (root / "dangling.flac").symlink_to("nowhere.flac")
    ds = build_dataset(_cfg(root, sample_len=1024), "train")
    assert len(ds.index.files) == 4
    bad = dict(ds.index.bad)
    assert set(bad) == {"bad_name_\\xff.wav", "loop.wav", "dangling.flac"}
    assert "not valid UTF-8" in bad["bad_name_\\xff.wav"] and "symbolic link loop" in bad["loop.wav"]
    assert "dangling symbolic link" in bad["dangling.flac"]
    listed = open(ds.index.bad_list_path, encoding="utf-8").read()  # valid UTF-8 throughout
    assert "bad_name_\\xff.wav\t" in listed and "loop.wav\t" in listed
    index = json.loads((root / ".sashimi_cache" / "files-16000hz" / "index.json").read_text(encoding="utf-8"))
    assert len(index["bad"]) == 3
    assert build_dataset(_cfg(root, sample_len=1024), "train").index.bad == ds.index.bad  # served from the cache
    with pytest.raises(AudioError, match="strict mode.*not valid UTF-8"):
        build_dataset(_cfg(root, sample_len=1024, strict=True, cache_dir=str(tmp_path / "fresh")), "train")
    assert os.path.islink(root / "loop.wav")  # nothing under the root was touched
    make_long_files(tmp_path / "cafe", [3000] * 3)
    (tmp_path / "cafe").rename(tmp_path / "caf\udce9")  # a root that is not UTF-8: nothing under it opens
    with pytest.raises(ConfigError, match=r"caf\\xe9: the path is not valid UTF-8"):
        build_dataset(_cfg(tmp_path / "caf\udce9"), "train")
