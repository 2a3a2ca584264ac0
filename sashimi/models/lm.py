"""SaShiMiLM: the autoregressive audio model (token embedding -> SaShiMi backbone -> logits).

Shapes: B = batch, L = length, C = 2^bits classes. Input shifting: the backbone sees [BOS, x_0, ..., x_{L-2}],
so logits[:, t] is the distribution of x_t given x_{<t}. BOS is an extra embedding row (index C).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from sashimi.models.backbone import BackboneState, SaShiMi
from sashimi.models.config import SaShiMiConfig

BACKBONE_FIELDS = ("d_model", "n_layers", "pool", "expand", "ff", "layer", "d_state", "unet", "dropout", "init",
                   "disc", "dt_min", "dt_max", "ssm_lr", "l_max")


class SaShiMiLM(nn.Module):
    def __init__(self, config: SaShiMiConfig):
        super().__init__()
        self.config = config
        self.n_classes = config.n_classes
        self.bos = config.n_classes  # index of the start embedding
        self.embedding = nn.Embedding(config.n_classes + 1, config.d_model)
        self.backbone = SaShiMi(**{k: getattr(config, k) for k in BACKBONE_FIELDS})
        self.head = nn.Linear(config.d_model, config.n_classes)

    @classmethod
    def from_pretrained(cls, name: str, map_location: str | torch.device = "cpu") -> "SaShiMiLM":
        """A trained model by name: one shipped in the package (``sashimi models`` lists them), a local folder or
        file written by ``sashimi.save_model``, or a Hugging Face hub id (downloaded with huggingface_hub and
        cached; offline, from the cache only)."""
        from sashimi.errors import CheckpointError
        from sashimi.models.io import load_model

        model = load_model(name, map_location=map_location)
        if not isinstance(model, cls):
            raise CheckpointError(f"{name}: this is a {type(model).__name__}, not a {cls.__name__}; use "
                                  "sashimi.load_model for any kind")
        return model

    def _shift(self, tokens: torch.Tensor) -> torch.Tensor:
        bos = torch.full_like(tokens[:, :1], self.bos)
        return torch.cat([bos, tokens[:, :-1]], dim=1)

    def _check(self, tokens: torch.Tensor) -> None:
        if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"tokens must be an integer tensor, got {tokens.dtype}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.n_classes):
            raise ValueError(f"tokens must lie in [0, {self.n_classes}), got range "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B L) int -> logits (B L C); logits[:, t] predicts tokens[:, t] from tokens[:, :t]."""
        self._check(tokens)
        return self.head(self.backbone(self.embedding(self._shift(tokens.long()))))

    # ----- recurrent generation API -----
    def default_state(self, batch_size: int) -> BackboneState:
        """State before anything is consumed; the first ``step`` should be given ``self.bos``."""
        return self.backbone.default_state(batch_size)

    def step(self, token: torch.Tensor, state: BackboneState) -> tuple[torch.Tensor, BackboneState]:
        """token (B,) int (a sample, or ``self.bos`` first) -> logits (B C) for the next sample, state."""
        y, state = self.backbone.step(self.embedding(token.long()), state)
        return self.head(y), state

    @torch.no_grad()
    def prefill(self, tokens: torch.Tensor) -> tuple[torch.Tensor, BackboneState]:
        """Consume BOS + tokens (B T) (T may be 0) in convolution mode.

        Returns the logits (B C) for sample T and the exact recurrent state, ready for ``step``.
        """
        self._check(tokens)
        bos = torch.full((tokens.shape[0], 1), self.bos, dtype=torch.long, device=tokens.device)
        x = self.embedding(torch.cat([bos, tokens.long()], dim=1))  # (B T+1 H)
        y, state = self.backbone.prefill(x)
        return self.head(y[:, -1]), state
