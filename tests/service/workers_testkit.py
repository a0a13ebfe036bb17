"""A real `gan-serve --workers N` subprocess for tests (service and web demo tests run against it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.service.service_testkit import ROOT


def metric_sum(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[bytes]
    metrics_dir: Path

    def output(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""


def start(repo: Path, tmp: Path, *, metrics_dir: Path | None = None, workers: int = 2, **env: str) -> Served:
    """Run gan-serve with `workers` processes on a free loopback port; return once /readyz is 200."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GAN_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    environ.update(PYTHONPATH=str(ROOT), GAN_LOG_LEVEL="warning", GAN_ACCESS_LOG="false", TMPDIR=str(tmp), **env)
    if metrics_dir is not None:
        environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "--model-dir", str(repo), "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(workers), "--device", "cpu"],
        env=environ, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    served = Served(f"http://127.0.0.1:{port}", proc, metrics_dir or tmp)
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, served.output()
        try:
            if httpx.get(served.url + "/readyz", timeout=5).status_code == 200:
                return served
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "gan-serve --workers 2 never became ready:\n" + served.output()
        time.sleep(0.2)


def stop(served: Served) -> int:
    served.proc.send_signal(signal.SIGTERM)
    try:
        return served.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        served.proc.kill()
        raise
