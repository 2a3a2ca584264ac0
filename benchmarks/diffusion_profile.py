"""Where one network evaluation of DiffWave sampling spends its time, and what bf16 would buy the Linear layers.

    python benchmarks/diffusion_profile.py [--preset sc09-diffwave] [--rows 2] [--length 16000]

Prints the wall time of one evaluation on ROWS clips (the sampler's micro-batch) with the S4 kernels cached as
the sampler caches them, the torch profiler's top operators, and float32 against bfloat16 timings of Linear
layers of the shapes the backbone uses (bf16 matrix products use AVX-512 BF16 / AMX where the CPU has them),
then a floor: the Linear layers' FLOPs per clip and evaluation (counted with forward hooks) at the best matrix-
product rate this CPU reaches, times the sampler's T evaluations, in seconds per second of audio.
"""
from __future__ import annotations

import argparse
import time

import torch
from common import cpu_flags, machine

from sashimi.models.diffwave import DiffWave
from sashimi.ssm.s4 import cached_kernels
from sashimi.train.config import load_config

# (rows, in, out) of Linear layers in sc09-diffwave at 1 s of 16 kHz audio and 2 clips per evaluation
LINEAR_SHAPES = [(32000, 128, 512), (32000, 256, 128), (8000, 256, 1024), (2000, 512, 2048)]


def best_of(f, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="sc09-diffwave")
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--length", type=int, default=16000)
    args = ap.parse_args()
    print(f"machine: {machine()}; CPU flags: {cpu_flags()}")
    model = DiffWave(load_config(args.preset).model).eval()
    x, t = torch.randn(args.rows, args.length), torch.full((args.rows,), 100, dtype=torch.long)
    with torch.inference_mode(), cached_kernels(model):
        model(x, t)  # computes the kernels
        print(f"{args.preset}: one evaluation of {args.rows} x {args.length}: {best_of(lambda: model(x, t), 3):.2f} s")
        with torch.profiler.profile() as prof:
            model(x, t)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
    print(f"{'Linear (rows x in -> out)':>28} {'float32 ms':>11} {'bf16 ms':>8} {'speed-up':>9}")
    for rows, n_in, n_out in LINEAR_SHAPES:
        a, w, b = torch.randn(rows, n_in), torch.randn(n_out, n_in), torch.randn(n_out)
        ab, wb, bb = a.bfloat16(), w.bfloat16(), b.bfloat16()
        f32 = best_of(lambda: torch.nn.functional.linear(a, w, b))
        b16 = best_of(lambda: torch.nn.functional.linear(ab, wb, bb))
        print(f"{f'{rows} x {n_in} -> {n_out}':>28} {f32 * 1e3:11.1f} {b16 * 1e3:8.1f} {f32 / b16:8.2f}x")
    print_floor(model, args.length, model.config.sample_rate, model.config.diffusion_steps)


def linear_flops(model, length: int) -> float:
    """FLOPs of the Linear layers in one evaluation of ``model`` on one clip of ``length`` samples."""
    total = [0]

    def count(mod, inputs, _):
        total[0] += 2 * inputs[0].numel() * mod.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.inference_mode():
        model(torch.randn(1, length), torch.zeros(1, dtype=torch.long))
    for h in hooks:
        h.remove()
    return total[0]


def gemm_rate(dtype: torch.dtype, n: int = 512, rows: int = 32000) -> float:
    """Best FLOP/s of a rows x n x n matrix product on this CPU (all threads)."""
    a, w = torch.randn(rows, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * rows * n * n / best_of(lambda: torch.nn.functional.linear(a, w))


def print_floor(model, length: int, sample_rate: int, steps: int) -> None:
    flops = linear_flops(model, length)
    print(f"Linear layers: {flops / 1e9:.1f} GFLOP per clip and evaluation")
    for dtype in (torch.float32, torch.bfloat16):
        rate = gemm_rate(dtype)
        floor = flops / rate * steps / (length / sample_rate)
        print(f"  {str(dtype)[6:]:>8}: best matrix product {rate / 1e9:.0f} GFLOP/s -> the Linear layers alone need "
              f"{floor:.1f} s per second of audio over {steps} evaluations")


if __name__ == "__main__":
    main()
