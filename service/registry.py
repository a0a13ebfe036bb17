"""The model registry: every model in the repository, loaded, validated, warmed up, batched.

Loading (manifest + session + checks) is synchronous and all-or-nothing: a repository with one bad
model refuses to start, listing every problem, because serving a partial repository would turn an
export mistake into 404s in production. Warm-up runs afterwards in the background: one call at
every batch size the batcher can form (1..max_batch_size), so lazy allocations, memory planning and
kernel (cuDNN algorithm) selection for each shape happen before traffic, not on a live request; the
service reports ready only when every model has been warmed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from service.batching import Batcher
from service.manifest import MANIFEST_FILENAME, Manifest, ManifestError, Task
from service.metrics import Metrics
from service.runtime import CPU, ModelLoadError, ModelRuntime, load_runtime, select_providers
from service.settings import Settings
from service.workers import threads_per_worker

log = logging.getLogger("service.registry")

State = Literal["loaded", "warming", "ready", "failed"]


@dataclass
class ModelEntry:
    """One served model and its state."""

    name: str
    directory: Path
    manifest: Manifest
    runtime: ModelRuntime
    batcher: Batcher | None = None
    streams: int = 1
    state: State = "loaded"
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask / container cpuset, not the host's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def inference_threads(settings: Settings) -> tuple[int, int]:
    """(streams, intra-op threads per call) for each model; 0 threads = ONNX Runtime's default.

    Auto (0) is one stream. With several streams or worker processes on CPU the cores are split
    between them (each ONNX Runtime call synchronises fewer threads, and one batch computes while the
    next one fills); docs/benchmarks.md compares the layouts.
    """
    cpu_only = select_providers(settings.device) == [CPU]
    cores = cpu_count()
    streams = settings.inference_streams or 1
    workers = max(1, settings.workers)
    split = cpu_only and (streams > 1 or workers > 1)
    threads = settings.intra_op_threads or (threads_per_worker(cores, workers, streams) if split else 0)
    return streams, threads


class ModelRegistry:
    """All models of one service process, by manifest name."""

    def __init__(self, entries: list[ModelEntry], settings: Settings) -> None:
        self.settings = settings
        self.entries: dict[str, ModelEntry] = {entry.name: entry for entry in entries}
        self._metrics: Metrics | None = None

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, settings: Settings, cuda_device_id: int = 0) -> ModelRegistry:
        """Load every `model_dir/*/manifest.json`; raise one ModelLoadError listing all problems.

        `cuda_device_id`: the CUDA device of this worker process (see service.workers.device_for)."""
        root = Path(settings.model_dir)
        if not root.is_dir():
            raise ModelLoadError(f"{root}: model directory does not exist (set GAN_MODEL_DIR or --model-dir)")
        problems: list[str] = []
        entries: list[ModelEntry] = []
        streams, intra_op_threads = inference_threads(settings)
        # Hidden directories are skipped: gan-export stages a model in `.<name>.*` and renames it
        # into place, so a service starting mid-export must not pick up the half-written copy.
        for directory in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not (directory / MANIFEST_FILENAME).is_file():
                log.warning("%s: no %s, skipped", directory, MANIFEST_FILENAME)
                continue
            try:
                manifest = Manifest.read(directory)
                runtime = load_runtime(
                    directory,
                    manifest,
                    settings.device,
                    intra_op_threads=intra_op_threads,
                    spinning=settings.intra_op_spinning,
                    cuda_device_id=cuda_device_id,
                    cudnn_conv_algo_search=settings.cudnn_conv_algo_search,
                )
            except (ManifestError, ModelLoadError) as exc:
                problems.append(str(exc))
                continue
            entries.append(ModelEntry(manifest.name, directory, manifest, runtime, streams=streams))
            log.info(
                "loaded %s (%s, %s) on %s, %d inference stream(s) x %s intra-op thread(s)",
                manifest.name,
                manifest.task,
                manifest.architecture,
                runtime.providers,
                streams,
                intra_op_threads or "default",
            )
        names = [entry.name for entry in entries]
        for name in sorted({n for n in names if names.count(n) > 1}):
            dirs = [str(e.directory) for e in entries if e.name == name]
            problems.append(f"model name {name!r} is declared by several manifests: {dirs}")
        if not problems and not entries:
            problems.append(f"{root}: no models found (expected {root}/<name>/{MANIFEST_FILENAME})")
        if problems:
            raise ModelLoadError("cannot load the model repository:\n  " + "\n  ".join(problems))
        return cls(entries, settings)

    # ------------------------------------------------------------------ lookup

    def get(self, name: str | None, task: Task) -> ModelEntry | None:
        """The model called `name`, or without a name the first model (by name) of `task`."""
        if name is None:
            return next((e for _, e in sorted(self.entries.items()) if e.manifest.task == task), None)
        return self.entries.get(name)

    @property
    def ready(self) -> bool:
        return bool(self.entries) and all(entry.ready for entry in self.entries.values())

    def not_ready_reasons(self) -> list[str]:
        return [f"{entry.name}: {entry.error or entry.state}" for entry in self.entries.values() if not entry.ready]

    # ------------------------------------------------------------------ lifecycle

    def start(self, metrics: Metrics | None = None, finish_executor: Executor | None = None) -> None:
        """Create each model's batcher (inside the running event loop) and publish model info.

        `finish_executor` runs the per-request response building (the app's codec pool)."""
        s = self.settings
        self._metrics = metrics
        for entry in self.entries.values():
            entry.batcher = Batcher(
                entry.name,
                entry.runtime.images,
                max_batch_size=s.max_batch_size,
                max_batch_delay_s=s.max_batch_delay_ms / 1000.0,
                max_queue_rows=s.max_queue_size,
                metrics=metrics,
                finish_executor=finish_executor,
                streams=entry.streams,
            )
            entry.batcher.start()
            if metrics is not None:
                m = entry.manifest
                metrics.model_info.labels(
                    model=entry.name,
                    task=m.task,
                    architecture=m.architecture,
                    providers=",".join(entry.runtime.providers),
                    device="cuda" if "CUDAExecutionProvider" in entry.runtime.providers else "cpu",
                    precision=m.precision,
                ).set(1)
                metrics.model_ready.labels(entry.name).set(0)

    def warmup_batch_sizes(self) -> list[int]:
        """Every batch size the batcher can form (it sends 1..max_batch_size rows, nothing else), or with
        GAN_WARMUP=ends only the two ends (a slow CPU model: a new shape costs little on CPU)."""
        if self.settings.warmup == "ends":
            return sorted({1, self.settings.max_batch_size})
        return list(range(1, self.settings.max_batch_size + 1))

    async def warm_up(self) -> None:
        """Run each model at every batch size the batcher can form, on its own inference thread(s)."""
        loop = asyncio.get_running_loop()
        for entry in self.entries.values():
            entry.state = "warming"
            try:
                executor = entry.batcher.executor if entry.batcher is not None else None
                for batch in self.warmup_batch_sizes():
                    feeds = entry.runtime.dummy_feeds(batch)
                    out = await loop.run_in_executor(executor, entry.runtime.images, feeds)
                    if out.shape[0] != batch:
                        raise RuntimeError(f"returned {out.shape[0]} rows for a batch of {batch}")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                entry.state = "failed"
                entry.error = f"warm-up failed: {exc}"
                log.error("%s: %s", entry.runtime.path, entry.error)
                continue
            entry.state = "ready"
            if self._metrics is not None:
                self._metrics.model_ready.labels(entry.name).set(1)
            log.info("%s warmed up and ready", entry.name)

    async def stop(self) -> None:
        for entry in self.entries.values():
            if entry.batcher is not None:
                await entry.batcher.close()
