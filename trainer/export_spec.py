"""What an architecture tells the exporter: its task, its graph's inputs and outputs, manifest facts.

The exporter knows no architecture by name: it asks the registry for this declaration, so a new GAN
only has to describe its generator's signature here to become exportable and servable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class TensorDecl:
    """A graph input or output; `None` marks a dynamic axis (batch always, height/width where the
    network is fully convolutional). `example(batch, rng, size)` draws a valid input for parity checks;
    `size` is a spatial side for dynamic-size inputs and None otherwise."""

    name: str
    shape: tuple[int | None, ...]
    example: Callable[[int, torch.Generator, int | None], Tensor] | None = None


@dataclass
class ExportSpec:
    task: str
    module: nn.Module
    inputs: list[TensorDecl]
    outputs: list[TensorDecl]
    manifest_fields: dict[str, Any] = field(default_factory=dict)
    # parity is checked at these spatial sizes too when inputs have dynamic height/width
    example_sizes: tuple[int, ...] = ()


def latent_generator_spec(
    generator: nn.Module, latent_dim: int, distribution: str, image_size: int, extra: dict[str, Any] | None = None
) -> ExportSpec:
    """The `generate` signature: latent [N, latent_dim] -> image [N, 3, S, S] in [-1, 1]."""

    def example(batch: int, rng: torch.Generator, size: int | None = None) -> Tensor:
        if distribution == "uniform":
            return torch.rand(batch, latent_dim, generator=rng) * 2 - 1
        return torch.randn(batch, latent_dim, generator=rng)

    return ExportSpec(
        task="generate",
        module=generator,
        inputs=[TensorDecl("latent", (None, latent_dim), example)],
        outputs=[TensorDecl("image", (None, 3, image_size, image_size))],
        manifest_fields={
            "image_size": image_size,
            "channels": 3,
            "latent_dim": latent_dim,
            "latent_distribution": distribution,
            "output_range": (-1.0, 1.0),
            "extra": extra or {},
        },
    )


def latent_export_spec(config: Any, generator: nn.Module) -> ExportSpec:
    """The export spec of an architecture whose config names its latents and image size (DCGAN, LSGAN)."""
    return latent_generator_spec(generator, config.latent_dim, config.latent_distribution, config.image_size)
