import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.data import DatasetError
from trainer.data.super_resolution import (
    PHOTOS_EVAL,
    PHOTOS_TRAIN,
    bicubic_downscale,
    build_sr_dataset,
    dihedral,
    held_out_indices,
)


def config(crop_size=32, scale=4):
    return SimpleNamespace(crop_size=crop_size, scale=scale)


def write_images(folder, sizes, mode="RGB"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        shape = (h, w) if mode == "L" else (h, w, len(mode))
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(pixels, mode).save(folder / f"img_{i:02d}.png")
    return folder


def to_uint8_hr(hr: torch.Tensor) -> np.ndarray:
    return ((hr + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def test_lr_is_the_bicubic_downsampled_hr_crop(tmp_path):
    data = build_sr_dataset(f"folder:{write_images(tmp_path / 'hr', [(70, 50), (64, 90), (80, 80)])}", config(), 5)
    for index in (0, 1, 2, 1234):
        item = data[index]
        lr, hr = item["lr"], item["hr"]
        assert lr.shape == (3, 8, 8) and hr.shape == (3, 32, 32)
        assert lr.min() >= 0 and lr.max() <= 1 and hr.min() >= -1 and hr.max() <= 1
        hr_u8 = to_uint8_hr(hr)
        expected = np.asarray(Image.fromarray(hr_u8).resize((8, 8), Image.Resampling.BICUBIC))
        np.testing.assert_array_equal((lr * 255).round().to(torch.uint8).permute(1, 2, 0).numpy(), expected)


def test_crops_are_a_pure_function_of_seed_and_index(tmp_path):
    folder = write_images(tmp_path / "hr", [(100, 100), (120, 90)])
    a, b = build_sr_dataset(f"folder:{folder}", config(), 1), build_sr_dataset(f"folder:{folder}", config(), 1)
    other_seed = build_sr_dataset(f"folder:{folder}", config(), 2)
    assert torch.equal(a[7]["hr"], b[7]["hr"])
    assert not torch.equal(a[7]["hr"], a[7 + len(a.train)]["hr"])  # same image, another crop
    assert not torch.equal(a[7]["hr"], other_seed[7]["hr"])
    assert len(a) >= 65536 and len(a) % len(a.train) == 0


def test_flips_and_rotations_are_the_eight_symmetries():
    square = np.arange(16).reshape(4, 4)
    variants = {dihedral(square, k).tobytes() for k in range(8)}
    assert len(variants) == 8


def test_grayscale_and_rgba_images_become_rgb(tmp_path):
    write_images(tmp_path / "hr", [(64, 64), (64, 64)], mode="L")
    rgba = np.zeros((64, 64, 4), np.uint8)  # fully transparent: composited on white, not black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "hr" / "zz_rgba.png")
    data = build_sr_dataset(f"folder:{tmp_path / 'hr'}", config(), 0)
    names = data.train.names + data.eval_names
    assert "zz_rgba.png" in names
    for index in range(len(data.train)):
        hr = data[index]["hr"]
        assert hr.shape == (3, 32, 32)
        if data.train.names[index] == "zz_rgba.png":
            assert torch.all(hr == 1.0)
        else:
            assert torch.equal(hr[0], hr[1]) and torch.equal(hr[1], hr[2])  # grey stays grey


def test_images_smaller_than_the_crop_are_skipped_or_refused(tmp_path):
    small = write_images(tmp_path / "small", [(20, 40), (30, 30), (31, 64)])
    with pytest.raises(DatasetError, match=r"at least 32x32 .* smaller --crop-size"):
        build_sr_dataset(f"folder:{small}", config(crop_size=32), 0)
    mixed = write_images(tmp_path / "mixed", [(20, 20), (40, 40), (64, 48)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = build_sr_dataset(f"folder:{mixed}", config(crop_size=32), 0)
    assert any("smaller than the 32x32" in str(w.message) for w in caught)
    assert all(name != "img_00.png" for name in data.train.names)


def test_folder_split_is_fixed_and_disjoint(tmp_path):
    folder = write_images(tmp_path / "hr", [(48, 48)] * 25)
    data = build_sr_dataset(f"folder:{folder}", config(), 0)
    assert data.eval_names == [f"img_{i:02d}.png" for i in held_out_indices(25)]
    assert len(data.eval_names) == 2 and not set(data.eval_names) & set(data.train.names)
    assert len(data.train) == 23
    assert all(img.shape[0] % 4 == 0 and img.shape[1] % 4 == 0 for img in data.eval_images)
    described = data.describe()
    assert described["eval_images"] == data.eval_names and described["crop_size"] == 32


def test_bad_specs_and_empty_folders_give_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        build_sr_dataset(f"folder:{tmp_path / 'empty'}", config(), 0)
    with pytest.raises(DatasetError, match="photos"):
        build_sr_dataset("celeba", config(), 0)


def test_shapes_spec_for_quick_runs():
    data = build_sr_dataset("shapes:8", config(), 0)
    assert len(data.train) == 8 and len(data.eval_images) == 4
    assert data[3]["lr"].shape == (3, 8, 8)
    hr = to_uint8_hr(data[3]["hr"])
    np.testing.assert_array_equal((data[3]["lr"] * 255).round().byte().permute(1, 2, 0).numpy(),
                                  bicubic_downscale(hr, 4))


def test_builtin_photos_have_a_fixed_held_out_split():
    pytest.importorskip("skimage")
    pytest.importorskip("sklearn")
    data = build_sr_dataset("photos", config(crop_size=96), 0)
    assert data.train.names == [e[2] for e in PHOTOS_TRAIN]
    assert data.eval_names == [e[2] for e in PHOTOS_EVAL] == ["chelsea.png", "coffee.png", "flower.jpg"]
    assert not set(data.train.names) & set(data.eval_names)
    assert hasattr(data, "images")  # in memory: the loop needs no worker processes
    item = data[0]
    assert item["lr"].shape == (3, 24, 24) and item["hr"].shape == (3, 96, 96)
