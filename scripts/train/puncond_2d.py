"""Train the 2D mixture's conditional ε-networks with label dropout p_uncond, one per (p, seed).

    nice -n 10 .venv/bin/python -m scripts.train.puncond_2d            # every p of experiments.puncond, seeds 0 1 2

Each network is ``models.architectures.score_mlp.ScoreMLP`` trained with the plain ε loss ‖ε_θ(x_t, t, c̃) − ε‖² on the
playground's forward process (linear β, 1000 steps, t uniform), where c̃ is the class replaced by the null
class with probability p, once per sample. For one seed every p sees the same initial weights and the same
(x0, c, t, ε) stream; only the dropout mask differs, so the comparison across p is paired. A network trains in
seconds on one CPU thread, so there is no resuming: a rerun retrains everything (same seeds, same weights).
Writes ``assets/toy/puncond/p{p}_seed{seed}.safetensors`` and ``train.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm

from experiments.puncond import P_VALUES, TRAINING_SEEDS, training_alpha_bars
from models.architectures.gmm2d import default_mixture
from models.architectures.score_mlp import (
    PUNCOND_DIR,
    TRAIN_RECORD,
    PuncondRecord,
    ScoreMLP,
    ScoreMLPConfig,
    weights_name,
)
from scripts.shared.training import setup


def train_one(p_uncond: float, seed: int, config: ScoreMLPConfig, steps: int, batch: int, lr: float,
              progress: bool = True) -> tuple[ScoreMLP, dict]:
    """One network; returns it and its record (final loss, seconds)."""
    mixture = default_mixture()
    alpha_bars = training_alpha_bars().float()
    torch.manual_seed(seed)  # the initial weights: the same for every p at this seed
    net = ScoreMLP(config)
    data = torch.Generator().manual_seed(1_000 + seed)  # (x0, c, t, ε): the same stream for every p
    dropout = torch.Generator().manual_seed(2_000 + seed)  # the only thing that differs between p
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    # Cosine decay to 5 % of lr: the last steps average the gradient noise out, so the ε error at the end reflects
    # what the data taught each branch rather than where the last minibatch left it.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
    losses: list[float] = []
    started = time.perf_counter()
    for _ in tqdm(range(steps), desc=f"p={p_uncond:g} seed={seed}", unit="step", disable=not progress, leave=False):
        x0, labels = mixture.sample_labelled(batch, data)
        t = torch.randint(0, config.num_train_timesteps, (batch,), generator=data)
        noise = torch.randn(batch, 2, generator=data)
        a = alpha_bars[t][:, None]
        x_t = a.sqrt() * x0.float() + (1 - a).sqrt() * noise
        drop = torch.rand(batch, generator=dropout) < p_uncond
        labels = torch.where(drop, torch.full_like(labels, config.null_label), labels)
        loss = F.mse_loss(net(x_t, t, labels), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - started
    tail = losses[-max(1, steps // 10):]
    return net.eval(), {"p_uncond": p_uncond, "seed": seed, "seconds": round(seconds, 2),
                        "final_loss": round(sum(tail) / len(tail), 5)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--p-values", type=float, nargs="+", default=list(P_VALUES))
    ap.add_argument("--seeds", type=int, nargs="+", default=list(TRAINING_SEEDS))
    ap.add_argument("--steps", type=int, default=4000, help="the same for every p, so the comparison is fair")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=PUNCOND_DIR)
    args = ap.parse_args()
    if any(not 0.0 <= p <= 1.0 for p in args.p_values):
        raise SystemExit(f"every p must lie in [0, 1]; got {args.p_values}")
    setup(0, args.threads)
    config = ScoreMLPConfig(num_classes=len(default_mixture().class_names))
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    started = time.perf_counter()
    for p_uncond in tqdm(args.p_values, desc="p_uncond", unit="p"):
        for seed in args.seeds:
            net, record = train_one(p_uncond, seed, config, args.steps, args.batch, args.lr)
            path = args.out / weights_name(p_uncond, seed)
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
                      metadata={"p_uncond": f"{p_uncond:g}", "seed": str(seed), "steps": str(args.steps)})
            path.chmod(0o644)  # safetensors writes 0600; the app may run as another user than the trainer
            records.append({**record, "file": path.name, "bytes": path.stat().st_size})
            tqdm.write(f"p={p_uncond:g} seed={seed}: loss {record['final_loss']:.4f} in {record['seconds']:.1f} s")
    training = {
        "steps": args.steps, "batch": args.batch, "optimizer": "Adam", "lr": args.lr,
        "lr_schedule": "cosine to 5 % of lr", "loss": "MSE on ε, t uniform over the 1000 training steps",
        "schedule": "DDPM linear β 1e-4 … 0.02, 1000 steps (the playground's)", "threads": args.threads,
        "total_seconds": round(time.perf_counter() - started, 1), "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(), "nets": records,
        "parameters": sum(p.numel() for p in ScoreMLP(config).parameters()),
    }
    record = PuncondRecord(config, tuple(args.p_values), tuple(args.seeds), training)
    (args.out / TRAIN_RECORD).write_text(json.dumps(record.as_json(), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(records)} networks and {TRAIN_RECORD} to {args.out} in {training['total_seconds']} s "
          f"(config {asdict(config)})")


if __name__ == "__main__":
    main()
