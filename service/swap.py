"""Version swaps without downtime: each service process polls its model folders and switches versions live.

Why polling (every `GAN_MODEL_POLL_S` seconds) rather than SIGHUP or an admin endpoint: the thing that says
which version to serve is a file in the model repository (`serving.json`, service/versions.py), shared by
every worker process and every replica that mounts it. Each process notices the change by itself, so it
works the same with one process, `--workers N`, or twenty replicas on a shared volume; an HTTP endpoint
reaches one worker of one replica, and a signal must be delivered to every process of every host. A stat and
a tiny read per model every few seconds cost nothing, and the read-only model mount stays read-only.

A swap, per model, in one process:
  1. load the new version off the event loop (manifest, ONNX Runtime session, graph checks), refuse it if its
     name or task differ from the served one (clients' requests would change meaning);
  2. start its batcher and warm it up (the batch sizes of GAN_WARMUP), still beside the old version;
  3. switch: one dict assignment on the event loop, so every request resolves either the old or the new
     version, never a mix; requests that already hold the old entry finish on it;
  4. retire the old version after `request_timeout_s` (no request that resolved it can still be waiting for
     inference later than that without having timed out) once its batcher is idle, then free it.
Any failure in 1-2 leaves the old version serving: the refusal is logged, counted
(`gan_model_swaps_total{result="refused"}`) and shown as `swap_error` in GET /models; the same folder is not
retried until it changes again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress

from service.metrics import Metrics
from service.served_models import ModelEntry, ServedModels, load_entry
from service.settings import Settings
from service.versions import ModelVersion, VersionError, resolve

log = logging.getLogger("service.swap")

Fingerprint = tuple[int | None, int, int]


class SwapRefused(Exception):
    """The new version cannot serve; the old one keeps serving. The message says why."""


class VersionWatcher:
    """Follows the served version of every model of one process's ServedModels."""

    def __init__(self, models: ServedModels, settings: Settings, metrics: Metrics | None = None) -> None:
        self.models = models
        self.settings = settings
        self.metrics = metrics
        self._lock = asyncio.Lock()
        #: Per model: the fingerprint of the last folder refused, so that it is not retried until it changes.
        self._seen: dict[str, Fingerprint] = {}
        self._problems: dict[str, str] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    async def run(self, after: asyncio.Task[None] | None = None) -> None:
        """Poll forever (cancel to stop); starts once the initial warm-up (`after`) is over."""
        if after is not None:
            await asyncio.wait([after])  # neither raises the warm-up's error nor swallows our own cancellation
        while True:
            await asyncio.sleep(self.settings.model_poll_s)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # a watcher that dies silently would freeze every model at its version
                log.exception("checking the model repository for new versions failed; trying again")

    async def check(self) -> dict[str, str]:
        """Look at every model folder once; swap where the served version changed. Returns what happened per
        model that changed: `swapped`, `refused: ...` or `unreadable: ...`."""
        outcomes: dict[str, str] = {}
        for name, entry in list(self.models.entries.items()):
            if entry.version is None:
                continue
            try:
                target = await asyncio.to_thread(resolve, entry.version.model_dir)
                fingerprint = await asyncio.to_thread(target.fingerprint)
            except (VersionError, OSError) as exc:
                # e.g. serving.json naming a version that is still being copied: keep serving, say so once
                message = str(exc)
                if self._problems.get(name) != message:
                    log.warning("%s: cannot tell which version to serve, keeping %s: %s", name,
                                entry.version_label, message)
                    self._problems[name] = message
                    outcomes[name] = f"unreadable: {message}"
                continue
            self._problems.pop(name, None)
            if fingerprint == entry.fingerprint:
                entry.swap_error = None  # what serves (again, if a refused version was pointed back from)
                self._seen.pop(name, None)
                continue
            if fingerprint == self._seen.get(name):
                continue  # refused before, unchanged since
            self._seen[name] = fingerprint
            try:
                await self.swap(name, target)
                outcomes[name] = "swapped"
            except SwapRefused as exc:
                outcomes[name] = f"refused: {exc}"
        return outcomes

    async def swap(self, name: str, target: ModelVersion) -> ModelEntry:
        """Load, warm and switch to `target` for model `name`; SwapRefused leaves the old version serving."""
        async with self._lock:
            old = self.models.entries[name]
            new: ModelEntry | None = None
            started = time.monotonic()
            try:
                new = await asyncio.to_thread(load_entry, target, self.settings, self.models.cuda_device_id)
                if new.name != name:
                    raise SwapRefused(f"its manifest names the model {new.name!r}, not {name!r}")
                if new.manifest.task != old.manifest.task:
                    raise SwapRefused(f"it is a {new.manifest.task} model, {name!r} serves {old.manifest.task}")
                self.models.start_entry(new)
                new.state = "warming"
                await self.models.warm_entry(new)
            except asyncio.CancelledError:  # shutting down mid-swap: the old version is closed by ServedModels.stop()
                if new is not None and new.batcher is not None:
                    await new.batcher.close()
                raise
            except Exception as exc:  # whatever breaks loading or warm-up, the old version keeps serving
                if new is not None and new.batcher is not None:
                    await new.batcher.close()
                reason = f"version {target.label} refused, {old.version_label} keeps serving: {exc}"
                old.swap_error = reason
                log.error("%s: %s", name, reason)
                if self.metrics is not None:
                    self.metrics.model_swaps.labels(name, "refused").inc()
                raise SwapRefused(reason) from exc
            new.state = "ready"
            self.models.entries[name] = new  # the switch: requests from now on resolve the new version
            self.models.publish_info(new)
            if self.metrics is not None:
                self.metrics.model_ready.labels(name).set(1)
                self.metrics.model_swaps.labels(name, "swapped").inc()
            self.models.retired.add(old)
            task = asyncio.get_running_loop().create_task(self._retire(old), name=f"retire-{name}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            log.info("%s: now serving version %s (was %s; loaded and warmed in %.2f s)", name, new.version_label,
                     old.version_label, time.monotonic() - started)
            return new

    async def _retire(self, old: ModelEntry) -> None:
        """Free a replaced version once no request can still be using it."""
        timeout = self.settings.request_timeout_s
        await asyncio.sleep(timeout)
        deadline = time.monotonic() + timeout
        while old.batcher is not None and old.batcher.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if old.batcher is not None:
            await old.batcher.close()
        self.models.retired.discard(old)
        log.info("%s: version %s retired", old.name, old.version_label)

    async def stop(self) -> None:
        for task in list(self._retiring):
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
