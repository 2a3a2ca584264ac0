"""How long are the words in generated clips, beside real ones? A word the model stops saying halfway cannot be
recognized, so this is the first thing to check when the classifier is unsure of a model's samples.

    python benchmarks/word_length.py SAMPLES [SAMPLES ...] --real DATA_ROOT [--n-real 300] [--split train]
        [--relative 0.05]

Per folder: the share of clips with no sound at all, and percentiles of (span) the time from the first to the
last sounding 10 ms frame and (sounding) the total time of sounding frames. A frame sounds when its RMS, after
removing the clip's median (a DC offset), exceeds --floor (default 0.01 of full scale); (loudest) the RMS of
the clip's loudest frame, its level. `--relative R` counts a frame as sound when its RMS exceeds R times the
clip's loudest frame instead: a quieter model's words then lose no tail to the fixed floor. A second table gives
the mean frame RMS over 50 ms steps of the clip: where the sound is, and how loud, on average. Real clips: every
k-th clip of DATA_ROOT's test split (a digits/sc09 layout), or of its train split with `--split train` (what a
one-voice model learns and is scored against).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

from sashimi.data.datasets import speech_commands_splits

FRAME_S = 0.01


def frame_rms(wave: np.ndarray, sr: int) -> np.ndarray:
    """(L,) -> (frames,) RMS of 10 ms frames, the median removed first."""
    wave = wave - np.median(wave)
    f = max(1, int(sr * FRAME_S))
    n = len(wave) // f
    return np.sqrt(np.mean(wave[: n * f].reshape(n, f) ** 2, axis=1))


ENVELOPE_FRAMES = 5  # 10 ms frames per step of the envelope table (50 ms)
ENVELOPE_STEPS = 20  # the first second


def measures(files: list[Path], floor: float, relative: float | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(span seconds, sounding seconds, loudest frame RMS) per file, and the mean envelope (ENVELOPE_STEPS,).
    A frame sounds above ``floor``, or above ``relative`` times the clip's loudest frame when that is given."""
    span, sounding, loudest = [], [], []
    envelope = np.zeros(ENVELOPE_STEPS)
    for path in files:
        wave, sr = sf.read(str(path), dtype="float64", always_2d=True)
        rms = frame_rms(wave[:, 0], sr)
        on = np.flatnonzero(rms > (floor if relative is None else relative * rms.max(initial=0.0)))
        span.append(0.0 if len(on) == 0 else (on[-1] - on[0] + 1) * FRAME_S)
        sounding.append(len(on) * FRAME_S)
        loudest.append(rms.max(initial=0.0))
        steps = np.zeros(ENVELOPE_STEPS * ENVELOPE_FRAMES)
        steps[: min(len(rms), len(steps))] = rms[: len(steps)] ** 2
        envelope += np.sqrt(steps.reshape(ENVELOPE_STEPS, ENVELOPE_FRAMES).mean(1))
    return np.array(span), np.array(sounding), np.array(loudest), envelope / max(len(files), 1)


def real_files(root: Path, n: int, split: str = "test") -> list[Path]:
    if split == "train":  # the clips in neither list
        listed = speech_commands_splits(root, sorted(str(f.relative_to(root)) for f in root.glob("*/*.wav")))["train"]
    else:
        listed = (root / "testing_list.txt").read_text().split()
    step = max(1, len(listed) // n)
    return [root / name for name in listed[::step][:n]]


def rows(name: str, files: list[Path], floor: float, relative: float | None) -> tuple[str, str]:
    """The length row and the envelope row of one set of clips."""
    span, sounding, loudest, envelope = measures(files, floor, relative)
    q = lambda a, f=".2f": " / ".join(f"{v:{f}}" for v in np.percentile(a, [10, 50, 90]))  # noqa: E731
    length = (f"| {name} | {len(files)} | {np.mean(sounding == 0):.1%} | {q(span)} | {q(sounding)} | "
              f"{q(loudest, '.3f')} |")
    return length, f"| {name} | " + " | ".join(f"{v:.3f}" for v in envelope) + " |"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("samples", nargs="+", help="folders of generated clips")
    p.add_argument("--real", required=True, help="dataset root whose --split gives the real row")
    p.add_argument("--split", choices=("test", "train"), default="test", help="the real clips' split")
    p.add_argument("--relative", type=float, default=None,
                   help="count a frame as sound above this share of the clip's loudest frame (instead of --floor)")
    p.add_argument("--n-real", type=int, default=300)
    p.add_argument("--floor", type=float, default=0.01, help="frame RMS that counts as sound (full scale 1)")
    args = p.parse_args(argv)
    if not (Path(args.real) / "testing_list.txt").is_file():
        p.error(f"--real {args.real}: expected a digits/sc09 dataset root with a testing_list.txt")
    for folder in args.samples:
        if not Path(folder).is_dir():
            p.error(f"{folder}: no such folder of generated clips")
    sets = [(f"real {args.split} clips ({args.real})", real_files(Path(args.real), args.n_real, args.split))]
    sets += [(folder, sorted(f for f in Path(folder).iterdir() if f.suffix.lower() in (".wav", ".flac")))
             for folder in args.samples]
    table = [rows(name, files, args.floor, args.relative) for name, files in sets]
    print("| clips | n | silent | span q10 / q50 / q90 (s) | sounding q10 / q50 / q90 (s) | "
          "loudest frame RMS q10 / q50 / q90 |")
    print("|---|---|---|---|---|---|")
    print("\n".join(length for length, _ in table))
    step_ms = int(ENVELOPE_FRAMES * FRAME_S * 1000)
    print(f"\nmean RMS of each {step_ms} ms step (columns: the step's start, s)\n")
    print("| clips | " + " | ".join(f"{i * step_ms / 1000:.2f}" for i in range(ENVELOPE_STEPS)) + " |")
    print("|---|" + "---|" * ENVELOPE_STEPS)
    print("\n".join(envelope for _, envelope in table))


if __name__ == "__main__":
    main()
