"""Sample-quality metrics of generated audio, computed from a classifier's features and class probabilities.

All five metrics reproduce the numbers of the SaShiMi paper's evaluation script (state-spaces/s4,
``models/sashimi/metrics.py``), which is what published SC09 tables were computed with. They take
plain arrays: ``feats_*`` are (N, D) penultimate-layer features, ``probs_*`` are (N, C) class
probabilities (softmax outputs) of a pretrained classifier; numpy arrays and torch tensors are both
accepted and everything is computed in float64.

* **FID** (Frechet distance between Gaussians fitted to the reference and generated features). Lower
  is better; 0 for identical statistics.
* **IS** (Inception Score). Higher is better. The textbook score is exp(E_x KL(p(y|x) || p(y))),
  bounded by the number of classes C. The *official* computation (the default here) is a different
  quantity, see :func:`inception_score`: it is bounded by half the number of samples and measures
  how concentrated each class's probability mass is across samples.
* **mIS** (modified Inception Score, exp of the mean KL between the class distributions of random
  pairs of generated samples). Higher is better.
* **AM** score (KL between the reference and generated marginal class distributions plus the mean
  entropy of the generated class distributions). Lower is better.
* **NDB/k** (number of statistically different bins: k-means cells of the reference features whose
  share of generated samples differs significantly from the reference share, divided by k). Lower is
  better.

Entropies and KL divergences are in nats and follow ``scipy.stats.entropy``: every distribution is
renormalized to sum to 1 first, terms with p = 0 contribute 0, q = 0 where p > 0 gives inf, and an
all-zero distribution gives nan (0/0).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg, special
from scipy.stats import norm

from sashimi.errors import ConfigError

__all__ = [
    "QualityScores",
    "NDBBins",
    "am_score",
    "frechet_distance",
    "frechet_distance_stats",
    "gaussian_stats",
    "inception_score",
    "modified_inception_score",
    "ndb",
    "ndb_against",
    "ndb_bins",
    "probs_from_logits",
    "quality_scores",
]

# Diagonal jitter the official FID adds to both covariances when sqrtm of their product is not finite.
_FID_JITTER = 1e-4


# ----------------------------------------------------------------------------------------- inputs


def _matrix(x, name: str, *, min_rows: int = 2) -> np.ndarray:
    """``x`` as a finite float64 (N, D) array with N >= min_rows, or a ConfigError naming ``name``."""
    try:
        if isinstance(x, torch.Tensor):
            arr = x.detach().cpu().double().numpy()
        else:
            arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        kind = type(x).__name__
        raise ConfigError(f"{name}: expected a numeric (N, D) array or tensor, got {kind} ({exc})") from None
    if arr.ndim != 2:
        raise ConfigError(f"{name}: expected a 2-D (N, D) array, got shape {tuple(arr.shape)}")
    if arr.shape[0] < min_rows or arr.shape[1] < 1:
        raise ConfigError(f"{name}: expected at least {min_rows} rows and 1 column, got shape {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ConfigError(f"{name}: contains NaN or infinite values")
    return arr


def _probs(x, name: str) -> np.ndarray:
    """``x`` as an (N, C) array of non-negative (possibly unnormalized) class probabilities."""
    arr = _matrix(x, name)
    if (arr < 0).any():
        raise ConfigError(f"{name}: class probabilities must be non-negative, found min {arr.min():.3g}")
    return arr


def _same_width(ref: np.ndarray, gen: np.ndarray, names: tuple[str, str]) -> None:
    if ref.shape[1] != gen.shape[1]:
        raise ConfigError(
            f"{names[1]}: expected {ref.shape[1]} columns like {names[0]}, got {gen.shape[1]} "
            f"(shapes {tuple(ref.shape)} and {tuple(gen.shape)})"
        )


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def _normalize(p: np.ndarray, axis: int) -> np.ndarray:
    """Divide by the sum along ``axis`` like scipy.stats.entropy does (an all-zero slice becomes nan)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return p / p.sum(axis=axis, keepdims=True)


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) in nats along the last axis, with scipy.stats.entropy's renormalization and 0/inf rules."""
    return special.rel_entr(_normalize(p, -1), _normalize(q, -1)).sum(axis=-1)


