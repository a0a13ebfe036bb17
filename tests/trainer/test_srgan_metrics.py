import math

import numpy as np
import pytest

from trainer.data.super_resolution import bicubic_downscale, bicubic_upscale, modcrop
from trainer.evaluation.sr_metrics import psnr, rgb_to_y, shave, sr_scores, ssim
from trainer.evaluation.super_resolution import evaluate_upscaler

skimage_metrics = pytest.importorskip("skimage.metrics")
skimage_color = pytest.importorskip("skimage.color")


def smooth_image(rng, h=48, w=40):
    """A photograph-like test image: smooth gradients plus texture, uint8 RGB."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * x + c) * np.cos(4 * y - c) for c in (0.0, 1.0, 2.0)], axis=-1)
    noisy = 127.5 + 90 * base + rng.normal(0, 12, (h, w, 3))
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


def test_psnr_by_hand():
    a = np.full((20, 20), 100.0)
    assert psnr(a, a + 5) == pytest.approx(10 * math.log10(255**2 / 25))
    assert psnr(a, a) == math.inf


def test_ssim_of_identical_and_of_a_constant_shift_by_hand():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, (30, 30))
    assert ssim(a, a) == pytest.approx(1.0)
    # a constant shift d changes only the luminance term: (2 mu (mu+d) + C1) / (mu^2 + (mu+d)^2 + C1)
    flat = np.full((20, 20), 100.0)
    c1 = (0.01 * 255) ** 2
    assert ssim(flat, flat + 10) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1))


def test_y_channel_matches_scikit_image_bt601():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    expected = skimage_color.rgb2ycbcr(image)[..., 0]
    np.testing.assert_allclose(rgb_to_y(image), expected, atol=1e-9)
    assert rgb_to_y(np.zeros((1, 1, 3)))[0, 0] == 16 and rgb_to_y(np.full((1, 1, 3), 255))[0, 0] == pytest.approx(235)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_psnr_and_ssim_match_scikit_image(seed):
    rng = np.random.default_rng(seed)
    hr = smooth_image(rng)
    sr = bicubic_upscale(bicubic_downscale(modcrop(hr, 4), 4), 4)
    hr = modcrop(hr, 4)
    p, s = sr_scores(sr, hr, border=4)
    y_sr, y_hr = shave(skimage_color.rgb2ycbcr(sr)[..., 0], 4), shave(skimage_color.rgb2ycbcr(hr)[..., 0], 4)
    assert p == pytest.approx(skimage_metrics.peak_signal_noise_ratio(y_hr, y_sr, data_range=255), abs=1e-9)
    expected_ssim = skimage_metrics.structural_similarity(
        y_hr, y_sr, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert s == pytest.approx(expected_ssim, abs=1e-9)
    assert 0 < s < 1 and 10 < p < 60


def test_border_is_removed_before_scoring():
    hr = np.full((32, 32, 3), 128, np.uint8)
    sr = hr.copy()
    sr[:4] = 0  # damage only the border rows
    assert sr_scores(sr, hr, border=4)[0] == math.inf
    assert sr_scores(sr, hr, border=0)[0] < 20


def test_evaluate_upscaler_reports_model_and_bicubic():
    rng = np.random.default_rng(3)
    images = [smooth_image(rng, 50, 43), smooth_image(rng, 40, 64)]
    result = evaluate_upscaler(lambda lr: bicubic_upscale(lr, 4), images, 4, ["a", "b"])
    assert result["images"] == 2 and result["border"] == 4
    assert result["psnr_y"] == pytest.approx(result["bicubic_psnr_y"])  # the "model" is bicubic itself
    assert [r["name"] for r in result["per_image"]] == ["a", "b"]
    with pytest.raises(ValueError, match="upscaler returned"):
        evaluate_upscaler(lambda lr: lr, images, 4)
