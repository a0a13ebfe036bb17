"""Model folders appear whole or not at all: built beside their place, then swapped in by renames."""

from __future__ import annotations

import shutil
from pathlib import Path


def publish_folder(staging: Path, target: Path) -> None:
    """Swap a new model folder into place so a reader (gan-serve, Triton's poller) never sees half of one."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
