"""Endpoint specs and Gradio-free tasks: validate → load → sample → package, one pattern for every tab.

An :class:`EndpointSpec` lists an endpoint's :class:`~tasks.fields.Field` s (in API order) and outputs,
plus cross-field checks and a cost estimate. Bound to a profile it validates a request
(:meth:`BoundEndpoint.parse`), gives the gradio_client signature, example rows by field name, the
public parameters for metadata and the reproduce snippet. A :class:`Task` pairs a spec with its
``run(params, ctx)`` function and is callable from a notebook::

    from models.profiles import load_profile
    from tasks.text_to_image import TEXT_TO_IMAGE
    result = TEXT_TO_IMAGE(load_profile("toy"), prompt="a red circle", steps=10)
    result.outputs["images"][0][0].save("red_circle.png")
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from models.adapters.preview import to_pil_images
from models.loading.sd import describe_load
from models.profiles import portable
from models.runtime import Runtime, pick_runtime, rows_at_most
from reporting.metadata import Timings, attach_metadata, client_snippet, run_metadata
from tasks.fields import Field

if TYPE_CHECKING:
    from guidance.sampler import StepState
    from models.profiles import Profile

ProgressFn = Callable[[int, int, str], None]
# Receives preview images of the predicted x̂0 and the step they show (done, total); may return what showing one
# costs beyond the call (seconds: encoding and sending it), which the preview rate then accounts for.
PreviewSink = Callable[[list[Image.Image], int, int], float | None]
MAX_PREVIEWS = 8  # per run: enough to watch x̂0 form, few enough to cost little
MIN_PREVIEWS = 2  # per run of three steps or more, whatever the budget says
PREVIEW_BUDGET = 0.10  # a preview may cost at most this share of the step time it replaces
# What delivering one preview costs a gradio_client reader beyond the server's own work: it downloads each preview
# file before reading the next message (≈ 60 ms per preview on localhost here: `python -m scripts.bench.report`'s
# streaming row, read with and without downloads). The server cannot see it, so it is budgeted for.
PREVIEW_DELIVERY_S = 0.06
# A cross-field check raises ValueError, or returns values it derived (a resolved class id …) to merge in.
Check = Callable[["Params", "Profile"], "Mapping[str, Any] | None"]


class Params(Mapping[str, Any]):
    """A validated request: read-only, by key or attribute (``params.prompt``), picklable."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Params({self._values!r})"

    def __getstate__(self) -> dict:
        return self._values

    def __setstate__(self, state: dict) -> None:
        object.__setattr__(self, "_values", state)

    def replace(self, **changes: Any) -> Params:
        return Params({**self._values, **changes})


@dataclass(frozen=True)
class Output:
    """One returned value, in API order: ``kind`` is gallery, image, json, number, code, markdown, lineplot or slider
    (two images to compare, dragged apart).

    A lineplot is drawn in the browser from a long-format data frame (``reporting.plots``): ``axes`` names its
    x, y and colour columns, ``y_title`` the y axis; hovering a point shows its row.
    """

    name: str
    kind: str
    label: str
    columns: int = 2
    elem_id: str | None = None
    preview: bool = False  # streams the predicted x̂0 while sampling (the endpoint becomes a generator)
    axes: tuple[str, str, str] = ("step", "value", "series")
    y_title: str = ""
    requested_by: str = ""  # a field that asks for this output: it is empty while that field is at its default


@dataclass(frozen=True)
class EndpointSpec:
    """Everything about one endpoint that is not the work itself.

    ``cost(params)`` estimates the GPU work in megapixel-steps of a UNet evaluation (for a ZeroGPU
    time budget); ``None`` means the endpoint needs no GPU. ``summary`` is the README's one line.
    """

    api_name: str
    summary: str
    fields: tuple[Field, ...]
    outputs: tuple[Output, ...]
    checks: tuple[Check, ...] = ()
    cost: Callable[[Params], float] | None = None

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.api_name}: a field name appears twice in {names}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def bind(self, profile: Profile) -> BoundEndpoint:
        return BoundEndpoint(self, profile, tuple(f.bind(profile) for f in self.fields))


