"""Start-up and shutdown of one service process, as the app's lifespan.

Start-up: claim this process's worker slot (with `gan-serve --workers N`), load the models (unless
the CLI handed them in pre-loaded, having reported load errors cleanly before uvicorn started),
start their batchers, then warm up in the background, so `/healthz` answers at once while `/readyz`
says 503 until every model is warm; then follow the repository's served versions (service/swap.py).
Shutdown undoes it in reverse; the batchers fail whatever still waits with a 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from pathlib import Path

from fastapi import FastAPI

from service.served_models import ServedModels
from service.state import ServiceState
from service.swap import VersionWatcher
from service.workers import WorkerSlot, device_for


async def _warm_up(state: ServiceState, models: ServedModels) -> None:
    await models.warm_up()
    if state.worker is not None and models.ready:
        state.worker.mark_ready()


def lifespan(state: ServiceState) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The lifespan of an app whose handlers share `state`."""
    settings = state.settings

    @asynccontextmanager
    async def run(_: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        folder = state.metrics.multiprocess_dir
        if folder is not None and settings.workers > 1:  # one of gan-serve's worker processes
            state.worker = WorkerSlot.claim(Path(folder), settings.workers)
        if state.models is None:
            device = device_for(state.worker.index, settings.cuda_devices) if state.worker else 0
            state.models = ServedModels.load(settings, cuda_device_id=device)
        models = state.models
        models.start(state.metrics, finish_executor=state.codec_pool)
        state.warmup = loop.create_task(_warm_up(state, models), name="warm-up")
        state.watcher = VersionWatcher(models, settings, state.metrics)
        if settings.model_poll_s > 0:
            state.watching = loop.create_task(state.watcher.run(after=state.warmup), name="version-watcher")
        try:
            yield
        finally:
            for task in (state.watching, state.warmup):
                if task is not None:
                    task.cancel()
                    with suppress(asyncio.CancelledError):
                        await task
            await state.watcher.stop()
            await models.stop()
            state.codec_pool.shutdown(wait=False, cancel_futures=True)
            if state.worker is not None:
                state.worker.release()
            state.metrics.process_exited()

    return run
