"""Why DiT zero-initialises its AdaLN modulation, measured on diffusers' own DiT block.

Peebles & Xie 2023, "Scalable Diffusion Models with Transformers", §3.2 (adaLN-Zero). A DiT block
(diffusers ``BasicTransformerBlock(norm_type="ada_norm_zero")``, what ``DiTTransformer2DModel`` stacks)
regresses six vectors from the conditioning c (timestep + class embedding) through one linear layer,
``norm1.linear``: m = W·SiLU(c) + b ∈ R^{6D}, split in diffusers' order (``AdaLayerNormZero.forward``)

    m = [shift_msa | scale_msa | gate_msa | shift_mlp | scale_mlp | gate_mlp],

and uses them as

    h   = x + gate_msa ⊙ Attn(LN(x)·(1 + scale_msa) + shift_msa)
    out = h + gate_mlp ⊙ MLP(LN(h)·(1 + scale_mlp) + shift_mlp).

adaLN-Zero sets W = 0, b = 0. Three facts follow and are checked here on a fresh block:

1. Every shift, scale and gate is 0, so both residual branches are multiplied by 0 and the block is the
   identity, exactly: block(x) == x bit for bit. With diffusers' default (PyTorch) initialisation the gates
   are not zero and the block disturbs its input from the first step.
2. The modulation still learns on the first step. With the gates at 0 (so h = x and out = x) and G = ∂L/∂out,

       ∂L/∂gate_msa[b] = Σ_n G[b, n] ⊙ Attn(LN(x))[b, n],   ∂L/∂gate_mlp[b] = Σ_n G[b, n] ⊙ MLP(LN(x))[b, n],

   while ∂L/∂shift = ∂L/∂scale = 0 (they act only inside a branch that a zero gate multiplies). Hence
   ∂L/∂W = (∂L/∂m)ᵀ · SiLU(c) has non-zero rows only in the two gate chunks, and ∂L/∂b = Σ_b ∂L/∂m.
3. What does *not* learn on the first step is everything the gates hide: the attention and MLP weights get a
   gradient of exactly 0 (it passes through gate = 0), and so does the conditioning embedder (its gradient
   passes through Wᵀ = 0); ∂L/∂x equals ∂L/∂out exactly, so an identity block hands the gradient on unchanged.
   Once one SGD step has moved the gate rows, gradients reach the branches — ControlNet's zero convolutions
   (``experiments.zero_conv``) again, inside every transformer block.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from reporting.plots import figure_to_image, subplots

if TYPE_CHECKING:
    from diffusers.models.attention import BasicTransformerBlock

# AdaLayerNormZero.forward: emb.chunk(6, dim=1) in this order (diffusers 0.42; the tests pin the gates by behaviour).
CHUNKS = ("shift_msa", "scale_msa", "gate_msa", "shift_mlp", "scale_mlp", "gate_mlp")
GATES = ("gate_msa", "gate_mlp")
CLASSES = 24  # the shapes world's (colour, shape) classes, as in the toy DiT
BATCH = 4
TARGET_NOISE = 0.1  # the target is x + 0.1·ε: the block should make a small change to its input
BRANCH_PREFIXES = ("attn1.", "ff.")  # the attention and MLP weights the gates multiply
EMBEDDER_PREFIX = "norm1.emb."  # timestep and class embedding (c)


@dataclass
class ToyBatch:
    """Tokens, timesteps, class labels and the regression target of one fixed batch."""

    x: torch.Tensor  # (batch, tokens, dim)
    timestep: torch.Tensor  # (batch,)
    class_labels: torch.Tensor  # (batch,)
    target: torch.Tensor  # (batch, tokens, dim)


@dataclass
class InitRun:
    """One initialisation's measured numbers (plain floats, JSON-ready): at step 0, then over the SGD steps."""

    init: str
    max_abs_change: float  # max |block(x) − x| at initialisation
    relative_change: float  # ‖block(x) − x‖ / ‖x‖ at initialisation
    identity: bool  # block(x) == x bit for bit
    max_abs_gate: float  # largest |gate_msa|, |gate_mlp| at initialisation
    input_grad_vs_output_grad: float  # max |∂L/∂x − ∂L/∂out| on step 1
    modulation_grad_norms: dict[str, float] = field(default_factory=dict)  # ‖∂L/∂W rows‖ per chunk, step 1
    branch_grad_max_abs: float = 0.0  # attention and MLP weights, step 1
    embedder_grad_max_abs: float = 0.0  # timestep and class embedding, step 1
    branch_grad_norm_after_one_step: float = 0.0
    # One entry per step k = 0 … steps (k SGD updates done):
    loss: list[float] = field(default_factory=list)
    relative_change_per_step: list[float] = field(default_factory=list)
    gate_msa_rms: list[float] = field(default_factory=list)
    gate_mlp_rms: list[float] = field(default_factory=list)
    branch_grad_norm: list[float] = field(default_factory=list)


