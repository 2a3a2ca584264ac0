"""How much of a model's FID can short words explain? Real test clips with each word cut short, scored.

    python benchmarks/fid_word_cut.py DATA_ROOT [--n 1024] [--keep 1 0.9 0.8 0.65 0.5]

Takes --n clips of DATA_ROOT's test split (a digits/sc09 layout; every k-th one), finds each clip's sounding
span (the first to the last 10 ms frame whose RMS, after removing the median, exceeds 0.01 of full scale, as
benchmarks/word_length.py measures it) and keeps the first KEEP of it, fading out over 30 ms and silent after.
Each row scores the cut clips against DATA_ROOT's reference (its train split, as `sashimi score --reference
DATA_ROOT`) with the shipped classifier. KEEP 1 is the clips as they are; a "gain 0.5" row halves every clip,
which says whether the features hear loudness.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sashimi.metrics.classifier import load_classifier
from sashimi.metrics.score import SHIPPED_CLASSIFIER, Classified, classify_waves, load_reference, read_clip, scores

sys.path.insert(0, str(Path(__file__).resolve().parent))
from word_length import FRAME_S, frame_rms, real_files  # noqa: E402  (the same sounding frames and test clips)

CLASSIFIER_RATE = 16000  # read_clip's rate
FRAME = int(CLASSIFIER_RATE * FRAME_S)
FADE = int(0.03 * CLASSIFIER_RATE)
FLOOR = 0.01  # word_length.py's default --floor


def sounding_span(wave: np.ndarray) -> tuple[int, int] | None:
    """(L,) at 16 kHz -> (first, end) sample of the sounding 10 ms frames, or None for a silent clip."""
    on = np.flatnonzero(frame_rms(wave, CLASSIFIER_RATE) > FLOOR)
    return None if len(on) == 0 else (int(on[0]) * FRAME, (int(on[-1]) + 1) * FRAME)


def cut(wave: np.ndarray, keep: float) -> np.ndarray:
    """(L,) -> the same clip with its word kept for the first ``keep`` of its sounding span, then faded out."""
    span = sounding_span(wave)
    if span is None or keep >= 1:
        return wave
    end = span[0] + int((span[1] - span[0]) * keep)
    gain = np.zeros(len(wave))
    gain[:end] = 1.0
    fade = gain[end:end + FADE]
    gain[end:end + len(fade)] = np.linspace(1.0, 0.0, len(fade))
    return wave * gain


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("root", type=Path, help="dataset root (digits/sc09 layout with testing_list.txt)")
    p.add_argument("--n", type=int, default=1024, help="test clips (default 1024, the scoring protocol's size)")
    p.add_argument("--keep", type=float, nargs="+", default=[1.0, 0.9, 0.8, 0.65, 0.5],
                   help="shares of each word's sounding span to keep")
    args = p.parse_args(argv)
    if not (args.root / "testing_list.txt").is_file():
        raise SystemExit(f"{args.root}: no testing_list.txt (expected a digits or sc09 dataset root)")
    if args.n < 2:
        raise SystemExit(f"--n must be at least 2 clips (the FID needs a covariance), got {args.n}")
    if not all(0 < k <= 1 for k in args.keep):
        raise SystemExit(f"--keep: shares in (0, 1] of each word's span, got {args.keep}")
    files = real_files(args.root, args.n)
    if len(files) < 2:
        raise SystemExit(f"{args.root / 'testing_list.txt'}: lists {len(files)} clip(s); at least 2 are needed")
    model = load_classifier(SHIPPED_CLASSIFIER)
    ref = load_reference(model, SHIPPED_CLASSIFIER, args.root)
    waves = np.stack([read_clip(path) for path in files])  # (N, 16000)
    rows = [(f"keep {k:g}", np.stack([cut(w, k) for w in waves])) for k in args.keep]
    rows.append(("gain 0.5", waves * 0.5))
    print(f"{len(waves)} test clips of {args.root}, reference: its train split\n")
    print("| clips | FID | IS | mean conf. |\n|---|---|---|---|")
    for name, batch in rows:
        probs, feats = classify_waves(model, batch)
        s = scores(Classified([str(i) for i in range(len(batch))], probs, feats), ref, model.config.classes)
        print(f"| {name} | {s['fid']:.2f} | {s['is']:.2f} | {s['mean_confidence']:.3f} |")


if __name__ == "__main__":
    main()
