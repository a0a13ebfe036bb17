"""service.fast_route: `POST /generate` with a JSON body skips Starlette's routing, and nothing shows it.

Two servers on one repository: the app as built (with the fast path) and the same app with the fast
path taken out of its middleware (the full Starlette/FastAPI stack, the reference). Every request
must get the same status, headers and bytes from both, and move the same metrics; and the requests
that should take the fast path must really take it (its counters), so it cannot quietly regress to
the fallback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.fast_route import JSONRouteFastPath
from service.settings import Settings
from tests.service.service_testkit import LATENT_DIM, LiveServer, add_generator

KEY = "fast-path-key"
JSON = {"content-type": "application/json"}
_NAN = "[" + ",".join(["NaN"] * LATENT_DIM) + "]"

#: (body, extra request headers, where it must go: "fast", "replay" (body read, then the full stack),
#: "refused" (answered before the body, by auth or admission), or None (either way, as long as the
#: answer is the same)).
CASES: list[tuple[bytes, dict[str, str], str | None]] = [
    (b'{"num_images": 1, "seed": 5}', {}, "fast"),
    (b'{"num_images": 3, "seed": 7, "return_latents": true}', {}, "fast"),
    (b'{"seed": 9, "format": "webp", "quality": 70}', {}, "fast"),
    (b'{"seed": 9, "format": "jpeg"}', {}, "fast"),
    (b'{"model": "tiny4d", "seed": 2}', {}, "fast"),
    (b'{"latents": [' + b",".join([b"[" + b",".join([b"0.25"] * LATENT_DIM) + b"]"] * 2) + b"]}", {}, "fast"),
    (b'{"interpolate": {"from": {"seed": 1}, "to": {"seed": 2}, "steps": 4, "method": "slerp"}}', {}, "fast"),
    (b'{"num_images": 4, "seed": 3}', {"accept": "image/png"}, "fast"),
    (b'{"num_images": 2, "seed": 3, "format": "webp"}', {"accept": "image/*"}, "fast"),
    (b'{"num_images": 1, "seed": 4}' + b" " * 70_000, {}, "fast"),  # parsed off the loop
    (b'{"model": "nope"}', {}, "fast"),  # 404 from the handler
    (b'{"num_images": 65}', {}, "fast"),  # 413 too_many_images
    (b'{"num_images": 1, "seed": 1}', {"accept": "text/html"}, "fast"),  # 406
    (b'{"latents": [[0.0]]}', {}, "fast"),  # 422 invalid_latent
    (b'{"latents": [' + b",".join([b"1e39"] * LATENT_DIM).join([b"[", b"]"]) + b"]}", {}, "fast"),
    (f'{{"latents": [{_NAN}]}}'.encode(), {}, None),
    (b'{"num_images": 0}', {}, "replay"),  # FastAPI's 422 and its details
    (b'{"seed": 1, "colour": "blue"}', {}, "replay"),
    (b'{"latents": [[0.0]], "seed": 3}', {}, "replay"),
    (b"{not json", {}, "replay"),
    (b"null", {}, "replay"),
    (b"[]", {}, "replay"),
    (b"", {}, "replay"),
    (b'{"num_images": 1, "seed": 5}', {"content-type": "application/json; charset=utf-8"}, "refused"),
    (b'{"num_images": 1, "seed": 5}', {"content-type": "text/plain"}, "refused"),
    (b'{"latents": [' + b"0.0," * 300_000 + b"0.0]}", {}, "refused"),  # admission's 413, before the body
]


def without_fast_path(settings: Settings) -> Any:
    """The app with the full Starlette/FastAPI stack for /generate (the fast path's reference)."""
    app = create_app(settings)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not JSONRouteFastPath]
    return app


def fast_path_of(app: Any) -> JSONRouteFastPath:
    """The app's fast-path middleware (the app must have served a request, which builds the stack)."""
    layer = app.middleware_stack
    while not isinstance(layer, JSONRouteFastPath):
        layer = layer.app
    return layer


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fast") / "models"
    add_generator(root, "tiny")
    add_generator(root, "tiny4d", latent_rank=4, seed=1)
    return root


