"""Colour augmentation of SR crops and the colour/sharpness metrics that see what Y-only PSNR does not."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from trainer.data import colour_augment
from trainer.data.super_resolution import bicubic_downscale, build_sr_dataset
from trainer.evaluation.sr_metrics import colour_scores, sharpness_ratio, sr_scores


def smooth_image(size: int = 48, seed: int = 0) -> np.ndarray:
    """A colourful but unsaturated natural-ish image (no clipping under the augmentation's gains)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(70, 186, (6, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def test_ycbcr_round_trip_is_exact_to_a_level():
    image = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    back = colour_augment.ycbcr_to_rgb(colour_augment.rgb_to_ycbcr(image))
    assert np.abs(back.astype(int) - image).max() <= 1


def test_recolour_keeps_luma_changes_chroma_and_is_deterministic():
    image = smooth_image()
    out = colour_augment.recolour(image, np.random.default_rng(7))
    again = colour_augment.recolour(image, np.random.default_rng(7))
    other = colour_augment.recolour(image, np.random.default_rng(8))
    y = lambda a: colour_augment.rgb_to_ycbcr(a)[..., 0]  # noqa: E731
    assert np.array_equal(out, again) and not np.array_equal(out, other)
    assert np.abs(y(out) - y(image)).mean() < 2.0  # Y kept but for rounding and the odd clipped pixel
    assert colour_augment.mean_chroma_error(out, image) > 5.0


def test_recolour_tints_greyscale_crops():
    grey = np.repeat(smooth_image()[..., :1], 3, axis=2)
    tinted = [colour_augment.recolour(grey, np.random.default_rng(s)) for s in range(8)]
    chroma = [np.abs(colour_augment.rgb_to_ycbcr(t)[..., 1:]).mean() for t in tinted]
    assert max(chroma) > 5.0  # grey crops now also teach colour pass-through


def test_resolve_turns_it_on_for_the_bundled_photos_only_by_default():
    assert colour_augment.resolve("auto", "photos")
    assert not colour_augment.resolve("auto", "folder") and not colour_augment.resolve("auto", "shapes")
    assert colour_augment.resolve("on", "folder") and not colour_augment.resolve("off", "photos")
    with pytest.raises(ValueError, match="colour_augment"):
        colour_augment.resolve("sometimes", "photos")


def test_augmented_crops_stay_consistent_pairs_and_a_pure_function_of_the_index():
    config = SimpleNamespace(crop_size=32, scale=4, colour_augment="on")
    plain = build_sr_dataset("shapes:8", SimpleNamespace(crop_size=32, scale=4), 0)
    data = build_sr_dataset("shapes:8", config, 0)
    again = build_sr_dataset("shapes:8", config, 0)
    assert data.describe()["colour_augment"] and not plain.describe()["colour_augment"]
    lr, hr = data.crop(5)
    assert np.array_equal(lr, bicubic_downscale(hr, 4))  # the LR is made from the recoloured HR
    assert all(np.array_equal(a, b) for a, b in zip(data.crop(5), again.crop(5), strict=True))
    assert any(not np.array_equal(data.crop(i)[1], plain.crop(i)[1]) for i in range(8))


def test_colour_scores_see_a_hue_shift_that_y_psnr_does_not():
    hr = smooth_image(seed=3)
    ycbcr = colour_augment.rgb_to_ycbcr(hr)
    ycbcr[..., 1:] = ycbcr[..., 1:] @ np.array([[0.0, -1.0], [1.0, 0.0]]).T  # rotate hue by 90 degrees
    shifted = colour_augment.ycbcr_to_rgb(ycbcr)
    psnr_y, _ = sr_scores(shifted, hr, 4)
    psnr_rgb, chroma = colour_scores(shifted, hr, 4)
    same_rgb, same_chroma = colour_scores(hr, hr, 4)
    assert psnr_y > 40.0  # Y-only metrics call the hue-rotated image nearly perfect
    assert psnr_rgb < 35.0 and chroma > 5.0
    assert same_chroma == 0.0 and same_rgb == float("inf")


def test_sharpness_ratio_is_one_for_the_original_and_lower_when_blurred():
    hr = np.random.default_rng(4).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    blurred = np.asarray(Image.fromarray(hr).resize((12, 12), Image.Resampling.BICUBIC)
                         .resize((48, 48), Image.Resampling.BICUBIC))
    assert sharpness_ratio(hr, hr, 4) == pytest.approx(1.0)
    assert sharpness_ratio(blurred, hr, 4) < 0.5
