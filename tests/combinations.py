"""Every control with every other, generated from the endpoint specs and the guidance registry.

An endpoint's *axes* are what a user switches: the guidance method (every choice of its ``guidance`` field), each
modifier of the registry whose parameters the endpoint takes (off, or on as its paper uses it: ``Modifier.example``),
every other choice field and flag (each value), and custom fields' declared ``variants`` (the sweep's method lists).
A *requirement* is one pair of axis values. Each requirement is first validated alone (``BoundEndpoint.parse``, no
model work): a refusal there is a valid outcome and is recorded with its message. The accepted ones are packed
greedily into as few requests as possible — a request takes another pair only if it still validates — and those
requests are run through the Gradio-free task functions. Every pair of axis values is thereby either refused before
any model work or run together in at least one request. A new method, modifier, choice or endpoint joins without
anyone writing a case.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from guidance.rules import METHODS, MODIFIERS
from tasks.spec import BoundEndpoint

SUITE_STEPS = 4  # enough for a guidance interval to have steps inside and outside it


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[tuple[str, dict[str, Any]], ...]  # (label, field overrides); the first is the default (no override)


@dataclass
class Plan:
    """For one endpoint: the requests to run, the refused pairs with their messages, and counts."""

    api_name: str
    base: dict[str, Any]
    axes: list[Axis]
    runs: list[dict[str, Any]] = field(default_factory=list)
    run_labels: list[list[str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (pair label, message)
    pairs: int = 0


def axes_of(endpoint: BoundEndpoint) -> list[Axis]:
    """The switches of an endpoint, read off its fields and the modifier registry."""
    names = set(endpoint.names)
    modifier_params = {p.name for m in MODIFIERS.values() for p in m.params}
    axes: list[Axis] = []
    for modifier in MODIFIERS.values():
        if all(p.name in names for p in modifier.params):
            axes.append(Axis(modifier.name, (("off", {}), ("on", dict(modifier.example)))))
    for f in endpoint.fields:
        if f.name in modifier_params:
            continue
        if f.name == "guidance":  # a method whose scale range is narrower comes with its paper's scale
            values = [f.default, *(c for c in f.choices if c != f.default)]
            axes.append(Axis(f.name, tuple((str(v), {} if i == 0 else {f.name: v, **_method_scale(v, endpoint)})
                                           for i, v in enumerate(values))))
            continue
        if f.kind == "choice":
            values = [f.default, *(c for c in f.choices if c != f.default)]
        elif f.kind == "flag":
            values = [f.default, not f.default]
        elif f.variants:  # a method list comes with a scale every method in it takes
            values = [f.default, *(v for v in f.variants if v != f.default)]
            axes.append(Axis(f.name, tuple((str(v), {} if i == 0 else {f.name: v, **_method_scale(v, endpoint)})
                                           for i, v in enumerate(values))))
            continue
        else:
            continue
        if len(values) > 1:
            axes.append(Axis(f.name, tuple((str(v), {} if i == 0 else {f.name: v}) for i, v in enumerate(values))))
    return axes


def _method_scale(names: str, endpoint: BoundEndpoint) -> dict[str, Any]:
    """For methods whose scale range is narrower than the registry's (CFG++'s λ ≤ 1), their paper's scale."""
    capped = [METHODS[n] for n in str(names).replace(" ", "").split(",") if n in METHODS and METHODS[n].scale_high]
    if not capped:
        return {}
    scale = min(m.typical_scale if m.typical_scale is not None else m.scale_high for m in capped)
    if "scale" in endpoint.names:
        return {"scale": scale}
    return {"scales": f"{scale:g}"} if "scales" in endpoint.names else {}


def base_request(endpoint: BoundEndpoint) -> dict[str, Any]:
    """The cheapest valid request, with a few denoising steps so step-dependent controls act."""
    request = endpoint.quick_request()
    steps = next((f for f in endpoint.fields if f.name == "steps" and f.kind == "integer"), None)
    if steps is not None:
        request["steps"] = max(steps.low or 1, min(SUITE_STEPS, steps.high or SUITE_STEPS))
    return request


def refusal(endpoint: BoundEndpoint, request: dict[str, Any]) -> str | None:
    """The validation message for ``request``, or None when it is accepted."""
    try:
        endpoint.parse(request)
    except ValueError as error:
        return str(error)
    return None


def plan(endpoint: BoundEndpoint) -> Plan:
    """Validate every pair of axis values alone; pack the accepted pairs into few requests that each validate."""
    base = base_request(endpoint)
    result = Plan(endpoint.api_name, base, axes_of(endpoint))
    accepted: list[dict[str, tuple[str, dict]]] = []  # axis name → (label, overrides), one or two axes each
    for axis in result.axes:  # each value alone (what an endpoint with a single switch has to cover)
        for label, values in axis.values[1:]:
            message = refusal(endpoint, {**base, **values})
            if message is not None:
                result.refused.append((f"{axis.name}={label}", message))
            else:
                accepted.append({axis.name: (label, values)})
    for a, b in itertools.combinations(result.axes, 2):
        for (la, va), (lb, vb) in itertools.product(a.values, b.values):
            if not va and not vb:
                continue  # both at their defaults: every request covers it
            result.pairs += 1
            message = refusal(endpoint, {**base, **va, **vb})
            if message is not None:
                result.refused.append((f"{a.name}={la} × {b.name}={lb}", message))
            else:
                accepted.append({a.name: (la, va), b.name: (lb, vb)})
    defaults = {axis.name: axis.values[0] for axis in result.axes}
    covered: set[tuple] = set()
    base_refused = refusal(endpoint, base)
    if base_refused is None:  # every control at its default: what most requests are
        result.runs.append(dict(base))
        result.run_labels.append([])
    else:  # the profile lacks what the endpoint needs: a clear refusal is the answer
        result.refused.append(("defaults", base_refused))

    def pairs_of(case: dict[str, tuple[str, dict]]) -> set[tuple]:
        items = sorted((name, label) for name, (label, _) in case.items())
        return set(itertools.combinations(items, 2)) | {(item,) for item in items}

    def key(requirement: dict[str, tuple[str, dict]]) -> tuple:
        return tuple(sorted((name, label) for name, (label, _) in requirement.items()))

    for requirement in accepted:
        if key(requirement) in covered:
            continue
        case, fixed = {**defaults, **requirement}, set(requirement)
        for other in accepted:
            if key(other) in covered or key(other) in pairs_of(case):
                continue
            if any(name in fixed and case[name][0] != label for name, (label, _) in other.items()):
                continue
            trial = {**case, **other}
            if refusal(endpoint, {**base, **_overrides(trial)}) is None:
                case, fixed = trial, fixed | set(other)
        covered |= pairs_of(case)
        result.runs.append({**base, **_overrides(case)})
        result.run_labels.append([f"{name}={label}" for name, (label, values) in case.items() if values])
    return result


def busiest_request(endpoint: BoundEndpoint) -> tuple[dict[str, Any], list[str]]:
    """The planned request that switches the most controls at once, as overrides of the quick request (what the
    live corpus sends to the server for each endpoint)."""
    p = plan(endpoint)
    request, labels = max(zip(p.runs, p.run_labels, strict=True), key=lambda run: len(run[1]))
    quick = endpoint.quick_request()
    return {k: v for k, v in request.items() if quick.get(k) != v}, labels


def _overrides(case: dict[str, tuple[str, dict]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _label, values in case.values():
        out.update(values)
    return out
