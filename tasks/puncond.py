"""``/p_uncond``: CFG with a learned 2D ε-network trained at label dropout p, beside CFG with the exact scores.

The networks are shipped in ``assets/toy/puncond/`` and read from there in every profile (they model the 2D
mixture, not a profile's world); the measured table over every p is ``assets/toy/puncond.md``.
"""

from __future__ import annotations

from experiments.puncond import P_VALUES, TRAINING_SEEDS, branch_errors, guided_comparison, plot_puncond
from guidance.rules import SCALE
from models.architectures.gmm2d import default_mixture
from models.architectures.score_mlp import load_puncond_net
from models.profiles import ROOT
from pipelines.playground import MAX_STEPS, SAMPLERS
from tasks import fields as F
from tasks.spec import EndpointSpec, Output, Params, Task, TaskContext

MEASURED_TABLE = ROOT / "assets" / "toy" / "puncond.md"
# Energy distance holds three N × N float64 distance matrices: 4000 samples keep that near 400 MiB.
MAX_SAMPLES = 4000

PUNCOND_SPEC = EndpointSpec(
    api_name="/p_uncond",
    summary="Learned 2D ε-networks trained with label dropout p: CFG samples beside the exact-guided ones, "
            "and each branch's error against the exact scores",
    fields=(
        F.choice("p_uncond", 0.1, P_VALUES, "p_uncond (label dropout the network was trained with)"),
        F.choice("training_seed", 0, TRAINING_SEEDS, "network (training seed)"),
        F.number(SCALE.name, 3.0, SCALE.low, SCALE.high, "CFG scale w", step=SCALE.step),
        F.choice("target_class", "red", default_mixture().class_names, "target class", widget="dropdown"),
        F.choice("sampler", "ddpm", SAMPLERS, "sampler"),
        F.integer("steps", 200, 1, MAX_STEPS, "steps", quick=5),
        F.integer("num_samples", 1000, 2, MAX_SAMPLES, "samples", quick=100),
        F.seed(),
    ),
    outputs=(
        Output("plot", "image", "learned CFG beside exact CFG (same noise), and the branch errors over t",
               elem_id="pu-plot"),
        Output("stats", "json", "statistics"),
    ),
)


def run_puncond(params: Params, ctx: TaskContext) -> dict:
    with ctx.section("load"):
        net = load_puncond_net(params.p_uncond, params.training_seed)
    with ctx.section("sample"):
        comparison = guided_comparison(net, params.scale, target_class=params.target_class, sampler=params.sampler,
                                       steps=params.steps, num_samples=params.num_samples, seed=params.seed,
                                       callback=ctx.steps())
    with ctx.section("errors"):
        errors = branch_errors(net)
    stats = {"p_uncond": params.p_uncond, "training_seed": params.training_seed, "scale": params.scale,
             **comparison.summary(), **errors.summary(), "n": params.num_samples, "seed": params.seed,
             "reproduce": ctx.snippet()}
    return dict(plot=plot_puncond(comparison, errors, params.p_uncond, params.scale), stats=stats)


def measured_table() -> str:
    """The table over every p measured by ``scripts/eval/puncond.py``, or how to make it."""
    if MEASURED_TABLE.is_file():
        return "\n".join(line for line in MEASURED_TABLE.read_text().splitlines() if not line.startswith("# "))
    return ("The measured table is made by `python -m scripts.eval.puncond` "
            "(after `python -m scripts.train.puncond_2d`).")


PUNCOND = Task(PUNCOND_SPEC, run_puncond)
