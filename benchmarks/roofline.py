"""Memory roofline of recurrent generation at batch 1: how many bytes of parameters one sample streams, and what
this machine's memory delivers for a working set that size.

    python benchmarks/roofline.py                  # sc09 preset
    python benchmarks/roofline.py --preset sc09 --threads 2

At batch 1 every step reads each parameter of every tier that runs once (a matrix-vector product has no reuse),
so samples/s <= read bandwidth / bytes per sample, where the bandwidth is the one for a working set of the whole
model (the deepest tier re-reads its part every 16 samples, so it stays cached only if it fits). The bandwidth is timed with
``torch.sum`` over a float32 buffer of the given size on ``--threads`` threads (best of 3), which reaches the
same figures as a hand-written AVX-512 read loop for buffers beyond L2 on the machine of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, timeit  # noqa: E402

import sashimi  # noqa: E402
from sashimi.generation.fast import FastFFBlock, FastLM, FastS4Block  # noqa: E402
from sashimi.generation.native import _ssm_arrays  # noqa: E402


def linear_bytes(lin: torch.nn.Linear) -> int:
    return 4 * (lin.weight.numel() + (lin.bias.numel() if lin.bias is not None else 0))


def block_bytes(blk, chunk: int) -> tuple[float, int]:
    """float32 bytes of a block the native step reads per step, and holds: weights and norm; for S4, with the
    chunked recurrence, the convolution taps (chunk per channel) every step and the recurrence's parameters
    once per chunk."""
    n = 4 * sum(p.numel() for p in blk.norm.parameters())
    if isinstance(blk, FastS4Block):
        w, beta, _ = _ssm_arrays(blk)
        fixed = n + linear_bytes(blk.output_linear) + 4 * chunk * w.shape[0]
        ssm = 4 * (w.numel() + beta.numel())
        return fixed + ssm / chunk, fixed + ssm
    assert isinstance(blk, FastFFBlock)
    b = n + linear_bytes(blk.linear_in) + linear_bytes(blk.linear_out)
    return b, b


def tiers(fast: FastLM, chunk: int) -> list[tuple[str, float, float, int]]:
    """(name, bytes read per step of the part, bytes held, output samples per step of the part)."""
    def blocks_bytes(blocks, extra: int = 0) -> tuple[float, float]:
        per = [block_bytes(k, chunk) for k in blocks]
        return sum(r for r, _ in per) + extra, sum(h for _, h in per) + extra

    out, every = [], 1
    for i, p in enumerate(fast.pool):
        head = linear_bytes(fast.head) if i == 0 else 0
        out.append((f"tier {i} (H={fast.down[i].shape[1]})",
                    *blocks_bytes(list(fast.down_blocks[i]) + list(fast.up_blocks[i]), head), every))
        every *= p
        pool = linear_bytes(fast.down_linear[i]) + linear_bytes(fast.up_linear[i])
        out.append((f"pooling {i}->{i + 1}", pool, pool, every))
    out.append(("centre", *blocks_bytes(fast.center), every))
    return out


def read_bandwidth(nbytes: int, threads: int) -> float:
    """Bytes per second of torch.sum over a float32 buffer of nbytes on `threads` threads (best of 3)."""
    torch.set_num_threads(threads)
    x = torch.ones(max(1, nbytes // 4))
    reps = max(3, int(2e9 / max(1, nbytes)))

    def read():
        for _ in range(reps):
            x.sum()

    best, _ = timeit(read, repeat=3)
    return x.numel() * 4 * reps / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="sc09")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=16, help="steps per chunk of the chunked S4 recurrence (1: off)")
    args = ap.parse_args()
    model = sashimi.SaShiMiLM(sashimi.preset(args.preset)).eval()
    with torch.no_grad():
        fast = FastLM(model, 1, backend="eager")
    rows = tiers(fast, args.chunk)
    total = sum(r for _, r, _, _ in rows)  # every part once
    held = sum(h for _, _, h, _ in rows)  # the working set
    per_sample = sum(r / every for _, r, _, every in rows)
    print(f"# {args.preset}, float32, batch 1, S4 chunk {args.chunk}; {machine()}")
    print("| part | bytes per step of the part | runs every | bytes per output sample |")
    print("|---|---|---|---|")
    for name, r, _, every in rows:
        print(f"| {name} | {r / 1e6:.3f} MB | {every} samples | {r / every / 1e6:.3f} MB |")
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
