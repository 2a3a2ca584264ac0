"""How much of a sample set's FID is the mix of words it says, and how much is how it says them.

FID compares the classifier features of a sample set with the train split's. A conditional model asked for every
digit in turn can still be heard saying some digits more often than others (two words of a pair confused one way),
and an unbalanced mix moves the feature mean and covariance away from the balanced train split by itself. This
splits the figure (each row against the same train statistics; the features are the shipped classifier's):

  * the sample set as it is (what `sashimi score` reports);
  * real test clips drawn in the sample set's heard-class proportions, as many as it has: the FID that the mix
    alone costs a perfect model (mean of --draws draws; a balanced draw of the same size beside it);
  * the sample set cut to a balanced subset (the rarest heard class's count of each class, without replacement),
    and a balanced draw of test clips of that size beside it, since FID grows as the set shrinks.

    python benchmarks/fid_parts.py SAMPLES [SAMPLES ...] --reference DATA_ROOT [--draws 5] [--seed 0]
"""
from __future__ import annotations

import argparse

import numpy as np

from sashimi.errors import ConfigError
from sashimi.metrics.classifier import load_classifier
from sashimi.metrics.quality import frechet_distance_stats, gaussian_stats
from sashimi.metrics.score import SHIPPED_CLASSIFIER, classify_set, classify_split, load_reference, read_sample_set


def per_class_draw(pool_labels: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices into a labelled pool: counts[k] of class k each, without replacement. (K,) -> (sum counts,)"""
    picks = []
    for k, n in enumerate(counts):
        members = np.flatnonzero(pool_labels == k)
        if n > len(members):
            raise ConfigError(f"class {k}: {n} clips asked of a pool of {len(members)}")
        picks.append(rng.choice(members, int(n), replace=False))
    return np.concatenate(picks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("samples", nargs="+", help="folders written by sashimi generate")
    ap.add_argument("--reference", required=True, help="the dataset root (digits or sc09) with train/test splits")
    ap.add_argument("--draws", type=int, default=5, help="draws of test clips averaged per row (default 5)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sample_sets = [read_sample_set(folder) for folder in args.samples]  # a bad folder fails before any work
    model = load_classifier(SHIPPED_CLASSIFIER)
    ref = load_reference(model, SHIPPED_CLASSIFIER, args.reference)
    test = classify_split(model, args.reference, "test")
    k = len(model.config.classes)

    def fid(features: np.ndarray) -> float:
        return frechet_distance_stats(ref.mean, ref.cov, *gaussian_stats(features))

    def test_fid(counts: np.ndarray, rng: np.random.Generator) -> float:
        return float(np.mean([fid(test.features[per_class_draw(test.labels, counts, rng)]) for _ in range(args.draws)]))

    print("| samples | n | FID | test clips, its mix | test clips, balanced, same n | balanced subset (n) "
          "| test clips, balanced, that n | heard counts |")
    print("|---|---|---|---|---|---|---|---|")
    for folder, sample_set in zip(args.samples, sample_sets):
        rng = np.random.default_rng(args.seed)
        gen = classify_set(model, sample_set)
        heard = gen.probs.argmax(1)
        counts = np.bincount(heard, minlength=k)
        n = len(gen)
        balanced = np.full(k, n // k) + (np.arange(k) < n % k)
        m = int(counts.min())
        subset_fid = "-" if m < 2 else f"{fid(gen.features[per_class_draw(heard, np.full(k, m), rng)]):.2f} ({m * k})"
        small = "-" if m < 2 else f"{test_fid(np.full(k, m), rng):.2f}"
        print(f"| {folder} | {n} | {fid(gen.features):.2f} | {test_fid(counts, rng):.2f} | "
              f"{test_fid(balanced, rng):.2f} | {subset_fid} | {small} | {' '.join(map(str, counts))} |")


if __name__ == "__main__":
    try:
        main()
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