@dataclass
class AdalnZeroReport:
    """What :func:`adaln_zero_analysis` measured, for AdaLN-zero and for diffusers' default initialisation."""

    dim: int
    heads: int
    head_dim: int
    tokens: int
    batch: int
    classes: int
    block_params: int
    steps: int
    lr: float
    zero: InitRun
    default: InitRun
    modulation_weight_grad_rel_error: float  # AdaLN-zero: ‖autograd − analytic‖ / ‖analytic‖, ∂L/∂W
    modulation_bias_grad_rel_error: float  # the same for ∂L/∂b
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def dit_block(heads: int, head_dim: int, classes: int, generator: torch.Generator) -> BasicTransformerBlock:
    """A fresh block exactly as ``DiTTransformer2DModel`` builds it, its weights drawn from ``generator``.

    The draws follow PyTorch's default initialisation (what diffusers leaves in place): U(±1/√fan_in) for linear
    weights and biases (kaiming-uniform with a = √5), N(0, 1) for the class table. Drawing them from our own
    generator instead of the global one keeps two concurrent requests from changing each other's weights.
    """
    from diffusers.models.attention import BasicTransformerBlock

    block = BasicTransformerBlock(
        heads * head_dim, heads, head_dim, dropout=0.0, activation_fn="gelu-approximate",
        num_embeds_ada_norm=classes, attention_bias=True, norm_type="ada_norm_zero",
        norm_elementwise_affine=False, norm_eps=1e-5,
    )  # fmt: skip
    drawn = set()
    with torch.no_grad():
        for module in block.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                drawn.add(id(module.weight))
                if module.bias is not None:
                    bound = 1 / math.sqrt(module.in_features)
                    torch.nn.init.uniform_(module.bias, -bound, bound, generator=generator)
                    drawn.add(id(module.bias))
            elif isinstance(module, torch.nn.Embedding):
                torch.nn.init.normal_(module.weight, generator=generator)
                drawn.add(id(module.weight))
    missed = [name for name, p in block.named_parameters() if id(p) not in drawn]
    if missed:  # a diffusers version with another parameter kind: say so rather than keep a global-RNG draw
        raise RuntimeError(f"dit_block does not know how to initialise {missed}")
    # eval(): in training mode diffusers' LabelEmbedding drops class labels at random (global RNG); gradients
    # are the same in both modes otherwise (no dropout in this block).
    return block.eval()


def zero_modulation(block: BasicTransformerBlock) -> BasicTransformerBlock:
    """A copy of ``block`` with adaLN-Zero's initialisation: the modulation layer's weight and bias set to 0."""
    zero = copy.deepcopy(block)
    with torch.no_grad():
        zero.norm1.linear.weight.zero_()
        zero.norm1.linear.bias.zero_()
    return zero


