"""Uploaded images for /super-resolve and /translate: read the body, refuse before decoding, decode.

Why this order: an upload is attacker-controlled, and a few kilobytes of PNG can claim a
100000 x 100000 canvas (a decompression bomb). So the body is capped (the middleware, and again
here), the format is recognised from the bytes' signature (a Content-Type is only a claim), the
header is parsed with `Image.open` *without* `load()`, and width x height is checked against
`GAN_MAX_INPUT_PIXELS` before a single pixel is decoded. Pillow's own `DecompressionBombError`
(raised inside `Image.open` for absurd sizes) is mapped to the same 413.

Status codes: not PNG/JPEG/WebP -> 415, too many bytes or pixels -> 413, a recognised but corrupt or
truncated image -> 400. Decoding is CPU work: callers run `decode_image` in the codec pool.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from fastapi import Request
from PIL import Image, ImageOps
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from service.errors import ApiError
from service.media_schemas import UploadOptions, parse_options

#: The options model of an upload endpoint (every one names its model).
OptionsT = TypeVar("OptionsT", bound=UploadOptions)

#: Upload formats: our name -> Pillow's format name.
PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
#: Content-Types accepted for a raw image body (format still detected from the bytes).
RAW_MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/jpg", "image/pjpeg", "image/webp", "image/x-png"})
_SUPPORTED = "PNG, JPEG or WebP"
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})


@dataclass
class Upload:
    """The image bytes of a request and its other fields (query parameters, then form fields)."""

    data: bytes
    fields: dict[str, list[str]]


@dataclass
class UploadedImage(Generic[OptionsT]):
    """An upload request once read: its validated options and the image's bytes (not decoded yet)."""

    options: OptionsT
    data: bytes

    @property
    def model(self) -> str | None:
        return self.options.model


@dataclass
class DecodedImage:
    """An upload as 8-bit arrays: `rgb` is [H, W, 3] (grayscale replicated), `alpha` [H, W] or None."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    grayscale: bool
    format: str

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def sniff(data: bytes) -> str | None:
    """The image format named by the first bytes (png, jpeg, webp, or gif/tiff/bmp to refuse), else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:2] == b"BM":
        return "bmp"
    return None


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _refuse_declared(media: str) -> None:
    """A declared image type we do not decode is refused before the bytes are looked at."""
    if media.startswith("image/") and media not in RAW_MEDIA_TYPES:
        raise ApiError(415, "unsupported_image_format", f"{media} is not supported; send a {_SUPPORTED} image")


async def _read_form(request: Request, max_fields: int) -> Any:
    """The multipart form; too many parts is a 413 (a limit), a second file a 422, not a bare 400."""
    try:
        return await request.form(max_files=1, max_fields=max_fields)
    except HTTPException as exc:
        detail = str(exc.detail)
        if detail.startswith("Too many fields"):
            raise ApiError(413, "too_many_fields", f"more than {max_fields} form fields in one request") from None
        if detail.startswith("Too many files"):
            raise ApiError(422, "unexpected_file", "send exactly one file part, named `image`") from None
        raise


