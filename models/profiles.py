"""Profiles: which model fills each role, plus limits, from a TOML file.

Top-level keys are roles; a value is a hub id, a local folder (relative paths are taken
from the profile file's folder), or an inline table ``{ source = "...", ... }`` for roles
that need options. Tables such as ``[limits]`` hold settings. Example::

    sd = "/models/my-sd"
    [limits]
    max_steps = 50
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PROFILE_DIR = ROOT / "assets" / "profiles"
SETTING_TABLES = ("limits", "runtime", "meta")


@dataclass(frozen=True)
class Limits:
    """Caps checked before any model work (env ``CONDLAB_MAX_*`` overrides the profile)."""

    max_pixels: int = 512 * 512
    max_steps: int = 100
    max_images: int = 4
    max_upload_pixels: int = 4096 * 4096
    timeout_s: float = 600.0
    # Classifier guidance counts respaced ADM steps; the paper's setting is 250. None: max_steps.
    max_guided_steps: int | None = None
    # Batch rows per model call and VAE decode (CFG's two branches count twice); None: no chunking.
    max_batch_rows: int | None = None

    @property
    def guided_steps(self) -> int:
        return self.max_guided_steps if self.max_guided_steps is not None else self.max_steps

    @classmethod
    def from_settings(cls, table: dict) -> Limits:
        values = {}
        for name, kind in (("max_pixels", int), ("max_steps", int), ("max_images", int),
                           ("max_upload_pixels", int), ("timeout_s", float), ("max_guided_steps", int),
                           ("max_batch_rows", int)):
            value = _setting(table, name, kind, f"limit {name} must be a number")
            if value is not None:
                values[name] = value
        return cls(**values)


def _setting(table: dict, name: str, kind: type, message: str):
    """``CONDLAB_<NAME>`` from the environment, else the profile table's value, as ``kind``; None if neither."""
    raw = os.environ.get(f"CONDLAB_{name.upper()}", table.get(name))
    if raw is None:
        return None
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{message}, got {raw!r}") from None


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path | None
    roles: dict[str, dict] = field(default_factory=dict)
    settings: dict[str, dict] = field(default_factory=dict)

    def source(self, role: str) -> str | None:
        """The role's hub id or absolute folder, or None when the profile does not name it."""
        entry = self.roles.get(role)
        return entry["source"] if entry else None

    def options(self, role: str) -> dict:
        entry = dict(self.roles.get(role) or {})
        entry.pop("source", None)
        return entry

    def has(self, role: str) -> bool:
        return role in self.roles

    def display_source(self, role: str) -> str:
        """The role's source as it may be shown or stored: a hub id, or a folder relative to the repo.

        Outputs, PNG metadata and snippets never carry an absolute local path; a folder outside the
        repository is shown by its name alone.
        """
        source = self.source(role)
        return "" if source is None else portable(source)

    @property
    def limits(self) -> Limits:
        return Limits.from_settings(self.settings.get("limits", {}))

    @property
    def cpu_threads(self) -> int | None:
        """torch threads on a CPU runtime (``[runtime] cpu_threads``, env ``CONDLAB_CPU_THREADS``).

        None leaves torch's default (one per core).
        """
        message = "cpu_threads must be a positive integer"
        threads = _setting(self.settings.get("runtime", {}), "cpu_threads", int, message)
        if threads is not None and threads < 1:
            raise ValueError(f"{message}, got {threads!r}")
        return threads

    @property
    def previews(self) -> bool:
        """Whether image endpoints stream x̂0 previews (``[runtime] previews``, env ``CONDLAB_PREVIEWS``; on)."""
        value = _setting(self.settings.get("runtime", {}), "previews", str, "previews must be true or false")
        if value is None:
            return True
        if value.strip().lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"previews must be true or false, got {value!r}")
        return value.strip().lower() in ("1", "true", "yes", "on")

    @property
    def description(self) -> str:
        return self.settings.get("meta", {}).get("description", "")


def portable(source: str) -> str:
    """A hub id as it is; a local path relative to the repository, or ``<local>/name`` when outside it."""
    path = Path(source)
    if not path.is_absolute():
        return source
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return f"<local>/{path.name}"


def _resolve(value: str, base: Path) -> str:
    if value.startswith(("http://", "https://")):
        return value
    candidate = (base / value).resolve() if not Path(value).is_absolute() else Path(value)
    if value.startswith((".", "/")) or candidate.exists():
        return str(candidate)
    return value  # a hub id such as "org/name"


def load_profile(name_or_path: str | os.PathLike) -> Profile:
    """A built-in profile by name (``full``, ``toy``) or a TOML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        builtin = PROFILE_DIR / f"{name_or_path}.toml"
        if not builtin.exists():
            known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.toml")))
            raise ValueError(f"unknown profile {str(name_or_path)!r}; built-in profiles: {known}, or give a .toml path")
        path = builtin
    if not path.exists():
        raise ValueError(f"profile file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"profile {path} is not valid TOML: {e}") from None
    roles, settings = {}, {}
    for key, value in data.items():
        if key in SETTING_TABLES:
            settings[key] = value
        elif isinstance(value, str):
            roles[key] = {"source": _resolve(value, path.parent)}
        elif isinstance(value, dict) and isinstance(value.get("source"), str):
            roles[key] = {**value, "source": _resolve(value["source"], path.parent)}
        else:
            raise ValueError(f"profile {path}: role {key!r} must be a string or a table with a 'source'")
    return Profile(path.stem, path, roles, settings)


def toy_available() -> bool:
    return (PROFILE_DIR / "toy.toml").exists() and (ROOT / "assets" / "toy" / "sd" / "unet").is_dir()


@dataclass(frozen=True)
class ProfileChoice:
    """Which profile ``python app.py`` runs without ``--profile``, and why (shown on the page)."""

    name: str
    reason: str


def weights_reachable(source: str, timeout: float = 4.0) -> bool:
    """A local folder, a copy in the Hugging Face cache, or (when not offline) the hub answering for it."""
    if Path(source).is_dir():
        return True
    from huggingface_hub import HfApi, try_to_load_from_cache

    try:
        if isinstance(try_to_load_from_cache(source, "model_index.json"), str):
            return True
    except ValueError:  # not a valid repo id
        return False
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        HfApi().model_info(source, timeout=timeout)
    except Exception:  # noqa: BLE001 - any failure (no network, gated, unknown id) means "not reachable now"
        return False
    return True


def choose_default_profile() -> ProfileChoice:
    """``CONDLAB_PROFILE`` if set; else ``full`` when CUDA is there and its SD weights are reachable, else ``toy``.

    Without the toy weights (a checkout that has not trained them) ``full`` is the only choice.
    """
    env = os.environ.get("CONDLAB_PROFILE")
    if env:
        return ProfileChoice(env, "chosen by CONDLAB_PROFILE")
    if not toy_available():
        return ProfileChoice("full", "the toy weights are not in assets/toy")
    if not torch.cuda.is_available():
        return ProfileChoice("toy", "no CUDA GPU, so the small offline models")
    source = load_profile("full").source("sd") or ""
    if not weights_reachable(source):
        return ProfileChoice("toy", f"a CUDA GPU is here, but the full profile's weights ({source}) are neither "
                                    "local, cached nor reachable on the hub")
    return ProfileChoice("full", "a CUDA GPU and the full profile's weights are available")