@dataclass(frozen=True)
class BoundEndpoint:
    """A spec with its profile-dependent defaults and bounds resolved."""

    spec: EndpointSpec
    profile: Profile
    fields: tuple[Field, ...]

    @property
    def api_name(self) -> str:
        return self.spec.api_name

    @property
    def names(self) -> tuple[str, ...]:
        return self.spec.names

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.api_name} has no field {name!r}")

    def defaults(self) -> dict[str, Any]:
        return {f.name: f.default for f in self.fields}

    def parse(self, request: Mapping[str, Any]) -> Params:
        """Every field validated (missing ones take their default), then the cross-field checks.

        Raises ``ValueError`` with one clear message; nothing is loaded or computed before this passes.
        """
        unknown = set(request) - set(self.names)
        if unknown:
            raise ValueError(f"{self.api_name} takes no parameter(s) {sorted(unknown)}; "
                             f"it takes {', '.join(self.names)}")
        values = {f.name: f.parse(request.get(f.name, f.default)) for f in self.fields}
        params = Params(values)
        for check in self.spec.checks:
            derived = check(params, self.profile)
            if derived:
                params = params.replace(**derived)
        return params

    def public(self, params: Params) -> dict[str, Any]:
        """The parameters that describe the run, in the form the endpoint takes them (metadata, snippet)."""
        return {f.name: f.input_value(params[f.name]) for f in self.fields if f.public}

    def row(self, **values: Any) -> list[Any]:
        """An example row in API order: the given values by name, every other field at its default."""
        unknown = set(values) - set(self.names)
        if unknown:
            raise ValueError(f"{self.api_name} example names unknown fields {sorted(unknown)}")
        return [values.get(f.name, f.default) for f in self.fields]

    def quick_request(self) -> dict[str, Any]:
        """The cheapest valid request (every ``quick`` value, else the default), for smoke tests and benchmarks."""
        return {f.name: f.quick if f.quick is not None else f.default for f in self.fields}

    def signature(self, extra: Sequence[inspect.Parameter] = ()) -> inspect.Signature:
        """What gradio_client sees: the field names in order, each with its default."""
        parameters = [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default)
                      for f in self.fields]
        return inspect.Signature([*parameters, *extra])

    def snippet(self, params: Params, url: str | None = None) -> str:
        """A gradio_client script that repeats the request (uploads become placeholders to fill in); ``url`` is where
        the request was served (a Space id takes precedence)."""
        values = dict(self.public(params))
        uploads = [f.name for f in self.fields if f.kind == "image" and params.get(f.name) is not None]
        text = client_snippet(self.api_name, values, snippet_target(url))
        if uploads:
            lines = "".join(f"    {name}=handle_file(\"your_{name}.png\"),\n" for name in uploads)
            text = text.replace("from gradio_client import Client", "from gradio_client import Client, handle_file")
            text = text.replace("result = client.predict(\n", "result = client.predict(\n" + lines)
        return text

    def gpu_seconds(self, params: Params) -> int:
        """A ZeroGPU budget: a fixed start-up share plus time proportional to the estimated work, capped."""
        if self.spec.cost is None:
            return 0
        return gpu_seconds(self.spec.cost(params))


def gpu_seconds(megapixel_steps: float, per_megapixel_step: float = 0.09, overhead: float = 10.0) -> int:
    """Seconds for ``megapixel_steps`` of UNet work on an A100-class GPU (≈ 0.06 s per megapixel-step measured
    for SD 1.5 by diffusers' benchmarks, × 1.5 margin), plus a start-up share; at most 600 s."""
    return int(min(overhead + per_megapixel_step * max(megapixel_steps, 0.0), 600))


