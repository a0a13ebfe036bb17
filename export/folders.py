"""Model folders appear whole or not at all: built beside their place, then swapped in by renames.

Two ways to publish an export (service/versions.py describes the layouts): replace the flat folder
`REPO/NAME/` (`publish_folder`), or add version `REPO/NAME/<N>/` next to the older ones and point
`serving.json` at it (`publish_version`), which a running gan-serve follows without downtime.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from service.manifest import MANIFEST_FILENAME, MODEL_FILENAME
from service.versions import read_serving, resolve, versions, write_serving


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


def _convert_flat(model_dir: Path) -> None:
    """Turn a flat model folder (NAME/model.onnx + manifest.json) into version 1 of a versioned one.

    Readers look for serving.json first, so the order is: copy the files into `1/` (hard links: no copy of the
    weights), point serving.json at 1, then remove the flat files. A service polling the folder sees the same
    export throughout and does not reload it needlessly beyond one swap to identical weights.
    """
    staging = Path(tempfile.mkdtemp(prefix=".1.", dir=model_dir))
    try:
        os.chmod(staging, 0o755)
        for name in (MODEL_FILENAME, MANIFEST_FILENAME):
            _link_or_copy(model_dir / name, staging / name)
        staging.rename(model_dir / "1")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_serving(model_dir, 1)
    for name in (MODEL_FILENAME, MANIFEST_FILENAME):
        (model_dir / name).unlink()


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def publish_version(staging: Path, model_dir: Path, serve: bool = True) -> tuple[Path, int]:
    """Add the export in `staging` as the next version of `model_dir` (NAME/<N>/), keeping every older one;
    with `serve`, point serving.json at it (a running gan-serve swaps to it), else leave serving as it is.

    A flat folder is first converted to version 1, so nothing that was served is lost. Returns the new
    version's folder and number.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(model_dir, 0o755)
    if (model_dir / MANIFEST_FILENAME).is_file() and not versions(model_dir):
        _convert_flat(model_dir)
    present = versions(model_dir)
    if present and read_serving(model_dir) is None:
        # pin what serves now, so that adding a higher version does not switch by Triton's `latest` rule
        write_serving(model_dir, resolve(model_dir).version or present[-1])
    number = (present[-1] if present else 0) + 1
    target = model_dir / str(number)
    staging.rename(target)  # staging is a sibling folder on the same file system: atomic
    if serve or not present:
        write_serving(model_dir, number)
    return target, number
