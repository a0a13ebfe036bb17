"""Latent vectors for `generate` models: seeded sampling and interpolation.

Reproducibility is the point: a seed names a latent batch through numpy's PCG64 generator, whose
stream is fixed across runs and platforms, so `seed=7` gives the same images tomorrow and on
another replica. Rows are drawn in order, so the first k images of `(seed, n)` are the images of
`(seed, k)`, and an interpolation endpoint given as a seed is that seed's first image.
"""

from __future__ import annotations

import secrets
from typing import Literal

import numpy as np

Distribution = Literal["normal", "uniform"]

# Seeds the service picks itself stay below 2**53 so JavaScript clients can echo them exactly.
_SERVER_SEED_BITS = 53


def new_seed() -> int:
    return secrets.randbits(_SERVER_SEED_BITS)


def sample(seed: int, count: int, dim: int, distribution: Distribution) -> np.ndarray:
    """`count` latent vectors [count, dim] float32: N(0, 1) or U(-1, 1) as the manifest says."""
    rng = np.random.Generator(np.random.PCG64(seed))
    if distribution == "normal":
        return rng.standard_normal((count, dim), dtype=np.float32)
    if distribution == "uniform":
        return rng.uniform(-1.0, 1.0, (count, dim)).astype(np.float32)
    raise ValueError(f"unknown latent distribution {distribution!r}")


def interpolate(start: np.ndarray, end: np.ndarray, steps: int, method: Literal["linear", "slerp"]) -> np.ndarray:
    """`steps` vectors from `start` to `end` inclusive (the endpoints are reproduced exactly).

    `slerp` follows the great circle (White, 2016), which keeps Gaussian latents at a typical norm;
    it degrades to linear for (anti)parallel vectors where the great circle is undefined.
    """
    a = start.astype(np.float64)
    b = end.astype(np.float64)
    t = np.linspace(0.0, 1.0, steps)[:, None]
    if method == "slerp":
        norms = np.linalg.norm(a) * np.linalg.norm(b)
        if norms > 0:
            cos = float(np.clip(np.dot(a, b) / norms, -1.0, 1.0))
            omega = np.arccos(cos)
            sin = np.sin(omega)
            if sin > 1e-6:
                path = (np.sin((1.0 - t) * omega) / sin) * a + (np.sin(t * omega) / sin) * b
                path[0], path[-1] = a, b
                return path.astype(np.float32)
    path = (1.0 - t) * a + t * b
    path[0], path[-1] = a, b
    return path.astype(np.float32)