def _entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats along the last axis, after renormalizing."""
    return special.entr(_normalize(p, -1)).sum(axis=-1)


def probs_from_logits(logits) -> np.ndarray:
    """Softmax over the last axis of (N, C) classifier logits, in float64: the ``probs_*`` inputs below."""
    z = _matrix(logits, "logits", min_rows=1)  # (N, C)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# -------------------------------------------------------------------------------------------- FID


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """Principal square root of a (D, D) matrix; copes with scipy returning an array or (array, err)."""
    with warnings.catch_warnings():
        # A singular product is expected when N <= D; finiteness is checked by the caller instead.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        out = linalg.sqrtm(a)
    if isinstance(out, tuple):  # older scipy with disp=False, kept for safety
        out = out[0]
    return np.asarray(out)


def frechet_distance(feats_ref, feats_gen) -> float:
    """Frechet (Inception) Distance between Gaussians fitted to two feature sets. Lower is better.

    FID = ||mu_gen - mu_ref||^2 + tr(S_gen + S_ref - 2 (S_ref S_gen)^(1/2)), with unbiased (ddof 1)
    covariances. As in the official code, when the matrix square root is not finite it is retried
    with 1e-4 * I added to both covariances, and a ValueError from the linear algebra (e.g. an
    overflowed covariance) yields inf. The square root may come back complex from round-off; the
    official returned that complex value, here the real part is returned as a Python float.

    Departures from the official script, all in cases it did not handle: it unpacks the retry's
    ``sqrtm`` result as a tuple, which raises (and so returns inf) for D != 2, whereas the retry
    really happens here; and it squeezes the covariance of D = 1 features to a scalar, whereas
    D = 1 works here.
    """
    ref = _matrix(feats_ref, "feats_ref")  # (N_ref, D)
    gen = _matrix(feats_gen, "feats_gen")  # (N_gen, D)
    _same_width(ref, gen, ("feats_ref", "feats_gen"))
    return frechet_distance_stats(*gaussian_stats(ref), *gaussian_stats(gen))


def gaussian_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> their mean (D,) and unbiased (ddof 1) covariance (D, D): what FID compares."""
    x = _matrix(feats, "feats")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_distance_stats(mu_ref, sigma_ref, mu_gen, sigma_gen) -> float:
    """FID from precomputed statistics (``gaussian_stats``); ``frechet_distance`` is this on raw features."""
    mean_diff = np.asarray(mu_gen, dtype=np.float64) - np.asarray(mu_ref, dtype=np.float64)  # (D,)
    sigma_ref, sigma_gen = np.asarray(sigma_ref, dtype=np.float64), np.asarray(sigma_gen, dtype=np.float64)
    if sigma_ref.shape != sigma_gen.shape or sigma_ref.shape != (len(mean_diff), len(mean_diff)):
        raise ConfigError(f"sigma_gen: expected shape {sigma_ref.shape} like sigma_ref, got {sigma_gen.shape}")
    try:
        covmean = _sqrtm(sigma_ref @ sigma_gen)  # (D, D), possibly complex
        if not np.isfinite(covmean).all():
            jitter = _FID_JITTER * np.eye(len(mean_diff))
            covmean = _sqrtm((sigma_ref + jitter) @ (sigma_gen + jitter))
    except ValueError:
        return float("inf")
    trace = np.trace(sigma_ref) + np.trace(sigma_gen) - 2.0 * np.trace(covmean).real
    return float(mean_diff @ mean_diff + trace)


# --------------------------------------------------------------------------------- Inception scores


def _official_is(probs: np.ndarray) -> float:
    """The official IS: per-class concentration of the first half of a seeded shuffle (see docstring)."""
    order = np.random.RandomState(0).permutation(len(probs))  # same stream as np.random.seed(0)
    half = len(probs) // 2
    first, second = probs[order[:half]], probs[order[half:]]  # (n1, C), (n - n1, C)
    columns = _normalize(first, axis=0)  # (n1, C): each class's mass spread over the n1 samples
    # KL(column || uniform over the n1 samples) = log n1 - H(column)
    kl = np.log(half) - special.entr(columns).sum(axis=0)  # (C,)
    # The official compares against a column of copies of the second half's class mean, normalized
    # to 1/n1 each; a class mean of exactly 0 normalizes to 0/0 = nan, and so does the score.
    kl[second.mean(axis=0) == 0] = np.nan
    return float(np.exp(kl.mean()))


