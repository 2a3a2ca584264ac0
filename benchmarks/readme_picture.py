"""The README's picture: spectrograms of a shipped model's samples beside a real clip of the data it learned.

    python benchmarks/readme_picture.py SAMPLE.wav [SAMPLE.wav ...] REAL.wav --out docs/digits.png

All clips are shown at the first sample's rate (the real clip is resampled with soxr), each titled with what the
evaluation classifier hears in it. Pick the samples by a rule you state (e.g. seeds 0, 1, 2), not by ear.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from sashimi.audio.io import load_audio, resample
from sashimi.generation.report import draw_spectrogram
from sashimi.metrics.score import hear


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", type=Path, nargs="+", help="the model's samples, then one real clip")
    ap.add_argument("--out", type=Path, default=Path("docs/digits.png"))
    args = ap.parse_args()
    if len(args.clips) < 2:
        raise SystemExit("give at least one sample and one real clip")
    *samples, real = args.clips
    sr = load_audio(samples[0])[1]
    fig = Figure(figsize=(3.3 * len(args.clips), 3.0), dpi=100)
    axes = fig.subplots(1, len(args.clips), sharey=True)
    for i, (ax, path) in enumerate(zip(axes, args.clips)):
        wave, rate = load_audio(path)
        wave = np.asarray(resample(wave, rate, sr), dtype=np.float32).reshape(-1)[:sr]
        word, p = hear(path.parent, [path.name])[path.name]
        label = f"shipped model, {path.stem}" if i < len(samples) else "real clip (unseen voice)"
        draw_spectrogram(ax, wave, sr, 256)
        ax.set_title(f"{label}\nclassifier hears: {word} ({p:.0%})", fontsize=9)
        ax.set_xlabel("s")
    axes[0].set_ylabel("Hz")
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
