"""How much noise fills a generated word's vowel: the power spectrum of each word's first vowel, band by band.

    python benchmarks/vowel_noise.py data/digits-start runs/a36-1024 [more sample folders] [--words four five]
        [--voice m1] [--clips 40]

For each word, the mean power spectrum of 100 ms starting 50 ms after the word's onset (its first loud sample,
``sashimi.audio.onsets``), as dB of the window's total power per band: for real training clips of one voice, for
the same clips through the model's 8-bit mu-law round trip (the floor a perfect model would keep), and for each
folder of generated samples (grouped by the label in its ``manifest.json``). The bands where a word's vowel has no
energy (real: -50 dB to -80 dB) show the noise a sampler adds; the word pairs four/five and six/seven differ only
there and in the second formant.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from sashimi.audio.onsets import loud_tokens, onsets
from sashimi.audio.quantize import MuLawQuantizer

RATE = 16000
BANDS = ((0, 500), (500, 1000), (1000, 1500), (1500, 2000), (2000, 2500), (2500, 3000), (3000, 4000),
         (4000, 6000), (6000, 8000))
START, LENGTH = 800, 1600  # samples: 50 ms after the onset, 100 ms long
QUANTIZER = MuLawQuantizer(8)
LOUD = loud_tokens(QUANTIZER)


def vowel_spectrum(wave: np.ndarray) -> np.ndarray | None:
    """wave (L,) at 16 kHz -> the window's power spectrum as a share of its total (F,); None without a word."""
    index, found = onsets(torch.from_numpy(QUANTIZER.encode_array(wave))[None], LOUD)
    seg = wave[int(index[0]) + START:int(index[0]) + START + LENGTH]
    if not bool(found[0]) or len(seg) < LENGTH:
        return None
    power = np.abs(np.fft.rfft(seg * np.hanning(LENGTH))) ** 2
    return power / max(power.sum(), 1e-20)


def band_db(spectra: list) -> list[float]:
    freqs = np.fft.rfftfreq(LENGTH, 1 / RATE)
    mean = np.mean([s for s in spectra if s is not None], axis=0)
    return [10 * np.log10(mean[(freqs >= lo) & (freqs < hi)].mean()) for lo, hi in BANDS]


def read(path: Path) -> np.ndarray:
    try:
        wave, rate = sf.read(path, dtype="float32")
    except (sf.LibsndfileError, RuntimeError) as e:
        raise SystemExit(f"{path}: not a readable audio file ({e})") from None
    if rate != RATE or wave.ndim != 1:
        raise SystemExit(f"{path}: expected mono audio at {RATE} Hz, got {rate} Hz with shape {wave.shape}")
    return wave


def sample_files(folder: Path, word: str, n: int) -> list[Path]:
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise SystemExit(f"{folder}: no manifest.json (a folder written by `sashimi generate`)")
    samples = json.loads(manifest.read_text())["samples"]
    return [folder / s["file"] for s in samples if s.get("label") == word][:n]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path, help="the digits folder the models learned from")
    p.add_argument("samples", type=Path, nargs="*", help="folders written by `sashimi generate`")
    p.add_argument("--words", nargs="+", default=["four", "five", "six", "seven"])
    p.add_argument("--voice", default="m1", help="the training voice (file names begin with it)")
    p.add_argument("--clips", type=int, default=40, help="clips per word and source")
    args = p.parse_args()
    print("| source | word | n | " + " | ".join(f"{lo / 1000:g}-{hi / 1000:g} kHz" for lo, hi in BANDS) + " |")
    print("|---|---|---|" + "---|" * len(BANDS))
    for word in args.words:
        real = sorted((args.data / word).glob(f"{args.voice}-*.wav"))[:args.clips]
        if not real:
            raise SystemExit(f"{args.data / word}: no clips of voice {args.voice}")
        waves = [read(f) for f in real]
        rows = [("real clips", [vowel_spectrum(w) for w in waves]),
                ("real, 8-bit mu-law", [vowel_spectrum(QUANTIZER.decode_array(QUANTIZER.encode_array(w)))
                                        for w in waves])]
        rows += [(str(d), [vowel_spectrum(read(f)) for f in sample_files(d, word, args.clips)])
                 for d in args.samples]
        for name, spectra in rows:
            n = sum(s is not None for s in spectra)
            cells = " | ".join(f"{v:.1f}" for v in band_db(spectra)) if n else " | ".join("-" for _ in BANDS)
            print(f"| {name} | {word} | {n} | {cells} |")


if __name__ == "__main__":
    main()
