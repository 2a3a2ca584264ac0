"""DiffWave: the diffusion audio model (``model.kind: diffwave``), a noise predictor eps(x_t, t) on float waveforms.

Shapes: B = batch, L = length. x_t (B, L) is audio in [-1, 1] with noise of diffusion step t added
(``sashimi.diffusion.schedule``); t (B,) is the integer step in [0, T). The output (B, L) is the predicted noise.

The step goes through ``StepEmbedding`` (sinusoidal, two Linear + swish layers), then one of two backbones
(``config.backbone``): the bidirectional SaShiMi U-Net, or DiffWave's WaveNet. Both zero-initialise their output
layer, so an untrained model predicts zero noise.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from sashimi.diffusion.schedule import Schedule
from sashimi.models.diffwave_config import DiffWaveConfig
from sashimi.models.diffwave_sashimi import DiffusionSaShiMi
from sashimi.models.wavenet import WaveNet
from sashimi.nn.diffusion import StepEmbedding


class DiffWave(nn.Module):
    def __init__(self, config: DiffWaveConfig):
        super().__init__()
        self.config = config
        self.embedding = StepEmbedding(config.embed_in, config.embed_mid, config.embed_out)
        self.backbone = DiffusionSaShiMi(config) if config.backbone == "sashimi" else WaveNet(config)
        self.schedule = Schedule.linear(config.diffusion_steps, config.beta_start, config.beta_end)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B L) float, t (B,) integer steps -> predicted noise (B L)."""
        self._check(x, t)
        return self.backbone(x, self.embedding(t, x.dtype))

    def _check(self, x: torch.Tensor, t: torch.Tensor) -> None:
        if x.dim() != 2 or not x.is_floating_point():
            raise ValueError(f"DiffWave expects float audio (batch, length), got {x.dtype} {tuple(x.shape)}")
        if t.shape != x.shape[:1] or t.is_floating_point():
            raise ValueError(f"DiffWave expects integer steps of shape ({x.shape[0]},), got {t.dtype} {tuple(t.shape)}")
        T = self.config.diffusion_steps
        if t.numel() and (t.min() < 0 or t.max() >= T):
            raise ValueError(f"diffusion steps must lie in [0, {T}), got range [{int(t.min())}, {int(t.max())}]")

    @property
    def length_multiple(self) -> int:
        """Sample lengths that need no padding inside the backbone."""
        return self.config.length_multiple

    def checkpoint_header(self) -> dict:
        """What ``sashimi.save_model`` stores with the weights (``load_model`` rebuilds the model from it)."""
        return {"kind": "diffwave", "config": self.config.to_dict()}
