"""Token datasets over a `FileIndex`.

`ClipDataset` ("sc09", "digits"): the Speech Commands v0.02 layout, `root/<word>/<speaker>_nohash_<n>.wav`
for the ten digit words, with `validation_list.txt` and `testing_list.txt` deciding the split. Each item is a
clip zero-padded (at the end) or cut to `sample_len`.

`WindowDataset` ("youtubemix", "beethoven", "folder"): long recordings split by file (sorted by path; first
88% train, next 6% valid, last 6% test). Train items are windows of `sample_len` with hop
`sample_len - overlap` (a final window aligned to the file end covers the tail; files shorter than
`sample_len` are zero-padded). Valid/test items cover every sample exactly once: whole files when
`eval_len` is None, else contiguous windows of `eval_len` whose last one per file may be shorter.

Every item is a 1-D LongTensor of tokens `(L,)` (with `quantization: none`, a float32 waveform `(L,)` in
[-1, 1] instead); L is `sample_len` for all clip items and for training
windows, and may vary for valid/test items of long-file datasets (use `collate_tokens` to batch those).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sashimi.audio.io import AudioInfo, read_frames
from sashimi.audio.quantize import FLOAT_WAVE, make_quantizer
from sashimi.data.config import SPLITS, DataConfig
from sashimi.data.index import FileIndex, build_index, scan_audio_files
from sashimi.errors import AudioError, ConfigError

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLIT_LISTS = {"valid": "validation_list.txt", "test": "testing_list.txt"}
SPEECH_COMMANDS_RATE = 16000
CLIP_MAX_FRAMES = 16000  # Speech Commands clips are at most 1 s
SPLIT_FRACTIONS = (0.88, 0.06, 0.06)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    return split


class _TokenDataset(Dataset):
    """Shared item logic: read `(read_path, start, length)`, pad to `out_len`, quantize (or keep the floats)."""

    def __init__(self, cfg: DataConfig, index: FileIndex, split: str):
        self.cfg, self.index, self.split = cfg, index, split
        self.quantizer = None if cfg.quantization == FLOAT_WAVE else make_quantizer(cfg.quantization, cfg.bits)

    def _tokens(self, file_idx: int, start: int, length: int, out_len: int) -> torch.Tensor:
        entry = self.index.files[file_idx]
        n = min(length, entry.frames - start)
        wave = np.zeros(out_len, dtype=np.float32)
        wave[:n] = read_frames(entry.read_path, start, n)
        if self.quantizer is None:
            return torch.from_numpy(np.clip(wave, -1.0, 1.0))  # (out_len,) float32
        return torch.from_numpy(self.quantizer.encode_array(wave))  # (out_len,)


# ---------------------------------------------------------------- clips (sc09, digits)


def read_split_list(root: Path, split: str) -> set[str]:
    """Entries ("word/file.wav") of a Speech Commands split list; a missing list is an error."""
    path = root / SPLIT_LISTS[split]
    if not path.is_file():
        raise ConfigError(f"{path} is missing; a Speech Commands style root needs validation_list.txt and "
                          f"testing_list.txt (run `sashimi data prepare sc09` or `sashimi data synth-digits`)")
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def speech_commands_splits(root: str | os.PathLike, rel_paths: list[str]) -> dict[str, list[str]]:
    """Assign each "word/file.wav" to train/valid/test from the two lists (train = in neither)."""
    root = Path(root)
    valid, test = read_split_list(root, "valid"), read_split_list(root, "test")
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    for rel in rel_paths:
        splits["valid" if rel in valid else "test" if rel in test else "train"].append(rel)
    return splits


def _clip_check(max_frames: int):
    def check(info: AudioInfo) -> None:
        if info.channels != 1:
            raise AudioError(f"{info.path}: has {info.channels} channels; expected a mono clip")
        if info.sample_rate != SPEECH_COMMANDS_RATE:
            raise AudioError(f"{info.path}: sample rate {info.sample_rate} Hz; expected {SPEECH_COMMANDS_RATE} Hz")
        if info.frames > max_frames:
            raise AudioError(f"{info.path}: {info.frames} samples; expected a clip of at most {max_frames}")

    return check


class ClipDataset(_TokenDataset):
    """One item per clip of the split; `labels[i]` is the digit (0..9) of item i, named by `label_names`."""

    label_names = DIGITS

    def __init__(self, cfg: DataConfig, index: FileIndex, split: str, paths: list[str]):
        super().__init__(cfg, index, split)
        position = {f.path: i for i, f in enumerate(index.files)}
        self.file_ids = [position[p] for p in paths if p in position]  # bad files are not in the index
        self.labels = [DIGITS.index(index.files[i].path.split("/")[0]) for i in self.file_ids]

    def __len__(self) -> int:
        return len(self.file_ids)

    def __getitem__(self, i: int) -> torch.Tensor:
        file_idx = self.file_ids[i]
        return self._tokens(file_idx, 0, self.cfg.sample_len, self.cfg.sample_len)


def _check_clip_root(root: Path) -> None:
    if not root.is_dir():
        raise ConfigError(f"dataset root {root} does not exist")
    missing = [w for w in DIGITS if not (root / w).is_dir()]
    if missing:
        raise ConfigError(f"{root} is not a Speech Commands style root: missing folder(s) {', '.join(missing)}")


def _clip_dataset(cfg: DataConfig, index: FileIndex, split: str) -> ClipDataset:
    rel_paths = scan_audio_files(cfg.root, list(DIGITS))
    return ClipDataset(cfg, index, split, speech_commands_splits(cfg.root, rel_paths)[split])


# ---------------------------------------------------------------- long files (youtubemix, beethoven, folder)


def split_counts(n_files: int) -> tuple[int, int, int]:
    """(train, valid, test) file counts: int(0.88 n), int(0.06 n), the rest; each at least 1 (needs n >= 3)."""
    if n_files < 3:
        raise ConfigError(f"need at least 3 audio files to split into train/valid/test, found {n_files}")
    n_train, n_valid = int(n_files * SPLIT_FRACTIONS[0]), max(1, int(n_files * SPLIT_FRACTIONS[1]))
    n_train = min(n_train, n_files - n_valid - 1)
    return n_train, n_valid, n_files - n_train - n_valid


def train_windows(frames: int, sample_len: int, overlap: int) -> list[tuple[int, int]]:
    """(start, length) of training windows over one file; the last one is aligned to the end of the file."""
    if frames <= sample_len:
        return [(0, frames)]
    hop = sample_len - overlap
    starts = list(range(0, frames - sample_len + 1, hop))
    if starts[-1] + sample_len < frames:
        starts.append(frames - sample_len)
    return [(s, sample_len) for s in starts]


def eval_windows(frames: int, eval_len: int | None) -> list[tuple[int, int]]:
    """(start, length) windows that cover every sample of a file exactly once."""
    step = frames if eval_len is None else eval_len
    return [(s, min(step, frames - s)) for s in range(0, frames, step)]


class WindowDataset(_TokenDataset):
    """Items are rows of `windows`, an int64 array `(N, 3)` of (file index, start, length)."""

    def __init__(self, cfg: DataConfig, index: FileIndex, split: str, file_ids: list[int]):
        super().__init__(cfg, index, split)
        rows = []
        for f in file_ids:
            frames = index.files[f].frames
            spans = (train_windows(frames, cfg.sample_len, cfg.overlap) if split == "train"
                     else eval_windows(frames, cfg.eval_len))
            rows.extend((f, s, n) for s, n in spans)
        self.windows = np.asarray(rows, dtype=np.int64).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> torch.Tensor:
        file_idx, start, length = (int(v) for v in self.windows[i])
        out_len = self.cfg.sample_len if self.split == "train" else length
        return self._tokens(file_idx, start, length, out_len)


def _window_dataset(cfg: DataConfig, index: FileIndex, split: str) -> WindowDataset:
    # split over all scanned files, so a file's split does not depend on whether others are readable
    rel_paths = scan_audio_files(cfg.root)
    n_train, n_valid, _ = split_counts(len(rel_paths))
    bounds = {"train": (0, n_train), "valid": (n_train, n_train + n_valid), "test": (n_train + n_valid, None)}
    lo, hi = bounds[split]
    position = {f.path: i for i, f in enumerate(index.files)}
    ids = [position[p] for p in rel_paths[lo:hi] if p in position]
    return WindowDataset(cfg, index, split, ids)


def load_index(cfg: DataConfig) -> FileIndex:
    """The validated file index of `cfg.root` (built once, then served from the cache)."""
    root = Path(cfg.root)
    if cfg.is_clip_dataset:
        _check_clip_root(root)
        for split in SPLIT_LISTS:  # fail early on a missing list
            read_split_list(root, split)
        rel_paths, check, cache_name = scan_audio_files(root, list(DIGITS)), _clip_check(CLIP_MAX_FRAMES), cfg.name
    else:
        rel_paths, check, cache_name = scan_audio_files(root), None, "files"
    return build_index(root, cfg.sample_rate, rel_paths=rel_paths, cache_dir=cfg.cache_dir,
                       cache_name=cache_name, check=check, strict=cfg.strict)


def build_dataset(cfg: DataConfig, split: str, index: FileIndex | None = None) -> ClipDataset | WindowDataset:
    """The token dataset of one split. Pass `index` (from `load_index(cfg)`) to share one across splits."""
    _check_split(split)
    index = index if index is not None else load_index(cfg)
    return _clip_dataset(cfg, index, split) if cfg.is_clip_dataset else _window_dataset(cfg, index, split)
