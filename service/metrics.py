"""Prometheus metrics (prefix `gan_`, base units, `_total` counters).

Each app owns a private `CollectorRegistry`, so several apps can live in one process (tests) and
nothing leaks into the global default registry. Latency buckets span 1 ms .. 60 s: the same service
answers a cached-warm CPU model in milliseconds and a large batch on a slow host in tens of seconds.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """All metrics of one app instance, registered in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gan_requests",
            "HTTP requests by endpoint, model and status code.",
            ["endpoint", "model", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "gan_request_duration_seconds",
            "Time from request start to response start.",
            ["endpoint", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "gan_queue_wait_seconds",
            "Time a request waited in its model's queue before its batch ran.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "gan_inference_duration_seconds",
            "Duration of one ONNX Runtime call (one batch).",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "gan_batch_size",
            "Rows (images or tiles) per ONNX Runtime call.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "gan_queue_depth",
            "Rows waiting in a model's queue.",
            ["model"],
            registry=r,
        )
        self.rejections = Counter(
            "gan_rejections",
            "Requests refused or dropped, by reason.",
            ["model", "reason"],
            registry=r,
        )
        self.images = Counter(
            "gan_images_produced",
            "Images returned to clients.",
            ["model"],
            registry=r,
        )
        self.output_pixels = Counter(
            "gan_output_pixels",
            "Pixels (width x height) of the images /super-resolve returned.",
            ["model"],
            registry=r,
        )
        self.model_ready = Gauge(
            "gan_model_ready",
            "1 once a model is loaded and warmed up.",
            ["model"],
            registry=r,
        )
        self.model_info = Info(
            "gan_model",
            "Model identity, served version and the execution providers ONNX Runtime actually uses.",
            ["model"],
            registry=r,
        )

        self.model_version = Gauge(
            "gan_model_version",
            "Version number of the model folder being served (0 for the flat layout, models/NAME/model.onnx).",
            ["model"],
            registry=r,
        )
        self.model_swaps = Counter(
            "gan_model_swaps",
            "Version changes tried on a running service: result swapped, or refused (old version kept).",
            ["model", "result"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
