"""Images with binary attribute labels, for StarGAN: `shapes`, CelebA's own layout, and folder + CSV.

Each data set yields `(image in [-1, 1], label)` where `label` is a float 0/1 vector over the selected
attributes (in selection order), and knows its `attributes`, its `exclusive_groups` (restricted to the
selection) and a `held_out()` set for evaluation:
- `shapes[:N]`: the built-in set; its attributes are shape_circle.. and colour_red..; the groups
  `shape` and `colour` can be selected by name. The held-out set is rendered from another seed.
- `celeba:ROOT` (ROOT holds `list_attr_celeba.txt` and the images, in ROOT/img_align_celeba, ROOT/images
  or ROOT itself) or `celeba:IMAGES_DIR,ATTR_FILE`: the paper's preprocessing (centre crop 178, resize),
  and its test split of 2,000 images: the attribute rows shuffled with Python's random seeded 1234, as
  the reference code does, the first 2,000 held out (the reference's `(i+1) < 2000` holds out 1,999).
- `csv:IMAGES_DIR,ATTRS.csv`: a header row, the file name (relative to IMAGES_DIR) in the first column,
  one column per attribute with 1/0, 1/-1, true/false or yes/no. Split like CelebA.
Sets smaller than 20,000 images hold out a tenth instead of 2,000, so small folders still train.
"""

from __future__ import annotations

import csv
import random
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from trainer.data.attributes import LabelError, format_groups, parse_groups, restrict_groups, select_attributes
from trainer.data.image_folder import DatasetError, load_rgb, resize_center_crop, to_tensor
from trainer.data.shapes import ShapesDataset, shapes_length

CELEBA_ATTR_FILE = "list_attr_celeba.txt"
CELEBA_DEFAULT_ATTRIBUTES = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")  # the paper's five
CELEBA_EXCLUSIVE = (("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"),)  # hair colours
TEST_IMAGES = 2000
SPLIT_SEED = 1234  # the reference code's random.seed(1234) before shuffling the attribute rows
SHAPES_HELD_OUT_SEED_OFFSET = 1_000_003
SPEC_HELP = "shapes[:N] | celeba:ROOT | celeba:IMAGES_DIR,ATTR_FILE | csv:IMAGES_DIR,ATTRS.csv"


class LabelledDataset(Dataset):
    """The interface StarGAN's trainer and evaluation rely on."""

    attributes: list[str]
    exclusive_groups: list[list[str]]
    labels: Tensor  # N x len(attributes), float 0/1

    def held_out(self, max_images: int) -> LabelledDataset:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError


class ShapesAttributeDataset(LabelledDataset):
    """The built-in shapes with a chosen subset of their one-hot shape/colour attributes as labels."""

    def __init__(
        self, image_size: int, length: int, seed: int, attributes: Sequence[str], groups: Sequence[Sequence[str]]
    ) -> None:
        self.shapes = ShapesDataset(image_size=image_size, length=length, seed=seed)
        self.images = self.shapes.images  # in memory: the loop then uses no DataLoader workers
        self.attributes, self.exclusive_groups = list(attributes), [list(g) for g in groups]
        columns = [self.shapes.attribute_names.index(a) for a in self.attributes]
        full = torch.stack([self.shapes.attributes(i) for i in range(length)])
        self.labels = full[:, columns].contiguous()
        self.image_size, self.length, self.seed = image_size, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.shapes[index], self.labels[index]

    def held_out(self, max_images: int) -> ShapesAttributeDataset:
        return ShapesAttributeDataset(
            self.image_size, max_images, self.seed + SHAPES_HELD_OUT_SEED_OFFSET, self.attributes, self.exclusive_groups
        )

    def describe(self) -> dict[str, Any]:
        return {**self.shapes.describe(), "attributes": self.attributes, "exclusive_groups": self.exclusive_groups}


