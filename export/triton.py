"""An exported model -> a Triton Inference Server model repository (config.pbtxt + versioned ONNX file).

A fleet may run the same verified ONNX files on Triton instead of (or next to) `gan-serve`. This
module writes `TRITON_REPO/NAME/{config.pbtxt, manifest.json, 1/model.onnx}` from a folder that
`gan-export` already wrote, so the Triton model is the very file whose parity with PyTorch was proven
(hard-linked where possible, else copied): nothing is re-exported and nothing is re-derived from the
checkpoint. The manifest travels along because Triton knows nothing of latent distributions,
attributes or value ranges, and a client needs them to build inputs and decode outputs.

The batching values mirror the service's defaults (`GAN_MAX_BATCH_SIZE`, `GAN_MAX_BATCH_DELAY_MS`,
`GAN_MAX_QUEUE_SIZE`, `GAN_REQUEST_TIMEOUT_S`), so a Triton deployment behaves like ours out of the box.
They are copied here rather than read from `service.settings` because the export image installs
`gan-forge[export]`, which has no pydantic-settings; a test pins the copies to the settings.

No PyTorch here: writing a Triton repository from an existing model folder needs only onnx and pydantic.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnx

from export.folders import publish_folder
from service.manifest import MANIFEST_FILENAME, MODEL_FILENAME, Manifest, TensorSpec
from service.versions import VersionError, locate

CONFIG_FILENAME = "config.pbtxt"
PLATFORM = "onnxruntime_onnx"
MODEL_VERSION = "1"

# Copies of service/settings.py's defaults (see the module docstring for why they are not imported).
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_BATCH_DELAY_MS = 5.0
DEFAULT_MAX_QUEUE_SIZE = 256
DEFAULT_REQUEST_TIMEOUT_S = 30.0

# Triton's model names end up in URLs and folder names; the manifest's rule keeps both safe.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8"}
_ONNX_TYPES = {"float32": onnx.TensorProto.FLOAT, "float16": onnx.TensorProto.FLOAT16, "uint8": onnx.TensorProto.UINT8}

InstanceKind = Literal["gpu", "cpu"]


class TritonExportError(ValueError):
    """The model folder cannot be turned into a Triton model we can vouch for; nothing was written."""


@dataclass(frozen=True)
class TritonOptions:
    """Triton's scheduling knobs, named after the service settings they mirror."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_batch_delay_ms: float = DEFAULT_MAX_BATCH_DELAY_MS
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    instance_kind: InstanceKind = "gpu"
    instance_count: int = 1

    def __post_init__(self) -> None:
        # Triton rejects these at load time with a less specific message; refuse them before writing.
        if self.max_batch_size < 1:
            raise TritonExportError("max_batch_size must be at least 1 (the batch axis is handled by Triton)")
        if self.max_batch_delay_ms < 0:
            raise TritonExportError("max_batch_delay_ms must not be negative")
        if self.max_queue_size < 1:
            raise TritonExportError("max_queue_size must be at least 1")
        if self.request_timeout_s <= 0:
            raise TritonExportError("request_timeout_s must be positive")
        if self.instance_kind not in ("gpu", "cpu"):
            raise TritonExportError(f"instance_kind must be 'gpu' or 'cpu', not {self.instance_kind!r}")
        if self.instance_count < 1:
            raise TritonExportError("instance_count must be at least 1")


class _Enum(str):
    """A protobuf enum value: written bare in text format, where a string would be quoted."""


_Message = dict[str, object]


