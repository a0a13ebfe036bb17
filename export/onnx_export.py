"""Checkpoint -> verified ONNX model + manifest in a model repository.

Verification is not optional: the ONNX checker, then ONNX Runtime against PyTorch on random inputs at
several batch sizes (and spatial sizes where they are dynamic). An export that fails either writes
nothing, so a model repository only ever holds models that were proven to match their checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from export.folders import publish_folder, publish_version
from service.manifest import MODEL_FILENAME, Manifest, Provenance, TensorSpec
from service.versions import is_versioned
from trainer.export_spec import ExportSpec
from trainer.provenance import training_command
from trainer.registry import get_architecture
from trainer.training.checkpoint import load_checkpoint, resolve_checkpoint

DEFAULT_OPSET = 18
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}
PARITY_BATCH_SIZES = (1, 3, 8)


class ExportError(RuntimeError):
    """The export did not produce a model we can vouch for; nothing was written."""


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    manifest: Manifest
    #: The version number it was published as (REPO/NAME/<N>/), None for the flat layout.
    version: int | None = None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _dynamic_shapes(spec: ExportSpec) -> tuple[dict[str, dict[int, torch.export.Dim]], ...]:
    dims: dict[str, torch.export.Dim] = {}
    per_input = []
    for decl in spec.inputs:
        axes = {}
        for axis, size in enumerate(decl.shape):
            if size is None:
                name = ("batch", "batch", "height", "width")[axis] if axis < 4 else f"dim{axis}"
                dims.setdefault(name, torch.export.Dim(name, min=1 if name == "batch" else 8, max=1 << 14))
                axes[axis] = dims[name]
        per_input.append(axes)
    return tuple(per_input)


def _examples(spec: ExportSpec, batch: int, rng: torch.Generator, size: int | None = None) -> tuple[torch.Tensor, ...]:
    tensors = []
    for decl in spec.inputs:
        if decl.example is None:
            raise ExportError(f"input {decl.name!r} declares no example generator")
        tensors.append(decl.example(batch, rng, size))
    return tuple(tensors)


def _write_onnx(spec: ExportSpec, path: Path, opset: int) -> None:
    example = _examples(spec, 2, torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        torch.onnx.export(
            spec.module,
            example,
            str(path),
            input_names=[d.name for d in spec.inputs],
            output_names=[d.name for d in spec.outputs],
            dynamic_shapes=_dynamic_shapes(spec),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )


def _to_fp16(path: Path) -> None:
    """Half-precision weights and compute, float32 inputs/outputs, so the service feeds the same arrays."""
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise ExportError("--fp16 needs onnxconverter-common (pip install 'gan-forge[export]')") from exc
    model = float16.convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.save(model, str(path))


def verify_parity(spec: ExportSpec, path: Path, tolerance: float) -> float:
    """Largest |ORT - PyTorch| over several batch (and spatial) sizes; raises above `tolerance`."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the ONNX checker rejected the exported graph: {exc}") from exc
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = torch.Generator().manual_seed(1234)
    cases = [(b, None) for b in PARITY_BATCH_SIZES] + [(2, s) for s in spec.example_sizes]
    worst = 0.0
    for batch, size in cases:
        inputs = _examples(spec, batch, rng, size)
        with torch.no_grad():
            expected = spec.module(*inputs)
        feeds = {d.name: t.numpy() for d, t in zip(spec.inputs, inputs, strict=True)}
        (actual,) = session.run([spec.outputs[0].name], feeds)
        if actual.shape != tuple(expected.shape):
            raise ExportError(f"ONNX output shape {actual.shape} != PyTorch {tuple(expected.shape)} at batch {batch}")
        error = float(np.abs(actual.astype(np.float64) - expected.numpy().astype(np.float64)).max())
        worst = max(worst, error)
    if not np.isfinite(worst) or worst > tolerance:
        raise ExportError(
            f"ONNX Runtime output differs from PyTorch by {worst:.3g} (tolerance {tolerance:g}); "
            "the model was not written"
        )
    return worst


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("torch", "onnx", "onnxruntime", "onnxscript"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _tensor_specs(decls: list, dtype: str = "float32") -> list[TensorSpec]:
    return [TensorSpec(name=d.name, shape=list(d.shape), dtype=dtype) for d in decls]


def export_checkpoint(
    checkpoint: Path,
    repository: Path,
    name: str | None = None,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    new_version: bool = False,
    serve: bool = True,
) -> ExportResult:
    """Rebuild the served generator from `checkpoint`, export, verify and publish it as REPO/NAME/.

    A flat REPO/NAME/ is replaced, unless `new_version`: then, as whenever REPO/NAME/ already holds versions,
    the export becomes REPO/NAME/<N+1>/ beside the older versions, and with `serve` serving.json points at it
    (service/versions.py). A failed parity check publishes nothing either way.
    """
    checkpoint_path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(checkpoint_path)
    arch = get_architecture(state["arch"])
    config = arch.make_config(state["config"])
    generator = arch.build_generator(config)
    generator.load_state_dict(state[arch.served_generator_key])
    generator.eval()
    spec = arch.export_spec(config, generator)
    spec.module.eval()
    name = name or arch.name
    precision = "fp16" if fp16 else "fp32"
    tolerance = TOLERANCE[precision]

    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repository))
    # mkdtemp makes it 0700; a model folder must be readable by a service running as another user
    # (the serving image's uid 10001 reading a bind-mounted repository)
    staging.chmod(0o755)
    try:
        model_path = staging / MODEL_FILENAME
        _write_onnx(spec, model_path, opset)
        if fp16:
            _to_fp16(model_path)
        error = verify_parity(spec, model_path, tolerance)
        manifest = Manifest(
            name=name,
            task=spec.task,
            architecture=arch.name,
            inputs=_tensor_specs(spec.inputs),
            outputs=_tensor_specs(spec.outputs),
            precision=precision,
            parity_max_abs_error=error,
            parity_tolerance=tolerance,
            provenance=Provenance(
                checkpoint_sha256=sha256_of(checkpoint_path),
                training_step=int(state["step"]),
                images_seen=state.get("images_seen"),
                exported_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                versions=_versions(),
                opset=opset,
                training_command=training_command(state),
            ),
            **spec.manifest_fields,
        )
        manifest.write(staging)
        model_dir = repository / name
        if new_version or is_versioned(model_dir):
            directory, version = publish_version(staging, model_dir, serve)
        else:
            publish_folder(staging, model_dir)
            directory, version = model_dir, None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(directory, manifest, version)
