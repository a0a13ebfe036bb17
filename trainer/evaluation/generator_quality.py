"""FID and KID of an unconditional generator against a data set, comparable from step to step.

`GeneratorEvaluator` is built once per run: it picks the feature space (Inception for real photographs,
`shapes-classifier-v4` for the built-in shapes), fails right there if that cannot be had (no Inception
weights), and computes the real images' features once. Each call then draws the same number of
generated images from the same seed, so a change in the score is a change in the generator, not in the
sample. Every score's key carries the feature space's name (`fid_inception-v3`,
`fid_shapes-classifier-v4`, ...), so that a shapes-classifier FID is never read as an Inception FID.

Images are compared as they would be saved: clamped to [-1, 1] and rounded to 8-bit levels, and
generated images of another size than the data (a PGGAN still growing) are brought to the data's size
first (nearest-neighbour up, as its sample grids show them; area down), as pytorch-fid compares files.
The global RNG is seeded inside a fork and restored afterwards, so evaluating mid-run leaves training's
random stream exactly where it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.evaluation import inception, shapes_features
from trainer.evaluation.fid_kid import frechet_distance, gaussian_fit, kernel_inception_distance
from trainer.models.common import sample_latents

DEFAULT_NUM_SAMPLES = 5000
DEFAULT_BATCH = 100
FEATURE_CHOICES = ("auto", "inception", "shapes")
INCEPTION_NAME = "inception-v3"

Generate = Callable[[int], Tensor]


class ShapesExtractor(nn.Module):
    """The shapes feature net's penultimate layer as a plain images -> features module."""

    def __init__(self, net: shapes_features.ShapesFeatureNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> Tensor:
        return self.net.features(images)


def is_shapes(dataset: Any) -> bool:
    describe = getattr(dataset, "describe", None)
    return callable(describe) and describe().get("kind") == "shapes"


def resolve_features(features: str, dataset: Any) -> str:
    """'auto' -> 'shapes' for the built-in shapes data set, else 'inception'."""
    if features not in FEATURE_CHOICES:
        raise ValueError(f"features must be one of {FEATURE_CHOICES}, got {features!r}")
    if features == "auto":
        return "shapes" if is_shapes(dataset) else "inception"
    if features == "shapes" and not is_shapes(dataset):
        raise ValueError(f"the {shapes_features.NAME} features only describe the built-in shapes data set; "
                         "use --features inception for other images")
    return features


def quantise(images: Tensor, size: int) -> Tensor:
    """Images as saved at the data's size: resized if needed, clamped to [-1, 1], on 8-bit levels."""
    images = images.float()
    if images.shape[-1] < size:
        images = F.interpolate(images, size=(size, size), mode="nearest")
    elif images.shape[-1] > size:
        images = F.interpolate(images, size=(size, size), mode="area")
    return torch.round((images.clamp(-1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0


@contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """The global CPU RNG (and the evaluation device's CUDA RNG) seeded inside a fork, restored after;
    other GPUs' generators are neither touched nor initialised."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def latent_generate(
    module: Callable[[Tensor], Tensor], latent_dim: int, distribution: str, device: torch.device | str = "cpu"
) -> Generate:
    """`generate` for a latent -> image module: latents drawn on the CPU from the global RNG (which the
    evaluator seeds), then moved to `device`. gan-eval does exactly this for checkpoints and ONNX models,
    so a training loop that does it too logs the numbers gan-eval gives for the same checkpoint."""

    def generate(n: int) -> Tensor:
        return module(sample_latents(latent_dim, distribution, n).to(device))

    return generate


def _first_image(item: Any) -> Tensor:
    return item[0] if isinstance(item, (tuple, list)) else item


class GeneratorEvaluator:
    """FID and KID of `generate(n)` (n images in [-1, 1], NCHW) against `dataset`.

    - `features`: 'auto' (shapes-classifier-v4 for the shapes data set, Inception otherwise), 'inception'
      or 'shapes'. Inception needs the weights file (`inception_weights` or $GAN_INCEPTION_WEIGHTS);
      without it construction raises `inception.InceptionWeightsError`.
    - `num_samples` generated images per call; the real side is a fixed random subset of the data of the
      same size (all of it when smaller), chosen from `seed`. `seed` also seeds the global RNG that
      `generate` draws its latents from, so every call sees the same latents.
    - Returns {f"fid_{name}", f"kid_{name}", f"kid_std_{name}"} where name is `self.name`, and for the
      shapes features also shapes_features.shape_verdicts (share of confident shapes, each shape's share).
    """

    def __init__(
        self,
        dataset: Any,
        features: str = "auto",
        num_samples: int = DEFAULT_NUM_SAMPLES,
        seed: int = 0,
        device: torch.device | str = "cpu",
        *,
        inception_weights: str | Path | None = None,
        cache_dir: str | Path | None = None,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        if num_samples < 2:
            raise ValueError(f"num_samples must be at least 2, got {num_samples}")
        if len(dataset) < 2:
            raise ValueError(f"the data set needs at least 2 images, has {len(dataset)}")
        self.kind = resolve_features(features, dataset)
        self.num_samples, self.seed, self.batch_size = num_samples, seed, batch_size
        self.device = torch.device(device)
        self.image_size = int(_first_image(dataset[0]).shape[-1])
        with seeded_global_rng(seed, torch.device("cpu")):  # building nets draws initial weights
            if self.kind == "inception":
                self.name = INCEPTION_NAME
                self.extractor: nn.Module = inception.load_inception(inception_weights, self.device)
            else:
                self.name = shapes_features.NAME
                net = shapes_features.load_extractor(self.image_size, cache_dir)
                self.extractor = ShapesExtractor(net).to(self.device).eval()
        index = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:num_samples]
        self.real_samples = int(index.numel())
        self.real_features = self._features(
            torch.stack([_first_image(dataset[int(i)]) for i in index[start : start + batch_size]])
            for start in range(0, self.real_samples, batch_size)
        )
        self.real_mu, self.real_sigma = gaussian_fit(self.real_features)
        self.real_verdicts = self._verdicts(self.real_features)

    def _verdicts(self, features: np.ndarray) -> dict[str, float]:
        """shapes_features.shape_verdicts for the shapes features (empty for Inception's)."""
        if not isinstance(self.extractor, ShapesExtractor):
            return {}
        return shapes_features.shape_verdicts(self.extractor.net, torch.from_numpy(features).to(self.device))

    @property
    def keys(self) -> tuple[str, str, str]:
        return f"fid_{self.name}", f"kid_{self.name}", f"kid_std_{self.name}"

    def describe(self) -> dict[str, Any]:
        real = {f"real_{k}": v for k, v in self.real_verdicts.items() if k == "shape_confident"}
        return {"features": self.name, "num_samples": self.num_samples, "real_samples": self.real_samples,
                "seed": self.seed, **real}

    @torch.no_grad()
    def _features(self, batches: Any) -> np.ndarray:
        chunks = [self.extractor(quantise(b.to(self.device), self.image_size)).double().cpu() for b in batches]
        return torch.cat(chunks).numpy()

    def generated_features(self, generate: Generate) -> np.ndarray:
        """Features of `num_samples` images from `generate`, called in chunks under the fixed seed."""

        def batches() -> Iterator[Tensor]:
            for start in range(0, self.num_samples, self.batch_size):
                n = min(self.batch_size, self.num_samples - start)
                images = generate(n)
                if images.ndim != 4 or images.shape[0] != n or images.shape[1] != 3:
                    raise ValueError(f"generate({n}) must return [{n}, 3, H, W] images, got {tuple(images.shape)}")
                yield images

        with seeded_global_rng(self.seed, self.device), torch.no_grad():
            return self._features(batches())

    def __call__(self, generate: Generate) -> dict[str, float]:
        fake = self.generated_features(generate)
        fid = frechet_distance(self.real_mu, self.real_sigma, *gaussian_fit(fake))
        kid, kid_std = kernel_inception_distance(self.real_features, fake, seed=self.seed)
        fid_key, kid_key, kid_std_key = self.keys
        return {fid_key: fid, kid_key: kid, kid_std_key: kid_std, **self._verdicts(fake)}
