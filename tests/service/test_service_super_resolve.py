"""POST /super-resolve over a real uvicorn server, plus the tiling and upload units behind it.

Tiled vs untiled (measured, 100x75 input, 12 tiles of 32 px, tiny model with receptive radius 2):
with overlap >= 2 the stitched float output equals the whole-image run exactly (max abs error 0,
PSNR = inf); through the service (8-bit PNG, tiles batched 12 at a time) PSNR = 100.7 dB against the
untiled 8-bit result, i.e. a few pixels one grey level off from batch-size-dependent float rounding.
Without overlap the seams show: overlap 0 -> 19.0 dB, overlap 1 -> 25.8 dB.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from service import tiling
from service.app import create_app
from service.errors import ApiError
from service.served_models import ServedModels
from service.settings import Settings
from service.uploads import decode_image
from tests.service.media_testkit import (
    SCALE,
    SR_RECEPTIVE_RADIUS,
    add_super_resolver,
    add_translator,
    bomb_png,
    decode,
    encode,
    noise,
    psnr,
    run_model,
    sr_reference,
    to_uint8,
)
from tests.service.service_testkit import Gate, LiveServer, add_generator, wait_for

URL = "/super-resolve"


def error_of(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def post_image(
    url: str, data: bytes, filename: str = "x.png", ctype: str = "image/png", **fields: Any
) -> httpx.Response:
    return httpx.post(url, files={"image": (filename, data, ctype)}, data=fields, timeout=30)


@pytest.fixture(scope="module")
def sr_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sr") / "models"
    add_super_resolver(root, "sr")
    add_translator(root, "stargan")
    add_generator(root, "tiny")
    return root


@pytest.fixture(scope="module")
def server(sr_repo: Path) -> Iterator[LiveServer]:
    settings = Settings(model_dir=sr_repo, sr_tile_size=32, sr_tile_overlap=4, max_input_pixels=200_000)
    with LiveServer(create_app(settings)) as srv:
        srv.wait_ready()
        yield srv


# ---------------------------------------------------------------------------- tiling units


@pytest.mark.parametrize("length", [1, 5, 32, 33, 60, 100, 257])
def test_tile_spans_partition_the_axis_with_context(length: int) -> None:
    tile, overlap = 32, 4
    spans = tiling.plan_axis(length, tile, overlap)
    assert spans[0].keep_start == 0 and spans[-1].keep_stop == length
    for before, after in zip(spans, spans[1:], strict=False):
        assert before.keep_stop == after.keep_start
    for span in spans:
        end = span.start + tile
        if length >= tile:
            assert span.start >= 0 and end <= length  # inside the image: no padding needed
        assert span.keep_start - span.start >= overlap or span.start == 0
        assert end - span.keep_stop >= overlap or end >= length


def test_tiled_equals_untiled_and_overlap_is_what_makes_it_so(sr_repo: Path) -> None:
    rgb = noise(75, 100, seed=3)
    whole = sr_reference(sr_repo / "sr", rgb)

    def tiled(overlap: int) -> np.ndarray:
        plan = tiling.plan(75, 100, 32, overlap)
        tiles = tiling.cut(rgb, plan, 0, plan.count).astype(np.float32) / 255.0
        return tiling.stitch(run_model(sr_repo / "sr", {"image": tiles}), plan, SCALE)

    exact = tiled(SR_RECEPTIVE_RADIUS + 2)
    seams = tiled(0)
    assert exact.shape == whole.shape == (3, 300, 400)
    quality = psnr(exact, whole, peak=2.0)
    print(f"tiled vs untiled: max abs {np.abs(exact - whole).max():.2e}, PSNR {quality:.1f} dB")
    assert np.abs(exact - whole).max() < 1e-5 and quality > 100
    assert psnr(seams, whole, peak=2.0) < 60  # without overlap the tile borders differ
    assert np.array_equal(to_uint8(exact), to_uint8(whole))


# ---------------------------------------------------------------------------- the endpoint


def test_small_image_matches_a_direct_onnxruntime_run(server: LiveServer, sr_repo: Path) -> None:
    rgb = noise(7, 10, seed=1)
    response = post_image(server.url + URL, encode(rgb))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-scale"] == "4" and response.headers["x-tiles"] == "1"
    out = np.asarray(decode(response.content))
    assert out.shape == (28, 40, 3)
    assert np.abs(out.astype(int) - to_uint8(sr_reference(sr_repo / "sr", rgb)).astype(int)).max() <= 1


def test_raw_body_and_formats(server: LiveServer) -> None:
    rgb = noise(6, 5, seed=2)
    raw = httpx.post(
        server.url + URL + "?format=webp&quality=80",
        content=encode(rgb, "JPEG"),
        headers={"content-type": "image/jpeg"},
    )
    assert raw.status_code == 200, raw.text
    assert raw.headers["content-type"] == "image/webp" and decode(raw.content).size == (20, 24)
    jpeg = post_image(server.url + URL, encode(rgb, "WEBP"), "x.webp", "image/webp", format="jpeg", model="sr")
    assert jpeg.headers["content-type"] == "image/jpeg" and decode(jpeg.content).size == (20, 24)


def test_large_image_is_tiled_and_equals_the_untiled_run(server: LiveServer, sr_repo: Path) -> None:
    rgb = noise(75, 100, seed=4)
    response = post_image(server.url + URL, encode(rgb))
    assert response.status_code == 200, response.text
    assert int(response.headers["x-tiles"]) == 4 * 3  # 100 -> 4 columns, 75 -> 3 rows of 32-pixel tiles
    out = np.asarray(decode(response.content))
    untiled = to_uint8(sr_reference(sr_repo / "sr", rgb))
    quality = psnr(out, untiled, peak=255.0)
    print(f"service tiled vs untiled (8-bit): PSNR {quality} dB")
    assert out.shape == untiled.shape == (300, 400, 3)
    assert np.abs(out.astype(int) - untiled.astype(int)).max() <= 1 and quality > 60


def test_thin_image_tiles_are_as_thin_as_the_image(server: LiveServer, sr_repo: Path) -> None:
    """20 rows < one 32-pixel tile: the tiles are 20 rows tall (not padded to 32), so the result is
    exactly the whole-image run."""
    rgb = noise(20, 90, seed=5)
    response = post_image(server.url + URL, encode(rgb))
    out = np.asarray(decode(response.content)).astype(int)
    untiled = to_uint8(sr_reference(sr_repo / "sr", rgb)).astype(int)
    assert out.shape == untiled.shape == (80, 360, 3)
    assert np.abs(out - untiled).max() <= 1


def test_grayscale_in_grayscale_out(server: LiveServer, sr_repo: Path) -> None:
    gray = noise(6, 9, channels=1, seed=6)
    response = post_image(server.url + URL, encode(gray))
    image = decode(response.content)
    assert image.mode == "L" and image.size == (36, 24)
    rgb_out = to_uint8(sr_reference(sr_repo / "sr", np.repeat(gray[:, :, None], 3, axis=2)))
    wanted = np.asarray(Image.fromarray(rgb_out).convert("L")).astype(int)
    assert np.abs(np.asarray(image).astype(int) - wanted).max() <= 1


def test_rgba_keeps_a_bicubically_upscaled_alpha(server: LiveServer, sr_repo: Path) -> None:
    rgba = noise(6, 9, channels=4, seed=7)
    response = post_image(server.url + URL, encode(rgba))
    image = decode(response.content)
    assert image.mode == "RGBA" and image.size == (36, 24)
    out = np.asarray(image).astype(int)
    wanted_rgb = to_uint8(sr_reference(sr_repo / "sr", rgba[:, :, :3])).astype(int)
    wanted_alpha = np.asarray(Image.fromarray(rgba[:, :, 3]).resize((36, 24), Image.Resampling.BICUBIC))
    assert np.abs(out[:, :, :3] - wanted_rgb).max() <= 1
    assert np.array_equal(out[:, :, 3], wanted_alpha)
    jpeg = decode(post_image(server.url + URL, encode(rgba), format="jpeg").content)
    assert jpeg.mode == "RGB" and jpeg.size == (36, 24)  # composited over white


def test_limits_and_bad_uploads(server: LiveServer, sr_repo: Path) -> None:
    url = server.url + URL
    error_of(post_image(url, encode(noise(500, 401))), 413, "image_too_large")  # 200_500 > 200_000 pixels
    bomb = error_of(post_image(url, bomb_png(100_000, 100_000)), 413, "image_too_large")
    assert "pixels" in bomb["message"] or "decompression" in bomb["message"].lower()
    error_of(post_image(url, bomb_png(1000, 1000)), 413, "image_too_large")  # under Pillow's own limit: ours
    gif = encode(noise(4, 4), "GIF")
    error_of(post_image(url, gif, "x.gif", "image/gif"), 415, "unsupported_image_format")
    error_of(post_image(url, gif, "x.bin", "application/octet-stream"), 415, "unsupported_image_format")
    error_of(httpx.post(url, content=gif, headers={"content-type": "image/gif"}), 415, "unsupported_image_format")
    error_of(post_image(url, encode(noise(4, 4), "TIFF"), "x.png", "image/png"), 415, "unsupported_image_format")
    error_of(post_image(url, encode(noise(4, 4), "BMP"), "x.bmp", "image/bmp"), 415, "unsupported_image_format")
    error_of(post_image(url, b"hello, not an image", "x.txt", "text/plain"), 415, "unsupported_image_format")
    error_of(httpx.post(url, content=b"hello", headers={"content-type": "text/plain"}), 415, "unsupported_media_type")
    png = encode(noise(16, 16))
    truncated = error_of(post_image(url, png[: len(png) // 2]), 400, "corrupt_image")
    assert "PNG" in truncated["message"]
    error_of(post_image(url, b""), 400, "empty_image")
    error_of(httpx.post(url, data={"format": "png"}, files={"other": ("x", b"x")}), 422, "unexpected_file")
    error_of(httpx.post(url, data={"format": "png"}), 415, "unsupported_media_type")  # form-urlencoded
    error_of(post_image(url, png, format="gif"), 422, "validation_error")
    error_of(post_image(url, png, fromat="png"), 422, "validation_error")
    error_of(post_image(url, png, model="nope"), 404, "model_not_found")
    error_of(post_image(url, png, model="stargan"), 400, "wrong_task")


def test_upload_bytes_limit(live_server: Any, sr_repo: Path) -> None:
    srv = live_server(create_app(Settings(model_dir=sr_repo, max_upload_bytes=4000)))
    big = encode(noise(64, 64))  # ~12 kB of noise
    assert len(big) > 4000
    error_of(post_image(srv.url + URL, big), 413, "payload_too_large")
    error_of(httpx.post(srv.url + URL, content=big, headers={"content-type": "image/png"}), 413, "payload_too_large")


def test_bomb_header_is_refused_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*_: Any) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for side in (3000, 50_000):  # below and above Pillow's own DecompressionBombError threshold
        with pytest.raises(ApiError) as caught:
            decode_image(bomb_png(side, side), max_pixels=2048 * 2048)
        assert caught.value.status == 413 and caught.value.code == "image_too_large"


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    wide = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(wide).save(buf, format="PNG")
    decoded = decode_image(buf.getvalue(), max_pixels=1000)
    assert decoded.grayscale and decoded.rgb.shape == (8, 8, 3)
    assert decoded.rgb[7, 7, 0] == round(63000 * 255 / 65535)


# ---------------------------------------------------------------------------- batching and metrics


def test_tiles_of_concurrent_requests_share_onnxruntime_calls(live_server: Any, sr_repo: Path) -> None:
    settings = Settings(
        model_dir=sr_repo, sr_tile_size=16, sr_tile_overlap=2, max_batch_size=64, sr_max_batch_size=0,
        inference_streams=1,
    )
    registry = ServedModels.load(settings)
    runtime = registry.entries["sr"].runtime
    gate = Gate(runtime.run)
    runtime.run = gate  # type: ignore[method-assign]
    srv = live_server(create_app(settings, models=registry))
    srv.wait_ready()
    batcher = srv.service.models.entries["sr"].batcher
    url = srv.url + URL
    images = [noise(40, 40, seed=10 + i) for i in range(4)]  # 3 x 3 = 9 tiles of 16x16 each
    with ThreadPoolExecutor(5) as pool:
        gate.close()
        holder = pool.submit(post_image, url, encode(noise(8, 8)))  # its batch waits in the gate
        assert gate.entered.wait(10)
        runs_before = batcher.runs
        futures = [pool.submit(post_image, url, encode(img)) for img in images]
        wait_for(lambda: batcher.queued_rows == 4 * 9, what="all tiles queued")
        gate.open()
        responses = [f.result() for f in futures]
        assert holder.result().status_code == 200
    calls = batcher.runs - runs_before - 1
    print(f"{4 * 9} tiles of 4 requests in {calls} ONNX Runtime call(s)")
    assert calls < 4  # fewer calls than requests: tiles of different requests shared batches
    for img, response in zip(images, responses, strict=True):
        assert response.headers["x-tiles"] == "9"
        out = np.asarray(decode(response.content)).astype(int)
        assert np.abs(out - to_uint8(sr_reference(sr_repo / "sr", img)).astype(int)).max() <= 1


def test_large_images_are_queued_in_chunks(live_server: Any, sr_repo: Path) -> None:
    """More tiles than the queue holds still work: a request queues at most a few batches at a time."""
    settings = Settings(
        model_dir=sr_repo,
        sr_tile_size=16,
        sr_tile_overlap=2,
        max_batch_size=4,
        max_queue_size=8,
        max_images_per_request=8,
    )
    srv = live_server(create_app(settings))
    srv.wait_ready()
    rgb = noise(60, 60, seed=12)
    response = post_image(srv.url + URL, encode(rgb))
    assert response.status_code == 200, response.text
    assert int(response.headers["x-tiles"]) > 8
    out = np.asarray(decode(response.content)).astype(int)
    assert np.abs(out - to_uint8(sr_reference(sr_repo / "sr", rgb)).astype(int)).max() <= 1


def test_metrics_count_images_and_output_pixels(server: LiveServer) -> None:
    def value(name: str, **labels: str) -> float:
        text = httpx.get(server.url + "/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return 0.0

    pixels = value("gan_output_pixels_total", model="sr")
    images = value("gan_images_produced_total", model="sr")
    ok = value("gan_requests_total", endpoint="/super-resolve", model="sr", status="200")
    post_image(server.url + URL, encode(noise(5, 6)))
    assert value("gan_output_pixels_total", model="sr") - pixels == 20 * 24
    assert value("gan_images_produced_total", model="sr") - images == 1
    assert value("gan_requests_total", endpoint="/super-resolve", model="sr", status="200") - ok == 1


def test_openapi_documents_the_upload_fields(server: LiveServer) -> None:
    spec = httpx.get(server.url + "/openapi.json").json()
    for path in ("/super-resolve", "/translate"):
        operation = spec["paths"][path]["post"]
        content = operation["requestBody"]["content"]
        assert {"multipart/form-data", "image/png", "image/jpeg", "image/webp"} <= set(content)
        assert "image" in content["multipart/form-data"]["schema"]["properties"]
        assert {"413", "415"} <= set(operation["responses"])
    props = spec["paths"]["/translate"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"attributes", "targets", "format", "model"} <= set(props)
