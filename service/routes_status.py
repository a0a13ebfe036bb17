"""The routes around inference: served models, liveness, readiness, metrics and the demo page."""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import FileResponse, JSONResponse, Response

from service.errors import error_response, error_responses
from service.metrics import CONTENT_TYPE
from service.route_table import RouteTable
from service.schemas import HealthResponse, ModelInfo, ModelsResponse, ReadyResponse
from service.served_models import ModelEntry
from service.state import ServiceStateDep

ROUTES = RouteTable()

#: The browser demo served at `/` (plain HTML/JS/CSS, shipped as package data).
STATIC_DIR = Path(__file__).with_name("static")
#: The page loads nothing from elsewhere and runs no inline script, so a strict policy costs nothing
#: and keeps an injected image name or error message from ever executing.
_PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def model_info(entry: ModelEntry) -> ModelInfo:
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


@ROUTES.get("/models", response_model=ModelsResponse, summary="Served models", responses=error_responses(401))
async def models(state: ServiceStateDep) -> ModelsResponse:
    """Every model's manifest summary, the execution providers in use and its readiness."""
    served = state.models
    entries = sorted(served.entries.values(), key=lambda e: e.name) if served else []
    return ModelsResponse(ready=bool(served and served.ready), models=[model_info(e) for e in entries])


@ROUTES.get("/healthz", response_model=HealthResponse, summary="Liveness")
async def healthz() -> HealthResponse:
    """200 while the process serves HTTP, whether or not models are ready."""
    return HealthResponse()


@ROUTES.get("/readyz", response_model=ReadyResponse, summary="Readiness", responses=error_responses(503))
async def readyz(state: ServiceStateDep) -> Response:
    """200 once every model is loaded and warmed up; 503 with the reason before (or on failure)."""
    served = state.models
    others = state.worker.not_ready() if state.worker is not None else []
    if served is None or not served.ready or others:
        reasons = served.not_ready_reasons() if served else ["models not loaded"]
        return error_response(503, "not_ready", "; ".join(reasons + others) or "no models", state.retry_after())
    return JSONResponse({"status": "ready", "models": {n: e.state for n, e in served.entries.items()}})


@ROUTES.get(
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
async def metrics(state: ServiceStateDep) -> Response:
    """Prometheus text exposition (prefix `gan_`)."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)


@ROUTES.get("/", include_in_schema=False)
async def demo_page() -> FileResponse:
    """The browser demo; it uses only the public endpoints above (see docs/service.md)."""
    return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": _PAGE_CSP})
