"""`sashimi data ...` run the way a user runs it (through the real entry point, in-process for speed)."""
import json
import logging
import tarfile
import zipfile
import numpy as np
import pytest
import soundfile as sf

from sashimi.cli.main import main
from sashimi.data.synthetic import make_long_recordings as make_long_files
from sashimi.data.synthetic import make_speech_commands_tree as make_speech_commands


def test_synth_digits_then_info(tmp_path, capsys):
    root = tmp_path / "digits"
    assert main(["data", "synth-digits", "--root", str(root), "--n-clips", "20", "--seed", "5", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert f"wrote 20 clips to {root}" in out and "voices" in out and "accents: en-us" in out
    assert main(["data", "info", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"dataset digits at {root}" in out and "files: 20 usable, 0 bad" in out
    assert "original sample rates: 16000 Hz x20" in out and "train:" in out and "test:" in out


def test_synth_digits_with_chosen_voices_and_accents(tmp_path, capsys):
    root = tmp_path / "plain"
    assert main(["data", "synth-digits", "--root", str(root), "--n-clips", "10", "--workers", "1", "--no-noise",
                 "--voices", "m1, m2,f1", "--accents", "en-us"]) == 0
    out = capsys.readouterr().out
    assert "train: " in out and "1 voices" in out and "accents: en-us\n" in out
    assert main(["data", "synth-digits", "--root", str(tmp_path / "bad"), "--voices", "m1,robotnik"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sashimi data: error: voices: robotnik not available; choose from ")


def test_synth_digits_rate_and_pitch(tmp_path, capsys):
    root = tmp_path / "steady"
    assert main(["data", "synth-digits", "--root", str(root), "--n-clips", "10", "--workers", "1", "--no-noise",
                 "--voices", "m1,m2,f1", "--accents", "en-us", "--rate", "160", "--pitch", "45-55",
                 "--word-start", "120", "--peak", "50-70"]) == 0
    meta = json.loads((root / "digits.json").read_text())
    assert meta["rates"] == [160, 160] and meta["pitches"] == [45, 55] and meta["starts"] == [120, 120]
    assert meta["peaks"] == [50, 70] and all(0.5 <= c["peak"] <= 0.7 for c in meta["clips"])
    with pytest.raises(SystemExit):  # argparse: usage and a one-line error
        main(["data", "synth-digits", "--root", str(tmp_path / "bad"), "--rate", "fast"])
    assert "expected an integer or LOW-HIGH, got 'fast'" in capsys.readouterr().err.strip().splitlines()[-1]
    assert main(["data", "synth-digits", "--root", str(tmp_path / "bad"), "--pitch", "50-200"]) == 2
    assert "pitches: expected (low, high) integers with 0 <= low <= high <= 99, got (50, 200)" in \
        capsys.readouterr().err.strip().splitlines()[-1]
    assert main(["data", "synth-digits", "--root", str(tmp_path / "bad"), "--peak", "0-120"]) == 2
    assert "peaks: expected (low, high) integers with 1 <= low <= high <= 99, got (0, 120)" in \
        capsys.readouterr().err.strip().splitlines()[-1]
    assert main(["data", "synth-digits", "--root", str(tmp_path / "bad"), "--word-start", "0-1000"]) == 2
    assert "starts: expected (low, high) integers with 0 <= low <= high <= 900, got (0, 1000)" in \
        capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "bad").exists()


def test_prepare_sc09_from_archive_keeps_digits_only(tmp_path, capsys):
    tree = tmp_path / "speech_commands_v0.02"
    expected = make_speech_commands(tree)
    archive = tmp_path / "speech_commands_v0.02.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tree, arcname=".")
    root = tmp_path / "sc09"
    assert main(["data", "prepare", "sc09", "--root", str(root), "--source", str(archive)]) == 0
    out = capsys.readouterr().out
    assert "files: 40 usable, 0 bad" in out
    assert "train: 20 files, 20 items" in out and "valid: 10 files" in out and "test: 10 files" in out
    assert not (root / "yes").exists() and not (root / ".extract").exists()
    assert sorted((root / "validation_list.txt").read_text().split()) == expected["valid"]


def test_prepare_youtubemix_from_folder_and_zip(tmp_path, capsys):
    src = tmp_path / "src"
    make_long_files(src, [32000] * 9, sr=16000)
    sf.write(src / "z_44k.flac", np.zeros((44100, 2), np.float32), 44100)
    root = tmp_path / "ym"
    assert main(["data", "prepare", "youtubemix", "--root", str(root), "--source", str(src),
                 "--sample-len", "8000"]) == 0
    out = capsys.readouterr().out
    assert "files: 10 usable" in out and "16000 Hz x9, 44100 Hz x1" in out
    assert "train: 8 files, 32 items" in out and "valid: 1 files, 1 items" in out
    archive = tmp_path / "beethoven.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(src.iterdir()):
            zf.write(p, f"beethoven/{p.name}")
    assert main(["data", "prepare", "beethoven", "--root", str(tmp_path / "bt"), "--source", str(archive)]) == 0
    assert "files: 10 usable" in capsys.readouterr().out


def test_bad_input_messages(tmp_path, capsys, caplog):
    assert main(["data", "prepare", "sc09", "--root", str(tmp_path / "r"), "--source", str(tmp_path / "nope")]) == 2
    assert "--source" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["data", "info", str(tmp_path / "empty")]) == 2
    assert "no audio files found under" in capsys.readouterr().err
    music = tmp_path / "music"
    make_long_files(music, [20000] * 5)
    (music / "broken.wav").write_bytes(b"RIFF1234WAVEjunk" * 4)
    with caplog.at_level(logging.WARNING, logger="sashimi.data"):
        assert main(["data", "info", str(music)]) == 0
    captured = capsys.readouterr()
    assert "files: 5 usable, 1 bad" in captured.out and "bad_files.txt" in captured.out
    assert caplog.text.count("skipped 1 bad audio file(s) of 6") == 1  # once, though three splits were built
    assert main(["data", "info", str(music), "--strict"]) == 2
    assert "broken.wav" in capsys.readouterr().err
    not_sc = tmp_path / "not_sc"
    make_long_files(not_sc, [100] * 3)
    assert main(["data", "prepare", "sc09", "--root", str(tmp_path / "o"), "--source", str(not_sc)]) == 2
    assert "holds no Speech Commands tree" in capsys.readouterr().err
