"""service.one_write: a response's head and body leave in one socket write, and the bytes are uvicorn's.

Two servers with gan-serve's protocol, one with the joined writes and one without; raw sockets send
the same bytes to both (pipelined requests, HEAD, a streamed static file, `Expect: 100-continue`,
errors) and must read the same bytes back, `date` header aside.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from service import one_write
from service.app import create_app
from service.protocol import protocol_class
from service.settings import Settings
from tests.service.service_testkit import LiveServer, add_generator

_DATE = re.compile(rb"\r\ndate: [^\r]*")


def exchange(port: int, data: bytes, *, then: bytes = b"") -> bytes:
    """Send `data` (then `then`, once a first answer arrived) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        received = [sock.recv(65536)]
        if then:
            sock.sendall(then)
        while chunk := sock.recv(65536):
            received.append(chunk)
    return _DATE.sub(b"", b"".join(received))


def post(path: str, body: bytes, *, close: bool = False, extra: bytes = b"") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n".encode() + extra + (b"connection: close\r\n" if close else b"")
            + b"\r\n" + body)


def get(path: str, method: str = "GET", close: bool = False) -> bytes:
    closing = b"connection: close\r\n" if close else b""
    return f"{method} {path} HTTP/1.1\r\nhost: test\r\n".encode() + closing + b"\r\n"


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """(port with joined writes, port with uvicorn's two writes)."""
    repo = tmp_path_factory.mktemp("one_write") / "models"
    add_generator(repo, "tiny")
    joined = protocol_class(10, 65536)
    plain = protocol_class(10, 65536, one_write=False)
    with LiveServer(create_app(Settings(model_dir=repo)), http=joined) as one, \
            LiveServer(create_app(Settings(model_dir=repo)), http=plain) as two:
        one.wait_ready()
        two.wait_ready()
        yield one.port, two.port


CASES = {
    "generate": post("/generate", b'{"num_images": 2, "seed": 3}', close=True),
    "pipelined": post("/generate", b'{"seed": 1}') + get("/healthz") + post("/generate", b'{"seed": 2}')
    + get("/models", close=True),
    "head": get("/healthz", "HEAD") + get("/healthz", close=True),
    "static file": get("/static/demo.js", close=True),
    "errors": post("/generate", b"{not json") + get("/nothing") + post("/generate", b'{"model": "x"}', close=True),
    "http/1.0": b"GET /healthz HTTP/1.0\r\n\r\n",
}


@pytest.mark.parametrize("name", CASES)
def test_the_bytes_are_uvicorns(ports: tuple[int, int], name: str) -> None:
    one, two = ports
    before = one_write.HeldHeadTransport.joined
    answer = exchange(one, CASES[name])
    assert answer == exchange(two, CASES[name])
    assert answer.startswith(b"HTTP/1.")
    if name != "static file":  # a file's first chunk is read on a thread: its head goes out on its own
        assert one_write.HeldHeadTransport.joined > before  # the heads really went out with their bodies


def test_expect_100_continue_is_not_held(ports: tuple[int, int]) -> None:
    """`100 Continue` is written before the response starts; the client waits for it before its body."""
    body = b'{"seed": 4}'
    head = post("/generate", b"", close=True, extra=b"expect: 100-continue\r\n").replace(
        b"content-length: 0", b"content-length: %d" % len(body))
    one, two = ports
    answers = [exchange(port, head, then=body) for port in (one, two)]
    assert answers[0] == answers[1]
    assert answers[0].startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")


def test_only_checked_uvicorn_versions_join_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert one_write.applies(uvicorn.__version__), (
        f"uvicorn {uvicorn.__version__}: check RequestResponseCycle.send (head and body each one "
        "transport.write, response_started set first), then add the version to one_write.CHECKED_UVICORN"
    )
    assert not one_write.applies("0.1.0")
    assert not one_write.applies("weird")
    monkeypatch.setattr(uvicorn, "__version__", "99.0.0")
    protocol = protocol_class(10, 65536)
    assert protocol is not None  # the head bounds stay; only the joined writes are off
    assert not one_write.applies(uvicorn.__version__)


def test_the_protocol_class_is_the_one_gan_serve_runs(tmp_path: Path) -> None:
    from service.cli import uvicorn_options

    options = uvicorn_options(Settings(model_dir=tmp_path))
    assert options["http"].on_headers_complete.__qualname__.startswith("protocol_class.<locals>.BoundedHeadProtocol")
