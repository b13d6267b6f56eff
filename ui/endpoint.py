"""One way to turn a task into a Gradio endpoint: validate outside the GPU slot, run inside it, report clearly.

``wire(button, task, endpoint, inputs, outputs)`` is all a tab calls. The endpoint function it builds
has the spec's signature (what gradio_client shows: names, order, defaults); validation errors and
library ``ValueError`` s become ``gr.Error`` messages; unexpected failures are logged and reported
without a traceback; the task's notes become warnings; model work runs under ``spaces.GPU`` with a
duration from the spec's cost estimate (a no-op off ZeroGPU).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

import gradio as gr
import torch

from tasks.spec import BoundEndpoint, Params, ProgressFn, Task

log = logging.getLogger("condlab")

# Every endpoint that runs a model shares one queue slot: one GPU job at a time, and no request can see
# another's temporary state on a shared cached module (attention recorders, IP-Adapter scales).
GPU_QUEUE = dict(concurrency_limit=1, concurrency_id="gpu")
CPU_QUEUE = dict(concurrency_limit=2)


def as_message(error: Exception, name: str) -> gr.Error:
    """What the user sees for ``error``: its own text for bad input, a plain sentence (and a log entry) otherwise."""
    if isinstance(error, gr.Error):
        return error
    if isinstance(error, ValueError):
        return gr.Error(str(error))
    if isinstance(error, torch.cuda.OutOfMemoryError):
        torch.cuda.empty_cache()
        return gr.Error("The GPU ran out of memory: try a smaller size, fewer images or fewer steps.")
    log.error("unexpected failure in %s", name, exc_info=error)
    return gr.Error(f"Something went wrong ({type(error).__name__}); the server logged the details.")


def guarded(fn: Callable, name: str) -> Callable:
    """Bad input becomes a clear ``gr.Error``; unexpected failures are logged, never shown raw."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the server must keep serving
            raise as_message(e, name) from None

    return wrapper


def gradio_progress(progress: gr.Progress | None) -> ProgressFn | None:
    if progress is None:
        return None
    return lambda done, total, desc: progress((done, total), desc=desc)


def on_gpu(fn: Callable, duration: Callable[..., int]) -> Callable:
    """``spaces.GPU`` with a per-request duration; anywhere but a ZeroGPU Space it returns ``fn`` unchanged."""
    import spaces

    return spaces.GPU(duration=duration)(fn)


def guarded_stream(fn: Callable, name: str) -> Callable:
    """:func:`guarded` for a generator function: every failure while it yields becomes a clear message too."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            yield from fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the server must keep serving
            raise as_message(e, name) from None

    return wrapper


_DONE = object()


def stream_previews(run: Callable[[Callable], object]) -> Iterator:
    """Run ``run(sink)`` in a thread and yield each preview handed to ``sink``, then ``("done", result)``.

    The thread carries the caller's context (Gradio's progress and request state live in context variables);
    an exception in the run is re-raised here, after the previews already yielded. How long Gradio takes to
    encode and send a preview (from our ``yield`` until it asks for the next item) is handed back through the
    sink, so the run spaces its previews to keep that cost a small share of the sampling time.
    """
    items: queue.Queue = queue.Queue()
    outcome: dict = {}
    transport = {"seconds": 0.0}

    def sink(images, done, total) -> float:
        items.put((images, done, total))
        return transport["seconds"]

    def work() -> None:
        try:
            outcome["result"] = run(sink)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            outcome["error"] = e
        finally:
            items.put(_DONE)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True)
    thread.start()
    while (item := items.get()) is not _DONE:
        sent = time.perf_counter()
        yield "preview", item
        transport["seconds"] = max(transport["seconds"], time.perf_counter() - sent)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    yield "done", outcome["result"]


def preview_values(spec, images: list, done: int, total: int) -> tuple:
    """The outputs tuple for one preview: the preview output shows x̂0, the others keep what they show."""
    values = []
    for output in spec.outputs:
        if not output.preview:
            values.append(gr.skip())
        elif output.kind == "gallery":
            values.append([(image, f"x̂0 at step {done}/{total}") for image in images])
        else:
            values.append(images[0])
    return tuple(values)


def served_at(request: gr.Request | None) -> str | None:
    """The address a request came to, as a gradio_client user would type it (``http://host:port/``); behind a proxy
    the forwarded host and scheme. None when Gradio passed no request (a direct call)."""
    if request is None:
        return None
    headers = {str(k).lower(): str(v) for k, v in dict(getattr(request, "headers", None) or {}).items()}
    host = (headers.get("x-forwarded-host") or headers.get("host") or "").split(",")[0].strip()
    if not host or any(c in host for c in "/\\ \"'<>"):
        return None
    scheme = (headers.get("x-forwarded-proto") or urlsplit(str(getattr(request, "url", "") or "")).scheme
              or "http").split(",")[0].strip()
    return f"{'https' if scheme == 'https' else 'http'}://{host}/"


def tool_description(endpoint: BoundEndpoint) -> str:
    """The endpoint's docstring as Gradio reads it for the API page and the MCP tool: the spec's summary, then
    ``Args:`` with each parameter's one-sentence help (its label when it has none)."""
    lines = [endpoint.spec.summary.rstrip(".") + ".", "", "Args:"]
    for f in endpoint.fields:
        text = " ".join(str(f.info or f.label).split())
        lines.append(f"    {f.name}: {text}")
    return "\n".join(lines)


def endpoint_function(task: Task, endpoint: BoundEndpoint) -> Callable:
    """The function Gradio calls for ``endpoint``: its signature is the spec's, plus Gradio's progress tracker.

    A task with a preview output streams: the function is a generator that yields the predicted x̂0 every few
    steps (gradio_client's ``submit()`` sees each; ``predict()`` returns the final result), then the result.
    """
    spec = task.spec

    def run(params: Params, progress: gr.Progress | None = None, url: str | None = None) -> tuple[tuple, list[str]]:
        result = task.run_parsed(endpoint, params, gradio_progress(progress), served_at=url)
        return result.values(spec), result.notes

    def run_streaming(params: Params, progress: gr.Progress | None = None, url: str | None = None) -> Iterator:
        def work(sink):
            return task.run_parsed(endpoint, params, gradio_progress(progress), sink, served_at=url)

        for kind, item in stream_previews(work):
            if kind == "preview":
                yield "preview", preview_values(spec, *item)
            else:
                yield "done", (item.values(spec), item.notes)

    streams = task.streams and endpoint.profile.previews
    run = guarded_stream(run_streaming, spec.api_name) if streams else guarded(run, spec.api_name)
    if spec.cost is not None:
        run = on_gpu(run, lambda params, progress=None, url=None: endpoint.gpu_seconds(params))
    # Gradio fills both from the event (neither is part of the API): the progress tracker and the request.
    signature = endpoint.signature([
        inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress()),
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request),
    ])

    def validate(request: Mapping) -> Params:
        return endpoint.parse(request)

    validate = guarded(validate, spec.api_name)

    def prepare(args: tuple, kwargs: dict) -> tuple[Params, gr.Progress, str | None]:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        request = dict(bound.arguments)
        progress, url = request.pop("progress"), served_at(request.pop("request"))
        return validate(request), progress, url  # before the GPU slot: bad input never reserves a GPU

    def finish(values: tuple, notes: list[str]):
        for note in notes:
            gr.Warning(note)
        return values[0] if len(values) == 1 else values

    def fn(*args, **kwargs):
        params, progress, url = prepare(args, kwargs)
        return finish(*run(params, progress, url))

    def fn_streaming(*args, **kwargs):
        params, progress, url = prepare(args, kwargs)
        for kind, item in run(params, progress, url):
            yield item if kind == "preview" else finish(*item)

    endpoint_fn = fn_streaming if streams else fn
    endpoint_fn.__signature__ = signature
    endpoint_fn.__annotations__ = {"request": gr.Request}  # how Gradio recognises the request parameter
    endpoint_fn.__name__ = endpoint_fn.__qualname__ = spec.api_name.strip("/")
    endpoint_fn.__doc__ = tool_description(endpoint)
    return endpoint_fn


