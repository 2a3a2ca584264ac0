"""Data pipeline throughput: loader examples/s for 1 s clips and 131,072-sample windows, and synth-digits cost.

    python benchmarks/data.py            # loaders + a 1,000-clip digits set
    python benchmarks/data.py --full     # also the default 10,000-clip digits set

All data is synthetic and written to a temporary folder. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from torch.utils.data import DataLoader

from sashimi.data import DataConfig, ResumableSampler, build_dataset, load_index
from sashimi.data.digits import synth_digits
from sashimi.data.synthetic import make_long_recordings, make_speech_commands_tree


def loader_rate(cfg: DataConfig, batch_size: int, workers: int, max_items: int) -> tuple[float, int]:
    """Examples/s over one shuffled pass (at most max_items examples), and the item count."""
    ds = build_dataset(cfg, "train")
    n = min(len(ds), max_items)
    sampler = ResumableSampler(len(ds), seed=0)
    loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        persistent_workers=False)
    start, seen = time.perf_counter(), 0
    for batch in loader:
        seen += len(batch)
        if seen >= n:
            break
    return seen / (time.perf_counter() - start), seen


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def folder_size(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*.wav"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also synthesize the default 10,000-clip digits set")
    parser.add_argument("--speakers", type=int, default=300, help="sc09-like: clips per digit word")
    parser.add_argument("--long-files", type=int, default=24, help="long-file set: number of 60 s files")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sc = tmp / "sc"
        make_speech_commands_tree(sc, speakers=[f"s{i:05d}" for i in range(args.speakers)], extra_words=())
        cfg = DataConfig(name="sc09", root=str(sc))
        index, t_index = timed(lambda: load_index(cfg))
        rows.append(("sc09-like: index build (first time)", f"{len(index.files)} clips", f"{t_index:.2f} s"))
        for workers in (0, 2):
            rate, n = loader_rate(cfg, batch_size=32, workers=workers, max_items=4000)
            rows.append((f"sc09-like 1 s clips, batch 32, {workers} workers", f"{n} examples", f"{rate:,.0f} ex/s"))

        long = tmp / "long"
        make_long_recordings(long, [60 * 16000] * args.long_files, subtype="PCM_16")
        cfg = DataConfig(name="youtubemix", root=str(long), sample_len=131072)
        index, t_index = timed(lambda: load_index(cfg))
        rows.append(("long files: index build (first time)", f"{len(index.files)} x 60 s", f"{t_index:.2f} s"))
        for workers in (0, 2):
            rate, n = loader_rate(cfg, batch_size=4, workers=workers, max_items=400)
            rows.append((f"131,072-sample windows, batch 4, {workers} workers", f"{n} examples",
                         f"{rate:,.0f} ex/s ({rate * 131072 / 1e6:.1f} M samples/s)"))

        for n_clips in (1000, 10000) if args.full else (1000,):
            summary = synth_digits(tmp / f"digits{n_clips}", n_clips=n_clips, seed=0, progress=False)
            rows.append((f"synth-digits --n-clips {n_clips} (2 processes)", f"{summary.n_clips} clips",
                         f"{summary.seconds:.1f} s, {folder_size(Path(summary.root)) / 1e6:.1f} MB of WAV"))

    print("| measurement | size | result |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
