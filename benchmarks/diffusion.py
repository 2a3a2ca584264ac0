"""Speed of the diffusion model (DiffWave + SaShiMi, `sc09-diffwave`, 23.5M parameters) on this machine, float32:

  training step   one forward + backward + AdamW step of the denoising loss at batch 1 x 16,000 samples
  sampling        seconds of compute per second of audio: ancestral DDPM over all 200 steps, and the fast
                  DDIM sampler with --steps S evaluations, at batch 1 and 16 (``sashimi.diffusion.generate``)

A sampler's evaluations all run the same shapes (the S4 kernels are computed at the first and reused), so by
default sampling is timed in one `generate(..., steps=1 + k)` run as its first evaluation (set-up and kernels
included) plus the median of its k later evaluations times the evaluations left (DDPM's per-step noise draws,
~1 ms at batch 16, are left out). `--full` runs the samplers end to end instead (DDPM at batch 16 takes hours on
a 2-core CPU).

OFFICIAL holds the official implementation's figures (albertfgu/diffwave-sashimi, pure PyTorch, the same machine
and sizes), measured with benchmarks/official_diffwave.py; None until they are. ``--weights bf16`` adds sampling rows
with the Linear layers in bfloat16 (``sashimi.nn.precision``, `sashimi generate --weights bf16`); the float32 rows
are the reference and the ones the targets are stated for.

    python benchmarks/diffusion.py [--quick] [--full] [--steps 50] [--batch 1 16] [--repeat 3] [--device cpu|cuda]
        [--weights float32 bf16] [--no-train]
    python benchmarks/diffusion.py --preset demo-diffwave --length 1024 --quick     # a smoke run, not a timing
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import machine, timeit  # benchmarks/common.py (the script's folder is on sys.path)

import sashimi
from sashimi.diffusion.generate import generate
from sashimi.diffusion.loss import denoising_loss, example_generator
from sashimi.nn.precision import bf16_linears
from sashimi.ssm.optim import adamw

# Seconds, measured with benchmarks/official_diffwave.py (albertfgu/diffwave-sashimi, pure PyTorch: no CUDA Cauchy
# extension, no pykeops) on 2 vCPUs of an AMD EPYC (Zen 4, AVX-512), torch 2.13.0+cpu. Training step and batch 1:
# `--batch 1 --evals 2`, 2026-12-05 (peak resident memory 19.6 GiB, set by the training step); batch 1 measured
# again on 2026-12-06 gave 4,732 and 3,742 s (this host is noisy): the lowest is kept. Batch 16: `--batch 16
# --evals 2 --no-train`, 2026-12-06, 828 and 836 s in two runs (peak 4.5 GiB without the training step); the
# lower is kept.
OFFICIAL = {
    "train_step": 131.54,  # one training step, batch 1 x 16,000
    "ddpm_per_audio_second": {1: 2714.22, 16: 828.22},  # 200-step sampling, per second of audio, by batch size
    "fast_per_audio_second": {1: None, 16: None},  # the official code has no fast sampler: stays None
}


def train_step_seconds(model, length: int, repeat: int, device: str) -> tuple[float, float]:
    """(best, median) seconds of forward + backward + AdamW step at batch 1."""
    optimizer = adamw(model, 2e-4, 0.0)
    x0 = 0.1 * torch.randn(1, length, generator=torch.Generator().manual_seed(0)).to(device)
    step = iter(range(10**9))

    def one():
        loss = denoising_loss(model, x0, [example_generator(0, next(step))])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return timeit(one, repeat=repeat, warmup=1, device=device)


def sampling_seconds(model, length: int, batch: int, steps: list[int | None], evals: int, full: bool,
                     device: str) -> list[float]:
    """Seconds to sample ``batch`` clips of ``length`` samples with each sampler of ``steps`` (None: DDPM over all
    T steps; S: DDIM with S evaluations)."""
    seeds = list(range(batch))
    if full:
        return [timeit(lambda: generate(model, seeds, length, steps=s), repeat=1, warmup=0, device=device)[0]
                for s in steps]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    stamps = []

    def on_step():
        sync()
        stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    generate(model, seeds, length, steps=1 + evals, on_step=on_step)
    first = stamps[0] - t0  # set-up and the first evaluation, S4 kernels included
    later = statistics.median(b - a for a, b in zip(stamps, stamps[1:]))
    return [first + ((s or model.config.diffusion_steps) - 1) * later for s in steps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sc09-diffwave")
    parser.add_argument("--length", type=int, default=16000, help="samples per clip (default 16,000: 1 s)")
    parser.add_argument("--steps", type=int, default=50, help="evaluations of the fast (DDIM) sampler")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeat", type=int, default=3, help="timed training steps (best and median)")
    parser.add_argument("--evals", type=int, default=3, help="later evaluations timed per sampling case")
    parser.add_argument("--full", action="store_true", help="run every sampler end to end")
    parser.add_argument("--quick", action="store_true", help="1 training step, 2 later evaluations per case")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--weights", nargs="+", choices=("float32", "bf16"), default=["float32"],
                        help="sampling rows for these Linear-layer precisions")
    parser.add_argument("--no-train", action="store_true", help="time sampling only")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.evals = 1, 2
    torch.manual_seed(0)
    config = sashimi.preset(args.preset)
    if config.backbone == "sashimi":  # kernels attuned to the clip length, as in training
        config = sashimi.preset(args.preset, l_max=args.length)
    model = sashimi.DiffWave(config).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    rows = []
    if not args.no_train:
        best, median = train_step_seconds(model, args.length, args.repeat, args.device)
        rows.append(("training step, batch 1", f"{median:.2f} s (best {best:.2f})",
                     _ratio(median, OFFICIAL["train_step"])))
    audio = args.length / config.sample_rate
    samplers = (("ddpm", None, f"DDPM, {config.diffusion_steps} steps"),
                ("fast", args.steps, f"DDIM, {args.steps} steps"))
    for weights in args.weights:
        net = model if weights == "float32" else bf16_linears(model)
        for batch in args.batch:
            times = sampling_seconds(net, args.length, batch, [s for _, s, _ in samplers], args.evals, args.full,
                                     args.device)
            for (name, _, label), seconds in zip(samplers, times):
                per_audio = seconds / (batch * audio)
                rows.append((f"{label}, batch {batch}{'' if weights == 'float32' else ', bf16 Linear'}",
                             f"{per_audio:.2f} s per s of audio ({seconds:.1f} s)",
                             _ratio(per_audio, OFFICIAL[f"{name}_per_audio_second"].get(batch))))
    print(f"machine: {machine()}")
    print(f"{args.preset} ({n_params:,} parameters), clips of {args.length:,} samples, "
          f"{' and '.join(args.weights)} Linear layers on {args.device}; "
          f"sampling {'end to end' if args.full else f'from 1 + {args.evals} evaluations, extrapolated'}; "
          f"{time.perf_counter() - t0:.0f} s in all")
    print("| measurement | sashimi | official | official / sashimi |")
    print("|---|---|---|---|")
    for label, ours, (theirs, ratio) in rows:
        print(f"| {label} | {ours} | {theirs} | {ratio} |")


def _ratio(ours: float, official: float | None) -> tuple[str, str]:
    if official is None:
        return "not measured", "-"
    return f"{official:.2f}", f"{official / ours:.1f}x"


if __name__ == "__main__":
    main()
