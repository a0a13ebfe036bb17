"""Worker processes: how many, how they split the host, and how they find each other.

Why processes: one Python process serves from one event loop under one GIL; measured on a 2-core
host it tops out at about 1,100 images/s with a model that costs nothing, which is the ceiling on a
fast GPU. `gan-serve --workers N` runs N copies of the app under uvicorn's supervisor; each has its
own event loop, batchers and ONNX Runtime sessions, and they share the listening socket.

The workers coordinate only through files in the metrics folder (`PROMETHEUS_MULTIPROC_DIR`, made
and removed by gan-serve), so nothing here needs a server process of its own:

* a *slot* per worker (`worker-<i>`, holding the pid): a worker claims the lowest free slot at start
  (a slot whose pid is dead is free again, so a restarted worker takes its predecessor's place, and
  drops the dead worker's live gauges, which a killed process could not do itself); the slot number
  picks its CUDA device from `GAN_CUDA_DEVICES`, round-robin;
* a *ready mark* per slot (`ready-<i>`), written once the worker's models are warm: `/readyz` is 200
  only when every one of the N slots is held by a live, warm worker, because the kernel hands a new
  connection to any of them.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import multiprocess

#: Most workers auto mode starts per CUDA device (each holds a CUDA context and a copy of every model).
WORKERS_PER_GPU = 8


def auto_workers(cores: int, gpu_devices: int, intra_op_threads: int) -> int:
    """GAN_WORKERS=0: on CPU one worker per `intra_op_threads` cores (1 thread each when unset), so
    the workers together use every core once; with CUDA one worker per core (the model runs on the
    GPU, the workers do HTTP, sampling and encoding), at most WORKERS_PER_GPU per device."""
    if gpu_devices:
        return max(1, min(cores, WORKERS_PER_GPU * gpu_devices))
    return max(1, cores // max(1, intra_op_threads))


def threads_per_worker(cores: int, workers: int, streams: int) -> int:
    """CPU intra-op threads of each ONNX Runtime call when several workers (and streams) share the cores."""
    return max(1, cores // max(1, workers * streams))


def device_for(slot: int, devices: list[int]) -> int:
    """The CUDA device of worker `slot`: GAN_CUDA_DEVICES round-robin (device 0 when none is named)."""
    return devices[slot % len(devices)] if devices else 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


@dataclass
class WorkerSlot:
    """This process's place among the N workers (see the module docstring)."""

    folder: Path
    index: int
    workers: int

    @classmethod
    def claim(cls, folder: Path, workers: int) -> WorkerSlot:
        """Take the lowest slot that is free or whose holder died; raise if all N are held by live pids."""
        folder = Path(folder)
        pid = os.getpid()
        for index in range(workers):
            path = folder / f"worker-{index}"
            holder = _read_pid(path)
            if holder is not None and holder != pid and _alive(holder):
                continue
            if holder is not None and holder != pid:  # killed without cleaning up: its queue depth etc.
                multiprocess.mark_process_dead(holder, str(folder))
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:  # dead holder (or a race): replace it, then check we won
                tmp = folder / f".worker-{index}.{pid}"
                tmp.write_text(str(pid))
                os.replace(tmp, path)
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(str(pid))
            if _read_pid(path) == pid:
                with contextlib.suppress(FileNotFoundError):
                    (folder / f"ready-{index}").unlink()
                return cls(folder, index, workers)
        raise RuntimeError(f"all {workers} worker slots in {folder} are held by live processes")

    def mark_ready(self) -> None:
        tmp = self.folder / f".ready-{self.index}.{os.getpid()}"
        tmp.write_text(str(os.getpid()))
        os.replace(tmp, self.folder / f"ready-{self.index}")

    def release(self) -> None:
        """Give the slot up on a clean exit (a killed worker's slot is reclaimed by its pid being dead)."""
        for name in (f"ready-{self.index}", f"worker-{self.index}"):
            path = self.folder / name
            if _read_pid(path) == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def not_ready(self) -> list[str]:
        """Slots without a live, warm worker (empty when the whole service is ready)."""
        missing = []
        for index in range(self.workers):
            holder = _read_pid(self.folder / f"worker-{index}")
            ready = _read_pid(self.folder / f"ready-{index}")
            if holder is None or not _alive(holder):
                missing.append(f"worker {index}: not started")
            elif ready != holder:
                missing.append(f"worker {index}: warming")
        return missing
