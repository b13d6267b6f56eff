"""Guidance rules by name: the registry of methods (``guidance/methods/``), their parameters, and ``guide``.

Every rule is a pure function over batch-first tensors ``[B, ...]``; norms and projections are taken
per sample. Rules are written for noise predictions (ε) but are linear algebra only, so ``guide`` can
apply them in the x0 space instead (``space="x0"``). Adding a method: one file in ``guidance/methods/``
with its function and ``METHOD`` entry, and one line in ``METHODS`` below; its parameters then appear
in every endpoint that offers guidance rules, with their bounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from guidance.methods import cfg as cfg_method
from guidance.methods import none as none_method
from guidance.methods import perp_cfg as perp_cfg_method
from guidance.methods.base import Method, RuleParam
from guidance.methods.cfg import cfg
from guidance.methods.perp_cfg import BASES, guidance_norms, perp_cfg, split_guidance
from guidance.methods.rescale import FORMULA as RESCALE_FORMULA
from guidance.methods.rescale import RESCALE, rescale
from guidance.parameterization import eps_to_x0, x0_to_eps

METHODS: dict[str, Method] = {m.name: m for m in (none_method.METHOD, cfg_method.METHOD, perp_cfg_method.METHOD)}
RULE_NAMES = tuple(METHODS)
SPACES = ("eps", "x0")
SCALE = RuleParam("scale", 7.5, "scale w", low=0.0, high=30.0, step=0.5)


def _all_params() -> dict[str, RuleParam]:
    """scale, then every method's parameters in registry order, then rescale; one definition per name."""
    params: dict[str, RuleParam] = {SCALE.name: SCALE}
    for method in METHODS.values():
        for p in method.params:
            if params.setdefault(p.name, p) != p:
                raise RuntimeError(f"guidance parameter {p.name!r} is defined twice, differently")
    params[RESCALE.name] = RESCALE
    return params


RULE_PARAMS: dict[str, RuleParam] = _all_params()
__all__ = ["BASES", "RULE_NAMES", "RULE_PARAMS", "GuidanceRule", "cfg", "guidance_norms", "guide", "perp_cfg",
           "rescale", "split_guidance"]


class GuidanceRule:
    """A method by name with its parameters, validated against the registry; ``apply`` is what the loop calls.

    ``GuidanceRule("perp-cfg", 7.5, eta=0.5, basis="cond", rescale=0.7, space="x0")``. Every registered
    parameter has a value (its default unless given) and can be read as an attribute (``rule.eta``).
    """

    __slots__ = ("name", "scale", "space", "options")

    def __init__(self, name: str = "cfg", scale: float = 7.5, *, space: str = "eps", **options: Any) -> None:
        if name not in METHODS:
            raise ValueError(f"guidance must be one of {RULE_NAMES}, got {str(name)[:40]!r}")
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {str(space)[:40]!r}")
        unknown = set(options) - set(RULE_PARAMS)
        if unknown:
            raise ValueError(f"unknown guidance parameter(s) {sorted(unknown)}; known: {', '.join(RULE_PARAMS)}")
        values = {p.name: p.check(options.get(p.name, p.default)) for p in RULE_PARAMS.values() if p is not SCALE}
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "scale", SCALE.check(scale))
        object.__setattr__(self, "space", space)
        object.__setattr__(self, "options", values)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("GuidanceRule is immutable")

    def __getattr__(self, key: str) -> Any:
        try:
            return object.__getattribute__(self, "options")[key]
        except KeyError:
            raise AttributeError(key) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GuidanceRule) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        used = ", ".join(f"{k}={v!r}" for k, v in self.used_options().items())
        return f"GuidanceRule({self.name!r}, {self.scale:g}{', ' + used if used else ''}, space={self.space!r})"

    def _key(self) -> tuple:
        return self.name, self.scale, self.space, tuple(sorted(self.options.items()))

    @property
    def method(self) -> Method:
        return METHODS[self.name]

    @property
    def needs_uncond(self) -> bool:
        return self.method.needs_uncond

    def used_options(self) -> dict[str, Any]:
        """The parameters this method reads, plus rescale when it is on."""
        used = {p.name: self.options[p.name] for p in self.method.params}
        if self.options["rescale"] and self.needs_uncond:
            used["rescale"] = self.options["rescale"]
        return used

    @property
    def formula(self) -> str:
        text = self.method.formula
        if self.options["rescale"] and self.needs_uncond:
            text += f";  then {RESCALE_FORMULA}"
        return text

    def describe(self) -> dict[str, Any]:
        """JSON-ready: name, scale, the parameters used, formula and paper (for metadata)."""
        return {"name": self.name, "scale": self.scale, **self.used_options(), "space": self.space,
                "formula": self.formula, "paper": self.method.paper}

    def apply(self, eps_uncond: Tensor | None, eps_cond: Tensor, x_t: Tensor | None = None,
              alpha_bar: Tensor | float | None = None) -> Tensor:
        return guide(eps_uncond, eps_cond, self, x_t=x_t, alpha_bar=alpha_bar)


def rule_from(values: Mapping[str, Any]) -> GuidanceRule:
    """A rule from request values keyed by the registry's names (``guidance``, ``scale``, ``eta`` …)."""
    options = {k: values[k] for k in RULE_PARAMS if k != SCALE.name and k in values}
    return GuidanceRule(values.get("guidance", "cfg"), values.get("scale", SCALE.default), **options)


def guide(
    eps_uncond: Tensor | None,
    eps_cond: Tensor,
    rule: GuidanceRule,
    *,
    x_t: Tensor | None = None,
    alpha_bar: Tensor | float | None = None,
    scale: float | Tensor | None = None,
) -> Tensor:
    """Apply ``rule``'s method and optional rescale, in the eps or x0 space.

    In ``space="x0"`` both predictions are mapped to x0 with the scheduler's ᾱ_t, combined there
    (as in APG), and mapped back to ε. ``scale`` overrides the rule's scale, e.g. with a per-row
    tensor ``[B, 1, …]`` (the sweep).
    """
    method = rule.method
    if not method.needs_uncond:
        return method.combine(None, eps_cond)
    if eps_uncond is None:
        raise ValueError(f"rule {rule.name!r} needs the unconditional prediction")
    if rule.space == "x0":
        if x_t is None or alpha_bar is None:
            raise ValueError("space='x0' needs x_t and alpha_bar")
        u, c = eps_to_x0(eps_uncond, x_t, alpha_bar), eps_to_x0(eps_cond, x_t, alpha_bar)
    else:
        u, c = eps_uncond, eps_cond
    params = {p.name: rule.options[p.name] for p in method.params}
    out = method.combine(u, c, rule.scale if scale is None else scale, **params)
    if rule.options["rescale"]:
        out = rescale(out, c, rule.options["rescale"])
    if rule.space == "x0":
        out = x0_to_eps(out, x_t, alpha_bar)
    return out
