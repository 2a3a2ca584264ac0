"""Throughput of `sashimi score`'s classifier stage: feature extraction (librosa log-mel) + classification, in
clips per second, for the full-size (official ResNeXt-29 8x64d) and the small classifier; and the time to score
10,240 clips (the official protocol's sample count) end to end with the small one (read WAVs, features,
classifier, the five metrics against the shipped reference).

    python benchmarks/score.py [--clips 512] [--full-clips 64] [--batch-size 256] [--end-to-end 10240]

Target: scoring 10,240 clips in under 10 minutes with the small classifier on the 2-core CPU.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from common import machine  # benchmarks/common.py (the script's folder is on sys.path)

from sashimi.metrics.classifier import ClassifierConfig, DigitClassifier
from sashimi.metrics.features import log_mel
from sashimi.metrics.score import MODEL_BATCH, classify_waves


def clips(n: int, seed: int = 0) -> np.ndarray:
    """(n, 16000) float32: decaying tones in noise (content does not change the cost)."""
    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    f = rng.uniform(100, 3000, (n, 1))
    return (0.3 * np.sin(2 * np.pi * f * t) * np.exp(-3 * t) + 0.01 * rng.standard_normal((n, 16000))).astype(np.float32)


def rate(fn, n: int, repeat: int = 3) -> float:
    fn()  # warm-up (librosa's first call builds its filters; torch's first call sets up kernels)
    best = min(_seconds(fn) for _ in range(repeat))
    return n / best


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def stage_rows(n_small: int, n_full: int, batch: int) -> list[tuple[str, float]]:
    waves_small, waves_full = clips(n_small), clips(n_full)
    rows = [("features (librosa log-mel, 32x32)", rate(lambda: log_mel(waves_small), n_small))]
    for name, config, waves in (("small", ClassifierConfig.small(), waves_small),
                                ("full", ClassifierConfig(), waves_full)):
        model = DigitClassifier(config).eval()
        images = torch.from_numpy(log_mel(waves))
        size = f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M"
        with torch.no_grad():
            for b in sorted({MODEL_BATCH, batch}):
                rows.append((f"classifier only, {name} ({size}), batch {b}",
                             rate(lambda: [model(images[s:s + b]) for s in range(0, len(images), b)], len(images))))
        rows.append((f"features + classifier, {name} (as `sashimi score` runs it)",
                     rate(lambda: classify_waves(model, waves), len(waves))))
    return rows


def end_to_end(n: int) -> float:
    """Seconds of `sashimi score FOLDER` on n one-second WAVs (small classifier, shipped reference)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for start in range(0, n, 512):
            for i, wave in enumerate(clips(min(512, n - start), seed=start)):
                sf.write(str(folder / f"{start + i:05d}.wav"), wave, 16000, subtype="PCM_16")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sashimi", "score", str(folder)], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=512, help="clips timed for the features and the small classifier")
    p.add_argument("--full-clips", type=int, default=64, help="clips timed for the full-size classifier")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--end-to-end", type=int, default=10240, help="clips for the end-to-end `sashimi score` run (0: skip)")
    args = p.parse_args()
    print(f"# {machine()}")
    print("| stage | clips/s | 10,240 clips |\n|---|---|---|")
    for name, r in stage_rows(args.clips, args.full_clips, args.batch_size):
        print(f"| {name} | {r:,.0f} | {10240 / r / 60:.1f} min |", flush=True)
    if args.end_to_end:
        seconds = end_to_end(args.end_to_end)
        print(f"| `sashimi score` end to end, small, {args.end_to_end:,} WAVs | {args.end_to_end / seconds:,.0f} | "
              f"{seconds / 60 * 10240 / args.end_to_end:.1f} min (target < 10 min) |")


if __name__ == "__main__":
    main()
