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

from guidance.methods import apg, autoguidance, cfg_pp, cfg_zero_star, tcfg
from guidance.methods import cfg as cfg_method
from guidance.methods import none as none_method
from guidance.methods import perp_cfg as perp_cfg_method
from guidance.methods.base import GuideStep, Method, RuleParam
from guidance.methods.cfg import cfg
from guidance.methods.modifiers import (
    DYNAMIC_THRESHOLD,
    INTERVAL,
    INTERVAL_END,
    INTERVAL_START,
    PAG,
    interval_active,
    pag_term,
)
from guidance.methods.perp_cfg import BASES, guidance_norms, perp_cfg, split_guidance
from guidance.methods.rescale import FORMULA as RESCALE_FORMULA
from guidance.methods.rescale import MODIFIER as RESCALE_MODIFIER
from guidance.methods.rescale import rescale
from guidance.parameterization import eps_to_x0, x0_to_eps

METHODS: dict[str, Method] = {m.name: m for m in (
    none_method.METHOD, cfg_method.METHOD, perp_cfg_method.METHOD, apg.METHOD, cfg_zero_star.METHOD, tcfg.METHOD,
    cfg_pp.METHOD, autoguidance.METHOD,
)}
RULE_NAMES = tuple(METHODS)
SPACES = ("eps", "x0")
SCALE = RuleParam("scale", 7.5, "scale w", low=0.0, high=30.0, step=0.5)
# What acts on top of every method (after scale and the methods' own parameters): rescale, when guidance acts, PAG,
# thresholding. Their parameters, in this order, follow the methods' in every endpoint.
MODIFIER_REGISTRY = {m.name: m for m in (RESCALE_MODIFIER, INTERVAL, PAG, DYNAMIC_THRESHOLD)}
MODIFIERS = tuple(p for m in MODIFIER_REGISTRY.values() for p in m.params)


def _all_params() -> dict[str, RuleParam]:
    """scale, then every method's parameters in registry order, then the modifiers; one definition per name."""
    params: dict[str, RuleParam] = {SCALE.name: SCALE}
    for method in METHODS.values():
        for p in method.params:
            if params.setdefault(p.name, p) != p:
                raise RuntimeError(f"guidance parameter {p.name!r} is defined twice, differently")
    for p in MODIFIERS:
        params[p.name] = p
    return params


