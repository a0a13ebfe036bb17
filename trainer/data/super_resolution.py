"""Super-resolution training pairs: random HR crops and their bicubic x`scale` LR, made on the fly.

Specs (`--data`):
- `photos`: the natural photographs that ship inside scikit-image and scikit-learn (nothing is
  downloaded), with a fixed held-out split for evaluation (`PHOTOS_TRAIN` / `PHOTOS_EVAL`);
- `folder:PATH`: any folder of HR images (DIV2K-style); a fixed, name-sorted 10% (1 to 8 images) is held
  out for the in-training evaluation;
- `shapes[:N]`: N procedural shape images (the project's built-in toy data; fast, for tests).

Each item is one HR crop (`crop_size`, 96 in the paper) turned by one of the 8 flips/rotations, as
`{"lr": [3, c/s, c/s] in [0, 1], "hr": [3, c, c] in [-1, 1]}` (the paper's ranges). The LR is the HR crop
downsampled with Pillow's bicubic filter (antialiased, like MATLAB's imresize) and rounded to uint8, as
a saved LR image would be. With colour augmentation (`--colour-augment`, on by default for `photos`: see
colour_augment for why) the HR crop is recoloured first. The crop position and the flip/rotation are a pure function of
(seed, index), so a batch depends only on (seed, images seen) and resume stays exact; to draw many
different crops per image, the data set has `crops_per_image` indices per image (about 65k items per
sampler epoch in all), each with its own crop.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from trainer.data import colour_augment
from trainer.data.image_folder import DatasetError, find_images, load_rgb
from trainer.data.shapes import ShapesDataset, shapes_length

# (package, folder inside it, file); natural photographs only: no charts, logos, text or synthetic images
PHOTOS_TRAIN: tuple[tuple[str, str, str], ...] = (
    ("skimage", "data", "astronaut.png"),
    ("skimage", "data", "rocket.jpg"),
    ("skimage", "data", "motorcycle_left.png"),
    ("skimage", "data", "ihc.png"),
    ("skimage", "data", "camera.png"),
    ("skimage", "data", "brick.png"),
    ("skimage", "data", "grass.png"),
    ("skimage", "data", "gravel.png"),
    ("skimage", "data", "moon.png"),
    ("skimage", "data", "coins.png"),
    ("sklearn", "datasets/images", "china.jpg"),
)
PHOTOS_EVAL: tuple[tuple[str, str, str], ...] = (
    ("skimage", "data", "chelsea.png"),
    ("skimage", "data", "coffee.png"),
    ("sklearn", "datasets/images", "flower.jpg"),
)
CROPS_PER_EPOCH = 1 << 16
IN_MEMORY_BYTES = 1 << 30  # decoded HR images up to this size are kept in memory (no decode per crop)
EVAL_MAX_SIDE = 640  # held-out images are centre-cropped to this, so an in-training evaluation stays cheap
EVAL_MIN_SIDE = 24  # SSIM's 11x11 window must fit after removing the border
SHAPES_DEFAULT_LENGTH = 256
SHAPES_EVAL = 4


# ---------------------------------------------------------------------------------------------- resampling
def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop H x W (x C) so both sides are multiples of `scale` (top-left kept, as the SR benchmarks do)."""
    h, w = image.shape[0] - image.shape[0] % scale, image.shape[1] - image.shape[1] % scale
    return image[:h, :w]


