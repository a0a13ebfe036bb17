"""Small pure functions: latent sampling and interpolation, image codecs, and a non-generate model."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from service import codecs, latents
from service.app import create_app
from service.manifest import Manifest, Provenance, TensorSpec
from service.served_models import ServedModels
from service.settings import Settings
from tests.service.service_testkit import LiveServer, add_generator


def test_seeded_sampling_is_reproducible_and_prefix_stable() -> None:
    a = latents.sample(7, 5, 16, "normal")
    assert a.dtype == np.float32 and a.shape == (5, 16)
    np.testing.assert_array_equal(a, latents.sample(7, 5, 16, "normal"))
    np.testing.assert_array_equal(a[:2], latents.sample(7, 2, 16, "normal"))
    assert not np.array_equal(a, latents.sample(8, 5, 16, "normal"))
    u = latents.sample(7, 1000, 4, "uniform")
    assert u.min() >= -1.0 and u.max() <= 1.0 and abs(float(u.mean())) < 0.1
    assert 0 <= latents.new_seed() < 2**53


@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_interpolation_keeps_endpoints_exactly(method: str) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(32).astype(np.float32), rng.standard_normal(32).astype(np.float32)
    path = latents.interpolate(a, b, 7, method)  # type: ignore[arg-type]
    assert path.shape == (7, 32) and path.dtype == np.float32
    np.testing.assert_array_equal(path[0], a)
    np.testing.assert_array_equal(path[-1], b)
    if method == "slerp":  # a great circle keeps the norm near the endpoints' norms
        norms = np.linalg.norm(path, axis=1)
        assert norms.min() > 0.8 * min(np.linalg.norm(a), np.linalg.norm(b))
    same = latents.interpolate(a, a, 3, method)  # type: ignore[arg-type]
    np.testing.assert_allclose(same, np.stack([a] * 3), rtol=1e-6)


def test_to_uint8_maps_the_output_range() -> None:
    images = np.array([-1.0, -0.5, 0.0, 1.0, 2.0], np.float32).reshape(1, 1, 1, 5)
    assert codecs.to_uint8(images, (-1.0, 1.0)).ravel().tolist() == [0, 64, 128, 255, 255]
    assert codecs.to_uint8(np.full((1, 1, 1, 1), 0.5, np.float32), (0.0, 1.0)).ravel().tolist() == [128]


def test_encode_decode_and_grid() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(codecs.decode(codecs.encode(rgb[0], "png")), rgb[0])
    gray = rgb[:, :, :, :1]
    np.testing.assert_array_equal(codecs.decode(codecs.encode(gray[0], "png")), gray[0])
    rgba = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    with Image.open(io.BytesIO(codecs.encode(rgba, "png"))) as png:  # CRCs checked by Pillow
        assert png.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(png), rgba)
    view = rgb.transpose(0, 2, 1, 3)[1]  # a non-contiguous view encodes like its copy
    assert codecs.encode(view, "png") == codecs.encode(np.ascontiguousarray(view), "png")
    assert codecs.decode(codecs.encode(rgb[0], "jpeg")).shape == (6, 7, 3)
    assert codecs.decode(codecs.encode(rgb[0], "webp")).shape == (6, 7, 3)
    tiled = codecs.grid(rgb, padding=1)  # 5 images -> 3 columns x 2 rows
    assert tiled.shape == (2 * 6 + 3, 3 * 7 + 4, 3)
    np.testing.assert_array_equal(tiled[1:7, 1:8], rgb[0])
    np.testing.assert_array_equal(tiled[8:14, 9:16], rgb[4])


def add_upscaler(repo: Path, name: str = "sr") -> None:
    """A super_resolve model (nearest x2, [0,1] -> [-1,1]) with dynamic spatial axes."""
    graph = helper.make_graph(
        [
            helper.make_node("Resize", ["image", "", "scales"], ["big"], mode="nearest"),
            helper.make_node("Mul", ["big", "two"], ["scaled"]),
            helper.make_node("Sub", ["scaled", "one"], ["output"]),
        ],
        "upscaler",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, "H2", "W2"])],
        initializer=[
            numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
            numpy_helper.from_array(np.array(2, np.float32), "two"),
            numpy_helper.from_array(np.array(1, np.float32), "one"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    (repo / name).mkdir(parents=True)
    onnx.save(model, str(repo / name / "model.onnx"))
    Manifest(
        name=name,
        task="super_resolve",
        architecture="srgan",
        inputs=[TensorSpec(name="image", shape=[None, 3, None, None])],
        outputs=[TensorSpec(name="output", shape=[None, 3, None, None])],
        input_range=(0.0, 1.0),
        scale=2,
        parity_max_abs_error=0.0,
        parity_tolerance=1e-4,
        provenance=Provenance(checkpoint_sha256="0" * 64, training_step=1, exported_at="2024-01-01T00:00:00Z"),
    ).write(repo / name)


def test_other_tasks_load_warm_up_and_are_refused_by_generate(tmp_path: Path) -> None:
    add_upscaler(tmp_path)
    add_generator(tmp_path, "gen")
    settings = Settings(model_dir=tmp_path, max_batch_size=4)
    registry = ServedModels.load(settings)
    assert registry.entries["sr"].runtime.dummy_feeds(2)["image"].shape == (2, 3, 32, 32)
    with LiveServer(create_app(settings, models=registry)) as server:
        server.wait_ready()  # the super_resolve model warmed up too
        wrong = httpx.post(server.url + "/generate", json={"model": "sr"})
        assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "wrong_task"
        default = httpx.post(server.url + "/generate", json={"seed": 1})
        assert default.status_code == 200 and default.json()["model"] == "gen"
