"""Any folder of images as a training set, resized and centre-cropped like the papers' data.

Real folders hold surprises (a truncated JPEG, a stray text file named .png, CMYK or palette images), so
files are checked once when the set is built and any that fail are skipped with a warning naming them;
a decode failure later (a file that passed the header check) is warned about and replaced by the next
good image, so training never dies deep inside a DataLoader worker.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})


class DatasetError(ValueError):
    """A data set that cannot be used at all, with a message that says what to change."""


def find_images(root: Path) -> list[Path]:
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_rgb(path: Path) -> Image.Image:
    """Open any Pillow-readable image as RGB; transparency is composited on white, not dropped to black."""
    with Image.open(path) as img:
        img.load()
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return img.convert("RGB")


def resize_center_crop(img: Image.Image, size: int, crop: int | None = None) -> Image.Image:
    """Optionally centre-crop a `crop` square first (StarGAN's CelebA 178), then resize the short side
    to `size` and centre-crop to size x size."""
    if crop is not None:
        w, h = img.size
        c = min(crop, w, h)
        left, top = (w - c) // 2, (h - c) // 2
        img = img.crop((left, top, left + c, top + c))
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """uint8 HWC image -> float CHW tensor in [-1, 1]."""
    array = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


class ImageFolderDataset(Dataset):
    def __init__(self, root: str | Path, image_size: int, crop: int | None = None) -> None:
        self.root, self.image_size, self.crop = Path(root), image_size, crop
        candidates = find_images(self.root)
        self.paths: list[Path] = []
        for path in candidates:
            try:
                with Image.open(path) as img:
                    img.verify()
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
                warnings.warn(f"skipping unreadable image {path}: {exc}", stacklevel=2)
                continue
            self.paths.append(path)
        if not self.paths:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise DatasetError(
                f"no usable images in {self.root} (searched recursively for {suffixes}; "
                f"{len(candidates)} candidate file(s) found, all unreadable)"
                if candidates
                else f"no images in {self.root} (searched recursively for {suffixes})"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        for attempt in range(len(self.paths)):
            path = self.paths[(index + attempt) % len(self.paths)]
            try:
                return to_tensor(resize_center_crop(load_rgb(path), self.image_size, self.crop))
            except (OSError, ValueError, SyntaxError) as exc:
                warnings.warn(f"skipping image that failed to decode {path}: {exc}", stacklevel=2)
        raise DatasetError(f"no image in {self.root} could be decoded")

    def describe(self) -> dict[str, object]:
        return {"kind": "folder", "root": str(self.root), "image_size": self.image_size, "length": len(self)}
