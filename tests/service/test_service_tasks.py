"""The steps of docs/architecture.md's "How to add a task", checked: a task of the manifest contract
has one TaskWork, one route, and is known to admission and the metrics without any other list."""

from __future__ import annotations

import typing
from pathlib import Path

from fastapi.routing import APIRoute

from service import routes_tasks
from service.admission import AdmissionMiddleware
from service.app import create_app
from service.manifest import Task
from service.middleware import ServiceMiddleware
from service.pipeline import TaskWork
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _task_works() -> list[type[TaskWork[typing.Any]]]:
    found, stack = [], list(TaskWork.__subclasses__())
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return [cls for cls in found if cls.__module__.startswith("service.")]


def test_every_task_of_the_manifest_has_one_task_work_and_one_route(tmp_path: Path) -> None:
    tasks = set(typing.get_args(Task))
    works = _task_works()
    assert sorted(work.task for work in works) == sorted(tasks), "one TaskWork per manifest task"
    assert {work.path: work.task for work in works} == routes_tasks.TASK_OF_PATH
    app = create_app(Settings(model_dir=tmp_path))
    posts = {route.path for route in app.routes if isinstance(route, APIRoute) and "POST" in route.methods}
    assert set(routes_tasks.TASK_OF_PATH) <= posts


def test_admission_and_metrics_know_every_task_route(tmp_path: Path) -> None:
    app = create_app(Settings(model_dir=tmp_path))
    options = {layer.cls: layer.kwargs for layer in app.user_middleware}
    assert options[AdmissionMiddleware]["task_of_path"] == routes_tasks.TASK_OF_PATH
    assert set(options[ServiceMiddleware]["task_paths"]) == set(routes_tasks.TASK_OF_PATH)


def test_task_modules_sit_where_the_error_code_test_reads_them() -> None:
    """test_statuses_in_the_docs_are_the_statuses_returned reads service/*.py, not subfolders."""
    for work in _task_works():
        module = typing.cast(typing.Any, __import__(work.__module__, fromlist=["_"]))
        assert Path(module.__file__).parent == ROOT / "service", work


def test_the_trainer_and_the_service_know_the_same_tasks() -> None:
    """A task is a contract of both halves: an architecture declares one (trainer.architecture.TASKS),
    and the service serves a manifest that names it (service.manifest.Task)."""
    from trainer.architecture import TASKS

    assert set(TASKS) == set(typing.get_args(Task))
