"""Adversarial objectives, independent of any network.

Every loss takes the discriminator's raw outputs (logits / critic scores), so any network can be trained
with any suitable loss: `--loss` picks one by name. Objectives that need the discriminator itself
(WGAN-GP's gradient penalty) get it passed in explicitly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


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
