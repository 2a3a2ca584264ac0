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
        return self.label_embedding(labels.clamp(min=0).long()) * given  # (B H)

    def drop_labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """labels (B,) -> the same with a ``model.label_dropout`` share (drawn per sequence) set to ``NO_LABEL``, so
        those sequences train the unconditional mode. Only while training; the trainer draws once per step, so
        every forward pass of that step (self-fed draws, the scored pass, a label-margin pass) sees one draw."""
        if labels is None or not (self.training and self.config.label_dropout):
            return labels
        labels = torch.as_tensor(labels, device=self.head.weight.device)
        drop = torch.rand(labels.shape, device=labels.device) < self.config.label_dropout
        return labels.masked_fill(drop, NO_LABEL)

    def rival_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """labels (B,) -> for each, the other label whose vector is nearest by cosine (B,); ``NO_LABEL`` stays.
        The label a sample is most easily mistaken for: what ``optim.label_margin`` trains the model to tell apart."""
        if self.n_labels < 2:
            raise ValueError("rival labels need a model with at least two labels")
        with torch.no_grad():
            unit = torch.nn.functional.normalize(self.label_embedding.weight.float(), dim=1)  # (N H)
            cos = unit @ unit.T  # (N N)
            cos.fill_diagonal_(-float("inf"))
            nearest = cos.argmax(1)  # (N,)
        labels = torch.as_tensor(labels, device=nearest.device).long()
        return torch.where(labels >= 0, nearest[labels.clamp(min=0)], labels)

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
