"""Issue 13 (hardening): each finding as a behaviour test that failed before its fix.

Findings: (1) a thin 12 KB image padded to full tiles, decoding outside the deadline, cycles keeping
a failed request's arrays; (2) ONNX Runtime's arena keeping super-resolution peaks; (3) refusals that
paid for the body and the latents; (4) a 500 from the WebP encoder; (5) large JSON bodies parsed on
the event loop; (6) the smaller items. Memory and goodput figures are benchmarks (bench/), not tests.
"""

from __future__ import annotations

import gc
import logging
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from service import cli, json_body
from service import super_resolve as sr_module
from service.admission import AdmissionMiddleware, generate_body_limit
from service.app import create_app
from service.runtime import run_options
from service.served_models import ServedModels
from service.settings import Settings
from tests.service.media_testkit import add_super_resolver, add_translator, encode, noise
from tests.service.service_testkit import Gate, LiveServer, add_generator, wait_for

Start = Callable[..., LiveServer]


@pytest.fixture(scope="module")
def media_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reliability") / "models"
    add_super_resolver(root, "sr")
    add_translator(root, "stargan")
    add_generator(root, "tiny")
    return root


def error_of(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    if code is not None:
        assert body["code"] == code, body
    return body


def start(live_server: Start, repo: Path, gate: str | None = None, bounded: bool = False, **overrides: Any) -> Any:
    """A live server on `repo`; `gate` names a model whose inference a Gate holds; `bounded` runs it with
    gan-serve's uvicorn options (connection cap, head timeout and size)."""
    settings = Settings(model_dir=repo, **overrides)
    registry = ServedModels.load(settings)
    holder = None
    if gate is not None:
        runtime = registry.entries[gate].runtime
        holder = Gate(runtime.run)
        runtime.run = holder  # type: ignore[method-assign]
    options: dict[str, Any] = {}
    if bounded:
        options = {k: v for k, v in cli.uvicorn_options(settings).items() if k not in ("host", "port", "workers")}
        options.update(log_level="warning", access_log=False)
        server = LiveServer(create_app(settings, models=registry), **options).__enter__()
        _BOUNDED.append(server)
    else:
        server = live_server(create_app(settings, models=registry))
    server.wait_ready()
    return server, holder


_BOUNDED: list[LiveServer] = []


@pytest.fixture(autouse=True)
def _stop_bounded() -> Iterator[None]:
    yield
    for gate in Gate.created:
        gate.open()
    while _BOUNDED:
        _BOUNDED.pop().__exit__(None, None, None)


def raw_request(port: int, head: bytes, body: bytes = b"", wait: float = 5.0) -> bytes:
    """Send bytes on a fresh connection and return everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(head + body)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


def post_sr(url: str, data: bytes, **params: Any) -> httpx.Response:
    return httpx.post(url + "/super-resolve", content=data, params=params,
                      headers={"content-type": "image/png"}, timeout=30)


# ---------------------------------------------------------------------------- finding 1


def test_thin_image_runs_thin_tiles_not_padded_squares(live_server: Start, media_repo: Path) -> None:
    srv, gate = start(live_server, media_repo, gate="sr", sr_tile_size=32, sr_tile_overlap=4)
    shapes: list[tuple[int, ...]] = []
    inner = gate._run
    gate._run = lambda feeds: (shapes.append(feeds["image"].shape), inner(feeds))[1]
    response = post_sr(srv.url, encode(noise(1, 4096, seed=1)))
    assert response.status_code == 200, response.text
    assert {shape[1:] for shape in shapes} == {(3, 1, 32)}  # 1 row tall, as the image: no padding to 32x32
    assert sum(shape[0] for shape in shapes) == int(response.headers["x-tiles"])


def test_too_many_tiles_is_413_from_the_header(live_server: Start, media_repo: Path) -> None:
    srv, gate = start(live_server, media_repo, gate="sr", sr_tile_size=32, sr_tile_overlap=4, sr_max_tiles=10)
    calls = gate.calls
    body = error_of(post_sr(srv.url, encode(noise(1, 4096))), 413, "too_many_tiles")
    assert "smaller image" in body["message"]
    assert gate.calls == calls


def test_deadline_covers_decoding(live_server: Start, media_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    srv, gate = start(live_server, media_repo, gate="sr", request_timeout_s=0.5)
    real = sr_module.decode_image

    def slow(*args: Any) -> Any:
        time.sleep(1.5)
        return real(*args)

    monkeypatch.setattr(sr_module, "decode_image", slow)
    calls = gate.calls
    error_of(post_sr(srv.url, encode(noise(8, 8))), 504, "deadline_exceeded")
    assert gate.calls == calls


def test_a_failed_request_leaves_no_cycle_holding_its_arrays(
    live_server: Start, media_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the cyclic GC off, a timed-out request's tile work must still be freed by reference counting."""
    srv, gate = start(live_server, media_repo, gate="sr", request_timeout_s=0.3, sr_tile_size=16, sr_tile_overlap=2)
    works: list[weakref.ref[Any]] = []
    original = sr_module.SuperResolveWork.__init__

    def tracked(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        works.append(weakref.ref(self))

    monkeypatch.setattr(sr_module.SuperResolveWork, "__init__", tracked)
    gc.collect()
    gc.disable()
    try:
        gate.close()
        error_of(post_sr(srv.url, encode(noise(40, 40))), 504, "deadline_exceeded")
        gate.open()
        response = post_sr(srv.url, encode(noise(40, 40, seed=2)))  # a later, successful request
        assert response.status_code == 200
        time.sleep(0.2)
        assert len(works) >= 2
        wait_for(lambda: all(ref() is None for ref in works), timeout=5, what="request arrays freed")
    finally:
        gc.enable()


# ---------------------------------------------------------------------------- finding 2


def test_super_resolution_calls_shrink_the_arena_and_other_models_keep_theirs() -> None:
    options = run_options("super_resolve", ["CPUExecutionProvider"])
    assert options is not None
    assert options.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
    assert run_options("generate", ["CPUExecutionProvider"]) is None


def test_arena_shrinkage_names_the_gpu_the_session_runs_on() -> None:
    options = run_options("super_resolve", ["CUDAExecutionProvider", "CPUExecutionProvider"], cuda_device_id=1)
    assert options is not None
    assert options.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0;gpu:1"


def test_the_generate_body_cap_follows_the_models_being_served() -> None:
    """A version swap may widen latent_dim; the cap must follow it, not the models seen at start."""
    entries: dict[str, Any] = {}

    def generator(latent_dim: int) -> SimpleNamespace:
        return SimpleNamespace(manifest=SimpleNamespace(task="generate", latent_dim=latent_dim))

    settings = Settings(max_images_per_request=4)
    state = SimpleNamespace(settings=settings, models=SimpleNamespace(entries=entries))
    guard = AdmissionMiddleware(app=None, state=state, task_of_path={"/generate": "generate"})  # type: ignore[arg-type]
    entries["g"] = generator(100)
    narrow = guard.body_limit("/generate")
    entries["g"] = generator(512)
    wide = guard.body_limit("/generate")
    assert narrow == generate_body_limit(4, [100], settings.max_upload_bytes)
    assert wide == generate_body_limit(4, [512], settings.max_upload_bytes) > narrow
    assert guard.body_limit("/super-resolve") == settings.max_upload_bytes


def test_a_large_super_resolution_hands_freed_heap_back(
    live_server: Start, media_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service import memory

    trims: list[int] = []
    monkeypatch.setattr(memory, "TRIM_AFTER_PIXELS", 64 * 64 * 16)
    monkeypatch.setattr(memory, "release_free_memory", lambda: trims.append(1))
    srv, _ = start(live_server, media_repo)
    assert post_sr(srv.url, encode(noise(16, 16))).status_code == 200  # small: no trim
    assert post_sr(srv.url, encode(noise(64, 64))).status_code == 200
    wait_for(lambda: trims == [1], timeout=5, what="one trim after the large request")


# ---------------------------------------------------------------------------- finding 3


def test_a_refused_request_is_refused_before_its_body_is_read(live_server: Start, media_repo: Path) -> None:
    srv, gate = start(live_server, media_repo, gate="tiny", max_concurrent_requests=1)
    with ThreadPoolExecutor(1) as pool:
        gate.close()
        running = pool.submit(httpx.post, srv.url + "/generate", json={}, timeout=30)
        assert gate.entered.wait(10)
        # a body announced but never sent: the 503 comes without waiting for it
        reply = raw_request(srv.port, b"POST /generate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                            b"content-length: 100\r\nconnection: close\r\n\r\n", wait=3)
        assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
        assert b"retry-after: 1" in reply.lower() and b'"overloaded"' in reply
        gate.open()
        assert running.result().status_code == 200


def test_full_queue_refuses_before_parsing_or_sampling(
    live_server: Start, media_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service import latents

    srv, gate = start(live_server, media_repo, gate="tiny", max_batch_size=2, max_queue_size=4,
                      max_images_per_request=4)
    batcher = srv.service.models.entries["tiny"].batcher
    with ThreadPoolExecutor(3) as pool:
        gate.close()
        running = pool.submit(httpx.post, srv.url + "/generate", json={"num_images": 2}, timeout=30)
        assert gate.entered.wait(10)
        queued = pool.submit(httpx.post, srv.url + "/generate", json={"num_images": 3}, timeout=30)
        wait_for(lambda: batcher.queued_rows == 3, what="three rows queued")
        draws: list[int] = []
        real = latents.sample
        monkeypatch.setattr(latents, "sample", lambda *a, **k: (draws.append(1), real(*a, **k))[1])
        # room for one more row: two rows are refused after parsing, but before any latent is drawn
        error_of(httpx.post(srv.url + "/generate", json={"num_images": 2}), 503, "overloaded")
        assert draws == []
        filler = pool.submit(httpx.post, srv.url + "/generate", json={"num_images": 1}, timeout=30)
        wait_for(lambda: batcher.queued_rows == 4, what="queue full")
        # full: refused before the body is parsed (an invalid body gets the 503, not a 422)
        error_of(httpx.post(srv.url + "/generate", content=b"{not json", headers={"content-type": "application/json"}),
                 503, "overloaded")
        gate.open()
        assert {running.result().status_code, queued.result().status_code, filler.result().status_code} == {200}


# ---------------------------------------------------------------------------- finding 4


def test_output_too_large_for_the_format_is_422_before_compute(live_server: Start, media_repo: Path) -> None:
    srv, gate = start(live_server, media_repo, gate="sr")
    calls = gate.calls
    body = error_of(post_sr(srv.url, encode(noise(1, 4096)), format="webp"), 422, "output_too_large")
    assert "16384x4" in body["message"] and "format=" in body["message"]
    assert gate.calls == calls
    assert post_sr(srv.url, encode(noise(1, 4096)), format="png").status_code == 200


# ---------------------------------------------------------------------------- finding 5


def test_generate_body_cap_is_what_its_largest_request_needs(live_server: Start, media_repo: Path) -> None:
    srv, _ = start(live_server, media_repo)
    # the tiny model's cap: 64 KiB + 64 images x 8 values x 32 bytes = 80 KiB, far below GAN_MAX_UPLOAD_BYTES
    big = b'{"num_images": 1}' + b" " * 200_000
    error_of(httpx.post(srv.url + "/generate", content=big, headers={"content-type": "application/json"}),
             413, "payload_too_large")
    largest = {"latents": [[-1.2345678901234567e-05] * 8] * 64}
    assert httpx.post(srv.url + "/generate", json=largest, timeout=30).status_code == 200


def test_large_json_bodies_are_parsed_off_the_event_loop(
    live_server: Start, media_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, _ = start(live_server, media_repo)
    threads: list[str] = []
    real = json_body.parse
    monkeypatch.setattr(json_body, "parse", lambda text: (threads.append(threading.current_thread().name),
                                                          real(text))[1])
    body = b'{"num_images": 1}' + b" " * (json_body.OFFLOAD_BYTES + 10)
    response = httpx.post(srv.url + "/generate", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert threads and threads[0] != srv._thread.name  # a worker thread, not the event loop's


# ---------------------------------------------------------------------------- finding 6


def test_aborted_upload_requests_log_no_unretrieved_exception(
    live_server: Start, media_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    srv, gate = start(live_server, media_repo, gate="stargan", request_timeout_s=0.5)
    caplog.set_level(logging.ERROR)
    gate.close()
    image = encode(noise(8, 8))
    for path in ("/translate?attributes=colour_red&targets=x", "/translate?targets=colour_red&targets=striped"):
        head = (f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: image/png\r\n"
                f"content-length: {len(image)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(head + image)
            if "targets=colour_red&" in path:
                assert gate.entered.wait(10)
    time.sleep(1.0)  # the chunk's deadline passes after the client has gone
    gate.open()
    time.sleep(0.3)
    gc.collect()
    messages = [record.getMessage() for record in caplog.records]
    assert not [m for m in messages if "never retrieved" in m], messages


def test_manifest_that_is_not_utf8_is_the_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = add_generator(tmp_path / "models", "tiny")
    manifest = directory / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"tiny"', b'"tiny\xe9"'))
    assert cli.main(["--model-dir", str(tmp_path / "models")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gan-serve: ") and "Traceback" not in err
    assert f"{manifest}: not UTF-8 text" in err  # the repository loader's message: one line per problem


def test_oversized_chunked_json_body_is_413(live_server: Start, media_repo: Path) -> None:
    srv, _ = start(live_server, media_repo)

    def chunks() -> Iterator[bytes]:
        yield b'{"num_images": 1'
        for _ in range(40):
            yield b" " * 8192

    response = httpx.post(srv.url + "/generate", content=chunks(), headers={"content-type": "application/json"})
    error_of(response, 413, "payload_too_large")


def test_too_many_form_fields_is_413(live_server: Start, media_repo: Path) -> None:
    srv, _ = start(live_server, media_repo)
    image = ("x.png", encode(noise(8, 8)), "image/png")
    targets = {"targets": ["colour_red"] * 65}
    error_of(httpx.post(srv.url + "/translate", data=targets, files={"image": image}), 413, "too_many_images")
    many = {"targets": ["colour_red"] * 500}
    error_of(httpx.post(srv.url + "/translate", data=many, files={"image": image}), 413, "too_many_fields")


def test_a_repeated_single_valued_field_is_422(live_server: Start, media_repo: Path) -> None:
    srv, _ = start(live_server, media_repo)
    image = encode(noise(8, 8))
    body = error_of(post_sr(srv.url + "", image, format=["png", "webp"]), 422, "validation_error")
    assert "format" in body["message"] and "once" in body["message"]
    form = {"format": ["png", "jpeg"]}
    error_of(httpx.post(srv.url + "/super-resolve", data=form, files={"image": ("x.png", image, "image/png")}),
             422, "validation_error")


def test_slow_clients_are_timed_out(live_server: Start, media_repo: Path) -> None:
    srv, _ = start(live_server, media_repo, bounded=True, header_timeout_s=0.5, body_timeout_s=0.5,
                   max_header_bytes=4096)
    began = time.monotonic()
    reply = raw_request(srv.port, b"POST /generate HTTP/1.1\r\nhost: x\r\n")  # the head never ends
    assert reply.startswith(b"HTTP/1.1 408") and b"header_timeout" in reply, reply[:200]
    reply = raw_request(srv.port, b"POST /generate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                        b"content-length: 100\r\n\r\n", b'{"num_images"')  # the body never ends
    assert reply.startswith(b"HTTP/1.1 408") and b"body_timeout" in reply, reply[:200]
    assert time.monotonic() - began < 4.5
    reply = raw_request(srv.port, b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-junk: " + b"a" * 8000)
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
    assert httpx.get(srv.url + "/healthz").status_code == 200  # the server itself is fine


def test_gan_serve_caps_connections_and_bounds_heads() -> None:
    options = cli.uvicorn_options(Settings(max_connections=7, keep_alive_timeout_s=3))
    assert options["limit_concurrency"] == 7 and options["timeout_keep_alive"] == 3
    assert options["http"].__name__ == "BoundedHeadProtocol"


def test_responses_say_nosniff(live_server: Start, media_repo: Path) -> None:
    srv, _ = start(live_server, media_repo)
    for response in (httpx.get(srv.url + "/healthz"), httpx.post(srv.url + "/generate", json={"bad": 1}),
                     httpx.get(srv.url + "/nope")):
        assert response.headers["x-content-type-options"] == "nosniff"


def test_docs_use_packaged_assets_and_can_require_the_key(live_server: Start, media_repo: Path) -> None:
    srv, _ = start(live_server, media_repo)
    for page, asset in (("/docs", "/docs-assets/swagger-ui-bundle.js"), ("/redoc", "/docs-assets/redoc.standalone.js")):
        html = httpx.get(srv.url + page).text
        assert asset in html and "cdn" not in html.lower(), page
        assert httpx.get(srv.url + asset).status_code == 200
    locked, _ = start(live_server, media_repo, api_keys=["k"], docs_require_key=True)
    for path in ("/docs", "/redoc", "/openapi.json", "/docs-assets/swagger-ui.css"):
        error_of(httpx.get(locked.url + path), 401, "unauthorized")
        assert httpx.get(locked.url + path, headers={"x-api-key": "k"}).status_code == 200
    assert httpx.get(locked.url + "/healthz").status_code == 200
    open_docs, _ = start(live_server, media_repo, api_keys=["k"])
    assert httpx.get(open_docs.url + "/docs").status_code == 200


def test_statuses_in_the_docs_are_the_statuses_returned() -> None:
    """Every code the errors table of docs/service.md names is listed with the status the code raises."""
    import re

    root = Path(__file__).resolve().parents[2]
    table = (root / "docs" / "service.md").read_text().split("### Errors", 1)[1].split("## ", 1)[0]
    documented = {code: int(status) for status, codes in re.findall(r"^\| (\d{3}) \| (.+) \|$", table, re.M)
                  for code in re.findall(r"`([a-z_]+)`", codes)}
    raised: dict[str, set[int]] = {}
    pattern = re.compile(
        r'(?:ApiError\(|send_error\(\s*\w+,\s*|error_response\()\s*(\d{3}),\s*"([a-z_]+)"'
        r'|_refuse\((\d{3}), "[^"]*", "([a-z_]+)"'
    )
    for source in (root / "service").glob("*.py"):
        for status, code, refused_status, refused_code in pattern.findall(source.read_text()):
            raised.setdefault(code or refused_code, set()).add(int(status or refused_status))
    for code, statuses in raised.items():
        assert code in documented, f"{code} ({statuses}) is not in docs/service.md's error table"
        assert statuses == {documented[code]}, f"{code}: raised as {statuses}, documented as {documented[code]}"
