"""SaShiMi model benchmark: forward and forward+backward of one sequence for a preset, float32.

    python benchmarks/model.py                       # sc09 preset, 16,000 samples, batch 1
    python benchmarks/model.py --preset youtubemix --length 131072

Official standalone backbone of the sc09 size on the same 2-core CPU (issue #3): 13.5 s forward, 75.6 s
forward+backward with its default pure-PyTorch kernel.
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks.common import gib, machine, peak_extra_bytes, timeit  # noqa: E402

OFFICIAL_CPU = {"forward": 13.5, "forward+backward": 75.6}


def main() -> None:
    from sashimi import SaShiMiLM, preset

    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="sc09")
    ap.add_argument("--length", type=int, default=16_000)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"machine: {machine()}\n")
    print(f"| device | dtype | preset | params | B x L | measured | time best (median) | official | peak extra memory |")
    print("|---|---|---|---|---|---|---|---|---|")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        dtypes = [torch.float32] + ([torch.bfloat16] if device == "cuda" else [])
        for dtype in dtypes:
            torch.manual_seed(0)
            model = SaShiMiLM(preset(args.preset, l_max=args.length)).to(device)
            n_params = sum(p.numel() for p in model.parameters())
            tokens = torch.randint(0, 256, (args.batch, args.length), device=device)
            autocast = torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32)

            def forward():
                with torch.no_grad(), autocast:
                    model(tokens)

            def train_step():
                with autocast:
                    loss = F.cross_entropy(model(tokens).flatten(0, 1).float(), tokens.flatten())
                loss.backward()

            for name, fn in [("forward", forward), ("forward+backward", train_step)]:
                peak = peak_extra_bytes(fn, device) if device == "cuda" or name == "forward+backward" else 0
                best, median = timeit(fn, repeat=args.repeat, device=device)
                official = f"{OFFICIAL_CPU[name]} s ({OFFICIAL_CPU[name] / best:.0f}x)" if (
                    device == "cpu" and args.preset == "sc09" and args.length == 16_000 and args.batch == 1) else ""
                mem = gib(peak) if peak else ""
                print(f"| {device} | {str(dtype)[6:]} | {args.preset} | {n_params / 1e6:.2f}M | {args.batch} x "
                      f"{args.length:,} | {name} | {best:.3f} s ({median:.3f}) | {official} | {mem} |", flush=True)


if __name__ == "__main__":
    main()
