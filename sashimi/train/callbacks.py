"""Callbacks and plugins of a training run: atomic checkpoints (last and best), throughput, export."""
from __future__ import annotations

import math
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins import TorchCheckpointIO

from sashimi.errors import CheckpointError
from sashimi.models.io import atomic_write, save_model

LAST, BEST = "last.ckpt", "best.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written with write-then-rename, read back with ``weights_only=True``."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        atomic_write(Path(path), lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return read_checkpoint(path, map_location)


def read_checkpoint(path, map_location=None) -> dict:
    """A training checkpoint as a dict of tensors and builtins; never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable sashimi training checkpoint ({err})") from None


class Checkpointer(pl.Callback):
    """Keeps ``last.ckpt`` (every ``every`` optimizer steps and at the end) and ``best.ckpt`` (lowest val/loss).

    On a step that is followed by validation, ``last.ckpt`` is written after the validation (whose
    plateau-scheduler update and best-loss bookkeeping it then contains), not before: Lightning does not
    rerun a validation that falls on the step a run resumes from, so a checkpoint taken between the two
    would lose it.
    """

    def __init__(self, directory: Path, every: int, val_every: int):
        self.directory, self.every, self.val_every = Path(directory), every, val_every
        self.best = math.inf
        self._last_saved_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.val_every != 0 and step % self.every == 0 and step != self._last_saved_step:
            self._save(trainer, LAST)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        loss = trainer.callback_metrics.get("val/loss")
        if loss is not None and float(loss) < self.best:
            self.best = float(loss)
            self._save(trainer, BEST)
        step = trainer.global_step
        if step % self.every == 0 and step != self._last_saved_step:
            self._save(trainer, LAST)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._last_saved_step:
            self._save(trainer, LAST)

    def _save(self, trainer, name: str) -> None:
        if name == LAST:
            self._last_saved_step = trainer.global_step
        trainer.save_checkpoint(self.directory / name, weights_only=False)  # full state

    def state_dict(self) -> dict:
        return {"best": self.best, "last_saved_step": self._last_saved_step}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self._last_saved_step = state_dict["best"], state_dict["last_saved_step"]


class Throughput(pl.Callback):
    """Training samples (tokens) per second, or clips per second for the classifier, summed over ranks."""

    def __init__(self):
        self._t0 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        seconds = time.perf_counter() - self._t0
        if isinstance(batch, torch.Tensor):  # audio tokens (B, L): samples per second
            key, count = "train/samples_per_s", batch.numel()
        else:  # (images, labels) of the classifier: clips per second
            key, count = "train/clips_per_s", len(batch[-1])
        pl_module.log(key, count * trainer.world_size / max(seconds, 1e-9), prog_bar=True)


class RunFiles(pl.Callback):
    """Rank 0 writes the resolved ``config.yaml`` at start and exports the final model at the end
    (``model/model.safetensors`` + ``model/config.json``, read by ``sashimi.load_model``)."""

    def __init__(self, run_dir: Path, config):
        self.run_dir, self.config = Path(run_dir), config

    def setup(self, trainer, pl_module, stage: str) -> None:
        from sashimi.train.config import save_config

        if trainer.is_global_zero:
            save_config(self.config, self.run_dir / "config.yaml")

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            save_model(pl_module.model, self.run_dir / "model")
