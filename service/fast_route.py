"""A plain-ASGI path from the middleware straight to one JSON route's handler (`POST /generate`).

Why: between our admission middleware and the /generate handler, Starlette and FastAPI add five
layers that do nothing for a valid JSON body (the exception middleware, FastAPI's exit-stack
middleware, the router's scan of every route, the route's request/response wrapper with its two
exit stacks, Starlette's body stream): about 60-70 us of one event loop's CPU per request, measured
with py-spy. This middleware, the innermost of the app's own (inside auth, metrics and admission, so
every check before the body is unchanged), reads the body of `POST <path>` sent as
`application/json`, parses and validates it with the route's own FastAPI validator
(service.json_body), and awaits the route's handler with the request and the validated model, as
`json_body.OffloadedJSONRoute` does one layer further in.

Everything else takes the full stack, with the messages already received replayed to it, so the
answer is FastAPI's own: another method, path, content type or root path, an empty, malformed or
invalid body (FastAPI's 422 and its details), a client that leaves while the body arrives, a request
FastAPI's telemetry follows or a Starlette body limit watches, and any app whose route for the path
is not a plain JSON-body route (checked once per route table, so a FastAPI whose internals differ
gets the old speed, never a different answer). Exceptions from the handler go through Starlette's
own `ExceptionMiddleware` with the app's handlers, so error bodies and headers are those of the
full stack; what no handler takes propagates to `ServerErrorMiddleware` as before. `served` and
`replayed` count the two ways, so a test can tell that the fast path is really taken.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import json_body

Endpoint = Callable[..., Coroutine[Any, Any, Any]]


@dataclass(frozen=True)
class _Target:
    """The route the full stack would run for `POST <path>`, resolved from one route table."""

    route: APIRoute
    endpoint: Endpoint
    request_name: str
    body_field: Any
    #: Starlette's exception middleware with the app's handlers, wrapping the handler call.
    handled: ASGIApp


@dataclass(frozen=True)
class _Read:
    """A body that takes the fast path: its bytes, the parsed JSON and the validated model."""

    body: bytes
    data: Any
    value: Any


#: Scope key that carries a request's target and body from `__call__` to `_call` (through Starlette's
#: exception middleware, which passes only the scope on); removed again before the handler runs.
_READ_KEY = "gan.fast_path"


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """`receive` as if none of `messages` had been taken from it yet."""
    pending = deque(messages)

    async def replay() -> Message:
        return pending.popleft() if pending else await receive()

    return replay


class JSONRouteFastPath:
    """Pure-ASGI middleware: `POST <path>` with a valid `application/json` body goes straight to the
    route's handler (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, path: str) -> None:
        self.app = app
        self.path = path
        #: Requests answered here, and requests handed to the full stack after their body was read.
        self.served = 0
        self.replayed = 0
        self._routes: tuple[Any, ...] | None = None  # the route table `_target` was resolved from
        self._target: _Target | None = None

    def _resolve(self, app: FastAPI) -> _Target | None:
        """`_find`'s answer, again only when the app's routes changed (a copy of the list of ~15
        routes compares by identity in well under a microsecond; the router's own scan is regexes)."""
        routes = tuple(app.router.routes)
        if routes != self._routes:
            self._target = self._find(app)
            self._routes = routes
        return self._target

    def _find(self, app: FastAPI) -> _Target | None:
        """The first route matching `POST <path>` in full (the router's choice), when it is a plain
        JSON-body route of service.json_body with no body limit of its own; else None."""
        probe = {"type": "http", "method": "POST", "path": self.path, "root_path": ""}
        for route in app.router.routes:
            match, _ = route.matches(probe)
            if match == Match.FULL:
                break
        else:
            return None
        if not isinstance(route, json_body.OffloadedJSONRoute) or getattr(route, "max_body_size", None) is not None:
            return None
        plain = json_body.plain_json_body(route)
        if plain is None:
            return None
        endpoint, request_name, field = plain
        handlers = {key: value for key, value in app.exception_handlers.items() if key not in (500, Exception)}
        return _Target(route, endpoint, request_name, field, handled=ExceptionMiddleware(self._call, handlers))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST"
                or scope.get("root_path") or not json_body.takes_fast_path(scope)):
            await self.app(scope, receive, send)
            return
        app = scope.get("app")
        target = self._resolve(app) if isinstance(app, FastAPI) else None
        if target is None:
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        read = await self._read(target, receive, messages)
        if read is None:  # the full stack meets the same body, or disconnect, and answers as it always has
            self.replayed += 1
            await self.app(scope, _replaying(messages, receive), send)
            return
        self.served += 1
        messages.clear()  # the chunks, joined into read.body, are not kept through inference
        # what the router would have recorded in the scope on the way to the route
        scope.setdefault("router", app.router)
        scope["endpoint"] = target.route.endpoint
        scope["path_params"] = {}
        scope["route"] = target.route
        scope[_READ_KEY] = (target, read)
        await target.handled(scope, receive, send)

    async def _read(self, target: _Target, receive: Receive, messages: list[Message]) -> _Read | None:
        """The body, parsed and validated, or None when the full stack must answer (see the module docstring)."""
        chunks: list[bytes] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if not body:
            return None
        try:
            data = await asyncio.to_thread(json_body.parse, body) if len(body) > json_body.OFFLOAD_BYTES \
                else json_body.parse(body)
        except Exception:
            return None
        if data is None:
            return None
        valid, value = json_body.validate(target.body_field, data)
        return _Read(body, data, value) if valid else None

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Inside Starlette's exception middleware: the handler, then its response."""
        target, read = scope.pop(_READ_KEY)
        request = json_body.OffloadedJSONRequest(scope, receive)
        request._body, request._json = read.body, read.data  # kept by the request, as once read by Starlette
        response = await target.endpoint(**{target.request_name: request, target.body_field.name: read.value})
        if not isinstance(response, Response):
            raise TypeError(f"{self.path}: the handler returned {type(response).__name__}, not a Response")
        await response(scope, receive, send)
