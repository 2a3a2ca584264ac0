"""Sample-quality metrics against closed forms, hand computations and plain-loop re-derivations.

Expected values never come from the functions under test called the same way: FID from Gaussians
whose sample covariances are built exactly, the official IS and mIS from loops written out here
with their own RandomState draws, NDB from a z-test written out with math.erfc.
"""
from __future__ import annotations

import importlib.util
import math
import warnings

import numpy as np
import pytest
import torch

from sashimi.errors import ConfigError
from sashimi.metrics import quality
from sashimi.metrics.quality import (
    QualityScores,
    am_score,
    frechet_distance,
    inception_score,
    modified_inception_score,
    ndb,
    probs_from_logits,
    quality_scores,
)

needs_sklearn = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="ndb needs scikit-learn")


def softmax_rows(rs: np.random.RandomState, n: int, c: int, scale: float = 2.0) -> np.ndarray:
    z = rs.randn(n, c) * scale
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def gaussian_with_covariance(rs: np.random.RandomState, n: int, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """n rows whose sample mean is exactly ``mean`` and sample covariance (ddof 1) exactly diag(var)."""
    d = len(mean)
    centred = rs.randn(n, d)
    centred -= centred.mean(axis=0)
    q, _ = np.linalg.qr(centred)  # orthonormal columns, each orthogonal to the all-ones vector
    return mean + math.sqrt(n - 1) * q * np.sqrt(var)


def hand_kl(p, q) -> float:
    """KL(p || q) in nats after normalizing both, 0 log 0 = 0, p > 0 where q = 0 gives inf."""
    sp, sq = sum(p), sum(q)
    total = 0.0
    for a, b in zip(p, q):
        a, b = a / sp, b / sq
        if a > 0:
            total += math.inf if b == 0 else a * math.log(a / b)
    return total


def hand_entropy(p) -> float:
    s = sum(p)
    return -sum(a / s * math.log(a / s) for a in p if a > 0)


# ------------------------------------------------------------------------------------------- FID


def test_fid_diagonal_covariances_closed_form():
    rs = np.random.RandomState(0)
    mu1, mu2 = rs.randn(6), rs.randn(6)
    d1, d2 = rs.uniform(0.2, 3.0, 6), rs.uniform(0.2, 3.0, 6)
    x1 = gaussian_with_covariance(rs, 40, mu1, d1)
    x2 = gaussian_with_covariance(rs, 25, mu2, d2)
    # commuting covariances: tr sqrt(S1 S2) = sum sqrt(d1 d2)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(d1 + d2 - 2 * np.sqrt(d1 * d2))
    assert math.isclose(frechet_distance(x1, x2), expected, rel_tol=1e-9)


def test_fid_identical_sets_is_zero_and_mean_shift_adds_squared_norm():
    rs = np.random.RandomState(1)
    x = rs.randn(50, 8) @ rs.randn(8, 8)
    scale = np.trace(np.cov(x, rowvar=False))
    assert abs(frechet_distance(x, x)) < 1e-8 * scale
    delta = rs.randn(8)
    assert math.isclose(frechet_distance(x, x + delta), float(delta @ delta), rel_tol=1e-6, abs_tol=1e-8 * scale)


def psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_fid_full_covariances_match_symmetric_formula():
    rs = np.random.RandomState(2)
    x1 = rs.randn(80, 5) @ rs.randn(5, 5) + 1.0
    x2 = rs.randn(60, 5) @ rs.randn(5, 5)
    s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
    r1 = psd_sqrt(s1)
    tr_covmean = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)))
    diff = x1.mean(axis=0) - x2.mean(axis=0)
    expected = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
    assert math.isclose(frechet_distance(x1, x2), expected, rel_tol=1e-9)


def test_fid_one_dimensional_features():
    rs = np.random.RandomState(3)
    x1 = gaussian_with_covariance(rs, 30, np.array([0.5]), np.array([4.0]))
    x2 = gaussian_with_covariance(rs, 20, np.array([-1.0]), np.array([1.0]))
    assert math.isclose(frechet_distance(x1, x2), 1.5**2 + (2.0 - 1.0) ** 2, rel_tol=1e-9)


def test_fid_retries_with_jitter_when_sqrtm_is_not_finite(monkeypatch):
    rs = np.random.RandomState(4)
    d1, d2 = rs.uniform(0.5, 2.0, 3), rs.uniform(0.5, 2.0, 3)
    x1 = gaussian_with_covariance(rs, 20, np.zeros(3), d1)
    x2 = gaussian_with_covariance(rs, 20, np.zeros(3), d2)
    real_sqrtm, calls = quality.linalg.sqrtm, []

    def flaky_sqrtm(a):
        calls.append(a.copy())
        return np.full_like(a, np.nan) if len(calls) == 1 else (real_sqrtm(a), 0.0)  # tuple form too

    monkeypatch.setattr(quality.linalg, "sqrtm", flaky_sqrtm)
    got = frechet_distance(x1, x2)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], np.diag((d1 + 1e-4) * (d2 + 1e-4)), atol=1e-12)
    # the jitter enters only the cross term; the traces use the plain covariances
    expected = np.sum(d1 + d2 - 2 * np.sqrt((d1 + 1e-4) * (d2 + 1e-4)))
    assert math.isclose(got, expected, rel_tol=1e-9)


