"""Data sets selected by a command-line spec: `shapes`, `shapes:N` (N images) or `folder:PATH`."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from trainer.data.image_folder import DatasetError, ImageFolderDataset
from trainer.data.sampler import StepBatchSampler
from trainer.data.shapes import ShapesDataset, shapes_length

__all__ = ["DatasetError", "ImageFolderDataset", "ShapesDataset", "StepBatchSampler", "build_dataset"]


def build_dataset(spec: str, image_size: int, seed: int = 0) -> Dataset:
    kind, _, arg = spec.partition(":")
    if kind == "shapes":
        length = shapes_length(arg)
        return ShapesDataset(image_size=image_size, length=length, seed=seed)
    if kind == "folder":
        if not arg:
            raise DatasetError("folder:PATH needs a path, e.g. --data folder:~/images")
        return ImageFolderDataset(Path(arg).expanduser(), image_size)
    raise DatasetError(f"unknown data spec {spec!r}: use 'shapes', 'shapes:N' or 'folder:PATH'")
