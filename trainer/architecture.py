"""What the trainer, export and evaluation know about one GAN: the `Architecture` declaration.

Each architecture module (trainer/models/<name>.py) ends with one `Architecture(...)` that names its
config, networks, training algorithm, export signature and data; `trainer.registry` lists them. Nothing
else refers to an architecture by name, so a new GAN is its module plus one line in the registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from trainer.data import build_dataset
from trainer.export_spec import ExportSpec
from trainer.training.algorithm import GANAlgorithm, TrainingContext
from trainer.training.distributed import Ranks

TASKS = ("generate", "super_resolve", "translate")


class AlgorithmBuilder(Protocol):
    """(architecture, config, context) -> the algorithm the loop drives; weights are seeded before the call."""

    def __call__(self, arch: Architecture, config: Any, context: TrainingContext) -> GANAlgorithm: ...


@dataclass(frozen=True)
class Architecture:
    name: str
    task: str  # what the exported model does in the service: one of TASKS
    summary: str  # `gan-train --help`'s line for it
    config_cls: type
    build_generator: Callable[[Any], nn.Module]
    # the builder, or "package.module:function" when that recipe module imports this model module for its
    # networks and config (PGGAN, StarGAN, SRGAN): named, not imported, so models -> recipes never cycles
    algorithm: AlgorithmBuilder | str
    export_spec: Callable[[Any, nn.Module], ExportSpec]
    build_discriminator: Callable[[Any], nn.Module] | None = None
    # which weights in the checkpoint are the ones to serve (G_ema where the architecture keeps one)
    served_generator_key: str = "generator"
    # buffers of the served generator that record how far training got rather than learned weights
    # (PGGAN's grown_*): a random-weights baseline keeps them, so it is scored at the same stage
    progress_buffers: tuple[str, ...] = ()
    # (spec, config, seed) -> Dataset, for architectures whose data is not plain images (SR pairs, labels)
    build_dataset: Callable[[str, Any, int], Dataset] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"{self.name}: task {self.task!r} is not one of {TASKS}")

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

    def build_algorithm(
        self, config: Any, device: torch.device, seed: int, amp: bool, ranks: Ranks | None = None
    ) -> GANAlgorithm:
        torch.manual_seed(seed)  # weight initialisation is part of the run's reproducibility
        return self.algorithm_builder()(self, config, TrainingContext(device, seed, amp, ranks or Ranks()))

    def algorithm_builder(self) -> AlgorithmBuilder:
        if not isinstance(self.algorithm, str):
            return self.algorithm
        module, _, function = self.algorithm.partition(":")
        return getattr(importlib.import_module(module), function)
