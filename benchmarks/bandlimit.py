"""What the evaluation classifier hears in real clips band-limited to a lower sample rate: can a model at that
rate reach the quality bar at all? Each clip is resampled to RATE (`sashimi.audio.io.resample`, as the data
pipeline does for a model at RATE), optionally put through the model's 8-bit mu-law code (`--mu-law 8`), and
written at RATE as a model's samples are; `sashimi score` resamples it to the classifier's rate and scores it
against DATA_ROOT's train split.

    python benchmarks/bandlimit.py DATA_ROOT --rates 8000 16000 [--split test|train] [--clips 1024] [--mu-law 8]

`--split train` draws from the reference's own clips: what a perfect model of the training data at RATE would
score. `--clips N`: a seeded random draw of N clips (`--seed`). (Before session 24 the script took the first N
test clips and resampled them back to 16 kHz itself; the figures it gave then are in RESULTS.md.)
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from sashimi.audio.io import resample
from sashimi.audio.quantize import MuLawQuantizer
from sashimi.cli.main import main
from sashimi.data.datasets import speech_commands_splits


def split_files(root: Path, split: str) -> list[str]:
    """The clips ("word/file.wav") of a digits/sc09 layout's split: the test list in its order, or the train split
    (``speech_commands_splits``: in neither list) sorted."""
    if split == "test":
        return [ln.strip() for ln in (root / "testing_list.txt").read_text().splitlines() if ln.strip()]
    return speech_commands_splits(root, sorted(str(f.relative_to(root)) for f in root.glob("*/*.wav")))["train"]


def score_at(root: Path, files: list[str], rate: int, bits: int | None) -> dict:
    """Write each clip as a model at ``rate`` would, then score the folder against ``root``."""
    quantizer = MuLawQuantizer(bits) if bits else None
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for i, rel in enumerate(files):
            wave, sr = sf.read(str(root / rel), dtype="float32")
            wave = resample(wave, sr, rate) if rate != sr else wave
            if quantizer is not None:
                wave = quantizer.decode_array(quantizer.encode_array(np.asarray(wave)))
            name = f"{i:05d}.wav"
            sf.write(str(Path(tmp) / name), np.asarray(wave, dtype=np.float32), rate, subtype="PCM_16")
            rows.append({"file": name, "label": rel.split("/")[0]})
        (Path(tmp) / "manifest.json").write_text(json.dumps({"samples": rows}))
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            main(["score", tmp, "--json", "--reference", str(root)])
        return json.loads(buf.getvalue().strip().splitlines()[-1])


def main_(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path)
    p.add_argument("--rates", type=int, nargs="+", default=[8000, 16000])
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--clips", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mu-law", type=int, default=None, metavar="BITS", help="code the clips as a model's tokens")
    args = p.parse_args(argv)
    if not (args.root / "testing_list.txt").is_file():
        p.error(f"{args.root}: expected a digits/sc09 dataset root with a testing_list.txt")
    files = split_files(args.root, args.split)
    pick = np.random.default_rng(args.seed).choice(len(files), min(args.clips, len(files)), replace=False)
    files = [files[i] for i in sorted(pick)]
    code = f", {args.mu_law}-bit mu-law" if args.mu_law else ""
    print(f"{len(files)} {args.split} clips of {args.root} (seed {args.seed}), band-limited{code}")
    print(f"{'rate':>6} {'FID':>7} {'IS':>6} {'conf.':>6} {'accuracy':>9}")
    for rate in args.rates:
        r = score_at(args.root, files, rate, args.mu_law)
        print(f"{rate:>6} {r['fid']:>7.2f} {r['is']:>6.2f} {r['mean_confidence']:>6.3f} {r['accuracy']:>9.3f}")


if __name__ == "__main__":
    main_()
