"""Reproducibility: generation parameters carried inside PNGs, JSON metadata and client snippets.

Generic over tabs: every function takes plain ``dict`` parameters, so any endpoint can stamp
its images, describe its run and print the gradio_client call that reproduces it.
"""

from __future__ import annotations

import functools
import json
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from pathlib import Path

from PIL import Image, PngImagePlugin

# "parameters" is the key other SD tools (A1111, ComfyUI readers) look for; "condlab" holds JSON.
TEXT_KEY = "parameters"
JSON_KEY = "condlab"
LIBRARIES = ("torch", "diffusers", "transformers", "gradio", "numpy", "pillow")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that decide the pixels (and Python's)."""
    return dict(_installed_versions())


@functools.cache
def _installed_versions() -> tuple[tuple[str, str], ...]:
    # Looked up once per process: importlib.metadata scans site-packages, ~50 ms of every request here.
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return tuple(versions.items())


def parameters_text(params: dict) -> str:
    """One human-readable line per parameter, prompt first (the A1111-style ``parameters`` chunk)."""
    lines = [str(params.get("prompt", ""))]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    rest = {k: v for k, v in params.items() if k not in ("prompt", "negative_prompt")}
    lines.append(", ".join(f"{k}: {v}" for k, v in rest.items()))
    return "\n".join(lines)


def attach_metadata(image: Image.Image, params: dict, metadata: dict | None = None) -> Image.Image:
    """The image with its parameters in ``info``; Gradio and :func:`save_png` write them as PNG text chunks.

    Only text values survive Gradio's PNG encoder, so everything is serialised here.
    """
    image = image.copy()
    image.info[TEXT_KEY] = parameters_text(params)
    image.info[JSON_KEY] = json.dumps({"parameters": params, **(metadata or {})}, default=str)
    return image


def png_info(image: Image.Image) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for key, value in image.info.items():
        if isinstance(key, str) and isinstance(value, str):
            info.add_text(key, value)
    return info


def save_png(image: Image.Image, path: str | Path, params: dict | None = None, metadata: dict | None = None) -> Path:
    """Write a lossless PNG carrying the parameters (those already attached, or ``params``)."""
    if params is not None:
        image = attach_metadata(image, params, metadata)
    path = Path(path)
    image.save(path, format="PNG", pnginfo=png_info(image))
    return path


def read_png_metadata(path_or_image: str | Path | Image.Image) -> dict:
    """The JSON stored by :func:`attach_metadata` (``{}`` when the PNG carries none)."""
    image = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
    text = getattr(image, "text", None) or image.info
    raw = text.get(JSON_KEY)
    return json.loads(raw) if raw else {}


class Timings:
    """Named wall-clock sections in seconds, for the metadata's ``timings``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 4)

    def as_dict(self) -> dict[str, float]:
        return {**self.seconds, "total": round(sum(self.seconds.values()), 4)}


def run_metadata(
    params: dict,
    *,
    model_id: str,
    rule: dict | None = None,
    timings: Timings | dict | None = None,
    runtime: str = "",
    **extra,
) -> dict:
    """The JSON metadata of one request: what ran, on what, with which libraries, and how long it took."""
    meta = {
        "parameters": params,
        "seed": params.get("seed"),
        "model_id": model_id,
        "scheduler": params.get("scheduler"),
        "rule": rule or {},
        "runtime": runtime,
        "versions": library_versions(),
        "timings": timings.as_dict() if isinstance(timings, Timings) else dict(timings or {}),
    }
    meta.update(extra)
    return meta


def client_snippet(api_name: str, params: dict, url: str = "http://127.0.0.1:7860/") -> str:
    """A runnable gradio_client script that repeats the request (fixed seed, so the same image)."""
    api_name = "/" + api_name.lstrip("/")
    args = "".join(f"    {key}={value!r},\n" for key, value in params.items())
    return (
        "from gradio_client import Client\n\n"
        f"client = Client({url!r})\n"
        f"result = client.predict(\n{args}    api_name={api_name!r},\n)\n"
        "print(result)\n"
    )
