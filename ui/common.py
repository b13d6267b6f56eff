"""Glue shared by the tabs: turning library errors into messages, and progress."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable

import gradio as gr
import torch
from PIL import UnidentifiedImageError

from guidance.sampler import StepState
from models.profiles import ROOT, Limits

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


def on_gpu(fn: Callable) -> Callable:
    """``spaces.GPU`` with a duration estimated from the request's steps, size and image count.

    On a ZeroGPU Space long jobs get the time they need and short ones a short slot; anywhere
    else ``spaces.GPU`` returns the function itself, unchanged.
    """
    import inspect

    import spaces

    signature = inspect.signature(fn)

    def duration(*args, **kwargs) -> int:
        given = signature.bind_partial(*args, **kwargs).arguments
        try:
            steps = int("".join(ch for ch in str(given.get("steps", 25)) if ch.isdigit()) or 25)
            pixels = int(given.get("width") or 512) * int(given.get("height") or 512)
            return gpu_seconds(steps, pixels, int(given.get("num_images") or 1))
        except (TypeError, ValueError):
            return 60  # bad input is refused in a moment anyway

    return spaces.GPU(duration=duration)(fn)


# Every endpoint that runs a model shares one queue slot: one GPU job at a time, and no request can see
# another's temporary state on a shared cached module (attention recorders, IP-Adapter scales).
GPU_QUEUE = dict(concurrency_limit=1, concurrency_id="gpu")


def image_upload(**kwargs) -> gr.Image:
    """A filepath ``gr.Image`` that hands the upload over undecoded; its own open failures become clear errors.

    ``image_mode=None`` stops Gradio from decoding and converting non-RGB uploads itself: that would expand a
    decompression bomb before ``sanitize_image`` checks the header, and drop alpha instead of compositing it.
    Gradio still opens the header, so a non-image would otherwise reach the client as an anonymous "the app
    raised an exception". The wrapper is set on the instance because subclassing a component makes Gradio
    write a ``.pyi`` stub next to this module.
    """
    component = gr.Image(type="filepath", image_mode=None, **kwargs)
    decode = component.preprocess

    def preprocess(payload):
        try:
            return decode(payload)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise gr.Error("the upload could not be read as an image (PNG, JPEG, WebP…)") from None

    component.preprocess = preprocess
    return component


def harden_numeric_inputs(blocks: gr.Blocks) -> None:
    """Make every Number/Slider refuse non-numbers with a message that names the control.

    Gradio's own preprocessing compares and rounds the raw API value, so "nan", "12" or a float NaN/inf sent
    through the API raise TypeError/ValueError/OverflowError there, before any endpoint code can explain.
    """
    for block in blocks.blocks.values():
        if isinstance(block, gr.Number | gr.Slider) and not getattr(block, "_condlab_hardened", False):
            block.preprocess = _numeric_preprocess(block.preprocess, block.label or "a number input")
            block._condlab_hardened = True


def _numeric_preprocess(decode: Callable, label: str) -> Callable:
    def preprocess(payload):
        if payload is not None and (isinstance(payload, bool) or not isinstance(payload, int | float)
                                    or not math.isfinite(payload)):
            raise gr.Error(f"{label} must be a finite number, got {str(payload)[:40]!r}")
        return decode(payload)

    return preprocess


MAX_PROMPT_CHARS = 20_000
SIZE_MULTIPLE = 8


def text(value, name: str) -> str:
    """A prompt-like field: ``None`` is empty; anything not text, or absurdly long, is refused."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text, got {type(value).__name__}")
    if len(value) > MAX_PROMPT_CHARS:
        raise ValueError(f"{name} is {len(value)} characters; the limit is {MAX_PROMPT_CHARS}")
    return value


def flag(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise ValueError(f"{name} must be true or false, got {str(value)[:40]!r}")


def image_side(value, name: str, multiple: int = SIZE_MULTIPLE) -> int:
    v = number(value, name, 1, 1_000_000, integer=True)
    if v % multiple:
        raise ValueError(f"{name} must be a multiple of {multiple} (the latent grid is {multiple}× smaller), got {v}")
    return v


def sampling_params(
    limits: Limits, *, prompt, negative_prompt, guidance, scale, eta, basis, rescale, steps, width, height, seed,
    scheduler, num_images,
) -> dict:
    """The parameters every Stable-Diffusion-style tab shares, validated against the profile's caps.

    Everything is checked before any model is loaded; the returned seed is the one actually used.
    """
    from guidance.rules import BASES, RULE_NAMES
    from pipelines.schedulers import SCHEDULERS
    from pipelines.text_to_image import check_limits

    values = dict(
        prompt=text(prompt, "prompt"),
        negative_prompt=text(negative_prompt, "negative_prompt"),
        guidance=choice(guidance, "guidance", RULE_NAMES),
        scale=number(scale, "scale", 0, 30),
        eta=number(eta, "eta", 0, 1),
        basis=choice(basis, "basis", BASES),
        rescale=number(rescale, "rescale", 0, 1),
        steps=number(steps, "steps", 1, limits.max_steps, integer=True),
        width=image_side(width, "width"),
        height=image_side(height, "height"),
        seed=resolve_seed(seed),
        scheduler=choice(scheduler, "scheduler", tuple(SCHEDULERS)),
        num_images=number(num_images, "num_images", 1, limits.max_images, integer=True),
    )
    check_limits(limits, width=values["width"], height=values["height"], steps=values["steps"],
                 num_images=values["num_images"])
    return values


def rule_metadata(rule) -> dict:
    return {"name": rule.name, "scale": rule.scale, "eta": rule.eta, "basis": rule.basis, "rescale": rule.rescale,
            "formula": rule.formula}


def images_slider(limits: Limits) -> gr.Slider:
    # A slider needs min < max; with a cap of one image it is shown fixed.
    return gr.Slider(1, max(limits.max_images, 2), value=1, step=1, label="images",
                     interactive=limits.max_images > 1)


def default_side(profile, role: str) -> int:
    """The role's ``size`` option, else a local model's native size, else 512; always within the pixel cap."""
    import math

    from models.loading import sd_native_size

    source = profile.source(role)
    size = profile.options(role).get("size") or (sd_native_size(source) if source else None) or 512
    side = min(int(size), int(math.isqrt(profile.limits.max_pixels)))
    return max(SIZE_MULTIPLE, side - side % SIZE_MULTIPLE)


TOY_EXAMPLES = ROOT / "assets" / "toy" / "examples"


def toy_example(name: str) -> str:
    """A shapes-world input shipped for the toy profile's examples (``scripts/make_toy_examples.py``)."""
    return str(TOY_EXAMPLES / f"{name}.png")
