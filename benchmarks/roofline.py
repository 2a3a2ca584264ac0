"""Memory roofline of recurrent generation at batch 1: how many bytes of parameters one sample streams, and what
this machine's memory delivers for a working set that size.

    python benchmarks/roofline.py                  # sc09 preset
    python benchmarks/roofline.py --preset sc09 --threads 2

At batch 1 every step reads each parameter of every tier that runs once (a matrix-vector product has no reuse),
so samples/s <= read bandwidth / bytes per sample, where the bandwidth is the one for a working set of the whole
model (it is re-read every `period` steps, so it stays cached only if it fits). The bandwidth is timed with
``torch.sum`` over a float32 buffer of the given size on ``--threads`` threads (best of 3), which reaches the
same figures as a hand-written AVX-512 read loop for buffers beyond L2 on the machine of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import time

import torch

import sashimi
from sashimi.generation.fast import FastFFBlock, FastLM, FastS4Block
from sashimi.generation.native import _ssm_arrays


def linear_bytes(lin: torch.nn.Linear) -> int:
    return 4 * (lin.weight.numel() + (lin.bias.numel() if lin.bias is not None else 0))


def block_bytes(blk, chunk: int, per_step: bool = True) -> float:
    """float32 bytes the native step reads per step of a block (per_step), or holds for it: weights and norm;
    for S4, with the chunked recurrence, the convolution taps (chunk per channel) every step and the
    recurrence's parameters once per chunk."""
    n = 4 * sum(p.numel() for p in blk.norm.parameters())
    if isinstance(blk, FastS4Block):
        w, beta, _ = _ssm_arrays(blk)
        H = w.shape[0]
        ssm = w.numel() + beta.numel()
        return n + linear_bytes(blk.output_linear) + 4 * (chunk * H + (ssm / chunk if per_step else ssm))
    assert isinstance(blk, FastFFBlock)
    return n + linear_bytes(blk.linear_in) + linear_bytes(blk.linear_out)


def tiers(fast: FastLM, chunk: int) -> list[tuple[str, float, int]]:
    """(name, bytes per step of the tier, output samples per step of the tier)."""
    out, every = [], 1
    for i, p in enumerate(fast.pool):
        blocks = list(fast.down_blocks[i]) + list(fast.up_blocks[i])
        extra = fast.head if i == 0 else None
        b = sum(block_bytes(k, chunk) for k in blocks) + (linear_bytes(extra) if extra is not None else 0)
        out.append((f"tier {i} (H={fast.down[i].shape[1]})", b, every))
        every *= p
        out.append((f"pooling {i}->{i + 1}", linear_bytes(fast.down_linear[i]) + linear_bytes(fast.up_linear[i]), every))
    out.append(("centre", sum(block_bytes(k, chunk) for k in fast.center), every))
    return out


def read_bandwidth(nbytes: int, threads: int) -> float:
    torch.set_num_threads(threads)
    x = torch.ones(max(1, nbytes // 4))
    reps = max(3, int(2e9 / max(1, nbytes)))
    x.sum()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            x.sum()
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 * reps / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="sc09")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=16, help="steps per chunk of the chunked S4 recurrence (1: off)")
    args = ap.parse_args()
    model = sashimi.SaShiMiLM(sashimi.preset(args.preset)).eval()
    with torch.no_grad():
        fast = FastLM(model, 1, compile=False)
    rows = tiers(fast, args.chunk)
    total = sum(b for _, b, _ in rows)  # every part once
    held = total + sum(block_bytes(k, args.chunk, False) - block_bytes(k, args.chunk)
                       for k in fast.modules() if isinstance(k, FastS4Block))
    per_sample = sum(b / every for _, b, every in rows)
    print(f"# {args.preset}, float32, batch 1, {args.threads} threads, S4 chunk {args.chunk}")
    print("| part | bytes per step of the part | runs every | bytes per output sample |")
    print("|---|---|---|---|")
    for name, b, every in rows:
        print(f"| {name} | {b / 1e6:.3f} MB | {every} samples | {b / every / 1e6:.3f} MB |")
    print(f"| all | {total / 1e6:.2f} MB ({held / 1e6:.2f} MB held: the working set) | | {per_sample / 1e6:.2f} MB |")
    print("\n| working set | read bandwidth | samples/s ceiling at batch 1 |")
    print("|---|---|---|")
    for size in (int(rows[0][1]), int(held // 2), int(held), int(2 * held)):
        bw = read_bandwidth(size, args.threads)
        print(f"| {size / 1e6:.1f} MB | {bw / 1e9:.1f} GB/s | {bw / per_sample:,.0f} |")
    print(f"\nbatch 1 at 16,000 samples/s needs {16000 * per_sample / 1e9:.1f} GB/s of parameter reads alone "
          f"(the S4 state, activations and synchronisation come on top).")


if __name__ == "__main__":
    main()
