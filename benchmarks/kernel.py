"""S4 kernel benchmark: time and peak memory of the kernel and of one layer forward+backward.

H=64, N=64, L in {16k, 128k, 1M}; fast (blocked, chunked) vs naive (materialized reference) kernels, for the
DPLR (S4) and diagonal (S4D) layers. Each case runs in a fresh subprocess so its peak memory is its own.

    python benchmarks/kernel.py            # CPU (and GPU when one is present)
    python benchmarks/kernel.py --quick    # 16k only
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks.common import gib, machine, peak_extra_bytes, timeit  # noqa: E402

H, N = 64, 64
NAIVE_LIMIT = 6 * 2**30  # skip naive cases whose materialized tensor alone exceeds this


def naive_bytes(mode: str, L: int) -> int:
    # DPLR: (1+r)(S+r) Cauchy terms of (H, N, L/2+1) complex64; diag: (H, N/2, L) complex64 powers
    return 4 * H * N * (L // 2 + 1) * 8 if mode == "dplr" else H * (N // 2) * L * 8


def run_case(mode: str, what: str, impl: str, L: int, device: str) -> dict:
    from sashimi.ssm import S4
    from sashimi.ssm.reference import naive_kernel

    torch.manual_seed(0)
    layer = S4(H, N, mode=mode, l_max=L if mode == "dplr" else None).to(device)
    if what == "kernel":
        kernel = (lambda: layer.kernel(L)) if impl == "fast" else (lambda: naive_kernel(layer.kernel, L))
        fn = lambda: torch.no_grad()(kernel)()
    else:
        x = torch.randn(1, L, H, device=device, requires_grad=True)
        fn = lambda: layer(x).sum().backward()
    peak = peak_extra_bytes(fn, device)
    repeat = 5 if L <= 16384 else 2
    best, median = timeit(fn, repeat=repeat, warmup=0, device=device)
    return {"best": best, "median": median, "peak": peak}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(*json.loads(args.case))))
        return
    lengths = [16_000] if args.quick else [16_000, 128_000, 1_000_000]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"machine: {machine()}\n")
    print("| device | mode | measured | L | impl | time best (median) | peak extra memory |")
    print("|---|---|---|---|---|---|---|")
    for device in devices:
        for mode in ["dplr", "diag"]:
            for what in ["kernel", "layer fwd+bwd"]:
                for L in lengths:
                    impls = ["fast"] + (["naive"] if what == "kernel" else [])
                    for impl in impls:
                        row = f"| {device} | {mode} | {what} | {L:,} | {impl} |"
                        if impl == "naive" and naive_bytes(mode, L) > NAIVE_LIMIT:
                            print(f"{row} not run: needs {gib(naive_bytes(mode, L))} for one term |  |", flush=True)
                            continue
                        case = json.dumps([mode, "kernel" if what == "kernel" else "layer", impl, L, device])
                        out = subprocess.run([sys.executable, __file__, "--case", case], capture_output=True, text=True)
                        if out.returncode:
                            print(f"{row} failed: {out.stderr.strip().splitlines()[-1]} |  |", flush=True)
                            continue
                        r = json.loads(out.stdout.strip().splitlines()[-1])
                        print(f"{row} {r['best']:.3f} s ({r['median']:.3f}) | {gib(r['peak'])} |", flush=True)


if __name__ == "__main__":
    main()
