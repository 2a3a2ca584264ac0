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

import errno
import os
import tempfile
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import Dataset

from sashimi.errors import CheckpointError, ConfigError, SashimiError
from sashimi.runtime import bf16_matmul_fast
from sashimi.train.callbacks import (LAST, AtomicCheckpointIO, Checkpointer, RunFiles, Throughput, export_model,
                                     find_os_fault, os_fault, read_checkpoint, remove_orphans)
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
    on_cpu = t.accelerator == "cpu" or (t.accelerator == "auto" and not torch.cuda.is_available())
    if "bf16" in t.precision and on_cpu and not bf16_matmul_fast():
        warnings.warn(f"trainer.precision={t.precision}: this CPU has no bfloat16 matrix units that PyTorch uses, so "
                      "training runs several times slower than in 32-true here (10x on an AVX2-only CPU)",
                      RuntimeWarning, stacklevel=2)
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
    check_model_size(config)
    init_from = getattr(config.trainer, "init_from", None)  # the classifier's trainer has none
    weights = warm_start_weights(config.model, init_from) if init_from else None
    return _fit(config, run_dir, resume=False, datasets=datasets, weights=weights)


def resume(run_dir: str | Path, overrides: list[str] = (), *, datasets: dict[str, Dataset] | None = None) -> Path:
    """Continue the run in ``run_dir`` from checkpoints/last.ckpt exactly where it stopped.

    ``overrides`` may change how it runs (e.g. trainer.max_steps=...), on top of the checkpoint's config.
    A run that reached trainer.max_steps but whose export is missing or older than last.ckpt (a full disk or
    a kill at the very end) only gets its export written.
    """
    run_dir = Path(run_dir)
    checkpoint = read_checkpoint(run_dir / "checkpoints" / LAST)
    config = _config_from_dict(checkpoint["hyper_parameters"]["config"], overrides)
    step = int(checkpoint.get("global_step", 0))
    if step >= config.trainer.max_steps and not _export_is_current(run_dir):
        return _export(config, checkpoint, run_dir)  # training ended, its export did not (a full disk, a kill)
    if step >= config.trainer.max_steps:  # Lightning would train nothing and export nothing
        raise ConfigError(f"{run_dir} is already at step {step}, and trainer.max_steps is "
                          f"{config.trainer.max_steps}: pass a larger trainer.max_steps=... to continue")
    check_model_size(config)
    return _fit(config, run_dir, resume=True, datasets=datasets)


def _export_is_current(run_dir: Path) -> bool:
    """Whether run_dir/model holds the weights of the last checkpoint (written after it at the end of a run)."""
    weights = run_dir / "model" / "model.safetensors"
    last = run_dir / "checkpoints" / LAST
    return weights.is_file() and weights.stat().st_mtime_ns >= last.stat().st_mtime_ns


def _export(config, checkpoint: dict, run_dir: Path) -> Path:
    state = checkpoint["state_dict"]
    task = _task(config, None)
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(dtypes) == 1:  # the precision it trained in (bf16-true, 64-true)
        task.to(dtypes.pop())
    task.load_state_dict(state)
    prepare_run_dir(run_dir, resume=True)
    return export_model(task.model, run_dir)


def _config_from_dict(d: dict, overrides: list[str]):
    from sashimi.train.classifier import CLASSIFIER_SECTIONS, ClassifierTrainConfig, is_classifier_config

    if is_classifier_config(d):
        return ClassifierTrainConfig.from_dict(apply_overrides(d, list(overrides), CLASSIFIER_SECTIONS))
    return TrainConfig.from_dict(apply_overrides(d, list(overrides)))


def _task(config, datasets):
    from sashimi.train.classifier import ClassifierTask, ClassifierTrainConfig
    from sashimi.train.diffusion import DiffusionTask

    if isinstance(config, ClassifierTrainConfig):
        return ClassifierTask(config.to_dict(), datasets)
    if config.model.kind == "diffwave":
        return DiffusionTask(config.to_dict(), datasets)
    return SaShiMiTask(config.to_dict(), datasets)


# model fields a warm start may change: they only shape training or the initial values it replaces, or (the
# sample rate and the kernel length) carry the trained weights unchanged to another rate: every layer keeps its
# per-sample function, so the run starts from the trained model run on samples twice as close, say
_WARM_START_FREE = frozenset({"dropout", "label_dropout", "ssm_lr", "init", "dt_min", "dt_max", "sample_rate",
                              "l_max"})