def test_fid_linear_algebra_value_error_gives_inf(monkeypatch):
    def failing_sqrtm(a):
        raise ValueError("array must not contain infs or NaNs")

    monkeypatch.setattr(quality.linalg, "sqrtm", failing_sqrtm)
    assert frechet_distance(np.eye(3), np.eye(3)) == math.inf


def test_fid_singular_product_emits_no_warning_and_returns_float():
    rs = np.random.RandomState(5)
    x1, x2 = rs.randn(4, 12), rs.randn(5, 12)  # N < D: rank-deficient covariances
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = frechet_distance(x1, x2)
    assert type(value) is float and math.isfinite(value)


# ------------------------------------------------------------------------------------ Inception


def official_is_by_loop(probs: np.ndarray) -> float:
    """The official IS written out: seeded shuffle, halves, scipy's axis-0 KL per class column."""
    order = np.random.RandomState(0).permutation(len(probs))
    half = len(probs) // 2
    first = [probs[i] for i in order[:half]]
    second = [probs[i] for i in order[half:]]
    n_classes = probs.shape[1]
    kls = []
    for j in range(n_classes):
        column = [row[j] for row in first]
        mean_j = sum(row[j] for row in second) / len(second)
        constant = [mean_j] * half  # the tiled second-half mean, normalized over the samples
        kls.append(hand_kl(column, constant))
    return math.exp(sum(kls) / n_classes)


@pytest.mark.parametrize("n", [2, 7, 40])
def test_official_is_matches_loop(n):
    probs = softmax_rows(np.random.RandomState(n), n, 10)
    assert math.isclose(inception_score(probs), official_is_by_loop(probs), rel_tol=1e-9)


