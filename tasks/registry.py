"""The one list of tasks. Adding a task: a folder under ``tasks/`` and one entry here."""

from __future__ import annotations

from functools import cache
from importlib import import_module

from tasks.base import Task

#: Task name -> "module:attribute" of its :class:`Task` instance (imported on first use).
TASKS: dict[str, str] = {
    "stock_forecast": "tasks.stock_forecast:TASK",
    "fashion_mnist": "tasks.fashion_mnist:TASK",
}
DEFAULT_TASK = "stock_forecast"


class UnknownTaskError(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown task {name!r}; registered tasks: {', '.join(sorted(TASKS))}")


def task_names() -> list[str]:
    return sorted(TASKS)


@cache
def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UnknownTaskError(name)
    module, attribute = TASKS[name].split(":")
    task = getattr(import_module(module), attribute)
    if not isinstance(task, Task) or task.name != name:
        raise TypeError(f"{TASKS[name]} is not the Task named {name!r}")
    return task
