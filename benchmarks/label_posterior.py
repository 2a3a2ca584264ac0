"""Does a conditional model know which word it said? For every generated sample of SAMPLES (a `sashimi generate`
folder of a conditional model, labels in its manifest), the model's own label posterior p(l | x) (the exact
log-likelihood of the sample under each label, a uniform prior over labels) beside what the evaluation
classifier hears in it; and what keeping the best of K samples by that posterior would give (simulated: the
samples of each label are split into groups of K, and the one whose posterior of its own label is highest
is kept; averaged over 50 random groupings).

    python benchmarks/label_posterior.py MODEL SAMPLES [--best-of 1 2 4 8] [--batch 8]

Cost: one forward pass per label per sample (1,024 one-second 8 kHz samples, 10 labels: ~11 min on 2 cores).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import sashimi
from sashimi.audio.quantize import make_quantizer
from sashimi.metrics import token_nll
from sashimi.metrics.score import hear


@torch.no_grad()
def label_log_likelihoods(model, tokens: torch.Tensor, batch: int) -> torch.Tensor:
    """tokens (N L) -> (N labels) log p(x | l) in nats, every label in turn."""
    rows = []
    for b in range(0, len(tokens), batch):
        part = tokens[b:b + batch]
        rows.append(torch.stack([-token_nll(model(part, torch.full((len(part),), label)), part).sum(1)
                                 for label in range(model.n_labels)], dim=1))
    return torch.cat(rows)


def best_of(own: np.ndarray, asked: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices kept when each label's samples are grouped K at a time and the highest ``own`` of each group wins."""
    kept = []
    for label in np.unique(asked):
        idx = rng.permutation(np.flatnonzero(asked == label))
        kept += [g[np.argmax(own[g])] for g in idx[: len(idx) // k * k].reshape(-1, k)]
    return np.array(kept)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="the conditional model that generated SAMPLES (name or folder)")
    p.add_argument("samples", help="a sashimi generate folder (manifest.json with labels)")
    p.add_argument("--best-of", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args(argv)
    model = sashimi.load_model(args.model).eval()
    cfg = model.config
    names = list(getattr(cfg, "labels", ()))
    if not names:
        raise SystemExit(f"{args.model}: an unconditional model has no label posterior; give a conditional one")
    folder = Path(args.samples)
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise SystemExit(f"{folder}: no manifest.json; give a folder written by sashimi generate")
    rows = json.loads(manifest.read_text())["samples"]
    if not rows or any(r.get("label") not in names for r in rows):
        raise SystemExit(f"{manifest}: every sample needs a label among {', '.join(names)} (samples of "
                         f"{args.model} generated with its labels)")
    quantizer = make_quantizer(cfg.quantization, cfg.bits)
    tokens = torch.stack([quantizer.encode(torch.from_numpy(sf.read(str(folder / r["file"]), dtype="float32")[0]))
                          for r in rows])  # (N L)
    loglik = label_log_likelihoods(model, tokens, args.batch).numpy()  # (N labels)
    posterior = loglik - np.logaddexp.reduce(loglik, axis=1, keepdims=True)
    asked = np.array([names.index(r["label"]) for r in rows])
    heard = hear(folder, [r["file"] for r in rows])
    verdict = np.array([names.index(heard[r["file"]][0]) for r in rows])
    confidence = np.array([heard[r["file"]][1] for r in rows])
    own = posterior[np.arange(len(rows)), asked]
    print(f"{len(rows)} samples of {args.model}: the model's posterior picks the label asked for in "
          f"{np.mean(posterior.argmax(1) == asked):.1%}, the label the classifier hears in "
          f"{np.mean(posterior.argmax(1) == verdict):.1%}; the classifier hears the label asked for in "
          f"{np.mean(verdict == asked):.1%}\n")
    print("| kept | n | heard as asked | mean conf. |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    for k in args.best_of:
        picks = [best_of(own, asked, k, rng) for _ in range(50)]
        print(f"| best of {k} by the model's posterior | {len(picks[0])} | "
              f"{np.mean([np.mean(verdict[i] == asked[i]) for i in picks]):.3f} | "
              f"{np.mean([confidence[i].mean() for i in picks]):.3f} |")


if __name__ == "__main__":
    main()