def _textbook_is(probs: np.ndarray) -> float:
    """exp(mean_x KL(p(y|x) || p(y))) over all rows, with p(y) the mean of the (renormalized) rows."""
    rows = _normalize(probs, axis=1)  # (N, C)
    marginal = rows.mean(axis=0, keepdims=True)  # (1, C)
    return float(np.exp(_kl(rows, marginal).mean()))


def inception_score(probs_gen, *, official: bool = True) -> float:
    """Inception Score of generated samples from their (N, C) class probabilities. Higher is better.

    ``official=False`` gives the textbook score exp(E_x KL(p(y|x) || p(y))) over all N rows, with
    p(y) the mean row; it ranges from 1 (all rows equal) to C (confident, balanced classes).

    ``official=True`` (default) reproduces the SaShiMi evaluation code, which published SC09 tables
    used, and which computes something else. It shuffles the rows with a legacy RandomState(0)
    permutation (the global NumPy RNG is left untouched), splits them into a first half of n1 = N // 2
    rows and a second half, and passes the first half and n1 stacked copies of the second half's
    mean row to ``scipy.stats.entropy``, which reduces over axis 0 -- the samples, not the classes.
    So for each class j it takes the column j of the first half normalized over the samples, c_j,
    and its KL divergence from a constant column (1/n1 each), i.e. log n1 - H(c_j); the score is
    exp of the mean over the C classes:

        IS_official = n1 * exp(-mean_j H(c_j)).

    It lies between 1 (every class's mass evenly spread over the samples, e.g. identical rows) and n1
    (each class's mass on a single sample), does not depend on the number of classes, and uses the
    second half only through which class means are exactly 0 (those give nan). A class column of
    zeros in the first half also gives nan, as scipy's 0/0 normalization does.
    """
    probs = _probs(probs_gen, "probs_gen")  # (N, C)
    return _official_is(probs) if official else _textbook_is(probs)


def modified_inception_score(probs_gen, n_pairs: int = 10000) -> float:
    """Modified Inception Score: exp of the mean KL(p_i || p_j) over random pairs of rows. Higher is better.

    Pairs (i, j) are drawn with replacement (i == j allowed) from a legacy RandomState(0), exactly
    the stream of the official code's ``n_pairs`` successive ``choice(arange(N), size=2)`` calls
    (each such call is ``randint(0, N, size=2)``, and the bounded-integer draws carry no state
    between calls, so one ``randint(0, N, size=(n_pairs, 2))`` gives the same indices).
    """
    probs = _probs(probs_gen, "probs_gen")  # (N, C)
    n_pairs = _positive_int(n_pairs, "n_pairs")
    pairs = np.random.RandomState(0).randint(0, len(probs), size=(n_pairs, 2))  # (P, 2)
    kl = _kl(probs[pairs[:, 0]], probs[pairs[:, 1]])  # (P,)
    return float(np.exp(kl.mean()))


def am_score(probs_ref, probs_gen) -> float:
    """AM score: KL(mean_ref || mean_gen) + mean entropy of the generated rows (nats). Lower is better.

    mean_ref and mean_gen are the mean (N, C) rows of the reference and generated class
    probabilities; the first term penalizes a class balance unlike the reference's, the second
    unconfident (ambiguous) samples.
    """
    ref = _probs(probs_ref, "probs_ref")  # (N_ref, C)
    gen = _probs(probs_gen, "probs_gen")  # (N_gen, C)
    _same_width(ref, gen, ("probs_ref", "probs_gen"))
    return float(_kl(ref.mean(axis=0), gen.mean(axis=0)) + _entropy(gen).mean())


# -------------------------------------------------------------------------------------------- NDB


def _different_bins(prop_ref: np.ndarray, n_ref: int, prop_gen: np.ndarray, n_gen: int, alpha: float) -> np.ndarray:
    """Pooled two-proportion z-test per bin, two-sided: True where the p-value is below ``alpha``."""
    pooled = (prop_ref * n_ref + prop_gen * n_gen) / (n_ref + n_gen)  # (k,)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (prop_ref - prop_gen) / np.sqrt(pooled * (1 - pooled) * (1 / n_ref + 1 / n_gen))
    p_value = 2.0 * norm.cdf(-np.abs(z))  # nan (a bin holding 0% or 100% of both) is never "different"
    return p_value < alpha


