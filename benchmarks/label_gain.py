"""How much a conditional model relies on its label: the exact NLL of validation clips given their own label
against the NLL given a wrong one (each clip's label moved three places on), in bits per clip; and where in the
clip that difference lies: before the word, around its onset (continuation.py's onset, +-50 ms), after.
With --against, the wrong label is a named one (each clip of "four" scored against "five", say) and the clips are
those of the named words (up to --clips of each), one row per word: how much the label tells a confusable pair apart,
in all and in each of the three regions.

    python benchmarks/label_gain.py MODEL CONFIG [--clips 48] [--split valid] [--against four:five five:four ...]

CONFIG: the training config whose data section names the clips (e.g. docs/recipes/digits8k-a5.yaml).
"""
from __future__ import annotations

import argparse
import math

import torch
import yaml
from continuation import onsets

import sashimi
from sashimi.audio.quantize import make_quantizer
from sashimi.errors import ConfigError
from sashimi.generation.labels import parse_labels
from sashimi.metrics import token_nll
from sashimi.train.config import TrainConfig
from sashimi.train.data import LabeledDataset, build_split


ONSET_MS = 50


@torch.no_grad()
def nll_bits(model, tokens: torch.Tensor, labels: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """(N L) tokens, (N,) labels -> (N L) NLL of every sample in bits."""
    return torch.cat([token_nll(model(tokens[b:b + batch], labels[b:b + batch]), tokens[b:b + batch])
                      for b in range(0, len(tokens), batch)]) / math.log(2)


def regions(tokens: torch.Tensor, quantizer, rate: int) -> dict[str, torch.Tensor]:
    """(N L) -> masks (N L) of the samples before each word's onset window, in it, and after it."""
    half = int(ONSET_MS / 1000 * rate)
    onset = onsets(tokens, quantizer)
    t = torch.arange(tokens.shape[1])[None, :]
    before, after = t < (onset - half)[:, None], t >= (onset + half)[:, None]
    return {"before the word": before, f"onset +-{ONSET_MS} ms": ~before & ~after, "after": after}


def against(pairs: list[str], names: tuple[str, ...]) -> dict[int, int]:
    """["four:five", ...] -> {label of four: label of five, ...}, each name checked as ``sashimi generate
    --label`` checks it."""
    out = {}
    for pair in pairs:
        words = parse_labels(pair.replace(":", ","), names, "--against")
        if len(words) != 2:
            raise ConfigError(f"--against {pair}: expected WORD:OTHER, two label names")
        out[names.index(words[0])] = names.index(words[1])
    return out


def pair_rows(model, clips, wrong_of: dict[int, int], per_word: int, split: str, quantizer, rate: int) -> None:
    """One row per word of ``wrong_of``: bits per clip its own label saves against the named other label, in all
    and in each region of ``regions`` (before the word, around its onset, after)."""
    names = model.config.labels
    print(f"| word | against | {split} clips | bits saved per clip by its own label (mean, min, max) | before the "
          f"word | onset +-{ONSET_MS} ms | after |")
    print("|---|---|---|---|---|---|---|")
    for word, other in wrong_of.items():
        index = [i for i, label in enumerate(clips.labels) if label == word][:per_word]
        if not index:
            raise ConfigError(f"--against: the {split} split has no clips of {names[word]!r}")
        tokens = torch.stack([clips[i][0] for i in index])  # (N L)
        own = nll_bits(model, tokens, torch.full((len(index),), word))  # (N L)
        saved = nll_bits(model, tokens, torch.full((len(index),), other)) - own  # (N L)
        gain = saved.sum(1)  # (N,)
        parts = " | ".join(f"{(saved * mask).sum() / len(index):+.1f}"
                           for mask in regions(tokens, quantizer, rate).values())
        print(f"| {names[word]} | {names[other]} | {len(index)} | {gain.mean():+.1f} ({gain.min():+.1f}, "
              f"{gain.max():+.1f}) | {parts} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("config")
    p.add_argument("--clips", type=int, default=48)
    p.add_argument("--split", choices=("train", "valid", "test"), default="valid")
    p.add_argument("--against", nargs="+", metavar="WORD:OTHER", default=(),
                   help="score the clips of WORD against the label OTHER instead of the label three places on")
    args = p.parse_args(argv)
    model = sashimi.load_model(args.model).eval()
    data = TrainConfig.from_dict(yaml.safe_load(open(args.config))).data
    clips = LabeledDataset(build_split(data, args.split), model.config.labels)
    if args.against:
        try:
            return pair_rows(model, clips, against(args.against, model.config.labels), args.clips, args.split,
                             make_quantizer(data.quantization, data.bits), data.sample_rate)
        except ConfigError as e:
            raise SystemExit(str(e)) from None
    index = list(range(0, len(clips), max(1, len(clips) // args.clips)))[: args.clips]
    tokens = torch.stack([clips[i][0] for i in index])  # (N L)
    labels = torch.tensor([clips[i][1] for i in index])  # (N,)
    right = nll_bits(model, tokens, labels)  # (N L)
    wrong = nll_bits(model, tokens, (labels + 3) % model.n_labels)
    n = len(index)
    print(f"{n} {args.split} clips: {right.sum() / n:.1f} bits per clip with their own label, {wrong.sum() / n:.1f} "
          f"with a wrong one (+{(wrong - right).sum() / n:.1f})")
    print("| region | samples per clip | bits, own label | bits, wrong label | gain per clip |")
    print("|---|---|---|---|---|")
    for name, mask in regions(tokens, make_quantizer(data.quantization, data.bits), data.sample_rate).items():
        r, w = (right * mask).sum() / n, (wrong * mask).sum() / n
        print(f"| {name} | {mask.sum() / n:.0f} | {r:.1f} | {w:.1f} | {w - r:+.1f} |")


if __name__ == "__main__":
    main()
