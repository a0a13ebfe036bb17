"""JSON response bodies that carry several base64 images (`/generate`, `/translate` with targets).

Built as bytes: base64 text needs no JSON escaping, so the (large) image strings are joined in
directly instead of being scanned again by `json.dumps`. Runs on the codec pool (a batch's finish).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from service import codecs
from service.codecs import ImageFormat


def _dumps(value: Any) -> str:
    return "null" if value is None else json.dumps(value, separators=(",", ":"))


def images_json(images: np.ndarray, fmt: ImageFormat, quality: int, head: dict[str, Any],
                tail: dict[str, Any]) -> bytes:
    """`{**head, "images": [base64 of each image in fmt], **tail}` as compact JSON bytes.

    `images` are uint8 NHWC rows (`ModelRuntime.images`); key order is head, images, tail."""
    encoded = [base64.b64encode(codecs.encode(image, fmt, quality)) for image in images]
    after = b"".join(b',"' + key.encode() + b'":' + _dumps(value).encode() for key, value in tail.items())
    return b"".join((_dumps(head)[:-1].encode(), b',"images":["', b'","'.join(encoded), b'"]', after, b"}"))
