"""JSON request bodies parsed fast, and off the event loop when they are large.

Why: a parse holds the event loop (and the GIL) for as long as it runs; with the standard library a
10 MB body is about a second, during which `/healthz` and every other request wait. The admission
layer caps a `/generate` body at what `max_images_per_request` latent vectors need; bodies are parsed
with pydantic-core's JSON parser (Rust, ~5x faster than `json.loads` on latent vectors: 1.8 vs 9 ms
for 266 KB here), and above `OFFLOAD_BYTES` on a worker thread. A worker thread alone would not
help much: the parse holds the GIL wherever it runs, so its *length* is what the loop waits for
(measured with bench/bench_healthz.py). Malformed JSON is parsed again with `json.loads`, so FastAPI
reports it as before (422 with the position). FastAPI parses bodies through `Request.json()`, so a
route class that hands handlers this Request is all it takes.

The same route class gives a route whose only parameters are the request and one JSON body model
(`/generate`) a fast path: a body sent as `application/json` that parses and validates is checked
with the route's own validator (the one FastAPI uses) and handed to the handler straight away,
skipping FastAPI's generic request handling (content-type parsing with the email package,
dependency solving, its telemetry bookkeeping): about 60 us of a /generate request's CPU. Anything
else - another content type, an empty, malformed or invalid body, or a request FastAPI's own
telemetry follows (OpenTelemetry configured) - goes through FastAPI's handler exactly as before,
so errors and their bodies are FastAPI's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic_core import from_json
from starlette.types import Scope

try:  # the scope key of Starlette's body limit; an older Starlette has none, so no request carries it
    from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
except ImportError:  # pragma: no cover - depends on the installed Starlette
    MAX_BODY_SIZE_SCOPE_KEY = "starlette.max_body_size"

#: Bodies up to this size are parsed inline: below it a thread hand-off costs more than the parse.
OFFLOAD_BYTES = 64 * 1024


def parse(body: bytes) -> Any:
    """`body` as Python objects; malformed JSON raises `json.JSONDecodeError`, as `json.loads` would."""
    try:
        return from_json(body)
    except ValueError:
        return json.loads(body)  # raises the JSONDecodeError FastAPI turns into a 422


class OffloadedJSONRequest(Request):
    """A Request whose `json()` parses large bodies on a worker thread."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = await asyncio.to_thread(parse, body) if len(body) > OFFLOAD_BYTES else parse(body)
        return self._json


def _request_and_body_only(dependant: Dependant, embed_body_fields: bool | None) -> bool:
    """Whether a route's handler takes exactly the Request and one (not embedded) body parameter.

    The fast path reads FastAPI's route internals; with a FastAPI whose internals differ from those it
    was written against (fastapi is not pinned), the answer is False and the route takes FastAPI's
    own handler, so the worst case is the old speed, never a broken route."""
    try:
        return embed_body_fields is False and _plain_body_route(dependant)
    except AttributeError:
        return False


def _plain_body_route(dependant: Dependant) -> bool:
    return (
        dependant.request_param_name is not None
        and len(dependant.body_params) == 1
        and not (dependant.path_params or dependant.query_params or dependant.header_params
                 or dependant.cookie_params or dependant.dependencies)
        and dependant.websocket_param_name is None
        and dependant.http_connection_param_name is None
        and dependant.response_param_name is None
        and dependant.background_tasks_param_name is None
        and dependant.security_scopes_param_name is None
    )


def content_type(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The raw Content-Type header of an ASGI scope's headers (None when absent)."""
    for name, value in headers:
        if name == b"content-type":
            return value
    return None


def takes_fast_path(scope: Scope) -> bool:
    """Whether a request may skip FastAPI's handler: sent as `application/json`, not followed by FastAPI's
    telemetry and under no Starlette body limit (both live in FastAPI's handler, which must then run)."""
    return (scope.get("fastapi.telemetry") is None and MAX_BODY_SIZE_SCOPE_KEY not in scope
            and content_type(scope["headers"]) == b"application/json")


def validate(field: Any, data: Any) -> tuple[bool, Any]:
    """(True, the body model) when FastAPI's own validation of the body field accepts `data`; (False,
    None) when it does not, or when this FastAPI's `ModelField.validate` differs (a TypeError), so that
    FastAPI's handler answers."""
    try:
        value, errors = field.validate(data, {}, loc=("body",))
    except TypeError:
        return False, None
    return (False, None) if errors else (True, value)


def plain_json_body(route: APIRoute) -> tuple[Callable[..., Coroutine[Any, Any, Any]], str, Any] | None:
    """For a route whose async handler takes only the request and one JSON body model: the handler,
    the name of its request parameter and FastAPI's field of the body (the fast paths call the
    handler with both, the body validated by that field). None for any other route."""
    dependant = route.dependant
    endpoint = dependant.call
    embed = getattr(route, "_embed_body_fields", None)
    if not (_request_and_body_only(dependant, embed) and asyncio.iscoroutinefunction(endpoint)):
        return None
    assert dependant.request_param_name is not None and endpoint is not None
    return endpoint, dependant.request_param_name, dependant.body_params[0]


class OffloadedJSONRoute(APIRoute):
    """An APIRoute whose handlers get an `OffloadedJSONRequest` (and a fast path, see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        plain = plain_json_body(self)
        if plain is None:

            async def handle(request: Request) -> Response:
                return await handler(OffloadedJSONRequest(request.scope, request.receive))

            return handle

        endpoint, request_name, field = plain
        body_name = field.name

        async def handle_fast(request: Request) -> Response:
            scope = request.scope
            request = OffloadedJSONRequest(scope, request.receive)
            if takes_fast_path(scope):
                # Any failure falls through to FastAPI's handler, which meets it again and answers as
                # it always has: the body is kept by the request once read, a client gone (or the
                # admission guard's answer) reads as a disconnect again, malformed JSON parses again.
                try:
                    data = await request.json() if await request.body() else None
                except Exception:
                    data = None
                if data is not None:
                    valid, value = validate(field, data)
                    if valid:
                        response = await endpoint(**{request_name: request, body_name: value})
                        if isinstance(response, Response):
                            return response
                        raise TypeError(f"{self.path}: the handler returned {type(response).__name__}, not a Response")
            return await handler(request)

        return handle_fast
