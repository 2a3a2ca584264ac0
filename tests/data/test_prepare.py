import hashlib
import tarfile

import pytest

from sashimi.data.prepare import detect_name, download_file, extract_archive
from sashimi.errors import ConfigError, SashimiError


def test_download_verifies_checksum_and_resumes(tmp_path):
    src = tmp_path / "payload.bin"
    src.write_bytes(bytes(range(256)) * 100)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = download_file(src.as_uri(), tmp_path / "out" / "payload.bin", digest)
    assert dest.read_bytes() == src.read_bytes()
    assert download_file("file:///does/not/matter", dest, digest) == dest  # already complete: no transfer
    with pytest.raises(SashimiError, match="checksum mismatch"):
        download_file(src.as_uri(), tmp_path / "bad" / "payload.bin", "0" * 64)
    assert not (tmp_path / "bad" / "payload.bin.part").exists()
    with pytest.raises(SashimiError, match="cannot download .* run again to resume"):
        download_file((tmp_path / "missing").as_uri(), tmp_path / "m" / "x", digest)


def test_archive_extraction_is_safe(tmp_path):
    evil = tmp_path / "evil.tar"
    payload = tmp_path / "f.txt"
    payload.write_text("x")
    with tarfile.open(evil, "w") as tf:
        tf.add(payload, arcname="../escape.txt")
    with pytest.raises(ConfigError, match="cannot extract archive"):
        extract_archive(evil, tmp_path / "dest")
    assert not (tmp_path / "escape.txt").exists()
    with pytest.raises(ConfigError, match="unsupported archive type"):
        extract_archive(payload, tmp_path / "dest")


def test_detect_name(tmp_path, sc_root):
    root, _ = sc_root
    assert detect_name(root) == "sc09"
    (root / "digits.json").write_text("{}")
    assert detect_name(root) == "digits"
    assert detect_name(tmp_path) == "folder"


def test_sc09_keeps_the_background_noise_and_knows_both_releases(tmp_path, sc_root):
    """The classifier's augmentation mixes in `_background_noise_`; v0.01 is the release the official SC09
    classifier was trained on (checksums for both are pinned)."""
    from sashimi.data.prepare import SPEECH_COMMANDS, prepare_dataset
    from sashimi.train.clips import noise_bank

    source, _ = sc_root
    prepare_dataset("sc09", tmp_path / "sc09", source=source)
    assert (tmp_path / "sc09" / "_background_noise_" / "white.wav").is_file()
    assert len(noise_bank(tmp_path / "sc09")) == 1
    assert set(SPEECH_COMMANDS) == {"v0.01", "v0.02"} and all(len(sha) == 64 for _, sha in SPEECH_COMMANDS.values())
    assert SPEECH_COMMANDS["v0.01"][0].endswith("speech_commands_v0.01.tar.gz")
    with pytest.raises(ConfigError, match="release must be one of"):
        prepare_dataset("sc09", tmp_path / "x", source=source, release="v0.03")
