"""Start-up: a broken model repository is refused with a message naming the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import onnxruntime as ort
import pytest

from service.cli import main
from service.runtime import ModelLoadError
from service.served_models import ServedModels
from service.settings import Settings
from tests.service.service_testkit import ROOT, add_generator, build_generator, generate_manifest


def load(repo: Path, **kwargs: object) -> ServedModels:
    return ServedModels.load(Settings(model_dir=repo, **kwargs))


def test_good_repository_loads_every_model(tmp_path: Path) -> None:
    add_generator(tmp_path, "a")
    add_generator(tmp_path, "b", latent_rank=4)
    (tmp_path / "notes").mkdir()  # a directory without a manifest is skipped
    registry = load(tmp_path)
    assert sorted(registry.entries) == ["a", "b"]
    assert registry.entries["a"].runtime.providers == ["CPUExecutionProvider"]
    assert not registry.ready  # not warmed up yet


def test_unknown_manifest_version_is_refused(tmp_path: Path) -> None:
    directory = add_generator(tmp_path, "old")
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["manifest_version"] = 99
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match=r"manifest_version 99 is not supported") as info:
        load(tmp_path)
    assert str(directory / "manifest.json") in str(info.value)


def test_corrupt_onnx_file_is_refused_by_name(tmp_path: Path) -> None:
    directory = add_generator(tmp_path, "broken")
    (directory / "model.onnx").write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model") as info:
        load(tmp_path)
    assert str(directory / "model.onnx") in str(info.value)
    assert "Traceback" not in str(info.value)


def test_foreign_onnx_with_other_input_names_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "foreign"
    build_generator(directory / "model.onnx", input_name="z")
    generate_manifest("foreign").write(directory)
    with pytest.raises(ModelLoadError, match=r"graph inputs \['z'\] do not match the manifest's inputs"):
        load(tmp_path)


def test_fixed_batch_axis_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "fixed"
    build_generator(directory / "model.onnx", batch_dim=1)
    generate_manifest("fixed").write(directory)
    with pytest.raises(ModelLoadError, match="dynamic batch axis"):
        load(tmp_path)


def test_every_problem_is_listed(tmp_path: Path) -> None:
    for name in ("one", "two"):
        directory = add_generator(tmp_path, name)
        (directory / "model.onnx").write_bytes(b"junk")
    with pytest.raises(ModelLoadError) as info:
        load(tmp_path)
    assert "one/model.onnx" in str(info.value) and "two/model.onnx" in str(info.value)


def test_missing_or_empty_repository(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load(tmp_path / "nowhere")
    with pytest.raises(ModelLoadError, match="no models found"):
        load(tmp_path)


def test_cuda_requested_without_cuda_provider(tmp_path: Path) -> None:
    add_generator(tmp_path, "m")
    with pytest.raises(ModelLoadError, match="GAN_DEVICE=cuda"):
        load(tmp_path, device="cuda")


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_silent_cpu_fallback_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu without CUDA libraries lists CUDA as available, then runs on CPU."""
    add_generator(tmp_path, "m")
    available = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *available])
    with pytest.raises(ModelLoadError, match="fell back to"):
        load(tmp_path, device="cuda")
    registry = load(tmp_path, device="auto")  # auto accepts the fallback, and says so
    assert registry.entries["m"].runtime.providers == ["CPUExecutionProvider"]


def test_cli_reports_load_errors_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = add_generator(tmp_path, "broken")
    (directory / "model.onnx").write_bytes(b"junk")
    assert main(["--model-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(directory / "model.onnx") in err and "Traceback" not in err


def test_cli_serves_a_repository(tmp_path: Path) -> None:
    add_generator(tmp_path, "tiny")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GAN_LOG_LEVEL": "warning", "GAN_MAX_BATCH_SIZE": "4"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "--model-dir",
            str(tmp_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "gan-serve never became ready"
            time.sleep(0.1)
        response = httpx.post(f"http://127.0.0.1:{port}/generate", json={"num_images": 2, "seed": 1})
        assert response.status_code == 200 and len(response.json()["images"]) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAN_API_KEYS", "alpha, beta")
    monkeypatch.setenv("GAN_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("GAN_DEVICE", "cpu")
    settings = Settings()
    assert settings.api_keys == ["alpha", "beta"]
    assert settings.max_batch_size == 8 and settings.device == "cpu"
    monkeypatch.setenv("GAN_API_KEYS", '["gamma"]')
    assert Settings().api_keys == ["gamma"]
    assert Settings(device="cuda").device == "cuda"  # explicit values (CLI flags) win over the env
    with pytest.raises(ValueError, match="max_images_per_request"):
        Settings(max_images_per_request=100, max_queue_size=10)
