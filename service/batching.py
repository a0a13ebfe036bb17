"""Dynamic batching: one bounded queue and one worker per model.

A request is a *job*: a dict of named input arrays sharing a leading batch axis (rows). The worker
takes the first waiting job, keeps collecting jobs with the same non-batch input shapes until
`max_batch_size` rows or `max_batch_delay` after the first job arrived, concatenates them once with
numpy, runs ONE `session.run` on one of the model's inference threads (so the event loop keeps
serving), and resolves every job with its slice, in queue order. A job larger than a batch is split
across consecutive batches and reassembled; several small jobs share one batch.

`streams` batches may compute at once, each on its own thread (default 1): e.g. two streams of
single-threaded ONNX Runtime calls on a 2-core host instead of one call spread over both cores.

Bounded by design: the queue holds at most `max_queue_rows` rows and a job that does not fit is
refused at once (`QueueFull`, a 503 for the client); a job whose deadline passes while it waits is
dropped before it costs compute (`DeadlineExceeded`, a 504); a job whose client disconnects frees
its rows at once and is never computed unless its batch had already started.

The hot path does no per-row Python work: per batch, one concatenate per input, one `run`, and one
slice per job.

A job may carry a `finish` function (e.g. "encode these rows as PNG and build the response body").
The finish functions of all jobs completed by one batch run as ONE task on the finish executor (the
app's codec pool), not one thread hand-off per request, and without holding up the worker: the next
batch computes while the previous one is being encoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.metrics import Metrics

log = logging.getLogger("service.batching")

RunFn = Callable[[dict[str, np.ndarray]], np.ndarray]
FinishFn = Callable[[np.ndarray], Any]


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
    future: asyncio.Future[Any]
    deadline: float
    enqueued: float
    finish: FinishFn | None = None
    taken: int = 0  # rows handed to batches (or given up); rows - taken are still queued
    parts: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (first row, rows) of a split job
    computed: int = 0  # rows of a split job computed so far


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
        finish_executor: Executor | None = None,
        streams: int = 1,
    ) -> None:
        if max_batch_size < 1 or max_queue_rows < 1 or max_batch_delay_s < 0 or streams < 1:
            raise ValueError("max_batch_size, max_queue_rows and streams must be >= 1, max_batch_delay_s >= 0")
        self.name = name
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max_batch_delay_s
        self.max_queue_rows = max_queue_rows
        #: Batches computed at the same time (each on its own inference thread).
        self.streams = streams
        self.executor = executor or ThreadPoolExecutor(max_workers=streams, thread_name_prefix=f"infer-{name}")
        #: Where jobs' `finish` functions run (one task per batch); None = on the inference thread.
        self.finish_executor = finish_executor
        self._pending: deque[_Job] = deque()
        self._queued_rows = 0
        self._idle = True
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._inflight: list[list[tuple[_Job, int, int]]] = []
        self._running: set[asyncio.Task[None]] = set()
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
        self._slots = asyncio.Semaphore(self.streams)
        self._worker = self._loop.create_task(self._work(), name=f"batcher-{self.name}")

    async def close(self) -> None:
        """Stop the worker, fail every waiting job with `BatcherClosed`, release the thread."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for task in list(self._running):
            task.cancel()
        for job in [j for batch in self._inflight for j, _, _ in batch] + list(self._pending):
            self._abandon(job, BatcherClosed("the service is shutting down"))
        self._pending.clear()
        self.executor.shutdown(wait=False, cancel_futures=True)

    @property
    def busy(self) -> bool:
        """Whether any job is queued or computing (a version swap closes the old batcher only when idle)."""
        return bool(self._pending or self._inflight or self._running)

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
        finish: FinishFn | None = None,
    ) -> Any:
        """Queue `feeds` (all inputs with the same leading row count) and await the output rows.

        `timeout` bounds the whole wait (queue + compute). Cancelling the call (the service's task
        pipeline does when the client goes away) frees the job's queued rows at once.
        With `finish`, the result is `finish(output rows)`, computed on the finish executor (an
        exception it raises is raised here). Raises `QueueFull`, `DeadlineExceeded`,
        `ClientDisconnected`, `BatcherClosed` or `InferenceFailed`.
        """
        loop = self._loop
        if loop is None or self._closed:
            raise BatcherClosed(f"model {self.name!r} is not accepting work")
        rows = int(next(iter(feeds.values())).shape[0])
        if rows < 1 or any(int(arr.shape[0]) != rows for arr in feeds.values()):
            raise ValueError("every input needs the same, non-zero number of rows")
        self.check_room(rows)
        now = loop.time()
        deadline = now + timeout if timeout is not None else math.inf
        job = _Job(feeds, rows, _group_key(feeds), loop.create_future(), deadline, now, finish)
        self._pending.append(job)
        self._set_queued(self._queued_rows + rows)
        if self._idle or self._queued_rows >= self.max_batch_size:
            self._wakeup.set()  # type: ignore[union-attr]
        timer = loop.call_at(deadline, self._expire, job) if timeout is not None else None
        try:
            return await job.future
        except asyncio.CancelledError:
            self._abandon(job, None)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            # A raised error's traceback holds this frame, and the frame the job, whose future holds the
            # error: a cycle that would keep the job's arrays until the next full garbage collection.
            del job, timer

    def check_room(self, rows: int) -> None:
        """Raise `QueueFull` unless `rows` more rows fit in the queue now (callers check before they
        build a request's inputs, so a refusal costs no sampling or decoding)."""
        if self._queued_rows + rows > self.max_queue_rows:
            if self._metrics is not None:
                self._m_rejected["queue_full"].inc()
            raise QueueFull(
                f"model {self.name!r} is at capacity ({self._queued_rows} of {self.max_queue_rows} "
                f"rows queued); retry shortly"
            )

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
            with contextlib.suppress(ValueError):  # leave the queue now, not when the worker next looks
                self._pending.remove(job)
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

    # ---------------------------------------------------------------- worker side

    def _first_live(self) -> _Job | None:
        pending = self._pending
        while pending and pending[0].future.done():
            pending.popleft()  # abandoned: its rows were freed when it was abandoned
        return pending[0] if pending else None

    async def _work(self) -> None:
        loop = self._loop
        slots = self._slots
        assert loop is not None and slots is not None
        while True:
            await slots.acquire()  # a free inference stream first; jobs keep queueing meanwhile
            batch = await self._next_batch(loop)
            self._inflight.append(batch)
            task = loop.create_task(self._run_guarded(batch), name=f"batch-{self.name}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            del batch, task  # not kept alive (with its inputs) while the worker waits for the next one

    async def _next_batch(self, loop: asyncio.AbstractEventLoop) -> list[tuple[_Job, int, int]]:
        """Wait for a first job, then until the batch is full or its delay is over; take it."""
        wakeup = self._wakeup
        assert wakeup is not None
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
            if batch:
                return batch

    async def _run_guarded(self, batch: list[tuple[_Job, int, int]]) -> None:
        try:
            await self._run_batch(batch)
        except Exception:  # a bug here must not kill the worker and hang every later request
            log.exception("model %r: batching worker error", self.name)
            for job, _, _ in batch:
                self._abandon(job, InferenceFailed(f"model {self.name!r}: internal batching error"))
        finally:
            self._inflight.remove(batch)
            self._slots.release()  # type: ignore[union-attr]

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
        finishing: list[tuple[_Job, np.ndarray]] = []
        for job, start, stop in batch:
            part = out[offset : offset + stop - start]
            offset += stop - start
            if job.future.done():
                continue
            if start == 0 and stop == job.rows:
                result = part
            else:  # a split job: its parts may come back from concurrent batches in any order
                job.parts.append((start, part))
                job.computed += stop - start
                if job.computed < job.rows:
                    continue
                result = np.concatenate([rows for _, rows in sorted(job.parts, key=lambda p: p[0])])
            if job.finish is None:
                job.future.set_result(result)
            else:
                finishing.append((job, result))
        if finishing:
            # One hand-off for the whole batch; not awaited, so the next batch can start computing.
            task = self._loop.run_in_executor(  # type: ignore[union-attr]
                self.finish_executor or self.executor, _finish_all, finishing
            )
            task.add_done_callback(lambda done: self._resolve_finished(done, finishing))

    def _resolve_finished(
        self, task: asyncio.Future[list[tuple[_Job, bool, Any]]], items: list[tuple[_Job, np.ndarray]]
    ) -> None:
        """Back on the event loop: hand every finished job its value (or its own error)."""
        if task.cancelled() or task.exception() is not None:  # the executor went away (shutdown)
            for job, _ in items:
                self._abandon(job, BatcherClosed(f"model {self.name!r}: the service is shutting down"))
            return
        for job, ok, value in task.result():
            if job.future.done():
                continue
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)


def _finish_all(items: list[tuple[_Job, np.ndarray]]) -> list[tuple[_Job, bool, Any]]:
    """Run each job's finish function (on the finish executor); capture errors per job."""
    done = []
    for job, rows in items:
        if job.future.done():  # abandoned meanwhile (deadline, disconnect): skip the work
            continue
        try:
            done.append((job, True, job.finish(rows)))  # type: ignore[misc]
        except Exception as exc:  # the job's own failure, raised to its caller
            done.append((job, False, exc))
    return done