async def read_upload(request: Request, max_bytes: int, max_fields: int = 64) -> Upload:
    """The uploaded image and the request's fields.

    Accepts `multipart/form-data` with a file field `image` (other form fields are options and
    take precedence over query parameters of the same name), or the image itself as the body with
    an image Content-Type (or application/octet-stream; options then come from the query).
    At most `max_fields` form fields are parsed (more is 413), so that a form of thousands of tiny
    fields costs no more than the limit.
    """
    fields: dict[str, list[str]] = {key: request.query_params.getlist(key) for key in request.query_params}
    media = _media_type(request.headers.get("content-type"))
    if media == "multipart/form-data":
        form = await _read_form(request, max_fields)
        try:
            image: UploadFile | None = None
            form_fields: dict[str, list[str]] = {}
            for key, value in form.multi_items():
                if key == "image":
                    if not isinstance(value, UploadFile):
                        raise ApiError(422, "missing_image", "the `image` form field must be a file part")
                    image = value
                elif isinstance(value, UploadFile):
                    raise ApiError(422, "unexpected_file", f"unexpected file field {key!r}; send the image as `image`")
                else:
                    form_fields.setdefault(key, []).append(value)
            if image is None:
                raise ApiError(422, "missing_image", "no `image` file field in the multipart form")
            _refuse_declared(_media_type(image.content_type))
            data = await image.read()
        finally:
            await form.close()
        fields.update(form_fields)
    elif media in RAW_MEDIA_TYPES or media == "application/octet-stream":
        data = await request.body()
    else:
        _refuse_declared(media)
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {media or '(none)'} is not accepted: send multipart/form-data with an `image` "
            f"file field, or the {_SUPPORTED} image itself as the body (Content-Type image/png, image/jpeg "
            "or image/webp)",
        )
    if not data:
        raise ApiError(400, "empty_image", "the uploaded image is empty")
    if len(data) > max_bytes:  # the middleware caps the body; this also covers direct callers
        raise ApiError(413, "payload_too_large", f"image of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    return Upload(data, fields)


async def read_uploaded_image(
    request: Request, options: type[OptionsT], max_bytes: int, max_fields: int = 64
) -> UploadedImage[OptionsT]:
    """`read_upload`, then its fields validated as `options` (422 for an unknown or invalid field)."""
    upload = await read_upload(request, max_bytes, max_fields)
    return UploadedImage(parse_options(options, upload.fields), upload.data)


def probe(data: bytes, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the header alone, after the format and pixel-count checks of `decode_image`;
    what a request's cost is computed from before anything is decoded."""
    kind = _supported_kind(data)
    try:
        with Image.open(io.BytesIO(data), formats=[PILLOW_FORMATS[kind]]) as img:
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "image_too_large", f"image refused before decoding: {exc}") from None
    except Exception as exc:
        message = f"the {kind.upper()} image header could not be read ({_reason(exc)})"
        raise ApiError(400, "corrupt_image", message) from None
    _check_pixels(width, height, max_pixels)
    return width, height


def _supported_kind(data: bytes) -> str:
    kind = sniff(data)
    if kind not in PILLOW_FORMATS:
        named = f"{kind.upper()} images are" if kind else "the upload is not a PNG, JPEG or WebP image and"
        raise ApiError(415, "unsupported_image_format", f"{named} not supported; send a {_SUPPORTED} image")
    return kind


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ApiError(
            413,
            "image_too_large",
            f"image of {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} pixels",
        )


def _reason(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def decode_image(data: bytes, max_pixels: int) -> DecodedImage:
    """Decode an upload after checking its format and its header's size; see the module docstring.

    Modes: RGB as is; grayscale (1, L, 16-bit I) replicated to three channels and flagged, so the
    caller can return grayscale; anything with transparency (RGBA, LA, palette or colour-key
    transparency) split into RGB + alpha; CMYK/YCbCr/palette converted to RGB. EXIF orientation
    (phone JPEGs) is applied, so the result is upright as a viewer shows it.
    """
    kind = _supported_kind(data)
    label = kind.upper()
    try:
        with Image.open(io.BytesIO(data), formats=[PILLOW_FORMATS[kind]]) as img:
            _check_pixels(*img.size, max_pixels)  # the header only: nothing is decoded yet
            return _to_arrays(img, kind)
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "image_too_large", f"image refused before decoding: {exc}") from None
    except ApiError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ... for broken files
        raise ApiError(400, "corrupt_image", f"the {label} image could not be decoded ({_reason(exc)})") from None


def _to_arrays(img: Image.Image, kind: str) -> DecodedImage:
    img.load()  # truncated or corrupt data raises here
    img = ImageOps.exif_transpose(img) or img
    mode = img.mode
    transparent = "A" in mode or "a" in mode or "transparency" in img.info
    grayscale = mode in _GRAY_MODES or mode.startswith("I;16")
    alpha = None
    if transparent:
        rgba = np.asarray(img.convert("RGBA"))
        rgb, alpha = np.ascontiguousarray(rgba[:, :, :3]), np.ascontiguousarray(rgba[:, :, 3])
    elif mode.startswith("I"):  # 16-bit grayscale PNG: Pillow's convert("L") would clip, so scale
        wide = np.asarray(img).astype(np.uint32)
        gray = ((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
    elif grayscale:
        rgb = np.repeat(np.asarray(img.convert("L"))[:, :, None], 3, axis=2)
    else:
        rgb = np.asarray(img.convert("RGB"))
    return DecodedImage(rgb=rgb, alpha=alpha, grayscale=grayscale, format=kind)
