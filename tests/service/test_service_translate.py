"""POST /translate over a real uvicorn server: label vectors, validation, batching, resize + crop."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service.app import create_app
from service.errors import ApiError
from service.manifest import Manifest
from service.settings import Settings
from service.translate import build_labels, parse_attribute_set
from tests.service.media_testkit import (
    ATTRIBUTES,
    TRANSLATE_SIZE,
    add_super_resolver,
    add_translator,
    decode,
    encode,
    noise,
    run_model,
    to_uint8,
)
from tests.service.service_testkit import LiveServer

URL = "/translate"
S = TRANSLATE_SIZE


def error_of(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def post(url: str, data: bytes, fields: Any = None, ctype: str = "image/png") -> httpx.Response:
    return httpx.post(url, files={"image": ("x.png", data, ctype)}, data=fields or {}, timeout=30)


def label_of(*names: str) -> np.ndarray:
    return np.asarray([[1.0 if a in names else 0.0 for a in ATTRIBUTES]], dtype=np.float32)


def expected(repo: Path, square: np.ndarray, *names: str) -> np.ndarray:
    """A direct onnxruntime run on an S x S uint8 image with the label of `names`."""
    image = square.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0
    return to_uint8(run_model(repo / "stargan", {"image": image, "label": label_of(*names)})[0])


def assert_close(actual: np.ndarray, wanted: np.ndarray) -> None:
    assert actual.shape == wanted.shape
    assert np.abs(actual.astype(int) - wanted.astype(int)).max() <= 1


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("translate") / "models"
    add_translator(root, "stargan")
    add_super_resolver(root, "sr")
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[LiveServer]:
    with LiveServer(create_app(Settings(model_dir=repo, max_input_pixels=10_000, max_images_per_request=4))) as srv:
        srv.wait_ready()
        yield srv


def test_label_vector_is_built_from_the_named_attributes(server: LiveServer, repo: Path) -> None:
    rgb = noise(S, S, seed=1)
    response = post(server.url + URL, encode(rgb), {"attributes": "colour_green, striped"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-attributes"] == "colour_green,striped"
    out = np.asarray(decode(response.content))
    assert_close(out, expected(repo, rgb, "colour_green", "striped"))
    other = expected(repo, rgb, "colour_red")
    assert np.abs(out.astype(int) - other.astype(int)).max() > 1  # the label really matters
    # raw body + query string, JSON-list syntax, format choice
    raw = httpx.post(
        server.url + URL + '?attributes=["size_large"]&format=webp&quality=100',
        content=encode(rgb),
        headers={"content-type": "image/png"},
    )
    assert raw.status_code == 200, raw.text
    assert raw.headers["content-type"] == "image/webp" and decode(raw.content).size == (S, S)


def test_unknown_attribute_lists_the_valid_names(server: LiveServer) -> None:
    error = error_of(
        post(server.url + URL, encode(noise(S, S)), {"attributes": "colour_red,hat"}), 422, "unknown_attribute"
    )
    assert "'hat'" in error["message"]
    assert all(name in error["message"] for name in ATTRIBUTES)


def test_exclusive_group_violation_is_refused(server: LiveServer) -> None:
    response = post(server.url + URL, encode(noise(S, S)), {"targets": ["colour_red", "size_small,size_large"]})
    error = error_of(response, 422, "exclusive_attributes")
    assert "size_small" in error["message"] and "size_large" in error["message"]
    error_of(post(server.url + URL, encode(noise(S, S)), {"attributes": "colour_red,colour_blue"}), 422)


def test_several_targets_are_batched_in_one_call(server: LiveServer, repo: Path) -> None:
    rgb = noise(S, S, seed=2)
    batcher = server.service.models.entries["stargan"].batcher
    runs = batcher.runs
    targets = ["colour_red", "colour_blue,size_large", ""]
    response = post(server.url + URL, encode(rgb), {"targets": targets, "format": "png"})
    assert response.status_code == 200, response.text
    assert batcher.runs - runs == 1
    body = response.json()
    assert body["model"] == "stargan" and body["media_type"] == "image/png"
    assert body["targets"] == [["colour_red"], ["colour_blue", "size_large"], []]
    assert len(body["images"]) == 3
    for data, names in zip(body["images"], body["targets"], strict=True):
        assert_close(np.asarray(decode(base64.b64decode(data))), expected(repo, rgb, *names))


def test_non_square_input_is_resized_and_centre_cropped(server: LiveServer, repo: Path) -> None:
    # shorter side already S: a pure centre crop, columns 2..10 of 12
    wide = noise(S, S + 4, seed=3)
    out = np.asarray(decode(post(server.url + URL, encode(wide), {"attributes": "striped"}).content))
    assert_close(out, expected(repo, wide[:, 2 : 2 + S], "striped"))
    # a 24x40 portrait: shorter side 24 -> 8 (bicubic), 40 -> 13, then rows 2..10
    tall = noise(40, 24, seed=4)
    resized = np.asarray(Image.fromarray(tall).resize((S, 13), Image.Resampling.BICUBIC, reducing_gap=3.0))
    out = np.asarray(decode(post(server.url + URL, encode(tall), {"attributes": ""}).content))
    assert_close(out, expected(repo, resized[2 : 2 + S]))


def test_translate_validation_and_upload_errors(server: LiveServer) -> None:
    url = server.url + URL
    png = encode(noise(S, S))
    error_of(post(url, png), 422, "missing_attributes")
    error_of(post(url, png, {"attributes": "striped", "targets": "striped"}), 422, "invalid_attributes")
    error_of(post(url, png, {"attributes": '["striped"'}), 422, "invalid_attributes")
    error_of(post(url, png, {"targets": ["striped"] * 5}), 413, "too_many_images")
    error_of(post(url, encode(noise(101, 100)), {"attributes": "striped"}), 413, "image_too_large")
    error_of(post(url, encode(noise(4, 4), "GIF"), {"attributes": "striped"}, "image/gif"), 415)
    error_of(post(url, png[:40], {"attributes": "striped"}), 400, "corrupt_image")
    error_of(post(url, png, {"attributes": "striped", "model": "sr"}), 400, "wrong_task")
    error_of(post(url, png, {"attributes": "striped", "quality": "0"}), 422, "validation_error")


def test_rgba_is_composited_over_white(server: LiveServer, repo: Path) -> None:
    rgba = noise(S, S, channels=4, seed=5)
    rgba[:, :, 3] = 0  # fully transparent: the model sees white
    out = np.asarray(decode(post(server.url + URL, encode(rgba), {"attributes": "colour_red"}).content))
    assert_close(out, expected(repo, np.full((S, S, 3), 255, np.uint8), "colour_red"))


def test_label_units() -> None:
    assert parse_attribute_set(" a, b ,a,,") == ["a", "b"]
    assert parse_attribute_set('["x", "y"]') == ["x", "y"]
    assert parse_attribute_set("") == []
    with pytest.raises(ApiError):
        parse_attribute_set("[1, 2]")


def test_build_labels_orders_by_manifest(repo: Path) -> None:
    manifest = Manifest.read(repo / "stargan")
    labels = build_labels([["striped", "colour_blue"], []], manifest)
    np.testing.assert_array_equal(labels, [[0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0]])
