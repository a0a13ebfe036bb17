"""The model-repository manifest: the one contract between `export/` and `service/`.

It lives in `service/` because the service is the reader that must never guess, and it depends on
pydantic alone, so `export/` can import it to write manifests the service is guaranteed to accept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

MANIFEST_VERSION = 1
MANIFEST_FILENAME = "manifest.json"
MODEL_FILENAME = "model.onnx"

Task = Literal["generate", "super_resolve", "translate"]


class ManifestError(ValueError):
    """A manifest the service cannot trust: missing, unparsable, or of an unknown version."""


def _without_none(data: dict[str, Any], key: str) -> dict[str, Any]:
    """`data` without `key` where it is None: a field added to the contract later is left out of what
    is written when unset, so files and responses of the earlier format stay byte-for-byte the same."""
    if data.get(key) is None:
        data.pop(key, None)
    return data


class TensorSpec(BaseModel):
    """One graph input or output; `None` in `shape` marks a dynamic axis (always the batch axis).

    `layout` names the axes of an image tensor. Image outputs of current exports are uint8 "NHWC"
    (the graph ends with the 8-bit mapping); manifests written before that have no layout and float
    NCHW outputs in `output_range`, and are still served (mapped to 8 bits on the host)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int | None]
    dtype: Literal["float32", "float16", "uint8"] = "float32"
    layout: Literal["NCHW", "NHWC"] | None = None

    @model_serializer(mode="wrap")
    def _without_empty_layout(self, handler: Any) -> dict[str, Any]:
        # A tensor without a layout is written as before (manifests, GET /models), so readers of the
        # earlier format see no new key.
        return _without_none(handler(self), "layout")

    @model_validator(mode="after")
    def _uint8_is_an_nhwc_image(self) -> TensorSpec:
        if self.dtype == "uint8" and (self.layout != "NHWC" or len(self.shape) != 4):
            raise ValueError(f"uint8 tensor {self.name!r} must be a rank-4 image batch with layout NHWC")
        return self


class Provenance(BaseModel):
    model_config = ConfigDict(extra="allow")

    checkpoint_sha256: str
    training_step: int
    images_seen: int | None = None
    exported_at: str
    versions: dict[str, str] = Field(default_factory=dict)


class Manifest(BaseModel):
    """Everything the service needs to feed a model and decode its output."""

    model_config = ConfigDict(extra="forbid")

    manifest_version: int = MANIFEST_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    task: Task
    architecture: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    image_size: int | None = Field(None, description="Output side length for generate/translate models.")
    channels: int = 3
    input_range: tuple[float, float] | None = Field(None, description="Value range of image inputs.")
    output_range: tuple[float, float] = (-1.0, 1.0)
    latent_dim: int | None = None
    latent_distribution: Literal["normal", "uniform"] | None = None
    scale: int | None = None
    attributes: list[str] | None = None
    exclusive_groups: list[list[str]] = Field(default_factory=list)
    precision: Literal["fp32", "fp16"] = "fp32"
    parity_max_abs_error: float
    parity_tolerance: float
    parity_max_level_error: int | None = Field(
        None, description="Largest 8-bit level difference from PyTorch of a uint8-output graph (0 or 1, on ties)."
    )

    @model_serializer(mode="wrap")
    def _without_unset_level_error(self, handler: Any) -> dict[str, Any]:
        # float-output manifests are written exactly as before
        return _without_none(handler(self), "parity_max_level_error")
    provenance: Provenance
    extra: dict[str, object] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _task_fields_present(self) -> Manifest:
        if self.task == "generate" and (self.latent_dim is None or self.latent_distribution is None):
            raise ValueError("a generate model needs latent_dim and latent_distribution")
        if self.task == "super_resolve" and self.scale is None:
            raise ValueError("a super_resolve model needs scale")
        if self.task == "translate":
            if not self.attributes:
                raise ValueError("a translate model needs its attributes")
            unknown = {a for group in self.exclusive_groups for a in group} - set(self.attributes)
            if unknown:
                raise ValueError(f"exclusive_groups name unknown attributes: {sorted(unknown)}")
        return self

    @property
    def uint8_output(self) -> bool:
        """True when the graph returns 8-bit NHWC images itself (current exports); False for float NCHW."""
        return self.outputs[0].dtype == "uint8"

    def write(self, directory: Path) -> Path:
        path = Path(directory) / MANIFEST_FILENAME
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        """Read and validate `directory/manifest.json`, refusing unknown versions by name."""
        path = Path(directory) / MANIFEST_FILENAME
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ManifestError(
                f"{path}: no manifest.json (was the model exported with gan-export?)"
            ) from exc
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
        except UnicodeDecodeError as exc:  # JSON is UTF-8 (RFC 8259); a Latin-1 edit or a binary file is not
            raise ManifestError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
        if not isinstance(raw, dict):
            raise ManifestError(f"{path}: expected a JSON object")
        version = raw.get("manifest_version")
        if version != MANIFEST_VERSION:
            raise ManifestError(
                f"{path}: manifest_version {version!r} is not supported by this service "
                f"(it reads version {MANIFEST_VERSION}); re-export the model with a matching gan-export"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ManifestError(f"{path}: invalid manifest: {exc}") from exc
