"""Audio from a trained DiffWave: seeded batches through the DDPM or DDIM sampler.

    audio = generate(model, seeds=[0, 1, 2], n_samples=16000)            # ancestral DDPM, all T steps
    audio = generate(model, seeds=[0, 1, 2], n_samples=16000, steps=50)  # deterministic DDIM, 50 evaluations

Row i is seeded with seeds[i] alone, so a seed gives the same audio in any batch. The sampler runs at the length
rounded up to the backbone's pooling multiple (no padding inside the model) and the audio is cut to n_samples.
The S4 kernels are computed once and reused by all the network evaluations (``cached_kernels``). The network
runs on micro-batches of MICRO_BATCH rows (rows are independent): at batch 16 the activations of a 1-second
batch (hundreds of MB per tensor) fall out of the caches, and one evaluation of `sc09-diffwave` took 29.2 s
whole, 19.7 s in fours, 16.1 s in pairs and 17.4 s one row at a time (2 vCPUs, AMD EPYC Zen 4).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from sashimi.diffusion.samplers import SeededNoise, ddim_sample, ddpm_sample
from sashimi.ssm.s4 import cached_kernels

MICRO_BATCH = 2


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

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # x (B L), t (B) -> (B L)
        if x.shape[0] <= MICRO_BATCH:
            return model(x, t)
        return torch.cat([model(x[i:i + MICRO_BATCH], t[i:i + MICRO_BATCH])
                          for i in range(0, x.shape[0], MICRO_BATCH)])

    with cached_kernels(model):  # the S4 kernels of one length, computed once for all the steps
        if steps is None:
            x = ddpm_sample(eps, model.schedule, noise, length, on_step)
        else:
            x = ddim_sample(eps, model.schedule, noise, length, steps, on_step)
    return x[:, :n_samples]
