"""FID and KID between two sets of image features, computed as the reference implementations do.

FID follows pytorch-fid's `calculate_frechet_distance` (scipy's sqrtm of the covariance product, an eps
offset on the diagonals when that product is singular, a tolerated tiny imaginary part dropped), so a
number computed here on Inception features means what the papers' numbers mean. KID follows
Binkowski et al. 2018 as torch-fidelity computes it: the unbiased MMD^2 estimate with the cubic
polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets of both sets, because its
estimate is unbiased where FID's grows with fewer samples.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy
from scipy import linalg

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
FID_EPS = 1e-6
IMAGINARY_TOLERANCE = 1e-3
# SciPy < 1.16 prints a warning to stdout for a singular matrix unless disp=False (which would corrupt
# JSON output); from 1.16 disp is deprecated and nothing is printed
_SQRTM_HAS_DISP = tuple(int(p) for p in scipy.__version__.split(".")[:2]) < (1, 16)


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """scipy's matrix square root, quietly: a singular product is expected with fewer samples than
    dimensions, and the caller checks the result (non-finite: retry with eps; complex: tolerance)."""
    if _SQRTM_HAS_DISP:
        return linalg.sqrtm(matrix, disp=False)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(matrix)


def _as_features(features: np.ndarray) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2:
        raise ValueError(f"features must be an [N >= 2, D] array, got shape {array.shape}")
    return array


def gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (N-1)-normalised covariance, as pytorch-fid's `calculate_activation_statistics`."""
    array = _as_features(features)
    return array.mean(axis=0), np.cov(array, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = FID_EPS
) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) of two Gaussians."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"mismatched statistics: means {mu1.shape} vs {mu2.shape}, "
                         f"covariances {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        # fewer samples than dimensions (or a constant feature) makes the product singular
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAGINARY_TOLERANCE):
            raise ValueError(f"FID: imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm(S1 S2)")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    return frechet_distance(*gaussian_fit(features1), *gaussian_fit(features2))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3 for every pair of rows (in place, a*a*a: twice as fast as ** 3)."""
    a = x @ y.T
    a *= 1.0 / x.shape[1]
    a += 1.0
    return a * a * a


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equally sized samples: within-set means leave out the i == j terms, the
    cross term keeps all m^2 pairs (torch-fidelity's and Binkowski et al.'s 'unbiased' estimator)."""
    m = x.shape[0]
    if y.shape[0] != m or m < 2:
        raise ValueError(f"MMD needs two samples of one size >= 2, got {x.shape[0]} and {y.shape[0]}")
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> tuple[float, float]:
    """Mean and standard deviation of the unbiased MMD^2 over `subsets` random subsets of
    min(subset_size, N) rows drawn without replacement from each set, from a private seeded RNG."""
    x, y = _as_features(features1), _as_features(features2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: {x.shape[1]} vs {y.shape[1]}")
    size = min(subset_size, x.shape[0], y.shape[0])
    rng = np.random.default_rng(seed)
    scores = np.empty(subsets)
    for i in range(subsets):
        xs = x[rng.choice(x.shape[0], size, replace=False)]
        ys = y[rng.choice(y.shape[0], size, replace=False)]
        scores[i] = mmd2_unbiased(xs, ys)
    return float(scores.mean()), float(scores.std())
