"""gan-export's versioned repository (REPO/NAME/<N>/ + serving.json), gan-models, and Triton on top of it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from export.cli import main as gan_export
from export.models_cli import main as gan_models
from export.onnx_export import export_checkpoint
from export.triton import write_triton_model
from service.manifest import MANIFEST_FILENAME, MODEL_FILENAME, Manifest
from service.versions import SERVING_FILENAME, read_serving, resolve, versions


def step_of(directory: Path) -> int:
    return Manifest.read(directory).provenance.training_step


def test_new_versions_keep_the_old_ones_and_a_flat_folder_becomes_version_1(tiny_checkpoints, tmp_path):
    repo = tmp_path / "models"
    model = repo / "gen"
    flat = export_checkpoint(tiny_checkpoints["dcgan"], repo, "gen")
    assert flat.version is None and flat.directory == model and (model / MODEL_FILENAME).is_file()
    flat_onnx = (model / MODEL_FILENAME).read_bytes()

    second = export_checkpoint(tiny_checkpoints["lsgan"], repo, "gen", new_version=True)
    assert second.version == 2 and second.directory == model / "2"
    assert versions(model) == [1, 2] and read_serving(model) == 2
    # the flat export is version 1, byte for byte, and the flat files are gone (one layout per folder)
    assert (model / "1" / MODEL_FILENAME).read_bytes() == flat_onnx
    assert not (model / MODEL_FILENAME).exists() and not (model / MANIFEST_FILENAME).exists()
    assert Manifest.read(model / "2").architecture == "lsgan" and Manifest.read(model / "2").name == "gen"

    # a versioned folder always gets a new version, even without --new-version
    third = export_checkpoint(tiny_checkpoints["dcgan"], repo, "gen")
    assert third.version == 3 and read_serving(model) == 3
    # staged: written, not served
    fourth = export_checkpoint(tiny_checkpoints["lsgan"], repo, "gen", serve=False)
    assert fourth.version == 4 and read_serving(model) == 3 and resolve(model).version == 3
    # readable by a service running as another user (the image's uid 10001)
    for path in (model, model / "4", model / "4" / MODEL_FILENAME, model / SERVING_FILENAME):
        assert os.stat(path).st_mode & 0o005 == (0o005 if path.is_dir() else 0o004), path
    # nothing hidden left behind by staging
    assert not [p for p in [*repo.iterdir(), *model.iterdir()] if p.name.startswith(".")]


def test_gan_export_cli_writes_and_stages_versions(tiny_checkpoints, tmp_path, capsys):
    repo = tmp_path / "models"
    checkpoint = str(tiny_checkpoints["dcgan"])
    assert gan_export([checkpoint, "--out", str(repo), "--name", "gen", "--new-version"]) == 0
    assert "as version 1 (served)" in capsys.readouterr().out
    assert gan_export([checkpoint, "--out", str(repo), "--name", "gen", "--stage"]) == 0
    assert "as version 2 (staged, not served)" in capsys.readouterr().out
    assert read_serving(repo / "gen") == 1

    assert gan_models(["list", str(repo)]) == 0
    assert capsys.readouterr().out.strip() == "gen: versions 1, 2; serving 1"
    assert gan_models(["serve", str(repo / "gen"), "2"]) == 0
    assert "serving version 2 (was 1)" in capsys.readouterr().out
    assert gan_models(["rollback", str(repo / "gen")]) == 0 and read_serving(repo / "gen") == 1
    capsys.readouterr()
    # clear errors, nothing changed
    assert gan_models(["rollback", str(repo / "gen")]) == 1
    assert "version 1 is the oldest one" in capsys.readouterr().err
    assert gan_models(["serve", str(repo / "gen"), "9"]) == 1
    assert "holds no version 9" in capsys.readouterr().err
    assert read_serving(repo / "gen") == 1


def test_gan_models_rollback_on_a_flat_folder_says_there_is_nothing_older(tiny_checkpoints, tmp_path, capsys):
    export_checkpoint(tiny_checkpoints["dcgan"], tmp_path, "gen")
    assert gan_models(["rollback", str(tmp_path / "gen")]) == 1
    assert "flat layout" in capsys.readouterr().err
    assert gan_models(["list", str(tmp_path)]) == 0
    assert "gen: flat layout" in capsys.readouterr().out


@pytest.mark.parametrize("which", ["model", "version"])
def test_triton_export_takes_the_served_version_under_its_number(tiny_checkpoints, tmp_path, which):
    repo = tmp_path / "models"
    export_checkpoint(tiny_checkpoints["dcgan"], repo, "gen", new_version=True)
    export_checkpoint(tiny_checkpoints["lsgan"], repo, "gen")
    export_checkpoint(tiny_checkpoints["dcgan"], repo, "gen", serve=False)  # 3, staged
    source = repo / "gen" if which == "model" else repo / "gen" / "2"
    written = write_triton_model(source, tmp_path / "triton")
    assert sorted(p.name for p in written.iterdir()) == ["2", "config.pbtxt", "manifest.json"]
    assert (written / "2" / MODEL_FILENAME).read_bytes() == (repo / "gen" / "2" / MODEL_FILENAME).read_bytes()
    assert json.loads((written / "manifest.json").read_text())["architecture"] == "lsgan"
