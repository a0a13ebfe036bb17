"""Every architecture the trainer knows, in `gan-train`'s order.

Each entry is declared once, in its own module (trainer/models/<name>.py: config, networks, algorithm
builder, export spec; see trainer.architecture). `export/`, the CLIs and the tests look architectures up
here by name and never import a model module directly, so adding a GAN means its module plus one line
below; the tests parametrized over this list then cover it.
"""

from __future__ import annotations

from trainer.architecture import Architecture
from trainer.models import dcgan, lsgan, pggan, srgan, stargan

ARCHITECTURES: tuple[Architecture, ...] = (
    dcgan.ARCHITECTURE,
    lsgan.ARCHITECTURE,
    pggan.ARCHITECTURE,
    stargan.ARCHITECTURE,
    srgan.SRRESNET,
    srgan.SRGAN,
)


def architecture_names() -> list[str]:
    return [arch.name for arch in ARCHITECTURES]


def get_architecture(name: str) -> Architecture:
    for arch in ARCHITECTURES:
        if arch.name == name:
            return arch
    raise ValueError(f"unknown architecture {name!r}; choose from {sorted(architecture_names())}")
