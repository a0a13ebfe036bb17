"""PGGAN training: the growth schedule, fade-in of networks and reals, WGAN-GP + drift, EMA of G.

Everything about where training stands (resolution, phase, alpha, minibatch size) is a pure function of
the images shown so far, which the loop checkpoints and restores; so a run resumed mid-fade continues
bit for bit without storing any schedule state. What is stored besides the weights is only a record
for humans and for the exporter: the generators' `grown_*` buffers (the stage of the last step taken)
and the `progressive` entry of the checkpoint.

Choices worth knowing:
- The optimisers are reset when a step ends on the boundary of a new resolution (the reference code's
  `reset_opt_for_new_lod`, which also resets when a fade ends; the issue asks for "each new resolution").
  Doing it at the end of the step means a checkpoint written on that boundary already holds the fresh
  optimisers, so resume needs no flag for "reset still pending".
- G's step reuses the step's fakes (scored by the just-updated D), as UnconditionalGAN does; the TF code
  draws fresh latents for G, which costs one more G forward pass per step.
- D sees reals and fakes at the current resolution, and the gradient penalty is taken there (as the
  PyTorch re-implementations do). The TF code feeds D nearest-upscaled full-resolution images, whose
  input gradient is smaller by the upscaling factor, so its penalty is weaker at low resolutions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from trainer.losses import Wasserstein, drift_penalty, gradient_penalty
from trainer.models.pggan import (
    PAPER_BATCH_SIZES,
    Discriminator,
    Generator,
    PGGANConfig,
    check_target,
    downsample,
    upsample,
)
from trainer.training.algorithm import GANAlgorithm, LatentGenerator, TrainingContext

if TYPE_CHECKING:
    from trainer.architecture import Architecture

GRID_SIZE = 64
SAMPLE_CHUNK = 16
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class Stage:
    resolution: int
    phase: str  # "fade" while the newest block is blended in, else "stable"
    alpha: float  # weight of the newest block: rises linearly 0 -> 1 through the fade, 1 otherwise


class GrowthSchedule:
    """4x4 stabilises for `stable_images`; every later resolution fades in for `fade_images`, then
    stabilises for `stable_images`; after the target's stabilise phase training stays at the target."""

    def __init__(self, target: int, fade_images: int, stable_images: int, batch_size: int = 0) -> None:
        check_target(target)
        if fade_images < 0 or stable_images < 1:
            raise ValueError(f"need fade_images >= 0 and stable_images >= 1, got {fade_images} and {stable_images}")
        if batch_size < 0:
            raise ValueError(f"batch_size must be >= 0 (0: the paper's schedule), got {batch_size}")
        self.target, self.fade_images, self.stable_images, self.batch_size = (
            target, fade_images, stable_images, batch_size
        )

    def stage_at(self, images_seen: int) -> Stage:
        if images_seen < self.stable_images:
            return Stage(4, "stable", 1.0)
        grown, into = divmod(images_seen - self.stable_images, self.fade_images + self.stable_images)
        resolution = 8 * 2**grown
        if resolution > self.target:
            return Stage(self.target, "stable", 1.0)
        if into < self.fade_images:
            return Stage(resolution, "fade", into / self.fade_images)
        return Stage(resolution, "stable", 1.0)

    def start_of(self, resolution: int) -> int:
        """Images shown when `resolution` starts (fading in; 4x4: 0)."""
        if resolution == 4:
            return 0
        return self.stable_images + (resolution.bit_length() - 4) * (self.fade_images + self.stable_images)

    def images_to_grow(self) -> int:
        """Images until the target resolution has finished stabilising."""
        return self.start_of(self.target) + self.fade_images + self.stable_images

    def batch_size_for(self, images_seen: int) -> int:
        return self.batch_size or PAPER_BATCH_SIZES[self.stage_at(images_seen).resolution]


