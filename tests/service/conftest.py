"""Fixtures for the service tests; the helpers live in `service_testkit`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service.service_testkit import Gate, LiveServer, add_generator


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A model repository holding one generate model called `tiny`."""
    root = tmp_path / "models"
    add_generator(root, "tiny")
    return root


@pytest.fixture
def live_server() -> Iterator[Callable[..., LiveServer]]:
    """Factory: `live_server(app)` starts a server that is stopped after the test."""
    started: list[LiveServer] = []

    def start(app: Any) -> LiveServer:
        server = LiveServer(app).__enter__()
        started.append(server)
        return server

    yield start
    for gate in Gate.created:
        gate.open()
    Gate.created.clear()
    for server in reversed(started):
        server.__exit__(None, None, None)
