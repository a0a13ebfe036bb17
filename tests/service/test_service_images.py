"""Images straight from the graph: models whose graph ends with the uint8 NHWC mapping (current
exports) and models with float NCHW outputs (exported before) serve the same images through one
place (`ModelRuntime.images`); and the CUDA provider options the service asks for."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from export.image_output import append_uint8_mapping
from service import runtime as runtime_module
from service.app import create_app
from service.manifest import MODEL_FILENAME, Manifest, TensorSpec
from service.runtime import CUDA, cuda_options, provider_list
from service.served_models import ServedModels
from service.settings import Settings
from service.workers import auto_workers, device_for, threads_per_worker
from tests.service.service_testkit import LATENT_DIM, LiveServer, add_generator


def add_uint8_copy(repo: Path, source: str, name: str) -> Path:
    """The model `source` with the export's 8-bit mapping appended, as gan-export now writes it."""
    directory = repo / name
    shutil.copytree(repo / source, directory)
    append_uint8_mapping(directory / MODEL_FILENAME, "image", (-1.0, 1.0))
    manifest = Manifest.read(directory)
    c, h, w = manifest.outputs[0].shape[1:]
    output = TensorSpec(name="image", shape=[None, h, w, c], dtype="uint8", layout="NHWC")
    manifest.model_copy(update={"name": name, "outputs": [output], "parity_max_level_error": 0}).write(directory)
    return directory


@pytest.fixture
def both(tmp_path: Path) -> Path:
    repo = tmp_path / "models"
    add_generator(repo, "legacy")
    add_uint8_copy(repo, "legacy", "uint8")
    return repo


def test_uint8_graph_and_float_graph_give_identical_images(both: Path) -> None:
    registry = ServedModels.load(Settings(model_dir=both, device="cpu"))
    legacy, direct = registry.entries["legacy"].runtime, registry.entries["uint8"].runtime
    assert not legacy.manifest.uint8_output and direct.manifest.uint8_output
    feeds = {"latent": np.random.default_rng(3).standard_normal((5, LATENT_DIM)).astype(np.float32) * 2}
    assert direct.run(feeds).dtype == np.uint8 and legacy.run(feeds).dtype == np.float32
    from_graph, mapped_here = direct.images(feeds), legacy.images(feeds)
    assert from_graph.shape == mapped_here.shape == (5, 4, 4, 3) and from_graph.dtype == np.uint8
    np.testing.assert_array_equal(from_graph, mapped_here)  # same float32 ops, same half-to-even rounding


def test_both_kinds_serve_byte_identical_responses(both: Path) -> None:
    with LiveServer(create_app(Settings(model_dir=both, device="cpu", max_batch_delay_ms=0))) as server:
        server.wait_ready()
        bodies = {}
        for name in ("legacy", "uint8"):
            response = httpx.post(server.url + "/generate", json={"model": name, "num_images": 3, "seed": 9})
            assert response.status_code == 200, response.text
            bodies[name] = response.json()["images"]
            grid = httpx.post(server.url + "/generate", json={"model": name, "num_images": 3, "seed": 9},
                              headers={"Accept": "image/png"})
            assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
            bodies[name + "-grid"] = base64.b64encode(grid.content).decode()
        assert bodies["legacy"] == bodies["uint8"] and bodies["legacy-grid"] == bodies["uint8-grid"]
        models = {m["name"]: m for m in httpx.get(server.url + "/models").json()["models"]}
        assert models["uint8"]["outputs"] == [{"name": "image", "shape": [None, 4, 4, 3], "dtype": "uint8",
                                               "layout": "NHWC"}]
        assert models["legacy"]["outputs"] == [{"name": "image", "shape": [None, 3, 4, 4], "dtype": "float32"}]


def test_a_uint8_manifest_needs_an_nhwc_image() -> None:
    with pytest.raises(ValueError, match="NHWC"):
        TensorSpec(name="image", shape=[None, 3, 4, 4], dtype="uint8")


def test_cuda_provider_options_are_set_on_purpose() -> None:
    options = cuda_options(device_id=2, conv_algo_search="HEURISTIC")
    assert options == {"device_id": "2", "cudnn_conv_algo_search": "HEURISTIC",
                       "arena_extend_strategy": "kSameAsRequested", "do_copy_in_default_stream": "1"}
    assert provider_list([CUDA, "CPUExecutionProvider"], 1, "EXHAUSTIVE") == [
        (CUDA, cuda_options(1, "EXHAUSTIVE")), "CPUExecutionProvider"]
    assert provider_list(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_sessions_get_the_cuda_options_of_their_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_generator(tmp_path, "m")
    seen: list[Any] = []
    real = ort.InferenceSession

    def recording(path: str, sess_options: Any = None, providers: Any = None) -> Any:
        seen.append(providers)
        return real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    available = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, *available])
    monkeypatch.setattr(runtime_module.ort, "InferenceSession", recording)
    monkeypatch.setenv("GAN_CUDA_DEVICES", "3,5")
    monkeypatch.setenv("GAN_CUDNN_CONV_ALGO_SEARCH", "DEFAULT")
    settings = Settings(model_dir=tmp_path, device="auto")
    assert settings.cuda_devices == [3, 5]
    ServedModels.load(settings, cuda_device_id=device_for(1, settings.cuda_devices))
    assert seen == [[(CUDA, cuda_options(5, "DEFAULT")), "CPUExecutionProvider"]]


def test_worker_rules() -> None:
    assert [device_for(slot, [0, 1]) for slot in range(4)] == [0, 1, 0, 1]
    assert device_for(3, []) == 0
    assert auto_workers(cores=2, gpu_devices=0, intra_op_threads=0) == 2  # one single-threaded worker per core
    assert auto_workers(cores=16, gpu_devices=0, intra_op_threads=4) == 4
    assert auto_workers(cores=64, gpu_devices=2, intra_op_threads=0) == 16  # at most 8 per GPU
    assert auto_workers(cores=1, gpu_devices=1, intra_op_threads=0) == 1
    assert threads_per_worker(cores=8, workers=2, streams=1) == 4
    assert threads_per_worker(cores=2, workers=4, streams=1) == 1


def test_warmup_ends_runs_only_the_two_ends(tmp_path: Path) -> None:
    add_generator(tmp_path, "m")
    for mode, expected in (("all", list(range(1, 9))), ("ends", [1, 8])):
        registry = ServedModels.load(Settings(model_dir=tmp_path, device="cpu", max_batch_size=8, warmup=mode))
        assert registry.warmup_batch_sizes(registry.entries["m"]) == expected


def test_a_worker_slot_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    from service.workers import WorkerSlot

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / "worker-0").write_text(str(dead_pid))
    (tmp_path / f"gauge_livesum_{dead_pid}.db").write_bytes(b"")  # the killed worker's live gauge file
    slot = WorkerSlot.claim(tmp_path, workers=2)
    assert slot.index == 0 and not (tmp_path / f"gauge_livesum_{dead_pid}.db").exists()
    assert slot.not_ready() == ["worker 0: warming", "worker 1: not started"]
    slot.mark_ready()
    assert slot.not_ready() == ["worker 1: not started"]
    slot.release()
    assert not (tmp_path / "worker-0").exists()