def reals_at(real: Tensor, stage: Stage) -> Tensor:
    """Reals (at the target size) brought to the stage's resolution by 2x2 average pooling, and during a
    fade blended with their half-resolution version upsampled back, as G's output is."""
    x = downsample(real, real.shape[-1] // stage.resolution)
    if stage.alpha < 1.0:
        x = torch.lerp(upsample(downsample(x)), x, stage.alpha)
    return x


class ProgressiveGAN(GANAlgorithm):
    def __init__(
        self, generator: Generator, discriminator: Discriminator, config: PGGANConfig, context: TrainingContext
    ) -> None:
        # self.autocast covers the forward passes only: the gradient penalty's double backward stays fp32
        super().__init__(context, batch_size=config.batch_size)
        self.generator = self.add_network("generator", generator)
        self.discriminator = self.add_network("discriminator", discriminator)
        self.generator_ema = self.add_copy("generator_ema", self.generator)
        self.schedule = GrowthSchedule(config.image_size, config.fade_images, config.stable_images, config.batch_size)
        self.loss = Wasserstein()
        self.lr, self.betas = config.lr, (config.beta1, config.beta2)
        self.gp_lambda, self.drift, self.ema_beta = config.gp_lambda, config.drift, config.ema_beta
        self.images_seen = 0
        self._new_optimizers()
        fixed_rng = torch.Generator().manual_seed(context.seed + 2)
        self.fixed_latents = torch.randn(GRID_SIZE, generator.latent_dim, generator=fixed_rng).to(self.device)

    def _new_optimizers(self) -> None:
        """Fresh Adam state for both networks: at the start and at every new resolution."""
        self.opt_g = self.adam("optimizer_g", self.generator, self.lr, self.betas, eps=ADAM_EPS)
        self.opt_d = self.adam("optimizer_d", self.discriminator, self.lr, self.betas, eps=ADAM_EPS)

    def batch_size_for(self, images_seen: int) -> int:
        return self.schedule.batch_size_for(images_seen)

    def stage(self) -> Stage:
        """The stage of the last step taken (4x4 stable before the first), as recorded in G_ema."""
        alpha = float(self.generator_ema.grown_alpha)
        return Stage(int(self.generator_ema.grown_resolution), "fade" if alpha < 1.0 else "stable", alpha)

    def train_step(self, real: Tensor) -> dict[str, Tensor]:
        stage = self.schedule.stage_at(self.images_seen)
        resolution, alpha = stage.resolution, stage.alpha
        real = reals_at(real.to(self.device, non_blocking=True), stage)
        # drawn for the global batch and sharded, so that any number of ranks sees the same noise
        n = self.ranks.global_size(real.shape[0])
        z = self.ranks.shard(torch.randn(n, self.generator.latent_dim, generator=self.noise, device=self.device))
        critic = self.discriminator

        with self.autocast:
            fake = self.generator(z, resolution, alpha)
            real_out = critic(real, alpha).float()
            fake_out = critic(fake.detach(), alpha).float()
        mix = self.ranks.shard(torch.rand(n, generator=self.noise, device=self.device))
        penalty = gradient_penalty(lambda x: critic(x, alpha), real, fake.float(), eps=mix)
        drift = drift_penalty(real_out)
        loss_d = self.loss.discriminator(real_out, fake_out) + self.gp_lambda * penalty + self.drift * drift
        self.ranks.optimize(loss_d, self.opt_d, self.discriminator)

        critic.requires_grad_(False)  # G's step needs gradients through D, not for D's weights
        try:
            with self.autocast:
                loss_g = self.loss.generator(critic(fake, alpha).float())
            self.ranks.optimize(loss_g, self.opt_g, self.generator)
        finally:
            critic.requires_grad_(True)
        self._update_ema()

        self.images_seen += n
        for g in (self.generator, self.generator_ema):
            g.record_stage(resolution, alpha, self.images_seen)
        if self.schedule.stage_at(self.images_seen).resolution != resolution:
            self._new_optimizers()
        return {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "gp": penalty.detach(),
            "d_real": real_out.detach().mean(),
            "d_fake": fake_out.detach().mean(),
        }

    @torch.no_grad()
    def _update_ema(self) -> None:
        for ema, live in zip(self.generator_ema.parameters(), self.generator.parameters(), strict=True):
            ema.lerp_(live, 1.0 - self.ema_beta)

    @torch.no_grad()
    def sample(self) -> Tensor:
        """G_ema on the fixed latents at the current resolution and alpha, upscaled (nearest) to the
        target size so that grids from every stage of a run line up pixel for pixel."""
        stage = self.stage()
        images = torch.cat([
            self.generator_ema(z, stage.resolution, stage.alpha) for z in self.fixed_latents.split(SAMPLE_CHUNK)
        ])
        return upsample(images, self.generator_ema.image_size // stage.resolution).float().cpu()

    def served_generator(self) -> LatentGenerator:
        """G_ema at the stage reached so far: what gan-export serves."""
        return LatentGenerator(self.generator_ema, self.generator_ema.latent_dim, "normal")

    def progress(self) -> dict[str, Any]:
        stage = self.stage()
        return {"resolution": stage.resolution, "phase": stage.phase, "alpha": round(stage.alpha, 4)}

    def extra_state(self) -> dict[str, Any]:
        # a record for humans; on resume everything is derived from images_seen again
        return {"progressive": {**asdict(self.stage()), "images_seen": self.images_seen}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.images_seen = int(state["progressive"]["images_seen"])


def build_progressive(arch: Architecture, config: PGGANConfig, context: TrainingContext) -> ProgressiveGAN:
    return ProgressiveGAN(arch.build_generator(config), arch.build_discriminator(config), config, context)
