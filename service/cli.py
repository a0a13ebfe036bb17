"""`gan-serve`: load the model repository, then serve it with uvicorn (one or several workers).

Models are loaded *before* uvicorn starts, so a broken repository (bad manifest, corrupt or foreign
ONNX file, CUDA requested but unavailable) ends the process with one clear message and exit code 2
instead of a lifespan traceback.

With `--workers N` (N > 1) uvicorn's supervisor runs N worker processes, each importing the app
through `service.app:app_factory` with its settings from the environment: the flags given here are
written to `GAN_*` variables first, and `PROMETHEUS_MULTIPROC_DIR` points at a fresh folder (made
here, removed on exit) so that `/metrics` from any worker sums all of them (service.metrics) and the
workers can find each other (service.workers). The supervisor forwards SIGTERM/SIGINT to the
workers, each of which finishes its in-flight requests before it exits.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service import memory
from service.metrics import MULTIPROC_ENV
from service.protocol import protocol_class
from service.runtime import CPU, ModelLoadError, select_providers
from service.served_models import ServedModels, cpu_count
from service.settings import Settings
from service.workers import auto_workers

log = logging.getLogger("service.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gan-serve",
        description="Serve exported GAN models over HTTP. Every option also reads a GAN_* environment "
        "variable (see docs/service.md); flags win.",
    )
    parser.add_argument("--model-dir", type=Path, help="model repository (GAN_MODEL_DIR)")
    parser.add_argument("--host", help="interface to bind (GAN_HOST)")
    parser.add_argument("--port", type=int, help="TCP port (GAN_PORT)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="execution device (GAN_DEVICE)")
    parser.add_argument("--workers", type=int, help="worker processes, 0 = auto (GAN_WORKERS)")
    parser.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (GAN_LOG_LEVEL)",
    )
    return parser


def resolve_workers(settings: Settings) -> int:
    """GAN_WORKERS, with 0 resolved by `service.workers.auto_workers` for this host."""
    if settings.workers:
        return settings.workers
    gpus = 0 if select_providers(settings.device) == [CPU] else len(settings.cuda_devices) or 1
    return auto_workers(cpu_count(), gpus, settings.intra_op_threads)


def _validate_for_workers(settings: Settings) -> None:
    """Check the repository in the supervisor before spawning workers (exit 2 with one message, as with
    one worker). The sessions are opened on CPU and dropped, so the supervisor holds no GPU memory;
    each worker opens its own sessions on its device."""
    select_providers(settings.device)  # GAN_DEVICE=cuda without a CUDA build: refused here
    models = ServedModels.load(settings.model_copy(update={"device": "cpu"}))
    del models


def _serve_workers(settings: Settings, overrides: dict[str, object], workers: int) -> int:
    import uvicorn

    for key, value in overrides.items():
        os.environ[f"GAN_{key.upper()}"] = str(value)
    os.environ["GAN_WORKERS"] = str(workers)
    own_folder = not os.environ.get(MULTIPROC_ENV)
    folder = Path(os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="gan-serve-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():  # values of an earlier run would be summed into this one's
        if stale.is_file():
            stale.unlink()
    os.environ[MULTIPROC_ENV] = str(folder)
    try:
        options = uvicorn_options(settings)
        options["workers"] = workers
        if "http" in options:  # workers are spawned: they import the protocol by name (service.protocol)
            options["http"] = "service.protocol:WorkerProtocol"
        uvicorn.run("service.app:app_factory", factory=True, **options)
    finally:
        if own_folder:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {key: value for key, value in vars(args).items() if value is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"gan-serve: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        workers = resolve_workers(settings)
        if workers > 1:
            _validate_for_workers(settings.model_copy(update={"workers": workers}))
            log.info("starting %d worker processes", workers)
            return _serve_workers(settings, overrides, workers)
        import uvicorn

        from service.app import create_app

        memory.tune_gc()  # after the imports, before the models (a swapped-out version must stay collectable)
        models = ServedModels.load(settings)
    except ModelLoadError as exc:
        print(f"gan-serve: {exc}", file=sys.stderr)
        return 2

    app = create_app(settings, models=models)
    uvicorn.run(app, **uvicorn_options(settings))
    return 0


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's settings for `settings`: connection cap, keep-alive, and the request-head bounds
    (service.protocol); every limit is per process."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "workers": 1,
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }
    protocol = protocol_class(settings.header_timeout_s, settings.max_header_bytes)
    if protocol is not None:
        options["http"] = protocol
    return options


if __name__ == "__main__":
    sys.exit(main())
