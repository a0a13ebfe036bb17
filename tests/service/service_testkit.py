"""Helpers for the service tests: tiny ONNX generators built with `onnx.helper` (no torch), model
repositories, a real uvicorn server on loopback, and a gate that holds inference.

A uniquely named module (not `conftest`), so `from service_testkit import ...` cannot collide with
the conftest modules of other test packages.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import uvicorn
from onnx import TensorProto, helper, numpy_helper

from service.manifest import MODEL_FILENAME, Manifest, Provenance, TensorSpec

ROOT = Path(__file__).resolve().parents[2]

LATENT_DIM = 8
IMAGE_SIZE = 4
CHANNELS = 3


def build_generator(
    path: Path,
    *,
    latent_dim: int = LATENT_DIM,
    image_size: int = IMAGE_SIZE,
    channels: int = CHANNELS,
    latent_rank: int = 2,
    input_name: str = "latent",
    output_name: str = "image",
    batch_dim: str | int = "N",
    seed: int = 0,
) -> Path:
    """latent [N, D(, 1, 1)] -> Flatten -> Gemm -> Reshape [N, C, S, S] -> Tanh, opset 17."""
    rng = np.random.default_rng(seed)
    pixels = channels * image_size * image_size
    weight = rng.normal(0.0, 0.6, (latent_dim, pixels)).astype(np.float32)
    bias = rng.normal(0.0, 0.1, (pixels,)).astype(np.float32)
    shape = np.array([-1, channels, image_size, image_size], dtype=np.int64)
    latent_shape: list[Any] = [batch_dim, latent_dim] + [1] * (latent_rank - 2)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", [input_name], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "B"], ["dense"]),
            helper.make_node("Reshape", ["dense", "shape"], ["chw"]),
            helper.make_node("Tanh", ["chw"], [output_name]),
        ],
        "tiny_generator",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, latent_shape)],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch_dim, channels, image_size, image_size])],
        initializer=[
            numpy_helper.from_array(weight, "W"),
            numpy_helper.from_array(bias, "B"),
            numpy_helper.from_array(shape, "shape"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def generate_manifest(
    name: str,
    *,
    latent_dim: int = LATENT_DIM,
    image_size: int = IMAGE_SIZE,
    channels: int = CHANNELS,
    latent_rank: int = 2,
    distribution: str = "normal",
) -> Manifest:
    return Manifest(
        name=name,
        task="generate",
        architecture="dcgan",
        inputs=[TensorSpec(name="latent", shape=[None, latent_dim] + [1] * (latent_rank - 2))],
        outputs=[TensorSpec(name="image", shape=[None, channels, image_size, image_size])],
        image_size=image_size,
        channels=channels,
        latent_dim=latent_dim,
        latent_distribution=distribution,
        parity_max_abs_error=1e-6,
        parity_tolerance=1e-4,
        provenance=Provenance(checkpoint_sha256="0" * 64, training_step=1, exported_at="2024-01-01T00:00:00Z"),
    )


def add_generator(repo: Path, name: str, latent_rank: int = 2, **kwargs: Any) -> Path:
    """Write `repo/name/model.onnx` and its manifest; returns the model directory."""
    directory = repo / name
    build_generator(directory / MODEL_FILENAME, latent_rank=latent_rank, **kwargs)
    generate_manifest(name, latent_rank=latent_rank).write(directory)
    return directory


def reference_images(directory: Path, latents: np.ndarray) -> np.ndarray:
    """A direct onnxruntime run of the model in `directory` (what the service must match)."""
    session = ort.InferenceSession(str(directory / MODEL_FILENAME), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    feed = latents.astype(np.float32).reshape(latents.shape + (1,) * (len(spec.shape) - 2))
    return session.run(None, {spec.name: feed})[0]


class Gate:
    """Wraps a model's run function so a test can hold inference at will (open by default)."""

    created: list[Gate] = []  # every gate is opened at teardown, so no server hangs on stop

    def __init__(self, run: Callable[[dict[str, np.ndarray]], np.ndarray]) -> None:
        Gate.created.append(self)
        self._run = run
        self._open = threading.Event()
        self._open.set()
        self.entered = threading.Event()
        self.calls = 0

    def close(self) -> None:
        self.entered.clear()
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.calls += 1
        self.entered.set()
        if not self._open.wait(timeout=30):
            raise RuntimeError("gate never opened")
        return self._run(feeds)


class LiveServer:
    """A real uvicorn server for `app` on a free loopback port, in a background thread."""

    def __init__(self, app: Any, **uvicorn_options: Any) -> None:
        """`uvicorn_options` add to the test defaults (e.g. those of `service.cli.uvicorn_options`)."""
        self.app = app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        options = {"log_level": "warning", "lifespan": "on", "access_log": False, **uvicorn_options}
        config = uvicorn.Config(app, **options)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=20)
        self._sock.close()

    @property
    def service(self) -> Any:
        """The app's ServiceState (models, metrics, settings)."""
        return self.app.state.service

    def wait_ready(self, timeout: float = 20.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if httpx.get(self.url + "/readyz").status_code == 200:
                return
            time.sleep(0.02)
        raise AssertionError("service never became ready")


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)
