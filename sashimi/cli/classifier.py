"""`sashimi classifier train CONFIG [key=value ...]`, `sashimi classifier train --resume RUN_DIR` and
`sashimi classifier import resnext.pth OUT`: the evaluation classifier of `sashimi score`."""
from __future__ import annotations

import argparse
from pathlib import Path



def register(subparsers) -> None:
    p = subparsers.add_parser("classifier", help="train or import the SC09 evaluation classifier",
                              description="The ResNeXt digit classifier behind `sashimi score`.")
    sub = p.add_subparsers(dest="classifier_command", metavar="ACTION")
    t = sub.add_parser("train", help="train it (run directory and resume as in `sashimi train`)",
                       description="Train from a classifier config (a path or a shipped preset: classifier-digits, "
                                   "classifier-sc09) with section.key=value overrides, e.g. "
                                   "`sashimi classifier train classifier-sc09 data.root=data/sc09`.")
    t.add_argument("args", nargs="*", metavar="CONFIG|key=value")
    t.add_argument("--run-dir", type=Path, default=None, help="run directory (default: runs/<config>-<time>)")
    t.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR exactly from its last checkpoint")
    t.set_defaults(handler=run_train)
    i = sub.add_parser("import", help="import the official resnext.pth safely (no pickled code runs)",
                       description="Read the official classifier (a pickled DataParallel(CifarResNeXt)) with a "
                                   "restricted unpickler and save it as safetensors for `sashimi score`.")
    i.add_argument("source", type=Path, help="the official resnext.pth")
    i.add_argument("out", type=Path, help="output: a directory, or a file ending in .safetensors")
    i.set_defaults(handler=run_import)
    p.set_defaults(handler=lambda args: p.print_help() or 2)


def run_train(args: argparse.Namespace) -> int:
    from sashimi.cli.train import train_or_resume
    from sashimi.train.classifier import load_classifier_config

    return train_or_resume(args, "sashimi classifier train", "classifier-digits", load_classifier_config,
                           "final classifier")


def run_import(args: argparse.Namespace) -> int:
    from sashimi.metrics.official import import_official_classifier
    from sashimi.models.io import save_model

    model = import_official_classifier(args.source)
    weights = save_model(model, args.out)
    c = model.config
    print(f"imported {args.source} ({c.cardinality}x{c.base_width}d, widen {c.widen_factor}, depth {c.depth}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters) -> {weights}")
    return 0
