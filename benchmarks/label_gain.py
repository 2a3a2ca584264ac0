"""How much a conditional model relies on its label: the exact NLL of validation clips given their own label
against the NLL given a wrong one (each clip's label moved three places on), in bits per clip.

    python benchmarks/label_gain.py MODEL CONFIG [--clips 48]

CONFIG: the training config whose data section names the clips (e.g. docs/recipes/digits8k-a5.yaml).
"""
from __future__ import annotations

import argparse
import math

import torch
import yaml

import sashimi
from sashimi.metrics import token_nll
from sashimi.train.config import TrainConfig
from sashimi.train.data import LabeledDataset, build_split


@torch.no_grad()
def bits_per_clip(model, tokens: torch.Tensor, labels: torch.Tensor, batch: int = 8) -> float:
    total = sum(token_nll(model(tokens[b:b + batch], labels[b:b + batch]), tokens[b:b + batch]).sum().item()
                for b in range(0, len(tokens), batch))
    return total / len(tokens) / math.log(2)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("config")
    p.add_argument("--clips", type=int, default=48)
    args = p.parse_args(argv)
    model = sashimi.load_model(args.model).eval()
    data = TrainConfig.from_dict(yaml.safe_load(open(args.config))).data
    clips = LabeledDataset(build_split(data, "valid"), model.config.labels)
    index = list(range(0, len(clips), max(1, len(clips) // args.clips)))[: args.clips]
    tokens = torch.stack([clips[i][0] for i in index])  # (N L)
    labels = torch.tensor([clips[i][1] for i in index])  # (N,)
    right = bits_per_clip(model, tokens, labels)
    wrong = bits_per_clip(model, tokens, (labels + 3) % model.n_labels)
    print(f"{len(index)} validation clips: {right:.1f} bits per clip with their own label, {wrong:.1f} with a "
          f"wrong one (+{wrong - right:.1f})")


if __name__ == "__main__":
    main()