def warm_start_weights(model_config, source: str) -> dict:
    """The weights of the trained model ``source`` (shipped name, folder or hub id) for a new run of
    ``model_config``, which must agree with its config apart from ``_WARM_START_FREE``; checked before the run
    writes anything. The optimizer and schedule start fresh.

    Two changes keep the trained function: labels on an unconditional model (the label vectors start at zero),
    and a larger ``n_layers`` on a model without U-Net skips (the new layers go at the end of every stack and
    start as identities), so the run begins as the trained model and grows from it."""
    from sashimi.models.io import load_model

    trained = load_model(source)
    ours, theirs = model_config.to_dict(), trained.config.to_dict()
    if ours.get("kind") != theirs.get("kind"):
        raise ConfigError(f"trainer.init_from={source!r} is a model of kind {theirs.get('kind')!r}; this config's "
                          f"model.kind is {ours.get('kind')!r}")
    adds_labels = bool(ours.get("labels")) and not theirs.get("labels")  # conditioning an unconditional model
    deepens = ours.get("n_layers", 0) > theirs.get("n_layers", 0)
    if deepens and ours.get("unet"):
        raise ConfigError(f"trainer.init_from={source!r}: a warm start adds layers only to a model without U-Net "
                          f"skips (model.unet: false); set model.n_layers={theirs.get('n_layers')!r} as it has")
    free = _WARM_START_FREE | ({"labels"} if adds_labels else set()) | ({"n_layers"} if deepens else set())
    differ = sorted(k for k in set(ours) | set(theirs) if k not in free and ours.get(k) != theirs.get(k))
    if differ:
        given = ", ".join(f"model.{k}={ours.get(k)!r} (it has {theirs.get(k)!r})" for k in differ)
        raise ConfigError(f"trainer.init_from={source!r}: this config's {given}; set them as the trained model has them")
    weights = trained.state_dict()
    if adds_labels:  # the new label vectors start at zero: the run begins as the unconditional model
        weights["label_embedding.weight"] = torch.zeros(len(ours["labels"]), model_config.d_model)
    if deepens:
        weights = _deepened(model_config, weights, int(theirs["n_layers"]))
    return weights


def _deepened(model_config, weights: dict, n_trained: int) -> dict:
    """``weights`` of an ``n_trained``-layer model, placed in a freshly built model of ``model_config``
    (more layers): each stack keeps its trained blocks first, and the new blocks after them start as identities."""
    from sashimi.models.lm import SaShiMiLM

    dtype = next(v.dtype for v in weights.values() if v.is_floating_point())
    model = SaShiMiLM(model_config).to(dtype)  # the trained weights' precision (64-true runs keep float64)
    keep = n_trained * model.backbone.blocks_per_layer
    new_blocks = [blk for stack in model.backbone.stacks for blk in list(stack)[keep:]]
    new_ids = {id(blk) for blk in new_blocks}
    prefixes = tuple(f"{name}." for name, mod in model.named_modules() if id(mod) in new_ids)
    result = model.load_state_dict(weights, strict=False)
    stray = sorted(result.unexpected_keys) + sorted(k for k in result.missing_keys if not k.startswith(prefixes))
    if stray:  # the configs agreed, so this is a damaged file rather than a user error
        raise ConfigError(f"trainer.init_from: the trained weights do not fit the deepened model: {stray[:3]}")
    for blk in new_blocks:
        blk.start_as_identity_()
    return model.state_dict()


# bytes per parameter while training with AdamW: weights, gradients and two moments
_TRAINING_COPIES = 4
_BYTES = {"64-true": 8, "bf16-true": 2}  # else 4 (float32 weights, mixed precision included)


def check_model_size(config, memory: int | None = None) -> None:
    """Refuse a model whose weights and optimizer state alone exceed this machine's memory (``memory`` bytes),
    before anything is allocated: building it would end in an allocator error, or in the OOM killer."""
    model = getattr(config, "model", None)
    if not hasattr(model, "estimate_parameters"):  # the classifier: one fixed, small architecture
        return
    n = model.estimate_parameters()
    need = n * _BYTES.get(config.trainer.precision, 4) * _TRAINING_COPIES
    memory = memory or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > memory:
        fields = model.size_fields
        given = ", ".join(f"model.{k}={getattr(model, k)}" for k in fields)
        lower = f"model.{fields[0]}, model.{fields[1]} or model.{fields[2]}"
        raise ConfigError(
            f"{given} make a model of {n / 1e6:,.0f} million "
            f"parameters, which needs about {need / 2**30:,.0f} GiB to train (weights, gradients and AdamW state in "
            f"{config.trainer.precision}); this machine has {memory / 2**30:,.0f} GiB: lower {lower}")


def prepare_run_dir(run_dir: Path, *, resume: bool) -> None:
    """Create the run folders, check that they take new files (a read-only or full disk is found here, not at
    the first checkpoint), and delete what a killed save left behind."""
    def fault(err: OSError, where: str):
        unwritable = err.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
        fix = f"make it writable and resume with --resume {run_dir}" if resume else "choose a writable --run-dir"
        return os_fault(err, run_dir, where, fix if unwritable else None)

    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise fault(err, f"while creating {err.filename or run_dir}") from None
    for folder in (run_dir, run_dir / "checkpoints"):
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".sashimi-write-test.", suffix=".tmp")
        except OSError as err:
            raise fault(err, f"while creating a file in {folder}") from None
        os.close(fd)
        os.remove(probe)
    if rank_zero_only.rank == 0:  # DDP workers start while rank 0 runs: only it cleans
        remove_orphans(run_dir)


def _fit(config, run_dir: Path, *, resume: bool, datasets, weights: dict | None = None) -> Path:
    """``weights``: where a new run starts from (``trainer.init_from``); a resumed run has its own."""
    if not datasets:
        check_data_root(config.data)
    ckpt = run_dir / "checkpoints" / LAST
    if resume and not ckpt.is_file():
        raise CheckpointError(f"{ckpt}: no checkpoint to resume from")
    prepare_run_dir(run_dir, resume=resume)
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    task = _task(config, datasets)
    if weights is not None:
        task.model.load_state_dict(weights)
    trainer = build_trainer(config, run_dir)
    try:
        trainer.fit(task, ckpt_path=ckpt if resume else None, weights_only=True)
    except Exception as err:
        fault = find_os_fault(err)
        if fault is None or (fault is err and isinstance(err, SashimiError)):
            raise
        if isinstance(fault, SashimiError):
            raise fault from None
        raise os_fault(fault, run_dir) from None
    return run_dir / "model"
