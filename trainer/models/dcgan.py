"""DCGAN (Radford et al. 2016), as pytorch/examples dcgan/main.py builds it at 64x64.

All-convolutional: G is a stack of 4x4 transposed convolutions with BatchNorm + ReLU and a Tanh output;
D mirrors it with strided 4x4 convolutions, LeakyReLU(0.2), BatchNorm from the second layer, no pooling
and no fully connected hidden layer. The depth follows the image size (one up/down-sampling layer per
factor of two above 4x4), so 64x64 gives the reference network exactly.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from trainer.architecture import Architecture
from trainer.export_spec import latent_export_spec
from trainer.training.unconditional import STABILISER_DEFAULTS, UnconditionalConfig, build_unconditional

DCGANConfig = UnconditionalConfig.with_defaults(
    "DCGANConfig", __name__,
    image_size=(64, "image side, a power of two >= 16 (reference: 64)"),
    latent_dim=(100, "size of z (reference: 100)"),
    ngf=(64, "generator width: channels of the last hidden layer (reference: 64)"),
    ndf=(64, "discriminator width: channels of the first layer (reference: 64)"),
    latent_distribution=("normal", "z ~ N(0,1) ('normal', reference code) or U(-1,1) ('uniform', paper)"),
    loss=("bce", "adversarial loss: bce | lsgan | lsgan-01 | wgan (reference: bce)"),
    lr=(2e-4, "Adam learning rate for G and D (reference: 2e-4)"),
    beta1=(0.5, "Adam beta1 (reference: 0.5)"),
    beta2=(0.999, "Adam beta2 (reference: 0.999)"),
    batch_size=(64, "minibatch size (reference: 64; paper: 128)"),
    ema_beta=(0.0, "serve an EMA of G's weights, G_ema = beta * G_ema + (1 - beta) * G after every "
              "step (0: off, serve G itself, as the reference does; PGGAN's paper: 0.999)"),
    **STABILISER_DEFAULTS,
)


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


def build_generator(config: UnconditionalConfig) -> Generator:
    generator = Generator(config.latent_dim, config.ngf, config.image_size)
    generator.apply(init_weights)
    return generator


def build_discriminator(config: UnconditionalConfig) -> Discriminator:
    discriminator = Discriminator(config.ndf, config.image_size)
    discriminator.apply(init_weights)
    return discriminator


ARCHITECTURE = Architecture(
    name="dcgan",
    task="generate",
    summary="DCGAN (Radford et al. 2016): all-convolutional G and D with BatchNorm",
    config_cls=DCGANConfig,
    build_generator=build_generator,
    build_discriminator=build_discriminator,
    algorithm=build_unconditional,
    export_spec=latent_export_spec,
)