def test_official_is_ignores_second_half_content():
    rs = np.random.RandomState(6)
    probs = softmax_rows(rs, 31, 10)
    second = np.random.RandomState(0).permutation(31)[31 // 2 :]
    other = probs.copy()
    other[second] = softmax_rows(rs, len(second), 10, scale=5.0)
    assert inception_score(other) == pytest.approx(inception_score(probs), rel=1e-12)
    assert inception_score(other, official=False) != pytest.approx(inception_score(probs, official=False))


def test_official_is_is_not_the_textbook_score():
    """One sample holds most of class 1's mass: the official score exceeds C = 2, the textbook cannot."""
    rs = np.random.RandomState(7)
    eps = rs.uniform(1e-6, 2e-6, 40)
    probs = np.stack([1 - eps, eps], axis=1)
    first = np.random.RandomState(0).permutation(40)[:20]
    probs[first[3]] = [0.01, 0.99]
    assert inception_score(probs, official=False) <= 2.0
    assert inception_score(probs) > 4.0  # about n1 / sqrt(19)


def test_is_identical_rows_is_one():
    probs = np.tile([0.1, 0.2, 0.3, 0.4], (9, 1))
    assert math.isclose(inception_score(probs), 1.0, rel_tol=1e-12)
    assert math.isclose(inception_score(probs, official=False), 1.0, rel_tol=1e-12)


def test_textbook_is_of_balanced_one_hot_classes_is_k():
    k = 5
    probs = np.eye(k)[np.arange(30) % k]
    assert math.isclose(inception_score(probs, official=False), k, rel_tol=1e-12)
    eps = 1e-6
    smoothed = (1 - eps) * probs + eps / k
    assert inception_score(smoothed, official=False) == pytest.approx(k, rel=1e-4)


def test_textbook_is_matches_hand_formula():
    probs = softmax_rows(np.random.RandomState(8), 12, 4)
    marginal = probs.mean(axis=0)
    expected = math.exp(sum(hand_kl(row, marginal) for row in probs) / len(probs))
    assert math.isclose(inception_score(probs, official=False), expected, rel_tol=1e-9)


def test_official_is_zero_class_column_gives_nan():
    probs = softmax_rows(np.random.RandomState(9), 20, 6)
    probs[:, 2] = 0.0  # 0/0 when scipy normalizes the column
    assert math.isnan(inception_score(probs))
    probs = softmax_rows(np.random.RandomState(9), 20, 6)
    second = np.random.RandomState(0).permutation(20)[10:]
    probs[second, 4] = 0.0  # second-half mean of class 4 is 0: its constant column is 0/0
    assert math.isnan(inception_score(probs))


def test_scores_leave_global_numpy_rng_alone():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    probs = softmax_rows(np.random.RandomState(10), 10, 3)
    inception_score(probs)
    modified_inception_score(probs, n_pairs=50)
    assert np.array_equal(np.random.get_state()[1], before)


# ---------------------------------------------------------------------------------------- mIS


def official_mis_by_loop(probs: np.ndarray, n_pairs: int) -> float:
    rs = np.random.RandomState(0)
    kls = []
    for _ in range(n_pairs):
        i, j = rs.choice(np.arange(len(probs)), size=2, replace=True)
        kls.append(hand_kl(probs[i], probs[j]))
    return math.exp(sum(kls) / n_pairs)


@pytest.mark.parametrize("n", [2, 13])
def test_mis_matches_sequential_choice_loop(n):
    probs = softmax_rows(np.random.RandomState(11), n, 10)
    assert math.isclose(modified_inception_score(probs, n_pairs=400), official_mis_by_loop(probs, 400), rel_tol=1e-9)


def test_mis_default_pairs_match_loop():
    probs = softmax_rows(np.random.RandomState(12), 9, 4)
    assert math.isclose(modified_inception_score(probs), official_mis_by_loop(probs, 10000), rel_tol=1e-9)


def test_mis_identical_rows_is_one():
    assert modified_inception_score(np.tile([0.25, 0.75], (5, 1)), n_pairs=100) == 1.0


def test_mis_one_hot_limits():
    k = 4
    probs = np.eye(k)[np.arange(20) % k]
    assert modified_inception_score(probs, n_pairs=100) == math.inf  # some pair has q = 0 where p = 1
    eps = 1e-3
    smoothed = (1 - eps) * probs + eps / k
    a, b = 1 - eps + eps / k, eps / k
    rs = np.random.RandomState(0)
    pairs = [rs.choice(np.arange(20), size=2, replace=True) for _ in range(300)]
    frac_diff = sum((i % k) != (j % k) for i, j in pairs) / 300
    expected = math.exp(frac_diff * (a - b) * math.log(a / b))  # KL of two swapped peaks
    assert math.isclose(modified_inception_score(smoothed, n_pairs=300), expected, rel_tol=1e-9)


# ----------------------------------------------------------------------------------------- AM


def test_am_hand_example():
    ref = np.array([[0.5, 0.5], [0.5, 0.5]])
    gen = np.array([[1.0, 0.0], [0.5, 0.5]])
    # KL((.5,.5) || (.75,.25)) = .5 ln(4/3); row entropies 0 and ln 2
    assert math.isclose(am_score(ref, gen), 0.5 * math.log(4 / 3) + 0.5 * math.log(2), rel_tol=1e-12)


def test_am_equal_means_is_mean_gen_entropy():
    gen = softmax_rows(np.random.RandomState(13), 8, 5)
    ref = np.tile(gen.mean(axis=0), (3, 1))
    expected = sum(hand_entropy(row) for row in gen) / len(gen)
    assert math.isclose(am_score(ref, gen), expected, rel_tol=1e-9)


def test_am_unnormalized_rows_are_renormalized():
    ref = np.array([[1.0, 3.0], [2.0, 2.0]])
    gen = np.array([[3.0, 1.0], [1.0, 1.0]])
    expected = hand_kl([1.5, 2.5], [2.0, 1.0]) + (hand_entropy([3, 1]) + hand_entropy([1, 1])) / 2
    assert math.isclose(am_score(ref, gen), expected, rel_tol=1e-12)


# ---------------------------------------------------------------------------------------- NDB


def blobs(rs: np.random.RandomState, n: int) -> np.ndarray:
    centres = np.array([[0, 0, 0], [4, 0, 0], [0, 4, 0], [0, 0, 4], [4, 4, 4]], dtype=float)
    return centres[rs.randint(0, len(centres), n)] + rs.randn(n, 3)


@needs_sklearn
def test_ndb_matches_explicit_z_test():
    from sklearn.cluster import KMeans

    rs = np.random.RandomState(14)
    ref, gen = blobs(rs, 300), blobs(rs, 200) * 1.3 + 0.5
    k = 8
    model = KMeans(n_clusters=k, random_state=0, n_init=10).fit(ref)
    lr, lg = model.predict(ref), model.predict(gen)
    different = 0
    for b in range(k):
        p1, p2 = np.mean(lr == b), np.mean(lg == b)
        pooled = (p1 * 300 + p2 * 200) / 500
        z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / 300 + 1 / 200))
        different += math.erfc(abs(z) / math.sqrt(2)) < 0.05  # two-sided p-value
    got = ndb(ref, gen, k=k)
    assert type(got) is float and got == different / k
    assert 0 < got < 1


