"""`sashimi package RUN_DIR --out FOLDER`: a trained run as a folder to ship or share, with its model card."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from sashimi.errors import ConfigError
from sashimi.models.io import WEIGHTS_NAME


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "package", help="a trained run as a shareable model folder with a model card (load it by path or name)",
        description="Write FOLDER with the run's exported model, a card set (the first N test clips, so the card's "
                    "bits per sample can be checked without the dataset) and a model card (README.md): held-out "
                    "bits per sample on the test split and the card set, sample-quality scores, the recipe.")
    p.add_argument("run_dir", type=Path, help="a finished run directory of `sashimi train` (holds model/ and "
                                              "config.yaml)")
    p.add_argument("--out", type=Path, required=True, help="folder to write (e.g. sashimi/models/pretrained/NAME)")
    p.add_argument("--name", default=None, help="the model's name on its card (default: the folder's name)")
    p.add_argument("--summary", required=True, help="one line: what the model is (the card's title)")
    p.add_argument("--scores", type=Path, default=None, help="`sashimi score --json` output for its samples")
    p.add_argument("--sampling", default="", help="how those samples were generated, e.g. the command")
    p.add_argument("--trained", default="", help="how training went: steps, batch, wall time")
    p.add_argument("--recipe", type=Path, default=None, help="the training config to print on the card "
                                                              "(default: RUN_DIR/config.yaml)")
    p.add_argument("--card-clips", type=int, default=8, help="test clips in the card set (default 8)")
    p.add_argument("--overwrite", action="store_true", help="replace the model already in --out")
    p.add_argument("--no-test-split", action="store_true", help="skip the bits per sample over the whole test split")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.root=/data/digits")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sashimi.train.data import build_split
    from sashimi.train.evaluate import load_for_evaluation
    from sashimi.train.package import CardFacts, card_metric, card_set, card_set_score, package

    if (args.out / WEIGHTS_NAME).exists() and not args.overwrite:  # before the minutes of evaluation
        raise ConfigError(f"{args.out} already holds a model ({WEIGHTS_NAME}); pass --overwrite to replace it")
    config = args.run_dir / "config.yaml"
    model_dir = args.run_dir / "model"
    if not config.is_file() or not model_dir.is_dir():
        raise ConfigError(f"{args.run_dir}: not a finished run directory (expected config.yaml and model/)")
    scores = _read_scores(args.scores) if args.scores else {}
    model, train_config = load_for_evaluation(model_dir, config, args.overrides)
    test = build_split(train_config.data, "test")
    metric, test_score = card_metric(model), None
    if not args.no_test_split:
        batch = train_config.trainer.val_batch_size or train_config.trainer.batch_size
        test_score = card_set_score(model, test, batch_size=batch, progress=True)
    recipe = (args.recipe or config).read_text(encoding="utf-8")
    facts = CardFacts(name=args.name or args.out.name, summary=args.summary, trained=args.trained,
                      sampling=args.sampling, test_score=test_score, scores=scores, recipe=recipe)
    out = package(model_dir, args.out, card_set(test, args.card_clips), facts, overwrite=args.overwrite)
    shown = "not measured" if test_score is None else f"{test_score:.4f}"
    print(f"wrote {out}: test split {shown} ({metric}), card set {facts.card_score:.4f} ({metric}, "
          f"{facts.card_clips} clips)")
    return 0


def _read_scores(path: Path) -> dict:
    try:
        scores = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"--scores {path}: not a readable `sashimi score --json` file ({err})") from None
    if not isinstance(scores, dict) or "fid" not in scores:
        raise ConfigError(f"--scores {path}: expected the JSON object `sashimi score --json` prints (with 'fid')")
    return scores