def toy_batch(dim: int, tokens: int, batch: int, classes: int, generator: torch.Generator) -> ToyBatch:
    x = torch.randn(batch, tokens, dim, generator=generator)
    timestep = torch.randint(0, 1000, (batch,), generator=generator)
    class_labels = torch.randint(0, classes, (batch,), generator=generator)
    target = x + TARGET_NOISE * torch.randn(x.shape, generator=generator)
    return ToyBatch(x, timestep, class_labels, target)


def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L = ½ · mean (out − target)² over every element, so ∂L/∂out = (out − target) / (batch · tokens · D).

    The mean over channels keeps a stable learning rate about the same for every D (a sum would scale it by 1/D).
    """
    return 0.5 * (out - target).pow(2).mean()


def conditioning(block: BasicTransformerBlock, batch: ToyBatch) -> torch.Tensor:
    """c: the block's timestep + class embedding (what ``norm1.linear`` reads through SiLU)."""
    return block.norm1.emb(batch.timestep, batch.class_labels, hidden_dtype=batch.x.dtype)


def modulation(block: BasicTransformerBlock, batch: ToyBatch) -> dict[str, torch.Tensor]:
    """The six modulation vectors by name, each (batch, dim)."""
    with torch.no_grad():
        m = block.norm1.linear(F.silu(conditioning(block, batch)))
    return dict(zip(CHUNKS, m.chunk(len(CHUNKS), dim=1), strict=True))


def analytic_parts(block: BasicTransformerBlock, batch: ToyBatch) -> dict[str, torch.Tensor]:
    """What fact 2's expression needs, computed from the modules (float64), valid while W = 0 and b = 0.

    With every shift, scale and gate at 0 the modulated inputs are plain LN(x) (and h = x), the block's output
    is x, and the upstream gradient of :func:`loss_fn` is (x − target) / (batch · tokens · D).
    """
    x = batch.x
    with torch.no_grad():
        attn_branch = block.attn1(block.norm1.norm(x))
        mlp_branch = block.ff(block.norm3(x))
        silu_c = F.silu(conditioning(block, batch))
    upstream = (x.double() - batch.target.double()) / x.numel()
    return dict(upstream=upstream, attn_branch=attn_branch.double(), mlp_branch=mlp_branch.double(),
                silu_condition=silu_c.double())


