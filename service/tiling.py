"""Overlapping tiles for fully convolutional models (super-resolution): plan, cut, stitch.

Why tiles: memory stays bounded whatever the upload size, and tiles of one size from different
requests can share a batch. Why overlap: a pixel's output depends on its neighbours within the
network's receptive field; each tile is cut with `overlap` pixels of real context around the centre
it keeps, and only that centre is stitched in, so as long as `overlap` covers the receptive field
the stitched image equals a run on the whole image (no seams, no blending needed).

Tiles lie inside the image: at an image border the tile's edge *is* the image edge, so the network
sees exactly the border it would see on the whole image. Along an axis shorter than a tile, the tile
is as long as the axis (never padded): a 4096 x 1 image is tiles of 1 x `tile` pixels, so memory and
compute grow with the real pixels, not with full square tiles. Every tile of one request has the
same shape; an image no larger than one tile in both axes is one tile of its own size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Span:
    """One tile along one axis: the window starts at `start`; it keeps [keep_start, keep_stop)."""

    start: int
    keep_start: int
    keep_stop: int


def plan_axis(length: int, tile: int, overlap: int) -> list[Span]:
    """Windows of `tile` pixels covering [0, length), each keeping a centre with `overlap` pixels of
    context on each side (or the image edge); a length up to `tile` is a single window."""
    if tile <= 2 * overlap:
        raise ValueError(f"tile ({tile}) must be larger than twice the overlap ({overlap})")
    if length <= tile:
        return [Span(0, 0, length)]
    spans = []
    pos = 0
    while pos < length:
        start = min(max(pos - overlap, 0), length - tile)
        stop = length if start + tile == length else start + tile - overlap
        spans.append(Span(start, pos, stop))
        pos = stop
    return spans


@dataclass(frozen=True)
class TilePlan:
    """The tiles of one image, row-major; every tile is `tile_height` x `tile_width` input pixels."""

    height: int
    width: int
    tile_height: int
    tile_width: int
    rows: tuple[Span, ...]
    cols: tuple[Span, ...]

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)

    def tile(self, index: int) -> tuple[Span, Span]:
        row, col = divmod(index, len(self.cols))
        return self.rows[row], self.cols[col]


def plan(height: int, width: int, tile: int, overlap: int) -> TilePlan:
    """Tile an image: `tile` long along each axis, or the axis's own length where that is shorter."""
    return TilePlan(
        height,
        width,
        min(tile, height),
        min(tile, width),
        tuple(plan_axis(height, tile, overlap)),
        tuple(plan_axis(width, tile, overlap)),
    )


def count(height: int, width: int, tile: int, overlap: int) -> int:
    """Tiles `plan` makes for an image, without building the plan's spans (from an upload's header)."""

    def axis(length: int) -> int:
        if length <= tile:
            return 1
        first, step = tile - overlap, tile - 2 * overlap
        return 1 + max(0, -(-(length - first - overlap) // step)) if length > first else 1

    return axis(height) * axis(width)


def cut(image: np.ndarray, tiles: TilePlan, first: int, stop: int) -> np.ndarray:
    """Tiles [first, stop) of an [H, W, C] image as one [n, C, tile_h, tile_w] array (same dtype)."""
    th, tw = tiles.tile_height, tiles.tile_width
    out = np.empty((stop - first, th, tw, image.shape[2]), dtype=image.dtype)
    for i in range(first, stop):
        row, col = tiles.tile(i)
        out[i - first] = image[row.start : row.start + th, col.start : col.start + tw]
    return out.transpose(0, 3, 1, 2)


def kept(tiles: TilePlan, index: int, scale: int) -> tuple[slice, slice, slice, slice]:
    """Where tile `index`'s kept centre is in its output (rows, cols) and in the full output."""
    row, col = tiles.tile(index)
    return (
        slice((row.keep_start - row.start) * scale, (row.keep_stop - row.start) * scale),
        slice((col.keep_start - col.start) * scale, (col.keep_stop - col.start) * scale),
        slice(row.keep_start * scale, row.keep_stop * scale),
        slice(col.keep_start * scale, col.keep_stop * scale),
    )


def stitch(outputs: np.ndarray, tiles: TilePlan, scale: int) -> np.ndarray:
    """All tile outputs [count, C, th*s, tw*s] -> the full [C, H*s, W*s] output (for tests and tools;
    the service stitches chunk by chunk as tiles complete)."""
    canvas = np.empty((outputs.shape[1], tiles.height * scale, tiles.width * scale), dtype=outputs.dtype)
    for index in range(tiles.count):
        src_r, src_c, dst_r, dst_c = kept(tiles, index, scale)
        canvas[:, dst_r, dst_c] = outputs[index][:, src_r, src_c]
    return canvas
