"""VGG19's convolutional features, defined here so that torchvision's weights load without torchvision.

SRGAN's VGG54 content loss compares feature maps after relu5_4 of an ImageNet-trained VGG19, which is
torchvision's `vgg19().features[:36]`. torchvision does not import on every machine we train on, and
the weights cannot be downloaded from here, so the network is rebuilt layer for layer with the same
`features.N` indices: a torchvision state dict (`features.N.weight` / `features.N.bias`, classifier
keys ignored) loads unchanged. The weights are never downloaded: the file comes from
`--vgg19-weights PATH` or `$GAN_VGG19_WEIGHTS`, and without one the VGG loss is refused with
instructions (`VGGWeightsError`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

VGG19_ENV = "GAN_VGG19_WEIGHTS"
# torchvision's configuration "E": channels per conv, "M" for a 2x2 max-pool
VGG19_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)
RELU5_4 = 36  # features[:36] ends with relu5_4 (index 35), before the last max-pool
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

HOW_TO_GET_WEIGHTS = (
    "The VGG54 content loss needs ImageNet-trained VGG19 weights in torchvision's state-dict layout; this "
    "trainer never downloads them. On a machine with internet access, fetch torchvision's file once:\n"
    "  curl -LO https://download.pytorch.org/models/vgg19-dcbb9e9d.pth\n"
    "or, with torchvision installed:\n"
    "  python -c \"import torch, torchvision; torch.save(torchvision.models.vgg19(weights='IMAGENET1K_V1')"
    ".state_dict(), 'vgg19.pth')\"\n"
    f"then pass --vgg19-weights PATH or set {VGG19_ENV}=PATH. Or train with --content-loss mse (SRGAN-MSE)."
)


class VGGWeightsError(ValueError):
    """No usable VGG19 weights file; the message says how to get one."""


def vgg19_layers(stop: int = RELU5_4) -> list[nn.Module]:
    """torchvision's `vgg19().features` layer list, cut before index `stop`."""
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG19_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            assert isinstance(item, int)
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()]
            channels = item
    return layers[:stop]


class VGG19Features(nn.Module):
    """Frozen VGG19 features up to relu5_4 of images in [-1, 1], with ImageNet normalisation inside."""

    def __init__(self, stop: int = RELU5_4) -> None:
        super().__init__()
        self.features = nn.Sequential(*vgg19_layers(stop))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.source = ""  # the weights file, for provenance
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:
        return super().train(False)  # a fixed feature extractor: never leave eval mode

    def forward(self, images: Tensor) -> Tensor:
        """`images` in [-1, 1] (our HR range) -> [0, 1] -> ImageNet-normalised, as torchvision's VGG expects."""
        x = (images + 1) / 2
        return self.features((x - self.mean) / self.std)


def resolve_vgg19_weights(path: str | os.PathLike[str] | None) -> Path:
    """The weights file from the option or else the environment; a clear error when neither names a file."""
    chosen = str(path) if path else os.environ.get(VGG19_ENV, "")
    if not chosen:
        raise VGGWeightsError(f"no VGG19 weights given (--vgg19-weights or ${VGG19_ENV}).\n{HOW_TO_GET_WEIGHTS}")
    resolved = Path(chosen).expanduser()
    if not resolved.is_file():
        raise VGGWeightsError(f"VGG19 weights file {resolved} does not exist.\n{HOW_TO_GET_WEIGHTS}")
    return resolved


def load_vgg19_features(path: str | os.PathLike[str] | None, stop: int = RELU5_4) -> VGG19Features:
    """VGG19 features[:stop] with weights from a torchvision-layout state dict file (tensors only)."""
    resolved = resolve_vgg19_weights(path)
    try:
        state = torch.load(resolved, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a state dict
        raise VGGWeightsError(f"{resolved}: not a readable PyTorch state dict ({exc}).\n{HOW_TO_GET_WEIGHTS}") from exc
    if not isinstance(state, dict):
        raise VGGWeightsError(f"{resolved}: expected a state dict (a dict of tensors), got {type(state).__name__}")
    model = VGG19Features(stop)
    wanted = model.features.state_dict()
    picked = {f"features.{k}": state.get(f"features.{k}") for k in wanted}
    missing = sorted(k for k, v in picked.items() if v is None)
    if missing:
        raise VGGWeightsError(
            f"{resolved}: not a torchvision VGG19 state dict (missing {', '.join(missing[:4])}"
            f"{', ...' if len(missing) > 4 else ''}).\n{HOW_TO_GET_WEIGHTS}"
        )
    wrong = [k for k, v in picked.items() if tuple(v.shape) != tuple(wanted[k.split('.', 1)[1]].shape)]
    if wrong:
        raise VGGWeightsError(f"{resolved}: shapes do not match VGG19 at {', '.join(wrong[:4])} (a VGG16 file?)")
    model.load_state_dict({k: v.float() for k, v in picked.items()}, strict=True)
    model.source = str(resolved)
    return model
