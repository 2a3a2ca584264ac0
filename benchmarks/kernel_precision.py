"""Float32 DPLR kernels against float64: gradient error and time, per init.

    python benchmarks/kernel_precision.py

For each init: the largest relative error (max-abs, as in the tests) of the kernel's parameter gradients of a
float32 layer against the same layer in float64 (loss = sum of squared kernel taps), with the kernel computed
in float32 or in float64 (``DPLRKernel.in_double``, on by default for the inits in ``DOUBLE_INITS``); and the
time of the kernel's forward + backward pass at H=64, N=64, L=16,000.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, timeit  # noqa: E402

from sashimi.ssm import S4  # noqa: E402


def gradients(layer: S4, L: int) -> dict[str, torch.Tensor]:
    layer.zero_grad()
    layer.kernel(L).square().sum().backward()
    return {name: p.grad.double() for name, p in layer.kernel.named_parameters()}


def worst_errors(init: str, in_double: bool, L: int, seeds: int) -> dict[str, float]:
    """{parameter: largest max-abs relative gradient error over the seeds}."""
    worst: dict[str, float] = {}
    for seed in range(seeds):
        torch.manual_seed(seed)
        layer = S4(8, 64, init=init, l_max=L)
        reference = copy.deepcopy(layer).double()
        layer.kernel.in_double = in_double
        ours, exact = gradients(layer, L), gradients(reference, L)
        for name, g in exact.items():
            err = ((ours[name] - g).abs().max() / g.abs().max()).item()
            worst[name] = max(worst.get(name, 0.0), err)
    return worst


def kernel_time(init: str, in_double: bool) -> float:
    layer = S4(64, 64, init=init, l_max=16000)
    layer.kernel.in_double = in_double
    return timeit(lambda: gradients(layer, 16000), repeat=5)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print(f"# {machine()}")
    print("| init | kernel in | log_dt | A_real | A_imag | B | C | P | fwd+bwd, H=64 L=16k |")
    print("|---|---|---|---|---|---|---|---|---|")
    for init in ("legs", "legt", "fout"):
        for in_double in (False, True):
            worst: dict[str, float] = {}
            for L in (1000, 4000):
                for name, err in worst_errors(init, in_double, L, args.seeds).items():
                    worst[name] = max(worst.get(name, 0.0), err)
            cells = " | ".join(f"{worst[n]:.1e}" for n in ("log_dt", "A_real", "A_imag", "B", "C", "P"))
            dtype = "float64" if in_double else "float32"
            print(f"| {init} | {dtype} | {cells} | {kernel_time(init, in_double) * 1e3:.0f} ms |", flush=True)


if __name__ == "__main__":
    main()
