"""The FastAPI application: `create_app(settings)` wires settings, registry, batchers, metrics.

Start-up: the model registry is loaded in the lifespan (or handed in pre-loaded by the CLI, which
reports load errors cleanly before uvicorn starts); warm-up then runs in the background, so
`/healthz` answers at once while `/readyz` says 503 until every model is warm.

Per request (/generate): validate the body, build the latent batch (numpy, no per-row Python),
queue it on the model's batcher, which builds the whole response body (PNG/JPEG/WebP encode, base64,
JSON) in the codec thread pool once the batch is computed (one hand-off per batch, not per request),
so the event loop only moves bytes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Body, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from service import codecs, latents
from service.admission import AdmissionMiddleware
from service.dispatch import batching_errors_as_http, resolve_model, retry_after
from service.docs_pages import install_docs
from service.errors import ApiError, error_response, error_responses, install_error_handlers
from service.json_body import OffloadedJSONRoute
from service.manifest import Manifest
from service.metrics import CONTENT_TYPE, Metrics
from service.middleware import OPEN_PATHS, ServiceMiddleware
from service.registry import ModelEntry, ModelRegistry
from service.routes_media import router as media_router
from service.schemas import (
    GENERATE_EXAMPLES,
    GenerateRequest,
    GenerateResponse,
    HealthResponse,
    LatentSource,
    ModelInfo,
    ModelsResponse,
    ReadyResponse,
)
from service.settings import Settings
from service.swap import VersionWatcher
from service.workers import WorkerSlot, device_for

log = logging.getLogger("service.app")

__version__ = "0.1.0"

#: The browser demo served at `/` (plain HTML/JS/CSS, shipped as package data).
STATIC_DIR = Path(__file__).with_name("static")
#: The page loads nothing from elsewhere and runs no inline script, so a strict policy costs nothing
#: and keeps an injected image name or error message from ever executing.
_PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass
class ServiceState:
    """Everything the handlers share; reachable as `app.state.service` (tests use it too)."""

    settings: Settings
    metrics: Metrics
    registry: ModelRegistry | None
    codec_pool: ThreadPoolExecutor
    warmup: asyncio.Task[None] | None = field(default=None, repr=False)
    #: Follows each model folder's served version (service/swap.py); its polling task while it runs.
    watcher: VersionWatcher | None = field(default=None, repr=False)
    watching: asyncio.Task[None] | None = field(default=None, repr=False)
    #: This process's place among gan-serve's worker processes (None when it is the only one).
    worker: WorkerSlot | None = None


# ---------------------------------------------------------------------------- helpers


def _endpoint_latent(source: LatentSource, manifest: Manifest) -> np.ndarray:
    dim = manifest.latent_dim
    assert dim is not None and manifest.latent_distribution is not None
    if source.seed is not None:
        return latents.sample(source.seed, 1, dim, manifest.latent_distribution)[0]
    with np.errstate(over="ignore"):
        vector = np.asarray([source.latent], dtype=np.float32)
    return _checked(vector, dim, "interpolate endpoint")[0]


def _checked(array: np.ndarray, dim: int, what: str) -> np.ndarray:
    if array.shape[1] != dim:
        raise ApiError(422, "invalid_latent", f"{what}: latent vectors must have {dim} values, got {array.shape[1]}")
    if not np.isfinite(array).all():
        raise ApiError(422, "invalid_latent", f"{what}: latent values must be finite float32 numbers")
    return array


def _image_count(body: GenerateRequest, limit: int) -> int:
    """Images a request asks for (413 above `limit`), known before any latent is built."""
    if body.latents is not None:
        count = len(body.latents)
    elif body.interpolate is not None:
        count = body.interpolate.steps
    else:
        count = body.num_images
    if count > limit:
        raise ApiError(413, "too_many_images", f"{count} images requested; this service returns at most {limit}")
    return count


def _build_latents(body: GenerateRequest, manifest: Manifest, count: int) -> tuple[np.ndarray, int | None]:
    """The latent batch a request describes, and the seed that reproduces it (None if explicit)."""
    dim = manifest.latent_dim
    assert dim is not None and manifest.latent_distribution is not None
    if body.latents is not None:
        lengths = {len(vector) for vector in body.latents}
        if lengths != {dim}:
            raise ApiError(
                422,
                "invalid_latent",
                f"latents: every vector must have latent_dim={dim} values, got lengths {sorted(lengths)}",
            )
        with np.errstate(over="ignore"):  # out-of-range values become inf, refused just below
            vectors = np.asarray(body.latents, dtype=np.float32)
        return _checked(vectors, dim, "latents"), None
    if body.interpolate is not None:
        walk = body.interpolate
        start = _endpoint_latent(walk.start, manifest)
        end = _endpoint_latent(walk.end, manifest)
        return latents.interpolate(start, end, walk.steps, walk.method), None
    seed = body.seed if body.seed is not None else latents.new_seed()
    return latents.sample(seed, count, dim, manifest.latent_distribution), seed


def _check_output_size(fmt: str, count: int, manifest: Manifest, as_grid: bool) -> None:
    """422 before compute when the images (or their grid) are too large for the format asked for."""
    side = manifest.image_size
    if side is None:
        return
    width, height = codecs.grid_size(count, side, side) if as_grid else (side, side)
    problem = codecs.size_problem(fmt, width, height)
    if problem is not None:
        raise ApiError(422, "output_too_large", problem + (" (or fewer images per grid)" if as_grid else ""))


def _negotiate(accept: str | None, default_format: str) -> str | None:
    """Image format of a grid response if `Accept` prefers an image, else None (JSON)."""
    if not accept:
        return None
    best: tuple[float, str | None] | None = None
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media in ("application/json", "*/*", "application/*"):
            choice: str | None = None
        elif media in codecs.FORMAT_OF_MEDIA_TYPE:
            choice = codecs.FORMAT_OF_MEDIA_TYPE[media]
        elif media == "image/*":
            choice = default_format
        else:
            continue
        if quality > 0 and (best is None or quality > best[0]):
            best = (quality, choice)
    if best is None:
        raise ApiError(
            406,
            "not_acceptable",
            "this endpoint answers application/json, image/png, image/jpeg or image/webp",
        )
    return best[1]


def _render_json(
    model: str,
    images: np.ndarray,
    body: GenerateRequest,
    seed: int | None,
    vectors: np.ndarray,
) -> bytes:
    """The JSON response body, built as bytes: base64 text needs no JSON escaping, so the (large)
    image strings are joined in directly instead of being scanned again by `json.dumps`. `images` are
    the model's uint8 NHWC rows (`ModelRuntime.images`)."""
    encoded = [base64.b64encode(codecs.encode(img, body.format, body.quality)) for img in images]
    head = json.dumps(
        {"model": model, "media_type": codecs.MEDIA_TYPES[body.format], "seed": seed}, separators=(",", ":")
    )
    latents_json = json.dumps(vectors.tolist(), separators=(",", ":")) if body.return_latents else "null"
    return b"".join(
        (head[:-1].encode(), b',"images":["', b'","'.join(encoded), b'"],"latents":', latents_json.encode(), b"}")
    )


