"""The file index: every usable audio file of a dataset root, validated once, cached as JSON.

Building the index decodes each file once to catch what a header cannot show (truncated data, NaN samples).
A file whose rate differs from the target rate, or whose format cannot be seeked cheaply, is resampled once
into a float WAV under the cache folder; items are then read with `read_frames` (a seek, never a full decode).
Bad files are skipped and listed in `bad_files.txt` next to the index, or are fatal with `strict`; so are names
that are not valid UTF-8 (listed with `\\xNN` escapes), symbolic-link loops and dangling links.
The cache is keyed by a fingerprint of (relative path, size, mtime) of every file plus the target rate, so
changing the data rebuilds it.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from sashimi.audio.io import AUDIO_EXTENSIONS, AudioInfo, audio_info, load_audio, save_wav
from sashimi.errors import AudioError, ConfigError

log = logging.getLogger("sashimi.data")

INDEX_VERSION = 1
CACHE_DIRNAME = ".sashimi_cache"
SEEKABLE_FORMATS = ("WAV", "WAVEX", "FLAC", "AIFF")

# A per-dataset check on the header: raise AudioError when the file is not what the dataset expects.
HeaderCheck = Callable[[AudioInfo], None]


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the dataset root, "/"-separated
    read_path: str  # absolute path the samples are read from (the original, or its resampled copy)
    frames: int  # samples at the target rate
    orig_sample_rate: int
    channels: int


@dataclass(frozen=True)
class FileIndex:
    root: str
    sample_rate: int
    files: list[FileEntry]  # sorted by path
    bad: list[tuple[str, str]]  # (relative path, reason)
    cache_dir: str

    @property
    def total_frames(self) -> int:
        return sum(f.frames for f in self.files)

    @property
    def bad_list_path(self) -> str:
        return os.path.join(self.cache_dir, "bad_files.txt")


def scan_audio_files(root: str | os.PathLike, subdirs: list[str] | None = None) -> list[str]:
    """Relative paths of audio files under root (or under the given sub-folders), sorted; hidden folders skipped."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"dataset root {root} does not exist or is not a folder")
    found = []
    for top in [root / s for s in subdirs] if subdirs else [root]:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.lower().endswith(AUDIO_EXTENSIONS) and not name.startswith("."):
                    found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


def display_name(rel: str) -> str:
    """A printable, UTF-8-safe form of a scanned name: bytes that are not UTF-8 become ``\\xNN``."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def _unusable(root: Path, rel: str) -> str | None:
    """Why a scanned name cannot be indexed before it is even opened (bad name, link loop, dangling link)."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return (f"{root / display_name(rel)}: file name is not valid UTF-8 (the audio library cannot open it); "
                f"rename the file")
    try:
        (root / rel).stat()
    except OSError as err:
        cause = {errno.ELOOP: "a symbolic link loop", errno.ENOENT: "a dangling symbolic link"}.get(err.errno)
        return f"{root / rel}: cannot open it ({cause or err.strerror or err})"
    return None