def snippet_target(served_at: str | None = None) -> str:
    """What the snippet's ``Client(...)`` connects to: on a Space its id (``SPACE_ID``), else the address the request
    came to (``served_at``), else the app's default local address."""
    return os.environ.get("SPACE_ID") or served_at or "http://127.0.0.1:7860/"


# ---------------------------------------------------------------------- running a task


class RunTimeout(ValueError):
    """A run passed the profile's ``timeout_s``; it stopped at a step boundary (a clear message, not a crash)."""


@dataclass
class TaskContext:
    """What a task's ``run`` gets besides its parameters: the profile, runtime, timings, progress, notes.

    Every denoising step goes through :meth:`steps`, which also enforces the profile's ``timeout_s``.
    """

    endpoint: BoundEndpoint
    params: Params
    runtime: Runtime
    progress: ProgressFn | None = None
    timings: Timings = field(default_factory=Timings)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    preview_sink: PreviewSink | None = None
    served_at: str | None = None  # the address the request came to (the snippet's Client target)

    @property
    def profile(self) -> Profile:
        return self.endpoint.profile

    @property
    def public(self) -> dict[str, Any]:
        return self.endpoint.public(self.params)

    def snippet(self) -> str:
        """A gradio_client script that repeats this request, against the server that answered it."""
        return self.endpoint.snippet(self.params, self.served_at)

    def section(self, name: str):
        return self.timings.section(name)

    @contextmanager
    def loading(self, *roles: str) -> Iterator[None]:
        """Time the block as "load" and say which models it loads (a first load may download gigabytes)."""
        self.report(0, 1, "loading " + ", ".join(describe_load(role, self.profile.source(role)) for role in roles))
        with self.timings.section("load"):
            yield

    def note(self, text: str) -> None:
        """A warning for the user (shown as a toast in the UI, listed in the metadata)."""
        self.notes.append(text)

    def report(self, done: int, total: int, desc: str) -> None:
        if self.progress is not None:
            self.progress(done, total, desc)

    def check_time(self, where: str) -> None:
        """Stop with a clear message once the run has taken longer than the profile allows."""
        limit = self.profile.limits.timeout_s
        elapsed = time.monotonic() - self.started
        if elapsed > limit:
            raise RunTimeout(f"stopped {where} after {elapsed:.0f} s: this server allows {limit:g} s per request "
                             "(timeout_s in the profile's [limits], or CONDLAB_TIMEOUT_S); try fewer steps, images "
                             "or pixels")

    def steps(self, desc: str = "denoising",
              arrange: Callable[[list[Image.Image]], list[Image.Image]] | None = None) -> Callable[[StepState], None]:
        """A sampler-loop callback: one progress tick per denoising step, the time limit checked at each, and (when
        someone watches) previews of the predicted x̂0.

        Two previews come at a third and two thirds of the run; further ones every k steps, k chosen as the run goes
        so that one costs at most ``PREVIEW_BUDGET`` of the steps between two of them (delivery included), at
        most ``MAX_PREVIEWS`` per run, none in the run's last moments; the last step is never previewed (the final
        images follow it). ``arrange`` lays the preview images out as the final output will be (a grid).
        """
        clock = {"last": time.perf_counter(), "step_s": 0.0, "preview_s": PREVIEW_DELIVERY_S, "since": 0}

        def callback(state: StepState) -> None:
            now = time.perf_counter()
            clock["step_s"] = now - clock["last"] if state.step_index else clock["step_s"]
            clock["since"] += 1
            self.report(state.step_index + 1, state.num_steps, desc)
            done, total = state.step_index + 1, state.num_steps
            if self.preview_sink is not None and state.rgb is not None and done < total:
                remaining = (total - done) * clock["step_s"]
                every = max(-(-total // MAX_PREVIEWS), -(-clock["preview_s"] // max(PREVIEW_BUDGET * clock["step_s"],
                                                                                   1e-9)))
                # Two previews at a third and two thirds of the run always (x̂0 forming is the point); more only
                # when they fit the budget and do not land so late that delivering them would hold the result back.
                due = done in {round(total * j / (MIN_PREVIEWS + 1)) for j in range(1, MIN_PREVIEWS + 1)}
                if due or (clock["since"] >= every and remaining >= 2 * PREVIEW_DELIVERY_S):
                    start = time.perf_counter()
                    images = to_pil_images(state.rgb)
                    shown = self.preview_sink(arrange(images) if arrange else images, done, total)
                    cost = time.perf_counter() - start + max(shown or 0.0, PREVIEW_DELIVERY_S)
                    clock["preview_s"], clock["since"] = cost, 0
            self.check_time(f"at step {state.step_index + 1} of {state.num_steps}")
            clock["last"] = time.perf_counter()

        return callback

    def stamp(self, image: Image.Image, **extra: Any) -> Image.Image:
        """The image carrying the request's public parameters (and ``extra``) in PNG text chunks."""
        return attach_metadata(image, self.public, portable_paths(extra))

    def metadata(self, *, model_id: str, rule: dict | None = None, **extra: Any) -> dict[str, Any]:
        """The run's JSON metadata: parameters, seed, models, runtime, versions, timings, notes, snippet.

        Local folders appear relative to the repository (or by name): no absolute path leaves the server.
        """
        meta = run_metadata(self.public, model_id=model_id, rule=rule, runtime=self.runtime.name,
                            timings=self.timings, endpoint=self.endpoint.api_name, notes=list(self.notes),
                            reproduce=self.snippet(), **extra)
        return portable_paths(meta)


