"""PGGAN (Karras et al. 2018): networks that grow from 4x4 to any power-of-two resolution.

Both networks are built for the target resolution at once (as the reference TF code does); training
uses the blocks up to the current resolution, and the newest block is faded in by `alpha`. What stays
paper-faithful:

- equalized learning rate: every weight is N(0, 1) and scaled at run time by gain / sqrt(fan_in), so
  Adam's per-parameter step size is the same for every layer whatever its fan-in;
- pixelwise feature normalisation (eps 1e-8) on the latent and after every conv in G;
- minibatch standard deviation (group size 4, the TF layout) at the start of D's 4x4 block;
- nearest-neighbour 2x upsampling in G, 2x2 average pooling in D, 1x1 toRGB / fromRGB per resolution,
  LeakyReLU(0.2), linear output (no tanh), no normalisation in D;
- channels per resolution nf(stage) = min(fmap_base / 2^stage, fmap_max) with stage = log2(res) - 1:
  512, 512, 512, 512, 256, 128, 64, 32, 16 for 4..1024 at the defaults. Smaller fmap_base / fmap_max
  give the same shape of network at a fraction of the cost for small runs.

One deliberate copy of the reference code rather than the paper's text: G's first dense layer (latent
-> 4x4xC, which acts as a 4x4 transposed conv) uses gain sqrt(2)/4 and one bias per channel, as the TF
code does "to match the original Theano implementation".

Parameter counts at 1024 with the defaults (checked in tests/trainer/test_pggan.py): G 23,079,115 and
D 23,087,249 with the 1x1 toRGB (7,659) / fromRGB (10,176) layers of every resolution counted, which is
the network as trained and as the reference code builds it; G 23,071,507 and D 23,077,137 with only the
1024 toRGB / fromRGB, i.e. the networks left once growing is over. All four round to the paper's 23.1M.
The small differences between G and D: fromRGB has 4C parameters where toRGB has 3C+3, D's 4x4 conv
reads one extra (minibatch-stddev) channel, and D ends in a dense 512 -> 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.architecture import Architecture
from trainer.export_spec import ExportSpec, latent_generator_spec
from trainer.models.common import option

LRELU_SLOPE = 0.2
PIXEL_NORM_EPS = 1e-8
MBSTD_EPS = 1e-8
HE_GAIN = math.sqrt(2.0)
MIN_RESOLUTION, MAX_RESOLUTION = 8, 1024
# minibatch per resolution in the paper's CelebA-HQ runs: 16 up to 128x128, then 14, 6, 3
PAPER_BATCH_SIZES = {4: 16, 8: 16, 16: 16, 32: 16, 64: 16, 128: 16, 256: 14, 512: 6, 1024: 3}


@dataclass
class PGGANConfig:
    image_size: int = option(256, "target resolution, a power of two in 8..1024 (paper: 1024 CelebA-HQ, 256 LSUN)")
    latent_dim: int = option(512, "size of z, N(0,1) then pixel-normalised inside G (paper: 512)")
    fmap_base: int = option(8192, "channels = min(fmap_base / 2^stage, fmap_max); shrink both for small runs "
                                  "(paper: 8192)")
    fmap_max: int = option(512, "most channels of any layer (paper: 512)")
    fade_images: int = option(800_000, "real images shown while a new resolution fades in (paper: 800k)")
    stable_images: int = option(800_000, "real images shown while a resolution stabilises (paper: 800k)")
    batch_size: int = option(0, "minibatch at every resolution; 0 = the paper's schedule: 16 up to 128, "
                                "then 14, 6, 3 at 256, 512, 1024")
    lr: float = option(1e-3, "Adam learning rate for G and D (paper: 1e-3)")
    beta1: float = option(0.0, "Adam beta1 (paper: 0.0)")
    beta2: float = option(0.99, "Adam beta2 (paper: 0.99)")
    gp_lambda: float = option(10.0, "WGAN-GP gradient penalty weight (paper: 10)")
    drift: float = option(0.001, "weight of the drift term E[D(x)^2] (paper: 0.001)")
    ema_beta: float = option(0.999, "G_ema = beta * G_ema + (1 - beta) * G after every step (paper: 0.999)")
    mbstd_group: int = option(4, "minibatch-stddev group size (reference code: 4)")


def num_levels(resolution: int) -> int:
    """Levels above 4x4: 4 -> 0, 8 -> 1, 1024 -> 8."""
    n = math.log2(resolution) - 2 if resolution > 0 else -1.0
    if not n.is_integer() or n < 0:
        raise ValueError(f"PGGAN resolutions are powers of two >= 4, got {resolution}")
    return int(n)


def check_target(resolution: int) -> int:
    if resolution < MIN_RESOLUTION or resolution > MAX_RESOLUTION or not math.log2(resolution).is_integer():
        raise ValueError(f"PGGAN target resolution must be a power of two in {MIN_RESOLUTION}..{MAX_RESOLUTION}, "
                         f"got {resolution}")
    return num_levels(resolution)


def channels(resolution: int, fmap_base: int = 8192, fmap_max: int = 512) -> int:
    """The paper's table: nf(stage) = min(fmap_base / 2^stage, fmap_max) with stage = log2(res) - 1."""
    stage = int(math.log2(resolution)) - 1
    return max(1, min(fmap_base // 2**stage, fmap_max))


def resolutions(target: int) -> list[int]:
    return [4 * 2**k for k in range(num_levels(target) + 1)]


# ----------------------------------------------------------------------------------------------------
# building blocks


class EqualizedConv2d(nn.Module):
    """Conv with weights N(0,1) scaled at run time by gain / sqrt(in_ch * k * k); bias starts at 0."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gain: float = HE_GAIN) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        out_ch, in_ch, k, _ = self.weight.shape
        return f"{in_ch}, {out_ch}, kernel_size={k}, scale={self.scale:.5g}"


class EqualizedLinear(nn.Module):
    """Dense layer with weights N(0,1) scaled at run time by gain / sqrt(in_features)."""

    def __init__(self, in_features: int, out_features: int, gain: float = HE_GAIN, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, scale={self.scale:.5g}"


def pixel_norm(x: Tensor, eps: float = PIXEL_NORM_EPS) -> Tensor:
    """x / sqrt(mean over channels of x^2 + eps), per pixel (dim 1 is channels, or features for z)."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


def lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, LRELU_SLOPE)


def upsample(x: Tensor, factor: int = 2) -> Tensor:
    return F.interpolate(x, scale_factor=factor, mode="nearest") if factor > 1 else x


def downsample(x: Tensor, factor: int = 2) -> Tensor:
    return F.avg_pool2d(x, factor) if factor > 1 else x


def mbstd_group_size(batch: int, group_size: int) -> int:
    """The largest group size <= `group_size` that divides the batch (TF needs it to divide and fails
    otherwise): 16 -> 4, 14 -> 2, 6 -> 3, 3 -> 3. A batch with no such divisor above 1 (5, 7, 11...) is
    one group, so the statistic still measures variety instead of degenerating to a constant."""
    for g in range(min(group_size, batch), 1, -1):
        if batch % g == 0:
            return g
    return batch


def minibatch_stddev(x: Tensor, group_size: int = 4, eps: float = MBSTD_EPS) -> Tensor:
    """Append one feature map: the stddev of each feature over a group, averaged over features and pixels.

    Same layout as the TF code: the batch is reshaped to [G, M, ...], so sample i is in group i % M.
    """
    n, c, h, w = x.shape
    g = mbstd_group_size(n, group_size)
    y = x.float().reshape(g, n // g, c, h, w)
    y = y - y.mean(dim=0, keepdim=True)
    y = (y.square().mean(dim=0) + eps).sqrt()  # [M, C, H, W]
    y = y.mean(dim=(1, 2, 3)).to(x.dtype)  # [M]
    y = y.reshape(1, n // g, 1, 1).expand(g, n // g, h, w).reshape(n, 1, h, w)
    return torch.cat([x, y], dim=1)


# ----------------------------------------------------------------------------------------------------
# generator


class GInputBlock(nn.Module):
    """4x4: pixel-normalised z -> dense to 4x4xC (+bias per channel, LReLU, PN) -> conv3x3 (+LReLU, PN)."""

    def __init__(self, latent_dim: int, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        # gain sqrt(2)/4 and a per-channel bias, as the reference TF code (see the module docstring)
        self.dense = EqualizedLinear(latent_dim, out_channels * 16, gain=HE_GAIN / 4, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.conv = EqualizedConv2d(out_channels, out_channels, 3)

    def forward(self, z: Tensor) -> Tensor:
        x = self.dense(pixel_norm(z)).reshape(z.shape[0], self.out_channels, 4, 4)
        x = pixel_norm(lrelu(x + self.bias.reshape(1, -1, 1, 1)))
        return pixel_norm(lrelu(self.conv(x)))


class GBlock(nn.Module):
    """2x nearest upsample, then two conv3x3, each followed by LReLU and pixel norm."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, out_channels, 3)
        self.conv1 = EqualizedConv2d(out_channels, out_channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = pixel_norm(lrelu(self.conv0(upsample(x))))
        return pixel_norm(lrelu(self.conv1(x)))


def to_rgb(in_channels: int) -> EqualizedConv2d:
    return EqualizedConv2d(in_channels, 3, 1, gain=1.0)


def synthesise(z: Tensor, blocks: list[nn.Module], rgb: nn.Module, rgb_prev: nn.Module | None, alpha: float) -> Tensor:
    """Run `blocks` (4x4 first); fade the last one in over the upsampled output of the one before it.

    With `rgb_prev` None or alpha >= 1 the old path is not computed at all, so a grown network (and its
    exported graph) has no fade branch; torch.lerp is exact at both ends (alpha 0 -> old, 1 -> new).
    """
    x = blocks[0](z)
    if len(blocks) == 1:
        return rgb(x)
    for block in blocks[1:-1]:
        x = block(x)
    new = rgb(blocks[-1](x))
    if rgb_prev is None or alpha >= 1.0:
        return new
    return torch.lerp(upsample(rgb_prev(x)), new, alpha)


class Generator(nn.Module):
    """G for resolutions 4..`image_size`: `forward(z, resolution, alpha)`; training passes both.

    The buffers `grown_resolution`, `grown_alpha` and `grown_images` record the stage of the most recent
    training step (the algorithm sets them): they travel in the state dict, so the exporter knows what
    resolution a checkpoint reached without seeing the training state.
    """

    def __init__(
        self, latent_dim: int = 512, image_size: int = 1024, fmap_base: int = 8192, fmap_max: int = 512
    ) -> None:
        super().__init__()
        check_target(image_size)
        self.latent_dim, self.image_size = latent_dim, image_size
        res = resolutions(image_size)
        nf = [channels(r, fmap_base, fmap_max) for r in res]
        self.blocks = nn.ModuleDict({"4": GInputBlock(latent_dim, nf[0])})
        for k in range(1, len(res)):
            self.blocks[str(res[k])] = GBlock(nf[k - 1], nf[k])
        self.to_rgb = nn.ModuleDict({str(r): to_rgb(c) for r, c in zip(res, nf, strict=True)})
        self.register_buffer("grown_resolution", torch.tensor(4, dtype=torch.int64))
        self.register_buffer("grown_alpha", torch.tensor(1.0))
        self.register_buffer("grown_images", torch.tensor(0, dtype=torch.int64))

    def _parts(self, resolution: int, alpha: float) -> tuple[list[nn.Module], nn.Module, nn.Module | None]:
        if resolution not in resolutions(self.image_size):
            raise ValueError(f"this generator grows to {self.image_size}; no resolution {resolution}")
        blocks = [self.blocks[str(r)] for r in resolutions(resolution)]
        fading = resolution > 4 and alpha < 1.0
        return blocks, self.to_rgb[str(resolution)], self.to_rgb[str(resolution // 2)] if fading else None

    def forward(self, z: Tensor, resolution: int | None = None, alpha: float | None = None) -> Tensor:
        """Images [N, 3, resolution, resolution]. Without a resolution: the recorded stage, i.e. the images
        this checkpoint's generator makes (and its export serves); with one, alpha defaults to 1."""
        if resolution is None:
            resolution = int(self.grown_resolution)
            alpha = float(self.grown_alpha) if alpha is None else alpha
        elif alpha is None:
            alpha = 1.0
        blocks, rgb, rgb_prev = self._parts(resolution, alpha)
        return synthesise(z, blocks, rgb, rgb_prev, alpha)

    def record_stage(self, resolution: int, alpha: float, images_seen: int) -> None:
        self.grown_resolution.fill_(resolution)
        self.grown_alpha.fill_(alpha)
        self.grown_images.fill_(images_seen)

    def grown(self, resolution: int | None = None, alpha: float | None = None) -> GrownGenerator:
        """The generator frozen at one stage (default: the recorded one), holding only the layers that
        stage uses: what gets exported, so the ONNX graph carries no unused weights and no alpha branch
        unless the checkpoint stopped mid-fade."""
        resolution = int(self.grown_resolution) if resolution is None else resolution
        alpha = float(self.grown_alpha) if alpha is None else alpha
        return GrownGenerator(*self._parts(resolution, alpha), alpha=alpha, resolution=resolution)


class GrownGenerator(nn.Module):
    """`latent -> image` at a fixed resolution and alpha; shares its layers with the full Generator."""

    def __init__(self, blocks: list[nn.Module], rgb: nn.Module, rgb_prev: nn.Module | None, *, alpha: float,
                 resolution: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.rgb, self.rgb_prev = rgb, rgb_prev
        self.alpha, self.resolution = alpha, resolution

    def forward(self, z: Tensor) -> Tensor:
        return synthesise(z, list(self.blocks), self.rgb, self.rgb_prev, self.alpha)


# ----------------------------------------------------------------------------------------------------
# discriminator


class DBlock(nn.Module):
    """conv3x3 (C_in -> C_in) + LReLU, conv3x3 (C_in -> C_out) + LReLU, 2x2 average pool."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return downsample(lrelu(self.conv1(lrelu(self.conv0(x)))))


class DOutputBlock(nn.Module):
    """4x4: minibatch stddev (+1 channel), conv3x3 + LReLU, dense + LReLU, dense to one linear score."""

    def __init__(self, in_channels: int, hidden: int, group_size: int) -> None:
        super().__init__()
        self.group_size = group_size
        self.conv = EqualizedConv2d(in_channels + 1, in_channels, 3)
        self.dense0 = EqualizedLinear(in_channels * 16, hidden)
        self.dense1 = EqualizedLinear(hidden, 1, gain=1.0)

    def forward(self, x: Tensor) -> Tensor:
        x = lrelu(self.conv(minibatch_stddev(x, self.group_size)))
        return self.dense1(lrelu(self.dense0(x.flatten(1)))).flatten()


def from_rgb(out_channels: int) -> nn.Module:
    return nn.Sequential(EqualizedConv2d(3, out_channels, 1), nn.LeakyReLU(LRELU_SLOPE))


class Discriminator(nn.Module):
    """D for resolutions 4..`image_size`: `forward(x, alpha)` reads the resolution from x's size and
    returns one critic score per image."""

    def __init__(
        self, image_size: int = 1024, fmap_base: int = 8192, fmap_max: int = 512, mbstd_group: int = 4
    ) -> None:
        super().__init__()
        check_target(image_size)
        self.image_size = image_size
        res = resolutions(image_size)
        nf = [channels(r, fmap_base, fmap_max) for r in res]
        self.from_rgb = nn.ModuleDict({str(r): from_rgb(c) for r, c in zip(res, nf, strict=True)})
        self.blocks = nn.ModuleDict({str(res[k]): DBlock(nf[k], nf[k - 1]) for k in range(len(res) - 1, 0, -1)})
        self.final = DOutputBlock(nf[0], channels(2, fmap_base, fmap_max), mbstd_group)

    def forward(self, x: Tensor, alpha: float = 1.0) -> Tensor:
        resolution = x.shape[-1]
        if resolution not in resolutions(self.image_size) or x.shape[-2] != resolution:
            raise ValueError(f"this discriminator reads 4..{self.image_size} square images, got {tuple(x.shape)}")
        h = self.from_rgb[str(resolution)](x)
        if resolution > 4:
            h = self.blocks[str(resolution)](h)
            if alpha < 1.0:
                h = torch.lerp(self.from_rgb[str(resolution // 2)](downsample(x)), h, alpha)
            r = resolution // 2
            while r > 4:
                h = self.blocks[str(r)](h)
                r //= 2
        return self.final(h)


def build_generator(config: PGGANConfig) -> Generator:
    return Generator(config.latent_dim, config.image_size, config.fmap_base, config.fmap_max)


def build_discriminator(config: PGGANConfig) -> Discriminator:
    return Discriminator(config.image_size, config.fmap_base, config.fmap_max, config.mbstd_group)


def export_spec(config: PGGANConfig, generator: nn.Module) -> ExportSpec:
    """The generator at the resolution and alpha its checkpoint reached (recorded in its buffers): only
    the layers that stage uses, latent pixel norm inside, so the service feeds plain N(0,1) latents."""
    if not isinstance(generator, Generator):
        raise TypeError(f"pggan export needs a pggan.Generator, got {type(generator).__name__}")
    grown = generator.grown()
    extra = {"resolution": grown.resolution, "alpha": grown.alpha, "images_seen": int(generator.grown_images)}
    return latent_generator_spec(grown, config.latent_dim, "normal", grown.resolution, extra)



ARCHITECTURE = Architecture(
    name="pggan",
    task="generate",
    summary="PGGAN (Karras et al. 2018): progressive growing from 4x4, WGAN-GP + drift, EMA generator",
    config_cls=PGGANConfig,
    build_generator=build_generator,
    build_discriminator=build_discriminator,
    algorithm="trainer.training.progressive:build_progressive",
    export_spec=export_spec,
    served_generator_key="generator_ema",
    progress_buffers=("grown_resolution", "grown_alpha", "grown_images"),
)
