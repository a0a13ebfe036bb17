"""Checkpoint files: written atomically, with `latest.pt` always naming the newest complete one.

A checkpoint is written to a temporary name in the same folder and renamed into place, so a crash or
a full disk mid-write never leaves a truncated file where a resume would look for it.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FORMAT = 1
LATEST = "latest.pt"
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")
#: key of the checkpoint a run's weights started from (SRGAN's stage-1 SRResNet); "sr_initialised_from" before
INITIALISED_FROM = "initialised_from"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the reason."""


def capture_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: Path, step: int, payload: dict[str, Any], keep: int = 3) -> Path:
    """Write `step_NNNNNNNN.pt`, point `latest.pt` at it, and prune all but the newest `keep`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:08d}.pt"
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **payload}, tmp)
    os.replace(tmp, path)
    link_tmp = directory / f".{LATEST}.tmp"
    link_tmp.unlink(missing_ok=True)
    link_tmp.symlink_to(path.name)
    os.replace(link_tmp, directory / LATEST)
    if keep > 0:
        for old in sorted(_step_files(directory))[:-keep]:
            old.unlink(missing_ok=True)
    return path


def _step_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if _STEP_FILE.match(p.name)]


def resolve_checkpoint(path: Path) -> Path:
    """Accept a checkpoint file, a checkpoints folder, or a run folder (which holds `checkpoints/`)."""
    path = Path(path)
    for candidate in (path, path / LATEST, path / "checkpoints" / LATEST):
        if candidate.is_file():
            return candidate.resolve()
    raise CheckpointError(f"no checkpoint at {path} (looked for the file, {LATEST}, checkpoints/{LATEST})")


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = resolve_checkpoint(path)
    try:
        # weights_only=False: the file holds RNG states (numpy arrays, tuples) as well as tensors;
        # only load checkpoints you trust, as with any pickle.
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint of this trainer (format {CHECKPOINT_FORMAT})")
    checkpoint["path"] = str(path)
    return checkpoint


def initialised_from(state: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint a run's weights started from (path, arch, step and, where recorded, the file's sha256),
    or None for a run that started from random weights. Export copies it into the manifest: the training
    command alone names a run folder that may be gone or retrained since."""
    return state.get(INITIALISED_FROM) or state.get("sr_initialised_from")