RULE_PARAMS: dict[str, RuleParam] = _all_params()
__all__ = ["BASES", "RULE_NAMES", "RULE_PARAMS", "GuideStep", "GuidanceRule", "cfg", "guidance_norms", "guide",
           "perp_cfg", "rescale", "split_guidance"]


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
        scale = SCALE.check(scale)
        method = METHODS[name]
        if method.scale_high is not None and scale > method.scale_high:
            raise ValueError(f"{name} takes scale in [0, {method.scale_high:g}] (its λ), got {scale!r}")
        if values["interval_start"] >= values["interval_end"]:
            raise ValueError(f"interval_start ({values['interval_start']:g}) must be before interval_end "
                             f"({values['interval_end']:g})")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "scale", scale)
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

    @property
    def stateful(self) -> bool:
        return self.method.stateful

    @property
    def uncond_branch(self) -> str:
        return self.method.uncond_branch

    @property
    def needs_ddim(self) -> bool:
        return self.method.needs_ddim

    def active_at(self, index: int, num_steps: int) -> bool:
        """Whether guidance acts at this step (the interval); outside it the conditional prediction is used alone."""
        return interval_active(index, num_steps, self.options["interval_start"], self.options["interval_end"])

    def branches_at(self, index: int, num_steps: int) -> tuple[str, ...]:
        """The model evaluations the loop stacks at this step, in order: u's branch, the conditional one, and
        PAG's perturbed one when PAG is on."""
        if not self.active_at(index, num_steps):
            return ("cond",)
        perturbed = ("perturbed",) if self.options["pag_scale"] else ()
        return ((self.method.uncond_branch,) if self.needs_uncond else ()) + ("cond",) + perturbed

    def used_options(self) -> dict[str, Any]:
        """The parameters this method reads, plus each modifier that is on."""
        used = {p.name: self.options[p.name] for p in self.method.params}
        o = self.options
        if o["rescale"]:
            used["rescale"] = o["rescale"]
        if (o["interval_start"], o["interval_end"]) != (INTERVAL_START.default, INTERVAL_END.default):
            used.update(interval_start=o["interval_start"], interval_end=o["interval_end"])
        if o["pag_scale"]:
            used.update(pag_scale=o["pag_scale"], pag_layers=o["pag_layers"])
        if o["threshold"]:
            used["threshold"] = o["threshold"]
        return used

    @property
    def formula(self) -> str:
        text = self.method.formula
        if self.options["pag_scale"]:
            text += ";  ε ← ε + s (c − c_perturbed)  (PAG)"
        if self.options["rescale"]:
            text += f";  then {RESCALE_FORMULA}"
        return text

    def describe(self) -> dict[str, Any]:
        """JSON-ready: name, scale, the parameters used, formula and paper (for metadata)."""
        return {"name": self.name, "scale": self.scale, **self.used_options(), "space": self.space,
                "formula": self.formula, "paper": self.method.paper}

    def apply(self, eps_uncond: Tensor | None, eps_cond: Tensor, x_t: Tensor | None = None,
              alpha_bar: Tensor | float | None = None, *, step: GuideStep | None = None, state: dict | None = None,
              eps_perturbed: Tensor | None = None) -> Tensor:
        return guide(eps_uncond, eps_cond, self, x_t=x_t, alpha_bar=alpha_bar, step=step, state=state,
                     eps_perturbed=eps_perturbed)


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
    step: GuideStep | None = None,
    state: dict | None = None,
    eps_perturbed: Tensor | None = None,
) -> Tensor:
    """Apply ``rule``'s method, then PAG and rescale when on, in the eps or x0 space.

    In ``space="x0"`` the predictions are mapped to x0 with the scheduler's ᾱ_t, combined there (as in APG),
    and mapped back to ε. ``scale`` overrides the rule's scale, e.g. with a per-row tensor ``[B, 1, …]`` (the
    sweep). ``step`` (where in the run) is required by step-aware methods and the interval; ``state`` persists
    across the steps of one run (APG's momentum); ``eps_perturbed`` is PAG's third evaluation.
    """
    method = rule.method
    if step is not None and not rule.active_at(step.index, step.num_steps):
        return eps_cond
    if rule.options["pag_scale"] and eps_perturbed is None:
        raise ValueError("PAG needs the perturbed-attention prediction")
    if not method.needs_uncond:  # the conditional prediction, plus PAG's push when it is on
        out = method.combine(None, eps_cond)
        return out + pag_term(eps_cond, eps_perturbed, rule.options["pag_scale"]) if rule.options["pag_scale"] else out
    if eps_uncond is None:
        raise ValueError(f"rule {rule.name!r} needs the {method.uncond_branch} prediction")
    if method.step_aware and step is None:
        raise ValueError(f"rule {rule.name!r} needs to know the step it is applied at")
    if rule.space == "x0":
        if x_t is None or alpha_bar is None:
            raise ValueError("space='x0' needs x_t and alpha_bar")
        to = lambda eps: eps_to_x0(eps, x_t, alpha_bar)  # noqa: E731
        u, c = to(eps_uncond), to(eps_cond)
        p = to(eps_perturbed) if eps_perturbed is not None else None
    else:
        u, c, p = eps_uncond, eps_cond, eps_perturbed
    params = {q.name: rule.options[q.name] for q in method.params}
    if method.step_aware:
        params["step"] = step
    if method.stateful:
        params["state"] = state if state is not None else {}
    out = method.combine(u, c, rule.scale if scale is None else scale, **params)
    if rule.options["pag_scale"]:
        out = out + pag_term(c, p, rule.options["pag_scale"])
    if rule.options["rescale"]:
        out = rescale(out, c, rule.options["rescale"])
    if rule.space == "x0":
        out = x0_to_eps(out, x_t, alpha_bar)
    return out
