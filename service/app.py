"""The FastAPI application: `create_app(settings)` assembles the service from its parts.

Nothing here handles a request: the shared state (service.state), the lifespan (service.lifespan),
the middleware (auth and metrics outermost, then admission, then /generate's fast path), the routes
(service.routes_tasks, one per task, each running its task's pipeline; service.routes_status), the
API docs and the demo page's static files. docs/architecture.md follows a request through them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from service import memory, routes_status, routes_tasks
from service.admission import AdmissionMiddleware
from service.docs_pages import install_docs
from service.errors import install_error_handlers
from service.fast_route import JSONRouteFastPath
from service.generate import GenerateWork
from service.json_body import OffloadedJSONRoute
from service.lifespan import lifespan
from service.metrics import Metrics
from service.middleware import ServiceMiddleware
from service.openapi_auth import document_auth
from service.routes_status import STATIC_DIR
from service.served_models import ServedModels
from service.settings import Settings
from service.state import ServiceState

__version__ = "0.1.0"
__all__ = ["STATIC_DIR", "app_factory", "create_app"]


def create_app(settings: Settings | None = None, *, models: ServedModels | None = None) -> FastAPI:
    """Build the service. Pass `models` to serve models loaded beforehand (the CLI does)."""
    settings = settings or Settings()
    state = ServiceState(
        settings=settings,
        metrics=Metrics(),
        models=models,
        codec_pool=ThreadPoolExecutor(settings.codec_threads, thread_name_prefix="codec"),
    )
    app = FastAPI(
        title="GAN service",
        version=__version__,
        summary="Images from exported GAN generators, batched on ONNX Runtime.",
        description=(
            'Errors always have the shape `{"error": {"code": ..., "message": ...}}`. '
            "When the service runs with API keys, send `Authorization: Bearer <key>` or "
            "`X-API-Key: <key>` (probes, /metrics and the docs stay open)."
        ),
        lifespan=lifespan(state),
        docs_url=None,  # served from packaged assets by install_docs, not from a CDN
        redoc_url=None,
    )
    app.router.route_class = OffloadedJSONRoute  # large JSON bodies are parsed off the event loop
    app.state.service = state
    install_error_handlers(app)
    # Added last = outermost: auth and metrics see every request; admission runs after the key check;
    # innermost, /generate's valid JSON bodies go straight to its handler (service.fast_route).
    app.add_middleware(JSONRouteFastPath, path=GenerateWork.path)
    app.add_middleware(AdmissionMiddleware, state=state, task_of_path=routes_tasks.TASK_OF_PATH)
    app.add_middleware(ServiceMiddleware, settings=settings, metrics=state.metrics,
                       task_paths=routes_tasks.TASK_OF_PATH)
    routes_tasks.ROUTES.add_to(app)
    routes_status.ROUTES.add_to(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    install_docs(app)
    if settings.api_keys:
        document_auth(app)
    return app


def app_factory() -> FastAPI:
    """For `uvicorn --factory service.app:app_factory`: settings from the environment; the
    process's garbage collector set for serving (service.memory.tune_gc)."""
    app = create_app(Settings())
    memory.tune_gc()
    return app
