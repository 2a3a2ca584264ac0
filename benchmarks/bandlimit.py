"""What the evaluation classifier hears in real clips band-limited to a lower sample rate: can a model at that
rate reach the quality bar at all? Each test clip is resampled to RATE and back to the clip's rate (soxr), then
scored with `sashimi score` against the same data.

    python benchmarks/bandlimit.py DATA_ROOT --rates 4000 6000 [--clips 300]
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
import soxr

from sashimi.cli.main import main


def main_(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path)
    p.add_argument("--rates", type=int, nargs="+", default=[4000, 6000])
    p.add_argument("--clips", type=int, default=300)
    args = p.parse_args(argv)
    test = [ln.strip() for ln in (args.root / "testing_list.txt").read_text().splitlines() if ln.strip()]
    print(f"{args.clips} test clips of {args.root}, band-limited")
    print(f"{'rate':>6} {'FID':>7} {'IS':>6} {'conf.':>6} {'accuracy':>9}")
    for rate in args.rates:
        with tempfile.TemporaryDirectory() as tmp:
            rows = []
            for i, rel in enumerate(test[: args.clips]):
                wave, sr = sf.read(str(args.root / rel), dtype="float32")
                back = soxr.resample(soxr.resample(wave, sr, rate), rate, sr)[: len(wave)]
                name = f"{i}.wav"
                sf.write(str(Path(tmp) / name), np.pad(back, (0, len(wave) - len(back))), sr, subtype="PCM_16")
                rows.append({"file": name, "label": rel.split("/")[0]})
            (Path(tmp) / "manifest.json").write_text(json.dumps({"samples": rows}))
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                main(["score", tmp, "--json", "--reference", str(args.root)])
            r = json.loads(buf.getvalue().strip().splitlines()[-1])
        print(f"{rate:>6} {r['fid']:>7.2f} {r['is']:>6.2f} {r['mean_confidence']:>6.3f} {r['accuracy']:>9.3f}")


if __name__ == "__main__":
    main_()
