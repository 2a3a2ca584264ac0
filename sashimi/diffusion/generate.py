"""Audio from a trained DiffWave: seeded batches through the DDPM or DDIM sampler.

    audio = generate(model, seeds=[0, 1, 2], n_samples=16000)            # ancestral DDPM, all T steps
    audio = generate(model, seeds=[0, 1, 2], n_samples=16000, steps=50)  # deterministic DDIM, 50 evaluations

Row i is seeded with seeds[i] alone, so a seed gives the same audio in any batch. The sampler runs at the length
rounded up to the backbone's pooling multiple (no padding inside the model) and the audio is cut to n_samples.
The S4 kernels are computed once and reused by all the network evaluations (``cached_kernels``).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from sashimi.diffusion.samplers import SeededNoise, ddim_sample, ddpm_sample
from sashimi.ssm.s4 import cached_kernels


@torch.inference_mode()
def generate(model, seeds: list[int], n_samples: int, *, steps: int | None = None,
             on_step: Callable[[], None] | None = None) -> torch.Tensor:
    """(B, n_samples) float audio from ``model`` (a DiffWave), not clipped; ``on_step`` is called after every
    network evaluation (T of them, or ``steps`` with DDIM)."""
    model.eval()
    weight = next(model.parameters())
    multiple = model.length_multiple
    length = math.ceil(n_samples / multiple) * multiple
    noise = SeededNoise(seeds, device=weight.device, dtype=weight.dtype)
    with cached_kernels(model):  # the S4 kernels of one length, computed once for all the steps
        if steps is None:
            x = ddpm_sample(model, model.schedule, noise, length, on_step)
        else:
            x = ddim_sample(model, model.schedule, noise, length, steps, on_step)
    return x[:, :n_samples]
