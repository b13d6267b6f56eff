"""What every benchmark script shares: one timing helper, one row type, one markdown table, peak RSS.

Timings on this project's machines are taken on shared, loaded CPUs, so the only comparison we trust
is a ratio of medians of *interleaved* runs: every contender runs once per round, in an order that
rotates between rounds, so drifting load hits all of them alike.
"""

from __future__ import annotations

import os
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm


@dataclass(frozen=True)
class Row:
    """One line of a benchmark table: ``ours`` against ``reference`` and their ratio (None when not a ratio)."""

    measurement: str
    ours: str
    reference: str = "—"
    ratio: float | None = None
    note: str = ""


def interleaved_medians(
    fns: dict[str, Callable[[], object]], warmup: int = 1, repeats: int = 5, desc: str | None = None
) -> dict[str, float]:
    """Median seconds per function over ``repeats`` rounds, after ``warmup`` untimed rounds.

    Each round calls every function once, starting one further along the list than the last round,
    so neither side always runs first (cache-warm, or right after a load spike).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()  # first calls pay for lazy kernels and allocator growth, which is not what we compare
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in tqdm(range(repeats), desc=desc or " / ".join(names), leave=False, file=sys.stderr):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def fmt_seconds(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| measurement | ours | reference | ratio | note |", "|---|---:|---:|---:|---|"]
    for row in rows:
        ratio = "—" if row.ratio is None else f"{row.ratio:.2f}"
        lines.append(f"| {row.measurement} | {row.ours} | {row.reference} | {ratio} | {row.note} |")
    return "\n".join(lines)


def run_header(threads: int) -> str:
    """Date, torch version, threads and the exact command, so a pasted table says where it came from."""
    import torch

    command = shlex.join([Path(sys.executable).name, *sys.argv])
    if sys.argv and sys.argv[0].endswith(".py") and "scripts" in Path(sys.argv[0]).parts:
        # Run as ``-m scripts.x``: argv[0] is the file path, so show the module form that was typed.
        parts = Path(sys.argv[0]).with_suffix("").parts
        module = ".".join(parts[len(parts) - 1 - parts[::-1].index("scripts"):])  # from the last "scripts" on
        command = shlex.join([".venv/bin/python", "-m", module, *sys.argv[1:]])
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"Measured {stamp} · torch {torch.__version__} · {threads} torch thread(s) · "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start · "
            f"command: `HF_HUB_OFFLINE=1 {command}`")


def peak_rss_mb(pid: int | None = None) -> float:
    """Peak resident memory in MiB: of this process, or of ``pid`` (Linux VmHWM, else current RSS)."""
    if pid is None:
        # ru_maxrss is KiB on Linux and bytes on macOS.
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20
