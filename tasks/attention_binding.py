"""``/attention_binding``: does each colour and shape word attend to its own object? Measured per step and layer.

In the toy profile the model draws the shapes world, so each named object gets a mask read off the sample itself (its
pixels of the named colour; the prompt's layout as fallback, ``experiments.binding_masks``) and every word's
cross-attention mass is split into own object / other object / background, with a binding accuracy (own > other).
A real model has no such masks: each word's share of the attention and its maps only.
"""

from __future__ import annotations

from dataclasses import asdict

from experiments.attention_binding import attention_binding, prompt_words
from experiments.binding_report import (
    accuracy_table,
    plot_maps,
    plot_shares,
    summarise,
    word_samples,
    words_table,
)
from models.loading.sd import load_role_sd
from models.profiles import Profile
from tasks import fields as F
from tasks.common import images_field, is_toy, steps_field
from tasks.spec import EndpointSpec, Output, Params, Task, TaskContext
from tasks.text_models import TEXT_MODELS, check_text_model, model_field

ROLE = "sd"
NATIVE_MEGAPIXELS = 512 * 512 / 1e6  # the cost estimate assumes SD 1.5's native size (the toy's 32² is far less)


def _default_prompt(profile: Profile) -> str:
    return "a red circle on the left and a blue square" if is_toy(profile) else "a red cube and a blue sphere"


def parse_prompt(value: object, field: F.Field) -> str:
    """Text with at least one colour or shape word (any model's vocabulary); the toy world's own rules follow in
    :func:`check_prompt`, which knows the profile."""
    prompt = F.PARSERS["text"](value, field)
    prompt_words(prompt, world=False)
    return prompt


def check_binding_model(params: Params, profile: Profile) -> None:
    """The model must be in the profile and record cross-attention (the UNet roles here)."""
    check_text_model(params, profile)
    model = TEXT_MODELS[params.model]
    if "maps" in model.lacks:
        raise ValueError(f"binding is measured on cross-attention maps, recorded here for the UNet models "
                         f"({', '.join(r for r, m in TEXT_MODELS.items() if 'maps' not in m.lacks)}); model "
                         f"{params.model} ({model.kind}) attends differently")


def check_prompt(params: Params, profile: Profile) -> None:
    """Refuse, before any model work, a prompt with no colour or shape word (or, in the toy world, one whose
    objects cannot be told apart by colour)."""
    prompt_words(params.prompt, world=is_toy(profile))


ATTENTION_BINDING_SPEC = EndpointSpec(
    api_name="/attention_binding",
    summary="Cross-attention mass of each colour and shape word on its own object vs the other vs the background, "
            "over steps and layers, with a binding accuracy (toy world: masks read off the samples)",
    fields=(
        F.text("prompt", _default_prompt, "prompt (its colour and shape words are measured)", lines=2,
               info="The prompt to sample, whose colour and shape words' cross-attention is measured; in the toy world "
                    "one or two objects in different colours, e.g. \"a red circle on the left and a blue square\".",
               parser=parse_prompt, invalid=("a cat on a mat", "on the left and at the top", "1234", "the the the")),
        F.number("scale", 4.0, 0, 30, "CFG scale w", step=0.5),
        steps_field(),
        F.seed(),
        images_field(),
        model_field(),
    ),
    outputs=(
        Output("maps", "gallery", "each word's map (mean over steps and layers); own object outlined, other dashed",
               columns=1, elem_id="ab-gallery"),
        Output("plot", "image", "shares over steps and layers, binding per step"),
        Output("table", "markdown", "per word, and the binding accuracy"),
        Output("metadata", "json", "metadata"),
    ),
    checks=(check_prompt, check_binding_model),
    cost=lambda p: p.steps * NATIVE_MEGAPIXELS * p.num_images * 2,  # CFG: two branches per step
)

MASKS_TEXT = ("**Own object's mask**: the sample's pixels of the object's named colour (nearest of the world's six "
              "colours, within half the distance between the closest two); when a sample shows fewer than 10 such "
              "pixels, a disc at the position the prompt names (or implies: left ↔ right) stands in. A word is "
              "*bound* when its attention mass (summed over steps and layers) on its own object exceeds that on the "
              "other; the *uniform map* column is what a map spread evenly would score (own object larger).")


def run_attention_binding(params: Params, ctx: TaskContext) -> dict:
    world = is_toy(ctx.profile)
    with ctx.loading(params.model):
        sd = load_role_sd(ctx.profile, ctx.runtime, params.model)
    with ctx.section("sample"):
        run = attention_binding(sd, params.prompt, scale=params.scale, steps=params.steps, seed=params.seed,
                                num_images=params.num_images, world=world, callback=ctx.steps())
    with ctx.section("measure"):
        samples = word_samples(run)
        summary = summarise(samples) if world else None
    model_id = ctx.profile.display_source(params.model)
    maps = [(ctx.stamp(plot_maps(run, b, samples), model_id=model_id, index=b), f"seed {params.seed} · #{b}")
            for b in range(len(run.images))]
    objects = "; ".join(f"{k + 1}: {o.describe()}" for k, o in enumerate(run.objects))
    title = f"'{run.prompt}' · CFG w = {params.scale:g} · {len(run.images)} sample(s) · {model_id}"
    parts = [f"**Objects**: {objects}. **Layers** (cross-attention, in call order): {', '.join(run.layers)}.",
             words_table(samples, world)]
    if world:
        sources = ", ".join(f"{k} {v}" for k, v in summary["mask_sources"].items())
        check = summary["layout_agrees"]
        parts += ["### Binding accuracy", accuracy_table(summary), MASKS_TEXT,
                  f"Object masks (one per object and sample) from: {sources}. "
                  f"Colour masks at the position the prompt names or implies: {check['agree']}/{check['checked']} "
                  "(the model's layout, and a cross-check of the two mask definitions)."]
        if summary["all"]["n"] == 0:
            ctx.note("no binding accuracy: it needs two objects with masks in the same sample")
    else:
        parts.append("No masks outside the toy world: nothing says which pixels are the object a word names, so only "
                     "each word's share of the attention and its maps are shown.")
    meta = ctx.metadata(
        model_id=model_id, rule={"name": "cfg", "scale": params.scale}, layers=run.layers,
        objects=[asdict(o) for o in run.objects],
        words=[{"word": w.word, "kind": w.kind, "object": w.obj, "token_positions": list(w.positions)}
               for w in run.words],
        per_sample=[{"sample": s.sample, "word": s.word, "mass": s.mass,
                     "shares": dict(zip(("own", "other", "background"), s.shares.tolist(), strict=True)),
                     "bound": s.bound, "own_mask": s.sources[0], "uniform_map_bound": s.own_larger}
                    for s in samples],
        binding=summary,
    )
    return dict(maps=maps, plot=ctx.stamp(plot_shares(samples, run.layers, title), models={params.model: model_id}),
                table="\n\n".join(parts), metadata=meta)


ATTENTION_BINDING = Task(ATTENTION_BINDING_SPEC, run_attention_binding)
