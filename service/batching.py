"""Dynamic batching: one bounded queue and one worker per model.

A request is a *job*: a dict of named input arrays sharing a leading batch axis (rows). The worker
takes the first waiting job, keeps collecting jobs with the same non-batch input shapes until
`max_batch_size` rows or `max_batch_delay` after the first job arrived, concatenates them once with
numpy, runs ONE `session.run` on the model's own thread (so the event loop keeps serving), and
resolves every job with its slice, in queue order. A job larger than a batch is split across
consecutive batches and reassembled; several small jobs share one batch.

Bounded by design: the queue holds at most `max_queue_rows` rows and a job that does not fit is
refused at once (`QueueFull`, a 503 for the client); a job whose deadline passes while it waits is
dropped before it costs compute (`DeadlineExceeded`, a 504); a job whose client disconnects frees
its rows at once and is never computed unless its batch had already started.

The hot path does no per-row Python work: per batch, one concatenate per input, one `run`, and one
slice per job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.metrics import Metrics

log = logging.getLogger("service.batching")

RunFn = Callable[[dict[str, np.ndarray]], np.ndarray]


class BatchingError(Exception):
    """Base of the errors a job can end with instead of a result."""


class QueueFull(BatchingError):
    """The model's queue has no room for the job's rows; retry later."""


class DeadlineExceeded(BatchingError):
    """The job's deadline passed before its result was ready."""


class ClientDisconnected(BatchingError):
    """The client went away; the job was dropped."""


class BatcherClosed(BatchingError):
    """The service is shutting down."""


class InferenceFailed(BatchingError):
    """ONNX Runtime raised while running the job's batch."""


@dataclass(eq=False)
class _Job:
    feeds: Mapping[str, np.ndarray]
    rows: int
    key: tuple[Any, ...]
    future: asyncio.Future[np.ndarray]
    deadline: float
    enqueued: float
    taken: int = 0  # rows handed to batches (or given up); rows - taken are still queued
    parts: list[np.ndarray] = field(default_factory=list)


def _group_key(feeds: Mapping[str, np.ndarray]) -> tuple[Any, ...]:
    """Jobs can share a batch only if every input agrees on its non-batch shape and dtype."""
    return tuple((name, arr.shape[1:], arr.dtype.str) for name, arr in feeds.items())


