"""Fixtures for the demo-page tests: the service with one tiny model of every task, and a headless
chromium (Debian's binary driven by playwright, launched as scripts/screenshot_page.py does).

The browser tests skip when chromium or playwright is missing, so that `pytest` still runs on a bare
machine; CI sets GAN_REQUIRE_BROWSER=1 (after installing both), which turns the skip into a failure,
so a broken install cannot pass as green.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from service.app import create_app
from service.settings import Settings
from tests.service.media_testkit import add_super_resolver, add_translator
from tests.service.service_testkit import ROOT, LiveServer, add_generator
from tests.service.workers_testkit import start, stop

SCRIPT = ROOT / "scripts" / "screenshot_page.py"
GENERATORS = ("tiny", "tiny-b")


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("screenshot_page", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def page_script() -> ModuleType:
    """scripts/screenshot_page.py as a module (its launcher and page walk are shared with the tests)."""
    return _load_script()


@pytest.fixture(scope="session")
def browser(page_script: ModuleType) -> Iterator[Any]:
    missing = page_script.browser_missing()
    if missing:
        if os.environ.get("GAN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"GAN_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(f"browser test: {missing}")
    with page_script.launch_chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two generate models (so the generate section shows its model picker), one of each other task."""
    root = tmp_path_factory.mktemp("web") / "models"
    for seed, name in enumerate(GENERATORS):
        add_generator(root, name, seed=seed)
    add_super_resolver(root, "sr")
    add_translator(root, "stargan")
    return root


@pytest.fixture(scope="module", params=["1 process", "2 workers"])
def service(
    request: pytest.FixtureRequest, model_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The demo's service in-process, and as a real `gan-serve --workers 2` (same page, same results)."""
    if request.param == "2 workers":
        served = start(model_repo, tmp_path_factory.mktemp("web-workers"), GAN_MAX_BATCH_DELAY_MS="1")
        yield served
        assert stop(served) == 0
        return
    with LiveServer(create_app(Settings(model_dir=model_repo, max_batch_delay_ms=1))) as server:
        server.wait_ready()
        yield server


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab (own storage); fails the test on an uncaught script error or a CSP violation,
    which a test looking only at the DOM would miss."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
    tab.on(
        "console",
        lambda msg: problems.append(f"console: {msg.text}") if "Content Security Policy" in msg.text else None,
    )
    yield tab
    context.close()
    assert not problems, problems
