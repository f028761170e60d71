"""The task registry: ``tasks.get("depth")`` -> the ``Task`` that knows everything task-specific.

    from genpercept_lib import tasks
    tasks.get("depth").metrics        # ('AbsRel', 'delta1')
    tasks.names()                     # every registered task
    tasks.register(MyTask())          # a new task (see docs/library.md: "Adding a task")

Built-in tasks register themselves when this package is imported.
"""

from __future__ import annotations

from .base import REGISTRY, EvalSet, Task, get, names, register, unregister

# built-in tasks (each module registers its task on import)
from . import depth, dis, matting, normal, segmentation  # noqa: E402,F401  (isort: skip)

__all__ = ["EvalSet", "Task", "REGISTRY", "register", "unregister", "get", "names"]
