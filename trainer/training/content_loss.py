"""SRGAN's content losses: pixel MSE, or MSE between VGG19 relu5_4 feature maps (VGG54).

Both compare SR and HR images in [-1, 1] (the paper computes its MSE on that range). VGG54 divides the
features by 12.75 before the MSE, which is the paper's rescaling "by 1/12.75": it multiplies the
feature-space MSE by 1/12.75^2 ~= 0.006, the factor the paper gives for bringing the VGG loss to the
scale of the pixel MSE.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from trainer.models.vgg import load_vgg19_features, sha256_file

CONTENT_LOSSES = ("mse", "vgg54")
VGG_RESCALE = 1.0 / 12.75


class MSEContent(nn.Module):
    name = "mse"

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        return F.mse_loss(sr, hr)


class VGG54Content(nn.Module):
    """||phi(G(LR))/12.75 - phi(HR)/12.75||^2, averaged, with phi = VGG19 features after relu5_4."""

    name = "vgg54"

    def __init__(self, features: nn.Module, weights_sha256: str = "") -> None:
        super().__init__()
        self.features = features
        self.weights_sha256 = weights_sha256

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        fake = self.features(sr) * VGG_RESCALE
        real = self.features(hr).detach() * VGG_RESCALE
        return F.mse_loss(fake.float(), real.float())


def build_content_loss(name: str, vgg19_weights: str = "") -> nn.Module:
    """`mse`, or `vgg54` with weights from `vgg19_weights` / $GAN_VGG19_WEIGHTS (refused with instructions
    when neither names a file; see models.vgg)."""
    if name == "mse":
        return MSEContent()
    if name == "vgg54":
        features = load_vgg19_features(vgg19_weights)
        return VGG54Content(features, sha256_file(Path(features.source)))
    raise ValueError(f"unknown content loss {name!r}; choose from {', '.join(CONTENT_LOSSES)}")
