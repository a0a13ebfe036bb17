"""StarGAN (Choi et al. 2018) networks, as yunjey/stargan's model.py builds them, and the export signature.

G: the target label is tiled over the image and concatenated to it (3 + c_dim channels); conv7x7 then two
stride-2 conv4x4 (down-sampling), `g_repeat_num` residual blocks, two stride-2 transposed conv4x4
(up-sampling), conv7x7 to RGB and tanh. InstanceNorm is affine with running statistics
(track_running_stats=True) as in the reference; no conv biases. In eval mode it normalises by each image's
own statistics unless `norm_stats` is "running" (see InstanceNorm for why).
D (PatchGAN): `d_repeat_num` stride-2 conv4x4 with LeakyReLU(0.01) and no normalisation, widths doubling
from `d_conv_dim`; then two heads on the last feature map: D_src (conv3x3 -> 1 score per patch) and
D_cls (a conv whose kernel covers the whole map -> c_dim logits).

Image size: the reference's 6 down-samplings at 128x128 leave a 2x2 map, hence its D_cls kernel of
image_size / 64. For other sizes D's depth is min(d_repeat_num, log2(image_size) - 1), which keeps that
final map at least 2x2 (32x32: 4 layers; 256x256: 6 layers and a 4x4 map, as the reference), and the
D_cls kernel is image_size / 2**depth, so D_cls always sees the whole image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.architecture import Architecture
from trainer.data.attributes import parse_groups
from trainer.data.labelled import build_labelled_dataset
from trainer.export_spec import ExportSpec, TensorDecl
from trainer.models.common import option as _opt

OUTPUT_NAME = "translated"


@dataclass
class StarGANConfig:
    image_size: int = _opt(128, "image side, a power of two >= 16 (paper: 128)")
    attributes: str = _opt(
        "", "comma-separated attributes or group names; label order (default: the data set's: shapes -> colour; "
            "celeba -> Black_Hair,Blond_Hair,Brown_Hair,Male,Young as in the paper; csv -> every column). "
            "Data: --data shapes[:N] | celeba:ROOT | celeba:IMAGES_DIR,ATTR_FILE | csv:IMAGES_DIR,ATTRS.csv")
    exclusive_groups: str = _opt(
        "", "mutually exclusive attributes, 'a|b|c;d|e' (default: the data set's: shapes -> one shape, one colour; "
            "celeba -> hair colours; csv -> none)")
    g_conv_dim: int = _opt(64, "G width: channels of its first conv (reference: 64)")
    d_conv_dim: int = _opt(64, "D width: channels of its first conv (reference: 64)")
    g_repeat_num: int = _opt(6, "residual blocks in G (reference: 6)")
    d_repeat_num: int = _opt(6, "stride-2 convs in D (reference: 6; capped at log2(image_size) - 1)")
    norm_stats: str = _opt(
        "instance", "what G's InstanceNorm normalises by in eval mode (export, serving, evaluation): 'instance' "
                    "(each image's own statistics, as the reference's test() effectively does) or 'running' "
                    "(the tracked running statistics)")
    lambda_cls: float = _opt(1.0, "weight of the domain classification loss (paper: 1)")
    lambda_rec: float = _opt(10.0, "weight of the reconstruction loss (paper: 10)")
    lambda_gp: float = _opt(10.0, "weight of the gradient penalty (paper: 10)")
    n_critic: int = _opt(5, "D updates per G update (paper: 5)")
    g_lr: float = _opt(1e-4, "Adam learning rate for G (paper: 1e-4)")
    d_lr: float = _opt(1e-4, "Adam learning rate for D (paper: 1e-4)")
    beta1: float = _opt(0.5, "Adam beta1 (paper: 0.5)")
    beta2: float = _opt(0.999, "Adam beta2 (paper: 0.999)")
    batch_size: int = _opt(16, "minibatch size (paper: 16)")
    num_iters: int = _opt(200_000, "length of the lr schedule in steps: the lr reaches 0 here (paper: 200k)")
    num_iters_decay: int = _opt(100_000, "steps over which the lr decays linearly to 0 (paper: the last 100k)")
    flip: bool = _opt(True, "random horizontal flips of training images (reference: on)")
    crop: int = _opt(178, "celeba: centre crop before resizing (paper: 178; 0: none)")
    eval_images: int = _opt(500, "held-out images translated to every attribute in evaluation")
    classifier_steps: int = _opt(200, "training steps of evaluation's attribute classifier (on real images)")


def attribute_list(config: StarGANConfig) -> list[str]:
    names = [a.strip() for a in config.attributes.split(",") if a.strip()]
    if not names:
        raise ValueError("stargan: config.attributes is empty; it is resolved from the data set before G is built")
    return names


def exclusive_groups(config: StarGANConfig) -> list[list[str]]:
    return parse_groups(config.exclusive_groups)


def discriminator_depth(image_size: int, repeat_num: int) -> int:
    log = math.log2(image_size)
    if image_size < 16 or not log.is_integer():
        raise ValueError(f"StarGAN image size must be a power of two >= 16, got {image_size}")
    return max(1, min(repeat_num, int(log) - 1))


NORM_STATS = ("instance", "running")


class InstanceNorm(nn.InstanceNorm2d):
    """Affine InstanceNorm that tracks running statistics as the reference's does (same state dict), with
    a choice of what eval mode normalises by.

    - "instance" (default): each image by its own statistics, in eval mode as in training. This is what
      the reference's test() does, since it never calls G.eval(). On `shapes` it matters: one checkpoint
      translated 99% of test images to their target colour this way, and 49% with running statistics.
    - "running": PyTorch's eval-mode semantics for track_running_stats=True (the running averages).
    Either way one image's output never depends on the other images in its batch.
    """

    def __init__(self, channels: int, eval_stats: str = "instance") -> None:
        super().__init__(channels, affine=True, track_running_stats=True)
        if eval_stats not in NORM_STATS:
            raise ValueError(f"unknown InstanceNorm eval statistics {eval_stats!r}; choose from {NORM_STATS}")
        self.eval_stats = eval_stats

    def forward(self, x: Tensor) -> Tensor:
        if self.training or self.eval_stats == "running":
            return super().forward(x)
        return F.instance_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


class ResidualBlock(nn.Module):
    def __init__(self, dim: int, eval_stats: str = "instance") -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False),
            InstanceNorm(dim, eval_stats),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False),
            InstanceNorm(dim, eval_stats),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.main(x)


class Generator(nn.Module):
    def __init__(self, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6, eval_stats: str = "instance") -> None:
        super().__init__()
        self.c_dim = c_dim

        def instance_norm(channels: int) -> InstanceNorm:
            return InstanceNorm(channels, eval_stats)

        layers: list[nn.Module] = [
            nn.Conv2d(3 + c_dim, conv_dim, 7, 1, 3, bias=False),
            instance_norm(conv_dim),
            nn.ReLU(inplace=True),
        ]
        dim = conv_dim
        for _ in range(2):
            layers += [nn.Conv2d(dim, dim * 2, 4, 2, 1, bias=False), instance_norm(dim * 2), nn.ReLU(inplace=True)]
            dim *= 2
        layers += [ResidualBlock(dim, eval_stats) for _ in range(repeat_num)]
        for _ in range(2):
            layers += [
                nn.ConvTranspose2d(dim, dim // 2, 4, 2, 1, bias=False),
                instance_norm(dim // 2),
                nn.ReLU(inplace=True),
            ]
            dim //= 2
        layers += [nn.Conv2d(dim, 3, 7, 1, 3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """x: N,3,S,S in [-1, 1]; c: N,c_dim target label (0/1 floats)."""
        tiled = c.to(x.dtype)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return self.main(torch.cat([x, tiled], dim=1))


class Discriminator(nn.Module):
    """Returns (D_src patch scores N,1,k,k; D_cls logits N,c_dim)."""

    def __init__(self, image_size: int = 128, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6) -> None:
        super().__init__()
        depth = discriminator_depth(image_size, repeat_num)
        layers: list[nn.Module] = [nn.Conv2d(3, conv_dim, 4, 2, 1), nn.LeakyReLU(0.01)]
        dim = conv_dim
        for _ in range(depth - 1):
            layers += [nn.Conv2d(dim, dim * 2, 4, 2, 1), nn.LeakyReLU(0.01)]
            dim *= 2
        self.main = nn.Sequential(*layers)
        self.depth, self.cls_kernel = depth, image_size // 2**depth
        self.conv_src = nn.Conv2d(dim, 1, 3, 1, 1, bias=False)
        self.conv_cls = nn.Conv2d(dim, c_dim, self.cls_kernel, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.main(x)
        return self.conv_src(h), self.conv_cls(h).flatten(1)

    def src(self, x: Tensor) -> Tensor:
        """D_src alone: the critic the gradient penalty differentiates."""
        return self.conv_src(self.main(x))


def build_generator(config: StarGANConfig) -> Generator:
    discriminator_depth(config.image_size, config.d_repeat_num)  # validate the size early
    return Generator(config.g_conv_dim, len(attribute_list(config)), config.g_repeat_num, config.norm_stats)


def build_discriminator(config: StarGANConfig) -> Discriminator:
    return Discriminator(config.image_size, config.d_conv_dim, len(attribute_list(config)), config.d_repeat_num)


def random_labels(batch: int, c_dim: int, groups: list[list[int]], rng: torch.Generator) -> Tensor:
    """Valid 0/1 labels: each free attribute a fair coin, each exclusive group at most one member set."""
    labels = (torch.rand(batch, c_dim, generator=rng) < 0.5).float()
    for group in groups:
        labels[:, group] = 0.0
        choice = torch.randint(0, len(group) + 1, (batch,), generator=rng)  # len(group): none of them
        for i, column in enumerate(group):
            labels[:, column] = (choice == i).float()
    return labels


def export_spec(config: StarGANConfig, generator: nn.Module) -> ExportSpec:
    """The `translate` signature: image [N,3,S,S] in [-1,1] + label [N,c_dim] 0/1 -> translated [N,3,S,S] in
    [-1,1].

    The graph runs G in eval mode, where InstanceNorm uses each image's own statistics or the running ones
    (config.norm_stats); either way one image's output does not depend on the others in its batch (tests
    check this on the exported model).
    """
    attributes, groups = attribute_list(config), exclusive_groups(config)
    size, c_dim = config.image_size, len(attributes)
    group_columns = [[attributes.index(a) for a in g] for g in groups]

    def example_image(batch: int, rng: torch.Generator, _size: int | None = None) -> Tensor:
        return torch.rand(batch, 3, size, size, generator=rng) * 2 - 1

    def example_label(batch: int, rng: torch.Generator, _size: int | None = None) -> Tensor:
        return random_labels(batch, c_dim, group_columns, rng)

    return ExportSpec(
        task="translate",
        module=generator,
        inputs=[TensorDecl("image", (None, 3, size, size), example_image),
                TensorDecl("label", (None, c_dim), example_label)],
        # ONNX graphs are in SSA form: an output cannot share the input's name `image`
        outputs=[TensorDecl(OUTPUT_NAME, (None, 3, size, size))],
        manifest_fields={
            "image_size": size,
            "channels": 3,
            "input_range": (-1.0, 1.0),
            "output_range": (-1.0, 1.0),
            "attributes": attributes,
            "exclusive_groups": groups,
        },
    )



ARCHITECTURE = Architecture(
    name="stargan",
    task="translate",
    summary="StarGAN (Choi et al. 2018): multi-domain image-to-image translation over binary attributes; "
    "--data shapes[:N] | celeba:ROOT | csv:IMAGES_DIR,ATTRS.csv",
    config_cls=StarGANConfig,
    build_generator=build_generator,
    build_discriminator=build_discriminator,
    algorithm="trainer.training.translation:build_stargan",
    export_spec=export_spec,
    build_dataset=build_labelled_dataset,
)
