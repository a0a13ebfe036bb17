"""Give freed heap memory back to the operating system after a large request.

Why: a large `/super-resolve` allocates and frees hundreds of MB in several threads (decode, tiles,
canvas, encode on the codec pool; ONNX Runtime on the inference thread). glibc keeps freed memory in
per-thread arenas unless it lies at the top of one, so after a burst the process stays large for good
(measured with bench/bench_memory.py: 2x its steady RSS after a minute idle, with ONNX Runtime's
arena already shrinking). `malloc_trim(0)` returns every arena's free pages. It costs a few
milliseconds, so it runs only after requests whose result has `TRIM_AFTER_PIXELS` or more, on the
codec pool, a second after the request (when its arrays and response body are gone).
Elsewhere than glibc it does nothing.

And the cyclic garbage collector, set once per serving process (`tune_gc`, from service.cli and
service.app.app_factory, never from create_app, so tests' processes keep Python's defaults).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from concurrent.futures import Executor

log = logging.getLogger("service.memory")

#: Requests whose result has at least this many pixels trim afterwards (a 1024x1024 input at x2).
TRIM_AFTER_PIXELS = 4 * 1024 * 1024


def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim with
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Return free heap pages to the OS (glibc `malloc_trim(0)`); a no-op without glibc."""
    if _TRIM is not None:
        _TRIM(0)


def release_soon(executor: Executor, delay_s: float = 1.0) -> None:
    """Trim on `executor` `delay_s` from now: after the request's handler has returned and its response
    was sent, so the arrays and the response body it still held are freed by then."""
    loop = asyncio.get_running_loop()
    loop.call_later(delay_s, lambda: loop.run_in_executor(executor, release_free_memory))


#: Net new container objects between young-generation collections (Python's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a serving process; call once, after imports.

    Measured on /generate (DCGAN 64x64, 1 image a request, 32 connections, one process): the
    collector cost about 80 us of CPU a request, and a full collection stalled the event loop for
    tens of ms. Two causes. The objects alive at start-up (imports, FastAPI, pydantic, ONNX
    Runtime: about 75,000) were traversed by every full collection: `gc.freeze()` moves them out
    of the collector's view (they are never garbage anyway). And 32 requests in flight hold about
    a thousand young container objects, so the default threshold of 700 triggered a young
    collection every few requests, each traversing them all to find nothing: request objects are
    freed by reference counting (the pipeline breaks its cycles itself, service.pipeline), so a
    higher threshold only lets the rare cyclic garbage wait a little longer.

    Call it after the imports and before the models load: a frozen object is never collected, and a
    model version that swap.py replaces must be freed with everything it holds, cycles included.
    (`app_factory` calls it before the lifespan loads the models.)
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
