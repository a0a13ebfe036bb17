"""ONNX Runtime sessions: one per model, checked against its manifest before it may serve.

Why the checks: a model repository is written by another stage (export) and possibly another
machine, so the service verifies what it can at start-up - the file loads, the graph's input and
output names and fixed dimensions match the manifest, the batch axis is dynamic - and reports a
problem as one line naming the file, instead of failing on the first request.

Why read `session.get_providers()`: onnxruntime-gpu silently falls back to CPU when the CUDA
libraries are missing. The providers actually in use are exposed (/models, `gan_model_info`), and
with `device=cuda` a fallback is a start-up error rather than a slow surprise.

Why CUDA provider options are set explicitly (docs/service.md, "The CUDA path"): ONNX Runtime's
defaults run cuDNN's EXHAUSTIVE convolution-algorithm search again for every new input shape (hundreds
of ms on a live request whenever the batcher forms a batch size it has not seen) and grow the memory
arena by powers of two. The service asks for HEURISTIC search (configurable) and an arena that grows by
what is requested, and warms up every batch size the batcher can form before it reports ready.

Why `images()`: current exports end with the mapping to uint8 NHWC images in the graph (on a GPU it
runs on the device and a quarter of the bytes cross to the host); models exported before return float
NCHW in `output_range`. `images()` is the one place that hides the difference from the endpoints.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service import codecs
from service.manifest import MODEL_FILENAME, Manifest, TensorSpec

log = logging.getLogger("service.runtime")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}

# Size used for dynamic non-batch axes when a dummy input must be invented (warm-up).
_WARMUP_SIDE = 32


class ModelLoadError(RuntimeError):
    """A model that cannot serve; the message names the file and says what is wrong."""


def cuda_options(device_id: int = 0, conv_algo_search: str = "HEURISTIC") -> dict[str, str]:
    """CUDA execution provider options, each chosen on purpose (see the module docstring)."""
    return {
        "device_id": str(device_id),
        # EXHAUSTIVE (ORT's default) benchmarks every algorithm per new shape; HEURISTIC asks cuDNN's
        # heuristics once, at no measurable cost per shape.
        "cudnn_conv_algo_search": conv_algo_search,
        # grow the arena by what a request needs, not by the next power of two (less memory held per
        # worker when several workers share a GPU)
        "arena_extend_strategy": "kSameAsRequested",
        # copies on the compute stream: no cross-stream synchronisation per call
        "do_copy_in_default_stream": "1",
    }


def provider_list(
    providers: list[str], device_id: int = 0, conv_algo_search: str = "HEURISTIC"
) -> list[str | tuple[str, dict[str, str]]]:
    """`providers` with the CUDA provider's options attached (what InferenceSession takes)."""
    return [(name, cuda_options(device_id, conv_algo_search)) if name == CUDA else name for name in providers]


def select_providers(device: str) -> list[str]:
    """Execution providers to request for `device` (auto|cpu|cuda)."""
    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        raise ModelLoadError(
            f"GAN_DEVICE=cuda but this onnxruntime build offers only {available}; "
            "install onnxruntime-gpu (the serve-gpu extra) or set GAN_DEVICE=auto or cpu"
        )
    return [CPU]


@dataclass(frozen=True)
class GraphTensor:
    """One graph input/output as ONNX Runtime reports it (dims are int, str or None)."""

    name: str
    shape: tuple[int | str | None, ...]
    ort_type: str

    @property
    def dtype(self) -> np.dtype | None:
        """numpy dtype of the tensor, or None for a type the service cannot feed."""
        kind = _ORT_DTYPES.get(self.ort_type)
        return np.dtype(kind) if kind is not None else None


