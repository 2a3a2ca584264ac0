"""The proof table of the evaluation issue: `sashimi score` rows for reference sets and models.

Makes N one-second clips of white noise and of silence, scores them, and scores any sample folders given
(e.g. the demo model's `sashimi generate` output), all with the same classifier and reference; prints one
markdown table (the Train and Test rows come from the reference).

    python benchmarks/score_table.py [--n 1024] [--classifier CKPT --reference DATA_ROOT] [NAME=FOLDER[@SELECT] ...]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from common import machine  # benchmarks/common.py

COLUMNS = ("fid", "is", "mis", "am", "ndb", "is_textbook", "mean_confidence")


def make_set(folder: Path, n: int, kind: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        wave = 0.1 * rng.standard_normal(16000) if kind == "noise" else np.zeros(16000)
        sf.write(str(folder / f"{i:05d}.wav"), wave.astype(np.float32), 16000, subtype="PCM_16")
    return folder


def score(folder: Path, extra: list[str], select: str = "none") -> dict:
    out = subprocess.run([sys.executable, "-m", "sashimi", "score", str(folder), "--json", "--select", select, *extra],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def row(name: str, r: dict) -> str:
    cells = " | ".join(f"{r[c]:.3f}" for c in COLUMNS)
    acc = f"{r['accuracy']:.4f}" if r.get("accuracy") is not None else "-"
    return f"| {name} | {r['n_samples']} | {cells} | {acc} |"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--classifier")
    p.add_argument("--reference")
    p.add_argument("sets", nargs="*", metavar="NAME=FOLDER")
    args = p.parse_args()
    extra = (["--classifier", args.classifier] if args.classifier else []) + \
        (["--reference", args.reference] if args.reference else [])
    print(f"# {machine()}")
    print("| set | n | FID (down) | IS (up) | mIS (up) | AM (down) | NDB (down) | IS textbook (up) | mean confidence | accuracy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        noise = score(make_set(Path(tmp) / "noise", args.n, "noise"), extra)
        print(row("Train", noise["reference"]["train"]))
        print(row("Test", noise["reference"]["test"]))
        print(row("white noise", noise), flush=True)
        print(row("silence", score(make_set(Path(tmp) / "silence", args.n, "silence"), extra)), flush=True)
    for item in args.sets:  # NAME=FOLDER or NAME=FOLDER@SELECT (e.g. demo=samples@official)
        name, _, spec = item.partition("=")
        folder, _, select = spec.partition("@")
        r = score(Path(folder), extra, select or "none")
        print(row(name, r) + f" heard as {r['class_counts']}", flush=True)


if __name__ == "__main__":
    main()
