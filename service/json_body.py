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
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic_core import from_json

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


class OffloadedJSONRoute(APIRoute):
    """An APIRoute whose handlers get an `OffloadedJSONRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await handler(OffloadedJSONRequest(request.scope, request.receive))

        return handle
