"""Fixtures shared by the trainer and export tests: tiny trained checkpoints, built on the fly."""

from __future__ import annotations

import pytest

TINY_CONFIGS = {
    "dcgan": {"image_size": 16, "ngf": 8, "ndf": 8, "batch_size": 8, "latent_dim": 16},
    "lsgan": {"image_size": 16, "ngf": 16, "ndf": 8, "latent_dim": 16, "batch_size": 8},
    # grows 4 -> 8 -> 16 in 8 steps of 8 images: 4x4 for 2 steps, each later resolution 2 fading + 2 stable
    "pggan": {"image_size": 16, "fmap_base": 64, "fmap_max": 16, "latent_dim": 16, "batch_size": 8,
              "fade_images": 16, "stable_images": 16},
}


def train_tiny(arch: str, out, steps: int = 4, **overrides):
    """A few real optimisation steps, so that exported weights are not the initial ones."""
    from trainer.registry import get_architecture
    from trainer.training.loop import Run, TrainOptions

    config = get_architecture(arch).make_config({**TINY_CONFIGS[arch], **overrides})
    options = TrainOptions(data="shapes:32", steps=steps, out=str(out), seed=3, log_every=2, sample_every=0,
                           checkpoint_every=0, progress=False)
    run = Run(arch, config, options)
    run.train()
    return run


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Run folders of a tiny trained DCGAN and LSGAN, trained once per test session."""
    root = tmp_path_factory.mktemp("runs")
    return {arch: train_tiny(arch, root / arch).out for arch in TINY_CONFIGS}
