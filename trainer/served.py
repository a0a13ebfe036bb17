"""Checkpoint -> the generator it serves: the one place that knows which weights those are.

gan-export, every evaluation command, the quality report and the tests all start from here, so "what
would be served" cannot drift between them (PGGAN's G_ema at its grown stage, not the live G).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.architecture import Architecture
from trainer.export_spec import ExportSpec
from trainer.registry import get_architecture
from trainer.training.checkpoint import load_checkpoint


@dataclass(frozen=True)
class ServedGenerator:
    architecture: Architecture
    config: Any
    network: nn.Module  # in eval mode, on the device asked for
    checkpoint: dict[str, Any]

    def export_spec(self) -> ExportSpec:
        """The graph gan-export writes for this generator (its inputs, outputs and manifest facts)."""
        spec = self.architecture.export_spec(self.config, self.network)
        spec.module.eval()
        return spec


def load_served_generator(
    checkpoint: Path | str | dict[str, Any],
    device: torch.device | str = "cpu",
    *,
    task: str | None = None,
    random_weights: bool = False,
    seed: int = 0,
) -> ServedGenerator:
    """The generator `checkpoint` (a path, or a checkpoint already loaded) serves, in eval mode.

    `task` refuses checkpoints of another task with a message naming both. `random_weights` builds a
    freshly initialised generator of the same config instead (seeded by `seed`, the global RNG left as it
    was): the baseline that says what a score's scale means. It keeps the architecture's progress buffers,
    so it stands at the same stage as the trained one.
    """
    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(Path(checkpoint))
    arch = get_architecture(state["arch"])
    if task is not None and arch.task != task:
        raise ValueError(f"{state.get('path', 'checkpoint')}: a {arch.name} ({arch.task}) checkpoint, "
                         f"not a {task} one")
    config = arch.make_config(state["config"])
    weights = state[arch.served_generator_key]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = arch.build_generator(config)
    if random_weights:
        network.load_state_dict({k: weights[k] for k in arch.progress_buffers}, strict=False)
    else:
        network.load_state_dict(weights)
    return ServedGenerator(arch, config, network.to(device).eval(), state)
