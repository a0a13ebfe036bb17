"""Fixtures shared by the trainer and export tests: tiny trained checkpoints, built on the fly."""

from __future__ import annotations

import pytest

TINY_CONFIGS = {
    "dcgan": {"image_size": 16, "ngf": 8, "ndf": 8, "batch_size": 8, "latent_dim": 16},
    "lsgan": {"image_size": 16, "ngf": 16, "ndf": 8, "latent_dim": 16, "batch_size": 8},
    # grows 4 -> 8 -> 16 in 8 steps of 8 images: 4x4 for 2 steps, each later resolution 2 fading + 2 stable
    "pggan": {"image_size": 16, "fmap_base": 64, "fmap_max": 16, "latent_dim": 16, "batch_size": 8,
              "fade_images": 16, "stable_images": 16},
    # 16x16, three colour domains, G updated every 2nd step so that 4 steps move G twice
    "stargan": {"image_size": 16, "g_conv_dim": 8, "d_conv_dim": 8, "g_repeat_num": 1, "batch_size": 8, "n_critic": 2,
                "attributes": "colour_red,colour_green,colour_blue", "eval_images": 24, "classifier_steps": 20},
    # x4 from 8x8 LR crops of 32x32 HR crops; srgan with the MSE content loss (VGG54 needs a weights file)
    "srresnet": {"blocks": 2, "channels": 8, "crop_size": 32, "batch_size": 4},
    "srgan": {"blocks": 2, "channels": 8, "crop_size": 32, "batch_size": 4, "ndf": 8, "d_dense": 16,
              "content_loss": "mse"},
}


def train_tiny(arch: str, out, steps: int = 4, resume: bool = False, **overrides):
    """A few real optimisation steps, so that exported weights are not the initial ones; `resume`
    continues the run in `out` up to `steps`."""
    from trainer.registry import get_architecture
    from trainer.training.loop import Run, TrainOptions

    config = get_architecture(arch).make_config({**TINY_CONFIGS[arch], **overrides})
    options = TrainOptions(data="shapes:32", steps=steps, out=str(out), seed=3, log_every=2, sample_every=0,
                           checkpoint_every=0, progress=False, resume=resume)
    run = Run(arch, config, options)
    run.train()
    return run


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Run folders of a tiny trained DCGAN and LSGAN, trained once per test session."""
    root = tmp_path_factory.mktemp("runs")
    return {arch: train_tiny(arch, root / arch).out for arch in TINY_CONFIGS}
