"""bfloat16 Linear weights in the native step (``--weights bf16``): speed against float32, and what the rounding
costs in teacher-forced bits per sample on held-out audio.

    python benchmarks/bf16.py                                   # speed at the sc09 preset, batch 1 and 16
    python benchmarks/bf16.py --model runs/demo/model --data data/digits --clips 32   # + bits per sample

Speed: samples/s of ``steps()`` (the loop in C++) over ``--steps`` steps, float32 and bf16 builds of the same
random-weight sc09 model alternated round by round (``--rounds``; best and median), 2 threads, with the
roofline ceiling of each (``roofline.py``: parameter bytes per sample at batch 1, bf16 Linear weights count 2
bytes). Bits per sample: the native step teacher-forced through each of ``--clips`` test clips of a trained
model, -log2 p of every sample, float32 against bf16 weights (float32 is the reference).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_flags, machine  # noqa: E402
from roofline import read_bandwidth, tiers  # noqa: E402

import sashimi  # noqa: E402
from sashimi.generation.fast import FastLM  # noqa: E402


def speed(args) -> None:
    torch.manual_seed(0)
    model = sashimi.SaShiMiLM(sashimi.preset("sc09")).eval()
    with torch.no_grad():
        parts = tiers(FastLM(model, 1, backend="eager"), 16)
        linear = sum(4 * m.weight.numel() / every for name, m, every in _linears(FastLM(model, 1, backend="eager")))
    held = sum(h for _, _, h, _ in parts)
    per_sample = sum(r / every for _, r, _, every in parts)
    bw = read_bandwidth(int(held), 2)
    ceiling = {"float32": bw / per_sample, "bf16": bw / (per_sample - linear / 2)}
    print(f"# roofline: {per_sample / 1e6:.2f} MB per sample at batch 1 in float32 ({linear / 1e6:.2f} MB of it "
          f"Linear weights), {bw / 1e9:.0f} GB/s for the {held / 1e6:.1f} MB working set")
    print("\n| batch | weights | ISA | best samples/s | median | roofline ceiling |\n|---|---|---|---|---|---|")
    for B in args.batch:
        fasts = {w: FastLM(model, B, backend="native", weights=w, march=args.march) for w in ("float32", "bf16")}
        rates = {w: [] for w in fasts}
        token = torch.zeros(B, dtype=torch.long)
        for f in fasts.values():
            f.steps(token, torch.rand(256, B))  # warm-up
        for _ in range(args.rounds):
            for w, f in fasts.items():
                u = torch.rand(args.steps, B)
                t0 = time.perf_counter()
                f.steps(token, u)
                rates[w].append(args.steps * B / (time.perf_counter() - t0))
        for w, r in rates.items():
            print(f"| {B} | {w} | {fasts[w]._native.isa} | {max(r):,.0f} | {statistics.median(r):,.0f} | "
                  f"{ceiling[w] * B:,.0f} |", flush=True)


def _linears(fast):
    """(name, Linear, runs every n samples) of every Linear the native step streams."""
    every = 1
    out = [("head", fast.head, 1)]
    for i, p in enumerate(fast.pool):
        for blk in list(fast.down_blocks[i]) + list(fast.up_blocks[i]):
            out += [(f"tier {i}", m, every) for m in blk.modules() if isinstance(m, torch.nn.Linear)]
        every *= p
        out += [(f"pool {i}", fast.down_linear[i], every), (f"pool {i}", fast.up_linear[i], every)]
    for blk in fast.center:
        out += [("centre", m, every) for m in blk.modules() if isinstance(m, torch.nn.Linear)]
    return out


def bits(args) -> None:
    from sashimi.data.config import DataConfig
    from sashimi.models.io import load_model
    from sashimi.train.data import build_split

    model = load_model(args.model).eval()
    cfg = model.config
    data = DataConfig.from_dict({"name": "digits", "root": args.data, "sample_rate": cfg.sample_rate,
                                 "sample_len": cfg.sample_rate, "quantization": cfg.quantization, "bits": cfg.bits})
    test = build_split(data, "test")
    n = min(args.clips, len(test))
    clips = torch.stack([torch.as_tensor(test[i]) for i in range(n)])  # (n T) tokens
    print(f"\n# {args.model}: teacher-forced over {n} test clips of {args.data} ({clips.shape[1]} samples each)")
    print("| weights | bits per sample | change |\n|---|---|---|")
    ref = None
    for w in ("float32", "bf16"):
        fast = FastLM(model, n, backend="native", weights=w)
        inputs = torch.cat([torch.full((1, n), model.bos), clips.T[:-1]])  # (T n)
        with torch.no_grad():
            logp = torch.log_softmax(fast.forced(inputs).double(), -1)  # (T n C)
        nll = -logp.gather(-1, clips.T[..., None]).mean().item() / math.log(2)
        ref = nll if ref is None else ref
        print(f"| {w} | {nll:.5f} | {nll - ref:+.5f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--steps", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--march", default="native")
    ap.add_argument("--model", help="a trained model (folder or .safetensors) for the bits-per-sample rows")
    ap.add_argument("--data", help="its data root (the digits layout), for the test split")
    ap.add_argument("--clips", type=int, default=32)
    args = ap.parse_args()
    print(f"# {machine()}; CPU flags: {cpu_flags()}")
    speed(args)
    if args.model:
        bits(args)


if __name__ == "__main__":
    main()
