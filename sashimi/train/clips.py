"""Labelled clips for the evaluation classifier: waves of an sc09/digits split, augmented training images,
fixed evaluation images, and a class-balanced, position-addressable training stream.

The training stream is endless like the language model's (``sashimi.train.data``): stream position p lies in
epoch e = p // N (N = training clips) and holds clip ``balanced_epoch(labels, seed, e)[p % N]``, drawn with
replacement with probability proportional to 1 / (clips of its class), as the official recipe's
``WeightedRandomSampler`` does. The augmentation of position p is drawn from ``default_rng([seed, p])``,
so a resumed run sees exactly the images an uninterrupted one would.

Shapes: B = batch, L = 16,000 samples, image 32 x 32.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sashimi.audio.io import load_audio, read_frames
from sashimi.errors import ConfigError
from sashimi.metrics.augment import AugmentConfig, augment
from sashimi.metrics.features import CLIP_LEN, SAMPLE_RATE, fix_length, log_mel

NOISE_FOLDER = "_background_noise_"  # Speech Commands' background recordings, used for augmentation


class LabelledClips:
    """The clips of one split of an sc09/digits root: ``wave(i)`` (16,000 float32) and ``labels[i]`` (0..9)."""

    def __init__(self, data_config, split: str, index=None):
        from sashimi.data import build_dataset
        from sashimi.train.data import check_data_root

        if not data_config.is_clip_dataset:
            raise ConfigError(f"data.name: the classifier trains on labelled clips (sc09 or digits), "
                              f"got {data_config.name!r}")
        check_data_root(data_config)
        dataset = build_dataset(data_config, split, index)
        if len(dataset) == 0:
            raise ConfigError(f"data.root: {data_config.root} has no {split} clips")
        self.root = Path(data_config.root)
        self.paths = [dataset.index.files[f].read_path for f in dataset.file_ids]
        self.frames = [dataset.index.files[f].frames for f in dataset.file_ids]
        self.labels = np.asarray(dataset.labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def wave(self, i: int) -> np.ndarray:
        return fix_length(read_frames(self.paths[i], 0, min(self.frames[i], CLIP_LEN)))  # (L,)

    def images(self, batch: int = 256) -> torch.Tensor:
        """(N, 32, 32) log-mel images of every clip, unaugmented."""
        out = [log_mel(np.stack([self.wave(i) for i in range(s, min(s + batch, len(self)))]))
               for s in range(0, len(self), batch)]
        return torch.from_numpy(np.concatenate(out))


def noise_bank(root: Path) -> list[np.ndarray]:
    """The background recordings under ``root/_background_noise_`` (Speech Commands), if any."""
    folder = Path(root) / NOISE_FOLDER
    return [load_audio(p, SAMPLE_RATE)[0] for p in sorted(folder.glob("*.wav"))] if folder.is_dir() else []


class AugmentedImages(Dataset):
    """Item ``(i, position)`` -> (image (32, 32), label): clip i augmented with the draws of its position."""

    def __init__(self, clips: LabelledClips, augment_config: AugmentConfig, seed: int, noise=None):
        self.clips, self.config, self.seed = clips, augment_config, seed
        self.noise = noise if noise is not None else noise_bank(clips.root)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, position = item
        rng = np.random.default_rng([self.seed, position])
        wave = augment(self.clips.wave(i), rng, self.config, length=CLIP_LEN, sample_rate=SAMPLE_RATE,
                       noise_bank=self.noise)
        return torch.from_numpy(log_mel(wave)), int(self.clips.labels[i])


def balanced_epoch(labels: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """N clip indices drawn with replacement, each class equally likely (weights 1 / class count)."""
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]
    rng = np.random.default_rng([seed, epoch, 1])
    return rng.choice(len(labels), size=len(labels), replace=True, p=weights / weights.sum())


class BalancedStream(Sampler):
    """Endless ``(clip, position)`` pairs for one rank, from global batch ``start_batch`` on."""

    def __init__(self, labels: np.ndarray, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start_batch: int = 0):
        self.labels, self.batch_size, self.seed = np.asarray(labels), batch_size, seed
        self.rank, self.world_size, self.start_batch = rank, world_size, start_batch
        self.global_batch = batch_size * world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        n, batch, order, order_epoch = len(self.labels), self.start_batch, None, -1
        while True:
            for j in range(self.batch_size):
                position = batch * self.global_batch + self.rank + j * self.world_size
                if position // n != order_epoch:
                    order_epoch = position // n
                    order = balanced_epoch(self.labels, self.seed, order_epoch)
                yield int(order[position % n]), position
            batch += 1


def train_image_loader(dataset: AugmentedImages, *, batch_size: int, seed: int, rank: int, world_size: int,
                       start_batch: int, num_workers: int) -> DataLoader:
    sampler = BalancedStream(dataset.clips.labels, batch_size=batch_size, seed=seed, rank=rank,
                             world_size=world_size, start_batch=start_batch)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=True,
                      generator=torch.Generator().manual_seed(seed))  # never a draw from the global RNG
