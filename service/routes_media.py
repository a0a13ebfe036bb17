"""The upload endpoints, POST /super-resolve and POST /translate, as one router.

Per request: read the upload and its fields (service.uploads), pick the model, decode on the codec
pool (the header is checked before any pixel is decoded), queue the rows on the model's batcher,
encode on the codec pool. Every tile of a super-resolution request is one batcher row, queued in
chunks of at most `max_batch_size` rows (a few chunks in flight at once), so tiles of concurrent
requests fill the same ONNX Runtime calls, one large image cannot hold the whole queue, and an
image with more tiles than the queue holds is still served. All the target rows of a translation
are one batcher call, so they compute together.

The handlers read `request.app.state.service` (the app's ServiceState) instead of importing
service.app, so that app.py can include this router without an import cycle.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

from service import codecs, memory, tiling
from service import translate as tr
from service.batching import ClientDisconnected, DeadlineExceeded
from service.dispatch import batching_errors_as_http, resolve_model
from service.errors import ApiError, error_responses
from service.manifest import Manifest
from service.media_schemas import (
    IMAGE_RESPONSE_CONTENT,
    SUPER_RESOLVE_OPENAPI,
    TRANSLATE_OPENAPI,
    SuperResolveOptions,
    TranslateOptions,
    TranslateResponse,
    parse_options,
)
from service.registry import ModelEntry
from service.settings import Settings
from service.super_resolve import SuperResolveWork
from service.uploads import decode_image, probe, read_upload

if TYPE_CHECKING:
    from service.app import ServiceState

router = APIRouter()

#: Chunks of one request queued at once beyond the model's inference streams (keeps the pipeline full).
_EXTRA_CHUNKS_IN_FLIGHT = 1


def _state(request: Request) -> ServiceState:
    return request.app.state.service  # type: ignore[no-any-return]


async def _until_disconnect(receive: Callable[[], Awaitable[Mapping[str, Any]]]) -> None:
    """Return when the client disconnects (after the body is read, ASGI receive blocks until then)."""
    for _ in range(8):
        if (await receive()).get("type") == "http.disconnect":
            return
    await asyncio.Event().wait()  # a server that answers otherwise: stop watching, never return


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's outcome as seen: a request that stopped waiting for it (client gone, deadline)
    must not leave an "exception was never retrieved" traceback in the log."""
    if not future.cancelled():
        future.exception()


def _request_ended(*_: object) -> NoReturn:
    """What `infer_rows` leaves in place of a finished request's prepare/finish functions."""
    raise ClientDisconnected("the request has already ended")


async def within(deadline: float, state: ServiceState, work: Awaitable[Any]) -> Any:
    """Await `work` (e.g. decoding on the codec pool) until the request's deadline, then 504."""
    try:
        async with asyncio.timeout_at(deadline):
            return await work
    except TimeoutError:
        timeout = state.settings.request_timeout_s
        raise ApiError(504, "deadline_exceeded", f"no result within the request timeout of {timeout:g} s") from None


