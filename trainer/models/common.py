"""Small pieces every architecture module shares."""

from __future__ import annotations

from dataclasses import field
from typing import Any

import torch
from torch import Tensor

LATENT_DISTRIBUTIONS = ("normal", "uniform")


def option(default: Any, help_text: str) -> Any:
    """A config field whose help text the CLI shows next to the paper's default."""
    return field(default=default, metadata={"help": help_text})


def sample_latents(
    latent_dim: int,
    distribution: str,
    n: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """z ~ N(0, 1) or U(-1, 1); the exported manifest records which, so the service samples alike."""
    if distribution == "normal":
        return torch.randn(n, latent_dim, generator=generator, device=device)
    if distribution == "uniform":
        return torch.rand(n, latent_dim, generator=generator, device=device) * 2 - 1
    raise ValueError(f"unknown latent distribution {distribution!r}; choose from {LATENT_DISTRIBUTIONS}")
