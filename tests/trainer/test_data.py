import numpy as np
import pytest
import torch
from PIL import Image

from trainer.data import DatasetError, ImageFolderDataset, ShapesDataset, StepBatchSampler, build_dataset


def test_shapes_are_deterministic_and_labelled():
    a, b = ShapesDataset(image_size=32, length=20, seed=3), ShapesDataset(image_size=32, length=20, seed=3)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, ShapesDataset(image_size=32, length=20, seed=4).images)
    x = a[0]
    assert x.shape == (3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert a.attribute_names[:3] == ["shape_circle", "shape_square", "shape_triangle"]
    vec = a.attributes(0)
    assert vec.sum() == 2  # one shape and one colour
    assert vec[a.shape_labels[0]] == 1


def test_shape_colour_is_the_labelled_colour():
    from trainer.data.shapes import COLOURS

    ds = ShapesDataset(image_size=64, length=30, seed=0)
    for i in range(30):
        p = ds.params[i]
        cx, cy = round(p.cx * 64), round(p.cy * 64)
        pixel = ds.images[i, :, cy, cx].numpy().astype(int)
        assert np.abs(pixel - np.array(list(COLOURS.values())[p.colour])).max() < 40


def test_shapes_cover_every_class():
    ds = ShapesDataset(image_size=16, length=300)
    assert set(ds.shape_labels.tolist()) == {0, 1, 2}
    assert set(ds.colour_labels.tolist()) == set(range(6))


def _write(path, mode="RGB", size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = {"RGB": (200, 10, 10), "L": 128, "RGBA": (0, 0, 255, 0), "P": 3}[mode]
    Image.new(mode, size, colour).save(path)


def test_folder_recursive_resize_crop_and_modes(tmp_path):
    _write(tmp_path / "a.png")
    _write(tmp_path / "sub" / "b.jpg", size=(30, 60))
    _write(tmp_path / "sub" / "deeper" / "c.webp", mode="L")
    _write(tmp_path / "d.png", mode="RGBA")  # fully transparent: composited on white
    _write(tmp_path / "e.bmp", mode="P")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = ImageFolderDataset(tmp_path, image_size=16)
    assert len(ds) == 5
    for i in range(5):
        x = ds[i]
        assert x.shape == (3, 16, 16) and x.min() >= -1 and x.max() <= 1
    names = [p.name for p in ds.paths]
    gray = ds[names.index("c.webp")]
    assert torch.allclose(gray[0], gray[1]) and torch.allclose(gray[1], gray[2])
    transparent = ds[names.index("d.png")]
    assert torch.allclose(transparent, torch.ones_like(transparent))


def test_folder_skips_corrupt_files_with_a_warning(tmp_path):
    _write(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.warns(UserWarning, match="broken.png"):
        ds = ImageFolderDataset(tmp_path, image_size=8)
    assert [p.name for p in ds.paths] == ["good.png"]


def test_folder_truncated_file_is_replaced_at_load_time(tmp_path):
    _write(tmp_path / "a.png", size=(64, 64))
    _write(tmp_path / "b.png", size=(64, 64))
    ds = ImageFolderDataset(tmp_path, image_size=8)
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="a.png"):
        x = ds[0]
    assert torch.equal(x, ds[1])


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="no images"):
        ImageFolderDataset(tmp_path, image_size=8)
    (tmp_path / "x.jpg").write_bytes(b"nope")
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="unreadable"):
        ImageFolderDataset(tmp_path, image_size=8)
    with pytest.raises(DatasetError, match="does not exist"):
        build_dataset(f"folder:{tmp_path / 'missing'}", 8)


def test_data_specs(tmp_path):
    assert len(build_dataset("shapes:12", 16)) == 12
    with pytest.raises(DatasetError, match="unknown data spec"):
        build_dataset("imagenet", 16)


def test_sampler_batches_depend_only_on_seed_and_step():
    sampler = StepBatchSampler(10, 4, seed=1)
    stream = iter(sampler)
    first = [next(stream) for _ in range(6)]
    resumed = iter(StepBatchSampler(10, 4, seed=1, start_images=12))
    assert [next(resumed) for _ in range(3)] == first[3:]
    # every epoch is a permutation: 5 batches of 4 cover two epochs of 10 exactly
    flat = [i for batch in first[:5] for i in batch]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))


def test_sampler_follows_a_changing_batch_size():
    sampler = StepBatchSampler(50, lambda seen: 4 if seen < 8 else 2, seed=2)
    stream = iter(sampler)
    sizes = [len(next(stream)) for _ in range(4)]
    assert sizes == [4, 4, 2, 2]
    whole = StepBatchSampler(50, 12, seed=2).global_batch(0, 12)
    again = iter(StepBatchSampler(50, lambda seen: 4 if seen < 8 else 2, seed=2))
    assert [i for _ in range(4) for i in next(again)] == whole


def test_sampler_handles_batches_larger_than_the_data_set():
    batch = next(iter(StepBatchSampler(3, 7, seed=0)))
    assert len(batch) == 7 and set(batch) == {0, 1, 2}


def test_sampler_splits_the_global_batch_across_ranks():
    whole = next(iter(StepBatchSampler(100, 8, seed=5)))
    parts = [next(iter(StepBatchSampler(100, 8, seed=5, rank=r, world_size=2))) for r in range(2)]
    assert parts[0] == whole[0::2] and parts[1] == whole[1::2]  # strided, as Ranks.shard lays it out


def test_sampler_refuses_a_global_batch_that_does_not_split_evenly():
    with pytest.raises(ValueError, match="not divisible by 3"):
        next(iter(StepBatchSampler(100, 8, seed=5, rank=0, world_size=3)))
