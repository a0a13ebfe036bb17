"""JSON request bodies parsed off the event loop when they are large.

Why: `json.loads` holds the event loop (and the GIL) for as long as it runs; a 10 MB body is about a
second, during which `/healthz` and every other request wait. The admission layer already caps a
`/generate` body at what `max_images_per_request` latent vectors need; above `OFFLOAD_BYTES` the parse
runs in a worker thread too, so even a maximum-size body costs the loop only a thread hand-off.
FastAPI parses bodies through `Request.json()`, so a route class that hands handlers this Request
is all it takes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

#: Bodies up to this size are parsed inline: below it a thread hand-off costs more than the parse.
OFFLOAD_BYTES = 64 * 1024


class OffloadedJSONRequest(Request):
    """A Request whose `json()` parses large bodies on a worker thread."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = await asyncio.to_thread(json.loads, body) if len(body) > OFFLOAD_BYTES else json.loads(body)
        return self._json


class OffloadedJSONRoute(APIRoute):
    """An APIRoute whose handlers get an `OffloadedJSONRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await handler(OffloadedJSONRequest(request.scope, request.receive))

        return handle
