"""SaShiMiLM: the autoregressive audio model (token embedding -> SaShiMi backbone -> logits).

Shapes: B = batch, L = length, C = 2^bits classes. Input shifting: the backbone sees [BOS, x_0, ..., x_{L-2}],
so logits[:, t] is the distribution of x_t given x_{<t}. BOS is an extra embedding row (index C).

A conditional model (``config.labels``, e.g. the ten digits) adds one learned vector per label to the embedding
of every input sample, so every layer sees the label at every step; its methods take ``labels`` (B,) int.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from sashimi.models.backbone import BackboneState, SaShiMi
from sashimi.models.config import SaShiMiConfig

BACKBONE_FIELDS = ("d_model", "n_layers", "pool", "expand", "ff", "layer", "d_state", "unet", "dropout", "init",
                   "disc", "dt_min", "dt_max", "ssm_lr", "l_max")
NO_LABEL = -1  # a conditional model's "no label": the zero label vector (the mode model.label_dropout trains)


class SaShiMiLM(nn.Module):
    def __init__(self, config: SaShiMiConfig):
        super().__init__()
        self.config = config
        self.n_classes = config.n_classes
        self.bos = config.n_classes  # index of the start embedding
        self.embedding = nn.Embedding(config.n_classes + 1, config.d_model)
        self.backbone = SaShiMi(**{k: getattr(config, k) for k in BACKBONE_FIELDS})
        self.head = nn.Linear(config.d_model, config.n_classes)
        self.n_labels = len(config.labels)
        if self.n_labels:  # zeros: a warm start from an unconditional model begins as that model
            self.label_embedding = nn.Embedding(self.n_labels, config.d_model)
            nn.init.zeros_(self.label_embedding.weight)

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

    def label_vectors(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """labels (B,) int -> the vectors (B H) added to every input embedding; None for an unconditional model.
        A conditional model needs labels, an unconditional one refuses them. ``NO_LABEL`` asks for the zero
        vector: the unconditional mode that ``model.label_dropout`` trains (what guidance contrasts with)."""
        if not self.n_labels:
            if labels is not None:
                raise ValueError("this model is unconditional (model.labels is empty): pass no labels")
            return None
        if labels is None:
            raise ValueError(f"this model is conditioned on a label: pass labels (B,) with values in "
                             f"[0, {self.n_labels}) = {list(self.config.labels)}")
        labels = torch.as_tensor(labels, device=self.head.weight.device)
        if labels.shape != (batch,) or labels.is_floating_point():
            raise ValueError(f"labels must be ({batch},) integers, got {tuple(labels.shape)} {labels.dtype}")
        if labels.numel() and (labels.min() < NO_LABEL or labels.max() >= self.n_labels):
            raise ValueError(f"labels must lie in [0, {self.n_labels}) (or {NO_LABEL}: no label), got range "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        given = (labels >= 0)[:, None]  # (B 1): NO_LABEL rows get the zero vector
        vectors = self.label_embedding(labels.clamp(min=0).long()) * given  # (B H)
        if self.training and self.config.label_dropout:  # these sequences learn the unconditional mode
            keep = torch.rand(batch, 1, device=vectors.device) >= self.config.label_dropout
            vectors = vectors * keep
        return vectors

    def unconditional(self) -> "SaShiMiLM":
        """A copy without labels: the zero label vector, the mode ``model.label_dropout`` trains (for guidance)."""
        config = dataclasses.replace(self.config, labels=(), label_dropout=0.0)
        copy = SaShiMiLM(config).to(self.head.weight.device, self.head.weight.dtype)
        copy.load_state_dict({k: v for k, v in self.state_dict().items() if not k.startswith("label_embedding.")})
        return copy.train(self.training)

    def embed(self, tokens: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """tokens (B L) -> (B L H), plus the label vector of each sequence."""
        x = self.embedding(tokens)
        cond = self.label_vectors(labels, tokens.shape[0])
        return x if cond is None else x + cond[:, None].to(x.dtype)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B L) int [, labels (B,)] -> logits (B L C); logits[:, t] predicts tokens[:, t] from
        tokens[:, :t]."""
        self._check(tokens)
        return self.head(self.backbone(self.embed(self._shift(tokens.long()), labels)))

    # ----- recurrent generation API -----
    def default_state(self, batch_size: int) -> BackboneState:
        """State before anything is consumed; the first ``step`` should be given ``self.bos``."""
        return self.backbone.default_state(batch_size)

    def step(self, token: torch.Tensor, state: BackboneState,
             labels: torch.Tensor | None = None) -> tuple[torch.Tensor, BackboneState]:
        """token (B,) int (a sample, or ``self.bos`` first) -> logits (B C) for the next sample, state."""
        y, state = self.backbone.step(self.embed(token.long()[:, None], labels)[:, 0], state)
        return self.head(y), state

    @torch.no_grad()
    def prefill(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, BackboneState]:
        """Consume BOS + tokens (B T) (T may be 0) in convolution mode.

        Returns the logits (B C) for sample T and the exact recurrent state, ready for ``step``.
        """
        self._check(tokens)
        bos = torch.full((tokens.shape[0], 1), self.bos, dtype=torch.long, device=tokens.device)
        x = self.embed(torch.cat([bos, tokens.long()], dim=1), labels)  # (B T+1 H)
        y, state = self.backbone.prefill(x)
        return self.head(y[:, -1]), state
