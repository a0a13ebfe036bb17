"""One D update then one G update per step: the DCGAN / LSGAN recipe, for any network and any loss.

Everything random here draws from the algorithm's own generator, whose state goes into the checkpoint,
so a resumed run draws the same latents as an uninterrupted one. Under data parallelism the latents are
drawn for the global batch and sharded, and gradients are averaged before each optimizer step
(trainer/training/distributed.py).

With `ema_beta` > 0 an exponential moving average of G's weights is kept after every G step, as PGGAN
does, and it is what is sampled, scored and served: the checkpoint's "generator" is then the average (what
export and evaluation load) and "generator_live" the weights being trained, so every reader of "generator"
gets the served network without knowing about EMA. BatchNorm's running statistics are not averaged: the
average of the live network's statistics does not describe the averaged weights' activations (a DCGAN's
FID was 37.7 with averaged statistics against 7.1 with recomputed ones, at the same weights), so they are
recomputed for the averaged weights ("standing statistics") from a fixed set of latents whenever the
average is used; the training itself never reads them, so resume stays exact.

Two opt-in stabilisers, both off by default so that the papers' recipes are unchanged:
- `r1_gamma` > 0 adds Mescheder et al.'s (2018) R1 penalty gamma/2 * E||grad_x D(x)||^2 on real images to
  D's loss. Without it D is free to sharpen its decision boundary around the data until its logits
  saturate (the shapes release run: loss_d ~0.0015, d_real +7.6, d_fake -8.6 by step 4,100), G's gradient
  carries almost no information and G collapses onto the modes D is least sure about; penalising D's
  slope on the data manifold is what makes the unregularised GAN's equilibrium locally convergent in
  their analysis. With `r1_every` = k > 1 the penalty is applied lazily, as StyleGAN2 does: on every k-th
  step only, scaled by k, so its expected weight is the same for a k-th of the cost (the double backward
  is the expensive part on a CPU). It is computed in float32 outside autocast, on a separate forward of
  the reals, as PGGAN's gradient penalty is.
- `lr_d` > 0 gives D its own learning rate (TTUR, Heusel et al. 2017); 0 means D uses `lr` as G does.

And an opt-in end to training: with `lr_decay_end` > 0 both learning rates fall linearly from step
`lr_decay_start` to 0 at step `lr_decay_end`, as StarGAN's schedule does over its last steps. The GAN's
moving target keeps G's weights circling a solution at a constant rate (the shapes runs' FID wobbles by
10-20% between evaluations); annealing the rate settles them, as the EMA of G does by averaging. On the
shapes it took the release DCGAN from FID 5.1 to 3.65 and gave LSGAN, whose EMA already averaged, nothing
(docs/quality.md). The schedule is by absolute step, so a run resumed with it reproduces one started with it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, make_dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from trainer.losses import build_loss
from trainer.models.common import option, sample_latents
from trainer.training.algorithm import GANAlgorithm, LatentGenerator, TrainingContext
from trainer.training.schedule import lr_factor

if TYPE_CHECKING:
    from trainer.architecture import Architecture

GRID_SIZE = 64
# standing BatchNorm statistics of the generator EMA: 2,048 fixed latents
EMA_STATS_BATCHES, EMA_STATS_BATCH, EMA_STATS_SEED = 8, 256, 1_000_004


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
    ema_beta: float
    r1_gamma: float
    r1_every: int
    lr_d: float
    lr_decay_start: int
    lr_decay_end: int

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


# the stabilisers' defaults and help, shared by every architecture of this recipe (off: the papers' recipes)
STABILISER_DEFAULTS: dict[str, tuple[Any, str]] = {
    "r1_gamma": (0.0, "R1 penalty gamma/2 * E||grad D(real)||^2 added to D's loss (0: off, as the paper; "
                 "Mescheder et al. 2018; StyleGAN2 uses 0.01-10 depending on resolution)"),
    "r1_every": (1, "apply the R1 penalty every k-th step only, scaled by k (lazy regularisation, StyleGAN2: 16)"),
    "lr_d": (0.0, "Adam learning rate for D alone (0: the same as --lr, as the paper; TTUR)"),
    "lr_decay_start": (0, "step from which both learning rates fall linearly to 0 at --lr-decay-end"),
    "lr_decay_end": (0, "step at which the learning rates reach 0 (0: no decay, constant as the paper)"),
}


class UnconditionalGAN(GANAlgorithm):
    def __init__(
        self, generator: nn.Module, discriminator: nn.Module, config: UnconditionalConfig, context: TrainingContext
    ) -> None:
        super().__init__(context, batch_size=config.batch_size)
        if not 0.0 <= config.ema_beta < 1.0:
            raise ValueError(f"ema_beta must be in [0, 1), got {config.ema_beta}")
        self.ema_beta = config.ema_beta
        if config.r1_gamma < 0 or config.r1_every < 1 or config.lr_d < 0:
            raise ValueError(f"need r1_gamma >= 0, r1_every >= 1 and lr_d >= 0, got {config.r1_gamma}, "
                             f"{config.r1_every}, {config.lr_d}")
        self.r1_gamma, self.r1_every = config.r1_gamma, config.r1_every
        if (config.lr_decay_end or config.lr_decay_start) and not 0 <= config.lr_decay_start < config.lr_decay_end:
            raise ValueError(f"need 0 <= lr_decay_start < lr_decay_end, got {config.lr_decay_start} and "
                             f"{config.lr_decay_end}")
        self.lr_decay = (config.lr_decay_start, config.lr_decay_end)
        self.steps_taken = 0  # the clock of lazy R1 and the lr decay; restored from the checkpoint's step on resume
        self.last_r1 = torch.zeros((), device=self.device)
        self.generator_ema: nn.Module | None = None
        if self.ema_beta:
            # copied before add_network, so the average keeps plain BatchNorm (its statistics are
            # recomputed on this process alone); saved as "generator", what gan-export serves
            self.generator_ema = self.add_copy("generator", generator).to(self.device).eval()
        self.ema_stats_stale = True
        self.generator = self.add_network("generator_live" if self.ema_beta else "generator", generator)
        self.discriminator = self.add_network("discriminator", discriminator)
        self.loss = build_loss(config.loss)
        self.latent_dim, self.latent_distribution = config.latent_dim, config.latent_distribution
        betas = (config.beta1, config.beta2)
        self.opt_g = self.adam("optimizer_g", self.generator, config.lr, betas)
        self.opt_d = self.adam("optimizer_d", self.discriminator, config.lr_d or config.lr, betas)
        self.base_lr = {self.opt_g: config.lr, self.opt_d: config.lr_d or config.lr}
        self.fixed_latents = sample_latents(
            self.latent_dim, self.latent_distribution, GRID_SIZE, torch.Generator().manual_seed(context.seed + 2)
        ).to(self.device)

    def latents(self, n: int) -> Tensor:
        """This rank's `n` latents of a global batch drawn whole (so the noise stream is the same for any
        number of processes)."""
        whole = sample_latents(self.latent_dim, self.latent_distribution, self.ranks.global_size(n), self.noise,
                               self.device)
        return self.ranks.shard(whole)

    def lr_multiplier(self, step: int) -> float:
        """The learning rates' multiplier at `step`: 1, or falling linearly to 0 over the decay window."""
        start, end = self.lr_decay
        return 1.0 if not end else lr_factor(step, end, end - start)

    def train_step(self, real: Tensor) -> dict[str, Tensor]:
        real = real.to(self.device, non_blocking=True)
        factor = self.lr_multiplier(self.steps_taken)  # one rate for this step's D and G updates
        for optimizer, base in self.base_lr.items():
            for group in optimizer.param_groups:
                group["lr"] = base * factor
        z = self.latents(real.shape[0])

        with self.autocast:
            fake = self.generator(z)
            real_out = self.discriminator(real)
            fake_out = self.discriminator(fake.detach())
            loss_d = self.loss.discriminator(real_out.float(), fake_out.float())
        if self.r1_gamma and self.steps_taken % self.r1_every == 0:
            penalty = r1_penalty(self.discriminator, real)
            loss_d = loss_d + (self.r1_gamma / 2 * self.r1_every) * penalty
            self.last_r1 = penalty.detach()
        self.ranks.optimize(loss_d, self.opt_d, self.discriminator)
        self.steps_taken += 1

        with self.autocast:
            fake_out_g = self.discriminator(fake)
            loss_g = self.loss.generator(fake_out_g.float())
        self.ranks.optimize(loss_g, self.opt_g, self.generator)
        self._update_ema()

        return {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "d_real": real_out.detach().float().mean(),
            "d_fake": fake_out.detach().float().mean(),
            # the latest E||grad_x D(x)||^2 measured (unweighted; a lazy penalty is not measured every step)
            **({"r1": self.last_r1} if self.r1_gamma else {}),
            **({"lr_factor": torch.tensor(factor, device=self.device)} if self.lr_decay[1] else {}),
        }

    @torch.no_grad()
    def _update_ema(self) -> None:
        """G_ema = beta * G_ema + (1 - beta) * G over the parameters; BatchNorm statistics: _standing_stats."""
        if self.generator_ema is None:
            return
        for ema, live in zip(self.generator_ema.parameters(), self.generator.parameters(), strict=True):
            ema.lerp_(live, 1.0 - self.ema_beta)
        self.ema_stats_stale = True

    @torch.no_grad()
    def _standing_stats(self) -> None:
        """BatchNorm running statistics of the averaged weights: the exact mean and variance over
        EMA_STATS_BATCHES x EMA_STATS_BATCH fixed latents (a private generator: the training's random
        streams are untouched), computed in train mode and then frozen for eval mode."""
        ema = self.generator_ema
        if ema is None or not self.ema_stats_stale:
            return
        norms = [m for m in ema.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        noise = torch.Generator().manual_seed(EMA_STATS_SEED)
        ema.train()
        try:
            for _ in range(EMA_STATS_BATCHES):
                z = sample_latents(self.latent_dim, self.latent_distribution, EMA_STATS_BATCH, noise)
                ema(z.to(self.device))
        finally:
            ema.eval()
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
        self.ema_stats_stale = False

    def _served(self) -> nn.Module:
        if self.generator_ema is None:
            return self.generator
        self._standing_stats()
        return self.generator_ema

    @torch.no_grad()
    def sample(self) -> Tensor:
        """The fixed-latent grid of the served generator, in eval mode: BatchNorm uses its running
        statistics, as the exported generator does (a served image must not depend on which other requests
        share its batch)."""
        generator = self._served()
        was_training = generator.training
        generator.eval()
        try:
            return generator(self.fixed_latents).float().cpu()
        finally:
            generator.train(was_training)

    def served_generator(self) -> LatentGenerator:
        return LatentGenerator(self._served(), self.latent_dim, self.latent_distribution)

    def state_dict(self) -> dict[str, Any]:
        self._standing_stats()  # the saved "generator" is what is served
        return super().state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        has_live = "generator_live" in state
        if has_live != (self.generator_ema is not None):
            raise ValueError("the checkpoint " + ("keeps" if has_live else "has no") + " generator EMA, this "
                             "run " + ("has none" if has_live else "keeps one") + ": resume it with the same ema_beta")
        super().load_state_dict(state)
        self.steps_taken = int(state.get("step", 0))
        self.ema_stats_stale = True  # recomputed as this code does (a checkpoint may hold others)

    def extra_state(self) -> dict[str, Any]:
        # only the logged value: a lazy penalty is measured every r1_every steps, and without it a resumed
        # run would log r1 = 0 until the next penalised step
        return {"r1_last": float(self.last_r1)} if self.r1_gamma else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.last_r1 = torch.tensor(float(state.get("r1_last", 0.0)), device=self.device)


def r1_penalty(discriminator: nn.Module, real: Tensor) -> Tensor:
    """E||grad_x D(x)||^2 over this rank's reals x (Mescheder et al. 2018's R1 before its gamma/2).

    A separate float32 forward (no autocast: the double backward stays fp32, as PGGAN's penalty), with
    the graph kept so that the penalty's gradient reaches D's weights. A mean over the local batch, like
    every loss here, so the ranks' averaged gradients are the global batch's; D's BatchNorm normalises by
    the global batch in this forward too (AllReduceBatchNorm is twice differentiable)."""
    x = real.detach().float().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x).float().sum(), x, create_graph=True)
    return grad.flatten(1).square().sum(1).mean()


def build_unconditional(arch: Architecture, config: UnconditionalConfig, context: TrainingContext) -> UnconditionalGAN:
    """The algorithm builder of every architecture trained by this recipe: its own G and D, this loop."""
    return UnconditionalGAN(arch.build_generator(config), arch.build_discriminator(config), config, context)
