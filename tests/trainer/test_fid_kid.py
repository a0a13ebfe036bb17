"""FID and KID maths against independent computations on features the tests control."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.evaluation.fid_kid import (
    fid_from_features,
    frechet_distance,
    gaussian_fit,
    kernel_inception_distance,
    mmd2_unbiased,
)


def _fid_by_eigh(a: np.ndarray, b: np.ndarray) -> float:
    """FID without scipy.linalg.sqrtm: Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2), a symmetric PSD
    matrix whose square root comes from its eigenvalues."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def _kernel(x: np.ndarray, y: np.ndarray) -> float:
    return (float(np.dot(x, y)) / len(x) + 1.0) ** 3


def _mmd2_loops(x: np.ndarray, y: np.ndarray) -> float:
    """Binkowski et al.'s unbiased MMD^2, term by term."""
    m = len(x)
    xx = sum(_kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(_kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(_kernel(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_gaussian_fit_is_mean_and_unbiased_covariance():
    x = np.random.default_rng(0).normal(size=(50, 3))
    mu, sigma = gaussian_fit(x)
    centred = x - x.mean(0)
    np.testing.assert_allclose(mu, x.sum(0) / 50)
    np.testing.assert_allclose(sigma, centred.T @ centred / 49)


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(1).normal(size=(200, 16))
    assert abs(fid_from_features(x, x)) < 1e-8


def test_fid_of_shifted_set_is_the_squared_shift():
    x = np.random.default_rng(2).normal(size=(300, 8)) @ np.random.default_rng(3).normal(size=(8, 8))
    shift = np.linspace(-1.0, 2.0, 8)
    assert fid_from_features(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-8)


def test_fid_of_diagonal_gaussians_has_its_closed_form():
    rng = np.random.default_rng(4)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    var1, var2 = rng.uniform(0.1, 3.0, size=6), rng.uniform(0.1, 3.0, size=6)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-10)


def test_fid_of_random_features_matches_an_eigendecomposition():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12))
    b = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12)) + 0.5
    assert fid_from_features(a, b) == pytest.approx(_fid_by_eigh(a, b), rel=1e-7)


def test_fid_with_fewer_samples_than_dimensions_stays_finite():
    """Rank-deficient covariances (as with Inception's 2048 dims and few samples): the eps offset and
    the dropped imaginary part keep the result a real number close to the exact one."""
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(10, 32)), rng.normal(size=(10, 32)) + 0.3
    fid = fid_from_features(a, b)
    assert np.isfinite(fid)
    assert fid == pytest.approx(_fid_by_eigh(a, b), rel=1e-3)


def test_fid_retries_a_non_finite_square_root_with_an_eps_offset(monkeypatch):
    """pytorch-fid's fallback: when sqrtm(S1 S2) comes back non-finite, eps*I is added to both
    covariances and the root taken again."""
    from trainer.evaluation import fid_kid

    real_sqrtm, calls = fid_kid._sqrtm, []

    def flaky(matrix: np.ndarray) -> np.ndarray:
        calls.append(matrix)
        return np.full_like(matrix, np.nan) if len(calls) == 1 else real_sqrtm(matrix)

    monkeypatch.setattr(fid_kid, "_sqrtm", flaky)
    rng = np.random.default_rng(11)
    s1, s2 = np.cov(rng.normal(size=(30, 4)), rowvar=False), np.cov(rng.normal(size=(30, 4)), rowvar=False)
    eps = 1e-2
    fid = frechet_distance(np.zeros(4), s1, np.ones(4), s2, eps=eps)
    np.testing.assert_allclose(calls[1], (s1 + eps * np.eye(4)) @ (s2 + eps * np.eye(4)))
    expected = 4 + np.trace(s1) + np.trace(s2) - 2 * np.trace(real_sqrtm(calls[1]).real)
    assert fid == pytest.approx(expected, rel=1e-12)


def test_fid_drops_a_tiny_imaginary_part_and_refuses_a_large_one(monkeypatch):
    from trainer.evaluation import fid_kid

    eye = np.eye(3)
    monkeypatch.setattr(fid_kid, "_sqrtm", lambda matrix: eye + 1e-6j * eye)
    assert frechet_distance(np.zeros(3), eye, np.zeros(3), eye) == pytest.approx(0.0, abs=1e-12)
    monkeypatch.setattr(fid_kid, "_sqrtm", lambda matrix: eye + 0.1j * eye)
    with pytest.raises(ValueError, match="imaginary component"):
        frechet_distance(np.zeros(3), eye, np.zeros(3), eye)


def test_fid_rejects_mismatched_statistics():
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_mmd2_matches_the_double_loop():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(12, 5)) * 1.5 + 0.2
    assert mmd2_unbiased(x, y) == pytest.approx(_mmd2_loops(x, y), rel=1e-12)


def test_kid_with_whole_set_subsets_is_the_double_loop_value():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(15, 4)), rng.normal(size=(15, 4)) + 0.4
    mean, std = kernel_inception_distance(x, y, subsets=7, subset_size=1000)  # subsets of min(1000, 15) = all
    assert mean == pytest.approx(_mmd2_loops(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_subsets_are_seeded_and_vary_when_smaller_than_the_sets():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(60, 4)), rng.normal(size=(50, 4)) + 0.3
    first = kernel_inception_distance(x, y, subsets=20, subset_size=30, seed=1)
    assert first == kernel_inception_distance(x, y, subsets=20, subset_size=30, seed=1)
    assert first != kernel_inception_distance(x, y, subsets=20, subset_size=30, seed=2)
    assert first[1] > 0


def test_kid_is_unbiased_for_one_distribution_and_positive_for_shifted_ones():
    """Averaged over many draws the estimate centres on 0 when both samples share a distribution (the
    biased V-statistic, which keeps the i == j terms, does not), and clearly above 0 when they differ."""
    rng = np.random.default_rng(10)
    same, biased, shifted = [], [], []
    m = 20
    for _ in range(300):
        x, y, z = rng.normal(size=(m, 3)), rng.normal(size=(m, 3)), rng.normal(size=(m, 3)) + 0.7
        same.append(mmd2_unbiased(x, y))
        shifted.append(mmd2_unbiased(x, z))
        k = lambda a, b: (a @ b.T / 3 + 1) ** 3  # noqa: E731
        biased.append(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())
    standard_error = np.std(same) / np.sqrt(len(same))
    assert abs(np.mean(same)) < 3 * standard_error
    assert np.mean(biased) > 10 * standard_error
    assert np.mean(shifted) > 10 * standard_error


def test_kid_rejects_bad_inputs():
    with pytest.raises(ValueError, match="feature sizes"):
        kernel_inception_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"\[N >= 2, D\]"):
        kernel_inception_distance(np.zeros(5), np.zeros(5))
