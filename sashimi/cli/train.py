"""`sashimi train CONFIG [key=value ...]` and `sashimi train --resume RUN_DIR [key=value ...]`."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from sashimi.errors import ConfigError

RUN_DIR_ENV = "SASHIMI_RUN_DIR"  # lets the DDP worker processes Lightning launches find the same run dir


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a model from a YAML config",
        description="Train from a YAML config (a path or a shipped preset: sc09, sc09-unet, youtubemix, "
                    "beethoven, demo; diffusion models (model.kind: diffwave): sc09-diffwave, sc09-diffwave-small, "
                    "sc09-wavenet-diffwave, sc09-wavenet-diffwave-small, demo-diffwave) with section.key=value "
                    "overrides, e.g. `sashimi train sc09 data.root=/data/sc09 trainer.devices=8`.",
    )
    p.add_argument("args", nargs="*", metavar="CONFIG|key=value",
                   help="config file or preset name, then overrides (with --resume: overrides only)")
    p.add_argument("--run-dir", type=Path, default=None, help="run directory (default: runs/<config>-<time>)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR exactly from its last checkpoint")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sashimi.train import load_config

    return train_or_resume(args, "sashimi train", "demo", load_config, "final model")


def train_or_resume(args: argparse.Namespace, command: str, example: str, load_config, what: str) -> int:
    """``args.resume`` RUN_DIR, or a new run of ``load_config(CONFIG, overrides)`` (shared by the sub-commands
    that train: the audio model and the evaluation classifier)."""
    from lightning.pytorch.utilities import rank_zero_only

    from sashimi.train import resume, train

    if args.resume is not None:
        if args.run_dir is not None:
            raise ConfigError("--resume RUN_DIR already names the run directory; drop --run-dir")
        model_dir = resume(args.resume, _overrides(args.args))
    else:
        if not args.args or "=" in args.args[0]:
            raise ConfigError(f"name a config first: {command} CONFIG [key=value ...] (e.g. {command} {example})")
        name, overrides = args.args[0], _overrides(args.args[1:])
        config = load_config(name, overrides)
        run_dir = _run_dir(args.run_dir, name)
        os.environ[RUN_DIR_ENV] = str(run_dir)  # inherited by the DDP workers Lightning starts during fit
        try:
            model_dir = train(config, run_dir)
        finally:
            del os.environ[RUN_DIR_ENV]
    if rank_zero_only.rank == 0:  # DDP workers run this handler too
        print(f"{what}: {model_dir}")
    return 0


def _overrides(items: list[str]) -> list[str]:
    bad = [x for x in items if "=" not in x]
    if bad:
        raise ConfigError(f"expected key=value overrides, got {bad}")
    return items


def _run_dir(explicit: Path | None, config_name: str) -> Path:
    """Explicit, else inherited from the launching process (DDP workers), else runs/<config>-<time>."""
    default = Path("runs") / f"{Path(config_name).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(explicit or os.environ.get(RUN_DIR_ENV) or default)
