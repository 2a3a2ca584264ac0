"""Data loaders for training: an endless, seeded, position-addressable stream of training batches.

Training is step-based, so the training data is one endless stream: global batch s holds the examples at
stream positions [s * G, (s + 1) * G) with G = batch_size * world_size; position p belongs to epoch
p // E (E = examples per epoch, the dataset truncated to whole global batches) and maps to
``epoch_permutation(n, seed, epoch)[p % E]``. Rank r takes positions r, r + R, ... of each global batch,
so R processes with batch b see exactly the examples one process with batch R * b sees. Resuming is
``start_batch=k``: nothing about the stream needs to be stored but k.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sashimi.errors import ConfigError


class StreamSampler(Sampler[int]):
    """Endless dataset indices for one rank, starting at global batch ``start_batch``."""

    def __init__(self, n: int, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start_batch: int = 0):
        self.global_batch = batch_size * world_size
        if n < self.global_batch:
            raise ConfigError(f"the training split has {n} examples, fewer than one global batch "
                              f"({batch_size} x {world_size} processes)")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.start_batch = rank, world_size, start_batch
        self.per_epoch = n - n % self.global_batch

    def __iter__(self) -> Iterator[int]:
        from sashimi.data import epoch_permutation

        batch, order, order_epoch = self.start_batch, None, -1
        while True:
            for position in stream_positions(batch, self.batch_size, self.rank, self.world_size):
                epoch = position // self.per_epoch
                if epoch != order_epoch:
                    order, order_epoch = epoch_permutation(self.n, self.seed, epoch), epoch
                yield int(order[position % self.per_epoch])
            batch += 1


def stream_positions(batch: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """Stream positions of the examples that ``rank`` takes from global batch ``batch``, in batch order."""
    return [batch * batch_size * world_size + rank + j * world_size for j in range(batch_size)]


def stack_tokens(batch: list) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Equal-length 1-D token tensors (or float waveforms) -> (B, L); items (tokens, label) of a
    ``LabeledDataset`` -> ((B, L), labels (B,))."""
    if isinstance(batch[0], tuple):
        return torch.stack([t for t, _ in batch]), torch.tensor([y for _, y in batch], dtype=torch.long)
    return torch.stack(batch)


def collate_eval(batch: list) -> tuple[torch.Tensor, ...]:
    """Items of any length -> (tokens (B, L_max), lengths (B,)) right-padded, plus labels (B,) for the items
    (tokens, label) of a ``LabeledDataset``."""
    from sashimi.data import collate_tokens

    if isinstance(batch[0], tuple):
        return (*collate_tokens([t for t, _ in batch]), torch.tensor([y for _, y in batch], dtype=torch.long))
    return collate_tokens(batch)


class LabeledDataset(Dataset):
    """The items of ``dataset`` as (tokens, label), the label an index into ``names`` (a conditional model's
    ``model.labels``), for a dataset with labels (``labels[i]`` indexing its ``label_names``)."""

    def __init__(self, dataset: Dataset, names: tuple[str, ...]):
        theirs = getattr(dataset, "label_names", None)
        if theirs is None:
            raise ConfigError(f"model.labels: a conditional model needs a dataset with labels (digits, sc09); "
                              f"{type(dataset).__name__} has none")
        missing = [n for n in theirs if n not in names]
        if missing:
            raise ConfigError(f"model.labels: the dataset's labels {missing} are not among model.labels "
                              f"{list(names)}")
        self.dataset = dataset
        self.labels = [names.index(theirs[y]) for y in dataset.labels]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.dataset[i], self.labels[i]


def _own_generator(seed: int) -> torch.Generator:
    """For a DataLoader: without one, each new iterator draws its workers' base seed from the global torch RNG,
    so a resumed run (which creates its training iterator after restoring that RNG) would draw other dropout
    masks than the run it continues."""
    return torch.Generator().manual_seed(seed)


def train_loader(dataset: Dataset, *, batch_size: int, seed: int, rank: int, world_size: int,
                 start_batch: int, num_workers: int) -> DataLoader:
    sampler = StreamSampler(len(dataset), batch_size=batch_size, seed=seed, rank=rank, world_size=world_size,
                            start_batch=start_batch)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=stack_tokens,
                      num_workers=num_workers, drop_last=True, generator=_own_generator(seed))


def eval_loader(dataset: Dataset, *, batch_size: int, rank: int = 0, world_size: int = 1,
                num_workers: int = 0) -> DataLoader:
    """Every example exactly once over all ranks (rank r: r, r + R, ...), batches of (tokens, lengths) or,
    from a ``LabeledDataset``, (tokens, lengths, labels)."""
    shard = list(range(rank, len(dataset), world_size))
    return DataLoader(dataset, batch_size=batch_size, sampler=shard, collate_fn=collate_eval,
                      num_workers=num_workers, generator=_own_generator(0))


def eval_indices(batch_idx: int, batch_size: int, count: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """Dataset indices of the ``count`` items in batch ``batch_idx`` of ``eval_loader`` on ``rank``."""
    first = batch_idx * batch_size
    return [rank + (first + j) * world_size for j in range(count)]


def check_data_root(data_config) -> Path:
    root = Path(data_config.root)
    if not root.is_dir():
        hint = " (make it with `sashimi data synth-digits --root DIR`)" if data_config.name == "digits" else ""
        raise ConfigError(f"data.root: {root} is not a directory{hint}")
    return root


def build_split(data_config, split: str) -> Dataset:
    """The token dataset of ``split``, with a clear error when the data root is missing or empty."""
    from sashimi.data import build_dataset

    root = check_data_root(data_config)
    dataset = build_dataset(data_config, split)
    if len(dataset) == 0:
        raise ConfigError(f"data.root: {root} has no {split} examples for dataset {data_config.name!r}")
    return dataset
