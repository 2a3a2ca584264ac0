"""`sashimi data prepare|synth-digits|info`: a thin layer over `sashimi.data`."""
from __future__ import annotations

import argparse

from sashimi.data.config import DATASET_NAMES


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="prepare, synthesize and inspect datasets")
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    prep = sub.add_parser("prepare", help="install sc09 / youtubemix / beethoven from a local source or download")
    prep.add_argument("name", choices=("sc09", "youtubemix", "beethoven"))
    prep.add_argument("--root", required=True, help="folder the dataset goes to")
    prep.add_argument("--source", help="local archive (.tar.gz/.tgz/.tar/.zip) or folder")
    prep.add_argument("--download", action="store_true", help="fetch the official public source (needs internet)")
    prep.add_argument("--release", choices=("v0.02", "v0.01"), default="v0.02",
                      help="sc09 --download: the Speech Commands release (v0.01 trained the official SC09 "
                           "evaluation classifier; default v0.02)")
    _add_index_options(prep)
    prep.set_defaults(handler=_prepare)

    synth = sub.add_parser("synth-digits", help="synthesize the built-in offline spoken-digits set (eSpeak NG)")
    synth.add_argument("--root", required=True, help="output folder (new, empty, or an earlier digits set)")
    synth.add_argument("--n-clips", type=int, default=10000, help="number of 1-second clips (default 10000)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all CPU cores)")
    synth.add_argument("--backend", choices=("auto", "lib", "command"), default="auto",
                       help="lib: espeakng-loader wheel; command: espeak-ng program; auto: the first available")
    synth.add_argument("--no-noise", action="store_true",
                       help="leave out the background noise (the same clips otherwise)")
    synth.add_argument("--voices", type=_names, default=None, metavar="V1,V2,...",
                       help="only these eSpeak voice variants (e.g. m1,m2,f1; default: all installed), "
                            "split between train/valid/test like the full set")
    synth.add_argument("--accents", type=_names, default=None, metavar="A1,A2,...",
                       help="only these English accents (e.g. en-us,en; default: all installed)")
    synth.add_argument("--rate", type=_span, default=None, metavar="WPM|LOW-HIGH",
                       help="speaking rate in words per minute, one value or a range (default 120-240)")
    synth.add_argument("--pitch", type=_span, default=None, metavar="P|LOW-HIGH",
                       help="eSpeak base pitch 0-99, one value or a range (default 20-80)")
    synth.add_argument("--word-start", type=_span, default=None, metavar="MS|LOW-HIGH",
                       help="when each word begins, in ms from the clip's start (0-900), one value or a range "
                            "(default: anywhere the word fits; a word that would not fit begins earlier)")
    synth.add_argument("--peak", type=_span, default=None, metavar="PCT|LOW-HIGH",
                       help="each word's peak level in %% of full scale (1-99), one value or a range (default 25-85)")
    synth.set_defaults(handler=_synth_digits)

    info = sub.add_parser("info", help="summarize a prepared dataset")
    info.add_argument("root")
    info.add_argument("--name", choices=DATASET_NAMES, help="dataset kind (default: detected from the layout)")
    _add_index_options(info)
    info.set_defaults(handler=_info)


def _add_index_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sample-rate", type=int, default=16000, help="target sample rate (default 16000)")
    parser.add_argument("--sample-len", type=int, default=None,
                        help="samples per training example (default: 16000 for clips, 131072 for long files)")
    parser.add_argument("--strict", action="store_true", help="a bad audio file is an error instead of skipped")


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _span(text: str) -> tuple[int, int]:
    """"160" -> (160, 160); "150-190" -> (150, 190); the range itself is checked by synth_digits."""
    parts = text.split("-")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or LOW-HIGH, got {text!r}") from None
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected an integer or LOW-HIGH, got {text!r}")
    return values[0], values[-1]


def _cfg_fields(args, name: str) -> dict:
    sample_len = args.sample_len or (16000 if name in ("sc09", "digits") else 131072)
    return {"sample_rate": args.sample_rate, "sample_len": sample_len, "strict": args.strict}


def _print_summary(summary) -> None:
    print("\n".join(summary.lines()))


def _prepare(args) -> int:
    from sashimi.data.prepare import prepare_dataset

    _print_summary(prepare_dataset(args.name, args.root, source=args.source, download=args.download,
                                   release=args.release, **_cfg_fields(args, args.name)))
    return 0


def _info(args) -> int:
    from sashimi.data.prepare import dataset_info, detect_name

    name = args.name or detect_name(args.root)
    _print_summary(dataset_info(args.root, name, **_cfg_fields(args, name)))
    return 0


def _synth_digits(args) -> int:
    from sashimi.data.digits import synth_digits

    s = synth_digits(args.root, args.n_clips, args.seed, workers=args.workers, backend=args.backend,
                     noise=not args.no_noise, voices=args.voices, accents=args.accents,
                     rates=args.rate, pitches=args.pitch, starts=args.word_start, peaks=args.peak)
    print(f"wrote {s.n_clips} clips to {s.root} in {s.seconds:.1f} s ({s.bytes_on_disk / 1e6:.1f} MB) with {s.backend}")
    for split, n in s.clips_per_split.items():
        print(f"  {split}: {n} clips, {len(s.voices_per_split[split])} voices")
    print(f"  accents: {', '.join(s.accents)}")
    return 0
