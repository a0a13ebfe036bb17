"""What every inference endpoint does around the batcher: find the ready model, and turn batching
outcomes into the service's HTTP errors. One place, so /generate, /super-resolve and /translate
answer the same situation with the same status and code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from fastapi import Request

from service.batching import BatcherClosed, ClientDisconnected, DeadlineExceeded, InferenceFailed, QueueFull
from service.errors import ApiError
from service.manifest import Task
from service.middleware import MODEL_SCOPE_KEY
from service.registry import ModelEntry

if TYPE_CHECKING:
    from service.app import ServiceState


def retry_after(state: ServiceState) -> dict[str, str]:
    return {"Retry-After": str(state.settings.retry_after_s)}


def resolve_model(state: ServiceState, name: str | None, task: Task, request: Request) -> ModelEntry:
    """The ready model to serve: 404 unknown, 400 wrong task, 503 (with Retry-After) not warm yet."""
    registry = state.registry
    entry = registry.get(name, task) if registry is not None else None
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
                       retry_after(state))
    return entry


@contextmanager
def batching_errors_as_http(state: ServiceState) -> Iterator[None]:
    """503 full queue or shutdown (Retry-After), 504 deadline, 499 client gone, 500 model failure."""
    try:
        yield
    except QueueFull as exc:
        raise ApiError(503, "overloaded", str(exc), retry_after(state)) from None
    except DeadlineExceeded:
        timeout = state.settings.request_timeout_s
        raise ApiError(504, "deadline_exceeded", f"no result within the request timeout of {timeout:g} s") from None
    except ClientDisconnected:
        raise ApiError(499, "client_disconnected", "the client closed the connection") from None
    except BatcherClosed as exc:
        raise ApiError(503, "shutting_down", str(exc), retry_after(state)) from None
    except InferenceFailed as exc:
        raise ApiError(500, "inference_failed", str(exc)) from None
