"""SRResNet and the SRGAN discriminator (Ledig et al. 2017, arXiv 1609.04802), x4 by default.

Generator (SRResNet): conv9x9 + PReLU; B residual blocks [conv3x3, BN, PReLU, conv3x3, BN, + skip];
conv3x3 + BN + the long skip from the first conv; log2(scale) x [conv3x3 to 4C, PixelShuffle(2), PReLU];
conv9x9 to RGB with a linear output. It is fully convolutional, so it takes any LR size; input in
[0, 1], output in [-1, 1] (the paper's ranges: the MSE is computed on [-1, 1] HR images).

Discriminator: conv3x3 C + LReLU(0.2) (no BN); seven conv3x3 + BN + LReLU(0.2) with strides
2, 1, 2, 1, 2, 1, 2 and widths C, 2C, 2C, 4C, 4C, 8C, 8C; dense 1024 + LReLU(0.2); dense 1 (a logit:
the sigmoid lives in the loss, see losses.NonSaturatingBCE). The dense layer reads the flattened
8C x (crop/16)^2 map, so D is built for one crop size (96 in the paper -> 6x6x512).

Choices the paper leaves open, made here and stated so they can be checked:
- no bias in a convolution that BatchNorm follows (BN's shift makes it redundant), a bias everywhere
  else; this is why counts differ slightly from re-implementations that keep every bias;
- one PReLU slope per layer (PyTorch's default, He et al.'s channel-shared variant);
- PyTorch's default initialisation (the paper names none).

Parameter counts at the defaults (B=16, C=64, x4, D at 96x96; checked in tests/trainer/test_srgan_models.py):
G 1,547,350 and D 23,563,649 (18,876,416 of D's are the two dense layers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from trainer.architecture import Architecture
from trainer.data.super_resolution import build_sr_dataset
from trainer.export_spec import ExportSpec, TensorDecl
from trainer.models.common import option

LRELU_SLOPE = 0.2
# spatial sizes (LR side) at which export checks ONNX against PyTorch, besides the non-square default example
EXPORT_PARITY_SIZES = (8, 17, 40)


@dataclass
class SRResNetConfig:
    """Stage 1 (`gan-train srresnet`): the generator alone, trained with MSE."""

    scale: int = option(4, "upscaling factor, a power of two (paper: 4)")
    blocks: int = option(16, "residual blocks in G (paper: 16)")
    channels: int = option(64, "width of G's residual trunk (paper: 64)")
    crop_size: int = option(96, "HR training crop side; the LR crop is crop_size/scale (paper: 96)")
    batch_size: int = option(16, "crops per minibatch (paper: 16)")
    lr: float = option(1e-4, "Adam learning rate (paper: 1e-4)")
    beta1: float = option(0.9, "Adam beta1 (paper: 0.9)")
    beta2: float = option(0.999, "Adam beta2 (paper: not stated; PyTorch default 0.999)")
    lr_drop_step: int = option(0, "multiply the learning rate by --lr-drop-factor from this step on (0: never; "
                                  "paper SRResNet: constant 1e-4 for 1e6 updates)")
    lr_drop_factor: float = option(0.1, "learning-rate factor after --lr-drop-step (paper: 1e-4 -> 1e-5)")
    colour_augment: str = option("auto", "recolour training crops (hue, saturation, tint; Y kept): auto = on for "
                                         "the 11 bundled photos, whose colours are too few, off otherwise; on | off "
                                         "(paper: none, ImageNet covers the colours)")


@dataclass
class SRGANConfig(SRResNetConfig):
    """Stage 2 (`gan-train srgan --init-from STAGE1_RUN`): perceptual loss = content + 1e-3 x adversarial."""

    lr_drop_step: int = option(100_000, "multiply the learning rate by --lr-drop-factor from this step on "
                                        "(paper: 1e5 updates at 1e-4, then 1e5 at 1e-5; 0: never)")
    ndf: int = option(64, "discriminator width: channels of its first conv (paper: 64)")
    d_dense: int = option(1024, "discriminator's hidden dense layer (paper: 1024)")
    content_loss: str = option("vgg54", "content loss: vgg54 (VGG19 relu5_4 features / 12.75; needs "
                                        "--vgg19-weights) or mse (paper's SRGAN-VGG54 uses vgg54)")
    vgg19_weights: str = option("", "torchvision-layout VGG19 state dict for --content-loss vgg54 "
                                    "(default: $GAN_VGG19_WEIGHTS); never downloaded")
    adversarial_weight: float = option(1e-3, "weight of -log D(G(LR)) in G's loss (paper: 1e-3)")
    init_from: str = option("", "stage-1 run folder or checkpoint whose generator starts this run "
                                "(paper: SRGAN starts from the trained SRResNet)")


def upsampling_steps(scale: int) -> int:
    n = math.log2(scale) if scale > 0 else 0.5
    if scale < 2 or not n.is_integer():
        raise ValueError(f"SRResNet scale must be a power of two >= 2, got {scale}")
    return int(n)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.PReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    """LR [N, 3, h, w] in [0, 1] -> SR [N, 3, scale*h, scale*w] in [-1, 1] (linear output, as in the paper)."""

    def __init__(self, scale: int = 4, blocks: int = 16, channels: int = 64) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Sequential(nn.Conv2d(3, channels, 9, 1, 4), nn.PReLU())
        self.body = nn.Sequential(
            *[ResidualBlock(channels) for _ in range(blocks)],
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
        )
        upsample: list[nn.Module] = []
        for _ in range(upsampling_steps(scale)):
            upsample += [nn.Conv2d(channels, 4 * channels, 3, 1, 1), nn.PixelShuffle(2), nn.PReLU()]
        self.upsample = nn.Sequential(*upsample)
        self.tail = nn.Conv2d(channels, 3, 9, 1, 4)

    def forward(self, low_res: Tensor) -> Tensor:
        features = self.head(low_res)
        return self.tail(self.upsample(features + self.body(features)))


class Discriminator(nn.Module):
    """HR crop [N, 3, S, S] in [-1, 1] -> one logit per image, shape [N]."""

    def __init__(self, crop_size: int = 96, ndf: int = 64, dense: int = 1024) -> None:
        super().__init__()
        if crop_size % 16:
            raise ValueError(f"the SRGAN discriminator halves the crop four times: crop_size must be a multiple "
                             f"of 16, got {crop_size}")
        layers: list[nn.Module] = [nn.Conv2d(3, ndf, 3, 1, 1), nn.LeakyReLU(LRELU_SLOPE)]
        width = ndf
        for out, stride in ((ndf, 2), (2 * ndf, 1), (2 * ndf, 2), (4 * ndf, 1), (4 * ndf, 2), (8 * ndf, 1),
                            (8 * ndf, 2)):
            layers += [nn.Conv2d(width, out, 3, stride, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(LRELU_SLOPE)]
            width = out
        self.features = nn.Sequential(*layers)
        side = crop_size // 16
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width * side * side, dense),
            nn.LeakyReLU(LRELU_SLOPE),
            nn.Linear(dense, 1),
        )

    def forward(self, hr: Tensor) -> Tensor:
        return self.classifier(self.features(hr)).squeeze(1)


def check_crop(config: SRResNetConfig) -> None:
    if config.crop_size % config.scale:
        raise ValueError(f"crop_size {config.crop_size} must be a multiple of scale {config.scale}")
    if config.crop_size < 4 * config.scale:
        raise ValueError(f"crop_size {config.crop_size} is too small for x{config.scale} (need >= {4 * config.scale})")


def build_generator(config: SRResNetConfig) -> SRResNet:
    check_crop(config)
    return SRResNet(config.scale, config.blocks, config.channels)


def build_discriminator(config: SRGANConfig) -> Discriminator:
    return Discriminator(config.crop_size, config.ndf, config.d_dense)


def export_spec(config: SRResNetConfig, generator: nn.Module) -> ExportSpec:
    """The `super_resolve` signature: image [N, 3, h, w] in [0, 1] -> output [N, 3, s*h, s*w] in [-1, 1],
    dynamic in batch, height and width. ONNX names every value once, so the output cannot also be called
    `image`: it is `output`, and the manifest says so. The exporter puts G in eval mode first, so BatchNorm
    uses its running statistics and a served image never depends on the others in its batch."""

    def example(batch: int, rng: torch.Generator, size: int | None = None) -> Tensor:
        height, width = (size, size) if size else (20, 28)  # non-square, so height and width stay independent
        return torch.rand(batch, 3, height, width, generator=rng)

    return ExportSpec(
        task="super_resolve",
        module=generator,
        inputs=[TensorDecl("image", (None, 3, None, None), example)],
        outputs=[TensorDecl("output", (None, 3, None, None))],
        manifest_fields={
            "scale": config.scale,
            "image_size": None,
            "channels": 3,
            "input_range": (0.0, 1.0),
            "output_range": (-1.0, 1.0),
            "extra": {"generator": "SRResNet", "blocks": config.blocks, "channels": config.channels,
                      "crop_size": config.crop_size},
        },
        example_sizes=EXPORT_PARITY_SIZES,
    )


SRRESNET = Architecture(
    name="srresnet",
    task="super_resolve",
    summary="SRResNet (Ledig et al. 2017), SRGAN stage 1: x4 super-resolution trained with pixel MSE; "
    "--data photos | folder:HR_IMAGES | shapes[:N]",
    config_cls=SRResNetConfig,
    build_generator=build_generator,
    algorithm="trainer.training.super_resolution:build_srresnet",
    export_spec=export_spec,
    build_dataset=build_sr_dataset,
)

SRGAN = Architecture(
    name="srgan",
    task="super_resolve",
    summary="SRGAN (Ledig et al. 2017), stage 2: from an srresnet run (--init-from), content (vgg54 | mse) "
    "+ 1e-3 x adversarial loss; --data photos | folder:HR_IMAGES | shapes[:N]",
    config_cls=SRGANConfig,
    build_generator=build_generator,
    build_discriminator=build_discriminator,
    algorithm="trainer.training.super_resolution:build_srgan",
    export_spec=export_spec,
    build_dataset=build_sr_dataset,
)