class Batcher:
    """The queue and worker of one model. Create it, `start()` it inside the event loop, `close()` it."""

    def __init__(
        self,
        name: str,
        run: RunFn,
        *,
        max_batch_size: int,
        max_batch_delay_s: float,
        max_queue_rows: int,
        metrics: Metrics | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue_rows < 1 or max_batch_delay_s < 0:
            raise ValueError("max_batch_size and max_queue_rows must be >= 1, max_batch_delay_s >= 0")
        self.name = name
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max_batch_delay_s
        self.max_queue_rows = max_queue_rows
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{name}")
        self._pending: deque[_Job] = deque()
        self._queued_rows = 0
        self._idle = True
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._inflight: list[tuple[_Job, int, int]] = []
        #: ONNX Runtime calls made by this batcher (warm-up excluded) and rows they computed.
        self.runs = 0
        self.rows_run = 0
        self._metrics = metrics
        if metrics is not None:
            self._m_depth = metrics.queue_depth.labels(name)
            self._m_wait = metrics.queue_wait.labels(name)
            self._m_infer = metrics.inference_duration.labels(name)
            self._m_batch = metrics.batch_size.labels(name)
            self._m_rejected = {
                reason: metrics.rejections.labels(name, reason)
                for reason in ("queue_full", "deadline_exceeded", "client_disconnected")
            }
            self._m_depth.set(0)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the worker task; call from inside the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._worker = self._loop.create_task(self._work(), name=f"batcher-{self.name}")

    async def close(self) -> None:
        """Stop the worker, fail every waiting job with `BatcherClosed`, release the thread."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for job in [j for j, _, _ in self._inflight] + list(self._pending):
            self._abandon(job, BatcherClosed("the service is shutting down"))
        self._pending.clear()
        self.executor.shutdown(wait=False, cancel_futures=True)

    @property
    def queued_rows(self) -> int:
        """Rows waiting (not yet handed to a batch)."""
        return self._queued_rows

    # ---------------------------------------------------------------- client side

    async def infer(
        self,
        feeds: Mapping[str, np.ndarray],
        *,
        timeout: float | None = None,
        disconnected: Callable[[], Awaitable[Mapping[str, Any]]] | None = None,
    ) -> np.ndarray:
        """Queue `feeds` (all inputs with the same leading row count) and await the output rows.

        `timeout` bounds the whole wait (queue + compute). `disconnected` is an ASGI `receive`
        callable: when it reports `http.disconnect`, the job is dropped. Raises `QueueFull`,
        `DeadlineExceeded`, `ClientDisconnected`, `BatcherClosed` or `InferenceFailed`.
        """
        loop = self._loop
        if loop is None or self._closed:
            raise BatcherClosed(f"model {self.name!r} is not accepting work")
        rows = int(next(iter(feeds.values())).shape[0])
        if rows < 1 or any(int(arr.shape[0]) != rows for arr in feeds.values()):
            raise ValueError("every input needs the same, non-zero number of rows")
        if self._queued_rows + rows > self.max_queue_rows:
            if self._metrics is not None:
                self._m_rejected["queue_full"].inc()
            raise QueueFull(
                f"model {self.name!r} is at capacity ({self._queued_rows} of {self.max_queue_rows} "
                f"rows queued); retry shortly"
            )
        now = loop.time()
        deadline = now + timeout if timeout is not None else math.inf
        job = _Job(feeds, rows, _group_key(feeds), loop.create_future(), deadline, now)
        self._pending.append(job)
        self._set_queued(self._queued_rows + rows)
        if self._idle or self._queued_rows >= self.max_batch_size:
            self._wakeup.set()  # type: ignore[union-attr]
        timer = loop.call_at(deadline, self._expire, job) if timeout is not None else None
        watcher = loop.create_task(self._watch(job, disconnected)) if disconnected is not None else None
        try:
            return await job.future
        except asyncio.CancelledError:
            self._abandon(job, None)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if watcher is not None:
                watcher.cancel()

    def _set_queued(self, rows: int) -> None:
        self._queued_rows = rows
        if self._metrics is not None:
            self._m_depth.set(rows)

    def _abandon(self, job: _Job, exc: BaseException | None) -> bool:
        """End a job without (further) compute: free its queued rows, fail its future. Idempotent."""
        left = job.rows - job.taken
        if left:
            job.taken = job.rows
            self._set_queued(self._queued_rows - left)
        if job.future.done():
            return False
        if exc is None:
            job.future.cancel()
        else:
            job.future.set_exception(exc)
        return True

    def _expire(self, job: _Job) -> None:
        expired = self._abandon(job, DeadlineExceeded(f"model {self.name!r}: request deadline passed"))
        if expired and self._metrics is not None:
            self._m_rejected["deadline_exceeded"].inc()

    async def _watch(self, job: _Job, receive: Callable[[], Awaitable[Mapping[str, Any]]]) -> None:
        # After the body is read, ASGI `receive` blocks until the client disconnects. A server that
        # answers with something else is tolerated a few times, then no longer watched.
        for _ in range(8):
            message = await receive()
            if message.get("type") == "http.disconnect":
                if self._abandon(job, ClientDisconnected("client disconnected")) and self._metrics is not None:
                    self._m_rejected["client_disconnected"].inc()
                return

    # ---------------------------------------------------------------- worker side

    def _first_live(self) -> _Job | None:
        pending = self._pending
        while pending and pending[0].future.done():
            pending.popleft()  # abandoned: its rows were freed when it was abandoned
        return pending[0] if pending else None

    async def _work(self) -> None:
        loop = self._loop
        wakeup = self._wakeup
        assert loop is not None and wakeup is not None
        while True:
            first = self._first_live()
            if first is None:
                self._idle = True
                wakeup.clear()
                await wakeup.wait()
                self._idle = False
                continue
            fire_at = first.enqueued + self.max_batch_delay_s
            while self._queued_rows < self.max_batch_size and loop.time() < fire_at:
                wakeup.clear()
                timer = loop.call_at(fire_at, wakeup.set)
                await wakeup.wait()
                timer.cancel()
            batch = self._take(loop.time())
            if not batch:
                continue
            self._inflight = batch
            try:
                await self._run_batch(batch)
            except Exception:  # a bug here must not kill the worker and hang every later request
                log.exception("model %r: batching worker error", self.name)
                for job, _, _ in batch:
                    self._abandon(job, InferenceFailed(f"model {self.name!r}: internal batching error"))
            finally:
                self._inflight = []

    def _take(self, now: float) -> list[tuple[_Job, int, int]]:
        """Pop up to `max_batch_size` rows of the first live job's shape group, in queue order."""
        pending = self._pending
        skipped: list[_Job] = []
        chosen: list[tuple[_Job, int, int]] = []
        key = None
        rows = 0
        partial = None
        while pending and rows < self.max_batch_size:
            job = pending.popleft()
            if job.future.done():
                continue
            if job.deadline <= now:
                self._expire(job)
                continue
            if key is None:
                key = job.key
            elif job.key != key:
                skipped.append(job)
                continue
            start = job.taken
            n = min(job.rows - start, self.max_batch_size - rows)
            if start == 0 and self._metrics is not None:
                self._m_wait.observe(now - job.enqueued)
            job.taken = start + n
            rows += n
            chosen.append((job, start, start + n))
            if job.taken < job.rows:
                partial = job
        if partial is not None:
            pending.appendleft(partial)
        if skipped:
            pending.extendleft(reversed(skipped))
        self._set_queued(self._queued_rows - rows)
        return chosen

    async def _run_batch(self, batch: list[tuple[_Job, int, int]]) -> None:
        names = list(batch[0][0].feeds)
        if len(batch) == 1:
            job, start, stop = batch[0]
            whole = start == 0 and stop == job.rows
            feeds = {n: (job.feeds[n] if whole else job.feeds[n][start:stop]) for n in names}
        else:
            feeds = {n: np.concatenate([job.feeds[n][start:stop] for job, start, stop in batch]) for n in names}
        rows = sum(stop - start for _, start, stop in batch)
        began = time.perf_counter()
        try:
            out = await self._loop.run_in_executor(self.executor, self._run, feeds)  # type: ignore[union-attr]
            if out.shape[0] != rows:
                raise RuntimeError(f"model returned {out.shape[0]} rows for a batch of {rows}")
        except Exception as exc:
            log.exception("model %r: inference failed on a batch of %d rows", self.name, rows)
            for job, _, _ in batch:
                self._abandon(job, InferenceFailed(f"model {self.name!r}: inference failed ({exc})"))
            return
        finally:
            self.runs += 1
            self.rows_run += rows
            if self._metrics is not None:
                self._m_infer.observe(time.perf_counter() - began)
                self._m_batch.observe(rows)
        offset = 0
        for job, start, stop in batch:
            part = out[offset : offset + stop - start]
            offset += stop - start
            if job.future.done():
                continue
            if start == 0 and stop == job.rows:
                job.future.set_result(part)
            else:
                job.parts.append(part)
                if stop == job.rows:
                    job.future.set_result(np.concatenate(job.parts))
