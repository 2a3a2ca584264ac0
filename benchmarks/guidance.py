"""Does guidance make a conditional model say the label it is asked for? Generate N one-second clips per guidance
weight w from a conditional model (``model.labels``), each sequence asked for the labels in turn, with logits

    l = l_u + w (l_c - l_u)      l_c: the conditional model given the label, l_u: an unconditional model

(w = 1: plain conditional sampling; w > 1 amplifies what the label changes), then score them with `sashimi score`
(whose "acc." column is how often the classifier hears the label asked for).

    python benchmarks/guidance.py COND_MODEL --uncond UNCOND_MODEL --weights 1 2 3 --n 128 [--reference ROOT]
    python benchmarks/guidance.py COND_MODEL --uncond same ...   (l_u: the same model with the zero label vector,
                                                                  the mode that model.label_dropout trains)

Both models step through the native step side by side (one call each per sample); the sample drawn from the
guided logits is fed to both. With one model (``--uncond same``) this is what ``sashimi generate --guidance W``
does (``sashimi.generation.guidance``); this script also contrasts with a separate unconditional model.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from common import cpu_flags, machine

import sashimi
from sashimi.audio.quantize import make_quantizer
from sashimi.cli.main import main
from sashimi.generation.fast import FastLM
from sashimi.generation.sampling import SamplingSettings, sample


@torch.no_grad()
def guided(cond, uncond, labels: torch.Tensor, seeds: list[int], n: int, w: float) -> torch.Tensor:
    """(B n) tokens sampled from l_u + w (l_c - l_u); the uniforms of sequence i come from seed i."""
    B = len(seeds)
    c, u = FastLM(cond, B, labels=labels), FastLM(uncond, B)
    rngs = [torch.Generator().manual_seed(s) for s in seeds]
    uniforms = torch.stack([torch.rand(n, generator=g, dtype=torch.float64) for g in rngs], 1).float()  # (n B)
    prev, out, settings = torch.full((B,), cond.bos), torch.empty(n, B, dtype=torch.long), SamplingSettings()
    for t in range(n):
        lc, lu = c.step(prev, uniforms[t])[2], u.step(prev, uniforms[t])[2]  # (B C) each
        prev, _ = sample(lu + w * (lc - lu), uniforms[t], settings)
        out[t] = prev
    return out.T  # (B n)


def run_weight(cond, uncond, w: float, n: int, batch: int, out: Path, reference: str | None) -> dict:
    cfg = cond.config
    quant = make_quantizer(cfg.quantization, cfg.bits)
    out.mkdir(parents=True, exist_ok=True)
    rows, t0 = [], time.perf_counter()
    for b0 in range(0, n, batch):
        seeds = list(range(b0, min(n, b0 + batch)))
        labels = torch.tensor([s % len(cfg.labels) for s in seeds])
        audio = quant.decode(guided(cond, uncond, labels, seeds, cfg.sample_rate, w)).numpy()  # (B L)
        for s, y, wave in zip(seeds, labels.tolist(), audio):
            name = f"seed{s}.wav"
            sf.write(str(out / name), np.clip(wave, -1, 1), cfg.sample_rate, subtype="PCM_16")
            rows.append({"file": name, "seed": s, "label": cfg.labels[y]})
    seconds = time.perf_counter() - t0
    (out / "manifest.json").write_text(json.dumps({"samples": rows, "guidance": w}))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        if main(["score", str(out), "--json", *(["--reference", reference] if reference else [])]) != 0:
            raise SystemExit(f"score failed for {out}")
    return {**json.loads(buf.getvalue().strip().splitlines()[-1]), "generate_s": seconds}


def main_(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cond", help="a conditional model (name or folder)")
    p.add_argument("--uncond", required=True, help="an unconditional model of the same data (name or folder), or "
                   "'same': the conditional model with the zero label vector")
    p.add_argument("--weights", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--reference", help="the reference set of `sashimi score --reference`")
    p.add_argument("--out", default="runs/guidance")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cond = sashimi.load_model(args.cond).eval()
    uncond = cond.unconditional() if args.uncond == "same" else sashimi.load_model(args.uncond).eval()
    if not cond.n_labels or uncond.n_labels:
        raise SystemExit("need a conditional model and an unconditional one")
    print(f"machine: {machine()} ({cpu_flags()}); {args.n} one-second clips per weight, labels in turn")
    print(f"{'w':>5} {'FID':>8} {'IS':>6} {'mIS':>7} {'conf.':>6} {'heard as asked':>15} {'generate s':>11}")
    for w in args.weights:
        r = run_weight(cond, uncond, w, args.n, args.batch, Path(args.out) / f"w{w:g}", args.reference)
        print(f"{w:>5g} {r['fid']:>8.2f} {r['is']:>6.2f} {r['mis']:>7.2f} {r['mean_confidence']:>6.3f} "
              f"{r['accuracy']:>15.3f} {r['generate_s']:>11.1f}", flush=True)


if __name__ == "__main__":
    main_()
