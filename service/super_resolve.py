"""The `super_resolve` task: one uploaded image -> the image `scale` times larger, computed in tiles.

read/admit: the upload and its options; from the header alone (nothing decoded yet) the pixel limit,
the tile count (413 over `GAN_SR_MAX_TILES`) and whether the result fits the format asked for (422).
decode: the image and its tile plan, on the codec pool. Every tile is one batcher row, queued in jobs
of at most a batch (a few in flight at once), so tiles of concurrent requests fill the same ONNX
Runtime calls, one large image cannot hold the whole queue, and an image with more tiles than the
queue holds is still served. feeds: a job's tiles cut on the codec pool; finish (`place`): its
8-bit tiles (`ModelRuntime.images`) written into the output canvas on the codec pool as soon as its
batch is computed, so only the uint8 canvas is kept; encode: the canvas, on the codec pool.

Colour handling (documented in docs/service.md): the network always sees RGB. A grayscale upload
is replicated to RGB and the result is returned as grayscale (ITU-R 601 luma of the RGB output).
An upload with transparency has its RGB super-resolved and its alpha channel upscaled separately
with bicubic interpolation and re-attached (RGBA out); JPEG cannot carry alpha, so for JPEG output
the image is composited over white instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import Response
from PIL import Image

from service import codecs, memory, tiling
from service.codecs import ImageFormat
from service.errors import ApiError
from service.media_schemas import SuperResolveOptions
from service.pipeline import RequestContext, TaskWork
from service.settings import Settings
from service.uploads import DecodedImage, UploadedImage, decode_image, probe, read_uploaded_image


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


class SuperResolveWork(TaskWork[UploadedImage[SuperResolveOptions]]):
    """One /super-resolve request: the tiles of its upload and the output canvas they are stitched into."""

    task = "super_resolve"
    path = "/super-resolve"
    chunked = True
    decode_offloaded = True

    image: DecodedImage
    tiles: tiling.TilePlan
    canvas: np.ndarray

    def __init__(self, upload: UploadedImage[SuperResolveOptions], ctx: RequestContext) -> None:
        super().__init__(upload, ctx)
        settings, manifest = ctx.settings, ctx.entry.manifest
        assert manifest.scale is not None
        self.upload = upload
        self.options = upload.options
        self.scale = manifest.scale
        self.input_name = manifest.inputs[0].name
        width, height = probe(upload.data, settings.max_input_pixels)
        _check_cost(settings, width, height, self.scale, self.options.format)
        self.large = width * height * self.scale**2 >= memory.TRIM_AFTER_PIXELS
        low, high = manifest.input_range or (0.0, 1.0)
        self._in_scale = np.float32((high - low) / 255.0)
        self._in_offset = np.float32(low)

    @classmethod
    async def read(cls, request: Request, settings: Settings) -> UploadedImage[SuperResolveOptions]:
        return await read_uploaded_image(request, SuperResolveOptions, settings.max_upload_bytes)

    def decode(self) -> None:
        settings = self.ctx.settings
        self.image = image = decode_image(self.upload.data, settings.max_input_pixels)
        self.tiles = tiling.plan(image.height, image.width, settings.sr_tile_size, settings.sr_tile_overlap)
        self.canvas = np.empty((image.height * self.scale, image.width * self.scale, 3), dtype=np.uint8)
        self.rows = self.tiles.count
        self.output_pixels = int(self.canvas.shape[0] * self.canvas.shape[1])

    async def feeds(self, first: int, stop: int) -> dict[str, np.ndarray]:
        return {self.input_name: await self.ctx.cpu(self.chunk, first, stop)}

    def finish(self, first: int, out: np.ndarray) -> None:
        self.place(first, out)

    async def encode(self, finished: list[Any]) -> Response:
        options = self.options
        content = await self.ctx.cpu(self.encode_canvas, options.format, options.quality)
        return Response(
            content,
            media_type=codecs.MEDIA_TYPES[options.format],
            headers={"X-Scale": str(self.scale), "X-Tiles": str(self.tiles.count)},
        )

    def chunk(self, first: int, stop: int) -> np.ndarray:
        """Tiles [first, stop) as float32 [n, 3, th, tw] in the model's input range."""
        tiles = tiling.cut(self.image.rgb, self.tiles, first, stop).astype(np.float32)
        tiles *= self._in_scale
        tiles += self._in_offset
        return tiles

    def place(self, first: int, out: np.ndarray) -> None:
        """Write the kept centres of computed uint8 NHWC tiles [first, first + len(out)) into the canvas."""
        th, tw, s = self.tiles.tile_height, self.tiles.tile_width, self.scale
        if out.ndim != 4 or out.shape[3] != 3 or out.shape[1:3] != (th * s, tw * s):
            raise RuntimeError(
                f"the model returned tiles of shape {list(out.shape[1:])} for {th}x{tw} inputs; "
                f"expected [{th * s}, {tw * s}, 3] (is the manifest's scale={s} right?)"
            )
        for offset in range(out.shape[0]):
            src_r, src_c, dst_r, dst_c = tiling.kept(self.tiles, first + offset, s)
            self.canvas[dst_r, dst_c] = out[offset, src_r, src_c]

    def encode_canvas(self, fmt: ImageFormat, quality: int) -> bytes:
        """The finished canvas in `fmt`, with the upload's colour model restored (see module docs)."""
        rgb = self.canvas
        alpha = self.image.alpha
        if alpha is not None:
            size = (rgb.shape[1], rgb.shape[0])
            big = np.asarray(Image.fromarray(alpha).resize(size, Image.Resampling.BICUBIC))
            if fmt == "jpeg":
                weight = big.astype(np.float32)[:, :, None] / 255.0
                flat = np.rint(rgb * weight + 255.0 * (1.0 - weight)).astype(np.uint8)
                return codecs.encode(flat, fmt, quality)
            return codecs.encode(np.concatenate([rgb, big[:, :, None]], axis=2), fmt, quality)
        if self.image.grayscale:
            gray = np.asarray(Image.fromarray(rgb).convert("L"))
            return codecs.encode(gray[:, :, None], fmt, quality)
        return codecs.encode(rgb, fmt, quality)