class FileAttributeDataset(LabelledDataset):
    """Image files with label rows, decoded on access (CelebA, folder + CSV)."""

    def __init__(
        self,
        kind: str,
        paths: Sequence[Path],
        labels: Tensor,
        attributes: Sequence[str],
        groups: Sequence[Sequence[str]],
        image_size: int,
        crop: int | None,
        held_out: tuple[Sequence[Path], Tensor] | None = None,
        source: dict[str, Any] | None = None,
    ) -> None:
        if not paths:
            raise DatasetError(f"{kind}: no images to train on")
        self.kind, self.paths, self.labels = kind, list(paths), labels
        self.attributes, self.exclusive_groups = list(attributes), [list(g) for g in groups]
        self.image_size, self.crop = image_size, crop
        self._held_out, self.source = held_out, source or {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        for attempt in range(len(self.paths)):
            i = (index + attempt) % len(self.paths)
            try:
                image = to_tensor(resize_center_crop(load_rgb(self.paths[i]), self.image_size, self.crop))
                return image, self.labels[i]
            except (OSError, ValueError, SyntaxError) as exc:
                warnings.warn(f"skipping image that failed to decode {self.paths[i]}: {exc}", stacklevel=2)
        raise DatasetError(f"{self.kind}: no image could be decoded")

    def held_out(self, max_images: int) -> FileAttributeDataset:
        """The test split (evaluation uses its first `max_images`); the training set itself if none."""
        if self._held_out is None or not self._held_out[0]:
            paths, labels = self.paths, self.labels
        else:
            paths, labels = self._held_out
        return FileAttributeDataset(self.kind, list(paths)[:max_images], labels[:max_images], self.attributes,
                                    self.exclusive_groups, self.image_size, self.crop, None, self.source)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.source, "image_size": self.image_size, "crop": self.crop,
                "length": len(self), "attributes": self.attributes, "exclusive_groups": self.exclusive_groups}


def parse_binary(value: str, where: str) -> float:
    text = value.strip().lower()
    if text in ("1", "1.0", "true", "yes", "y"):
        return 1.0
    if text in ("0", "0.0", "-1", "-1.0", "false", "no", "n"):
        return 0.0
    raise DatasetError(f"{where}: {value!r} is not a binary attribute value (use 1/0, 1/-1, true/false)")


def read_celeba_attributes(path: Path) -> tuple[list[str], list[str], list[list[float]]]:
    """`list_attr_celeba.txt`: the image count, then the 40 attribute names, then 'FILE v1 .. v40' rows of
    1/-1. Returns (attribute names, file names, 0/1 rows) in file order."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise DatasetError(f"cannot read CelebA attribute file {path}: {exc}") from exc
    if len(lines) < 2:
        raise DatasetError(f"{path}: expected a count line and a header line, found {len(lines)} line(s)")
    names = lines[1].split()
    files, rows = [], []
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise DatasetError(f"{path}:{number}: expected a file name and {len(names)} values, got {len(parts)}")
        files.append(parts[0])
        rows.append([parse_binary(v, f"{path}:{number}") for v in parts[1:]])
    count = lines[0].strip()
    if count.isdigit() and int(count) != len(files):
        warnings.warn(f"{path}: header says {count} images, {len(files)} rows found", stacklevel=2)
    return names, files, rows


def read_csv_attributes(path: Path) -> tuple[list[str], list[str], list[list[float]]]:
    """A CSV with a header; first column the file name, the others binary attributes."""
    try:
        with open(path, newline="") as f:
            table = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    except OSError as exc:
        raise DatasetError(f"cannot read attribute CSV {path}: {exc}") from exc
    if len(table) < 2 or len(table[0]) < 2:
        raise DatasetError(f"{path}: expected a header (file, attribute, ...) and at least one row")
    names = [n.strip() for n in table[0][1:]]
    files, rows = [], []
    for number, row in enumerate(table[1:], start=2):
        if len(row) != len(names) + 1:
            raise DatasetError(f"{path}:{number}: expected {len(names) + 1} columns, got {len(row)}")
        files.append(row[0].strip())
        rows.append([parse_binary(v, f"{path}:{number}") for v in row[1:]])
    return names, files, rows


def held_out_size(n: int) -> int:
    """The paper's 2,000 test images, or a tenth of a set under 20,000 images."""
    return TEST_IMAGES if n >= 10 * TEST_IMAGES else n // 10


