"""Training throughput of the `sc09` preset at batch 1 (16,000-sample sequences): samples per second.

Two measurements, each forward + backward + AdamW step in float32 (bf16-mixed on a GPU):
  bare model   - SaShiMiLM, cross-entropy, loss.backward(), optimizer.step() in a plain loop
  trainer      - the real `sashimi train` path (SaShiMiTask in a Lightning Trainer, param groups, logging)
The official implementation takes 75.6 s for one 16,000-sample sequence forward+backward on this machine,
i.e. 16000 / 75.6 = 212 samples/s; the target is 40x that.

    python benchmarks/train.py [--steps 6] [--warmup 2] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from common import machine  # benchmarks/common.py (the script's folder is on sys.path)

import sashimi
from sashimi.metrics import token_nll
from sashimi.ssm.optim import adamw
from sashimi.train.config import load_config
from sashimi.train.module import SaShiMiTask
from sashimi.train.run import build_trainer

OFFICIAL_SECONDS = 75.6
LENGTH = 16000


def bare_step_seconds(steps: int, warmup: int, device: str) -> list[float]:
    torch.manual_seed(0)
    model = sashimi.SaShiMiLM(sashimi.preset("sc09")).to(device)
    optimizer = adamw(model, 0.001, 0.0)
    tokens = torch.randint(0, 256, (1, LENGTH), device=device)
    times = []
    for _ in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = token_nll(model(tokens), tokens).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times[warmup:]


class StepTimer(pl.Callback):
    def __init__(self):
        self.times, self._t0 = [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._t0)


def trainer_step_seconds(steps: int, warmup: int, device: str) -> list[float]:
    precision = "bf16-mixed" if device == "cuda" else "32-true"
    config = load_config("sc09", ["trainer.batch_size=1", f"trainer.max_steps={warmup + steps}", "trainer.val_every=100000",
                                  "trainer.checkpoint_every=100000", "trainer.progress_bar=false",
                                  f"trainer.precision={precision}", f"trainer.accelerator={device.replace('cuda', 'gpu')}",
                                  "schedule.name=constant", "data.root=unused"])
    generator = torch.Generator().manual_seed(0)
    train = [torch.randint(0, 256, (LENGTH,), generator=generator) for _ in range(4)]
    task = SaShiMiTask(config.to_dict(), {"train": train, "valid": train[:1]})
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build_trainer(config, Path(run_dir))
        timer = StepTimer()
        trainer.callbacks.append(timer)
        trainer.fit(task)
    return timer.times[warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (build/load, allocator warm-up)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rows = [("bare model", bare_step_seconds(args.steps, args.warmup, args.device)),
            ("sashimi train (Lightning)", trainer_step_seconds(args.steps, args.warmup, args.device))]
    official = LENGTH / OFFICIAL_SECONDS
    print(f"machine: {machine()}")
    print(f"sc09 preset ({sum(p.numel() for p in sashimi.SaShiMiLM(sashimi.preset('sc09')).parameters()):,} "
          f"parameters), batch 1 x {LENGTH} samples, {'bf16-mixed' if args.device == 'cuda' else 'float32'}, "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    print(f"| path | s/step (median) | samples/s | x official ({official:.0f} samples/s) |")
    print("|---|---|---|---|")
    print(f"| official implementation (measured) | {OFFICIAL_SECONDS:.1f} | {official:.0f} | 1.0x |")
    for name, times in rows:
        median = statistics.median(times)
        print(f"| {name} | {median:.2f} | {LENGTH / median:,.0f} | {LENGTH / median / official:.1f}x |")
    if args.device == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    else:
        print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
