"""Score any x`scale` upscaler on HR images, next to bicubic, with the paper's protocol.

The upscaler is a plain function uint8 LR -> uint8 SR (a PyTorch generator in training, an ONNX model
in `gan-eval-sr`), so the two are measured by exactly the same code. Each HR image is modcropped to the
scale, downsampled with the training pipeline's bicubic filter, upscaled, rounded to uint8 (as a saved
image would be) and scored on Y with a `scale`-pixel border removed (see sr_metrics).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from trainer.data.super_resolution import bicubic_downscale, bicubic_upscale, lr_tensor, modcrop
from trainer.evaluation.sr_metrics import colour_scores, sharpness_ratio, sr_scores

Upscaler = Callable[[np.ndarray], np.ndarray]
# means over the images; chroma_error is mean |CbCr| error in 8-bit levels, sharpness the Y gradient-energy ratio
SUMMARY_KEYS = ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y", "psnr_rgb", "bicubic_psnr_rgb",
                "chroma_error", "bicubic_chroma_error", "sharpness", "bicubic_sharpness")


def to_uint8_image(output: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [-1, 1] -> H x W x 3 uint8, rounded as the service's codec does."""
    scaled = ((output.detach().float().cpu() + 1.0) * 127.5).clamp_(0.0, 255.0).round_()
    return scaled.to(torch.uint8).permute(1, 2, 0).numpy()


def torch_upscaler(generator: nn.Module, device: torch.device | str = "cpu") -> Upscaler:
    """uint8 LR -> uint8 SR through `generator` in eval mode (BatchNorm on running statistics)."""

    @torch.no_grad()
    def upscale(lr: np.ndarray) -> np.ndarray:
        was_training = generator.training
        generator.eval()
        try:
            return to_uint8_image(generator(lr_tensor(lr).unsqueeze(0).to(device))[0])
        finally:
            generator.train(was_training)

    return upscale


def evaluate_upscaler(
    upscale: Upscaler, images: Sequence[np.ndarray], scale: int, names: Sequence[str] | None = None,
    border: int | None = None,
) -> dict[str, Any]:
    """Mean PSNR/SSIM (Y, border removed), PSNR on RGB, CbCr error and sharpness ratio (sr_metrics) of the
    upscaler and of bicubic, plus the per-image scores."""
    border = scale if border is None else border
    names = list(names) if names is not None else [f"image_{i}" for i in range(len(images))]
    per_image = []
    for name, image in zip(names, images, strict=True):
        hr = modcrop(image, scale)
        lr = bicubic_downscale(hr, scale)
        sr = upscale(lr)
        if sr.shape != hr.shape:
            raise ValueError(f"{name}: the upscaler returned {sr.shape} for an LR of {lr.shape} (expected {hr.shape})")
        p, s = sr_scores(sr, hr, border)
        bicubic = bicubic_upscale(lr, scale)
        bp, bs = sr_scores(bicubic, hr, border)
        rgb, chroma = colour_scores(sr, hr, border)
        brgb, bchroma = colour_scores(bicubic, hr, border)
        per_image.append({"name": name, "psnr_y": p, "ssim_y": s, "bicubic_psnr_y": bp, "bicubic_ssim_y": bs,
                          "psnr_rgb": rgb, "chroma_error": chroma, "bicubic_psnr_rgb": brgb,
                          "bicubic_chroma_error": bchroma, "sharpness": sharpness_ratio(sr, hr, border),
                          "bicubic_sharpness": sharpness_ratio(bicubic, hr, border)})
    summary: dict[str, Any] = {"images": len(per_image), "scale": scale, "border": border}
    for key in SUMMARY_KEYS:
        summary[key] = float(np.mean([r[key] for r in per_image])) if per_image else math.nan
    summary["per_image"] = per_image
    return summary


def side_by_side(images: Sequence[np.ndarray], upscale: Upscaler, scale: int, panel: int = 256) -> Image.Image:
    """One row per HR image: bicubic-upscaled LR | SR | HR, each a centre `panel` crop, captioned."""
    rows = []
    for image in images:
        hr = modcrop(image, scale)
        lr = bicubic_downscale(hr, scale)
        triple = [bicubic_upscale(lr, scale), upscale(lr), hr]
        h, w = hr.shape[:2]
        top, left = max(0, (h - panel) // 2), max(0, (w - panel) // 2)
        rows.append([t[top : top + panel, left : left + panel] for t in triple])
    caption, gap = 14, 4
    height = max(r[0].shape[0] for r in rows)
    width = max(r[0].shape[1] for r in rows)
    canvas = Image.new("RGB", (3 * width + 4 * gap, caption + len(rows) * (height + gap) + gap), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for col, label in enumerate((f"bicubic x{scale}", "SR (model)", "HR (original)")):
        draw.text((gap + col * (width + gap) + 2, 1), label, fill="white")
    for r, row in enumerate(rows):
        for col, tile in enumerate(row):
            canvas.paste(Image.fromarray(tile), (gap + col * (width + gap), caption + gap + r * (height + gap)))
    return canvas
