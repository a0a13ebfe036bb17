"""Model versions in the repository: which folder of a model is the one to serve.

Two layouts, told apart by what the model's folder holds:

    models/NAME/manifest.json + model.onnx            flat (the original layout): one version, no number
    models/NAME/<N>/manifest.json + model.onnx        versioned, N = 1, 2, ... (Triton's layout)
    models/NAME/serving.json                          {"version": N}: the version to serve

In a versioned folder `serving.json` names the served version; without it the highest number is served
(Triton's default `latest` policy). Versions are only ever added, so rolling back is rewriting one small
file, and every service process (workers, replicas) that polls the folder follows it (service/swap.py).
Hidden entries (`.N.*`) are exports in progress and never count.

The pointer is written by `gan-export` and `gan-models` through `write_serving`, atomically (a temporary file
renamed over the old one), so a reader sees the old or the new version, never a torn file. This module is
the contract's only reader and writer, like manifest.py for manifests, and needs nothing but the standard
library.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from service.manifest import MANIFEST_FILENAME

SERVING_FILENAME = "serving.json"


class VersionError(ValueError):
    """The model folder does not say unambiguously which version to serve."""


@dataclass(frozen=True)
class ModelVersion:
    """The folder to serve for one model, and its version number (None for the flat layout)."""

    model_dir: Path
    version: int | None
    directory: Path

    @property
    def label(self) -> str:
        """How /models and the metrics name it: the number, or `flat`."""
        return "flat" if self.version is None else str(self.version)

    def fingerprint(self) -> tuple[int | None, int, int]:
        """Changes whenever a different export sits in the served folder: a new number, or a flat folder
        replaced by gan-export (a new manifest file, so a new inode and modification time)."""
        stat = (self.directory / MANIFEST_FILENAME).stat()
        return self.version, stat.st_ino, stat.st_mtime_ns


def versions(model_dir: Path) -> list[int]:
    """The version numbers present (folders named by a positive integer that hold a manifest), ascending."""
    found: list[int] = []
    if not Path(model_dir).is_dir():
        return found
    for child in Path(model_dir).iterdir():
        if child.is_dir() and child.name.isdigit() and int(child.name) > 0 and (child / MANIFEST_FILENAME).is_file():
            found.append(int(child.name))
    return sorted(found)


def is_versioned(model_dir: Path) -> bool:
    return (Path(model_dir) / SERVING_FILENAME).is_file() or bool(versions(model_dir))


def is_model_folder(model_dir: Path) -> bool:
    """Whether `model_dir` is a model of either layout (else a stray folder of the repository)."""
    return (Path(model_dir) / MANIFEST_FILENAME).is_file() or is_versioned(model_dir)


def read_serving(model_dir: Path) -> int | None:
    """The version `serving.json` names, None without one; VersionError when it is unreadable."""
    path = Path(model_dir) / SERVING_FILENAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise VersionError(f"{path}: not readable JSON ({exc})") from exc
    version = raw.get("version") if isinstance(raw, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise VersionError(f'{path}: expected {{"version": N}} with N a positive integer, got {raw!r}')
    return version


def resolve(model_dir: Path) -> ModelVersion:
    """The version of `model_dir` to serve now. serving.json wins, then the highest version, then flat."""
    model_dir = Path(model_dir)
    present = versions(model_dir)
    wanted = read_serving(model_dir)
    if wanted is not None:
        if wanted not in present:
            raise VersionError(f"{model_dir / SERVING_FILENAME} names version {wanted}, which {model_dir} "
                               f"does not hold (versions: {present or 'none'})")
        return ModelVersion(model_dir, wanted, model_dir / str(wanted))
    if present:
        return ModelVersion(model_dir, present[-1], model_dir / str(present[-1]))
    if (model_dir / MANIFEST_FILENAME).is_file():
        return ModelVersion(model_dir, None, model_dir)
    raise VersionError(f"{model_dir}: no {MANIFEST_FILENAME} and no version folders (<N>/{MANIFEST_FILENAME}); "
                       "was the model exported with gan-export?")


def locate(folder: Path) -> ModelVersion:
    """A model folder (either layout) or one version folder of a versioned model -> what it designates."""
    folder = Path(folder)
    if folder.name.isdigit() and (folder / MANIFEST_FILENAME).is_file() and int(folder.name) > 0:
        return ModelVersion(folder.parent, int(folder.name), folder)
    return resolve(folder)


def write_serving(model_dir: Path, version: int) -> Path:
    """Point `model_dir` at `version` atomically (the version must exist); returns the pointer file."""
    model_dir = Path(model_dir)
    if version not in versions(model_dir):
        raise VersionError(f"{model_dir} holds no version {version} (versions: {versions(model_dir) or 'none'})")
    path = model_dir / SERVING_FILENAME
    handle, temporary = tempfile.mkstemp(prefix=f".{SERVING_FILENAME}.", dir=model_dir)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(json.dumps({"version": version}) + "\n")
        os.chmod(temporary, 0o644)  # readable by a service running as another user
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