def _file_dataset(
    kind: str,
    image_dir: Path,
    names: list[str],
    files: list[str],
    rows: list[list[float]],
    config: Any,
    default_attributes: Sequence[str],
    default_groups: Sequence[Sequence[str]],
    crop: int | None,
    source: dict[str, Any],
) -> FileAttributeDataset:
    attributes, groups = resolve_selection(config, names, {}, default_attributes, default_groups)
    columns = [names.index(a) for a in attributes]
    order = list(range(len(files)))
    random.Random(SPLIT_SEED).shuffle(order)
    present = [i for i in order if (image_dir / files[i]).is_file()]
    if len(present) < len(order):
        warnings.warn(f"{kind}: {len(order) - len(present)} of {len(order)} listed images are missing in "
                      f"{image_dir}; skipping them", stacklevel=2)
    if not present:
        raise DatasetError(f"{kind}: none of the {len(files)} listed images exist in {image_dir}")
    n_test = held_out_size(len(present))
    test, train = present[:n_test], present[n_test:]

    def pick(indices: list[int]) -> tuple[list[Path], Tensor]:
        labels = torch.tensor([[rows[i][c] for c in columns] for i in indices], dtype=torch.float32)
        return [image_dir / files[i] for i in indices], labels.reshape(len(indices), len(columns))

    train_paths, train_labels = pick(sorted(train))  # file order, so the sampler's permutation decides
    return FileAttributeDataset(kind, train_paths, train_labels, attributes, groups, config.image_size, crop,
                                pick(test), {**source, "test_images": n_test})


def resolve_selection(
    config: Any,
    available: Sequence[str],
    named_groups: dict[str, Sequence[str]],
    default_attributes: Sequence[str],
    default_groups: Sequence[Sequence[str]],
) -> tuple[list[str], list[list[str]]]:
    """The attributes and exclusive groups a run uses, written back into `config` (as strings).

    The config is what the checkpoint stores and what rebuilds the generator for export, so it must name
    the resolved attributes (label order, hence G's input size) and groups; on resume the resolved names
    resolve to themselves.
    """
    attributes = select_attributes(config.attributes or list(default_attributes), available, named_groups)
    groups = parse_groups(config.exclusive_groups) if config.exclusive_groups else [list(g) for g in default_groups]
    unknown = sorted({a for g in groups for a in g} - set(available))
    if unknown:
        raise LabelError(f"exclusive groups name unknown attributes {unknown}")
    groups = restrict_groups(groups, attributes)
    config.attributes, config.exclusive_groups = ",".join(attributes), format_groups(groups)
    return attributes, groups


def _celeba_paths(arg: str) -> tuple[Path, Path]:
    if "," in arg:
        images, attr = (Path(p).expanduser() for p in arg.split(",", 1))
        return images, attr
    root = Path(arg).expanduser()
    attr = root / CELEBA_ATTR_FILE
    if not attr.is_file():
        raise DatasetError(f"celeba: no {CELEBA_ATTR_FILE} in {root} (or use celeba:IMAGES_DIR,ATTR_FILE)")
    for images in (root / "img_align_celeba", root / "images", root):
        if images.is_dir() and (any(images.glob("*.jpg")) or any(images.glob("*.png"))):
            return images, attr
    raise DatasetError(f"celeba: no images in {root}/img_align_celeba, {root}/images or {root}")


def build_labelled_dataset(spec: str, config: Any, seed: int = 0) -> LabelledDataset:
    """`--data` for StarGAN (see the module docstring); resolves `config.attributes` in place."""
    kind, _, arg = spec.partition(":")
    if kind == "shapes":
        length = shapes_length(arg)
        groups = ShapesDataset.attribute_groups
        named = {g: [f"{g}_{v}" for v in values] for g, values in groups.items()}
        available = [a for members in named.values() for a in members]
        attributes, exclusive = resolve_selection(config, available, named, named["colour"], list(named.values()))
        return ShapesAttributeDataset(config.image_size, length, seed, attributes, exclusive)
    if kind == "celeba":
        if not arg:
            raise DatasetError("celeba:ROOT needs a path, e.g. --data celeba:~/data/celeba")
        images, attr = _celeba_paths(arg)
        names, files, rows = read_celeba_attributes(attr)
        crop = config.crop or None
        return _file_dataset("celeba", images, names, files, rows, config, CELEBA_DEFAULT_ATTRIBUTES,
                             CELEBA_EXCLUSIVE, crop, {"images": str(images), "attr_file": str(attr)})
    if kind == "csv":
        if "," not in arg:
            raise DatasetError("csv: needs IMAGES_DIR,ATTRS.csv, e.g. --data csv:photos,photos/labels.csv")
        images, table = (Path(p).expanduser() for p in arg.split(",", 1))
        if not images.is_dir():
            raise DatasetError(f"csv: image folder {images} does not exist")
        names, files, rows = read_csv_attributes(table)
        return _file_dataset("csv", images, names, files, rows, config, names, (), None,
                             {"images": str(images), "attr_file": str(table)})
    raise DatasetError(f"unknown data spec {spec!r} for StarGAN: use {SPEC_HELP}")
