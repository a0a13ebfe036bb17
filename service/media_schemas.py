"""Options, responses and OpenAPI documentation of the upload endpoints (/super-resolve, /translate).

The endpoints take form fields or query parameters next to an uploaded file, which FastAPI cannot
declare as one model; so the handlers read the request themselves, validate the fields with these
models (unknown fields are refused, so a typo is an error rather than a silently ignored option), and
the OpenAPI request bodies and parameters are written out here.
"""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.codecs import ImageFormat
from service.schemas import response_config

_LIST_FIELDS = frozenset({"targets"})


class UploadOptions(BaseModel):
    """What every image-upload endpoint takes besides the image (service.uploads reads these)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, description="Model name; default: the first model of the task by name.")
    format: ImageFormat = Field("png", description="Encoding of the result.")
    quality: int = Field(90, ge=1, le=100, description="JPEG/WebP quality.")


class SuperResolveOptions(UploadOptions):
    model: str | None = Field(None, description="Model name; default: the first super_resolve model by name.")


class TranslateOptions(UploadOptions):
    model: str | None = Field(None, description="Model name; default: the first translate model by name.")
    attributes: str | None = Field(None, description="One target set: comma-separated names or a JSON list.")
    targets: list[str] | None = Field(None, description="Several target sets (repeat the field), one image each.")


def parse_options(model: type[BaseModel], fields: dict[str, list[str]]) -> Any:
    """Validate request fields; errors use the 422 shape. A single-valued field given twice (in the
    query, or in the form) is refused rather than silently taking one value: `format=png&format=webp`
    has no right answer."""
    repeated = [key for key, vals in fields.items() if len(vals) > 1 and key not in _LIST_FIELDS]
    if repeated:
        raise RequestValidationError(
            [
                {"loc": ["body", key], "msg": f"given {len(fields[key])} times; give it once", "type": "repeated_field"}
                for key in repeated
            ]
        )
    values: dict[str, Any] = {key: (vals if key in _LIST_FIELDS else vals[0]) for key, vals in fields.items() if vals}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


class TranslateResponse(BaseModel):
    """Several targets: one base64 image per target set, in request order."""

    model_config = response_config(
        {
            "model": "stargan-shapes",
            "media_type": "image/png",
            "images": ["iVBORw0KGgoAAAANSUhEUgAAAEAAAABACAIAAAAlC+aJAAA...", "iVBORw0KGgo..."],
            "targets": [["colour_red"], ["colour_green", "size_large"]],
        }
    )

    model: str = Field(description="The model that translated the image.")
    media_type: str = Field(description="Media type of every image.")
    images: list[str] = Field(description="Base64-encoded images, one per target set.")
    targets: list[list[str]] = Field(description="The attribute set (names set to 1) of each image.")


_BINARY = {"type": "string", "format": "binary"}
_RAW_BODIES = {media: {"schema": _BINARY} for media in ("image/png", "image/jpeg", "image/webp")}
_COMMON_PROPERTIES: dict[str, Any] = {
    "image": {**_BINARY, "description": "The image: PNG, JPEG or WebP (format detected from the bytes)."},
    "format": {"type": "string", "enum": ["png", "jpeg", "webp"], "default": "png"},
    "quality": {"type": "integer", "minimum": 1, "maximum": 100, "default": 90},
}


def _query(name: str, schema: dict[str, Any], description: str, example: Any = None) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
    param["description"] = description
    if example is not None:
        param["example"] = example
    return param


_COMMON_QUERY = [
    _query("format", _COMMON_PROPERTIES["format"], "Encoding of the result (form field `format` too)."),
    _query("quality", _COMMON_PROPERTIES["quality"], "JPEG/WebP quality (form field `quality` too)."),
]

def _upload_body(model_example: str, properties: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    """The request body of an upload endpoint: a multipart form (the image, the common options, the
    model and the endpoint's own `properties`), or the raw image."""
    model = {"type": "string", "description": "Model name.", "example": model_example}
    return {
        "required": True,
        "description": "multipart/form-data with a file field `image`, or the image itself as the body.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {**_COMMON_PROPERTIES, "model": model, **properties},
                },
                "encoding": {"image": {"contentType": "image/png, image/jpeg, image/webp"}},
                "example": example,
            },
            **_RAW_BODIES,
        },
    }


SUPER_RESOLVE_OPENAPI: dict[str, Any] = {
    "parameters": [
        _query("model", {"type": "string"}, "Model name (form field `model` too).", "srgan-x4"),
        *_COMMON_QUERY,
    ],
    "requestBody": _upload_body("srgan-x4", {}, {"model": "srgan-x4", "format": "png"}),
}

TRANSLATE_OPENAPI: dict[str, Any] = {
    "parameters": [
        _query("model", {"type": "string"}, "Model name (form field `model` too).", "stargan-shapes"),
        _query(
            "attributes",
            {"type": "string"},
            "One target set: comma-separated attribute names (or a JSON list); unnamed attributes are 0.",
            "colour_red",
        ),
        _query(
            "targets",
            {"type": "array", "items": {"type": "string"}},
            "Several target sets, one per repeated parameter; the response is then JSON with one image each.",
            ["colour_red", "colour_green,size_large"],
        ),
        *_COMMON_QUERY,
    ],
    "requestBody": _upload_body(
        "stargan-shapes",
        {
            "attributes": {
                "type": "string",
                "description": "One target set (comma-separated names or a JSON list).",
                "example": "colour_red,size_large",
            },
            "targets": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Several target sets (repeat the field); JSON response.",
                "example": ["colour_red", "colour_green"],
            },
        },
        {"attributes": "colour_red", "format": "png"},
    ),
}

#: The 200 content of both endpoints: the binary image in the requested format.
IMAGE_RESPONSE_CONTENT: dict[str, Any] = _RAW_BODIES
