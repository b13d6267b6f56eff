"""One process-wide cache of loaded models (and detectors): built once per key, shared by every request."""

from __future__ import annotations

import threading
from collections.abc import Callable

_CACHE: dict[tuple, object] = {}
# Re-entrant: a loader may itself load a cached part (a pipeline its UNet) in the same thread.
_LOCK = threading.RLock()


def cached(key: tuple, build: Callable[[], object]) -> object:
    """Build once per key; concurrent first requests wait for the one load."""
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]


def evict(key: tuple) -> None:
    """Forget a cached model (its memory is freed once nothing else holds it)."""
    with _LOCK:
        _CACHE.pop(key, None)


def cached_items() -> list[tuple[tuple, object]]:
    """What is loaded now (key, object), for reports such as ``scripts/tools/gpu_check.py``."""
    with _LOCK:
        return list(_CACHE.items())
