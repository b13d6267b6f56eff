"""Guidance rules by name: the registries of methods (``guidance/methods/``) and modifiers (``guidance/modifiers/``),
their parameters, the rule interface the sampler loop drives, and ``guide``.

Every method is a pure function over batch-first tensors ``[B, ...]``; norms and projections are taken per sample.
Methods are written for noise predictions (ε) but are linear algebra only, so ``guide`` can apply them in the x0
space instead (``space="x0"``). Adding a method: one file in ``guidance/methods/`` with its function and ``METHOD``
entry, and one line in ``METHODS`` below; adding a modifier: one file in ``guidance/modifiers/`` and one line in
``MODIFIERS``. Their parameters then appear, with their bounds, in every endpoint that offers guidance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from torch import Tensor

from guidance.methods import apg, autoguidance, cfg_pp, cfg_zero_star, distilled, tcfg
from guidance.methods import cfg as cfg_method
from guidance.methods import none as none_method
from guidance.methods import perp_cfg as perp_cfg_method
from guidance.methods.base import GuideStep, Method, RuleParam
from guidance.methods.cfg import cfg
from guidance.methods.perp_cfg import BASES, guidance_norms, perp_cfg, split_guidance
from guidance.modifiers import interval, pag, threshold
from guidance.modifiers import rescale as rescale_modifier
from guidance.modifiers.base import Modifier, RunFacts
from guidance.modifiers.rescale import rescale
from guidance.parameterization import NoiseLevel, as_level

METHODS: dict[str, Method] = {m.name: m for m in (
    none_method.METHOD, cfg_method.METHOD, perp_cfg_method.METHOD, apg.METHOD, cfg_zero_star.METHOD, tcfg.METHOD,
    cfg_pp.METHOD, autoguidance.METHOD, distilled.METHOD,
)}
# In this order their parameters follow the methods' in every endpoint (the API's positional order).
MODIFIERS: dict[str, Modifier] = {m.name: m for m in (
    rescale_modifier.MODIFIER, interval.MODIFIER, pag.MODIFIER, threshold.MODIFIER,
)}
RULE_NAMES = tuple(METHODS)
SPACES = ("eps", "x0")
SCALE = RuleParam("scale", 7.5, "scale w", low=0.0, high=30.0, step=0.5)
MODIFIER_PARAMS = tuple(p for m in MODIFIERS.values() for p in m.params)


def _all_params() -> dict[str, RuleParam]:
    """scale, then every method's parameters in registry order, then the modifiers'; one definition per name."""
    params: dict[str, RuleParam] = {SCALE.name: SCALE}
    for method in METHODS.values():
        for p in method.params:
            if params.setdefault(p.name, p) != p:
                raise RuntimeError(f"guidance parameter {p.name!r} is defined twice, differently")
    for p in MODIFIER_PARAMS:
        if params.setdefault(p.name, p) != p:
            raise RuntimeError(f"modifier parameter {p.name!r} clashes with a method's")
    return params


RULE_PARAMS: dict[str, RuleParam] = _all_params()
__all__ = ["BASES", "METHODS", "MODIFIERS", "RULE_NAMES", "RULE_PARAMS", "GuideStep", "GuidanceRule", "Rule",
           "RunFacts", "cfg", "guidance_norms", "guide", "perp_cfg", "rescale", "rule_from", "split_guidance"]


class Rule(Protocol):
    """What the sampler loop asks of a rule: a registry rule (:class:`GuidanceRule`) or a sweep's rules per row."""

    name: str
    basis: str  # the basis the diagnostics split Δ along (Perp-CFG's)

    @property
    def uncond_branch(self) -> str: ...

    @property
    def needs_ddim(self) -> bool: ...

    def branches_at(self, index: int, num_steps: int) -> tuple[str, ...]:
        """The model evaluations to stack at this step, in order (u's branch, "cond", extra branches)."""

    def branch_options(self) -> dict[str, Any]:
        """What the model side reads to run the extra branches (PAG's layers)."""

    def scheduler_options(self) -> dict[str, Any]:
        """What the scheduler must do for the rule (dynamic thresholding)."""

    def check(self, facts: RunFacts) -> None:
        """``ValueError`` when the rule cannot work in this run (scheduler, the model's space)."""

    def guide_step(self, predictions: Mapping[str, Tensor], x_t: Tensor, alpha_bar: Tensor, step: GuideStep,
                   state: dict) -> Tensor:
        """The guided ε from every branch's ε at this step; ``state`` lives for one run."""


