"""Colour augmentation for super-resolution crops: why SRResNet trained on `photos` drifted colours.

SRResNet has no identity path from its input to its output: every colour it writes is re-synthesised by
learnt convolutions, so it reproduces only the colours its training crops covered. The paper trains on
350k ImageNet photographs, which cover them all. The bundled `photos` set does not: 6 of its 11 training
images are greyscale (camera, brick, grass, gravel, moon, coins) and the colour ones are weakly
saturated (mean |RGB - grey| 11 to 19 levels, against 22 to 40 for the held-out cat, coffee and flower),
so the network learnt "chroma is small and brownish" and pulled saturated held-out colours towards that
(the crema turns yellow, blonde hair auburn). The Y-channel metrics of the paper's protocol cannot see it.

The fix feeds the network the colours the data lack, keeping what it must learn (texture, edges) intact:
each HR crop's chroma (BT.601 full-range YCbCr, the JPEG convention) is rotated by a random hue angle,
scaled by a random saturation gain and offset by a random constant tint, with Y untouched; the LR is made
from the recoloured HR as before, so every pair stays exactly "bicubic downsample of the HR". Greyscale
crops become tinted monochrome ones, so they teach colour pass-through too. The random draws come from the
crop's own (seed, index) generator, so crops stay a pure function of (seed, index).
"""

from __future__ import annotations

import numpy as np

# BT.601 full range (JPEG): Y = 0.299 R + 0.587 G + 0.114 B; Cb, Cr centred on 0 here (no +128 offset)
RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float64
)
YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR)
SATURATION_RANGE = (0.5, 2.0)  # up to 2x: the held-out photographs are about twice as saturated as training's
TINT_RANGE = 24.0  # +- levels of constant Cb/Cr offset; turns greyscale crops into tinted ones
AUTO_KINDS = ("photos",)  # data sets whose colours are too few: `auto` turns the augmentation on for these
CHOICES = ("auto", "on", "off")


def rgb_to_ycbcr(image: np.ndarray) -> np.ndarray:
    """uint8 or float H x W x 3 RGB in [0, 255] -> float64 Y in [0, 255], Cb/Cr centred on 0."""
    return np.asarray(image, dtype=np.float64) @ RGB_TO_YCBCR.T


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """The inverse of rgb_to_ycbcr, rounded and clipped to uint8."""
    return np.clip(np.round(ycbcr @ YCBCR_TO_RGB.T), 0, 255).astype(np.uint8)


def recolour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 H x W x 3 -> uint8 H x W x 3 with Y kept and the chroma hue-rotated, re-saturated and tinted
    by amounts drawn from `rng` (one hue angle, gain and tint per image)."""
    ycbcr = rgb_to_ycbcr(image)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    gain = rng.uniform(*SATURATION_RANGE)
    tint = rng.uniform(-TINT_RANGE, TINT_RANGE, size=2)
    c, s = np.cos(angle), np.sin(angle)
    rotate = gain * np.array([[c, -s], [s, c]])
    ycbcr[..., 1:] = ycbcr[..., 1:] @ rotate.T + tint
    return ycbcr_to_rgb(ycbcr)


def resolve(choice: str, kind: str) -> bool:
    """`--colour-augment auto|on|off` for a data set of `kind` -> whether to recolour its crops."""
    if choice not in CHOICES:
        raise ValueError(f"colour_augment must be one of {CHOICES}, got {choice!r}")
    return choice == "on" or (choice == "auto" and kind in AUTO_KINDS)


def mean_chroma_error(sr: np.ndarray, hr: np.ndarray, border: int = 0) -> float:
    """Mean |CbCr(SR) - CbCr(HR)| in 8-bit levels over both chroma channels, `border` pixels removed: the
    colour error that PSNR/SSIM on Y do not see."""
    if border:
        sr, hr = sr[border:-border, border:-border], hr[border:-border, border:-border]
    return float(np.abs(rgb_to_ycbcr(sr)[..., 1:] - rgb_to_ycbcr(hr)[..., 1:]).mean())
