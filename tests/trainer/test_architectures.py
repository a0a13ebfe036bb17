"""The generic tests every registered architecture gets the moment it is in trainer.registry.

A new GAN needs only its tiny config in tests/conftest.py (TINY_CONFIGS: a few seconds of training on
shapes); without one, `test_every_architecture_has_a_tiny_config` fails and names it.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.conftest import TINY_CONFIGS, train_tiny
from tests.trainer.resume_check import assert_same_state
from trainer import cli
from trainer.architecture import TASKS
from trainer.eval_cli import EVALUATIONS, model_argument, model_task
from trainer.registry import ARCHITECTURES, architecture_names, get_architecture
from trainer.served import load_served_generator
from trainer.training.algorithm import GANAlgorithm
from trainer.training.checkpoint import load_checkpoint

NAMES = architecture_names()
# what legitimately differs between a straight and a resumed run: where and how it was started, and the
# global RNG (each DataLoader iterator draws its base seed from it; training draws from its own generators)
RUN_RECORD = {"path", "train", "rng"}


def tiny(name: str) -> dict:
    if name not in TINY_CONFIGS:
        pytest.fail(f"architecture {name!r} is registered but has no tiny config: add one to TINY_CONFIGS in "
                    "tests/conftest.py (a few seconds of training on shapes)")
    return TINY_CONFIGS[name]


def test_every_architecture_has_a_tiny_config():
    missing = [name for name in NAMES if name not in TINY_CONFIGS]
    assert not missing, f"registered without a tiny config in tests/conftest.py TINY_CONFIGS: {missing}"


def test_names_are_unique_and_tasks_known():
    assert len(NAMES) == len(set(NAMES))
    assert {arch.task for arch in ARCHITECTURES} <= set(TASKS) == set(EVALUATIONS)


@pytest.mark.parametrize("name", NAMES)
def test_declaration_is_complete(name):
    arch = get_architecture(name)
    config = arch.make_config(tiny(name))
    assert dataclasses.is_dataclass(config)
    for field in dataclasses.fields(config):  # gan-train shows each option's paper default
        assert field.metadata.get("help"), f"{name}.{field.name} has no help text"
    algorithm = arch.build_algorithm(config, torch.device("cpu"), 0, False)
    assert isinstance(algorithm, GANAlgorithm)
    assert name in cli.build_parser()._subparsers._group_actions[0].choices


@pytest.mark.parametrize("name", NAMES)
def test_trains_a_few_steps(name, tmp_path):
    tiny(name)
    run = train_tiny(name, tmp_path, steps=2)
    assert run.step == 2
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint["arch"] == name and checkpoint["step"] == 2
    assert any((tmp_path / "samples").glob("step_*.png"))
    assert torch.isfinite(run.algorithm.sample()).all()


@pytest.mark.parametrize("name", NAMES)
def test_resume_is_bit_exact(name, tmp_path):
    tiny(name)
    train_tiny(name, tmp_path / "straight", steps=2)
    train_tiny(name, tmp_path / "split", steps=1)
    resumed = train_tiny(name, tmp_path / "split", steps=2, resume=True)
    assert resumed.step == 2
    straight, split = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "split")
    assert set(straight) == set(split)
    assert_same_state(straight, split, keys=sorted(set(straight) - RUN_RECORD))


@pytest.mark.parametrize("name", NAMES)
def test_served_generator_exports_with_parity(name, tiny_checkpoints, tmp_path):
    from export.onnx_export import TOLERANCE, export_checkpoint

    tiny(name)
    served = load_served_generator(tiny_checkpoints[name])
    assert served.architecture.name == name and not served.network.training
    result = export_checkpoint(tiny_checkpoints[name], tmp_path / "repo")
    manifest = result.manifest
    assert (manifest.name, manifest.architecture, manifest.task) == (name, name, served.architecture.task)
    assert manifest.parity_max_abs_error <= TOLERANCE["fp32"]
    assert model_task(result.directory) == model_task(tiny_checkpoints[name]) == served.architecture.task


@pytest.mark.parametrize("name", NAMES)
def test_gan_eval_runs_the_evaluation_of_the_task(name, tiny_checkpoints, monkeypatch):
    from trainer import eval_cli

    tiny(name)
    calls = []
    for task, command in EVALUATIONS.items():
        monkeypatch.setattr(command, "main", lambda argv, prog, task=task: calls.append((task, argv, prog)) or 0)
    argv = ["--device", "cpu", str(tiny_checkpoints[name])]
    assert eval_cli.main(argv) == 0
    assert calls == [(get_architecture(name).task, argv, "gan-eval")]


def test_gan_eval_finds_the_model_among_options():
    assert model_argument(["--data", "photos", "runs/x", "--device", "cpu"]) == "runs/x"
    assert model_argument(["--no-cache", "--png=a.png", "run"]) == "run"
    assert model_argument(["--plot", "runs/x"]) is None

