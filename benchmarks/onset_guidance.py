"""Guidance at the start of a word only: does leaning on the label while a word begins make free samples say the
digit asked for? Each sequence is guided with weight W (logits l_u + W (l_c - l_u)) until ONSET ms after its
first loud sample (the onset of benchmarks/continuation.py: |x| > 0.02), then sampled plainly (W = 1); with
--onset-temperatures, the guided logits are also divided by T_o until then (the word's start sampled sharper).

    python benchmarks/onset_guidance.py MODEL [--n 128] [--weights 2 4 8] [--onset-ms 50] [--temperature 1]
        [--onset-temperatures 1]

MODEL: a conditional model trained with label dropout (e.g. runs/digits8k-a9/model). Digits are asked for in
turn; prints, per weight, what the shipped classifier hears: heard as asked, mean confidence and IS.
"""
from __future__ import annotations

import argparse
import math

import torch
from continuation import hear

import sashimi
from sashimi.audio.onsets import loud_tokens
from sashimi.audio.quantize import make_quantizer
from sashimi.generation.guidance import GuidedStep
from sashimi.generation.sampler import Sampler
from sashimi.generation.sampling import SamplingSettings
from sashimi.metrics.classifier import load_classifier
from sashimi.metrics.quality import inception_score
from sashimi.metrics.score import SHIPPED_CLASSIFIER

class OnsetGuidedStep(GuidedStep):
    """GuidedStep whose weight (and, with ``onset_temperature``, sharpness) drops to plain sampling for a row
    ``onset_len`` samples after its first loud sample."""

    def __init__(self, guided: GuidedStep, loud: torch.Tensor, onset_len: int, rows: int,
                 onset_temperature: float = 1.0):
        super().__init__(guided.inner, guided.weight, guided.settings, guided.n_classes)
        self.onset_weight, self.onset_temperature = guided.weight, onset_temperature
        self.loud, self.onset_len = loud, onset_len  # (C) bool: tokens above sashimi.audio.onsets.LOUD
        self.since = torch.full((rows,), -1, dtype=torch.long)  # samples since the onset; -1 before it

    def draw(self, logits: torch.Tensor, u: torch.Tensor):
        """As GuidedStep.draw, with a weight per row (mix broadcasts it); the onset temperature scales both
        halves, so it scales the guided logits (the returned log-prob is then that of the sharpened model)."""
        starting = (self.since < self.onset_len)[:, None]  # (B 1)
        self.weight = torch.where(starting, self.onset_weight, 1.0).to(logits.dtype)
        sharpen = torch.where(starting, 1.0 / self.onset_temperature, 1.0).to(logits.dtype).repeat(2, 1)  # (2B 1)
        token, logp, guided = super().draw(logits * sharpen, u)
        self.since = torch.where(self.since >= 0, self.since + 1, torch.where(self.loud[token], 0, -1))
        return token, logp, guided


def run(model, weight: float, n: int, onset_len: int, settings: SamplingSettings, batch: int, seed: int,
        onset_temperature: float = 1.0):
    """-> tokens (n L) of one-second samples, labels (n,)."""
    loud = loud_tokens(make_quantizer(model.config.quantization, model.config.bits))
    L = model.config.sample_rate
    out, labels = [], torch.arange(n) % model.n_labels
    for start in range(0, n, batch):
        rows = labels[start:start + batch]
        sampler = Sampler(model, list(range(seed + start, seed + start + len(rows))), settings, labels=rows,
                          guidance=weight)
        sampler.backend = OnsetGuidedStep(sampler.backend, loud, onset_len, len(rows), onset_temperature)
        out.append(torch.cat(list(sampler.chunks(L)), dim=1))
    return torch.cat(out), labels.numpy()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--weights", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    p.add_argument("--onset-ms", type=float, default=50.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--onset-temperatures", type=float, nargs="+", default=[1.0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model = sashimi.load_model(args.model).eval()
    quantizer, rate = make_quantizer(model.config.quantization, model.config.bits), model.config.sample_rate
    classifier = load_classifier(SHIPPED_CLASSIFIER)
    settings = SamplingSettings(temperature=args.temperature)
    onset_len = math.ceil(args.onset_ms / 1000 * rate)
    print(f"{args.n} samples per weight, guided until {args.onset_ms:g} ms after the onset, T {args.temperature:g}")
    print("| W | onset T | heard as asked | mean conf. | IS |")
    print("|---|---|---|---|---|")
    for w in args.weights:
        for t_o in args.onset_temperatures:
            tokens, labels = run(model, w, args.n, onset_len, settings, args.batch_size, args.seed, t_o)
            probs = hear(classifier, tokens, quantizer, rate)
            print(f"| {w:g} | {t_o:g} | {(probs.argmax(1) == labels).mean():.3f} | {probs.max(1).mean():.3f} | "
                  f"{inception_score(probs):.2f} |", flush=True)


if __name__ == "__main__":
    main()
