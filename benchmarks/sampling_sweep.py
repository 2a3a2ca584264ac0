"""Which sampling settings serve a model best: generate N one-second clips per setting and score them.

    python benchmarks/sampling_sweep.py MODEL --n 256 --settings 1.0:1.0 0.9:0.95 0.8:1.0 [--out runs/sweep]
        [--reference DATA_ROOT]   (the reference set of `sashimi score --reference`, e.g. a noiseless digits set)

Each setting is TEMPERATURE:TOP_P. Prints one row per setting: FID, IS, mIS, AM, NDB, mean confidence, the
number of digit classes heard (at least 5% of the samples), and the generation time. Scores come from
`sashimi score` (the shipped digits classifier; clips at other rates are resampled to 16 kHz first).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

from common import cpu_flags, machine

from sashimi.cli.main import main


def sweep_one(model: str, n: int, temperature: float, top_p: float, out: Path, batch: int, seed: int,
              reference: str | None = None) -> dict:
    t0 = time.perf_counter()
    rc = main(["generate", model, "--n", str(n), "--seconds", "1", "--temperature", str(temperature),
               "--top-p", str(top_p), "--batch-size", str(batch), "--seed", str(seed), "--out", str(out),
               "--overwrite"])
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"generate failed for {temperature}:{top_p}")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        if main(["score", str(out), "--json", *(["--reference", reference] if reference else [])]) != 0:
            raise SystemExit(f"score failed for {out}")
    result = json.loads(buf.getvalue().strip().splitlines()[-1])
    (out / "scores.json").write_text(json.dumps(result, indent=1))
    return {**result, "generate_s": seconds}


def main_() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--settings", nargs="+", default=["1.0:1.0", "0.9:1.0", "1.0:0.95", "0.9:0.95", "0.8:1.0"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/sweep"))
    ap.add_argument("--reference", default=None, help="data root of the reference statistics (sashimi score --reference)")
    args = ap.parse_args()
    print(f"machine: {machine()}; CPU flags: {cpu_flags()}")
    print(f"model {args.model}, {args.n} one-second samples per setting, seed {args.seed}, reference "
          f"{args.reference or 'the shipped classifier statistics'}")
    print(f"{'T:top-p':>9} {'FID':>7} {'IS':>6} {'mIS':>7} {'AM':>6} {'NDB':>5} {'conf':>6} {'classes':>7} {'gen s':>7}")
    for setting in args.settings:
        temperature, top_p = (float(x) for x in setting.split(":"))
        r = sweep_one(args.model, args.n, temperature, top_p, args.out / setting.replace(":", "_"), args.batch,
                      args.seed, args.reference)
        heard = sum(c >= 0.05 * r["n_samples"] for c in r["class_counts"].values())
        print(f"{setting:>9} {r['fid']:7.2f} {r['is']:6.2f} {r['mis']:7.2f} {r['am']:6.2f} {r['ndb']:5.0f} "
              f"{r['mean_confidence']:6.3f} {heard:7d} {r['generate_s']:7.1f}", flush=True)
        top = sorted(r["class_counts"].items(), key=lambda kv: -kv[1])[:4]
        print(f"{'':>9} heard as: " + ", ".join(f"{c} {k}" for c, k in top))


if __name__ == "__main__":
    main_()
