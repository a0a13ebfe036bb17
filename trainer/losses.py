"""Every loss the trainer optimises, in one place: adversarial objectives, penalties, SRGAN's content
losses and StarGAN's classification and reconstruction terms.

Adversarial losses take the discriminator's raw outputs (logits / critic scores), so any network can be
trained with any suitable loss: `--loss` picks one by name. Objectives that need the discriminator itself
(WGAN-GP's gradient penalty) get it passed in explicitly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.hashing import sha256_file
from trainer.models.vgg import load_vgg19_features


class AdversarialLoss:
    """D minimises `discriminator(real, fake)`, G minimises `generator(fake)`."""

    name: str = ""

    def discriminator(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        raise NotImplementedError

    def generator(self, fake_out: Tensor) -> Tensor:
        raise NotImplementedError


class NonSaturatingBCE(AdversarialLoss):
    """Goodfellow et al.'s loss with the non-saturating G objective -log D(G(z)) (DCGAN, SRGAN).

    Written on logits with `binary_cross_entropy_with_logits` so that D ends in a linear layer and the
    sigmoid never saturates numerically, which is also what keeps it safe under autocast.
    """

    name = "bce"

    def discriminator(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        real = F.binary_cross_entropy_with_logits(real_out, torch.ones_like(real_out))
        fake = F.binary_cross_entropy_with_logits(fake_out, torch.zeros_like(fake_out))
        return real + fake

    def generator(self, fake_out: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(fake_out, torch.ones_like(fake_out))


@dataclass(frozen=True)
class LeastSquares(AdversarialLoss):
    """LSGAN (Mao et al. 2017): D: 1/2 E[(D(x)-b)^2] + 1/2 E[(D(G(z))-a)^2]; G: 1/2 E[(D(G(z))-c)^2]."""

    a: float
    b: float
    c: float
    name: str = "lsgan"

    def discriminator(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return 0.5 * (real_out - self.b).pow(2).mean() + 0.5 * (fake_out - self.a).pow(2).mean()

    def generator(self, fake_out: Tensor) -> Tensor:
        return 0.5 * (fake_out - self.c).pow(2).mean()


class Wasserstein(AdversarialLoss):
    """WGAN critic loss; pair it with `gradient_penalty` (WGAN-GP) and optionally `drift_penalty` (PGGAN)."""

    name = "wgan"

    def discriminator(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return fake_out.mean() - real_out.mean()

    def generator(self, fake_out: Tensor) -> Tensor:
        return -fake_out.mean()


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    generator: torch.Generator | None = None,
    eps: Tensor | None = None,
) -> Tensor:
    """Gulrajani et al.'s penalty E[(||grad D(x_hat)||_2 - 1)^2] on random interpolates x_hat.

    `critic` returns the score to penalise (StarGAN passes only its D_src head). The graph is kept
    (create_graph) so the penalty's own gradient reaches D's weights. The per-sample mix weights `eps`
    may be given instead of drawn: data-parallel ranks draw them for the global batch and shard them.
    """
    eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    if eps is None:
        eps = torch.rand(eps_shape, device=real.device, dtype=real.dtype, generator=generator)
    eps = eps.reshape(eps_shape).to(real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    score = critic(x_hat)
    (grad,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def drift_penalty(real_out: Tensor) -> Tensor:
    """PGGAN's epsilon_drift term E[D(x)^2], which keeps the critic's output near zero (weight 0.001)."""
    return real_out.pow(2).mean()


LOSSES: dict[str, Callable[[], AdversarialLoss]] = {
    "bce": NonSaturatingBCE,
    "lsgan": lambda: LeastSquares(a=-1.0, b=1.0, c=0.0),  # Pearson chi^2 coding, the paper's stability runs
    "lsgan-01": lambda: LeastSquares(a=0.0, b=1.0, c=1.0),  # 0-1 coding, the paper's LSUN model
    "wgan": Wasserstein,
}


def build_loss(name: str) -> AdversarialLoss:
    try:
        return LOSSES[name]()
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}") from None


# ---------------------------------------------------------------------------------------------- SRGAN content
# Both compare SR and HR images in [-1, 1] (the paper computes its MSE on that range). VGG54 divides the
# features by 12.75 before the MSE, which is the paper's rescaling "by 1/12.75": it multiplies the
# feature-space MSE by 1/12.75^2 ~= 0.006, the factor the paper gives for bringing the VGG loss to the
# scale of the pixel MSE.

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


# ------------------------------------------------------------------------------------------ StarGAN terms
class TranslationLossWeights(Protocol):
    """The lambdas of StarGAN's objective (a StarGANConfig has them)."""

    lambda_cls: float
    lambda_gp: float
    lambda_rec: float


def classification_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy summed over attributes, averaged over the batch (the reference's)."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / logits.shape[0]


def reconstruction_loss(real: Tensor, reconstructed: Tensor) -> Tensor:
    """Mean absolute error |x - G(G(x,c'),c)|_1 over all pixels."""
    return (real - reconstructed).abs().mean()


def discriminator_loss(
    real_src: Tensor, fake_src: Tensor, real_cls: Tensor, label_org: Tensor, gp: Tensor, weights: TranslationLossWeights
) -> tuple[Tensor, dict[str, Tensor]]:
    """-D_src(x) + D_src(G(x,c')) + lambda_cls * BCE(D_cls(x), c) + lambda_gp * GP, and its terms."""
    adversarial = Wasserstein().discriminator(real_src.float(), fake_src.float())
    cls = classification_loss(real_cls.float(), label_org)
    total = adversarial + weights.lambda_cls * cls + weights.lambda_gp * gp
    return total, {"loss_d": total, "d_real": real_src.float().mean(), "d_fake": fake_src.float().mean(),
                   "d_cls": cls, "gp": gp}


def generator_loss(
    fake_src: Tensor,
    fake_cls: Tensor,
    label_trg: Tensor,
    real: Tensor,
    reconstructed: Tensor,
    weights: TranslationLossWeights,
) -> tuple[Tensor, dict[str, Tensor]]:
    """-D_src(G(x,c')) + lambda_cls * BCE(D_cls(G(x,c')), c') + lambda_rec * |x - G(G(x,c'),c)|_1, and its terms."""
    adversarial = Wasserstein().generator(fake_src.float())
    cls = classification_loss(fake_cls.float(), label_trg)
    rec = reconstruction_loss(real.float(), reconstructed.float())
    total = adversarial + weights.lambda_rec * rec + weights.lambda_cls * cls
    return total, {"loss_g": total, "g_fake": adversarial, "g_cls": cls, "g_rec": rec}
