"""Training and evaluating the diffusion model (``model.kind: diffwave``): the denoising loss on float waveforms.

Training minimises the mean squared error of the predicted noise at a uniformly drawn step (``sashimi.diffusion
.loss``), on the same run directory, data stream, checkpoints, resume and DDP as the autoregressive model
(``AudioTask``). Every example's step and noise come from a generator seeded by (trainer.seed, its stream
position): DDP with R processes sees the noise one process with the whole global batch sees, and a resumed
run the noise of the run it continues.

Validation (and ``sashimi evaluate``) scores every example once per band of diffusion steps with noise seeded by
(``EVAL_SEED``, its index in the split), and logs ``val/loss`` (the mean over bands) and ``val/loss_t000_050``,
``val/loss_t050_100``, ... (T = 200): how well the model removes noise at each noise level.

Shapes: B = batch, L = length.
"""
from __future__ import annotations

import torch
from tqdm import tqdm

from sashimi.diffusion.loss import BandTotals, denoising_loss, example_generator
from sashimi.models.diffwave import DiffWave
from sashimi.ssm.s4 import cached_kernels
from sashimi.train.data import eval_indices, eval_loader, stream_positions
from sashimi.train.module import AudioTask

EVAL_SEED = 12345  # the noise of evaluation examples: fixed, so losses of runs and checkpoints compare


class DiffusionTask(AudioTask):
    """Trains a DiffWave (either backbone)."""

    def build_model(self, model_config) -> DiffWave:
        return DiffWave(model_config)

    def training_loss(self, x0: torch.Tensor) -> torch.Tensor:
        """x0: (B L) float waveforms, the stream's global batch ``batches_seen - 1`` on this rank."""
        t = self.config.trainer
        positions = stream_positions(self.batches_seen - 1, t.batch_size, self.global_rank, self.trainer.world_size)
        return denoising_loss(self.model, x0, [example_generator(t.seed, p) for p in positions])

    # ----- validation: per band of diffusion steps, sums reduced over ranks -----
    def on_validation_epoch_start(self) -> None:
        self.val_totals = BandTotals(self.model.schedule.T)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x0, lengths = batch  # (B L), (B,)
        t = self.config.trainer
        index = eval_indices(batch_idx, t.val_batch_size or t.batch_size, len(x0), self.global_rank,
                             self.trainer.world_size)
        self.val_totals.add(self.model, x0, lengths, [example_generator(EVAL_SEED, i) for i in index])

    def on_validation_epoch_end(self) -> None:
        sums = self.trainer.strategy.reduce(self.val_totals.to_tensor().to(self.device), reduce_op="sum")
        losses = BandTotals.from_tensor(self.model.schedule.T, sums).losses()
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, sync_dist=True)  # equal on every rank already
        self.step_plateau(losses["loss"])


@torch.no_grad()
def evaluate_denoising(model: DiffWave, dataset, *, batch_size: int = 8, device: str = "cpu",
                       progress: bool = True) -> BandTotals:
    """The band losses of ``model`` over every item of ``dataset`` (the noise validation uses: same numbers)."""
    model = model.to(device).eval()
    totals = BandTotals(model.schedule.T)
    batches = tqdm(eval_loader(dataset, batch_size=batch_size), desc="evaluate", unit="batch", disable=not progress)
    with cached_kernels(model):  # computed once per item length, not once per band and batch
        for k, (x0, lengths) in enumerate(batches):
            index = eval_indices(k, batch_size, len(x0))
            x0 = x0.to(device=device, dtype=next(model.parameters()).dtype)
            totals.add(model, x0, lengths, [example_generator(EVAL_SEED, i) for i in index])
    return totals
