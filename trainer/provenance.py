"""The `gan-train` command that reproduces a checkpoint, rebuilt from what the checkpoint records.

Export writes it into the manifest's provenance next to the checkpoint's hash and step, so a served
model says how it was made even when its run folder is gone. It is rebuilt from the checkpoint (the
architecture, every config value that differs from the default, the data set, the seed, and the step
reached as `--steps`) rather than copied from the shell, so it also holds for a run that was stopped and
exported early, and for a run resumed with other logging options. Options that do not change the weights
(logging, sampling, checkpoint and evaluation intervals, devices, the run folder) are left out.
"""

from __future__ import annotations

import shlex
from dataclasses import MISSING, fields
from typing import Any

from trainer.registry import get_architecture
from trainer.training.loop import TrainOptions

# TrainOptions fields that decide the weights (besides --steps, which becomes the step reached)
WEIGHT_OPTIONS = ("data", "seed")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _format(name: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        return [_flag(name) if value else "--no-" + name.replace("_", "-")]
    return [_flag(name), str(value)]


def training_command(state: dict[str, Any]) -> str:
    """`gan-train ARCH ...` for a loaded checkpoint (trainer.training.checkpoint.load_checkpoint's dict)."""
    arch = get_architecture(state["arch"])
    config = state.get("config", {})
    train = state.get("train", {})
    defaults = TrainOptions()
    args = ["gan-train", arch.name]
    for name in WEIGHT_OPTIONS:
        value = train.get(name, getattr(defaults, name))
        if value != getattr(defaults, name) or name == "data":
            args += _format(name, value)
    args += _format("steps", int(state["step"]))
    for f in fields(arch.config_cls):
        default = f.default if f.default is not MISSING else None
        if f.name in config and config[f.name] != default:
            args += _format(f.name, config[f.name])
    return shlex.join(args)