def reordered(endpoint_fn: Callable, order: Sequence[str]) -> Callable:
    """``endpoint_fn`` with its fields in ``order`` (Gradio fills progress and request as before)."""
    parameters = inspect.signature(endpoint_fn).parameters
    signature = inspect.Signature([parameters[n] for n in (*order, "progress", "request")])

    def by_name(args: tuple, kwargs: dict) -> dict:
        return dict(signature.bind(*args, **kwargs).arguments)  # Gradio passes progress and request positionally

    if inspect.isgeneratorfunction(endpoint_fn):
        def fn(*args, **kwargs):
            yield from endpoint_fn(**by_name(args, kwargs))
    else:
        def fn(*args, **kwargs):
            return endpoint_fn(**by_name(args, kwargs))

    fn.__signature__ = signature
    fn.__annotations__ = {"request": gr.Request}
    fn.__name__ = fn.__qualname__ = endpoint_fn.__name__
    return fn


def wire(
    trigger: gr.Button,
    task: Task,
    endpoint: BoundEndpoint,
    inputs: Mapping[str, gr.components.Component],
    outputs: Mapping[str, gr.components.Component],
    *,
    examples: Sequence[Mapping] = (),
    examples_label: str = "examples (cached after the first click)",
) -> Callable:
    """Bind ``trigger`` to the task under its API name; ``examples`` are rows by field name, cached on first click.

    ``inputs`` must hold a component for every field of the spec (extra ones are ignored), ``outputs``
    one per output.
    """
    missing = [n for n in endpoint.names if n not in inputs]
    missing += [o.name for o in task.spec.outputs if o.name not in outputs]
    if missing:
        raise ValueError(f"{endpoint.api_name}: the layout has no component for {missing}")
    fn = endpoint_function(task, endpoint)
    input_list = [inputs[n] for n in endpoint.names]
    output_list = [outputs[o.name] for o in task.spec.outputs]
    if examples:
        # The fields the examples set come first, so a row reads "image, prompt, seed …" before the defaults.
        order = [n for n in endpoint.names if any(n in row for row in examples)]
        order += [n for n in endpoint.names if n not in order]
        rows = [[dict(zip(endpoint.names, endpoint.row(**row), strict=True))[n] for n in order] for row in examples]
        gr.Examples(rows, [inputs[n] for n in order], output_list, fn=reordered(fn, order), cache_examples=True,
                    cache_mode="lazy", label=examples_label)
    queue = GPU_QUEUE if task.spec.cost is not None else CPU_QUEUE
    # While previews stream into an output, the progress bar shows on the others, so the previews stay visible.
    watched = [outputs[o.name] for o in task.spec.outputs if not o.preview]
    progress_on = {"show_progress_on": watched} if task.streams and watched else {}
    trigger.click(fn, input_list, output_list, api_name=endpoint.api_name.strip("/"), **queue, **progress_on)
    return fn
