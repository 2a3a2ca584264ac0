"""The `sashimi` command line: one entry point, one sub-command module per concern."""
from __future__ import annotations

import argparse
import sys

from sashimi.errors import SashimiError
from sashimi.runtime import tune_malloc

# Each sub-command module exposes `register(subparsers)`; the handler it registers takes the parsed args.
_COMMAND_MODULES = (
    "sashimi.cli.presets",
    "sashimi.cli.convert",
    "sashimi.cli.data",
    "sashimi.cli.train",
    "sashimi.cli.evaluate",
    "sashimi.cli.generate",
    "sashimi.cli.bench",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="sashimi", description="Raw audio generation with state-space models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # sub-command not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    tune_malloc()  # the command is the application: see sashimi/runtime.py
    try:
        return int(args.handler(args) or 0)
    except SashimiError as err:
        print(f"sashimi {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
