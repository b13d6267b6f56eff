"""Calling tasks the way the old endpoint functions were called (positional values in API order), without Gradio."""

from __future__ import annotations

from collections.abc import Callable

from models.profiles import Profile
from tasks.spec import Task


def positional(task: Task, profile: Profile, names: tuple[str, ...] | None = None) -> Callable[..., tuple]:
    """``call(*values, **named)`` → the task's outputs as a tuple in the spec's order (errors are ``ValueError``).

    Positional values fill ``names`` (default: the spec's order), so a test written against one parameter order
    keeps its meaning when parameters are added.
    """

    def call(*args, **kwargs):
        request = {**dict(zip(names or task.spec.names, args, strict=False)), **kwargs}
        return task(profile, **request).values(task.spec)

    return call
