"""Datasets of audio tokens: SC09, the synthetic digits set, YouTubeMix, Beethoven, and any audio folder."""
from sashimi.data.config import DATASET_NAMES, SPLITS, DataConfig
from sashimi.data.datasets import DIGITS, ClipDataset, WindowDataset, build_dataset, load_index
from sashimi.data.sampler import ResumableSampler, collate_tokens, epoch_permutation

__all__ = [
    "DATASET_NAMES",
    "DIGITS",
    "SPLITS",
    "ClipDataset",
    "DataConfig",
    "ResumableSampler",
    "WindowDataset",
    "build_dataset",
    "collate_tokens",
    "load_index",
    "epoch_permutation",
]