def _fingerprint(root: Path, rel_paths: list[str], sample_rate: int, check_name: str) -> str:
    h = hashlib.sha1(f"v{INDEX_VERSION}|{sample_rate}|{check_name}".encode())
    for rel in rel_paths:
        try:
            st = (root / rel).stat()
            state = f"{st.st_size}|{st.st_mtime_ns}"
        except OSError as err:  # a link loop or a dangling link: a bad file, still part of the data's state
            state = f"error {err.errno}"
        h.update(f"|{rel}|{state}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _index_one(root: Path, rel: str, sample_rate: int, convert_dir: Path, check: HeaderCheck | None) -> FileEntry:
    """Validate one file (raises AudioError) and return its entry, converting it if it cannot be read as is."""
    src = root / rel
    info = audio_info(src)
    if check is not None:
        check(info)
    wave, _ = load_audio(src, sample_rate=None, mono=True)  # full decode once: catches truncation and NaN
    if info.sample_rate == sample_rate and info.format in SEEKABLE_FORMATS:
        return FileEntry(rel, str(src.resolve()), len(wave), info.sample_rate, info.channels)
    wave, _ = load_audio(src, sample_rate=sample_rate, mono=True)
    dst = convert_dir / (rel + ".wav")
    save_wav(dst, wave, sample_rate, subtype="FLOAT")
    return FileEntry(rel, str(dst.resolve()), len(wave), info.sample_rate, info.channels)


def _load_cached(index_path: Path, fingerprint: str) -> dict | None:
    try:
        data = json.loads(index_path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("fingerprint") != fingerprint or data.get("version") != INDEX_VERSION:
        return None
    if not all(os.path.isfile(f["read_path"]) for f in data["files"]):
        return None
    return data


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")  # a root path may hold any bytes
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build_index(
    root: str | os.PathLike,
    sample_rate: int,
    *,
    rel_paths: list[str],
    cache_dir: str | os.PathLike | None = None,
    cache_name: str = "index",
    check: HeaderCheck | None = None,
    strict: bool = False,
    workers: int | None = None,
) -> FileIndex:
    """Validate `rel_paths` under `root` and cache the result; reuse the cache when nothing changed.

    `cache_name` separates indexes of different datasets sharing a root (and their header checks).
    """
    root = Path(root).resolve()
    if display_name(str(root)) != str(root):
        raise ConfigError(f"dataset root {display_name(str(root))}: the path is not valid UTF-8, and the audio "
                          f"library cannot open files under it; rename the folder")
    if not rel_paths:
        raise ConfigError(f"no audio files found under {root} (looked for {', '.join(AUDIO_EXTENSIONS)})")
    cache = Path(cache_dir) if cache_dir else root / CACHE_DIRNAME
    cache = cache / f"{cache_name}-{sample_rate}hz"
    fingerprint = _fingerprint(root, rel_paths, sample_rate, cache_name)
    cached = _load_cached(cache / "index.json", fingerprint)
    if cached is None:
        cached = _build(root, rel_paths, sample_rate, cache, check, strict, workers)
        cached["fingerprint"] = fingerprint
        try:
            cache.mkdir(parents=True, exist_ok=True)
            _write_atomic(cache / "index.json", json.dumps(cached))
            _write_atomic(cache / "bad_files.txt", "".join(f"{p}\t{r}\n" for p, r in cached["bad"]))
        except OSError as err:
            raise ConfigError(f"cannot write the dataset index to {cache} ({err}); "
                              f"set data.cache_dir to a writable folder") from None
    index = FileIndex(
        root=str(root),
        sample_rate=sample_rate,
        files=[FileEntry(**f) for f in cached["files"]],
        bad=[tuple(b) for b in cached["bad"]],
        cache_dir=str(cache),
    )
    _report_bad(index, len(rel_paths), strict)
    return index


def _build(root, rel_paths, sample_rate, cache, check, strict, workers) -> dict:
    def work(rel):
        try:
            return _index_one(root, rel, sample_rate, cache / "converted", check)
        except OSError as err:  # writing the resampled copy failed
            raise ConfigError(f"cannot write resampled audio under {cache} ({err}); "
                              f"set data.cache_dir to a writable folder") from None
        except AudioError as err:
            if strict:
                raise
            return (rel, str(err))

    unusable = {rel: reason for rel in rel_paths if (reason := _unusable(root, rel)) is not None}
    if unusable and strict:
        raise AudioError(f"bad audio file under {root} (strict mode): {next(iter(unusable.values()))}")
    readable = [rel for rel in rel_paths if rel not in unusable]
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = list(tqdm(pool.map(work, readable), total=len(readable), desc=f"indexing {root.name}",
                            unit="file", disable=None, leave=False))
    files = [r.__dict__ for r in results if isinstance(r, FileEntry)]
    bad = [list(r) for r in results if not isinstance(r, FileEntry)]
    bad += [[display_name(rel), reason] for rel, reason in unusable.items()]
    return {"version": INDEX_VERSION, "sample_rate": sample_rate, "files": files, "bad": sorted(bad)}


def _report_bad(index: FileIndex, n_scanned: int, strict: bool) -> None:
    if index.bad and strict:  # a cached index built without strict may hold bad files
        path, reason = index.bad[0]
        raise AudioError(f"{len(index.bad)} bad audio file(s) under {index.root} (strict mode); first: {reason}")
    if index.bad:
        log.warning("skipped %d bad audio file(s) of %d under %s; list in %s",
                    len(index.bad), n_scanned, index.root, index.bad_list_path)
    if not index.files:
        raise ConfigError(f"no usable audio files under {index.root}: all {n_scanned} are bad "
                          f"(see {index.bad_list_path})")
