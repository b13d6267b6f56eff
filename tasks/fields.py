"""Endpoint parameters declared once: name, default, bounds, label, how to validate, how to break.

A :class:`Field` is the single source for one parameter of one endpoint (or of several, when shared
like ``seed``): the gradio_client signature (name and default), validation with one clear message,
the Gradio component (kind, label, bounds, step), the example rows (by name), PNG metadata and
snippets (``public``), and the bad-input corpus the tests send (:meth:`Field.cases`). Attributes that
depend on the profile (a default size, a step cap, a class list) are given as functions of it and
resolved by :meth:`Field.bind`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from models.runtime import SEED_MAX

if TYPE_CHECKING:
    from models.profiles import Profile

MAX_TEXT_CHARS = 20_000
SIZE_MULTIPLE = 8
MAX_SIDE = 1_000_000  # a size field with no profile cap

# What the corpus expects of a case: "ok" served, "error" refused with a clear message, "any" either.
Case = tuple[str, Any, str]
Parser = Callable[[Any, "Field"], Any]


@dataclass(frozen=True)
class Field:
    """One endpoint parameter.

    ``kind``: text, number, integer, choice, flag, seed, size, image or custom (``parser`` given).
    ``low``/``high``/``choices``/``default``/``label`` may be callables of the profile. ``public``
    parameters go into metadata, PNG chunks and reproduce snippets (uploads do not). ``quick`` is a
    cheap valid value for smoke tests and benchmarks. ``prose`` marks free text that must take any
    characters (prompts). ``invalid`` lists extra values a custom parser must refuse; ``variants`` the valid values
    of a custom field that the combination suite tries with every other control (choices and flags need none).
    """

    name: str
    kind: str
    default: Any
    label: str
    low: Any = None
    high: Any = None
    choices: Any = ()
    step: float | None = None
    info: Any = ""
    public: bool = True
    optional: bool = False
    prose: bool = False
    lines: int = 1
    widget: str = ""
    quick: Any = None
    parser: Parser | None = None
    to_input: Callable[[Any], Any] | None = None
    invalid: tuple[Any, ...] = ()
    variants: Any = ()
    off: Any = None  # a value outside [low, high] that is also allowed and means "not used" (a threshold's 0)
    extra: dict = field(default_factory=dict)

    def bind(self, profile: Profile) -> Field:
        """The field with its profile-dependent attributes evaluated (an empty ``info`` from the shared help table,
        ``tasks.field_help``, where the field's name has an entry)."""
        names = ("default", "label", "info", "low", "high", "choices", "quick", "variants")
        resolved = {k: getattr(self, k)(profile) for k in names if callable(getattr(self, k))}
        if not self.info:
            from tasks.field_help import FIELD_HELP

            if self.name in FIELD_HELP:
                resolved["info"] = FIELD_HELP[self.name]
        for name in ("choices", "variants"):
            if name in resolved:
                resolved[name] = tuple(resolved[name])
        return replace(self, **resolved) if resolved else self

    # ------------------------------------------------------------------ validation

    def parse(self, value: Any) -> Any:
        """The validated value (converted to its type), or ``ValueError`` naming this field."""
        if self.parser is not None:
            return self.parser(value, self)
        return PARSERS[self.kind](value, self)

    def input_value(self, parsed: Any) -> Any:
        """A parsed value as the endpoint takes it again (for snippets and example rows)."""
        return self.to_input(parsed) if self.to_input is not None else parsed

    # ------------------------------------------------------------------ the bad-input corpus

    def cases(self) -> list[Case]:
        """(case name, value, expectation) for the corpus: what this field must refuse, and edge values it must take.

        Uploads are left to the caller (it owns the bad files): see ``kind == "image"``.
        """
        kind = self.kind
        if kind == "text" or (kind == "custom" and self.extra.get("text")):
            ok_if_prose = "ok" if self.prose else "any"
            cases = [("empty", "", "any"), ("10000 chars", "a red cat " * 1000, ok_if_prose),
                     ("30000 chars", "x" * 30_000, "error"), ("non-ASCII", "猫 🐱 naïve — Ωμέγα 日本語", ok_if_prose),
                     ("control chars", "\x00\x01\x07\x1b[31m\r\n\t\x7f\u202e", ok_if_prose)]
            return cases + [(repr(v)[:30], v, "error") for v in self.invalid]
        if kind == "choice":
            return [("unknown", "bogus", "error"), ("empty", "", "error"), ("number", 3, "error")]
        if kind == "flag":
            return [("string", "maybe", "error")]
        if kind == "image":
            return []
        if kind == "custom":
            return [(repr(v)[:30], v, "error") for v in self.invalid]
        cases: list[Case] = [('"nan"', "nan", "error"), ('"-inf"', "-inf", "error"), ("1e308", 1e308, "error"),
                             ("text", "twelve", "error")]
        if kind == "seed":
            return cases + [("-2", -2, "error"), ("2^64", 2**64, "error"), ("-1 (random)", -1, "ok")]
        if kind == "size":
            return cases + [(str(v), v, "error") for v in (1, 7, 9, 100_000)]
        cases.append(("negative", -3.5, "error" if self.low is not None and self.low > -3.5 else "any"))
        if self.low is not None:
            cases.append(("below low", self.low - 1, "error"))
        if self.off is not None and self.low is not None and self.off < self.low:
            cases.append(("between off and low", (self.off + self.low) / 2, "error"))
        if self.high is not None:
            cases.append(("above high", self.high + 1 if kind == "integer" else self.high * 1.5 + 1, "error"))
        if kind == "integer":
            cases.append(("fraction", (self.low or 0) + 0.5, "error"))
        return cases + [(repr(v)[:30], v, "error") for v in self.invalid]


# ---------------------------------------------------------------------- parsers per kind


def _number(value: Any, f: Field, integer: bool = False) -> float | int:
    if f.optional and value in (None, ""):
        return f.default
    if isinstance(value, bool):
        raise ValueError(f"{f.name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{f.name} must be a number, got {str(value)[:40]!r}") from None
    low = -math.inf if f.low is None else f.low
    high = math.inf if f.high is None else f.high
    if f.off is not None and v == f.off:
        return f.off
    if not math.isfinite(v) or not low <= v <= high:
        also = f" (or {f.off:g} = off)" if f.off is not None else ""
        raise ValueError(f"{f.name} must be between {low:g} and {high:g}{also}, got {str(value)[:40]!r}")
    if integer:
        if v != int(v):
            raise ValueError(f"{f.name} must be a whole number, got {str(value)[:40]!r}")
        return int(value) if isinstance(value, int) else int(v)
    return v


def _text(value: Any, f: Field) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{f.name} must be text, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"{f.name} is {len(value)} characters; the limit is {MAX_TEXT_CHARS}")
    return value


