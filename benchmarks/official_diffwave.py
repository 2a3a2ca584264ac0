"""The official DiffWave + SaShiMi (albertfgu/diffwave-sashimi) at the size of `sc09-diffwave`, on this machine:
one training step at batch 1 x 16,000 and sampling with 200 steps, for the OFFICIAL figures of
benchmarks/diffusion.py. Pure PyTorch: without its CUDA Cauchy extension and without pykeops, the official S4
kernel falls back on its materializing Cauchy product (as it would on any CPU).

Run (not run by the tests; it takes a long time and several GB on a CPU):

    git clone https://github.com/albertfgu/diffwave-sashimi /tmp/diffwave-sashimi     # or a local mirror:
    #   git clone /work/.mirror/albertfgu+diffwave-sashimi/repo /tmp/diffwave-sashimi  (LFS checkpoints not needed)
    pip install einops opt_einsum          # the official S4 file's imports (scipy and lightning are there already)
    PYTHONPATH=/tmp/diffwave-sashimi python benchmarks/official_diffwave.py [--batch 1 16] [--evals 3] [--full]
        [--no-train]

``--no-train`` skips the training step (whose autograd graph sets the peak memory: 19.6 GiB at batch 1 x 16,000),
so that sampling, which runs without gradients, can be measured at batch 16 on a 24 GiB machine.

Sampling is timed the way benchmarks/diffusion.py times it (same network evaluations, same extrapolation): the
first evaluation plus the median of ``--evals`` later ones times the 199 left, or end to end with ``--full``. The
official code computes its S4 kernels again at every evaluation; that is part of what is timed. Its update is the
official DDPM step: x <- (x - (1 - alpha_t) / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t), plus sigma_t z for t > 0.
The official code runs only on CUDA (``.cuda()`` in its step embedding and its training loss), so this script
replaces its step embedding with the same formula on the CPU and writes the loss and the sampling loop itself.
"""
from __future__ import annotations

import argparse
import math
import resource
import statistics
import sys
import time
import types

import torch
import torch.nn.functional as F

from common import machine, timeit  # benchmarks/common.py (the script's folder is on sys.path)

T, BETA_START, BETA_END = 200, 1e-4, 0.02


def import_official():
    """models.sashimi.Sashimi from the checkout on PYTHONPATH, with its CUDA-only step embedding replaced."""
    try:
        import pytorch_lightning  # noqa: F401  (the official S4 file imports rank_zero_only from it)
    except ModuleNotFoundError:
        import lightning.pytorch.utilities as utilities

        shim = types.ModuleType("pytorch_lightning")
        shim.utilities = utilities
        sys.modules["pytorch_lightning"], sys.modules["pytorch_lightning.utilities"] = shim, utilities
    try:
        import models.sashimi as official
    except ModuleNotFoundError as err:
        raise SystemExit(f"cannot import the official code ({err}): put a checkout of albertfgu/diffwave-sashimi on "
                         "PYTHONPATH and pip install einops opt_einsum (see this file's docstring)") from None
    official.calc_diffusion_step_embedding = step_embedding
    return official.Sashimi


