"""Class labels: ImageNet-1k names offline (torchvision ships them in its weight metadata), and
small named label sets such as the toy world's (colour, shape) classes.

Names are unique except for two pairs ("crane", "maillot"); a name lookup returns the first id and
:func:`display_name` disambiguates them as ``"crane (134)"`` so every dropdown entry maps to one id.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

NUM_CLASSES = 1000


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 class names in id order (torchvision's ``IMAGENET1K`` metadata; no download)."""
    from torchvision.models import ResNet50_Weights

    names = tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])
    if len(names) != NUM_CLASSES:
        raise RuntimeError(f"expected {NUM_CLASSES} ImageNet classes, torchvision gave {len(names)}")
    return names


@lru_cache(maxsize=1)
def _duplicates() -> frozenset[str]:
    names = imagenet_classes()
    return frozenset(n for n in names if names.count(n) > 1)


@lru_cache(maxsize=1)
def display_names() -> tuple[str, ...]:
    """One unique label per id (duplicates carry their id), for dropdowns."""
    dup = _duplicates()
    return tuple(f"{n} ({i})" if n in dup else n for i, n in enumerate(imagenet_classes()))


def display_name(class_id: int) -> str:
    return display_names()[class_id_checked(class_id)]


def class_name(class_id: int) -> str:
    return imagenet_classes()[class_id_checked(class_id)]


def check_class_id(class_id: Any, num_classes: int) -> int:
    """An id in 0 … num_classes − 1, or ValueError (bools and fractional values are rejected too)."""
    message = f"class_id must be a whole number between 0 and {num_classes - 1}, got {str(class_id)[:40]!r}"
    if isinstance(class_id, bool):
        raise ValueError(message)
    try:
        value = float(class_id)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if not value == value or value != int(value) or not 0 <= value < num_classes:
        raise ValueError(message)
    return int(value)


def class_id_checked(class_id) -> int:
    """An ImageNet id in 0–999, or ValueError."""
    return check_class_id(class_id, NUM_CLASSES)


def class_id_in(class_name: str | None, class_id: Any, names: Sequence[str]) -> int:
    """For a small named label set (the toy world's "red circle" …): ``class_id`` wins when given (not
    None, empty or −1), else ``class_name`` matched ignoring case, spacing and a leading "a "."""
    if class_id is not None and class_id != "" and class_id != -1:
        return check_class_id(class_id, len(names))
    key = " ".join(str(class_name or "").lower().split()).removeprefix("a ")
    lookup = {n.lower(): i for i, n in enumerate(names)}
    if key not in lookup:
        raise ValueError(f"unknown class {str(class_name)[:60]!r}; the classes are: {', '.join(names)}")
    return lookup[key]


def _normalise(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", text.strip().lower())


@lru_cache(maxsize=1)
def _index() -> dict[str, int]:
    index: dict[str, int] = {}
    for i, (name, shown) in enumerate(zip(imagenet_classes(), display_names(), strict=True)):
        index.setdefault(_normalise(name), i)
        index.setdefault(_normalise(shown), i)
    return index


@lru_cache(maxsize=1)
def _exact() -> dict[str, int]:
    return {shown: i for i, shown in enumerate(display_names())}


def suggestions(name: str, n: int = 5) -> list[str]:
    """Close matches by spelling, then names that contain the text (e.g. "retriever")."""
    key = _normalise(str(name))
    shown = display_names()
    by_key = {_normalise(s): s for s in shown}
    close = [by_key[k] for k in difflib.get_close_matches(key, list(by_key), n=n, cutoff=0.6)]
    if len(close) < n and key:
        close += [s for s in shown if key in _normalise(s) and s not in close][: n - len(close)]
    return close


def class_id_for(name: str) -> int:
    """The id of a class name (case, spaces and underscores ignored; ``"crane (517)"`` picks a duplicate)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("class_name is empty: pick one of the 1000 ImageNet class names")
    key = _normalise(name)
    # Exact spelling first: a few names differ only in case ("Cardigan" the corgi, "cardigan" the sweater).
    found = _exact().get(name.strip())
    if found is None:
        found = _index().get(key)
    if found is None:
        m = re.fullmatch(r"(\d{1,4})", key)
        if m:  # a bare id typed into the name box
            return class_id_checked(int(m.group(1)))
        close = suggestions(name)
        hint = f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown ImageNet class name {name[:80]!r}.{hint}")
    return found


def resolve_class(class_name: str | None = None, class_id=None) -> int:
    """``class_id`` wins when given (not None, empty or −1); otherwise ``class_name`` is looked up."""
    if class_id is not None and class_id != "" and class_id != -1:
        return class_id_checked(class_id)
    if class_name is None:
        raise ValueError("give a class_name or a class_id")
    return class_id_for(class_name)
