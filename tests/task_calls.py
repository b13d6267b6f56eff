"""Calling tasks the way the old endpoint functions were called (positional values in API order), without Gradio."""

from __future__ import annotations

from collections.abc import Callable

from models.profiles import Profile
from tasks.spec import Task


def positional(task: Task, profile: Profile) -> Callable[..., tuple]:
    """``call(*values, **named)`` → the task's outputs as a tuple in the spec's order (errors are ``ValueError``)."""

    def call(*args, **kwargs):
        request = {**dict(zip(task.spec.names, args, strict=False)), **kwargs}
        return task(profile, **request).values(task.spec)

    return call
