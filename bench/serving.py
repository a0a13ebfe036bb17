"""Start and stop a gan-serve process for the reliability benchmarks (goodput, memory, loop latency).

`service_root` picks the code under test: this checkout by default, or another checkout (e.g. a
`git worktree` of an older commit) to measure "before" figures with the same driver. The server runs
as `python -m service.cli` in its own session, so it and its threads are stopped together.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_generate import _stop, _wait_ready  # noqa: E402  (reused, not copied)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A /proc/<pid>/status memory field (VmRSS now, VmHWM the high-water mark) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(
    model_repo: Path, port: int, log_path: Path, service_root: Path = ROOT, **settings: str
) -> subprocess.Popen:
    """gan-serve on 127.0.0.1:`port` serving `model_repo`, with `GAN_<NAME>` = each of `settings`."""
    env = dict(os.environ)
    env.update(
        GAN_MODEL_DIR=str(model_repo.resolve()),
        GAN_HOST="127.0.0.1",
        GAN_PORT=str(port),
        GAN_DEVICE="cpu",
        GAN_ACCESS_LOG="false",
        GAN_LOG_LEVEL="warning",
        PYTHONPATH=str(service_root),
    )
    env.update({f"GAN_{key.upper()}": value for key, value in settings.items()})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli"], env=env, cwd=service_root, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_ready(port, "/readyz", proc, timeout=300)
    except BaseException:
        stop_server(proc)
        raise
    return proc


def stop_server(proc: subprocess.Popen) -> None:
    _stop(proc)
