"""uvicorn's HTTP protocol with a deadline and a size cap on each request's line and headers.

Why: uvicorn bounds an *idle* keep-alive connection (`timeout_keep_alive`) but not a client that
sends its headers a byte at a time, or never ends them: such a connection is held forever, and a
thousand of them hold a thousand sockets. So each request head (from its first byte, or from the
connection's start) must be complete within `GAN_HEADER_TIMEOUT_S` and `GAN_MAX_HEADER_BYTES`;
otherwise the client gets 408 / 431 and the connection is closed. The body is bounded by the next
layer (service.admission), where the request is known.

Built on uvicorn's httptools protocol (what `uvicorn[standard]` uses); `protocol_class` returns
None where httptools is missing, and the server then runs uvicorn's default without these bounds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

log = logging.getLogger("service.protocol")


def _response(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "x-content-type-options: nosniff\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def protocol_class(header_timeout_s: float, max_header_bytes: int) -> type[asyncio.Protocol] | None:
    """A subclass of uvicorn's HttpToolsProtocol with the two bounds, or None without httptools."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
        log.warning("httptools is not installed: request headers are not time- or size-bounded")
        return None

    class BoundedHeadProtocol(HttpToolsProtocol):  # type: ignore[misc]
        """Closes a connection whose request head is late (408) or too large (431)."""

        _head_timer: asyncio.TimerHandle | None = None
        _head_bytes = 0
        _in_head = True

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._in_head = True
            self._head_bytes = 0
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout_s, self._head_late)

        def _disarm(self) -> None:
            self._in_head = False
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _refuse(self, status: int, reason: str, code: str, message: str) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self.transport.write(_response(status, reason, code, message))
                self.transport.close()

        def _head_late(self) -> None:
            self._head_timer = None
            if self._in_head:
                self._refuse(408, "Request Timeout", "header_timeout",
                             f"the request line and headers did not arrive within {header_timeout_s:g} s")

        def data_received(self, data: bytes) -> None:
            was_in_head = self._in_head
            super().data_received(data)
            # Count only chunks the head did not end in (a chunk may carry the end of a head and a body).
            if was_in_head and self._in_head and not self.transport.is_closing():
                self._head_bytes += len(data)
                if self._head_bytes > max_header_bytes:
                    self._refuse(431, "Request Header Fields Too Large", "headers_too_large",
                                 f"the request line and headers exceed {max_header_bytes} bytes")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()  # the next request on a keep-alive connection: its head is timed from its first byte

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return BoundedHeadProtocol


def __getattr__(name: str) -> Any:
    """`WorkerProtocol`: the bounded protocol for `gan-serve --workers N`, whose spawned workers cannot be
    handed a class built in the supervisor; uvicorn imports it by name, with the settings from GAN_*."""
    if name == "WorkerProtocol":
        from service.settings import Settings

        settings = Settings()
        return protocol_class(settings.header_timeout_s, settings.max_header_bytes)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
