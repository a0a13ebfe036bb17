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
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from trainer.losses import AdversarialLoss
from trainer.models.common import sample_latents
from trainer.training.distributed import DataParallel
from trainer.training.precision import training_autocast

GRID_SIZE = 64
# standing BatchNorm statistics of the generator EMA: 2,048 fixed latents
EMA_STATS_BATCHES, EMA_STATS_BATCH, EMA_STATS_SEED = 8, 256, 1_000_004


class UnconditionalGAN:
    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: AdversarialLoss,
        *,
        latent_dim: int,
        latent_distribution: str,
        lr: float,
        betas: tuple[float, float],
        device: torch.device,
        seed: int,
        amp: bool = False,
        parallel: DataParallel | None = None,
        ema_beta: float = 0.0,
    ) -> None:
        if not 0.0 <= ema_beta < 1.0:
            raise ValueError(f"ema_beta must be in [0, 1), got {ema_beta}")
        self.device = device
        self.parallel = parallel = parallel or DataParallel()
        # the average keeps plain BatchNorm (its statistics are recomputed on this process alone)
        self.generator_ema = copy.deepcopy(generator).to(device).requires_grad_(False).eval() if ema_beta else None
        self.generator = parallel.synchronise_batchnorm(generator, device).to(device)
        self.discriminator = parallel.synchronise_batchnorm(discriminator, device).to(device)
        parallel.broadcast_state(self.generator, self.discriminator)
        self.loss = loss
        self.latent_dim, self.latent_distribution = latent_dim, latent_distribution
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=betas)
        self.noise = torch.Generator(device=device).manual_seed(seed + 1)
        self.fixed_latents = sample_latents(
            latent_dim, latent_distribution, GRID_SIZE, torch.Generator().manual_seed(seed + 2)
        ).to(device)
        self.autocast = training_autocast(device, amp)
        self.ema_beta = ema_beta
        self.ema_stats_stale = True

    def latents(self, n: int) -> Tensor:
        """This rank's `n` latents of a global batch drawn whole (so the noise stream is the same for any
        number of processes)."""
        whole = sample_latents(self.latent_dim, self.latent_distribution, self.parallel.global_size(n), self.noise,
                               self.device)
        return self.parallel.shard(whole)

    def train_step(self, real: Tensor) -> dict[str, Tensor]:
        real = real.to(self.device, non_blocking=True)
        z = self.latents(real.shape[0])

        with self.autocast:
            fake = self.generator(z)
            real_out = self.discriminator(real)
            fake_out = self.discriminator(fake.detach())
            loss_d = self.loss.discriminator(real_out.float(), fake_out.float())
        self.parallel.optimize(loss_d, self.opt_d, self.discriminator)

        with self.autocast:
            fake_out_g = self.discriminator(fake)
            loss_g = self.loss.generator(fake_out_g.float())
        self.parallel.optimize(loss_g, self.opt_g, self.generator)
        self._update_ema()

        return {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "d_real": real_out.detach().float().mean(),
            "d_fake": fake_out.detach().float().mean(),
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

    @torch.no_grad()
    def sample(self) -> Tensor:
        """The fixed-latent grid of the served generator, in eval mode: BatchNorm uses its running
        statistics, as the exported generator does (a served image must not depend on which other requests
        share its batch)."""
        generator = self.served_generator()[0]
        was_training = generator.training
        generator.eval()
        try:
            return generator(self.fixed_latents).float().cpu()
        finally:
            generator.train(was_training)

    def progress(self) -> dict[str, Any]:
        return {}

    def served_generator(self) -> tuple[nn.Module, int, str]:
        """(network, latent size, latent distribution) of what gan-export serves: the loop scores it."""
        if self.generator_ema is None:
            return self.generator, self.latent_dim, self.latent_distribution
        self._standing_stats()
        return self.generator_ema, self.latent_dim, self.latent_distribution

    def state_dict(self) -> dict[str, Any]:
        served = {"generator": self.generator.state_dict()}
        if self.generator_ema is not None:
            self._standing_stats()
            served = {"generator": self.generator_ema.state_dict(), "generator_live": self.generator.state_dict()}
        return {
            **served,
            "discriminator": self.discriminator.state_dict(),
            "optimizer_g": self.opt_g.state_dict(),
            "optimizer_d": self.opt_d.state_dict(),
            "noise_rng": self.noise.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.generator_ema is not None:
            if "generator_live" not in state:
                raise ValueError("this run keeps a generator EMA (ema_beta > 0) but the checkpoint has none")
            self.generator_ema.load_state_dict(state["generator"])
            self.generator.load_state_dict(state["generator_live"])
            self.ema_stats_stale = True  # recomputed as this code does (a checkpoint may hold others)
        else:
            if "generator_live" in state:
                raise ValueError("the checkpoint keeps a generator EMA: resume it with the same ema_beta")
            self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["optimizer_g"])
        self.opt_d.load_state_dict(state["optimizer_d"])
        self.noise.set_state(state["noise_rng"].cpu())
