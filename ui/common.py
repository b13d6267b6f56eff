"""Glue shared by the tabs: turning library errors into messages, and progress."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable

import gradio as gr
import torch

from guidance.sampler import StepState

log = logging.getLogger("condlab")


def guarded(fn: Callable) -> Callable:
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
            log.exception("unexpected failure in %s", fn.__name__)
            raise gr.Error(f"Something went wrong ({type(e).__name__}); the server logged the details.") from None

    return wrapper


def step_progress(progress: gr.Progress | None, desc: str = "denoising") -> Callable[[StepState], None] | None:
    """A sampler-loop callback that advances a Gradio progress bar once per step."""
    if progress is None:
        return None

    def callback(state: StepState) -> None:
        progress((state.step_index + 1, state.num_steps), desc=desc)

    return callback


def number(value, name: str, low: float, high: float, integer: bool = False) -> float | int:
    """Validate a numeric control (the API accepts anything JSON can carry)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or not low <= v <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    if integer:
        if v != int(v):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        return int(v)
    return v


def choice(value, name: str, options: tuple[str, ...] | list[str]) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(str, options))}; got {str(value)[:80]!r}")
    return value


def resolve_seed(seed) -> int:
    """−1 draws a random seed; the seed used is always returned to the user."""
    seed = number(seed, "seed", -1, 2**63 - 1, integer=True)
    if seed == -1:
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    return seed


def gpu_seconds(steps: int, pixels: int, images: int, per_megapixel_step: float = 0.06, overhead: float = 15.0) -> int:
    """A ZeroGPU time budget: model loading overhead plus denoising time that scales with the work.

    Calibrated for SD 1.5 on an A100-class GPU (≈ 0.06 s per step per megapixel per image,
    CFG's two branches included); long jobs get the time they need, short ones a short slot.
    """
    work = max(int(steps), 1) * max(int(pixels), 1) / 1e6 * max(int(images), 1)
    return int(min(overhead + per_megapixel_step * work * 1.5, 600))


def on_gpu(duration: Callable[..., int]) -> Callable[[Callable], Callable]:
    """``spaces.GPU`` with a per-request duration on a ZeroGPU Space; the identity anywhere else."""
    import spaces

    def decorate(fn: Callable) -> Callable:
        return spaces.GPU(duration=duration)(fn)

    return decorate


# Every endpoint that runs a model shares one queue slot: one GPU job at a time, and no request can see
# another's temporary state on a shared cached module (attention recorders, IP-Adapter scales).
GPU_QUEUE = dict(concurrency_limit=1, concurrency_id="gpu")
