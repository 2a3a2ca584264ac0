"""`sashimi models`: the trained models shipped in the package, usable by name wherever a checkpoint goes."""
from __future__ import annotations

import argparse

from sashimi.models.pretrained import SHIPPED_ROOT, shipped


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the trained models shipped in the package (usable by name, e.g. "
                       "`sashimi generate NAME`)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    models = shipped()
    if not models:
        print(f"no models are shipped in this installation ({SHIPPED_ROOT})")
        return 0
    width = max(len(n) for n in models)
    for name, m in models.items():
        print(f"{name:<{width}}  {m.summary}  ({m.folder / 'README.md'})")
    return 0
