"""`sashimi score SAMPLES [--classifier CKPT] [--reference DATA_ROOT] [--select ...] [--json] [--report]`:
FID, IS, mIS, AM and NDB of a sample set, beside the Train and Test rows of the reference dataset."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sashimi.errors import ConfigError

COLUMNS = (("fid", "FID", "down"), ("is", "IS", "up"), ("mis", "mIS", "up"), ("am", "AM", "down"),
           ("ndb", "NDB", "down"), ("is_textbook", "IS-textbook", "up"))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "score", help="sample quality: FID, IS, mIS, AM, NDB with the SC09 evaluation classifier",
        description="Score a folder of one-second clips (e.g. the output of `sashimi generate`; rates other than "
                    "16 kHz are resampled with soxr first) the way the SaShiMi paper does, beside the reference "
                    "dataset's Train and Test rows.")
    p.add_argument("samples", type=Path, help="folder of WAV/FLAC clips (with manifest.json from sashimi generate)")
    p.add_argument("--classifier", type=Path, default=None,
                   help="classifier (.safetensors or folder; default: the small classifier shipped for the "
                        "built-in digits)")
    p.add_argument("--reference", type=Path, default=None, metavar="DATA_ROOT",
                   help="dataset the scores compare with (sc09 or digits layout): its train split gives the "
                        "reference statistics, its test split the Test row (computed once per classifier and "
                        "cached); default with the shipped classifier: its shipped statistics of the built-in "
                        "digits (synth-digits --n-clips 12000 --seed 0)")
    p.add_argument("--select", default="none",
                   help="official (likelihood band of the paper's protocol: needs a manifest), none (default) "
                        "or LOW:HIGH fractions of the likelihood order")
    p.add_argument("--batch-size", type=int, default=256, help="clips read and turned into features at a time (default 256; the classifier runs on 32 at a time)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--report", action="store_true",
                   help="write SAMPLES/index.html with what the classifier hears in each sample and the scores")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sashimi.metrics.classifier import load_classifier
    from sashimi.metrics.score import SHIPPED_CLASSIFIER, classify_set, load_reference, read_sample_set, scores, select

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    sample_set = read_sample_set(args.samples)  # fail on bad input before any heavy work
    index = select(sample_set, args.select)
    classifier_path = args.classifier or SHIPPED_CLASSIFIER
    model = load_classifier(classifier_path)
    classes = model.config.classes
    t0 = time.perf_counter()
    ref = load_reference(model, classifier_path, args.reference, args.batch_size)
    generated = classify_set(model, sample_set, index, args.batch_size)
    seconds = time.perf_counter() - t0
    result = {**scores(generated, ref, classes), "selection": args.select, "n_files": len(sample_set.files),
              "classifier": str(classifier_path), "seconds": seconds,
              "reference": {"root": ref.source, **ref.rows}}
    if args.report:
        _report(args.samples, sample_set, generated, result, classes)
    print(json.dumps(result) if args.json else table(result))
    return 0


def table(result: dict) -> str:
    """The paper's columns, one row per set."""
    head = f"{'':<10}" + "".join(f"{f'{name} ({arrow})':>{max(12, len(name) + 6)}}" for _, name, arrow in COLUMNS) + \
        f"{'n':>8}{'conf.':>8}{'acc.':>8}"
    rows = [("Train", result["reference"]["train"]), ("Test", result["reference"]["test"]), ("Samples", result)]
    lines = [head]
    for label, r in rows:
        acc = f"{r['accuracy']:.4f}" if r.get("accuracy") is not None else "-"
        lines.append(f"{label:<10}" + "".join(f"{r[key]:>{max(12, len(name) + 6)}.4f}" for key, name, _ in COLUMNS)
                     + f"{r['n_samples']:>8}{r['mean_confidence']:>8.3f}{acc:>8}")
    counts = ", ".join(f"{c}: {n}" for c, n in result["class_counts"].items())
    lines.append(f"samples heard as: {counts}")
    lines.append(f"selection: {result['selection']} ({result['n_samples']} of {result['n_files']} files)")
    return "\n".join(lines)


def _report(folder: Path, sample_set, generated, result: dict, classes) -> None:
    import html

    from sashimi.generation.report import write_report
    from sashimi.metrics.score import MANIFEST

    manifest = folder / MANIFEST
    rows = json.loads(manifest.read_text())["samples"] if manifest.is_file() else [{"file": f} for f in sample_set.files]
    predicted = generated.probs.argmax(1)
    heard = {name: (classes[c], float(generated.probs[i, c])) for i, (name, c) in enumerate(zip(generated.names, predicted))}
    histogram = _histogram(folder, result["class_counts"])
    summary = (f"<h2>Scores (evaluation classifier)</h2><pre>{html.escape(table(result))}</pre>"
               f"<img alt='predicted class histogram' src='{histogram}'>")
    # a listening report that is there already (sashimi generate --report) keeps every sample it listed
    shown = None if (folder / "index.html").is_file() else 64
    write_report(folder, rows, f"sashimi score: {folder}", heard=heard, summary=summary, max_items=shown)


def _histogram(folder: Path, counts: dict[str, int]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 2.2), dpi=80)
    ax = fig.subplots()
    ax.bar(list(counts), list(counts.values()))
    ax.set(ylabel="samples", title="what the classifier hears")
    fig.tight_layout()
    fig.savefig(folder / "classes.png")
    return "classes.png"
