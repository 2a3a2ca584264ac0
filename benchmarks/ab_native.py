"""A/B of native step sources: samples/s of ``steps()`` for two or more versions of ``fast_step.cpp``, built as
separate extensions and timed in one process, round by round in turn (on a noisy VM, the only fair comparison).

    mkdir -p /tmp/old && git archive 8411f78 sashimi/generation/csrc | tar -x -C /tmp/old --strip-components=3
    python benchmarks/ab_native.py /tmp/old/fast_step.cpp sashimi/generation/csrc/fast_step.cpp --batch 16 --rounds 16
    python benchmarks/ab_native.py OLD/fast_step.cpp NEW/fast_step.cpp --batch 16 --march x86-64-v3   # AVX2 kernels

A version's headers (``*.h``) lie beside its ``fast_step.cpp``, as in the repository; versions from before the
split into headers are one self-contained file.

Each source is built once (about a minute; cached by content) with the flags of ``sashimi.jit``. The model is
the sc09 preset with random weights; each round times ``--steps`` steps of every version, in an order rotated
from round to round. The last column is the median (and quartiles) over rounds of a version's samples/s divided
by the first version's in the same round. Calibration: the same source against itself gave paired medians of
0.966 (batch 2, fixed order) and 1.025 (batch 16, rotated order; quartiles 1.009-1.035), so differences of
a few percent are where each build's memory happens to lie, not the code.
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

import sashimi  # noqa: E402
from sashimi.generation import native  # noqa: E402
from sashimi.generation.fast import FastLM  # noqa: E402
from sashimi.jit import Extension  # noqa: E402


def build(src: Path, model, batch: int, march: str = "native") -> FastLM:
    """A FastLM whose native step comes from ``src``, built with -march=march."""
    digest = hashlib.md5(b"".join(p.read_bytes() for p in [src, *sorted(src.parent.glob("*.h"))])).hexdigest()[:12]
    saved = native._EXTENSION
    tag = "".join(c if c.isalnum() else "_" for c in march)
    native._EXTENSION = Extension(f"sashimi_ab_{digest}_{tag}", src.resolve(), f"native step from {src}", march=march)
    try:
        fast = FastLM(model, batch, backend="native")
    finally:
        native._EXTENSION = saved
    if fast.backend != "native":
        raise SystemExit(f"{src}: the native step did not build")
    return fast


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="+", type=Path, help="fast_step.cpp versions")
    ap.add_argument("--preset", default="sc09")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=512, help="steps per round and version")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--march", default="native", help="-march of every build (x86-64-v3: the AVX2 kernels)")
    args = ap.parse_args()
    for src in args.sources:
        if not src.is_file():
            raise SystemExit(f"{src}: no such file")
    torch.manual_seed(0)
    model = sashimi.SaShiMiLM(sashimi.preset(args.preset)).eval()
    print(f"# {args.preset}, batch {args.batch}, {args.steps} steps x {args.rounds} rounds, {machine()}")
    fasts = [build(src, model, args.batch, args.march) for src in args.sources]
    token = torch.zeros(args.batch, dtype=torch.long)
    for fast in fasts:  # warm-up
        fast.steps(token, torch.rand(args.steps, args.batch))
    rates: list[list[float]] = [[] for _ in fasts]
    for k in range(args.rounds):
        order = list(range(len(fasts)))
        order = order[k % len(order):] + order[: k % len(order)]  # rotated each round: no version always runs first
        for i in order:
            fast, r = fasts[i], rates[i]
            u = torch.rand(args.steps, args.batch)
            t0 = time.perf_counter()
            fast.steps(token, u)
            r.append(args.steps * args.batch / (time.perf_counter() - t0))
    print("\n| source | best | median | worst | paired ratio to the first: median (quartiles) |\n|---|---|---|---|---|")
    for src, r in zip(args.sources, rates):
        ratios = sorted(b / a for a, b in zip(rates[0], r))  # round by round: the VM's drift cancels
        q = len(ratios) // 4
        print(f"| {src} | {max(r):,.0f} | {statistics.median(r):,.0f} | {min(r):,.0f} | "
              f"{statistics.median(ratios):.3f} ({ratios[q]:.3f}-{ratios[-1 - q]:.3f}) |")


if __name__ == "__main__":
    main()
