"""Every endpoint × every pair of its controls (methods, modifiers, choices, flags) on the toy profile, in process.

The cases come from ``tests/combinations.py`` (generated from the specs and the guidance registry). Each pair of
control values is either refused by validation with a one-line message (before any model work) or run, together with
other pairs, through the Gradio-free task — and the run must return every output. Run with ``-s`` for the counts.
"""

from __future__ import annotations

import time

import pytest
from combinations import plan

from models.profiles import load_profile
from tasks import all_tasks

TASKS = {task.spec.api_name: task for task in all_tasks()}
pytestmark = pytest.mark.slow  # ≈ 3 minutes in all: the fast loop leaves it to CI


@pytest.fixture(scope="module")
def toy():
    return load_profile("toy")


def requested(output, request: dict, spec) -> bool:
    """Whether ``request`` asks for ``output``: always, unless a field that requests it is left at its default."""
    if not output.requested_by:
        return True
    default = next(f.default for f in spec.fields if f.name == output.requested_by)
    return request.get(output.requested_by, default) != default


def run_plan(task, profile) -> tuple[list[str], int, float]:
    """(failures, requests run, seconds): a failure names the request's controls and what went wrong."""
    p = plan(task.spec.bind(profile))
    failures = []
    for label, message in p.refused:
        if "\n" in message or "Traceback" in message or not message.strip():
            failures.append(f"{p.api_name} {label}: refusal is not one clear line: {message!r}")
    started = time.perf_counter()
    for request, labels in zip(p.runs, p.run_labels, strict=True):
        try:
            sink = (lambda *_: 0.0) if task.streams else None  # as the UI: previews only where the endpoint streams
            result = task(profile, preview_sink=sink, **request)
        except Exception as error:  # noqa: BLE001 - every failure is reported with its controls
            failures.append(f"{p.api_name} [{', '.join(labels) or 'defaults'}]: {type(error).__name__}: {error}"[:400])
            continue
        missing = [o.name for o in task.spec.outputs
                   if result.outputs.get(o.name) is None and requested(o, request, task.spec)]
        if missing:
            failures.append(f"{p.api_name} [{', '.join(labels)}]: no {missing}")
    seconds = time.perf_counter() - started
    print(f"{p.api_name}: {len(p.axes)} controls, {p.pairs} pairs → {len(p.refused)} refused before model work, "
          f"{len(p.runs)} requests run in {seconds:.1f} s")
    return failures, len(p.runs), seconds


# NaN in an image is cast to 0 with only a RuntimeWarning: here it fails the case (rescale × CFG-Zero* was one).
@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("api_name", list(TASKS))
def test_every_pair_of_controls_runs_or_is_refused_up_front(api_name, toy):
    failures, runs, _ = run_plan(TASKS[api_name], toy)
    assert runs >= 1 or api_name == "/distill_compare" and not toy.has("distilled")
    assert not failures, "\n".join(failures)