def _render_grid(images: np.ndarray, fmt: str, quality: int) -> bytes:
    return codecs.encode(codecs.grid(images), fmt, quality)  # type: ignore[arg-type]


async def _infer(
    state: ServiceState,
    entry: ModelEntry,
    feeds: dict[str, np.ndarray],
    request: Request,
    finish: Callable[[np.ndarray], Any] | None = None,
) -> Any:
    """Queue on the model's batcher (`finish` turns the output rows into the response body on the
    codec pool, once per batch for all its requests); map batching outcomes to HTTP errors."""
    assert entry.batcher is not None
    with batching_errors_as_http(state):
        return await entry.batcher.infer(
            feeds, timeout=state.settings.request_timeout_s, disconnected=request.receive, finish=finish
        )


def _model_info(entry: ModelEntry) -> ModelInfo:
    m = entry.manifest
    return ModelInfo(
        name=entry.name,
        task=m.task,
        architecture=m.architecture,
        state=entry.state,
        ready=entry.ready,
        error=entry.error,
        version=entry.version_label,
        swap_error=entry.swap_error,
        providers=entry.runtime.providers,
        inputs=m.inputs,
        outputs=m.outputs,
        image_size=m.image_size,
        channels=m.channels,
        input_range=m.input_range,
        output_range=m.output_range,
        latent_dim=m.latent_dim,
        latent_distribution=m.latent_distribution,
        scale=m.scale,
        attributes=m.attributes,
        exclusive_groups=m.exclusive_groups,
        precision=m.precision,
        parity_max_abs_error=m.parity_max_abs_error,
        provenance=m.provenance.model_dump(),
    )