async def infer_rows(
    state: ServiceState,
    entry: ModelEntry,
    request: Request,
    count: int,
    prepare: Callable[[int, int], dict[str, np.ndarray]],
    finish: Callable[[int, np.ndarray], Any],
    chunk: int | None = None,
    deadline: float | None = None,
) -> list[Any]:
    """Queue rows [0, count) on the model's batcher in chunks and return each chunk's `finish` value.

    `prepare(first, stop)` builds a chunk's feeds and `finish(first, out)` consumes its output rows,
    both on the codec pool. One deadline (`deadline`, event-loop time, by default GAN_REQUEST_TIMEOUT_S
    from now) covers the whole request; a client disconnect cancels every chunk still queued.
    Batching outcomes become the usual HTTP errors.
    """
    batcher = entry.batcher
    assert batcher is not None
    loop = asyncio.get_running_loop()
    if deadline is None:
        deadline = loop.time() + state.settings.request_timeout_s
    size = chunk or max(1, min(batcher.max_batch_size, batcher.max_queue_rows))
    window = asyncio.Semaphore(batcher.streams + _EXTRA_CHUNKS_IN_FLIGHT)

    async def one(first: int) -> Any:
        stop = min(first + size, count)
        async with window:
            feeds = await loop.run_in_executor(state.codec_pool, prepare, first, stop)
            left = deadline - loop.time()
            if left <= 0:
                raise DeadlineExceeded("request deadline passed")
            return await batcher.infer(feeds, timeout=left, finish=lambda out: finish(first, out))

    tasks = [loop.create_task(one(first)) for first in range(0, count, size)]
    work = asyncio.gather(*tasks)
    work.add_done_callback(_retrieve)
    watcher = loop.create_task(_until_disconnect(request.receive))
    try:
        with batching_errors_as_http(state):
            await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                state.metrics.rejections.labels(entry.name, "client_disconnected").inc()
                raise ClientDisconnected("client disconnected")
            return work.result()
    except RuntimeError as exc:  # a model whose output does not match its manifest (see SuperResolveWork.place)
        raise ApiError(500, "inference_failed", f"model {entry.name!r}: {exc}") from None
    finally:
        watcher.cancel()
        for task in tasks:
            task.cancel()
        # The error on its way out holds this frame in its traceback; without these the frame would
        # hold the chunks' tasks and their errors (and those this frame): a cycle keeping the arrays.
        # `prepare` and `finish` are cells shared with `one` and the batcher jobs' finish lambdas, whose
        # frames a chunk's error also holds: rebinding them lets go of the request's arrays however
        # long that error lives (a job still finishing for this request gets `_request_ended`).
        del work, tasks, watcher
        prepare = finish = _request_ended


# ---------------------------------------------------------------------------- /super-resolve


def _check_cost(settings: Settings, width: int, height: int, scale: int, fmt: str) -> None:
    """From the header alone: 413 over `GAN_SR_MAX_TILES`, 422 when the result cannot be `fmt`."""
    tiles = tiling.count(height, width, settings.sr_tile_size, settings.sr_tile_overlap)
    if tiles > settings.sr_max_tiles:
        raise ApiError(
            413,
            "too_many_tiles",
            f"a {width}x{height} image is {tiles} tiles of up to {settings.sr_tile_size}x{settings.sr_tile_size} "
            f"pixels; this service computes at most {settings.sr_max_tiles} per request: send a smaller image",
        )
    problem = codecs.size_problem(fmt, width * scale, height * scale)
    if problem is not None:
        raise ApiError(422, "output_too_large", problem)



