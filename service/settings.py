"""Service configuration: one pydantic-settings object read from `GAN_*` environment variables.

Every knob lives here so the rest of the service takes a `Settings` and never reads the environment
itself; tests build a `Settings(...)` directly. Each variable is documented in `docs/service.md`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Device = Literal["auto", "cpu", "cuda"]


def _split_list(value: object, item: Callable[[str], object]) -> object:
    """A comma-separated string (`a,b`) as a list of `item(part)`, a JSON list string parsed; other
    values as they are (pydantic validates them)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    return [item(part.strip()) for part in text.split(",") if part.strip()]


class Settings(BaseSettings):
    """Runtime configuration of one service process (read once at start-up)."""

    model_config = SettingsConfigDict(env_prefix="GAN_", extra="ignore", protected_namespaces=())

    model_dir: Path = Field(Path("models"), description="Model repository: one sub-directory per model.")
    model_poll_s: float = Field(
        5.0,
        ge=0,
        description="Seconds between checks of each model folder for a new served version (serving.json, or a "
        "re-exported folder); it is loaded, warmed up and swapped in without failing a request. 0 = never.",
    )
    device: Device = Field(
        "auto",
        description="auto = CUDA when onnxruntime offers it, else CPU; cuda = CUDA or refuse to start.",
    )
    max_batch_size: int = Field(32, ge=1, description="Most rows (images) in one ONNX Runtime call.")
    max_batch_delay_ms: float = Field(
        5.0, ge=0, description="Longest wait after the first queued request for a batch to fill."
    )
    max_queue_size: int = Field(256, ge=1, description="Most rows waiting per model; beyond it, 503.")
    request_timeout_s: float = Field(30.0, gt=0, description="Deadline of one request; past it, 504.")
    max_images_per_request: int = Field(64, ge=1, description="Most images one request may ask for.")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1, description="Largest accepted request body.")
    max_input_pixels: int = Field(
        2048 * 2048, ge=1, description="Largest uploaded image (width x height), for upload endpoints."
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Accepted API keys (comma-separated); empty = no authentication.",
    )
    host: str = Field("0.0.0.0", description="Interface to bind.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to bind.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = Field(True, description="Log one line per request (uvicorn access log).")
    inference_streams: int = Field(
        0, ge=0, description="Batches computed at once per model (each on its own thread); 0 = auto (1)."
    )
    intra_op_threads: int = Field(
        0, ge=0, description="ONNX Runtime intra-op threads per call; 0 = auto (CPU cores / streams on CPU)."
    )
    intra_op_spinning: bool = Field(
        False, description="Let ONNX Runtime's idle pool threads spin (faster on a dedicated many-core host)."
    )
    codec_threads: int = Field(2, ge=1, description="Threads that encode images off the event loop.")
    workers: int = Field(
        1, ge=0, description="Worker processes (each its own event loop, batchers and sessions); 0 = auto."
    )
    cuda_devices: Annotated[list[int], NoDecode] = Field(
        default_factory=list,
        description="CUDA device ids (comma-separated) the workers are spread over, round-robin; empty = device 0.",
    )
    cudnn_conv_algo_search: Literal["HEURISTIC", "EXHAUSTIVE", "DEFAULT"] = Field(
        "HEURISTIC", description="cuDNN convolution algorithm search of the CUDA execution provider."
    )
    warmup: Literal["all", "ends"] = Field(
        "all",
        description="Batch sizes warmed up before ready: all = 1..max_batch_size (no live request meets a new "
        "shape), ends = 1 and max_batch_size (for models too slow on CPU to run every size at start-up).",
    )
    retry_after_s: int = Field(1, ge=0, description="Retry-After seconds sent with 503 responses.")
    sr_tile_size: int = Field(
        128, ge=8, description="Side (input pixels) of the square tiles /super-resolve splits larger images into."
    )
    sr_tile_overlap: int = Field(
        16, ge=0, description="Context pixels around each tile's kept centre; must be < sr_tile_size / 2."
    )

    sr_max_tiles: int = Field(
        1024, ge=1, description="Most tiles one /super-resolve request may need; more is 413 (checked from the header)."
    )
    sr_max_batch_size: int = Field(
        8,
        ge=0,
        description="Most tiles per ONNX Runtime call of a super_resolve model (its peak memory); 0 = max_batch_size.",
    )
    max_concurrent_requests: int = Field(
        64, ge=1, description="Inference requests in progress per process; beyond it, 503 before the body is read."
    )
    overload_delay_s: float = Field(
        1.0,
        ge=0,
        description="How long an overload refusal (503 before the body) is held before it is sent; paces clients "
        "that ignore Retry-After. 0 = at once.",
    )
    max_connections: int = Field(
        1024, ge=1, description="Open connections (and requests) per process; beyond it uvicorn answers 503."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="Time a client has to send a request's line and headers; then 408 and close."
    )
    max_header_bytes: int = Field(65536, ge=1024, description="Largest request line + headers; more is 431.")
    body_timeout_s: float = Field(30.0, gt=0, description="Time a client has to send a whole request body; then 408.")
    keep_alive_timeout_s: float = Field(5.0, gt=0, description="Idle keep-alive connections are closed after this.")
    docs_require_key: bool = Field(
        False, description="With API keys, the API docs (/docs, /redoc, /openapi.json) need a key too."
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        """Accept `a,b` (what people write in an env file) as well as a JSON list or a Python list."""
        return _split_list(value, str)

    @field_validator("cuda_devices", mode="before")
    @classmethod
    def _split_devices(cls, value: object) -> object:
        """Accept `0,1` (as CUDA_VISIBLE_DEVICES is written) as well as a JSON or Python list."""
        return [value] if isinstance(value, int) else _split_list(value, int)

    @model_validator(mode="after")
    def _queue_holds_a_request(self) -> Settings:
        # A request that can never fit in the queue would be rejected forever with a misleading 503.
        if self.max_images_per_request > self.max_queue_size:
            raise ValueError(
                f"max_images_per_request ({self.max_images_per_request}) must not exceed "
                f"max_queue_size ({self.max_queue_size})"
            )
        return self

    @model_validator(mode="after")
    def _tiles_keep_a_centre(self) -> Settings:
        # Each tile keeps sr_tile_size - 2 * sr_tile_overlap pixels; zero or less would never finish.
        if 2 * self.sr_tile_overlap >= self.sr_tile_size:
            raise ValueError(
                f"sr_tile_overlap ({self.sr_tile_overlap}) must be less than half of sr_tile_size ({self.sr_tile_size})"
            )
        return self
