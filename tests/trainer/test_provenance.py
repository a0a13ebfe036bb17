"""The gan-train command recorded in each manifest rebuilds the checkpoint's configuration exactly."""

from __future__ import annotations

import shlex
from dataclasses import asdict

import pytest

from trainer.cli import parse
from trainer.provenance import training_command
from trainer.training.checkpoint import load_checkpoint


@pytest.mark.parametrize("arch", ["dcgan", "pggan", "stargan", "srgan"])
def test_command_parses_back_to_the_checkpoints_config_data_seed_and_step(tiny_checkpoints, arch):
    state = load_checkpoint(tiny_checkpoints[arch])
    command = training_command(state)
    argv = shlex.split(command)
    assert argv[:2] == ["gan-train", arch]
    name, config, options = parse(argv[1:])
    assert name == arch and asdict(config) == state["config"]
    assert (options.data, options.seed, options.steps) == (state["train"]["data"], state["train"]["seed"],
                                                           state["step"])
    assert "--out" not in argv and "--log-every" not in argv  # only what decides the weights
