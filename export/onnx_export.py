"""Checkpoint -> verified ONNX model + manifest in a model repository.

Verification is not optional: the ONNX checker, then ONNX Runtime against PyTorch on random inputs at
several batch sizes (and spatial sizes where they are dynamic), first on the float graph, then on the
final graph that ends with the mapping to 8-bit NHWC images (`export.image_output`). An export that
fails either writes nothing, so a model repository only ever holds models that were proven to match
their checkpoint.
"""

from __future__ import annotations

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
from export.image_output import LAYOUT, append_uint8_mapping, uint8_parity
from service.manifest import MODEL_FILENAME, Manifest, Provenance, TensorSpec
from service.versions import is_versioned
from trainer.export_spec import ExportSpec
from trainer.hashing import sha256_file
from trainer.provenance import training_command
from trainer.served import load_served_generator
from trainer.training.checkpoint import initialised_from, resolve_checkpoint

DEFAULT_OPSET = 18
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}
PRECISIONS = tuple(TOLERANCE)
PARITY_BATCH_SIZES = (1, 3, 8)


class ExportError(RuntimeError):
    """The export did not produce a model we can vouch for; nothing was written."""


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    manifest: Manifest
    #: The version number it was published as (REPO/NAME/<N>/), None for the flat layout.
    version: int | None = None


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
    with warnings.catch_warnings():  # one "truncated to 1e-07" warning per tiny weight: noise, not news
        warnings.simplefilter("ignore", UserWarning)
        model = float16.convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.save(model, str(path))


Case = tuple[dict[str, np.ndarray], np.ndarray]


def parity_cases(spec: ExportSpec) -> list[Case]:
    """(ONNX feeds, PyTorch output) on random inputs at several batch (and spatial) sizes."""
    rng = torch.Generator().manual_seed(1234)
    cases = []
    for batch, size in [(b, None) for b in PARITY_BATCH_SIZES] + [(2, s) for s in spec.example_sizes]:
        inputs = _examples(spec, batch, rng, size)
        with torch.no_grad():
            expected = spec.module(*inputs).numpy()
        cases.append(({d.name: t.numpy() for d, t in zip(spec.inputs, inputs, strict=True)}, expected))
    return cases


def _check_graph(path: Path) -> ort.InferenceSession:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the ONNX checker rejected the exported graph: {exc}") from exc
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def verify_parity(spec: ExportSpec, path: Path, tolerance: float, cases: list[Case] | None = None) -> float:
    """Largest |ORT - PyTorch| of the float graph over several batch (and spatial) sizes; raises above
    `tolerance`."""
    session = _check_graph(path)
    worst = 0.0
    for feeds, expected in cases or parity_cases(spec):
        (actual,) = session.run([spec.outputs[0].name], feeds)
        if actual.shape != expected.shape:
            batch = expected.shape[0]
            raise ExportError(f"ONNX output shape {actual.shape} != PyTorch {expected.shape} at batch {batch}")
        error = float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max())
        worst = max(worst, error)
    if not np.isfinite(worst) or worst > tolerance:
        raise ExportError(
            f"ONNX Runtime output differs from PyTorch by {worst:.3g} (tolerance {tolerance:g}); "
            "the model was not written"
        )
    return worst


def verify_uint8_parity(
    spec: ExportSpec, path: Path, value_range: tuple[float, float], tolerance: float, cases: list[Case]
) -> int:
    """The final graph's 8-bit images against the same mapping of PyTorch's output: at most 1 level off,
    and only on rounding ties (see `export.image_output.uint8_parity`). Returns the largest level error."""
    session = _check_graph(path)
    worst = 0
    for feeds, expected in cases:
        (actual,) = session.run([spec.outputs[0].name], feeds)
        try:
            worst = max(worst, uint8_parity(actual, expected, value_range, tolerance))
        except ValueError as exc:
            raise ExportError(f"8-bit output: {exc}; the model was not written") from None
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


def _image_output_specs(decls: list) -> list[TensorSpec]:
    """The graph's outputs after the 8-bit mapping: uint8, [N, C, H, W] declared as [N, H, W, C]."""
    return [
        TensorSpec(name=d.name, shape=[d.shape[0], d.shape[2], d.shape[3], d.shape[1]], dtype="uint8", layout=LAYOUT)
        for d in decls
    ]


def export_checkpoint(
    checkpoint: Path,
    repository: Path,
    name: str | None = None,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    new_version: bool = False,
    serve: bool = True,
    precision: str | None = None,
) -> ExportResult:
    """Rebuild the served generator from `checkpoint`, export, verify and publish it as REPO/NAME/.

    A flat REPO/NAME/ is replaced, unless `new_version`: then, as whenever REPO/NAME/ already holds versions,
    the export becomes REPO/NAME/<N+1>/ beside the older versions, and with `serve` serving.json points at it
    (service/versions.py). A failed parity check publishes nothing either way. `precision` is "fp32" or
    "fp16" (`fp16=True` is the older spelling of "fp16").
    """
    checkpoint_path = resolve_checkpoint(checkpoint)
    served = load_served_generator(checkpoint_path)
    state, arch = served.checkpoint, served.architecture
    spec = served.export_spec()
    name = name or arch.name
    precision = precision or ("fp16" if fp16 else "fp32")
    if precision not in TOLERANCE:
        raise ValueError(f"precision must be one of {list(TOLERANCE)}, not {precision!r}")
    tolerance = TOLERANCE[precision]
    output_range = tuple(spec.manifest_fields.get("output_range", (-1.0, 1.0)))

    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repository))
    # mkdtemp makes it 0700; a model folder must be readable by a service running as another user
    # (the serving image's uid 10001 reading a bind-mounted repository)
    staging.chmod(0o755)
    try:
        model_path = staging / MODEL_FILENAME
        _write_onnx(spec, model_path, opset)
        if precision == "fp16":
            _to_fp16(model_path)
        cases = parity_cases(spec)
        error = verify_parity(spec, model_path, tolerance, cases)
        append_uint8_mapping(model_path, spec.outputs[0].name, output_range)
        level_error = verify_uint8_parity(spec, model_path, output_range, tolerance, cases)
        manifest = Manifest(
            name=name,
            task=spec.task,
            architecture=arch.name,
            inputs=_tensor_specs(spec.inputs),
            outputs=_image_output_specs(spec.outputs),
            precision=precision,
            parity_max_abs_error=error,
            parity_max_level_error=level_error,
            parity_tolerance=tolerance,
            provenance=Provenance(
                checkpoint_sha256=sha256_file(checkpoint_path),
                training_step=int(state["step"]),
                images_seen=state.get("images_seen"),
                exported_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                versions=_versions(),
                opset=opset,
                training_command=training_command(state),
                # only where the run started from another's weights (SRGAN), so other manifests are unchanged
                **({"initialised_from": start} if (start := initialised_from(state)) else {}),
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
