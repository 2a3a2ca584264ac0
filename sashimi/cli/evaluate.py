"""`sashimi evaluate CHECKPOINT --split test [--json]`: exact negative log-likelihood in bits per sample; for a
diffusion model, the denoising loss per band of diffusion steps."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sashimi.cli.options import device


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="test negative log-likelihood (bits per sample) of a trained model",
        description="Exact NLL over every sample of full-length examples of a split, in bits per sample. A "
                    "diffusion model (DiffWave) has no exact likelihood: its denoising loss (mean squared error of "
                    "the predicted noise) is reported, per band of diffusion steps and their mean. "
                    "CHECKPOINT: a run directory (best.ckpt), a .ckpt file, or an exported model with --config.",
    )
    p.add_argument("checkpoint", type=Path)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.root=/data/sc09")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"))
    p.add_argument("--config", type=Path, default=None, help="config for the data (needed for exported models)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's val_batch_size or batch_size")
    p.add_argument("--device", type=device, default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda or cuda:N (default: cuda where torch sees a GPU)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sashimi.train.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, split=args.split, config=args.config, overrides=args.overrides,
                                 batch_size=args.batch_size, device=args.device, progress=not args.json)
    if args.json:
        print(json.dumps(result))
    elif result.get("kind") == "diffwave":
        bands = ", ".join(f"t {k.removeprefix('loss_t').replace('_', '-')}: {v:.4f}"
                          for k, v in result.items() if k.startswith("loss_t"))
        print(f"{args.split}: denoising loss {result['loss']:.4f} (mean squared error of the predicted noise, mean "
              f"over bands of diffusion steps; {bands}; {result['samples']} samples in {result['examples']} examples)")
    else:
        print(f"{args.split}: {result['bits_per_sample']:.4f} bits/sample  (NLL {result['loss']:.4f} nats, "
              f"accuracy {result['accuracy']:.4f}, {result['samples']} samples in {result['examples']} examples)")
    return 0