@needs_sklearn
def test_ndb_same_distribution_small_and_self_zero():
    rs = np.random.RandomState(15)
    ref, gen = blobs(rs, 400), blobs(rs, 400)
    assert ndb(ref, gen, k=10) <= 0.2
    assert ndb(ref, ref, k=10) == 0.0


@needs_sklearn
def test_ndb_collapsed_generator_is_large_and_multiple_of_one_over_k():
    rs = np.random.RandomState(16)
    ref = blobs(rs, 400)
    gen = np.tile(ref[0], (100, 1)) + 1e-3 * rs.randn(100, 3)  # all in one cell
    k = 10
    value = ndb(ref, gen, k=k)
    assert value >= 0.9
    assert math.isclose(value * k, round(value * k))


@needs_sklearn
def test_ndb_rejects_too_few_distinct_reference_rows():
    ref = np.repeat(np.eye(3), 4, axis=0)  # 12 rows, 3 distinct
    with pytest.raises(ConfigError, match="feats_ref"):
        ndb(ref, ref, k=4)
    with pytest.raises(ConfigError, match="alpha"):
        ndb(ref, ref, k=3, alpha=1.5)


# ---------------------------------------------------------------------------- inputs and helpers


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: frechet_distance(np.zeros(5), np.zeros((5, 2))), "feats_ref"),
        (lambda: frechet_distance(np.zeros((5, 2)), np.zeros((5, 3))), "feats_gen"),
        (lambda: frechet_distance(np.zeros((1, 2)), np.zeros((5, 2))), "feats_ref"),
        (lambda: frechet_distance(np.zeros((5, 2)), np.full((5, 2), np.nan)), "feats_gen"),
        (lambda: inception_score(np.array([[0.5, 0.5], [1.5, -0.5]])), "probs_gen"),
        (lambda: inception_score("not numbers"), "probs_gen"),
        (lambda: modified_inception_score(np.full((3, 2), 0.5), n_pairs=0), "n_pairs"),
        (lambda: am_score(np.full((3, 2), 0.5), np.full((3, 3), 1 / 3)), "probs_gen"),
        (lambda: am_score(np.full((3, 2), np.inf), np.full((3, 2), 0.5)), "probs_ref"),
        (lambda: ndb(np.zeros((5, 2)), np.zeros((5, 2)), k=6), "k"),
        (lambda: ndb(np.zeros((5, 2)), np.zeros((5, 2)), k=2, n_init=0), "n_init"),
    ],
)
def test_invalid_inputs_raise_config_error_naming_the_argument(call, name):
    with pytest.raises(ConfigError, match=name):
        call()


@needs_sklearn
def test_torch_tensors_and_numpy_arrays_give_the_same_numbers():
    rs = np.random.RandomState(17)
    probs_ref, probs_gen = softmax_rows(rs, 30, 5), softmax_rows(rs, 20, 5)
    feats_ref, feats_gen = blobs(rs, 60), blobs(rs, 40)
    as_torch = lambda a: torch.from_numpy(a).float().requires_grad_()  # noqa: E731
    f32 = lambda a: a.astype(np.float32).astype(np.float64)  # noqa: E731
    fid_torch = frechet_distance(as_torch(feats_ref), as_torch(feats_gen))
    assert fid_torch == frechet_distance(f32(feats_ref), f32(feats_gen))
    assert inception_score(as_torch(probs_gen)) == inception_score(f32(probs_gen))
    assert modified_inception_score(as_torch(probs_gen), 50) == modified_inception_score(f32(probs_gen), 50)
    assert am_score(as_torch(probs_ref), as_torch(probs_gen)) == am_score(f32(probs_ref), f32(probs_gen))
    assert ndb(as_torch(feats_ref), as_torch(feats_gen), k=4) == ndb(f32(feats_ref), f32(feats_gen), k=4)


@needs_sklearn
def test_probs_from_logits_and_bundle():
    logits = torch.randn(40, 5, dtype=torch.float64) * 3
    probs = probs_from_logits(logits)
    np.testing.assert_allclose(probs, torch.softmax(logits, dim=1).numpy(), rtol=1e-12)
    assert probs.dtype == np.float64
    feats = blobs(np.random.RandomState(18), 40)
    scores = quality_scores(feats, feats, probs, probs, k=4)
    assert isinstance(scores, QualityScores)
    assert scores.ndb == 0.0 and abs(scores.fid) < 1e-8
    assert scores.inception == inception_score(probs)
    assert scores.modified_inception == modified_inception_score(probs)
    assert math.isclose(scores.am, sum(hand_entropy(r) for r in probs) / 40, rel_tol=1e-9)
