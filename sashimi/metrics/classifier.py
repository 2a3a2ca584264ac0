"""The SC09 evaluation classifier: a CIFAR-style ResNeXt-29 on 1x32x32 log-mel images.

Architecture of the official protocol (state-spaces/s4 ``models/sashimi/sc09_classifier``, after Xie et al.
2017): a 3x3 stem convolution, three stages of (depth - 2) / 9 bottleneck blocks (1x1 reduce, grouped 3x3
with ``cardinality`` groups, 1x1 expand, each followed by BatchNorm; ReLU after the first two and after the
residual sum; a 1x1 projection shortcut where the width or stride changes), stride 2 at the start of stages 2
and 3, global average pooling and one linear layer. ``features`` are the pooled activations (1024 numbers for
the full-size model) and are what FID and NDB compare; ``probs`` are the softmax of the logits.

Widths: stage outputs are (stem, stem * widen, 2 * stem * widen, 4 * stem * widen) and a block with output
width W has cardinality * int(base_width * W / (widen * stem)) channels inside. The official model is
``ClassifierConfig()`` (8 x 64d, widen 4, stem 64: 34M parameters); ``ClassifierConfig.small()`` is a
narrow variant for CPUs.

Shapes: B = clips, C = channels, 32 x 32 image (mel bands x frames), K = classes.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from sashimi.errors import CheckpointError, ConfigError
from sashimi.models.config import check_fields

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass
class ClassifierConfig:
    cardinality: int = 8
    depth: int = 29
    base_width: int = 64
    widen_factor: int = 4
    stem_width: int = 64
    n_classes: int = 10
    classes: tuple[str, ...] = DIGITS

    def __post_init__(self):
        self.classes = tuple(self.classes)
        if (self.depth - 2) % 9 or self.depth < 11:
            raise ConfigError(f"classifier.depth must be 9k + 2 with k >= 1 (29 for ResNeXt-29), got {self.depth}")
        for name in ("cardinality", "base_width", "widen_factor", "stem_width", "n_classes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"classifier.{name} must be positive, got {getattr(self, name)}")
        if len(self.classes) != self.n_classes:
            raise ConfigError(f"classifier.classes has {len(self.classes)} names for n_classes={self.n_classes}")

    @classmethod
    def small(cls) -> "ClassifierConfig":
        """The CPU-sized variant shipped with the package (stem 16, widen 4, 8 x 8d: ~0.5M parameters)."""
        return cls(cardinality=8, depth=29, base_width=8, widen_factor=4, stem_width=16)

    @property
    def widths(self) -> tuple[int, int, int, int]:
        s, w = self.stem_width, self.widen_factor
        return s, s * w, 2 * s * w, 4 * s * w

    @property
    def n_features(self) -> int:
        return self.widths[-1]

    def inner_width(self, out_width: int) -> int:
        return self.cardinality * int(self.base_width * out_width / (self.widen_factor * self.stem_width))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "classifier") -> "ClassifierConfig":
        return cls(**check_fields(cls, d, where))


class Bottleneck(nn.Module):
    """1x1 reduce -> grouped 3x3 (stride) -> 1x1 expand, plus the (projected) input; (B, C, H, W) in and out."""

    def __init__(self, in_width: int, out_width: int, inner: int, cardinality: int, stride: int):
        super().__init__()
        self.conv_reduce = nn.Conv2d(in_width, inner, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(inner)
        self.conv_group = nn.Conv2d(inner, inner, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn_group = nn.BatchNorm2d(inner)
        self.conv_expand = nn.Conv2d(inner, out_width, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(out_width)
        self.project = in_width != out_width
        if self.project:
            self.shortcut_conv = nn.Conv2d(in_width, out_width, 1, stride=stride, bias=False)
            self.shortcut_bn = nn.BatchNorm2d(out_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn_reduce(self.conv_reduce(x)))
        h = F.relu(self.bn_group(self.conv_group(h)))
        h = self.bn_expand(self.conv_expand(h))
        skip = self.shortcut_bn(self.shortcut_conv(x)) if self.project else x
        return F.relu(skip + h)


class DigitClassifier(nn.Module):
    """log-mel images (B, 32, 32) or (B, 1, 32, 32) -> logits (B, K); ``features`` -> (B, n_features)."""

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = c = config or ClassifierConfig()
        widths = c.widths
        self.stem_conv = nn.Conv2d(1, widths[0], 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(widths[0])
        per_stage = (c.depth - 2) // 9
        self.stages = nn.ModuleList()
        for s in range(3):
            blocks = [Bottleneck(widths[s] if b == 0 else widths[s + 1], widths[s + 1], c.inner_width(widths[s + 1]),
                                 c.cardinality, stride=1 if (s == 0 or b > 0) else 2) for b in range(per_stage)]
            self.stages.append(nn.Sequential(*blocks))
        self.head = nn.Linear(widths[-1], c.n_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.kaiming_normal_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def checkpoint_header(self) -> dict:
        """What ``sashimi.models.io.save_model`` stores beside the weights."""
        return {"kind": "classifier", "config": self.config.to_dict()}

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = images[:, None] if images.dim() == 3 else images  # (B, 1, 32, 32)
        x = F.relu(self.stem_bn(self.stem_conv(x)))
        for stage in self.stages:
            x = stage(x)  # (B, C, 32, 32) -> (B, C', 8, 8) after the last stage
        return x.mean(dim=(2, 3))  # (B, n_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))  # (B, K)


def load_classifier(path: str | os.PathLike, map_location: str = "cpu") -> DigitClassifier:
    """A classifier saved by ``save_model`` (a ``.safetensors`` file or a directory), in eval mode."""
    from sashimi.models.io import CONFIG_NAME, WEIGHTS_NAME, check_config_json, load_weights, read_header

    path = Path(path)
    weights = path / WEIGHTS_NAME if path.is_dir() else path
    if not weights.is_file():
        raise CheckpointError(f"{weights}: no such classifier file")
    header = read_header(weights)
    if header.get("kind") != "classifier":
        raise CheckpointError(f"{weights}: holds a {header.get('kind')!r} model, not an evaluation classifier")
    if path.is_dir():
        check_config_json(path / CONFIG_NAME, header, weights)
    model = DigitClassifier(ClassifierConfig.from_dict(header["config"], where=f"{weights}: config"))
    return load_weights(model, weights, map_location)
