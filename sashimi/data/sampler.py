"""Deterministic, resumable ordering of a dataset, and batching of variable-length eval items."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from sashimi.errors import ConfigError


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of epoch `epoch`: a permutation of range(n) that depends only on (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class ResumableSampler(Sampler[int]):
    """Seeded shuffling that can restart mid-epoch at an exact position.

    Epoch e visits `epoch_permutation(n, seed, e)` (or range(n) without shuffling), optionally sharded over
    `num_replicas` ranks (rank r takes positions r, r + R, ..., truncated so all ranks get the same count).
    `set_start(k)` skips the first k indices of the next iteration only (a one-shot offset): to resume after
    k examples of epoch e, call `set_epoch(e)` and `set_start(k)` before building the iterator.
    `state_dict()` / `load_state_dict()` hold (seed, epoch, start) for checkpoints.
    """

    def __init__(self, n: int, *, seed: int = 0, shuffle: bool = True, num_replicas: int = 1, rank: int = 0):
        if n <= 0:
            raise ConfigError(f"ResumableSampler needs a non-empty dataset, got n={n}")
        if not 0 <= rank < num_replicas:
            raise ConfigError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch, self.start = 0, 0

    @property
    def per_rank(self) -> int:
        return self.n // self.num_replicas if self.num_replicas > 1 else self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, start: int) -> None:
        if not 0 <= start <= self.per_rank:
            raise ConfigError(f"start must be in [0, {self.per_rank}], got {start}")
        self.start = int(start)

    def indices(self, epoch: int) -> np.ndarray:
        """All indices this rank visits in `epoch`, from the beginning."""
        order = epoch_permutation(self.n, self.seed, epoch) if self.shuffle else np.arange(self.n)
        return order[self.rank : self.per_rank * self.num_replicas : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        return iter(self.indices(self.epoch)[start:].tolist())

    def __len__(self) -> int:
        return self.per_rank - self.start

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "start": self.start}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed = int(state["seed"])
        self.set_epoch(state["epoch"])
        self.set_start(state["start"])


def collate_tokens(batch: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D token tensors (or float waveforms) of different lengths: `(tokens (B, L_max), lengths (B,))`,
    right-padded with 0, in the items' dtype.

    Positions at or beyond `lengths[b]` are padding and must be masked out of any loss.
    """
    lengths = torch.tensor([len(t) for t in batch], dtype=torch.long)
    tokens = torch.zeros(len(batch), int(lengths.max()), dtype=batch[0].dtype)
    for b, t in enumerate(batch):
        tokens[b, : len(t)] = t
    return tokens, lengths
