"""``/adaln_zero``: why DiT zero-initialises its AdaLN modulation, measured on a fresh diffusers DiT block.

The AdaLN analogue of ``/zero_conv`` (``experiments.adaln_zero`` states the three facts and the formulas). No model is
loaded: a fresh block is built, measured and trained for a few SGD steps on the CPU in float32, in well under a
second at the defaults.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from experiments.adaln_zero import CHUNKS, GATES, AdalnZeroReport, InitRun, adaln_zero_analysis, plot_adaln_zero
from tasks import fields as F
from tasks.spec import EndpointSpec, Output, Params, Task, TaskContext

# Bounds keep the largest request (D = 256, 64 tokens × 4 as in the toy DiT, 50 steps, both initialisations) to
# seconds on two CPU cores; the profile's timeout_s is checked after every pass as well.
MAX_HEADS, MAX_HEAD_DIM, MAX_TOKENS, MAX_SGD_STEPS = 8, 32, 64, 50

ADALN_ZERO_SPEC = EndpointSpec(
    api_name="/adaln_zero",
    summary="Why AdaLN-zero: a fresh DiT block is exactly the identity at init yet its modulation gets the analytic "
            "gradient; against diffusers' default init, over a few SGD steps",
    fields=(
        F.seed(),
        F.integer("heads", 4, 1, MAX_HEADS, "attention heads", quick=2),
        F.integer("head_dim", 16, 4, MAX_HEAD_DIM, "channels per head (D = heads × head_dim)", step=4, quick=4),
        F.integer("tokens", 16, 1, MAX_TOKENS, "tokens per sample (batch of 4)", quick=4),
        F.integer("sgd_steps", 10, 1, MAX_SGD_STEPS, "SGD steps", quick=2),
        F.number("lr", 5.0, 0.01, 20.0, "SGD learning rate (the loss is a mean over channels)", step=0.01),
    ),
    outputs=(
        Output("plot", "image", "both initialisations over the SGD steps", elem_id="az-plot"),
        Output("table", "markdown", "measured"),
        Output("measured", "json", "measured"),
    ),
    cost=None,  # a block of at most 256 channels on the CPU: no GPU slot, the CPU queue
)


def _shift_scale_norm(norms: dict[str, float]) -> float:
    """‖∂L/∂W‖ over the four shift and scale chunks together."""
    return math.sqrt(sum(norms[c] ** 2 for c in CHUNKS if c not in GATES))


def adaln_zero_summary(report: AdalnZeroReport) -> str:
    """The measured numbers as a Markdown table, one column per initialisation."""
    last = report.steps

    def both(describe: Callable[[InitRun], str]) -> tuple[str, str]:
        return describe(report.zero), describe(report.default)

    rows = [
        ("max \\|block(x) − x\\| at init", *both(lambda r: f"{r.max_abs_change:.3g} (bit identical: {r.identity})")),
        ("‖block(x) − x‖ / ‖x‖ at init", *both(lambda r: f"{r.relative_change:.3g}")),
        ("largest \\|gate\\| at init", *both(lambda r: f"{r.max_abs_gate:.3g}")),
        ("step 1: ‖∂L/∂W‖, shift and scale rows", *both(lambda r: f"{_shift_scale_norm(r.modulation_grad_norms):.3g}")),
        ("step 1: ‖∂L/∂W‖, gate rows (msa / mlp)",
         *both(lambda r: " / ".join(f"{r.modulation_grad_norms[g]:.3g}" for g in GATES))),
        ("step 1: ∂L/∂W, ∂L/∂b by autograd vs (∂L/∂m)ᵀ SiLU(c), Σ ∂L/∂m (relative error)",
         f"{report.modulation_weight_grad_rel_error:.1e} / {report.modulation_bias_grad_rel_error:.1e}",
         "— (the expression holds at W = 0)"),
        ("step 1: max \\|∂L/∂(attention, MLP weights)\\|", *both(lambda r: f"{r.branch_grad_max_abs:.3g}")),
        ("step 1: max \\|∂L/∂(timestep, class embedding)\\|", *both(lambda r: f"{r.embedder_grad_max_abs:.3g}")),
        ("step 1: max \\|∂L/∂x − ∂L/∂out\\|", *both(lambda r: f"{r.input_grad_vs_output_grad:.3g}")),
        ("step 2 (after one SGD step): ‖∂L/∂(attention, MLP weights)‖",
         *both(lambda r: f"{r.branch_grad_norm_after_one_step:.3g}")),
        (f"loss, step 0 → step {last}", *both(lambda r: f"{r.loss[0]:.4g} → {r.loss[-1]:.4g}")),
        (f"‖block(x) − x‖ / ‖x‖ after {last} steps", *both(lambda r: f"{r.relative_change_per_step[-1]:.3g}")),
    ]
    table = ["| measured | adaLN-Zero (W = 0, b = 0) | default init |", "|---|---|---|"]
    table += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    note = (f"One `BasicTransformerBlock(norm_type=\"ada_norm_zero\")`, D = {report.dim} ({report.heads} heads × "
            f"{report.head_dim}), {report.block_params:,} parameters, {report.classes} classes; batch "
            f"{report.batch} × {report.tokens} tokens; target x + 0.1·ε; L = ½·mean (block(x) − target)²; SGD with lr "
            f"{report.lr:g} on every parameter; {report.seconds:.2f} s.")
    return "\n".join(table) + "\n\n" + note


def run_adaln_zero(params: Params, ctx: TaskContext) -> dict:
    def on_step(done: int, total: int) -> None:
        ctx.report(done, total, "forward, backward, SGD step")
        ctx.check_time(f"at pass {done} of {total}")

    with ctx.section("measure"):
        report = adaln_zero_analysis(heads=params.heads, head_dim=params.head_dim, tokens=params.tokens,
                                     steps=params.sgd_steps, lr=params.lr, seed=params.seed, on_step=on_step)
    with ctx.section("plot"):
        plot = plot_adaln_zero(report)
    measured = {**report.as_dict(), "seed": params.seed, "reproduce": ctx.snippet()}
    return dict(plot=ctx.stamp(plot), table=adaln_zero_summary(report), measured=measured)


ADALN_ZERO = Task(ADALN_ZERO_SPEC, run_adaln_zero)
