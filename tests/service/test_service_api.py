"""The HTTP API over a real uvicorn server on loopback."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service import codecs
from service.app import create_app
from service.latents import sample
from service.served_models import ServedModels
from service.settings import Settings
from tests.service.service_testkit import (
    IMAGE_SIZE,
    LATENT_DIM,
    Gate,
    LiveServer,
    add_generator,
    reference_images,
    wait_for,
)

Start = Callable[..., LiveServer]


def serve(start: Start, repo: Path, gate: bool = False, **overrides: Any) -> tuple[LiveServer, Gate | None]:
    """Start a server on `repo`; with `gate`, the `tiny` model's inference can be held (one
    inference stream, so holding it holds every batch)."""
    if gate:
        overrides.setdefault("inference_streams", 1)
    settings = Settings(model_dir=repo, **overrides)
    registry = ServedModels.load(settings)
    holder = None
    if gate:
        runtime = registry.entries["tiny"].runtime
        holder = Gate(runtime.run)
        runtime.run = holder  # type: ignore[method-assign]
    server = start(create_app(settings, models=registry))
    return server, holder


def images_of(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.stack([codecs.decode(base64.b64decode(data)) for data in response.json()["images"]])


def expected(repo: Path, latents: np.ndarray, name: str = "tiny") -> np.ndarray:
    return codecs.to_uint8(reference_images(repo / name, latents), (-1.0, 1.0))


def assert_close(actual: np.ndarray, wanted: np.ndarray) -> None:
    """Batched and unbatched runs may differ in the last float bit, hence one grey level."""
    assert actual.shape == wanted.shape
    assert np.abs(actual.astype(int) - wanted.astype(int)).max() <= 1


def error_of(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shared") / "models"
    add_generator(root, "tiny")
    add_generator(root, "tiny4d", latent_rank=4, seed=1)
    return root


@pytest.fixture(scope="module")
def server(shared_repo: Path) -> Iterator[LiveServer]:
    """One server for the tests that only read (they compare deltas where state matters)."""
    with LiveServer(create_app(Settings(model_dir=shared_repo))) as srv:
        srv.wait_ready()
        yield srv


# ---------------------------------------------------------------------------- /generate


def test_same_seed_same_images_and_reproducible_from_the_returned_seed(server: LiveServer, shared_repo: Path) -> None:
    url = server.url + "/generate"
    first = httpx.post(url, json={"num_images": 3, "seed": 42})
    again = httpx.post(url, json={"num_images": 3, "seed": 42})
    other = httpx.post(url, json={"num_images": 3, "seed": 43})
    assert first.json()["seed"] == 42 and first.json()["model"] == "tiny"
    assert first.json()["images"] == again.json()["images"]
    assert first.json()["images"] != other.json()["images"]
    assert_close(images_of(first), expected(shared_repo, sample(42, 3, LATENT_DIM, "normal")))
    unseeded = httpx.post(url, json={"num_images": 2})
    replay = httpx.post(url, json={"num_images": 2, "seed": unseeded.json()["seed"]})
    assert unseeded.json()["images"] == replay.json()["images"]


def test_explicit_latents_match_a_direct_onnxruntime_run(server: LiveServer, shared_repo: Path) -> None:
    latents = np.random.default_rng(5).standard_normal((3, LATENT_DIM)).astype(np.float32)
    for name in ("tiny", "tiny4d"):  # tiny4d declares its latent input as [N, D, 1, 1]
        response = httpx.post(
            server.url + "/generate",
            json={"model": name, "latents": latents.tolist(), "return_latents": True},
        )
        assert response.json()["seed"] is None
        np.testing.assert_array_equal(np.asarray(response.json()["latents"], np.float32), latents)
        assert_close(images_of(response), expected(shared_repo, latents, name))


def test_interpolation_endpoints_are_the_endpoint_images(server: LiveServer, shared_repo: Path) -> None:
    url = server.url + "/generate"
    for method in ("linear", "slerp"):
        walk = httpx.post(
            url, json={"interpolate": {"from": {"seed": 1}, "to": {"seed": 2}, "steps": 5, "method": method}}
        )
        images = images_of(walk)
        assert len(images) == 5
        np.testing.assert_array_equal(images[0], images_of(httpx.post(url, json={"seed": 1}))[0])
        np.testing.assert_array_equal(images[-1], images_of(httpx.post(url, json={"seed": 2}))[0])
    start, end = np.zeros(LATENT_DIM), np.ones(LATENT_DIM)
    walk = httpx.post(
        url,
        json={
            "interpolate": {"from": {"latent": start.tolist()}, "to": {"latent": end.tolist()}, "steps": 3},
            "return_latents": True,
        },
    )
    path = np.asarray(walk.json()["latents"])
    np.testing.assert_allclose(path, [start, (start + end) / 2, end], atol=1e-7)
    assert_close(images_of(walk), expected(shared_repo, path.astype(np.float32)))


def test_image_grid_when_the_client_accepts_png(server: LiveServer) -> None:
    body = {"num_images": 4, "seed": 9}
    grid = httpx.post(server.url + "/generate", json=body, headers={"Accept": "image/png"})
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    assert grid.headers["x-seed"] == "9" and grid.headers["x-image-count"] == "4"
    picture = codecs.decode(grid.content)
    side = 2 * IMAGE_SIZE + 3 * 2  # 2 x 2 tiles with 2-pixel padding
    assert picture.shape == (side, side, 3)
    singles = images_of(httpx.post(server.url + "/generate", json=body))
    np.testing.assert_array_equal(picture[2 : 2 + IMAGE_SIZE, 2 : 2 + IMAGE_SIZE], singles[0])
    tile = 2 + IMAGE_SIZE + 2
    np.testing.assert_array_equal(picture[tile : tile + IMAGE_SIZE, tile : tile + IMAGE_SIZE], singles[3])
    json_wins = httpx.post(server.url + "/generate", json=body, headers={"Accept": "application/json, image/png;q=0.5"})
    assert json_wins.headers["content-type"] == "application/json"


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_other_formats(server: LiveServer, fmt: str) -> None:
    response = httpx.post(server.url + "/generate", json={"num_images": 2, "seed": 3, "format": fmt})
    assert response.json()["media_type"] == f"image/{fmt}"
    assert images_of(response).shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3)


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "body",
    [
        {"num_images": 0},
        {"num_images": "many"},
        {"seed": -1},
        {"format": "gif"},
        {"colour": "blue"},
        {"latents": []},
        {"latents": [[0.0] * LATENT_DIM], "interpolate": {"from": {"seed": 1}, "to": {"seed": 2}}},
        {"latents": [[0.0] * LATENT_DIM], "seed": 3},
        {"latents": [[0.0] * LATENT_DIM], "num_images": 2},
        {"interpolate": {"from": {"seed": 1}, "to": {"seed": 2, "latent": [0.0]}}},
        {"interpolate": {"from": {"seed": 1}, "to": {"seed": 2}, "steps": 1}},
        {"latents": [["x"] * LATENT_DIM]},
    ],
)
def test_bad_bodies_are_422_in_the_error_shape(server: LiveServer, body: dict[str, Any]) -> None:
    error = error_of(httpx.post(server.url + "/generate", json=body), 422, "validation_error")
    assert error["details"]


def test_semantic_errors(server: LiveServer) -> None:
    url = server.url + "/generate"
    error_of(httpx.post(url, json={"latents": [[0.0] * (LATENT_DIM + 1)]}), 422, "invalid_latent")
    error_of(httpx.post(url, json={"latents": [[1e39] * LATENT_DIM]}), 422, "invalid_latent")
    nan = "[" + ",".join(["NaN"] * LATENT_DIM) + "]"
    error_of(httpx.post(url, content=f'{{"latents": [{nan}]}}', headers={"content-type": "application/json"}), 422)
    error_of(httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}), 422)
    error_of(httpx.post(url, json={"model": "nope"}), 404, "model_not_found")
    error_of(httpx.post(url, json={"num_images": 65}), 413, "too_many_images")
    error_of(httpx.post(url, json={"num_images": 1}, headers={"Accept": "text/html"}), 406, "not_acceptable")
    error_of(httpx.get(url), 405, "method_not_allowed")
    error_of(httpx.get(server.url + "/nothing-here"), 404, "not_found")
    huge = b'{"latents": [' + b"0.0," * 3_000_000 + b"0.0]}"
    error_of(httpx.post(url, content=huge, headers={"content-type": "application/json"}), 413, "payload_too_large")


@pytest.mark.parametrize(
    "content",
    [
        b'{"num_images": 2, "seed": 5}',
        b'{"num_images": 1, "seed": 5, "return_latents": true, "format": "webp"}',
        b'{"num_images": 0}',
        b'{"seed": 1, "colour": "blue"}',
        b"{not json",
        b"null",
        b"[]",
        b"",
    ],
)
def test_generate_fast_path_answers_exactly_as_fastapi(server: LiveServer, content: bytes) -> None:
    """`application/json` bodies take service.json_body's fast path; with a charset parameter the same
    body goes through FastAPI's own handling: status, headers that matter and bytes must not differ."""
    (route,) = [r for r in server.app.routes if getattr(r, "path", None) == "/generate"]
    assert route.get_route_handler().__name__ == "handle_fast"  # the fast path is in place to compare
    url = server.url + "/generate"
    fast = httpx.post(url, content=content, headers={"content-type": "application/json"})
    slow = httpx.post(url, content=content, headers={"content-type": "application/json; charset=utf-8"})
    assert fast.status_code == slow.status_code
    assert fast.headers["content-type"] == slow.headers["content-type"]
    assert fast.content == slow.content


