"""`gan-serve --workers 2`, run for real as a subprocess: every endpoint behaves as with one process,
`/metrics` from any worker sums all of them (prometheus-client's multiprocess mode), and SIGTERM lets
in-flight requests finish."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.service.media_testkit import add_super_resolver, add_translator, encode, noise
from tests.service.service_testkit import add_generator
from tests.service.workers_testkit import Served, metric_sum, start, stop


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("workers")
    repo = root / "models"
    add_generator(repo, "tiny")
    add_super_resolver(repo, "sr")
    add_translator(repo, "stargan")
    (root / "metrics").mkdir()
    served = start(repo, root, metrics_dir=root / "metrics", GAN_MAX_BATCH_DELAY_MS="1")
    yield served
    assert stop(served) == 0


def per_worker_requests(metrics_dir: Path) -> dict[str, float]:
    """gan_requests_total for /generate as each worker's own files hold it (one folder per pid)."""
    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = path.stem.split("_")[-1]
        single = metrics_dir.parent / f"one-{pid}"
        shutil.rmtree(single, ignore_errors=True)
        single.mkdir()
        shutil.copy(path, single / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(single))
        counts[pid] = metric_sum(generate_latest(registry).decode(), "gan_requests_total", endpoint="/generate")
    return counts


def test_every_endpoint_works_with_two_workers(two_workers: Served) -> None:
    url = two_workers.url
    models = httpx.get(url + "/models").json()
    assert models["ready"] is True and {m["name"] for m in models["models"]} == {"tiny", "sr", "stargan"}
    response = httpx.post(url + "/generate", json={"num_images": 3, "seed": 4})
    assert response.status_code == 200 and len(response.json()["images"]) == 3
    again = httpx.post(url + "/generate", json={"num_images": 3, "seed": 4})  # maybe another worker: same images
    assert again.json()["images"] == response.json()["images"]
    grid = httpx.post(url + "/generate", json={"num_images": 2}, headers={"Accept": "image/png"})
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    upload = encode(noise(10, 12))
    sr = httpx.post(url + "/super-resolve", files={"image": ("a.png", upload, "image/png")})
    assert sr.status_code == 200 and sr.headers["x-scale"] == "4"
    tr = httpx.post(url + "/translate", files={"image": ("a.png", upload, "image/png")},
                    data={"attributes": "colour_red"})
    assert tr.status_code == 200 and tr.headers["content-type"] == "image/png"
    bad = httpx.post(url + "/generate", json={"num_images": 0})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
    assert httpx.get(url + "/").status_code == 200 and "text/html" in httpx.get(url + "/").headers["content-type"]
    slots = sorted(p.name for p in two_workers.metrics_dir.glob("worker-*"))
    assert slots == ["worker-0", "worker-1"]  # both workers hold a slot ...
    assert sorted(p.name for p in two_workers.metrics_dir.glob("ready-*")) == ["ready-0", "ready-1"]  # ... warm


def test_metrics_are_summed_across_workers(two_workers: Served) -> None:
    url = two_workers.url
    before = metric_sum(httpx.get(url + "/metrics").text, "gan_requests_total", endpoint="/generate", status="200")
    sent = 0
    with ThreadPoolExecutor(16) as pool:
        for _ in range(10):  # until both workers have served some (the kernel picks the worker per connection)
            codes = list(pool.map(lambda s: httpx.post(url + "/generate", json={"seed": s}).status_code, range(16)))
            assert codes == [200] * 16
            sent += 16
            served_by = [n for n in per_worker_requests(two_workers.metrics_dir).values() if n > 0]
            if len(served_by) == 2:
                break
    assert len(served_by) == 2, "one worker served every connection"
    text = httpx.get(url + "/metrics").text  # from whichever worker: the same totals
    assert metric_sum(text, "gan_requests_total", endpoint="/generate", status="200") == before + sent
    assert metric_sum(text, "gan_images_produced_total", model="tiny") >= sent
    assert metric_sum(text, "gan_model_ready", model="tiny") == 1  # livemin over the workers
    assert metric_sum(text, "gan_model_info", model="tiny", device="cpu") == 1
    assert metric_sum(text, "gan_queue_depth", model="tiny") == 0
    assert metric_sum(text, "gan_batch_size_count", model="tiny") >= 2  # each worker batches on its own


def test_sigterm_with_two_workers_completes_in_flight_requests(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    add_generator(repo, "tiny")
    # a long batch delay holds the requests in the workers' queues when SIGTERM arrives
    served = start(repo, tmp_path, GAN_MAX_BATCH_DELAY_MS="1500", GAN_MAX_BATCH_SIZE="64")
    folders = list(tmp_path.glob("gan-serve-metrics-*"))
    assert len(folders) == 1  # gan-serve made the multiprocess folder ...
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(httpx.post, served.url + "/generate", json={"seed": s}, timeout=30) for s in range(6)]
        deadline = time.monotonic() + 10
        while metric_sum(httpx.get(served.url + "/metrics").text, "gan_queue_depth") < 6:
            assert time.monotonic() < deadline, "the requests never queued"
            time.sleep(0.05)
        served.proc.send_signal(signal.SIGTERM)
        assert [f.result().status_code for f in futures] == [200] * 6
    assert served.proc.wait(timeout=30) == 0, served.output()
    assert not folders[0].exists()  # ... and removed it on exit