@dataclass
class ModelRuntime:
    """A loaded, validated model: its manifest, its session and what runs it."""

    manifest: Manifest
    path: Path
    session: ort.InferenceSession
    providers: list[str]
    inputs: dict[str, GraphTensor]
    output_name: str
    #: Per-call options: arena shrinkage for models whose input shapes vary (see `run_options`).
    run_options: ort.RunOptions | None = None
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    #: Batch sizes run so far (warm-up included), to show that live requests meet no new shape.
    batch_sizes_seen: set[int] = field(default_factory=set)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One ONNX Runtime call; returns the first manifest output: uint8 NHWC images for current
        exports, float32 NCHW for older ones.

        Feeds are cast to the graph's dtype (fp16 models take fp16); called from the model's
        inference threads, so it locks only the counters.
        """
        cast = {
            name: (arr if arr.dtype == self.inputs[name].dtype else arr.astype(self.inputs[name].dtype))
            for name, arr in feeds.items()
        }
        with self._lock:
            self.calls += 1
            self.batch_sizes_seen.add(int(next(iter(cast.values())).shape[0]))
        out = self.session.run([self.output_name], cast, self.run_options)[0]
        return out if out.dtype in (np.float32, np.uint8) else out.astype(np.float32)

    def images(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One call, as [N, H, W, C] uint8 images: straight from a graph that ends with the 8-bit
        mapping, or mapped here (same clip/scale/round-half-even) for a float NCHW graph."""
        out = self.run(feeds)
        if out.dtype == np.uint8:
            return out
        return codecs.to_uint8(out, self.manifest.output_range)

    def input_rank(self, name: str) -> int:
        return len(self.inputs[name].shape)

    def shape_latents(self, latents: np.ndarray) -> np.ndarray:
        """Reshape [N, latent_dim] to the latent input's declared rank (e.g. [N, 100, 1, 1])."""
        spec = self.inputs[self.manifest.inputs[0].name]
        extra = len(spec.shape) - latents.ndim
        return latents.reshape(latents.shape + (1,) * extra) if extra > 0 else latents

    def dummy_feeds(self, batch: int) -> dict[str, np.ndarray]:
        """Zero inputs of `batch` rows, for warm-up; dynamic non-batch axes get a small size."""
        feeds = {}
        side = self.manifest.image_size or _WARMUP_SIDE
        for spec in self.manifest.inputs:
            graph = self.inputs[spec.name]
            dims = [batch]
            for mdim, gdim in zip(spec.shape[1:], graph.shape[1:], strict=False):
                dims.append(mdim if isinstance(mdim, int) else gdim if isinstance(gdim, int) else side)
            feeds[spec.name] = np.zeros(dims, dtype=np.float32)
        return feeds


def _graph_tensors(items: list[ort.NodeArg]) -> dict[str, GraphTensor]:
    return {item.name: GraphTensor(item.name, tuple(item.shape), item.type) for item in items}


def _check_tensors(kind: str, manifest_specs: list[TensorSpec], graph: dict[str, GraphTensor], where: str) -> None:
    wanted = [spec.name for spec in manifest_specs]
    if set(wanted) - set(graph) or (kind == "inputs" and set(graph) - set(wanted)):
        raise ModelLoadError(
            f"{where}: graph {kind} {sorted(graph)} do not match the manifest's {kind} {sorted(wanted)} "
            "(is this model.onnx from a different export?)"
        )
    for spec in manifest_specs:
        tensor = graph[spec.name]
        if tensor.dtype is None or tensor.dtype.name != spec.dtype:
            raise ModelLoadError(
                f"{where}: {kind[:-1]} {spec.name!r} is {tensor.ort_type} in the graph but {spec.dtype} in the manifest"
            )
        if len(tensor.shape) != len(spec.shape):
            raise ModelLoadError(
                f"{where}: {kind[:-1]} {spec.name!r} has rank {len(tensor.shape)} in the graph "
                f"but {len(spec.shape)} in the manifest"
            )
        if isinstance(tensor.shape[0], int):
            raise ModelLoadError(
                f"{where}: {kind[:-1]} {spec.name!r} has a fixed batch axis ({tensor.shape[0]}); "
                "the service needs a dynamic batch axis (export with dynamic axes)"
            )
        for axis, (mdim, gdim) in enumerate(zip(spec.shape, tensor.shape, strict=True)):
            if isinstance(mdim, int) and isinstance(gdim, int) and mdim != gdim:
                raise ModelLoadError(
                    f"{where}: {kind[:-1]} {spec.name!r} axis {axis} is {gdim} in the graph but {mdim} in the manifest"
                )


