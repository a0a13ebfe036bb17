"""Image grids for samples, written with Pillow so that the trainer needs no torchvision."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

CAPTION_HEIGHT = 12


def to_uint8(images: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """N,C,H,W floats in value_range -> N,H,W,C uint8."""
    low, high = value_range
    scaled = (images.detach().float().cpu().clamp(low, high) - low) / (high - low)
    return (scaled * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    pixels = to_uint8(images)
    n, h, w, c = pixels.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.zeros((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = pixels[i]
    return grid


def save_grid(images: torch.Tensor, path: Path, nrow: int | None = None, caption: str | None = None) -> Path:
    """Write the grid as a PNG; a caption (e.g. PGGAN's resolution and alpha) goes in a strip above it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(images, nrow)
    image = Image.fromarray(grid.squeeze(-1) if grid.shape[-1] == 1 else grid)
    if caption:
        captioned = Image.new(image.mode, (image.width, image.height + CAPTION_HEIGHT))
        captioned.paste(image, (0, CAPTION_HEIGHT))
        ImageDraw.Draw(captioned).text((2, 1), caption, fill="white")
        image = captioned
    image.save(path)
    return path
