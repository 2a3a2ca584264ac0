"""Training the evaluation classifier: its config (sections classifier, data, augment, optim, schedule,
trainer) and its LightningModule. The run directory, checkpoints, resume and logs are those of
``sashimi train`` (``sashimi.train.run``).

The official recipe: SGD with momentum 0.9, lr 0.01, weight decay 0.01, the plateau schedule (factor 0.1,
patience 5 validation rounds), class-balanced sampling and augmentation (``sashimi.metrics.augment``).

Shapes: B = batch, image 32 x 32, K = classes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from sashimi.errors import ConfigError
from sashimi.metrics.augment import AugmentConfig
from sashimi.metrics.classifier import ClassifierConfig, DigitClassifier
from sashimi.models.config import check_fields
from sashimi.train.config import ScheduleConfig, TrainerConfig, apply_overrides, read_config_dict

CLASSIFIER_SECTIONS = ("classifier", "data", "augment", "optim", "schedule", "trainer")
SIZES = {"full": ClassifierConfig, "small": ClassifierConfig.small}


@dataclass
class SGDConfig:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.01
    grad_clip: float | None = None

    def __post_init__(self):
        if not self.lr > 0 or not 0 <= self.momentum < 1 or not self.weight_decay >= 0:
            raise ConfigError(f"optim: lr must be > 0, momentum in [0, 1), weight_decay >= 0; got lr={self.lr}, "
                              f"momentum={self.momentum}, weight_decay={self.weight_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"optim.grad_clip must be > 0 (or null for none), got {self.grad_clip}")


@dataclass
class ClassifierTrainConfig:
    classifier: ClassifierConfig
    data: "DataConfig"  # noqa: F821
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: SGDConfig = field(default_factory=SGDConfig)
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(name="plateau", factor=0.1, patience=5))
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    @classmethod
    def from_dict(cls, d: dict) -> "ClassifierTrainConfig":
        from sashimi.data import DataConfig

        if not isinstance(d, dict):
            raise ConfigError(f"config: expected a mapping of sections, got {type(d).__name__}")
        unknown = sorted(set(d) - set(CLASSIFIER_SECTIONS))
        if unknown:
            raise ConfigError(f"config: unknown section(s) {unknown}; a classifier config has {list(CLASSIFIER_SECTIONS)}")
        if "data" not in d:
            raise ConfigError("config: missing section 'data'")
        return cls(
            classifier=_classifier_config(d.get("classifier", {})),
            data=DataConfig.from_dict(d["data"]),
            augment=AugmentConfig(**check_fields(AugmentConfig, d.get("augment", {}), "augment")),
            optim=SGDConfig(**check_fields(SGDConfig, d.get("optim", {}), "optim")),
            schedule=ScheduleConfig(**check_fields(ScheduleConfig, d.get("schedule", {}), "schedule")),
            trainer=TrainerConfig(**check_fields(TrainerConfig, d.get("trainer", {}), "trainer")),
        )

    def to_dict(self) -> dict:
        return {"classifier": self.classifier.to_dict(), "data": self.data.to_dict(),
                "augment": {k: list(v) if isinstance(v, tuple) else v
                            for k, v in dataclasses.asdict(self.augment).items()},
                "optim": dataclasses.asdict(self.optim), "schedule": dataclasses.asdict(self.schedule),
                "trainer": dataclasses.asdict(self.trainer)}

    @property
    def world_size(self) -> int:
        return self.trainer.devices * self.trainer.num_nodes


def _classifier_config(d: dict) -> ClassifierConfig:
    """``classifier: {size: small}`` picks a size; other keys are ClassifierConfig fields on top of it."""
    if not isinstance(d, dict):
        raise ConfigError(f"classifier: expected a mapping, got {type(d).__name__}")
    d = dict(d)
    size = d.pop("size", "full")
    if size not in SIZES:
        raise ConfigError(f"classifier.size must be one of {sorted(SIZES)}, got {size!r}")
    base = SIZES[size]().to_dict()
    return ClassifierConfig.from_dict({**base, **check_fields(ClassifierConfig, d, "classifier")})


def is_classifier_config(d: dict) -> bool:
    return isinstance(d, dict) and "classifier" in d and "model" not in d


def load_classifier_config(name: str | Path, overrides: list[str] = ()) -> ClassifierTrainConfig:
    raw = apply_overrides(read_config_dict(name), list(overrides), CLASSIFIER_SECTIONS)
    if not is_classifier_config(raw):
        raise ConfigError(f"config {str(name)!r} is not a classifier config (it needs a 'classifier' section "
                          f"and no 'model' section; try the preset classifier-digits)")
    return ClassifierTrainConfig.from_dict(raw)


class ClassifierTask(pl.LightningModule):
    """Trains a DigitClassifier; ``config`` is the plain dict of a ClassifierTrainConfig."""

    def __init__(self, config: dict, datasets: dict | None = None):
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.config = ClassifierTrainConfig.from_dict(config)
        self.model = DigitClassifier(self.config.classifier)
        self.datasets = dict(datasets or {})  # optional {"train": LabelledClips, "valid": LabelledClips}
        self.batches_seen = 0
        self.plateau = None
        self._plateau_state = None
        self._val_sums = torch.zeros(3, dtype=torch.float64)

    def clips(self, split: str):
        from sashimi.train.clips import LabelledClips

        if split not in self.datasets:
            self.datasets[split] = LabelledClips(self.config.data, split)
        return self.datasets[split]

    def train_dataloader(self) -> DataLoader:
        from sashimi.train.clips import AugmentedImages, train_image_loader

        t = self.config.trainer
        images = AugmentedImages(self.clips("train"), self.config.augment, t.seed)
        return train_image_loader(images, batch_size=t.batch_size, seed=t.seed, rank=self.global_rank,
                                  world_size=self.trainer.world_size, start_batch=self.batches_seen,
                                  num_workers=t.num_workers)

    def val_dataloader(self) -> DataLoader:
        clips = self.clips("valid")
        shard = list(range(self.global_rank, len(clips), self.trainer.world_size))
        images = clips.images()
        data = TensorDataset(images[shard], torch.from_numpy(clips.labels[shard]))
        t = self.config.trainer
        return DataLoader(data, batch_size=t.val_batch_size or t.batch_size, generator=torch.Generator().manual_seed(0))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        self.batches_seen += 1
        images, labels = batch  # (B, 32, 32), (B,)
        logits = self.model(images)
        loss = F.cross_entropy(logits, labels)
        self.log("train/loss", loss, prog_bar=True, sync_dist=self.trainer.world_size > 1)
        self.log("train/accuracy", (logits.argmax(1) == labels).float().mean())
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(3, dtype=torch.float64)

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        logits = self.model(images)
        loss = F.cross_entropy(logits, labels, reduction="sum")
        correct = (logits.argmax(1) == labels).sum()
        self._val_sums += torch.stack([loss.double().cpu(), correct.double().cpu(),
                                       torch.tensor(float(len(labels)), dtype=torch.float64)])

    def on_validation_epoch_end(self) -> None:
        loss, correct, n = self.trainer.strategy.reduce(self._val_sums.to(self.device), reduce_op="sum").tolist()
        self.log_dict({"val/loss": loss / n, "val/accuracy": correct / n}, sync_dist=True)
        if self.plateau is not None and not self.trainer.sanity_checking:
            self.plateau.step(loss / n)

    def configure_optimizers(self):
        o, s = self.config.optim, self.config.schedule
        from sashimi.train.module import with_schedule

        optimizer = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        return with_schedule(self, optimizer, s, self.config.trainer.max_steps)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sashimi"] = {"batches_seen": self.batches_seen, "torch_rng": torch.get_rng_state(),
                                 "plateau": self.plateau.state_dict() if self.plateau is not None else None}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["sashimi"]
        self.batches_seen = state["batches_seen"]
        torch.set_rng_state(state["torch_rng"])
        self._plateau_state = state["plateau"]
        if self.plateau is not None and self._plateau_state is not None:
            self.plateau.load_state_dict(self._plateau_state)
