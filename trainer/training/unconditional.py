"""One D update then one G update per step: the DCGAN / LSGAN recipe, for any network and any loss.

Everything random here draws from the algorithm's own generator, whose state goes into the checkpoint,
so a resumed run draws the same latents as an uninterrupted one. Under data parallelism the latents are
drawn for the global batch and sharded, and gradients are averaged before each optimizer step
(trainer/training/distributed.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, make_dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from trainer.losses import build_loss
from trainer.models.common import option, sample_latents
from trainer.training.algorithm import GANAlgorithm, LatentGenerator, TrainingContext

if TYPE_CHECKING:
    from trainer.architecture import Architecture

GRID_SIZE = 64


@dataclass
class UnconditionalConfig:
    """What this recipe reads from a config. Architectures trained by it share these fields and differ
    only in their papers' defaults (`with_defaults`), so DCGAN and LSGAN no longer keep two copies."""

    image_size: int
    latent_dim: int
    ngf: int
    ndf: int
    latent_distribution: str
    loss: str
    lr: float
    beta1: float
    beta2: float
    batch_size: int

    @classmethod
    def with_defaults(cls, name: str, module: str, **defaults: tuple[Any, str]) -> type[UnconditionalConfig]:
        """A subclass named `name` whose fields default to one paper's values, each with the help text
        `gan-train` shows; every field must be given, so no architecture inherits another's defaults."""
        types = {f.name: f.type for f in fields(cls)}
        if set(defaults) != set(types):
            raise TypeError(f"{name}: give defaults for exactly {sorted(types)}, got {sorted(defaults)}")
        specs = [(key, types[key], option(*defaults[key])) for key in types]
        config_cls = make_dataclass(name, specs, bases=(cls,))
        config_cls.__module__ = module  # where it is declared, for repr and pickling
        return config_cls


class UnconditionalGAN(GANAlgorithm):
    def __init__(
        self, generator: nn.Module, discriminator: nn.Module, config: UnconditionalConfig, context: TrainingContext
    ) -> None:
        super().__init__(context, batch_size=config.batch_size)
        self.generator = self.add_network("generator", generator)
        self.discriminator = self.add_network("discriminator", discriminator)
        self.loss = build_loss(config.loss)
        self.latent_dim, self.latent_distribution = config.latent_dim, config.latent_distribution
        betas = (config.beta1, config.beta2)
        self.opt_g = self.adam("optimizer_g", self.generator, config.lr, betas)
        self.opt_d = self.adam("optimizer_d", self.discriminator, config.lr, betas)
        self.fixed_latents = sample_latents(
            self.latent_dim, self.latent_distribution, GRID_SIZE, torch.Generator().manual_seed(context.seed + 2)
        ).to(self.device)

    def latents(self, n: int) -> Tensor:
        """This rank's `n` latents of a global batch drawn whole (so the noise stream is the same for any
        number of processes)."""
        whole = sample_latents(self.latent_dim, self.latent_distribution, self.ranks.global_size(n), self.noise,
                               self.device)
        return self.ranks.shard(whole)

    def train_step(self, real: Tensor) -> dict[str, Tensor]:
        real = real.to(self.device, non_blocking=True)
        z = self.latents(real.shape[0])

        with self.autocast:
            fake = self.generator(z)
            real_out = self.discriminator(real)
            fake_out = self.discriminator(fake.detach())
            loss_d = self.loss.discriminator(real_out.float(), fake_out.float())
        self.ranks.optimize(loss_d, self.opt_d, self.discriminator)

        with self.autocast:
            fake_out_g = self.discriminator(fake)
            loss_g = self.loss.generator(fake_out_g.float())
        self.ranks.optimize(loss_g, self.opt_g, self.generator)

        return {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "d_real": real_out.detach().float().mean(),
            "d_fake": fake_out.detach().float().mean(),
        }

    @torch.no_grad()
    def sample(self) -> Tensor:
        """The fixed-latent grid, in eval mode: BatchNorm uses its running statistics, as the exported
        generator does (a served image must not depend on which other requests share its batch)."""
        self.generator.eval()
        try:
            return self.generator(self.fixed_latents).float().cpu()
        finally:
            self.generator.train()

    def served_generator(self) -> LatentGenerator:
        return LatentGenerator(self.generator, self.latent_dim, self.latent_distribution)


def build_unconditional(arch: Architecture, config: UnconditionalConfig, context: TrainingContext) -> UnconditionalGAN:
    """The algorithm builder of every architecture trained by this recipe: its own G and D, this loop."""
    return UnconditionalGAN(arch.build_generator(config), arch.build_discriminator(config), config, context)