# ---------------------------------------------------------------------------- batching and load


def post_in_thread(url: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    with httpx.Client(timeout=30) as client:
        return client.post(url, json=body, **kwargs)


def test_concurrent_requests_are_batched_and_each_gets_its_own_images(live_server: Start, repo: Path) -> None:
    srv, gate = serve(live_server, repo, gate=True, max_batch_delay_ms=1)
    assert gate is not None
    srv.wait_ready()
    batcher = srv.service.models.entries["tiny"].batcher
    runs_before = batcher.runs
    url = srv.url + "/generate"
    seeds = list(range(100, 112))
    with ThreadPoolExecutor(len(seeds) + 1) as pool:
        gate.close()
        blocker = pool.submit(post_in_thread, url, {"seed": 1})
        assert gate.entered.wait(10)
        futures = [pool.submit(post_in_thread, url, {"seed": seed}) for seed in seeds]
        wait_for(lambda: batcher.queued_rows == len(seeds), what="all requests queued")
        gate.open()
        responses = [future.result() for future in futures]
        blocker.result()
    assert batcher.runs - runs_before == 2  # the blocker, then all twelve in one call
    for seed, response in zip(seeds, responses, strict=True):
        unbatched = expected(repo, sample(seed, 1, LATENT_DIM, "normal"))
        assert_close(images_of(response), unbatched)


def test_full_queue_is_503_with_retry_after(live_server: Start, repo: Path) -> None:
    srv, gate = serve(live_server, repo, gate=True, max_batch_size=2, max_queue_size=4, max_images_per_request=4)
    assert gate is not None
    srv.wait_ready()
    batcher = srv.service.models.entries["tiny"].batcher
    url = srv.url + "/generate"
    with ThreadPoolExecutor(2) as pool:
        gate.close()
        running = pool.submit(post_in_thread, url, {"num_images": 2})
        assert gate.entered.wait(10)
        queued = pool.submit(post_in_thread, url, {"num_images": 4})
        wait_for(lambda: batcher.queued_rows == 4, what="queue full")
        rejected = httpx.post(url, json={"num_images": 1})
        error_of(rejected, 503, "overloaded")
        assert rejected.headers["retry-after"] == "1"
        gate.open()
        assert running.result().status_code == 200 and queued.result().status_code == 200
    assert 'gan_rejections_total{model="tiny",reason="queue_full"} 1.0' in httpx.get(srv.url + "/metrics").text


def test_deadline_is_504_and_costs_no_compute(live_server: Start, repo: Path) -> None:
    srv, gate = serve(live_server, repo, gate=True, request_timeout_s=0.3, max_batch_delay_ms=0)
    assert gate is not None
    srv.wait_ready()
    batcher = srv.service.models.entries["tiny"].batcher
    runs, rows = batcher.runs, batcher.rows_run
    url = srv.url + "/generate"
    with ThreadPoolExecutor(2) as pool:
        gate.close()
        running = pool.submit(post_in_thread, url, {"num_images": 1})
        assert gate.entered.wait(10)
        waiting = pool.submit(post_in_thread, url, {"num_images": 3})
        error_of(waiting.result(), 504, "deadline_exceeded")
        error_of(running.result(), 504, "deadline_exceeded")  # its batch started, but too late
        assert batcher.queued_rows == 0
        gate.open()
    wait_for(lambda: batcher.runs == runs + 1, what="blocked batch to finish")
    time.sleep(0.05)
    assert batcher.runs == runs + 1 and batcher.rows_run == rows + 1  # the 3 expired rows never ran


def test_client_disconnect_frees_the_slot(live_server: Start, repo: Path) -> None:
    srv, gate = serve(live_server, repo, gate=True, max_batch_delay_ms=0)
    assert gate is not None
    srv.wait_ready()
    batcher = srv.service.models.entries["tiny"].batcher
    rows = batcher.rows_run
    url = srv.url + "/generate"
    with ThreadPoolExecutor(1) as pool:
        gate.close()
        running = pool.submit(post_in_thread, url, {"num_images": 1})
        assert gate.entered.wait(10)
        body = b'{"num_images": 4}'
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(
                b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            wait_for(lambda: batcher.queued_rows == 4, what="request queued")
        wait_for(lambda: batcher.queued_rows == 0, what="slot freed after disconnect")
        gate.open()
        assert running.result().status_code == 200
    time.sleep(0.05)
    assert batcher.rows_run == rows + 1
    metrics = httpx.get(srv.url + "/metrics").text
    assert 'gan_rejections_total{model="tiny",reason="client_disconnected"} 1.0' in metrics


# ------------------------------------------------------------------ readiness, models, metrics, auth


def test_not_ready_until_warmed_up(live_server: Start, repo: Path) -> None:
    settings = Settings(model_dir=repo)
    registry = ServedModels.load(settings)
    runtime = registry.entries["tiny"].runtime
    gate = Gate(runtime.run)
    runtime.run = gate  # type: ignore[method-assign]
    gate.close()
    srv = live_server(create_app(settings, models=registry))
    assert gate.entered.wait(10)  # warm-up is running, and held
    assert httpx.get(srv.url + "/healthz").json() == {"status": "ok"}
    error = error_of(httpx.get(srv.url + "/readyz"), 503, "not_ready")
    assert "tiny: warming" in error["message"]
    refused = httpx.post(srv.url + "/generate", json={})
    error_of(refused, 503, "not_ready")
    assert "retry-after" in refused.headers
    assert httpx.get(srv.url + "/models").json()["ready"] is False
    gate.open()
    srv.wait_ready()
    assert httpx.get(srv.url + "/readyz").json() == {"status": "ready", "models": {"tiny": "ready"}}
    # warmed at every batch size the batcher can form, so no live request meets a new shape
    assert gate.calls == settings.max_batch_size
    assert runtime.batch_sizes_seen == set(range(1, settings.max_batch_size + 1))


def test_models_lists_manifests_and_providers(server: LiveServer) -> None:
    body = httpx.get(server.url + "/models").json()
    assert body["ready"] is True
    tiny = next(m for m in body["models"] if m["name"] == "tiny")
    assert tiny["task"] == "generate" and tiny["latent_dim"] == LATENT_DIM and tiny["state"] == "ready"
    assert tiny["providers"] == ["CPUExecutionProvider"]
    assert tiny["inputs"] == [{"name": "latent", "shape": [None, LATENT_DIM], "dtype": "float32"}]


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample_ in family.samples:
            if sample_.name == name and all(sample_.labels.get(k) == v for k, v in labels.items()):
                return sample_.value
    return 0.0


def test_metrics_move_as_requests_are_served(server: LiveServer) -> None:
    before = httpx.get(server.url + "/metrics").text
    for seed in range(3):
        assert httpx.post(server.url + "/generate", json={"num_images": 2, "seed": seed}).status_code == 200
    httpx.post(server.url + "/generate", json={"num_images": 0})
    after = httpx.get(server.url + "/metrics").text

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("gan_requests_total", endpoint="/generate", model="tiny", status="200") == 3
    assert delta("gan_requests_total", endpoint="/generate", status="422") == 1
    assert delta("gan_images_produced_total", model="tiny") == 6
    assert delta("gan_batch_size_sum", model="tiny") == 6
    assert delta("gan_inference_duration_seconds_count", model="tiny") == 3
    assert delta("gan_queue_wait_seconds_count", model="tiny") == 3
    assert delta("gan_request_duration_seconds_count", endpoint="/generate", model="tiny") == 3
    assert metric(after, "gan_queue_depth", model="tiny") == 0
    assert metric(after, "gan_model_ready", model="tiny") == 1
    assert metric(after, "gan_model_info", model="tiny", providers="CPUExecutionProvider", task="generate") == 1


def test_api_keys(live_server: Start, repo: Path) -> None:
    srv, _ = serve(live_server, repo, api_keys=["s3cret", "other"])
    srv.wait_ready()
    url = srv.url + "/generate"
    denied = httpx.post(url, json={})
    error_of(denied, 401, "unauthorized")
    assert denied.headers["www-authenticate"] == "Bearer"
    error_of(httpx.post(url, json={}, headers={"Authorization": "Bearer wrong"}), 401)
    error_of(httpx.get(srv.url + "/models"), 401)
    assert httpx.post(url, json={}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert httpx.post(url, json={}, headers={"X-API-Key": "other"}).status_code == 200
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/", "/static/demo.js"):
        assert httpx.get(srv.url + path).status_code == 200, path
    error_of(httpx.get(srv.url + "/staticx"), 401)  # the open prefix is the folder, not a name that starts alike
    schema = httpx.get(srv.url + "/openapi.json").json()
    assert "bearer" in schema["components"]["securitySchemes"]


def test_openapi_documents_examples(server: LiveServer) -> None:
    schema = httpx.get(server.url + "/openapi.json").json()
    generate = schema["paths"]["/generate"]["post"]
    assert set(generate["requestBody"]["content"]["application/json"]["examples"]) >= {
        "seeded",
        "interpolate",
    }
    assert "image/png" in generate["responses"]["200"]["content"]
    assert generate["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
    for path in ("/models", "/healthz", "/readyz"):
        ref = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert "examples" in schema["components"]["schemas"][ref.rsplit("/", 1)[1]], path
