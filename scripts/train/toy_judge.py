"""Train the evaluation judge (models/architectures/toy_judge.py) on clean shapes-world images.

    nice -n 10 .venv/bin/python -m scripts.train.toy_judge          # ~2 min on one core

Writes ``assets/toy/judge/{model.safetensors,config.json}``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from condition.shapes_world import SHAPE_NAMES, make_batch
from models.architectures.toy_judge import ToyJudge, save_judge
from scripts.shared.training import ASSETS, RUNS, data_pool, images_to_tensor, load_checkpoint, save_checkpoint, setup


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild noise, blur and contrast changes: generated samples are softer than the renderer's."""
    b = x.shape[0]
    sigma = torch.rand(b, 1, 1, 1, generator=gen) * 0.15
    x = x + sigma * torch.randn(x.shape, generator=gen)
    blur = torch.rand(b, generator=gen) < 0.3
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :] / 16).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
        x[blur] = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), k, groups=3)
    gain = 1 + 0.2 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    return (x * gain).clamp(-1, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    setup(args.seed, args.threads)
    pool = data_pool(30000, seed=3000 + args.seed, p_two=0.0, p_plain=1.0)
    x_all = images_to_tensor(pool["images"])
    labels = torch.from_numpy(pool["labels"])
    colour_y, shape_y = labels // len(SHAPE_NAMES), labels % len(SHAPE_NAMES)

    judge = ToyJudge()
    opt = torch.optim.AdamW(judge.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(args.seed)
    start = 0
    if (ck := load_checkpoint(RUNS / "judge")) is not None and ck[1]["steps"] == args.steps:
        judge.load_state_dict(ck[0]["model"])
        gen.set_state(ck[0]["rng"]["gen"])
        start = ck[1]["step"]
        for _ in range(start):
            sched.step()
    t0 = time.time()
    bar = tqdm(range(start, args.steps), desc="judge")
    for step in bar:
        idx = torch.randint(len(x_all), (args.batch,), generator=gen)
        c_logits, s_logits = judge(augment(x_all[idx].clone(), gen))
        loss = F.cross_entropy(c_logits, colour_y[idx]) + F.cross_entropy(s_logits, shape_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % 500 == 0:
            save_checkpoint(
                RUNS / "judge",
                {"model": judge.state_dict(), "rng": {"gen": gen.get_state()}},
                {"step": step + 1, "steps": args.steps},
            )
    elapsed = time.time() - t0
    judge.eval()
    test = make_batch(1200, seed=77, p_two=0.0)
    c, s = judge.predict(images_to_tensor(test.images))
    acc = float(((c * len(SHAPE_NAMES) + s) == test.labels).mean())
    print(f"judge held-out accuracy (colour and shape): {acc:.4f}")
    save_judge(judge, ASSETS / "judge")
    (RUNS / "judge_train.json").write_text(json.dumps({"steps": args.steps, "seconds": elapsed, "accuracy": acc}))


if __name__ == "__main__":
    main()
