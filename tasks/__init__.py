"""The task registry: a new task is one small file defining a `Task` plus one line here."""
from __future__ import annotations

from models.types import BenchError
from tasks import acronyms, greater_than, ioi
from tasks.base import Example, Task

TASKS: dict[str, Task] = {
    ioi.TASK.name: ioi.TASK,
    acronyms.TASK.name: acronyms.TASK,
    greater_than.TASK.name: greater_than.TASK,
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise BenchError(f"unknown task {name!r}; choose one of: {', '.join(sorted(TASKS))}") from None


__all__ = ["TASKS", "Example", "Task", "get_task"]
