"""Run under `torchrun --nproc-per-node 2` by test_distributed.py: trains the tiny configs of the named
architectures on every rank (gloo on CPU), with the same options as the one-process reference run."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.conftest import TINY_CONFIGS
from trainer.registry import get_architecture
from trainer.training.distributed import from_environment, shutdown
from trainer.training.loop import Run, TrainOptions

# runs of a registered architecture with options beyond its tiny config: name -> (architecture, overrides)
VARIANTS = {"dcgan-r1": ("dcgan", {"r1_gamma": 1.0, "r1_every": 2})}  # R1's double backward through BatchNorm
STEPS = {"pggan": 8}  # through 4x4, the 8x8 fade and into 16x16; the others take DEFAULT_STEPS
DEFAULT_STEPS = 4


def options(arch: str, out: Path) -> TrainOptions:
    return TrainOptions(data="shapes:32", steps=STEPS.get(arch, DEFAULT_STEPS), out=str(out), seed=3, log_every=2,
                        sample_every=0, checkpoint_every=0, progress=False)


def build(name: str, out: Path) -> Run:
    arch, overrides = VARIANTS.get(name, (name, {}))
    return Run(arch, get_architecture(arch).make_config({**TINY_CONFIGS[arch], **overrides}), options(name, out))


def train(arch: str, out: Path) -> Run:
    run = build(arch, out)
    run.train()
    return run


def main(root: str, archs: list[str]) -> None:
    ranks = from_environment()
    try:
        for arch in archs:
            train(arch, Path(root) / arch)
    finally:
        shutdown(ranks)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
