"""The `generate` task: a body naming latents (random from a seed, explicit, or a walk) -> images.

decode: the latent batch (numpy, no per-row Python; a few microseconds, so on the event loop).
finish: the whole response body (PNG/JPEG/WebP encode, base64, JSON, or one grid image) on the codec
pool once the batch is computed: one hand-off per batch for all its requests, not one per request,
so the event loop only moves bytes. Everything that can refuse the request (image count, Accept,
output size) is checked before a latent is drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi.responses import Response

from service import codecs, latents, negotiation
from service.errors import ApiError
from service.json_images import images_json
from service.manifest import Manifest
from service.pipeline import RequestContext, TaskWork
from service.schemas import GenerateRequest, LatentSource


def _checked(array: np.ndarray, dim: int, what: str) -> np.ndarray:
    if array.shape[1] != dim:
        raise ApiError(422, "invalid_latent", f"{what}: latent vectors must have {dim} values, got {array.shape[1]}")
    if not np.isfinite(array).all():
        raise ApiError(422, "invalid_latent", f"{what}: latent values must be finite float32 numbers")
    return array


def _endpoint_latent(source: LatentSource, manifest: Manifest) -> np.ndarray:
    dim = manifest.latent_dim
    assert dim is not None and manifest.latent_distribution is not None
    if source.seed is not None:
        return latents.sample(source.seed, 1, dim, manifest.latent_distribution)[0]
    with np.errstate(over="ignore"):
        vector = np.asarray([source.latent], dtype=np.float32)
    return _checked(vector, dim, "interpolate endpoint")[0]


def image_count(body: GenerateRequest, limit: int) -> int:
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


def build_latents(body: GenerateRequest, manifest: Manifest, count: int) -> tuple[np.ndarray, int | None]:
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


class GenerateWork(TaskWork[GenerateRequest]):
    """One /generate request: JSON with base64 images, or one grid image when `Accept` asks for it."""

    task = "generate"
    path = "/generate"

    def __init__(self, body: GenerateRequest, ctx: RequestContext) -> None:
        super().__init__(body, ctx)
        self.body = body
        self.grid_format = negotiation.image_format(ctx.request.headers.get("accept"), body.format)
        self.images = self.room = image_count(body, ctx.settings.max_images_per_request)
        as_grid = self.grid_format is not None
        _check_output_size(self.grid_format or body.format, self.images, ctx.entry.manifest, as_grid)

    def decode(self) -> None:
        entry = self.ctx.entry
        self.vectors, self.seed = build_latents(self.body, entry.manifest, self.images)
        self.rows = self.images
        self._feeds = {entry.manifest.inputs[0].name: entry.runtime.shape_latents(self.vectors)}

    async def feeds(self, first: int, stop: int) -> dict[str, np.ndarray]:
        return self._feeds  # one job: the batcher splits it across batches itself

    def finish(self, first: int, out: np.ndarray) -> bytes:
        body = self.body
        if self.grid_format is not None:
            return codecs.encode(codecs.grid(out), self.grid_format, body.quality)  # type: ignore[arg-type]
        head = {"model": self.ctx.entry.name, "media_type": codecs.MEDIA_TYPES[body.format], "seed": self.seed}
        tail = {"latents": self.vectors.tolist() if body.return_latents else None}
        return images_json(out, body.format, body.quality, head, tail)

    async def encode(self, finished: list[Any]) -> Response:
        (content,) = finished
        if self.grid_format is None:
            return Response(content, media_type="application/json")
        headers = {"X-Image-Count": str(self.images)}
        if self.seed is not None:
            headers["X-Seed"] = str(self.seed)
        return Response(content, media_type=codecs.MEDIA_TYPES[self.grid_format], headers=headers)
