"""Generation speed: samples/s of recurrent sampling (step + sampling) for the sc09-preset model, float32.

    python benchmarks/generate.py                    # batch 1 and 16, compiled fast step, reference rows
    python benchmarks/generate.py --batch 1 --profile

Random weights (speed does not depend on them). Each row times ``--steps`` steps after a warm-up, best of
``--repeat``; "samples/s" counts every sequence of the batch. The official implementation's figures (its
recurrent generation of the same model measured on this machine, per the issue) are printed beside ours.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

import sashimi  # noqa: E402
from sashimi.generation.fast import FastLM  # noqa: E402
from sashimi.generation.sampler import _EagerStep  # noqa: E402
from sashimi.generation.sampling import SamplingSettings  # noqa: E402

OFFICIAL = {1: (227, 435), 16: (1463, 3193)}  # (dense step, diagonal step) samples/s
TARGET = {1: 16000, 16: 50000}


def rate(step, batch: int, steps: int, repeat: int) -> float:
    """Best samples/s of ``steps`` calls of step(token, u) -> (token, logp, logits)."""
    token, best = torch.zeros(batch, dtype=torch.long), 0.0
    u = torch.rand(steps, batch)
    for _ in range(repeat):
        t0 = time.perf_counter()
        for k in range(steps):
            token, _, _ = step(token, u[k])
        best = max(best, steps * batch / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="sc09")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--steps", type=int, default=4096, help="timed steps per repeat (a multiple of 16)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--reference-steps", type=int, default=32, help="steps for the slow eager rows (0: skip)")
    ap.add_argument("--profile", action="store_true", help="print where the time of the compiled step goes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = sashimi.SaShiMiLM(sashimi.preset(args.preset)).eval()
    settings = SamplingSettings(top_p=args.top_p)
    print(f"# {args.preset}, float32, {machine()}")
    rows = []
    for B in args.batch:
        t0 = time.perf_counter()
        fast = FastLM(model, B, settings, compile=True)
        build = time.perf_counter() - t0
        with torch.no_grad():
            rate(fast.step, B, 64, 1)  # warm-up
            fast_rate = rate(fast.step, B, args.steps, args.repeat)
            eager_fast = rate(FastLM(model, B, settings, compile=False).step, B, args.reference_steps, 1) \
                if args.reference_steps else float("nan")
            ref = rate(_EagerStep(model, B, settings).step, B, args.reference_steps, 1) \
                if args.reference_steps else float("nan")
        rows.append((B, fast_rate, eager_fast, ref, build, fast.compiled))
        print(f"batch {B}: {fast_rate:,.0f} samples/s (build + compile {build:.0f} s)", flush=True)
        if args.profile:
            profile(fast, B)
    print("\n| batch | fast step, compiled | fast step, eager | `SaShiMiLM.step` (reference) | official dense "
          "| official diagonal | target |")
    print("|---|---|---|---|---|---|---|")
    for B, f, e, r, build, compiled in rows:
        off = OFFICIAL.get(B, ("-", "-"))
        print(f"| {B} | {f:,.0f}{'' if compiled else ' (compile failed: eager)'} | {e:,.0f} | {r:,.0f} | "
              f"{off[0]:,} | {off[1]:,} | {TARGET.get(B, '-'):,} |")


def profile(fast: FastLM, B: int) -> None:
    from torch.profiler import profile as torch_profile

    with torch.no_grad(), torch_profile() as prof:
        rate(fast.step, B, 256, 1)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
