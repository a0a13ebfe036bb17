"""The models this process serves: every model of the repository, loaded, validated, warmed up, batched.

(Not to be confused with trainer/registry.py, the table of trainable architectures: this module
holds live ONNX Runtime sessions and their batchers, by the manifest's model name.)

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
from service.versions import ModelVersion, VersionError, is_model_folder, resolve
from service.workers import threads_per_worker

log = logging.getLogger("service.served_models")

State = Literal["loaded", "warming", "ready", "failed"]


@dataclass(eq=False)
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
    #: Which folder of the repository this is (the version, or the flat layout); None when built by hand.
    version: ModelVersion | None = None
    #: Why the last attempt to swap in a newer version failed (this entry kept serving), if it did.
    swap_error: str | None = None
    #: ModelVersion.fingerprint() of the folder when it was read: a later, different one means a new export.
    fingerprint: tuple[int | None, int, int] | None = None

    @property
    def version_label(self) -> str:
        return self.version.label if self.version is not None else "flat"

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


def load_entry(version: ModelVersion, settings: Settings, cuda_device_id: int = 0) -> ModelEntry:
    """Read, open and check one model version (synchronous: start-up, or a swap's worker thread).

    `cuda_device_id`: the CUDA device of this worker process (see service.workers.device_for)."""
    streams, intra_op_threads = inference_threads(settings)
    try:
        fingerprint = version.fingerprint()  # before reading: a change while loading shows up at the next poll
    except OSError:
        fingerprint = None  # Manifest.read below says what is missing
    manifest = Manifest.read(version.directory)
    runtime = load_runtime(
        version.directory,
        manifest,
        settings.device,
        intra_op_threads=intra_op_threads,
        spinning=settings.intra_op_spinning,
        cuda_device_id=cuda_device_id,
        cudnn_conv_algo_search=settings.cudnn_conv_algo_search,
    )
    log.info(
        "loaded %s version %s (%s, %s) on %s, %d inference stream(s) x %s intra-op thread(s)",
        manifest.name,
        version.label,
        manifest.task,
        manifest.architecture,
        runtime.providers,
        streams,
        intra_op_threads or "default",
    )
    return ModelEntry(manifest.name, version.directory, manifest, runtime, streams=streams, version=version,
                      fingerprint=fingerprint)


class ServedModels:
    """All models of one service process, by manifest name."""

    def __init__(self, entries: list[ModelEntry], settings: Settings, cuda_device_id: int = 0) -> None:
        self.settings = settings
        #: This worker's CUDA device; version swaps load the new version on it too.
        self.cuda_device_id = cuda_device_id
        #: gan_model_info's label values per model, to retire a set when a swap changes them.
        self._info: dict[str, dict[str, str]] = {}
        self.entries: dict[str, ModelEntry] = {entry.name: entry for entry in entries}
        self._metrics: Metrics | None = None
        self._finish_executor: Executor | None = None
        #: Entries replaced by a version swap, still finishing the requests that started on them.
        self.retired: set[ModelEntry] = set()

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, settings: Settings, cuda_device_id: int = 0) -> ServedModels:
        """Load every `model_dir/*/manifest.json`; raise one ModelLoadError listing all problems.

        `cuda_device_id`: the CUDA device of this worker process (see service.workers.device_for)."""
        root = Path(settings.model_dir)
        if not root.is_dir():
            raise ModelLoadError(f"{root}: model directory does not exist (set GAN_MODEL_DIR or --model-dir)")
        problems: list[str] = []
        entries: list[ModelEntry] = []
        # Hidden directories are skipped: gan-export stages a model in `.<name>.*` and renames it
        # into place, so a service starting mid-export must not pick up the half-written copy.
        for directory in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not is_model_folder(directory):
                log.warning("%s: no %s (nor version folders), skipped", directory, MANIFEST_FILENAME)
                continue
            try:
                entries.append(load_entry(resolve(directory), settings, cuda_device_id))
            except (ManifestError, ModelLoadError, VersionError) as exc:
                problems.append(str(exc))
        names = [entry.name for entry in entries]
        for name in sorted({n for n in names if names.count(n) > 1}):
            dirs = [str(e.directory) for e in entries if e.name == name]
            problems.append(f"model name {name!r} is declared by several manifests: {dirs}")
        if not problems and not entries:
            problems.append(f"{root}: no models found (expected {root}/<name>/{MANIFEST_FILENAME})")
        if problems:
            raise ModelLoadError("cannot load the model repository:\n  " + "\n  ".join(problems))
        return cls(entries, settings, cuda_device_id)

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

    def batch_size(self, entry: ModelEntry) -> int:
        """Most rows per ONNX Runtime call for `entry`: super-resolution tiles carry x`scale` feature
        maps, so their batch (and with it the process's peak memory) has its own bound."""
        s = self.settings
        if entry.manifest.task == "super_resolve" and s.sr_max_batch_size:
            return min(s.sr_max_batch_size, s.max_batch_size)
        return s.max_batch_size

    # ------------------------------------------------------------------ lifecycle

    def start(self, metrics: Metrics | None = None, finish_executor: Executor | None = None) -> None:
        """Create each model's batcher (inside the running event loop) and publish model info.

        `finish_executor` runs the per-request response building (the app's codec pool)."""
        self._metrics = metrics
        self._finish_executor = finish_executor
        for entry in self.entries.values():
            self.start_entry(entry)
            self.publish_info(entry)
            if metrics is not None:
                metrics.model_ready.labels(entry.name).set(0)

    def start_entry(self, entry: ModelEntry) -> None:
        """Create and start `entry`'s batcher (in the running loop); start() and version swaps use it."""
        s = self.settings
        entry.batcher = Batcher(
            entry.name,
            entry.runtime.images,
            max_batch_size=self.batch_size(entry),
            max_batch_delay_s=s.max_batch_delay_ms / 1000.0,
            max_queue_rows=s.max_queue_size,
            metrics=self._metrics,
            finish_executor=self._finish_executor,
            streams=entry.streams,
        )
        entry.batcher.start()

    def publish_info(self, entry: ModelEntry) -> None:
        """gan_model_info and gan_model_version for the entry now serving under its name."""
        if self._metrics is None:
            return
        m = entry.manifest
        labels = {
            "model": entry.name,
            "task": m.task,
            "architecture": m.architecture,
            "providers": ",".join(entry.runtime.providers),
            "device": "cuda" if "CUDAExecutionProvider" in entry.runtime.providers else "cpu",
            "precision": m.precision,
            "version": entry.version_label,
        }
        info = self._metrics.model_info
        old = self._info.get(entry.name)
        if old is not None and old != labels:
            # an Info would replace its value; a gauge (multiprocess mode has no Info) keeps each label set:
            # zero the old one (what the workers' shared files keep) and drop it from this process's registry
            info.labels(**old).set(0)
            info.remove(*old.values())
        info.labels(**labels).set(1)
        self._info[entry.name] = labels
        number = entry.version.version if entry.version is not None else None
        self._metrics.model_version.labels(entry.name).set(number or 0)  # 0: the flat layout

    def warmup_batch_sizes(self, entry: ModelEntry) -> list[int]:
        """Every batch size `entry`'s batcher can form (it sends 1..batch_size(entry) rows, nothing else), or
        with GAN_WARMUP=ends only the two ends (a slow CPU model: a new shape costs little on CPU)."""
        largest = self.batch_size(entry)
        if self.settings.warmup == "ends":
            return sorted({1, largest})
        return list(range(1, largest + 1))

    async def warm_up(self) -> None:
        """Run each model at every batch size the batcher can form, on its own inference thread(s)."""
        for entry in self.entries.values():
            entry.state = "warming"
            try:
                await self.warm_entry(entry)
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

    async def warm_entry(self, entry: ModelEntry) -> None:
        """One call at each of `warmup_batch_sizes(entry)`, on the entry's inference thread; raises on failure
        (including a model that answers with the wrong number of rows)."""
        loop = asyncio.get_running_loop()
        executor = entry.batcher.executor if entry.batcher is not None else None
        for batch in self.warmup_batch_sizes(entry):
            feeds = entry.runtime.dummy_feeds(batch)
            out = await loop.run_in_executor(executor, entry.runtime.images, feeds)
            if out.shape[0] != batch:
                raise RuntimeError(f"returned {out.shape[0]} rows for a batch of {batch}")

    async def stop(self) -> None:
        for entry in [*self.entries.values(), *self.retired]:
            if entry.batcher is not None:
                await entry.batcher.close()
        self.retired.clear()
