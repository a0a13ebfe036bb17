"""LSGAN (Mao et al. 2017): the paper's own LSUN architecture, trained with the least-squares loss.

G: z -> linear projection to base x base x 256 -> 3x3 transposed convs, alternating stride 2 and stride 1
at 256 channels, then stride-2 layers halving the width, then a stride-1 layer to RGB + tanh; BatchNorm +
ReLU between. D: 5x5 stride-2 convs 64/128/256/512 with LeakyReLU(0.2), BatchNorm from the second layer,
and a linear output (no sigmoid: the least-squares loss reads raw scores).
The depth follows the image size: the side is base * 2^k with base in 4..7, which gives the paper's
112 = 7 * 2^4 exactly and 4 * 2^k for the power-of-two sizes the other models use.
"""

from __future__ import annotations

from torch import Tensor, nn

from trainer.architecture import Architecture
from trainer.export_spec import latent_export_spec
from trainer.models.dcgan import init_weights as _dcgan_init
from trainer.training.unconditional import STABILISER_DEFAULTS, UnconditionalConfig, build_unconditional

LSGANConfig = UnconditionalConfig.with_defaults(
    "LSGANConfig", __name__,
    image_size=(64, "image side = base * 2^k with base 4..7 (paper: 112 = 7 * 2^4)"),
    latent_dim=(1024, "size of z (paper: 1024)"),
    ngf=(256, "generator width: channels of the projection and first deconvs (paper: 256)"),
    ndf=(64, "discriminator width: channels of the first conv, doubling to 8x (paper: 64)"),
    latent_distribution=("uniform", "z ~ U(-1,1) ('uniform', paper) or N(0,1) ('normal')"),
    loss=("lsgan", "lsgan = coding (a,b,c)=(-1,1,0); lsgan-01 = (0,1,1); also bce | wgan"),
    lr=(1e-3, "Adam learning rate (paper: 1e-3)"),
    beta1=(0.5, "Adam beta1 (paper: 0.5)"),
    beta2=(0.999, "Adam beta2 (paper: Adam default 0.999)"),
    batch_size=(64, "minibatch size (paper: 64)"),
    ema_beta=(0.0, "serve an EMA of G's weights, G_ema = beta * G_ema + (1 - beta) * G after every "
              "step (0: off, serve G itself, as the paper does; PGGAN's paper: 0.999)"),
    **STABILISER_DEFAULTS,
)


def base_and_doublings(image_size: int) -> tuple[int, int]:
    """112 -> (7, 4); 64 -> (4, 4); 32 -> (4, 3)."""
    base, k = image_size, 0
    while base % 2 == 0 and base // 2 >= 4:
        base //= 2
        k += 1
    if not 4 <= base <= 7 or k < 2:
        raise ValueError(f"LSGAN image size must be base * 2^k with base 4..7 and k >= 2, got {image_size}")
    return base, k


def generator_layout(doublings: int, width: int = 256) -> list[tuple[int, int]]:
    """(out_channels, stride) of each hidden transposed conv; the paper's order for k=4, width 256."""
    layout: list[tuple[int, int]] = []
    for i in range(doublings):
        if i < 2:
            layout += [(width, 2), (width, 1)]
        else:
            layout.append((max(width >> (i - 1), 8), 2))
    return layout


def init_weights(module: nn.Module) -> None:
    """N(0, 0.02) for every weight, as the paper's TensorFlow code (built on DCGAN's) does."""
    _dcgan_init(module)
    if isinstance(module, nn.BatchNorm1d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _deconv3x3(cin: int, cout: int, stride: int) -> nn.ConvTranspose2d:
    # padding 1 and output_padding stride-1 give exactly x2 (stride 2) or x1 (stride 1)
    return nn.ConvTranspose2d(cin, cout, 3, stride, padding=1, output_padding=stride - 1, bias=False)


class Generator(nn.Module):
    def __init__(self, latent_dim: int = 1024, image_size: int = 64, channels: int = 3, ngf: int = 256) -> None:
        super().__init__()
        self.latent_dim, self.ngf = latent_dim, ngf
        self.base, doublings = base_and_doublings(image_size)
        self.project = nn.Sequential(
            nn.Linear(latent_dim, self.base * self.base * ngf, bias=False),
            nn.BatchNorm1d(self.base * self.base * ngf),
            nn.ReLU(True),
        )
        layers: list[nn.Module] = []
        width = ngf
        for out_channels, stride in generator_layout(doublings, ngf):
            layers += [_deconv3x3(width, out_channels, stride), nn.BatchNorm2d(out_channels), nn.ReLU(True)]
            width = out_channels
        layers += [_deconv3x3(width, channels, 1), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        h = self.project(z.reshape(z.shape[0], self.latent_dim))
        return self.main(h.view(z.shape[0], self.ngf, self.base, self.base))


class Discriminator(nn.Module):
    def __init__(self, image_size: int = 64, channels: int = 3, ndf: int = 64) -> None:
        super().__init__()
        base, doublings = base_and_doublings(image_size)
        layers: list[nn.Module] = []
        width = channels
        for i in range(doublings):
            out = min(ndf * 2**i, ndf * 8)
            layers.append(nn.Conv2d(width, out, 5, 2, 2, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.LeakyReLU(0.2, True))
            width = out
        self.features = nn.Sequential(*layers)
        self.score = nn.Linear(width * base * base, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.score(self.features(x).flatten(1)).flatten()


def build_generator(config: UnconditionalConfig) -> Generator:
    generator = Generator(config.latent_dim, config.image_size, ngf=config.ngf)
    generator.apply(init_weights)
    return generator


def build_discriminator(config: UnconditionalConfig) -> Discriminator:
    discriminator = Discriminator(config.image_size, ndf=config.ndf)
    discriminator.apply(init_weights)
    return discriminator


ARCHITECTURE = Architecture(
    name="lsgan",
    task="generate",
    summary="LSGAN (Mao et al. 2017): least-squares loss, the paper's LSUN architecture",
    config_cls=LSGANConfig,
    build_generator=build_generator,
    build_discriminator=build_discriminator,
    algorithm=build_unconditional,
    export_spec=latent_export_spec,
)