def _check_manifest_io(manifest: Manifest, where: str) -> None:
    if manifest.task == "generate":
        latent = manifest.inputs[0]
        if len(manifest.inputs) != 1 or len(latent.shape) < 2 or latent.shape[1] != manifest.latent_dim:
            raise ModelLoadError(
                f"{where}: a generate model needs one input shaped [None, latent_dim, 1...]; "
                f"got {[s.model_dump() for s in manifest.inputs]} with latent_dim={manifest.latent_dim}"
            )
        if any(d != 1 for d in latent.shape[2:]):
            raise ModelLoadError(f"{where}: latent input {latent.name!r} has non-1 trailing axes {latent.shape}")
    if not manifest.outputs:
        raise ModelLoadError(f"{where}: the manifest declares no outputs")


def session_options(intra_op_threads: int = 0, spinning: bool = False) -> ort.SessionOptions:
    """The ONNX Runtime options of every served model (bench/raw_ort.py measures with these too)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    # By default ORT's pool threads spin between calls, stealing the cores the event loop and the
    # codec threads need to prepare the next batch; on a small CPU host that costs throughput.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    return options


def run_options(task: str, providers: list[str], cuda_device_id: int = 0) -> ort.RunOptions | None:
    """Per-call options for a model of `task`: super-resolution calls shrink the memory arena back.

    ONNX Runtime's arena keeps the peak of every call for the life of the session, and a
    super-resolution call's size follows the upload (tile shapes and feature maps x `scale`), so one
    large image would raise the process's memory for good. With `memory.enable_memory_arena_shrinkage`
    each call returns what it grew by; measured on an SRResNet (bench/bench_memory.py) it costs no
    throughput, while turning the CPU arena off was ~15% slower and left glibc holding the freed pages.
    Models with fixed shapes (generate, translate) reach a steady arena and keep it.
    """
    if task != "super_resolve":
        return None
    options = ort.RunOptions()
    devices = f"cpu:0;gpu:{cuda_device_id}" if CUDA in providers else "cpu:0"  # the GPU this session runs on
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", devices)
    return options


def load_runtime(
    directory: Path,
    manifest: Manifest,
    device: str,
    intra_op_threads: int = 0,
    spinning: bool = False,
    cuda_device_id: int = 0,
    cudnn_conv_algo_search: str = "HEURISTIC",
) -> ModelRuntime:
    """Create and validate the session for `directory/model.onnx`; raise ModelLoadError on any problem."""
    path = Path(directory) / MODEL_FILENAME
    if not path.is_file():
        raise ModelLoadError(f"{path}: missing (the manifest is there but the ONNX file is not)")
    _check_manifest_io(manifest, str(path.parent / "manifest.json"))
    requested = select_providers(device)
    options = session_options(intra_op_threads, spinning)
    try:
        session = ort.InferenceSession(
            str(path),
            sess_options=options,
            providers=provider_list(requested, cuda_device_id, cudnn_conv_algo_search),
        )
    except Exception as exc:  # ORT raises several private exception types for bad files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path}: not a loadable ONNX model ({first_line})") from None
    actual = list(session.get_providers())
    if CUDA in requested and CUDA not in actual:
        message = (
            f"{path}: CUDA was requested but ONNX Runtime fell back to {actual} "
            "(are the CUDA and cuDNN libraries onnxruntime-gpu needs installed?)"
        )
        if device == "cuda":
            raise ModelLoadError(message)
        log.warning("%s; serving on CPU", message)
    inputs = _graph_tensors(session.get_inputs())
    outputs = _graph_tensors(session.get_outputs())
    _check_tensors("inputs", manifest.inputs, inputs, str(path))
    _check_tensors("outputs", manifest.outputs, outputs, str(path))
    return ModelRuntime(
        manifest=manifest,
        path=path,
        session=session,
        providers=actual,
        inputs=inputs,
        output_name=manifest.outputs[0].name,
        run_options=run_options(manifest.task, actual, cuda_device_id),
    )
