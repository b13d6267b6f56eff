"""Distill the 2D mixture's exact CFG into a one-call student, and train the teacher network it is compared with.

    nice -n 10 .venv/bin/python -m scripts.train.distill_2d              # both networks; a rerun resumes
    nice -n 10 .venv/bin/python -m scripts.train.distill_2d --restart    # ignore the checkpoints, start over

Meng et al. 2023 ("On Distillation of Guided Diffusion Models"), stage one, with the teacher in closed form:

- **student** (``models.architectures.guided_student_2d.GuidedStudent2D``): ‖ε̂(x_t, t, c, w) − ε̃‖² with the exact
  guided target ε̃ = ε_u(x_t) + w (ε_c(x_t) − ε_u(x_t)) of the mixture, w ~ U[0, 12] drawn per sample;
- **teacher network** (``models.architectures.score_mlp.ScoreMLP``): the plain ε loss ‖ε_θ(x_t, t, c̃) − ε‖² with the
  class c̃ replaced by the null class with probability ``--p-uncond``: a learned model whose two-call CFG is what a
  student distilled from a *learned* teacher would be measured against.

Both see the playground's forward process (linear β, 1000 steps, t uniform), (x0, c) ~ p(x, c) — every class, in
proportion to its mass — the same initial seed and the same (x0, c, t, ε) stream, for the same number of steps
and batch size (the same budget). Checkpoints go to ``.toy_runs/distill_2d/{student,teacher}`` every
``--save-every`` steps (weights, Adam moments, generator states); a rerun resumes from them. Writes
``assets/toy/distill_2d/{student,teacher_net}.safetensors`` and ``train.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm import tqdm

from experiments.distill_2d import exact_guided_eps, training_alpha_bars
from models.architectures.gmm2d import GaussianMixture2D, default_mixture
from models.architectures.guided_student_2d import (
    DISTILL_DIR,
    STUDENT_WEIGHTS,
    TEACHER_WEIGHTS,
    TRAIN_RECORD,
    W_MAX,
    W_MIN,
    DistillRecord,
    GuidedStudent2D,
    GuidedStudentConfig,
)
from models.architectures.score_mlp import ScoreMLP, ScoreMLPConfig
from scripts.shared.training import (
    RUNS,
    load_checkpoint,
    load_optimizer_state,
    optimizer_state_tensors,
    save_checkpoint,
    setup,
)

CHECKPOINTS = RUNS / "distill_2d"
# The teacher network is wider than the student (56 k vs 45 k parameters): if the student wins, it is not by size.
TEACHER_CONFIG = ScoreMLPConfig(num_classes=3, hidden=128, depth=4)
STUDENT_CONFIG = GuidedStudentConfig(num_classes=3, hidden=64, depth=4)

# One training step's loss from a batch of the shared stream; the generator is the network's own randomness
# (w for the student, the dropout mask for the teacher network).
LossFn = Callable[[nn.Module, dict[str, Tensor], torch.Generator], Tensor]


def draw_batch(mixture: GaussianMixture2D, alpha_bars: Tensor, batch: int, generator: torch.Generator) -> dict:
    """(x0, c) ~ p(x, c), t uniform over the 1000 steps, ε ~ N(0, I) and x_t = √ᾱ x0 + √(1−ᾱ) ε (float64)."""
    x0, labels = mixture.sample_labelled(batch, generator)
    t = torch.randint(0, len(alpha_bars), (batch,), generator=generator)
    noise = torch.randn(batch, 2, generator=generator, dtype=torch.float64)
    a = alpha_bars[t]
    x_t = a.sqrt()[:, None] * x0 + (1 - a).sqrt()[:, None] * noise
    return {"x_t": x_t, "t": t, "labels": labels, "noise": noise, "alpha_bar": a}


SCALE_WEIGHTINGS = ("uniform", "inverse", "inverse_square")


def scale_weight(scale: Tensor, weighting: str) -> Tensor:
    """λ(w) per sample: 1, 1/(1+w) or 1/(1+w)². The target's size grows like 1 + w, so a plain MSE spends nearly all
    of its capacity on the largest w; dividing by (1+w)^k moves it back towards the small w."""
    if weighting == "uniform":
        return torch.ones_like(scale)
    power = {"inverse": 1, "inverse_square": 2}[weighting]
    return (1 + scale) ** -power


def student_loss(mixture: GaussianMixture2D, weighting: str, other_class: float) -> LossFn:
    """λ(w) ‖ε̂(x_t, t, c, w) − (ε_u + w (ε_c − ε_u))‖² with the exact ε's, w ~ U[W_MIN, W_MAX] per sample.

    The condition c is x0's own class, except with probability ``other_class`` a class drawn uniformly: at small w
    the guided sampler spends most of its time in other classes' regions with the target class as condition
    (at w = 0 about 72 % of the "red" samples end in green or blue components), pairs that x0's own label never
    shows the student. The exact teacher is defined everywhere, so those pairs cost nothing but the draw."""
    num_classes = len(mixture.class_names)

    def loss(net: nn.Module, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        rows = batch["t"].shape[0]
        scale = W_MIN + (W_MAX - W_MIN) * torch.rand(rows, generator=generator, dtype=torch.float64)
        swap = torch.rand(rows, generator=generator) < other_class
        labels = torch.where(swap, torch.randint(0, num_classes, (rows,), generator=generator), batch["labels"])
        target = exact_guided_eps(mixture, batch["x_t"], batch["alpha_bar"], labels, scale)
        error = (net(batch["x_t"], batch["t"], labels, scale.float()) - target.float()).pow(2).mean(1)
        weight = scale_weight(scale, weighting).float()
        return (weight * error).sum() / weight.sum()

    return loss


def teacher_loss(p_uncond: float, null_label: int) -> LossFn:
    """The plain ε loss with label dropout: the class is the null class with probability ``p_uncond``."""

    def loss(net: nn.Module, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        labels = batch["labels"]
        drop = torch.rand(labels.shape[0], generator=generator) < p_uncond
        labels = torch.where(drop, torch.full_like(labels, null_label), labels)
        return F.mse_loss(net(batch["x_t"], batch["t"], labels), batch["noise"].float())

    return loss


def train(name: str, net: nn.Module, loss_fn: LossFn, *, steps: int, batch: int, lr: float, seed: int,
          own_seed: int, save_every: int, folder: Path) -> dict:
    """Adam with cosine decay to 5 % of ``lr`` (the last steps average the gradient noise out), resuming from
    ``folder``'s checkpoint when there is one. Returns the record: steps, seconds, final loss."""
    mixture = default_mixture()
    alpha_bars = training_alpha_bars()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    data = torch.Generator().manual_seed(1_000 + seed)  # (x0, c, t, ε): the same stream for both networks
    own = torch.Generator().manual_seed(own_seed)
    step, seconds, losses = 0, 0.0, []
    if (checkpoint := load_checkpoint(folder)) is not None:
        groups, meta = checkpoint
        net.load_state_dict(groups["model"])
        load_optimizer_state(optimizer, groups["opt"])
        data.set_state(groups["rng"]["data"])
        own.set_state(groups["rng"]["own"])
        step, seconds, losses = meta["step"], meta["seconds"], meta["recent_losses"]
        if meta["steps"] != steps or meta["batch"] != batch:
            raise SystemExit(f"{folder} holds a run of {meta['steps']} steps of batch {meta['batch']}, not "
                             f"{steps} of {batch}: rerun with those or with --restart")
        tqdm.write(f"{name}: resumed at step {step} ({seconds:.0f} s trained)")

    def save() -> None:
        save_checkpoint(folder, {"model": net.state_dict(), "opt": optimizer_state_tensors(optimizer),
                                 "rng": {"data": data.get_state(), "own": own.get_state()}},
                        {"step": step, "seconds": seconds, "steps": steps, "batch": batch,
                         "recent_losses": losses[-max(1, steps // 10):]})

    net.train()
    bar = tqdm(total=steps, initial=step, desc=name, unit="step")
    last = time.perf_counter()
    while step < steps:
        for group in optimizer.param_groups:
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        loss = loss_fn(net, draw_batch(mixture, alpha_bars, batch, data), own)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        step += 1
        now = time.perf_counter()
        seconds, last = seconds + now - last, now
        bar.update(1)
        if step % 100 == 0:
            bar.set_postfix(loss=f"{sum(losses[-100:]) / len(losses[-100:]):.4f}")
        if step % save_every == 0 or step == steps:
            save()
            last = time.perf_counter()  # checkpoint writing is not training time
    bar.close()
    tail = losses[-max(1, steps // 10):]
    return {"steps": step, "seconds": round(seconds, 1), "final_loss": round(sum(tail) / len(tail), 6)}


def export(net: nn.Module, path: Path, metadata: dict[str, str]) -> dict:
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata=metadata)
    path.chmod(0o644)  # safetensors writes 0600; the app may run as another user than the trainer
    return {"file": path.name, "bytes": path.stat().st_size, "parameters": sum(p.numel() for p in net.parameters())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20000, help="the same for both networks: the same budget")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--p-uncond", type=float, default=0.1, help="the teacher network's label dropout")
    ap.add_argument("--scale-weighting", choices=SCALE_WEIGHTINGS, default="inverse_square",
                    help="λ(w) of the student's loss")
    ap.add_argument("--other-class", type=float, default=0.5,
                    help="probability that the student's condition is a uniformly drawn class, not x0's own")
    ap.add_argument("--save-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--restart", action="store_true", help="delete the checkpoints and train from scratch")
    ap.add_argument("--out", type=Path, default=DISTILL_DIR)
    ap.add_argument("--checkpoints", type=Path, default=CHECKPOINTS)
    args = ap.parse_args()
    if not 0.0 < args.p_uncond < 1.0:
        raise SystemExit(f"--p-uncond must lie strictly between 0 and 1 (both branches trained); got {args.p_uncond}")
    if args.restart and args.checkpoints.exists():
        shutil.rmtree(args.checkpoints)
    setup(args.seed, args.threads)
    mixture = default_mixture()
    common = dict(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, save_every=args.save_every)

    torch.manual_seed(args.seed)  # the initial weights
    student = GuidedStudent2D(STUDENT_CONFIG)
    loss = student_loss(mixture, args.scale_weighting, args.other_class)
    student_record = train("student", student, loss, own_seed=3_000 + args.seed,
                           folder=args.checkpoints / "student", **common)
    torch.manual_seed(args.seed)
    teacher = ScoreMLP(TEACHER_CONFIG)
    teacher_record = train("teacher network", teacher, teacher_loss(args.p_uncond, TEACHER_CONFIG.null_label),
                           own_seed=2_000 + args.seed, folder=args.checkpoints / "teacher", **common)

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"seed": str(args.seed), "steps": str(args.steps), "batch": str(args.batch)}
    student_record |= export(student.eval(), args.out / STUDENT_WEIGHTS, meta | {"w_range": f"{W_MIN:g}-{W_MAX:g}"})
    teacher_record |= export(teacher.eval(), args.out / TEACHER_WEIGHTS, meta | {"p_uncond": f"{args.p_uncond:g}"})
    training = {
        "steps": args.steps, "batch": args.batch, "optimizer": "Adam", "lr": args.lr,
        "lr_schedule": "cosine to 5 % of lr", "seed": args.seed, "threads": args.threads,
        "student_loss": f"MSE to the exact ε_u + w (ε_c − ε_u), w ~ U[{W_MIN:g}, {W_MAX:g}] per sample, weighted by "
                        f"λ(w) = {args.scale_weighting}; the condition a uniform class with probability "
                        f"{args.other_class:g}, else x0's own",
        "teacher_loss": f"MSE on ε with label dropout p = {args.p_uncond:g}",
        "schedule": "DDPM linear β 1e-4 … 0.02, 1000 steps (the playground's), t uniform",
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "student": student_record, "teacher": teacher_record,
        "command": f"python -m scripts.train.distill_2d --steps {args.steps} --batch {args.batch} --lr {args.lr:g} "
                   f"--seed {args.seed} --p-uncond {args.p_uncond:g} --scale-weighting {args.scale_weighting} "
                   f"--other-class {args.other_class:g}",
    }
    record = DistillRecord(STUDENT_CONFIG, TEACHER_CONFIG, args.p_uncond, training)
    (args.out / TRAIN_RECORD).write_text(json.dumps(record.as_json(), indent=2, ensure_ascii=False) + "\n")
    print(f"student: loss {student_record['final_loss']:.5f}, {student_record['seconds']} s; teacher network: loss "
          f"{teacher_record['final_loss']:.5f}, {teacher_record['seconds']} s; wrote {args.out} "
          f"(student {asdict(STUDENT_CONFIG)})")


if __name__ == "__main__":
    main()
