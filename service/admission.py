"""Admission: refuse what will be refused before it costs anything, and bound how a body arrives.

Why here, in a pure-ASGI middleware in front of the routes: under overload the cost of *saying no*
decides goodput. A refusal decided by a handler has already paid for the body (read, JSON parse,
validation, latents); one decided here has paid for the request line and headers only. So, from
the headers alone and per process (each uvicorn worker process counts for itself):

* a declared `Content-Length` over the endpoint's body cap -> 413 (`/generate` never needs more than
  `max_images_per_request` latent vectors of JSON, so its cap is far below `GAN_MAX_UPLOAD_BYTES`);
* `GAN_MAX_CONCURRENT_REQUESTS` inference requests already in progress -> 503 `overloaded`;
* every model of the endpoint's task with a full queue -> 503 `overloaded` (the handler still checks
  the exact rows before it draws a latent);

An overload refusal is held `GAN_OVERLOAD_DELAY_S` (1 s) before it is sent: holding it costs a
sleeping coroutine, while a client that ignores `Retry-After` (a load tester, a naive retry loop) and
asks again at once would otherwise turn the CPU the admitted requests need into 503s. A client that
honours `Retry-After` waits that long anyway.

And while the body arrives: a chunked body is counted against the same cap (413 once it passes it)
and the whole body must arrive within `GAN_BODY_TIMEOUT_S` (408), so a slow client holds neither a
handler nor memory for long. When the guard answers mid-body, the handler sees a disconnected client
and whatever it would still send is dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.middleware import send_error
from service.state import ServiceState

#: Bytes of JSON one latent value may take (`-1.2345678901234567e-05, ` is 25) and room for the rest.
_JSON_BYTES_PER_VALUE = 32
_JSON_OVERHEAD_BYTES = 64 * 1024
_CLOSE = [(b"connection", b"close")]


def generate_body_limit(max_images: int, latent_dims: list[int], max_upload_bytes: int) -> int:
    """Largest useful `/generate` body: `max_images` latent vectors of the widest model, plus options."""
    widest = max(latent_dims, default=0)
    return min(max_upload_bytes, _JSON_OVERHEAD_BYTES + max_images * widest * _JSON_BYTES_PER_VALUE)


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length header as an int, or None when absent (chunked) or not a number."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class AdmissionMiddleware:
    """Per-process admission for POST requests; see the module docstring."""

    def __init__(self, app: ASGIApp, *, state: ServiceState, task_of_path: Mapping[str, str]) -> None:
        """`task_of_path`: the inference endpoints and the model task of each (service.routes_tasks);
        required, since an app built without it would quietly lose the caps on every inference endpoint."""
        self.app = app
        self.state = state
        self.task_of_path = dict(task_of_path)
        settings = state.settings
        self.max_inflight = settings.max_concurrent_requests
        self.body_timeout_s = settings.body_timeout_s
        self.max_upload = settings.max_upload_bytes
        self.retry_after = [(b"retry-after", str(settings.retry_after_s).encode())]
        self.overload_delay_s = settings.overload_delay_s
        #: Inference requests between admission and their response (this process).
        self.inflight = 0

    def body_limit(self, path: str) -> int:
        """The body cap of `path`. Computed per request, not cached: a version swap may change a
        generate model's latent_dim, and the served models are a handful of entries."""
        models = self.state.models
        if path != "/generate" or models is None:
            return self.max_upload
        dims = [e.manifest.latent_dim or 0 for e in models.entries.values() if e.manifest.task == "generate"]
        return generate_body_limit(self.state.settings.max_images_per_request, dims, self.max_upload)

    def _full_queues(self, task: str) -> str | None:
        """When every ready model of `task` has no free queue row (any request would be a 503): the
        task's default model, the `model` label of the rejection. Else None."""
        models = self.state.models
        if models is None:
            return None
        batchers = [e.batcher for e in models.entries.values() if e.manifest.task == task and e.ready]
        if batchers and all(b is not None and b.queued_rows >= b.max_queue_rows for b in batchers):
            default = models.get(None, task)  # type: ignore[arg-type]
            return default.name if default is not None else ""
        return None

    async def _refuse_overloaded(self, send: Send, model: str, reason: str, message: str) -> None:
        self.state.metrics.rejections.labels(model, reason).inc()
        if self.overload_delay_s:
            await asyncio.sleep(self.overload_delay_s)  # see the module docstring: pacing costs no CPU
        await send_error(send, 503, "overloaded", message, self.retry_after)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        limit = self.body_limit(path)
        length = declared_length(scope["headers"])
        if length is not None and length > limit:
            await send_error(
                send, 413, "payload_too_large", f"request body of {length} bytes exceeds the limit of {limit} bytes "
                f"for {path}", _CLOSE
            )
            return
        task = self.task_of_path.get(path)
        if task is not None:
            if self.inflight >= self.max_inflight:
                message = f"{self.inflight} requests in progress (the limit of this process); retry shortly"
                await self._refuse_overloaded(send, "", "concurrency", message)
                return
            full = self._full_queues(task)
            if full is not None:
                message = f"every {task} model is at capacity; retry shortly"
                await self._refuse_overloaded(send, full, "queue_full", message)
                return
            self.inflight += 1
        try:
            await self._guarded(scope, receive, send, limit)
        finally:
            if task is not None:
                self.inflight -= 1

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Run the app with the body counted and timed; an answer from the guard ends the exchange."""
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        seen = 0
        body_done = False
        answered = False

        async def answer(status: int, code: str, message: str) -> Message:
            nonlocal answered
            answered = True
            await send_error(send, status, code, message, _CLOSE)
            return {"type": "http.disconnect"}

        async def guarded_receive() -> Any:
            nonlocal seen, body_done
            if answered:
                return {"type": "http.disconnect"}
            if body_done:  # later receives only watch for a disconnect: no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                return await answer(
                    408, "body_timeout", f"the request body did not arrive within {self.body_timeout_s:g} s"
                )
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    return await answer(
                        413, "payload_too_large", f"request body exceeds the limit of {limit} bytes for {scope['path']}"
                    )
                body_done = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            if not answered:  # once the guard has answered, the handler's late reply is dropped
                await send(message)

        await self.app(scope, guarded_receive, guarded_send)