def bicubic_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 H x W x 3 -> uint8 height x width x 3 with Pillow's bicubic filter (antialiased when shrinking)."""
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    if hr.shape[0] % scale or hr.shape[1] % scale:
        raise ValueError(f"HR size {hr.shape[:2]} is not a multiple of {scale}; modcrop it first")
    return bicubic_resize(hr, hr.shape[0] // scale, hr.shape[1] // scale)


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    return bicubic_resize(lr, lr.shape[0] * scale, lr.shape[1] * scale)


def dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of a square: rotate by 90 * (k % 4) degrees, then mirror if k >= 4."""
    out = np.rot90(image, k % 4)
    return np.ascontiguousarray(out[:, ::-1] if k >= 4 else out)


def lr_tensor(lr: np.ndarray) -> torch.Tensor:
    """uint8 H x W x 3 -> float [3, H, W] in [0, 1] (the generator's input range)."""
    return torch.from_numpy(np.array(lr, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)


def hr_tensor(hr: np.ndarray) -> torch.Tensor:
    """uint8 H x W x 3 -> float [3, H, W] in [-1, 1] (the generator's output range)."""
    return torch.from_numpy(np.array(hr, dtype=np.uint8)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


# -------------------------------------------------------------------------------------------------- sources
@dataclass
class ImageSet:
    """Named HR images, decoded once into memory or (for large folders) on each access."""

    names: list[str]
    paths: list[Path] = field(default_factory=list)
    arrays: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def get(self, index: int) -> np.ndarray:
        if self.arrays is not None:
            return self.arrays[index]
        return np.asarray(load_rgb(self.paths[index]))


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the header, or None (with a warning) for a file Pillow cannot read."""
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        warnings.warn(f"skipping unreadable image {path}: {exc}", stacklevel=3)
        return None


def _from_paths(paths: list[Path], names: list[str], in_memory: bool) -> ImageSet:
    images = ImageSet(names=names, paths=paths)
    if in_memory:
        images.arrays = [np.asarray(load_rgb(p)) for p in paths]
    return images


def _package_folder(package: str, folder: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"--data photos uses the photographs that ship with scikit-image and scikit-learn, and {package} is "
            "not installed: pip install scikit-image scikit-learn (both are in gan-forge's 'train' extra), "
            "or use --data folder:PATH"
        )
    return Path(next(iter(spec.submodule_search_locations))) / folder


def photo_paths(entries: tuple[tuple[str, str, str], ...]) -> list[Path]:
    paths = []
    for package, folder, name in entries:
        path = _package_folder(package, folder) / name
        if not path.is_file():
            raise DatasetError(f"--data photos: {path} is missing from the installed {package}; reinstall it")
        paths.append(path)
    return paths


# -------------------------------------------------------------------------------------------------- data set
class SRCropDataset(Dataset):
    """Random (LR, HR) crops of the training images; `eval_images` / `eval_names` are the held-out HR images
    (modcropped to the scale, centre-cropped to at most EVAL_MAX_SIDE) that `evaluate` scores."""

    def __init__(
        self,
        train: ImageSet,
        eval_images: list[np.ndarray],
        eval_names: list[str],
        *,
        crop_size: int,
        scale: int,
        seed: int,
        kind: str,
        source: str = "",
        recolour: bool = False,
    ) -> None:
        if crop_size % scale:
            raise DatasetError(f"crop size {crop_size} is not a multiple of the scale {scale}")
        if len(train) == 0:
            raise DatasetError(f"{kind}: no training images")
        self.train, self.eval_images, self.eval_names = train, eval_images, eval_names
        self.crop_size, self.scale, self.seed, self.kind, self.source = crop_size, scale, seed, kind, source
        self.recolour = recolour
        self.crops_per_image = max(1, math.ceil(CROPS_PER_EPOCH / len(train)))
        if train.arrays is not None:
            self.images = train.arrays  # the loop reads this attribute as "in memory: no worker processes"

    def __len__(self) -> int:
        return len(self.train) * self.crops_per_image

    def crop(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(LR, HR) uint8 arrays for one index: which image, where, and which flip/rotation follow from
        (seed, index) alone."""
        image = self.train.get(index % len(self.train))
        rng = np.random.default_rng([self.seed, index])
        h, w = image.shape[:2]
        c = self.crop_size
        top, left = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        hr = dihedral(image[top : top + c, left : left + c], int(rng.integers(8)))
        if self.recolour:  # drawn after the crop and flip, so crops without it are unchanged
            hr = colour_augment.recolour(hr, rng)
        return bicubic_downscale(hr, self.scale), hr

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        lr, hr = self.crop(index)
        return {"lr": lr_tensor(lr), "hr": hr_tensor(hr)}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "scale": self.scale,
            "crop_size": self.crop_size,
            "train_images": self.train.names,
            "eval_images": self.eval_names,
            "crops_per_image": self.crops_per_image,
            "length": len(self),
            "colour_augment": self.recolour,
        }


def prepare_eval_image(image: np.ndarray, scale: int, max_side: int = EVAL_MAX_SIDE) -> np.ndarray:
    """Centre-crop to at most max_side (rounded down to the scale), then modcrop."""
    side = max_side - max_side % scale
    h, w = image.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return modcrop(image[top : top + side, left : left + side], scale)


def _split_training(
    paths: list[Path], names: list[str], crop_size: int, where: str
) -> tuple[list[Path], list[str]]:
    """Drop (with a warning) training images smaller than the crop; a clear error if none is left."""
    kept_paths, kept_names, largest = [], [], (0, 0)
    for path, name in zip(paths, names, strict=True):
        size = _image_size(path)
        if size is None:
            continue
        largest = max(largest, size, key=lambda s: min(s))
        if min(size) < crop_size:
            warnings.warn(f"skipping {path}: {size[0]}x{size[1]} is smaller than the {crop_size}x{crop_size} "
                          "HR crop", stacklevel=3)
            continue
        kept_paths.append(path)
        kept_names.append(name)
    if not kept_paths:
        raise DatasetError(
            f"no training image in {where} is at least {crop_size}x{crop_size} (the HR crop; the largest readable "
            f"one is {largest[0]}x{largest[1]}): use larger images or a smaller --crop-size (a multiple of the "
            "scale, and of 16 for srgan's discriminator)"
        )
    return kept_paths, kept_names


def _load_eval(paths: list[Path], names: list[str], scale: int) -> tuple[list[np.ndarray], list[str]]:
    images, kept = [], []
    for path, name in zip(paths, names, strict=True):
        if _image_size(path) is None:
            continue
        image = prepare_eval_image(np.asarray(load_rgb(path)), scale)
        if min(image.shape[:2]) < EVAL_MIN_SIDE:
            warnings.warn(f"not evaluating on {path}: smaller than {EVAL_MIN_SIDE}x{EVAL_MIN_SIDE}", stacklevel=3)
            continue
        images.append(image)
        kept.append(name)
    return images, kept


def held_out_indices(n: int) -> list[int]:
    """A fixed, evenly spaced 10% of n name-sorted images (1 to 8; none when n < 2)."""
    if n < 2:
        return []
    count = min(8, max(1, n // 10))
    return sorted({int((i + 0.5) * n / count) for i in range(count)})


def photos_dataset(crop_size: int, scale: int, seed: int, recolour: bool = False) -> SRCropDataset:
    train_paths, eval_paths = photo_paths(PHOTOS_TRAIN), photo_paths(PHOTOS_EVAL)
    train_names, eval_names = [e[2] for e in PHOTOS_TRAIN], [e[2] for e in PHOTOS_EVAL]
    train_paths, train_names = _split_training(train_paths, train_names, crop_size, "the built-in photos")
    eval_images, eval_names = _load_eval(eval_paths, eval_names, scale)
    train = _from_paths(train_paths, train_names, in_memory=True)
    return SRCropDataset(train, eval_images, eval_names, crop_size=crop_size, scale=scale, seed=seed, kind="photos",
                         recolour=recolour)


def folder_dataset(root: Path, crop_size: int, scale: int, seed: int, recolour: bool = False) -> SRCropDataset:
    paths = find_images(root)
    if not paths:
        raise DatasetError(f"no images in {root} (searched recursively for .png, .jpg, .jpeg, .webp, .bmp)")
    names = [str(p.relative_to(root)) for p in paths]
    held = set(held_out_indices(len(paths)))
    eval_images, eval_names = _load_eval([paths[i] for i in sorted(held)], [names[i] for i in sorted(held)], scale)
    train_paths = [p for i, p in enumerate(paths) if i not in held]
    train_names = [n for i, n in enumerate(names) if i not in held]
    if not held:
        warnings.warn(f"{root} holds a single image: training on it, nothing held out for evaluation", stacklevel=2)
    train_paths, train_names = _split_training(train_paths, train_names, crop_size, str(root))
    sizes = [_image_size(p) or (0, 0) for p in train_paths]
    in_memory = sum(w * h * 3 for w, h in sizes) <= IN_MEMORY_BYTES
    train = _from_paths(train_paths, train_names, in_memory)
    return SRCropDataset(train, eval_images, eval_names, crop_size=crop_size, scale=scale, seed=seed,
                         kind="folder", source=str(root), recolour=recolour)


def shapes_dataset(length: int, crop_size: int, scale: int, seed: int, recolour: bool = False) -> SRCropDataset:
    side = max(2 * crop_size, 64)
    shapes = ShapesDataset(image_size=side, length=length + SHAPES_EVAL, seed=seed)
    arrays = [img.permute(1, 2, 0).numpy() for img in shapes.images]
    train = ImageSet(names=[f"shape_{i}" for i in range(length)], arrays=arrays[:length])
    eval_images = [modcrop(a, scale) for a in arrays[length:]]
    eval_names = [f"shape_{i}" for i in range(length, length + SHAPES_EVAL)]
    return SRCropDataset(train, eval_images, eval_names, crop_size=crop_size, scale=scale, seed=seed, kind="shapes",
                         recolour=recolour)


def build_sr_dataset(spec: str, config: Any, seed: int = 0) -> SRCropDataset:
    """`--data` for the super-resolution architectures (config: crop_size, scale and optionally
    colour_augment, see colour_augment.resolve)."""
    kind, _, arg = spec.partition(":")
    crop_size, scale = int(config.crop_size), int(config.scale)
    recolour = colour_augment.resolve(str(getattr(config, "colour_augment", "off")), kind)
    if kind == "photos" and not arg:
        return photos_dataset(crop_size, scale, seed, recolour)
    if kind == "folder":
        if not arg:
            raise DatasetError("folder:PATH needs a path, e.g. --data folder:~/DIV2K_train_HR")
        return folder_dataset(Path(arg).expanduser(), crop_size, scale, seed, recolour)
    if kind == "shapes":
        length = shapes_length(arg, SHAPES_DEFAULT_LENGTH)
        if length < 1:
            raise DatasetError(f"shapes:N needs N >= 1, got {length}")
        return shapes_dataset(length, crop_size, scale, seed, recolour)
    raise DatasetError(f"unknown data spec {spec!r} for super-resolution: use 'photos' (built in), "
                       "'folder:PATH' (HR images) or 'shapes[:N]'")