def ndb(feats_ref, feats_gen, k: int = 50, *, alpha: float = 0.05, n_init: int = 10, seed: int = 0) -> float:
    """Number of statistically different bins divided by k (NDB/k), in [0, 1]. Lower is better.

    k-means with k clusters (``sklearn.cluster.KMeans(random_state=seed)``) is fitted on the
    reference features; both sets are assigned to the clusters, and a bin counts as different when a
    pooled two-proportion z-test of its reference and generated shares gives a two-sided p-value
    below ``alpha``. The official code relied on the scikit-learn default of its time, n_init=10
    restarts; scikit-learn 1.4 changed that default to 'auto' (a single run for k-means++), which
    gives other clusters, so ``n_init`` is passed explicitly.

    Every reference cluster is populated (the model was fitted on those points), so per-cluster
    counts are well defined; the reference must therefore have at least k distinct rows. Requires
    scikit-learn.
    """
    ref = _matrix(feats_ref, "feats_ref")  # (N_ref, D)
    gen = _matrix(feats_gen, "feats_gen")  # (N_gen, D)
    _same_width(ref, gen, ("feats_ref", "feats_gen"))
    if not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"alpha: expected a significance level in (0, 1), got {alpha!r}")
    return ndb_against(ndb_bins(ref, k, n_init=n_init, seed=seed), gen, alpha=alpha)


@dataclass(frozen=True)
class NDBBins:
    """The k-means cells of a reference set: centres (k, D) and how many reference rows each holds (k,)."""

    centres: np.ndarray
    counts: np.ndarray


def ndb_bins(feats_ref, k: int = 50, *, n_init: int = 10, seed: int = 0) -> NDBBins:
    """Fit the NDB cells on the reference features (see ``ndb``); reusable for many generated sets."""
    ref = _matrix(feats_ref, "feats_ref")  # (N_ref, D)
    k, n_init = _positive_int(k, "k"), _positive_int(n_init, "n_init")
    distinct = len(np.unique(ref, axis=0))
    if distinct < k:
        raise ConfigError(f"k: expected at most the {distinct} distinct rows of feats_ref, got k={k}")
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        raise ImportError("ndb needs scikit-learn: pip install scikit-learn") from None

    kmeans = KMeans(n_clusters=k, random_state=seed, n_init=n_init).fit(ref)
    return NDBBins(kmeans.cluster_centers_.astype(np.float64), np.bincount(kmeans.predict(ref), minlength=k))


def _nearest(centres: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(k, D), (N, D) -> (N,) index of the nearest centre (Euclidean), as KMeans.predict assigns."""
    d2 = (x**2).sum(1)[:, None] - 2 * x @ centres.T + (centres**2).sum(1)[None, :]  # (N, k)
    return d2.argmin(axis=1)


def ndb_against(bins: NDBBins, feats_gen, *, alpha: float = 0.05) -> float:
    """NDB/k of generated features against fitted reference cells."""
    gen = _matrix(feats_gen, "feats_gen")  # (N_gen, D)
    k, n_ref = len(bins.centres), int(bins.counts.sum())
    if gen.shape[1] != bins.centres.shape[1]:
        raise ConfigError(f"feats_gen: expected {bins.centres.shape[1]} columns like the reference, got {gen.shape[1]}")
    counts_gen = np.bincount(_nearest(bins.centres, gen), minlength=k)  # (k,)
    different = _different_bins(bins.counts / n_ref, n_ref, counts_gen / len(gen), len(gen), float(alpha))
    return int(np.count_nonzero(different)) / k


# ------------------------------------------------------------------------------------------- bundle


@dataclass(frozen=True)
class QualityScores:
    """The five sample-quality metrics of one generated set (arrows: which direction is better)."""

    fid: float  # down
    inception: float  # up (official computation)
    modified_inception: float  # up
    am: float  # down
    ndb: float  # down (NDB/k)


def quality_scores(feats_ref, feats_gen, probs_ref, probs_gen, *, k: int = 50) -> QualityScores:
    """All five metrics with the official settings: features for FID and NDB, probabilities for the rest."""
    return QualityScores(
        fid=frechet_distance(feats_ref, feats_gen),
        inception=inception_score(probs_gen),
        modified_inception=modified_inception_score(probs_gen),
        am=am_score(probs_ref, probs_gen),
        ndb=ndb(feats_ref, feats_gen, k),
    )
