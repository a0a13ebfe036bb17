"""Content negotiation: which image format, if any, an `Accept` header prefers over JSON.

`/generate` answers JSON (base64 images) by default and one image grid when the client's `Accept`
prefers an image type; the format of a grid follows the header, or the body's `format` for `image/*`.
"""

from __future__ import annotations

from service import codecs
from service.errors import ApiError

_JSON_TYPES = frozenset({"application/json", "*/*", "application/*"})


def _quality(params: str) -> float:
    """The `q` parameter of one Accept entry (1 when absent, 0 when unreadable)."""
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def image_format(accept: str | None, default_format: str) -> str | None:
    """Image format of a grid response if `Accept` prefers an image, else None (JSON); 406 when the
    header accepts neither."""
    if not accept:
        return None
    best: tuple[float, str | None] | None = None
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        if media in _JSON_TYPES:
            choice: str | None = None
        elif media in codecs.FORMAT_OF_MEDIA_TYPE:
            choice = codecs.FORMAT_OF_MEDIA_TYPE[media]
        elif media == "image/*":
            choice = default_format
        else:
            continue
        quality = _quality(params)
        if quality > 0 and (best is None or quality > best[0]):
            best = (quality, choice)
    if best is None:
        raise ApiError(
            406,
            "not_acceptable",
            "this endpoint answers application/json, image/png, image/jpeg or image/webp",
        )
    return best[1]
