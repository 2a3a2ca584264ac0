"""Where a word begins in a token clip: its first sample louder than ``LOUD``, and the weights that make the
samples around that point count more in a training loss (``optim.onset_weight``)."""
from __future__ import annotations

import numpy as np
import torch

from sashimi.audio.quantize import Quantizer

LOUD = 0.02  # a word's onset: its first sample above this amplitude (full scale 1)


def loud_tokens(quantizer: Quantizer) -> torch.Tensor:
    """(C) bool: the tokens whose amplitude is above LOUD."""
    return torch.from_numpy(np.abs(quantizer.decode_array(np.arange(quantizer.n_classes))) > LOUD)


def onsets(tokens: torch.Tensor, loud: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (N L), loud (C) bool from ``loud_tokens`` -> (index (N,) of each clip's first loud sample, 0 where
    none is; found (N,) bool)."""
    is_loud = loud.to(tokens.device)[tokens.long()]  # (N L)
    return is_loud.int().argmax(dim=1), is_loud.any(dim=1)


def onset_window(tokens: torch.Tensor, loud: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """tokens (N L) -> (N L) bool: the samples from ``before`` samples ahead of each clip's onset to ``after``
    samples past it (the quiet start of the word and its first sounds); none in a clip with no loud sample."""
    index, found = onsets(tokens, loud)  # (N,), (N,)
    t = torch.arange(tokens.shape[1], device=tokens.device)[None, :]  # (1 L)
    return (t >= (index - before)[:, None]) & (t < (index + after)[:, None]) & found[:, None]


def onset_weights(tokens: torch.Tensor, loud: torch.Tensor, before: int, after: int, weight: float) -> torch.Tensor:
    """tokens (N L) -> weights (N L): ``weight`` on the samples of ``onset_window``, 1 elsewhere and in clips
    with no loud sample."""
    return 1.0 + (float(weight) - 1.0) * onset_window(tokens, loud, before, after).float()