# ---------------------------------------------------------------------------- the app


def create_app(settings: Settings | None = None, *, registry: ModelRegistry | None = None) -> FastAPI:
    """Build the service. Pass `registry` to serve models loaded beforehand (the CLI does)."""
    settings = settings or Settings()
    state = ServiceState(
        settings=settings,
        metrics=Metrics(),
        registry=registry,
        codec_pool=ThreadPoolExecutor(settings.codec_threads, thread_name_prefix="codec"),
    )

    async def warm_up(registry: ModelRegistry) -> None:
        await registry.warm_up()
        if state.worker is not None and registry.ready:
            state.worker.mark_ready()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        folder = state.metrics.multiprocess_dir
        if folder is not None and settings.workers > 1:  # one of gan-serve's worker processes
            state.worker = WorkerSlot.claim(Path(folder), settings.workers)
        if state.registry is None:
            device = device_for(state.worker.index, settings.cuda_devices) if state.worker else 0
            state.registry = ModelRegistry.load(settings, cuda_device_id=device)
        state.registry.start(state.metrics, finish_executor=state.codec_pool)
        state.warmup = asyncio.get_running_loop().create_task(warm_up(state.registry), name="warm-up")
        state.watcher = VersionWatcher(state.registry, settings, state.metrics)
        if settings.model_poll_s > 0:
            state.watching = asyncio.get_running_loop().create_task(
                state.watcher.run(after=state.warmup), name="version-watcher"
            )
        try:
            yield
        finally:
            for task in (state.watching, state.warmup):
                if task is not None:
                    task.cancel()
                    with suppress(asyncio.CancelledError):
                        await task
            await state.watcher.stop()
            await state.registry.stop()
            state.codec_pool.shutdown(wait=False, cancel_futures=True)
            if state.worker is not None:
                state.worker.release()
            state.metrics.process_exited()

    app = FastAPI(
        title="GAN service",
        version=__version__,
        summary="Images from exported GAN generators, batched on ONNX Runtime.",
        description=(
            'Errors always have the shape `{"error": {"code": ..., "message": ...}}`. '
            "When the service runs with API keys, send `Authorization: Bearer <key>` or "
            "`X-API-Key: <key>` (probes, /metrics and the docs stay open)."
        ),
        lifespan=lifespan,
        docs_url=None,  # served from packaged assets by install_docs, not from a CDN
        redoc_url=None,
    )
    app.router.route_class = OffloadedJSONRoute  # large JSON bodies are parsed off the event loop
    app.state.service = state
    install_error_handlers(app)
    # Added last = outermost: auth and metrics see every request; admission runs after the key check.
    app.add_middleware(AdmissionMiddleware, state=state)
    app.add_middleware(ServiceMiddleware, settings=settings, metrics=state.metrics)

    @app.post(
        "/generate",
        summary="Generate images",
        response_class=Response,
        responses={
            200: {
                "description": "JSON with base64 images by default; one image grid when `Accept` "
                "asks for image/png (or image/jpeg, image/webp).",
                "model": GenerateResponse,
                "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                "headers": {"X-Seed": {"description": "Seed of a grid response", "schema": {"type": "integer"}}},
            },
            **error_responses(400, 401, 404, 406, 408, 413, 422, 503, 504),
        },
    )
    async def generate(
        request: Request,
        body: GenerateRequest = Body(openapi_examples=GENERATE_EXAMPLES),  # type: ignore[arg-type]
    ) -> Response:
        """Random images (optionally seeded), images of explicit latent vectors, or a latent walk."""
        entry = resolve_model(state, body.model, "generate", request)
        manifest = entry.manifest
        grid_format = _negotiate(request.headers.get("accept"), body.format)
        count = _image_count(body, settings.max_images_per_request)
        as_grid = grid_format is not None
        _check_output_size(grid_format or body.format, count, manifest, as_grid)
        assert entry.batcher is not None
        with batching_errors_as_http(state):
            entry.batcher.check_room(count)  # before any latent is drawn
        vectors, seed = _build_latents(body, manifest, count)
        feeds = {manifest.inputs[0].name: entry.runtime.shape_latents(vectors)}
        if grid_format is None:
            content = await _infer(
                state, entry, feeds, request, lambda out: _render_json(entry.name, out, body, seed, vectors)
            )
            media_type, headers = "application/json", None
        else:
            content = await _infer(
                state, entry, feeds, request, lambda out: _render_grid(out, grid_format, body.quality)
            )
            media_type = codecs.MEDIA_TYPES[grid_format]
            headers = {"X-Image-Count": str(count)}
            if seed is not None:
                headers["X-Seed"] = str(seed)
        state.metrics.images.labels(entry.name).inc(count)
        return Response(content, media_type=media_type, headers=headers)

    app.include_router(media_router)  # POST /super-resolve, POST /translate

    @app.get("/models", response_model=ModelsResponse, summary="Served models", responses=error_responses(401))
    async def models() -> ModelsResponse:
        """Every model's manifest summary, the execution providers in use and its readiness."""
        registry = state.registry
        entries = sorted(registry.entries.values(), key=lambda e: e.name) if registry else []
        return ModelsResponse(ready=bool(registry and registry.ready), models=[_model_info(e) for e in entries])

    @app.get("/healthz", response_model=HealthResponse, summary="Liveness")
    async def healthz() -> HealthResponse:
        """200 while the process serves HTTP, whether or not models are ready."""
        return HealthResponse()

    @app.get("/readyz", response_model=ReadyResponse, summary="Readiness", responses=error_responses(503))
    async def readyz() -> Response:
        """200 once every model is loaded and warmed up; 503 with the reason before (or on failure)."""
        registry = state.registry
        others = state.worker.not_ready() if state.worker is not None else []
        if registry is None or not registry.ready or others:
            reasons = registry.not_ready_reasons() if registry else ["model registry not loaded"]
            return error_response(503, "not_ready", "; ".join(reasons + others) or "no models", retry_after(state))
        return JSONResponse({"status": "ready", "models": {n: e.state for n, e in registry.entries.items()}})

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {
                "content": {
                    CONTENT_TYPE: {
                        "example": 'gan_requests_total{endpoint="/generate",model="dcgan",status="200"} 42.0\n'
                    }
                }
            }
        },
    )
    async def metrics() -> Response:
        """Prometheus text exposition (prefix `gan_`)."""
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def demo_page() -> FileResponse:
        """The browser demo; it uses only the public endpoints above (see docs/service.md)."""
        return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": _PAGE_CSP})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    install_docs(app)

    if settings.api_keys:
        _document_auth(app)
    return app


def _document_auth(app: FastAPI) -> None:
    """Declare the API-key schemes in OpenAPI, so the docs' Authorize button works."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            for path, operations in schema.get("paths", {}).items():
                if path not in OPEN_PATHS:
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}, {"apiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_factory() -> FastAPI:
    """For `uvicorn --factory service.app:app_factory`: settings from the environment."""
    return create_app(Settings())
