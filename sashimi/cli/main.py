"""The `sashimi` command line: one entry point, one sub-command module per concern."""
from __future__ import annotations

import argparse
import sys

from sashimi.errors import SashimiError
from sashimi.runtime import tune_malloc

# Each sub-command module exposes `register(subparsers)`; the handler it registers takes the parsed args.
_COMMAND_MODULES = (
    "sashimi.cli.presets",
    "sashimi.cli.models",
    "sashimi.cli.convert",
    "sashimi.cli.data",
    "sashimi.cli.train",
    "sashimi.cli.classifier",
    "sashimi.cli.evaluate",
    "sashimi.cli.generate",
    "sashimi.cli.score",
    "sashimi.cli.package",
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


# Sub-commands that end in a key=value list, and where it goes. argparse ends a positional list at the first
# option, so the pairs after one (`sashimi train demo --run-dir runs/demo trainer.max_steps=100`) come back
# unparsed; parse() puts them where they belong.
_TRAILING = {"train": "args", "evaluate": "overrides", "classifier": "args", "package": "overrides"}


def parse(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    dest = _TRAILING.get(getattr(args, "command", None))
    if extra:
        if dest is None or not hasattr(args, dest) or any(x.startswith("-") for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        setattr(args, dest, [*getattr(args, dest), *extra])
    return parser, args


def main(argv: list[str] | None = None) -> int:
    parser, args = parse(argv)
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