@router.post(
    "/super-resolve",
    summary="Super-resolve an image",
    response_class=Response,
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
    state = _state(request)
    settings = state.settings
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.request_timeout_s  # covers reading, decoding and computing
    upload = await read_upload(request, settings.max_upload_bytes)
    options: SuperResolveOptions = parse_options(SuperResolveOptions, upload.fields)
    entry = resolve_model(state, options.model, "super_resolve", request)
    manifest = entry.manifest
    assert manifest.scale is not None and entry.batcher is not None
    name = manifest.inputs[0].name
    width, height = probe(upload.data, settings.max_input_pixels)
    _check_cost(settings, width, height, manifest.scale, options.format)
    with batching_errors_as_http(state):
        entry.batcher.check_room(1)  # a full queue refuses before anything is decoded

    def prepare_work() -> SuperResolveWork:
        return SuperResolveWork(
            decode_image(upload.data, settings.max_input_pixels),
            scale=manifest.scale,  # type: ignore[arg-type]
            tile=settings.sr_tile_size,
            overlap=settings.sr_tile_overlap,
            input_range=manifest.input_range or (0.0, 1.0),
        )

    large = width * height * manifest.scale**2 >= memory.TRIM_AFTER_PIXELS
    try:
        work = await within(deadline, state, loop.run_in_executor(state.codec_pool, prepare_work))
        await infer_rows(
            state,
            entry,
            request,
            work.tiles.count,
            lambda first, stop: {name: work.chunk(first, stop)},
            work.place,
            deadline=deadline,
        )
        content = await loop.run_in_executor(state.codec_pool, work.encode, options.format, options.quality)
    finally:
        if large:  # after a large request, succeeded or not, hand the freed heap back (service.memory)
            memory.release_soon(state.codec_pool)
    state.metrics.images.labels(entry.name).inc()
    state.metrics.output_pixels.labels(entry.name).inc(work.output_pixels)
    return Response(
        content,
        media_type=codecs.MEDIA_TYPES[options.format],
        headers={"X-Scale": str(manifest.scale), "X-Tiles": str(work.tiles.count)},
    )


# ---------------------------------------------------------------------------- /translate


def _target_sets(options: TranslateOptions) -> list[list[str]]:
    if options.attributes is not None and options.targets is not None:
        raise ApiError(422, "invalid_attributes", "give either `attributes` (one target) or `targets`, not both")
    if options.attributes is not None:
        return [tr.parse_attribute_set(options.attributes)]
    if options.targets:
        return [tr.parse_attribute_set(text) for text in options.targets]
    raise ApiError(
        422,
        "missing_attributes",
        "name the target attributes: `attributes=a,b` (one image) or repeated `targets=...` (one image each)",
    )


def _render_translations(
    model: str, images: np.ndarray, manifest: Manifest, targets: list[list[str]], fmt: str, quality: int
) -> bytes:
    """One image: its bytes. Several: the JSON body (base64 joined in directly, as /generate does).
    `images` are the model's uint8 NHWC rows (`ModelRuntime.images`)."""
    if len(targets) == 1:
        return codecs.encode(images[0], fmt, quality)  # type: ignore[arg-type]
    encoded = [base64.b64encode(codecs.encode(img, fmt, quality)) for img in images]  # type: ignore[arg-type]
    head = json.dumps({"model": model, "media_type": codecs.MEDIA_TYPES[fmt]}, separators=(",", ":"))
    tail = json.dumps(targets, separators=(",", ":")).encode()
    return b"".join((head[:-1].encode(), b',"images":["', b'","'.join(encoded), b'"],"targets":', tail, b"}"))


@router.post(
    "/translate",
    summary="Translate an image to target attributes",
    response_class=Response,
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
    state = _state(request)
    settings = state.settings
    # room for every target set and the few option fields, so 65 targets is a 413 too_many_images below
    upload = await read_upload(request, settings.max_upload_bytes, max_fields=settings.max_images_per_request + 8)
    options: TranslateOptions = parse_options(TranslateOptions, upload.fields)
    entry = resolve_model(state, options.model, "translate", request)
    manifest = entry.manifest
    targets = _target_sets(options)
    if len(targets) > settings.max_images_per_request:
        raise ApiError(
            413,
            "too_many_images",
            f"{len(targets)} target sets given; this service returns at most {settings.max_images_per_request}",
        )
    labels = tr.build_labels(targets, manifest)
    image_name, label_name = tr.input_names(manifest)
    size = tr.image_size(manifest, image_name)
    problem = codecs.size_problem(options.format, size, size)
    if problem is not None:
        raise ApiError(422, "output_too_large", problem)
    assert entry.batcher is not None
    with batching_errors_as_http(state):
        entry.batcher.check_room(len(targets))  # before the upload is decoded

    def prepare(first: int, stop: int) -> dict[str, np.ndarray]:
        row = tr.model_input(decode_image(upload.data, settings.max_input_pixels), manifest, size)
        return {image_name: np.repeat(row, stop - first, axis=0), label_name: labels[first:stop]}

    def finish(_: int, out: np.ndarray) -> bytes:
        return _render_translations(entry.name, out, manifest, targets, options.format, options.quality)

    (content,) = await infer_rows(state, entry, request, len(targets), prepare, finish, chunk=len(targets))
    state.metrics.images.labels(entry.name).inc(len(targets))
    if len(targets) == 1:
        return Response(
            content,
            media_type=codecs.MEDIA_TYPES[options.format],
            headers={"X-Attributes": ",".join(targets[0])},
        )
    return Response(content, media_type="application/json")
