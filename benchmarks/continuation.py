"""Can a model finish a word it has begun? Real test clips are aligned so each word starts at 0.15 s, the model
continues the first 0.15 s + D of each (D seconds of the real word), and the evaluation classifier hears the
one-second result. Beside it, the same primes followed by silence: what the prime alone gives away.

    python benchmarks/continuation.py MODEL CONFIG [--clips 100] [--heard 0 0.05 0.1 0.2] [--split test]
        [--label-shift K]   (give label word + K: does the label or the begun word decide?)

CONFIG: a training config whose data section names the clips (e.g. docs/recipes/digits8k-a5.yaml); a
conditional model is given each clip's own label.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import yaml

import sashimi
from sashimi.audio.io import resample
from sashimi.audio.onsets import loud_tokens
from sashimi.audio.onsets import onsets as onset_index
from sashimi.audio.quantize import make_quantizer
from sashimi.generation.sampler import generate
from sashimi.generation.sampling import SamplingSettings
from sashimi.metrics.classifier import load_classifier
from sashimi.metrics.score import SHIPPED_CLASSIFIER, classify_waves
from sashimi.train.config import TrainConfig
from sashimi.train.data import LabeledDataset, build_split

LEAD = 0.15  # seconds of silence before each aligned word


def onsets(tokens: torch.Tensor, quantizer) -> torch.Tensor:
    """(N L) token clips -> (N,) index of each clip's first loud sample (0 when none is)."""
    return onset_index(tokens, loud_tokens(quantizer))[0]


def hear(classifier, tokens: torch.Tensor, quantizer, rate: int) -> np.ndarray:
    """(N L) token clips at ``rate`` -> the classifier's probabilities (N K), clips at 16 kHz."""
    waves = np.stack([resample(quantizer.decode_array(t.numpy()), rate, 16000)[:16000] for t in tokens])
    return classify_waves(classifier, waves)[0]


def aligned(tokens: torch.Tensor, quantizer, rate: int) -> torch.Tensor:
    """(N L) token clips -> the same clips shifted so each word's onset is at LEAD s."""
    lead, silence = int(LEAD * rate), int(quantizer.encode_array(np.zeros(1))[0])
    out = torch.full_like(tokens, silence)
    for i, (clip, onset) in enumerate(zip(tokens, onsets(tokens, quantizer).tolist())):
        part = clip[max(onset - lead, 0):]
        start = lead - min(onset, lead)
        n = min(len(part), tokens.shape[1] - start)
        out[i, start:start + n] = part[:n]
    return out


def heard(classifier, tokens: torch.Tensor, quantizer, rate: int, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy against labels, mean top-class confidence) of the classifier on these token clips."""
    probs = hear(classifier, tokens, quantizer, rate)
    return float((probs.argmax(1) == labels).mean()), float(probs.max(1).mean())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("config")
    p.add_argument("--clips", type=int, default=100)
    p.add_argument("--heard", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=("train", "valid", "test"), default="test",
                   help="whose clips (default test: voices the model never heard)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--label-shift", type=int, default=0,
                   help="give the model label (word + K) mod 10 instead of the word's own, and also report how "
                        "often the label given is heard: does the label or the begun word decide?")
    args = p.parse_args(argv)
    model = sashimi.load_model(args.model).eval()
    data = TrainConfig.from_dict(yaml.safe_load(open(args.config))).data
    names = model.config.labels or ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    clips = LabeledDataset(build_split(data, args.split), names)
    index = list(range(0, len(clips), max(1, len(clips) // args.clips)))[: args.clips]
    quantizer, rate = make_quantizer(data.quantization, data.bits), data.sample_rate
    tokens = aligned(torch.stack([clips[i][0] for i in index]), quantizer, rate)  # (N L)
    labels = np.array([clips[i][1] for i in index])
    classifier = load_classifier(SHIPPED_CLASSIFIER)
    silence = int(quantizer.encode_array(np.zeros(1))[0])
    acc, conf = heard(classifier, tokens, quantizer, rate, labels)
    print(f"{len(index)} aligned {args.split} clips, whole: heard right {acc:.3f}, confidence {conf:.3f}")
    given = (labels + args.label_shift) % len(names)  # the label the model is given
    shifted = f" | prime + model: heard as the label given (word + {args.label_shift})" if args.label_shift else ""
    print(f"| real word heard (s) | prime + silence: right | conf. | prime + model: right | conf.{shifted} |")
    print("|---|---|---|---|---|" + ("---|" if args.label_shift else ""))
    for d in args.heard:
        n = int((LEAD + d) * rate)
        cut = tokens.clone()
        cut[:, n:] = silence
        acc_cut, conf_cut = heard(classifier, cut, quantizer, rate, labels)
        out = generate(model, tokens.shape[1] - n, [args.seed + i for i in range(len(index))],
                       prime=tokens[:, :n], settings=SamplingSettings(temperature=args.temperature),
                       labels=torch.as_tensor(given) if model.n_labels else None)
        probs = hear(classifier, out.tokens, quantizer, rate)
        acc_gen, conf_gen = float((probs.argmax(1) == labels).mean()), float(probs.max(1).mean())
        as_given = f" | {float((probs.argmax(1) == given).mean()):.3f}" if args.label_shift else ""
        print(f"| {d:.2f} | {acc_cut:.3f} | {conf_cut:.3f} | {acc_gen:.3f} | {conf_gen:.3f}{as_given} |", flush=True)


if __name__ == "__main__":
    main()