def analytic_modulation_grad(
    upstream: torch.Tensor, attn_branch: torch.Tensor, mlp_branch: torch.Tensor, silu_condition: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """∂L/∂W (6D × D) and ∂L/∂b (6D) of ``norm1.linear`` at W = 0, b = 0 (module docstring, fact 2).

    ∂L/∂gate_msa = Σ_tokens G ⊙ Attn(LN x), ∂L/∂gate_mlp = Σ_tokens G ⊙ MLP(LN x), shifts and scales 0;
    stacked in diffusers' chunk order, ∂L/∂W = (∂L/∂m)ᵀ SiLU(c) and ∂L/∂b = Σ_batch ∂L/∂m.
    """
    gate_grads = {"gate_msa": torch.einsum("bnd,bnd->bd", upstream, attn_branch),
                  "gate_mlp": torch.einsum("bnd,bnd->bd", upstream, mlp_branch)}
    zeros = torch.zeros_like(gate_grads["gate_msa"])
    d_modulation = torch.cat([gate_grads.get(name, zeros) for name in CHUNKS], dim=1)  # (batch, 6D)
    return d_modulation.T @ silu_condition, d_modulation.sum(0)


def relative_error(measured: torch.Tensor, analytic: torch.Tensor) -> float:
    return float((measured.double() - analytic).norm() / analytic.norm().clamp_min(1e-30))


def _grad_max_abs(block: BasicTransformerBlock, prefixes: tuple[str, ...]) -> float:
    return max(float(p.grad.abs().max()) if p.grad is not None else 0.0
               for name, p in block.named_parameters() if name.startswith(prefixes))


def _grad_norm(block: BasicTransformerBlock, prefixes: tuple[str, ...]) -> float:
    return math.sqrt(sum(float(p.grad.double().pow(2).sum()) for name, p in block.named_parameters()
                         if name.startswith(prefixes) and p.grad is not None))


def _rms(t: torch.Tensor) -> float:
    return float(t.double().pow(2).mean().sqrt())


def train_and_measure(
    block: BasicTransformerBlock, batch: ToyBatch, init: str, steps: int, lr: float,
    on_step: Callable[[], None] | None = None,
) -> InitRun:
    """Step 0's facts, then ``steps`` plain SGD updates of every parameter, recording the trajectory.

    ``block`` is trained in place. Every pass is forward, loss, backward; step k's numbers are read before the
    k-th update, so entry 0 is the initialisation.
    """
    run: InitRun | None = None
    dim = block.norm1.linear.in_features
    for step in range(steps + 1):
        block.zero_grad(set_to_none=True)
        x = batch.x.clone().requires_grad_(True)
        out = block(x, timestep=batch.timestep, class_labels=batch.class_labels)
        out.retain_grad()
        loss = loss_fn(out, batch.target)
        loss.backward()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ValueError(f"the {init} block diverged at SGD step {step} (loss {value}): lower lr")
        gates = modulation(block, batch)
        change = out.detach() - batch.x
        if run is None:
            w_grad = block.norm1.linear.weight.grad.view(len(CHUNKS), dim, dim)
            run = InitRun(
                init=init,
                max_abs_change=float(change.abs().max()),
                relative_change=float(change.norm() / batch.x.norm()),
                identity=bool(torch.equal(out.detach(), batch.x)),
                max_abs_gate=max(float(gates[g].abs().max()) for g in GATES),
                input_grad_vs_output_grad=float((x.grad - out.grad).abs().max()),
                modulation_grad_norms={name: float(w_grad[i].norm()) for i, name in enumerate(CHUNKS)},
                branch_grad_max_abs=_grad_max_abs(block, BRANCH_PREFIXES),
                embedder_grad_max_abs=_grad_max_abs(block, (EMBEDDER_PREFIX,)),
            )
        elif step == 1:
            run.branch_grad_norm_after_one_step = _grad_norm(block, BRANCH_PREFIXES)
        run.loss.append(value)
        run.relative_change_per_step.append(float(change.norm() / batch.x.norm()))
        run.gate_msa_rms.append(_rms(gates["gate_msa"]))
        run.gate_mlp_rms.append(_rms(gates["gate_mlp"]))
        run.branch_grad_norm.append(_grad_norm(block, BRANCH_PREFIXES))
        if step < steps:
            with torch.no_grad():
                for p in block.parameters():
                    if p.grad is not None:
                        p -= lr * p.grad
        if on_step is not None:
            on_step()
    assert run is not None
    return run


def adaln_zero_analysis(
    *,
    heads: int = 4,
    head_dim: int = 16,
    tokens: int = 16,
    steps: int = 10,
    lr: float = 5.0,
    seed: int = 0,
    batch: int = BATCH,
    classes: int = CLASSES,
    on_step: Callable[[int, int], None] | None = None,
) -> AdalnZeroReport:
    """Two copies of one fresh DiT block, adaLN-Zero and diffusers' default initialisation, measured (float32, CPU).

    Both see the same batch, the same weights outside ``norm1.linear`` and the same SGD. ``on_step(done, total)``
    is called after every forward-backward pass (progress, time limits).
    """
    start = time.perf_counter()
    gen = torch.Generator("cpu").manual_seed(int(seed))
    default_block = dit_block(heads, head_dim, classes, gen)
    zero_block = zero_modulation(default_block)
    data = toy_batch(heads * head_dim, tokens, batch, classes, gen)
    total, done = 2 * (steps + 1), iter(range(1, 2 * (steps + 1) + 1))

    def tick() -> None:
        if on_step is not None:
            on_step(next(done), total)

    # Fact 2 on its own copy: autograd's step-1 gradient of the modulation layer against the analytic expression.
    check = zero_modulation(default_block)
    parts = analytic_parts(check, data)
    loss_fn(check(data.x, timestep=data.timestep, class_labels=data.class_labels), data.target).backward()
    analytic_w, analytic_b = analytic_modulation_grad(**parts)
    w_err = relative_error(check.norm1.linear.weight.grad, analytic_w)
    b_err = relative_error(check.norm1.linear.bias.grad, analytic_b)
    zero = train_and_measure(zero_block, data, "adaLN-Zero", steps, lr, tick)
    default = train_and_measure(default_block, data, "default", steps, lr, tick)
    return AdalnZeroReport(
        dim=heads * head_dim, heads=heads, head_dim=head_dim, tokens=tokens, batch=batch, classes=classes,
        block_params=sum(p.numel() for p in check.parameters()), steps=steps, lr=lr, zero=zero, default=default,
        modulation_weight_grad_rel_error=w_err, modulation_bias_grad_rel_error=b_err,
        seconds=time.perf_counter() - start,
    )


ZERO_COLOUR, DEFAULT_COLOUR = "tab:blue", "tab:orange"
LINTHRESH = 1e-5
PLOT_MARGINS = {"left": 0.04, "right": 0.99, "bottom": 0.15, "top": 0.82, "wspace": 0.25}


def plot_adaln_zero(report: AdalnZeroReport) -> Image.Image:
    """Four panels over the SGD steps, both initialisations: how far the block moves x, its gates, the gradient
    reaching the attention and MLP weights, and the loss."""
    fig, axes = subplots(4, (15.0, 3.4), PLOT_MARGINS)
    steps = np.arange(report.steps + 1)
    runs = ((report.zero, ZERO_COLOUR, "adaLN-Zero"), (report.default, DEFAULT_COLOUR, "default init"))
    for run, colour, label in runs:
        axes[0].plot(steps, run.relative_change_per_step, marker=".", color=colour, label=label)
        axes[1].plot(steps, run.gate_msa_rms, marker=".", color=colour, label=f"{label}: gate_msa")
        axes[1].plot(steps, run.gate_mlp_rms, marker=".", ls="--", color=colour, label=f"{label}: gate_mlp")
        axes[2].plot(steps, run.branch_grad_norm, marker=".", color=colour, label=label)
        axes[3].plot(steps, run.loss, marker=".", color=colour, label=label)
    titles = ("‖block(x) − x‖ / ‖x‖ (0 = identity)", "gate RMS (multiplies each branch)",
              "‖∂L/∂(attention, MLP weights)‖", "loss ½·mean (block(x) − target)²")
    for ax, title in zip(axes, titles, strict=True):
        if ax is not axes[3]:
            # Symmetric log: exact zeros stay on the axis (linear below LINTHRESH), small and large values both show.
            ax.set_yscale("symlog", linthresh=LINTHRESH)
            ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("SGD step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    z = report.zero
    axes[0].annotate(f"exactly {z.max_abs_change:g} at init", (0, z.relative_change_per_step[0]), fontsize=7,
                     xytext=(6, 10), textcoords="offset points", color=ZERO_COLOUR)
    axes[2].annotate(f"exactly {z.branch_grad_max_abs:g} at init", (0, z.branch_grad_norm[0]), fontsize=7,
                     xytext=(6, 10), textcoords="offset points", color=ZERO_COLOUR)
    fig.suptitle(f"One fresh DiT block (diffusers BasicTransformerBlock, ada_norm_zero): D = {report.dim} "
                 f"({report.heads} heads × {report.head_dim}), {report.tokens} tokens × batch {report.batch}, "
                 f"SGD lr {report.lr:g}", fontsize=10)
    return figure_to_image(fig)
