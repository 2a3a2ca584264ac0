"""Run a training job: run directory layout, the Lightning Trainer, fresh start or exact resume.

Run directory:
    config.yaml             fully resolved config (also inside every checkpoint)
    checkpoints/last.ckpt   latest state (weights, optimizer, scheduler, data position, RNG)
    checkpoints/best.ckpt   lowest val/loss so far
    csv/version_N/metrics.csv   every logged metric (train/loss, val/bits_per_sample, ...), one file per
                            attempt (N = 0 for the first, 1 after the first resume, ...): see read_metrics
    tensorboard/            the same for TensorBoard
    model/                  final weights: model.safetensors + config.json (sashimi.load_model)
"""
from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import Dataset

from sashimi.errors import CheckpointError, ConfigError
from sashimi.train.callbacks import LAST, AtomicCheckpointIO, Checkpointer, RunFiles, Throughput, read_checkpoint
from sashimi.train.config import TrainConfig, apply_overrides
from sashimi.train.data import check_data_root
from sashimi.train.module import SaShiMiTask


def build_trainer(config: TrainConfig, run_dir: Path) -> pl.Trainer:
    t, o = config.trainer, config.optim
    strategy = t.strategy
    if strategy == "auto" and config.world_size > 1:
        strategy = "ddp"  # one process per device; gloo on CPU, nccl on GPU
    # CSV: one version_N/metrics.csv per attempt (Lightning would truncate an existing file on resume)
    loggers = [CSVLogger(run_dir, name="csv"), TensorBoardLogger(run_dir, name="tensorboard", version="")]
    callbacks = [Checkpointer(run_dir / "checkpoints", t.checkpoint_every, t.val_every), Throughput(), RunFiles(run_dir, config)]
    return pl.Trainer(
        max_steps=t.max_steps, max_epochs=-1,
        val_check_interval=t.val_every * t.accumulate, check_val_every_n_epoch=None,
        limit_val_batches=t.val_batches if t.val_batches is not None else 1.0, num_sanity_val_steps=0,
        accumulate_grad_batches=t.accumulate, gradient_clip_val=o.grad_clip, precision=t.precision,
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=strategy,
        use_distributed_sampler=False,  # the training stream and eval shards are already rank-aware
        logger=loggers, callbacks=callbacks, plugins=[AtomicCheckpointIO()], enable_checkpointing=False,
        log_every_n_steps=t.log_every, enable_progress_bar=t.progress_bar, enable_model_summary=False,
        default_root_dir=run_dir,
    )


def train(config, run_dir: str | Path, *, datasets: dict[str, Dataset] | None = None) -> Path:
    """Train from scratch into ``run_dir``; returns the exported model directory.

    ``config``: a TrainConfig (the audio model) or a ClassifierTrainConfig (the evaluation classifier)."""
    run_dir = Path(run_dir)
    if (run_dir / "checkpoints" / LAST).exists():
        raise ConfigError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                          "or choose another --run-dir")
    return _fit(config, run_dir, resume=False, datasets=datasets)


def resume(run_dir: str | Path, overrides: list[str] = (), *, datasets: dict[str, Dataset] | None = None) -> Path:
    """Continue the run in ``run_dir`` from checkpoints/last.ckpt exactly where it stopped.

    ``overrides`` may change how it runs (e.g. trainer.max_steps=...), on top of the checkpoint's config.
    """
    run_dir = Path(run_dir)
    checkpoint = read_checkpoint(run_dir / "checkpoints" / LAST)
    config = _config_from_dict(checkpoint["hyper_parameters"]["config"], overrides)
    step = int(checkpoint.get("global_step", 0))
    if step >= config.trainer.max_steps:  # Lightning would train nothing and export nothing
        raise ConfigError(f"{run_dir} is already at step {step}, and trainer.max_steps is "
                          f"{config.trainer.max_steps}: pass a larger trainer.max_steps=... to continue")
    return _fit(config, run_dir, resume=True, datasets=datasets)


def _config_from_dict(d: dict, overrides: list[str]):
    from sashimi.train.classifier import CLASSIFIER_SECTIONS, ClassifierTrainConfig, is_classifier_config

    if is_classifier_config(d):
        return ClassifierTrainConfig.from_dict(apply_overrides(d, list(overrides), CLASSIFIER_SECTIONS))
    return TrainConfig.from_dict(apply_overrides(d, list(overrides)))


def _task(config, datasets):
    from sashimi.train.classifier import ClassifierTask, ClassifierTrainConfig

    if isinstance(config, ClassifierTrainConfig):
        return ClassifierTask(config.to_dict(), datasets)
    return SaShiMiTask(config.to_dict(), datasets)


def _fit(config, run_dir: Path, *, resume: bool, datasets) -> Path:
    if not datasets:
        check_data_root(config.data)
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    task = _task(config, datasets)
    trainer = build_trainer(config, run_dir)
    ckpt = run_dir / "checkpoints" / LAST
    if resume and not ckpt.is_file():
        raise CheckpointError(f"{ckpt}: no checkpoint to resume from")
    trainer.fit(task, ckpt_path=ckpt if resume else None, weights_only=True)
    return run_dir / "model"
