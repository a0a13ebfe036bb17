"""PSNR and SSIM for super-resolution, with the protocol of the SRGAN paper and its predecessors.

Scores are computed on the luma (Y) channel of BT.601 YCbCr as MATLAB's rgb2ycbcr defines it
(Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255, R, G, B in [0, 1], so Y spans [16, 235]), kept in
floating point, after removing a border of `scale` pixels on every side (the pixels an upscaler cannot
know), with data range 255. SSIM is Wang et al.'s: an 11x11 Gaussian window with sigma 1.5,
K1 = 0.01, K2 = 0.03, population statistics, averaged over the positions where the window fits inside
the image. That equals scikit-image's `structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255)`, which a test checks; the code here needs numpy only.
"""

from __future__ import annotations

import math

import numpy as np

from trainer.data.colour_augment import mean_chroma_error

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # int(3.5 * sigma + 0.5), as scipy/scikit-image truncate the Gaussian: an 11x11 window
SSIM_K1, SSIM_K2 = 0.01, 0.03
DATA_RANGE = 255.0


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """H x W x 3 RGB with values 0..255 (uint8 or float) -> H x W float64 luma in [16, 235] (BT.601)."""
    rgb = np.asarray(image, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {rgb.shape}")
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def shave(image: np.ndarray, border: int) -> np.ndarray:
    if border <= 0:
        return image
    if image.shape[0] <= 2 * border or image.shape[1] <= 2 * border:
        raise ValueError(f"image {image.shape[:2]} is too small to remove a {border}-pixel border")
    return image[border:-border, border:-border]


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = DATA_RANGE) -> float:
    """10 log10(range^2 / MSE); inf for identical images."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def _gaussian_window() -> np.ndarray:
    x = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return w / w.sum()


def _filter_valid(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable filtering, keeping only positions where the whole window lies inside the image."""
    rows = np.lib.stride_tricks.sliding_window_view(image, window.size, axis=0) @ window
    return np.lib.stride_tricks.sliding_window_view(rows, window.size, axis=1) @ window


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = DATA_RANGE) -> float:
    """Mean SSIM of two single-channel images (see the module docstring for the exact definition)."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"ssim needs two equal 2-D images, got {x.shape} and {y.shape}")
    side = 2 * SSIM_RADIUS + 1
    if min(x.shape) < side:
        raise ValueError(f"ssim needs images of at least {side}x{side}, got {x.shape}")
    w = _gaussian_window()
    mu_x, mu_y = _filter_valid(x, w), _filter_valid(y, w)
    var_x = _filter_valid(x * x, w) - mu_x**2
    var_y = _filter_valid(y * y, w) - mu_y**2
    cov = _filter_valid(x * y, w) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float(np.mean(numerator / denominator))


def sr_scores(output: np.ndarray, target: np.ndarray, border: int) -> tuple[float, float]:
    """(PSNR, SSIM) of two H x W x 3 RGB images (0..255) on Y, `border` pixels removed on each side."""
    if output.shape != target.shape:
        raise ValueError(f"output {output.shape} and target {target.shape} differ in shape")
    y_out, y_ref = shave(rgb_to_y(output), border), shave(rgb_to_y(target), border)
    return psnr(y_out, y_ref), ssim(y_out, y_ref)


def colour_scores(output: np.ndarray, target: np.ndarray, border: int) -> tuple[float, float]:
    """(PSNR on RGB, mean |CbCr error| in 8-bit levels), `border` pixels removed: the colour that Y-only
    PSNR/SSIM cannot see (an SR model that shifts hues keeps its Y score)."""
    if output.shape != target.shape:
        raise ValueError(f"output {output.shape} and target {target.shape} differ in shape")
    out, ref = shave(np.asarray(output, np.float64), border), shave(np.asarray(target, np.float64), border)
    return psnr(out, ref), mean_chroma_error(out, ref)


def gradient_energy(y: np.ndarray) -> float:
    """Mean squared finite difference (horizontal and vertical) of a luma image: its high-frequency energy."""
    return float(np.mean(np.diff(y, axis=0) ** 2) + np.mean(np.diff(y, axis=1) ** 2))


def sharpness_ratio(output: np.ndarray, target: np.ndarray, border: int) -> float:
    """Gradient energy of the output's Y over the original's: 1.0 is as sharp as the original.

    Why this measure for SRGAN: its claim over SRResNet is restored high-frequency texture, where a pixel
    loss averages the plausible textures into blur, which removes gradient energy. It needs no downloaded
    weights (LPIPS needs AlexNet/VGG's). It rewards noise as well as detail, so it is read next to PSNR,
    and a ratio well above 1 means artefacts, not sharpness."""
    return gradient_energy(shave(rgb_to_y(output), border)) / gradient_energy(shave(rgb_to_y(target), border))
