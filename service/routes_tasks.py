"""The inference routes, one per task: each declares its OpenAPI contract and hands the request to
its task's pipeline (service.pipeline.run_task); the work lives in the task modules.

Declaring a route with `task_route` is what makes its path an inference endpoint everywhere else:
the app adds `ROUTES`, and admission (concurrency cap, full-queue refusals) and the `endpoint` label
of the metrics read `TASK_OF_PATH`, so a new task needs no list kept by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Body, Request
from fastapi.responses import Response

from service.errors import error_responses
from service.generate import GenerateWork
from service.manifest import Task
from service.media_schemas import IMAGE_RESPONSE_CONTENT, SUPER_RESOLVE_OPENAPI, TRANSLATE_OPENAPI, TranslateResponse
from service.pipeline import TaskWork, run_task
from service.route_table import Handler, RouteTable
from service.schemas import GENERATE_EXAMPLES, GenerateRequest, GenerateResponse
from service.super_resolve import SuperResolveWork
from service.translate import TranslateWork

ROUTES = RouteTable()
#: Every inference endpoint and the model task it serves, filled by `task_route`.
TASK_OF_PATH: dict[str, Task] = {}


def task_route(work: type[TaskWork[Any]], **openapi: Any) -> Callable[[Handler], Handler]:
    """Declare the POST route of `work.path`, an inference endpoint of `work.task`."""
    TASK_OF_PATH[work.path] = work.task
    return ROUTES.post(work.path, response_class=Response, **openapi)


@task_route(
    GenerateWork,
    summary="Generate images",
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
    return await run_task(GenerateWork, request, body)


@task_route(
    SuperResolveWork,
    summary="Super-resolve an image",
    openapi_extra=SUPER_RESOLVE_OPENAPI,
    responses={
        200: {
            "description": "The image upscaled x`scale`, in the requested format. Headers: `X-Scale`, `X-Tiles`.",
            "content": IMAGE_RESPONSE_CONTENT,
        },
        **error_responses(400, 401, 404, 408, 413, 415, 422, 503, 504),
    },
)
async def super_resolve(request: Request) -> Response:
    """Upload a PNG, JPEG or WebP image (multipart field `image`, or the raw body with an image
    Content-Type) and get it back `scale` times larger.

    Images larger than `GAN_SR_TILE_SIZE` are computed in overlapping tiles and stitched seamlessly.
    Grayscale in -> grayscale out; transparency is kept (alpha upscaled bicubically; composited over
    white for JPEG). Example: `curl -F image=@photo.png -F format=webp http://host/super-resolve -o big.webp`.
    """
    return await run_task(SuperResolveWork, request)


@task_route(
    TranslateWork,
    summary="Translate an image to target attributes",
    openapi_extra=TRANSLATE_OPENAPI,
    responses={
        200: {
            "description": "One target set: the image in the requested format (header `X-Attributes`). "
            "Several (`targets`): JSON with one base64 image per target set, in request order.",
            "model": TranslateResponse,
            "content": IMAGE_RESPONSE_CONTENT,
        },
        **error_responses(400, 401, 404, 408, 413, 415, 422, 503, 504),
    },
)
async def translate(request: Request) -> Response:
    """Upload an image and name target attributes (see `attributes` of GET /models); attributes not
    named are 0, and at most one attribute of each exclusive group may be named.

    The image is resized (shorter side to the model's size S, bicubic) and centre-cropped to S x S,
    as the training data was. Example:
    `curl -F image=@face.jpg -F targets=hair_blond -F targets=hair_black,male http://host/translate`.
    """
    return await run_task(TranslateWork, request)
