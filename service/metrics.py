"""Prometheus metrics (prefix `gan_`, base units, `_total` counters).

Each app owns a private `CollectorRegistry`, so several apps can live in one process (tests) and
nothing leaks into the global default registry. Latency buckets span 1 ms .. 60 s: the same service
answers a cached-warm CPU model in milliseconds and a large batch on a slow host in tens of seconds.

With several worker processes (`gan-serve --workers N`), `PROMETHEUS_MULTIPROC_DIR` is set before
any worker imports prometheus-client, so every value lives in a per-process file in that folder, and
`/metrics` from any worker renders all of them through prometheus-client's `MultiProcessCollector`:
counters and histograms are summed over the workers (dead ones included: their counts happened);
each gauge says how it combines (`multiprocess_mode`): queue depth is the sum over live workers,
readiness the minimum over live workers, the served version number the maximum over live workers, model
info the maximum (1 while any worker serves the model
on those providers). `gan_model_info` is a gauge set to 1 rather than an `Info`, which multiprocess
mode does not support; its exposition is the same.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
INFO_LABELS = ("model", "task", "architecture", "providers", "device", "precision", "version")


def multiprocess_dir() -> str | None:
    """The folder of the per-process metric files when running as one of several workers."""
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """All metrics of one app instance, registered in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = multiprocess_dir()
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
            multiprocess_mode="livesum",
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
            multiprocess_mode="livemin",
        )
        self.model_info = Gauge(
            "gan_model_info",
            "Model identity, served version and the execution providers ONNX Runtime actually uses.",
            list(INFO_LABELS),
            registry=r,
            multiprocess_mode="max",
        )

        self.model_version = Gauge(
            "gan_model_version",
            "Version number of the model folder being served (0 for the flat layout, models/NAME/model.onnx).",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",  # with several workers: the newest version any live worker serves
        )
        self.model_swaps = Counter(
            "gan_model_swaps",
            "Version changes tried on a running service: result swapped, or refused (old version kept).",
            ["model", "result"],
            registry=r,
        )

    def render(self) -> bytes:
        """The exposition: this app's registry, or with several workers all workers' files summed."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry)

    def process_exited(self) -> None:
        """Drop this worker's live gauges (queue depth, readiness) from the shared files on exit."""
        if self.multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)
