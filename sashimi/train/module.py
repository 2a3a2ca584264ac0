"""The LightningModules of the audio models: ``AudioTask`` holds what every audio model's training shares (data
stream, non-finite steps, AdamW with the SSM groups, schedules, exact resume); ``SaShiMiTask`` trains the
autoregressive model with next-sample cross-entropy over 2^bits classes (the diffusion model's task is
``sashimi.train.diffusion.DiffusionTask``).

Shapes: B = batch, L = length, C = 2^bits classes.
"""
from __future__ import annotations

import math
import warnings

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from sashimi.audio.onsets import loud_tokens, onset_weights, onset_window
from sashimi.audio.quantize import make_quantizer
from sashimi.errors import SashimiError
from sashimi.metrics import LikelihoodTotals, token_nll
from sashimi.models.lm import SaShiMiLM
from sashimi.ssm.optim import adamw
from sashimi.train.config import TrainConfig
from sashimi.train.data import LabeledDataset, build_split, eval_loader, train_loader


class TrainingDiverged(SashimiError):
    """Too many consecutive non-finite losses."""


def cosine_with_warmup(warmup_steps: int, total_steps: int, min_ratio: float):
    """lr multiplier at optimizer step s: linear warm-up to 1, then cosine down to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def with_schedule(task: pl.LightningModule, optimizer, s, max_steps: int) -> dict:
    """Lightning's optimizer config for ``optimizer`` with schedule ``s`` (a ScheduleConfig). The plateau
    schedule is not Lightning's: ``task.plateau`` is stepped by each validation round itself, so a checkpoint
    written after a validation holds the scheduler state that follows it (restored from ``task._plateau_state``)."""
    if s.name == "constant":
        return {"optimizer": optimizer}
    if s.name == "cosine":
        factor = cosine_with_warmup(s.warmup_steps, s.total_steps or max_steps, s.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
    task.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=s.factor, patience=s.patience)
    if task._plateau_state is not None:
        task.plateau.load_state_dict(task._plateau_state)
    return {"optimizer": optimizer}


class AudioTask(pl.LightningModule):
    """Trains the audio model ``build_model`` makes; subclasses give its ``training_loss`` and validation.
    ``config`` is the plain dict of a TrainConfig (stored in every checkpoint).

    ``datasets`` (optional, {"train": ..., "valid": ...}) replaces the datasets the data config names.
    """

    def __init__(self, config: dict, datasets: dict[str, Dataset] | None = None):
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.config = TrainConfig.from_dict(config)
        self.model = self.build_model(self.config.model)
        if self.config.trainer.precision == "64-true":
            # Lightning restores checkpoint weights before it converts the module: build in float64 so a
            # resumed run loads them exactly instead of through float32.
            self.model.double()
        self.datasets = dict(datasets or {})
        self.batches_seen = 0  # training batches consumed by this rank: the data stream position
        self.nonfinite_total = self.nonfinite_run = 0
        self.plateau = None  # ReduceLROnPlateau, stepped by validation (see step_plateau)
        self._plateau_state = None  # restored before configure_optimizers creates the scheduler

    # ----- data -----
    def dataset(self, split: str) -> Dataset:
        if split not in self.datasets:
            self.datasets[split] = build_split(self.config.data, split)
        return self.datasets[split]

    def train_dataloader(self) -> DataLoader:
        t = self.config.trainer
        return train_loader(self.dataset("train"), batch_size=t.batch_size, seed=t.seed, rank=self.global_rank,
                            world_size=self.trainer.world_size, start_batch=self.batches_seen,
                            num_workers=t.num_workers)

    def val_dataloader(self) -> DataLoader:
        t = self.config.trainer
        return eval_loader(self.dataset("valid"), batch_size=t.val_batch_size or t.batch_size,
                           rank=self.global_rank, world_size=self.trainer.world_size, num_workers=t.num_workers)

    # ----- what each model kind provides -----
    def build_model(self, model_config) -> torch.nn.Module:
        raise NotImplementedError

    def training_loss(self, batch: torch.Tensor) -> torch.Tensor:
        """The loss of one training batch (B L); ``self.batches_seen`` already counts it."""
        raise NotImplementedError

    # ----- training -----
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor | None:
        self.batches_seen += 1
        loss = self.training_loss(batch)
        if self._any_rank_nonfinite(loss):
            self._skip_step()
            return None  # Lightning skips backward and the optimizer step (on every rank)
        self.nonfinite_run = 0
        self.log("train/loss", loss, prog_bar=True, sync_dist=self.trainer.world_size > 1)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def _any_rank_nonfinite(self, loss: torch.Tensor) -> bool:
        bad = (~torch.isfinite(loss.detach())).float()
        return bool(self.trainer.strategy.reduce(bad, reduce_op="sum") > 0)

    def _skip_step(self) -> None:
        self.nonfinite_total += 1
        self.nonfinite_run += 1
        self.log("train/nonfinite_steps", float(self.nonfinite_total))
        limit = self.config.trainer.max_nonfinite
        if self.nonfinite_run >= limit:
            raise TrainingDiverged(
                f"stopped at step {self.global_step}: {self.nonfinite_run} consecutive non-finite losses "
                f"(trainer.max_nonfinite={limit}); lower optim.lr, set optim.grad_clip, or use trainer.precision=32-true")
        warnings.warn(f"non-finite loss at step {self.global_step}: step skipped "
                      f"({self.nonfinite_total} so far, {self.nonfinite_run} in a row)", RuntimeWarning)

    def step_plateau(self, val_loss: float) -> None:
        """Called by each validation round with its val/loss, so the checkpoint written after it includes it."""
        if self.plateau is not None and not self.trainer.sanity_checking:
            self.plateau.step(val_loss)

    # ----- optimizer and schedule -----
    def configure_optimizers(self):
        o, s, t = self.config.optim, self.config.schedule, self.config.trainer
        fused = not (o.grad_clip and "mixed" in str(t.precision))  # Lightning clips only unfused AMP optimizers
        optimizer = adamw(self.model, o.lr, o.weight_decay, betas=tuple(o.betas), fused=fused, own_lr=self._own_lr())
        return with_schedule(self, optimizer, s, t.max_steps)

    def _own_lr(self) -> dict:
        """optim.label_lr for a conditional model's label embedding (TrainConfig refuses it without labels)."""
        label_lr = self.config.optim.label_lr
        return {} if label_lr is None else {self.model.label_embedding.weight: label_lr}

    # ----- exact resume: data position, RNG, non-finite counters -----
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sashimi"] = {"batches_seen": self.batches_seen, "nonfinite_total": self.nonfinite_total,
                                 "nonfinite_run": self.nonfinite_run, "torch_rng": torch.get_rng_state(),
                                 "plateau": self.plateau.state_dict() if self.plateau is not None else None}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["sashimi"]
        self.batches_seen = state["batches_seen"]
        self.nonfinite_total, self.nonfinite_run = state["nonfinite_total"], state["nonfinite_run"]
        torch.set_rng_state(state["torch_rng"])
        self._plateau_state = state["plateau"]
        if self.plateau is not None and self._plateau_state is not None:
            self.plateau.load_state_dict(self._plateau_state)


