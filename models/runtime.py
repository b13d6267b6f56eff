"""Device and dtype, decided in one place for every model and tensor in the app."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

import torch

T = TypeVar("T")


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


# ---------------------------------------------------------------------- peak memory

PEAK_MEMORY_METHOD = {
    "cuda": "torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus the allocation before",
    "cpu": "torch profiler (profile_memory=True): the CPU allocator's allocation and free events, summed in time order",
}


def peak_memory(call: Callable[[], T], device: torch.device) -> tuple[T, int]:
    """``call()``'s result and the most memory it held at once on ``device`` above what was allocated before it,
    in bytes (tensors only: the allocator's view, not the process's resident memory).

    CUDA reads the allocator's peak counter. The CPU allocator keeps none, so the call runs under the torch profiler
    with ``profile_memory=True``, which logs every allocation and free of the allocator made by this thread's work
    (another thread's are not logged: a thread allocating 64 MiB in a loop beside a 9 MiB call left it at 9 MiB), each
    with a time stamp; summed in time order, the running total's maximum is the peak, scratch buffers an op frees
    before it returns included (a convolution's workspace, for one). The raw event list is read, not
    ``prof.events()``: building those Python objects cost 2 s for a 10-step 128² toy run, the replay 0.02 s.
    """
    if device.type not in PEAK_MEMORY_METHOD:
        raise ValueError(f"peak memory is measured on cuda and cpu, not {device.type}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = call()
        torch.cuda.synchronize(device)
        return result, int(torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = call()
    changes = sorted((event.start_ns(), event.nbytes()) for event in prof.profiler.kineto_results.events()
                     if event.name() == "[memory]")
    live = peak = 0
    for _, delta in changes:  # at one time stamp frees (negative) come first: they cannot raise the peak
        live += delta
        peak = max(peak, live)
    return result, int(peak)
