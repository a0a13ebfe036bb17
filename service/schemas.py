"""Request and response bodies of the HTTP API, with the examples shown in the OpenAPI docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, model_validator

from service.codecs import ImageFormat
from service.manifest import TensorSpec

MAX_SEED = 2**63 - 1

_LATENT_EXAMPLE = [0.12, -1.3, 0.57, 0.08]  # a real request sends latent_dim values


class LatentSource(BaseModel):
    """One latent vector, named either by a seed (that seed's first vector) or given explicitly."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"seed": 7}, {"latent": _LATENT_EXAMPLE}]},
    )

    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Use the first latent vector of this seed.")
    latent: list[FiniteFloat] | None = Field(
        None, min_length=1, description="An explicit latent vector of length latent_dim."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> LatentSource:
        if (self.seed is None) == (self.latent is None):
            raise ValueError("give exactly one of 'seed' or 'latent'")
        return self


class Interpolation(BaseModel):
    """A latent walk: `steps` images from `from` to `to`, both endpoints included."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={"examples": [{"from": {"seed": 1}, "to": {"seed": 2}, "steps": 8, "method": "slerp"}]},
    )

    start: LatentSource = Field(alias="from", description="First endpoint.")
    end: LatentSource = Field(alias="to", description="Last endpoint.")
    steps: int = Field(8, ge=2, description="Images on the path, endpoints included.")
    method: Literal["linear", "slerp"] = Field(
        "linear", description="linear: straight line; slerp: great circle (better for Gaussian latents)."
    )


class GenerateRequest(BaseModel):
    """What to generate. Give at most one of `latents` or `interpolate`; otherwise `num_images`
    random images are sampled from `seed` (a fresh seed, returned in the response, if omitted)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(
        None, description="Model name (see GET /models); default: the first generate model by name."
    )
    num_images: int = Field(1, ge=1, description="How many random images (bounded by the service).")
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="Same seed, same model -> same images. Random if omitted."
    )
    latents: list[list[FiniteFloat]] | None = Field(
        None, min_length=1, description="Explicit latent vectors, each of length latent_dim."
    )
    interpolate: Interpolation | None = Field(None, description="A latent walk between two seeds or vectors.")
    format: ImageFormat = Field("png", description="Encoding of each image.")
    quality: int = Field(90, ge=1, le=100, description="JPEG/WebP quality.")
    return_latents: bool = Field(False, description="Also return the latent vectors used.")

    @model_validator(mode="after")
    def _one_source(self) -> GenerateRequest:
        if self.latents is not None and self.interpolate is not None:
            raise ValueError("give at most one of 'latents' or 'interpolate'")
        explicit = self.latents is not None or self.interpolate is not None
        if explicit and self.seed is not None:
            raise ValueError("'seed' only applies to random sampling; drop it when giving latents or interpolate")
        if "num_images" in self.model_fields_set and explicit:
            expected = len(self.latents) if self.latents is not None else self.interpolate.steps  # type: ignore[union-attr]
            if self.num_images != expected:
                raise ValueError(
                    f"num_images ({self.num_images}) disagrees with the {expected} images the latents "
                    "or interpolation describe; omit num_images"
                )
        return self


GENERATE_EXAMPLES: dict[str, dict[str, Any]] = {
    "random": {
        "summary": "Four random images",
        "description": "The response carries the seed the service picked, to reproduce them.",
        "value": {"num_images": 4},
    },
    "seeded": {
        "summary": "Reproducible images from a seed",
        "value": {"model": "dcgan-celeba64", "num_images": 8, "seed": 1234, "format": "png"},
    },
    "latents": {
        "summary": "Explicit latent vectors (vector arithmetic done client-side)",
        "value": {"latents": [_LATENT_EXAMPLE], "format": "webp", "quality": 85},
    },
    "interpolate": {
        "summary": "A latent walk between two seeds",
        "value": {"interpolate": {"from": {"seed": 1}, "to": {"seed": 2}, "steps": 8, "method": "slerp"}},
    },
}


def response_config(example: dict[str, Any]) -> ConfigDict:
    """The config of a response body with images: `example` shown in the OpenAPI docs, and a field
    named `model` allowed (pydantic reserves the `model_` prefix)."""
    return ConfigDict(protected_namespaces=(), json_schema_extra={"examples": [example]})


class GenerateResponse(BaseModel):
    """Images as base64 strings, in request order (returned unless `Accept` asks for an image)."""

    model_config = response_config(
        {
            "model": "dcgan-celeba64",
            "media_type": "image/png",
            "seed": 1234,
            "images": ["iVBORw0KGgoAAAANSUhEUgAAAEAAAABACAIAAAAlC+aJAAA..."],
            "latents": None,
        }
    )

    model: str = Field(description="The model that generated the images.")
    media_type: str = Field(description="Media type of every image.")
    seed: int | None = Field(description="Seed of random sampling (null for latents/interpolate).")
    images: list[str] = Field(description="Base64-encoded images.")
    latents: list[list[float]] | None = Field(description="Latent vectors used, if `return_latents`.")


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    task: str
    architecture: str
    state: Literal["loaded", "warming", "ready", "failed"]
    ready: bool
    error: str | None = None
    version: str = Field("flat", description="Version being served (models/NAME/<version>/), or `flat` for "
                         "models/NAME/model.onnx.")
    swap_error: str | None = Field(None, description="Why the last newer version was refused (this one kept "
                                   "serving); cleared by the next successful swap.")
    providers: list[str] = Field(description="Execution providers ONNX Runtime actually uses.")
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    image_size: int | None
    channels: int
    input_range: tuple[float, float] | None
    output_range: tuple[float, float]
    latent_dim: int | None
    latent_distribution: str | None
    scale: int | None
    attributes: list[str] | None
    exclusive_groups: list[list[str]]
    precision: str
    parity_max_abs_error: float
    provenance: dict[str, Any]


class ModelsResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "ready": True,
                    "models": [
                        {
                            "name": "dcgan-celeba64",
                            "task": "generate",
                            "architecture": "dcgan",
                            "state": "ready",
                            "ready": True,
                            "error": None,
                            "providers": ["CPUExecutionProvider"],
                            "inputs": [{"name": "latent", "shape": [None, 100], "dtype": "float32"}],
                            "outputs": [{"name": "image", "shape": [None, 3, 64, 64], "dtype": "float32"}],
                            "image_size": 64,
                            "channels": 3,
                            "input_range": None,
                            "output_range": [-1.0, 1.0],
                            "latent_dim": 100,
                            "latent_distribution": "normal",
                            "scale": None,
                            "attributes": None,
                            "exclusive_groups": [],
                            "precision": "fp32",
                            "parity_max_abs_error": 2.1e-6,
                            "provenance": {
                                "checkpoint_sha256": "9f2c...",
                                "training_step": 50000,
                                "exported_at": "2024-05-01T12:00:00Z",
                                "versions": {},
                            },
                        }
                    ],
                }
            ]
        }
    )

    ready: bool = Field(description="True when every model is loaded and warmed up.")
    models: list[ModelInfo]


class HealthResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "ready", "models": {"dcgan-celeba64": "ready"}}]}
    )

    status: Literal["ready"] = "ready"
    models: dict[str, str] = Field(description="State of each model.")
