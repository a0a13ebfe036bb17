"""The task pipeline: every inference request, whatever its task, runs through `run_task`.

A task (service/generate.py, super_resolve.py, translate.py) is one `TaskWork` subclass: one
request's work in the serving vocabulary, each step a method:

    read      the request's fields (uploads; a JSON body arrives parsed and validated by FastAPI)
    admit     (the constructor) every check that needs no decoding: 4xx before any cost, and the
              queue rows to reserve
    decode    the request as arrays (latents, an image and its tiles); on the codec pool when it is CPU work
    feeds     the model inputs of rows [first, stop)
    finish    per job, on the codec pool as soon as its batch is computed: encode or place the rows
    encode    the response

`run_task` owns what every task must do the same way, so no task can get it subtly different:
  - the model: 404 unknown, 400 wrong task, 503 not ready (with Retry-After);
  - one deadline per request (GAN_REQUEST_TIMEOUT_S from the handler's start): decoding is bounded
    by it, each job is queued with what is left, so the batcher drops it unrun once it passes (504);
  - queue room before decoding (503 when full), jobs of at most one batch for tasks whose rows can
    outnumber the queue (a few in flight, so tiles of concurrent requests share ONNX Runtime calls);
  - one watcher for the client going away: it cancels the request, whose queued rows are freed at once;
  - one mapping of batching outcomes to the service's error codes.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, NoReturn, Protocol, TypeVar

import numpy as np
from fastapi import Request
from fastapi.responses import Response

from service import memory
from service.batching import (
    Batcher,
    BatcherClosed,
    BatchingError,
    ClientDisconnected,
    DeadlineExceeded,
    InferenceFailed,
    QueueFull,
)
from service.errors import ApiError
from service.manifest import Task
from service.middleware import MODEL_SCOPE_KEY
from service.served_models import ModelEntry
from service.settings import Settings
from service.state import ServiceState, state_of

#: Jobs of one request queued at once beyond the model's inference streams (keeps the pipeline full).
_EXTRA_JOBS_IN_FLIGHT = 1


class Named(Protocol):
    """What `read` returns (or a route hands in): the options, which name the model to use."""

    @property
    def model(self) -> str | None: ...


ReadT = TypeVar("ReadT", bound=Named)


@dataclass(eq=False)
class RequestContext:
    """The request a TaskWork serves: the shared state, the model it runs on, its deadline."""

    state: ServiceState
    entry: ModelEntry
    request: Request
    #: Event-loop time by which the response must be ready.
    deadline: float

    @property
    def settings(self) -> Settings:
        return self.state.settings

    def cpu(self, function: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        """Run CPU work (decoding, cutting tiles, encoding) on the codec pool, off the event loop."""
        return asyncio.get_running_loop().run_in_executor(self.state.codec_pool, function, *args)


class TaskWork(ABC, Generic[ReadT]):
    """One request of one task, from its options to its response; see the module docstring.

    A subclass names its task (`task`, the manifest's task name) and route (`path`), and its
    constructor admits the request: every check that needs no decoding, raising `ApiError`, and
    `room`, the queue rows the request needs (checked before `decode`).
    """

    task: ClassVar[Task]
    path: ClassVar[str]
    #: False: all rows go to the batcher as one job (it splits one larger than a batch itself), so one
    #: `finish` sees every row. True: jobs of at most a batch, for tasks whose rows can outnumber the queue.
    chunked: ClassVar[bool] = False
    #: True: `decode` is CPU work (images), run on the codec pool and bounded by the request's deadline.
    #: False: it is cheap enough for the event loop (a thread hand-off would cost more).
    decode_offloaded: ClassVar[bool] = False

    #: Queue rows to find room for before decoding.
    room: int = 1
    #: Rows the model computes (known after `decode`).
    rows: int = 0
    #: What the request produced, for gan_images_total and, where the task reports it, gan_output_pixels_total.
    images: int = 1
    output_pixels: int | None = None
    #: Whether the request allocates enough to hand the heap back afterwards (service.memory).
    large: bool = False

    def __init__(self, read: ReadT, ctx: RequestContext) -> None:
        self.ctx = ctx

    @classmethod
    async def read(cls, request: Request, settings: Settings) -> ReadT:
        """The request's options (and upload); tasks whose route hands them in need not override it."""
        raise NotImplementedError(f"{cls.__name__}: its route hands in the parsed request")

    def decode(self) -> None:
        """Turn the request into arrays (and set `rows`); the default has nothing to decode.

        Where it runs is run_task's business: inline, or with `decode_offloaded` on the codec pool."""

    @abstractmethod
    async def feeds(self, first: int, stop: int) -> dict[str, np.ndarray]:
        """The model inputs of rows [first, stop)."""

    @abstractmethod
    def finish(self, first: int, out: np.ndarray) -> Any:
        """Runs on the codec pool once the job starting at row `first` is computed (`out`: uint8 NHWC)."""

    @abstractmethod
    async def encode(self, finished: list[Any]) -> Response:
        """The response, from each job's `finish` value in row order."""


async def run_task(kind: type[TaskWork[ReadT]], request: Request, read: ReadT | None = None) -> Response:
    """Serve one request of the task `kind`; `read` is its parsed body when the route has it already.

    The state comes from `state_of(request)`, the function behind the `ServiceStateDep` dependency,
    called here rather than declared by the route: FastAPI's dependency solving costs tens of
    microseconds a request, which /generate's per-image budget (issue 12) has no room for."""
    state = state_of(request)
    deadline = asyncio.get_running_loop().time() + state.settings.request_timeout_s  # reading, decoding, computing
    if read is None:
        read = await kind.read(request, state.settings)
    entry = resolve_model(state, read.model, kind.task, request)
    work = kind(read, RequestContext(state, entry, request, deadline))
    batcher = entry.batcher
    assert batcher is not None
    try:
        batcher.check_room(work.room)  # a full queue refuses before anything is decoded or drawn
    except BatchingError as exc:
        raise http_error(exc, state) from None
    watch = _DisconnectWatch(request.receive)
    try:
        if kind.decode_offloaded:
            await within(deadline, state, work.ctx.cpu(work.decode))
        else:
            work.decode()
        if work.rows < 1:  # a task that forgot to set them would queue an empty job (a ValueError, so a 500)
            raise RuntimeError(f"{kind.__name__}.decode left rows = {work.rows}; it must set the rows to compute")
        finished = await _infer(work, batcher, state, deadline)
        response = await work.encode(finished)
    except asyncio.CancelledError:
        if watch.cancelled_the_request():
            state.metrics.rejections.labels(entry.name, "client_disconnected").inc()
            raise http_error(ClientDisconnected("client disconnected"), state) from None
        raise
    finally:
        watch.close()
        if work.large:  # after a large request, succeeded or not, hand the freed heap back (service.memory)
            memory.release_soon(state.codec_pool)
    state.metrics.images.labels(entry.name).inc(work.images)
    if work.output_pixels is not None:
        state.metrics.output_pixels.labels(entry.name).inc(work.output_pixels)
    return response


def resolve_model(state: ServiceState, name: str | None, task: Task, request: Request) -> ModelEntry:
    """The ready model to serve: 404 unknown, 400 wrong task, 503 (with Retry-After) not warm yet."""
    models = state.models
    entry = models.get(name, task) if models is not None else None
    if entry is None:
        if name is None:
            raise ApiError(404, "model_not_found", f"no {task} model is being served")
        raise ApiError(404, "model_not_found", f"no model named {name!r} (see GET /models)")
    request.scope[MODEL_SCOPE_KEY] = entry.name
    if entry.manifest.task != task:
        raise ApiError(400, "wrong_task", f"model {entry.name!r} is a {entry.manifest.task} model, not {task}")
    if not entry.ready or entry.batcher is None:
        state.metrics.rejections.labels(entry.name, "not_ready").inc()
        raise ApiError(503, "not_ready", f"model {entry.name!r} is {entry.error or entry.state}; retry shortly",
                       state.retry_after())
    return entry


# ---------------------------------------------------------------------------- deadlines and errors


def _deadline_error(state: ServiceState) -> ApiError:
    timeout = state.settings.request_timeout_s
    return ApiError(504, "deadline_exceeded", f"no result within the request timeout of {timeout:g} s")


def http_error(exc: BatchingError, state: ServiceState) -> ApiError:
    """503 full queue or shutdown (Retry-After), 504 deadline, 499 client gone, 500 model failure."""
    if isinstance(exc, QueueFull):
        return ApiError(503, "overloaded", str(exc), state.retry_after())
    if isinstance(exc, DeadlineExceeded):
        return _deadline_error(state)
    if isinstance(exc, ClientDisconnected):
        return ApiError(499, "client_disconnected", "the client closed the connection")
    if isinstance(exc, BatcherClosed):
        return ApiError(503, "shutting_down", str(exc), state.retry_after())
    assert isinstance(exc, InferenceFailed), exc
    return ApiError(500, "inference_failed", str(exc))


async def within(deadline: float, state: ServiceState, work: Awaitable[Any]) -> Any:
    """Await `work` (e.g. decoding on the codec pool) until the request's deadline, then 504."""
    try:
        async with asyncio.timeout_at(deadline):
            return await work
    except TimeoutError:
        raise _deadline_error(state) from None


# ---------------------------------------------------------------------------- batched inference


class _EndedWork:
    """What `_infer` leaves in place of a finished request's work (see its `finally`)."""

    async def feeds(self, *_: object) -> NoReturn:
        raise ClientDisconnected("the request has already ended")

    def finish(self, *_: object) -> NoReturn:
        raise ClientDisconnected("the request has already ended")


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's outcome as seen: a request that stopped waiting for it (client gone, deadline)
    must not leave an "exception was never retrieved" traceback in the log."""
    if not future.cancelled():
        future.exception()


async def _infer(work: TaskWork[Any], batcher: Batcher, state: ServiceState, deadline: float) -> list[Any]:
    """Queue rows [0, work.rows) on the model's batcher and return each job's `finish` value.

    Batching outcomes become HTTP errors here, not in run_task: an error that a batcher job keeps
    (e.g. a deadline passed while its batch computes) must not hold run_task's frame, which holds
    the request's arrays (see the `finally`)."""
    loop = asyncio.get_running_loop()
    rows = work.rows
    size = max(1, min(batcher.max_batch_size, batcher.max_queue_rows)) if work.chunked else rows
    model = batcher.name

    async def job(first: int) -> Any:
        feeds = await work.feeds(first, min(first + size, rows))
        left = deadline - loop.time()
        if left <= 0:
            raise DeadlineExceeded("request deadline passed")
        return await batcher.infer(feeds, timeout=left, finish=lambda out: work.finish(first, out))

    tasks: list[asyncio.Task[Any]] = []
    try:
        if size >= rows:  # one job (every task but large super-resolutions): no task, no gather
            return [await job(0)]
        window = asyncio.Semaphore(batcher.streams + _EXTRA_JOBS_IN_FLIGHT)

        async def windowed(first: int) -> Any:
            async with window:
                return await job(first)

        tasks = [loop.create_task(windowed(first)) for first in range(0, rows, size)]
        gathered = asyncio.gather(*tasks)
        gathered.add_done_callback(_retrieve)
        return await gathered
    except BatchingError as exc:
        raise http_error(exc, state) from None
    except RuntimeError as exc:  # a model whose output does not match its manifest (found by a task's finish)
        raise ApiError(500, "inference_failed", f"model {model!r}: {exc}") from None
    finally:
        for task in tasks:
            task.cancel()
        # An error on its way out holds this frame in its traceback; without this the frame would
        # hold the jobs' tasks and their errors (and those this frame): a cycle keeping the arrays.
        # `work` is a cell shared with `job` and the batcher jobs' finish lambdas, whose frames a job's
        # error also holds: rebinding it lets go of the request's arrays however long that error lives
        # (a batcher job still finishing for this request gets `_EndedWork`).
        del tasks
        work = _EndedWork()  # type: ignore[assignment]


# ---------------------------------------------------------------------------- client disconnects

#: Messages other than a disconnect that `until_disconnected` tolerates before it stops watching.
_RECEIVES_WATCHED = 8


async def until_disconnected(receive: Callable[[], Awaitable[Mapping[str, Any]]]) -> bool:
    """True once the client disconnects (after the body is read, ASGI `receive` blocks until then);
    False from a server that keeps answering otherwise, which is then no longer watched."""
    for _ in range(_RECEIVES_WATCHED):
        if (await receive()).get("type") == "http.disconnect":
            return True
    return False




class _DisconnectWatch:
    """Cancels the running request when its client goes away (run_task answers 499, which goes nowhere).

    The request's own task is cancelled, as `asyncio.timeout` does, rather than its work moved into
    a task of its own: one task per request (this watcher), however the request awaits. Cancelling
    frees its queued rows at once (Batcher.infer) and stops its other jobs."""

    __slots__ = ("_request", "_watcher", "_gone")

    def __init__(self, receive: Callable[[], Awaitable[Mapping[str, Any]]]) -> None:
        self._request: asyncio.Task[Any] | None = asyncio.current_task()
        self._gone = False
        self._watcher: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Callable[[], Awaitable[Mapping[str, Any]]]) -> None:
        # `_request` is None once closed: a cancel must never reach the code after the watched part
        if await until_disconnected(receive) and self._request is not None:
            self._gone = True
            self._request.cancel()

    def cancelled_the_request(self) -> bool:
        """Whether a CancelledError the request got is this watcher's, and nobody else's (e.g. shutdown)."""
        return self._gone and self._request is not None and self._request.uncancel() == 0

    def close(self) -> None:
        # Let go of the watcher task too: once cancelled it keeps its CancelledError, whose traceback
        # holds `_watch`'s frame and so this object; holding the task back would make that a cycle
        # (and the request's scope with it) that only the garbage collector frees.
        watcher, self._watcher, self._request = self._watcher, None, None
        if watcher is not None:
            watcher.cancel()
