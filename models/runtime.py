"""Device and dtype, decided in one place for every model and tensor in the app."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype

    @property
    def name(self) -> str:
        return f"{self.device.type} {str(self.dtype).removeprefix('torch.')}"

    @property
    def label(self) -> str:
        """The name plus, on the CPU, torch's thread count (what the page header shows)."""
        return self.name + (f", {torch.get_num_threads()} thread(s)" if self.device.type == "cpu" else "")


def pick_runtime(device: str | None = None, dtype: str | None = None) -> Runtime:
    """CUDA in float16 when available, else CPU in float32.

    ``CONDLAB_DEVICE`` / ``CONDLAB_DTYPE`` (or the arguments) override the choice, which
    is how the tests run the CUDA code path's half-precision dtypes on the CPU.
    """
    device = device or os.environ.get("CONDLAB_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    dtype = dtype or os.environ.get("CONDLAB_DTYPE") or ("float16" if dev.type == "cuda" else "float32")
    try:
        dt = getattr(torch, dtype)
        if not isinstance(dt, torch.dtype):
            raise AttributeError
    except AttributeError:
        raise ValueError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16") from None
    return Runtime(dev, dt)


def use_cpu_threads(runtime: Runtime, threads: int | None) -> None:
    """Cap torch's intra-op threads when the models run on the CPU (CUDA work is unaffected)."""
    if runtime.device.type == "cpu" and threads is not None:
        torch.set_num_threads(threads)


SEED_MAX = 2**63 - 1  # the one seed range of the app: 0 … SEED_MAX (−1 = random, resolved by the endpoints)


def cpu_generator(seed: int) -> torch.Generator:
    """Noise is drawn on the CPU so one seed gives the same image on CPU and CUDA."""
    if isinstance(seed, bool) or int(seed) != seed or not 0 <= seed <= SEED_MAX:
        raise ValueError(f"seed must be a whole number between 0 and {SEED_MAX}, got {seed!r}")
    return torch.Generator("cpu").manual_seed(int(seed))


_ROW_BUDGET: ContextVar[int | None] = ContextVar("row_budget", default=None)


@contextmanager
def rows_at_most(max_rows: int | None) -> Iterator[None]:
    """Within the block, model calls and VAE decodes take at most ``max_rows`` batch rows at a time.

    The profile's ``[limits] max_batch_rows``: a 16-cell sweep is 32 UNet rows (two branches), which a GPU may
    not hold at 1024²; rows are independent, so chunking changes memory, not results.
    """
    token = _ROW_BUDGET.set(max_rows)
    try:
        yield
    finally:
        _ROW_BUDGET.reset(token)


def row_budget() -> int | None:
    """The current row budget (None: no limit)."""
    return _ROW_BUDGET.get()
