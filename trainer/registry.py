"""Every architecture the trainer knows, and how to build, train and export each.

`export/` and the CLI look architectures up here by name and never import a model module directly,
so adding a GAN means one module plus one entry in `ARCHITECTURES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from trainer.data import build_dataset
from trainer.data.labelled import build_labelled_dataset
from trainer.data.super_resolution import build_sr_dataset
from trainer.export_spec import ExportSpec, latent_generator_spec
from trainer.losses import build_loss
from trainer.models import dcgan, lsgan, pggan, srgan, stargan
from trainer.training import translation
from trainer.training.distributed import DataParallel
from trainer.training.progressive import GrowthSchedule, ProgressiveGAN
from trainer.training.super_resolution import build_srgan, build_srresnet
from trainer.training.unconditional import UnconditionalGAN


@dataclass(frozen=True)
class Architecture:
    name: str
    task: str
    summary: str
    config_cls: type
    build_generator: Callable[[Any], nn.Module]
    # (config, device, seed, amp, parallel) -> the algorithm the loop drives
    build_algorithm: Callable[[Any, torch.device, int, bool, DataParallel | None], Any]
    export_spec: Callable[[Any, nn.Module], ExportSpec]
    # which weights in the checkpoint are the ones to serve (G_ema where the architecture keeps one)
    served_generator_key: str = "generator"
    # (spec, config, seed) -> Dataset, for architectures whose data is not plain images (SR pairs, labels)
    build_dataset: Callable[[str, Any, int], Dataset] | None = None

    def dataset(self, spec: str, config: Any, seed: int) -> Dataset:
        if self.build_dataset is not None:
            return self.build_dataset(spec, config, seed)
        return build_dataset(spec, config.image_size, seed)

    def make_config(self, values: dict[str, Any]) -> Any:
        known = {f.name for f in fields(self.config_cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{self.name}: unknown config keys {sorted(unknown)}")
        return self.config_cls(**values)


def _unconditional(module: Any) -> Callable[[Any, torch.device, int, bool, DataParallel | None], UnconditionalGAN]:
    def build(
        config: Any, device: torch.device, seed: int, amp: bool, parallel: DataParallel | None = None
    ) -> UnconditionalGAN:
        torch.manual_seed(seed)  # weight initialisation is part of the run's reproducibility
        return UnconditionalGAN(
            module.build_generator(config),
            module.build_discriminator(config),
            build_loss(config.loss),
            latent_dim=config.latent_dim,
            latent_distribution=config.latent_distribution,
            lr=config.lr,
            betas=(config.beta1, config.beta2),
            device=device,
            seed=seed,
            amp=amp,
            parallel=parallel,
            ema_beta=config.ema_beta,
        )

    return build


def _latent_spec(config: Any, generator: nn.Module) -> ExportSpec:
    return latent_generator_spec(generator, config.latent_dim, config.latent_distribution, config.image_size)


def _progressive(
    config: pggan.PGGANConfig, device: torch.device, seed: int, amp: bool, parallel: DataParallel | None = None
) -> ProgressiveGAN:
    torch.manual_seed(seed)
    schedule = GrowthSchedule(config.image_size, config.fade_images, config.stable_images, config.batch_size)
    return ProgressiveGAN(
        pggan.build_generator(config),
        pggan.build_discriminator(config),
        schedule,
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        gp_lambda=config.gp_lambda,
        drift=config.drift,
        ema_beta=config.ema_beta,
        device=device,
        seed=seed,
        amp=amp,
        parallel=parallel,
    )


def _grown_spec(config: pggan.PGGANConfig, generator: nn.Module) -> ExportSpec:
    """The generator at the resolution and alpha its checkpoint reached (recorded in its buffers): only
    the layers that stage uses, latent pixel norm inside, so the service feeds plain N(0,1) latents."""
    if not isinstance(generator, pggan.Generator):
        raise TypeError(f"pggan export needs a pggan.Generator, got {type(generator).__name__}")
    grown = generator.grown()
    extra = {"resolution": grown.resolution, "alpha": grown.alpha, "images_seen": int(generator.grown_images)}
    return latent_generator_spec(grown, config.latent_dim, "normal", grown.resolution, extra)


ARCHITECTURES: dict[str, Architecture] = {
    "dcgan": Architecture(
        name="dcgan",
        task="generate",
        summary="DCGAN (Radford et al. 2016): all-convolutional G and D with BatchNorm",
        config_cls=dcgan.DCGANConfig,
        build_generator=dcgan.build_generator,
        build_algorithm=_unconditional(dcgan),
        export_spec=_latent_spec,
    ),
    "lsgan": Architecture(
        name="lsgan",
        task="generate",
        summary="LSGAN (Mao et al. 2017): least-squares loss, the paper's LSUN architecture",
        config_cls=lsgan.LSGANConfig,
        build_generator=lsgan.build_generator,
        build_algorithm=_unconditional(lsgan),
        export_spec=_latent_spec,
    ),
    "pggan": Architecture(
        name="pggan",
        task="generate",
        summary="PGGAN (Karras et al. 2018): progressive growing from 4x4, WGAN-GP + drift, EMA generator",
        config_cls=pggan.PGGANConfig,
        build_generator=pggan.build_generator,
        build_algorithm=_progressive,
        export_spec=_grown_spec,
        served_generator_key="generator_ema",
    ),
    "stargan": Architecture(
        name="stargan",
        task="translate",
        summary="StarGAN (Choi et al. 2018): multi-domain image-to-image translation over binary attributes; "
        "--data shapes[:N] | celeba:ROOT | csv:IMAGES_DIR,ATTRS.csv",
        config_cls=stargan.StarGANConfig,
        build_generator=stargan.build_generator,
        build_algorithm=translation.build_algorithm,
        export_spec=stargan.export_spec,
        build_dataset=build_labelled_dataset,
    ),
    "srresnet": Architecture(
        name="srresnet",
        task="super_resolve",
        summary="SRResNet (Ledig et al. 2017), SRGAN stage 1: x4 super-resolution trained with pixel MSE; "
        "--data photos | folder:HR_IMAGES | shapes[:N]",
        config_cls=srgan.SRResNetConfig,
        build_generator=srgan.build_generator,
        build_algorithm=build_srresnet,
        export_spec=srgan.export_spec,
        build_dataset=build_sr_dataset,
    ),
    "srgan": Architecture(
        name="srgan",
        task="super_resolve",
        summary="SRGAN (Ledig et al. 2017), stage 2: from an srresnet run (--init-from), content (vgg54 | mse) "
        "+ 1e-3 x adversarial loss; --data photos | folder:HR_IMAGES | shapes[:N]",
        config_cls=srgan.SRGANConfig,
        build_generator=srgan.build_generator,
        build_algorithm=build_srgan,
        export_spec=srgan.export_spec,
        build_dataset=build_sr_dataset,
    ),
}


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose from {sorted(ARCHITECTURES)}") from None
