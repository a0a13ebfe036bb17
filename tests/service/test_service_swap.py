"""Versioned model folders and live version swaps (service/versions.py, service/swap.py).

The swap tests run real uvicorn servers polling a real repository every 0.1 s; versions are tiny ONNX
generators that differ only in their weights (build_generator's seed), so every response says which version
computed it.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from export.models_cli import main as gan_models
from service.app import create_app
from service.manifest import MANIFEST_FILENAME, MODEL_FILENAME
from service.settings import Settings
from service.versions import SERVING_FILENAME, VersionError, locate, resolve, versions, write_serving
from tests.service.service_testkit import LATENT_DIM, LiveServer, build_generator, generate_manifest

NAME = "gen"
LATENTS = [[0.1 * (i + j) - 0.4 for j in range(LATENT_DIM)] for i in range(3)]


def add_version(model_dir: Path, version: int, seed: int, name: str = NAME) -> Path:
    directory = model_dir / str(version)
    build_generator(directory / MODEL_FILENAME, seed=seed)
    generate_manifest(name).write(directory)
    return directory


def add_broken_version(model_dir: Path, version: int) -> Path:
    """A version whose manifest is fine and whose ONNX file is not (a truncated copy, say)."""
    directory = model_dir / str(version)
    directory.mkdir(parents=True)
    generate_manifest(NAME).write(directory)
    (directory / MODEL_FILENAME).write_bytes(b"not an onnx model")
    return directory


def settings(repo: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"model_dir": repo, "model_poll_s": 0.1, "request_timeout_s": 2.0,
                              "max_batch_delay_ms": 5.0, "device": "cpu", **overrides}
    return Settings(**values)


def answer(url: str) -> list[str]:
    """The images of one fixed request: identical for one version, different between versions."""
    reply = httpx.post(url + "/generate", json={"model": NAME, "latents": LATENTS}, timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.json()["images"]


def served(url: str) -> dict[str, Any]:
    return next(m for m in httpx.get(url + "/models", timeout=10).json()["models"] if m["name"] == NAME)


def wait_until(what: str, check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def metric(url: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


# ------------------------------------------------------------------------------------------------ layouts


def test_resolve_follows_serving_json_then_the_highest_version_then_flat(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    build_generator(flat / MODEL_FILENAME)
    generate_manifest("flat").write(flat)
    assert resolve(flat).version is None and resolve(flat).directory == flat and resolve(flat).label == "flat"

    model = tmp_path / NAME
    for version in (1, 2, 10):
        add_version(model, version, seed=version)
    (model / ".11.tmp-export").mkdir()  # an export in progress: hidden, never a version
    (model / "notes").mkdir()
    assert versions(model) == [1, 2, 10]
    assert resolve(model).version == 10  # no serving.json: Triton's `latest`
    write_serving(model, 2)
    assert resolve(model).version == 2 and resolve(model).directory == model / "2"
    assert json.loads((model / SERVING_FILENAME).read_text()) == {"version": 2}
    assert locate(model / "1").version == 1 and locate(model).version == 2 and locate(flat).version is None


@pytest.mark.parametrize("content, message", [
    ("{not json", "not readable JSON"),
    ('{"version": "2"}', "positive integer"),
    ('{"version": 0}', "positive integer"),
    ('{"version": 7}', "names version 7"),
])
def test_a_bad_serving_json_is_an_error_that_names_the_file(tmp_path: Path, content: str, message: str) -> None:
    model = tmp_path / NAME
    add_version(model, 1, seed=1)
    (model / SERVING_FILENAME).write_text(content)
    with pytest.raises(VersionError, match=message):
        resolve(model)
    with pytest.raises(VersionError, match="holds no version 3"):
        write_serving(model, 3)


def test_the_service_starts_on_a_versioned_folder_and_reports_the_version(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    add_version(repo / NAME, 1, seed=1)
    add_version(repo / NAME, 2, seed=2)
    write_serving(repo / NAME, 1)
    with LiveServer(create_app(settings(repo))) as server:
        server.wait_ready()
        info = served(server.url)
        assert info["version"] == "1" and info["swap_error"] is None
        assert metric(server.url, "gan_model_version", model=NAME) == 1
        assert metric(server.url, "gan_model_info", model=NAME, version="1") == 1


# -------------------------------------------------------------------------------------------------- swaps


class Clients:
    """Sequential /generate requests from `count` threads, bounded in number and time."""

    def __init__(self, url: str, count: int = 4, max_seconds: float = 30, max_requests: int = 3000) -> None:
        self.url, self.max_seconds, self.max_requests = url, max_seconds, max_requests
        self.results: list[list[tuple[int, list[str] | str]]] = [[] for _ in range(count)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)]

    def _run(self, index: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < deadline and self.total < self.max_requests:
                try:
                    reply = client.post(self.url + "/generate", json={"model": NAME, "latents": LATENTS})
                    body = reply.json()["images"] if reply.status_code == 200 else reply.text
                    self.results[index].append((reply.status_code, body))
                except httpx.HTTPError as exc:
                    self.results[index].append((0, repr(exc)))

    @property
    def total(self) -> int:
        return sum(len(r) for r in self.results)

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def test_a_swap_under_steady_load_fails_no_request(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    model = repo / NAME
    add_version(model, 1, seed=1)
    app = create_app(settings(repo))
    with LiveServer(app) as server:
        server.wait_ready()
        old = answer(server.url)
        with Clients(server.url) as clients:
            wait_until("steady load", lambda: clients.total >= 40)
            add_version(model, 2, seed=2)
            write_serving(model, 2)  # what gan-export --new-version does last
            wait_until("the swap", lambda: served(server.url)["version"] == "2")
            swapped_at = clients.total
            wait_until("load on the new version", lambda: clients.total >= swapped_at + 40)
        new = answer(server.url)
        assert new != old
        failed = [(status, body) for result in clients.results for status, body in result if status != 200]
        assert not failed, f"{len(failed)} of {clients.total} requests failed during the swap: {failed[:3]}"
        for result in clients.results:
            seen = [body for _, body in result]
            assert all(body in (old, new) for body in seen), "a response from neither version"
            # each client's requests are sequential: once one ran on version 2, none runs on version 1 again
            first_new = seen.index(new) if new in seen else len(seen)
            assert old not in seen[first_new:]
        counts = [sum(body == old for _, body in r) + sum(body == new for _, body in r) for r in clients.results]
        assert sum(body == new for r in clients.results for _, body in r) > 0 and min(counts) > 0

        assert metric(server.url, "gan_model_version", model=NAME) == 2
        assert metric(server.url, "gan_model_swaps_total", model=NAME, result="swapped") == 1
        assert metric(server.url, "gan_model_info", model=NAME, version="2") == 1
        assert metric(server.url, "gan_model_ready", model=NAME) == 1
        # the old version is freed once no request can still use it (request_timeout_s = 2 s)
        registry = server.service.models
        wait_until("the old version to be retired", lambda: not registry.retired, timeout=10)


def test_a_bad_version_is_refused_the_old_one_keeps_serving_and_rollback_is_one_command(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    model = repo / NAME
    add_version(model, 1, seed=1)
    add_version(model, 2, seed=2)
    write_serving(model, 1)
    with LiveServer(create_app(settings(repo))) as server:
        server.wait_ready()
        first = answer(server.url)

        assert gan_models(["serve", str(model), "2"]) == 0
        wait_until("version 2", lambda: served(server.url)["version"] == "2")
        second = answer(server.url)
        assert second != first

        assert gan_models(["rollback", str(model)]) == 0  # the one command
        wait_until("the rollback to version 1", lambda: served(server.url)["version"] == "1")
        assert answer(server.url) == first

        add_broken_version(model, 3)
        assert gan_models(["serve", str(model), "3"]) == 0
        error = wait_until("the refusal", lambda: served(server.url)["swap_error"])
        assert "version 3 refused" in error and "1 keeps serving" in error
        assert served(server.url)["version"] == "1" and answer(server.url) == first
        assert httpx.get(server.url + "/readyz", timeout=5).status_code == 200
        assert metric(server.url, "gan_model_swaps_total", model=NAME, result="refused") == 1

        # a version of another task would change what the name means to clients: refused as well
        other = add_version(model, 4, seed=4)
        manifest = json.loads((other / MANIFEST_FILENAME).read_text())
        manifest.update(task="super_resolve", scale=4, latent_dim=None, latent_distribution=None)
        (other / MANIFEST_FILENAME).write_text(json.dumps(manifest))
        assert gan_models(["serve", str(model), "4"]) == 0
        wait_until("the second refusal", lambda: "version 4" in (served(server.url)["swap_error"] or ""))
        assert "super_resolve" in served(server.url)["swap_error"] and answer(server.url) == first

        assert gan_models(["serve", str(model), "2"]) == 0
        wait_until("version 2 again", lambda: served(server.url)["version"] == "2")
        assert served(server.url)["swap_error"] is None and answer(server.url) == second
        assert metric(server.url, "gan_model_swaps_total", model=NAME, result="swapped") == 3


def test_every_process_reading_the_repository_follows_the_same_pointer(tmp_path: Path) -> None:
    """What makes polling right for `--workers N` and replicas: no process needs to be told separately."""
    repo = tmp_path / "models"
    model = repo / NAME
    add_version(model, 1, seed=1)
    with LiveServer(create_app(settings(repo))) as one, LiveServer(create_app(settings(repo))) as two:
        one.wait_ready()
        two.wait_ready()
        add_version(model, 2, seed=2)
        write_serving(model, 2)
        for server in (one, two):
            wait_until("every process to swap", lambda s=server: served(s.url)["version"] == "2")
        assert answer(one.url) == answer(two.url)


def test_a_flat_folder_replaced_by_a_new_export_is_swapped_too(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    flat = repo / NAME
    build_generator(flat / MODEL_FILENAME, seed=1)
    generate_manifest(NAME).write(flat)
    with LiveServer(create_app(settings(repo))) as server:
        server.wait_ready()
        before = answer(server.url)
        assert served(server.url)["version"] == "flat"
        # what gan-export does to a flat folder: a complete new folder renamed into place
        staging = repo / f".{NAME}.new"
        build_generator(staging / MODEL_FILENAME, seed=2)
        generate_manifest(NAME).write(staging)
        flat.rename(repo / f".{NAME}.old")
        staging.rename(flat)
        wait_until("the re-export to be served", lambda: answer(server.url) != before)
        assert served(server.url)["version"] == "flat"


def test_polling_can_be_switched_off(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    add_version(repo / NAME, 1, seed=1)
    with LiveServer(create_app(settings(repo, model_poll_s=0))) as server:
        server.wait_ready()
        assert server.service.watching is None
        add_version(repo / NAME, 2, seed=2)
        write_serving(repo / NAME, 2)
        time.sleep(0.5)
        assert served(server.url)["version"] == "1"


def test_the_watcher_stops_when_cancelled_during_the_initial_warm_up(tmp_path: Path) -> None:
    """A shutdown while models are still warming must not hang on the watcher (it waits for the warm-up)."""
    import asyncio

    from service.served_models import ServedModels
    from service.swap import VersionWatcher

    repo = tmp_path / "models"
    add_version(repo / NAME, 1, seed=1)

    async def scenario() -> bool:
        config = settings(repo)
        watcher = VersionWatcher(ServedModels.load(config), config)
        warm_up = asyncio.get_running_loop().create_task(asyncio.sleep(3600))
        watching = asyncio.get_running_loop().create_task(watcher.run(after=warm_up))
        await asyncio.sleep(0.05)
        watching.cancel()
        done, _ = await asyncio.wait([watching], timeout=2)
        warm_up.cancel()
        return watching in done and watching.cancelled()

    assert asyncio.run(scenario())
