"""A response's status line and headers go out in the same socket write as its body.

Why: uvicorn's httptools protocol writes `http.response.start` to the socket at once and the body
in a second write, so every response costs two send system calls, two TCP segments (on loopback
the sender's CPU also pays the receiving side's processing) and often two reads by the client.
For a 1-image `/generate` response that is a measurable share of the request's CPU (issue 12).

How: each request/response cycle gets a `HeldHeadTransport` in front of the connection's transport.
The first write after the response has started (the head) is held; the next write of the cycle
(the body) goes out joined to it, in one write. Whatever else happens first - the cycle closes the
connection, or the current event-loop iteration ends without a body (a HEAD request, a streamed
response still computing its first chunk) - the head is written on its own, so nothing is held
longer than one loop iteration and the bytes on the wire are exactly those of uvicorn. Writes
before the head (`100 Continue`) pass straight through.

The guard: this relies on how uvicorn's `RequestResponseCycle` writes (its `transport` attribute,
`response_started` set before the head is written). `applies()` checks the installed uvicorn
against the versions this was checked with; another version runs uvicorn's own two writes.
"""

from __future__ import annotations

import asyncio
from typing import Any

#: uvicorn (major, minor) releases whose RequestResponseCycle.send this was checked against
#: (uvicorn/protocols/http/httptools_impl.py): head in one `transport.write`, body in the next.
CHECKED_UVICORN = frozenset({(0, 54)})


def applies(version: str) -> bool:
    """Whether `version` of uvicorn is one this module was checked against."""
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) in CHECKED_UVICORN


class HeldHeadTransport:
    """The transport one uvicorn request/response cycle writes to (see the module docstring)."""

    __slots__ = ("_transport", "_cycle", "_loop", "_held", "_head_done")

    #: Heads sent joined to their body: the tests read it to tell that coalescing really happens.
    joined = 0

    def __init__(self, transport: asyncio.Transport, cycle: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._cycle = cycle
        self._loop = loop
        self._held: bytes | None = None
        self._head_done = False

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            HeldHeadTransport.joined += 1
            self._transport.write(held + data)
        elif not self._head_done and self._cycle.response_started:
            self._head_done = True
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Write a held head on its own (end of the loop iteration, or before the connection closes)."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
