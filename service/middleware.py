"""One pure-ASGI middleware for what every request needs: API-key check, metrics, safe headers.

Pure ASGI rather than Starlette's `BaseHTTPMiddleware`, which adds a task and stream copy per
request; this path is on every request the batcher is benchmarked through. Body caps, timeouts and
overload refusals are the next layer in (service.admission), so an unauthenticated request is
refused before anything else looks at it.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics
from service.settings import Settings

#: Paths that need no API key: probes, metrics, API docs, and the demo page with its static files (they
#: hold no data; the page asks for a key and sends it with the API calls it makes).
OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc",
                        "/openapi.json"})
OPEN_PREFIXES = ("/static/",)
#: Endpoint label values besides the inference endpoints (which the app passes in); anything else is
#: `other`, so scanners cannot blow up label cardinality.
ENDPOINTS = frozenset({"/models", "/healthz", "/readyz", "/metrics"})
#: Docs paths, which `GAN_DOCS_REQUIRE_KEY` closes (with their assets under /docs-assets/).
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
DOCS_PREFIX = "/docs-assets/"
#: Every response says its Content-Type is the truth: no browser sniffs an error JSON or image as HTML.
_NOSNIFF = (b"x-content-type-options", b"nosniff")

#: Scope key under which a handler records the model it served (the `model` metric label).
MODEL_SCOPE_KEY = "gan.model"


async def send_error(send: Send, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]]) -> None:
    """Answer with the service's error shape straight from ASGI (no Request, no body read)."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ServiceMiddleware:
    def __init__(
        self, app: ASGIApp, *, settings: Settings, metrics: Metrics, task_paths: Iterable[str]
    ) -> None:
        """`task_paths`: the inference endpoints, labelled by path like ENDPOINTS (service.routes_tasks);
        required, so that no app labels its inference requests `other` by omission."""
        self.app = app
        self.endpoints = ENDPOINTS | frozenset(task_paths)
        self.keys = [key.encode() for key in settings.api_keys]
        self.docs_open = not settings.docs_require_key
        self.metrics = metrics

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        offered: list[bytes] = []
        for name, value in headers:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                offered.append(value[7:].strip())
            elif name == b"x-api-key":
                offered.append(value.strip())
        # compare against every key, so timing does not reveal which prefix matched
        return any([hmac.compare_digest(o, k) for o in offered for k in self.keys])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        path = scope["path"]
        endpoint = path if path in self.endpoints else "other"
        status = 500
        timed = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, timed
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), _NOSNIFF]}
                status = message["status"]
                timed = True
                self.metrics.request_duration.labels(endpoint, scope.get(MODEL_SCOPE_KEY, "")).observe(
                    time.perf_counter() - began
                )
            await send(message)

        try:
            headers = scope["headers"]
            if self.keys and not self._is_open(path) and not self._authorized(headers):
                await send_error(
                    send_wrapper,
                    401,
                    "unauthorized",
                    "missing or invalid API key (send 'Authorization: Bearer <key>' or 'X-API-Key: <key>')",
                    [(b"www-authenticate", b"Bearer")],
                )
                return
            await self.app(scope, receive, send_wrapper)
        finally:
            if not timed:
                self.metrics.request_duration.labels(endpoint, scope.get(MODEL_SCOPE_KEY, "")).observe(
                    time.perf_counter() - began
                )
            self.metrics.requests.labels(endpoint, scope.get(MODEL_SCOPE_KEY, ""), str(status)).inc()

    def _is_open(self, path: str) -> bool:
        if path in DOCS_PATHS or path.startswith(DOCS_PREFIX):
            return self.docs_open
        return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