def _choice(value: Any, f: Field) -> Any:
    if value not in f.choices:
        raise ValueError(f"{f.name} must be one of {', '.join(map(str, f.choices))}; got {str(value)[:80]!r}")
    return value


def _flag(value: Any, f: Field) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise ValueError(f"{f.name} must be true or false, got {str(value)[:40]!r}")


def _seed(value: Any, f: Field) -> int:
    """−1 draws a random seed; the seed used is what the endpoint reports."""
    seed = _number(value, replace(f, low=-1, high=SEED_MAX), integer=True)
    if seed == -1:
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    return seed


def _size(value: Any, f: Field) -> int:
    v = _number(value, replace(f, low=1, high=MAX_SIDE if f.high is None else f.high), integer=True)
    if v % SIZE_MULTIPLE:
        raise ValueError(f"{f.name} must be a multiple of {SIZE_MULTIPLE} (the latent grid is {SIZE_MULTIPLE}× "
                         f"smaller), got {v}")
    return v


def _image(value: Any, f: Field) -> Any:
    # Decoding is checked by the task (it knows the upload cap); here only presence and type.
    if value is None:
        if f.optional:
            return None
        raise ValueError(f"upload an {f.name} first")
    if not isinstance(value, str | os.PathLike | bytes) and not hasattr(value, "size"):
        raise ValueError(f"{f.name} must be an image upload, got {type(value).__name__}")
    return Path(value) if isinstance(value, str | os.PathLike) else value


PARSERS: dict[str, Parser] = {
    "text": _text, "number": _number, "integer": lambda v, f: _number(v, f, integer=True), "choice": _choice,
    "flag": _flag, "seed": _seed, "size": _size, "image": _image,
}


# ---------------------------------------------------------------------- constructors for the usual fields


def text(name: str, default: str = "", label: str = "", *, prose: bool = False, lines: int = 1, **kw) -> Field:
    return Field(name, "text", default, label or name, prose=prose, lines=lines, **kw)


def number(name: str, default: float, low: Any, high: Any, label: str = "", *, step: float = 0.05, **kw) -> Field:
    return Field(name, "number", default, label or name, low=low, high=high, step=step, **kw)


def integer(name: str, default: int, low: Any, high: Any, label: str = "", *, step: float = 1, **kw) -> Field:
    return Field(name, "integer", default, label or name, low=low, high=high, step=step, **kw)


def choice(name: str, default: Any, choices: Sequence | Callable, label: str = "", **kw) -> Field:
    return Field(name, "choice", default, label or name, choices=choices if callable(choices) else tuple(choices),
                 **kw)


def flag(name: str, default: bool, label: str = "", **kw) -> Field:
    return Field(name, "flag", default, label or name, **kw)


def seed(default: int = 0, label: str = "seed (−1 = random)") -> Field:
    return Field("seed", "seed", default, label, low=-1, high=SEED_MAX, quick=1)


def size(name: str, default: Any, label: str = "") -> Field:
    """An image side: a multiple of 8, at most the pixel cap over the smallest other side."""
    return Field(name, "size", default, label or f"{name} (multiple of {SIZE_MULTIPLE})", step=SIZE_MULTIPLE,
                 quick=32, low=SIZE_MULTIPLE, high=lambda profile: profile.limits.max_pixels // SIZE_MULTIPLE)


def image(name: str, default: Any = None, label: str = "", *, optional: bool = False) -> Field:
    return Field(name, "image", default, label or name, public=False, optional=optional)


def replace_label(f: Field, label: str) -> Field:
    """The same field under another label (one endpoint explains a shared parameter its own way)."""
    return replace(f, label=label)
