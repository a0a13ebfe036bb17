"""One /super-resolve request as work on arrays: cut tiles, place their outputs, encode the result.

Kept apart from the HTTP layer so the steps that run on the codec pool (cutting a chunk of tiles,
placing a computed chunk into the output, encoding) are plain functions on one object. Placing
runs as the batcher's per-job `finish`, so a chunk's 8-bit tiles (`ModelRuntime.images`) are placed on
the codec pool as soon as its batch is computed, and only the uint8 canvas is kept.

Colour handling (documented in docs/service.md): the network always sees RGB. A grayscale upload
is replicated to RGB and the result is returned as grayscale (ITU-R 601 luma of the RGB output).
An upload with transparency has its RGB super-resolved and its alpha channel upscaled separately
with bicubic interpolation and re-attached (RGBA out); JPEG cannot carry alpha, so for JPEG output
the image is composited over white instead.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from service import codecs, tiling
from service.codecs import ImageFormat
from service.uploads import DecodedImage


class SuperResolveWork:
    """The tiles of one upload and the output canvas they are stitched into."""

    def __init__(
        self,
        image: DecodedImage,
        *,
        scale: int,
        tile: int,
        overlap: int,
        input_range: tuple[float, float],
    ) -> None:
        self.image = image
        self.scale = scale
        self.tiles = tiling.plan(image.height, image.width, tile, overlap)
        low, high = input_range
        self._in_scale = np.float32((high - low) / 255.0)
        self._in_offset = np.float32(low)
        self.canvas = np.empty((image.height * scale, image.width * scale, 3), dtype=np.uint8)

    @property
    def output_pixels(self) -> int:
        return int(self.canvas.shape[0] * self.canvas.shape[1])

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

    def encode(self, fmt: ImageFormat, quality: int) -> bytes:
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