def _scalar(value: object) -> str:
    if isinstance(value, _Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # ASCII names only (see _NAME), so JSON quoting is text-format quoting
    raise TypeError(f"no text-format rendering for {value!r}")


def _render(message: _Message, indent: int = 0) -> list[str]:
    """Protobuf text format of a nested dict, in insertion order (Triton's own docs' layout)."""
    pad = "  " * indent
    lines: list[str] = []
    for key, value in message.items():
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{", *_render(value, indent + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key} [")
            for i, item in enumerate(value):
                close = "}," if i < len(value) - 1 else "}"
                lines += [f"{pad}  {{", *_render(item, indent + 2), f"{pad}  {close}"]
            lines.append(f"{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return lines


def _tensor(spec: TensorSpec) -> _Message:
    """Triton's view of one tensor: the batch axis belongs to max_batch_size, -1 marks dynamic H/W."""
    return {
        "name": spec.name,
        "data_type": _Enum(_TRITON_TYPES[spec.dtype]),
        "dims": [-1 if size is None else size for size in spec.shape[1:]],
    }


def triton_config(manifest: Manifest, name: str | None = None, options: TritonOptions | None = None) -> str:
    """The config.pbtxt text for `manifest`'s model, served under `name` (default: the manifest's)."""
    options = options or TritonOptions()
    name = name or manifest.name
    delay_us = round(options.max_batch_delay_ms * 1000)
    timeout_us = round(options.request_timeout_s * 1_000_000)
    kind = "KIND_GPU" if options.instance_kind == "gpu" else "KIND_CPU"
    config: _Message = {
        "name": name,
        "platform": PLATFORM,
        "max_batch_size": options.max_batch_size,
        "input": [_tensor(t) for t in manifest.inputs],
        "output": [_tensor(t) for t in manifest.outputs],
        "dynamic_batching": {
            "preferred_batch_size": [options.max_batch_size],
            "max_queue_delay_microseconds": delay_us,
            "default_queue_policy": {
                "timeout_action": _Enum("REJECT"),
                "default_timeout_microseconds": timeout_us,
                "max_queue_size": options.max_queue_size,
            },
        },
        "instance_group": [{"count": options.instance_count, "kind": _Enum(kind)}],
    }
    header = [
        f"# Triton Inference Server model configuration for {name!r} ({manifest.task}, {manifest.architecture}),",
        "# written by gan-export from a verified export; the manifest.json beside it describes inputs and outputs.",
        f"# Batching mirrors gan-serve: GAN_MAX_BATCH_SIZE={options.max_batch_size}, "
        f"GAN_MAX_BATCH_DELAY_MS={options.max_batch_delay_ms:g}, GAN_MAX_QUEUE_SIZE={options.max_queue_size}, "
        f"GAN_REQUEST_TIMEOUT_S={options.request_timeout_s:g}.",
        "# On a host without a GPU Triton refuses KIND_GPU: use KIND_CPU (gan-export --triton-instance-kind cpu).",
    ]
    return "\n".join(header + _render(config)) + "\n"


def _graph_io(model: onnx.ModelProto) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    initializers = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in initializers], list(model.graph.output)


def check_graph_matches_manifest(model_path: Path, manifest: Manifest) -> None:
    """Refuse a folder whose ONNX graph disagrees with its manifest, since config.pbtxt is built from the
    manifest and Triton would only find out at load time (or, for a dim, at the first request)."""
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... for a corrupt file
        raise TritonExportError(f"{model_path}: not a readable ONNX model ({exc})") from exc
    inputs, outputs = _graph_io(model)
    for role, declared, actual in (("input", manifest.inputs, inputs), ("output", manifest.outputs, outputs)):
        if [t.name for t in declared] != [v.name for v in actual]:
            raise TritonExportError(
                f"{model_path}: graph {role}s {[v.name for v in actual]} != manifest {[t.name for t in declared]}"
            )
        for spec, value in zip(declared, actual, strict=True):
            tensor = value.type.tensor_type
            if tensor.elem_type != _ONNX_TYPES[spec.dtype]:
                raise TritonExportError(
                    f"{model_path}: {role} {spec.name!r} has ONNX element type "
                    f"{onnx.TensorProto.DataType.Name(tensor.elem_type)}, the manifest says {spec.dtype}"
                )
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
            if dims != spec.shape:
                raise TritonExportError(f"{model_path}: {role} {spec.name!r} has shape {dims}, manifest {spec.shape}")
            if spec.shape[:1] != [None]:
                raise TritonExportError(
                    f"{model_path}: {role} {spec.name!r} has no dynamic batch axis, which Triton's batching needs"
                )


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard link (no second copy of a large model on the same filesystem), else a byte copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_triton_model(
    model_dir: Path, triton_repo: Path, name: str | None = None, options: TritonOptions | None = None
) -> Path:
    """Publish the exported model in `model_dir` as `triton_repo/NAME/` and return that folder.

    `model_dir` is one model of a gan-export repository: a flat folder (manifest.json + model.onnx, written as
    Triton version 1), a versioned one (its served version, under the same number), or one version folder
    NAME/<N>/. Nothing is written unless the manifest validates and agrees with the ONNX graph's inputs and
    outputs.
    """
    try:
        served = locate(Path(model_dir))  # a flat folder, a versioned one (its served version), or one version
    except VersionError as exc:
        raise TritonExportError(str(exc)) from exc
    model_dir = served.directory
    manifest = Manifest.read(model_dir)  # ManifestError (a ValueError) names the problem
    model_path = model_dir / MODEL_FILENAME
    if not model_path.is_file():
        raise TritonExportError(f"{model_dir}: no {MODEL_FILENAME}")
    version = str(served.version or MODEL_VERSION)  # Triton numbers versions as we do; flat = 1
    name = name or manifest.name
    if not _NAME.match(name):
        raise TritonExportError(f"model name {name!r} must match {_NAME.pattern}")
    check_graph_matches_manifest(model_path, manifest)
    config = triton_config(manifest, name, options)

    triton_repo = Path(triton_repo)
    triton_repo.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=triton_repo))
    try:
        (staging / CONFIG_FILENAME).write_text(config)
        shutil.copyfile(model_dir / MANIFEST_FILENAME, staging / MANIFEST_FILENAME)
        (staging / version).mkdir()
        _link_or_copy(model_path, staging / version / MODEL_FILENAME)
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the model from a Triton running as another user
        publish_folder(staging, triton_repo / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return triton_repo / name