def portable_paths(value: Any) -> Any:
    """``value`` with every absolute path of an existing file or folder made repo-relative, or ``<local>/name``."""
    if isinstance(value, dict):
        return {k: portable_paths(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(portable_paths(v) for v in value)
    if isinstance(value, str) and value.startswith("/") and len(value) < 4096 and Path(value).exists():
        return portable(value)
    return value


@dataclass
class TaskResult:
    """A task's outputs by name (in the spec's order), the validated parameters and the notes."""

    outputs: dict[str, Any]
    params: Params
    notes: list[str]

    def values(self, spec: EndpointSpec) -> tuple:
        return tuple(self.outputs[o.name] for o in spec.outputs)


RunFn = Callable[[Params, TaskContext], dict[str, Any]]


@dataclass(frozen=True)
class Task:
    """An endpoint's spec and its work; ``task(profile, **request)`` runs it without Gradio."""

    spec: EndpointSpec
    run: RunFn

    def __call__(self, profile: Profile, progress: ProgressFn | None = None, preview_sink: PreviewSink | None = None,
                 **request: Any) -> TaskResult:
        endpoint = self.spec.bind(profile)
        return self.run_parsed(endpoint, endpoint.parse(request), progress, preview_sink)

    @property
    def streams(self) -> bool:
        """Whether the endpoint shows x̂0 previews while sampling."""
        return any(o.preview for o in self.spec.outputs)

    def run_parsed(self, endpoint: BoundEndpoint, params: Params, progress: ProgressFn | None = None,
                   preview_sink: PreviewSink | None = None, served_at: str | None = None) -> TaskResult:
        """Run an already validated request (the UI validates first, outside the GPU slot); ``preview_sink``
        receives x̂0 previews while the model samples; ``served_at`` is the server's address for the snippet."""
        ctx = TaskContext(endpoint, params, pick_runtime(), progress, preview_sink=preview_sink, served_at=served_at)
        with rows_at_most(endpoint.profile.limits.max_batch_rows):
            outputs = self.run(params, ctx)
        missing = [o.name for o in self.spec.outputs if o.name not in outputs]
        if missing:
            raise RuntimeError(f"{self.spec.api_name} returned no {missing}")
        return TaskResult(outputs, params, ctx.notes)
