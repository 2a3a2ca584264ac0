"""Callbacks and plugins of a training run: atomic checkpoints (last and best), throughput, export; and the
operating-system faults a run meets while writing its files (full disk, read-only folder, too many open files),
each turned into one line that names the path, the cause and how to go on."""
from __future__ import annotations

import errno
import logging
import math
import os
import re
import resource
import time
from contextlib import contextmanager
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins import TorchCheckpointIO

from sashimi.errors import OS_FAULTS, CheckpointError, SashimiError
from sashimi.models.io import atomic_write, save_model

LAST, BEST = "last.ckpt", "best.ckpt"
log = logging.getLogger("sashimi.train")

# errno -> (cause, what the user can do about it)
# what atomic_write (tempfile.mkstemp) leaves behind when a save is killed: .last.ckpt.k2j4h1x_.tmp
_ORPHAN = re.compile(r"^\.(last\.ckpt|best\.ckpt|config\.yaml|model\.safetensors|config\.json)\.\w{8}\.tmp$")


class RunFileError(SashimiError):
    """An operating-system fault met by a training run while it wrote its files."""


def os_fault(err: OSError, run_dir: Path, where: str | None = None, fix: str | None = None) -> RunFileError:
    """One line: the cause, where (``where``, else the path the error names) and how to go on."""
    cause, default_fix = OS_FAULTS.get(err.errno, (err.strerror or str(err), "fix it"))
    if err.errno == errno.EMFILE:
        cause += f" (limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]})"
    where = where or (f"while writing {err.filename}" if err.filename else f"while training in {run_dir}")
    if fix is None:
        then = (f"resume with --resume {run_dir}" if (Path(run_dir) / "checkpoints" / LAST).is_file()
                else "run again")
        fix = f"{default_fix} and {then}"
    return RunFileError(f"{cause} {where}; {fix}")


def find_os_fault(err: BaseException) -> BaseException | None:
    """The SashimiError or known OSError behind ``err``, following the exceptions it was raised during
    (torch's zip writer and Lightning's teardown raise their own errors on top of the one that stopped it).
    safetensors reports an OS error only in its message: "... (os error 28)"."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, SashimiError) or (isinstance(err, OSError) and err.errno in OS_FAULTS):
            return err
        code = re.search(r"\(os error (\d+)\)", str(err))
        if code and int(code.group(1)) in OS_FAULTS:
            return OSError(int(code.group(1)), os.strerror(int(code.group(1))))
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


@contextmanager
def writing(path: Path, run_dir: Path):
    """An OS fault while writing ``path`` becomes a RunFileError that names it."""
    try:
        yield
    except Exception as err:
        fault = find_os_fault(err)
        if isinstance(fault, OSError):
            raise os_fault(fault, run_dir, f"while writing {path}") from None
        raise


def file_mode() -> int:
    """The mode a plain ``open`` would give a new file: 0o666 less the umask (mkstemp gives 0o600)."""
    try:  # read, rather than set and restore, which would race with other threads creating files
        with open("/proc/self/status") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def write_run_file(path: Path, write) -> None:
    """``atomic_write`` with the usual file mode: ``write(tmp)`` fills the temporary file."""

    def write_with_mode(tmp):
        os.chmod(tmp, file_mode())
        write(tmp)

    atomic_write(Path(path), write_with_mode)


def remove_orphans(run_dir: Path) -> list[Path]:
    """Delete the temporary files that a killed save left in the run (none is in use when a run starts)."""
    removed = []
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "model"):
        if folder.is_dir():
            for p in folder.iterdir():
                if _ORPHAN.match(p.name):
                    p.unlink(missing_ok=True)
                    removed.append(p)
    if removed:
        log.info("removed %d temporary file(s) of an interrupted save: %s", len(removed),
                 ", ".join(str(p) for p in removed))
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written with write-then-rename, read back with ``weights_only=True``.

    The checkpoint goes through a Python file, so that a write error comes back as the OSError it is (a full
    disk says so) rather than as torch's "unexpected pos"; ``Checkpointer`` turns it into one line."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        def write(tmp):
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)

        write_run_file(Path(path), write)

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
        hint = ""
        best = path.with_name(BEST)
        if path.name == LAST and best.is_file():
            hint = (f"; to go on from the best checkpoint instead (losing the steps since), "
                    f"copy {best} over it and resume")
        raise CheckpointError(f"{path}: not a readable sashimi training checkpoint ({err}){hint}") from None


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
        with writing(self.directory / name, self.directory.parent):
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
            with writing(self.run_dir / "config.yaml", self.run_dir):
                save_config(self.config, self.run_dir / "config.yaml")

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            export_model(pl_module.model, self.run_dir)


def export_model(model: torch.nn.Module, run_dir: Path) -> Path:
    """Write the final weights to ``run_dir/model`` (model.safetensors + config.json)."""
    with writing(run_dir / "model", run_dir):
        weights = save_model(model, run_dir / "model")
        for p in (weights, weights.with_name("config.json")):  # created by mkstemp, 0o600
            if p.is_file():
                os.chmod(p, file_mode())
    return run_dir / "model"
