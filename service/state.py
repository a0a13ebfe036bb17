"""What the handlers of one app share, and the one way they reach it.

Handlers take the state as a FastAPI dependency (`ServiceStateDep`), and the task pipeline, which
runs every inference request, reads it from its request with the same `state_of` (declaring the
dependency on the hot path would cost FastAPI's dependency solving, tens of microseconds a request).
Nothing closes over a variable of `create_app` or imports the app module: routes, task pipelines and
middleware import this small module, never service.app, so the app can import them all without a cycle.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from service.metrics import Metrics
from service.served_models import ServedModels
from service.settings import Settings
from service.swap import VersionWatcher
from service.workers import WorkerSlot


@dataclass
class ServiceState:
    """Everything the handlers share; kept as `app.state.service` (tests reach it there too)."""

    settings: Settings
    metrics: Metrics
    #: The served models; None until the lifespan has loaded them (or handed in pre-loaded by the CLI).
    models: ServedModels | None
    #: Decoding, response building and encoding run here, never on the event loop.
    codec_pool: ThreadPoolExecutor
    warmup: asyncio.Task[None] | None = field(default=None, repr=False)
    #: Follows each model folder's served version (service/swap.py); its polling task while it runs.
    watcher: VersionWatcher | None = field(default=None, repr=False)
    watching: asyncio.Task[None] | None = field(default=None, repr=False)
    #: This process's place among gan-serve's worker processes (None when it is the only one).
    worker: WorkerSlot | None = None

    def retry_after(self) -> dict[str, str]:
        """The `Retry-After` header of every 503 this service sends."""
        return {"Retry-After": str(self.settings.retry_after_s)}


def state_of(request: Request) -> ServiceState:
    """The ServiceState of the app serving `request` (what the dependency below hands out)."""
    return request.app.state.service  # type: ignore[no-any-return]


async def service_state(request: Request) -> ServiceState:
    """The dependency. Async on purpose: FastAPI runs a plain `def` dependency on a worker thread."""
    return state_of(request)


#: How a handler asks for the state: `state: ServiceStateDep`.
ServiceStateDep = Annotated[ServiceState, Depends(service_state)]
