"""Tasks: what kind of target a model predicts (one class, a set of labels, numbers, a tag per word), as plug-ins
registered by name. See `base.Task`; importing this package registers the built-in ones."""

from . import classification, multilabel, regression, tokens  # noqa: F401  (registration)
from .base import TASKS, Task, make_task, register_task, task_class, task_of

__all__ = ["TASKS", "Task", "make_task", "register_task", "task_class", "task_of"]