def step_embedding(steps: torch.Tensor, dim: int) -> torch.Tensor:
    """DiffWave's sinusoidal step embedding (B, 1) -> (B, dim), on the steps' device (the official one moves its
    frequencies to CUDA)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=steps.device) * -(math.log(10000) / (half - 1)))
    angles = steps * freqs
    return torch.cat((torch.sin(angles), torch.cos(angles)), 1)


def schedule() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """alpha, alpha_bar and sigma = sqrt(beta~) of the linear schedule (T, float32)."""
    beta = torch.linspace(BETA_START, BETA_END, T)
    alpha = 1 - beta
    alpha_bar = torch.cumprod(alpha, 0)
    prev = torch.cat([torch.ones(1), alpha_bar[:-1]])
    return alpha, alpha_bar, ((1 - prev) / (1 - alpha_bar) * beta).sqrt()


def train_step(net, optimizer, length: int, alpha_bar: torch.Tensor) -> None:
    """The official training step: a random step per example, x_t from q(x_t | x0), MSE of the noise, Adam."""
    x0 = 0.1 * torch.randn(1, 1, length)
    t = torch.randint(T, size=(1, 1, 1))
    z = torch.randn_like(x0)
    x_t = alpha_bar[t].sqrt() * x0 + (1 - alpha_bar[t]).sqrt() * z
    loss = F.mse_loss(net((x_t, t.view(1, 1))), z)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def sample(net, batch: int, length: int, evaluations: int, on_step=None) -> torch.Tensor:
    """The official DDPM loop over the last ``evaluations`` of the T steps (all of them: a full sample)."""
    alpha, alpha_bar, sigma = schedule()
    x = torch.randn(batch, 1, length)
    for t in range(T - 1, T - 1 - evaluations, -1):
        eps = net((x, t * torch.ones(batch, 1)))
        x = (x - (1 - alpha[t]) / (1 - alpha_bar[t]).sqrt() * eps) / alpha[t].sqrt()
        if t > 0:
            x = x + sigma[t] * torch.randn_like(x)
        if on_step is not None:
            on_step()
    return x


def sampling_seconds(net, batch: int, length: int, evals: int, full: bool) -> float:
    if full:
        return timeit(lambda: sample(net, batch, length, T), repeat=1, warmup=0)[0]
    stamps = []
    t0 = time.perf_counter()
    sample(net, batch, length, 1 + evals, on_step=lambda: stamps.append(time.perf_counter()))
    later = statistics.median(b - a for a, b in zip(stamps, stamps[1:]))
    return (stamps[0] - t0) + (T - 1) * later


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=16000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeat", type=int, default=1, help="timed training steps (after one warm-up step)")
    parser.add_argument("--evals", type=int, default=3, help="later evaluations timed per sampling case")
    parser.add_argument("--full", action="store_true", help="run the 200-step samplers end to end")
    parser.add_argument("--no-train", action="store_true", help="time sampling only (no training step)")
    args = parser.parse_args()
    torch.manual_seed(0)
    Sashimi = import_official()
    net = Sashimi(in_channels=1, out_channels=1, d_model=128, n_layers=6, pool=[4, 4], expand=2, ff=2, unet=True,
                  diffusion_step_embed_dim_in=128, diffusion_step_embed_dim_mid=512,
                  diffusion_step_embed_dim_out=512, unconditional=True, L=args.length)
    n_params = sum(p.numel() for p in net.parameters())
    _, alpha_bar, _ = schedule()
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-4)
    best = median = None
    if not args.no_train:
        best, median = timeit(lambda: train_step(net, optimizer, args.length, alpha_bar), repeat=args.repeat,
                              warmup=1)
    audio = args.length / 16000
    per_audio = {}
    for batch in args.batch:
        per_audio[batch] = sampling_seconds(net.eval(), batch, args.length, args.evals, args.full) / (batch * audio)
    print(f"machine: {machine()}")
    print(f"official DiffWave + SaShiMi (d_model 128, 6 layers, pool 4 x 4): {n_params:,} parameters, clips of "
          f"{args.length:,} samples, float32 CPU, peak resident memory "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")
    if median is not None:
        print(f"training step, batch 1: {median:.1f} s (best {best:.1f})")
    for batch, seconds in per_audio.items():
        print(f"DDPM, 200 steps, batch {batch}: {seconds:.1f} s per second of audio "
              f"({'end to end' if args.full else f'1 + {args.evals} evaluations, extrapolated'})")
    print("for benchmarks/diffusion.py:")
    train = "None" if median is None else f"{median:.2f}"
    print(f'OFFICIAL = {{"train_step": {train}, "ddpm_per_audio_second": '
          f'{{{", ".join(f"{b}: {s:.2f}" for b, s in per_audio.items())}}}, '
          f'"fast_per_audio_second": {{1: None, 16: None}}}}')


if __name__ == "__main__":
    main()