class SaShiMiTask(AudioTask):
    """Trains a SaShiMiLM: next-sample cross-entropy; validation sums the exact NLL over the whole split."""

    def build_model(self, model_config) -> SaShiMiLM:
        return SaShiMiLM(model_config)

    def dataset(self, split: str) -> Dataset:
        """A conditional model (``model.labels``) trains on (tokens, label) items."""
        dataset = super().dataset(split)
        labels = self.config.model.labels
        if labels and not isinstance(dataset, LabeledDataset):
            dataset = self.datasets[split] = LabeledDataset(dataset, labels)
        return dataset

    def training_loss(self, batch) -> torch.Tensor:
        """batch: tokens (B L), or (tokens, labels (B,)) for a conditional model. The mean NLL, or with
        optim.onset_weight the NLL weighted around each clip's onset (a weighted mean). With optim.self_feed
        and/or optim.input_jitter the model reads altered tokens and is scored on the clean ones."""
        tokens, labels = batch if isinstance(batch, (tuple, list)) else (batch, None)
        labels = self.model.drop_labels(labels)  # one draw for every pass of this step
        o = self.config.optim
        inputs = self.jittered(self.self_fed(tokens, labels, o.self_feed, o.self_feed_passes), o.input_jitter)
        nll = token_nll(self.model(inputs, labels), tokens)  # (B L)
        loss = self.weighted(nll, tokens)
        if o.label_margin:
            loss = loss + o.label_margin_weight * self.margin_loss(nll, inputs, tokens, labels, o.label_margin)
        return loss

    def weighted(self, nll: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """nll (B L) -> the mean, or with optim.onset_weight the mean weighted around each clip's onset."""
        o = self.config.optim
        if o.onset_weight == 1:
            return nll.mean()
        weights = onset_weights(tokens, self.loud(tokens), *self.samples(o.onset_window), o.onset_weight)  # (B L)
        return (nll * weights).sum() / weights.sum()

    def samples(self, window: tuple[float, ...]) -> tuple[int, ...]:
        """A window in seconds (before, after each clip's onset) -> in samples."""
        return tuple(round(s * self.config.model.sample_rate) for s in window)

    def loud(self, tokens: torch.Tensor) -> torch.Tensor:
        """(C) bool: the loud tokens of the model's codebook (made once per run)."""
        if getattr(self, "_loud", None) is None:
            m = self.config.model
            self._loud = loud_tokens(make_quantizer(m.quantization, m.bits)).to(tokens.device)
        return self._loud

    def margin_loss(self, nll: torch.Tensor, inputs: torch.Tensor, tokens: torch.Tensor, labels: torch.Tensor,
                    margin_bits: float) -> torch.Tensor:
        """nll (B L) under each clip's own label -> the label-margin hinge in nats per sample: each labelled clip
        is scored under its rival label (one more pass with gradient) and pays max(0, margin - gap) bits, gap being
        what the rival costs beyond the own label over the clip, or with optim.label_margin_window over that window
        around its onset. Clips trained without a label (NO_LABEL), and with a window clips with no onset, pay
        nothing. Logs train/label_gap_bits, the mean gap over the clips that count."""
        rivals = self.model.rival_labels(labels)  # (B,)
        rival_nll = token_nll(self.model(inputs, rivals), tokens)  # (B L)
        given = labels >= 0  # (B,)
        region = torch.ones_like(nll, dtype=torch.bool)  # (B L)
        if self.config.optim.label_margin_window is not None:
            region = onset_window(tokens, self.loud(tokens), *self.samples(self.config.optim.label_margin_window))
            given = given & region.any(1)
        gap = ((rival_nll - nll) * region).sum(1) / math.log(2)  # (B,) bits per clip
        hinge = torch.relu(margin_bits - gap) * given  # (B,) bits
        if given.any() and self._trainer is not None:
            self.log("train/label_gap_bits", gap.detach()[given].mean())
        return hinge.sum() * math.log(2) / nll.numel()

    @torch.no_grad()
    def self_fed(self, tokens: torch.Tensor, labels: torch.Tensor | None, share: float,
                 passes: int = 1) -> torch.Tensor:
        """tokens (B L) -> a ``share`` of them (drawn per token) replaced by the model's own sample at temperature
        1. Pass 1 draws x~_t ~ p(x_t | x_<t) given the true past; pass k draws given pass k-1's inputs, so the
        context carries k steps of the model's own drift (one forward pass without gradient each)."""
        inputs = tokens
        for _ in range(passes if share else 0):
            logits = self.model(inputs, labels).float()  # (B L C): logits[:, t] predicts the token at t
            gumbel = -torch.log(-torch.log(torch.rand_like(logits).clamp_(min=1e-20)))
            draws = (logits + gumbel).argmax(-1)  # (B L): one sample of each categorical
            pick = torch.rand(tokens.shape, device=tokens.device) < share
            inputs = torch.where(pick, draws, tokens.long())
        return inputs

    def jittered(self, tokens: torch.Tensor, jitter: int) -> torch.Tensor:
        """tokens (B L) -> each moved by a uniform integer in [-jitter, jitter], clamped to the codebook."""
        if not jitter:
            return tokens
        moves = torch.randint(-jitter, jitter + 1, tokens.shape, device=tokens.device)
        return (tokens.long() + moves).clamp_(0, self.model.n_classes - 1)

    # ----- validation: exact sums over the whole split, reduced over ranks -----
    def on_validation_epoch_start(self) -> None:
        self.val_totals = LikelihoodTotals()

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        tokens, lengths, *labels = batch  # (B L), (B,) [, labels (B,)]
        self.val_totals.add(self.model(tokens, *labels), tokens, lengths)

    def on_validation_epoch_end(self) -> None:
        t = self.val_totals
        sums = torch.tensor([t.nll, t.samples, t.correct], dtype=torch.float64, device=self.device)
        nll, samples, correct = self.trainer.strategy.reduce(sums, reduce_op="sum").tolist()
        total = LikelihoodTotals(nll, int(samples), int(correct))
        self.log_dict({"val/loss": total.loss, "val/bits_per_sample": total.bits_per_sample,
                       "val/accuracy": total.accuracy}, sync_dist=True)  # equal on every rank already
        self.step_plateau(total.loss)