@pytest.fixture(scope="module", params=[False, True], ids=["open", "api-keys"])
def servers(request: pytest.FixtureRequest, repo: Path) -> Iterator[tuple[LiveServer, LiveServer, dict[str, str]]]:
    """(with the fast path, reference, headers every request sends)."""
    keys = [KEY] if request.param else []
    settings = Settings(model_dir=repo, api_keys=keys)
    with LiveServer(create_app(settings)) as fast, LiveServer(without_fast_path(settings)) as reference:
        fast.wait_ready()
        reference.wait_ready()
        yield fast, reference, ({"x-api-key": KEY} if keys else {})


def post_both(servers: tuple[LiveServer, LiveServer, dict[str, str]], content: bytes,
              headers: dict[str, str]) -> tuple[httpx.Response, httpx.Response]:
    fast, reference, auth = servers
    sent = {**JSON, **auth, **headers}
    return (httpx.post(fast.url + "/generate", content=content, headers=sent, timeout=30),
            httpx.post(reference.url + "/generate", content=content, headers=sent, timeout=30))


def same_answer(one: httpx.Response, other: httpx.Response) -> None:
    assert one.status_code == other.status_code, (one.text, other.text)
    assert [h for h in one.headers.multi_items() if h[0] != "date"] == \
        [h for h in other.headers.multi_items() if h[0] != "date"]
    assert one.content == other.content


@pytest.mark.parametrize(("content", "headers", "route"), CASES, ids=range(len(CASES)))
def test_fast_path_answers_byte_for_byte_as_the_full_stack(
    servers: tuple[LiveServer, LiveServer, dict[str, str]], content: bytes, headers: dict[str, str],
    route: str | None,
) -> None:
    fast_app = servers[0].app
    httpx.get(servers[0].url + "/healthz")  # builds the middleware stack
    path = fast_path_of(fast_app)
    served, replayed = path.served, path.replayed
    fast, reference = post_both(servers, content, headers)
    same_answer(fast, reference)
    went = {(1, 0): "fast", (0, 1): "replay", (0, 0): "refused"}[(path.served - served, path.replayed - replayed)]
    if route is not None:
        assert went == route, f"expected the {route} path, took the {went} path ({fast.status_code})"


def test_without_a_key_both_refuse_alike(servers: tuple[LiveServer, LiveServer, dict[str, str]]) -> None:
    fast, reference, auth = servers
    answers = [httpx.post(s.url + "/generate", json={"seed": 1}, headers={"x-api-key": "wrong"})
               for s in (fast, reference)]
    same_answer(*answers)
    assert answers[0].status_code == (401 if auth else 200)


def _counters(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every counter and histogram count of a /metrics page (durations themselves differ run to run)."""
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith(("_total", "_count")) and family.type in ("counter", "histogram"):
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def test_the_same_requests_move_the_same_metrics(servers: tuple[LiveServer, LiveServer, dict[str, str]]) -> None:
    fast, reference, auth = servers

    def delta(server: LiveServer) -> dict[Any, float]:
        before = _counters(httpx.get(server.url + "/metrics", headers=auth).text)
        for content, headers, _ in CASES:
            httpx.post(server.url + "/generate", content=content, headers={**JSON, **auth, **headers}, timeout=30)
        after = _counters(httpx.get(server.url + "/metrics", headers=auth).text)
        return {key: value - before.get(key, 0.0) for key, value in after.items() if value != before.get(key, 0.0)}

    moved = delta(fast)
    assert moved == delta(reference)
    assert moved[("gan_requests_total", (("endpoint", "/generate"), ("model", "tiny"), ("status", "200")))] >= 8


def test_the_fast_path_is_not_taken_where_the_route_is_not_a_plain_json_route(repo: Path) -> None:
    """Once /generate's route is no longer the plain JSON-body route, every request takes the full
    stack (as with a FastAPI whose internals the fast path does not know); a route table changed
    after the first request is looked at again."""
    app = create_app(Settings(model_dir=repo))
    with LiveServer(app) as server:
        server.wait_ready()
        assert httpx.post(server.url + "/generate", json={"seed": 1}).status_code == 200
        path = fast_path_of(app)
        assert (path.served, path.replayed) == (1, 0)
        (route,) = [r for r in app.router.routes if getattr(r, "path", None) == "/generate"]
        app.router.routes.remove(route)

        async def other() -> dict[str, str]:
            return {"hello": "world"}

        app.add_api_route("/generate", other, methods=["POST"])
        answer = httpx.post(server.url + "/generate", json={"seed": 1})
        assert answer.json() == {"hello": "world"}
        assert (path.served, path.replayed) == (1, 0)
