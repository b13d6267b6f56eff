"""One way to turn a task into a Gradio endpoint: validate outside the GPU slot, run inside it, report clearly.

``wire(button, task, endpoint, inputs, outputs)`` is all a tab calls. The endpoint function it builds
has the spec's signature (what gradio_client shows: names, order, defaults); validation errors and
library ``ValueError`` s become ``gr.Error`` messages; unexpected failures are logged and reported
without a traceback; the task's notes become warnings; model work runs under ``spaces.GPU`` with a
duration from the spec's cost estimate (a no-op off ZeroGPU).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence

import gradio as gr
import torch

from tasks.spec import BoundEndpoint, Params, ProgressFn, Task

log = logging.getLogger("condlab")

# Every endpoint that runs a model shares one queue slot: one GPU job at a time, and no request can see
# another's temporary state on a shared cached module (attention recorders, IP-Adapter scales).
GPU_QUEUE = dict(concurrency_limit=1, concurrency_id="gpu")
CPU_QUEUE = dict(concurrency_limit=2)


def guarded(fn: Callable, name: str) -> Callable:
    """Bad input becomes a clear ``gr.Error``; unexpected failures are logged, never shown raw."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ValueError as e:
            raise gr.Error(str(e)) from None
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise gr.Error("The GPU ran out of memory: try a smaller size, fewer images or fewer steps.") from None
        except Exception as e:  # noqa: BLE001 - the server must keep serving
            log.exception("unexpected failure in %s", name)
            raise gr.Error(f"Something went wrong ({type(e).__name__}); the server logged the details.") from None

    return wrapper


def gradio_progress(progress: gr.Progress | None) -> ProgressFn | None:
    if progress is None:
        return None
    return lambda done, total, desc: progress((done, total), desc=desc)


def on_gpu(fn: Callable, duration: Callable[..., int]) -> Callable:
    """``spaces.GPU`` with a per-request duration; anywhere but a ZeroGPU Space it returns ``fn`` unchanged."""
    import spaces

    return spaces.GPU(duration=duration)(fn)


def endpoint_function(task: Task, endpoint: BoundEndpoint) -> Callable:
    """The function Gradio calls for ``endpoint``: its signature is the spec's, plus Gradio's progress tracker."""
    spec = task.spec

    def run(params: Params, progress: gr.Progress | None = None) -> tuple[tuple, list[str]]:
        result = task.run_parsed(endpoint, params, gradio_progress(progress))
        return result.values(spec), result.notes

    run = guarded(run, spec.api_name)
    if spec.cost is not None:
        run = on_gpu(run, lambda params, progress=None: endpoint.gpu_seconds(params))
    signature = endpoint.signature([inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                      default=gr.Progress())])

    def validate(request: Mapping) -> Params:
        return endpoint.parse(request)

    validate = guarded(validate, spec.api_name)

    def fn(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        request = dict(bound.arguments)
        progress = request.pop("progress")
        params = validate(request)  # before the GPU slot: bad input never reserves a GPU
        values, notes = run(params, progress)
        for note in notes:
            gr.Warning(note)
        return values[0] if len(values) == 1 else values

    fn.__signature__ = signature
    fn.__name__ = fn.__qualname__ = spec.api_name.strip("/")
    fn.__doc__ = spec.summary
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
        gr.Examples([endpoint.row(**row) for row in examples], input_list, output_list, fn=fn, cache_examples=True,
                    cache_mode="lazy", label=examples_label)
    queue = GPU_QUEUE if task.spec.cost is not None else CPU_QUEUE
    trigger.click(fn, input_list, output_list, api_name=endpoint.api_name.strip("/"), **queue)
    return fn
