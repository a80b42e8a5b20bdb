"""Planted-circuit tasks: small models trained in the repository on tasks whose circuits are
known, with the ground-truth circuit stored beside the weights.

`TASKS` maps a task name to its module (each defines `TASK`); `get_task(name)` returns the task
and `load_task(name)` the trained model with its stored ground truth.
"""

from __future__ import annotations

import importlib

TASKS = {
    "induction": "circuits.tasks.induction",
    "ioi": "circuits.tasks.ioi",
    "greater_than": "circuits.tasks.greater_than",
    "othello": "circuits.tasks.othello",
}


def get_task(name: str):
    """The task object of `name` (no weights loaded)."""
    from circuits.tasks.base import check_task_name

    check_task_name(name, TASKS)
    return importlib.import_module(TASKS[name]).TASK


def load_task(name: str):
    """The trained model of task `name` with its stored ground truth (`LoadedTask`)."""
    from circuits.tasks.stored import load_trained

    return load_trained(get_task(name))