class GuidanceRule:
    """A method by name with its parameters and the modifiers', validated against the registries.

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
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "space", space)
        object.__setattr__(self, "options", values)
        interval.check_interval(values, RunFacts())  # a rule whose parameters contradict each other never exists

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
    def modifiers(self) -> list[Modifier]:
        """The modifiers that are on, in registry order."""
        return [m for m in MODIFIERS.values() if m.on(self.options)]

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
        """Whether guidance acts at this step (every modifier with a say agrees); outside, the conditional prediction
        is used alone and no other branch is evaluated."""
        return all(m.acts_at(self.options, index, num_steps) for m in self.modifiers if m.acts_at is not None)

    def branches_at(self, index: int, num_steps: int) -> tuple[str, ...]:
        """The model evaluations the loop stacks at this step, in order: u's branch, the conditional one, and the
        extra branches of the modifiers that are on (PAG's perturbed one)."""
        if not self.active_at(index, num_steps):
            return ("cond",)
        extra = tuple(m.extra_branch for m in self.modifiers if m.extra_branch)
        return ((self.method.uncond_branch,) if self.needs_uncond else ()) + ("cond",) + extra

    def mean_evaluations(self, num_steps: int) -> float:
        """Model rows per image and step, averaged over a run of ``num_steps`` (CFG: 2; in an interval: fewer)."""
        return sum(len(self.branches_at(i, num_steps)) for i in range(num_steps)) / max(num_steps, 1)

    def branch_options(self) -> dict[str, Any]:
        """The parameters of the modifiers that add a branch, by branch name (what the model hook reads)."""
        return {m.extra_branch: {p.name: self.options[p.name] for p in m.params}
                for m in self.modifiers if m.extra_branch}

    def scheduler_options(self) -> dict[str, Any]:
        """What the modifiers that are on ask of the scheduler (dynamic thresholding)."""
        out: dict[str, Any] = {}
        for m in self.modifiers:
            if m.scheduler_options is not None:
                out.update(m.scheduler_options(self.options))
        return out

    def check(self, facts: RunFacts) -> None:
        """Refuse, with what to change, a rule that cannot work in this run (the scheduler, the model's space)."""
        if self.needs_ddim and facts.scheduler != "ddim":
            raise ValueError(f"{self.name} rewrites the DDIM step: set scheduler to ddim (got {facts.scheduler})")
        if self.needs_ddim and facts.ddim_eta:
            raise ValueError(f"{self.name} rewrites the deterministic DDIM step: set ddim_eta to 0 (got "
                             f"{facts.ddim_eta:g})")
        for m in self.modifiers:
            if m.check is not None:
                m.check(self.options, facts)

    def used_options(self) -> dict[str, Any]:
        """The parameters this method reads, plus those of each modifier that is on."""
        used = {p.name: self.options[p.name] for p in self.method.params}
        for m in self.modifiers:
            used.update(m.used(self.options))
        return used

    @property
    def formula(self) -> str:
        text = self.method.formula
        for m in sorted((m for m in self.modifiers if m.adjust is not None), key=lambda m: m.order):
            text += f";  then {m.formula}" + (f"  ({m.label})" if m.label and m.label not in m.formula else "")
        return text

    def describe(self) -> dict[str, Any]:
        """JSON-ready: name, scale, the parameters used, formula and paper (for metadata)."""
        return {"name": self.name, "scale": self.scale, **self.used_options(), "space": self.space,
                "formula": self.formula, "paper": self.method.paper}

    def apply(self, eps_uncond: Tensor | None, eps_cond: Tensor, x_t: Tensor | None = None,
              alpha_bar: Tensor | float | None = None, *, step: GuideStep | None = None, state: dict | None = None,
              eps_perturbed: Tensor | None = None) -> Tensor:
        """The guided ε from u and c (and PAG's perturbed c), for direct use; the loop calls :meth:`guide_step`."""
        extra = {"perturbed": eps_perturbed} if eps_perturbed is not None else {}
        return guide(eps_uncond, eps_cond, self, x_t=x_t, alpha_bar=alpha_bar, step=step, state=state, extra=extra)

    def guide_step(self, predictions: Mapping[str, Tensor], x_t: Tensor, alpha_bar: Tensor, step: GuideStep,
                   state: dict) -> Tensor:
        extra = {k: v for k, v in predictions.items() if k not in ("cond", self.uncond_branch)}
        return guide(predictions.get(self.uncond_branch), predictions["cond"], self, x_t=x_t, alpha_bar=alpha_bar,
                     step=step, state=state, extra=extra)


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
    alpha_bar: NoiseLevel | Tensor | float | None = None,
    scale: float | Tensor | None = None,
    step: GuideStep | None = None,
    state: dict | None = None,
    extra: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Apply ``rule``'s method, then each modifier that adjusts (PAG, rescale), in the eps or x0 space.

    In ``space="x0"`` the predictions are mapped to x0 at the step's noise level (``alpha_bar``: ᾱ_t, or a
    :class:`~guidance.parameterization.NoiseLevel`), combined there (as in APG), and mapped back. ``scale``
    overrides the rule's scale, e.g. with a per-row tensor ``[B, 1, …]`` (the sweep). ``step`` (where in the run) is
    required by step-aware methods and the interval; ``state`` persists across the steps of one run (APG's
    momentum); ``extra`` holds the extra branches' predictions by name.
    """
    method, extra = rule.method, dict(extra or {})
    if step is not None and not rule.active_at(step.index, step.num_steps):
        return eps_cond
    missing = [m.extra_branch for m in rule.modifiers if m.extra_branch and m.extra_branch not in extra]
    if missing:
        raise ValueError(f"{rule.name} with {', '.join(missing)} needs that branch's prediction")
    if method.needs_uncond and eps_uncond is None:
        raise ValueError(f"rule {rule.name!r} needs the {method.uncond_branch} prediction")
    if method.step_aware and step is None:
        raise ValueError(f"rule {rule.name!r} needs to know the step it is applied at")
    predictions = {"cond": eps_cond, **extra, **({"uncond": eps_uncond} if eps_uncond is not None else {})}
    if rule.space == "x0":
        if x_t is None or alpha_bar is None:
            raise ValueError("space='x0' needs x_t and alpha_bar")
        level = as_level(alpha_bar)
        predictions = {k: level.x0(v, x_t) for k, v in predictions.items()}
    u, c = predictions.get("uncond"), predictions["cond"]
    if not method.needs_uncond:
        out = method.combine(None, c)
    else:
        params = {q.name: rule.options[q.name] for q in method.params}
        if method.step_aware:
            params["step"] = step
        if method.stateful:
            params["state"] = state if state is not None else {}
        out = method.combine(u, c, rule.scale if scale is None else scale, **params)
    for modifier in sorted((m for m in rule.modifiers if m.adjust is not None), key=lambda m: m.order):
        out = modifier.adjust(out, predictions, rule.options)
    return level.from_x0(out, x_t) if rule.space == "x0" else out
