"""How long are the words in generated clips, beside real ones? A word the model stops saying halfway cannot be
recognized, so this is the first thing to check when the classifier is unsure of a model's samples.

    python benchmarks/word_length.py SAMPLES [SAMPLES ...] --real DATA_ROOT [--n-real 300]

Per folder: the share of clips with no sound at all, and percentiles of (span) the time from the first to the
last sounding 10 ms frame and (sounding) the total time of sounding frames. A frame sounds when its RMS, after
removing the clip's median (a DC offset), exceeds --floor (default 0.01 of full scale). Real clips: every
k-th clip of DATA_ROOT's test split (a digits/sc09 layout).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

FRAME_S = 0.01


def frame_rms(wave: np.ndarray, sr: int) -> np.ndarray:
    """(L,) -> (frames,) RMS of 10 ms frames, the median removed first."""
    wave = wave - np.median(wave)
    f = max(1, int(sr * FRAME_S))
    n = len(wave) // f
    return np.sqrt(np.mean(wave[: n * f].reshape(n, f) ** 2, axis=1))


def lengths(files: list[Path], floor: float) -> tuple[np.ndarray, np.ndarray]:
    """(span seconds, sounding seconds) per file."""
    span, sounding = [], []
    for path in files:
        wave, sr = sf.read(str(path), dtype="float64", always_2d=True)
        on = np.flatnonzero(frame_rms(wave[:, 0], sr) > floor)
        span.append(0.0 if len(on) == 0 else (on[-1] - on[0] + 1) * FRAME_S)
        sounding.append(len(on) * FRAME_S)
    return np.array(span), np.array(sounding)


def real_files(root: Path, n: int) -> list[Path]:
    listed = (root / "testing_list.txt").read_text().split()
    step = max(1, len(listed) // n)
    return [root / name for name in listed[::step][:n]]


def row(name: str, files: list[Path], floor: float) -> str:
    span, sounding = lengths(files, floor)
    q = lambda a: " / ".join(f"{v:.2f}" for v in np.percentile(a, [10, 50, 90]))  # noqa: E731
    return f"| {name} | {len(files)} | {np.mean(sounding == 0):.1%} | {q(span)} | {q(sounding)} |"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("samples", nargs="+", help="folders of generated clips")
    p.add_argument("--real", required=True, help="dataset root whose test split gives the real row")
    p.add_argument("--n-real", type=int, default=300)
    p.add_argument("--floor", type=float, default=0.01, help="frame RMS that counts as sound (full scale 1)")
    args = p.parse_args(argv)
    print("| clips | n | silent | span q10 / q50 / q90 (s) | sounding q10 / q50 / q90 (s) |")
    print("|---|---|---|---|---|")
    print(row(f"real test clips ({args.real})", real_files(Path(args.real), args.n_real), args.floor))
    for folder in args.samples:
        files = sorted(f for f in Path(folder).iterdir() if f.suffix.lower() in (".wav", ".flac"))
        print(row(folder, files, args.floor))


if __name__ == "__main__":
    main()
