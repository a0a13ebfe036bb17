"""DCGAN (Radford et al. 2016), as pytorch/examples dcgan/main.py builds it at 64x64.

All-convolutional: G is a stack of 4x4 transposed convolutions with BatchNorm + ReLU and a Tanh output;
D mirrors it with strided 4x4 convolutions, LeakyReLU(0.2), BatchNorm from the second layer, no pooling
and no fully connected hidden layer. The depth follows the image size (one up/down-sampling layer per
factor of two above 4x4), so 64x64 gives the reference network exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from trainer.models.common import option as _opt


@dataclass
class DCGANConfig:
    image_size: int = _opt(64, "image side, a power of two >= 16 (reference: 64)")
    latent_dim: int = _opt(100, "size of z (reference: 100)")
    ngf: int = _opt(64, "generator width: channels of the last hidden layer (reference: 64)")
    ndf: int = _opt(64, "discriminator width: channels of the first layer (reference: 64)")
    latent_distribution: str = _opt("normal", "z ~ N(0,1) ('normal', reference code) or U(-1,1) ('uniform', paper)")
    loss: str = _opt("bce", "adversarial loss: bce | lsgan | lsgan-01 | wgan (reference: bce)")
    lr: float = _opt(2e-4, "Adam learning rate for G and D (reference: 2e-4)")
    beta1: float = _opt(0.5, "Adam beta1 (reference: 0.5)")
    beta2: float = _opt(0.999, "Adam beta2 (reference: 0.999)")
    batch_size: int = _opt(64, "minibatch size (reference: 64; paper: 128)")
    ema_beta: float = _opt(0.0, "serve an EMA of G's weights, G_ema = beta * G_ema + (1 - beta) * G after every "
                            "step (0: off, serve G itself, as the reference does; PGGAN's paper: 0.999)")


def num_doublings(image_size: int) -> int:
    """Layers between 4x4 and the image size; 64 -> 4."""
    n = math.log2(image_size / 4)
    if image_size < 16 or not n.is_integer():
        raise ValueError(f"DCGAN image size must be a power of two >= 16, got {image_size}")
    return int(n)


def init_weights(module: nn.Module) -> None:
    """The paper's initialisation: conv weights N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    def __init__(self, latent_dim: int = 100, ngf: int = 64, image_size: int = 64, channels: int = 3) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        n = num_doublings(image_size)
        width = ngf * 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(n - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """Accepts z as (N, latent_dim) or the reference's (N, latent_dim, 1, 1)."""
        return self.main(z.reshape(z.shape[0], self.latent_dim, 1, 1))


class Discriminator(nn.Module):
    """Returns one logit per image; the sigmoid lives in the loss (see losses.NonSaturatingBCE)."""

    def __init__(self, ndf: int = 64, image_size: int = 64, channels: int = 3) -> None:
        super().__init__()
        n = num_doublings(image_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        width = ndf
        for _ in range(n - 1):
            layers += [
                nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width * 2),
                nn.LeakyReLU(0.2, True),
            ]
            width *= 2
        layers.append(nn.Conv2d(width, 1, 4, 1, 0, bias=False))
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x).flatten()


def build_generator(config: DCGANConfig) -> Generator:
    generator = Generator(config.latent_dim, config.ngf, config.image_size)
    generator.apply(init_weights)
    return generator


def build_discriminator(config: DCGANConfig) -> Discriminator:
    discriminator = Discriminator(config.ndf, config.image_size)
    discriminator.apply(init_weights)
    return discriminator
