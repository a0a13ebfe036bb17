"""The built-in `shapes` data set: procedural images with known attributes.

It exists so that every GAN can be trained, checked and demonstrated with no download: each image is
one filled shape of one colour on a plain background, and its labels (shape, colour, size, position)
are known exactly, which later gives StarGAN its domains and the evaluation its classifiers.
Images are a pure function of (seed, index), so two runs see the same data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from trainer.data.image_folder import DatasetError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
    "magenta": (210, 50, 200),
    "cyan": (40, 210, 215),
}
BACKGROUND = (24, 24, 28)
SUPERSAMPLE = 4  # drawn at 4x and box-filtered down, so edges are anti-aliased like a photograph


@dataclass(frozen=True)
class ShapeSample:
    shape: int
    colour: int
    size: float  # radius as a fraction of the image side
    cx: float
    cy: float
    angle: float


def sample_parameters(seed: int, index: int) -> ShapeSample:
    rng = np.random.default_rng([seed, index])
    size = float(rng.uniform(0.22, 0.42))
    cx, cy = rng.uniform(size, 1.0 - size, size=2)
    return ShapeSample(
        shape=int(rng.integers(len(SHAPES))),
        colour=int(rng.integers(len(COLOURS))),
        size=size,
        cx=float(cx),
        cy=float(cy),
        angle=float(rng.uniform(0, 2 * np.pi)),
    )


def render(params: ShapeSample, image_size: int) -> np.ndarray:
    """Draw one sample as an HxWx3 uint8 array."""
    big = image_size * SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    colour = list(COLOURS.values())[params.colour]
    cx, cy, r = params.cx * big, params.cy * big, params.size * big
    name = SHAPES[params.shape]
    if name == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif name == "square":
        half = r * 0.85
        corners = [(-half, -half), (half, -half), (half, half), (-half, half)]
        draw.polygon(_rotate(corners, params.angle, cx, cy), fill=colour)
    else:
        corners = [(r * np.cos(a), r * np.sin(a)) for a in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6)]
        draw.polygon(_rotate(corners, params.angle, cx, cy), fill=colour)
    return np.asarray(canvas.resize((image_size, image_size), Image.Resampling.BOX))


def _rotate(points: list[tuple[float, float]], angle: float, cx: float, cy: float) -> list[tuple[float, float]]:
    c, s = np.cos(angle), np.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


class ShapesDataset(Dataset):
    """`length` images rendered once into memory (uint8), served as float tensors in [-1, 1].

    Rendering up front costs about a second for 10k images at 64x64 and makes every epoch after it free;
    the labels are kept both as class indices and as binary attribute vectors (one-hot per group).
    """

    attribute_groups: dict[str, tuple[str, ...]] = {"shape": SHAPES, "colour": tuple(COLOURS)}

    def __init__(self, image_size: int = 64, length: int = 10_000, seed: int = 0) -> None:
        if image_size < 8:
            raise ValueError(f"shapes: image size must be at least 8, got {image_size}")
        if length < 1:
            raise ValueError(f"shapes: length must be positive, got {length}")
        self.image_size, self.length, self.seed = image_size, length, seed
        self.params = [sample_parameters(seed, i) for i in range(length)]
        pixels = np.stack([render(p, image_size) for p in self.params])
        self.images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()  # N,3,H,W uint8
        self.shape_labels = torch.tensor([p.shape for p in self.params])
        self.colour_labels = torch.tensor([p.colour for p in self.params])

    @property
    def attribute_names(self) -> list[str]:
        return [f"{group}_{value}" for group, values in self.attribute_groups.items() for value in values]

    @property
    def exclusive_groups(self) -> list[list[str]]:
        return [[f"{group}_{value}" for value in values] for group, values in self.attribute_groups.items()]

    def attributes(self, index: int) -> torch.Tensor:
        """Binary attribute vector in `attribute_names` order."""
        vec = torch.zeros(len(SHAPES) + len(COLOURS))
        vec[int(self.shape_labels[index])] = 1.0
        vec[len(SHAPES) + int(self.colour_labels[index])] = 1.0
        return vec

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index].float().div_(127.5).sub_(1.0)

    def describe(self) -> dict[str, object]:
        return {"kind": "shapes", "image_size": self.image_size, "length": self.length, "seed": self.seed}


def shapes_length(arg: str, default: int = 10_000) -> int:
    """N of a `shapes:N` data spec (`arg` is what follows the colon; empty: `default`)."""
    try:
        return int(arg) if arg else default
    except ValueError:
        raise DatasetError(f"shapes:N needs an integer N, got {arg!r}") from None
