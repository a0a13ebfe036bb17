"""Image codecs: model output arrays -> PNG / JPEG / WebP bytes, and grids of many images.

Models emit float CHW arrays in their manifest's `output_range`; clients want 8-bit files. Encoding
is CPU work (zlib, libjpeg), so the app calls these functions from a thread pool, never on the
event loop; Pillow releases the GIL while it compresses.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from typing import Literal

import numpy as np
from PIL import Image

ImageFormat = Literal["png", "jpeg", "webp"]

MEDIA_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
FORMAT_OF_MEDIA_TYPE = {media: fmt for fmt, media in MEDIA_TYPES.items()}

# zlib level 1: images from a generator barely compress further at higher levels, and encode time
# is on the serving path.
_PNG_COMPRESS_LEVEL = 1
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (grey, RGB, RGBA), 8 bits each
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


#: Largest side each format can store: WebP's 14-bit dimensions, JPEG's 16-bit ones; PNG's are 31-bit.
MAX_SIDE: dict[str, int] = {"webp": 16383, "jpeg": 65535, "png": 2**31 - 1}


def size_problem(fmt: str, width: int, height: int) -> str | None:
    """Why a `width` x `height` image cannot be encoded as `fmt` (checked before any compute), or None."""
    limit = MAX_SIDE[fmt]
    if width <= limit and height <= limit:
        return None
    fits = [name for name, side in MAX_SIDE.items() if width <= side and height <= side]
    return (
        f"a {width}x{height} result does not fit {fmt.upper()} (at most {limit} pixels per side); "
        f"ask for format={' or '.join(fits)} or send a smaller image"
    )


def grid_size(count: int, height: int, width: int, padding: int = 2) -> tuple[int, int]:
    """(width, height) of `grid` for `count` images of `height` x `width`."""
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    return columns * width + (columns + 1) * padding, rows * height + (rows + 1) * padding


def to_uint8(images: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Map [N, C, H, W] floats in `value_range` to [N, H, W, C] uint8 (clipped, rounded)."""
    low, high = value_range
    scale = 255.0 / (high - low)
    scaled = np.subtract(np.asarray(images, dtype=np.float32), low, dtype=np.float32)  # a fresh array, in place below
    scaled *= scale
    np.clip(scaled, 0.0, 255.0, out=scaled)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8).transpose(0, 2, 3, 1)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)))


def encode_png(image: np.ndarray) -> bytes:
    """One [H, W, C] uint8 image (C = 1, 3 or 4) as PNG: filter type 0 on every row, zlib level 1.

    Written directly (signature, IHDR, one IDAT, IEND) rather than through Pillow, whose encoder
    tries every PNG filter on every row: on 64x64 generator output that costs 2-3x the time of
    the compression itself for files of about the same size (within +-10% on DCGAN samples).
    """
    height, width, channels = image.shape
    rows = np.empty((height, width * channels + 1), dtype=np.uint8)
    rows[:, 0] = 0  # filter type None
    rows[:, 1:] = image.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOR_TYPES[channels], 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(rows.data, _PNG_COMPRESS_LEVEL)),
            _PNG_IEND,
        )
    )


def _pil(image: np.ndarray) -> Image.Image:
    """[H, W, C] uint8 -> a PIL image (1 channel = grayscale, 3 = RGB, 4 = RGBA)."""
    channels = image.shape[2]
    if channels == 1:
        return Image.fromarray(np.ascontiguousarray(image[:, :, 0]))
    if channels in (3, 4):
        return Image.fromarray(np.ascontiguousarray(image))
    raise ValueError(f"cannot encode an image with {channels} channels")


def encode(image: np.ndarray, fmt: ImageFormat = "png", quality: int = 90) -> bytes:
    """Encode one [H, W, C] uint8 image."""
    if fmt == "png" and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] in _PNG_COLOR_TYPES:
        return encode_png(image)
    pil = _pil(image)
    buf = io.BytesIO()
    if fmt == "png":
        pil.save(buf, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
    elif fmt == "jpeg":
        if pil.mode == "RGBA":
            pil = pil.convert("RGB")
        pil.save(buf, format="JPEG", quality=quality)
    elif fmt == "webp":
        pil.save(buf, format="WEBP", quality=quality, method=0)
    else:
        raise ValueError(f"unsupported format {fmt!r}")
    return buf.getvalue()


def grid(images: np.ndarray, columns: int | None = None, padding: int = 2, fill: int = 0) -> np.ndarray:
    """Tile [N, H, W, C] uint8 images into one [H', W', C] image, row-major, near-square by default."""
    count, height, width, channels = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    out = np.full(
        (rows * height + (rows + 1) * padding, columns * width + (columns + 1) * padding, channels),
        fill,
        dtype=np.uint8,
    )
    for index in range(count):
        r, c = divmod(index, columns)
        top = padding + r * (height + padding)
        left = padding + c * (width + padding)
        out[top : top + height, left : left + width] = images[index]
    return out


def decode(data: bytes) -> np.ndarray:
    """Decode image bytes to [H, W, C] uint8 (RGB); used by tests now, by upload endpoints later."""
    with Image.open(io.BytesIO(data)) as pil:
        array = np.asarray(pil.convert("RGB") if pil.mode not in ("L", "RGB") else pil)
    return array[:, :, None] if array.ndim == 2 else array
