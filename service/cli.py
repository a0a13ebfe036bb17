"""`gan-serve`: load the model repository, then serve it with uvicorn (one worker).

Models are loaded *before* uvicorn starts, so a broken repository (bad manifest, corrupt or foreign
ONNX file, CUDA requested but unavailable) ends the process with one clear message and exit code 2
instead of a lifespan traceback. One worker per process: each worker would hold its own copy of
every model and its own batch queue; scale out with more replicas instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.protocol import protocol_class
from service.registry import ModelRegistry
from service.runtime import ModelLoadError
from service.settings import Settings


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
    parser.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (GAN_LOG_LEVEL)",
    )
    return parser


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
        registry = ModelRegistry.load(settings)
    except ModelLoadError as exc:
        print(f"gan-serve: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    from service.app import create_app

    app = create_app(settings, registry=registry)
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
